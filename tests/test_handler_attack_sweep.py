"""Tests of monai_adv.handlers.AttackSweep in-process on a tiny MONAI evaluator: numbers through input spaces, files."""

from __future__ import annotations

import csv
import json
from functools import partial

import pytest
import torch
from ignite.metrics import Accuracy
from monai.engines import SupervisedEvaluator
from monai.handlers import from_engine
from monai.transforms import Activationsd, AsDiscreted, Compose
from torch import nn
from torch.utils.data import DataLoader

from monai_adv.attacks import BIM, FGSM, PGD
from monai_adv.attacks.seeding import key_of, mix_seed
from monai_adv.handlers import AttackSweep
from monai_adv.input_space import InputSpace, ZScoreInputSpace
from monai_adv.network_output import ProbabilityOutputError
from monai_adv.sweep import attack_sweep

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ATTACKS = {"FGSM": FGSM, "BIM": partial(BIM, steps=3), "PGD": partial(PGD, steps=3)}
GRID = [0.02, 0.1, 0.3]
N = 10


def tiny_net(seed: int = 0, offset: float = 0.0, scale: float = 1.0) -> nn.Module:
    """A small CNN reading ``(x - offset) / scale`` (a network trained on raw HU normalises them first)."""
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 2))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = body

        def forward(self, x):
            return self.body((x - offset) / scale)

    return Net()


def unit_images(n: int = N, seed: int = 0) -> torch.Tensor:
    """``(n, 1, 8, 8)`` images in [0, 1] that span [0, 1] exactly (a min-max or percentile window's output)."""
    u = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    lo, hi = u.amin((1, 2, 3), keepdim=True), u.amax((1, 2, 3), keepdim=True)
    return (u - lo) / (hi - lo)


def zscore(u: torch.Tensor) -> torch.Tensor:
    """NormalizeIntensityd's per-image z-score (population std)."""
    flat = u.flatten(1)
    return (u - flat.mean(1).view(-1, 1, 1, 1)) / flat.std(1, unbiased=False).view(-1, 1, 1, 1)


class OfU(nn.Module):
    """The attacked function written out by hand: ``net(to_network(u))``."""

    def __init__(self, net: nn.Module, to_network) -> None:
        super().__init__()
        self.net, self.to_network = net, to_network

    def forward(self, u):
        return self.net(self.to_network(u))


def run_sweep(net: nn.Module, x: torch.Tensor, labels: torch.Tensor, folder, grid=GRID, **kwargs) -> AttackSweep:
    items = [{"image": x[i], "label": labels[i], "id": f"case-{i:02d}"} for i in range(len(x))]
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=DataLoader(items, batch_size=4), network=net,
        postprocessing=Compose([Activationsd(keys="pred", softmax=True),
                                AsDiscreted(keys=["pred", "label"], argmax=[True, False], to_onehot=[2, 2])]),
        key_val_metric={"acc": Accuracy(output_transform=from_engine(["pred", "label"]))},
    )
    kwargs = {"large_eps": None, "n_examples": 0, **kwargs}
    sweep = AttackSweep(ATTACKS, grid, str(folder), ["a", "b"], **kwargs)
    sweep.attach(evaluator)
    evaluator.run()
    return sweep


def reference(model_of_u: nn.Module, u: torch.Tensor, labels: torch.Tensor) -> dict[str, list[int]]:
    keys = [key_of(f"case-{i:02d}") for i in range(len(u))]
    return attack_sweep(model_of_u, u, labels, ATTACKS, GRID, keys=keys, seed=0).correct


def predicted(model_of_u: nn.Module, u: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model_of_u(u).argmax(1)


def test_zscore_input_space_equals_attacking_net_of_zscore_u(tmp_path):
    u = unit_images()
    net = tiny_net()
    of_u = OfU(net, zscore)
    labels = predicted(of_u, u)
    labels[:3] = 1 - labels[:3]  # three wrong at eps 0
    sweep = run_sweep(net, zscore(u), labels, tmp_path, input_space=ZScoreInputSpace())
    expected = reference(of_u, u, labels)
    assert sweep.result.correct == expected
    assert expected["PGD"][0] == N - 3 and expected["PGD"][-1] < expected["PGD"][0]  # the attacks do something
    # the evaluator's accuracy on the z-scored inputs equals the sweep's clean accuracy on u
    assert sweep.report["checks"]["eps0_is_clean"]["passed"] is True
    rows = list(csv.DictReader((tmp_path / "attack_sweep.csv").open()))
    assert [r["eps_native"] for r in rows] == [""] * len(rows)  # per-image window: no native eps
    assert [float(r["accuracy"]) for r in rows if r["attack"] == "PGD"] == [c / N for c in expected["PGD"][1:]]


def test_fixed_window_on_raw_hu_equals_attacking_net_of_the_window(tmp_path):
    u = torch.rand(N, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    net = tiny_net(offset=-300.0, scale=700.0)
    window = lambda v: -1000 + 1400 * v  # noqa: E731
    hu = window(u)
    of_u = OfU(net, window)
    labels = predicted(of_u, u)
    space = InputSpace(-1000, 400, native_per_unit=1400, native_units="HU")
    sweep = run_sweep(net, hu, labels, tmp_path, input_space=space)
    expected = reference(of_u, (hu + 1000) / 1400, labels)
    assert sweep.result.correct == expected and expected["PGD"][-1] < N
    # native eps from the space, since the config gives none
    report = json.loads((tmp_path / "attack_sweep.json").read_text())
    assert report["settings"]["native_per_unit"] == 1400 and report["settings"]["native_units"] == "HU"
    rows = list(csv.DictReader((tmp_path / "attack_sweep.csv").open()))
    assert {(r["eps"], r["eps_native"]) for r in rows if r["attack"] == "PGD"} == {("0.02", "28"), ("0.1", "140"),
                                                                                   ("0.3", "420")}
    # attacking the raw HU as if they were [0, 1] images is refused
    with pytest.raises(ValueError, match="outside the stated input space"):
        run_sweep(net, hu, labels, tmp_path / "unit")


def test_default_space_is_the_plain_sweep_and_explicit_native_values_win(tmp_path):
    u = unit_images(seed=4)
    net = tiny_net(seed=1)
    labels = predicted(net, u)
    sweep = run_sweep(net, u, labels, tmp_path, native_per_unit=255.0)
    assert sweep.result.correct == reference(net, u, labels)
    assert sweep.native_per_unit == 255.0 and sweep.native_units == "gray levels of 255"
    ct = run_sweep(net, u, labels, tmp_path / "ct", native_per_unit=700.0, native_units="HU/2",
                   input_space=InputSpace(native_per_unit=1400, native_units="HU"))
    assert (ct.native_per_unit, ct.native_units) == (700.0, "HU/2")


def test_softmax_network_is_refused_before_any_attack(tmp_path):
    calls = []
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 2), nn.Softmax(dim=1))
    net.register_forward_hook(lambda *_: calls.append(1))
    with pytest.raises(ProbabilityOutputError, match="AttackSweep: the evaluator's network ends in Softmax"):
        run_sweep(net, unit_images(), torch.zeros(N, dtype=torch.long), tmp_path / "sweep")
    assert len(calls) == 4  # the evaluator's 3 batches, then one checking forward: no attack ran
    assert not (tmp_path / "sweep" / "attack_sweep.csv").exists()


def test_example_figure_shows_u(tmp_path, monkeypatch):
    import monai_adv.handlers.attack_sweep as module

    drawn = {}
    monkeypatch.setattr(module, "plot_adversarial_examples",
                        lambda images, adversarial, *args: drawn.update(images=images, adversarial=adversarial))
    u = unit_images(seed=5)
    net = tiny_net()
    run_sweep(net, zscore(u), predicted(OfU(net, zscore), u), tmp_path, input_space=ZScoreInputSpace(),
              n_examples=2, example_eps=0.1)
    torch.testing.assert_close(torch.from_numpy(drawn["images"]), u[:2], rtol=0, atol=1e-6)
    for adv in drawn["adversarial"].values():
        assert adv.min() >= 0 and adv.max() <= 1
        assert 0 < abs(adv - drawn["images"]).max() <= 0.1 + 1e-6


def test_the_example_figure_draws_volumes_by_their_middle_slice(tmp_path):
    """3-D bundles: Figure 1 of (N, C, D, H, W) volumes used to fail in imshow."""
    import numpy as np

    from monai_adv.reports import plot_adversarial_examples

    clean = np.random.default_rng(0).random((2, 1, 6, 8, 8))
    probabilities = {"clean": np.array([[0.9, 0.1], [0.2, 0.8]]), "PGD": np.array([[0.4, 0.6], [0.7, 0.3]])}
    path = plot_adversarial_examples(clean, {"PGD": clean * 0.99}, probabilities, [0, 1], ["a", "b"], 0.004,
                                     tmp_path / "examples.png")
    assert path.is_file() and path.stat().st_size > 1000


def test_an_images_example_is_seeded_by_its_id_whatever_else_is_in_the_figure(tmp_path):
    """Regression: the example figure's PGD drew its random start from the global RNG, so an image's example changed
    with the images beside it (and with whatever ran before). Now each image's start is keyed by its id, with the
    stream of the sweep at that eps."""
    net = tiny_net()
    u = unit_images()
    labels = torch.arange(N) % 2
    sweep = AttackSweep({"PGD": partial(PGD, steps=3)}, GRID, str(tmp_path), ["a", "b"], example_eps=0.1)
    _, pair, _ = sweep.example_attacks(net, ["case-00", "case-01"], u[:2], labels[:2])
    torch.manual_seed(123)  # the global RNG must not matter
    _, alone, _ = sweep.example_attacks(net, ["case-01"], u[1:2], labels[1:2])
    assert torch.equal(torch.from_numpy(pair["PGD"][1:]), torch.from_numpy(alone["PGD"]))
    direct = PGD(net, 0.1, steps=3, sample_seeds=[mix_seed(0, key_of("case-01"), key_of("PGD@0.1"))])
    assert torch.equal(direct(u[1:2], labels[1:2]), torch.from_numpy(alone["PGD"]))
    _, renamed, _ = sweep.example_attacks(net, ["case-99"], u[1:2], labels[1:2])
    assert not torch.equal(torch.from_numpy(renamed["PGD"]), torch.from_numpy(alone["PGD"]))
