"""MONAI data lists for classification: writing, loading with validation, and patient-level splits.

A data list is one JSON file::

    {
      "name": "lidc_idri", "modality": "CT", "native_units": "HU",
      "classes": ["benign", "malignant"],
      "training": [{"id": "...", "image": "images/x.nii.gz", "label": 0, "patient_id": "..."}, ...],
      "test": [...]
    }

``image`` paths are relative to the JSON file's folder (absolute paths are kept as they are). ``training`` and ``test``
never share a patient. The validation split is carved from ``training`` at run time, also by patient.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai_adv.io import DataError, read_image
from monai_adv.utils import atomic_write_json

__all__ = [
    "split_by_patient",
    "carve_validation",
    "balance_classes",
    "write_datalist",
    "load_datalist",
    "validate_items",
    "pseudonymise",
    "load_inference_items",
    "scrub_identifiers",
]

Item = dict[str, Any]


def pseudonymise(value: str, salt: str = "monai_adv") -> str:
    """A stable 16-hex-digit stand-in for a patient identifier, so no DICOM PatientID/MRN reaches an output."""
    import hashlib

    return hashlib.sha256(f"{salt}:{value}".encode()).hexdigest()[:16]


def _majority_label(items: Sequence[Item]) -> int:
    return Counter(int(i["label"]) for i in items).most_common(1)[0][0]


def split_by_patient(
    items: Sequence[Item], test_fraction: float = 1 / 3, seed: int = 0
) -> tuple[list[Item], list[Item]]:
    """Split items into ``(train, test)`` so that no ``patient_id`` is on both sides.

    Patients are grouped by their majority label and shuffled with ``seed``; within each label group patients go to the
    test side until it holds ``test_fraction`` of that group's items, so the class balance is kept on both sides.
    Items without ``patient_id`` count as their own patient (their ``id``). The default is the paper's 2:1 split.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    by_patient: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        by_patient[str(item.get("patient_id") or item["id"])].append(item)
    groups: dict[int, list[str]] = defaultdict(list)
    for patient in sorted(by_patient):
        groups[_majority_label(by_patient[patient])].append(patient)
    rng = random.Random(seed)
    train: list[Item] = []
    test: list[Item] = []
    for label in sorted(groups):
        patients = groups[label]
        rng.shuffle(patients)
        total = sum(len(by_patient[p]) for p in patients)
        taken = 0
        for patient in patients:
            side = test if taken < test_fraction * total - 0.5 * len(by_patient[patient]) else train
            side.extend(by_patient[patient])
            if side is test:
                taken += len(by_patient[patient])
    return train, test


def carve_validation(items: Sequence[Item], fraction: float = 0.2, seed: int = 0) -> tuple[list[Item], list[Item]]:
    """``(train, validation)`` carved from the training items by patient, for early stopping and checkpoint choice."""
    return split_by_patient(items, test_fraction=fraction, seed=seed)


def balance_classes(items: Sequence[Item], seed: int = 0) -> list[Item]:
    """Randomly (seeded) drop items of the larger classes until every class has as many as the smallest."""
    by_label: dict[int, list[Item]] = defaultdict(list)
    for item in items:
        by_label[int(item["label"])].append(item)
    if not by_label:
        return []
    n = min(len(v) for v in by_label.values())
    rng = random.Random(seed)
    kept: list[Item] = []
    for label in sorted(by_label):
        kept.extend(rng.sample(by_label[label], n) if len(by_label[label]) > n else by_label[label])
    return sorted(kept, key=lambda i: str(i["id"]))


def write_datalist(path: str | os.PathLike, datalist: dict[str, Any]) -> Path:
    """Write a data list atomically, after checking it has classes, items and disjoint patients."""
    if not datalist.get("classes"):
        raise DataError(f"{path}: data list needs a non-empty 'classes' list")
    train_patients = {str(i.get("patient_id") or i["id"]) for i in datalist.get("training", [])}
    test_patients = {str(i.get("patient_id") or i["id"]) for i in datalist.get("test", [])}
    shared = sorted(train_patients & test_patients)
    if shared:
        raise DataError(f"{path}: patients on both training and test sides: {shared[:5]}")
    return atomic_write_json(path, datalist)


def validate_items(
    items: Sequence[Item],
    num_classes: int,
    source: str = "data list",
    check_images: bool = True,
    spatial_dims: int | None = 2,
) -> None:
    """Raise one :class:`DataError` naming the first bad item: empty list, missing key, label outside
    ``[0, num_classes)``, or (with ``check_images``) an image that is missing, unreadable, of the wrong dimensionality
    or has NaN/infinite pixels."""
    if not items:
        raise DataError(f"{source}: empty data list, nothing to run on")
    for index, item in enumerate(items):
        name = str(item.get("id", f"item #{index}"))
        for key in ("image", "label"):
            if key not in item:
                raise DataError(f"{source}: item {name} has no '{key}'")
        label = item["label"]
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < num_classes:
            raise DataError(f"{source}: item {name} has label {label!r}, outside the classes 0..{num_classes - 1}")
        if check_images:
            read_image(item["image"], item=name, spatial_dims=spatial_dims)


def _read_section(path: Path, key: str) -> tuple[dict[str, Any], list[Item]]:
    """The whole data list and its ``key`` section with image paths made absolute (relative to the file's folder)."""
    if not path.is_file():
        raise DataError(f"data list not found: {path}")
    try:
        datalist = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a valid JSON data list: {e}") from e
    if not isinstance(datalist, dict) or key not in datalist:
        sections = sorted(k for k, v in datalist.items() if isinstance(v, list)) if isinstance(datalist, dict) else []
        raise DataError(f"{path}: no '{key}' section (has: {sections})")
    items = []
    for item in datalist[key]:
        item = dict(item)
        if "image" in item and not os.path.isabs(item["image"]):
            item["image"] = str(path.parent / item["image"])
        items.append(item)
    return datalist, items


def load_datalist(
    path: str | os.PathLike,
    key: str = "training",
    num_classes: int | None = None,
    check_images: bool = True,
    spatial_dims: int | None = 2,
) -> list[Item]:
    """Load the ``key`` section of a data list, with image paths made absolute, and validate it.

    Args:
        path: the data list JSON.
        key: ``"training"`` or ``"test"`` (or any other section).
        num_classes: the number of classes; defaults to ``len(classes)`` of the file.
        check_images: read every image once to fail early on a missing/corrupt file or NaN pixels.
        spatial_dims: image dimensionality required (see :func:`monai_adv.io.read_image`).
    """
    path = Path(path)
    datalist, items = _read_section(path, key)
    if num_classes is None:
        num_classes = len(datalist.get("classes", [])) or None
        if num_classes is None:
            raise DataError(f"{path}: data list has no 'classes'; pass num_classes")
    validate_items(items, num_classes, source=f"{path} [{key}]", check_images=check_images, spatial_dims=spatial_dims)
    return items


# DICOM attributes whose values never reach an output (ids, CSVs, logs)
PATIENT_IDENTIFIER_KEYWORDS = ("PatientID", "PatientName", "PatientBirthDate", "OtherPatientIDs", "OtherPatientNames")


def scrub_identifiers(text: str, dicom_file: str | os.PathLike) -> str:
    """``text`` with every patient identifier of ``dicom_file``'s header replaced by its :func:`pseudonymise` value.

    Identifiers are the values of :data:`PATIENT_IDENTIFIER_KEYWORDS`, names also by component (``Doe^Jane`` gives
    ``Doe^Jane``, ``Doe Jane``, ``Doe`` and ``Jane``); components shorter than 3 characters are left alone. Matching
    ignores case; longer values are replaced first. A file whose header cannot be read leaves ``text`` as it is (the
    image check reports the file).
    """
    import re

    import pydicom

    try:
        ds = pydicom.dcmread(str(dicom_file), stop_before_pixels=True)
    except Exception:
        return text
    values: set[str] = set()
    for keyword in PATIENT_IDENTIFIER_KEYWORDS:
        value = ds.get(keyword)
        for v in value if isinstance(value, pydicom.multival.MultiValue) else [value]:
            v = str(v or "").strip()
            if v:
                values |= {v, v.replace("^", " ")} | {part for part in re.split(r"[\^ ]+", v) if len(part) >= 3}
    for value in sorted(values, key=len, reverse=True):
        text = re.sub(re.escape(value), pseudonymise(value), text, flags=re.IGNORECASE)
    return text


def load_inference_items(
    path: str | os.PathLike, key: str = "test", check_images: bool = True, spatial_dims: int | None = 2
) -> list[Item]:
    """Images to run inference on: a data list's ``key`` section (labels optional), or every image file in a folder.

    Folder images get the file path relative to the folder, without suffix, as ``id``; in a DICOM file's id every
    patient identifier of its header (:func:`scrub_identifiers`) is replaced by its pseudonym, since folder layouts
    such as TCIA's name folders by PatientID. Raises :class:`DataError` for a missing path, an empty selection or a
    bad image.
    """
    from monai_adv.io import image_format

    path = Path(path)
    if path.is_dir():
        items = []
        for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
            try:
                fmt = image_format(file)
            except DataError:
                continue
            relative = file.relative_to(path).as_posix().split(".", 1)[0]
            items.append({"id": scrub_identifiers(relative, file) if fmt == "dicom" else relative, "image": str(file)})
        source = str(path)
    else:
        items = _read_section(path, key)[1]
        source = f"{path} [{key}]"
    if not items:
        raise DataError(f"{source}: no images to run inference on")
    if check_images:
        for index, item in enumerate(items):
            read_image(item["image"], item=str(item.get("id", f"item #{index}")), spatial_dims=spatial_dims)
    return items
