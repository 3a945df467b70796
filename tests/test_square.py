"""Square (monai_adv.attacks.Square): black-box, within the ball, reproducible per image, and the attack that catches a
gradient-masked model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_adv.attacks import APGD, PGD, Square, predict
from monai_adv.attacks.seeding import mix_seed
from test_apgd import correct_labels, data, tiny_cnn

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Quantised(nn.Module):
    """The model behind an 8-bit quantisation of its input: the same decisions, but every input gradient is zero
    (``round`` has none), so gradient attacks cannot move (gradient masking)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 255) / 255)


def seeds(n: int) -> list[int]:
    return [mix_seed(3, i) for i in range(n)]


@pytest.mark.parametrize("spatial_dims, num_classes", [(2, 3), (3, 2), (2, 1)])
def test_square_stays_in_the_ball_and_reports_what_it_broke(spatial_dims, num_classes):
    model = tiny_cnn(spatial_dims, num_classes)
    x = data(16, spatial_dims, 8)
    y = correct_labels(model, x)
    eps = 0.15
    result = Square(model, eps, queries=200, sample_seeds=seeds(16)).run(x, y)
    assert bool(((result.adv - x).abs() <= eps + 1e-6).all()) and bool(((result.adv >= 0) & (result.adv <= 1)).all())
    with torch.no_grad():
        assert torch.equal(result.fooled, predict(model(result.adv)) != y)
    assert int(result.fooled.sum()) > 0 and result.grad_passes == 0


def test_an_images_result_does_not_depend_on_its_batch():
    model = tiny_cnn()
    x = data(12)
    y = correct_labels(model, x)
    attack = Square(model, 0.12, queries=150, restarts=2, sample_seeds=seeds(12))
    whole = attack.run(x, y)
    alone = Square(model, 0.12, queries=150, restarts=2, sample_seeds=seeds(12)[4:5]).run(x[4:5], y[4:5])
    assert torch.equal(alone.adv, whole.adv[4:5]) and bool(alone.fooled[0] == whole.fooled[4])
    again = Square(model, 0.12, queries=150, restarts=2, sample_seeds=seeds(12)).run(x, y)
    assert torch.equal(again.adv, whole.adv)


def test_square_breaks_a_gradient_masked_model_that_the_gradient_attacks_cannot():
    model = Quantised(tiny_cnn())
    x = data(24)
    y = correct_labels(model, x)
    eps = 0.15
    s = seeds(24)
    square = Square(model, eps, queries=300, sample_seeds=s).run(x, y)
    with torch.no_grad():
        def broken(adv: torch.Tensor) -> torch.Tensor:
            return predict(model(adv)) != y

        pgd = broken(PGD(model, eps, steps=10, sample_seeds=s)(x, y))
        apgd = broken(APGD(model, eps, steps=10, sample_seeds=s)(x, y))
        unmasked = broken(PGD(model.model, eps, steps=10, sample_seeds=s)(x, y))
    gradient = int((pgd | apgd).sum())
    assert int(square.fooled.sum()) >= gradient + 5, (int(square.fooled.sum()), gradient)
    # without the masking, the gradient attacks break these images
    assert int(unmasked.sum()) >= int(square.fooled.sum()) - 2, (int(unmasked.sum()), int(square.fooled.sum()))
