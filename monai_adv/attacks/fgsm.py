"""Fast Gradient Sign Method."""

from __future__ import annotations

import torch

from .base import AttackResult, LinfAttack
from .checks import per_sample

__all__ = ["FGSM"]


class FGSM(LinfAttack):
    r"""FGSM, Goodfellow et al., "Explaining and harnessing adversarial examples", ICLR 2015 (arXiv:1412.6572).

    One step of size ``eps`` along the sign of the input gradient of the loss, clipped to [0, 1]:
    ``x_adv = clip(x + eps * sign(grad_x L(f(x), y)), 0, 1)``. Same result as ``torchattacks.FGSM(model, eps)``.

    Args:
        model: classifier, ``(B, C, *spatial)`` images in [0, 1] -> ``(B, K)`` logits or one logit ``(B, 1)``.
        eps: L-infinity radius in [0, 1] units, a float or a ``(B,)`` tensor (one per sample).
        use_predicted_labels: attack the clean predictions instead of the given labels.
        sample_seeds: per-sample seeds (see :class:`~monai_adv.attacks.base.LinfAttack`): FGSM has no randomness, so
            they only make the gradient that of each sample's own loss (summed, not averaged, over the batch).

    Shapes:
        images ``(B, C, H, W)`` or ``(B, C, D, H, W)`` in [0, 1]; labels ``(B,)`` or ``None`` (clean predictions);
        output: like ``images``.

    Example::

        >>> adv = FGSM(model, eps=0.004)(images, labels)

    The gradient sign does not depend on ``eps``: :meth:`direction` computes it once and :meth:`step` turns it into
    the FGSM image for any ``eps`` (the epsilon sweep uses this).
    """

    name = "FGSM"

    def _attack(self, images: torch.Tensor, labels: torch.Tensor, eps: float | torch.Tensor) -> AttackResult:
        grad, _ = self._gradient(images, labels)
        return AttackResult(self.step(images, grad.sign(), eps), labels)

    def direction(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> AttackResult:
        """The eps-independent part of FGSM: ``sign(grad_x L)`` as ``result.adv`` ``(B, ...)`` (values -1, 0, 1),
        with the attacked labels and the work spent (one gradient pass per sample)."""

        def body(x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor) -> AttackResult:
            grad, _ = self._gradient(x, y)
            return AttackResult(grad.sign(), y)

        return self._run(images, labels, body)

    @staticmethod
    def step(images: torch.Tensor, direction: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
        """``clip(images + eps * direction, 0, 1)``; ``eps`` a float or a ``(B,)`` tensor."""
        return torch.clamp(images + per_sample(eps, images) * direction, min=0, max=1)
