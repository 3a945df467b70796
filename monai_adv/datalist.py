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
    "pseudonymise",
    "pseudonym_salt",
    "PSEUDONYM_SALT_ENV",
]

Item = dict[str, Any]


PSEUDONYM_SALT_ENV = "MONAI_ADV_PSEUDONYM_SALT"


def _salt_file() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config) / "monai_adv" / "pseudonym_salt"


def pseudonym_salt() -> str:
    """The secret salt of :func:`pseudonymise`: ``$MONAI_ADV_PSEUDONYM_SALT`` when set (share it, privately, to get
    the same pseudonyms on several machines), else a random salt made once for this user and kept in
    ``$XDG_CONFIG_HOME/monai_adv/pseudonym_salt`` (``~/.config/...``, mode 0600; created without ever replacing an
    existing one, so concurrent runs agree). A public salt would let anyone who can guess identifiers
    (``LIDC-IDRI-0001``, ``P_00173``, birth dates) reverse the pseudonyms in shared outputs."""
    salt = os.environ.get(PSEUDONYM_SALT_ENV)
    if salt:
        return salt
    path = _salt_file()
    if not path.is_file():
        import secrets

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)  # fails if another run made it first: then its salt is the one
        except FileExistsError:
            pass
        finally:
            os.remove(tmp)
    salt = path.read_text(encoding="utf-8").strip()
    if not salt:
        raise DataError(
            f"{path}: the pseudonym salt file is empty; delete it (a new one is made) or set {PSEUDONYM_SALT_ENV}"
        )
    return salt


def pseudonymise(value: str, salt: str | None = None) -> str:
    """A stable 16-hex-digit stand-in for a patient identifier, so no DICOM PatientID/MRN reaches an output: the
    SHA-256 of the value with a secret salt (:func:`pseudonym_salt` unless ``salt`` is given)."""
    import hashlib

    return hashlib.sha256(f"{pseudonym_salt() if salt is None else salt}:{value}".encode()).hexdigest()[:16]


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


def load_datalist(
    path: str | os.PathLike,
    key: str = "training",
    num_classes: int | None = None,
    check_images: bool = True,
    spatial_dims: int | None = 2,
) -> list[Item]:
    """Load the ``key`` section of a data list, with image paths made absolute, checked by
    :func:`monai_adv.datacheck.check_datalist` (every problem reported at once).

    Args:
        path: the data list JSON.
        key: ``"training"`` or ``"test"`` (or any other section).
        num_classes: the number of classes the caller expects; must equal ``len(classes)`` of the file.
        check_images: also read every image fully once, to fail early on undecodable pixel data or NaN pixels.
        spatial_dims: image dimensionality required (see :func:`monai_adv.io.read_image`).
    """
    from monai_adv.datacheck import check_datalist, datalist_classes

    items = check_datalist(path, [key], spatial_dims=spatial_dims, check_images=check_images)[key]
    classes = datalist_classes(path)
    if num_classes is not None and num_classes != len(classes):
        raise DataError(f"{path}: the data list has {len(classes)} classes {classes}, the caller expects {num_classes}")
    if check_images:
        for item in items:
            read_image(item["image"], item=str(item["id"]), spatial_dims=spatial_dims)
    return items
