"""The paper's susceptibility comparison: how small an epsilon makes an attack "generally succeed" on each model, and
how medical models compare with non-medical ones.

For one model the measure is the smallest epsilon of its sweep grid at which the attack's accuracy falls below half
of its clean accuracy (the paper: "the smallest perturbation required for attacks to generally succeed"). A model
whose accuracy never falls that far within the grid has no such epsilon: we only know it lies above the grid's
largest. Across models the comparison is the ratio of the geometric means of the medical and of the non-medical
models' epsilons; it is a bound, not a value, when some epsilons are only known to lie above their grid.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Susceptibility", "SusceptibilityRatio", "susceptibility", "susceptibility_ratio"]


@dataclass(frozen=True)
class Susceptibility:
    """One model's susceptibility.

    Attributes:
        name: the model (bundle) name.
        medical: whether it is a medical model.
        clean_accuracy: accuracy without attack (a fraction).
        eps: the smallest grid epsilon whose accuracy is below ``fraction * clean_accuracy``; ``None`` if none is.
        max_eps: the largest epsilon of the grid.
        accuracy_at_eps: the accuracy at ``eps`` (``None`` when not reached).
        attack: the attack the measure is taken on.
        fraction: the fraction of the clean accuracy (0.5).
    """

    name: str
    medical: bool
    clean_accuracy: float
    eps: float | None
    max_eps: float
    accuracy_at_eps: float | None
    attack: str = "PGD"
    fraction: float = 0.5

    @property
    def reached(self) -> bool:
        """Whether the accuracy fell below the bar within the grid."""
        return self.eps is not None

    @property
    def bound(self) -> float:
        """``eps`` when reached, else ``max_eps`` (a lower bound of the true value)."""
        return self.eps if self.eps is not None else self.max_eps

    def text(self) -> str:
        """``"0.002"``, or ``"> 0.006 (not reached within the grid)"``."""
        return f"{self.eps:g}" if self.eps is not None else f"> {self.max_eps:g} (not reached within the grid)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "medical": self.medical, "attack": self.attack, "fraction": self.fraction,
            "clean_accuracy": self.clean_accuracy, "eps": self.eps, "reached": self.reached,
            "max_eps": self.max_eps, "accuracy_at_eps": self.accuracy_at_eps,
        }


def susceptibility(
    name: str, rows: Iterable[Mapping[str, Any]], medical: bool, attack: str = "PGD", fraction: float = 0.5
) -> Susceptibility:
    """The susceptibility of one model from its attack-sweep rows.

    Args:
        name: the model's name.
        rows: sweep rows with ``attack``, ``eps`` and ``accuracy`` (a fraction); the ``clean`` row gives the clean
            accuracy (``attack_sweep.json``'s ``rows``).
        medical: whether the model is medical.
        attack: the attack to measure (PGD, as the paper's comparison).
        fraction: the bar, as a fraction of the clean accuracy.

    Raises:
        ValueError: naming the model, when the rows hold no clean row or no row of ``attack``.
    """
    rows = list(rows)
    clean = [float(r["accuracy"]) for r in rows if r["attack"] == "clean"]
    if not clean:
        raise ValueError(f"{name}: the sweep has no clean row")
    points = sorted(
        (float(r["eps"]), float(r["accuracy"])) for r in rows if r["attack"] == attack and float(r["eps"]) > 0
    )
    if not points:
        raise ValueError(f"{name}: the sweep has no {attack} rows")
    bar = fraction * clean[0]
    hit = next(((eps, acc) for eps, acc in points if acc < bar), None)
    return Susceptibility(
        name=name, medical=medical, clean_accuracy=clean[0], eps=None if hit is None else hit[0],
        max_eps=points[-1][0], accuracy_at_eps=None if hit is None else hit[1], attack=attack, fraction=fraction,
    )


@dataclass(frozen=True)
class SusceptibilityRatio:
    """Geometric mean of the medical models' epsilons over that of the non-medical models'.

    ``relation`` is ``"="`` (every epsilon reached), ``"<"`` (some non-medical epsilon lies above its grid, so the
    true ratio is smaller), ``">"`` (some medical epsilon lies above its grid) or ``None`` with ``value`` ``None``
    when both kinds hold such epsilons or a kind is missing (``reason`` says which).
    """

    value: float | None
    relation: str | None
    medical: tuple[str, ...]
    non_medical: tuple[str, ...]
    reason: str = ""

    def text(self) -> str:
        if self.value is None:
            return f"not determined ({self.reason})"
        prefix = "" if self.relation == "=" else f"{self.relation} "
        return f"{prefix}{self.value:.3g}"

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "relation": self.relation, "medical": list(self.medical),
                "non_medical": list(self.non_medical), "reason": self.reason, "text": self.text()}


def _geometric_mean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def susceptibility_ratio(items: Iterable[Susceptibility]) -> SusceptibilityRatio:
    """The medical to non-medical ratio of :func:`susceptibility` epsilons (< 1: medical models fall at smaller eps)."""
    items = list(items)
    medical = [s for s in items if s.medical]
    other = [s for s in items if not s.medical]
    names = (tuple(s.name for s in medical), tuple(s.name for s in other))
    if not medical or not other:
        missing = "medical" if not medical else "non-medical"
        return SusceptibilityRatio(None, None, *names, reason=f"no {missing} model in this study")
    censored_medical = any(not s.reached for s in medical)
    censored_other = any(not s.reached for s in other)
    if censored_medical and censored_other:
        return SusceptibilityRatio(
            None, None, *names, reason="both a medical and a non-medical model stay above half their clean accuracy"
        )
    value = _geometric_mean([s.bound for s in medical]) / _geometric_mean([s.bound for s in other])
    relation = ">" if censored_medical else "<" if censored_other else "="
    return SusceptibilityRatio(value, relation, *names)
