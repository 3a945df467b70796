"""Accuracy-versus-epsilon sweeps of L-infinity attacks on one batch, with reuse across the grid, and sanity checks.

:func:`attack_sweep` attacks one tensor batch at every epsilon of a grid and counts the samples still correctly
classified; its :class:`SweepResult` objects add up across batches (``sum(results)``), so a data-loader loop or an
Ignite handler only has to call it per batch.

With ``reuse=True`` (default) the sweep spends work only where it can change the answer:

* nested balls: the eps-balls are nested, so an adversarial example found at a smaller eps is valid at every larger
  eps. A sample broken at eps_j counts as broken for all eps_k >= eps_j and is not attacked again. Accuracy is then
  the accuracy against "the attack at eps_k or any smaller grid eps", non-increasing in eps by construction, and
  never higher than the plain per-eps accuracy;
* batch compaction: broken samples (and samples misclassified clean, broken at eps 0) leave the batch, so they cost
  nothing at the larger eps;
* FGSM: the gradient sign does not depend on eps, so one gradient pass per sample gives the whole FGSM grid (one
  forward pass per eps scores it).

``reuse=False`` runs every attack at every eps on the whole batch (the plain protocol, e.g. the paper's code).

The worst case (``ensemble``, as AutoAttack): per eps, a sample counts as robust only if no attack of the sweep broke
it and no attack of the ensemble, each run in order on the samples every earlier attack left correct, breaks it.
Its row (:data:`WORST_CASE`) is never above any attack's row; how far PGD's row lies above it is how much PGD alone
overstates robustness. With reuse, the nested balls apply to it too: a sample broken at a smaller eps by any attack
is not attacked again.

For deterministic attacks (FGSM, BIM, PGD without random start) a sample is correct with reuse at eps_k exactly when
it is correct without reuse at every grid eps <= eps_k. For randomised attacks (PGD's random start) the two sweeps
draw different starts (compaction changes the batch the noise is drawn for), so the relation holds in expectation,
not sample by sample.

Per-sample keys (``keys``, e.g. hashed item ids) make every sample's sweep independent of the batch it is in: each
:class:`~monai_adv.attacks.base.LinfAttack` gets per-sample seeds ``mix_seed(seed, key, attack, eps)`` (PGD's random
start of that sample, attack and eps, whatever else is in the batch or already broken) and sums its loss over the
batch, so the input gradient of a sample is that of its own loss. Any batching of the same samples, and a
distributed run over shards of them, then give the same per-sample results (up to float round-off of batched
layers), and with reuse the relation above holds sample by sample for PGD too.
Accuracy at eps 0 is the clean accuracy (no attack is run there); eps 0 is added to the grid when missing.

Work is counted per sample: a "gradient pass" is one forward+backward input-gradient pass of one sample, a "forward
pass" one forward-only pass of one sample (scoring, predicted labels). For each attack the result records what was
spent and what the no-reuse sweep would spend nominally (every eps on every sample, all steps and restarts, one
scoring forward per eps). The clean forward pass of the batch (``n`` forward passes) is shared and not included.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .attacks.base import LinfAttack
from .attacks.checks import check_images, check_labels, plain_tensor
from .attacks.config import AttackFactory
from .attacks.fgsm import FGSM
from .attacks.loss import num_classes, predict
from .attacks.model_state import eval_mode
from .attacks.seeding import check_sample_seeds, key_of, mix_seed

__all__ = [
    "AttackFactory", "SweepWork", "SweepResult", "Check", "attack_sweep", "sweep_checks", "all_passed", "WORST_CASE",
]

WORST_CASE = "worst case"
"""The row of the worst case over every attack of a sweep and its ensemble."""

BOUND_TOLERANCE = 1e-5  # float round-off allowed on |adv - x| <= eps (values near 1 have a 6e-8 spacing)


@dataclass
class SweepWork:
    """Per-sample pass counts of one attack's sweep (see the module docstring). ``None``: the attack does not
    report its passes (torchattacks attacks through :class:`~monai_adv.attacks.LibraryAttack`)."""

    grad_passes: int | None = 0
    forward_passes: int = 0
    grad_passes_no_reuse: int | None = 0
    forward_passes_no_reuse: int | None = 0
    samples_attacked: int = 0
    samples_attacked_no_reuse: int = 0

    def __add__(self, other: SweepWork) -> SweepWork:
        def add(a: int | None, b: int | None) -> int | None:
            return None if a is None or b is None else a + b

        return SweepWork(*(add(getattr(self, f), getattr(other, f)) for f in self.__dataclass_fields__))

    @property
    def grad_passes_saved(self) -> float | None:
        """Fraction of the no-reuse gradient passes that were not spent."""
        if self.grad_passes is None or not self.grad_passes_no_reuse:
            return None
        return 1.0 - self.grad_passes / self.grad_passes_no_reuse


@dataclass
class SweepResult:
    """Counts of one sweep; add results of several batches with ``+`` or ``sum``.

    Attributes:
        eps: the grid, ascending, starting at 0.
        n: number of samples.
        clean_correct: samples correctly classified without attack.
        correct: per attack, per eps, the number of samples still correctly classified.
        work: per attack, the passes spent and the no-reuse baseline.
        per_sample: per attack, ``(n, len(eps))`` bool on CPU, True where the sample is still correct.
        reuse: whether nested-ball reuse was on.
        ensemble_flags: per ensemble attack, ``(n, len(eps))`` bool on CPU, True where it broke a sample that every
            attack before it (the sweep's attacks, the earlier ensemble attacks, any attack at a smaller eps with
            reuse) left correct; empty without an ensemble.
    """

    eps: tuple[float, ...]
    n: int
    clean_correct: int
    correct: dict[str, list[int]]
    work: dict[str, SweepWork]
    per_sample: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    reuse: bool = True
    ensemble_flags: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def attacks(self) -> list[str]:
        return list(self.correct)

    @property
    def clean_accuracy(self) -> float:
        return self.clean_correct / self.n if self.n else math.nan

    @property
    def ensemble_broken(self) -> dict[str, list[int]]:
        """Per ensemble attack, per eps, the number of samples only it broke (see ``ensemble_flags``)."""
        return {a: [int(c) for c in flags.sum(0).tolist()] for a, flags in self.ensemble_flags.items()}

    def accuracy(self, attack: str) -> list[float]:
        """Accuracy of ``attack`` at every eps of the grid."""
        return [c / self.n if self.n else math.nan for c in self.correct[attack]]

    def __add__(self, other: SweepResult) -> SweepResult:
        if not isinstance(other, SweepResult):
            return NotImplemented
        if (self.eps != other.eps or self.attacks != other.attacks or self.reuse != other.reuse
                or list(self.ensemble_flags) != list(other.ensemble_flags)):
            raise ValueError("can only add sweep results with the same eps grid, attacks and reuse setting")
        return SweepResult(
            eps=self.eps,
            n=self.n + other.n,
            clean_correct=self.clean_correct + other.clean_correct,
            correct={a: [x + y for x, y in zip(self.correct[a], other.correct[a])] for a in self.attacks},
            work={a: self.work[a] + other.work[a] for a in self.attacks},
            per_sample={
                a: torch.cat([self.per_sample[a], other.per_sample[a]])
                for a in self.attacks
                if a in self.per_sample and a in other.per_sample
            },
            reuse=self.reuse,
            ensemble_flags={a: torch.cat([f, other.ensemble_flags[a]]) for a, f in self.ensemble_flags.items()},
        )

    def __radd__(self, other: Any) -> SweepResult:
        if other == 0:  # sum() starts from 0
            return self
        return NotImplemented

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no per-sample tensors)."""
        return {
            "eps": list(self.eps),
            "n": self.n,
            "reuse": self.reuse,
            "clean_correct": self.clean_correct,
            "clean_accuracy": self.clean_accuracy,
            "correct": {a: list(c) for a, c in self.correct.items()},
            "accuracy": {a: self.accuracy(a) for a in self.attacks},
            "work": {a: {**asdict(w), "grad_passes_saved": w.grad_passes_saved} for a, w in self.work.items()},
            "ensemble_broken": self.ensemble_broken,
        }


def _grid(eps_grid: Sequence[float]) -> tuple[float, ...]:
    values = sorted({float(e) for e in eps_grid} | {0.0})
    if values[0] < 0 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"eps values must be finite and >= 0, got {list(eps_grid)}")
    return tuple(values)


@torch.no_grad()
def _fooled(model: nn.Module, adv: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return predict(model(adv)) != labels


def _check_bound(name: str, adv: torch.Tensor, images: torch.Tensor, eps: float) -> None:
    size = float((adv - images).abs().max()) if adv.numel() else 0.0
    if size > eps + BOUND_TOLERANCE or float(adv.min()) < -BOUND_TOLERANCE or float(adv.max()) > 1 + BOUND_TOLERANCE:
        raise ValueError(
            f"attack {name!r} at eps={eps:g} returned images outside the eps-ball or [0, 1] (max |adv - x| = "
            f"{size:.6g}); the sweep needs L-infinity attacks bounded by eps"
        )


def _seed(attack: Any, name: str, eps: float, idx: torch.Tensor, keys: list[int] | None, seed: int) -> None:
    """Give a :class:`LinfAttack` the per-sample seeds of samples ``idx`` for ``name`` at ``eps`` (with ``keys``)."""
    if keys is not None and isinstance(attack, LinfAttack):
        stream = key_of(f"{name}@{eps!r}")
        attack.sample_seeds = [mix_seed(seed, keys[i], stream) for i in idx.tolist()]


def _attack_once(
    name: str,
    attack: Any,
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    idx: torch.Tensor,
    eps: float,
    work: SweepWork,
    check_bound: bool,
    keys: list[int] | None,
    seed: int,
) -> torch.Tensor:
    """Attack the samples ``idx`` at ``eps``; the ``(len(idx),)`` mask of those it fooled. Adds its passes to
    ``work``."""
    x, y = images[idx], labels[idx]
    _seed(attack, name, eps, idx, keys, seed)
    fooled = None
    if isinstance(attack, LinfAttack):
        res = attack.run(x, y)
        adv = res.adv
        if work.grad_passes is not None:
            work.grad_passes += res.grad_passes
        work.forward_passes += res.forward_passes
        if res.fooled is not None and not attack.use_predicted_labels:
            fooled = res.fooled  # the attack already scored its result against these labels
    else:
        adv = plain_tensor(attack(x, y))
    return _scored(name, model, adv, x, y, eps, work, check_bound, fooled)


def _scored(
    name: str,
    model: nn.Module,
    adv: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    work: SweepWork,
    check_bound: bool,
    fooled: torch.Tensor | None = None,
) -> torch.Tensor:
    """The mask of the samples ``adv`` fools, after checking it lies in the eps-ball (``check_bound``); one scoring
    forward pass (added to ``work``) unless the attack scored them already (``fooled``)."""
    if check_bound:
        _check_bound(name, adv, x, eps)
    if fooled is None:
        fooled = _fooled(model, adv, y)
        work.forward_passes += x.shape[0]
    return fooled


def _count_nominal(attack: Any, n: int, work: SweepWork) -> None:
    """Add what ``attack`` would spend on all ``n`` samples to ``work``'s no-reuse totals (unknown for an attack
    that does not count its passes)."""
    if isinstance(attack, LinfAttack) and work.grad_passes is not None:
        grad_nominal, fwd_nominal = attack.passes_per_sample()
        work.grad_passes_no_reuse += n * grad_nominal
        work.forward_passes_no_reuse += n * (fwd_nominal + 1)
    else:
        work.grad_passes = work.grad_passes_no_reuse = work.forward_passes_no_reuse = None


def _worst_case(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    robust: torch.Tensor,
    ensemble: Mapping[str, AttackFactory],
    grid: tuple[float, ...],
    reuse: bool,
    check_bound: bool,
    keys: list[int] | None,
    seed: int,
) -> tuple[torch.Tensor, SweepWork, dict[str, torch.Tensor]]:
    """The worst case per sample and eps ``(n, len(grid))``, from ``robust`` (correct under every attack of the
    sweep) and the ``ensemble`` run in order on the samples still correct; its work and, per ensemble attack, the
    ``(n, len(grid))`` samples it broke."""
    n = images.shape[0]
    worst = robust.clone()
    alive = robust[:, 0].clone()
    work = SweepWork()
    broken = {name: torch.zeros(n, len(grid), dtype=torch.bool) for name in ensemble}
    for k, eps in enumerate(grid):
        if eps == 0:
            continue
        alive = alive & robust[:, k] if reuse else robust[:, k].clone()
        for name, factory in ensemble.items():
            attack = factory(model, eps)
            _count_nominal(attack, n, work)
            idx = alive.nonzero()[:, 0]
            work.samples_attacked += idx.numel()
            work.samples_attacked_no_reuse += n
            if idx.numel() == 0:
                continue
            fooled = _attack_once(name, attack, model, images, labels, idx, eps, work, check_bound, keys, seed)
            alive[idx[fooled]] = False
            broken[name][idx[fooled].cpu(), k] = True
        worst[:, k] = alive
    return worst, work, broken


def _sweep_one(
    name: str,
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    clean_ok: torch.Tensor,
    factory: AttackFactory,
    grid: tuple[float, ...],
    reuse: bool,
    check_bound: bool,
    keys: list[int] | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, SweepWork]:
    n = images.shape[0]
    correct = torch.zeros(n, len(grid), dtype=torch.bool, device=images.device)
    alive = clean_ok.clone()  # with reuse: not broken at any eps so far
    work = SweepWork()
    direction: torch.Tensor | None = None  # FGSM gradient sign, computed once per sample
    for k, eps in enumerate(grid):
        if eps == 0:
            correct[:, k] = clean_ok
            continue
        attack = factory(model, eps)
        _count_nominal(attack, n, work)
        idx = alive.nonzero()[:, 0] if reuse else torch.arange(n, device=images.device)
        work.samples_attacked += idx.numel()
        work.samples_attacked_no_reuse += n
        if idx.numel() == 0:
            continue
        if reuse and isinstance(attack, FGSM):
            x, y = images[idx], labels[idx]
            _seed(attack, name, eps, idx, keys, seed)
            if direction is None:  # first eps > 0: every alive sample is here, later ones are subsets
                res = attack.direction(x, y)
                direction = torch.zeros_like(images)
                direction[idx] = res.adv
                work.grad_passes += res.grad_passes  # FGSM is a LinfAttack, so the count is known
                work.forward_passes += res.forward_passes
            fooled = _scored(name, model, FGSM.step(x, direction[idx], eps), x, y, eps, work, check_bound)
        else:
            fooled = _attack_once(name, attack, model, images, labels, idx, eps, work, check_bound, keys, seed)
        if reuse:
            alive[idx[fooled]] = False
            correct[:, k] = alive
        else:
            correct[:, k] = ~fooled
    return correct, work


def attack_sweep(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    attacks: Mapping[str, AttackFactory],
    eps_grid: Sequence[float],
    reuse: bool = True,
    check_bound: bool = True,
    keys: torch.Tensor | Sequence[int] | None = None,
    seed: int = 0,
    ensemble: Mapping[str, AttackFactory] | None = None,
) -> SweepResult:
    """Accuracy of ``model`` under every attack at every eps of ``eps_grid``, on one batch.

    Args:
        model: classifier, ``(B, C, *spatial)`` images in [0, 1] -> ``(B, K)`` logits or one logit ``(B, 1)``.
            It runs in eval mode; every module's train/eval flag is restored afterwards.
        images: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` in [0, 1].
        labels: ``(B,)`` class indices; accuracy is measured against them and the attacks attack them (attacks
            built with ``use_predicted_labels=True`` attack the clean predictions instead; with ``reuse`` only
            clean-correct samples are attacked, for which the two agree). ``None``: the clean predictions, so that
            "accuracy" is the fraction of unchanged predictions (the flip criterion of the paper's code).
        attacks: name -> ``factory(model, eps)``, e.g. ``{"FGSM": FGSM, "BIM": BIM, "PGD": PGD}``.
        eps_grid: perturbation sizes in [0, 1] units; sorted, deduplicated, 0 added.
        reuse: nested-ball reuse, batch compaction and the one-gradient FGSM grid (see the module docstring).
        check_bound: check that every attack returns images within its eps-ball and [0, 1] (the nested-ball
            argument needs it); raises ``ValueError`` otherwise.
        keys: ``(B,)`` integers identifying the samples in their data set (dataset indices, or
            :func:`~monai_adv.attacks.seeding.key_of` of item ids). Given, the sweep of every sample is independent of
            its batch (see the module docstring): per-sample seeds ``mix_seed(seed, key, key_of(f"{attack}@{eps!r}"))``
            for every :class:`~monai_adv.attacks.base.LinfAttack`, summed losses. Other attacks (torchattacks
            through :class:`~monai_adv.attacks.LibraryAttack`) keep the global RNG. ``None`` (default): the attacks
            as built, torchattacks' semantics.
        seed: seed of those per-sample streams (only used with ``keys``).
        ensemble: name -> factory of the attacks that complete the worst case (e.g. APGD-CE, APGD-margin, Square),
            each run in order, per eps, only on the samples every attack so far left correct; ``None``: no worst-case
            row. An empty mapping gives the worst case over ``attacks`` alone. The row is :data:`WORST_CASE`.

    Returns:
        :class:`SweepResult` with per-(attack, eps) correct counts, ``n``, per-sample correctness and work counts.
    """
    x = plain_tensor(images).detach()
    check_images(x)
    key_list = check_sample_seeds(keys, x.shape[0])
    grid = _grid(eps_grid)
    with eval_mode(model):
        with torch.no_grad():
            clean_logits = model(x)
        clean_pred = predict(clean_logits)
        y = clean_pred if labels is None else check_labels(labels, x.shape[0], num_classes(clean_logits))
        y = y.to(x.device)
        clean_ok = clean_pred == y
        correct, work, per_sample = {}, {}, {}
        for name, factory in attacks.items():
            flags, work[name] = _sweep_one(
                name, model, x, y, clean_ok, factory, grid, reuse, check_bound, key_list, int(seed)
            )
            per_sample[name] = flags.cpu()
            correct[name] = [int(c) for c in flags.sum(0).tolist()]
        broken: dict[str, torch.Tensor] = {}
        if ensemble is not None:
            if WORST_CASE in attacks or set(ensemble) & set(attacks):
                raise ValueError(f"ensemble attacks {sorted(ensemble)} and {WORST_CASE!r} need names of their own, "
                                 f"apart from the sweep's attacks {sorted(attacks)}")
            robust = clean_ok[:, None].expand(-1, len(grid)).clone()
            for name in attacks:
                robust &= per_sample[name].to(x.device)
            flags, work[WORST_CASE], broken = _worst_case(
                model, x, y, robust, ensemble, grid, reuse, check_bound, key_list, int(seed)
            )
            per_sample[WORST_CASE] = flags.cpu()
            correct[WORST_CASE] = [int(c) for c in flags.sum(0).tolist()]
    return SweepResult(grid, x.shape[0], int(clean_ok.sum()), correct, work, per_sample, reuse, broken)


# ---------------------------------------------------------------------------------------------------------------------
# sanity checks


@dataclass
class Check:
    """One sanity check: ``passed`` is True, False, or None when it could not run (inputs missing)."""

    name: str
    passed: bool | None
    message: str
    values: dict[str, Any] = field(default_factory=dict)


def _max_rise(acc: Sequence[float]) -> float:
    return max((b - a for a, b in zip(acc, acc[1:])), default=0.0)


def sweep_checks(
    results: SweepResult,
    *,
    clean_accuracy: float | None = None,
    tolerance: float = 0.0,
    strong: str = "PGD",
    weak: str = "FGSM",
    large_eps: SweepResult | None = None,
    large_eps_attack: str = "PGD",
    max_large_eps_accuracy: float = 0.05,
    black_box: str | None = None,
    white_box: str = "PGD",
    max_black_box_gain: float = 0.02,
) -> dict[str, Check]:
    """Sanity checks of an epsilon sweep (Carlini et al. 2019, "On evaluating adversarial robustness", sec. 5).

    Checks (key: meaning):

    * ``eps0_is_clean``: every attack's accuracy at eps 0 equals ``clean_accuracy`` (default: the sweep's own clean
      accuracy; pass the evaluator's number to cross-check the two pipelines);
    * ``monotone``: no attack's accuracy rises with eps by more than ``tolerance``;
    * ``strong_le_weak``: ``strong`` (PGD) accuracy <= ``weak`` (FGSM) accuracy + ``tolerance`` at every eps;
    * ``large_eps``: in ``large_eps`` (a separate sweep at a large eps such as 0.5, which can be run on a subset),
      ``large_eps_attack`` drives accuracy to at most ``max_large_eps_accuracy`` (default 0.05) at its largest eps;
    * ``black_box_ge_white_box``: the ``black_box`` attack (e.g. a torchattacks Square in the same sweep) is never
      more successful than ``white_box`` by more than ``tolerance`` (otherwise the gradients are likely masked); for
      a ``black_box`` attack of the ensemble (run after the gradient attacks, on what they left correct): the share
      of all samples it broke at any eps is at most ``max_black_box_gain`` (default 0.02);
    * ``worst_case_le_each``: the worst case (:data:`WORST_CASE`, with an ensemble) is at or below every attack's
      accuracy at every eps.

    Accuracies are fractions in [0, 1]; ``tolerance`` is in the same units (0.01 = one percentage point).
    A check whose inputs are missing has ``passed=None``. Gradient masking (zero or useless input gradients) fails
    ``large_eps`` and, when a black-box attack is given, ``black_box_ge_white_box``.
    """
    checks: dict[str, Check] = {}
    acc = {a: results.accuracy(a) for a in results.attacks}
    eps = list(results.eps)

    ref = results.clean_accuracy if clean_accuracy is None else float(clean_accuracy)
    if 0.0 in eps:
        at0 = {a: v[eps.index(0.0)] for a, v in acc.items()}
        ok = all(abs(v - ref) <= 1e-12 for v in at0.values())
        message = f"accuracy at eps 0 {'equals' if ok else 'differs from'} clean accuracy {ref:.4f}"
        if not ok:
            at_zero = next(iter(at0.values()))
            message += (
                f" (the sweep counts {at_zero:.4f} of the images right: an evaluator key metric that scores one-hot "
                "predictions and labels element by element, or a different data split or preprocessing, would "
                "explain it)"
            )
        checks["eps0_is_clean"] = Check("eps0_is_clean", ok, message, {"clean_accuracy": ref, "accuracy_at_0": at0})
    else:
        checks["eps0_is_clean"] = Check("eps0_is_clean", None, "eps 0 not in the grid")

    rises = {a: _max_rise(v) for a, v in acc.items()}
    ok = all(r <= tolerance for r in rises.values())
    checks["monotone"] = Check(
        "monotone", ok, "accuracy never rises with eps" if ok else f"accuracy rises with eps: {rises}",
        {"max_rise": rises, "tolerance": tolerance},
    )

    if strong in acc and weak in acc:
        gaps = [s - w for s, w in zip(acc[strong], acc[weak])]
        ok = max(gaps) <= tolerance
        checks["strong_le_weak"] = Check(
            "strong_le_weak", ok,
            f"{strong} accuracy {'<=' if ok else '>'} {weak} accuracy (+{tolerance}) at every eps "
            f"(max gap {max(gaps):+.4f})",
            {"strong": strong, "weak": weak, "gap": gaps, "tolerance": tolerance},
        )
    else:
        checks["strong_le_weak"] = Check("strong_le_weak", None, f"{strong!r} or {weak!r} not in the sweep")

    if large_eps is not None and large_eps_attack in large_eps.correct:
        value = large_eps.accuracy(large_eps_attack)[-1]
        ok = value <= max_large_eps_accuracy
        checks["large_eps"] = Check(
            "large_eps", ok,
            f"{large_eps_attack} at eps {large_eps.eps[-1]:g}: accuracy {value:.4f} "
            f"{'<=' if ok else '>'} {max_large_eps_accuracy} (n={large_eps.n})",
            {"eps": large_eps.eps[-1], "accuracy": value, "threshold": max_large_eps_accuracy, "n": large_eps.n},
        )
    else:
        checks["large_eps"] = Check("large_eps", None, f"no large-eps sweep with {large_eps_attack!r} given")

    if black_box is not None and black_box in results.ensemble_broken:
        gains = [c / results.n if results.n else 0.0 for c in results.ensemble_broken[black_box]]
        worst = max(range(len(gains)), key=gains.__getitem__)
        ok = gains[worst] <= max_black_box_gain
        checks["black_box_ge_white_box"] = Check(
            "black_box_ge_white_box", ok,
            f"{black_box} broke {gains[worst]:.2%} of the images that every gradient attack left correct (at eps "
            f"{eps[worst]:g}; at most {max_black_box_gain:.0%} expected)"
            + ("" if ok else ": the gradients mislead the white-box attacks, gradient masking suspected"),
            {"black_box": black_box, "gain": gains, "threshold": max_black_box_gain},
        )
    elif black_box is not None and black_box in acc and white_box in acc:
        gaps = [w - b for w, b in zip(acc[white_box], acc[black_box])]
        ok = max(gaps) <= tolerance
        checks["black_box_ge_white_box"] = Check(
            "black_box_ge_white_box", ok,
            f"{black_box} accuracy {'>=' if ok else '<'} {white_box} accuracy (-{tolerance}) at every eps"
            + ("" if ok else ": gradient masking suspected"),
            {"black_box": black_box, "white_box": white_box, "gap": gaps, "tolerance": tolerance},
        )
    else:
        checks["black_box_ge_white_box"] = Check("black_box_ge_white_box", None, "no black-box attack in the sweep")

    if WORST_CASE in acc:
        above = {a: max(w - v for w, v in zip(acc[WORST_CASE], values)) for a, values in acc.items() if a != WORST_CASE}
        ok = all(gap <= 1e-12 for gap in above.values())
        checks["worst_case_le_each"] = Check(
            "worst_case_le_each", ok,
            "the worst case is at or below every attack at every eps" if ok
            else f"the worst case lies above an attack: {above}", {"max_above": above},
        )
    return checks


def all_passed(checks: Mapping[str, Check]) -> bool:
    """True when no check failed (checks that could not run do not count as failures)."""
    return all(c.passed is not False for c in checks.values())
