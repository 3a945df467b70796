"""MNIST from the publisher's four IDX files to PNG digits and a data list.

Source layout: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
``t10k-labels-idx1-ubyte`` in ``source_dir``, each optionally gzipped (``.gz``). The IDX files are parsed with NumPy:
the magic numbers (2051 for images, 2049 for labels), the declared sizes against the file length, the image/label
counts and the labels (0-9) are checked, and any mismatch raises :class:`~monai_adv.io.DataError` naming the file.

Rules:
- The official split is kept: the 60,000 training digits form ``training``, the 10,000 t10k digits form ``test``.
- Each digit is its own "patient" (``patient_id`` = its id), so the patient-disjointness check is trivially met.
- Classes are ``"0"`` .. ``"9"`` (label = the digit). No class balancing (the set is nearly balanced).
- ``limit_per_split=N`` keeps a seeded random subset of ``N`` digits per split (all digits when ``None``).
- Images are written as 28x28 uint8 grayscale PNG in ``output_dir/images/`` (``mnist_train_00012.png``, where the
  number is the digit's index in its IDX file). Scaling and channel replication are left to the bundle.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from monai_adv.io import DataError
from monai_adv.prepare.common import finish_datalist, write_png_split
from monai_adv.utils import atomic_write

__all__ = ["CLASSES", "FILES", "prepare", "read_idx", "write_idx_images", "write_idx_labels"]

CLASSES = [str(d) for d in range(10)]
FILES = {
    "training": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


def _find(source_dir: Path, name: str) -> Path:
    for candidate in (source_dir / name, source_dir / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{source_dir}: MNIST file {name} (or {name}.gz) not found; nothing to prepare")


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read IDX file: {e}") from e


def read_idx(path: str | os.PathLike, magic: int) -> np.ndarray:
    """Read an unsigned-byte IDX file (optionally ``.gz``) with the given magic number as a uint8 array.

    Raises :class:`DataError` naming the file for a wrong magic number or a size that disagrees with the header.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: too short for an IDX file ({len(data)} bytes)")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(f"{path}: IDX magic number {found}, expected {magic}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        raise DataError(f"{path}: IDX header declares shape {shape} ({expected} bytes) but the file has {len(data)}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _write_idx(path: str | os.PathLike, array: np.ndarray, magic: int) -> Path:
    arr = np.ascontiguousarray(array, dtype=np.uint8)
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    payload = header + arr.tobytes()

    def write(tmp: str) -> None:
        if str(path).endswith(".gz"):
            with gzip.open(tmp, "wb") as f:
                f.write(payload)
        else:
            Path(tmp).write_bytes(payload)

    return atomic_write(path, write)


def write_idx_images(path: str | os.PathLike, images: np.ndarray) -> Path:
    """Write uint8 images ``N x 28 x 28`` (any ``N x H x W``) as an IDX3 file; gzipped when ``path`` ends in .gz."""
    images = np.asarray(images)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected a uint8 N x H x W array, got {images.dtype} {images.shape}")
    return _write_idx(path, images, IMAGES_MAGIC)


def write_idx_labels(path: str | os.PathLike, labels: np.ndarray) -> Path:
    """Write uint8 labels ``N`` as an IDX1 file; gzipped when ``path`` ends in .gz."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(f"expected a uint8 1-D array, got {labels.dtype} {labels.shape}")
    return _write_idx(path, labels, LABELS_MAGIC)


def _load_split(source_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    image_path, label_path = (_find(source_dir, name) for name in FILES[split])
    images = read_idx(image_path, IMAGES_MAGIC)
    labels = read_idx(label_path, LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{image_path}: {images.shape[0]} images but {label_path.name} has {labels.shape[0]} labels")
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise DataError(f"{label_path}: item {bad[0]} has label {labels[bad[0]]}, outside the classes 0..9")
    return images, labels


def prepare(
    source_dir: str | os.PathLike, output_dir: str | os.PathLike, seed: int = 0, limit_per_split: int | None = None
) -> Path:
    """Write the MNIST digits as PNG and ``output_dir/datalist.json`` (official split); return the data list path."""
    source_dir, output_dir = Path(source_dir), Path(output_dir)
    sides: dict[str, list[dict]] = {}
    for split in FILES:
        images, labels = _load_split(source_dir, split)
        tag = "train" if split == "training" else "test"
        sides[split] = write_png_split(output_dir, f"mnist_{tag}", images, labels, limit_per_split, seed)
    if not sides["training"] and not sides["test"]:
        raise DataError(f"{source_dir}: the MNIST files hold no images; nothing to prepare")
    return finish_datalist(
        output_dir, "mnist", "none", "gray level", CLASSES, sides["training"], sides["test"], __name__
    )
