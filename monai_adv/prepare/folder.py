"""Your own images, in one command: a labelled folder tree or a table of PNG, JPEG, DICOM or NIfTI files to a data
list the bundles and the study read (``scripts/prepare_folder.py``).

Sources:

- a folder tree ``<source>/<class>/...``: the class names are the first-level folder names; images may lie anywhere
  below their class folder (a TCIA tree ``<PatientID>/<study>/<series>/<UID>.dcm`` inside a class folder is fine);
- a table: a CSV file with a header row and the columns ``path``, ``label`` and optionally ``patient_id`` (extra
  columns are ignored); paths relative to the table's folder, or absolute.

Hidden files and folders (names starting with ``.``) are ignored. Files are neither copied nor converted: each image
gets a symbolic link ``<output>/images/<id><suffix>`` to it, and the data list holds the links' absolute paths, so
that no folder or file name of the source (TCIA folders are named by PatientID) reaches the data list.

Rules:

- Classes. Labels that are all integers must be exactly ``0..K-1`` (class names ``"0"``.. ``"K-1"``); other labels
  are names, sorted. ``class_names`` gives the names (for integer labels) or their order (for names); it must list
  exactly the classes present. Labels mixing integers and names, labels differing only in case, fewer than two
  classes and a class without images are errors, never guesses. A folder's class folders follow the same rules.
- Ids: the path relative to the source folder (or to the table's folder; an absolute path outside it without its
  root) without its image suffix, with patient identifiers replaced by their pseudonyms: the file's own (the values
  of :data:`monai_adv.inputs.PATIENT_IDENTIFIER_KEYWORDS` in its DICOM header, its table row's ``patient_id``),
  whole and by part as :func:`monai_adv.inputs.scrub_identifiers` reads them; and in every id, the whole values of
  every header and row of the source (a folder named by a PatientID may hold files without a header). Two files
  with one id (``scan.png`` beside ``scan.jpg``, one file listed twice) are an error naming both.
- Patients: the table's ``patient_id``, else the DICOM header's PatientID, else each image is its own patient (a
  warning says so: the split by patient is then a split by image). Stored pseudonymised
  (:func:`monai_adv.datalist.pseudonymise`).
- Split: ``test_fraction`` (default 1/3, the paper's 2:1) of each class's images to ``test`` by patient, seeded
  (:func:`monai_adv.datalist.split_by_patient`). Nothing is dropped unless ``balance`` asks for seeded undersampling.
  Every class must reach both sides (a class of one patient cannot: named in the error).
- Channels: gray and RGB images are not mixed silently. ``grayscale`` marks RGB items with ``"to_grayscale": true``
  (:data:`monai_adv.datacheck.GRAYSCALE_KEY`; the bundles' ``LoadCropd`` converts them); without it a source mixing
  gray and RGB images is an error naming the option.
- Modality and units, from the files where they say: DICOM CT (rescale tags are required) is ``"CT"``/``"HU"``,
  other DICOM images carry their Modality and RescaleType (``"raw intensity"`` when absent or unspecified),
  PNG/JPEG are ``"gray levels"``; NIfTI and NumPy files say nothing, so ``native_units`` declares theirs (e.g.
  ``"HU"``; ``"raw intensity"`` otherwise) and ``modality`` their modality (``"unknown"`` otherwise). A declaration
  contradicting a DICOM or PNG/JPEG file is an error. Mixed values are listed as they are (``"CT+MR"``).
- Files that cannot be used (not an image name such as README.txt or .csv, a DICOM SEG, RTSTRUCT or DICOMDIR, an
  unreadable file, the wrong dimensionality, a missing file named by the table, a file outside any class folder)
  stop the run with one error listing every file and why, unless ``skip_unreadable``: then they are left out and
  listed in ``<output>/skipped.csv`` (``id,reason``; written, maybe without rows, in every skipping run).
- The data list is checked as the bundles will check it
  (:func:`monai_adv.datacheck.check_datalist`, including a validation split of ``val_fraction`` with every class),
  every problem at once, before it replaces ``<output>/datalist.json`` (written atomically).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai_adv.datacheck import GRAYSCALE_KEY, MAX_LISTED, check_datalist
from monai_adv.datalist import balance_classes, pseudonymise, split_by_patient, write_datalist
from monai_adv.inputs import IdentifierScrubber, dicom_identifier_values, identifier_parts
from monai_adv.io import DataError, ImageHeader, image_format, image_stem, read_header
from monai_adv.prepare.common import IMAGES_DIR, read_csv_rows
from monai_adv.utils import atomic_write_text

__all__ = ["prepare", "prepare_folder", "parse_class_names", "DATALIST", "SKIPPED"]

DATALIST = "datalist.json"
SKIPPED = "skipped.csv"
TABLE_COLUMNS = ("path", "label")
PATIENT_COLUMN = "patient id"  # read_csv_rows' normalised name of patient_id
INTEGER = re.compile(r"[+-]?\d+")
# what a file format says about its units when the header does not
PIL_UNITS = "gray levels"
RAW_UNITS = "raw intensity"
UNKNOWN_MODALITY = "unknown"

Item = dict[str, Any]


@dataclass
class _Entry:
    """One file of the source (or one table row), from discovery to its data-list item."""

    path: Path  # absolute, as given (links not resolved)
    shown: str  # how messages name it: relative to the source folder, or "table.csv line N (cell)"
    raw_id: str  # the id before identifiers are scrubbed (image suffix removed)
    link_suffix: str = ""  # the suffix the link keeps so the format reads the same
    label: str | None = None
    table_patient: str = ""
    problem: str | None = None  # why the file cannot be used (a reason without the path)
    fmt: str | None = None
    header: ImageHeader | None = None
    dicom: dict[str, Any] = field(default_factory=dict)  # PatientID, RescaleType, identifier values
    id: str = ""


def parse_class_names(text: str | Sequence[str] | None) -> list[str] | None:
    """``"a,b,c"`` (or a list) to ``["a", "b", "c"]``; ``None`` stays ``None``. Empty or repeated names raise."""
    if text is None:
        return None
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    if not names or any(not n for n in names):
        raise DataError(f"--class_names {text!r}: give the class names separated by commas, none empty (e.g. a,b,c)")
    repeated = sorted(n for n, c in Counter(names).items() if c > 1)
    if repeated:
        raise DataError(f"--class_names {text!r} repeats {repeated}")
    return names


# identifiers ---------------------------------------------------------------------------------------------------------


def _whole(value: str) -> set[str]:
    """A whole identifier value (and a person name with spaces for ``^``), when it has 3 or more characters: what
    is scrubbed from every id of the source, since a folder named by it may hold files that carry no header."""
    value = value.strip()
    return {v for v in (value, value.replace("^", " ")) if len(v) >= 3}


def _dicom_fields(path: Path) -> dict[str, Any]:
    """PatientID, RescaleType and the identifier values of a DICOM file's header: by part (``own``) and whole
    (``shared``). Empty when the header does not read."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
    except Exception:  # pydicom raises many types for files that are not DICOM; read_header names the problem
        return {}
    values = dicom_identifier_values(ds)
    own = set().union(*(identifier_parts(v) for v in values))
    shared = set().union(*(_whole(v) for v in values))
    try:
        patient, rescale_type = str(ds.get("PatientID") or "").strip(), str(ds.get("RescaleType") or "").strip()
    except Exception:
        patient, rescale_type = "", ""
    return {"patient": patient, "rescale_type": rescale_type, "own": own, "shared": shared}


# discovery -----------------------------------------------------------------------------------------------------------


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def _entry(path: Path, shown: str, relative: str, label: str | None) -> _Entry:
    """An entry whose id comes from ``relative``; a file that is not an image by name gets its problem now."""
    try:
        fmt = image_format(path)
    except DataError:
        problem = f"not an image file name ({path.suffix or 'no suffix'})"
        return _Entry(path, shown, relative, label=label, problem=problem)
    stem = image_stem(relative)
    suffix = relative[len(stem):]
    # a DICOM file named without .dcm keeps being read as DICOM after the id is scrubbed
    return _Entry(path, shown, stem, suffix or (".dcm" if fmt == "dicom" else ""), label=label, fmt=fmt)


def _from_folder(source: Path) -> tuple[list[_Entry], list[str]]:
    """Every visible file below ``source`` and the class folder names."""
    classes = sorted(p.name for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
    entries = []
    for path in sorted(p for p in source.rglob("*") if p.is_file() and _visible(p, source)):
        relative = path.relative_to(source).as_posix()
        parts = path.relative_to(source).parts
        entry = _entry(path, relative, relative, parts[0] if len(parts) > 1 else None)
        if len(parts) == 1:
            entry.problem = "not inside a class folder (<source>/<class>/...)"
        entries.append(entry)
    return entries, classes


def _from_table(table: Path) -> tuple[list[_Entry], list[str]]:
    """One entry per table row, and the rows' labelling problems (never skipped: they are not file problems)."""
    rows = read_csv_rows(table, TABLE_COLUMNS)
    if not rows:
        raise DataError(f"{table}: the table has no rows (columns path,label[,patient_id]); nothing to prepare")
    folder = Path(os.path.abspath(table.parent))
    entries, problems = [], []
    for line, row in rows:
        cell = row["path"]
        if not row["label"]:
            problems.append(f"{table.name} line {line}: empty label")
        shown = f"{table.name} line {line} ({cell or 'no path'})"
        if not cell:
            entries.append(_Entry(folder, shown, f"line {line}", label=row["label"] or None, problem="empty path"))
            continue
        path = Path(os.path.normpath(folder / cell))
        base = folder if path.is_relative_to(folder) else Path(path.anchor)
        relative = path.relative_to(base).as_posix()
        entry = _entry(path, shown, relative, row["label"] or None)
        entry.table_patient = row.get(PATIENT_COLUMN, "")
        if entry.problem is None and not path.is_file():
            entry.problem = "a folder, not an image file" if path.is_dir() else "file not found"
        entries.append(entry)
    return entries, problems


def _read_headers(entries: Sequence[_Entry], spatial_dims: int) -> None:
    for entry in entries:
        if entry.fmt == "dicom" and entry.path.is_file():
            entry.dicom = _dicom_fields(entry.path)
        if entry.problem is not None:
            continue
        try:
            entry.header = read_header(entry.path, spatial_dims=spatial_dims)
        except DataError as error:
            entry.problem = str(error).removeprefix(f"{entry.path}: ")


# classes, channels, units --------------------------------------------------------------------------------------------


def _classes(labels: Sequence[str], class_names: list[str] | None, what: str) -> tuple[list[str], dict[str, int]]:
    """The class names and the label index of every label, or :class:`DataError` naming the setting to fix."""
    present = sorted(set(labels))
    by_case: dict[str, list[str]] = defaultdict(list)
    for label in present:
        by_case[label.lower()].append(label)
    same = [v for v in by_case.values() if len(v) > 1]
    if same:
        raise DataError(f"{what}: labels differing only in case would be different classes: {same}; make them one")
    integers = [label for label in present if INTEGER.fullmatch(label)]
    if integers and len(integers) != len(present):
        names = [label for label in present if label not in integers]
        raise DataError(
            f"{what}: labels mix integers {integers} and names {names}: use class indices 0..K-1 everywhere, or names "
            "everywhere (their order set by --class_names)"
        )
    if integers:
        values = sorted(int(label) for label in integers)
        if len(set(values)) != len(values):
            raise DataError(f"{what}: labels {integers} write one integer in several ways; write each class one way")
        if values != list(range(len(values))):
            missing = sorted(set(range(max(values[-1] + 1, len(values)))) - set(values))
            raise DataError(
                f"{what}: integer labels must be exactly the class indices 0..K-1; found {values}"
                + (f" (no {missing[:10]})" if missing else "")
                + ": renumber them, or label with names (their order set by --class_names)"
            )
        names = class_names or [str(v) for v in values]
        if len(names) != len(values):
            raise DataError(
                f"--class_names {','.join(names)} names {len(names)} classes, but {what} holds the {len(values)} "
                f"class indices 0..{len(values) - 1}: name each class present, in index order"
            )
        return list(names), {label: int(label) for label in integers}
    if class_names is not None:
        extra, absent = sorted(set(class_names) - set(present)), sorted(set(present) - set(class_names))
        if extra or absent:
            raise DataError(
                f"--class_names must list exactly the classes present ({', '.join(present)}): "
                + "; ".join(filter(None, [extra and f"{extra} have no images", absent and f"{absent} are not listed"]))
            )
        names = list(class_names)
    else:
        names = present
    return names, {name: index for index, name in enumerate(names)}


def _units(entry: _Entry, native_units: str | None) -> str:
    header = entry.header
    assert header is not None
    if header.format == "dicom":
        if header.hounsfield:
            return "HU"
        rescale_type = entry.dicom.get("rescale_type", "")
        return rescale_type if rescale_type and rescale_type.upper() != "US" else RAW_UNITS
    if header.format == "pil":
        return PIL_UNITS
    return native_units or RAW_UNITS


def _describe(values: Iterable[str]) -> str:
    found = sorted(set(values))
    return found[0] if len(found) == 1 else "+".join(found)


# writing -------------------------------------------------------------------------------------------------------------


def _refuse_foreign_datalist(path: Path) -> None:
    """Stop before replacing a ``datalist.json`` that this command did not write (its ``prepared_by`` is not this
    module): it is the user's, or another preparation's."""
    if not path.exists():
        return
    try:
        written_by = json.loads(path.read_text(encoding="utf-8")).get("prepared_by")
    except (OSError, ValueError, AttributeError):
        written_by = None
    if written_by != __name__:
        raise DataError(
            f"{path}: a data list this command did not write is already there; it is not replaced: move it, or "
            "choose another output folder"
        )


def _link(target: Path, link: Path) -> None:
    """``link`` -> ``target`` (absolute), replacing an earlier link atomically; a real file there is never replaced."""
    if link.exists() and not link.is_symlink():
        raise DataError(f"{link}: exists and is not a link made by prepare_folder; choose another --output")
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(os.path.abspath(target), tmp)
        os.replace(tmp, link)
    except OSError as error:
        if tmp.is_symlink():
            tmp.unlink()
        raise DataError(f"{link}: cannot link to the image: {error}") from error


def _remove_stale_links(images: Path, keep: set[str]) -> None:
    """Remove links (only links) under ``images`` that the new data list does not use, then empty folders."""
    if not images.is_dir():
        return
    for path in sorted(images.rglob("*"), reverse=True):
        if path.is_symlink() and str(path) not in keep:
            path.unlink()
        elif path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            path.rmdir()


def _write_skipped(path: Path, skipped: Sequence[tuple[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "reason"])
    writer.writerows(skipped)
    atomic_write_text(path, buffer.getvalue())


def _listing(problems: Sequence[str]) -> str:
    listed = problems[:MAX_LISTED]
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return "\n  - " + "\n  - ".join(listed) + more


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# the preparation -----------------------------------------------------------------------------------------------------


def prepare_folder(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    seed: int = 0,
    test_fraction: float = 1 / 3,
    grayscale: bool = False,
    class_names: str | Sequence[str] | None = None,
    native_units: str | None = None,
    modality: str | None = None,
    spatial_dims: int = 2,
    skip_unreadable: bool = False,
    balance: bool = False,
    val_fraction: float = 0.2,
    val_seed: int = 0,
    name: str | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Turn a labelled folder tree or a table of images into ``<output>/datalist.json`` (see the module docstring for
    the rules) and return its path.

    Args:
        source: a folder ``<source>/<class>/...``, or a CSV table ``path,label[,patient_id]``.
        output: the output folder: ``datalist.json``, ``images/`` (links to the images) and, when skipping,
            ``skipped.csv``.
        seed: the seed of the split by patient (and of ``balance``).
        test_fraction: the fraction of each class's images on the test side (by patient).
        grayscale: mark RGB images for conversion to one gray channel.
        class_names: the class names (integer labels) or their order (names), as a list or ``"a,b,c"``.
        native_units: the units of NIfTI and NumPy images (e.g. ``"HU"``).
        modality: the modality of NIfTI, NumPy and PNG/JPEG images (DICOM headers give theirs).
        spatial_dims: 2 for images, 3 for volumes.
        skip_unreadable: leave out files that cannot be used, listed in ``skipped.csv``, instead of stopping.
        balance: drop images of the larger classes (seeded) until the classes are equal.
        val_fraction: the validation fraction the bundles carve from ``training`` (checked to hold every class).
        val_seed: the seed the bundles carve it with: their ``seed`` id (0 unless you change it).
        name: the data set's name (default: the source folder's or table's name).
        log: a callable taking a line, for warnings and notes (default: standard error).

    Raises:
        DataError: every problem found, at once where they can be found together.
    """
    say = log or _warn
    source, output = Path(source), Path(output)
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"--test_fraction {test_fraction}: must lie strictly between 0 and 1")
    if spatial_dims not in (2, 3):
        raise DataError(f"--spatial_dims {spatial_dims}: 2 (images) or 3 (volumes)")
    names = parse_class_names(class_names)
    if source.is_dir():
        if Path(os.path.abspath(output)).is_relative_to(os.path.abspath(source)):
            raise DataError(f"--output {output} lies inside --source {source}: it would be read as a class; choose "
                            "an output folder outside the source")
        entries, folders = _from_folder(source)
        fatal: list[str] = []
        what = f"the class folders of {source}"
    elif source.is_file() and source.suffix.lower() == ".csv":
        (entries, fatal), folders = _from_table(source), []
        what = f"the label column of {source}"
    elif source.is_file():
        raise DataError(f"--source {source}: a folder of class folders, or a CSV table path,label[,patient_id]")
    else:
        raise DataError(f"--source {source}: no such folder or table")
    if not entries:
        raise DataError(f"{source}: no files found; nothing to prepare")
    _read_headers(entries, spatial_dims)

    # ids free of identifiers, unique
    own = [e.dicom.get("own", set()) | identifier_parts(e.table_patient, names=False) for e in entries]
    every_value = set().union(*own)
    shared = set().union(*(e.dicom.get("shared", set()) | _whole(e.table_patient) for e in entries))
    scrub = IdentifierScrubber(shared, every_value)
    owners: dict[str, _Entry] = {}
    for entry, values in zip(entries, own):
        entry.id = scrub(entry.raw_id, values)
        if entry.problem is not None and entry.fmt is None:
            continue  # a non-image file, listed under its own (scrubbed) name
        other = owners.setdefault(entry.id.lower(), entry)
        if other is not entry:
            same = " (the same file)" if os.path.abspath(other.path) == os.path.abspath(entry.path) else ""
            fatal.append(f"{other.shown} and {entry.shown}{same} would both get the id {entry.id!r}: rename or "
                         "remove one (ids key every output row and per-image seed)")

    unusable = [e for e in entries if e.problem is not None]
    usable = [e for e in entries if e.problem is None]
    if unusable and not skip_unreadable:
        fatal.insert(0, f"{len(unusable)} of {len(entries)} file(s) cannot be used as images (--skip_unreadable leaves "
                        f"them out and lists them in {output / SKIPPED}):"
                        + "".join(f"\n      {e.shown}: {e.problem}" for e in unusable[:MAX_LISTED])
                        + (f"\n      ... and {len(unusable) - MAX_LISTED} more" if len(unusable) > MAX_LISTED else ""))
    if fatal:
        raise DataError(f"{source}: {len(fatal)} problem(s) found:" + _listing(fatal))
    if not usable:
        raise DataError(f"{source}: none of the {len(entries)} file(s) is a usable image (reasons in "
                        f"{output / SKIPPED}); nothing to prepare")

    # classes: every class folder / label counts, and needs images
    labels = folders or [e.label for e in entries if e.label is not None]
    classes, index = _classes(labels, names, what)
    if len(classes) < 2:
        raise DataError(f"{what}: {len(classes)} class ({', '.join(classes)}); a classifier needs at least two")
    counts = Counter(e.label for e in usable)
    empty = [c for c in sorted(set(labels)) if not counts.get(c)]
    if empty:
        raise DataError(f"{what}: class(es) {empty} hold no usable image; add images or remove the class")

    # channels
    channels_found = Counter(e.header.shape[0] for e in usable)
    if set(channels_found) == {1, 3} and not grayscale:
        raise DataError(
            f"{source}: {channels_found[1]} gray and {channels_found[3]} RGB image(s): a network takes one channel "
            "count; convert the RGB images explicitly with --grayscale (they stay as they are on disk and are "
            "converted when loaded), or keep to one kind"
        )
    if len(channels_found) > 1 and set(channels_found) != {1, 3}:
        raise DataError(f"{source}: images have different channel counts {dict(channels_found)}; keep to one")
    rgb = channels_found.get(3, 0)
    channels = 1 if grayscale else next(iter(channels_found))
    if grayscale and not rgb:
        say("note: --grayscale: no RGB image found, nothing to convert")
    elif channels == 3:
        say(f"note: all {rgb} images are RGB: bundles taking one channel (the medical ones) need --grayscale")

    # modality and units
    declared = {e.header.format for e in usable if e.header.format in ("nifti", "numpy")}
    if native_units and not declared:
        say(f"note: --native_units {native_units}: no NIfTI or NumPy image; the files' own units are used")
    contradicting = sorted({
        f"{_units(e, None)} ({e.header.format})" for e in usable
        if native_units and e.header.format in ("dicom", "pil") and _units(e, None).lower() != native_units.lower()
    })
    if contradicting:
        raise DataError(f"--native_units {native_units} contradicts what the files say: {', '.join(contradicting)}; "
                        "it declares the units of NIfTI/NumPy images only")
    dicom_modalities = {e.header.modality or UNKNOWN_MODALITY for e in usable if e.header.format == "dicom"}
    if modality and dicom_modalities and dicom_modalities != {modality}:
        raise DataError(f"--modality {modality} contradicts the DICOM headers' Modality {sorted(dicom_modalities)}")
    data_modality = _describe(e.header.modality or UNKNOWN_MODALITY if e.header.format == "dicom" else
                              modality or UNKNOWN_MODALITY for e in usable)
    data_units = _describe(_units(e, native_units) for e in usable)

    # patients
    anonymous = 0
    items: list[Item] = []
    for entry in usable:
        patient = entry.table_patient or entry.dicom.get("patient", "")
        if not patient:
            anonymous += 1
        item = {
            "id": entry.id,
            "image": "",
            "label": index[entry.label],
            "patient_id": pseudonymise(patient) if patient else pseudonymise(f"image:{entry.id}"),
        }
        if grayscale and entry.header.shape[0] == 3:
            item[GRAYSCALE_KEY] = True
        item["_entry"] = entry
        items.append(item)
    if anonymous:
        say(f"warning: {anonymous} of {len(items)} image(s) have no patient identifier (no patient_id in a table, no "
            "PatientID in a DICOM header): each is taken as its own patient, so for them the split by patient is a "
            "split by image and images of one patient may land on both sides; a table with a patient_id column "
            "splits them by patient")

    if balance:
        kept = balance_classes(items, seed=seed)
        if len(kept) < len(items):
            say(f"note: --balance dropped {len(items) - len(kept)} image(s) to equal the classes")
        items = kept
    training, test = split_by_patient(items, test_fraction=test_fraction, seed=seed)

    problems = []
    patients: dict[int, set[str]] = defaultdict(set)
    for item in items:
        patients[item["label"]].add(item["patient_id"])
    for side, side_items in (("training", training), ("test", test)):
        present = {i["label"] for i in side_items}
        for k, class_name in enumerate(classes):
            if k not in present:
                problems.append(
                    f"the {side} side has no image of class {class_name!r}: its {len(patients[k])} patient(s) cannot "
                    "be split by patient into training and test (and a validation split); add patients"
                )

    # the data list checked as the bundles will check it (on the images themselves), then, only if it passes, the
    # links and the atomic replace: a refused source leaves the output folder as it was
    datalist = {
        "name": name or scrub(source.stem if source.is_file() else Path(os.path.abspath(source)).name, every_value),
        "modality": data_modality,
        "native_units": data_units,
        "classes": classes,
        "prepared_by": __name__,
        "training": sorted(training, key=lambda i: str(i["id"])),
        "test": sorted(test, key=lambda i: str(i["id"])),
    }
    final = output / DATALIST
    _refuse_foreign_datalist(final)
    with tempfile.TemporaryDirectory() as scratch:
        draft = Path(scratch) / DATALIST
        entries_by_id = {item["id"]: item.pop("_entry") for item in items}
        for item in items:
            item["image"] = str(entries_by_id[item["id"]].path)
        write_datalist(draft, datalist)
        try:
            check_datalist(draft, ["training", "test"], spatial_dims=spatial_dims, channels=channels,
                           val_fraction=val_fraction, seed=val_seed)
        except DataError as error:
            problems.append("the bundles' check: " + str(error).replace(f"{draft}: ", "").replace("\n", "\n    "))
    if problems:
        raise DataError(f"{final}: the data list would be refused, so it is not written:" + _listing(problems))
    images = Path(os.path.abspath(output)) / IMAGES_DIR
    for item in items:
        entry = entries_by_id[item["id"]]
        link = images / f"{entry.id}{entry.link_suffix}"
        _link(entry.path, link)
        item["image"] = str(link)
    write_datalist(final, datalist)

    skipped = [(e.id, e.problem) for e in unusable]
    if skip_unreadable:
        _write_skipped(output / SKIPPED, skipped)
        if skipped:
            say(f"note: skipped {len(skipped)} of {len(entries)} file(s) that cannot be used; listed with their "
                f"reasons in {output / SKIPPED}")
    elif (output / SKIPPED).is_file():
        (output / SKIPPED).unlink()  # from an earlier run: it does not describe this data list
    _remove_stale_links(images, {i["image"] for i in items})
    if rgb and grayscale:
        say(f"note: --grayscale: {rgb} RGB image(s) marked {GRAYSCALE_KEY!r}, converted to gray when loaded")
    return final


prepare = prepare_folder
