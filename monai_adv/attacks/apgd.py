"""Auto-PGD: PGD with an adaptive step size, momentum and checkpoints."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import AttackResult, LinfAttack
from .checks import positive_int, take
from .loss import LOSSES, classification_loss, dlr_loss, margin_loss, num_classes, predict
from .seeding import per_sample_uniform

__all__ = ["APGD"]


class APGD(LinfAttack):
    r"""APGD, Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", ICML 2020 (arXiv:2003.01690), L-infinity.

    Per restart, from a random point of the eps-ball (``eps * t / max|t|``, ``t`` uniform in [-1, 1), per sample),
    ``steps`` steps ``z = P(x_k + eta * sign(grad))``, ``x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1}))``
    with momentum ``a = 0.75`` (1 at the first step) and ``P`` the projection onto the ball and [0, 1]. The step
    ``eta`` starts at ``2 eps`` and is halved per sample at the checkpoints ``w_j`` (the first after
    ``max(int(0.22 steps), 1)`` steps, the gaps shrinking by ``max(int(0.03 steps), 1)`` down to
    ``max(int(0.06 steps), 1)``) when the loss rose in at most ``rho`` of the steps since the last checkpoint, or when
    the step was not halved there and the best loss did not improve; a halved sample restarts from its best point.
    This is the reference implementation's algorithm step for step (AutoAttack, and torchattacks 3.5.1's ``APGD``,
    including its comparison of the first step's loss with 0); with the same start (``torch.manual_seed(s)`` before
    the call and ``torchattacks.APGD(..., seed=s)``) it gives the same iterates up to float round-off.

    Samples misclassified before the attack are not attacked (their result is the clean image). The result of a
    fooled sample is its last misclassified iterate; of any other its highest-loss iterate (torchattacks returns the
    clean image there); :meth:`run`'s ``loss`` is the highest loss each sample reached. Every restart attacks only the
    samples not fooled yet.

    Args:
        model: classifier, ``(B, C, *spatial)`` images in [0, 1] -> ``(B, K)`` logits or one logit ``(B, 1)``.
        eps: L-infinity radius in [0, 1] units, a float or a ``(B,)`` tensor.
        steps: iterations per restart (default 10; AutoAttack's standard version uses 100).
        restarts: random starts (default 1).
        loss: ``"ce"`` (cross-entropy, default), ``"margin"`` or ``"dlr"``. ``"margin"`` is the DLR loss
            (:func:`~monai_adv.attacks.loss.dlr_loss`, scale-invariant) for ``K >= 3`` classes and the plain logit
            margin (:func:`~monai_adv.attacks.loss.margin_loss`) for two classes or one logit, where DLR is undefined
            (it divides by the gap to the third logit). For two classes the margin is a monotone function of the
            cross-entropy, so it takes the same steps wherever the cross-entropy's gradient is representable; it
            differs where a confidently classified sample's cross-entropy saturates in floating point (its gradient
            underflows to zero, the margin's does not). ``"dlr"`` refuses a model with fewer than three classes.
        rho: the fraction of steps with a rising loss below which the step is halved (default 0.75).
        use_predicted_labels: attack the clean predictions instead of the given labels.
        sample_seeds: ``None`` (the global RNG: ``2 * torch.rand(shape) - 1`` on the CPU for the samples still to
            attack, as torchattacks draws) or one seed per sample: restart ``r`` of sample ``j`` starts from
            ``mix_seed(sample_seeds[j], r)``. The loss is summed over the batch either way, so a sample's result does
            not depend on its batch once its start does not.

    Shapes: images ``(B, C, H, W)`` or ``(B, C, D, H, W)`` in [0, 1]; labels ``(B,)`` or ``None``; output like images.

    Example::

        >>> adv = APGD(model, eps=0.004, steps=100, loss="margin")(images, labels)
    """

    name = "APGD"

    def __init__(
        self,
        model: nn.Module,
        eps: float | torch.Tensor,
        steps: int = 10,
        restarts: int = 1,
        loss: str = "ce",
        rho: float = 0.75,
        use_predicted_labels: bool = False,
        sample_seeds: torch.Tensor | Sequence[int] | None = None,
    ) -> None:
        super().__init__(model, eps, use_predicted_labels, sample_seeds)
        positive_int(steps, "steps")
        positive_int(restarts, "restarts")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if not 0.0 < rho <= 1.0:
            raise ValueError(f"rho must lie in (0, 1], got {rho}")
        self.steps, self.restarts, self.loss, self.rho = int(steps), int(restarts), loss, float(rho)

    def _repr_extra(self) -> str:
        return f", steps={self.steps}, restarts={self.restarts}, loss={self.loss}, rho={self.rho:g}"

    def passes_per_sample(self) -> tuple[int, int]:
        return (self.steps + 1) * self.restarts, 1 + int(self.use_predicted_labels)

    def _losses(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The per-sample loss ``(B,)`` the attack maximises."""
        if self.loss == "ce":
            return classification_loss(logits, labels, reduction="none")
        if self.loss == "dlr" or num_classes(logits) >= 3:
            return dlr_loss(logits, labels)
        return margin_loss(logits, labels)

    def _loss_gradient(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(grad, loss, logits)`` at ``x``: the input gradient of the summed per-sample loss, the ``(B,)`` losses and
        the logits (both detached)."""
        x = x.detach().requires_grad_(True)
        logits = self._logits(x)
        self._check_labels_once(logits, labels)
        losses = self._losses(logits, labels)
        (grad,) = torch.autograd.grad(losses.sum(), x)
        self._grad_passes += x.shape[0]
        return grad.detach(), losses.detach(), logits.detach()

    def _start(self, images: torch.Tensor, eps: float | torch.Tensor, todo: torch.Tensor, restart: int) -> torch.Tensor:
        """The random start of run ``restart`` for the samples ``todo`` of the batch."""
        x = images[todo]
        if self._seeds is None:
            t = (2 * torch.rand(x.shape) - 1).to(device=x.device, dtype=x.dtype)
        else:
            t = per_sample_uniform(x, [self._seeds[int(j)] for j in todo.tolist()], restart)
        largest = t.reshape(t.shape[0], -1).abs().amax(dim=1).reshape(-1, *[1] * (x.ndim - 1))
        return (x + take(eps, todo) * t / largest).clamp(0.0, 1.0)

    def _runs(self, clean: torch.Tensor) -> int:
        """How many runs the attack makes (APGD: its restarts), after reading the clean logits ``(B, K)``."""
        return self.restarts

    def _begin_run(self, run: int, todo: torch.Tensor) -> None:
        """Prepare run ``run`` (0-based, also the stream of the random start) for the samples ``todo``."""

    def _attack(self, images: torch.Tensor, labels: torch.Tensor, eps: float | torch.Tensor) -> AttackResult:
        with torch.no_grad():
            clean = self._logits(images)
        self._forward_passes += images.shape[0]
        self._check_labels_once(clean, labels)
        fooled = predict(clean) != labels
        adv = images.clone()
        runs = self._runs(clean)
        self._begin_run(0, torch.arange(images.shape[0], device=images.device))
        loss = self._losses(clean, labels).detach()
        best_loss = torch.full_like(loss, float("-inf"))
        for run in range(runs):
            todo = (~fooled).nonzero()[:, 0]
            if todo.numel() == 0:
                break
            self._begin_run(run, todo)
            sub_eps = take(eps, todo)
            start = self._start(images, eps, todo, run)
            best, hit, run_loss, hit_adv = self._single_run(images[todo], labels[todo], sub_eps, start)
            better = hit | (run_loss > best_loss[todo])
            adv[todo[better]] = torch.where(hit[better].view(-1, *[1] * (images.ndim - 1)), hit_adv[better],
                                            best[better])
            loss[todo[better]] = run_loss[better]
            best_loss[todo[better]] = run_loss[better]
            fooled[todo[hit]] = True
        return AttackResult(adv, labels, fooled, loss)

    def _single_run(
        self, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor, start: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One restart from ``start``: ``(x_best, fooled, loss_best, x_fooled)``, the highest-loss iterate, whether
        any iterate was misclassified, the highest loss and the last misclassified iterate."""
        n, steps = x.shape[0], self.steps
        checkpoint, min_gap, shrink = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
        shape = (n, *[1] * (x.ndim - 1))
        low, high = x - eps, x + eps
        x_adv = start
        x_best, x_fooled = x_adv.clone(), x_adv.clone()
        loss_steps = torch.zeros(steps, n, dtype=x.dtype, device=x.device)
        grad, loss, logits = self._loss_gradient(x_adv, y)
        grad_best = grad.clone()
        correct = predict(logits) == y
        loss_best = loss.clone()
        step = torch.full(shape, 2.0, dtype=x.dtype, device=x.device) * eps
        x_old = x_adv.clone()
        gap, since_check = checkpoint, 0
        best_at_check = loss_best.clone()
        halved_at_check = torch.ones(n, dtype=torch.bool, device=x.device)
        for i in range(steps):
            with torch.no_grad():
                momentum = x_adv - x_old
                x_old = x_adv.clone()
                a = 0.75 if i > 0 else 1.0
                z = torch.clamp(torch.min(torch.max(x_adv + step * torch.sign(grad), low), high), 0.0, 1.0)
                x_adv = torch.clamp(
                    torch.min(torch.max(x_adv + (z - x_adv) * a + momentum * (1 - a), low), high), 0.0, 1.0
                )
            grad, loss, logits = self._loss_gradient(x_adv, y)
            still = predict(logits) == y
            correct &= still
            x_fooled[~still] = x_adv[~still]
            loss_steps[i] = loss
            improved = loss > loss_best
            x_best[improved], grad_best[improved], loss_best[improved] = x_adv[improved], grad[improved], loss[improved]
            since_check += 1
            if since_check == gap:
                # rises of the loss over the last `gap` steps; index -1 wraps to the (still zero) last row, as in the
                # reference implementation
                rises = sum((loss_steps[i - c] > loss_steps[i - c - 1]).to(torch.int64) for c in range(gap))
                halve = (rises <= gap * self.rho) | (~halved_at_check & (best_at_check >= loss_best))
                halved_at_check, best_at_check = halve.clone(), loss_best.clone()
                if bool(halve.any()):
                    step[halve] /= 2.0
                    x_adv[halve], grad[halve] = x_best[halve].clone(), grad_best[halve].clone()
                since_check = 0
                gap = max(gap - shrink, min_gap)
        return x_best, ~correct, loss_best, x_fooled
