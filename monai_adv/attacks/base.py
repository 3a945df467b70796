"""The attack protocol: :class:`LinfAttack`, the base class of the L-infinity attacks (input checks, model mode,
labels, and the gradient, scoring and projection steps they are built from), and :class:`AttackResult`, what one
call returns.

Each attack's loop lives in its own module (:mod:`~monai_adv.attacks.fgsm`, :mod:`~monai_adv.attacks.pgd`,
:mod:`~monai_adv.attacks.bim`); the pieces they share are small modules of their own: input checks
(:mod:`~monai_adv.attacks.checks`), loss and prediction (:mod:`~monai_adv.attacks.loss`), per-sample seeding
(:mod:`~monai_adv.attacks.seeding`) and model state (:mod:`~monai_adv.attacks.model_state`).

Conventions (the same as torchattacks 3.5.1):

* images are float tensors in [0, 1], ``(B, C, H, W)`` or ``(B, C, D, H, W)``; any intensity normalisation lives inside
  the network, so ``eps`` is in [0, 1] intensity units (0.004 is about 1/255);
* the model returns logits ``(B, K)`` with ``K >= 2`` (cross-entropy, prediction ``argmax``) or a single logit
  ``(B, 1)`` for a binary task, read as the two logits ``[0, z]`` (BCE-with-logits, prediction ``z > 0``);
* labels are class indices ``(B,)``;
* the attack maximises the batch-mean loss and uses the sign of its input gradient, taken with
  ``torch.autograd.grad`` so that parameter ``.grad`` is never touched;
* randomness (PGD's random start) comes from the global torch RNG, drawn for the whole batch, unless the attack is
  given per-sample seeds (``sample_seeds``): then every sample draws from its own generator and the loss is summed,
  so a sample's result does not depend on the batch it is in (see :func:`~monai_adv.attacks.seeding.mix_seed`);
* the model runs in eval mode during the attack and every module's own train/eval flag is restored afterwards, so
  BatchNorm running statistics do not move.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .checks import check_eps, check_images, check_labels, per_sample, plain_tensor, restore_type
from .loss import classification_loss, num_classes, predict
from .model_state import eval_mode
from .seeding import check_sample_seeds

__all__ = ["AttackResult", "LinfAttack"]


@dataclass
class AttackResult:
    """What one attack call produced.

    Attributes:
        adv: adversarial images, same shape and dtype as the input.
        labels: ``(B,)`` labels that were attacked (the given ones, or the clean predictions).
        fooled: ``(B,)`` bool, ``predict(model(adv)) != labels``, when the attack had to score its result anyway
            (restarts, ``any_iterate``); ``None`` otherwise.
        loss: ``(B,)`` per-sample loss at ``adv``, alongside ``fooled``; ``None`` otherwise.
        grad_passes: forward+backward input-gradient passes spent, counted per sample (a PGD-10 on 8 images is 80).
        forward_passes: forward-only passes spent (label prediction, scoring), counted per sample.
    """

    adv: torch.Tensor
    labels: torch.Tensor
    fooled: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    grad_passes: int = 0
    forward_passes: int = 0


class LinfAttack:
    """Base class of the L-infinity attacks: ``attack(images, labels=None) -> adversarial images``.

    Subclasses implement :meth:`_attack`, which runs with the model in eval mode, on plain tensors, with checked
    labels and ``eps`` already shaped by :func:`~monai_adv.attacks.checks.per_sample`.

    Args:
        model: classifier taking ``(B, C, *spatial)`` images in [0, 1] and returning ``(B, K)`` logits (``K >= 2``)
            or one logit ``(B, 1)``.
        eps: radius of the L-infinity ball in [0, 1] intensity units: a float, or a ``(B,)`` tensor, one per sample.
        use_predicted_labels: attack the model's clean predictions instead of the given labels (what ART does when
            ``generate`` gets no ``y``, as in the paper's public code). Calling with ``labels=None`` does the same.
        sample_seeds: ``None`` (default): torchattacks' semantics, the batch-mean loss and the global RNG. Or one
            integer seed per sample of the batch given to :meth:`run` (a ``(B,)`` tensor or sequence; also settable as
            the attribute ``sample_seeds`` before each call): the loss is then summed over the batch, so each sample's
            input gradient is that of its own loss, and randomised attacks draw each sample's noise from its own
            generator (PGD: restart ``r`` of sample ``j`` from ``mix_seed(sample_seeds[j], r)``). A sample's result
            then does not depend on the other samples in its batch (up to float round-off of batched layers), which
            makes a distributed run equal to a single-process one. Gradient signs equal the mean-loss ones except
            where a component underflows.
    """

    name = "LinfAttack"

    def __init__(
        self,
        model: nn.Module,
        eps: float | torch.Tensor,
        use_predicted_labels: bool = False,
        sample_seeds: torch.Tensor | Sequence[int] | None = None,
    ) -> None:
        check_eps(eps)
        self.model = model
        self.eps = eps
        self.use_predicted_labels = use_predicted_labels
        self.sample_seeds = sample_seeds
        self._seeds: list[int] | None = None  # sample_seeds of the running call, as ints
        self._grad_passes = 0
        self._forward_passes = 0
        self._labels_checked = False

    def __repr__(self) -> str:
        eps = f"tensor{tuple(self.eps.shape)}" if isinstance(self.eps, torch.Tensor) else f"{self.eps:g}"
        return f"{type(self).__name__}(eps={eps}{self._repr_extra()})"

    def _repr_extra(self) -> str:
        return ""

    def __call__(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Adversarial images ``(B, ...)``, same shape, dtype, device and tensor type as ``images``."""
        return self.run(images, labels).adv

    def passes_per_sample(self) -> tuple[int, int]:
        """Nominal cost of one call per sample, ``(grad_passes, forward_passes)``, with no early stopping."""
        return 1, int(self.use_predicted_labels)

    def run(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> AttackResult:
        """Attack and return an :class:`AttackResult` (adversarial images plus scoring and work counts)."""
        return self._run(images, labels, self._attack)

    def _run(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        body: Callable[[torch.Tensor, torch.Tensor, float | torch.Tensor], AttackResult],
    ) -> AttackResult:
        """Check the inputs, resolve the labels and run ``body(images, labels, eps)`` in eval mode."""
        if torch.is_inference_mode_enabled():
            raise RuntimeError("attacks need autograd: do not call them inside torch.inference_mode()")
        x = plain_tensor(images).detach()
        if x.is_inference():
            x = x.clone()
        check_images(x)
        eps = per_sample(self.eps, x)
        self._seeds = check_sample_seeds(self.sample_seeds, x.shape[0])
        self._grad_passes = self._forward_passes = 0
        self._labels_checked = False
        with eval_mode(self.model), torch.enable_grad():
            if labels is None or self.use_predicted_labels:
                with torch.no_grad():
                    y = predict(self._logits(x))
                self._forward_passes += x.shape[0]
                self._labels_checked = True
            else:
                y = check_labels(labels, x.shape[0]).to(x.device)
            result = body(x, y, eps)
        result.adv = restore_type(images, result.adv)
        result.grad_passes, result.forward_passes = self._grad_passes, self._forward_passes
        return result

    def _attack(self, images: torch.Tensor, labels: torch.Tensor, eps: float | torch.Tensor) -> AttackResult:
        raise NotImplementedError

    # helpers for subclasses ----------------------------------------------------------------------------------------

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != x.shape[0]:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"the model must return logits of shape (B, K) or (B, 1), got {shape}")
        return logits

    def _check_labels_once(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        if not self._labels_checked:
            check_labels(labels, logits.shape[0], num_classes(logits))
            self._labels_checked = True

    def _gradient(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Input gradient of the batch-mean loss at ``x`` (the summed loss with per-sample seeds), and the
        (detached) logits of that forward pass."""
        x = x.detach().requires_grad_(True)
        logits = self._logits(x)
        self._check_labels_once(logits, labels)
        reduction = "mean" if self._seeds is None else "sum"
        (grad,) = torch.autograd.grad(classification_loss(logits, labels, reduction=reduction), x)
        self._grad_passes += x.shape[0]
        return grad, logits.detach()

    @torch.no_grad()
    def _score(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(fooled, loss)`` at ``x``, both ``(B,)``, from one forward pass."""
        logits = self._logits(x)
        self._forward_passes += x.shape[0]
        self._check_labels_once(logits, labels)
        return predict(logits) != labels, classification_loss(logits, labels, reduction="none")

    @staticmethod
    def _project(adv: torch.Tensor, images: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
        """Project ``adv`` (overwritten) onto the L-infinity ball of radius ``eps`` around ``images`` intersected
        with [0, 1].

        The same floating-point operations as torchattacks.PGD (``clamp(x + clamp(adv - x, -eps, eps), 0, 1)``), so
        results agree bit for bit; in place, to save allocations.
        """
        delta = adv.sub_(images).clamp_(min=-eps, max=eps)
        return delta.add_(images).clamp_(min=0, max=1)

    def _ascent_step(
        self,
        adv: torch.Tensor,
        grad: torch.Tensor,
        step: float | torch.Tensor,
        images: torch.Tensor,
        eps: float | torch.Tensor,
    ) -> torch.Tensor:
        """``project(adv + step * sign(grad))`` as a new tensor; ``grad`` is left as it is."""
        # out of place: autograd may return a broadcast (stride-0) gradient that in-place ops cannot write
        return self._project(grad.sign().mul_(step).add_(adv), images, eps)
