"""Helpers shared by the preparation modules: square crops, atomic image writers, the final split and data list."""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_adv.datalist import balance_classes, split_by_patient, write_datalist
from monai_adv.io import DataError
from monai_adv.utils import atomic_write

__all__ = [
    "IMAGES_DIR",
    "square_crop",
    "save_nifti_2d",
    "save_png",
    "finish_datalist",
    "write_pending_crops",
    "balance_and_split",
    "subset_indices",
    "read_csv_rows",
    "summarise",
]

IMAGES_DIR = "images"
Item = dict[str, Any]


def square_crop(image: np.ndarray, centre_row: int, centre_col: int, size: int, fill: float = 0.0) -> np.ndarray:
    """A ``size x size`` patch of a 2-D ``image``; its pixel ``(size // 2, size // 2)`` is ``(centre_row, centre_col)``.

    Parts of the patch outside the image are filled with ``fill``; the dtype of ``image`` is kept.
    """
    if size < 1:
        raise ValueError(f"crop size must be positive, got {size}")
    out = np.full((size, size), fill, dtype=image.dtype)
    top, left = centre_row - size // 2, centre_col - size // 2
    r0, r1 = max(top, 0), min(top + size, image.shape[0])
    c0, c1 = max(left, 0), min(left + size, image.shape[1])
    if r0 < r1 and c0 < c1:
        out[r0 - top : r1 - top, c0 - left : c1 - left] = image[r0:r1, c0:c1]
    return out


def _as_stored(array: np.ndarray) -> np.ndarray:
    """int16 when every value is an integer in int16's range (CT in HU), else float32."""
    arr = np.asarray(array)
    if arr.size and np.all(np.isfinite(arr)) and np.array_equal(arr, np.round(arr)):
        if arr.min() >= np.iinfo(np.int16).min and arr.max() <= np.iinfo(np.int16).max:
            return arr.astype(np.int16)
    return arr.astype(np.float32)


def save_nifti_2d(
    path: str | os.PathLike, array: np.ndarray, spacing: Sequence[float] = (1.0, 1.0), integer: bool = False
) -> Path:
    """Write a 2-D array atomically as NIfTI (``.nii.gz``), axis 0 first, with ``spacing`` (mm) on the diagonal.

    Values are written as they are (native units); ``integer=True`` stores int16 when that is lossless.
    """
    import nibabel as nib

    arr = np.asarray(array)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {arr.shape}")
    arr = _as_stored(arr) if integer else arr.astype(np.float32)
    affine = np.diag([float(spacing[0]), float(spacing[1]), 1.0, 1.0])
    img = nib.Nifti1Image(arr, affine)
    img.header.set_xyzt_units("mm")
    return atomic_write(path, lambda tmp: nib.save(img, tmp))


def save_png(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a uint8 ``(H, W)`` grayscale or ``(H, W, 3)`` RGB array atomically as PNG."""
    from PIL import Image

    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        raise ValueError(f"PNG writer expects uint8, got {arr.dtype}")
    img = Image.fromarray(arr, mode="L" if arr.ndim == 2 else "RGB")
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def subset_indices(count: int, limit: int | None, seed: int) -> list[int]:
    """Sorted indices of a seeded random subset of ``limit`` out of ``count`` (all of them when ``limit`` is None)."""
    if limit is None or limit >= count:
        return list(range(count))
    if limit < 1:
        raise ValueError(f"limit_per_split must be positive, got {limit}")
    return sorted(random.Random(seed).sample(range(count), limit))


def write_pending_crops(items: Sequence[Item], output_dir: str | os.PathLike, integer: bool = False) -> list[Item]:
    """Write each item's crop and return the items without their private keys.

    Each item carries ``"_crop"``, a callable returning ``(array_2d, spacing)``, called only now so that items dropped
    by class balancing are never read; the crop goes to ``output_dir / item["image"]`` as NIfTI.
    """
    written = []
    for item in items:
        item = dict(item)
        array, spacing = item.pop("_crop")()
        save_nifti_2d(Path(output_dir) / item["image"], array, spacing, integer=integer)
        written.append({k: v for k, v in item.items() if not k.startswith("_")})
    return written


def _column(name: str) -> str:
    return " ".join(name.strip().lower().replace("_", " ").split())


def read_csv_rows(path: str | os.PathLike, required: Sequence[str] = ()) -> list[tuple[int, dict[str, str]]]:
    """``(first line number, row)`` for every non-blank row of a CSV (quoted cells may span lines).

    Column names are normalised (lower case, ``_`` read as a space, whitespace collapsed: ``patient_id`` becomes
    ``patient id``) and cells stripped. A missing ``required`` column (normalised names) raises :class:`DataError`.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [_column(c) for c in (reader.fieldnames or [])]
            missing = [c for c in required if c not in header]
            if reader.fieldnames and missing:
                raise DataError(f"{path}: missing column(s) {missing}")
            rows, start = [], reader.line_num + 1
            for row in reader:
                values = {_column(k): (v or "").strip() for k, v in row.items() if k is not None}
                if any(values.values()):
                    rows.append((start, values))
                start = reader.line_num + 1
            return rows
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read the CSV: {e}") from e


def balance_and_split(
    items: Sequence[Item], seed: int, balance: bool = True, test_fraction: float = 1 / 3
) -> tuple[list[Item], list[Item]]:
    """Balance the classes (seeded, optional), then split 2:1 by patient."""
    kept = balance_classes(items, seed=seed) if balance else list(items)
    return split_by_patient(kept, test_fraction=test_fraction, seed=seed)


def finish_datalist(
    output_dir: str | os.PathLike,
    name: str,
    modality: str,
    native_units: str,
    classes: Sequence[str],
    training: Sequence[Item],
    test: Sequence[Item],
    prepared_by: str,
    **extra: Any,
) -> Path:
    """Write ``output_dir/datalist.json`` (items sorted by id) and return its path. ``prepared_by`` names the
    preparing module (``__name__``): the study sets the paper's figures beside ours only for a data list prepared by
    the script of the paper's data set.

    Raises :class:`DataError` when both sides are empty.
    """
    if not training and not test:
        raise DataError(f"{name}: no items left to write (after balancing and exclusions); nothing to prepare")
    datalist = {
        "name": name,
        "modality": modality,
        "native_units": native_units,
        "classes": list(classes),
        "prepared_by": prepared_by,
        **extra,
        "training": sorted(training, key=lambda i: str(i["id"])),
        "test": sorted(test, key=lambda i: str(i["id"])),
    }
    return write_datalist(Path(output_dir) / "datalist.json", datalist)


def summarise(datalist_path: str | os.PathLike) -> str:
    """One line: the data list name, then per split the item count and the count per class."""
    datalist = json.loads(Path(datalist_path).read_text(encoding="utf-8"))
    classes = datalist.get("classes", [])
    parts = []
    for key in ("training", "test"):
        counts = Counter(int(i["label"]) for i in datalist.get(key, []))
        per_class = ", ".join(f"{c} {counts.get(k, 0)}" for k, c in enumerate(classes))
        parts.append(f"{key} {len(datalist.get(key, []))} ({per_class})")
    return f"{datalist.get('name', '?')}: {'; '.join(parts)} -> {datalist_path}"


def cli_parser(doc: str | None, source_help: str) -> argparse.ArgumentParser:
    """The command line shared by ``scripts/prepare_*.py``: ``--source``, ``--output`` and ``--seed``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help=source_help)
    parser.add_argument("--output", required=True, help="output folder (images/ and datalist.json)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def run_cli(prepare: Callable[..., Path], args: argparse.Namespace, **options: Any) -> int:
    """Run ``prepare(source, output, seed=..., **options)``: print the summary line and return 0, or print the
    :class:`~monai_adv.io.DataError` naming the bad item and return 2."""
    try:
        path = prepare(args.source, args.output, seed=args.seed, **options)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summarise(path))
    return 0


def write_png_split(
    output_dir: Path, prefix: str, images: np.ndarray, labels: np.ndarray, limit: int | None, seed: int
) -> list[dict[str, Any]]:
    """Write a (seeded, optionally limited) subset of one split as PNG under ``images/`` and return its data-list
    items, each image its own patient; ids are ``<prefix>_<index in the split, 5 digits>``."""
    items = []
    for index in subset_indices(len(labels), limit, seed):
        item_id = f"{prefix}_{index:05d}"
        rel = f"{IMAGES_DIR}/{item_id}.png"
        save_png(output_dir / rel, images[index])
        items.append({"id": item_id, "image": rel, "label": int(labels[index]), "patient_id": item_id})
    return items
