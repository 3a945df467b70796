"""The whole study in one command: the report, resuming after SIGKILL, redoing what changed, the susceptibility
comparison.

The end-to-end tests run ``scripts/run_study.py`` on a small demo data set with a few epochs (``FAST``): one run
straight through (A) and, side by side, one run killed twice with SIGKILL (in the middle of the attack sweep and in
the middle of adversarial training) and restarted (B). B must end with the same report as A.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monai_adv.study.compare_datasets import compare_datasets, paper_susceptibility
from monai_adv.study.ledger import Ledger, data_digest, fingerprint
from monai_adv.study.ownership import MANIFEST_NAME
from monai_adv.study.paper_figures import TABLE1, table1_rows
from monai_adv.study.setup import parse_override
from monai_adv.study.susceptibility import Susceptibility, susceptibility, susceptibility_ratio

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = "lung_nodule_ct_classification"
FAST = [
    "--profile", "demo", "--set", "max_epochs=4", "--set", "adversarial_train:max_epochs=4",
    "--set", "attack:eps_grid=[0.001,0.002,0.004]", "--set", "compare:eps_grid=[0.002,0.003]",
    "--set", "square_queries=10",  # the worst case runs (its rows are in the report) on a small black-box budget
]
PNG = b"\x89PNG\r\n\x1a\n"


def study_command(output: Path, data: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / "run_study.py"), "--output", str(output), "--dataset_dir",
            str(data), *FAST, *extra]


def start(output: Path, data: Path, *extra: str) -> subprocess.Popen:
    output.mkdir(parents=True, exist_ok=True)
    log = open(output.parent / f"{output.name}.log", "w")  # noqa: SIM115 - one log per start, closed with the process
    return subprocess.Popen(study_command(output, data, *extra), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))


def finish(process: subprocess.Popen, output: Path, timeout: float = 900) -> str:
    code = process.wait(timeout=timeout)
    text = (output.parent / f"{output.name}.log").read_text()
    assert code == 0, text[-4000:]
    return text


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the study ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def kill(process: subprocess.Popen, output: Path) -> None:
    """SIGKILL the study process alone (not its process group), then check that its bundle run died with it."""
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL

    def orphans() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if str(output).encode() in (entry / "cmdline").read_bytes():
                        found.append(int(entry.name))
                except OSError:
                    pass
        return found

    deadline = time.monotonic() + 20
    while orphans() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not orphans(), "a bundle run outlived the killed study"


def resume_epoch(output: Path, stage: str) -> int:
    try:
        return json.loads((output / BUNDLE / f".{stage}.partial" / "resume.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def stages(output: Path) -> dict:
    return Ledger(output / BUNDLE).stages


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    from monai_adv.demo import generate_demo_data

    folder = tmp_path_factory.mktemp("study_data")
    generate_demo_data("lung_nodule_ct", folder, seed=0, n_patients=30)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_data) -> dict:
    """Run A straight through with two stages at a time and, at the same time, run B one stage at a time, killed twice
    and restarted; return their outputs."""
    root = tmp_path_factory.mktemp("study")
    a, b = root / "A", root / "B"
    straight = start(a, small_data, "--jobs", "2")
    # B, kill 1: in the middle of the attack sweep (a stage that is redone from its start)
    process = start(b, small_data, "--jobs", "1")
    wait_for(lambda: (b / BUNDLE / ".attack.partial" / "attack.log").is_file(), process, "the attack stage")
    time.sleep(1.0)
    kill(process, b)
    killed_in_attack = dict(stages(b))
    # B, kill 2: in the middle of adversarial training, after it saved an epoch (it continues from there)
    process = start(b, small_data, "--jobs", "1")
    wait_for(lambda: resume_epoch(b, "adversarial_train") >= 1, process, "an adversarial-training epoch")
    kill(process, b)
    killed_in_training = dict(stages(b))
    resumable = resume_epoch(b, "adversarial_train")
    log_b = finish(start(b, small_data, "--jobs", "1"), b)
    log_a = finish(straight, a)
    return {"A": a, "B": b, "log_A": log_a, "log_B": log_b, "killed_in_attack": killed_in_attack,
            "killed_in_training": killed_in_training, "resumable_epoch": resumable, "data": small_data}


# end to end ---------------------------------------------------------------------------------------------------------

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL of a study and /proc are Linux's")


@linux_only
def test_killed_study_resumes_and_ends_with_the_same_report(runs):
    a, b = runs["A"], runs["B"]
    assert set(runs["killed_in_attack"]) == {"train", "evaluate"}
    assert set(runs["killed_in_training"]) == {"train", "evaluate", "attack"}
    final = stages(b)
    assert final["attack"]["run"] == 2  # redone after the kill
    assert final["train"]["run"] == 1 and final["evaluate"]["run"] == 1  # kept
    assert final["adversarial_train"]["run"] == 3
    assert final["adversarial_train"]["resumed_after_epoch"] == runs["resumable_epoch"] >= 1
    assert f"adversarial_train (adversarially train): resuming after epoch {runs['resumable_epoch']}" in runs["log_B"]
    assert not list((b / BUNDLE).glob(".*.partial")), "a partial stage folder was left behind"
    assert "[study] running up to 2 stages at a time" in runs["log_A"] and "at a time" not in runs["log_B"]
    # A's adversarial training (the longest chain) started beside the evaluation, before it ended
    log_a = runs["log_A"]
    assert log_a.index("adversarial_train (adversarially train): running") < log_a.index("evaluate: done")
    # the same outputs, byte for byte, and the same report, from stages run two at a time (A) and one at a time (B)
    for stage, entry in stages(a).items():
        for path, digest in entry["outputs"].items():
            if not path.endswith(".png"):
                assert final[stage]["outputs"][path] == digest, path
    assert (b / "report" / "report.md").read_text() == (a / "report" / "report.md").read_text()
    comparison = [list(csv.DictReader((x / BUNDLE / "compare" / "robustness_comparison.csv").open())) for x in (a, b)]
    assert comparison[0] == comparison[1]


@linux_only
def test_report_holds_every_table_and_figure_with_the_papers_figures(runs):
    report = runs["A"] / "report"
    text = (report / "report.md").read_text()
    for heading in ("### Table 1: accuracy under attack", "### Table S5 and Figure 3: before and after adversarial",
                    "### Table 2: triage by adversarial sensitivity", "## Susceptibility: medical against non-medical"):
        assert heading in text
    for label in ("paper (%), LIDC-IDRI lung nodules, Table 1", "paper (%), LIDC-IDRI lung nodules, Table S5",
                  "LIDC-IDRI lung nodules (Table 2)", "ours (%), demo data (synthetic)", "ours: confidence triage",
                  "eps, paper (Table 1)"):
        assert label in text, label
    # the paper's published values sit beside ours: Table 1 (PGD, 0.002), Table S5 (adversarially trained PGD),
    # Table 2 (retained accuracy)
    assert "| PGD | 0.002 | 2.8 |" in text and "| 26.92 |" in text
    assert "| 58.97 |" in text and "| 81.31 |" in text
    # our numbers come from our outputs: the clean accuracy of Table 1 is evaluate's
    metrics = json.loads((runs["A"] / BUNDLE / "evaluate" / "metrics.json").read_text())
    assert f"| no attack | 0 | 0 | {100 * metrics['accuracy']:.2f} | 75.41 |" in text
    figures = [line.split("](")[1].split(")")[0] for line in text.splitlines() if "![" in line]
    assert len(figures) == 5
    for name in figures:
        assert (report / name).read_bytes()[:8] == PNG, name
    assert sorted(p.name for p in report.iterdir()) == sorted(figures + ["report.md", MANIFEST_NAME])
    assert str(runs["A"]) not in text  # no output path: the same study gives the same report anywhere


@linux_only
def test_changed_inputs_redo_their_stages_and_the_rest_is_skipped(runs, tmp_path):
    c = tmp_path / "C"
    shutil.copytree(runs["B"], c)
    log = finish(start(c, runs["data"]), c)
    assert "(9 stages run" not in log and "report: " in log
    assert log.count("inputs unchanged: skipped") == 9, log
    # another adversarial-training learning rate: that stage runs again, and the comparison after it because the
    # robust checkpoint changed; nothing before it, nor the triage or the comparison of data sets
    before = stages(c)
    log = finish(start(c, runs["data"], "--set", "adversarial_train:learning_rate=0.001"), c)
    ran = {line.split("]")[1].split(":")[0].strip() for line in log.splitlines() if "done in" in line}
    assert ran == {"adversarial_train", "compare", "report"}, log
    after = stages(c)
    assert after["compare"]["inputs"] != before["compare"]["inputs"]
    assert after["adversarial_train"]["outputs"] != before["adversarial_train"]["outputs"]
    # an output edited by hand is not trusted: its stage runs again (and gives back the same file)
    metrics = c / BUNDLE / "evaluate" / "metrics.json"
    original = metrics.read_text()
    metrics.write_text(original.replace('"n"', '"n_edited"'))
    log = finish(start(c, runs["data"], "--set", "adversarial_train:learning_rate=0.001"), c)
    ran = {line.split("]")[1].split(":")[0].strip() for line in log.splitlines() if "done in" in line}
    assert ran == {"evaluate"}, log
    assert metrics.read_text() == original
    # a file of the user's in a folder the study would replace: it stops before running anything, naming it
    notes = c / BUNDLE / "compare" / "notes.txt"
    notes.write_text("mine")
    process = start(c, runs["data"], "--set", "adversarial_train:learning_rate=0.002")
    assert process.wait(timeout=300) == 1
    log = (c.parent / f"{c.name}.log").read_text()
    assert f"study stopped: {c} holds files the study did not write" in log and f"{BUNDLE}/compare/notes.txt" in log
    assert "running" not in log and notes.read_text() == "mine"


# units --------------------------------------------------------------------------------------------------------------


def rows(clean: float, pgd: dict[float, float]) -> list[dict]:
    return [{"attack": "clean", "eps": 0.0, "accuracy": clean}] + [
        {"attack": "PGD", "eps": e, "accuracy": a} for e, a in pgd.items()
    ] + [{"attack": "FGSM", "eps": e, "accuracy": 0.0} for e in pgd]


def test_susceptibility_is_the_first_grid_eps_below_half_of_clean():
    s = susceptibility("ct", rows(0.8, {0.004: 0.1, 0.001: 0.5, 0.002: 0.39}), medical=True)
    assert s.eps == 0.002 and s.accuracy_at_eps == 0.39 and s.reached and s.text() == "0.002"
    exactly_half = susceptibility("ct", rows(0.8, {0.001: 0.4, 0.002: 0.3}), medical=True)
    assert exactly_half.eps == 0.002  # "below half", not "at half"
    never = susceptibility("mnist", rows(0.99, {0.01: 0.9, 0.3: 0.6}), medical=False)
    assert never.eps is None and never.bound == 0.3 and "not reached within the grid" in never.text()
    with pytest.raises(ValueError, match="ct: the sweep has no PGD rows"):
        susceptibility("ct", [{"attack": "clean", "eps": 0.0, "accuracy": 0.8}], medical=True)
    with pytest.raises(ValueError, match="ct: the sweep has no clean row"):
        susceptibility("ct", [{"attack": "PGD", "eps": 0.1, "accuracy": 0.8}], medical=True)


def test_susceptibility_ratio_and_its_bounds():
    def item(name, medical, eps, max_eps=0.3):
        return Susceptibility(name, medical, 0.9, eps, max_eps, None if eps is None else 0.1)

    exact = susceptibility_ratio([item("a", True, 0.002), item("b", True, 0.008), item("c", False, 0.04)])
    assert exact.relation == "=" and exact.value == pytest.approx(0.004 / 0.04)
    upper = susceptibility_ratio([item("a", True, 0.002), item("c", False, None, max_eps=0.05)])
    assert upper.relation == "<" and upper.value == pytest.approx(0.04) and upper.text() == "< 0.04"
    lower = susceptibility_ratio([item("a", True, None, max_eps=0.006), item("c", False, 0.06)])
    assert lower.relation == ">" and lower.value == pytest.approx(0.1)
    both = susceptibility_ratio([item("a", True, None), item("c", False, None)])
    assert both.value is None and "not determined" in both.text()
    alone = susceptibility_ratio([item("a", True, 0.002)])
    assert alone.value is None and "no non-medical model" in alone.reason


def test_the_papers_own_figures_give_its_conclusion():
    paper = paper_susceptibility()
    assert {c: paper["items"][c]["eps"] for c in ("CT", "Mammogram", "MRI")} == {"CT": 0.002, "Mammogram": 0.002,
                                                                                 "MRI": 0.002}
    assert not paper["items"]["MNIST"]["reached"] and not paper["items"]["CIFAR-10"]["reached"]
    assert paper["ratio_table1"]["relation"] == "<" and paper["ratio_table1"]["value"] == pytest.approx(0.002 / 0.006)
    assert paper["ratio_text_bounds"]["value"] == pytest.approx(0.002 / math.sqrt(0.07 * 0.01))
    assert table1_rows("CT")[0] == {"attack": "clean", "eps": 0.0, "accuracy": pytest.approx(0.7541)}
    assert len(TABLE1["MRI"]) == 13


def test_compare_datasets_writes_the_comparison(tmp_path):
    sweeps = {"ct": rows(0.9, {0.001: 0.6, 0.002: 0.3}), "mnist": rows(0.99, {0.1: 0.9, 0.3: 0.2})}
    result = compare_datasets(sweeps, {"ct": True, "mnist": False}, {"ct": "CT", "mnist": "MNIST"}, tmp_path)
    assert result["ratio"]["value"] == pytest.approx(0.002 / 0.3) and result["ratio"]["relation"] == "="
    assert json.loads((tmp_path / "susceptibility.json").read_text()) == result
    table = list(csv.DictReader((tmp_path / "susceptibility.csv").open()))
    assert [(r["bundle"], r["eps"], r["reached"]) for r in table] == [("ct", "0.002", "1"), ("mnist", "0.3", "1")]
    assert (tmp_path / "susceptibility.png").read_bytes()[:8] == PNG


def test_overrides_and_fingerprints():
    assert parse_override("max_epochs=3") == ("*", "max_epochs", 3)
    assert parse_override("adversarial_train:adv_eps=0.002") == ("adversarial_train", "adv_eps", 0.002)
    assert parse_override("eps_grid=[0.001, 0.004]") == ("*", "eps_grid", [0.001, 0.004])
    assert parse_override("device=cpu") == ("*", "device", "cpu")
    assert parse_override("validate::early_stop::patience=2") == ("*", "validate::early_stop::patience", 2)
    with pytest.raises(ValueError, match="unknown stage 'report'"):
        parse_override("report:max_epochs=3")
    with pytest.raises(ValueError, match="unknown stage 'trian'"):
        parse_override("trian:max_epochs=3")
    with pytest.raises(ValueError, match="the study sets 'ckpt_path' itself"):
        parse_override("ckpt_path=/x.pt")
    with pytest.raises(ValueError, match="the study sets 'adv_init_ckpt' itself"):  # the adversarial_train overlay's
        parse_override("adversarial_train:adv_init_ckpt=/x.pt")
    with pytest.raises(ValueError, match="expected"):
        parse_override("max_epochs")
    with pytest.raises(ValueError, match="runs with the compare stage's values; write compare:eps_grid="):
        parse_override("compare_original:eps_grid=[0.001]")
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1, "b": [1, 2]}) != fingerprint({"a": 2, "b": [1, 2]})


def test_stages_run_the_overlays_on_the_bundles_configs():
    """attack, adversarial_train, compare and triage are monai_adv's overlays on the bundle's train (+ evaluate)
    configs, then its adversarial.json, then demo.json (last, so its profile wins), then the resume configs; the
    adversarial training reads the clean model as adv_init_ckpt and writes robust_ckpt_path (where the overlay points
    ckpt_path), never ckpt_path itself."""
    from monai_adv.study.setup import prepare_bundle
    from monai_adv.study.stages import BUNDLE_STAGES

    setup = prepare_bundle(BUNDLE, ROOT / "bundles", "demo")
    names = {s.name: [f.name for f in setup.config_files(s)] for s in BUNDLE_STAGES}
    test_split = ["train.json", "evaluate.json", "common.json"]
    assert names["attack"] == [*test_split, "attack_sweep.json", "adversarial.json", "demo.json"]
    assert names["compare"] == [*test_split, "compare.json", "adversarial.json", "demo.json"]
    # the comparison's sweep of the original model: the compare stage's configs, run before adversarial training ends
    stages = {s.name: s for s in BUNDLE_STAGES}
    assert names["compare_original"] == names["compare"]
    assert stages["compare_original"].reads == {"ckpt_path": ("train", "models/model.pt"),
                                                 "compare#reuse_sweep": ("attack", "attack_sweep.json")}
    assert stages["compare"].reads["compare#original_report"] == ("compare_original", "original/attack_sweep.json")
    assert names["triage"] == [*test_split, "triage.json", "adversarial.json", "demo.json"]
    assert names["adversarial_train"] == ["train.json", "common.json", "adversarial_train.json", "adversarial.json",
                                          "demo.json", "resume_training.json", "resume_adversarial_training.json"]
    adversarial = {s.name: s for s in BUNDLE_STAGES}["adversarial_train"]
    assert set(adversarial.reads) == {"adv_init_ckpt"} and set(adversarial.writes) == {"robust_ckpt_path"}
    # the settings the report quotes come through the overlays: Table S4 in the demo profile, the comparison's grid;
    # the CT demo profile's own epochs for adversarial training (adv_max_epochs, read by the bundle's adversarial.json)
    # and its ratio (every image adversarial, as the paper's public code)
    assert setup.settings["adversarial"] == {"adv_eps": 0.003, "adv_attack": "pgd", "adv_ratio": 1.0, "adv_steps": 7,
                                             "max_epochs": 50}
    assert setup.settings["compare_eps_grid"] == [0.001, 0.002, 0.003, 0.004, 0.006]
    assert setup.settings["attack_eps_grid"] == [0.001, 0.002, 0.004, 0.006]


def test_the_original_models_comparison_sweep_gets_the_compare_stages_values():
    """compare_original must sweep with the compare stage's settings (else the compare stage refuses its sweep):
    it gets the --set values for every stage and the compare stage's, then original_only; the fingerprints follow."""
    from monai_adv.study.setup import prepare_bundle
    from monai_adv.study.stages import BUNDLE_STAGES

    overrides = {"*": {"adv_seed": 3}, "compare": {"eps_grid": [0.002]}, "attack": {"eps_grid": [0.006]}}
    setup = prepare_bundle(BUNDLE, ROOT / "bundles", "demo", overrides=overrides)
    stages = {s.name: s for s in BUNDLE_STAGES}
    assert setup.overrides_for("compare_original") == {"adv_seed": 3, "eps_grid": [0.002],
                                                        "compare#original_only": True}
    assert setup.overrides_for("compare") == {"adv_seed": 3, "eps_grid": [0.002]}
    assert setup.overrides_read_by(stages["compare_original"]) == setup.overrides_for("compare_original")
    assert setup.config_values("compare_original", ["compare#eps_grid"]) == {"compare#eps_grid": [0.002, 0.003]}


def test_data_digest_follows_the_images(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"one")
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [{"image": "images/a.png", "label": 0}]}))
    before = data_digest(tmp_path / "datalist.json")
    (tmp_path / "images" / "a.png").write_bytes(b"two")
    assert data_digest(tmp_path / "datalist.json") != before
    with pytest.raises(FileNotFoundError, match="data list not found"):
        data_digest(tmp_path / "nothing.json")


def test_resume_state_covers_every_random_transform():
    """The resume handler finds the random state of nested random transforms, and restoring them replays the
    same random draws."""
    import numpy as np
    import torch
    from monai.transforms import Compose, RandFlipd, RandRotated

    from monai_adv.handlers.resume import _numpy_state, _numpy_tuple, transform_random_states

    chain = Compose([RandFlipd(keys="image", prob=0.5), RandRotated(keys="image", range_x=0.3, prob=0.5)])
    chain.set_random_state(seed=3)
    states = transform_random_states(chain)
    assert len(states) == len({id(s) for s in states}) >= 3  # Compose, the flip, the rotation and its inner rotate
    saved = [_numpy_state(s.get_state()) for s in states]
    image = {"image": torch.rand(1, 8, 8)}
    first = [chain(dict(image))["image"] for _ in range(4)]
    for state, value in zip(states, saved):
        state.set_state(_numpy_tuple(value))
    again = [chain(dict(image))["image"] for _ in range(4)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


def test_a_damaged_resume_file_stops_with_its_path_named(tmp_path):
    from monai_adv.checkpoints import CheckpointError
    from monai_adv.handlers.resume import TrainingResume

    path = tmp_path / "resume.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="resume file .*resume.pt.*delete it to train from the start"):
        TrainingResume(path).load(engine=None)
