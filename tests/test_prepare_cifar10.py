import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from monai_adv.io import DataError, read_image
from monai_adv.prepare import cifar10

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_cifar_source(root: Path, per_batch: int = 3, n_test: int = 4) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder = root / cifar10.BATCH_FOLDER
    rng = np.random.default_rng(2)
    written = {}
    for k, name in enumerate(cifar10.TRAIN_BATCHES + (cifar10.TEST_BATCH,)):
        n = n_test if name == cifar10.TEST_BATCH else per_batch
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels = (np.arange(n) + k) % 10
        cifar10.write_cifar_binary(folder / name, images, labels)
        written[name] = (images, labels)
    cifar10.write_cifar_meta(folder / cifar10.META_FILE, NAMES)
    return written


def test_record_layout(tmp_path):
    images = np.zeros((1, 32, 32, 3), np.uint8)
    images[0, 0, 1, 0], images[0, 2, 0, 1], images[0, 31, 31, 2] = 11, 22, 33
    cifar10.write_cifar_binary(tmp_path / "b.bin", images, [7])
    raw = (tmp_path / "b.bin").read_bytes()
    assert len(raw) == 3073 and raw[0] == 7
    assert raw[1 + 1] == 11 and raw[1 + 1024 + 2 * 32] == 22 and raw[3072] == 33
    back, labels = cifar10.read_cifar_binary(tmp_path / "b.bin")
    np.testing.assert_array_equal(back, images)
    assert labels.tolist() == [7]


def test_prepare_official_split(tmp_path):
    written = make_cifar_source(tmp_path)
    path = cifar10.prepare(tmp_path, tmp_path / "out")
    datalist = json.loads(path.read_text())
    assert datalist["classes"] == NAMES
    (tmp_path / "meta.txt").write_text("\n".join(NAMES[:3]) + "\n\n  \n")
    assert cifar10.read_class_names(tmp_path / "meta.txt") == NAMES[:3]
    assert len(datalist["training"]) == 15 and len(datalist["test"]) == 4
    by_id = {i["id"]: i for i in datalist["training"] + datalist["test"]}
    item = by_id["cifar10_train_00004"]
    images, labels = written["data_batch_2.bin"]
    assert item["label"] == int(labels[1])
    arr, _ = read_image(path.parent / item["image"])
    assert arr.shape == (3, 32, 32)
    np.testing.assert_array_equal(np.moveaxis(arr, 0, -1), images[1])
    assert cifar10.prepare(tmp_path / cifar10.BATCH_FOLDER, tmp_path / "out2").is_file()


def test_limit_per_split_is_seeded(tmp_path):
    make_cifar_source(tmp_path)
    a = json.loads(cifar10.prepare(tmp_path, tmp_path / "a", seed=3, limit_per_split=5).read_text())
    b = json.loads(cifar10.prepare(tmp_path, tmp_path / "b", seed=3, limit_per_split=5).read_text())
    c = json.loads(cifar10.prepare(tmp_path, tmp_path / "c", seed=4, limit_per_split=5).read_text())
    assert len(a["training"]) == 5 and len(a["test"]) == 4
    assert a == b
    assert [i["id"] for i in a["training"]] != [i["id"] for i in c["training"]]


def test_bad_files(tmp_path):
    make_cifar_source(tmp_path)
    batch = tmp_path / cifar10.BATCH_FOLDER / "data_batch_3.bin"
    batch.write_bytes(batch.read_bytes()[:-1])
    with pytest.raises(DataError, match="data_batch_3.bin: 9218 bytes is not a whole number"):
        cifar10.prepare(tmp_path, tmp_path / "out")
    cifar10.write_cifar_binary(batch, np.zeros((2, 32, 32, 3), np.uint8), [1, 10])
    with pytest.raises(DataError, match="data_batch_3.bin: record 1 has label 10"):
        cifar10.prepare(tmp_path, tmp_path / "out")
    batch.unlink()
    with pytest.raises(DataError, match="data_batch_3.bin: CIFAR-10 batch file not found"):
        cifar10.prepare(tmp_path, tmp_path / "out")


def test_empty_source(tmp_path):
    with pytest.raises(DataError, match="nothing to prepare"):
        cifar10.prepare(tmp_path, tmp_path / "out")
    folder = tmp_path / cifar10.BATCH_FOLDER
    for name in cifar10.TRAIN_BATCHES + (cifar10.TEST_BATCH,):
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(b"")
    cifar10.write_cifar_meta(folder / cifar10.META_FILE, NAMES)
    with pytest.raises(DataError, match="nothing to prepare"):
        cifar10.prepare(tmp_path, tmp_path / "out")


def test_script(tmp_path):
    make_cifar_source(tmp_path / "src")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "prepare_cifar10.py"), "--source", str(tmp_path / "src"),
         "--output", str(tmp_path / "out")],
        capture_output=True, text=True, check=True,
    )
    assert result.stdout.startswith("cifar10: training 15 (airplane ") and "; test 4 (" in result.stdout
