"""Tests of monai_adv.handlers.RobustnessComparison in-process on a tiny MONAI evaluator."""

from __future__ import annotations

import csv
from functools import partial

import pytest
import torch
from ignite.metrics import Accuracy
from monai.engines import SupervisedEvaluator
from monai.handlers import from_engine
from monai.transforms import Activationsd, AsDiscreted, Compose
from monai.utils import set_determinism
from torch import nn
from torch.utils.data import DataLoader

from monai_adv.attacks import FGSM, PGD
from monai_adv.checkpoints import CheckpointError, ModelIdentity
from monai_adv.handlers import AttackSweep, RobustnessComparison, StrictCheckpointLoad
from monai_adv.input_space import InputSpace
from monai_adv.reports import write_robustness_comparison

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ATTACKS = {"FGSM": FGSM, "PGD": partial(PGD, steps=2)}
GRID = [0.05, 0.2]
SETTINGS = {"native_per_unit": 1400.0, "native_units": "HU", "large_eps": 0.5, "large_eps_samples": 2,
            "n_examples": 1}


def net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 4), nn.ReLU(), nn.Linear(4, 2))


def items() -> list[dict]:
    """Six images labelled with ``net(0)``'s predictions: the original model is right on all, ``net(1)`` is not."""
    images = torch.rand(6, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        labels = net(0)(images).argmax(1)
    assert 0 < int(labels.sum()) < 6
    return [{"image": images[i], "label": labels[i], "id": f"case-{i}"} for i in range(6)]


ITEMS = items()


def evaluator(network: nn.Module, handlers: list, items=ITEMS) -> SupervisedEvaluator:
    post = Compose([Activationsd(keys="pred", softmax=True),
                    AsDiscreted(keys=["pred", "label"], argmax=[True, False], to_onehot=[2, 2])])
    return SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=DataLoader(items, batch_size=4), network=network,
        postprocessing=post, key_val_metric={"acc": Accuracy(output_transform=from_engine(["pred", "label"]))},
        val_handlers=handlers,
    )


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    torch.save(net(0).state_dict(), folder / "model.pt")  # a bare state dict, as CheckpointSaver writes
    torch.save(net(1).state_dict(), folder / "model_adversarial.pt")
    return folder


def files(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_files_as_two_evaluators_with_two_sweeps(tmp_path, checkpoints):
    """The outputs of compare configs' old layout (two evaluators, two AttackSweeps, write_robustness_comparison),
    byte for byte: CSV, JSON and figures."""
    set_determinism(0)
    network = net(5)
    old = tmp_path / "old"
    sweeps = [AttackSweep(ATTACKS, GRID, str(old / "comparison" / m), ["a", "b"], **SETTINGS)
              for m in ("original", "adversarial")]
    for ckpt, sweep in zip(("model.pt", "model_adversarial.pt"), sweeps):
        evaluator(network, [StrictCheckpointLoad(checkpoints / ckpt, {"model": network}), sweep]).run()
    write_robustness_comparison({"original": sweeps[0].report, "adversarially trained": sweeps[1].report}, old,
                                1400.0, "HU")

    set_determinism(0)
    network = net(5)
    new = tmp_path / "new"
    comparison = RobustnessComparison(ATTACKS, GRID, str(new / "comparison"), ["a", "b"],
                                      checkpoints / "model_adversarial.pt", comparison_dir=str(new), **SETTINGS)
    evaluator(network, [StrictCheckpointLoad(checkpoints / "model.pt", {"model": network}), comparison]).run()
    old_files, new_files = files(old), files(new)
    assert sorted(new_files) == sorted(old_files) and len(new_files) == 10
    assert new_files == old_files
    set_determinism(None)


def test_rows_of_both_models_and_the_original_weights_restored(tmp_path, checkpoints):
    network = net(5)
    comparison = RobustnessComparison(ATTACKS, GRID, str(tmp_path), ["a", "b"], checkpoints / "model_adversarial.pt",
                                      large_eps=None, n_examples=0, input_space=InputSpace(native_per_unit=255))
    engine = evaluator(network, [StrictCheckpointLoad(checkpoints / "model.pt", {"model": network}), comparison])
    engine.run()
    assert engine.network is network
    original = torch.load(checkpoints / "model.pt")
    assert all(torch.equal(v, network.state_dict()[k]) for k, v in original.items())
    rows = list(csv.DictReader((tmp_path / "robustness_comparison.csv").open()))
    assert [r["model"] for r in rows] == ["original"] * 5 + ["adversarially trained"] * 5
    for model, folder in (("original", "original"), ("adversarially trained", "adversarial")):
        sweep_rows = list(csv.DictReader((tmp_path / folder / "attack_sweep.csv").open()))
        assert [{k: v for k, v in r.items() if k != "model"} for r in rows if r["model"] == model] == sweep_rows
    # native units from the input space; the two models differ
    assert {r["eps_native"] for r in rows if r["eps"] == "0.05"} == {"12.75"}
    assert [r["accuracy"] for r in rows[:5]] != [r["accuracy"] for r in rows[5:]]
    # each report's clean cross-check used that model's own clean accuracy
    for name, report in comparison.reports.items():
        assert report["checks"]["eps0_is_clean"]["passed"] is True, name
    assert comparison.reports["original"]["checks"]["eps0_is_clean"]["values"]["clean_accuracy"] == \
        engine.state.metrics["acc"]


def test_a_checkpoint_that_does_not_fit_stops_the_run_and_keeps_the_original_weights(tmp_path, checkpoints):
    wrong = tmp_path / "wrong.pt"
    torch.save(nn.Linear(3, 2).state_dict(), wrong)
    network = net(0)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    comparison = RobustnessComparison(ATTACKS, GRID, str(tmp_path), ["a", "b"], wrong, large_eps=None, n_examples=0)
    with pytest.raises(CheckpointError, match="wrong.pt"):
        evaluator(network, [comparison]).run()
    assert all(torch.equal(v, network.state_dict()[k]) for k, v in before.items())
    assert (tmp_path / "original" / "attack_sweep.csv").exists()
    assert not (tmp_path / "robustness_comparison.csv").exists()


def test_a_failure_after_loading_the_robust_weights_restores_the_original_ones(tmp_path, checkpoints):
    network = net(0)
    comparison = RobustnessComparison(ATTACKS, GRID, str(tmp_path), ["a", "b"], checkpoints / "model_adversarial.pt",
                                      large_eps=None, n_examples=0)
    loaded = []

    def fail(engine, clean_accuracy=None):
        loaded.append(torch.equal(engine.network[1].weight, net(1)[1].weight))
        raise RuntimeError("out of memory")

    comparison.sweeps["adversarial"].sweep = fail
    with pytest.raises(RuntimeError, match="out of memory"):
        evaluator(network, [comparison]).run()
    assert loaded == [True]
    assert all(torch.equal(v, network.state_dict()[k]) for k, v in net(0).state_dict().items())


def test_identity_is_checked(tmp_path, checkpoints):
    identity = ModelIdentity("lung", "torch.nn.Sequential", ["a", "b"])
    other = ModelIdentity("brain", "torch.nn.Sequential", ["a", "b"])
    torch.save({"model": net(1).state_dict(), "identity": other.state_dict()}, tmp_path / "robust.pt")
    comparison = RobustnessComparison(ATTACKS, GRID, str(tmp_path), ["a", "b"], tmp_path / "robust.pt",
                                      identity=identity, large_eps=None, n_examples=0)
    with pytest.raises(CheckpointError, match="brain"):
        evaluator(net(0), [comparison]).run()
    torch.save({"model": net(1).state_dict(), "identity": identity.state_dict()}, tmp_path / "robust.pt")
    evaluator(net(0), [comparison]).run()
    assert (tmp_path / "robustness_comparison.csv").exists()


def split_run(tmp_path, checkpoints, first_options=None, second_options=None, second_items=ITEMS, original="model.pt"):
    """An ``original_only`` run into ``tmp_path/first``, then a run reusing its report into ``tmp_path/split``;
    ``*_options`` replace the settings (``eps_grid`` too) of either run."""
    def comparison(folder, options, **kwargs):
        options = {**SETTINGS, **(options or {})}
        grid = options.pop("eps_grid", GRID)
        return RobustnessComparison(ATTACKS, grid, str(tmp_path / folder), ["a", "b"], **kwargs, **options)

    network = net(5)
    first = comparison("first", first_options, robust_ckpt_path=tmp_path / "absent.pt", original_only=True)
    evaluator(network, [StrictCheckpointLoad(checkpoints / "model.pt", {"model": network}), first]).run()
    second = comparison("split", second_options, robust_ckpt_path=checkpoints / "model_adversarial.pt",
                        original_report=tmp_path / "first" / "original" / "attack_sweep.json")
    network = net(5)
    evaluator(network, [StrictCheckpointLoad(checkpoints / original, {"model": network}), second], second_items).run()
    return network


def test_the_original_sweep_run_apart_and_reused_gives_the_files_of_one_run(tmp_path, checkpoints):
    """The study sweeps the original model while the robust one trains (``original_only``), then reuses that sweep
    (``original_report``): the same files, byte for byte, as one run that sweeps both."""
    network = net(5)
    one = RobustnessComparison(ATTACKS, GRID, str(tmp_path / "one"), ["a", "b"],
                               checkpoints / "model_adversarial.pt", **SETTINGS)
    evaluator(network, [StrictCheckpointLoad(checkpoints / "model.pt", {"model": network}), one]).run()

    network = split_run(tmp_path, checkpoints)
    first = files(tmp_path / "first")
    assert sorted(first) == ["original/adversarial_examples.png", "original/attack_sweep.csv",
                             "original/attack_sweep.json", "original/attack_sweep.png"]
    assert files(tmp_path / "split") == files(tmp_path / "one") and len(files(tmp_path / "one")) == 10
    assert all(torch.equal(v, network.state_dict()[k]) for k, v in net(0).state_dict().items())


@pytest.mark.parametrize(
    "case, match",
    [
        ({"second_options": {"eps_grid": [0.05, 0.1]}}, r"other settings.*eps_grid \[0\.0, 0\.05, 0\.2\] there"),
        ({"first_options": {"seed": 3}}, r"other settings.*seed 3 there, 0 here"),
        ({"original": "model_adversarial.pt"}, "sweep of other weights"),
        ({"second_items": ITEMS[:5]}, r"swept other items than the evaluator's data \(6 there, 5 here"),
    ],
    ids=["eps grid", "seed", "weights", "items"],
)
def test_a_reused_original_sweep_must_match_settings_weights_and_items(tmp_path, checkpoints, case, match):
    """Reusing a sweep of other settings, weights or data would compare the robust model with the wrong baseline:
    refused, naming what differs; no comparison is written."""
    with pytest.raises(ValueError, match=match):
        split_run(tmp_path, checkpoints, **case)
    assert not (tmp_path / "split" / "robustness_comparison.csv").exists()


def test_original_report_and_reuse_sweep_together_are_refused(tmp_path):
    with pytest.raises(ValueError, match="give one of them"):
        RobustnessComparison(ATTACKS, GRID, str(tmp_path), ["a", "b"], tmp_path / "robust.pt",
                             original_report=tmp_path / "a.json", reuse_sweep=tmp_path / "b.json")
    with pytest.raises(ValueError, match="original_only must be True or False, got 'false'"):
        RobustnessComparison(ATTACKS, GRID, str(tmp_path), ["a", "b"], tmp_path / "robust.pt", original_only="false")


@pytest.mark.parametrize("attack_grid, reused", [(GRID, True), ([0.05], False)], ids=["same grid", "other grid"])
def test_a_matching_attack_sweep_is_reused_and_another_is_swept_again(tmp_path, checkpoints, caplog, attack_grid,
                                                                      reused):
    """The study offers the attack stage's sweep (``reuse_sweep``) to the comparison's sweep of the original model:
    taken when it is the same sweep (the controls' comparison grid adds no eps), swept again otherwise; either way
    the files equal one run's."""
    network = net(5)
    one = RobustnessComparison(ATTACKS, GRID, str(tmp_path / "one"), ["a", "b"],
                               checkpoints / "model_adversarial.pt", **SETTINGS)
    evaluator(network, [StrictCheckpointLoad(checkpoints / "model.pt", {"model": network}), one]).run()

    network = net(5)
    attack = AttackSweep(ATTACKS, attack_grid, str(tmp_path / "attack"), ["a", "b"], **SETTINGS)
    evaluator(network, [StrictCheckpointLoad(checkpoints / "model.pt", {"model": network}), attack]).run()
    (tmp_path / "attack" / "attack.log").write_text("not part of the sweep")
    network = net(5)
    original = RobustnessComparison(ATTACKS, GRID, str(tmp_path / "first"), ["a", "b"], tmp_path / "absent.pt",
                                    original_only=True, reuse_sweep=tmp_path / "attack" / "attack_sweep.json",
                                    **SETTINGS)
    caplog.set_level("INFO")
    evaluator(network, [StrictCheckpointLoad(checkpoints / "model.pt", {"model": network}), original]).run()
    assert ("sweep taken from" in caplog.text) is reused
    assert ("swept again: RobustnessComparison" in caplog.text and "eps_grid" in caplog.text) is not reused
    assert files(tmp_path / "first") == {f"original/{k}": v for k, v in files(tmp_path / "one" / "original").items()}


def test_a_missing_reuse_sweep_means_the_original_weights_are_swept(tmp_path, checkpoints):
    network = net(5)
    comparison = RobustnessComparison(ATTACKS, GRID, str(tmp_path), ["a", "b"], tmp_path / "absent.pt",
                                      original_only=True, reuse_sweep=tmp_path / "nothing.json", **SETTINGS)
    evaluator(network, [StrictCheckpointLoad(checkpoints / "model.pt", {"model": network}), comparison]).run()
    assert sorted(files(tmp_path)) == ["original/adversarial_examples.png", "original/attack_sweep.csv",
                                       "original/attack_sweep.json", "original/attack_sweep.png"]
