"""What crafts adversarial examples inside an engine or a handler: an attack named with plain (JSON-friendly) values
(:class:`AttackConfig`), or any factory ``factory(model, eps) -> attack``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .bim import BIM
from .checks import check_eps
from .fgsm import FGSM
from .pgd import PGD

__all__ = ["ATTACK_NAMES", "AttackFactory", "AttackConfig", "attack_config", "attack_name"]

ATTACK_NAMES = ("pgd", "fgsm_rs", "fgsm", "bim")

AttackFactory = Callable[[nn.Module, float], Callable[..., torch.Tensor]]
"""``factory(model, eps) -> attack``, with ``attack(images, labels) -> adversarial images``. The attack classes
themselves are factories (``FGSM``, ``BIM``, ``PGD``); use ``functools.partial(PGD, restarts=5)`` for options and
``functools.partial(LibraryAttack, "Square", n_queries=1000)`` for torchattacks attacks."""


@dataclass(frozen=True)
class AttackConfig:
    """What crafts the adversarial examples, from plain (JSON-friendly) values.

    Args:
        name: ``"pgd"`` (uniform random start, ``steps`` steps of ``step_size``), ``"fgsm_rs"`` (fast AT of Wong et
            al. 2020: random start, one step of 1.25 eps; this is PGD with one step), ``"fgsm"`` (one step of eps from
            the clean image) or ``"bim"`` (PGD without random start, step eps/10).
        steps: gradient steps of ``"pgd"``/``"bim"``; ``None`` gives ``default_steps``. Must be ``None`` or 1 for
            the FGSM variants.
        step_size: absolute step in [0, 1] units, the same for every eps of a schedule; ``None`` (default) gives a
            fraction of the current eps: eps/4 for PGD (Table S4), 1.25 eps for FGSM-RS, eps/10 for BIM.
        restarts: random starts of ``"pgd"``/``"fgsm_rs"`` (Table S4: 1); the strongest one is kept per sample.
        default_steps: steps used when ``steps`` is ``None`` (7 for training as Table S4, 10 for evaluation as S1).
    """

    name: str = "pgd"
    steps: int | None = None
    step_size: float | None = None
    restarts: int = 1
    default_steps: int = 7

    def __post_init__(self) -> None:
        if self.name not in ATTACK_NAMES:
            raise ValueError(f"attack must be one of {ATTACK_NAMES} or a callable factory, got {self.name!r}")
        if self.name in ("fgsm", "fgsm_rs") and self.steps not in (None, 1):
            raise ValueError(f"attack {self.name!r} takes one step, got steps={self.steps}")
        if self.steps is not None and (int(self.steps) != self.steps or self.steps < 1):
            raise ValueError(f"steps must be a positive integer, got {self.steps}")
        if self.step_size is not None:
            check_eps(self.step_size, "step_size")
        if self.name in ("fgsm", "bim") and self.restarts != 1:
            raise ValueError(f"attack {self.name!r} has no random start, restarts must be 1")

    @property
    def num_steps(self) -> int:
        """Input-gradient passes per attacked sample (per restart)."""
        if self.name in ("fgsm", "fgsm_rs"):
            return 1
        return self.default_steps if self.steps is None else int(self.steps)

    def build(self, model: nn.Module, eps: float, use_predicted_labels: bool = False) -> Callable[..., torch.Tensor]:
        """The attack for ``model`` at radius ``eps``: ``attack(images, labels) -> adversarial images``."""
        if self.name == "fgsm":
            return FGSM(model, eps, use_predicted_labels=use_predicted_labels)
        if self.name == "bim":
            return BIM(model, eps, self.num_steps, self.step_size, use_predicted_labels=use_predicted_labels)
        step = self.step_size
        if step is None and self.name == "fgsm_rs":
            step = 1.25 * eps
        return PGD(
            model, eps, self.num_steps, step, random_start=True, restarts=self.restarts,
            use_predicted_labels=use_predicted_labels,
        )


def attack_config(attack: str | AttackFactory, steps: int | None, step_size: float | None, restarts: int,
                  default_steps: int) -> AttackConfig | AttackFactory:
    """A factory as it is, or an attack name with its settings as an :class:`AttackConfig`."""
    if callable(attack):
        return attack
    return AttackConfig(str(attack).lower(), steps, step_size, restarts, default_steps)


def attack_name(attack: AttackConfig | AttackFactory) -> str:
    """The name an attack is logged and reported under."""
    return attack.name if isinstance(attack, AttackConfig) else getattr(attack, "__name__", type(attack).__name__)
