"""Tests of monai_adv.handlers.CatastrophicOverfittingGuard, in-process on tiny MONAI engines."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from ignite.engine import Events
from ignite.metrics import Accuracy
from monai.handlers import ValidationHandler, from_engine
from monai.transforms import Activationsd, AsDiscreted, Compose
from torch import nn
from torch.utils.data import DataLoader

import monai_adv.engines
from monai_adv.engines import AdversarialEvaluator, MixedAdversarialTrainer
from monai_adv.handlers import CatastrophicOverfittingGuard

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DEVICE = torch.device("cpu")


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def items(n: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    images, labels = torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, 2, (n,), generator=g)
    return [{"image": images[i], "label": labels[i]} for i in range(n)]


def postprocessing() -> Compose:
    return Compose([
        Activationsd(keys="pred", softmax=True),
        AsDiscreted(keys=["pred", "label"], argmax=[True, False], to_onehot=[2, 2]),
    ])


class _On:
    """A handler calling ``fn(engine)`` on ``EPOCH_COMPLETED`` (registered in val_handlers order)."""

    def __init__(self, fn):
        self.fn = fn

    def attach(self, engine):
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.fn)


def guarded_run(sequence, **guard_kwargs):
    """Train (FGSM-RS) with an AdversarialEvaluator whose metric is overwritten by ``sequence`` (one value per
    epoch); return the trainer, the guard and the network's state per epoch before and after the guard ran."""
    net = tiny_net()
    before, after = {}, {}

    def fake_metric(engine):
        engine.state.metrics["val_robust_acc"] = sequence[engine.state.epoch - 1]
        before[engine.state.epoch] = copy.deepcopy(engine.network.state_dict())

    def record_after(engine):
        after[engine.state.epoch] = copy.deepcopy(engine.network.state_dict())

    guard = CatastrophicOverfittingGuard(**guard_kwargs)
    evaluator = AdversarialEvaluator(
        device=DEVICE, val_data_loader=DataLoader(items(4, seed=1), batch_size=4), network=net,
        postprocessing=postprocessing(),
        key_val_metric={"val_robust_acc": Accuracy(output_transform=from_engine(["pred", "label"]))},
        val_handlers=[_On(fake_metric), guard, _On(record_after)], eps=0.03, attack="pgd", steps=1,
    )
    trainer = MixedAdversarialTrainer(
        device=DEVICE, max_epochs=len(sequence), train_data_loader=DataLoader(items(8), batch_size=4), network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9), loss_function=nn.CrossEntropyLoss(),
        train_handlers=[ValidationHandler(validator=evaluator, interval=1)], attack="fgsm_rs", eps=0.03, ratio=1.0,
    )
    guard.set_trainer(trainer)
    trainer.run()
    return trainer, guard, before, after


def same_state(a, b) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_the_guard_lives_in_handlers_only():
    assert CatastrophicOverfittingGuard.__module__ == "monai_adv.handlers.overfit_guard"
    assert not hasattr(monai_adv.engines, "CatastrophicOverfittingGuard")


def test_rolls_back_and_stops_on_collapse():
    trainer, guard, before, after = guarded_run([0.30, 0.50, 0.45, 0.05, 0.60, 0.60], max_drop=0.2)
    assert trainer.state.epoch == 4  # stopped after the collapse at epoch 4
    assert guard.collapse_epochs == [4] and guard.best_epoch == 2 and guard.best_metric == 0.5
    assert guard.history == [(1, 0.30), (2, 0.50), (3, 0.45), (4, 0.05)]
    assert not same_state(before[4], before[2])
    assert same_state(after[4], before[2])  # rolled back to the best state


def test_rollback_without_stop_and_floor():
    trainer, guard, before, after = guarded_run([0.30, 0.40, 0.25, 0.40], max_drop=0.5, floor=0.3, stop=False)
    assert trainer.state.epoch == 4  # not stopped
    assert guard.collapse_epochs == [3]  # 0.25 < floor 0.3 <= best 0.4, while the drop 0.15 is tolerated
    assert same_state(after[3], before[2])
    assert not same_state(after[4], before[2])  # trained on from the restored state


def test_rule_on_a_metric_sequence_restores_network_and_optimizer():
    net = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    trainer = SimpleNamespace(terminated=0)
    trainer.terminate = lambda: setattr(trainer, "terminated", trainer.terminated + 1)
    guard = CatastrophicOverfittingGuard(trainer=trainer, metric_name="acc", max_drop=0.1, floor=0.05, stop=True,
                                         optimizer=optimizer)
    engine = SimpleNamespace(state=SimpleNamespace(metrics={}, epoch=0, key_metric_name="other"), network=net)
    best_weight = best_momentum = None
    for epoch, value in enumerate([0.02, 0.20, 0.15, 0.30, 0.25, 0.19], start=1):
        engine.state.epoch, engine.state.metrics["acc"] = epoch, value
        with torch.no_grad():
            net.weight.add_(1.0)  # training moves the weights every epoch
        net(torch.ones(1, 2)).sum().backward()
        optimizer.step()
        guard(engine)
        if epoch == 4:
            best_weight = net.weight.detach().clone()
            best_momentum = optimizer.state[net.weight]["momentum_buffer"].clone()
    # 0.02 -> first best (below the floor, but the floor was never reached: no collapse); 0.15 and 0.25 are within
    # max_drop of the best; 0.19 is 0.11 below the best 0.30: collapse
    assert guard.collapse_epochs == [6] and guard.best_epoch == 4
    assert trainer.terminated == 1
    assert torch.equal(net.weight, best_weight)
    assert torch.equal(optimizer.state[net.weight]["momentum_buffer"], best_momentum)
    assert guard.history[-1] == (6, 0.19)


def test_state_dict_resumes_the_same_judgement():
    """A guard restored from state_dict() (what TrainingResume keeps) judges the next value as the original would."""
    net = nn.Linear(2, 2)
    engine = SimpleNamespace(state=SimpleNamespace(metrics={}, epoch=0, key_metric_name="acc"), network=net)
    first = CatastrophicOverfittingGuard(max_drop=0.1, stop=False)
    for epoch, value in enumerate([0.5, 0.6], start=1):
        engine.state.epoch, engine.state.metrics["acc"] = epoch, value
        first(engine)
    resumed = CatastrophicOverfittingGuard(max_drop=0.1, stop=False)
    resumed.load_state_dict(copy.deepcopy(first.state_dict()))
    best = copy.deepcopy(net.state_dict())
    with torch.no_grad():
        net.weight.add_(1.0)
    engine.state.epoch, engine.state.metrics["acc"] = 3, 0.45
    resumed(engine)  # key metric used: metric_name None
    assert resumed.collapse_epochs == [3] and resumed.best_epoch == 2
    assert same_state(net.state_dict(), best)


def test_missing_metric_and_stop_without_trainer_are_errors():
    engine = SimpleNamespace(state=SimpleNamespace(metrics={"acc": 0.5}, epoch=1, key_metric_name=None),
                             network=nn.Linear(2, 2))
    with pytest.raises(KeyError, match="not found"):
        CatastrophicOverfittingGuard()(engine)
    guard = CatastrophicOverfittingGuard(metric_name="acc", max_drop=0.1)
    guard(engine)
    engine.state.epoch, engine.state.metrics["acc"] = 2, 0.1
    with pytest.raises(RuntimeError, match="set_trainer"):
        guard(engine)
    with pytest.raises(ValueError, match="max_drop"):
        CatastrophicOverfittingGuard(max_drop=-1)


def test_builds_from_a_bundle_config():
    from monai.bundle import ConfigParser

    parser = ConfigParser({
        "guard": {"_target_": "monai_adv.handlers.CatastrophicOverfittingGuard", "max_drop": 0.3, "floor": 0.05},
    })
    guard = parser.get_parsed_content("guard")
    assert isinstance(guard, CatastrophicOverfittingGuard) and guard.max_drop == 0.3 and guard.floor == 0.05


def test_disabled_guard_attaches_nothing():
    from ignite.engine import Engine

    engine = Engine(lambda e, b: None)
    CatastrophicOverfittingGuard(enabled=False).attach(engine)
    guard = CatastrophicOverfittingGuard()
    guard.attach(engine)
    assert engine.has_event_handler(guard, Events.EPOCH_COMPLETED)
    assert len(engine._event_handlers[Events.EPOCH_COMPLETED]) == 1
