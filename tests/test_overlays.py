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
    files = [Path(p) for p in out.split(",")]
    assert [f.name for f in files] == ["common.json", "attack_sweep.json"]
    assert all(f.is_absolute() and f.is_file() for f in files)
    assert out == overlay_argument("attack_sweep")


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


class _Saver:
    def __init__(self, save_dir: str, key_metric_filename: str) -> None:
        self.save_dir, self.key_metric_filename = save_dir, key_metric_filename


def test_adversarial_training_never_overwrites_the_clean_model(tmp_path: Path) -> None:
    clean, robust = tmp_path / "models" / "model.pt", tmp_path / "models" / "model_adversarial.pt"
    check_clean_model_kept(str(clean), str(robust), [None, _Saver(str(clean.parent), robust.name)])
    with pytest.raises(OverlayError, match="_Saver in the bundle's handlers saves to .*model.pt.*@ckpt_path"):
        check_clean_model_kept(str(clean), str(robust), [_Saver(str(clean.parent), "model.pt")])
    with pytest.raises(OverlayError, match="set robust_ckpt_path to another file"):
        check_clean_model_kept(str(clean), str(clean), [])
