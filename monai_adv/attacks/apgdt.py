"""Targeted Auto-PGD: APGD on a targeted DLR loss, once per runner-up class."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .apgd import APGD
from .checks import positive_int
from .loss import num_classes

__all__ = ["APGDT", "MIN_CLASSES"]

MIN_CLASSES = 4
"""Fewest classes APGD-T attacks: its targeted DLR loss reads the target and three more logits."""


class APGDT(APGD):
    r"""APGD-T, Croce and Hein (ICML 2020): for each of the ``targets`` classes ranked 2nd, 3rd, ... by the clean
    logits, an :class:`~monai_adv.attacks.APGD` run (same steps, momentum, checkpoints and restarts) that maximises
    the targeted DLR loss ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` towards that class ``t``, on the images not
    misclassified yet. It succeeds when the prediction leaves the label (any class), as in AutoAttack; with the same
    start (``torch.manual_seed(s)`` before the call and ``torchattacks.APGDT(..., seed=s)``) it gives torchattacks
    3.5.1's iterates up to float round-off. Needs ``K >= 4`` classes (the loss reads the 4th logit).

    Args:
        model, eps, steps, restarts, rho, use_predicted_labels, sample_seeds: as :class:`~monai_adv.attacks.APGD`;
            with ``sample_seeds`` target ``i`` (0-based) at restart ``r`` starts from stream ``i * restarts + r``.
        targets: runner-up classes to target; ``None`` (default) all ``K - 1`` (AutoAttack's standard version
            uses 9).

    Example::

        >>> adv = APGDT(model, eps=0.01, steps=100, targets=9)(images, labels)
    """

    name = "APGD-T"

    def __init__(
        self,
        model: nn.Module,
        eps: float | torch.Tensor,
        steps: int = 10,
        restarts: int = 1,
        targets: int | None = None,
        rho: float = 0.75,
        use_predicted_labels: bool = False,
        sample_seeds: torch.Tensor | Sequence[int] | None = None,
    ) -> None:
        super().__init__(model, eps, steps, restarts, "dlr", rho, use_predicted_labels, sample_seeds)
        self.targets = None if targets is None else positive_int(targets, "targets")
        self._ranked: torch.Tensor | None = None  # class indices by clean logit, ascending
        self._target: torch.Tensor | None = None  # the target of each sample of the running run

    def _repr_extra(self) -> str:
        return super()._repr_extra().replace(", loss=dlr", "") + f", targets={self.targets or 'K-1'}"

    def passes_per_sample(self) -> tuple[int, int]:
        grad, forward = super().passes_per_sample()
        return grad * (self.targets or 1), forward  # per target (K - 1 unknown before the model is seen)

    def _runs(self, clean: torch.Tensor) -> int:
        classes = num_classes(clean)
        if classes < MIN_CLASSES:
            raise ValueError(f"APGD-T's targeted DLR loss needs at least {MIN_CLASSES} classes, the model has "
                             f"{classes}: use APGD with the margin loss")
        self._ranked = clean.argsort(dim=1)
        return min(self.targets or classes - 1, classes - 1) * self.restarts

    def _begin_run(self, run: int, todo: torch.Tensor) -> None:
        self._target = self._ranked[todo, -(2 + run // self.restarts)]

    def _losses(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ordered = logits.sort(dim=1).values
        rows = torch.arange(logits.shape[0], device=logits.device)
        gap = logits[rows, labels] - logits[rows, self._target]
        return -gap / (ordered[:, -1] - 0.5 * ordered[:, -3] - 0.5 * ordered[:, -4] + 1e-12)
