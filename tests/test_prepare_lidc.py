import json
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pydicom.data
import pytest

from monai_adv.datalist import load_datalist, pseudonymise
from monai_adv.io import DataError, read_image
from monai_adv.prepare import lidc

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64
SLICE_Z = [-10.0, -7.5, -5.0, -2.5, 0.0]
SPACING = 0.7
BACKGROUND_HU = -800
NODULE_HU = 100


def nodule(row, col, slice_index, ratings, radius=3, nodule_id="n"):
    return {"row": row, "col": col, "slice": slice_index, "ratings": ratings, "radius": radius, "id": nodule_id}


def _edge_map(row, col, radius):
    offsets = [(radius, 0), (-radius, 0), (0, radius), (0, -radius), (2, 2), (-2, -2), (2, -2), (-2, 2)]
    return "".join(f"<edgeMap><xCoord>{col + dx}</xCoord><yCoord>{row + dy}</yCoord></edgeMap>" for dx, dy in offsets)


def lidc_xml(series_uid, nodules, num_readers=4):
    """LIDC XML: reader k rates each nodule with ``ratings[k]`` (``None`` = reader k did not mark it)."""
    sessions = []
    for reader in range(num_readers):
        marks = []
        for n in nodules:
            rating = n["ratings"][reader] if reader < len(n["ratings"]) else None
            if rating is None:
                continue
            roi = (
                f"<roi><imageZposition>{SLICE_Z[n['slice']]}</imageZposition><imageSOP_UID>1.2</imageSOP_UID>"
                f"<inclusion>TRUE</inclusion>{_edge_map(n['row'], n['col'], n['radius'] + reader % 2)}</roi>"
            )
            marks.append(
                f"<unblindedReadNodule><noduleID>{n['id']}-{reader}</noduleID><characteristics>"
                f"<subtlety>3</subtlety><malignancy>{rating}</malignancy></characteristics>{roi}</unblindedReadNodule>"
            )
        marks.append(
            "<unblindedReadNodule><noduleID>small</noduleID><roi><imageZposition>-5.0</imageZposition>"
            "<inclusion>TRUE</inclusion><edgeMap><xCoord>5</xCoord><yCoord>5</yCoord></edgeMap></roi>"
            "</unblindedReadNodule>"
            "<nonNodule><nonNoduleID>x</nonNoduleID><imageZposition>-5.0</imageZposition></nonNodule>"
        )
        reader_id = f"<servicingRadiologistID>{reader}</servicingRadiologistID>"
        sessions.append(f"<readingSession>{reader_id}{''.join(marks)}</readingSession>")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<LidcReadMessage xmlns="http://www.nih.gov" uid="1">'
        f"<ResponseHeader><SeriesInstanceUid>{series_uid}</SeriesInstanceUid></ResponseHeader>{''.join(sessions)}"
        "</LidcReadMessage>"
    )


def make_lidc_series(root, writer, patient_id, nodules, series_uid=None, suffix=""):
    """One TCIA-style series folder: 5 slices of 64x64 at -800 HU with a +100 HU disk per nodule, and its XML."""
    series_uid = series_uid or f"1.2.826.0.1.{zlib.crc32(patient_id.encode())}"
    folder = root / patient_id / "01-01-2000-CT" / f"3000.000000-{series_uid[-6:]}"
    rows, cols = np.mgrid[:SIZE, :SIZE]
    for k, z in enumerate(SLICE_Z):
        hu = np.full((SIZE, SIZE), BACKGROUND_HU, np.int16)
        for n in nodules:
            if n["slice"] == k:
                hu[(rows - n["row"]) ** 2 + (cols - n["col"]) ** 2 <= n["radius"] ** 2] = NODULE_HU
        writer(
            folder / f"1-{k + 1:03d}{suffix}",
            (hu + 1024).astype(np.int16),
            Modality="CT",
            PatientID=patient_id,
            PatientName="Doe^Jane",
            SeriesInstanceUID=series_uid,
            RescaleIntercept=-1024,
            RescaleSlope=1,
            ImagePositionPatient=[-20.0, -20.0, z],
            SliceLocation=z,
            PixelSpacing=[SPACING, SPACING],
        )
    (folder / "069.xml").write_text(lidc_xml(series_uid, nodules))
    return folder


def make_lidc_source(root, writer, patients=6):
    """``patients`` patients, each with one benign nodule, one malignant nodule and one ambiguous (median 3) nodule."""
    for p in range(patients):
        make_lidc_series(
            root,
            writer,
            f"LIDC-IDRI-{p + 1:04d}",
            [
                nodule(20, 40, 1, [1, 2, 2], nodule_id="benign"),
                nodule(44, 16, 3, [4, 5], nodule_id="malignant"),
                nodule(30, 30, 2, [3, 3, 4], nodule_id="ambiguous"),
            ],
            suffix=".dcm" if p % 2 else "",
        )


def all_items(datalist):
    return datalist["training"] + datalist["test"]


def test_counts_split_and_privacy(tmp_path, prepare_dicom_writer):
    make_lidc_source(tmp_path / "src", prepare_dicom_writer)
    path = lidc.prepare(tmp_path / "src", tmp_path / "out")
    text = path.read_text()
    datalist = json.loads(text)
    assert datalist["classes"] == ["benign", "malignant"] and datalist["native_units"] == "HU"
    for side, n in (("training", 8), ("test", 4)):
        labels = [i["label"] for i in datalist[side]]
        assert len(labels) == n and labels.count(0) == labels.count(1) == n // 2
    train_patients = {i["patient_id"] for i in datalist["training"]}
    test_patients = {i["patient_id"] for i in datalist["test"]}
    assert len(train_patients) == 4 and len(test_patients) == 2 and not train_patients & test_patients
    assert pseudonymise("LIDC-IDRI-0001") in train_patients | test_patients
    assert {i["malignancy"] for i in all_items(datalist)} == {2.0, 4.5}
    names = [p.name for p in (tmp_path / "out").rglob("*")]
    assert len(names) == 12 + 2
    for raw in ("LIDC-IDRI", "Doe", "069.xml"):
        assert raw not in text
        assert not any(raw in name for name in names)
    assert len(load_datalist(path, "training")) == 8


def test_crop_is_centred_in_hu(tmp_path, prepare_dicom_writer):
    make_lidc_series(tmp_path / "src", prepare_dicom_writer, "LIDC-IDRI-0007", [
        nodule(20, 40, 1, [1, 2, 2], nodule_id="benign"),
        nodule(5, 60, 3, [5, 5, 4, 4], nodule_id="malignant"),
    ])
    path = lidc.prepare(tmp_path / "src", tmp_path / "out", crop_size=32)
    items = {i["label"]: i for i in all_items(json.loads(path.read_text()))}
    assert items[0]["readers"] == 3 and items[1]["readers"] == 4
    assert items[0]["slice_z"] == SLICE_Z[1] and items[1]["slice_z"] == SLICE_Z[3]
    for label, item in items.items():
        arr, meta = read_image(path.parent / item["image"])
        assert arr.shape == (1, 32, 32)
        np.testing.assert_allclose(meta["spacing"], [SPACING, SPACING], rtol=1e-5)
        crop = arr[0]
        blob = crop == NODULE_HU
        assert blob.sum() == 29
        com = np.argwhere(blob).mean(axis=0)
        np.testing.assert_allclose(com, [16, 16], atol=0.51)
        assert set(np.unique(crop)) <= {NODULE_HU, BACKGROUND_HU, lidc.PAD_HU}
    edge = read_image(path.parent / items[1]["image"])[0][0]
    assert (edge[:11] == lidc.PAD_HU).all() and (edge[:, 20:] == lidc.PAD_HU).all()
    assert (edge[11:, :20] != lidc.PAD_HU).all()
    import nibabel as nib

    assert nib.load(path.parent / items[0]["image"]).get_data_dtype() == np.int16


def test_ambiguous_rule_and_min_readers(tmp_path, prepare_dicom_writer):
    make_lidc_series(tmp_path / "src", prepare_dicom_writer, "LIDC-IDRI-0001", [
        nodule(10, 10, 0, [2, 3], nodule_id="two-and-a-half"),
        nodule(10, 50, 1, [3, 4], nodule_id="three-and-a-half"),
        nodule(50, 10, 2, [2, 4], nodule_id="three"),
        nodule(50, 50, 3, [3], nodule_id="three-single"),
        nodule(30, 30, 4, [None, None, 5], nodule_id="single"),
    ])
    medians = {}
    for ambiguous in ("exclude", "benign", "malignant"):
        datalist = json.loads(
            lidc.prepare(tmp_path / "src", tmp_path / ambiguous, ambiguous=ambiguous, balance=False).read_text()
        )
        medians[ambiguous] = sorted((i["malignancy"], i["label"]) for i in all_items(datalist))
    assert medians["exclude"] == [(2.5, 0), (3.5, 1), (5.0, 1)]
    assert medians["benign"] == [(2.5, 0), (3.0, 0), (3.0, 0), (3.5, 1), (5.0, 1)]
    assert medians["malignant"] == [(2.5, 0), (3.0, 1), (3.0, 1), (3.5, 1), (5.0, 1)]
    datalist = json.loads(lidc.prepare(tmp_path / "src", tmp_path / "two", min_readers=2, balance=False).read_text())
    assert sorted(i["malignancy"] for i in all_items(datalist)) == [2.5, 3.5]
    assert all(i["readers"] == 2 for i in all_items(datalist))
    with pytest.raises(ValueError, match="ambiguous"):
        lidc.prepare(tmp_path / "src", tmp_path / "x", ambiguous="drop")


def test_balancing_drops_the_larger_class(tmp_path, prepare_dicom_writer):
    for p in range(3):
        make_lidc_series(tmp_path / "src", prepare_dicom_writer, f"P{p}", [
            nodule(20, 20, 1, [1, 1, 1], nodule_id="b"),
            nodule(40, 40, 2, [5, 5], nodule_id="m1"),
            nodule(20, 45, 3, [4, 4, 5], nodule_id="m2"),
        ])
    datalist = json.loads(lidc.prepare(tmp_path / "src", tmp_path / "out").read_text())
    labels = [i["label"] for i in all_items(datalist)]
    assert labels.count(0) == labels.count(1) == 3
    assert len(list((tmp_path / "out" / "images").iterdir())) == 6
    unbalanced = json.loads(lidc.prepare(tmp_path / "src", tmp_path / "all", balance=False).read_text())
    assert len(all_items(unbalanced)) == 9


def test_seed_reproducible(tmp_path, prepare_dicom_writer):
    make_lidc_source(tmp_path / "src", prepare_dicom_writer)
    first = lidc.prepare(tmp_path / "src", tmp_path / "a", seed=0).read_text()
    assert lidc.prepare(tmp_path / "src", tmp_path / "b", seed=0).read_text() == first
    test_ids = {frozenset(i["id"] for i in json.loads(first)["test"])}
    for seed in (1, 2, 3):
        datalist = json.loads(lidc.prepare(tmp_path / "src", tmp_path / f"s{seed}", seed=seed).read_text())
        test_ids.add(frozenset(i["id"] for i in datalist["test"]))
    assert len(test_ids) > 1


def test_group_readings_rule():
    def reading(reader, x, y, z, radius=3.0):
        points = np.array([[x - radius, y, z], [x + radius, y, z], [x, y - radius, z], [x, y + radius, z]])
        return lidc.Reading(reader, "n", 3, x, y, z, points)

    readings = [
        reading(0, 10, 10, 0),
        reading(0, 40, 40, 0),
        reading(1, 12, 11, 1.0),
        reading(1, 10, 10, 0.5),
        reading(2, 40, 45, 0),
        reading(3, 80, 80, 30, radius=20),
        reading(2, 80, 90, 30),
    ]
    groups = lidc.group_readings(readings, spacing=(0.5, 0.5), group_distance_mm=2.0)
    members = sorted(sorted((r.reader, r.x, r.y) for r in g) for g in groups)
    assert members == [
        [(0, 10, 10), (1, 12, 11)],
        [(0, 40, 40)],
        [(1, 10, 10)],
        [(2, 40, 45)],
        [(2, 80, 90), (3, 80, 80)],
    ]


def test_ct_small_passes_the_slice_reader(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), folder / "000001")
    (folder / "notes.txt").write_text("not dicom")
    (tmp_path / "LICENSE").write_text("not dicom either, and without a suffix")
    series = lidc.index_dicom_tree(tmp_path)
    assert len(series) == 1
    (ct,) = series.values()
    assert ct.modality == "CT" and ct.shape == (128, 128) and len(ct.files) == 1
    assert ct.z == [pytest.approx(-75.7, abs=0.01)]
    hu = lidc.read_slice(ct, 0)
    assert hu.shape == (128, 128)
    assert -1000 < hu.min() < -850 and 500 < hu.max() < 2000


def test_corrupt_dicom(tmp_path, prepare_dicom_writer):
    folder = make_lidc_series(tmp_path / "src", prepare_dicom_writer, "LIDC-IDRI-0001", [nodule(20, 20, 1, [1])])
    (folder / "junk.dcm").write_bytes(np.random.default_rng(0).bytes(600))
    with pytest.raises(DataError, match=r"junk\.dcm: not a readable DICOM file"):
        lidc.prepare(tmp_path / "src", tmp_path / "out")


def test_missing_series(tmp_path, prepare_dicom_writer):
    make_lidc_series(tmp_path / "src", prepare_dicom_writer, "A", [nodule(20, 20, 1, [1])])
    make_lidc_series(tmp_path / "src", prepare_dicom_writer, "B", [nodule(20, 20, 1, [5])])
    folder = make_lidc_series(tmp_path / "src", prepare_dicom_writer, "C", [nodule(20, 20, 1, [5])], "9.9.9.9")
    for f in folder.glob("1-*"):
        f.unlink()
    with pytest.raises(DataError, match=r"069\.xml: its CT series 9\.9\.9\.9 is not in the DICOM tree"):
        lidc.prepare(tmp_path / "src", tmp_path / "out")
    datalist = json.loads(lidc.prepare(tmp_path / "src", tmp_path / "out", skip_missing_series=True).read_text())
    assert len(all_items(datalist)) == 2


def test_second_xml_of_a_series_is_ignored(tmp_path, prepare_dicom_writer):
    nodules = [nodule(20, 20, 1, [1]), nodule(40, 40, 2, [5])]
    folder = make_lidc_series(tmp_path / "src", prepare_dicom_writer, "A", nodules)
    (folder / "zz_copy.xml").write_text((folder / "069.xml").read_text())
    datalist = json.loads(lidc.prepare(tmp_path / "src", tmp_path / "out").read_text())
    assert sorted(i["malignancy"] for i in all_items(datalist)) == [1.0, 5.0]


def test_positions_are_needed_only_for_annotated_series(tmp_path, prepare_dicom_writer):
    make_lidc_series(tmp_path / "src", prepare_dicom_writer, "A", [nodule(20, 20, 1, [1]), nodule(40, 40, 2, [5])])
    radiograph = dict(Modality="DX", PatientID="A", SeriesInstanceUID="7.7.7")
    prepare_dicom_writer(tmp_path / "src" / "A" / "dx" / "1-1.dcm", np.zeros((8, 8), np.uint16), **radiograph)
    assert len(all_items(json.loads(lidc.prepare(tmp_path / "src", tmp_path / "out").read_text()))) == 2
    (tmp_path / "src" / "A" / "dx" / "dx.xml").write_text(lidc_xml("7.7.7", [nodule(2, 2, 1, [5])]))
    with pytest.raises(DataError, match=r"1-1\.dcm: DICOM slice has neither ImagePositionPatient nor SliceLocation"):
        lidc.prepare(tmp_path / "src", tmp_path / "out")


def test_series_without_patient_id(tmp_path, prepare_dicom_writer):
    make_lidc_series(tmp_path / "src", prepare_dicom_writer, "", [nodule(20, 20, 1, [1])])
    with pytest.raises(DataError, match=r"1-001: CT series .* has no PatientID"):
        lidc.prepare(tmp_path / "src", tmp_path / "out")


def test_nodule_outside_the_series(tmp_path, prepare_dicom_writer):
    folder = make_lidc_series(tmp_path / "src", prepare_dicom_writer, "A", [nodule(20, 20, 1, [1])])
    xml = (folder / "069.xml").read_text().replace("<imageZposition>-7.5<", "<imageZposition>-40.0<")
    (folder / "069.xml").write_text(xml)
    with pytest.raises(DataError, match=r"lidc_[0-9a-f]{16}_[0-9a-f]{8}_\d\d: nodule centre z=-40\.0 mm"):
        lidc.prepare(tmp_path / "src", tmp_path / "out")


def test_malignancy_outside_the_scale(tmp_path, prepare_dicom_writer):
    folder = make_lidc_series(tmp_path / "src", prepare_dicom_writer, "A", [nodule(20, 20, 1, [7], nodule_id="N7")])
    with pytest.raises(DataError, match=r"069\.xml: nodule N7-0 has malignancy 7, outside 1-5"):
        lidc.prepare(tmp_path / "src", tmp_path / "out")
    (folder / "069.xml").write_text("<LidcReadMessage><ResponseHeader>")
    with pytest.raises(DataError, match=r"069\.xml: not a readable XML file"):
        lidc.prepare(tmp_path / "src", tmp_path / "out")


def test_nothing_to_prepare(tmp_path, prepare_dicom_writer):
    (tmp_path / "src").mkdir()
    with pytest.raises(DataError, match="no LIDC XML annotation.*nothing to prepare"):
        lidc.prepare(tmp_path / "src", tmp_path / "out")
    (tmp_path / "src" / "radiograph.xml").write_text('<IdriReadMessage xmlns="http://www.nih.gov/idri"/>')
    with pytest.raises(DataError, match="nothing to prepare"):
        lidc.prepare(tmp_path / "src", tmp_path / "out")
    make_lidc_series(tmp_path / "src", prepare_dicom_writer, "A", [nodule(20, 20, 1, [3, 3])])
    with pytest.raises(DataError, match="no nodule with a usable malignancy rating; nothing to prepare"):
        lidc.prepare(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out" / "datalist.json").exists()


def test_script(tmp_path, prepare_dicom_writer):
    make_lidc_source(tmp_path / "src", prepare_dicom_writer, patients=3)
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "prepare_lidc.py"), "--source", str(tmp_path / "src"),
         "--output", str(tmp_path / "out"), "--seed", "1", "--crop-size", "32", "--ambiguous", "malignant"],
        capture_output=True, text=True, check=True,
    )
    assert result.stdout.startswith("lidc_idri: training ") and "benign" in result.stdout
    datalist = json.loads((tmp_path / "out" / "datalist.json").read_text())
    assert len(all_items(datalist)) == 6 and datalist["crop_size"] == 32
    bad = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "prepare_lidc.py"), "--source", str(tmp_path / "none"),
         "--output", str(tmp_path / "out2")],
        capture_output=True, text=True,
    )
    assert bad.returncode == 2 and "nothing to prepare" in bad.stderr
