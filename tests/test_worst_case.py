"""The worst case of a sweep (``attack_sweep(..., ensemble=...)``): below every attack, reusing the nested balls,
independent of batching, and the check that names gradient masking when the black-box attack breaks what the
gradient attacks could not."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch

from monai_adv.attacks import APGD, APGDT, BIM, FGSM, PGD, Square, worst_case_ensemble
from monai_adv.attacks.seeding import key_of
from monai_adv.sweep import WORST_CASE, attack_sweep, sweep_checks
from test_apgd import correct_labels, data, tiny_cnn
from test_square import Quantised

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]

ATTACKS = {"FGSM": FGSM, "BIM": partial(BIM, steps=5), "PGD": partial(PGD, steps=5)}
ENSEMBLE = {"APGD-CE": partial(APGD, steps=10), "APGD-margin": partial(APGD, steps=10, loss="margin"),
            "Square": partial(Square, queries=100)}
GRID = [0.05, 0.1, 0.13, 0.2]


def keys(n: int) -> list[int]:
    return [key_of(f"case-{i}") for i in range(n)]


def test_worst_case_is_below_every_attack_and_attacks_only_survivors():
    model = tiny_cnn()
    x = data(32)
    y = correct_labels(model, x)
    result = attack_sweep(model, x, y, ATTACKS, GRID, keys=keys(32), ensemble=ENSEMBLE)
    worst = result.per_sample[WORST_CASE]
    for name in ATTACKS:
        assert bool((worst <= result.per_sample[name]).all())
        assert all(w <= a for w, a in zip(result.correct[WORST_CASE], result.correct[name]))
    assert result.correct[WORST_CASE] == sorted(result.correct[WORST_CASE], reverse=True)  # nested balls
    # images broken by an ensemble attack were correct under every sweep attack at that eps and all smaller ones
    robust = torch.stack([result.per_sample[a] for a in ATTACKS]).all(0)
    for name, flags in result.ensemble_flags.items():
        assert bool((~flags | robust).all()), name
    gained = sum(flags.sum() for flags in result.ensemble_flags.values())
    assert int(robust.sum() - worst.sum()) == int(gained) > 0, "the ensemble must add breaks for this test to bite"
    # with reuse the ensemble attacks an image at most until it breaks: fewer than every survivor at every eps
    work = result.work[WORST_CASE]
    assert work.samples_attacked < work.samples_attacked_no_reuse
    checks = sweep_checks(result, black_box="Square")
    assert checks["worst_case_le_each"].passed is True
    assert checks["monotone"].passed is True


def test_worst_case_does_not_depend_on_the_batching():
    model = tiny_cnn()
    x = data(24)
    y = correct_labels(model, x)
    k = keys(24)
    whole = attack_sweep(model, x, y, ATTACKS, GRID, keys=k, ensemble=ENSEMBLE)
    halves = sum(attack_sweep(model, x[s], y[s], ATTACKS, GRID, keys=k[s], ensemble=ENSEMBLE)
                 for s in (slice(0, 10), slice(10, 24)))
    assert halves.correct == whole.correct
    assert halves.ensemble_broken == whole.ensemble_broken


def test_the_black_box_attack_breaking_what_gradients_could_not_names_gradient_masking():
    masked = Quantised(tiny_cnn())
    x = data(24)
    y = correct_labels(masked, x)
    result = attack_sweep(masked, x, y, ATTACKS, [0.15], keys=keys(24), ensemble=ENSEMBLE)
    check = sweep_checks(result, black_box="Square")["black_box_ge_white_box"]
    assert check.passed is False and "gradient masking suspected" in check.message
    assert result.correct["PGD"][-1] - result.correct[WORST_CASE][-1] >= 10  # PGD alone overstates robustness
    honest = attack_sweep(masked.model, x, y, ATTACKS, [0.15], keys=keys(24), ensemble=ENSEMBLE)
    assert sweep_checks(honest, black_box="Square")["black_box_ge_white_box"].passed is True


def test_ensemble_names_must_not_clash_with_the_attacks():
    model = tiny_cnn()
    x = data(4)
    with pytest.raises(ValueError, match="need names of their own"):
        attack_sweep(model, x, correct_labels(model, x), ATTACKS, GRID, ensemble={"PGD": APGD})


def test_default_ensemble_runs_autoattacks_order_and_adds_apgdt_from_four_classes():
    two = worst_case_ensemble(2)
    assert list(two) == ["APGD-CE", "APGD-margin", "Square"]
    assert two["APGD-margin"].keywords == {"steps": 10, "loss": "margin"}
    assert two["Square"].keywords == {"queries": 1000}
    ten = worst_case_ensemble(10, apgd_steps=5, square_queries=300)
    assert list(ten) == ["APGD-CE", "APGD-margin", "APGD-T", "Square"]
    assert ten["APGD-T"].func is APGDT and ten["APGD-T"].keywords == {"steps": 5, "targets": 9}
    assert worst_case_ensemble(4)["APGD-T"].keywords["targets"] == 3
    assert worst_case_ensemble(10, apgdt_targets=3)["APGD-T"].keywords["targets"] == 3
    assert list(worst_case_ensemble(3, apgdt_targets=9)) == ["APGD-CE", "APGD-margin", "Square"]
    with pytest.raises(ValueError, match="apgdt_targets must be a positive integer, got 0"):
        worst_case_ensemble(10, apgdt_targets=0)
    assert "APGD-T" not in worst_case_ensemble(3)
    with pytest.raises(ValueError, match="square_queries must be a positive integer, got 0"):
        worst_case_ensemble(2, square_queries=0)


@pytest.mark.parametrize("profile, queries", [((), 1000), (("demo.json",), 100)])
def test_the_overlays_run_the_worst_case_by_default(profile, queries):
    """Every sweep of the overlays (attack_sweep, compare) completes the worst case unless ``ensemble`` is set to
    null; the CPU demo profile lowers Square's budget."""
    from monai.bundle import ConfigParser

    from monai_adv.overlays import overlay_files

    configs = ROOT / "bundles" / "lung_nodule_ct_classification" / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json"), *map(str, overlay_files("attack_sweep")),
                        str(configs / "adversarial.json"), *(str(configs / name) for name in profile)])
    parser["adv_class_names"] = ["benign", "malignant"]  # the bundle reads them from its data list
    ensemble = parser.get_parsed_content("ensemble")
    assert list(ensemble) == ["APGD-CE", "APGD-margin", "Square"]
    assert ensemble["Square"].keywords == {"queries": queries}
    assert parser["attack_sweep"]["ensemble"] == "@ensemble"


def test_the_study_report_names_the_gradient_masking_the_sweep_found(tmp_path):
    """The masked model through the AttackSweep handler on a tiny evaluator, then the study report built on its
    attack_sweep.json: the failed check and its verdict are printed beside Table 1."""
    from monai_adv.study.compare_datasets import compare_datasets
    from monai_adv.study.report import BundleReport, write_report
    from test_handler_attack_sweep import run_sweep
    from test_study_report import stage_outputs

    masked = Quantised(tiny_cnn(num_classes=2))
    x = data(24)
    folder = stage_outputs(tmp_path / "study" / "mine")
    run_sweep(masked, x, correct_labels(masked, x), folder / "attack", grid=[0.15], ensemble=ENSEMBLE,
              black_box="Square")
    sweep = json.loads((folder / "attack" / "attack_sweep.json").read_text())
    assert sweep["checks"]["black_box_ge_white_box"]["passed"] is False
    data_set = {"label": "data set `mine`", "short": "data set `mine`", "name": "mine"}
    bundle = BundleReport("mine", folder, data_set, {"class_names": ["a", "b"]}, True)
    compare_datasets({"mine": sweep["rows"]}, {"mine": True}, {"mine": None}, tmp_path / "study" / "compare_datasets")
    text = write_report(tmp_path / "study" / "report", [bundle], tmp_path / "study" / "compare_datasets").read_text()
    assert "Sweep sanity checks: FAILED: black_box_ge_white_box (" in text
    assert "gradient masking suspected" in text
