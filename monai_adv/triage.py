"""Referral (triage) rules on per-image scores: refer the most suspect images, measure accuracy on the rest.

Joel et al. 2022 (Table 2) exclude the 20 % of test images most sensitive to adversarial perturbation and report the
clean accuracy on the remaining images. This module computes that, and the selective-classification baselines it
should be compared with, from per-image arrays (no model, no Ignite):

* sensitivity triage: refer the images with the smallest flipping eps (``eps_hi`` of
  :func:`monai_adv.sensitivity.minimal_flip_eps`; never-flipped images have ``inf`` and are the least sensitive);
* confidence triage: refer the images with the lowest clean probability of the predicted class;
* margin triage: refer the images with the smallest margin between the two largest logits (or probabilities).

Every rule has the same form: **a smaller score is more suspect**. A fraction rule refers exactly
``k = floor(q * n + 1/2)`` images, the ``k`` smallest scores; ties are broken by ``tiebreak`` (ascending, optional)
and then by index (lower first), so the flagged set is deterministic. ``NaN`` scores count as ``+inf`` (least
suspect). The fraction rule's threshold is the largest referred score: the threshold rule ``score <= threshold``
(what one stores for inference, as the paper's ``eps_cap``) then flags the same images plus any tied with the last
one, so its flagged fraction equals ``q`` up to ties.

Arrays may be numpy arrays, sequences or (CPU or GPU) torch tensors; results are numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from monai_adv.utils import finite_or_none

__all__ = [
    "TriageResult",
    "as_array",
    "n_referred",
    "referral_order",
    "flag_fraction",
    "threshold_for_fraction",
    "flag_threshold",
    "triage",
    "threshold_triage",
    "sensitivity_triage",
    "confidence_triage",
    "margin_triage",
    "compare_triage",
    "retained_accuracy_curve",
    "triage_curves",
    "confidence_from_probabilities",
    "margin_from_logits",
    "margin_from_probabilities",
    "overlap",
]

DEFAULT_FRACTIONS = np.round(np.linspace(0.0, 0.5, 51), 10)
"""Referred fractions of the default curve: 0, 0.01, ..., 0.5."""


@dataclass
class TriageResult:
    """Outcome of one referral rule on one set of images.

    Attributes:
        rule: name of the rule (``"sensitivity"``, ``"confidence"``, ``"margin"``, or as given).
        flagged: ``(N,)`` bool, the referred images.
        threshold: the rule flags ``score <= threshold``; for a fraction rule, the largest referred score
            (``-inf`` when nothing is referred).
        q: the requested fraction (``None`` for a threshold rule).
        n: number of images.
        n_flagged: number of referred images.
        fraction_flagged: ``n_flagged / n``.
        accuracy_all: accuracy on all images.
        accuracy_retained: accuracy on the images not referred (``nan`` when every image is referred).
        accuracy_flagged: accuracy on the referred images (``nan`` when none is referred).
    """

    rule: str
    flagged: np.ndarray
    threshold: float
    q: float | None
    n: int
    n_flagged: int
    fraction_flagged: float
    accuracy_all: float
    accuracy_retained: float
    accuracy_flagged: float

    @property
    def accuracy_gain(self) -> float:
        """``accuracy_retained - accuracy_all`` (Table 2's "change in model accuracy", as a fraction)."""
        return self.accuracy_retained - self.accuracy_all

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary without the per-image flags: the attributes and ``accuracy_gain``, with ``None``
        (JSON ``null``) for every number that is not finite, so the summary is strict JSON:

        - ``threshold`` is ``None`` when the rule defines no finite threshold: nothing is referred (``-inf`` in
          memory; ``n_flagged`` is 0, e.g. one image and ``q=0.2`` refers ``floor(0.2 + 1/2) = 0`` images) or the
          last referred score is ``inf`` (a never-flipped image in sensitivity triage; ``n_flagged > 0``);
        - ``accuracy_retained`` and ``accuracy_gain`` are ``None`` when every image is referred, ``accuracy_flagged``
          when none is, ``fraction_flagged`` and the accuracies when there are no images (``nan`` in memory).
        """
        out = asdict(self)
        out.pop("flagged")
        out["accuracy_gain"] = self.accuracy_gain
        for key in ("threshold", "fraction_flagged", "accuracy_all", "accuracy_retained", "accuracy_flagged",
                    "accuracy_gain"):
            out[key] = finite_or_none(out[key])
        return out


# ---------------------------------------------------------------------------------------------------------------------
# inputs


def as_array(values: Any, dtype: Any = None) -> np.ndarray:
    """A 1-D or 2-D numpy copy of ``values`` (numpy array, sequence or torch tensor on any device)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.array(values, dtype=dtype)


def _scores(scores: Any) -> np.ndarray:
    s = as_array(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be one value per image (N,), got shape {s.shape}")
    return np.where(np.isnan(s), np.inf, s)


def _correct(correct: Any, n: int) -> np.ndarray:
    c = as_array(correct)
    if c.shape != (n,):
        raise ValueError(f"correct must have shape ({n},), got {c.shape}")
    return c.astype(bool)


def _fraction(q: float) -> float:
    q = float(q)
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"the referred fraction q must lie in [0, 1], got {q}")
    return q


# ---------------------------------------------------------------------------------------------------------------------
# ordering and flags


def n_referred(n: int, q: float) -> int:
    """Images a fraction rule refers: ``floor(q * n + 1/2)`` (nearest, halves up), in ``[0, n]``."""
    # the 1e-9 guards against q * n landing just below a half (0.3 * 5 = 1.4999999999999998)
    return min(n, max(0, math.floor(_fraction(q) * n + 0.5 + 1e-9)))


def referral_order(scores: Any, tiebreak: Any = None) -> np.ndarray:
    """Indices ``(N,)`` from most to least suspect: ascending score, then ascending ``tiebreak``, then index.

    Args:
        scores: ``(N,)`` score per image, smaller is more suspect; ``NaN`` counts as ``+inf``.
        tiebreak: optional ``(N,)`` secondary key for equal scores, smaller first (e.g. the margin).
    """
    s = _scores(scores)
    keys = [np.arange(s.size)]
    if tiebreak is not None:
        t = _scores(tiebreak)
        if t.shape != s.shape:
            raise ValueError(f"tiebreak must have shape {s.shape}, got {t.shape}")
        keys.append(t)
    keys.append(s)
    return np.lexsort(keys)  # the last key is the primary one


def flag_fraction(scores: Any, q: float, tiebreak: Any = None) -> np.ndarray:
    """``(N,)`` bool: the ``n_referred(N, q)`` most suspect images (see :func:`referral_order`)."""
    order = referral_order(scores, tiebreak)
    flags = np.zeros(order.size, dtype=bool)
    flags[order[: n_referred(order.size, q)]] = True
    return flags


def threshold_for_fraction(scores: Any, q: float, tiebreak: Any = None) -> float:
    """The score threshold that realises ``q``: the largest score among the images the fraction rule refers
    (``-inf`` when it refers none). ``score <= threshold`` flags those images and any tied with the last one."""
    s = _scores(scores)
    k = n_referred(s.size, q)
    if k == 0:
        return -math.inf
    return float(s[referral_order(s, tiebreak)[k - 1]])


def flag_threshold(scores: Any, threshold: float) -> np.ndarray:
    """``(N,)`` bool: ``score <= threshold`` (never-flipped images, score ``inf``, only for ``threshold=inf``)."""
    return _scores(scores) <= float(threshold)


# ---------------------------------------------------------------------------------------------------------------------
# rules


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


def _result(rule: str, flagged: np.ndarray, correct: np.ndarray, threshold: float, q: float | None) -> TriageResult:
    n, k = flagged.size, int(flagged.sum())
    return TriageResult(
        rule=rule,
        flagged=flagged,
        threshold=float(threshold),
        q=q,
        n=n,
        n_flagged=k,
        fraction_flagged=k / n if n else math.nan,
        accuracy_all=_mean(correct),
        accuracy_retained=_mean(correct[~flagged]),
        accuracy_flagged=_mean(correct[flagged]),
    )


def triage(scores: Any, correct: Any, q: float, tiebreak: Any = None, rule: str = "score") -> TriageResult:
    """Refer the fraction ``q`` of images with the smallest scores and measure the accuracy on the rest.

    Args:
        scores: ``(N,)`` per-image score, smaller is more suspect (``NaN`` counts as ``+inf``).
        correct: ``(N,)`` bool, the clean prediction is correct.
        q: fraction to refer, in [0, 1]; exactly ``floor(q * N + 1/2)`` images are referred.
        tiebreak: optional ``(N,)`` secondary key for equal scores (smaller referred first); then the index.
        rule: name stored in the result.
    """
    s = _scores(scores)
    c = _correct(correct, s.size)
    q = _fraction(q)
    return _result(rule, flag_fraction(s, q, tiebreak), c, threshold_for_fraction(s, q, tiebreak), q)


def threshold_triage(scores: Any, correct: Any, threshold: float, rule: str = "score") -> TriageResult:
    """Refer every image with ``score <= threshold`` (the paper's ``eps_cap`` rule with ``scores = eps_hi``)."""
    s = _scores(scores)
    return _result(rule, flag_threshold(s, threshold), _correct(correct, s.size), threshold, None)


def sensitivity_triage(eps_hi: Any, correct: Any, q: float = 0.2, tiebreak: Any = None) -> TriageResult:
    """Refer the fraction ``q`` most sensitive images: smallest flipping eps first (``inf``: never flipped)."""
    return triage(eps_hi, correct, q, tiebreak, rule="sensitivity")


def confidence_triage(confidence: Any, correct: Any, q: float = 0.2, tiebreak: Any = None) -> TriageResult:
    """Refer the fraction ``q`` least confident images: smallest clean probability of the predicted class first."""
    return triage(confidence, correct, q, tiebreak, rule="confidence")


def margin_triage(margin: Any, correct: Any, q: float = 0.2, tiebreak: Any = None) -> TriageResult:
    """Refer the fraction ``q`` images with the smallest margin (top-1 minus top-2 logit or probability) first."""
    return triage(margin, correct, q, tiebreak, rule="margin")


def compare_triage(rules: Mapping[str, Any], correct: Any, q: float = 0.2) -> dict[str, TriageResult]:
    """Apply several rules at the same ``q``: ``{"sensitivity": eps_hi, "confidence": conf, ...}`` -> results."""
    return {name: triage(scores, correct, q, rule=name) for name, scores in rules.items()}


# ---------------------------------------------------------------------------------------------------------------------
# curves


def retained_accuracy_curve(
    scores: Any, correct: Any, fractions: Sequence[float] | np.ndarray | None = None, tiebreak: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy on the retained images against the fraction referred, for one rule.

    Args:
        scores, correct, tiebreak: as in :func:`triage`.
        fractions: referred fractions in [0, 1]; default 0, 0.01, ..., 0.5.

    Returns:
        ``(fractions_referred, accuracy_retained)``, both ``(F,)``: the fraction actually referred
        (``floor(q * N + 1/2) / N``) and the accuracy on the rest (``nan`` where every image is referred).
    """
    s = _scores(scores)
    c = _correct(correct, s.size).astype(np.float64)
    qs = DEFAULT_FRACTIONS if fractions is None else np.asarray(fractions, dtype=np.float64)
    n = s.size
    ks = np.array([n_referred(n, q) for q in qs], dtype=np.int64)
    referred_correct = np.concatenate([[0.0], np.cumsum(c[referral_order(s, tiebreak)])])
    retained = n - ks
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(retained > 0, (c.sum() - referred_correct[ks]) / retained, np.nan)
    return ks / n if n else ks.astype(np.float64), acc


def triage_curves(
    rules: Mapping[str, Any], correct: Any, fractions: Sequence[float] | np.ndarray | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """:func:`retained_accuracy_curve` for every rule of ``{name: scores}``."""
    return {name: retained_accuracy_curve(scores, correct, fractions) for name, scores in rules.items()}


# ---------------------------------------------------------------------------------------------------------------------
# scores from model outputs


def confidence_from_probabilities(probabilities: Any) -> np.ndarray:
    """``(N,)`` probability of the predicted class from ``(N, K)`` probabilities; ``(N,)`` or ``(N, 1)`` is read
    as the probability ``p`` of class 1 of a binary model, giving ``max(p, 1 - p)``."""
    p = as_array(probabilities, dtype=np.float64)
    if p.ndim == 1 or p.shape[1] == 1:
        p = p.reshape(-1)
        return np.maximum(p, 1.0 - p)
    return p.max(axis=1)


def _top2_gap(values: np.ndarray) -> np.ndarray:
    top2 = -np.partition(-values, 1, axis=1)[:, :2]
    return top2[:, 0] - top2[:, 1]


def margin_from_logits(logits: Any) -> np.ndarray:
    """``(N,)`` largest minus second largest logit of ``(N, K)`` logits; a single logit ``z`` (``(N,)`` or
    ``(N, 1)``, read as the logits ``[0, z]``) gives ``|z|``."""
    z = as_array(logits, dtype=np.float64)
    if z.ndim == 1 or z.shape[1] == 1:
        return np.abs(z.reshape(-1))
    return _top2_gap(z)


def margin_from_probabilities(probabilities: Any) -> np.ndarray:
    """``(N,)`` largest minus second largest probability; a binary ``p`` (``(N,)`` or ``(N, 1)``) gives
    ``|2p - 1|``."""
    p = as_array(probabilities, dtype=np.float64)
    if p.ndim == 1 or p.shape[1] == 1:
        return np.abs(2.0 * p.reshape(-1) - 1.0)
    return _top2_gap(p)


# ---------------------------------------------------------------------------------------------------------------------
# comparing flagged sets


def overlap(flags_a: Any, flags_b: Any) -> dict[str, float]:
    """Agreement of two flagged sets ``(N,)`` bool: ``jaccard`` ``|A & B| / |A | B|``, ``fraction_of_a``
    ``|A & B| / |A|``, ``fraction_of_b`` ``|A & B| / |B|`` (``nan`` for empty denominators) and ``intersection``."""
    a, b = as_array(flags_a).astype(bool), as_array(flags_b).astype(bool)
    if a.shape != b.shape:
        raise ValueError(f"flag arrays differ in shape: {a.shape} vs {b.shape}")
    both, either = int((a & b).sum()), int((a | b).sum())

    def ratio(x: int, y: int) -> float:
        return x / y if y else math.nan

    return {
        "jaccard": ratio(both, either),
        "fraction_of_a": ratio(both, int(a.sum())),
        "fraction_of_b": ratio(both, int(b.sum())),
        "intersection": float(both),
    }
