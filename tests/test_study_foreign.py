"""``run_study.py --bundle_root``: the whole study on a bundle that is not ours, as a user who downloaded it would run
it, from another folder, with its data in its own layout; and the clear errors before any work when the study cannot
run it as configured."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from foreign_data import BUILDERS, SPLITS
from monai_adv.study.cli import main
from monai_adv.study.setup import ForeignBundle, find_config, prepare_foreign_bundle

ROOT = Path(__file__).resolve().parents[1]
NAME = "ct_stripes_resnet_zscore_classification"  # JSON, ResNet-10, per-image z-score: no native units
BUNDLE_STAGES = ["train", "evaluate", "attack", "adversarial_train", "compare_original", "compare", "triage"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A copy of the foreign bundle (as a user downloads it) and its data folder beside it."""
    root = tmp_path_factory.mktemp("foreign_study")
    shutil.copytree(ROOT / "tests" / "foreign_bundles" / NAME, root / NAME)
    (root / "data").mkdir()
    BUILDERS[NAME](root / "data")
    return root / NAME


def tree_digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def study(bundle: Path, output: Path, *extra: str) -> subprocess.CompletedProcess:
    """``scripts/run_study.py --bundle_root`` in a subprocess started in the output's parent (not our checkout)."""
    command = [sys.executable, str(ROOT / "scripts" / "run_study.py"), "--bundle_root", str(bundle), "--dataset_dir",
               str(bundle.parent / "data"), "--output", str(output), "--threads", "1", "--set", "epochs=2",
               "--set", "square_queries=50", *extra]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(command, capture_output=True, text=True, cwd=output.parent, env=env, timeout=600)


def ran(result: subprocess.CompletedProcess) -> list[str]:
    """The stages the study ran (not skipped), from its progress lines."""
    return [line.split("]", 1)[1].split(":")[0].strip() for line in result.stdout.splitlines()
            if line.startswith("[") and ": done in " in line]


@pytest.mark.slow
def test_the_whole_study_on_another_bundle_writes_the_report_and_resumes(bundle, tmp_path):
    before = tree_digest(bundle)
    output = tmp_path / "theirs"
    first = study(bundle, output)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert ran(first) == BUNDLE_STAGES + ["compare_datasets", "report"]
    assert tree_digest(bundle) == before, "the study wrote into the user's bundle"
    folder = output / NAME

    # the sweep's clean pass is the bundle's own evaluation (MONAI's MetricsSaver: val_accuracy) of the same model
    own = (folder / "evaluate" / "metrics.csv").read_text().split()
    assert len(own) == 1 and own[0].startswith("val_accuracy,")
    sweep = list(csv.DictReader((folder / "attack" / "attack_sweep.csv").open()))
    assert sweep[0]["attack"] == "clean"
    assert float(sweep[0]["accuracy"]) == pytest.approx(float(own[0].split(",")[1]))
    assert {int(r["n"]) for r in sweep} == {SPLITS["testing"]}
    assert len(list(csv.DictReader((folder / "triage" / "sensitivity.csv").open()))) == SPLITS["testing"]
    models = {r["model"] for r in csv.DictReader((folder / "compare" / "robustness_comparison.csv").open())}
    assert models == {"original", "adversarially trained"}

    report = (output / "report" / "report.md").read_text()
    section = report[report.index(f"## {NAME}"):report.index('<a id="susceptibility">')]
    assert "the bundle's network `monai.networks.nets.resnet10`, trained by the bundle's own train config" in section
    assert "- **Classes** (`adv_class_names`: the bundle's metadata.json names, else the class indices, in label " \
           "order): 0 `plain`, 1 `stripes`." in section
    assert f"{100 * float(sweep[0]['accuracy']):.2f} % (n = {SPLITS['testing']}; the sweep's clean pass" in section
    for heading in ("### Table 1", "### Table S5", "### Table 2"):
        assert heading in section
    assert {r["attack"] for r in sweep} == {"clean", "FGSM", "BIM", "PGD", "worst case"}  # the ensemble is on
    assert section.count("PGD-10 overstates robustness by") == 2  # the sweep and the comparison
    assert "PaperVGG16" not in section and "20 % validation" not in section and "LIDC" not in section
    assert "--bundle_root <" + NAME + ">" in report and str(tmp_path) not in report
    for figure in ("figure1-adversarial-examples", "figure2-accuracy-vs-eps", "figure3-before-after", "triage"):
        assert (output / "report" / f"{NAME}-{figure}.png").is_file()

    again = study(bundle, output)
    assert again.returncode == 0 and ran(again) == [], again.stdout[-2000:]
    assert f"(0 stages run, {len(BUNDLE_STAGES) + 2} skipped)" in again.stdout

    # the same model given as a trained checkpoint: only the train stage (which adopts it) and the report run again
    model = tmp_path / "model.pt"
    shutil.copyfile(folder / "train" / "models" / "model.pt", model)
    adopted = study(bundle, output, "--checkpoint", str(model))
    assert adopted.returncode == 0, adopted.stdout[-3000:] + adopted.stderr[-3000:]
    assert ran(adopted) == ["train", "report"]
    assert "instead of training" in (folder / "train" / "train.log").read_text()
    assert "a trained model given with `--checkpoint`" in (output / "report" / "report.md").read_text()


def run_main(capsys, *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_an_engine_id_the_bundle_lacks_stops_the_study_before_any_stage(bundle, tmp_path, capsys):
    output = tmp_path / "out"
    code, text = run_main(capsys, "--bundle_root", str(bundle), "--dataset_dir", str(bundle.parent / "data"),
                          "--output", str(output), "--set", "adv_evaluator=@evaluator")
    assert code == 1
    assert "adv_evaluator refers to @evaluator, which is not an id of the bundle" in text
    assert "--set adv_evaluator=@<id>" in text and "stages attack (train.json + evaluate.json" in text
    assert not output.exists()


def test_a_bundle_without_ckpt_path_is_refused_by_name(bundle, tmp_path, capsys):
    copy = tmp_path / NAME
    shutil.copytree(bundle, copy)
    train = json.loads((copy / "configs" / "train.json").read_text())
    del train["ckpt_path"]
    (copy / "configs" / "train.json").write_text(json.dumps(train))
    code, text = run_main(capsys, "--bundle_root", str(copy), "--dataset_dir", str(bundle.parent / "data"),
                          "--output", str(tmp_path / "out"))
    assert code == 1 and "no id 'ckpt_path'" in text and "stages train (train.json)" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--train_config", "training"], "--train_config: no config 'training' in"),
        (["--evaluate_config", "test.yaml"], "--evaluate_config: no config 'test.yaml' in"),
        (["--checkpoint", "missing.pt"], "--checkpoint missing.pt: no such file"),
        (["--profile", "demo"], "--profile demo: profiles are monai-adv's bundles'"),
    ],
)
def test_a_missing_setting_of_another_bundle_is_named(bundle, tmp_path, capsys, argv, message):
    code, text = run_main(capsys, "--bundle_root", str(bundle), "--dataset_dir", str(bundle.parent / "data"),
                          "--output", str(tmp_path / "out"), *argv)
    assert code == 1 and message in text, text
    assert not (tmp_path / "out").exists()


def test_options_of_another_bundle_need_bundle_root(bundle, tmp_path, capsys):
    code, text = run_main(capsys, "--train_config", "train", "--output", str(tmp_path / "out"))
    assert code == 2 and "--train_config is for another bundle: give its folder with --bundle_root" in text
    code, text = run_main(capsys, "--bundle_root", str(bundle), "--bundles", "all", "--output", str(tmp_path / "out"))
    assert code == 2 and "--bundle_root studies one bundle: leave out --bundles" in text
    assert not (tmp_path / "out").exists()


def test_the_bundles_own_data_folder_must_exist_without_dataset_dir(bundle):
    with pytest.raises(FileNotFoundError, match=r"dataset_dir \(/workspace/data/ct_stripes\) is not a folder here: "
                                                r"pass --dataset_dir"):
        prepare_foreign_bundle(ForeignBundle(bundle))


def test_config_names_find_json_or_yaml_and_refuse_two(tmp_path):
    (tmp_path / "train.yaml").write_text("a: 1\n")
    assert find_config(tmp_path, "train", "--train_config") == tmp_path / "train.yaml"
    (tmp_path / "train.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="--train_config: both train.json and train.yaml"):
        find_config(tmp_path, "train", "--train_config")
    assert find_config(tmp_path, "train.json", "--train_config") == tmp_path / "train.json"
    assert find_config(tmp_path, "adversarial", "settings", required=False) is None


def test_the_foreign_data_folder_is_fingerprinted_by_content(bundle, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(bundle.parent / "data", data)
    setup = prepare_foreign_bundle(ForeignBundle(bundle), data)
    assert setup.data_overrides() == {"bundle_root": str(bundle.resolve()), "dataset_dir": str(data.resolve())}
    image = next((data / "images").iterdir())
    image.write_bytes(image.read_bytes() + b"\0")
    assert prepare_foreign_bundle(ForeignBundle(bundle), data).data_digest != setup.data_digest


def test_a_setting_of_one_stage_leaves_the_training_of_another_bundle_alone(bundle):
    """Regression: every --set value, and any change to monai_adv's code, was in the fingerprint of every stage, so
    changing the triage's eps range trained the user's model again."""
    from monai_adv.study.stages import BUNDLE_STAGES

    stages = {s.name: s for s in BUNDLE_STAGES}
    overrides = {"*": {"triage_eps_max": 0.008, "epochs": 3, "cap": 5, "adv_steps": "@cap"}}
    setup = prepare_foreign_bundle(ForeignBundle(bundle), bundle.parent / "data", overrides)
    names = {"adv_class_names": ["plain", "stripes"]}  # from the bundle's metadata.json, for the overlays
    assert setup.overrides_read_by(stages["train"]) == {"epochs": 3}
    assert setup.overrides_read_by(stages["triage"]) == {"triage_eps_max": 0.008, "epochs": 3, **names}
    # an id the configs do not know counts where another value refers to it
    assert setup.overrides_read_by(stages["adversarial_train"]) == {"epochs": 3, "adv_steps": "@cap", "cap": 5,
                                                                    **names}
    assert not setup.runs_package_code(stages["train"]) and not setup.runs_package_code(stages["evaluate"])
    assert setup.runs_package_code(stages["triage"])


def test_a_checkpoint_of_another_network_stops_the_study_before_any_stage(bundle, tmp_path, capsys):
    """Regression: --checkpoint with another bundle's model was adopted as the trained model, and the evaluation
    failed with MONAI's expression wrapper in the message (the state-dict mismatch deep in its log)."""
    from monai.networks.nets import DenseNet121

    other = tmp_path / "densenet.pt"
    torch.save(DenseNet121(spatial_dims=2, in_channels=1, out_channels=2).state_dict(), other)
    code, text = run_main(capsys, "--bundle_root", str(bundle), "--dataset_dir", str(bundle.parent / "data"),
                          "--output", str(tmp_path / "out"), "--checkpoint", str(other))
    assert code == 1 and "--checkpoint does not fit this bundle's network" in text and "missing keys" in text
    assert not (tmp_path / "out").exists()


def test_a_failed_stage_names_the_error_that_caused_it(bundle, tmp_path, capsys):
    """Regression: with a data folder that exists but holds no data list, the study's message ended in MONAI's
    'Failed to evaluate ConfigExpression' wrapper; the cause was only deep in the stage's log."""
    empty = tmp_path / "empty"
    empty.mkdir()
    code, text = run_main(capsys, "--bundle_root", str(bundle), "--dataset_dir", str(empty), "--output",
                          str(tmp_path / "out"), "--threads", "1")
    assert code == 1 and "stage train failed" in text
    assert "raised in the run: FileNotFoundError: [Errno 2] No such file or directory" in text
    assert f"{empty}/datalist.json" in text.split("raised in the run:")[1]
