"""Reading one image file (DICOM, NIfTI, PNG/JPEG, NumPy) into a channel-first float array in native units, and
reading only its header, for the checks that run before any work.

Every failure raises :class:`DataError` with a message that names the item and the file. DICOM pixel data is
rescaled with RescaleSlope/RescaleIntercept (Hounsfield units for CT; a CT image without them is refused, since its
stored values are not HU); MONOCHROME1 is inverted so that brighter always means denser. DICOM objects that are not
images (segmentations, RT structure sets, plans and doses, structured reports, presentation states, key object
selections, directories, waveforms...) are refused by name. The returned metadata never carries patient identifiers:
only the file name, modality and spacing.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DataError", "ImageHeader", "read_image", "read_header", "read_dicom", "image_format", "image_stem",
    "IMAGE_SUFFIXES", "to_grayscale",
]

DICOM_SUFFIXES = (".dcm", ".dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
NUMPY_SUFFIXES = (".npy",)
IMAGE_SUFFIXES = NIFTI_SUFFIXES + DICOM_SUFFIXES + PIL_SUFFIXES + NUMPY_SUFFIXES

# Modalities of DICOM objects that are not images, for files that carry no SOP Class UID.
NON_IMAGE_MODALITIES = frozenset(
    {"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SR", "PR", "KO", "REG", "FID", "DOC", "ECG", "HD", "AU",
     "PLAN", "RWV", "M3D", "OSS"}
)
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
CT_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"})


class DataError(ValueError):
    """Bad input data. The message names the offending item (data-list id or file) and what is wrong with it."""


def _name(item: str | None, path: str | os.PathLike) -> str:
    return f"{item} ({path})" if item else str(path)


def image_format(path: str | os.PathLike) -> str:
    """'dicom', 'nifti', 'pil' or 'numpy', from the file name; files without a suffix, or whose suffix is a number
    (names made of DICOM UIDs, such as ``1.3.6.1.4.1.9328.50.4.2``), are tried as DICOM."""
    name = str(path).lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(PIL_SUFFIXES):
        return "pil"
    if name.endswith(NUMPY_SUFFIXES):
        return "numpy"
    if name.endswith(DICOM_SUFFIXES) or Path(name).suffix == "" or Path(name).suffix[1:].isdigit():
        return "dicom"
    raise DataError(f"{path}: unsupported image format (use DICOM, NIfTI, PNG/JPEG or .npy)")


def image_stem(relative_path: str) -> str:
    """``relative_path`` without its image suffix (``.nii.gz``, ``.dcm``, ``.png``...); any other dot stays, so
    UID-named files (``1.3.6.1.4.1.9328.50.4.2.dcm``) keep their whole UID."""
    lower = relative_path.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix) and len(relative_path) > len(suffix):
            return relative_path[: -len(suffix)]
    return relative_path


def _sop_class(ds: Any) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None) or "")


def _check_dicom_object(ds: Any, name: str) -> None:
    """Refuse a DICOM object that is not an image to classify, naming its SOP class and modality."""
    from pydicom.uid import UID

    sop_class = _sop_class(ds)
    modality = str(ds.get("Modality") or "")
    what = f"SOP class {UID(sop_class).name}" if sop_class else "no SOP class"
    described = f"{what}, Modality {modality or 'none'}"
    if sop_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
        raise DataError(f"{name}: a DICOMDIR (media storage directory), not an image")
    if sop_class and "Image Storage" not in UID(sop_class).name:
        raise DataError(f"{name}: DICOM object of {described} is not an image to classify")
    if not sop_class and modality.upper() in NON_IMAGE_MODALITIES:
        raise DataError(f"{name}: DICOM object of {described} is not an image to classify")
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DataError(f"{name}: DICOM file has no pixel data ({described})")
    if (modality.upper() == "CT" or sop_class in CT_SOP_CLASSES) and (
        "RescaleIntercept" not in ds or "RescaleSlope" not in ds
    ):
        raise DataError(
            f"{name}: CT image without RescaleIntercept/RescaleSlope (required by the CT image IOD): its stored "
            "values are not Hounsfield units, and a CT window would read them wrongly"
        )
    if "RescaleSlope" in ds:
        try:
            slope = float(ds.RescaleSlope)
        except (TypeError, ValueError):
            slope = math.nan
        if not math.isfinite(slope) or slope == 0:
            raise DataError(f"{name}: RescaleSlope {ds.RescaleSlope} would make every pixel the same value")


def _read_dicom_dataset(path: str | os.PathLike, name: str, header_only: bool) -> Any:
    """The data set of a DICOM file (pixel data deferred with ``header_only``). Files without the preamble are read
    too, and kept only when they hold a DICOM data set (a SOP class or a modality)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    options = {"defer_size": 1024} if header_only else {}
    errors = (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError)
    try:
        return pydicom.dcmread(str(path), **options)
    except InvalidDicomError as first:
        try:
            ds = pydicom.dcmread(str(path), force=True, **options)
        except errors:
            ds = None
        if ds is None or not (_sop_class(ds) or "Modality" in ds):
            raise DataError(f"{name}: not a readable DICOM file: {first}") from first
        return ds
    except errors as e:
        raise DataError(f"{name}: not a readable DICOM file: {e}") from e


def read_dicom(path: str | os.PathLike, item: str | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a single-file DICOM image as ``(array, meta)``.

    ``array`` is float32, channel first: ``(1, rows, cols)`` for a 2-D image, ``(1, frames, rows, cols)`` for a
    multi-frame one, ``(3, rows, cols)`` for RGB. Values are ``stored * RescaleSlope + RescaleIntercept``.
    """
    name = _name(item, path)
    ds = _read_dicom_dataset(path, name, header_only=False)
    _check_dicom_object(ds, name)
    try:
        pixels = ds.pixel_array
    except Exception as e:  # pydicom raises many types for truncated or undecodable pixel data
        raise DataError(f"{name}: DICOM pixel data cannot be decoded (truncated or corrupt?): {e}") from e
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


GRAY_PIL_MODES = ("L", "I", "I;16", "F")


def _pil_is_gray(img: Any) -> bool:
    """A Pillow image with one gray channel: gray modes, bilevel, gray with alpha, or a palette of grays only."""
    if img.mode in (*GRAY_PIL_MODES, "1", "LA"):
        return True
    if img.mode == "P":
        palette = np.asarray(img.getpalette() or [], dtype=np.int64).reshape(-1, 3)
        return bool(len(palette)) and bool((palette == palette[:, :1]).all())
    return False


def _read_pil(path: str | os.PathLike, item: str | None) -> tuple[np.ndarray, dict[str, Any]]:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            # one gray channel for every gray image (bilevel, gray + alpha, gray palette), RGB for the rest;
            # an alpha channel is dropped
            if img.mode not in (*GRAY_PIL_MODES, "RGB"):
                img = img.convert("L" if _pil_is_gray(img) else "RGB")
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


def _fit_spatial(shape: tuple[int, ...], spatial_dims: int | None, name: str) -> tuple[int, ...]:
    """The channel-first ``shape`` with singleton spatial axes beyond ``spatial_dims`` squeezed; raises naming
    ``name`` when the image has another dimensionality (for 3, a volume with a singleton axis too: it is one 2-D
    slice, and resizing it would invent the missing axis)."""
    if spatial_dims is None:
        return shape
    spatial = list(shape[1:])
    while len(spatial) > spatial_dims and 1 in spatial:
        spatial.remove(1)
    if len(spatial) != spatial_dims or (spatial_dims > 2 and 1 in spatial):
        raise DataError(f"{name}: expected a {spatial_dims}-D image, got array shape {tuple(shape[1:])}")
    return (shape[0], *spatial)


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
        DataError: missing file, unreadable or corrupt file, a DICOM object that is not an image, a CT image without
            rescale tags, wrong dimensionality, NaN or infinite pixels.
    """
    if not os.path.isfile(path):
        raise DataError(f"{_name(item, path)}: image file not found")
    readers = {"dicom": read_dicom, "nifti": _read_nifti, "pil": _read_pil, "numpy": _read_numpy}
    fmt = image_format(path)
    arr, meta = readers[fmt](path, item)
    if spatial_dims is not None:
        arr = arr.reshape(_fit_spatial(arr.shape, spatial_dims, _name(item, path)))
        meta["spacing"] = meta["spacing"][:spatial_dims]
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise DataError(f"{_name(item, path)}: image has {bad} NaN or infinite pixels")
    if arr.size == 0:
        raise DataError(f"{_name(item, path)}: image is empty")
    return arr, meta


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says about its image, without decoding the pixels.

    Attributes:
        path: the file.
        format: ``"dicom"``, ``"nifti"``, ``"pil"`` or ``"numpy"``.
        shape: ``(C, *spatial)`` as :func:`read_image` would return it (singleton axes squeezed to the
            dimensionality asked for).
        modality: the DICOM Modality (``""`` for other formats).
        hounsfield: the values are Hounsfield units: a CT DICOM image with its rescale tags.
    """

    path: str
    format: str
    shape: tuple[int, ...]
    modality: str = ""
    hounsfield: bool = False


def _dicom_header(path: str | os.PathLike, name: str) -> ImageHeader:
    ds = _read_dicom_dataset(path, name, header_only=True)
    _check_dicom_object(ds, name)
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError) as e:
        raise DataError(f"{name}: DICOM image without Rows/Columns") from e
    frames = int(ds.get("NumberOfFrames") or 1)
    samples = int(ds.get("SamplesPerPixel") or 1)
    spatial = (frames, rows, columns) if frames > 1 else (rows, columns)
    # the deferred pixel data element still knows where its value starts and how long it claims to be
    raw = getattr(ds, "_dict", {}).get(0x7FE00010)
    start, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
    if start is not None and length is not None and length != 0xFFFFFFFF and start + length > os.path.getsize(path):
        raise DataError(
            f"{name}: DICOM file truncated: its pixel data should hold {length} bytes, the file ends "
            f"{start + length - os.path.getsize(path)} bytes short"
        )
    modality = str(ds.get("Modality") or "")
    return ImageHeader(str(path), "dicom", (samples, *spatial), modality, hounsfield=modality.upper() == "CT")


def _nifti_header(path: str | os.PathLike, name: str) -> ImageHeader:
    import nibabel as nib

    try:
        shape = tuple(int(s) for s in nib.load(str(path)).shape)
    except Exception as e:  # nibabel raises ImageFileError, EOFError, zlib errors...
        raise DataError(f"{name}: not a readable NIfTI file: {e}") from e
    return ImageHeader(str(path), "nifti", (1, *shape))


def _pil_header(path: str | os.PathLike, name: str) -> ImageHeader:
    from PIL import Image

    try:
        with Image.open(path) as img:
            width, height = img.size
            channels = 1 if _pil_is_gray(img) else 3
    except Exception as e:
        raise DataError(f"{name}: not a readable image file: {e}") from e
    return ImageHeader(str(path), "pil", (channels, height, width))


def _numpy_header(path: str | os.PathLike, name: str) -> ImageHeader:
    try:
        shape = tuple(int(s) for s in np.load(path, mmap_mode="r", allow_pickle=False).shape)
    except Exception as e:
        raise DataError(f"{name}: not a readable .npy array: {e}") from e
    return ImageHeader(str(path), "numpy", (1, *shape))


def read_header(path: str | os.PathLike, item: str | None = None, spatial_dims: int | None = 2) -> ImageHeader:
    """Read only the header of one image: milliseconds per file, for checking a whole data list before any work.

    It finds what :func:`read_image` would refuse from the header alone (missing or unreadable file, a DICOM object
    that is not an image, a CT image without rescale tags, the wrong dimensionality); pixel data that cannot be
    decoded, NaN pixels and empty images show only when the image is read.

    Args:
        path: a DICOM, NIfTI, PNG/JPEG or .npy file.
        item: the data-list id, named in error messages.
        spatial_dims: as for :func:`read_image`.

    Raises:
        DataError: naming the item and the file.
    """
    name = _name(item, path)
    if not os.path.isfile(path):
        raise DataError(f"{name}: image file not found")
    readers = {"dicom": _dicom_header, "nifti": _nifti_header, "pil": _pil_header, "numpy": _numpy_header}
    header = readers[image_format(path)](path, name)
    shape = _fit_spatial(header.shape, spatial_dims, name)
    return ImageHeader(header.path, header.format, shape, header.modality, header.hounsfield)


def to_grayscale(array: np.ndarray) -> np.ndarray:
    """``(3, *spatial)`` RGB to ``(1, *spatial)`` luma (ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B), in the same
    units; a one-channel array is returned as it is."""
    if array.shape[0] == 1:
        return array
    if array.shape[0] != 3:
        raise ValueError(f"grayscale conversion needs 1 or 3 channels, got shape {array.shape}")
    weights = np.asarray([0.299, 0.587, 0.114], dtype=array.dtype).reshape(3, *([1] * (array.ndim - 1)))
    return (array * weights).sum(axis=0, keepdims=True)
