"""Reading one image file (DICOM, NIfTI, PNG/JPEG, NumPy) into a channel-first float array in native units.

Every failure raises :class:`DataError` with a message that names the item and the file. DICOM pixel data is
rescaled with RescaleSlope/RescaleIntercept (Hounsfield units for CT); MONOCHROME1 is inverted so that brighter always
means denser. The returned metadata never carries patient identifiers: only the file name, modality and spacing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DataError", "read_image", "read_dicom", "image_format"]

DICOM_SUFFIXES = (".dcm", ".dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class DataError(ValueError):
    """Bad input data. The message names the offending item (data-list id or file) and what is wrong with it."""


def _name(item: str | None, path: str | os.PathLike) -> str:
    return f"{item} ({path})" if item else str(path)


def image_format(path: str | os.PathLike) -> str:
    """'dicom', 'nifti', 'pil' or 'numpy', from the file name; files without a suffix are tried as DICOM."""
    name = str(path).lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(PIL_SUFFIXES):
        return "pil"
    if name.endswith(".npy"):
        return "numpy"
    if name.endswith(DICOM_SUFFIXES) or Path(name).suffix == "" or Path(name).suffix[1:].isdigit():
        return "dicom"
    raise DataError(f"{path}: unsupported image format (use DICOM, NIfTI, PNG/JPEG or .npy)")


def read_dicom(path: str | os.PathLike, item: str | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a single-file DICOM image as ``(array, meta)``.

    ``array`` is float32, channel first: ``(1, rows, cols)`` for a 2-D image, ``(1, frames, rows, cols)`` for a
    multi-frame one, ``(3, rows, cols)`` for RGB. Values are ``stored * RescaleSlope + RescaleIntercept``.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(path))
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{_name(item, path)}: not a readable DICOM file: {e}") from e
    if "PixelData" not in ds:
        raise DataError(f"{_name(item, path)}: DICOM file has no pixel data")
    try:
        pixels = ds.pixel_array
    except Exception as e:  # pydicom raises many types for truncated or undecodable pixel data
        raise DataError(f"{_name(item, path)}: DICOM pixel data cannot be decoded (truncated or corrupt?): {e}") from e
    arr = np.asarray(pixels, dtype=np.float32)
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    arr = arr * slope + intercept
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        arr = arr.max() + arr.min() - arr
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    arr = np.moveaxis(arr, -1, 0) if samples > 1 else arr[None]
    spacing = [float(v) for v in getattr(ds, "PixelSpacing", None) or getattr(ds, "ImagerPixelSpacing", None) or [1, 1]]
    meta = {
        "filename_or_obj": str(path),
        "format": "dicom",
        "modality": str(getattr(ds, "Modality", "")),
        "spacing": spacing,
        "rescale_slope": slope,
        "rescale_intercept": intercept,
    }
    return arr, meta


def _read_nifti(path: str | os.PathLike, item: str | None) -> tuple[np.ndarray, dict[str, Any]]:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        arr = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as e:  # nibabel raises ImageFileError, EOFError, zlib errors...
        raise DataError(f"{_name(item, path)}: not a readable NIfTI file: {e}") from e
    spacing = [float(v) for v in img.header.get_zooms()[: arr.ndim]]
    return arr[None], {"filename_or_obj": str(path), "format": "nifti", "modality": "", "spacing": spacing}


def _read_pil(path: str | os.PathLike, item: str | None) -> tuple[np.ndarray, dict[str, Any]]:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("L", "I", "I;16", "F", "RGB"):
                img = img.convert("RGB")
            arr = np.asarray(img, dtype=np.float32)
    except Exception as e:
        raise DataError(f"{_name(item, path)}: not a readable image file: {e}") from e
    arr = np.moveaxis(arr, -1, 0) if arr.ndim == 3 else arr[None]
    return arr, {"filename_or_obj": str(path), "format": "pil", "modality": "", "spacing": [1.0, 1.0]}


def _read_numpy(path: str | os.PathLike, item: str | None) -> tuple[np.ndarray, dict[str, Any]]:
    try:
        arr = np.load(path, allow_pickle=False).astype(np.float32)
    except Exception as e:
        raise DataError(f"{_name(item, path)}: not a readable .npy array: {e}") from e
    return arr[None], {"filename_or_obj": str(path), "format": "numpy", "modality": "", "spacing": [1.0] * arr.ndim}


def read_image(
    path: str | os.PathLike, item: str | None = None, spatial_dims: int | None = 2
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read one image as a channel-first float32 array in native units, and plain metadata.

    Args:
        path: a DICOM, NIfTI, PNG/JPEG or .npy file.
        item: the data-list id, named in error messages.
        spatial_dims: the dimensionality the caller needs (2 or 3); singleton spatial axes beyond it are squeezed and
            anything else raises (for 3, a volume with a singleton axis too: it is one 2-D slice). ``None`` accepts
            what the file holds.

    Returns:
        ``(array, meta)`` with ``array`` of shape ``(C, *spatial)`` and ``meta`` holding ``filename_or_obj``,
        ``format``, ``modality`` and ``spacing`` (no patient identifiers).

    Raises:
        DataError: missing file, unreadable or corrupt file, wrong dimensionality, NaN or infinite pixels.
    """
    if not os.path.isfile(path):
        raise DataError(f"{_name(item, path)}: image file not found")
    readers = {"dicom": read_dicom, "nifti": _read_nifti, "pil": _read_pil, "numpy": _read_numpy}
    fmt = image_format(path)
    arr, meta = readers[fmt](path, item)
    if spatial_dims is not None:
        spatial = [s for s in arr.shape[1:]]
        while len(spatial) > spatial_dims and 1 in spatial:
            spatial.remove(1)
        if len(spatial) != spatial_dims or (spatial_dims > 2 and 1 in spatial):
            # a volume of one slice is a 2-D image: resizing it would invent the missing axis
            raise DataError(
                f"{_name(item, path)}: expected a {spatial_dims}-D image, got array shape {tuple(arr.shape[1:])}"
            )
        arr = arr.reshape(arr.shape[0], *spatial)
        meta["spacing"] = meta["spacing"][:spatial_dims]
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise DataError(f"{_name(item, path)}: image has {bad} NaN or infinite pixels")
    if arr.size == 0:
        raise DataError(f"{_name(item, path)}: image is empty")
    return arr, meta
