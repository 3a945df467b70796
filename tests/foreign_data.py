"""Small data sets for the foreign bundles in ``tests/foreign_bundles``, cut from real sample images.

Every image is a patch of a real scan that ships with pydicom (``CT_small.dcm``, ``MR_small.dcm``) or nibabel
(``example4d.nii.gz``), so the loaders read real acquisitions, not synthetic noise. The class is a simple, learnable
pattern added to the patch (a bright disk, vertical stripes, a blob in one of four quadrants, a bright cube), so a
tiny network trained for a few epochs beats chance.

Each builder writes its files and a ``datalist.json`` with ``training``, ``validation`` and ``testing`` lists of
``{"image": <relative path>, "label": <class index>, "id": <item id>}`` into ``folder`` and returns the data list.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file

SPLITS = {"training": 40, "validation": 8, "testing": 16}
N_ITEMS = sum(SPLITS.values())


def _dicom_pixels(name: str) -> np.ndarray:
    """Stored values of a pydicom sample in modality units (HU for CT), as float."""
    ds = pydicom.dcmread(get_testdata_file(name))
    pixels = ds.pixel_array.astype(np.float64)
    return pixels * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)


def _crop(rng: np.random.Generator, volume: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    start = [int(rng.integers(0, s - c + 1)) for s, c in zip(volume.shape, size)]
    patch = volume[tuple(slice(b, b + c) for b, c in zip(start, size))]
    if rng.random() < 0.5:  # a mirrored patch: more distinct backgrounds from one small scan
        patch = patch[::-1]
    return np.ascontiguousarray(patch)


def _labels(n: int, num_classes: int) -> list[int]:
    """Balanced labels, interleaved so that every split holds every class."""
    return [i % num_classes for i in range(n)]


def _write_datalist(folder: Path, items: list[dict]) -> dict[str, list[dict]]:
    datalist, start = {}, 0
    for split, size in SPLITS.items():
        datalist[split] = items[start : start + size]
        start += size
    (folder / "datalist.json").write_text(json.dumps(datalist, indent=1))
    return datalist


def _disk(size: int, radius: float, center: tuple[float, float]) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return ((yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2).astype(np.float64)


def _gaussian(shape: tuple[int, ...], center: tuple[float, ...], sigma: float) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return np.exp(-sum((g - c) ** 2 for g, c in zip(grids, center)) / (2 * sigma**2))


def _to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip(np.round((values - low) / (high - low) * 255), 0, 255).astype(np.uint8)


def mr_disk_png(folder: Path, seed: int = 0) -> dict[str, list[dict]]:
    """2 classes, 32x32 8-bit PNG patches of ``MR_small.dcm``; class 1 carries a bright disk at the centre."""
    rng = np.random.default_rng(seed)
    mr = _dicom_pixels("MR_small.dcm")
    disk = _disk(32, 5, (15.5, 15.5))
    (folder / "images").mkdir(parents=True, exist_ok=True)
    items = []
    for i, label in enumerate(_labels(N_ITEMS, 2)):
        patch = _crop(rng, mr, (32, 32)) + label * 900.0 * disk
        name = f"images/mr_{i:03d}.png"
        Image.fromarray(_to_uint8(patch, 0.0, 2800.0)).save(folder / name)
        items.append({"image": name, "label": label, "id": f"mr{i:03d}"})
    return _write_datalist(folder, items)


def ct_stripes_png(folder: Path, seed: int = 1) -> dict[str, list[dict]]:
    """2 classes, 40x40 8-bit PNG patches of ``CT_small.dcm`` (a [-1000, 1200] HU window); class 1 carries
    vertical stripes (period 8 pixels)."""
    rng = np.random.default_rng(seed)
    ct = _dicom_pixels("CT_small.dcm")
    stripes = np.tile((np.arange(40) // 4) % 2, (40, 1)).astype(np.float64)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    items = []
    for i, label in enumerate(_labels(N_ITEMS, 2)):
        patch = _crop(rng, ct, (40, 40)) + label * 350.0 * stripes
        name = f"images/ct_{i:03d}.png"
        Image.fromarray(_to_uint8(patch, -1000.0, 1200.0)).save(folder / name)
        items.append({"image": name, "label": label, "id": f"ct-{i:03d}"})
    return _write_datalist(folder, items)


def ct_quadrant_nifti(folder: Path, seed: int = 2) -> dict[str, list[dict]]:
    """4 classes, 32x32 2-D NIfTI patches of ``CT_small.dcm`` in HU (float32); class k carries a +700 HU blob in
    quadrant k (0: top left, 1: top right, 2: bottom left, 3: bottom right)."""
    rng = np.random.default_rng(seed)
    ct = _dicom_pixels("CT_small.dcm")
    centers = [(8, 8), (8, 24), (24, 8), (24, 24)]
    blobs = [_gaussian((32, 32), c, 3.0) for c in centers]
    (folder / "images").mkdir(parents=True, exist_ok=True)
    items = []
    for i, label in enumerate(_labels(N_ITEMS, 4)):
        patch = _crop(rng, ct, (32, 32)) + 700.0 * blobs[label]
        name = f"images/quadrant_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(patch.astype(np.float32), np.eye(4)), str(folder / name))
        items.append({"image": name, "label": label, "id": f"q{i:03d}"})
    return _write_datalist(folder, items)


def mr_cube_nifti(folder: Path, seed: int = 3) -> dict[str, list[dict]]:
    """2 classes, 16^3 NIfTI patches of nibabel's ``example4d.nii.gz`` (int16, its own affine); class 1 carries a
    bright smooth blob at the centre of the volume."""
    from nibabel.testing import data_path

    rng = np.random.default_rng(seed)
    image = nib.load(os.path.join(data_path, "example4d.nii.gz"))
    frames = np.asarray(image.dataobj).astype(np.float64)
    blob = _gaussian((16, 16, 16), (7.5, 7.5, 7.5), 2.5)
    (folder / "volumes").mkdir(parents=True, exist_ok=True)
    items = []
    for i, label in enumerate(_labels(N_ITEMS, 2)):
        frame = frames[..., int(rng.integers(0, frames.shape[-1]))]
        patch = _crop(rng, frame, (16, 16, 16)) + label * 450.0 * blob
        name = f"volumes/vol_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(np.round(patch).astype(np.int16), image.affine), str(folder / name))
        items.append({"image": name, "label": label, "id": f"vol_{i:03d}"})
    return _write_datalist(folder, items)


BUILDERS: dict[str, Callable[[Path], dict[str, list[dict]]]] = {
    "mr_disk_densenet_classification": mr_disk_png,
    "ct_stripes_resnet_zscore_classification": ct_stripes_png,
    "ct_quadrant_four_class_classification": ct_quadrant_nifti,
    "mr_volume_3d_classification": mr_cube_nifti,
    "unwindowed_ct_classification": ct_quadrant_nifti,
}
"""Bundle name (folder under ``tests/foreign_bundles``) -> the builder of its data set."""
