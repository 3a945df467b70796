"""Shared pieces of the demo generators: seeding, the patient plan, textures and shapes, the file writers and the
data list.

Every random draw comes from a generator seeded by ``(seed, data set code, patient, crop)``, so a data set is the same
byte for byte on every machine and for every call order. The writers (:func:`write_dicom`, :func:`write_nifti`) are
looked up on this module at call time, so a test can replace them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.special import erfc

from monai_adv.datalist import pseudonymise, split_by_patient, write_datalist

IMAGES_DIR = "images"
FAKE_BIRTH_DATE = "19700101"
# Bumped whenever a generator changes what it writes: ensure_demo_data regenerates a cached set of another version.
DEMO_VERSION = 3

Item = dict[str, Any]


# ----------------------------------------------------------------------------------------------------------- seeding
def rng_for(seed: int, code: int, *keys: int) -> np.random.Generator:
    """An independent generator for one (data set, patient, crop) key under ``seed``."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, code, *(int(k) for k in keys)])


def crops_per_patient(
    seed: int, code: int, n_patients: int, choices: Sequence[int] = (1, 2, 3)
) -> list[tuple[int, int]]:
    """``[(label, n_crops)]`` for ``n_patients`` (rounded up to even) patients, half of each class.

    The label-1 half gets a shuffled copy of the label-0 half's crop counts, so both classes hold exactly as many
    crops.
    Labels alternate 0, 1, 0, 1... in patient order.
    """
    half = (max(2, int(n_patients)) + 1) // 2
    rng = rng_for(seed, code, 0xC0)
    counts0 = rng.choice(np.asarray(choices), size=half, p=_crop_probabilities(len(choices)))
    counts1 = rng.permutation(counts0)
    plan = []
    for k in range(half):
        plan.append((0, int(counts0[k])))
        plan.append((1, int(counts1[k])))
    return plan


def _crop_probabilities(n: int) -> np.ndarray:
    if n == 3:
        return np.asarray([0.3, 0.4, 0.3])
    return np.full(n, 1.0 / n)


def latent_score(rng: np.random.Generator, label: int, spread: float) -> float:
    """The hidden "malignancy" of one case: N(-1, spread) for label 0, N(+1, spread) for label 1.

    An observer who knew it would be right with probability Phi(1 / spread); everything class-specific in a crop is
    drawn from it, so the classes overlap by construction.
    """
    return float((2 * int(label) - 1) + spread * rng.standard_normal())


def squash(z: float, gain: float = 1.6) -> float:
    """Map a latent score to (0, 1): about 0.17 for a typical label-0 case, 0.83 for a typical label-1 case."""
    return float(1.0 / (1.0 + np.exp(-gain * z)))


# ------------------------------------------------------------------------------------------------------- pixel work
def coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinate grids of a ``size x size`` image."""
    return np.mgrid[0:size, 0:size].astype(np.float64)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float | Sequence[float]) -> np.ndarray:
    """Gaussian-filtered white noise, zero mean and unit standard deviation (periodic borders)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-12)


def oriented_noise(
    rng: np.random.Generator, size: int, sigma_long: float, sigma_short: float, angle: float
) -> np.ndarray:
    """Unit-variance noise streaked along ``angle`` (degrees): ducts and Cooper's ligaments in a mammogram."""
    big = int(np.ceil(size * 1.5)) + 4
    field = ndimage.gaussian_filter(rng.standard_normal((big, big)), (sigma_short, sigma_long), mode="wrap")
    field = ndimage.rotate(field, angle, reshape=False, order=1, mode="wrap")
    start = (big - size) // 2
    field = field[start : start + size, start : start + size]
    return (field - field.mean()) / (field.std() + 1e-12)


def star_shape(
    rr: np.ndarray,
    cc: np.ndarray,
    centre: tuple[float, float],
    radius: float,
    harmonics: Sequence[tuple[int, float, float]] = (),
    blur: float = 0.5,
) -> np.ndarray:
    """Soft (partial-volume) mask in [0, 1] of a star-shaped blob with boundary radius
    ``radius * (1 + sum(a * cos(k * theta + phase)))`` and a Gaussian edge of width ``blur`` pixels."""
    dr, dc = rr - centre[0], cc - centre[1]
    rho = np.hypot(dr, dc)
    theta = np.arctan2(dr, dc)
    boundary = np.ones_like(theta)
    for k, amplitude, phase in harmonics:
        boundary = boundary + amplitude * np.cos(k * theta + phase)
    boundary = radius * np.maximum(boundary, 0.2)
    return 0.5 * erfc((rho - boundary) / (np.sqrt(2.0) * max(blur, 0.3)))


def random_harmonics(rng: np.random.Generator, amplitude: float, orders: Sequence[int] = (2, 3, 4, 5)) -> list:
    """Lobulation: one random-phase cosine per order, amplitudes ``amplitude * U(0.3, 1) / sqrt(order - 1)``."""
    return [
        (k, amplitude * rng.uniform(0.3, 1.0) / np.sqrt(k - 1), rng.uniform(0, 2 * np.pi)) for k in orders
    ]


def segment_profile(
    rr: np.ndarray, cc: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], width: float, taper: float = 0.0
) -> np.ndarray:
    """Gaussian cross-section profile (peak 1, sigma ``width``) of a straight segment; ``taper`` thins it towards p1."""
    d = np.array(p1, dtype=np.float64) - np.array(p0, dtype=np.float64)
    length2 = float(d @ d) + 1e-9
    t = np.clip(((rr - p0[0]) * d[0] + (cc - p0[1]) * d[1]) / length2, 0.0, 1.0)
    dist = np.hypot(rr - (p0[0] + t * d[0]), cc - (p0[1] + t * d[1]))
    w = width * (1.0 - taper * t) + 1e-3
    return np.exp(-0.5 * (dist / w) ** 2) * (1.0 - 0.5 * taper * t)


def curve_profile(
    rr: np.ndarray, cc: np.ndarray, points: np.ndarray, width: float, taper: float = 0.0, steps: int = 8
) -> np.ndarray:
    """Profile of a quadratic Bezier curve through control points ``points`` (3 x 2), as joined segments."""
    t = np.linspace(0.0, 1.0, steps + 1)[:, None]
    path = (1 - t) ** 2 * points[0] + 2 * (1 - t) * t * points[1] + t**2 * points[2]
    out = np.zeros_like(rr)
    for k in range(steps):
        w = width * (1.0 - taper * k / steps)
        out = np.maximum(out, segment_profile(rr, cc, tuple(path[k]), tuple(path[k + 1]), w))
    return out


def random_curve(rng: np.random.Generator, size: int, length: tuple[float, float] = (0.5, 1.4)) -> np.ndarray:
    """Control points of a gently bent curve in a ``size x size`` crop, ``length`` (fraction of ``size``) long."""
    angle = rng.uniform(0, 2 * np.pi)
    direction = np.array([np.cos(angle), np.sin(angle)])
    start = rng.uniform(0.1, 0.9, 2) * size
    end = start + rng.uniform(*length) * size * direction
    bend = rng.normal(0, 0.12 * size) * np.array([-direction[1], direction[0]])
    return np.stack([start, (start + end) / 2 + bend, end])


def blend(base: np.ndarray, value: float | np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``base`` where ``mask`` is 0, ``value`` where it is 1, linear in between (partial volume)."""
    return base * (1.0 - mask) + value * mask


# ------------------------------------------------------------------------------------------------------ identifiers
def fake_patient(prefix: str, index: int) -> dict[str, str]:
    """The FAKE identifiers written into DICOM headers: ``DEMO-CT-0007``, ``Demo^Patient7``, ``19700101``."""
    return {
        "PatientID": f"DEMO-{prefix}-{index:04d}",
        "PatientName": f"Demo^Patient{index}",
        "PatientBirthDate": FAKE_BIRTH_DATE,
    }


# the salt of the demo data's pseudonyms (public: the demo's patients are fake)
DEMO_SALT = "monai_adv"


def item_for(patient_id: str, crop: int, label: int, suffix: str) -> Item:
    """A data-list item; its id and file name hold only the pseudonymised patient id, never the fake PatientID. The
    demo's identifiers are fake, so its pseudonyms use the public :data:`DEMO_SALT`: the demo data is the same on
    every machine."""
    pseudo = pseudonymise(patient_id, salt=DEMO_SALT)
    item_id = f"{pseudo}_{crop}"
    return {"id": item_id, "image": f"{IMAGES_DIR}/{item_id}{suffix}", "label": int(label), "patient_id": pseudo}


def demo_uid(*parts: Any) -> str:
    """A deterministic DICOM UID (2.25 form) from the given parts."""
    digest = hashlib.sha256(":".join(str(p) for p in ("monai_adv-demo", *parts)).encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:15], "big"))


def study_tags(name: str, seed: int, index: int, crop: int, modality: str) -> dict[str, Any]:
    """The DICOM tags every demo crop shares: the fake patient, deterministic study/series/instance UIDs, a fixed
    study date and the synthetic-data manufacturer. Modality-specific tags are added by the caller."""
    return {
        **fake_patient(modality, index),
        "SOPInstanceUID": demo_uid(name, seed, index, crop),
        "StudyInstanceUID": demo_uid(name, seed, index, "study"),
        "SeriesInstanceUID": demo_uid(name, seed, index, "series"),
        "StudyDate": "20000101",
        "StudyTime": "120000",
        "StudyID": "DEMO",
        "AccessionNumber": "",
        "ReferringPhysicianName": "",
        "SeriesNumber": 1,
        "InstanceNumber": crop + 1,
        "Modality": modality,
        "Manufacturer": "monai_adv synthetic demo",
    }


# ---------------------------------------------------------------------------------------------------------- writers
def write_dicom(path: str | os.PathLike, pixels: np.ndarray, tags: dict[str, Any], sop_class_uid: str) -> Path:
    """Write a 2-D unsigned 16-bit image as an uncompressed explicit-VR little-endian DICOM file with a preamble.

    ``tags`` are set as DICOM keywords; ``SOPInstanceUID`` must be among them.
    """
    import pydicom
    from pydicom import dcmwrite
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    pixels = np.ascontiguousarray(pixels, dtype="<u2")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = tags["SOPInstanceUID"]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class_uid
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = int(tags.get("BitsStored", 16))
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if int(pydicom.__version__.split(".")[0]) >= 3:
        dcmwrite(path, ds, enforce_file_format=True)
    else:  # pydicom 2 (the MONAI Label environment): the same file-format guarantee under its old name
        dcmwrite(path, ds, write_like_original=False)
    return path


def write_nifti(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray) -> Path:
    """Write a 2-D array (int16 or float32, as given) as gzipped NIfTI-1 with ``affine`` and mm units."""
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm")
    img.header.set_qform(img.affine, code=1)
    img.header.set_sform(img.affine, code=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


# -------------------------------------------------------------------------------------------------------- data list
def finish(
    output_dir: Path,
    name: str,
    modality: str,
    native_units: str,
    classes: Sequence[str],
    items: Sequence[Item],
    seed: int,
    **extra: Any,
) -> Path:
    """Split ``items`` 2:1 by patient (seeded) and write ``output_dir/datalist.json``; return its path."""
    train, test = split_by_patient(items, seed=seed)
    datalist = {
        "name": name,
        "modality": modality,
        "native_units": native_units,
        "classes": list(classes),
        "demo": True,
        "demo_version": DEMO_VERSION,
        "seed": int(seed),
        **extra,
        "training": sorted(train, key=lambda i: i["id"]),
        "test": sorted(test, key=lambda i: i["id"]),
    }
    return write_datalist(Path(output_dir) / "datalist.json", datalist)


def generate_medical(
    output_dir: str | os.PathLike,
    seed: int,
    code: int,
    n_patients: int,
    make_crop: Callable[[Path, int, int, int, int], Item],
) -> list[Item]:
    """Run ``make_crop(output_dir, patient_index, crop_index, label, seed)`` for every crop of
    :func:`crops_per_patient` and return the items."""
    output_dir = Path(output_dir)
    (output_dir / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    items = []
    for index, (label, n_crops) in enumerate(crops_per_patient(seed, code, n_patients)):
        for crop in range(n_crops):
            items.append(make_crop(output_dir, index, crop, label, seed))
    return items


def relabel(path: str | os.PathLike, name: str, seed: int) -> Path:
    """Rewrite a data list written by a ``monai_adv.prepare`` module with the demo's header (name, modality "none",
    native units "gray level", ``demo: true``), keeping its items."""
    import json

    path = Path(path)
    prepared = json.loads(path.read_text(encoding="utf-8"))
    datalist = {
        "name": name,
        "modality": "none",
        "native_units": "gray level",
        "classes": prepared["classes"],
        "demo": True,
        "demo_version": DEMO_VERSION,
        "seed": int(seed),
        "training": prepared["training"],
        "test": prepared["test"],
    }
    return write_datalist(path, datalist)
