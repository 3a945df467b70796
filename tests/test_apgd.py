"""APGD (monai_adv.attacks.APGD): equal to torchattacks' APGD from the same start, the margin/DLR losses, 3-D and
one-logit models, per-sample seeds."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from torch import nn

from monai_adv.attacks import APGD, PGD, predict
from monai_adv.attacks.loss import dlr_loss, margin_loss
from monai_adv.attacks.seeding import mix_seed

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_cnn(spatial_dims: int = 2, num_classes: int = 3, seed: int = 0) -> nn.Module:
    """A small CNN trained for a moment to tell the brightness class of :func:`data` (a random one predicts one class
    everywhere, robustly)."""
    torch.manual_seed(seed)
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    pool = nn.AdaptiveAvgPool2d if spatial_dims == 2 else nn.AdaptiveAvgPool3d
    model = nn.Sequential(conv(1, 8, 3, padding=1), nn.ReLU(), conv(8, 8, 3, padding=1), nn.ReLU(), pool(2),
                          nn.Flatten(), nn.Linear(8 * 2**spatial_dims, num_classes))
    x = data(64, spatial_dims, 8, seed=seed + 100)
    y = brightness_class(x, max(num_classes, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        optimizer.zero_grad()
        logits = model(x)
        loss = (nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y.float()) if num_classes == 1
                else nn.functional.cross_entropy(logits, y))
        loss.backward()
        optimizer.step()
    return model.eval()


def data(n: int = 24, spatial_dims: int = 2, size: int = 10, seed: int = 1) -> torch.Tensor:
    """Images of one of three brightness levels with noise, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    level = torch.randint(0, 3, (n,), generator=g).float().view(-1, *[1] * (spatial_dims + 1))
    noise = torch.rand(n, 1, *[size] * spatial_dims, generator=g)
    return (0.25 * level + 0.25 * noise + 0.1).clamp(0, 1)


def brightness_class(x: torch.Tensor, num_classes: int) -> torch.Tensor:
    level = ((x.flatten(1).mean(1) - 0.1 - 0.125) / 0.25).round().clamp(0, 2).long()
    return level if num_classes == 3 else (level >= 1).long()


def correct_labels(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's own predictions: every sample starts correctly classified (no sample is skipped)."""
    with torch.no_grad():
        return predict(model(x))


def fooled(model: nn.Module, adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return predict(model(adv)) != y


@pytest.mark.parametrize("loss", ["ce", "dlr"])
@pytest.mark.parametrize("restarts", [1, 2])
def test_equal_to_torchattacks_from_the_same_start(loss, restarts):
    model = tiny_cnn()
    x = data()
    y = correct_labels(model, x)
    eps = 0.12
    theirs = torchattacks.APGD(model, norm="Linf", eps=eps, steps=12, n_restarts=restarts, seed=7, loss=loss)(x, y)
    torch.manual_seed(7)
    result = APGD(model, eps, steps=12, restarts=restarts, loss=loss).run(x, y)
    broken = fooled(model, theirs, y)
    assert 0 < int(broken.sum()) < len(x), "a test of equality needs broken and unbroken images"
    assert torch.equal(result.fooled, broken)
    # fooled images: the same iterate up to round-off; the others: torchattacks returns the clean image
    assert torch.allclose(result.adv[broken], theirs[broken], atol=1e-6)
    assert torch.equal(theirs[~broken], x[~broken])
    assert bool(((result.adv - x).abs() <= eps + 1e-6).all())
    # 13 gradient passes per image and restart; a second restart attacks only the images the first left unbroken
    torch.manual_seed(7)
    left = int((~APGD(model, eps, steps=12, loss=loss).run(x, y).fooled).sum())
    assert result.grad_passes == 13 * (len(x) + (left if restarts == 2 else 0))


def test_margin_is_dlr_for_three_classes_and_the_logit_margin_for_two():
    logits = torch.tensor([[2.0, 1.0, -1.0], [0.5, 3.0, 1.0]])
    labels = torch.tensor([0, 0])
    assert torch.allclose(margin_loss(logits, labels), torch.tensor([-1.0, 2.5]))
    assert torch.allclose(dlr_loss(logits, labels), torch.tensor([-1.0 / 3.0, 2.5 / 2.5]))
    with pytest.raises(ValueError, match="DLR loss needs at least 3 classes"):
        dlr_loss(logits[:, :2], labels)
    one = torch.tensor([[1.5], [-0.5]])  # one logit z: the logits [0, z]
    assert torch.allclose(margin_loss(one, torch.tensor([1, 1])), torch.tensor([-1.5, 0.5]))
    model = tiny_cnn(num_classes=2)
    with pytest.raises(ValueError, match="DLR loss needs at least 3 classes"):
        APGD(model, 0.03, loss="dlr")(data(4), torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("spatial_dims, num_classes", [(3, 2), (2, 1)])
def test_3d_and_one_logit_models_are_attacked_within_the_ball(spatial_dims, num_classes):
    model = tiny_cnn(spatial_dims, num_classes)
    x = data(12, spatial_dims, 8)
    y = correct_labels(model, x)
    eps = 0.05
    for loss in ("ce", "margin"):
        result = APGD(model, eps, steps=10, loss=loss, sample_seeds=list(range(12))).run(x, y)
        assert result.adv.shape == x.shape
        assert bool(((result.adv - x).abs() <= eps + 1e-6).all()) and bool((result.adv >= 0).all())
        assert torch.equal(result.fooled, fooled(model, result.adv, y))


def test_at_least_as_strong_as_pgd_and_seeded_per_image():
    model = tiny_cnn()
    x = data(32)
    y = correct_labels(model, x)
    eps = 0.02
    seeds = [mix_seed(0, i) for i in range(len(x))]
    apgd = APGD(model, eps, steps=20, restarts=2, sample_seeds=seeds).run(x, y)
    pgd = PGD(model, eps, steps=20, restarts=2, sample_seeds=seeds).run(x, y)
    assert int(apgd.fooled.sum()) >= int(pgd.fooled.sum())
    # per-image seeds: an image's result does not depend on the rest of its batch
    alone = APGD(model, eps, steps=20, restarts=2, sample_seeds=seeds[5:6]).run(x[5:6], y[5:6])
    assert torch.allclose(alone.adv, apgd.adv[5:6], atol=1e-6) and bool(alone.fooled[0] == apgd.fooled[5])


def test_images_misclassified_before_the_attack_are_left_clean():
    model = tiny_cnn()
    x = data(8)
    wrong = (correct_labels(model, x) + 1) % 3
    result = APGD(model, 0.03, steps=5).run(x, wrong)
    assert bool(result.fooled.all()) and torch.equal(result.adv, x) and result.grad_passes == 0


@pytest.mark.parametrize("restarts", [1, 2])
def test_targeted_apgd_equals_torchattacks_from_the_same_start(restarts):
    from monai_adv.attacks import APGDT

    model = tiny_cnn(num_classes=5)
    x = data(24)
    y = correct_labels(model, x)
    eps = 0.12
    theirs = torchattacks.APGDT(model, norm="Linf", eps=eps, steps=8, n_restarts=restarts, seed=3, n_classes=5)(x, y)
    torch.manual_seed(3)
    result = APGDT(model, eps, steps=8, restarts=restarts).run(x, y)
    broken = fooled(model, theirs, y)
    assert 0 < int(broken.sum()) < len(x), "a test of equality needs broken and unbroken images"
    assert torch.equal(result.fooled, broken)
    assert torch.allclose(result.adv[broken], theirs[broken], atol=1e-6)
    # four targets, each attacking only what the earlier ones left
    assert result.grad_passes > 9 * len(x) * restarts
    with pytest.raises(ValueError, match="at least 4 classes"):
        APGDT(tiny_cnn(num_classes=3), eps)(x, correct_labels(tiny_cnn(num_classes=3), x))
