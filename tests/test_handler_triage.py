"""Tests of monai_adv.handlers.SensitivityTriage in-process on a tiny MONAI evaluator, through input spaces."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from monai.engines import SupervisedEvaluator
from torch import nn
from torch.utils.data import DataLoader

from monai_adv.attacks.seeding import key_of
from monai_adv.handlers import SensitivityTriage
from monai_adv.input_space import InputSpace, ZScoreInputSpace
from monai_adv.network_output import ProbabilityOutputError
from monai_adv.sensitivity import minimal_flip_eps

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N, EPS_MAX, STEPS, RESTARTS = 10, 0.08, 3, 1


class Net(nn.Module):
    """A small CNN reading ``(x - offset) / scale``."""

    def __init__(self, offset: float = 0.0, scale: float = 1.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.offset, self.scale = offset, scale
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                  nn.Linear(16, 2))

    def forward(self, x):
        return self.body((x - self.offset) / self.scale)


def zscore(u: torch.Tensor) -> torch.Tensor:
    flat = u.flatten(1)
    return (u - flat.mean(1).view(-1, 1, 1, 1)) / flat.std(1, unbiased=False).view(-1, 1, 1, 1)


def window(u: torch.Tensor) -> torch.Tensor:
    return -1000 + 1400 * u


class OfU(nn.Module):
    def __init__(self, net: nn.Module, to_network) -> None:
        super().__init__()
        self.net, self.to_network = net, to_network

    def forward(self, u):
        return self.net(self.to_network(u))


def unit_images(seed: int = 0) -> torch.Tensor:
    u = torch.rand(N, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    lo, hi = u.amin((1, 2, 3), keepdim=True), u.amax((1, 2, 3), keepdim=True)
    return (u - lo) / (hi - lo)


def run_triage(net: nn.Module, x: torch.Tensor, labels: torch.Tensor, folder, **kwargs) -> SensitivityTriage:
    items = [{"image": x[i], "label": labels[i], "id": f"case-{i:02d}"} for i in range(len(x))]
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=DataLoader(items, batch_size=4),
                                    network=net)
    triage = SensitivityTriage(str(folder), ["a", "b"], q=0.3, eps_max=EPS_MAX, restarts=RESTARTS, steps=STEPS,
                               **kwargs)
    triage.attach(evaluator)
    evaluator.run()
    return triage


def rows(folder) -> list[dict]:
    return list(csv.DictReader((folder / "sensitivity.csv").open()))


@pytest.mark.parametrize("space,to_network", [(ZScoreInputSpace(), zscore),
                                              (InputSpace(-1000, 400, 1400, "HU"), window)])
def test_brackets_equal_the_search_on_net_of_u(tmp_path, space, to_network):
    u = unit_images()
    net = Net() if to_network is zscore else Net(offset=-300.0, scale=700.0)
    of_u = OfU(net, to_network)
    labels = torch.arange(N) % 2
    triage = run_triage(net, to_network(u), labels, tmp_path, input_space=space)
    keys = [key_of(f"case-{i:02d}") for i in range(N)]
    expected = minimal_flip_eps(of_u, u, EPS_MAX, restarts=RESTARTS, steps=STEPS, labels=labels, seed=0, keys=keys)
    assert int(expected.flipped.sum()) not in (0, N)  # some flip within eps_max, some do not: a real bracket test
    got = rows(tmp_path)
    assert [r["id"] for r in got] == [f"case-{i:02d}" for i in range(N)]
    assert [r["eps_hi"] for r in got] == [f"{v:.6g}" for v in expected.eps_hi.tolist()]
    assert [r["eps_lo"] for r in got] == [f"{v:.6g}" for v in expected.eps_lo.tolist()]
    assert [r["prediction"] for r in got] == ["ab"[int(p)] for p in expected.prediction]
    native = [r["eps_hi_native"] for r in got]
    if space.native_per_unit:  # native units from the space: the config gives none
        assert native == [f"{v * 1400:.6g}" for v in expected.eps_hi.tolist()]
        assert json.loads((tmp_path / "triage.json").read_text())["native_units"] == "HU"
    else:
        assert native == [""] * N


def test_raw_hu_read_as_unit_images_is_refused(tmp_path):
    u = unit_images()
    with pytest.raises(ValueError, match="adv_input_space"):
        run_triage(Net(offset=-300.0, scale=700.0), window(u), torch.zeros(N, dtype=torch.long), tmp_path)


def test_default_space_unchanged_and_explicit_native_values_win(tmp_path):
    u = unit_images(seed=1)
    net = Net()
    labels = torch.arange(N) % 2
    triage = run_triage(net, u, labels, tmp_path, native_per_unit=255.0)
    keys = [key_of(f"case-{i:02d}") for i in range(N)]
    expected = minimal_flip_eps(net, u, EPS_MAX, restarts=RESTARTS, steps=STEPS, labels=labels, seed=0, keys=keys)
    assert [r["eps_hi"] for r in rows(tmp_path)] == [f"{v:.6g}" for v in expected.eps_hi.tolist()]
    assert (triage.native_per_unit, triage.native_units) == (255.0, "gray levels of 255")
    ct = SensitivityTriage(str(tmp_path), ["a", "b"], native_per_unit=700.0, native_units="HU/2",
                           input_space=InputSpace(native_per_unit=1400, native_units="HU"))
    assert (ct.native_per_unit, ct.native_units) == (700.0, "HU/2")


def test_sigmoid_network_is_refused(tmp_path):
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 1), nn.Sigmoid())
    with pytest.raises(ProbabilityOutputError, match="SensitivityTriage: the evaluator's network ends in Sigmoid"):
        run_triage(net, unit_images(), torch.zeros(N, dtype=torch.long), tmp_path)
    assert not (tmp_path / "sensitivity.csv").exists()
