"""Basic Iterative Method (iterative FGSM): PGD from the clean image, with BIM's step and projection."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .pgd import PGD

__all__ = ["BIM"]


class BIM(PGD):
    r"""BIM, Kurakin et al., "Adversarial examples in the physical world", 2016 (arXiv:1607.02533).

    ``steps`` signed-gradient steps of ``step_size`` from the clean image, each clipped to the eps-ball and to
    [0, 1]. Defaults follow the paper's Table S1 (10 steps of eps/10). Same result as
    ``torchattacks.BIM(model, eps, alpha=step_size, steps)``.

    This is :class:`~monai_adv.attacks.pgd.PGD`'s loop with ``random_start=False``, ``restarts=1`` and a default
    step of eps/10, projecting with a box clamp as torchattacks.BIM does (see :meth:`_project`).

    Args:
        model: classifier, ``(B, C, *spatial)`` images in [0, 1] -> ``(B, K)`` logits or one logit ``(B, 1)``.
        eps: L-infinity radius in [0, 1] units, a float or a ``(B,)`` tensor.
        steps: number of steps (default 10).
        step_size: float or ``(B,)`` tensor; ``None`` (default) gives ``eps / 10``.
        any_iterate: return each sample's first misclassified iterate (clean image included) if there is one.
        use_predicted_labels: attack the clean predictions instead of the given labels.
        sample_seeds: per-sample seeds (see :class:`~monai_adv.attacks.base.LinfAttack`): BIM has no randomness, so
            they only make the gradient that of each sample's own loss (summed, not averaged, over the batch).

    Shapes: images ``(B, C, H, W)`` or ``(B, C, D, H, W)`` in [0, 1]; labels ``(B,)`` or ``None``; output like images.

    Example::

        >>> adv = BIM(model, eps=0.004)(images, labels)
    """

    name = "BIM"
    step_divisor = 10

    def __init__(
        self,
        model: nn.Module,
        eps: float | torch.Tensor,
        steps: int = 10,
        step_size: float | torch.Tensor | None = None,
        any_iterate: bool = False,
        use_predicted_labels: bool = False,
        sample_seeds: torch.Tensor | Sequence[int] | None = None,
    ) -> None:
        super().__init__(
            model, eps, steps, step_size, random_start=False, restarts=1, any_iterate=any_iterate,
            use_predicted_labels=use_predicted_labels, sample_seeds=sample_seeds,
        )

    def _repr_extra(self) -> str:
        return self._loop_repr()  # no random start and one restart, always: not shown

    @staticmethod
    def _project(adv: torch.Tensor, images: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
        # The same set as LinfAttack._project, computed as torchattacks.BIM does (a box clamp) so results agree bit
        # for bit: x + (adv - x) can differ from adv in the last bit. Overwrites adv.
        return adv.clamp_(min=torch.clamp(images - eps, min=0), max=torch.clamp(images + eps, max=1))
