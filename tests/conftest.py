"""Shared test fixtures. Builders for tiny files in publishers' layouts are prefixed ``prepare_``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch


def write_prepare_dicom(path: Path, pixels: np.ndarray, **tags) -> Path:
    """Write a single-frame 16-bit grayscale DICOM file (explicit VR little endian, with preamble).

    ``pixels`` are the stored values (int16 when signed, uint16 otherwise); ``tags`` are set on the data set by
    keyword (Modality, PatientID, SeriesInstanceUID, RescaleIntercept, ImagePositionPatient, PixelSpacing, ...).
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    pixels = np.asarray(pixels)
    sop_uid = tags.pop("SOPInstanceUID", None) or generate_uid()
    sop_class = tags.pop("SOPClassUID", CTImageStorage)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = tags.pop("PhotometricInterpretation", "MONOCHROME2")
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    signed = pixels.dtype.kind == "i"
    ds.PixelRepresentation = 1 if signed else 0
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return path


@pytest.fixture
def prepare_dicom_writer():
    """The :func:`write_prepare_dicom` builder: ``writer(path, pixels, **tags) -> path``."""
    return write_prepare_dicom


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one intra-op thread, and far slower with several on a shared, loaded machine.
    Modules of tiny-model tests use it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: end-to-end tests that run the whole study (minutes); deselect with -m 'not slow'"
    )
