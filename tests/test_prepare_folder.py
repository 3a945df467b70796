"""scripts/prepare_folder.py: a labelled folder tree or a table of images to a data list.

Images are real sample files shipped in the installed wheels (pydicom's CT_small.dcm, MR_small.dcm, the DICOM SEG
liver_1frame.dcm, rtstruct.dcm, the DICOMDIR; nibabel's anatomical.nii); many patients are copies of the real CT
file with another PatientID and SOPInstanceUID (and a rolled or flipped pixel array), in TCIA-like folders named by
PatientID. PNG/JPEG files, for which no real sample ships, are small generated ones.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import re
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from monai_adv.datacheck import GRAYSCALE_KEY, check_datalist
from monai_adv.datalist import pseudonymise
from monai_adv.io import DataError, read_image
from monai_adv.prepare.folder import prepare_folder

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "prepare_folder.py"
ANATOMICAL = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
SERIES = "1.000000-NA-12345"
UID_ROOT = "1.3.6.1.4.1.9328.50.4"  # UID components of 1-2 digits after it: no 5-digit run an identifier could match


@lru_cache(maxsize=None)
def _sample(name: str) -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file(name))


def write_copy(path: Path, patient_id: str, uid: str, sample: str = "CT_small.dcm", shift: int = 0,
               flip: bool = False, patient_name: str | None = None) -> Path:
    """A copy of a real pydicom sample with another patient and SOP instance, its pixels rolled (and flipped)."""
    ds = copy.deepcopy(_sample(sample))
    ds.PatientID = patient_id
    ds.PatientName = patient_name or f"Tester^{patient_id.split('-')[-1]}"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    pixels = np.roll(ds.pixel_array, shift, axis=1)
    ds.PixelData = np.ascontiguousarray(pixels[::-1] if flip else pixels).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path))
    return path


def tcia_tree(root: Path, classes: dict[str, int], sample: str = "CT_small.dcm") -> dict[str, list[Path]]:
    """``<root>/<class>/<PatientID>/<series>/<UID>.dcm``: per class that many patients, every third with two images.
    Returns the files of each PatientID."""
    files: dict[str, list[Path]] = {}
    n = 0
    for c, (name, patients) in enumerate(classes.items()):
        for p in range(patients):
            patient = f"LIDC-IDRI-{58100 + n}"
            for k in range(2 if p % 3 == 0 else 1):
                uid = f"{UID_ROOT}.{n}.{k + 1}"
                path = root / name / patient / SERIES / f"{uid}.dcm"
                write_copy(path, patient, uid, sample, shift=5 * n + k, flip=c == 1)
                files.setdefault(patient, []).append(path)
            n += 1
    return files


def write_png(path: Path, value: int = 100, rgb: bool = False, size: int = 16, fmt: str = "PNG") -> Path:
    rows = np.arange(size, dtype=np.uint16)[:, None]
    gray = ((rows * 7 + np.arange(size)[None] * 3 + value) % 256).astype(np.uint8)
    array = np.stack([gray, 255 - gray, gray // 2], axis=-1) if rgb else gray
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode="RGB" if rgb else "L").save(path, format=fmt)
    return path


def png_tree(root: Path, classes: dict[str, int], rgb: set[str] = frozenset()) -> None:
    """``<root>/<class>/img_<k>.png``: gray, or RGB for the images named in ``rgb``."""
    for c, (name, count) in enumerate(classes.items()):
        for k in range(count):
            write_png(root / name / f"img_{k}.png", value=40 * c + k, rgb=f"{name}/img_{k}" in rgb)


def items(datalist: dict) -> list[dict]:
    return datalist["training"] + datalist["test"]


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=ROOT)


# a folder tree ------------------------------------------------------------------------------------------------------


def test_tcia_folder_tree_to_datalist(tmp_path, capsys):
    files = tcia_tree(tmp_path / "src", {"nodule": 9, "no_nodule": 9})
    path = prepare_folder(tmp_path / "src", tmp_path / "out", seed=3)
    assert path == tmp_path / "out" / "datalist.json"
    datalist = load(path)
    assert datalist["classes"] == ["no_nodule", "nodule"]
    assert (datalist["name"], datalist["modality"], datalist["native_units"]) == ("src", "CT", "HU")
    assert set(datalist) == {"name", "modality", "native_units", "classes", "prepared_by", "training", "test"}
    assert datalist["prepared_by"] == "monai_adv.prepare.folder"

    # every image once, its label from its class folder, its patient pseudonymised from its header, its id the path
    # relative to the source without .dcm, the PatientID folder replaced by the same pseudonym
    by_file = {}
    for item in items(datalist):
        assert set(item) == {"id", "image", "label", "patient_id"}
        image = Path(item["image"])
        assert image.is_absolute() and image.is_symlink() and image.is_relative_to(tmp_path / "out" / "images")
        by_file[Path(os.readlink(image))] = item
    assert sorted(by_file) == sorted(f for fs in files.values() for f in fs)
    for patient, patient_files in files.items():
        for file in patient_files:
            item = by_file[file]
            cls = file.relative_to(tmp_path / "src").parts[0]
            assert datalist["classes"][item["label"]] == cls
            assert item["patient_id"] == pseudonymise(patient)
            assert item["id"] == f"{cls}/{pseudonymise(patient)}/{SERIES}/{file.stem}"
            assert item["image"] == str(tmp_path / "out" / "images" / f"{item['id']}.dcm")
            assert Path(item["image"]).read_bytes() == file.read_bytes()  # a link, not a converted copy

    # 2:1 by patient, classes on both sides, disjoint patients
    train_patients = {i["patient_id"] for i in datalist["training"]}
    test_patients = {i["patient_id"] for i in datalist["test"]}
    assert not train_patients & test_patients
    for k in (0, 1):
        n_train = sum(i["label"] == k for i in datalist["training"])
        n_test = sum(i["label"] == k for i in datalist["test"])
        assert n_test >= 3 and abs(n_test - (n_train + n_test) / 3) <= 1.5

    # no identifier anywhere in the data list: neither the PatientIDs, their numbers, the names, nor the source path
    text = path.read_text()
    for patient in files:
        assert patient not in text and patient.split("-")[-1] not in text
    assert "Tester" not in text and str(tmp_path / "src") not in text
    assert "warning" not in capsys.readouterr().err  # every image has a patient

    # the bundles' own check passes; images read through the links
    check_datalist(path, ["training", "test"], spatial_dims=2, channels=1, native_units="HU", val_fraction=0.2)
    image = datalist["test"][0]["image"]
    array, meta = read_image(image)
    assert meta["modality"] == "CT"
    np.testing.assert_array_equal(array[0], pydicom.dcmread(os.readlink(image)).pixel_array - 1024.0)  # HU

    # seeded: the same seed gives the same list, another seed another split
    again = prepare_folder(tmp_path / "src", tmp_path / "again", seed=3)
    assert load(again)["test"] == [{**i, "image": i["image"].replace("/out/", "/again/")} for i in datalist["test"]]
    other = load(prepare_folder(tmp_path / "src", tmp_path / "other", seed=4))
    assert {i["id"] for i in other["test"]} != {i["id"] for i in datalist["test"]}


def test_identifier_fragments_are_scrubbed_from_their_own_file_only(tmp_path):
    """A PatientID's number is scrubbed from its own file's id (a folder named by the number alone); the whole
    PatientID from every id (a PNG without header in that patient's folder); another patient's UIDs stay intact."""
    src = tmp_path / "src"
    tcia_tree(src, {"a": 5, "b": 5})
    write_copy(src / "a" / "case_0001" / "1.3.6.1.4.1.9328.50.4.91.1.dcm", "LIDC-IDRI-0001", f"{UID_ROOT}.91.1")
    write_copy(src / "b" / "LIDC-IDRI-0002" / "1.2.826.0.10001.dcm", "LIDC-IDRI-0002", "1.2.826.0.10001")
    write_png(src / "a" / "LIDC-IDRI-0001" / "scout.png")
    ids = {i["id"] for i in items(load(prepare_folder(src, tmp_path / "out")))}
    assert f"a/case_{pseudonymise('0001')}/1.3.6.1.4.1.9328.50.4.91.1" in ids
    assert f"b/{pseudonymise('LIDC-IDRI-0002')}/1.2.826.0.10001" in ids  # 0001 is another patient's fragment
    assert f"a/{pseudonymise('LIDC-IDRI-0001')}/scout" in ids


def test_real_dicomdir_tree_with_non_images_refused_then_skipped(tmp_path, capsys):
    """pydicom's DICOMDIR test tree (real CR/CT/MR files in folders named by PatientID, a DICOMDIR, a README.txt)
    inside a class folder, plus a real DICOM SEG, an RTSTRUCT, a CSV, a truncated file and a file outside any class."""
    src = tmp_path / "src"
    tcia_tree(src, {"nodule": 6, "no_nodule": 6})
    dicomdir_tree = Path(get_testdata_file("DICOMDIR")).parent
    shutil.copytree(dicomdir_tree / "77654033", src / "nodule" / "77654033")
    shutil.copy(dicomdir_tree / "DICOMDIR", src / "nodule" / "DICOMDIR")
    shutil.copy(dicomdir_tree / "README.txt", src / "nodule" / "README.txt")
    (src / "no_nodule" / "seg").mkdir()
    shutil.copy(get_testdata_file("liver_1frame.dcm"), src / "no_nodule" / "seg" / "liver_1frame.dcm")
    shutil.copy(get_testdata_file("rtstruct.dcm"), src / "no_nodule" / "rtstruct.dcm")
    (src / "no_nodule" / "annotations.csv").write_text("id,label\n1,0\n")
    truncated = src / "no_nodule" / "truncated.dcm"
    truncated.write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes()[:3000])
    (src / "LICENSE.txt").write_text("not data")
    (src / "nodule" / "LIDC-IDRI-58100" / "notes.txt").write_text("a file without a header in a PatientID folder")
    (src / "no_nodule" / ".DS_Store").write_text("hidden files are ignored")

    with pytest.raises(DataError) as error:
        prepare_folder(src, tmp_path / "out")
    message = str(error.value)
    expected = {
        "nodule/DICOMDIR": "a DICOMDIR (media storage directory), not an image",
        "nodule/README.txt": "not an image file name (.txt)",
        "no_nodule/seg/liver_1frame.dcm": "Segmentation Storage, Modality SEG is not an image to classify",
        "no_nodule/rtstruct.dcm": "RT Structure Set Storage, Modality RTSTRUCT is not an image to classify",
        "no_nodule/annotations.csv": "not an image file name (.csv)",
        "no_nodule/truncated.dcm": "truncated",
        "LICENSE.txt": "not inside a class folder",
        "nodule/LIDC-IDRI-58100/notes.txt": "not an image file name (.txt)",
    }
    assert "8 of " in message and "--skip_unreadable" in message
    for name, reason in expected.items():
        line = next(line for line in message.splitlines() if line.strip().startswith(f"{name}:"))
        assert reason in line
    assert ".DS_Store" not in message
    assert not (tmp_path / "out" / "datalist.json").exists()

    path = prepare_folder(src, tmp_path / "out", skip_unreadable=True)
    assert "skipped 8 of" in capsys.readouterr().err
    with open(tmp_path / "out" / "skipped.csv", newline="") as f:
        skipped = {row["id"]: row["reason"] for row in csv.DictReader(f)}
    assert len(skipped) == 8
    assert f"nodule/{pseudonymise('LIDC-IDRI-58100')}/notes.txt" in skipped  # scrubbed with its folder's PatientID
    assert "Modality SEG" in skipped["no_nodule/seg/liver_1frame"] and "DICOMDIR" in skipped["nodule/DICOMDIR"]
    assert all(str(tmp_path) not in reason for reason in skipped.values())
    datalist = load(path)
    # the DICOMDIR tree's own images are kept: its CR and CT files (16 x 16), patient 77654033 pseudonymised
    kept = [i for i in items(datalist) if i["patient_id"] == pseudonymise("77654033")]
    assert len(kept) == 7 and all(i["label"] == datalist["classes"].index("nodule") for i in kept)
    assert datalist["modality"] == "CR+CT"
    text = path.read_text() + (tmp_path / "out" / "skipped.csv").read_text()
    for identifier in ("77654033", "99000", "JANCT000", "Phantom30sep", "58100"):
        assert identifier not in text

    # a second run without skipping problems removes the stale skipped.csv and stale links
    shutil.rmtree(src / "nodule" / "77654033")
    for name in ("DICOMDIR", "README.txt"):
        (src / "nodule" / name).unlink()
    for name in ("seg/liver_1frame.dcm", "rtstruct.dcm", "annotations.csv", "truncated.dcm"):
        (src / "no_nodule" / name).unlink()
    (src / "LICENSE.txt").unlink()
    (src / "nodule" / "LIDC-IDRI-58100" / "notes.txt").unlink()
    path = prepare_folder(src, tmp_path / "out")
    assert not (tmp_path / "out" / "skipped.csv").exists()
    links = {str(p) for p in (tmp_path / "out" / "images").rglob("*") if p.is_symlink()}
    assert links == {i["image"] for i in items(load(path))}


def test_png_tree_one_patient_per_image_warns(tmp_path, capsys):
    png_tree(tmp_path / "src", {"cat": 6, "dog": 7})
    datalist = load(prepare_folder(tmp_path / "src", tmp_path / "out"))
    err = capsys.readouterr().err
    assert "warning: 13 of 13 image(s) have no patient identifier" in err and "split by image" in err
    assert len({i["patient_id"] for i in items(datalist)}) == 13
    assert (datalist["classes"], datalist["modality"], datalist["native_units"]) == (["cat", "dog"], "unknown",
                                                                                     "gray levels")
    assert len(items(datalist)) == 13  # nothing dropped to balance the classes
    assert sorted(i["id"] for i in items(datalist)) == sorted([f"cat/img_{k}" for k in range(6)]
                                                              + [f"dog/img_{k}" for k in range(7)])


def test_balance_is_an_explicit_option(tmp_path, capsys):
    png_tree(tmp_path / "src", {"cat": 6, "dog": 9})
    datalist = load(prepare_folder(tmp_path / "src", tmp_path / "out", balance=True, modality="XR"))
    assert [sum(i["label"] == k for i in items(datalist)) for k in (0, 1)] == [6, 6]
    assert "--balance dropped 3 image(s)" in capsys.readouterr().err
    assert datalist["modality"] == "XR"


def test_rgb_needs_the_grayscale_option(tmp_path, capsys):
    png_tree(tmp_path / "src", {"a": 6, "b": 6}, rgb={"a/img_0", "b/img_2"})
    with pytest.raises(DataError, match=r"10 gray and 2 RGB image\(s\).*--grayscale"):
        prepare_folder(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out" / "datalist.json").exists()

    path = prepare_folder(tmp_path / "src", tmp_path / "out", grayscale=True)
    assert "2 RGB image(s) marked 'to_grayscale'" in capsys.readouterr().err
    datalist = load(path)
    marked = sorted(i["id"] for i in items(datalist) if i.get(GRAYSCALE_KEY))
    assert marked == ["a/img_0", "b/img_2"]
    assert all(i[GRAYSCALE_KEY] is True for i in items(datalist) if GRAYSCALE_KEY in i)
    # the files stay RGB on disk; the bundles' loader converts the marked items, and their check accepts them
    item = next(i for i in items(datalist) if i["id"] == "a/img_0")
    assert read_image(item["image"])[0].shape == (3, 16, 16)
    from monai_adv.transforms import LoadCropd

    assert LoadCropd("image", channels=1)(item)["image"].shape == (1, 16, 16)
    check_datalist(path, ["training", "test"], channels=1, val_fraction=0.2)

    # all RGB: three channels as they are, nothing marked
    png_tree(tmp_path / "rgb", {"a": 6, "b": 6}, rgb={f"{c}/img_{k}" for c in "ab" for k in range(6)})
    datalist = load(prepare_folder(tmp_path / "rgb", tmp_path / "out_rgb"))
    assert not any(GRAYSCALE_KEY in i for i in items(datalist))


def test_id_collisions_name_both_files(tmp_path):
    png_tree(tmp_path / "src", {"a": 6, "b": 6})
    write_png(tmp_path / "src" / "a" / "img_1.jpg", fmt="JPEG")
    write_png(tmp_path / "src" / "b" / "IMG_3.jpeg", fmt="JPEG")
    with pytest.raises(DataError) as error:
        prepare_folder(tmp_path / "src", tmp_path / "out")
    message = str(error.value)
    assert "a/img_1.jpg and a/img_1.png would both get the id 'a/img_1'" in message
    assert "b/IMG_3.jpeg and b/img_3.png" in message  # ids are compared ignoring case


# a table -------------------------------------------------------------------------------------------------------------


def write_table(path: Path, rows: list[list], header=("path", "label", "patient_id")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def png_table_source(root: Path, labels: list[str], patients: int = 12) -> list[list]:
    """Two PNG images per patient in a folder named by the patient's MRN; rows ``path, label, MRN``, the second
    image's path absolute."""
    rows = []
    for p in range(patients):
        mrn = f"MRN{770000 + p}"
        label = labels[p % len(labels)]
        for k in range(2):
            path = write_png(root / "scans" / mrn / f"view_{k}.png", value=10 * p + k)
            rows.append([str(path) if k else f"scans/{mrn}/view_{k}.png", label, mrn])
    return rows


def test_table_with_string_labels(tmp_path, capsys):
    rows = png_table_source(tmp_path / "src", ["tumor", "normal"])
    table = write_table(tmp_path / "src" / "labels.csv", rows)
    datalist = load(prepare_folder(table, tmp_path / "out", modality="MR"))
    assert datalist["classes"] == ["normal", "tumor"]
    assert (datalist["name"], datalist["modality"]) == ("labels", "MR")
    assert "warning" not in capsys.readouterr().err
    by_id = {i["id"]: i for i in items(datalist)}
    for path, label, mrn in rows:
        relative = Path(path).relative_to(tmp_path / "src") if Path(path).is_absolute() else Path(path)
        item = by_id[str(relative.with_suffix("")).replace(mrn, pseudonymise(mrn))]
        assert datalist["classes"][item["label"]] == label and item["patient_id"] == pseudonymise(mrn)
    assert not {i["patient_id"] for i in datalist["training"]} & {i["patient_id"] for i in datalist["test"]}
    text = (tmp_path / "out" / "datalist.json").read_text()
    # the MRNs' digits (not any "770": a 16-hex-digit pseudonym holds one for about 1 salt in 25)
    assert "MRN" not in text and not [mrn for _, _, mrn in rows if mrn[3:] in text]

    # --class_names sets the order (and so the label indices)
    datalist = load(prepare_folder(table, tmp_path / "out2", class_names="tumor,normal"))
    assert datalist["classes"] == ["tumor", "normal"]
    assert {by_id[i["id"]]["label"] for i in items(datalist) if i["label"] == 0} == {1}
    with pytest.raises(DataError, match=r"--class_names must list exactly the classes present \(normal, tumor\).*"
                                        r"\['benign'\] have no images; \['normal'\] are not listed"):
        prepare_folder(table, tmp_path / "out3", class_names="tumor,benign")


def test_table_with_integer_labels(tmp_path):
    rows = png_table_source(tmp_path / "src", ["1", "0", "2"])
    table = write_table(tmp_path / "src" / "labels.csv", rows)
    datalist = load(prepare_folder(table, tmp_path / "out"))
    assert datalist["classes"] == ["0", "1", "2"]
    assert {i["id"].split("/")[1]: i["label"] for i in items(datalist)} == {
        pseudonymise(mrn): int(label) for _, label, mrn in rows}
    named = load(prepare_folder(table, tmp_path / "out2", class_names="none, small, large"))
    assert named["classes"] == ["none", "small", "large"]
    assert [i["label"] for i in items(named)] == [i["label"] for i in items(datalist)]
    with pytest.raises(DataError, match=r"--class_names none,small names 2 classes.*0\.\.2"):
        prepare_folder(table, tmp_path / "out3", class_names="none,small")


@pytest.mark.parametrize(
    "labels, message",
    [
        (["1", "2"], r"integer labels must be exactly the class indices 0\.\.K-1; found \[1, 2\] \(no \[0\]\).*"
                     r"--class_names"),
        (["0", "2"], r"found \[0, 2\] \(no \[1\]\)"),
        (["0", "tumor"], r"labels mix integers \['0'\] and names \['tumor'\]"),
        (["Tumor", "tumor"], r"labels differing only in case .*\['Tumor', 'tumor'\]"),
        (["0", "00"], r"labels \['0', '00'\] write one integer in several ways"),
        (["tumor"], r"1 class \(tumor\); a classifier needs at least two"),
    ],
)
def test_bad_labels_are_errors_naming_the_setting(tmp_path, labels, message):
    table = write_table(tmp_path / "src" / "labels.csv", png_table_source(tmp_path / "src", labels))
    with pytest.raises(DataError, match=message):
        prepare_folder(table, tmp_path / "out")
    assert not (tmp_path / "out" / "datalist.json").exists()


def test_table_rows_missing_files_duplicates_and_no_patient_column(tmp_path, capsys):
    rows = png_table_source(tmp_path / "src", ["a", "b"])
    table = write_table(tmp_path / "src" / "t.csv", [*rows, ["scans/gone.png", "a", "MRN1"], [rows[0][0], "a", ""],
                                                    ["scans/x.png", "", "MRN2"]])
    with pytest.raises(DataError) as error:
        prepare_folder(table, tmp_path / "out", skip_unreadable=True)
    message = str(error.value)
    assert "t.csv line 28: empty label" in message  # labelling problems are never skipped
    assert "t.csv line 2 (scans/MRN770000/view_0.png) and t.csv line 27 (scans/MRN770000/view_0.png) (the same file)" \
        in message
    table = write_table(tmp_path / "src" / "t.csv", [*rows, ["scans/gone.png", "a", "MRN1"]])
    with pytest.raises(DataError, match=r"t.csv line 26 \(scans/gone.png\): file not found"):
        prepare_folder(table, tmp_path / "out")

    # without a patient_id column, PNG images are their own patients
    table = write_table(tmp_path / "src" / "t.csv", [r[:2] for r in rows], header=("path", "label"))
    prepare_folder(table, tmp_path / "out")
    assert "warning: 24 of 24 image(s) have no patient identifier" in capsys.readouterr().err


def test_nifti_volumes_and_declared_units(tmp_path, capsys):
    """Real NIfTI volumes (nibabel's anatomical.nii) for a 3-D run: their units are declared, never guessed."""
    rows = []
    for p in range(12):
        target = tmp_path / "src" / "vol" / f"subject_{p:02d}.nii"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ANATOMICAL, target)
        rows.append([f"vol/subject_{p:02d}.nii", "lesion" if p % 2 else "healthy", f"SUBJ-{p:02d}"])
    table = write_table(tmp_path / "src" / "t.csv", rows)
    datalist = load(prepare_folder(table, tmp_path / "out", spatial_dims=3, native_units="T1 signal", modality="MR"))
    assert (datalist["modality"], datalist["native_units"]) == ("MR", "T1 signal")
    assert datalist["classes"] == ["healthy", "lesion"]
    check_datalist(tmp_path / "out" / "datalist.json", ["training", "test"], spatial_dims=3, channels=1)
    plain = load(prepare_folder(table, tmp_path / "out2", spatial_dims=3))
    assert (plain["modality"], plain["native_units"]) == ("unknown", "raw intensity")
    with pytest.raises(DataError, match=r"(?s)12 of 12 file\(s\) cannot be used.*expected a 2-D image, got array shape "
                                        r"\(33, 41, 25\)"):
        prepare_folder(table, tmp_path / "out3")

    # DICOM headers say their units: a declaration contradicting them is an error
    tcia_tree(tmp_path / "mr", {"a": 6, "b": 6}, sample="MR_small.dcm")
    datalist = load(prepare_folder(tmp_path / "mr", tmp_path / "out_mr"))
    assert (datalist["modality"], datalist["native_units"]) == ("MR", "raw intensity")
    with pytest.raises(DataError, match=r"--native_units HU contradicts what the files say: raw intensity \(dicom\)"):
        prepare_folder(tmp_path / "mr", tmp_path / "out_mr2", native_units="HU")


def test_a_class_of_one_patient_cannot_be_split(tmp_path):
    tcia_tree(tmp_path / "src", {"nodule": 8, "rare": 1})
    with pytest.raises(DataError) as error:
        prepare_folder(tmp_path / "src", tmp_path / "out")
    message = str(error.value)
    assert "has no image of class 'rare': its 1 patient(s) cannot be split by patient" in message
    assert "has no item of class 'rare'" in message  # the bundles' own check, at the same time
    assert not (tmp_path / "out").exists()  # nothing written: no data list, no links


def test_a_data_list_this_command_did_not_write_is_never_replaced(tmp_path):
    """``run_study.py --images`` into an output whose ``dataset/datalist.json`` was the user's replaced it silently."""
    tcia_tree(tmp_path / "src", {"solid": 6, "subsolid": 6})
    mine = tmp_path / "out" / "datalist.json"
    mine.parent.mkdir()
    mine.write_text('{"mine": 1}')
    with pytest.raises(DataError, match="a data list this command did not write is already there"):
        prepare_folder(tmp_path / "src", tmp_path / "out")
    assert mine.read_text() == '{"mine": 1}' and not (tmp_path / "out" / "images").exists()
    mine.unlink()
    prepare_folder(tmp_path / "src", tmp_path / "out")
    prepare_folder(tmp_path / "src", tmp_path / "out")  # its own data list is replaced


def test_output_inside_the_source_and_a_class_without_images(tmp_path):
    png_tree(tmp_path / "src", {"a": 6, "b": 6})
    with pytest.raises(DataError, match="lies inside --source"):
        prepare_folder(tmp_path / "src", tmp_path / "src" / "prepared")
    (tmp_path / "src" / "c").mkdir()
    with pytest.raises(DataError, match=r"class\(es\) \['c'\] hold no usable image"):
        prepare_folder(tmp_path / "src", tmp_path / "out")


# the command line ----------------------------------------------------------------------------------------------------


def test_script_exit_codes(tmp_path):
    tcia_tree(tmp_path / "src", {"nodule": 6, "no_nodule": 6})
    (tmp_path / "src" / "nodule" / "README.txt").write_text("notes")
    bad = run_script("--source", str(tmp_path / "src"), "--output", str(tmp_path / "out"))
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "nodule/README.txt: not an image file name" \
        in bad.stderr and bad.stdout == ""
    good = run_script("--source", str(tmp_path / "src"), "--output", str(tmp_path / "out"), "--seed", "1",
                      "--skip_unreadable", "--name", "my_ct")
    assert good.returncode == 0, good.stderr
    assert "skipped 1 of" in good.stderr
    assert re.fullmatch(r"my_ct: training \d+ \(no_nodule \d+, nodule \d+\); test \d+ \(no_nodule \d+, nodule \d+\) -> "
                        + re.escape(str(tmp_path / "out" / "datalist.json")) + r"\n", good.stdout)
    assert list(csv.reader(open(tmp_path / "out" / "skipped.csv"))) == [
        ["id", "reason"], ["nodule/README.txt", "not an image file name (.txt)"]]
    labels = run_script("--source", str(tmp_path / "src"), "--output", str(tmp_path / "o2"), "--skip-unreadable",
                        "--class_names", "a,b,c")
    assert labels.returncode == 2 and "--class_names must list exactly the classes present" in labels.stderr
    missing = run_script("--source", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o3"))
    assert missing.returncode == 2 and "no such folder or table" in missing.stderr


# end to end ----------------------------------------------------------------------------------------------------------

CLASSES = ["ground_glass", "part_solid"]


@pytest.mark.slow
def test_prepared_folder_runs_the_whole_study(tmp_path):
    """Copies of the real CT sample in two classes of our own -> prepare_folder -> scripts/run_study.py: every stage
    runs, and the outputs carry our class names, never the CT bundle's default ones."""
    tcia_tree(tmp_path / "src", {CLASSES[0]: 12, CLASSES[1]: 12})
    prepared = run_script("--source", str(tmp_path / "src"), "--output", str(tmp_path / "data"), "--name", "own_ct")
    assert prepared.returncode == 0, prepared.stderr
    command = [sys.executable, str(ROOT / "scripts" / "run_study.py"), "--dataset_dir", str(tmp_path / "data"),
               "--profile", "demo", "--output", str(tmp_path / "study"), "--set", "max_epochs=2",
               "--set", "adversarial_train:max_epochs=1", "--set", "attack:eps_grid=[0.001,0.003]",
               "--set", "compare:eps_grid=[0.003]"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    study = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    assert study.returncode == 0, (study.stdout + study.stderr)[-4000:]
    bundle = tmp_path / "study" / "lung_nodule_ct_classification"

    with open(bundle / "evaluate" / "test_predictions.csv", newline="") as f:
        predictions = list(csv.DictReader(f))
    assert {f"p_{c}" for c in CLASSES} <= set(predictions[0])
    assert {r["label"] for r in predictions} == set(CLASSES) and {r["prediction"] for r in predictions} <= set(CLASSES)
    with open(bundle / "triage" / "sensitivity.csv", newline="") as f:
        sensitivity = list(csv.DictReader(f))
    assert {r["label"] for r in sensitivity} == set(CLASSES)
    assert {r["id"] for r in sensitivity} == {r["id"] for r in predictions}
    outputs = [p for p in (tmp_path / "study").rglob("*") if p.suffix in (".csv", ".json", ".md", ".log")]
    for path in outputs:
        text = path.read_text(errors="replace").lower()
        assert "benign" not in text and "malignant" not in text, path
    report = (tmp_path / "study" / "report" / "report.md").read_text()
    assert "own_ct" in report
    # the report names the data set's classes, and not the paper's data set as if it were ours
    assert all(c in report for c in CLASSES), "report.md does not name the data set's classes"
    assert "paper (%)" not in report and "(CT: LIDC-IDRI lung nodules)" not in report


def test_the_study_runner_prepares_images_itself(tmp_path, monkeypatch, capsys):
    """``run_study.py --images <folder>``: the folder is prepared into ``<output>/dataset`` and that data set is
    studied; a folder that cannot be prepared stops the study before anything runs."""
    from monai_adv.study import cli

    tcia_tree(tmp_path / "source", {"solid": 6, "subsolid": 6})
    studied = {}

    def fake_run_study(bundles, output, bundles_dir, dataset_dir, *args, **kwargs):
        studied["dataset_dir"] = dataset_dir
        raise cli.StudyError("stopped by the test")

    monkeypatch.setattr(cli, "run_study", fake_run_study)
    assert cli.main(["--images", str(tmp_path / "source"), "--output", str(tmp_path / "study")]) == 1
    assert studied["dataset_dir"] == tmp_path / "study" / "dataset"
    assert load(tmp_path / "study" / "dataset" / "datalist.json")["classes"] == ["solid", "subsolid"]
    (tmp_path / "one_class" / "solid").mkdir(parents=True)
    write_png(tmp_path / "one_class" / "solid" / "a.png")
    studied.clear()
    assert cli.main(["--images", str(tmp_path / "one_class"), "--output", str(tmp_path / "study2")]) == 1
    assert not studied and not (tmp_path / "study2" / "dataset" / "datalist.json").exists()
    # options the study runner does not have are named as prepare_folder.py's
    assert "scripts/prepare_folder.py's: run it yourself, then pass its output as --dataset_dir" in capsys.readouterr().err
