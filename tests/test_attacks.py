"""Tests of monai_adv.attacks: bounds, torchattacks equivalence, restarts, any-iterate, model state, checks."""

from __future__ import annotations

import functools

import pytest
import torch
import torchattacks
from torch import nn

from monai_adv.attacks import BIM, FGSM, PGD, LibraryAttack, TwoLogits, classification_loss, predict
from monai_adv.attacks.library import UnsupportedAttackError, library_attack_names
from monai_adv.networks import PaperVGG16

TOL = 1e-6


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_cnn(spatial_dims: int = 2, num_classes: int = 2, batch_norm: bool = False, seed: int = 0) -> nn.Module:
    """A random small CNN; ``num_classes=1`` gives a single-logit binary model."""
    torch.manual_seed(seed)
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    norm = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
    pool = nn.AdaptiveAvgPool2d if spatial_dims == 2 else nn.AdaptiveAvgPool3d
    return nn.Sequential(
        conv(1, 6, 3, padding=1),
        norm(6) if batch_norm else nn.Identity(),
        nn.ReLU(),
        conv(6, 6, 3, padding=1),
        nn.ReLU(),
        pool(2),
        nn.Flatten(),
        nn.Linear(6 * 2**spatial_dims, num_classes),
    ).eval()


def batch(b: int = 8, spatial_dims: int = 2, size: int = 12, num_classes: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 1, *[size] * spatial_dims, generator=g)
    y = torch.randint(0, max(2, num_classes), (b,), generator=g)
    return x, y


def vgg2d() -> nn.Module:
    torch.manual_seed(0)
    return PaperVGG16(spatial_dims=2, in_channels=1, num_classes=2, input_size=32, width=0.0625, dropout=0.5).eval()


def linf(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).abs().max(dim=1).values


ATTACKS = {
    "FGSM": FGSM,
    "BIM": BIM,
    "PGD": PGD,
    "PGD-restarts": functools.partial(PGD, restarts=3),
    "PGD-any": functools.partial(PGD, any_iterate=True),
    "BIM-any": functools.partial(BIM, any_iterate=True),
}


# ---------------------------------------------------------------------------------------------------------------------
# bounds, shapes, dtypes


@pytest.mark.parametrize("attack", list(ATTACKS))
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("num_classes", [2, 1])
def test_perturbation_within_eps_and_unit_box(attack, spatial_dims, per_sample, num_classes):
    model = tiny_cnn(spatial_dims, num_classes)
    x, y = batch(8, spatial_dims, size=8 if spatial_dims == 3 else 12, num_classes=num_classes)
    x[0] = 0.0  # samples on the box edges: clipping must keep them in [0, 1]
    x[1] = 1.0
    eps = torch.linspace(0.0, 0.3, 8) if per_sample else 0.05
    torch.manual_seed(0)
    adv = ATTACKS[attack](model, eps)(x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype and adv.device == x.device
    bound = eps if per_sample else torch.full((8,), eps)
    assert bool((linf(adv, x) <= bound + TOL).all())
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    if per_sample:
        assert float(linf(adv, x)[0]) == 0.0  # eps 0 leaves the sample alone
    assert float(linf(adv, x).max()) > 0.0  # the gradient is not zero, also for one-logit models


def test_exact_step_sizes():
    """FGSM moves every pixel with a non-zero gradient by exactly eps (away from the box edges); BIM's first step by
    eps/10."""
    model = tiny_cnn()
    x = torch.full((4, 1, 12, 12), 0.5)
    y = torch.tensor([0, 1, 0, 1])
    d = (FGSM(model, 0.02)(x, y) - x).abs()
    assert torch.allclose(d[d > 0], torch.tensor(0.02), atol=TOL)
    d1 = (BIM(model, 0.02, steps=1)(x, y) - x).abs()
    assert torch.allclose(d1[d1 > 0], torch.tensor(0.002), atol=TOL)


# ---------------------------------------------------------------------------------------------------------------------
# torchattacks equivalence


def _theirs(name: str, model: nn.Module, eps, **kw):
    if name == "FGSM":
        return torchattacks.FGSM(model, eps=eps)
    if name == "BIM":
        return torchattacks.BIM(model, eps=eps, alpha=eps / 10, steps=kw.get("steps", 10))
    return torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=kw.get("steps", 10), random_start=kw.get("rs", True))


@pytest.mark.parametrize("name", ["FGSM", "BIM", "PGD"])
@pytest.mark.parametrize("eps", [0.004, 0.03])
def test_equal_to_torchattacks_vgg(name, eps):
    model = vgg2d()
    x, y = batch(10, 2, size=32)
    ours = {"FGSM": FGSM, "BIM": BIM, "PGD": PGD}[name](model, eps)
    for seed in (0, 1):
        torch.manual_seed(seed)
        a = ours(x, y)
        torch.manual_seed(seed)
        b = _theirs(name, model, eps)(x, y)
        assert torch.allclose(a, b, atol=TOL, rtol=0), float((a - b).abs().max())
        assert float(linf(a, x).max()) > 0


@pytest.mark.parametrize("name", ["FGSM", "BIM", "PGD"])
def test_equal_to_torchattacks_3d_and_one_logit(name):
    """3-D volumes; a single-logit model equals torchattacks on the same model shown as logits [0, z]."""
    cls = {"FGSM": FGSM, "BIM": BIM, "PGD": PGD}[name]
    for model, sd in ((tiny_cnn(3, 2), 3), (tiny_cnn(2, 1), 2)):
        x, y = batch(8, sd, size=8)
        torch.manual_seed(3)
        a = cls(model, 0.05)(x, y)
        torch.manual_seed(3)
        b = _theirs(name, TwoLogits(model), 0.05)(x, y)
        assert torch.allclose(a, b, atol=TOL, rtol=0)


def test_one_logit_equals_two_logit_model():
    """The single logit z is read as logits [0, z]: same adversarial images as the explicit two-logit model."""
    one = tiny_cnn(2, 1)
    two = TwoLogits(one)
    x, y = batch(8)
    for cls in (FGSM, BIM, PGD):
        torch.manual_seed(5)
        a = cls(one, 0.05)(x, y)
        torch.manual_seed(5)
        b = cls(two, 0.05)(x, y)
        assert torch.allclose(a, b, atol=TOL, rtol=0)
    logits = one(x)
    assert torch.equal(predict(logits), predict(two(x)))
    assert torch.allclose(classification_loss(logits, y), classification_loss(two(x), y), atol=1e-6)


def test_per_sample_eps_equals_torchattacks_without_random_start():
    """torchattacks takes a (B, 1, 1, 1) eps only without random start; there the results agree."""
    model = vgg2d()
    x, y = batch(8, 2, size=32)
    eps = torch.linspace(0.001, 0.05, 8)
    e4 = eps.view(-1, 1, 1, 1)
    a = PGD(model, eps, random_start=False)(x, y)
    b = torchattacks.PGD(model, eps=e4, alpha=e4 / 4, steps=10, random_start=False)(x, y)
    assert torch.allclose(a, b, atol=TOL, rtol=0)
    with pytest.raises(TypeError):  # the case we handle and torchattacks does not
        torchattacks.PGD(model, eps=e4, alpha=e4 / 4, random_start=True)(x, y)


def test_per_sample_eps_matches_scalar_runs():
    """A per-sample eps gives each sample what a scalar-eps call gives it (BIM: deterministic); with a random start
    the tensor-eps start is the scalar start up to round-off (same random numbers, scaled)."""
    model = tiny_cnn()
    x, y = batch(6)
    eps = torch.tensor([0.0, 0.01, 0.02, 0.05, 0.1, 0.2])
    a = BIM(model, eps)(x, y)
    for i, e in enumerate(eps.tolist()):
        b = BIM(model, e)(x[i : i + 1], y[i : i + 1])
        assert torch.allclose(a[i : i + 1], b, atol=TOL, rtol=0)
    same = torch.full((6,), 0.05)
    torch.manual_seed(0)
    a = PGD(model, same, steps=1, step_size=0.0)(x, y)  # the clipped random start only
    torch.manual_seed(0)
    b = PGD(model, 0.05, steps=1, step_size=0.0)(x, y)
    assert torch.allclose(a, b, atol=1e-7, rtol=0)


def test_library_attack_matches_torchattacks_and_ours():
    model = vgg2d()
    x, y = batch(8, 2, size=32)
    torch.manual_seed(0)
    a = LibraryAttack("pgd", model, eps=0.02, alpha=0.005, steps=10)(x, y)
    torch.manual_seed(0)
    b = PGD(model, 0.02)(x, y)
    assert torch.allclose(a, b, atol=TOL, rtol=0)


# ---------------------------------------------------------------------------------------------------------------------
# restarts and any-iterate


def _loss_and_fooled(model, adv, y):
    with torch.no_grad():
        logits = model(adv)
    return classification_loss(logits, y, reduction="none"), predict(logits) != y


@pytest.mark.parametrize("num_classes", [2, 1])
def test_restarts_keep_per_sample_worst_case(num_classes):
    model = tiny_cnn(2, num_classes, seed=4)
    x, y = batch(16, num_classes=num_classes, seed=2)
    eps, restarts = 0.03, 4
    torch.manual_seed(11)
    singles = [PGD(model, eps)(x, y) for _ in range(restarts)]  # each draws one full-batch start
    torch.manual_seed(11)
    res = PGD(model, eps, restarts=restarts).run(x, y)
    stats = [_loss_and_fooled(model, s, y) for s in singles]
    losses = torch.stack([s[0] for s in stats])  # (R, B)
    fooled = torch.stack([s[1] for s in stats])
    final_loss, final_fooled = _loss_and_fooled(model, res.adv, y)
    assert 0 < int(fooled.any(0).sum()) < 16, "the test needs some samples fooled by some restarts only"
    assert torch.equal(res.fooled, fooled.any(0))
    assert torch.equal(final_fooled, fooled.any(0))
    for i in range(16):
        if fooled[:, i].any():
            r = int(fooled[:, i].nonzero()[0])  # the first restart that fooled it
        else:
            r = int(losses[:, i].argmax())
            assert float(final_loss[i]) >= float(losses[:, i].max()) - 1e-5
        assert torch.allclose(res.adv[i], singles[r][i], atol=TOL, rtol=0)
    # fooled samples are not attacked again
    n_left = [16] + [int((~fooled[: r + 1].any(0)).sum()) for r in range(restarts - 1)]
    assert res.grad_passes == 10 * sum(n_left)


@pytest.mark.parametrize("num_classes", [2, 1])
def test_any_iterate_returns_first_misclassified_iterate(num_classes):
    """BIM is deterministic, so BIM(steps=t) is iterate t of BIM(steps=T)."""
    model = tiny_cnn(2, num_classes, seed=4)
    x, y = batch(16, num_classes=num_classes, seed=2)
    eps, steps = 0.05, 6
    iterates = [x] + [BIM(model, eps, steps=t, step_size=eps / 10)(x, y) for t in range(1, steps + 1)]
    fooled = torch.stack([_loss_and_fooled(model, it, y)[1] for it in iterates])  # (T + 1, B)
    res = BIM(model, eps, steps=steps, any_iterate=True).run(x, y)
    assert torch.equal(res.fooled, fooled.any(0))
    assert fooled[-1].sum() < fooled.any(0).sum() or bool(fooled[0].any()), "want a sample fooled only mid-way"
    for i in range(16):
        t = int(fooled[:, i].nonzero()[0]) if fooled[:, i].any() else steps
        assert torch.allclose(res.adv[i], iterates[t][i], atol=TOL, rtol=0)
    plain = BIM(model, eps, steps=steps)(x, y)
    assert bool((_loss_and_fooled(model, plain, y)[1] <= res.fooled).all())
    assert res.grad_passes < 16 * steps


def test_pgd_any_iterate_with_restarts():
    model = tiny_cnn(2, 2, seed=4)
    x, y = batch(16, seed=2)
    torch.manual_seed(0)
    res = PGD(model, 0.03, restarts=3, any_iterate=True).run(x, y)
    loss, fooled = _loss_and_fooled(model, res.adv, y)
    assert torch.equal(fooled, res.fooled)
    torch.manual_seed(0)
    plain = PGD(model, 0.03)(x, y)
    assert bool((_loss_and_fooled(model, plain, y)[1] <= res.fooled).all())


# ---------------------------------------------------------------------------------------------------------------------
# labels


def test_predicted_labels():
    model = vgg2d()
    x, y = batch(8, 2, size=32)
    pred = model(x).argmax(1)
    for cls in (FGSM, BIM, PGD):
        torch.manual_seed(0)
        a = cls(model, 0.02)(x)
        torch.manual_seed(0)
        b = cls(model, 0.02, use_predicted_labels=True)(x, y)
        torch.manual_seed(0)
        c = cls(model, 0.02)(x, pred)
        assert torch.equal(a, b) and torch.equal(a, c)
    res = FGSM(model, 0.02).run(x)
    assert torch.equal(res.labels, pred) and res.forward_passes == 8 and res.grad_passes == 8


# ---------------------------------------------------------------------------------------------------------------------
# model state


@pytest.mark.parametrize("attack", list(ATTACKS) + ["DeepFool", "CW", "FAB"])
def test_model_state_untouched(attack):
    model = tiny_cnn(2, 2, batch_norm=True)
    model.train()
    model[5].eval()  # a submodule in eval mode inside a training model must stay so
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    model[0].bias.grad = None
    bn = model[1]
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    x, y = batch(8)
    if attack in ATTACKS:
        ATTACKS[attack](model, 0.05)(x, y)
    else:
        kw = {"FAB": dict(eps=0.05, steps=3), "CW": dict(steps=3), "DeepFool": dict(steps=3)}[attack]
        LibraryAttack(attack, model, **kw)(x, y)
    assert model.training and bn.training and not model[5].training
    for k, v in bn.state_dict().items():
        assert torch.equal(v, before[k]), k
    for p, g in zip(model.parameters(), grads):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)


def test_eval_mode_used_for_the_attack():
    """Dropout is off while attacking: PaperVGG16 in train mode gives the same result as in eval mode."""
    model = vgg2d()
    x, y = batch(8, 2, size=32)
    a = BIM(model, 0.02)(x, y)
    model.train()
    b = BIM(model, 0.02)(x, y)
    assert model.training and torch.equal(a, b)


def test_no_grad_context_and_metatensor():
    from monai.data import MetaTensor

    model = tiny_cnn()
    x, y = batch(4)
    mx = MetaTensor(x.clone(), meta={"filename_or_obj": "case.nii.gz"})
    with torch.no_grad():  # an Ignite evaluator may call us under no_grad
        adv = PGD(model, 0.05)(mx, MetaTensor(y))
    assert isinstance(adv, MetaTensor) and adv.meta["filename_or_obj"] == "case.nii.gz"
    assert float(linf(adv.as_tensor(), x).max()) > 0
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        FGSM(model, 0.05)(x, y)


# ---------------------------------------------------------------------------------------------------------------------
# input validation


def test_input_validation():
    model = tiny_cnn()
    x, y = batch(4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        FGSM(model, 0.01)(x * 255, y)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        FGSM(model, 0.01)(x - 0.5, y)
    FGSM(model, 0.01)(x.clamp(1e-7, 1 - 1e-7) + 5e-7, y)  # within the 1e-6 tolerance
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError):
        PGD(model, 0.01)(bad, y)
    with pytest.raises(ValueError, match="labels must lie"):
        BIM(model, 0.01)(x, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="labels must lie"):
        FGSM(model, 0.01)(x, torch.tensor([0, -1, 0, 0]))
    with pytest.raises(ValueError, match="labels must lie"):
        PGD(tiny_cnn(2, 1), 0.01)(x, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="shape"):
        FGSM(model, 0.01)(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="non-integral"):
        FGSM(model, 0.01)(x, torch.tensor([0.0, 0.5, 1.0, 1.0]))
    FGSM(model, 0.01)(x, torch.tensor([[0.0], [1.0], [1.0], [0.0]]))  # (B, 1) float class indices are fine
    with pytest.raises(ValueError, match="eps"):
        PGD(model, -0.1)
    with pytest.raises(ValueError, match="per-sample eps"):
        PGD(model, torch.full((3,), 0.1))(x, y)
    with pytest.raises(ValueError):
        PGD(model, 0.1, steps=0)
    with pytest.raises(ValueError, match="random_start"):
        PGD(model, 0.1, restarts=2, random_start=False)


# ---------------------------------------------------------------------------------------------------------------------
# torchattacks adapter


def test_library_attack_binary_and_one_logit():
    x, y = batch(8, size=16)
    for model in (tiny_cnn(2, 2), tiny_cnn(2, 1)):
        for name, kw in (("APGD", dict(loss="ce", steps=5)), ("Square", dict(n_queries=30)), ("FAB", dict(steps=3))):
            adv = LibraryAttack(name, model, eps=0.05, **kw)(x, y)
            assert adv.shape == x.shape and float(linf(adv, x).max()) <= 0.05 + TOL
            assert float(adv.min()) >= 0 and float(adv.max()) <= 1
        assert float(linf(LibraryAttack("MIFGSM", model, eps=0.05)(x, y), x).min()) > 0
    # torchattacks alone gives a zero perturbation on a single-logit model (cross-entropy over one class is
    # constant) and fails on label 1; through the adapter the model is shown as logits [0, z]
    one = tiny_cnn(2, 1)
    zeros = torch.zeros_like(y)
    assert float(linf(torchattacks.MIFGSM(one, eps=0.05)(x, zeros), x).max()) == 0.0
    assert float(linf(LibraryAttack("MIFGSM", one, eps=0.05)(x, zeros), x).min()) > 0


def test_library_attack_known_limits_are_clear_errors():
    binary, volume = tiny_cnn(2, 2), tiny_cnn(3, 10)
    x, y = batch(4, size=16)
    v, vy = batch(4, 3, size=8, num_classes=10)
    cases = [
        (binary, x, y, "APGDT", {"steps": 2}, "at least 4 classes", IndexError),
        (binary, x, y, "APGD", {"loss": "dlr", "steps": 2}, "at least 3 classes", IndexError),
        (binary, x, y, "AutoAttack", {}, "at least 4 classes", IndexError),
        (volume, v, vy, "APGD", {"steps": 2}, "2-D images", RuntimeError),
    ]
    for model, images, labels, name, kw, message, raw in cases:
        with pytest.raises(UnsupportedAttackError, match=message):
            LibraryAttack(name, model, eps=0.03, **kw)(images, labels)
        # without the pre-check torchattacks fails obscurely, and the adapter says what went wrong
        with pytest.raises(UnsupportedAttackError, match=f"torchattacks.{name} failed") as info:
            LibraryAttack(name, model, eps=0.03, check_known_limits=False, **kw)(images, labels)
        assert isinstance(info.value.__cause__, raw)
        assert message in str(info.value)
    # Square on volumes: torchattacks raises "too many values to unpack" once a sample is still correct
    model3 = tiny_cnn(3, 2)
    with torch.no_grad():
        v_labels = model3(v).argmax(1)
    with pytest.raises(UnsupportedAttackError, match="2-D images"):
        LibraryAttack("Square", model3, eps=0.03)(v, v_labels)
    with pytest.raises(UnsupportedAttackError, match="unpack") as info:
        LibraryAttack("Square", model3, eps=0.03, n_queries=5, check_known_limits=False)(v, v_labels)
    assert isinstance(info.value.__cause__, ValueError)


def test_library_attack_arguments_and_rng():
    model = tiny_cnn()
    x, y = batch(4, size=16)
    assert "Square" in library_attack_names() and "MultiAttack" not in library_attack_names()
    with pytest.raises(ValueError, match="unknown torchattacks attack"):
        LibraryAttack("NoSuchAttack", model)
    with pytest.raises(ValueError, match="does not take"):
        LibraryAttack("Square", model, n_querys=10)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        LibraryAttack("Square", model, eps=0.03)(x * 4, y)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    LibraryAttack("Square", model, eps=0.03, n_queries=5)(x, y)  # Square re-seeds the global RNG internally
    assert torch.equal(torch.rand(3), expected)


def test_attacks_survive_a_broadcast_input_gradient():
    """A model whose logits ignore the input gets a stride-0 gradient from autograd; the step must not write in place."""

    class Constant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.tensor([1.0, 0.0]))

        def forward(self, x):
            return self.bias.expand(x.shape[0], 2) + 0 * x.sum(dim=(1, 2, 3)).unsqueeze(1)

    from monai_adv.attacks import BIM, PGD

    x = torch.rand(3, 1, 8, 8)
    for attack in (PGD(Constant(), 0.01), BIM(Constant(), 0.01)):
        adv = attack(x, torch.zeros(3, dtype=torch.long))
        assert (adv - x).abs().max() <= 0.01 + 1e-6
