"""Per-image adversarial sensitivity: the smallest L-infinity eps at which PGD changes the model's prediction.

Joel et al. 2022 ("image level adversarial sensitivity", Table 2) score every test image by the smallest perturbation
size at which a PGD attack changes the model's prediction, and refer the most sensitive 20 % of the images. Their code
sweeps a linear grid of 21-32 eps values with PGD (10 steps of eps/4, 20 random starts) per value: 4,200-6,400
forward+backward passes per image at the resolution of the grid spacing. :func:`minimal_flip_eps` finds the same
quantity by bisection on a per-sample eps tensor, at a fixed tolerance, in ``ceil(log2(eps_max / tol)) + 1`` probes
(9 with the default tolerance); ``method="grid"`` runs the paper's protocol for comparison.

Definitions used throughout:

* **flip**: the prediction on the perturbed image differs from the model's prediction on the clean image (the
  criterion of the paper's public code). It does not look at the true label, so a misclassified image is scored the
  same way (flipping it may make it correct). PGD attacks the clean prediction (``labels`` only fill ``correct``).
* **probe** at eps: PGD in the L-infinity ball of radius eps around the image, intersected with [0, 1]: ``steps``
  signed-gradient steps of ``step_size_ratio * eps`` from a uniform random start, best of ``restarts`` random starts
  (a sample stops at its first flipping start). With ``any_iterate`` (default) every iterate is scored, the start
  included, and a sample stops at its first flipping iterate: any iterate is a valid adversarial example inside the
  ball, and stopping there saves passes.
* **warm start** (bisection, default on): a probe below a sample's current ``eps_hi`` first runs PGD from the kept
  example projected onto the smaller ball, then the ``restarts`` random starts. The known example points across the
  decision boundary, so this start often succeeds at once; it makes the bisection both cheaper and less likely to
  miss an example that exists (on the benchmark's toy model it halves the images where the paper's grid finds an
  example below ``eps_lo``).
* **bracket** ``[eps_lo, eps_hi]``: a probe at ``eps_hi`` found an adversarial example (kept in ``adversarial``); the
  probe at ``eps_lo`` found none (``eps_lo = 0`` when no smaller eps was probed: at eps 0 the prediction is the clean
  one by definition). Bisection ends when ``eps_hi - eps_lo <= tol``. A PGD probe is a heuristic, so "none found at
  eps_lo" is not a proof that none exists, and success is not perfectly monotone in eps: a probe can fail at an eps
  above one where another probe succeeded. Bisection only probes inside the current bracket, so ``eps_hi`` is always
  the smallest eps at which an example was found (best so far) and ``eps_lo`` the largest failed eps below it.
* **never flipped**: no example found by the first probe, at ``eps_max`` (grid: at any grid value). Such samples
  have ``flipped=False``, ``eps_lo = eps_max`` (the largest value probed), ``eps_hi = inf`` (so that they sort as the
  least sensitive; the paper's code gives them the score 1) and their clean image as ``adversarial``.

Batch compaction: a sample leaves the batch as soon as its bracket is narrower than ``tol`` (grid: at its first
flipping value; never-flipped samples after the first bisection probe), so later probes run on fewer samples.

Work is counted as in :mod:`monai_adv.attacks`: a gradient pass is one forward+backward input-gradient pass of one
sample, a forward pass one forward-only pass of one sample (the clean prediction, scoring). Totals are exact; per
sample only the number of probes is recorded (``probes``), each costing at most ``steps * starts`` gradient passes
(``starts = restarts``, plus one for a warm-started probe).

Example::

    >>> res = minimal_flip_eps(model, images, eps_max=0.02, labels=labels, seed=0)  # bisection, tol 0.02 / 256
    >>> res.eps_hi                   # (B,) smallest eps with a prediction-changing example, inf if never flipped
    >>> model(res.adversarial[res.flipped]).argmax(1) != res.prediction[res.flipped]   # all True
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .attacks.checks import check_images, check_labels, plain_tensor, restore_type
from .attacks.loss import num_classes, predict
from .attacks.model_state import eval_mode
from .attacks.pgd import PGD
from .attacks.seeding import check_sample_seeds, mix_seed

__all__ = ["METHODS", "SensitivityResult", "minimal_flip_eps", "linear_grid", "default_tolerance", "halvings"]

METHODS = ("bisection", "grid")
DEFAULT_HALVINGS = 8
"""Default tolerance is ``eps_max / 2**8``: 9 probes per flipped sample."""
DEFAULT_GRID_SIZE = 32
"""Default grid of ``method="grid"``: 32 linear values up to ``eps_max`` (the paper's LIDC grid has 32 values)."""


@dataclass
class SensitivityResult:
    """Per-image minimal flipping eps of one batch (see the module docstring for the definitions).

    Per-sample fields are tensors on the device of the input images, first dimension ``B``. Eps values are float64,
    in [0, 1] intensity units.

    Attributes:
        eps_lo: ``(B,)`` largest eps probed below ``eps_hi`` without finding an example (0 when none was probed);
            ``eps_max`` (the largest value probed) for never-flipped samples.
        eps_hi: ``(B,)`` smallest eps at which an example that changes the prediction was found; ``inf`` for
            never-flipped samples.
        flipped: ``(B,)`` bool, an example was found within ``eps_max``.
        adversarial: ``(B, C, *spatial)`` the example found at ``eps_hi`` (flipped samples), the clean image
            (others); same shape, dtype and tensor type as the input images.
        prediction: ``(B,)`` clean predicted class.
        probability: ``(B, K)`` clean class probabilities, ``K >= 2`` (softmax; ``[1 - sigmoid(z), sigmoid(z)]``
            for a single-logit model).
        logits: ``(B, K')`` clean logits as the model returned them (``K' = 1`` for a single-logit model).
        probes: ``(B,)`` int64, PGD probes run on each sample.
        perturbation: ``(B,)`` L-infinity size of the kept perturbation, ``<= eps_hi`` (0 when not flipped).
        grad_passes: gradient passes spent on the whole batch.
        forward_passes: forward-only passes spent on the whole batch (the clean prediction included).
        labels: ``(B,)`` true labels when given, else ``None`` (they only fill :attr:`correct`).
        method: ``"bisection"`` or ``"grid"``.
        eps_max: the largest eps probed (``max(grid)`` for the grid method).
        tol: bisection tolerance (``None`` for the grid method).
        grid: the eps grid, ascending (``None`` for bisection).
        steps, restarts, step_size_ratio, any_iterate, warm_start: the probe's PGD settings.
    """

    eps_lo: torch.Tensor
    eps_hi: torch.Tensor
    flipped: torch.Tensor
    adversarial: torch.Tensor
    prediction: torch.Tensor
    probability: torch.Tensor
    logits: torch.Tensor
    probes: torch.Tensor
    perturbation: torch.Tensor
    grad_passes: int
    forward_passes: int
    labels: torch.Tensor | None = None
    method: str = "bisection"
    eps_max: float = math.nan
    tol: float | None = None
    grid: tuple[float, ...] | None = None
    steps: int = 10
    restarts: int = 1
    step_size_ratio: float = 0.25
    any_iterate: bool = True
    warm_start: bool = False

    @property
    def n(self) -> int:
        """Number of samples ``B``."""
        return int(self.eps_hi.shape[0])

    @property
    def score(self) -> torch.Tensor:
        """``(B,)`` sensitivity score for triage: ``eps_hi`` (smaller is more sensitive, ``inf`` never flipped)."""
        return self.eps_hi

    @property
    def confidence(self) -> torch.Tensor:
        """``(B,)`` clean probability of the predicted class."""
        return self.probability.max(dim=1).values

    @property
    def margin(self) -> torch.Tensor:
        """``(B,)`` clean logit margin: largest minus second largest logit (``|z|`` for a single logit ``z``)."""
        if self.logits.shape[1] == 1:
            return self.logits[:, 0].abs()
        top2 = self.logits.topk(2, dim=1).values
        return top2[:, 0] - top2[:, 1]

    @property
    def correct(self) -> torch.Tensor | None:
        """``(B,)`` bool, clean prediction equals the true label; ``None`` without labels."""
        return None if self.labels is None else self.prediction == self.labels

    @property
    def grad_passes_per_sample(self) -> float:
        """Mean gradient passes per sample."""
        return self.grad_passes / self.n if self.n else math.nan

    @property
    def nominal_grad_passes_per_sample(self) -> int:
        """Gradient passes per sample of the same search without early stopping or compaction: every probe of the
        bisection (or every grid value) with all steps and starts; for the grid, the paper's protocol cost."""
        if self.grid is not None:
            return len(self.grid) * self.steps * self.restarts
        k = halvings(self.eps_max, self.tol)
        return (self.restarts + k * (self.restarts + int(self.warm_start))) * self.steps

    def arrays(self) -> dict[str, np.ndarray]:
        """Per-sample numpy arrays (for :mod:`monai_adv.triage` or ``np.savez``): ``eps_lo``, ``eps_hi``,
        ``flipped``, ``prediction``, ``confidence``, ``margin``, ``probes``, ``perturbation`` and, with labels,
        ``labels`` and ``correct``."""
        out = {
            "eps_lo": self.eps_lo,
            "eps_hi": self.eps_hi,
            "flipped": self.flipped,
            "prediction": self.prediction,
            "confidence": self.confidence,
            "margin": self.margin,
            "probes": self.probes,
            "perturbation": self.perturbation,
        }
        if self.labels is not None:
            out["labels"], out["correct"] = self.labels, self.correct
        return {k: v.detach().cpu().numpy() for k, v in out.items()}

    @staticmethod
    def cat(results: Sequence[SensitivityResult]) -> SensitivityResult:
        """Concatenate the results of several batches searched with the same settings (pass counts add up)."""
        if not results:
            raise ValueError("nothing to concatenate")
        first = results[0]
        for r in results[1:]:
            if _settings(r) != _settings(first):
                raise ValueError("can only concatenate results searched with the same settings")
        if any((r.labels is None) != (first.labels is None) for r in results):
            raise ValueError("either every result or none must carry labels")

        def cat(name: str) -> torch.Tensor:
            return torch.cat([getattr(r, name) for r in results])

        return SensitivityResult(
            eps_lo=cat("eps_lo"),
            eps_hi=cat("eps_hi"),
            flipped=cat("flipped"),
            adversarial=torch.cat([plain_tensor(r.adversarial) for r in results]),
            prediction=cat("prediction"),
            probability=cat("probability"),
            logits=cat("logits"),
            probes=cat("probes"),
            perturbation=cat("perturbation"),
            grad_passes=sum(r.grad_passes for r in results),
            forward_passes=sum(r.forward_passes for r in results),
            labels=None if first.labels is None else cat("labels"),
            method=first.method,
            eps_max=first.eps_max,
            tol=first.tol,
            grid=first.grid,
            steps=first.steps,
            restarts=first.restarts,
            step_size_ratio=first.step_size_ratio,
            any_iterate=first.any_iterate,
            warm_start=first.warm_start,
        )


def _settings(r: SensitivityResult) -> tuple:
    return (r.method, r.eps_max, r.tol, r.grid, r.steps, r.restarts, r.step_size_ratio, r.any_iterate, r.warm_start)


def default_tolerance(eps_max: float) -> float:
    """Default bisection tolerance: ``eps_max / 256`` (8 halvings)."""
    return float(eps_max) / 2**DEFAULT_HALVINGS


def halvings(eps_max: float, tol: float) -> int:
    """Halvings bisection needs: the smallest ``k >= 0`` with ``eps_max / 2**k <= tol``."""
    k = 0
    while eps_max / 2**k > tol:
        k += 1
        if k > 60:
            raise ValueError(f"tol={tol:g} is too small for eps_max={eps_max:g} (more than 60 halvings)")
    return k


def linear_grid(eps_max: float, size: int = DEFAULT_GRID_SIZE) -> tuple[float, ...]:
    """The linear grid ``eps_max * k / size`` for ``k = 1..size`` (the paper's protocol sweeps such a grid)."""
    if int(size) != size or size < 1:
        raise ValueError(f"size must be a positive integer, got {size}")
    return tuple(float(eps_max) * k / size for k in range(1, int(size) + 1))


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed the random starts without touching the caller's global RNG state (no-op for ``seed=None``)."""
    if seed is None:
        yield
        return
    devices = [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class _WarmStartPGD(PGD):
    """PGD whose first start is ``warm`` projected onto each sample's ball (then random starts as usual).

    Relies on :class:`PGD` drawing each start with ``self._start(images, eps, restart)`` on the batch it attacks; with
    per-sample seeds the random starts are restarts 1..R of each sample's streams (0 is the warm start).
    """

    def __init__(self, *args, warm: torch.Tensor, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._warm: torch.Tensor | None = warm

    def _start(self, images: torch.Tensor, eps: float | torch.Tensor, restart: int = 0) -> torch.Tensor:
        if self._warm is None:
            return super()._start(images, eps, restart)
        warm, self._warm = self._warm, None
        return torch.clamp(images + torch.clamp(warm - images, min=-eps, max=eps), min=0, max=1)


class _Prober:
    """Runs PGD probes on subsets of one batch at per-sample eps and counts the passes.

    With ``keys`` (one int per sample) probe ``p`` of sample ``j`` (its ``p``-th probe) uses the per-sample PGD seed
    ``mix_seed(seed, keys[j], p)``: which probes a sample gets depends only on its own results, so its whole search
    is the same in any batch.
    """

    def __init__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        targets: torch.Tensor,
        steps: int,
        step_size_ratio: float,
        restarts: int,
        any_iterate: bool,
        keys: list[int] | None = None,
        seed: int = 0,
    ) -> None:
        self.model, self.images, self.targets = model, images, targets
        self.steps, self.ratio, self.restarts, self.any_iterate = steps, step_size_ratio, restarts, any_iterate
        self.keys, self.seed = keys, seed
        self.grad_passes = self.forward_passes = 0
        self.probes = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)

    def _seeds(self, idx: torch.Tensor) -> list[int] | None:
        if self.keys is None:
            return None
        return [mix_seed(self.seed, self.keys[i], p) for i, p in zip(idx.tolist(), self.probes[idx].tolist())]

    def __call__(
        self, idx: torch.Tensor, eps: torch.Tensor, warm: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Probe samples ``idx`` at ``eps`` ``(len(idx),)``, first from ``warm`` ``(len(idx), C, ...)`` when given;
        return ``(flipped, adversarial)`` for those samples."""
        eps = eps.to(self.images.dtype)
        kwargs = dict(
            steps=self.steps, step_size=eps * self.ratio, random_start=True, any_iterate=self.any_iterate,
            sample_seeds=self._seeds(idx),
        )
        if warm is None:
            attack = PGD(self.model, eps, restarts=self.restarts, **kwargs)
        else:
            attack = _WarmStartPGD(self.model, eps, restarts=self.restarts + 1, warm=warm, **kwargs)
        res = attack.run(self.images[idx], self.targets[idx])
        self.grad_passes += res.grad_passes
        self.forward_passes += res.forward_passes
        self.probes[idx] += 1
        flipped = res.fooled
        if flipped is None:  # a single start without any_iterate is not scored by the attack
            with torch.no_grad():
                flipped = predict(self.model(res.adv)) != self.targets[idx]
            self.forward_passes += idx.numel()
        return flipped, res.adv


def _clean_pass(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clean ``(logits, prediction, probability)``; ``probability`` has at least two columns."""
    with torch.no_grad():
        logits = model(images)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != images.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"the model must return logits of shape (B, K) or (B, 1), got {shape}")
    logits = plain_tensor(logits).detach()
    if logits.shape[1] == 1:
        p1 = torch.sigmoid(logits[:, 0].float())
        probability = torch.stack([1 - p1, p1], dim=1)
    else:
        probability = torch.softmax(logits.float(), dim=1)
    return logits, predict(logits), probability


def _bisection(
    probe: _Prober,
    n: int,
    eps_max: float,
    tol: float,
    lo: torch.Tensor,
    hi: torch.Tensor,
    adv: torch.Tensor,
    warm_start: bool,
) -> None:
    """Fill ``lo``, ``hi`` and ``adv`` in place: one probe at ``eps_max``, then halve each bracket to ``tol``.

    The search runs on the integer lattice ``eps = eps_max * m / 2**K``, so every bracket halves exactly and a flipped
    sample gets exactly ``1 + K`` probes, whatever the float round-off of the eps values.
    """
    k = halvings(eps_max, tol)
    unit = eps_max / 2**k
    idx = torch.arange(n, device=lo.device)
    flipped, found = probe(idx, torch.full((n,), eps_max, dtype=lo.dtype, device=lo.device))
    hi[flipped] = eps_max
    adv[flipped] = found[flipped]
    lo[~flipped] = eps_max  # never flipped: hi stays inf
    lo_m = torch.zeros(n, dtype=torch.long, device=lo.device)
    hi_m = torch.full((n,), 2**k, dtype=torch.long, device=lo.device)
    active = idx[flipped] if k > 0 else idx[:0]
    while active.numel():
        mid_m = (lo_m[active] + hi_m[active]) // 2
        mid = mid_m.to(lo.dtype) * unit
        flipped, found = probe(active, mid, adv[active] if warm_start else None)
        # mid lies inside the bracket, so hi only decreases: it is always the smallest eps with a found example
        hit, miss = active[flipped], active[~flipped]
        hi_m[hit], hi[hit], adv[hit] = mid_m[flipped], mid[flipped], found[flipped]
        lo_m[miss], lo[miss] = mid_m[~flipped], mid[~flipped]
        active = active[hi_m[active] - lo_m[active] > 1]


def _grid_sweep(probe: _Prober, n: int, grid: tuple[float, ...], lo: torch.Tensor, hi: torch.Tensor,
                adv: torch.Tensor) -> None:
    """Fill ``lo``, ``hi`` and ``adv`` in place: the first grid value that flips is ``hi``, the previous one ``lo``."""
    active = torch.arange(n, device=lo.device)
    previous = 0.0
    for value in grid:
        if active.numel() == 0:
            break
        flipped, found = probe(active, torch.full((active.numel(),), value, dtype=lo.dtype, device=lo.device))
        hit = active[flipped]
        hi[hit], lo[hit] = value, previous
        adv[hit] = found[flipped]
        active = active[~flipped]
        previous = value
    lo[active] = grid[-1]


def _check_grid(grid: Sequence[float] | torch.Tensor) -> tuple[float, ...]:
    values = sorted({float(v) for v in (grid.tolist() if isinstance(grid, torch.Tensor) else grid)})
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"grid must be a non-empty sequence of finite eps values > 0, got {grid}")
    return tuple(values)


def minimal_flip_eps(
    model: nn.Module,
    images: torch.Tensor,
    eps_max: float = 0.02,
    tol: float | None = None,
    *,
    method: str = "bisection",
    grid: Sequence[float] | torch.Tensor | None = None,
    steps: int = 10,
    step_size_ratio: float = 0.25,
    restarts: int = 2,
    any_iterate: bool = True,
    warm_start: bool = True,
    labels: torch.Tensor | None = None,
    seed: int | None = None,
    keys: torch.Tensor | Sequence[int] | None = None,
) -> SensitivityResult:
    """Per-image smallest L-infinity eps at which PGD changes the model's clean prediction, as a bracket.

    Args:
        model: classifier, ``(B, C, *spatial)`` images in [0, 1] -> ``(B, K)`` logits (``K >= 2``) or one logit
            ``(B, 1)``. It runs in eval mode; every module's train/eval flag is restored afterwards.
        images: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` in [0, 1] (a MONAI ``MetaTensor`` is accepted).
        eps_max: upper end of the search in [0, 1] units (default 0.02, the top of the paper's LIDC grid);
            samples with no example found at ``eps_max`` are reported as never flipped. Ignored by
            ``method="grid"`` when ``grid`` is given (``max(grid)`` is used).
        tol: bisection tolerance in [0, 1] units: every bracket ends with ``eps_hi - eps_lo = eps_max / 2**K <= tol``
            (``K``, the number of halvings, the smallest that reaches ``tol``; up to float round-off of the eps
            values, ~1e-18). Default ``eps_max / 256`` (``K = 8``, 9 probes per flipped sample). Not used by the grid
            method (its bracket width is the grid spacing).
        method: ``"bisection"`` (default) or ``"grid"`` (the paper's protocol: ascending sweep of ``grid``, the
            first value that flips is ``eps_hi`` and the previous value ``eps_lo``).
        grid: eps values for ``method="grid"``; default :func:`linear_grid` ``(eps_max, 32)``.
        steps: PGD steps per probe (default 10, Table S1).
        step_size_ratio: PGD step as a fraction of the probe's eps (default 0.25, i.e. eps/4, Table S1).
        restarts: random starts per probe (default 2; the paper's code uses 20 with its grid). A sample stops at
            its first flipping start.
        any_iterate: count a probe as successful when any PGD iterate flips the prediction (default); off, only
            the last iterate of each start is scored (torchattacks/ART semantics).
        warm_start: bisection only: probes below ``eps_hi`` start first from the kept example projected onto the
            probe's ball, then from ``restarts`` random points (default on; see the module docstring).
        labels: optional true labels ``(B,)``; only used to report :attr:`SensitivityResult.correct`. The flip
            criterion always compares with the clean prediction.
        seed: seed for the random starts; the caller's global RNG state is left untouched. ``None`` uses (and
            advances) the global RNG (``0`` with ``keys``).
        keys: one integer per sample that identifies it in its data set (a dataset index, or
            :func:`~monai_adv.attacks.seeding.key_of` of its id). Given, every sample's search draws from its own
            streams (probe ``p``, restart ``r``: ``mix_seed(mix_seed(seed, key, p), r)``) and each sample's gradient
            is that of its own loss, so its result does not depend on the batch it is searched in: any batching, and
            a distributed run, give the same per-image results (up to float round-off of batched layers). ``None``
            (default): one stream for the batch from ``seed``, as before.

    Returns:
        :class:`SensitivityResult` with per-sample ``eps_lo``, ``eps_hi``, ``flipped``, ``adversarial``, the clean
        ``prediction``/``probability``/``logits``, per-sample probe counts and total pass counts.

    Raises:
        ValueError: bad images, labels, eps_max, tol, method, grid or PGD settings.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if torch.is_inference_mode_enabled():
        raise RuntimeError("minimal_flip_eps needs autograd: do not call it inside torch.inference_mode()")
    if not (step_size_ratio > 0 and math.isfinite(step_size_ratio)):
        raise ValueError(f"step_size_ratio must be finite and > 0, got {step_size_ratio}")
    if method == "grid":
        grid_values = _check_grid(grid if grid is not None else linear_grid(eps_max))
        eps_max, tol = grid_values[-1], None
    else:
        if grid is not None:
            raise ValueError("grid is only used with method='grid'")
        grid_values = None
        if not (eps_max > 0 and math.isfinite(eps_max)):
            raise ValueError(f"eps_max must be finite and > 0, got {eps_max}")
        tol = default_tolerance(eps_max) if tol is None else float(tol)
        if not (tol > 0 and math.isfinite(tol)):
            raise ValueError(f"tol must be finite and > 0, got {tol}")
    eps_max = float(eps_max)

    x = plain_tensor(images).detach()
    if x.is_inference():
        x = x.clone()
    check_images(x)
    n, device = x.shape[0], x.device
    key_list = check_sample_seeds(keys, n)
    if key_list is not None and seed is None:
        seed = 0

    with eval_mode(model), _seeded(seed if key_list is None else None, device):
        logits, prediction, probability = _clean_pass(model, x)
        y = None if labels is None else check_labels(labels, n, num_classes(logits)).to(device)
        lo = torch.zeros(n, dtype=torch.float64, device=device)
        hi = torch.full((n,), math.inf, dtype=torch.float64, device=device)
        adv = x.clone()
        probe = _Prober(model, x, prediction, steps, step_size_ratio, restarts, any_iterate, key_list, seed or 0)
        if grid_values is None:
            _bisection(probe, n, eps_max, tol, lo, hi, adv, warm_start)
        else:
            _grid_sweep(probe, n, grid_values, lo, hi, adv)

    flipped = torch.isfinite(hi)
    return SensitivityResult(
        eps_lo=lo,
        eps_hi=hi,
        flipped=flipped,
        adversarial=restore_type(images, adv),
        prediction=prediction,
        probability=probability,
        logits=logits,
        probes=probe.probes,
        perturbation=(adv - x).flatten(1).abs().amax(dim=1),
        grad_passes=probe.grad_passes,
        forward_passes=probe.forward_passes + n,
        labels=y,
        method=method,
        eps_max=eps_max,
        tol=tol,
        grid=grid_values,
        steps=int(steps),
        restarts=int(restarts),
        step_size_ratio=float(step_size_ratio),
        any_iterate=bool(any_iterate),
        warm_start=bool(warm_start) and method == "bisection",
    )
