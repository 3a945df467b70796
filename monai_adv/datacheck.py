"""Checking a whole data list once, before any training or attack starts, and reporting every problem at once.

:func:`check_datalist` reads the data list and only the headers of its images (milliseconds per file), so a run
with a wrong path, a missing section, a label outside the classes or a file that is not an image stops within
seconds, with one :class:`~monai_adv.io.DataError` that lists each problem with the item it concerns, instead of
failing one item at a time, or after hours of training. What it checks:

- the data list is a JSON object with ``classes`` (distinct names), agreeing with the run's ``class_names``; it lies
  inside ``dataset_dir`` when that folder exists (a data location on the command line and another from an overlay
  would otherwise silently disagree);
- every section the run needs exists and is non-empty;
- every item has an ``id`` (unique over all sections: ids key outputs and per-image seeds, so a duplicate would
  silently merge two images), an ``image`` and an integer ``label`` in ``[0, len(classes))``;
- no patient is on both the training and the test side;
- the validation split carved from ``training`` by patient (``val_fraction``) and the rest each hold every class;
- every image exists and its header reads (:func:`monai_adv.io.read_header`): the dimensionality, the channel count
  (an item may ask for RGB-to-gray conversion with ``"to_grayscale": true``), DICOM objects that are not images
  (SEG, RTSTRUCT, RTPLAN, SR, presentation states...), CT without rescale tags; and, for a run whose intensity
  window is in Hounsfield units (``native_units`` ``"HU"``), images that cannot be in HU (PNG/JPEG, non-CT DICOM,
  NIfTI or NumPy files of a data list that does not declare ``"native_units": "HU"``).
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai_adv.io import DataError, ImageHeader, read_header

__all__ = ["check_datalist", "datalist_classes", "fit_problems", "GRAYSCALE_KEY", "MAX_LISTED"]

Item = dict[str, Any]

# the item key asking for RGB images to be converted to one gray channel (set by scripts/prepare_folder.py --grayscale)
GRAYSCALE_KEY = "to_grayscale"
# how many problems one error message lists; the rest are counted
MAX_LISTED = 40


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"data list not found: {path}")
    try:
        datalist = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a valid JSON data list: {e}") from e
    if not isinstance(datalist, dict):
        raise DataError(f"{path}: not a data list (a JSON object with 'classes' and sections such as 'training')")
    return datalist


def datalist_classes(datalist_file: str | os.PathLike) -> list[str]:
    """The ``classes`` of a data list, in label order: what the bundles use as ``class_names``, so outputs and the
    report carry the data's own class names.

    Raises:
        DataError: naming the file, when it is missing, not a data list, or has no (or a malformed) ``classes``.
    """
    path = Path(datalist_file)
    return _listed_classes(path, _read(path))


def _listed_classes(path: Path, datalist: dict[str, Any]) -> list[str]:
    classes = datalist.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise DataError(
            f"{path}: the data list needs 'classes', the class names in label order (e.g. [\"benign\", "
            "\"malignant\"]); add them, or set class_names on the command line"
        )
    return list(classes)


def fit_problems(
    header: ImageHeader, item: Item, channels: int | None, native_units: str | None, declared_units: str | None
) -> list[str]:
    """Why an image whose header reads does not fit the run: its channel count (an RGB image of an item marked
    ``to_grayscale`` fits one channel), or, for a run windowing Hounsfield units (``native_units`` ``"HU"``), values
    that cannot be HU: PNG/JPEG, DICOM other than CT with rescale tags, and NIfTI or NumPy files unless their units
    are declared HU (``declared_units``: the data list's ``native_units``). Empty when it fits."""
    problems = []
    got = header.shape[0]
    if channels is not None and got != channels and not (channels == 1 and got == 3 and item.get(GRAYSCALE_KEY)):
        hint = " (RGB: convert it explicitly, e.g. scripts/prepare_folder.py --grayscale)" if got == 3 else ""
        problems.append(f"expected {channels} channel(s), got {got}{hint}")
    declared_hu = str(declared_units or "").upper() == "HU" and header.format in ("nifti", "numpy")
    if str(native_units or "").upper() == "HU" and not header.hounsfield and not declared_hu:
        kind = {
            "pil": "a PNG/JPEG image", "dicom": f"a DICOM image of Modality {header.modality or 'none'}",
        }.get(header.format, "a NIfTI/NumPy file whose units are not declared HU (a data list's native_units; "
              "inference: input_units)")
        problems.append(
            f"{kind} is not in Hounsfield units, but this run windows HU (native_units HU): use a bundle that "
            "scales intensities by percentiles, or data in HU"
        )
    return problems


def _resolve(path: Path, item: Item) -> Item:
    item = dict(item)
    image = item.get("image")
    if isinstance(image, str) and image and not os.path.isabs(image):
        item["image"] = str(path.parent / image)
    return item


def _label_problem(label: Any, classes: Sequence[str]) -> str | None:
    if isinstance(label, str):
        hint = f" (class {classes.index(label)})" if label in classes else ""
        return f"label {label!r} is a string{hint}: data lists hold class indices 0..{len(classes) - 1}"
    if isinstance(label, bool) or not isinstance(label, int):
        return f"label {label!r} is not an integer class index 0..{len(classes) - 1}"
    if not 0 <= label < len(classes):
        return f"label {label!r} is outside the classes 0..{len(classes) - 1}"
    return None


def check_datalist(
    datalist_file: str | os.PathLike,
    sections: Sequence[str] = ("training",),
    class_names: Sequence[str] | None = None,
    spatial_dims: int | None = 2,
    channels: int | None = None,
    native_units: str | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    dataset_dir: str | os.PathLike | None = None,
    check_images: bool = True,
    require_labels: bool = True,
) -> dict[str, list[Item]]:
    """Check a data list for a run that reads ``sections``, and return those sections' items.

    Args:
        datalist_file: the data list JSON.
        sections: the sections the run reads (``"training"``, ``"test"``...).
        class_names: the run's class names; the data list's ``classes`` must equal them. ``None`` takes the file's.
        spatial_dims: the image dimensionality the network takes (2 or 3).
        channels: the channel count the network takes; ``None`` accepts any.
        native_units: the run's intensity units; ``"HU"`` requires every image to be in Hounsfield units.
        val_fraction: the fraction of training patients carved off for validation
            (:func:`monai_adv.datalist.carve_validation`); ``None`` when the run carves none.
        seed: the seed of that carving.
        dataset_dir: the run's ``dataset_dir``; when it exists, the data list must lie inside it.
        check_images: read every image's header.
        require_labels: every item needs a ``label`` and the data list ``classes``; without it (inference inputs)
            they are checked only where present.

    Returns:
        ``{section: items}``, each item a copy with its ``image`` path made absolute (relative to the data list's
        folder).

    Raises:
        DataError: one error listing every problem found (up to :data:`MAX_LISTED`, then a count), each naming the
            data list section and the item.
    """
    path = Path(datalist_file)
    datalist = _read(path)
    problems: list[str] = []
    if dataset_dir is not None and Path(dataset_dir).is_dir() and not path.resolve().is_relative_to(
        Path(dataset_dir).resolve()
    ):
        problems.append(
            f"datalist_file {path} is not inside dataset_dir {dataset_dir}: two settings name different data "
            "(is an overlay setting one of them?); set dataset_dir to the data list's folder, or datalist_file "
            "to a file in dataset_dir"
        )
    classes = _classes(path, datalist, class_names, require_labels, problems)
    found = _sections(path, datalist, sections, problems)
    problems += _duplicate_ids(datalist)
    for section, items in found.items():
        for index, item in enumerate(items):
            problems += _item_problems(
                section, index, item, classes, require_labels, datalist.get("native_units"),
                spatial_dims, channels, native_units, check_images,
            )
    problems += _shared_patients(found, datalist)
    if val_fraction:
        problems += _validation_split_problems(found.get("training", []), classes, val_fraction, seed)
    if problems:
        listed = problems[:MAX_LISTED]
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise DataError(
            f"{path}: {len(problems)} problem(s) found before any work started:\n  - " + "\n  - ".join(listed) + more
        )
    return found


def _classes(
    path: Path, datalist: dict[str, Any], class_names: Sequence[str] | None, require_labels: bool, problems: list[str]
) -> list[str]:
    """The data list's classes (the run's when it has none), appending what is wrong with them to ``problems``."""
    try:
        classes = _listed_classes(path, datalist)
    except DataError as error:
        if require_labels or "classes" in datalist:
            problems.append(str(error).removeprefix(f"{path}: "))
        classes = list(class_names or [])
    if len(set(classes)) != len(classes):
        problems.append(f"'classes' repeats a name: {classes}")
    if class_names is not None and list(class_names) != classes and "classes" in datalist:
        problems.append(
            f"the data list's classes {classes} differ from the run's class_names {list(class_names)}: labels would "
            "be read as the wrong classes"
        )
    return classes


def _sections(path: Path, datalist: dict[str, Any], sections: Sequence[str], problems: list[str]) -> dict[str, list]:
    """The non-empty sections asked for, image paths made absolute; a missing or empty one goes to ``problems``."""
    found: dict[str, list] = {}
    for section in sections:
        raw = datalist.get(section)
        if raw is None:
            present = sorted(k for k, v in datalist.items() if isinstance(v, list) and k != "classes")
            problems.append(f"[{section}] section missing (the data list has {present})")
        elif not isinstance(raw, list):
            problems.append(f"[{section}] is not a list of items")
        elif not raw:
            problems.append(f"[{section}] section is empty")
        else:
            found[section] = [_resolve(path, i) if isinstance(i, dict) else i for i in raw]
    return found


def _duplicate_ids(datalist: dict[str, Any]) -> list[str]:
    """An id used by several items of any sections: each such id with every item using it."""
    owners: dict[str, list[str]] = defaultdict(list)
    for section in [s for s in datalist if isinstance(datalist.get(s), list) and s != "classes"]:
        for index, item in enumerate(datalist[section]):
            if isinstance(item, dict) and item.get("id") not in (None, ""):
                owners[str(item["id"])].append(f"[{section}] #{index} ({item.get('image')})")
    return [f"id {item_id!r} is used by {len(where)} items: {'; '.join(where)}"
            for item_id, where in owners.items() if len(where) > 1]


def _item_problems(
    section: str, index: int, item: Any, classes: Sequence[str], require_labels: bool, declared_units: str | None,
    spatial_dims: int | None, channels: int | None, native_units: str | None, check_images: bool,
) -> list[str]:
    """What is wrong with one item: its keys, its label, and (with ``check_images``) its image's header."""
    if not isinstance(item, dict):
        return [f"[{section}] #{index}: not an item (a JSON object with id, image, label)"]
    name = str(item.get("id") or f"#{index}")
    where = f"[{section}] {name}"
    problems = []
    needed = ("id", "image", "label") if require_labels else ("id", "image")
    missing = [k for k in needed if item.get(k) in (None, "")]
    if missing:
        problems.append(f"{where}: no {', no '.join(repr(k) for k in missing)}")
    if "label" in item and classes:
        problem = _label_problem(item["label"], classes)
        if problem:
            problems.append(f"{where}: {problem}")
    if not check_images or not isinstance(item.get("image"), str) or not item["image"]:
        return problems
    try:
        header = read_header(item["image"], item=name, spatial_dims=spatial_dims)
    except DataError as error:
        return problems + [f"[{section}] {error}"]
    return problems + [
        f"{where} ({item['image']}): {problem}"
        for problem in fit_problems(header, item, channels, native_units, declared_units)
    ]


def _patient(item: dict[str, Any]) -> str:
    return str(item.get("patient_id") or item.get("id"))


def _shared_patients(found: dict[str, list], datalist: dict[str, Any]) -> list[str]:
    """A patient on both the training and the test side."""
    test = datalist.get("test")
    if "training" not in found or not isinstance(test, list):
        return []
    training = {_patient(i) for i in found["training"] if isinstance(i, dict)}
    shared = sorted(training & {_patient(i) for i in test if isinstance(i, dict)})
    return [f"{len(shared)} patient(s) on both the training and the test side, e.g. {shared[:5]}"] if shared else []


def _validation_split_problems(training: list, classes: Sequence[str], val_fraction: float, seed: int) -> list[str]:
    """A class missing from the validation split the bundles carve by patient, or from the rest (checked only when
    every training label is valid: the carving needs them)."""
    from monai_adv.datalist import carve_validation

    labelled = bool(classes) and all(
        isinstance(i, dict) and _label_problem(i.get("label"), classes) is None for i in training
    )
    if not training or not labelled:
        return []
    fit, validation = carve_validation(training, fraction=val_fraction, seed=seed)
    n_patients = len({_patient(i) for i in training})
    problems = []
    for part, items in (("validation split", validation), ("training split", fit)):
        counts = Counter(int(i["label"]) for i in items)
        absent = [c for k, c in enumerate(classes) if not counts.get(k)]
        if absent:
            problems.append(
                f"[training] the {part} (val_fraction {val_fraction}, carved by patient from {n_patients} "
                f"patient(s) and {len(training)} item(s)) has no item of class {', '.join(map(repr, absent))}: "
                "early stopping and checkpoint choice need every class on both sides; add patients"
            )
    return problems
