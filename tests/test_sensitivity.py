"""Tests of monai_adv.sensitivity (per-image minimal flipping eps) and monai_adv.triage (referral rules)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from monai_adv.attacks import predict
from monai_adv.sensitivity import SensitivityResult, default_tolerance, linear_grid, minimal_flip_eps
from monai_adv.triage import (
    compare_triage,
    confidence_from_probabilities,
    confidence_triage,
    flag_fraction,
    margin_from_logits,
    margin_from_probabilities,
    margin_triage,
    n_referred,
    overlap,
    referral_order,
    retained_accuracy_curve,
    sensitivity_triage,
    threshold_for_fraction,
    threshold_triage,
    triage_curves,
)

TOL = 1e-6
EPS_MAX = 0.06


def lesions(n: int, size: int = 16, spatial_dims: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic two-class images in [0, 1]: noisy background, class 1 has a bright blob of random contrast."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.45 + 0.04 * torch.randn((n, 1, *[size] * spatial_dims), generator=g)
    grids = torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * spatial_dims, indexing="ij")
    for i in range(n):
        centre = torch.randint(size // 4, size - size // 4, (spatial_dims,), generator=g).float()
        dist2 = sum((c - centre[d]) ** 2 for d, c in enumerate(grids))
        contrast = 0.08 + 0.2 * torch.rand(1, generator=g).item()
        x[i, 0] += y[i] * contrast * torch.exp(-dist2 / 6.0)
    return x.clamp(0, 1), y


def small_cnn(spatial_dims: int = 2, num_classes: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    pool = nn.AdaptiveMaxPool2d if spatial_dims == 2 else nn.AdaptiveMaxPool3d
    return nn.Sequential(conv(1, 8, 5, padding=2), nn.ReLU(), pool(1), nn.Flatten(), nn.Linear(8, num_classes))


def trained(num_classes: int) -> nn.Module:
    """A small CNN trained for a fraction of a second, so that predictions and flipping eps vary across images."""
    model = small_cnn(num_classes=num_classes)
    x, y = lesions(256, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for step in range(150):
        idx = torch.arange(step * 32, step * 32 + 32) % 256
        logits = model(x[idx])
        if num_classes == 1:
            loss = nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y[idx].float())
        else:
            loss = nn.functional.cross_entropy(logits, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models() -> dict[int, nn.Module]:
    return {2: trained(2), 1: trained(1)}


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return lesions(32, seed=2)


def check_result(model: nn.Module, x: torch.Tensor, res: SensitivityResult) -> None:
    """Invariants every result must satisfy, whatever the method."""
    n = x.shape[0]
    assert res.eps_lo.shape == res.eps_hi.shape == res.flipped.shape == (n,)
    assert res.adversarial.shape == x.shape and res.adversarial.dtype == x.dtype
    with torch.no_grad():
        clean = predict(model(x))
        adv_pred = predict(model(res.adversarial))
    assert torch.equal(res.prediction, clean)
    f = res.flipped
    assert torch.equal(f, torch.isfinite(res.eps_hi))
    # the kept example flips the prediction, lies within eps_hi of the image and in [0, 1]
    assert bool((adv_pred[f] != clean[f]).all())
    size = (res.adversarial - x).flatten(1).abs().amax(1).double()
    assert bool((size[f] <= res.eps_hi[f] + TOL).all())
    assert torch.allclose(res.perturbation.double(), size)
    assert float(res.adversarial.min()) >= 0.0 and float(res.adversarial.max()) <= 1.0
    assert bool((res.eps_lo[f] < res.eps_hi[f]).all()) and bool((res.eps_lo >= 0).all())
    # never flipped: reported as such, clean image kept
    assert bool((res.eps_lo[~f] == res.eps_max).all())
    assert torch.equal(res.adversarial[~f], x[~f])
    assert torch.equal(adv_pred[~f], clean[~f])
    assert res.grad_passes > 0 and bool((res.probes >= 1).all())


@pytest.mark.parametrize("num_classes", [2, 1])
def test_bisection_bracket(models, data, num_classes):
    model, (x, y) = models[num_classes], data
    res = minimal_flip_eps(model, x, eps_max=EPS_MAX, labels=y, seed=0)
    check_result(model, x, res)
    assert res.method == "bisection" and res.tol == default_tolerance(EPS_MAX)
    f = res.flipped
    assert bool(f.any())
    assert bool((res.eps_hi[f] - res.eps_lo[f] <= res.tol + 1e-15).all())
    # 1 probe at eps_max + 8 halvings for flipped samples, 1 probe for the others
    assert bool((res.probes[f] == 9).all()) and bool((res.probes[~f] == 1).all())
    # each probe costs at most steps x starts (restarts, plus the warm start below eps_max)
    starts = res.restarts * res.n + (res.restarts + 1) * int((res.probes - 1).sum())
    assert res.warm_start and res.grad_passes <= starts * res.steps
    assert res.grad_passes_per_sample <= res.nominal_grad_passes_per_sample == (2 + 8 * 3) * 10
    assert torch.equal(res.correct, res.prediction == y)
    assert res.probability.shape == (x.shape[0], 2)
    assert torch.allclose(res.probability.sum(1), torch.ones(x.shape[0]))


@pytest.mark.parametrize("num_classes", [2, 1])
def test_grid_bracket(models, data, num_classes):
    model, (x, _) = models[num_classes], data
    grid = linear_grid(EPS_MAX, 12)
    res = minimal_flip_eps(model, x, method="grid", grid=grid, seed=0)
    check_result(model, x, res)
    assert res.grid == grid and res.eps_max == grid[-1] and res.tol is None and res.correct is None
    values = torch.tensor((0.0, *grid), dtype=torch.float64)
    for lo, hi in zip(res.eps_lo[res.flipped].tolist(), res.eps_hi[res.flipped].tolist()):
        k = grid.index(hi)  # eps_hi is a grid value and eps_lo the one before it (0 for the first)
        assert lo == values[k]
    # a sample is probed at every grid value up to its first flip
    k_hi = torch.tensor([grid.index(h) + 1 if math.isfinite(h) else len(grid) for h in res.eps_hi.tolist()])
    assert torch.equal(res.probes, k_hi)


def test_bisection_agrees_with_grid_and_is_cheaper(models, data):
    model, (x, _) = models[2], data
    grid = linear_grid(EPS_MAX, 32)
    spacing = grid[1] - grid[0]
    bis = minimal_flip_eps(model, x, eps_max=EPS_MAX, seed=0)
    grd = minimal_flip_eps(model, x, method="grid", grid=grid, restarts=3, seed=1)
    both = bis.flipped & grd.flipped
    assert int(both.sum()) >= 0.8 * int(grd.flipped.sum()) > 0
    agree = bis.eps_hi[both] <= grd.eps_hi[both] + spacing
    assert float(agree.double().mean()) >= 0.9
    # and the other way round: the grid finds no example far below the bisection bracket
    assert float((grd.eps_hi[both] >= bis.eps_lo[both] - spacing).double().mean()) >= 0.9
    assert 2 * bis.grad_passes < grd.grad_passes
    assert (bis.nominal_grad_passes_per_sample, grd.nominal_grad_passes_per_sample) == (260, 32 * 10 * 3)
    # without warm start: random starts only, same invariants
    cold = minimal_flip_eps(model, x, eps_max=EPS_MAX, restarts=3, warm_start=False, seed=0)
    check_result(model, x, cold)
    assert not cold.warm_start and cold.nominal_grad_passes_per_sample == 9 * 10 * 3
    assert bool((cold.eps_hi[cold.flipped] - cold.eps_lo[cold.flipped] <= cold.tol + 1e-15).all())


def test_never_flipped():
    class Constant(nn.Module):  # the prediction cannot change: every sample is never flipped
        def forward(self, x):
            return torch.tensor([[1.0, 0.0]]) + 0.0 * (x * x).flatten(1).sum(1, keepdim=True)

    x, _ = lesions(6)
    for method in ("bisection", "grid"):
        res = minimal_flip_eps(Constant(), x, eps_max=0.01, method=method, restarts=2, seed=0)
        check_result(Constant(), x, res)
        assert not bool(res.flipped.any())
        assert bool(torch.isinf(res.eps_hi).all()) and bool((res.eps_lo == 0.01).all())
        assert torch.equal(res.adversarial, x) and bool((res.perturbation == 0).all())
    assert bool((res.probes == 32).all())  # grid: every value probed


def test_3d_input():
    model = small_cnn(spatial_dims=3, seed=3).eval()
    x, _ = lesions(6, size=8, spatial_dims=3)
    res = minimal_flip_eps(model, x, eps_max=0.5, tol=0.01, restarts=1, seed=0)
    check_result(model, x, res)
    assert bool(res.flipped.any())
    assert bool((res.eps_hi[res.flipped] - res.eps_lo[res.flipped] <= 0.01).all())


def test_last_iterate_scoring(models, data):
    """A single start without any_iterate is scored by an extra forward pass."""
    model, (x, _) = models[2], data
    res = minimal_flip_eps(model, x[:8], eps_max=EPS_MAX, restarts=1, any_iterate=False, warm_start=False, seed=0)
    check_result(model, x[:8], res)
    assert res.grad_passes == int(res.probes.sum()) * 10
    assert res.forward_passes == int(res.probes.sum()) + 8
    warm = minimal_flip_eps(model, x[:8], eps_max=EPS_MAX, restarts=1, any_iterate=False, seed=0)
    check_result(model, x[:8], warm)


def test_metatensor_input(models, data):
    from monai.data import MetaTensor

    model, (x, _) = models[2], data
    images = MetaTensor(x[:4].clone(), meta={"filename_or_obj": "a.nii"})
    res = minimal_flip_eps(model, images, eps_max=EPS_MAX, seed=0)
    assert isinstance(res.adversarial, MetaTensor) and res.adversarial.meta["filename_or_obj"] == "a.nii"
    check_result(model, x[:4], res)


def test_seed_reproducible_rng_untouched_and_mode_restored(models, data):
    model, (x, _) = models[2], data
    model.train()
    state = torch.get_rng_state()
    a = minimal_flip_eps(model, x[:8], eps_max=EPS_MAX, seed=5)
    b = minimal_flip_eps(model, x[:8], eps_max=EPS_MAX, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    assert torch.equal(a.eps_hi, b.eps_hi) and torch.equal(a.adversarial, b.adversarial)


def test_cat_and_arrays(models, data):
    model, (x, y) = models[2], data
    parts = [minimal_flip_eps(model, x[i : i + 4], eps_max=EPS_MAX, labels=y[i : i + 4], seed=i) for i in (0, 4)]
    res = SensitivityResult.cat(parts)
    assert res.n == 8 and res.grad_passes == parts[0].grad_passes + parts[1].grad_passes
    check_result(model, x[:8], res)
    arrays = res.arrays()
    assert set(arrays) >= {"eps_lo", "eps_hi", "flipped", "confidence", "margin", "correct"}
    assert all(isinstance(v, np.ndarray) and v.shape == (8,) for v in arrays.values())
    with pytest.raises(ValueError):
        SensitivityResult.cat([parts[0], minimal_flip_eps(model, x[:4], eps_max=0.1, labels=y[:4])])


def test_invalid_arguments(models, data):
    model, (x, _) = models[2], data
    for kwargs in ({"method": "binary"}, {"eps_max": 0.0}, {"tol": 0.0}, {"grid": [0.1]}, {"step_size_ratio": 0}):
        with pytest.raises(ValueError):
            minimal_flip_eps(model, x[:2], **kwargs)
    with pytest.raises(ValueError):
        minimal_flip_eps(model, x[:2], method="grid", grid=[0.0, 0.1])
    with pytest.raises(ValueError):
        minimal_flip_eps(model, x[:2] + 2.0)


# ---------------------------------------------------------------------------------------------------------------------
# triage


def test_referral_order_and_ties():
    scores = np.array([0.3, 0.1, np.inf, 0.1, np.nan, 0.2])
    assert referral_order(scores).tolist() == [1, 3, 5, 0, 2, 4]  # ties by index, NaN as inf
    assert referral_order(scores, tiebreak=[0, 5, 0, 1, 0, 0]).tolist() == [3, 1, 5, 0, 2, 4]
    assert n_referred(10, 0.2) == 2 and n_referred(5, 0.3) == 2 and n_referred(858, 0.2) == 172
    flags = flag_fraction(scores, 0.5)
    assert flags.tolist() == [False, True, False, True, False, True]
    assert threshold_for_fraction(scores, 0.5) == 0.2
    assert threshold_for_fraction(scores, 0.0) == -math.inf
    # the flagged fraction equals q whatever the ties; the threshold rule adds the ties
    tied = np.array([1.0, 1.0, 1.0, 2.0, 3.0])
    assert flag_fraction(tied, 0.4).sum() == 2
    assert threshold_triage(tied, np.ones(5), threshold_for_fraction(tied, 0.4)).n_flagged == 3


def test_triage_numbers():
    eps_hi = np.array([0.001, np.inf, 0.004, 0.002, np.inf, 0.003, 0.0005, 0.01, np.inf, 0.006])
    correct = np.array([0, 1, 1, 0, 1, 1, 1, 1, 0, 1], dtype=bool)
    res = sensitivity_triage(eps_hi, correct, q=0.2)
    assert res.flagged.tolist() == [True, False, False, False, False, False, True, False, False, False]
    assert res.n_flagged == 2 and res.fraction_flagged == 0.2 and res.threshold == 0.001
    assert res.accuracy_all == pytest.approx(0.7)
    assert res.accuracy_retained == pytest.approx(6 / 8)
    assert res.accuracy_flagged == pytest.approx(0.5)
    assert res.accuracy_gain == pytest.approx(0.05)
    # threshold rule, and never-flipped images only referred by an infinite threshold
    assert threshold_triage(eps_hi, correct, 0.003).flagged.sum() == 4
    assert threshold_triage(eps_hi, correct, math.inf).n_flagged == 10
    assert sensitivity_triage(eps_hi, correct, q=0.8).flagged[[1, 4]].tolist() == [True, False]

    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.55, 0.45], [0.2, 0.8], [0.5, 0.5]])
    conf = confidence_from_probabilities(probs)
    assert conf.tolist() == pytest.approx([0.9, 0.6, 0.55, 0.8, 0.5])
    assert confidence_from_probabilities(probs[:, 1]).tolist() == pytest.approx(conf.tolist())
    ok = np.array([1, 1, 0, 1, 0], dtype=bool)
    res = confidence_triage(conf, ok, q=0.4)
    assert res.flagged.tolist() == [False, False, True, False, True]
    assert res.accuracy_retained == 1.0 and res.accuracy_all == pytest.approx(0.6) and res.threshold == 0.55

    logits = np.array([[2.0, -1.0, 0.5], [0.1, 0.0, 0.3], [1.0, 1.0, -3.0], [0.0, 4.0, 1.0]])
    margin = margin_from_logits(logits)
    assert margin.tolist() == pytest.approx([1.5, 0.2, 0.0, 3.0])
    assert margin_from_logits(np.array([[-2.0], [0.5]])).tolist() == [2.0, 0.5]
    assert margin_from_probabilities(probs).tolist() == pytest.approx([0.8, 0.2, 0.1, 0.6, 0.0])
    assert margin_from_probabilities([0.9, 0.3]).tolist() == pytest.approx([0.8, 0.4])
    res = margin_triage(margin, [1, 0, 0, 1], q=0.5)
    assert res.flagged.tolist() == [False, True, True, False] and res.accuracy_retained == 1.0
    assert res.accuracy_flagged == 0.0

    both = compare_triage({"sensitivity": eps_hi, "confidence": -eps_hi}, correct, q=0.2)
    assert both["confidence"].flagged.tolist() == [False, True, False, False, True] + [False] * 5
    assert overlap(both["sensitivity"].flagged, both["confidence"].flagged)["jaccard"] == 0.0
    assert overlap([1, 1, 0, 0], [1, 0, 1, 0]) == {
        "jaccard": 1 / 3, "fraction_of_a": 0.5, "fraction_of_b": 0.5, "intersection": 1.0,
    }


def test_retained_accuracy_curve():
    scores = np.array([0.5, 0.1, 0.3, 0.2, 0.9])
    correct = np.array([1, 0, 1, 0, 1], dtype=bool)
    fractions, acc = retained_accuracy_curve(scores, correct, [0.0, 0.2, 0.4, 0.6, 1.0])
    assert fractions.tolist() == [0.0, 0.2, 0.4, 0.6, 1.0]
    assert acc[:4].tolist() == pytest.approx([0.6, 0.75, 1.0, 1.0]) and math.isnan(acc[4])
    for q, a in zip([0.2, 0.4], acc[1:3]):  # the curve agrees with the fraction rule
        assert sensitivity_triage(scores, correct, q).accuracy_retained == pytest.approx(a)
    curves = triage_curves({"a": scores, "b": torch.tensor(scores)}, correct)
    assert curves["a"][0].shape == (51,) and np.allclose(curves["a"][1], curves["b"][1])
