"""Images a user points at: a single file, a folder tree, or a data list section, with stable unique ids that carry
no patient identifier, checked from their headers before any work, and (optionally) skipping what cannot be used.

Used by inference (``inference.json``'s ``input_path``) and by ``scripts/prepare_folder.py``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monai_adv.datacheck import GRAYSCALE_KEY, MAX_LISTED, fit_problems
from monai_adv.datalist import pseudonymise
from monai_adv.io import DataError, image_format, image_stem, read_header
from monai_adv.utils import atomic_write_text

__all__ = [
    "PATIENT_IDENTIFIER_KEYWORDS", "FoundFile", "Skipped", "IdentifierScrubber", "identifier_parts",
    "dicom_identifier_values", "scrub_identifiers", "find_images", "load_inference_items",
]

Item = dict[str, Any]

# DICOM attributes whose values never reach an output (ids, CSVs, logs)
PATIENT_IDENTIFIER_KEYWORDS = ("PatientID", "PatientName", "PatientBirthDate", "OtherPatientIDs", "OtherPatientNames")


def identifier_parts(value: str, names: bool = True) -> set[str]:
    """A patient identifier whole and by part: with ``names`` (DICOM person names and IDs) its name components of 3 or
    more characters (``Doe^Jane`` gives ``Doe^Jane``, ``Doe Jane``, ``Doe``, ``Jane``; not for a table's free-form
    patient id, where a part such as ``case`` is a word), and any alphanumeric part of 3 or more characters holding a
    digit (``Calc-Test_P_00173_LEFT_CC`` gives ``00173``: an identifier built around a number is identified by the
    number alone)."""
    value = value.strip()
    if not value:
        return set()
    parts = {value, value.replace("^", " ")}
    if names:
        parts |= {p for p in re.split(r"[\^ ]+", value) if len(p) >= 3}
    parts |= {p for p in re.split(r"[^0-9A-Za-z]+", value) if len(p) >= 3 and any(c.isdigit() for c in p)}
    return parts


def dicom_identifier_values(ds: Any) -> list[str]:
    """The values of :data:`PATIENT_IDENTIFIER_KEYWORDS` in a DICOM data set (multi-valued ones split)."""
    import pydicom

    values = []
    for keyword in PATIENT_IDENTIFIER_KEYWORDS:
        try:
            value = ds.get(keyword)
        except Exception:  # a malformed element of a file read with force=True
            continue
        values += [str(v or "") for v in (value if isinstance(value, pydicom.multival.MultiValue) else [value])]
    return [v for v in values if v.strip()]


class IdentifierScrubber:
    """Replaces identifier values in a text by their pseudonyms (:func:`~monai_adv.datalist.pseudonymise`):
    case-insensitively, the longest value at the leftmost position first, replaced text never matched again.

    ``shared`` values (3 or more characters) are looked for in every text, through an index on their first three
    characters, so that thousands of patients cost microseconds per text; ``own`` values, given per text, only in it
    (digit fragments such as ``0001`` of ``LIDC-IDRI-0001`` are an image's own: sought in every id, they would
    garble the UIDs of other patients' files). ``every_value`` maps any value back to its spelling for the pseudonym.
    """

    def __init__(self, shared: Iterable[str], every_value: Iterable[str]) -> None:
        self.canonical = {v.lower(): v for v in sorted(set(every_value) | set(shared)) if v}
        self.index: dict[str, list[str]] = defaultdict(list)
        for value in {v.lower() for v in shared if len(v) >= 3}:
            self.index[value[:3]].append(value)

    def __call__(self, text: str, own: Iterable[str] = ()) -> str:
        own_lower = {v.lower() for v in own if v}
        lower = text.lower()
        out: list[str] = []
        i = 0
        while i < len(text):
            best = ""
            for value in (*self.index.get(lower[i:i + 3], ()), *own_lower):
                if len(value) > len(best) and lower.startswith(value, i):
                    best = value
            if best:
                out.append(pseudonymise(self.canonical[best]))
                i += len(best)
            else:
                out.append(text[i])
                i += 1
        return "".join(out)


def scrub_identifiers(text: str, dicom_file: str | os.PathLike) -> str:
    """``text`` with every patient identifier of ``dicom_file``'s header replaced by its
    :func:`~monai_adv.datalist.pseudonymise` value: the values of :data:`PATIENT_IDENTIFIER_KEYWORDS`, whole and by
    part (:func:`identifier_parts`; a folder ``P_00173`` of PatientID ``Calc-Test_P_00173_LEFT_CC`` becomes
    ``P_<pseudonym>``), as :class:`IdentifierScrubber` replaces them. A file whose header cannot be read leaves
    ``text`` as it is (the image check reports the file).
    """
    import pydicom

    try:
        ds = pydicom.dcmread(str(dicom_file), stop_before_pixels=True, force=True)
    except Exception:
        return text
    values = set().union(*(identifier_parts(v) for v in dicom_identifier_values(ds)))
    return IdentifierScrubber((), values)(text, own=values) if values else text


@dataclass(frozen=True)
class FoundFile:
    """A file found in a folder: its path, the id it gets, and whether its name makes it an image candidate."""

    path: Path
    id: str
    candidate: bool


@dataclass(frozen=True)
class Skipped:
    """A file left out, and why (the reason never holds the file's path)."""

    id: str
    reason: str


def find_images(root: str | os.PathLike) -> list[FoundFile]:
    """Every visible file below ``root``, sorted, with its id: the path relative to ``root`` without its image suffix
    (``.dcm``, ``.nii.gz``, ``.png``...), patient identifiers of a DICOM file's header replaced by pseudonyms
    (:func:`scrub_identifiers`; TCIA folders are named by PatientID). ``candidate`` is false for files whose name is
    not that of an image (``.xml``, ``.txt``...); names without a suffix, or with a numeric one (DICOM UIDs), are
    candidates.

    Raises:
        DataError: when two files would get the same id (``scan.png`` beside ``scan.jpg``), naming both.
    """
    root = Path(root)
    found: list[FoundFile] = []
    owners: dict[str, Path] = {}
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    for file in files:
        relative = file.relative_to(root).as_posix()
        try:
            fmt = image_format(file)
        except DataError:
            found.append(FoundFile(file, relative, candidate=False))
            continue
        stem = image_stem(relative)
        item_id = scrub_identifiers(stem, file) if fmt == "dicom" else stem
        if item_id.lower() in owners:
            raise DataError(
                f"{root}: {owners[item_id.lower()].relative_to(root)} and {relative} would both get the id "
                f"{item_id!r}: rename one of them (ids key every output row and per-image seed)"
            )
        owners[item_id.lower()] = file
        found.append(FoundFile(file, item_id, candidate=True))
    return found


def _reason(error: DataError, item_id: str, path: str | os.PathLike) -> str:
    """The error's message without the item and path it starts with."""
    text = str(error)
    for prefix in (f"{item_id} ({path}): ", f"{path}: "):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


def _check(
    item: Item, spatial_dims: int | None, channels: int | None, native_units: str | None, declared_units: str | None
) -> None:
    header = read_header(item["image"], item=item["id"], spatial_dims=spatial_dims)
    problems = fit_problems(header, item, channels, native_units, declared_units)
    if problems:
        raise DataError(f"{item['id']} ({item['image']}): {'; '.join(problems)}")


def _write_skipped(path: str | os.PathLike, skipped: Iterable[Skipped]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "reason"])
    for entry in skipped:
        writer.writerow([entry.id, entry.reason])
    atomic_write_text(path, buffer.getvalue())


def load_inference_items(
    path: str | os.PathLike,
    key: str = "test",
    spatial_dims: int | None = 2,
    channels: int | None = None,
    native_units: str | None = None,
    skip_unreadable: bool = False,
    skipped_file: str | os.PathLike | None = None,
    log: Any = None,
    input_units: str | None = None,
) -> list[Item]:
    """Images to run inference on, checked from their headers: a single image file, every image file in a folder
    tree (:func:`find_images`), or a data list's ``key`` section (labels optional).

    A file that cannot be used (unreadable, not an image such as a DICOM SEG, RTSTRUCT or DICOMDIR, the wrong
    dimensionality or channel count, or not in HU for a model windowing HU) stops the run with one
    :class:`~monai_adv.io.DataError` listing every such file, unless ``skip_unreadable``: then those files are left
    out, listed with their reason in ``skipped_file`` (a CSV ``id,reason``; written, empty of rows, in every
    skipping run), and every other file is returned. Files in a folder whose names are not image names (``.xml``,
    ``.txt``...) are never images: they are left out, counted in ``log``, and listed in ``skipped_file``.

    Args:
        path: an image file, a folder, or a data list JSON.
        key: the data list section.
        spatial_dims: the image dimensionality the network takes.
        channels: the channel count the network takes; ``None`` accepts any.
        native_units: the model's intensity units; ``"HU"`` accepts CT DICOM with rescale tags, and NIfTI or NumPy
            files declared HU (by a data list's ``native_units``, else by ``input_units``).
        skip_unreadable: leave out files that cannot be used instead of stopping.
        skipped_file: where the skipped files are listed (with ``skip_unreadable``).
        log: a callable taking a line (e.g. a logger's ``info``); ``None`` logs nothing.
        input_units: the units of NIfTI and NumPy inputs that no data list declares (e.g. ``"HU"``).

    Returns:
        Items ``{"id", "image"[, "label"][, "to_grayscale"]}`` with absolute image paths, ids unique, every item with
        the same keys (a batch collates by its first item's): labels only when every item has one, and
        ``to_grayscale`` on every item when any has it.

    Raises:
        DataError: a missing path, an empty selection, files that cannot be used (without ``skip_unreadable``),
            duplicate ids, or nothing left after skipping.
    """
    path = Path(path)
    ignored: list[Skipped] = []
    declared = input_units
    if path.is_dir() and (path / "datalist.json").is_file():
        raise DataError(
            f"input_path {path} holds a data list: pass --input_path {path / 'datalist.json'} to run on its "
            f"'{key}' section (input_key chooses another), or a folder that holds images only"
        )
    if path.is_dir():
        found = find_images(path)
        items = [{"id": f.id, "image": str(f.path)} for f in found if f.candidate]
        ignored = [
            Skipped(f.id, f"not an image file name ({f.path.suffix or 'no suffix'})") for f in found if not f.candidate
        ]
        source = str(path)
    elif path.is_file() and path.name.lower().endswith(".json"):
        from monai_adv.datacheck import check_datalist

        items = check_datalist(path, [key], check_images=False, require_labels=False)[key]
        declared = json.loads(path.read_text(encoding="utf-8")).get("native_units") or input_units
        source = f"{path} [{key}]"
    elif path.is_file():
        image_format(path)  # raises for a file that is neither an image nor a data list
        items = [{"id": image_stem(path.name), "image": str(path)}]
        source = str(path)
    else:
        raise DataError(f"input_path {path}: no such file or folder")
    if ignored and log is not None:
        suffixes = sorted({Path(s.id).suffix or "no suffix" for s in ignored})
        log(f"{source}: left out {len(ignored)} file(s) whose names are not image names ({', '.join(suffixes)})")
    if not items:
        raise DataError(f"{source}: no images to run inference on")
    labelled = sum("label" in item for item in items)
    if 0 < labelled < len(items) and log is not None:
        log(f"{source}: some items have a label and some do not: labels are left out of the predictions")
    # every item gets the same keys (a batch collates by its first item's keys): id, image, the label when all have
    # one, the grayscale mark when any has it
    gray = any(GRAYSCALE_KEY in item for item in items)
    items = [
        {"id": item["id"], "image": item["image"], **({"label": item["label"]} if labelled == len(items) else {}),
         **({GRAYSCALE_KEY: bool(item.get(GRAYSCALE_KEY))} if gray else {})}
        for item in items
    ]
    problems: list[tuple[Item, DataError]] = []
    for item in items:
        try:
            _check(item, spatial_dims, channels, native_units, declared)
        except DataError as error:
            problems.append((item, error))
    if problems and not skip_unreadable:
        listed = [str(e) for _, e in problems[:MAX_LISTED]]
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        named = f"; {len(ignored)} more whose names are not image names are left out" if ignored else ""
        raise DataError(
            f"{source}: {len(problems)} of {len(items)} image file(s) cannot be used{named} (set skip_unreadable to "
            "true to leave them out and list them in skipped.csv):\n  - " + "\n  - ".join(listed) + more
        )
    bad = {id(item) for item, _ in problems}
    kept = [item for item in items if id(item) not in bad]
    skipped = [Skipped(str(item["id"]), _reason(e, str(item["id"]), item["image"])) for item, e in problems] + ignored
    if skip_unreadable and skipped_file is not None:
        _write_skipped(skipped_file, skipped)
    if problems and log is not None:
        log(f"{source}: skipped {len(problems)} file(s) that cannot be used; reasons in {skipped_file}")
    if not kept:
        raise DataError(f"{source}: none of the {len(items)} file(s) can be used (reasons in {skipped_file})")
    return kept
