"""LIDC-IDRI lung nodules: from the TCIA DICOM tree and the LIDC XML reads to axial HU crops and a data list.

Source layout: ``source_dir`` holds, anywhere below it, the CT series as DICOM files (any name, with or without the
``.dcm`` suffix, one or more series per folder) and the LIDC reader XML files (one per series, root
``LidcReadMessage`` in namespace ``http://www.nih.gov``; other XML roots such as the radiograph reads
``IdriReadMessage`` are skipped). Series are matched to XML files by ``ResponseHeader/SeriesInstanceUid``.

Rules:
- A *reading* is one ``unblindedReadNodule`` of one ``readingSession`` (one reader) that has a
  ``characteristics/malignancy`` rating (1-5). Readings without one (nodules under 3 mm, marked by a single point) and
  ``nonNodule`` marks are ignored. A reading's centre is the mean of all the edge-map points of its ``roi`` elements
  with ``inclusion`` TRUE (column ``xCoord``, row ``yCoord``, each point at its roi's ``imageZposition``); its size is
  the largest in-plane extent of those contours in mm.
- Readings are grouped into physical nodules greedily, series by series, readers in file order: a reading joins the
  nearest nodule that has no reading from the same reader yet and whose centre (mean of its readings' centres) lies
  within ``max(group_distance_mm, half the mean size of the nodule's readings and this one)`` in 3-D (mm, using the
  series' PixelSpacing); otherwise it starts a new nodule. Default ``group_distance_mm`` = 5 mm.
- Nodules seen by a single reader are kept by default (``min_readers=1``); LIDC's ~2,600 nodules of 3 mm or more
  marked by at least one reader match the paper's 2,600. ``min_readers`` raises the bar.
- The nodule's malignancy is the median of its readers' ratings: median < 3 is benign (label 0), median > 3 is
  malignant (label 1), so 2.5 is benign and 3.5 malignant; median exactly 3 is ambiguous and excluded by default
  (``ambiguous="exclude"``), or counted as ``"benign"`` or ``"malignant"``.
- The crop is a square axial patch (default 64x64 pixels, ``crop_size``) in Hounsfield units
  (stored * RescaleSlope + RescaleIntercept), taken from the series slice whose z (ImagePositionPatient[2], else
  SliceLocation) is nearest the nodule centre's z, centred on the nodule centre rounded to the nearest pixel (halves
  up; the centre lands on pixel ``(crop_size // 2, crop_size // 2)``). Parts outside the slice are filled with -1024 HU.
  A centre farther than ``max(2 mm, the median slice gap)`` from every slice, or outside the slice, is an error.
- The patient is the series' DICOM PatientID, stored only pseudonymised (``monai_adv.datalist.pseudonymise``); file
  names and ids are built from that pseudonym, a hash of the SeriesInstanceUID and the nodule's index. No source path
  is stored, since TCIA folder names carry the PatientID.
- Classes ``["benign", "malignant"]``, balanced (seeded random undersampling), then split 2:1 train:test by patient.
- An XML whose series is not in the DICOM tree is an error unless ``skip_missing_series=True``; when two XML files
  describe the same series, the first in path order is used and the other ignored (with a logged warning).
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from monai_adv.datalist import pseudonymise
from monai_adv.io import DataError, image_format, read_dicom
from monai_adv.prepare.common import (
    IMAGES_DIR,
    balance_and_split,
    finish_datalist,
    square_crop,
    write_pending_crops,
)

__all__ = [
    "CLASSES",
    "CTSeries",
    "Reading",
    "index_dicom_tree",
    "read_slice",
    "parse_lidc_xml",
    "group_readings",
    "malignancy_label",
    "prepare",
]

logger = logging.getLogger(__name__)

CLASSES = ["benign", "malignant"]
AMBIGUOUS_CHOICES = ("exclude", "benign", "malignant")
PAD_HU = -1024.0
_HEADER_TAGS = [
    "SeriesInstanceUID",
    "PatientID",
    "Modality",
    "ImagePositionPatient",
    "SliceLocation",
    "PixelSpacing",
    "Rows",
    "Columns",
]


@dataclass
class CTSeries:
    """One DICOM series: its slices sorted by z (mm), pixel spacing (row, column) in mm and the raw PatientID.

    ``patient_id`` is kept in memory only, to be pseudonymised before anything is written.
    """

    uid: str
    patient_id: str
    modality: str
    spacing: tuple[float, float]
    shape: tuple[int, int]
    files: list[Path] = field(default_factory=list)
    z: list[float] = field(default_factory=list)

    def sort(self) -> None:
        order = sorted(range(len(self.z)), key=lambda k: (math.isnan(self.z[k]), self.z[k], str(self.files[k])))
        self.files = [self.files[k] for k in order]
        self.z = [self.z[k] for k in order]

    def nearest_slice(self, z: float) -> tuple[int, float]:
        """``(index, |distance| in mm)`` of the slice nearest ``z``."""
        distances = np.abs(np.asarray(self.z) - z)
        index = int(np.argmin(distances))
        return index, float(distances[index])

    def slice_gap(self) -> float:
        return float(np.median(np.diff(self.z))) if len(self.z) > 1 else 0.0


@dataclass
class Reading:
    """One reader's outline of one nodule: centre in (column, row) pixels and z in mm, size in mm, rating 1-5."""

    reader: int
    nodule_id: str
    malignancy: int
    x: float
    y: float
    z: float
    points: np.ndarray


def _is_dicom_candidate(path: Path) -> bool:
    """``.dcm``/``.dicom`` files always; files without a suffix (or with a numeric one) when they carry the DICM
    marker; never hidden files or other suffixes."""
    if path.name.startswith("."):
        return False
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        if image_format(path) != "dicom":
            return False
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except (DataError, OSError):
        return False


def _slice_z(ds) -> float:
    """ImagePositionPatient[2], else SliceLocation, else NaN (radiographs; an error only for an annotated series)."""
    position = getattr(ds, "ImagePositionPatient", None)
    if position is not None and len(position) == 3:
        return float(position[2])
    if getattr(ds, "SliceLocation", None) is not None:
        return float(ds.SliceLocation)
    return math.nan


def index_dicom_tree(source_dir: str | os.PathLike) -> dict[str, CTSeries]:
    """Read the headers of every DICOM file below ``source_dir`` and group them by SeriesInstanceUID.

    Every ``.dcm``/``.dicom`` file must be readable DICOM; files without a suffix (or with a numeric one) are read
    when they carry the DICM marker at byte 128; anything else (XML, text, licence files, hidden files) is skipped.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    series: dict[str, CTSeries] = {}
    for folder, dirs, files in os.walk(source_dir):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            if not _is_dicom_candidate(path):
                continue
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
            except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as e:
                raise DataError(f"{path}: not a readable DICOM file: {e}") from e
            uid = str(getattr(ds, "SeriesInstanceUID", "") or "")
            if not uid:
                raise DataError(f"{path}: DICOM file has no SeriesInstanceUID")
            if uid not in series:
                spacing = [float(v) for v in (getattr(ds, "PixelSpacing", None) or [1.0, 1.0])]
                series[uid] = CTSeries(
                    uid=uid,
                    patient_id=str(getattr(ds, "PatientID", "") or ""),
                    modality=str(getattr(ds, "Modality", "") or ""),
                    spacing=(spacing[0], spacing[1]),
                    shape=(int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)),
                )
            series[uid].files.append(path)
            series[uid].z.append(_slice_z(ds))
    for s in series.values():
        s.sort()
    return series


def read_slice(series: CTSeries, index: int, item: str | None = None) -> np.ndarray:
    """Slice ``index`` of ``series`` as a 2-D float32 array in Hounsfield units."""
    arr, _ = read_dicom(series.files[index], item=item)
    if arr.shape[0] != 1 or arr.ndim != 3:
        raise DataError(f"{item or series.files[index]} ({series.files[index]}): expected a single-frame CT slice")
    return arr[0]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].lower()


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in element if _local(c.tag) == name.lower()]


def _text(element: ET.Element, name: str) -> str | None:
    found = _children(element, name)
    return found[0].text.strip() if found and found[0].text else None


def _parse_reading(nodule: ET.Element, reader: int, path: Path) -> Reading | None:
    characteristics = _children(nodule, "characteristics")
    rating = _text(characteristics[0], "malignancy") if characteristics else None
    if rating is None:
        return None
    nodule_id = _text(nodule, "noduleID") or "?"
    try:
        malignancy = int(float(rating))
    except ValueError as e:
        raise DataError(f"{path}: nodule {nodule_id} has malignancy {rating!r}, not a number 1-5") from e
    if not 1 <= malignancy <= 5:
        raise DataError(f"{path}: nodule {nodule_id} has malignancy {malignancy}, outside 1-5")
    points = []
    for roi in _children(nodule, "roi"):
        if (_text(roi, "inclusion") or "TRUE").upper() != "TRUE":
            continue
        z = float(_text(roi, "imageZposition") or "nan")
        for edge in _children(roi, "edgeMap"):
            points.append((float(_text(edge, "xCoord") or "nan"), float(_text(edge, "yCoord") or "nan"), z))
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if not len(pts):
        return None
    if not np.all(np.isfinite(pts)):
        raise DataError(f"{path}: nodule {nodule_id} has an roi without imageZposition or with a bad edge point")
    x, y, z = pts.mean(axis=0)
    return Reading(reader, nodule_id, malignancy, float(x), float(y), float(z), pts)


def parse_lidc_xml(path: str | os.PathLike) -> tuple[str, list[Reading]] | None:
    """``(SeriesInstanceUID, readings)`` of one LIDC XML file, or ``None`` when its root is not ``LidcReadMessage``."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise DataError(f"{path}: not a readable XML file: {e}") from e
    if _local(root.tag) != "lidcreadmessage":
        return None
    headers = _children(root, "ResponseHeader")
    uid = (_text(headers[0], "SeriesInstanceUid") if headers else None) or ""
    if not uid:
        raise DataError(f"{path}: LIDC XML has no ResponseHeader/SeriesInstanceUid")
    readings = []
    for reader, session in enumerate(_children(root, "readingSession")):
        for nodule in _children(session, "unblindedReadNodule"):
            reading = _parse_reading(nodule, reader, path)
            if reading is not None:
                readings.append(reading)
    return uid, readings


def _size_mm(reading: Reading, spacing: tuple[float, float]) -> float:
    extent = reading.points.max(axis=0) - reading.points.min(axis=0)
    return float(max(extent[0] * spacing[1], extent[1] * spacing[0]))


def _distance_mm(a: tuple[float, float, float], b: tuple[float, float, float], spacing: tuple[float, float]) -> float:
    return math.sqrt(((a[0] - b[0]) * spacing[1]) ** 2 + ((a[1] - b[1]) * spacing[0]) ** 2 + (a[2] - b[2]) ** 2)


def _centre(group: list[Reading]) -> tuple[float, float, float]:
    return (
        float(np.mean([r.x for r in group])),
        float(np.mean([r.y for r in group])),
        float(np.mean([r.z for r in group])),
    )


def group_readings(
    readings: list[Reading], spacing: tuple[float, float] = (1.0, 1.0), group_distance_mm: float = 5.0
) -> list[list[Reading]]:
    """Group one series' readings into physical nodules (see the module docstring for the rule)."""
    groups: list[list[Reading]] = []
    for reading in readings:
        size = _size_mm(reading, spacing)
        best, best_distance = None, math.inf
        for group in groups:
            if any(r.reader == reading.reader for r in group):
                continue
            mean_size = float(np.mean([_size_mm(r, spacing) for r in group] + [size]))
            distance = _distance_mm(_centre(group), (reading.x, reading.y, reading.z), spacing)
            if distance <= max(group_distance_mm, 0.5 * mean_size) and distance < best_distance:
                best, best_distance = group, distance
        if best is None:
            groups.append([reading])
        else:
            best.append(reading)
    return groups


def malignancy_label(median: float, ambiguous: str = "exclude") -> int | None:
    """0 (benign) for a median rating below 3, 1 (malignant) above 3; at exactly 3 ``ambiguous`` decides
    (``"exclude"`` gives ``None``)."""
    if ambiguous not in AMBIGUOUS_CHOICES:
        raise ValueError(f"ambiguous must be one of {AMBIGUOUS_CHOICES}, got {ambiguous!r}")
    if median < 3:
        return 0
    if median > 3:
        return 1
    return None if ambiguous == "exclude" else CLASSES.index(ambiguous)


def _find_xml(source_dir: Path) -> list[Path]:
    return sorted(p for p in source_dir.rglob("*") if p.suffix.lower() == ".xml" and p.is_file())


def _locate(series: CTSeries, centre: tuple[float, float, float], item: str) -> tuple[int, int, int]:
    """``(slice index, row, column)`` of the nodule centre, checked against the series' extent."""
    index, dz = series.nearest_slice(centre[2])
    if dz > max(2.0, series.slice_gap()):
        raise DataError(
            f"{item}: nodule centre z={centre[2]:.1f} mm is {dz:.1f} mm from the nearest slice of its series"
        )
    row, col = math.floor(centre[1] + 0.5), math.floor(centre[0] + 0.5)
    rows, cols = series.shape
    if row < 0 or col < 0 or (rows and row >= rows) or (cols and col >= cols):
        raise DataError(f"{item}: nodule centre (row {row}, column {col}) is outside the {rows}x{cols} slice")
    return index, row, col


def _crop_job(
    series: CTSeries, index: int, row: int, col: int, crop_size: int, item: str
) -> Callable[[], tuple[np.ndarray, tuple[float, float]]]:
    def crop() -> tuple[np.ndarray, tuple[float, float]]:
        return square_crop(read_slice(series, index, item=item), row, col, crop_size, fill=PAD_HU), series.spacing

    return crop


def _nodule_items(
    series: CTSeries,
    readings: list[Reading],
    crop_size: int,
    ambiguous: str,
    min_readers: int,
    group_distance_mm: float,
) -> list[dict]:
    if not series.patient_id:
        raise DataError(f"{series.files[0]}: CT series {series.uid} has no PatientID (needed to split by patient)")
    if math.isnan(series.z[-1]):
        raise DataError(f"{series.files[-1]}: DICOM slice has neither ImagePositionPatient nor SliceLocation")
    patient = pseudonymise(series.patient_id)
    series_hash = pseudonymise(series.uid)[:8]
    groups = group_readings(readings, series.spacing, group_distance_mm)
    groups.sort(key=lambda g: tuple(reversed(_centre(g))))
    items = []
    for k, group in enumerate(groups):
        median = float(statistics.median(r.malignancy for r in group))
        label = malignancy_label(median, ambiguous)
        if len(group) < min_readers or label is None:
            continue
        item_id = f"lidc_{patient}_{series_hash}_{k:02d}"
        index, row, col = _locate(series, _centre(group), item_id)
        items.append(
            {
                "id": item_id,
                "image": f"{IMAGES_DIR}/{item_id}.nii.gz",
                "label": label,
                "patient_id": patient,
                "malignancy": median,
                "readers": len(group),
                "series": series_hash,
                "slice_z": series.z[index],
                "centre": [row, col],
                "_crop": _crop_job(series, index, row, col, crop_size, item_id),
            }
        )
    return items


def prepare(
    source_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    seed: int = 0,
    crop_size: int = 64,
    ambiguous: str = "exclude",
    min_readers: int = 1,
    group_distance_mm: float = 5.0,
    balance: bool = True,
    skip_missing_series: bool = False,
) -> Path:
    """Crop every rated LIDC nodule, balance, split 2:1 by patient and write ``output_dir/datalist.json``.

    Returns the data list path. See the module docstring for the rules.
    """
    if ambiguous not in AMBIGUOUS_CHOICES:
        raise ValueError(f"ambiguous must be one of {AMBIGUOUS_CHOICES}, got {ambiguous!r}")
    source_dir, output_dir = Path(source_dir), Path(output_dir)
    if not source_dir.is_dir():
        raise DataError(f"{source_dir}: source folder not found; nothing to prepare")
    annotations = [(path, parsed) for path in _find_xml(source_dir) if (parsed := parse_lidc_xml(path)) is not None]
    if not annotations:
        raise DataError(f"{source_dir}: no LIDC XML annotation (LidcReadMessage) found; nothing to prepare")
    series = index_dicom_tree(source_dir)
    items: list[dict] = []
    done: set[str] = set()
    for path, (uid, readings) in annotations:
        if uid in done:
            logger.warning("%s: a second XML for series %s, ignored (the first one in path order is used)", path, uid)
            continue
        done.add(uid)
        if uid not in series:
            if skip_missing_series:
                continue
            raise DataError(f"{path}: its CT series {uid} is not in the DICOM tree under {source_dir}")
        items.extend(_nodule_items(series[uid], readings, crop_size, ambiguous, min_readers, group_distance_mm))
    if not items:
        raise DataError(f"{source_dir}: no nodule with a usable malignancy rating; nothing to prepare")
    training, test = balance_and_split(items, seed=seed, balance=balance)
    training, test = (write_pending_crops(side, output_dir, integer=True) for side in (training, test))
    return finish_datalist(output_dir, "lidc_idri", "CT", "HU", CLASSES, training, test, __name__,
                           crop_size=crop_size)
