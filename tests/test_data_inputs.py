"""Reading images and data lists: real sample files, and one clear error naming the item for each kind of bad input."""

import json
import os
import re

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from monai_adv.datalist import carve_validation, load_datalist, split_by_patient, write_datalist
from monai_adv.inputs import load_inference_items
from monai_adv.io import DataError, read_image
from monai_adv.transforms import CheckLabeld, LoadCropd


def write_ct_dicom(path, hu: np.ndarray, patient_id: str = "SECRET-MRN-123") -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.PatientName = "CT", patient_id, "Doe^Jane"
    ds.Rows, ds.Columns = hu.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.RescaleIntercept, ds.RescaleSlope, ds.PixelSpacing = -1024, 1, [0.7, 0.7]
    ds.PixelData = (hu + 1024).astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def make_datalist(tmp_path, n=6, labels=None):
    (tmp_path / "images").mkdir()
    items = []
    for k in range(n):
        hu = np.full((16, 16), -800, dtype=np.int16)
        hu[6:10, 6:10] = 40
        write_ct_dicom(tmp_path / "images" / f"c{k}.dcm", hu)
        label = labels[k] if labels else k % 2
        items.append({"id": f"crop{k}", "image": f"images/c{k}.dcm", "label": label, "patient_id": f"p{k // 2}"})
    test = [{**item, "id": f"test_{item['id']}", "patient_id": f"test_{item['patient_id']}"} for item in items[:2]]
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"classes": ["benign", "malignant"], "training": items, "test": test}))
    return path, items


def test_real_pydicom_ct_sample_reads_in_hounsfield_units():
    array, meta = read_image(get_testdata_file("CT_small.dcm"), item="ct_small")
    assert array.shape == (1, 128, 128)
    assert meta["modality"] == "CT" and meta["rescale_intercept"] == -1024.0
    assert -1100 < array.min() < -800 and array.max() > 500  # air and bone in HU, not raw stored values
    assert not any("Patient" in k for k in meta)


def test_real_pydicom_mr_and_nibabel_samples_read():
    mr, meta = read_image(get_testdata_file("MR_small.dcm"), item="mr_small")
    assert mr.shape == (1, 64, 64) and meta["modality"] == "MR"
    anatomical = os.path.join(os.path.dirname(nib.__file__), "tests", "data", "anatomical.nii")
    volume, meta = read_image(anatomical, item="brain", spatial_dims=3)
    assert volume.shape == (1, 33, 41, 25) and meta["spacing"] == [2.0, 2.0, 2.0]
    with pytest.raises(DataError, match=r"brain .*expected a 2-D image, got array shape \(33, 41, 25\)"):
        read_image(anatomical, item="brain", spatial_dims=2)


def test_load_crop_transform_gives_metatensor_without_patient_identifiers(tmp_path):
    hu = np.full((16, 16), -800, dtype=np.int16)
    write_ct_dicom(tmp_path / "c.dcm", hu)
    out = LoadCropd(keys="image")({"image": str(tmp_path / "c.dcm"), "id": "c"})
    assert out["image"].shape == (1, 16, 16)
    assert float(out["image"].max()) == -800.0
    assert "SECRET-MRN-123" not in repr(dict(out["image"].meta)) and "Doe" not in repr(dict(out["image"].meta))


def test_missing_image_names_the_item(tmp_path):
    path, items = make_datalist(tmp_path)
    os.remove(tmp_path / "images" / "c3.dcm")
    with pytest.raises(DataError, match=r"crop3 \(.*c3\.dcm\): image file not found"):
        load_datalist(path, "training")


def test_corrupt_and_truncated_dicom_name_the_item(tmp_path):
    path, _ = make_datalist(tmp_path)
    (tmp_path / "images" / "c1.dcm").write_bytes(b"this is not a dicom file at all" * 10)
    with pytest.raises(DataError, match=r"crop1 .*not a readable DICOM file"):
        load_datalist(path, "training")
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    path, _ = make_datalist(truncated)
    good = (truncated / "images" / "c2.dcm").read_bytes()
    (truncated / "images" / "c2.dcm").write_bytes(good[: len(good) - 200])
    with pytest.raises(DataError, match=r"crop2 .*(DICOM file truncated|pixel data cannot be decoded)"):
        load_datalist(path, "training")


def test_label_outside_classes_names_the_item(tmp_path):
    path, _ = make_datalist(tmp_path, labels=[0, 1, 0, 2, 1, 0])
    with pytest.raises(DataError, match=r"\[training\] crop3: label 2 is outside the classes 0..1"):
        load_datalist(path, "training")
    with pytest.raises(DataError, match=r"crop9: label 5 is outside the classes 0..1"):
        CheckLabeld(keys="label", num_classes=2)({"id": "crop9", "label": torch.tensor(5)})


def test_empty_data_list(tmp_path):
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"classes": ["a", "b"], "training": [], "test": []}))
    with pytest.raises(DataError, match=r"datalist\.json: 1 problem.*\n  - \[training\] section is empty"):
        load_datalist(path, "training")
    with pytest.raises(DataError, match=r"\[test\] section is empty"):
        load_inference_items(path, "test")
    with pytest.raises(DataError, match="data list not found"):
        load_datalist(tmp_path / "missing.json")


def test_nan_pixels_name_the_item(tmp_path):
    image = np.zeros((16, 16), dtype=np.float32)
    image[3, 4] = np.nan
    image[5, 5] = np.inf
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "bad.nii.gz")
    items = [{"id": "lesion7", "image": "bad.nii.gz", "label": 0}]
    (tmp_path / "datalist.json").write_text(json.dumps({"classes": ["a", "b"], "training": items}))
    with pytest.raises(DataError, match=r"lesion7 .*bad\.nii\.gz\): image has 2 NaN or infinite pixels"):
        load_datalist(tmp_path / "datalist.json")


def test_inference_items_from_folder(tmp_path):
    write_ct_dicom(tmp_path / "a.dcm", np.zeros((8, 8), dtype=np.int16))
    (tmp_path / "sub").mkdir()
    write_ct_dicom(tmp_path / "sub" / "b.dcm", np.zeros((8, 8), dtype=np.int16))
    (tmp_path / "notes.txt").write_text("not an image")
    items = load_inference_items(tmp_path)
    assert [i["id"] for i in items] == ["a", "sub/b"]


def test_split_by_patient_is_disjoint_balanced_and_seeded():
    items = [{"id": f"i{k}", "label": k % 2, "patient_id": f"p{k // 4}"} for k in range(120)]
    train, test = split_by_patient(items, seed=0)
    assert not {i["patient_id"] for i in train} & {i["patient_id"] for i in test}
    assert len(test) == 40 and sum(i["label"] for i in test) == 20
    assert split_by_patient(items, seed=0) == (train, test)
    assert split_by_patient(items, seed=1)[1] != test
    fit, val = carve_validation(train, fraction=0.2, seed=0)
    assert len(val) == 16 and not {i["patient_id"] for i in fit} & {i["patient_id"] for i in val}


def test_write_datalist_refuses_shared_patients_and_leaves_nothing(tmp_path):
    item = {"id": "x", "image": "x.dcm", "label": 0, "patient_id": "p1"}
    with pytest.raises(DataError, match=r"patients on both training and test sides: \['p1'\]"):
        write_datalist(tmp_path / "d.json", {"classes": ["a"], "training": [item], "test": [dict(item, id="y")]})
    assert list(tmp_path.iterdir()) == []


def test_nifti_of_the_wrong_dimensionality_names_the_file_and_both_shapes(tmp_path):
    def nifti(name, shape):
        nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), tmp_path / name)
        return tmp_path / name

    cases = [
        (nifti("volume.nii.gz", (16, 16, 8)), 2, r"expected a 2-D image, got array shape \(16, 16, 8\)"),
        (nifti("series.nii.gz", (16, 16, 1, 3)), 2, r"expected a 2-D image, got array shape \(16, 16, 1, 3\)"),
        (nifti("slice.nii.gz", (16, 16)), 3, r"expected a 3-D image, got array shape \(16, 16\)"),
        (nifti("one_slice.nii.gz", (16, 16, 1)), 3, r"expected a 3-D image, got array shape \(16, 16, 1\)"),
    ]
    for path, dims, message in cases:
        with pytest.raises(DataError, match=rf"lesion4 \({re.escape(str(path))}\): {message}"):
            read_image(path, item="lesion4", spatial_dims=dims)
        with pytest.raises(DataError, match=rf"lesion4 \(.*{path.name}\): {message}"):
            LoadCropd(keys="image", spatial_dims=dims)({"image": str(path), "id": "lesion4"})
    assert read_image(tmp_path / "one_slice.nii.gz", spatial_dims=2)[0].shape == (1, 16, 16)
    assert read_image(tmp_path / "volume.nii.gz", spatial_dims=3)[0].shape == (1, 16, 16, 8)
    items = [{"id": "lesion4", "image": "volume.nii.gz", "label": 0}]
    (tmp_path / "datalist.json").write_text(json.dumps({"classes": ["a", "b"], "training": items}))
    with pytest.raises(DataError, match=r"lesion4 \(.*volume\.nii\.gz\): expected a 2-D image"):
        load_datalist(tmp_path / "datalist.json")
    assert load_datalist(tmp_path / "datalist.json", spatial_dims=3)[0]["id"] == "lesion4"


def test_wrong_channel_count_names_the_item(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8), "RGB").save(tmp_path / "photo.png")
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(tmp_path / "gray.png")
    with pytest.raises(DataError, match=r"digit5 \(.*photo\.png\): expected 1 channel\(s\), got 3"):
        LoadCropd(keys="image", channels=1)({"image": str(tmp_path / "photo.png"), "id": "digit5"})
    with pytest.raises(DataError, match=r"plane2 \(.*gray\.png\): expected 3 channel\(s\), got 1"):
        LoadCropd(keys="image", channels=3)({"image": str(tmp_path / "gray.png"), "id": "plane2"})
    assert LoadCropd(keys="image")({"image": str(tmp_path / "photo.png"), "id": "x"})["image"].shape == (3, 8, 8)


def test_folder_inference_ids_carry_no_patient_identifier(tmp_path):
    """TCIA-style folders are named by PatientID: an id built from a DICOM file's path gets the identifiers of its
    header (PatientID SECRET-MRN-123, PatientName Doe^Jane) replaced by their pseudonyms."""
    from monai_adv.datalist import pseudonymise

    folder = tmp_path / "SECRET-MRN-123" / "doe_jane_scan"
    folder.mkdir(parents=True)
    write_ct_dicom(folder / "1-001.dcm", np.zeros((8, 8), np.int16))
    (item,) = load_inference_items(tmp_path)
    assert item["id"] == f"{pseudonymise('SECRET-MRN-123')}/{pseudonymise('Doe')}_{pseudonymise('Jane')}_scan/1-001"
    assert not any(s in item["id"].lower() for s in ("secret", "mrn", "doe", "jane"))
