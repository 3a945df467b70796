"""CBIS-DDSM mammography lesions: from the description CSVs and the TCIA DICOM tree to lesion crops and a data list.

Source layout: ``source_dir`` holds, anywhere below it, the four description CSVs
(``mass_case_description_train_set.csv``, ``mass_case_description_test_set.csv``,
``calc_case_description_train_set.csv``, ``calc_case_description_test_set.csv``; any subset of them) and the DICOM
tree as TCIA distributes it (``Mass-Training_P_00001_LEFT_CC/<study>/<series>/1-1.dcm``, the ROI folders
``Mass-Training_P_00001_LEFT_CC_1/...`` holding the cropped lesion image and the ROI mask).

Rules:
- One item per CSV row (one abnormality). ``pathology`` BENIGN and BENIGN_WITHOUT_CALLBACK give label 0 ("benign"),
  MALIGNANT label 1 ("malignant"); any other value is an error naming the CSV line.
- Path resolution: a CSV path (backslashes and surrounding whitespace/quotes ignored) is used when it exists below
  ``source_dir`` or the CSV's folder; otherwise the DICOM files below every folder named like the path's first
  component are the candidates (the downloaded tree renames the study/series folders and files). The full mammogram is
  the direct path, else the largest candidate image. The ROI mask is taken among the candidates of both the
  ``ROI mask file path`` and ``cropped image file path`` columns (the two are swapped in some rows): the one whose size
  (Rows x Columns) equals the full mammogram's, preferring the ROI column's direct path. No such file is an error.
- Crop: the bounding box of the mask's foreground (pixels above the mask's minimum), a square of side
  ``max(min_side, ceil(margin * the box's larger side))`` (defaults 1.2 and 32 pixels) centred on the box centre,
  shifted to lie inside the image and shrunk to the image's smaller side if larger. No padding, no resizing.
- Intensities are native (stored * RescaleSlope + RescaleIntercept, MONOCHROME1 inverted so brighter means denser),
  written as float32 2-D NIfTI with the DICOM pixel spacing (1 mm when absent).
- The patient is the CSV ``patient_id`` (``P_00001``, shared across breasts, views, mass/calc and official splits),
  stored pseudonymised. Ids and file names hold the pseudonym, abnormality type, official split, side, view and
  abnormality id; no source path is stored (TCIA folder names carry the patient id).
- By default the official train and test sets are pooled, balanced (seeded random undersampling) and split 2:1 by
  patient, as the paper's code pooled them. ``keep_official_split=True`` keeps the official sets instead (each balanced
  separately); a patient found in both official sets is removed from the training side so the official test set stays
  whole and the sides stay patient-disjoint.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from monai_adv.datalist import balance_classes, pseudonymise
from monai_adv.io import DataError, image_format, read_dicom
from monai_adv.prepare.common import (
    IMAGES_DIR,
    Item,
    balance_and_split,
    finish_datalist,
    read_csv_rows,
    write_pending_crops,
)

__all__ = ["CLASSES", "CSV_FILES", "PATHOLOGY_LABELS", "resolve_dicom", "mask_crop_box", "prepare"]

CLASSES = ["benign", "malignant"]
PATHOLOGY_LABELS = {"BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0, "MALIGNANT": 1}
CSV_FILES = {
    "mass_case_description_train_set.csv": ("mass", "training"),
    "mass_case_description_test_set.csv": ("mass", "test"),
    "calc_case_description_train_set.csv": ("calc", "training"),
    "calc_case_description_test_set.csv": ("calc", "test"),
}
COLUMNS = (
    "patient id",
    "left or right breast",
    "image view",
    "abnormality id",
    "pathology",
    "image file path",
    "cropped image file path",
    "roi mask file path",
)


def _folder_index(source_dir: Path) -> dict[str, list[Path]]:
    index: dict[str, list[Path]] = {}
    for folder, dirs, _ in os.walk(source_dir):
        dirs.sort()
        for name in dirs:
            index.setdefault(name, []).append(Path(folder) / name)
    return index


def _dicoms_below(folder: Path) -> list[Path]:
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            try:
                if image_format(path) == "dicom":
                    found.append(path)
            except DataError:
                continue
    return found


def resolve_dicom(
    value: str, roots: list[Path], folder_index: dict[str, list[Path]]
) -> tuple[Path | None, list[Path]]:
    """``(direct path or None, candidate DICOM files)`` for one CSV path, as described in the module docstring."""
    rel = value.strip().strip('"').strip().replace("\\", "/").strip("/")
    if not rel:
        return None, []
    for root in roots:
        if (root / rel).is_file():
            return root / rel, [root / rel]
    candidates = []
    for folder in folder_index.get(rel.split("/")[0], []):
        candidates.extend(_dicoms_below(folder))
    return None, candidates


def _shape(path: Path, where: str) -> tuple[int, int]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{where} ({path}): not a readable DICOM file: {e}") from e
    return int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)


def _full_image(row: dict[str, str], where: str, roots: list[Path], index: dict[str, list[Path]]) -> Path:
    direct, candidates = resolve_dicom(row["image file path"], roots, index)
    if not candidates:
        raise DataError(f"{where}: full mammogram not found: {row['image file path']!r}")
    if direct is not None or len(candidates) == 1:
        _shape(candidates[0], where)
        return candidates[0]
    return max(candidates, key=lambda p: math.prod(_shape(p, where)))


def _roi_mask(
    row: dict[str, str], where: str, shape: tuple[int, int], roots: list[Path], index: dict[str, list[Path]]
) -> Path:
    direct, candidates = resolve_dicom(row["roi mask file path"], roots, index)
    _, cropped = resolve_dicom(row["cropped image file path"], roots, index)
    ordered = list(dict.fromkeys(([direct] if direct else []) + candidates + cropped))
    if not ordered:
        raise DataError(f"{where}: ROI mask not found: {row['roi mask file path']!r}")
    for path in ordered:
        if _shape(path, where) == shape:
            return path
    raise DataError(f"{where}: no ROI file has the full mammogram's size {shape[0]}x{shape[1]}")


def mask_crop_box(mask: np.ndarray, margin: float = 1.2, min_side: int = 32) -> tuple[int, int, int]:
    """``(top, left, side)`` of the square crop around the mask's foreground bounding box (module docstring rule)."""
    foreground = mask > mask.min()
    if not foreground.any():
        raise DataError("ROI mask is empty")
    rows = np.flatnonzero(foreground.any(axis=1))
    cols = np.flatnonzero(foreground.any(axis=0))
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    side = max(min_side, math.ceil(margin * max(height, width)))
    side = min(side, *mask.shape)
    centre_row, centre_col = (rows[0] + rows[-1]) / 2, (cols[0] + cols[-1]) / 2
    top = int(np.clip(math.floor(centre_row - (side - 1) / 2 + 0.5), 0, mask.shape[0] - side))
    left = int(np.clip(math.floor(centre_col - (side - 1) / 2 + 0.5), 0, mask.shape[1] - side))
    return top, left, side


class _LastImage:
    """Keeps the last full mammogram read, since one image often carries several abnormalities."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.value: tuple[np.ndarray, list[float]] | None = None

    def read(self, path: Path, item: str) -> tuple[np.ndarray, list[float]]:
        if self.path != path:
            arr, meta = read_dicom(path, item=item)
            self.path, self.value = path, (arr[0], meta["spacing"])
        return self.value


def _crop_job(
    image: Path, mask: Path, item: str, margin: float, min_side: int, cache: _LastImage
) -> Callable[[], tuple[np.ndarray, list[float]]]:
    def crop() -> tuple[np.ndarray, list[float]]:
        pixels, spacing = cache.read(image, item)
        roi = read_dicom(mask, item=item)[0][0]
        if roi.shape != pixels.shape:
            raise DataError(f"{item} ({mask}): ROI mask is {roi.shape}, the mammogram {pixels.shape}")
        try:
            top, left, side = mask_crop_box(roi, margin, min_side)
        except DataError as e:
            raise DataError(f"{item} ({mask}): {e}") from e
        return pixels[top : top + side, left : left + side], spacing

    return crop


def _label(row: dict[str, str], where: str) -> int:
    pathology = row["pathology"].strip().upper()
    if pathology not in PATHOLOGY_LABELS:
        raise DataError(f"{where}: pathology {row['pathology']!r} is not one of {sorted(PATHOLOGY_LABELS)}")
    return PATHOLOGY_LABELS[pathology]


def _row_item(
    row: dict[str, str], where: str, kind: str, official: str, roots: list[Path], index: dict[str, list[Path]]
) -> Item:
    label = _label(row, where)
    if not row["patient id"]:
        raise DataError(f"{where}: empty patient_id")
    image = _full_image(row, where, roots, index)
    mask = _roi_mask(row, where, _shape(image, where), roots, index)
    patient = pseudonymise(row["patient id"])
    side = "".join(c for c in row["left or right breast"].upper() if c.isalnum()) or "X"
    view = "".join(c for c in row["image view"].upper() if c.isalnum()) or "X"
    abnormality = "".join(c for c in row["abnormality id"] if c.isalnum()) or "0"
    return {
        "id": f"cbis_{patient}_{kind}_{'train' if official == 'training' else 'test'}_{side}_{view}_{abnormality}",
        "label": label,
        "patient_id": patient,
        "abnormality": "mass" if kind == "mass" else "calcification",
        "official_split": official,
        "laterality": side,
        "view": view,
        "pathology": row["pathology"].strip().upper(),
        "_image": image,
        "_mask": mask,
    }


def _unique_ids(items: list[Item]) -> None:
    seen: dict[str, int] = {}
    for item in items:
        base = item["id"]
        seen[base] = seen.get(base, 0) + 1
        if seen[base] > 1:
            item["id"] = f"{base}_{seen[base]}"
        item["image"] = f"{IMAGES_DIR}/{item['id']}.nii.gz"


def _find_csvs(source_dir: Path) -> list[Path]:
    found = {}
    for path in sorted(source_dir.rglob("*.csv")):
        if path.name.lower() in CSV_FILES and path.name.lower() not in found:
            found[path.name.lower()] = path
    return [found[name] for name in CSV_FILES if name in found]


def _official_sides(items: list[Item], seed: int, balance: bool) -> tuple[list[Item], list[Item]]:
    test = [i for i in items if i["official_split"] == "test"]
    test_patients = {i["patient_id"] for i in test}
    training = [i for i in items if i["official_split"] == "training" and i["patient_id"] not in test_patients]
    if balance:
        training, test = balance_classes(training, seed=seed), balance_classes(test, seed=seed)
    return training, test


def prepare(
    source_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    seed: int = 0,
    margin: float = 1.2,
    min_side: int = 32,
    keep_official_split: bool = False,
    balance: bool = True,
) -> Path:
    """Crop every CBIS-DDSM abnormality, balance, split and write ``output_dir/datalist.json``; return its path.

    See the module docstring for the rules.
    """
    source_dir, output_dir = Path(source_dir), Path(output_dir)
    if not source_dir.is_dir():
        raise DataError(f"{source_dir}: source folder not found; nothing to prepare")
    csvs = _find_csvs(source_dir)
    if not csvs:
        raise DataError(f"{source_dir}: no CBIS-DDSM description CSV ({', '.join(CSV_FILES)}); nothing to prepare")
    index = _folder_index(source_dir)
    items: list[Item] = []
    for path in csvs:
        kind, official = CSV_FILES[path.name.lower()]
        roots = list(dict.fromkeys([source_dir, path.parent]))
        for line, row in read_csv_rows(path, COLUMNS):
            items.append(_row_item(row, f"{path.name} line {line}", kind, official, roots, index))
    if not items:
        raise DataError(f"{source_dir}: the CBIS-DDSM CSVs list no abnormality; nothing to prepare")
    _unique_ids(items)
    cache = _LastImage()
    for item in items:
        item["_crop"] = _crop_job(item["_image"], item["_mask"], item["id"], margin, min_side, cache)
    if keep_official_split:
        training, test = _official_sides(items, seed, balance)
    else:
        training, test = balance_and_split(items, seed=seed, balance=balance)
    training, test = (write_pending_crops(side, output_dir) for side in (training, test))
    return finish_datalist(
        output_dir,
        "cbis_ddsm",
        "MG",
        "raw intensity",
        CLASSES,
        training,
        test,
        __name__,
        split="official" if keep_official_split else "pooled, 2:1 by patient",
    )
