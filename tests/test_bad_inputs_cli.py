"""Bad inputs through ``python -m monai.bundle run`` for the stages after training: each run stops with one error that
names the checkpoint file or the data-list item, and writes no result. Training's bad data list is in
test_bundles.py; every kind of bad input is tested at library level in test_data_inputs.py and test_checkpoints.py."""

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from queue import Queue

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from monai_adv.bundle_errors import excepthook
from monai_adv.io import DataError
from monai_adv.networks import PaperVGG16
from monai_adv.overlays import overlay_files
from preloaded_python import PreloadedPython

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = "lung_nodule_ct_classification"
CLASSES = ["benign", "malignant"]


def configs(*names: str) -> str:
    """The bundle's configs ``names``, where ``@<overlay>`` stands for monai_adv's overlay files followed by the
    bundle's adversarial.json; demo.json last."""
    files = []
    for n in (*names, "demo"):
        if n.startswith("@"):
            files += [*map(str, overlay_files(n[1:])), str(ROOT / "bundles" / BUNDLE / "configs" / "adversarial.json")]
        else:
            files.append(str(ROOT / "bundles" / BUNDLE / "configs" / f"{n}.json"))
    return str(files)


def demo_net(**kwargs) -> PaperVGG16:
    """The network demo.json builds (32 x 32, width 1/8, two classes, its BatchNorm setting), with ``kwargs``
    changed."""
    demo = json.loads((ROOT / "bundles" / BUNDLE / "configs" / "demo.json").read_text())
    return PaperVGG16(**{"in_channels": 1, "num_classes": 2, "input_size": 32, "width": 0.125,
                         "batch_norm": demo.get("network_batch_norm", False), **kwargs})


class Payload:
    """Unpickling it would create the folder ``marker``: a stand-in for arbitrary code in a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def build_inputs(root: Path) -> dict[str, Path]:
    """Images (2-D HU crops, a 3-D volume, an RGB PNG), data lists and checkpoints under ``root``."""
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    items = []
    for k in range(12):
        crop = (-800 + 30 * rng.standard_normal((16, 16))).astype(np.float32)
        nib.save(nib.Nifti1Image(crop, np.eye(4)), images / f"crop{k}.nii.gz")
        items.append({"id": f"crop{k}", "image": f"images/crop{k}.nii.gz", "label": k % 2, "patient_id": f"p{k}"})
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 8), np.float32), np.eye(4)), images / "volume.nii.gz")
    (root / "rgb").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8), "RGB").save(root / "rgb" / "photo.png")

    def datalist(name: str, test: list) -> Path:
        path = root / name
        path.write_text(json.dumps({"classes": CLASSES, "native_units": "HU", "training": items[:10], "test": test}))
        return path

    volume = "images/volume.nii.gz"
    files = {
        "good": datalist("good.json", items[10:]),
        "bad_label": datalist("bad_label.json", [*items[10:], {**items[0], "id": "nodule-label-7", "label": 7}]),
        "empty": datalist("empty.json", []),
        "volume": datalist("volume.json", [items[10], {**items[0], "id": "volume-3d", "image": volume}]),
        "rgb_folder": root / "rgb",
        "good_ckpt": root / "good.pt",
        "wide_ckpt": root / "wide.pt",
        "classes3_ckpt": root / "classes3.pt",
        "pickle_ckpt": root / "pickled.pt",
        "marker": root / "code_ran",
        "missing_ckpt": root / "no_such_model.pt",
    }
    identity = {"bundle": BUNDLE, "network": "monai_adv.networks.PaperVGG16", "class_names": CLASSES}
    for name, net in (("good_ckpt", demo_net()), ("wide_ckpt", demo_net(width=0.25)),
                      ("classes3_ckpt", demo_net(num_classes=3))):
        torch.save({"model": net.state_dict(), "identity": identity}, files[name])  # as the bundles save them
    torch.save({**demo_net().state_dict(), "extra": Payload(files["marker"])}, files["pickle_ckpt"])
    return files


# case: (configs, arguments from the inputs, text the error must show, a file the stage must not have written)
CASES = {
    "evaluate_wide_checkpoint": (
        ("train", "evaluate"), {"datalist_file": "good", "ckpt_path": "wide_ckpt"},
        ["monai_adv.checkpoints.CheckpointError: {wide_ckpt}: checkpoint of another architecture",
         "features.0.weight (16, 1, 3, 3) in the file, (8, 1, 3, 3) in the network"],
        "metrics.json",
    ),
    "adversarial_train_other_classes": (
        ("train", "@adversarial_train"), {"datalist_file": "good", "adv_init_ckpt": "classes3_ckpt", "max_epochs": "1"},
        ["monai_adv.checkpoints.CheckpointError: {classes3_ckpt}: checkpoint of another architecture",
         "classifier.7.weight (3, 128) in the file, (2, 128) in the network"],
        "models/model_adversarial.pt",
    ),
    "inference_pickled_checkpoint": (
        ("inference",), {"datalist_file": "good", "ckpt_path": "pickle_ckpt"},
        ["monai_adv.checkpoints.CheckpointError: {pickle_ckpt}: not a weights-only PyTorch checkpoint: it holds a "
         "pickled Python object"],
        "predictions.csv",
    ),
    "compare_missing_checkpoint": (
        ("train", "evaluate", "@compare"), {"datalist_file": "good", "ckpt_path": "missing_ckpt"},
        ["monai_adv.checkpoints.CheckpointError: {missing_ckpt}: checkpoint file not found"],
        "robustness_comparison.csv",
    ),
    "attack_unknown_label": (
        ("train", "evaluate", "@attack_sweep"), {"datalist_file": "bad_label", "ckpt_path": "good_ckpt"},
        ["monai_adv.io.DataError: {bad_label}: 1 problem(s) found before any work started",
         "[test] nodule-label-7: label 7 is outside the classes 0..1"],
        "attack_sweep.csv",
    ),
    "inference_empty_data_list": (
        ("inference",), {"datalist_file": "empty", "ckpt_path": "good_ckpt"},
        ["monai_adv.io.DataError: {empty}: 1 problem(s)", "[test] section is empty"],
        "predictions.csv",
    ),
    "triage_volume_for_2d_bundle": (
        ("train", "evaluate", "@triage"), {"datalist_file": "volume", "ckpt_path": "good_ckpt"},
        ["monai_adv.io.DataError: {volume}: 1 problem(s)",
         "[test] volume-3d (", "volume.nii.gz): expected a 2-D image, got array shape (16, 16, 8)"],
        "sensitivity.csv",
    ),
    "inference_rgb_for_gray_bundle": (
        ("inference",), {"input_path": "rgb_folder", "ckpt_path": "good_ckpt"},
        ["monai_adv.io.DataError: {rgb_folder}: 1 of 1 image file(s) cannot be used",
         "photo (", "photo.png): expected 1 channel(s), got 3"],
        "predictions.csv",
    ),
}


def run_case(name: str, files: dict[str, Path], out: Path, servers: Queue) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run`` for the case, in its own process forked from a free one of ``servers`` (torch and
    MONAI imported already: about 6 s saved per run)."""
    names, arguments, _, _ = CASES[name]
    args = ["run", "--config_file", configs(*names), "--output_dir", str(out)]
    args += ["--bundle_root", str(ROOT / "bundles" / BUNDLE)]  # run from the repository root
    args += ["--dataset_dir", str(files["good"].parent)]  # the data lists' folder, over the demo overlay's
    for key, value in arguments.items():
        args += [f"--{key}", str(files.get(value, value))]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    server = servers.get()
    try:
        return server.run("monai.bundle", args, env=env, cwd=ROOT, timeout=300)
    finally:
        servers.put(server)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every case run once, two at a time: ``{case: (inputs, output_dir, CompletedProcess)}``."""
    root = tmp_path_factory.mktemp("bad_inputs")
    files = build_inputs(root)
    servers: Queue = Queue()
    for _ in range(2):
        servers.put(PreloadedPython())
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {name: pool.submit(run_case, name, files, root / f"out_{name}", servers) for name in CASES}
            return {name: (files, root / f"out_{name}", future.result()) for name, future in futures.items()}
    finally:
        while not servers.empty():
            servers.get().close()


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_stops_the_stage_with_the_item_named(case, runs):
    files, out, result = runs[case]
    _, _, expected, not_written = CASES[case]
    assert result.returncode != 0, result.stdout[-2000:]
    # the error is printed again last, after MONAI's "Failed to evaluate ConfigExpression" traceback; a message
    # listing several problems spans several lines
    last = result.stderr.rstrip()
    last = last[last.rindex("\nmonai_adv.") + 1:]
    assert "Traceback" not in last and "ConfigExpression" not in last
    for text in expected:
        text = text.format(**{k: v for k, v in files.items()})
        assert text in last, f"{text!r} not in the final error of:\n{result.stderr[-4000:]}"
    assert "Traceback" in result.stderr and not (out / not_written).exists()
    assert not files["marker"].exists()  # the pickled payload never ran


def test_excepthook_repeats_only_a_wrapped_bad_input_error_last(capsys):
    printed = []

    def previous(exc_type, exc, tb):
        printed.append(exc)

    try:
        try:
            raise DataError("nodule-3 (/data/x.dcm): image file not found")
        except DataError as e:
            raise RuntimeError("Failed to evaluate ConfigExpression") from e
    except RuntimeError as wrapped:
        excepthook(RuntimeError, wrapped, wrapped.__traceback__, previous=previous)
        assert printed == [wrapped]  # the full traceback is still printed first
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "monai_adv.io.DataError: nodule-3 (/data/x.dcm): image file not found"
    )
    plain = RuntimeError("unrelated")
    excepthook(RuntimeError, plain, None, previous=previous)
    excepthook(DataError, DataError("x"), None, previous=previous)  # unwrapped: printed once, by previous
    assert capsys.readouterr().err == "" and printed[1:] == [plain, printed[2]]
