"""The package overlays: where to find them, which ids they read from a bundle, and their guards."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from monai_adv.overlays import OVERLAYS, OverlayError, check_clean_model_kept, overlay_argument, overlay_files

# the model zoo's ids an overlay may read from a bundle (issue #11); anything else must be defined by the overlays
ZOO_IDS = {
    "network", "network_def", "device", "num_classes", "bundle_root", "output_dir", "ckpt_path", "dataset_dir",
    "validate#evaluator", "validate#preprocessing", "validate#handlers", "train#trainer", "train#handlers",
    "evaluator", "preprocessing",
}
REFERENCE = re.compile(r"@([A-Za-z_][\w#]*)")


def _flat_keys(config: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in config.items():
        key = key.lstrip("+")
        keys.add(prefix + key)
        if isinstance(value, dict):
            keys |= _flat_keys(value, prefix + key + "#")
    return keys


def test_cli_prints_existing_files_in_merge_order() -> None:
    out = subprocess.run([sys.executable, "-m", "monai_adv", "overlay", "attack_sweep"], capture_output=True,
                         text=True, check=True).stdout.strip()
    files = [Path(p) for p in json.loads(out)]
    assert [f.name for f in files] == ["common.json", "attack_sweep.json"]
    assert all(f.is_absolute() and f.is_file() for f in files)
    assert out == overlay_argument("attack_sweep")


def test_cli_puts_the_bundle_configs_first_and_settings_last(tmp_path: Path) -> None:
    train, settings = tmp_path / "train.yaml", tmp_path / "mine.json"
    train.write_text("{}")
    settings.write_text("{}")
    command = [sys.executable, "-m", "monai_adv", "overlay", "triage", str(train), "--then", str(settings)]
    files = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    assert files[0] == str(train) and files[-1] == str(settings)
    assert [Path(f).name for f in files[1:-1]] == ["common.json", "triage.json"]
    missing = subprocess.run(command[:5] + [str(tmp_path / "evaluate.yaml")], capture_output=True, text=True)
    assert missing.returncode == 2 and "no such bundle config: " in missing.stderr and "evaluate.yaml" in missing.stderr


def test_cli_lists_overlays_and_refuses_an_unknown_name() -> None:
    listing = subprocess.run([sys.executable, "-m", "monai_adv", "overlay"], capture_output=True, text=True,
                             check=True).stdout
    assert [line.split()[0] for line in listing.splitlines()] == list(OVERLAYS)
    bad = subprocess.run([sys.executable, "-m", "monai_adv", "overlay", "sweep"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "no overlay 'sweep'; choose one of attack_sweep" in bad.stderr


@pytest.mark.parametrize("name", list(OVERLAYS))
def test_overlays_read_only_zoo_ids_or_their_own(name: str) -> None:
    defined: set[str] = set()
    referenced: set[str] = set()
    for path in overlay_files(name):
        config = json.loads(path.read_text())
        defined |= _flat_keys(config)
        referenced |= set(REFERENCE.findall(path.read_text()))
    foreign = {ref for ref in referenced if ref not in defined and ref not in ZOO_IDS}
    assert not foreign, f"{name} reads ids that are neither zoo conventions nor its own: {sorted(foreign)}"


def test_adversarial_training_never_overwrites_the_clean_model(tmp_path: Path) -> None:
    from ignite.engine import Engine
    from monai.handlers import CheckpointSaver
    from torch import nn

    clean, robust = tmp_path / "models" / "model.pt", tmp_path / "models" / "model_adversarial.pt"
    net = nn.Linear(2, 2)

    def engine_saving_to(filename: str) -> Engine:
        engine = Engine(lambda e, b: None)
        CheckpointSaver(str(clean.parent), {"model": net}, save_key_metric=True, key_metric_filename=filename,
                        key_metric_name="acc").attach(engine)
        return engine

    check_clean_model_kept(str(clean), str(robust), [engine_saving_to(robust.name), Engine(lambda e, b: None)])
    with pytest.raises(OverlayError, match="CheckpointSaver of the bundle's Engine saves to .*model.pt.*@ckpt_path"):
        check_clean_model_kept(str(clean), str(robust), [engine_saving_to("model.pt")])
    with pytest.raises(OverlayError, match="set robust_ckpt_path to another file"):
        check_clean_model_kept(str(clean), str(clean), [])
