import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from monai_adv.datalist import load_datalist
from monai_adv.io import DataError, read_image
from monai_adv.prepare import mnist

ROOT = Path(__file__).resolve().parents[1]


def make_mnist_source(folder: Path, n_train: int = 12, n_test: int = 5, gz: bool = False) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(1)
    train_x = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    test_x = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    train_y = (np.arange(n_train) % 10).astype(np.uint8)
    test_y = ((np.arange(n_test) + 3) % 10).astype(np.uint8)
    ext = ".gz" if gz else ""
    mnist.write_idx_images(folder / f"train-images-idx3-ubyte{ext}", train_x)
    mnist.write_idx_labels(folder / f"train-labels-idx1-ubyte{ext}", train_y)
    mnist.write_idx_images(folder / f"t10k-images-idx3-ubyte{ext}", test_x)
    mnist.write_idx_labels(folder / f"t10k-labels-idx1-ubyte{ext}", test_y)
    return train_x, train_y, test_x, test_y


@pytest.mark.parametrize("gz", [False, True])
def test_prepare_keeps_official_split_and_pixels(tmp_path, gz):
    train_x, train_y, test_x, test_y = make_mnist_source(tmp_path / "src", gz=gz)
    path = mnist.prepare(tmp_path / "src", tmp_path / "out")
    datalist = json.loads(path.read_text())
    assert datalist["classes"] == [str(d) for d in range(10)]
    assert len(datalist["training"]) == 12 and len(datalist["test"]) == 5
    assert [i["label"] for i in datalist["test"]] == test_y.tolist()
    item = datalist["training"][7]
    assert item["id"] == "mnist_train_00007" and item["label"] == 7 and item["patient_id"] == item["id"]
    arr, _ = read_image(path.parent / item["image"])
    assert arr.shape == (1, 28, 28)
    np.testing.assert_array_equal(arr[0], train_x[7])
    assert len(load_datalist(path, "test")) == 5


def test_limit_per_split_is_seeded(tmp_path):
    make_mnist_source(tmp_path / "src")
    ids = {}
    for seed in (0, 0, 1):
        out = tmp_path / f"out{seed}_{len(ids)}"
        datalist = json.loads(mnist.prepare(tmp_path / "src", out, seed=seed, limit_per_split=4).read_text())
        assert len(datalist["training"]) == 4 and len(datalist["test"]) == 4
        assert len(list((out / "images").iterdir())) == 8
        ids.setdefault(seed, []).append([i["id"] for i in datalist["training"]])
    assert ids[0][0] == ids[0][1]
    assert ids[0][0] != ids[1][0]


def test_idx_round_trip(tmp_path):
    x = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    mnist.write_idx_images(tmp_path / "a.gz", x)
    np.testing.assert_array_equal(mnist.read_idx(tmp_path / "a.gz", 2051), x)
    raw = gzip.decompress((tmp_path / "a.gz").read_bytes())
    assert int.from_bytes(raw[:4], "big") == 2051 and int.from_bytes(raw[4:8], "big") == 2


def test_wrong_magic_number(tmp_path):
    make_mnist_source(tmp_path)
    mnist.write_idx_labels(tmp_path / "train-images-idx3-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.*magic number 2049, expected 2051"):
        mnist.prepare(tmp_path, tmp_path / "out")


def test_truncated_file(tmp_path):
    make_mnist_source(tmp_path)
    data = (tmp_path / "t10k-images-idx3-ubyte").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(data[:-10])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: IDX header declares shape \(5, 28, 28\)"):
        mnist.prepare(tmp_path, tmp_path / "out")


def test_count_mismatch_and_bad_label(tmp_path):
    make_mnist_source(tmp_path)
    mnist.write_idx_labels(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="5 images but t10k-labels-idx1-ubyte has 4 labels"):
        mnist.prepare(tmp_path, tmp_path / "out")
    mnist.write_idx_labels(tmp_path / "t10k-labels-idx1-ubyte", np.array([0, 1, 12, 3, 4], np.uint8))
    with pytest.raises(DataError, match="item 2 has label 12"):
        mnist.prepare(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out" / "datalist.json").exists()


def test_empty_source(tmp_path):
    with pytest.raises(DataError, match="not found; nothing to prepare"):
        mnist.prepare(tmp_path, tmp_path / "out")
    mnist.write_idx_images(tmp_path / "train-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8))
    mnist.write_idx_labels(tmp_path / "train-labels-idx1-ubyte", np.zeros(0, np.uint8))
    mnist.write_idx_images(tmp_path / "t10k-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8))
    mnist.write_idx_labels(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(0, np.uint8))
    with pytest.raises(DataError, match="nothing to prepare"):
        mnist.prepare(tmp_path, tmp_path / "out")


def test_script(tmp_path):
    make_mnist_source(tmp_path / "src")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "prepare_mnist.py"), "--source", str(tmp_path / "src"),
         "--output", str(tmp_path / "out"), "--limit-per-split", "3"],
        capture_output=True, text=True, check=True,
    )
    assert result.stdout.startswith("mnist: training 3 (") and "; test 3 (" in result.stdout
    assert result.stdout.count("\n") == 1
