"""Tests of monai_adv.handlers.PreciseBatchNorm, in-process on a tiny MONAI evaluator."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedEvaluator
from torch import nn
from torch.utils.data import DataLoader

from monai_adv.handlers import PreciseBatchNorm

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def images(n: int, seed: int = 0, shift: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 4, 4, generator=g) * torch.tensor([1.0, 2.0]).view(1, 2, 1, 1) + shift


def bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(32, 2))


def batches(x: torch.Tensor, batch_size: int) -> list[dict]:
    return [{"image": x[i : i + batch_size], "label": torch.zeros(len(x[i : i + batch_size]), dtype=torch.long)} for i in range(0, len(x), batch_size)]


def test_statistics_are_the_average_over_the_training_batches():
    net = bn_net().eval()
    x = images(40)
    handler = PreciseBatchNorm(net, batches(x, 10))
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}

    assert handler.update() == 4

    features = net[0](x).detach()
    bn = net[1]
    # equal batches: the mean of the batch means is the mean; the variances are each batch's unbiased ones, averaged
    torch.testing.assert_close(bn.running_mean, features.mean(dim=(0, 2, 3)))
    batch_vars = torch.stack([features[i : i + 10].var(dim=(0, 2, 3), unbiased=True) for i in range(0, 40, 10)])
    torch.testing.assert_close(bn.running_var, batch_vars.mean(dim=0))
    assert bn.momentum == 0.1 and not net.training
    for k, v in net.state_dict().items():
        if k in weights:
            assert torch.equal(v, weights[k]), k


def test_num_batches_limits_the_average_and_a_network_without_batch_norm_is_left_alone():
    net = bn_net()
    x = images(40)
    assert PreciseBatchNorm(net, batches(x, 10), num_batches=1).update() == 1
    torch.testing.assert_close(net[1].running_mean, net[0](x[:10]).detach().mean(dim=(0, 2, 3)))
    assert net.training

    class NoIteration:
        def __iter__(self):
            raise AssertionError("the loader must not be read for a network without BatchNorm")

    plain = nn.Sequential(nn.Flatten(), nn.Linear(32, 2))
    assert PreciseBatchNorm(plain, NoIteration()).update() == 0


def test_the_evaluator_runs_with_the_recomputed_statistics():
    """Attached to an evaluator, the statistics are recomputed before its first iteration."""
    net = bn_net().eval()
    train_images = images(32, seed=1, shift=5.0)
    seen = []
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=DataLoader(batches(images(8), 8), batch_size=None), network=net)
    evaluator.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append(net[1].running_mean.clone()))
    PreciseBatchNorm(net, batches(train_images, 8)).attach(evaluator)
    evaluator.run()
    torch.testing.assert_close(seen[0], net[0](train_images).detach().mean(dim=(0, 2, 3)))


def test_disabled_does_not_attach_and_bad_settings_are_refused():
    net = bn_net()
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=DataLoader(batches(images(8), 8), batch_size=None), network=net)
    before = net[1].running_mean.clone()
    PreciseBatchNorm(net, batches(images(8, shift=9.0), 8), enabled=False).attach(evaluator)
    net.eval()
    evaluator.run()
    assert torch.equal(net[1].running_mean, before)

    with pytest.raises(TypeError, match="enabled must be True or False, got 'false'"):
        PreciseBatchNorm(net, [], enabled="false")
    with pytest.raises(ValueError, match="num_batches must be a positive integer"):
        PreciseBatchNorm(net, [], num_batches=0)
    with pytest.raises(ValueError, match="the data loader gave no batch"):
        PreciseBatchNorm(net, []).update()
    assert net[1].momentum == 0.1
