import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from monai_adv.datalist import load_datalist, pseudonymise
from monai_adv.io import DataError, read_image
from monai_adv.prepare import cbis_ddsm

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (96, 80)
BACKGROUND, LESION = 1000, 3000
MASS_BOX = (20, 20, 35, 30)
CALC_BOX = (50, 40, 57, 47)
COMMON = ["left or right breast", "image view", "abnormality id", "abnormality type"]
TAIL = ["assessment", "pathology", "subtlety", "image file path", "cropped image file path", "ROI mask file path"]
HEADERS = {
    "mass": ["patient_id", "breast_density", *COMMON, "mass shape", "mass margins", *TAIL],
    "calc": ["patient_id", "breast density", *COMMON, "calc type", "calc distribution", *TAIL],
}
MG = "1.2.840.10008.5.1.4.1.1.1.2"


def make_cbis_case(root, writer, kind, official, patient, side, view, box, pathology, layout="swapped", mono1=False):
    """Write one abnormality in the TCIA layout under ``root/CBIS-DDSM`` and return its CSV row.

    ``layout``: "swapped" (mask 1-1.dcm, cropped 1-2.dcm in one ROI series), "series" (mask and cropped image in two
    series folders) or "direct" (the CSV paths name the files as they lie on disk).
    """
    prefix = f"{'Mass' if kind == 'mass' else 'Calc'}-{'Training' if official == 'training' else 'Test'}"
    base = f"{prefix}_{patient}_{side}_{view}"
    tree = root / "CBIS-DDSM"
    full_dir = tree / base / "07-20-2016-DDSM-74994" / "1.000000-full mammogram images-24515"
    roi_dir = tree / f"{base}_1" / "07-21-2016-DDSM-09887" / "1.000000-ROI mask images-18018"
    r0, c0, r1, c1 = box
    image = np.full(SHAPE, BACKGROUND, np.uint16)
    image[r0 : r1 + 1, c0 : c1 + 1] = LESION
    if mono1:
        image = (BACKGROUND + LESION - image).astype(np.uint16)
    mask = np.zeros(SHAPE, np.uint16)
    mask[r0 : r1 + 1, c0 : c1 + 1] = 255
    tags = {"Modality": "MG", "PatientID": base, "SOPClassUID": MG}
    photometric = "MONOCHROME1" if mono1 else "MONOCHROME2"
    full = writer(full_dir / "1-1.dcm", image, PhotometricInterpretation=photometric, **tags)
    cropped_pixels = image[r0 : r1 + 1, c0 : c1 + 1]
    if layout == "series":
        mask_path = writer(roi_dir / "1-1.dcm", mask, **tags)
        crop_path = writer(roi_dir.with_name("1.000000-cropped images-1234") / "1-1.dcm", cropped_pixels, **tags)
    else:
        mask_path = writer(roi_dir / ("1-1.dcm" if layout == "swapped" else "1-2.dcm"), mask, **tags)
        crop_path = writer(roi_dir / ("1-2.dcm" if layout == "swapped" else "1-1.dcm"), cropped_pixels, **tags)
    uid = "1.3.6.1.4.1.9590.100.1.2.4221127222131896498"
    if layout == "direct":
        paths = [p.relative_to(root).as_posix() for p in (full, crop_path, mask_path)]
    else:
        roi = f"{base}_1/{uid}3/{uid}4"
        paths = [f"{base}/{uid}1/{uid}2/000000.dcm", f"{roi}/000000.dcm", f"{roi}/000001.dcm\n"]
    row = dict.fromkeys(HEADERS[kind], "x")
    row.update({
        "patient_id": patient, "left or right breast": side, "image view": view, "abnormality id": "1",
        "abnormality type": kind, "pathology": pathology, "image file path": paths[0],
        "cropped image file path": paths[1], "ROI mask file path": paths[2],
    })
    return row


def write_cbis_csvs(root, rows):
    """Write the four description CSVs (header only where no row), rows keyed by ``(kind, official)``."""
    for name, (kind, official) in cbis_ddsm.CSV_FILES.items():
        with open(root / name, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=HEADERS[kind])
            writer.writeheader()
            writer.writerows(rows.get((kind, official), []))


def make_cbis_source(root, writer, patients=6):
    """Each patient: one mass (official train for the first 4, test after) and one calcification (official train),
    one benign and one malignant, in the three ROI layouts in turn."""
    rows = {}
    layouts = ["swapped", "series", "direct"]
    for p in range(patients):
        patient = f"P_{p + 1:05d}"
        mass_official = "training" if p < 4 else "test"
        mass = make_cbis_case(root, writer, "mass", mass_official, patient, "LEFT", "CC", MASS_BOX,
                              "MALIGNANT" if p % 2 == 0 else "BENIGN", layouts[p % 3])
        calc = make_cbis_case(root, writer, "calc", "training", patient, "RIGHT", "MLO", CALC_BOX,
                              "BENIGN_WITHOUT_CALLBACK" if p % 2 == 0 else "MALIGNANT", layouts[(p + 1) % 3])
        rows.setdefault(("mass", mass_official), []).append(mass)
        rows.setdefault(("calc", "training"), []).append(calc)
    write_cbis_csvs(root, rows)
    return rows


def all_items(datalist):
    return datalist["training"] + datalist["test"]


def lesion_centre(crop):
    rows, cols = np.nonzero(crop == LESION)
    return (rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2


def test_pooled_split_counts_crops_and_privacy(tmp_path, prepare_dicom_writer):
    make_cbis_source(tmp_path, prepare_dicom_writer)
    path = cbis_ddsm.prepare(tmp_path, tmp_path / "out")
    text = path.read_text()
    datalist = json.loads(text)
    assert datalist["classes"] == ["benign", "malignant"]
    for side, n in (("training", 8), ("test", 4)):
        labels = [i["label"] for i in datalist[side]]
        assert len(labels) == n and labels.count(0) == labels.count(1)
    train_patients = {i["patient_id"] for i in datalist["training"]}
    test_patients = {i["patient_id"] for i in datalist["test"]}
    assert len(train_patients) == 4 and len(test_patients) == 2 and not train_patients & test_patients
    assert pseudonymise("P_00001") in train_patients | test_patients
    assert {i["official_split"] for i in datalist["test"]} <= {"training", "test"}
    by_pathology = {(i["pathology"], i["label"]) for i in all_items(datalist)}
    assert by_pathology == {("MALIGNANT", 1), ("BENIGN", 0), ("BENIGN_WITHOUT_CALLBACK", 0)}
    for item in all_items(datalist):
        crop = read_image(path.parent / item["image"])[0][0]
        assert crop.shape == (32, 32)
        assert set(np.unique(crop)) == {BACKGROUND, LESION}
        box = MASS_BOX if item["abnormality"] == "mass" else CALC_BOX
        assert (crop == LESION).sum() == (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
        assert lesion_centre(crop) == pytest.approx((15.5, 15.5), abs=0.5)
    names = [p.name for p in (tmp_path / "out").rglob("*")]
    for raw in ("P_0000", "Mass-", "Calc-", "CBIS-DDSM/"):
        assert raw not in text and not any(raw in name for name in names)
    assert len(load_datalist(path, "test")) == 4


def test_keep_official_split(tmp_path, prepare_dicom_writer):
    make_cbis_source(tmp_path, prepare_dicom_writer)
    datalist = json.loads(cbis_ddsm.prepare(tmp_path, tmp_path / "out", keep_official_split=True).read_text())
    assert [i["label"] for i in datalist["test"]].count(0) == 1 and len(datalist["test"]) == 2
    assert all(i["official_split"] == "test" and i["abnormality"] == "mass" for i in datalist["test"])
    assert len(datalist["training"]) == 8 and all(i["official_split"] == "training" for i in datalist["training"])
    assert not {i["patient_id"] for i in datalist["training"]} & {i["patient_id"] for i in datalist["test"]}


def test_seed(tmp_path, prepare_dicom_writer):
    make_cbis_source(tmp_path, prepare_dicom_writer)
    first = cbis_ddsm.prepare(tmp_path, tmp_path / "a").read_text()
    assert cbis_ddsm.prepare(tmp_path, tmp_path / "b").read_text() == first
    test_sets = {frozenset(i["id"] for i in json.loads(first)["test"])}
    for seed in (1, 2, 3):
        datalist = json.loads(cbis_ddsm.prepare(tmp_path, tmp_path / f"s{seed}", seed=seed).read_text())
        test_sets.add(frozenset(i["id"] for i in datalist["test"]))
    assert len(test_sets) > 1


def test_crop_margin_border_and_monochrome1(tmp_path, prepare_dicom_writer):
    rows = [
        make_cbis_case(tmp_path, prepare_dicom_writer, "mass", "training", "P_1", "LEFT", "CC", MASS_BOX, "BENIGN"),
        make_cbis_case(tmp_path, prepare_dicom_writer, "mass", "training", "P_2", "LEFT", "MLO", (0, 70, 9, 79),
                       "MALIGNANT", mono1=True),
    ]
    write_cbis_csvs(tmp_path, {("mass", "training"): rows})
    path = cbis_ddsm.prepare(tmp_path, tmp_path / "out", min_side=8, balance=False)
    items = {i["label"]: i for i in all_items(json.loads(path.read_text()))}
    centred = read_image(path.parent / items[0]["image"])[0][0]
    assert centred.shape == (20, 20)
    assert lesion_centre(centred) == pytest.approx((9.5, 9.5), abs=0.5)
    corner, meta = read_image(path.parent / items[1]["image"])
    assert corner.shape == (1, 12, 12)
    assert (corner[0, :10, 2:] == LESION).all() and (corner[0, 10:] == BACKGROUND).all()
    large = cbis_ddsm.mask_crop_box(np.pad(np.ones((90, 70)), ((3, 3), (5, 5))), margin=1.2)
    assert large == (8, 0, 80)


def test_missing_image(tmp_path, prepare_dicom_writer):
    """Errors name a row's first line: the first data row spans lines 2-3 (its ROI path ends in a quoted newline,
    as in the published CSVs), so the second row starts on line 4."""
    rows = make_cbis_source(tmp_path, prepare_dicom_writer, patients=2)
    rows[("calc", "training")][1]["image file path"] = "Calc-Training_P_09999_LEFT_CC/1.2/1.3/000000.dcm"
    write_cbis_csvs(tmp_path, rows)
    with pytest.raises(DataError, match=r"calc_case_description_train_set\.csv line 4: full mammogram not found"):
        cbis_ddsm.prepare(tmp_path, tmp_path / "out")


def test_corrupt_dicom(tmp_path, prepare_dicom_writer):
    make_cbis_source(tmp_path, prepare_dicom_writer, patients=2)
    (full,) = (tmp_path / "CBIS-DDSM" / "Mass-Training_P_00002_LEFT_CC").rglob("1-1.dcm")
    full.write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(DataError, match=r"mass_case_description_train_set\.csv line 4 \(.*1-1\.dcm\): not a readable"):
        cbis_ddsm.prepare(tmp_path, tmp_path / "out")


def test_unknown_pathology(tmp_path, prepare_dicom_writer):
    rows = make_cbis_source(tmp_path, prepare_dicom_writer, patients=2)
    rows[("mass", "training")][0]["pathology"] = "UNPROVEN"
    write_cbis_csvs(tmp_path, rows)
    with pytest.raises(DataError, match=r"mass_case_description_train_set\.csv line 2: pathology 'UNPROVEN'"):
        cbis_ddsm.prepare(tmp_path, tmp_path / "out")


def test_no_roi_of_the_right_size(tmp_path, prepare_dicom_writer):
    make_cbis_source(tmp_path, prepare_dicom_writer, patients=1)
    for path in (tmp_path / "CBIS-DDSM" / "Mass-Training_P_00001_LEFT_CC_1").rglob("*.dcm"):
        prepare_dicom_writer(path, np.zeros((10, 10), np.uint16), Modality="MG")
    with pytest.raises(DataError, match=r"line 2: no ROI file has the full mammogram's size 96x80"):
        cbis_ddsm.prepare(tmp_path, tmp_path / "out")


def test_nothing_to_prepare(tmp_path):
    with pytest.raises(DataError, match="no CBIS-DDSM description CSV.*nothing to prepare"):
        cbis_ddsm.prepare(tmp_path, tmp_path / "out")
    write_cbis_csvs(tmp_path, {})
    with pytest.raises(DataError, match="list no abnormality; nothing to prepare"):
        cbis_ddsm.prepare(tmp_path, tmp_path / "out")


def test_script(tmp_path, prepare_dicom_writer):
    make_cbis_source(tmp_path / "src", prepare_dicom_writer, patients=3)
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "prepare_cbis_ddsm.py"), "--source", str(tmp_path / "src"),
         "--output", str(tmp_path / "out"), "--keep-official-split", "--no-balance"],
        capture_output=True, text=True, check=True,
    )
    assert result.stdout.startswith("cbis_ddsm: training 6 (benign 3, malignant 3); test 0 (")
