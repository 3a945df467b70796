"""Tests of monai_adv.sweep: reuse semantics and accounting, composability, and the sanity checks."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from monai_adv.attacks import BIM, FGSM, PGD, LibraryAttack
from monai_adv.networks import PaperVGG16
from monai_adv.sweep import SweepResult, all_passed, attack_sweep, sweep_checks

GRID = [0.02, 0.05, 0.08, 0.12, 0.2]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def blobs(n: int, gen: torch.Generator, size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 1: a brighter 5x5 square somewhere on a noisy grey background; class 0: background only."""
    y = torch.randint(0, 2, (n,), generator=gen)
    x = 0.45 + 0.08 * torch.randn(n, 1, size, size, generator=gen)
    for i in torch.nonzero(y)[:, 0].tolist():
        r, c = torch.randint(0, size - 5, (2,), generator=gen).tolist()
        x[i, 0, r : r + 5, c : c + 5] += 0.25
    return x.clamp(0, 1), y


def cnn(num_classes: int = 2) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(8, num_classes),
    )


@pytest.fixture(scope="module")
def trained():
    """A small CNN trained for a few seconds on the blob task (a "normal" model: accurate, breakable), and a batch."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = cnn()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(80):
        x, y = blobs(64, gen)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y = blobs(16, torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() >= 0.8, "the fixture model did not learn the task"
    return model, x, y


class Quantised(nn.Module):
    """Gradient masking by a zero-gradient op: the input is rounded to 8 bits before the network."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 255) / 255)


class Saturated(nn.Module):
    """Gradient masking by saturation: logits x 1e4 through a softmax whose (clamped) log has zero gradient."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.softmax(1e4 * self.model(x), dim=1).clamp_min(1e-12))


ATTACKS = {"FGSM": FGSM, "BIM": BIM, "PGD": PGD}


def test_eps0_is_clean_and_accuracy_non_increasing(trained):
    model, x, y = trained
    res = attack_sweep(model, x, y, ATTACKS, GRID)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    assert res.eps == (0.0, *GRID) and res.n == 16
    assert res.clean_accuracy == pytest.approx(clean)
    for name in ATTACKS:
        acc = res.accuracy(name)
        assert acc[0] == pytest.approx(clean)
        assert all(b <= a for a, b in zip(acc, acc[1:]))
        assert acc[-1] < clean  # the model does break inside the grid
    # the sweep is deterministic where the attacks are
    again = attack_sweep(model, x, y, {"FGSM": FGSM, "BIM": BIM}, GRID)
    assert again.correct["FGSM"] == res.correct["FGSM"] and again.correct["BIM"] == res.correct["BIM"]


@pytest.mark.parametrize(
    "name,factory",
    [("FGSM", FGSM), ("BIM", BIM), ("PGD-no-start", functools.partial(PGD, random_start=False))],
)
def test_reuse_equals_cumulative_no_reuse(trained, name, factory):
    """For deterministic attacks: correct with reuse at eps_k == clean-correct and correct without reuse at every
    grid eps <= eps_k. Hence reuse accuracy <= no-reuse accuracy, elementwise."""
    model, x, y = trained
    reuse = attack_sweep(model, x, y, {name: factory}, GRID, reuse=True)
    plain = attack_sweep(model, x, y, {name: factory}, GRID, reuse=False)
    expected = torch.cummin(plain.per_sample[name].int(), dim=1).values.bool()
    assert torch.equal(reuse.per_sample[name], expected)
    assert all(r <= p for r, p in zip(reuse.correct[name], plain.correct[name]))
    assert reuse.correct[name][0] == plain.correct[name][0] == reuse.clean_correct


def test_fgsm_grid_from_one_gradient_equals_separate_fgsm_calls(trained):
    model, x, y = trained
    res = attack_sweep(model, x, y, {"FGSM": FGSM}, GRID, reuse=True)
    plain = attack_sweep(model, x, y, {"FGSM": FGSM}, GRID, reuse=False)
    direction = FGSM(model, 0.0).direction(x, y).adv
    for k, eps in enumerate(GRID, start=1):
        adv = FGSM(model, eps)(x, y)
        assert torch.equal(adv, FGSM.step(x, direction, eps))
        with torch.no_grad():
            ok = model(adv).argmax(1) == y
        assert torch.equal(plain.per_sample["FGSM"][:, k], ok)
    assert res.work["FGSM"].grad_passes == res.clean_correct  # one gradient pass per clean-correct sample


def test_work_accounting(trained):
    model, x, y = trained
    res = attack_sweep(model, x, y, ATTACKS, GRID, reuse=True)
    plain = attack_sweep(model, x, y, ATTACKS, GRID, reuse=False)
    n, steps = 16, 10
    for name in ATTACKS:
        w, w0 = res.work[name], plain.work[name]
        per_sample = 1 if name == "FGSM" else steps
        assert w.grad_passes_no_reuse == w0.grad_passes_no_reuse == n * len(GRID) * per_sample
        assert w.forward_passes_no_reuse == n * len(GRID)
        assert w0.grad_passes == w0.grad_passes_no_reuse and w0.samples_attacked == n * len(GRID)
        assert w.grad_passes < w.grad_passes_no_reuse and w.grad_passes_saved > 0
        # samples attacked at eps_k = those still correct at the previous grid eps
        alive_before = res.per_sample[name][:, :-1].sum(0)  # columns eps_0 .. eps_{K-1}
        assert w.samples_attacked == int(alive_before.sum())
        if name != "FGSM":
            assert w.grad_passes == steps * w.samples_attacked
        assert w.forward_passes == w.samples_attacked  # one scoring forward per attacked sample and eps
    total = sum(w.grad_passes for w in res.work.values())
    total0 = sum(w.grad_passes_no_reuse for w in res.work.values())
    assert total < total0


def test_results_add_up_across_batches(trained):
    model, x, y = trained
    attacks = {"FGSM": FGSM, "BIM": BIM}
    whole = attack_sweep(model, x, y, attacks, GRID)
    parts = [attack_sweep(model, x[i : i + 5], y[i : i + 5], attacks, GRID) for i in range(0, 16, 5)]
    total = sum(parts)
    assert isinstance(total, SweepResult) and total.n == 16
    assert total.clean_correct == whole.clean_correct
    assert total.correct == whole.correct
    assert torch.equal(total.per_sample["BIM"], whole.per_sample["BIM"])
    assert total.work["BIM"].grad_passes == whole.work["BIM"].grad_passes
    d = total.to_dict()
    assert d["accuracy"]["BIM"] == whole.accuracy("BIM") and d["n"] == 16
    with pytest.raises(ValueError):
        total + attack_sweep(model, x, y, attacks, [0.1])


def test_labels_none_measures_flips(trained):
    model, x, y = trained
    res = attack_sweep(model, x, y, {"FGSM": FGSM}, GRID)
    flips = attack_sweep(model, x, None, {"FGSM": FGSM}, GRID)
    assert flips.clean_accuracy == 1.0
    assert all(f >= r for f, r in zip(flips.accuracy("FGSM"), res.accuracy("FGSM")))


def test_restarts_any_iterate_and_library_attacks_in_a_sweep(trained):
    model, x, y = trained
    attacks = {
        "PGD-5": functools.partial(PGD, restarts=5),
        "BIM-any": functools.partial(BIM, any_iterate=True),
        "APGD": functools.partial(LibraryAttack, "APGD", steps=10),
    }
    torch.manual_seed(0)
    res = attack_sweep(model, x, y, attacks, GRID)
    assert res.work["APGD"].grad_passes is None and res.work["APGD"].samples_attacked > 0
    assert res.work["PGD-5"].grad_passes < res.work["PGD-5"].grad_passes_no_reuse
    assert res.work["BIM-any"].grad_passes < 10 * res.work["BIM-any"].samples_attacked  # it stopped early
    for name in attacks:
        acc = res.accuracy(name)
        assert all(b <= a for a, b in zip(acc, acc[1:]))
    bim = attack_sweep(model, x, y, {"BIM": BIM}, GRID)
    assert all(a <= b for a, b in zip(res.correct["BIM-any"], bim.correct["BIM"]))


def test_sweep_leaves_model_state_alone(trained):
    model, x, y = trained
    model.train()
    bn = model[1]
    stats = [bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()]
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    try:
        attack_sweep(model, x, y, {"FGSM": FGSM, "PGD": PGD}, [0.05])
        assert model.training and bn.training
        assert all(torch.equal(a, b) for a, b in zip(stats, [bn.running_mean, bn.running_var, bn.num_batches_tracked]))
        assert all((g is None and p.grad is None) or torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))
    finally:
        model.eval()


def test_sweep_rejects_unbounded_attacks_and_bad_grids(trained):
    model, x, y = trained

    def too_big(model, eps):
        return lambda images, labels: (images + 2 * eps).clamp(0, 1)

    with pytest.raises(ValueError, match="eps-ball"):
        attack_sweep(model, x, y, {"bad": too_big}, [0.05])
    with pytest.raises(ValueError, match=">= 0"):
        attack_sweep(model, x, y, ATTACKS, [-0.1, 0.1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attack_sweep(model, x * 10, y, ATTACKS, [0.1])


def test_sweep_3d_one_logit_vgg():
    torch.manual_seed(0)
    model = PaperVGG16(spatial_dims=3, in_channels=1, num_classes=1, input_size=32, width=0.0625).eval()
    x = torch.rand(4, 1, 32, 32, 32)
    res = attack_sweep(model, x, None, ATTACKS, [0.01, 0.5])
    assert res.clean_accuracy == 1.0 and res.n == 4
    for name in ATTACKS:
        acc = res.accuracy(name)
        assert all(b <= a for a, b in zip(acc, acc[1:]))


# ---------------------------------------------------------------------------------------------------------------------
# sanity checks


def _checks(model, x, y, black_box: bool):
    attacks = dict(ATTACKS)
    if black_box:
        attacks["Square"] = functools.partial(LibraryAttack, "Square", n_queries=100)
    torch.manual_seed(0)
    res = attack_sweep(model, x, y, attacks, GRID)
    large = attack_sweep(model, x, y, {"PGD": PGD}, [0.5])
    return sweep_checks(res, large_eps=large, black_box="Square" if black_box else None, max_large_eps_accuracy=0.05)


def test_checks_pass_on_a_normal_model(trained):
    model, x, y = trained
    checks = _checks(model, x, y, black_box=True)
    assert all_passed(checks)
    assert all(c.passed for c in checks.values()), {k: c.message for k, c in checks.items()}
    assert checks["large_eps"].values["accuracy"] <= 0.05
    assert checks["eps0_is_clean"].values["clean_accuracy"] >= 0.8


@pytest.mark.parametrize("masking", [Quantised, Saturated])
def test_checks_fail_on_gradient_masked_models(trained, masking):
    model, x, y = trained
    masked = masking(model).eval()
    with torch.no_grad():
        assert torch.equal(masked(x).argmax(1), model(x).argmax(1))  # same classifier, masked gradients
    checks = _checks(masked, x, y, black_box=masking is Quantised)
    assert not all_passed(checks)
    assert checks["large_eps"].passed is False
    assert checks["large_eps"].values["accuracy"] > 0.5
    if masking is Quantised:
        assert checks["black_box_ge_white_box"].passed is False  # Square finds what PGD cannot


def test_check_details_and_missing_inputs(trained):
    model, x, y = trained
    res = attack_sweep(model, x, y, ATTACKS, GRID)
    checks = sweep_checks(res, clean_accuracy=res.clean_accuracy - 0.25)
    assert checks["eps0_is_clean"].passed is False
    # the zoo's classification template scores one-hot vectors element by element: the message names that cause
    assert f"the sweep counts {res.clean_accuracy:.4f} of the images right" in checks["eps0_is_clean"].message
    assert "element by element" in checks["eps0_is_clean"].message
    assert checks["large_eps"].passed is None and checks["black_box_ge_white_box"].passed is None
    assert checks["strong_le_weak"].values["gap"][0] == 0.0
    # a curve that rises (e.g. a no-reuse sweep with a randomised attack) fails "monotone"
    res.correct["FGSM"] = [10, 9, 11, 8, 7, 6]
    checks = sweep_checks(res)
    assert checks["monotone"].passed is False and checks["monotone"].values["max_rise"]["FGSM"] == pytest.approx(2 / 16)
    assert sweep_checks(res, tolerance=0.125)["monotone"].passed
    res.correct["PGD"] = [c + 1 for c in res.correct["FGSM"]]
    assert sweep_checks(res, tolerance=0.125)["strong_le_weak"].passed is True
    assert sweep_checks(res, tolerance=0.01)["strong_le_weak"].passed is False


def test_attack_sweep_refuses_a_large_eps_check_on_no_image(tmp_path):
    """With large_eps set and no image to run it on, the check's accuracy was NaN, which strict JSON refuses only
    when attack_sweep.json is written, after the whole sweep."""
    from monai_adv.attacks import PGD
    from monai_adv.handlers import AttackSweep

    with pytest.raises(ValueError, match="large_eps_samples must be at least 1"):
        AttackSweep({"PGD": PGD}, [0.001], str(tmp_path), ["a", "b"], large_eps=0.5, large_eps_samples=0)
    AttackSweep({"PGD": PGD}, [0.001], str(tmp_path), ["a", "b"], large_eps=None, large_eps_samples=0)
