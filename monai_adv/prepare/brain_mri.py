"""Brain MRI lesions: from NIfTI volumes and a lesion table to axial crops and a data list.

The paper's registry (brain metastases, single institution) is private and has no public layout, so this module
defines the one it reads.

Source layout: a CSV table, ``source_dir/lesions.csv`` by default (``table=`` names another file in ``source_dir``;
``source_dir`` may also be the CSV itself), with one row per region and the columns

- ``patient_id``: the registry's patient identifier (stored pseudonymised only);
- ``image``: the NIfTI volume (``.nii`` or ``.nii.gz``), a path relative to the CSV's folder or absolute;
- ``x``, ``y``, ``z``: the region centre as voxel indices (0-based) along the volume array's first, second and third
  axis as stored in the file (nibabel's i, j, k); decimals are rounded to the nearest voxel;
- ``label``: ``0`` or ``no_tumor`` (also accepted: ``normal``), ``1`` or ``tumor``; case-insensitive.

Extra columns are ignored. Several rows may point at the same volume.

Rules:
- Classes ``["no_tumor", "tumor"]``.
- The crop is the square patch (default 64x64 voxels, ``crop_size``) of axial slice ``z`` (the third array axis)
  centred on ``(x, y)`` (that voxel lands on pixel ``(crop_size // 2, crop_size // 2)``), zero-padded where it
  extends past the volume. Raw intensities are kept (no scaling), written as float32 2-D NIfTI with the volume's
  in-plane voxel size; the crop's axes are the volume's first two axes.
- Every row is checked before anything is written: a missing or unreadable volume, a volume that is not 3-D (trailing
  singleton axes are allowed), a centre outside the volume, or a label outside the classes raises
  :class:`~monai_adv.io.DataError` naming the table and line.
- Classes balanced (seeded random undersampling), then split 2:1 train:test by patient. Ids and file names are
  ``mri_<pseudonymised patient>_<line>``; the table's image paths are not stored.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from monai_adv.datalist import pseudonymise
from monai_adv.io import DataError, read_image
from monai_adv.prepare.common import (
    IMAGES_DIR,
    balance_and_split,
    finish_datalist,
    read_csv_rows,
    square_crop,
    write_pending_crops,
)

__all__ = ["CLASSES", "LABEL_NAMES", "TABLE", "volume_shape", "prepare"]

CLASSES = ["no_tumor", "tumor"]
LABEL_NAMES = {"0": 0, "no_tumor": 0, "normal": 0, "1": 1, "tumor": 1}
TABLE = "lesions.csv"
COLUMNS = ("patient id", "image", "x", "y", "z", "label")


def volume_shape(path: str | os.PathLike, item: str | None = None) -> tuple[int, int, int]:
    """The 3-D shape of a NIfTI volume from its header (no voxel data read); :class:`DataError` naming ``item``
    when the file is missing, unreadable or not 3-D."""
    import nibabel as nib

    name = f"{item} ({path})" if item else str(path)
    if not os.path.isfile(path):
        raise DataError(f"{name}: volume not found")
    if not str(path).lower().endswith((".nii", ".nii.gz")):
        raise DataError(f"{name}: expected a NIfTI volume (.nii or .nii.gz)")
    try:
        shape = tuple(int(s) for s in nib.load(str(path)).shape)
    except Exception as e:  # nibabel raises ImageFileError, EOFError, zlib errors...
        raise DataError(f"{name}: not a readable NIfTI file: {e}") from e
    if len(shape) < 3 or any(s != 1 for s in shape[3:]):
        raise DataError(f"{name}: expected a 3-D volume, got shape {shape}")
    return shape[:3]


def _label(value: str, where: str) -> int:
    key = value.strip().lower()
    if key.endswith(".0") and key[:-2].isdigit():
        key = key[:-2]
    if key not in LABEL_NAMES:
        raise DataError(f"{where}: label {value!r} is not one of the classes 0/no_tumor, 1/tumor")
    return LABEL_NAMES[key]


def _centre(row: dict[str, str], where: str, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    try:
        centre = tuple(math.floor(float(row[axis]) + 0.5) for axis in ("x", "y", "z"))
    except (ValueError, OverflowError) as e:
        raise DataError(f"{where}: centre x={row['x']!r}, y={row['y']!r}, z={row['z']!r} is not numeric") from e
    if not all(0 <= c < s for c, s in zip(centre, shape)):
        raise DataError(f"{where}: centre {centre} is outside the volume of shape {shape}")
    return centre


def _table_path(source_dir: Path, table: str) -> Path:
    path = source_dir if source_dir.is_file() else source_dir / table
    if not path.is_file():
        raise DataError(f"{path}: lesion table not found; nothing to prepare")
    return path


def _crop_job(
    read: Callable[[str], tuple[np.ndarray, list[float]]],
    image: Path,
    centre: tuple[int, int, int],
    crop_size: int,
    where: str,
) -> Callable[[], tuple[np.ndarray, list[float]]]:
    def crop() -> tuple[np.ndarray, list[float]]:
        try:
            volume, spacing = read(str(image))
        except DataError as e:
            raise DataError(f"{where}: {e}") from e
        x, y, z = centre
        return square_crop(volume[:, :, z], x, y, crop_size, fill=0.0), spacing[:2]

    return crop


def prepare(
    source_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    seed: int = 0,
    crop_size: int = 64,
    table: str = TABLE,
    balance: bool = True,
) -> Path:
    """Crop every row of the lesion table, balance, split 2:1 by patient and write ``output_dir/datalist.json``.

    Returns the data list path. See the module docstring for the table format and the rules.
    """
    source_dir, output_dir = Path(source_dir), Path(output_dir)
    table_path = _table_path(source_dir, table)

    @lru_cache(maxsize=2)
    def read(path: str) -> tuple[np.ndarray, list[float]]:
        arr, meta = read_image(path, spatial_dims=3)
        return arr[0], meta["spacing"]

    items = []
    for line, row in read_csv_rows(table_path, COLUMNS):
        where = f"{table_path.name} line {line}"
        label = _label(row["label"], where)
        if not row["patient id"]:
            raise DataError(f"{where}: empty patient_id")
        image = table_path.parent / row["image"]
        centre = _centre(row, where, volume_shape(image, where))
        patient = pseudonymise(row["patient id"])
        item_id = f"mri_{patient}_{line:05d}"
        items.append(
            {
                "id": item_id,
                "image": f"{IMAGES_DIR}/{item_id}.nii.gz",
                "label": label,
                "patient_id": patient,
                "source": where,
                "centre": list(centre),
                "_crop": _crop_job(read, image, centre, crop_size, where),
            }
        )
    if not items:
        raise DataError(f"{table_path}: the lesion table has no rows; nothing to prepare")
    training, test = balance_and_split(items, seed=seed, balance=balance)
    training, test = (write_pending_crops(side, output_dir) for side in (training, test))
    return finish_datalist(output_dir, "brain_mri", "MR", "raw intensity", CLASSES, training, test, __name__,
                           crop_size=crop_size)
