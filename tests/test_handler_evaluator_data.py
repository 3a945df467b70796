"""Tests of monai_adv.handlers.evaluator_data: the base of the handlers that re-run an evaluator's data."""

from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedEvaluator
from torch import nn
from torch.utils.data import DataLoader

from monai_adv.handlers import AttackSweep, EvaluatorDataHandler, RobustnessComparison, SensitivityTriage
from monai_adv.handlers.evaluator_data import evaluator_batches
from monai_adv.input_space import InputSpace, InputSpaceError, ZScoreInputSpace
from monai_adv.network_output import ProbabilityOutputError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Recorder(EvaluatorDataHandler):
    """Records what :meth:`batches` and :meth:`attack_model` hand out when the evaluator completes."""

    def __call__(self, engine):
        self.model = self.attack_model(engine)
        self.seen = list(self.batches(engine, "test"))


class CountingNet(nn.Module):
    def __init__(self, head: nn.Module | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        self.head = head
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        out = self.fc(x)
        return out if self.head is None else self.head(out)


def evaluator(network: nn.Module, images: torch.Tensor, ids: bool = True, batch_size: int = 3) -> SupervisedEvaluator:
    items = [{"image": images[i], "label": torch.tensor(i % 3)} | ({"id": f"case-{i}"} if ids else {})
             for i in range(len(images))]
    return SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=DataLoader(items, batch_size=batch_size),
                               network=network)


def zscore(u: torch.Tensor) -> torch.Tensor:
    flat = u.flatten(1)
    return (u - flat.mean(1).view(-1, 1, 1, 1)) / flat.std(1, unbiased=False).view(-1, 1, 1, 1)


def test_the_handlers_share_the_base():
    for cls in (AttackSweep, SensitivityTriage, RobustnessComparison):
        assert issubclass(cls, EvaluatorDataHandler)
        assert "attach" not in vars(cls) and "batches" not in vars(cls)


def test_default_space_hands_out_the_network_inputs_and_the_network_itself():
    images = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    net = CountingNet()
    engine = evaluator(net, images)
    handler = Recorder()
    handler.attach(engine)
    engine.run()
    assert handler.model is net
    assert [ids for ids, _, _ in handler.seen] == [["case-0", "case-1", "case-2"], ["case-3", "case-4"]]
    assert torch.equal(torch.cat([u for _, u, _ in handler.seen]), images)
    assert torch.equal(torch.cat([y for _, _, y in handler.seen]), torch.arange(5) % 3)


def test_zscore_space_hands_out_u_and_the_network_of_u():
    g = torch.Generator().manual_seed(1)
    u = torch.rand(4, 1, 4, 4, generator=g)
    u = (u - u.amin((1, 2, 3), keepdim=True)) / (u.amax((1, 2, 3), keepdim=True) - u.amin((1, 2, 3), keepdim=True))
    x = zscore(u)  # what NormalizeIntensityd hands the network
    net = CountingNet()
    engine = evaluator(net, x, batch_size=4)
    handler = Recorder(input_space=ZScoreInputSpace())
    handler.attach(engine)
    engine.run()
    (_, seen_u, _), = handler.seen
    torch.testing.assert_close(seen_u, u, rtol=0, atol=1e-6)
    assert float(seen_u.min()) == 0.0 and float(seen_u.max()) == 1.0
    with torch.no_grad():
        torch.testing.assert_close(handler.model(seen_u), net(zscore(seen_u)))
        torch.testing.assert_close(handler.model(seen_u), net(x), rtol=1e-5, atol=1e-5)


def test_window_given_as_a_pair_and_inputs_outside_it_refused():
    hu = -1000 + 1400 * torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    engine = evaluator(CountingNet(), hu)
    handler = Recorder(input_space=(-1000, 400))
    handler.attach(engine)
    engine.run()
    torch.testing.assert_close(handler.seen[0][1], (hu + 1000) / 1400)
    # the same raw HU read as [0, 1] images: refused, naming the config id to set
    engine = evaluator(CountingNet(), hu)
    Recorder().attach(engine)
    with pytest.raises(InputSpaceError, match="adv_input_space"):
        engine.run()


@pytest.mark.parametrize("head,message", [(nn.Softmax(dim=1), "ends in Softmax"), (None, "sum to 1")])
def test_probability_outputs_are_refused_on_the_first_batch(head, message):
    net = CountingNet(head)
    if head is None:  # a functional softmax in forward, invisible to the layer check
        net.forward = lambda x: torch.softmax(net.fc(x), dim=1)
    handler = Recorder()
    engine = evaluator(net, torch.rand(6, 1, 4, 4))
    batches = handler.batches(engine, "test")
    with pytest.raises(ProbabilityOutputError, match=message) as error:
        next(batches)
    assert str(error.value).startswith("Recorder: the evaluator's network")


def test_one_network_run_checks_the_outputs_and_nothing_else_changes():
    net = CountingNet()
    engine = evaluator(net, torch.rand(6, 1, 4, 4))
    seen = list(Recorder().batches(engine, "test"))
    assert net.calls == 1 and len(seen) == 2 and net.training  # one checking forward, the train flag restored


def test_positions_stand_in_for_missing_ids_and_an_empty_loader_is_an_error():
    engine = evaluator(CountingNet(), torch.rand(4, 1, 4, 4), ids=False)
    assert [ids for ids, _, _ in evaluator_batches(engine, "test", "Owner")] == [["0", "1", "2"], ["3"]]
    engine.data_loader = DataLoader([], batch_size=2)
    with pytest.raises(ValueError, match="^Recorder: the evaluator's data loader yielded no batch"):
        list(Recorder().batches(engine, "test"))


def test_native_scale_explicit_values_win_then_the_space_then_the_old_default():
    assert Recorder().native_scale(None, None) == (None, "gray levels of 255")
    assert Recorder().native_scale(255.0, None) == (255.0, "gray levels of 255")
    ct = Recorder(input_space=InputSpace(-1000, 400, 1400, "HU"))
    assert ct.native_scale(None, None) == (1400.0, "HU")
    assert ct.native_scale(700.0, "HU/2") == (700.0, "HU/2")
    per_unit, units = Recorder(input_space=ZScoreInputSpace()).native_scale(None, None)
    assert per_unit is None and "each image" in units
