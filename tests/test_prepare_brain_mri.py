import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_adv.datalist import load_datalist, pseudonymise
from monai_adv.io import DataError, read_image
from monai_adv.prepare import brain_mri

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (40, 48, 6)
SPACING = (0.9, 0.8, 3.0)
LESION = 500.0
ANATOMICAL = os.path.join(os.path.dirname(nib.__file__), "tests/data/anatomical.nii")


def write_mri_volume(path, lesions=(), shape=SHAPE):
    """A float32 NIfTI volume: a smooth background (x + 2y + 0.3z), a +500 disk of radius 3 in slice z per lesion."""
    x, y, z = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    volume = x + 2 * y + 0.3 * z
    for cx, cy, cz in lesions:
        volume[((x - cx) ** 2 + (y - cy) ** 2 <= 9) & (z == cz)] = LESION
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, np.diag([*SPACING, 1.0])), str(path))
    return volume


def write_mri_table(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["patient_id", "image", "x", "y", "z", "label", "comment"])
        writer.writerows(rows)


def make_mri_source(root, patients=6):
    """Each patient: one volume with a tumour row (lesion at (10, 30, 2)) and a normal row (centre (25, 12, 4))."""
    rows = []
    names = [("tumor", "0"), ("1", "no_tumor"), ("Tumor", "NORMAL")]
    for p in range(patients):
        image = f"volumes/MRN{p:06d}_t1c.nii.gz"
        write_mri_volume(root / image, lesions=[(10, 30, 2)])
        tumour, normal = names[p % 3]
        rows += [[f"MRN{p:06d}", image, 10, 30, 2, tumour, "x"], [f"MRN{p:06d}", image, 25.2, 11.6, 4, normal, ""]]
    write_mri_table(root / "lesions.csv", rows)
    return rows


def all_items(datalist):
    return datalist["training"] + datalist["test"]


def test_counts_split_crops_and_privacy(tmp_path):
    make_mri_source(tmp_path / "src")
    path = brain_mri.prepare(tmp_path / "src", tmp_path / "out")
    text = path.read_text()
    datalist = json.loads(text)
    assert datalist["classes"] == ["no_tumor", "tumor"] and datalist["modality"] == "MR"
    for side, n in (("training", 8), ("test", 4)):
        labels = [i["label"] for i in datalist[side]]
        assert len(labels) == n and labels.count(0) == labels.count(1)
    train_patients = {i["patient_id"] for i in datalist["training"]}
    test_patients = {i["patient_id"] for i in datalist["test"]}
    assert len(train_patients) == 4 and len(test_patients) == 2 and not train_patients & test_patients
    assert pseudonymise("MRN000000") in train_patients | test_patients
    volume = write_mri_volume(tmp_path / "ref.nii.gz", lesions=[(10, 30, 2)])
    for item in all_items(datalist):
        arr, meta = read_image(path.parent / item["image"])
        assert arr.shape == (1, 64, 64) and arr.dtype == np.float32
        np.testing.assert_allclose(meta["spacing"], SPACING[:2], rtol=1e-5)
        crop = arr[0]
        x, y, z = item["centre"]
        assert crop[32, 32] == volume[x, y, z] and crop[33, 32] == volume[x + 1, y, z]
        assert crop[32, 33] == volume[x, y + 1, z]
        if item["label"] == 1:
            assert item["centre"] == [10, 30, 2]
            np.testing.assert_allclose(np.argwhere(crop == LESION).mean(axis=0), [32, 32])
            assert (crop == LESION).sum() == 29
        else:
            assert item["centre"] == [25, 12, 4] and not (crop == LESION).any()
        assert (crop[: 32 - x] == 0).all() and (crop[32 - x + SHAPE[0] :] == 0).all()
        assert (crop[32 - x : 32 - x + SHAPE[0], 32 - y : 32 - y + SHAPE[1]] > 0).all()
    names = [p.name for p in (tmp_path / "out").rglob("*")]
    for raw in ("MRN0", "t1c", "volumes"):
        assert raw not in text and not any(raw in name for name in names)
    assert len(load_datalist(path, "training")) == 8


def test_balance_and_seed(tmp_path):
    write_mri_volume(tmp_path / "v.nii", lesions=[(10, 30, 2)])
    rows = [[f"P{p}", "v.nii", 10, 30, 2, "tumor"] for p in range(6)]
    rows += [[f"P{p}", "v.nii", 5, 5, 1, 0] for p in (0, 1, 2)]
    write_mri_table(tmp_path / "table.csv", [r + [""] for r in rows])
    first = brain_mri.prepare(tmp_path / "table.csv", tmp_path / "a", crop_size=16)
    datalist = json.loads(first.read_text())
    labels = [i["label"] for i in all_items(datalist)]
    assert labels.count(0) == labels.count(1) == 3
    assert len(list((tmp_path / "a" / "images").iterdir())) == 6
    assert read_image(first.parent / datalist["training"][0]["image"])[0].shape == (1, 16, 16)
    assert brain_mri.prepare(tmp_path, tmp_path / "b", crop_size=16, table="table.csv").read_text() == first.read_text()
    kept = {frozenset(i["id"] for i in all_items(datalist))}
    for seed in (1, 2, 3):
        other = json.loads(brain_mri.prepare(tmp_path / "table.csv", tmp_path / f"s{seed}", seed=seed).read_text())
        kept.add(frozenset(i["id"] for i in all_items(other)))
    assert len(kept) > 1
    unbalanced = json.loads(brain_mri.prepare(tmp_path / "table.csv", tmp_path / "c", balance=False).read_text())
    assert len(all_items(unbalanced)) == 9


def test_real_anatomical_volume(tmp_path):
    volume = nib.load(ANATOMICAL).get_fdata()
    write_mri_table(tmp_path / "lesions.csv", [["P1", ANATOMICAL, 16, 20, 12, "tumor", ""]])
    path = brain_mri.prepare(tmp_path, tmp_path / "out")
    (item,) = all_items(json.loads(path.read_text()))
    crop = read_image(path.parent / item["image"])[0][0]
    assert crop.shape == (64, 64)
    np.testing.assert_allclose(crop[16:49, 12:53], volume[:, :, 12])
    assert (crop[:16] == 0).all() and (crop[49:] == 0).all() and (crop[:, :12] == 0).all()


@pytest.mark.parametrize(
    "row, shape, message",
    [
        (["P1", "missing.nii.gz", 1, 1, 1, 1], SHAPE, r"lesions\.csv line 3 \(.*missing\.nii\.gz\): volume not found"),
        (["P1", "flat.nii.gz", 1, 1, 0, 1], (40, 48), r"lesions\.csv line 3 \(.*flat\.nii\.gz\): expected a 3-D"),
        (["P1", "four.nii.gz", 1, 1, 0, 1], (8, 8, 4, 2), r"line 3 \(.*four\.nii\.gz\): expected a 3-D volume, got"),
        (["P1", "v.nii.gz", 1, 48, 0, 1], SHAPE, r"lesions\.csv line 3: centre \(1, 48, 0\) is outside the volume"),
        (["P1", "v.nii.gz", 1, 1, -1, 1], SHAPE, r"lesions\.csv line 3: centre \(1, 1, -1\) is outside"),
        (["P1", "v.nii.gz", "a", 1, 1, 1], SHAPE, r"lesions\.csv line 3: centre x='a'"),
        (["P1", "v.nii.gz", 1, 1, 1, 7], SHAPE, r"lesions\.csv line 3: label '7' is not one of the classes"),
        (["", "v.nii.gz", 1, 1, 1, 0], SHAPE, r"lesions\.csv line 3: empty patient_id"),
    ],
)
def test_bad_rows(tmp_path, row, shape, message):
    write_mri_volume(tmp_path / "v.nii.gz")
    if row[1] in ("flat.nii.gz", "four.nii.gz"):
        nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), str(tmp_path / row[1]))
    write_mri_table(tmp_path / "lesions.csv", [["P0", "v.nii.gz", 1, 1, 1, 0, ""], row + [""]])
    with pytest.raises(DataError, match=message):
        brain_mri.prepare(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_nothing_to_prepare(tmp_path):
    with pytest.raises(DataError, match=r"lesions\.csv: lesion table not found; nothing to prepare"):
        brain_mri.prepare(tmp_path, tmp_path / "out")
    write_mri_table(tmp_path / "lesions.csv", [])
    with pytest.raises(DataError, match="the lesion table has no rows; nothing to prepare"):
        brain_mri.prepare(tmp_path, tmp_path / "out")
    (tmp_path / "lesions.csv").write_text("patient_id,image,x,y\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['z', 'label'\]"):
        brain_mri.prepare(tmp_path, tmp_path / "out")


def test_script(tmp_path):
    make_mri_source(tmp_path / "src", patients=3)
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "prepare_brain_mri.py"), "--source", str(tmp_path / "src"),
         "--output", str(tmp_path / "out"), "--crop-size", "32"],
        capture_output=True, text=True, check=True,
    )
    assert result.stdout.startswith("brain_mri: training ") and "no_tumor" in result.stdout
    datalist = json.loads((tmp_path / "out" / "datalist.json").read_text())
    assert len(all_items(datalist)) == 6 and datalist["crop_size"] == 32
