"""CIFAR-10 from the publisher's binary version to PNG images and a data list (nothing is ever unpickled).

Source layout: ``cifar-10-batches-bin/`` (``source_dir`` may be that folder or its parent) holding
``data_batch_1.bin`` .. ``data_batch_5.bin``, ``test_batch.bin`` and ``batches.meta.txt``. Each ``.bin`` file is a
sequence of 3073-byte records: one label byte, then 1024 red, 1024 green and 1024 blue bytes, each a row-major 32x32
plane. ``batches.meta.txt`` lists the class names, one per line (blank lines ignored). A file whose length is not a
multiple of 3073, or a label outside the class list, raises :class:`~monai_adv.io.DataError` naming the file.

Rules:
- The official split is kept: the five data batches form ``training`` (50,000 images), ``test_batch.bin`` forms
  ``test`` (10,000).
- Each image is its own "patient" (``patient_id`` = its id). Classes come from ``batches.meta.txt`` (label = index).
- ``limit_per_split=N`` keeps a seeded random subset of ``N`` images per split (all when ``None``).
- Images are written as 32x32 RGB uint8 PNG in ``output_dir/images/`` (``cifar10_train_00012.png``, the number being
  the image's index in its split, batches taken in order).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from monai_adv.io import DataError
from monai_adv.prepare.common import finish_datalist, write_png_split
from monai_adv.utils import atomic_write, atomic_write_text

__all__ = [
    "BATCH_FOLDER",
    "TRAIN_BATCHES",
    "TEST_BATCH",
    "META_FILE",
    "prepare",
    "read_cifar_binary",
    "read_class_names",
    "write_cifar_binary",
    "write_cifar_meta",
]

BATCH_FOLDER = "cifar-10-batches-bin"
TRAIN_BATCHES = tuple(f"data_batch_{k}.bin" for k in range(1, 6))
TEST_BATCH = "test_batch.bin"
META_FILE = "batches.meta.txt"
RECORD = 1 + 3 * 32 * 32


def _batch_dir(source_dir: Path) -> Path:
    for candidate in (source_dir / BATCH_FOLDER, source_dir):
        if (candidate / META_FILE).is_file() or (candidate / TEST_BATCH).is_file():
            return candidate
    raise DataError(f"{source_dir}: no CIFAR-10 binary batches ({BATCH_FOLDER}/{TEST_BATCH}); nothing to prepare")


def read_class_names(path: str | os.PathLike) -> list[str]:
    """The class names of ``batches.meta.txt``, one per non-blank line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: CIFAR-10 class-name file not found")
    names = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    if not names:
        raise DataError(f"{path}: no class names")
    return names


def read_cifar_binary(path: str | os.PathLike, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 N x 32 x 32 x 3, labels uint8 N)`` from one CIFAR-10 binary batch file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: CIFAR-10 batch file not found")
    data = np.fromfile(path, dtype=np.uint8)
    if data.size % RECORD:
        raise DataError(f"{path}: {data.size} bytes is not a whole number of {RECORD}-byte CIFAR-10 records")
    records = data.reshape(-1, RECORD)
    labels = records[:, 0].copy()
    bad = np.flatnonzero(labels >= num_classes)
    if bad.size:
        raise DataError(f"{path}: record {bad[0]} has label {labels[bad[0]]}, outside the classes 0..{num_classes - 1}")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def write_cifar_binary(path: str | os.PathLike, images: np.ndarray, labels: Sequence[int] | np.ndarray) -> Path:
    """Write uint8 RGB images ``N x 32 x 32 x 3`` and their labels (0-255) as one CIFAR-10 binary batch file."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.dtype != np.uint8 or images.shape[1:] != (32, 32, 3):
        raise ValueError(f"expected uint8 N x 32 x 32 x 3 images, got {images.dtype} {images.shape}")
    if labels.shape != (images.shape[0],) or labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
        raise ValueError(f"expected {images.shape[0]} labels in 0..255, got shape {labels.shape}")
    planes = images.transpose(0, 3, 1, 2).reshape(images.shape[0], -1)
    records = np.concatenate([labels.astype(np.uint8)[:, None], planes], axis=1)
    payload = np.ascontiguousarray(records).tobytes()
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(payload))


def write_cifar_meta(path: str | os.PathLike, class_names: Sequence[str]) -> Path:
    """Write ``batches.meta.txt``: one class name per line."""
    return atomic_write_text(path, "".join(f"{name}\n" for name in class_names))


def _load_split(batch_dir: Path, files: Sequence[str], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    parts = [read_cifar_binary(batch_dir / name, num_classes) for name in files]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def prepare(
    source_dir: str | os.PathLike, output_dir: str | os.PathLike, seed: int = 0, limit_per_split: int | None = None
) -> Path:
    """Write the CIFAR-10 images as PNG and ``output_dir/datalist.json`` (official split); return the data list path."""
    source_dir, output_dir = Path(source_dir), Path(output_dir)
    batch_dir = _batch_dir(source_dir)
    classes = read_class_names(batch_dir / META_FILE)
    sides: dict[str, list[dict]] = {}
    for split, tag, files in (("training", "train", TRAIN_BATCHES), ("test", "test", (TEST_BATCH,))):
        images, labels = _load_split(batch_dir, files, len(classes))
        sides[split] = write_png_split(output_dir, f"cifar10_{tag}", images, labels, limit_per_split, seed)
    if not sides["training"] and not sides["test"]:
        raise DataError(f"{batch_dir}: the CIFAR-10 batches hold no images; nothing to prepare")
    return finish_datalist(output_dir, "cifar10", "none", "gray level", classes, sides["training"], sides["test"],
                           __name__)
