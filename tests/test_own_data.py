"""A user's own data, first try: every way a run used to finish with a silently wrong result (issue #10) now gives
the right result or one clear error. Real sample files from pydicom's and nibabel's wheels wherever images are read.
"""

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from monai.bundle import ConfigParser
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from monai_adv.datacheck import check_datalist
from monai_adv.datalist import pseudonymise
from monai_adv.io import DataError, read_header, read_image
from monai_adv.inputs import find_images, load_inference_items

ROOT = Path(__file__).resolve().parents[1]
CT = "lung_nodule_ct_classification"
NIBABEL_DATA = Path(__import__("nibabel").__file__).parent / "tests" / "data"


def configs(bundle: str, *names: str) -> list[str]:
    return [str(ROOT / "bundles" / bundle / "configs" / f"{n}.json") for n in names]


def real_ct_copy(path: Path, patient_id: str = "LIDC-IDRI-0001", shift: int = 0, **tags) -> Path:
    """A copy of pydicom's real CT_small.dcm with new UIDs and patient, pixels rolled by ``shift``; ``tags`` set or
    (value None) delete attributes."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = patient_id
    if shift:
        ds.PixelData = np.roll(ds.pixel_array, shift, axis=1).tobytes()
    for keyword, value in tags.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def tcia_series(root: Path, patient: str, n: int) -> list[Path]:
    """A TCIA-like series folder (patient/study/series) of ``n`` real CT files named by their SOP Instance UID."""
    series = root / patient / "01-01-2000-NA-CT CHEST-12345" / "1.000000-NA-67890"
    files = []
    for k in range(n):
        uid = generate_uid(prefix="1.3.6.1.4.1.14519.5.2.1.")
        files.append(real_ct_copy(series / f"{uid}.dcm", patient_id=patient, shift=k, SOPInstanceUID=uid))
    return files


def write_datalist(folder: Path, training: list, test: list, classes=("benign", "malignant"), **extra) -> Path:
    path = folder / "datalist.json"
    path.write_text(json.dumps({"classes": list(classes), **extra, "training": training, "test": test}))
    return path


def ct_items(folder: Path, prefix: str, n: int, patients: int | None = None) -> list[dict]:
    items = []
    for k in range(n):
        patient = f"{prefix}p{k if patients is None else k % patients}"
        image = real_ct_copy(folder / "images" / f"{prefix}{k}.dcm", patient_id=patient, shift=k)
        items.append({"id": f"{prefix}{k}", "image": str(image), "label": k % 2, "patient_id": patient})
    return items


# 1. ids of folder images ------------------------------------------------------------------------------------------


def test_uid_named_dicom_files_keep_one_id_each(tmp_path):
    """Eight real CT files named by their SOP Instance UID used to collapse to the id ``1`` (the path cut at the first
    dot): inference wrote one prediction for eight images."""
    files = tcia_series(tmp_path / "LIDC-IDRI-0001", "LIDC-IDRI-0001", 8)
    items = load_inference_items(tmp_path, spatial_dims=2)
    assert len(items) == 8
    assert len({i["id"] for i in items}) == 8
    for item in items:
        assert item["id"].endswith(Path(item["image"]).name[: -len(".dcm")])  # the whole UID, suffix dropped
        assert "LIDC-IDRI-0001" not in item["id"]  # the folder named by PatientID is pseudonymised
    assert sorted(i["image"] for i in items) == sorted(str(f) for f in files)


def test_two_files_with_the_same_id_are_an_error_naming_both(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "scan.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "scan.jpg")
    with pytest.raises(DataError, match=r"scan\.jpg and scan\.png would both get the id 'scan'"):
        find_images(tmp_path)


# 2. accuracy over images for any number of classes ----------------------------------------------------------------


@pytest.mark.parametrize("bundle", ["mnist_digit_classification", "cifar10_object_classification", CT])
def test_the_bundles_accuracy_counts_images_not_one_hot_elements(bundle):
    """Ignite's Accuracy on one-hot predictions and labels scored every vector element: a 10-class model right on
    1 image of 4 was reported at 0.85."""
    parser = ConfigParser()
    parser.read_config(configs(bundle, "train", "evaluate"))
    parser["datalist_file"] = "unused.json"
    parser["class_names"] = [str(c) for c in range(10 if "classification" in bundle and bundle != CT else 2)]
    metric = parser.get_parsed_content("validate#key_metric")["test_accuracy"]
    c = len(parser["class_names"])
    onehot = torch.nn.functional.one_hot
    preds, labels = onehot(torch.tensor([1, 0, 1, 0]) % c, c).float(), onehot(torch.tensor([1, 1, 0, 1]) % c, c).float()
    output = [{"pred": p, "label": y} for p, y in zip(preds, labels)]  # decollated, as MONAI's postprocessing leaves it
    metric.reset()
    metric.update(metric._output_transform(output))
    assert metric.compute() == pytest.approx(0.25)


# 3. the user's data location wins over the demo overlay -----------------------------------------------------------


def test_dataset_dir_on_the_command_line_wins_over_the_demo_overlay(tmp_path):
    """``demo.json`` set ``datalist_file`` to the demo data, so ``--dataset_dir <mine>`` was ignored while the log echoed
    the user's folder."""
    parser = ConfigParser()
    parser.read_config(configs(CT, "train", "demo"))
    parser.update({"dataset_dir": str(tmp_path)})
    assert parser.get_parsed_content("datalist_file") == os.path.join(str(tmp_path), "datalist.json")


def test_a_data_list_outside_dataset_dir_is_a_conflict_named_by_setting(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    path = write_datalist(mine, ct_items(mine, "t", 10), ct_items(mine, "s", 4))
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(DataError, match=r"datalist_file .* is not inside dataset_dir .*other"):
        check_datalist(path, ["training"], dataset_dir=other)
    check_datalist(path, ["training"], dataset_dir=mine)


# 4. no bundle loads another bundle's model; default outputs never shared -----------------------------------------


def test_default_outputs_live_in_the_bundle_or_the_run_asks_for_bundle_root(tmp_path, monkeypatch):
    """From the repository root every bundle's default checkpoint and output folder were ``./models`` and ``./eval``:
    a brain-MRI evaluate loaded the lung-CT model."""
    parser = ConfigParser()
    parser.read_config(configs(CT, "train"))
    monkeypatch.chdir(ROOT)
    with pytest.raises(RuntimeError) as raised:
        parser.get_parsed_content("ckpt_path")
    assert "bundle_root is not set" in str(raised.value.__cause__) and CT in str(raised.value.__cause__)
    monkeypatch.chdir(ROOT / "bundles" / CT)
    parser.parse(reset=True)
    assert parser.get_parsed_content("ckpt_path") == os.path.join(".", "models", "model.pt")
    parser.parse(reset=True)
    parser["bundle_root"] = str(tmp_path)
    assert parser.get_parsed_content("output_dir") == os.path.join(str(tmp_path), "eval")


def test_a_checkpoint_of_another_bundle_is_refused_by_name(tmp_path):
    from monai_adv.checkpoints import CheckpointError, ModelIdentity
    from monai_adv.handlers import StrictCheckpointLoad
    from monai_adv.networks import PaperVGG16

    net = PaperVGG16(num_classes=2, input_size=32, width=0.125)
    lung = ModelIdentity(CT, net, ["benign", "malignant"])
    torch.save({"model": net.state_dict(), "identity": lung.state_dict()}, tmp_path / "model.pt")
    brain = ModelIdentity("brain_lesion_mri_classification", net, ["no_tumor", "tumor"])
    other = PaperVGG16(num_classes=2, input_size=32, width=0.125)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"saved by bundle 'lung_nodule_ct_classification'.*this run is bundle "
                                              r"'brain_lesion_mri_classification'.*\(bundle, class_names differ\)"):
        StrictCheckpointLoad(tmp_path / "model.pt", {"model": other, "identity": brain})()
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())  # nothing loaded
    StrictCheckpointLoad(tmp_path / "model.pt", {"model": other, "identity": lung})()
    torch.save(net.state_dict(), tmp_path / "bare.pt")  # no identity: saved by another tool
    with pytest.raises(CheckpointError, match="does not say which bundle.*require_model_identity"):
        StrictCheckpointLoad(tmp_path / "bare.pt", {"model": other, "identity": lung})()
    unchecked = ModelIdentity(CT, net, ["benign", "malignant"], required=False)
    StrictCheckpointLoad(tmp_path / "bare.pt", {"model": other, "identity": unchecked})()



def test_a_checkpoint_with_batch_norm_is_refused_by_a_run_without_it_by_name(tmp_path):
    """``network_batch_norm`` shapes the network (BatchNorm after every convolution): a model trained with it and
    loaded by a run without it is named by that setting, not by a missing-key error."""
    from monai_adv.checkpoints import CheckpointError
    from monai_adv.handlers import StrictCheckpointLoad

    def bundle_network(batch_norm: bool) -> dict:
        parser = ConfigParser()
        parser.read_config(configs(CT, "train"))
        parser.update({"class_names": ["benign", "malignant"], "image_size": [32, 32], "network_width": 0.125,
                       "network_batch_norm": batch_norm})
        return {"model": parser.get_parsed_content("network_def"),
                "identity": parser.get_parsed_content("model_identity")}

    trained = bundle_network(True)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in trained["model"].modules())
    torch.save({k: v.state_dict() for k, v in trained.items()}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=r"trained with network_batch_norm=True; this run builds "
                                              r"network_batch_norm=False"):
        StrictCheckpointLoad(tmp_path / "model.pt", bundle_network(False))()
    StrictCheckpointLoad(tmp_path / "model.pt", bundle_network(True))()

# 5, 10. validation before work: all problems at once, naming the items -------------------------------------------


def test_one_message_lists_every_problem_of_a_data_list(tmp_path):
    training = ct_items(tmp_path, "t", 6, patients=1)  # one training patient: no validation split per class
    training.append({"id": "gone", "image": str(tmp_path / "missing.dcm"), "label": 0, "patient_id": "tp0"})
    training.append({"image": training[0]["image"], "label": 1})  # no id
    training.append({**training[1], "id": "t0"})  # duplicate id
    training.append({**training[2], "id": "nine", "label": 9})
    path = write_datalist(tmp_path, training, [])
    with pytest.raises(DataError) as raised:
        check_datalist(path, ["training", "test"], class_names=["benign", "malignant"], val_fraction=0.2)
    message = str(raised.value)
    assert "problem(s) found before any work started" in message
    assert "[test] section is empty" in message
    assert "gone (" in message and "missing.dcm): image file not found" in message
    assert "[training] #7: no 'id'" in message
    assert "id 't0' is used by 2 items" in message
    assert "[training] nine: label 9 is outside the classes 0..1" in message
    training = training[:6]
    path = write_datalist(tmp_path, training, ct_items(tmp_path, "s", 2))
    with pytest.raises(DataError, match=r"validation split .* from 1 patient\(s\) .* has no item of class 'benign', "
                                        r"'malignant'"):
        check_datalist(path, ["training"], val_fraction=0.2)


def test_the_study_checks_the_whole_data_list_before_any_stage(tmp_path):
    """A one-patient training side, an empty test section and a missing file: one message, nothing written."""
    from monai_adv.study.runner import StudyError, run_study

    training = ct_items(tmp_path, "t", 6, patients=1)
    training.append({"id": "gone", "image": str(tmp_path / "missing.dcm"), "label": 0, "patient_id": "tp0"})
    write_datalist(tmp_path, training, [])
    with pytest.raises(StudyError) as raised:
        run_study([CT], tmp_path / "study", ROOT / "bundles", dataset_dir=tmp_path, profile="demo", log=lambda _: None)
    message = str(raised.value)
    assert "3 problem(s)" in message
    assert "[test] section is empty" in message and "missing.dcm): image file not found" in message
    assert "validation split" in message
    assert not (tmp_path / "study").exists()


# 6. the data list's class names ---------------------------------------------------------------------------------


def test_the_bundles_take_their_class_names_from_the_data_list(tmp_path):
    path = write_datalist(tmp_path, [], [], classes=("normal", "pneumonia"))
    for bundle in ("breast_lesion_mammography_classification", CT):
        parser = ConfigParser()
        parser.read_config(configs(bundle, "train"))
        parser["datalist_file"] = str(path)
        assert parser.get_parsed_content("class_names") == ["normal", "pneumonia"]
    with pytest.raises(DataError, match="differ from the run's class_names"):
        check_datalist(path, [], class_names=["benign", "malignant"])


# 7, 10. files that are not images, CT without rescale --------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "what"),
    [("liver_1frame.dcm", "Segmentation Storage, Modality SEG"), ("rtstruct.dcm", "RT Structure Set Storage"),
     ("rtplan.dcm", "RT Plan Storage"), ("test-SR.dcm", "Comprehensive SR Storage"),
     ("dicomdirtests/DICOMDIR", "a DICOMDIR")],
)
def test_dicom_objects_that_are_not_images_are_refused_by_name(sample, what):
    """A real single-frame DICOM SEG used to be read and classified as an image."""
    path = get_testdata_file(sample)
    for reader in (read_image, read_header):
        with pytest.raises(DataError, match=what):
            reader(path, item="x")


def test_ct_without_rescale_intercept_is_refused(tmp_path):
    """Without RescaleIntercept the stored values were read as HU, 1024 HU off, and scored."""
    path = real_ct_copy(tmp_path / "ct.dcm", RescaleIntercept=None)
    for reader in (read_image, read_header):
        with pytest.raises(DataError, match="CT image without RescaleIntercept/RescaleSlope"):
            reader(path, item="nodule")
    assert read_image(real_ct_copy(tmp_path / "ok.dcm"))[0].min() < -800  # with the tags: HU


def test_images_that_cannot_be_in_hounsfield_units_are_refused_for_a_hu_window(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "xray.png")
    mr = tmp_path / "mr.dcm"
    shutil.copy(get_testdata_file("MR_small.dcm"), mr)
    items = [{"id": "xray", "image": str(tmp_path / "xray.png"), "label": 0},
             {"id": "mr", "image": str(mr), "label": 1}]
    path = write_datalist(tmp_path, items, [])
    with pytest.raises(DataError) as raised:
        check_datalist(path, ["training"], native_units="HU")
    assert "xray (" in str(raised.value) and "a PNG/JPEG image is not in Hounsfield units" in str(raised.value)
    assert "mr (" in str(raised.value) and "DICOM image of Modality MR" in str(raised.value)
    check_datalist(path, ["training"], native_units="gray levels of 255")


# 8. no identifier in ids ------------------------------------------------------------------------------------------


def test_a_patient_number_in_a_folder_name_is_pseudonymised(tmp_path):
    """``P_00173/LEFT_CC.dcm`` kept the number although the header's PatientID (CBIS-DDSM style) contains it."""
    real_ct_copy(tmp_path / "P_00173" / "LEFT_CC.dcm", patient_id="Calc-Test_P_00173_LEFT_CC")
    (item,) = load_inference_items(tmp_path)
    assert "00173" not in item["id"]
    assert item["id"] == f"P_{pseudonymise('00173')}/LEFT_CC"


# 9. inference on real folders ---------------------------------------------------------------------------------------


def test_a_single_image_file_is_an_input(tmp_path):
    path = real_ct_copy(tmp_path / "scan.dcm")
    assert load_inference_items(path) == [{"id": "scan", "image": str(path)}]
    nifti = shutil.copy(NIBABEL_DATA / "anatomical.nii", tmp_path / "brain.nii")
    assert load_inference_items(nifti, spatial_dims=3)[0]["id"] == "brain"


def test_unusable_files_stop_inference_unless_skipped_into_skipped_csv(tmp_path):
    folder = tmp_path / "in"
    tcia_series(folder, "LIDC-IDRI-0002", 3)
    shutil.copy(get_testdata_file("rtstruct.dcm"), folder / "rtstruct.dcm")
    shutil.copy(get_testdata_file("dicomdirtests/DICOMDIR"), folder / "DICOMDIR")
    (folder / "notes.txt").write_text("not an image")
    with pytest.raises(DataError) as raised:
        load_inference_items(folder)
    assert "2 of 5 image file(s) cannot be used; 1 more whose names are not image names are left out" in str(raised.value) and "skip_unreadable" in str(raised.value)
    assert "DICOMDIR" in str(raised.value) and "RT Structure Set Storage" in str(raised.value)
    lines = []
    items = load_inference_items(folder, skip_unreadable=True, skipped_file=tmp_path / "skipped.csv", log=lines.append)
    assert len(items) == 3
    rows = list(csv.DictReader((tmp_path / "skipped.csv").open()))
    assert {r["id"] for r in rows} == {"rtstruct", "DICOMDIR", "notes.txt"}
    reasons = {r["id"]: r["reason"] for r in rows}
    assert reasons["DICOMDIR"].startswith("a DICOMDIR") and str(folder) not in "".join(reasons.values())
    assert any("left out 1 file(s) whose names are not image names (.txt)" in line for line in lines)


# 10. duplicate ids never merge silently -----------------------------------------------------------------------------


def test_duplicate_ids_in_one_process_are_an_error_not_a_merge():
    """The distributed de-duplication by id applied to every run: 20 items with one id twice gave n=19."""
    from monai_adv.distributed import gather_by_id

    ids = [f"i{k}" for k in range(19)] + ["i3"]
    with pytest.raises(ValueError, match=r"1 item id\(s\) used by more than one image, e\.g\. \['i3'\]"):
        gather_by_id(ids, {"x": torch.arange(20)})
    ids, values = gather_by_id([f"i{k}" for k in range(20)], {"x": torch.arange(20)})
    assert len(ids) == 20


def test_inference_takes_nifti_as_hu_only_when_declared(tmp_path):
    """A folder of NIfTI crops for the CT bundle: their units cannot be read from the file, so they are refused
    unless declared (input_units), rather than windowed as if they were HU."""
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.full((16, 16), -800, np.float32), np.eye(4)), tmp_path / "crop.nii.gz")
    with pytest.raises(DataError, match=r"crop \(.*crop\.nii\.gz\): a NIfTI/NumPy file whose units are not declared HU"):
        load_inference_items(tmp_path, native_units="HU")
    assert [i["id"] for i in load_inference_items(tmp_path, native_units="HU", input_units="HU")] == ["crop"]


def test_images_that_never_flip_are_referred_by_margin_not_by_their_order(tmp_path):
    """With no image flipped below eps_max, the 20 % "most sensitive" used to be the first ids of the data list (one
    class, as ids start with the class folder), and the report did not say so."""
    from monai.engines import SupervisedEvaluator
    from torch import nn
    from torch.utils.data import DataLoader

    from monai_adv.handlers import SensitivityTriage

    class Margin(nn.Module):
        """Logits ``[10 * mean, 0]``: class 0, margin ten times the image's mean, unflippable at eps 1e-4."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mean = x.flatten(1).mean(1, keepdim=True)
            return torch.cat([10 * mean, torch.zeros_like(mean)], dim=1)

    means = [0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.2, 0.1]  # the last two ids have the smallest margins
    items = [{"image": torch.full((1, 4, 4), m), "label": torch.tensor(0), "id": f"case-{k}"} for k, m in enumerate(means)]
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=DataLoader(items, batch_size=4),
                                    network=Margin())
    SensitivityTriage(str(tmp_path), ["a", "b"], q=0.2, eps_max=1e-4, restarts=1, steps=2).attach(evaluator)
    evaluator.run()
    rows = list(csv.DictReader((tmp_path / "sensitivity.csv").open()))
    assert all(r["flipped"] == "0" for r in rows)
    assert sorted(r["id"] for r in rows if r["flagged"] == "1") == ["case-8", "case-9"]
    summary = json.loads((tmp_path / "triage.json").read_text())
    assert summary["never_flipped"] == 10 and summary["referred_never_flipped"] == 2 and summary["tiebreak"] == "margin"


def test_items_with_optional_keys_on_some_items_only_still_batch(tmp_path):
    """``prepare_folder --grayscale`` marks only the RGB items ``to_grayscale``; MONAI collates a batch by the keys of
    its first item, so a mixed batch crashed evaluation with a bare ``KeyError: 'to_grayscale'`` (and an item
    without the optional ``patient_id`` did the same)."""
    from monai.data import DataLoader, Dataset
    from monai.transforms import Compose
    from PIL import Image

    items = []
    for k in range(4):
        rgb = k % 2 == 1
        pixels = np.full((16, 16, 3) if rgb else (16, 16), 40 * k + 20, np.uint8)
        pixels[4:8, 4:8] = 250
        Image.fromarray(pixels).save(tmp_path / f"img{k}.png")
        item = {"id": f"img{k}", "image": str(tmp_path / f"img{k}.png"), "label": k % 2}
        items.append({**item, "to_grayscale": True} if rgb else {**item, "patient_id": f"p{k}"})
    parser = ConfigParser()
    parser.read_config(configs("breast_lesion_mammography_classification", "train", "demo"))
    parser["class_names"] = ["a", "b"]
    transforms = Compose(parser.get_parsed_content("train#deterministic_transforms"))
    (batch,) = list(DataLoader(Dataset(items, transforms), batch_size=4))
    assert tuple(batch["image"].shape) == (4, 1, 32, 32) and batch["id"] == [f"img{k}" for k in range(4)]


def test_new_user_trial_findings(tmp_path):
    """What a new user's first try still found: a float label called out of range, a RescaleSlope of 0 (every pixel
    the same) accepted, gray PNGs with alpha or a gray palette read as RGB, a prepared data set folder given to
    inference scored image by image (training images included), a triage file without a threshold failing with a
    plain ValueError buried in MONAI's traceback."""
    from PIL import Image

    from monai_adv.handlers import load_threshold

    path = write_datalist(tmp_path, [{"id": "a", "image": "x.png", "label": 1.0}], [])
    with pytest.raises(DataError, match=r"label 1\.0 is not an integer class index"):
        check_datalist(path, ["training"], check_images=False)
    with pytest.raises(DataError, match=r"RescaleSlope 0(\.0)? would make every pixel the same value"):
        read_header(real_ct_copy(tmp_path / "slope0.dcm", RescaleSlope=0), item="s")
    gray = np.zeros((8, 8), np.uint8)
    gray[2:4] = 200
    for mode in ("LA", "1", "P"):
        Image.fromarray(gray).convert(mode).save(tmp_path / f"gray_{mode}.png")
        assert read_image(tmp_path / f"gray_{mode}.png")[0].shape == (1, 8, 8), mode
        assert read_header(tmp_path / f"gray_{mode}.png").shape == (1, 8, 8), mode
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    (prepared / "datalist.json").write_text("{}")
    with pytest.raises(DataError, match=r"holds a data list: pass --input_path .*datalist\.json"):
        load_inference_items(prepared)
    (tmp_path / "triage.json").write_text('{"threshold": null, "n": 10, "n_flagged": 2}')
    with pytest.raises(DataError, match="'threshold' is null"):
        load_threshold(tmp_path / "triage.json")


def test_pseudonyms_use_a_secret_salt_made_once_per_user(tmp_path, monkeypatch):
    """The salt was the public string "monai_adv": every patient id of a prepared TCIA tree was recovered by hashing
    2,000 guessed ids."""
    import hashlib

    from monai_adv.datalist import PSEUDONYM_SALT_ENV

    monkeypatch.delenv(PSEUDONYM_SALT_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    public = hashlib.sha256(b"monai_adv:LIDC-IDRI-0001").hexdigest()[:16]
    first = pseudonymise("LIDC-IDRI-0001")
    assert first != public and first == pseudonymise("LIDC-IDRI-0001")  # secret, and stable across calls
    salt_file = tmp_path / "config" / "monai_adv" / "pseudonym_salt"
    assert salt_file.stat().st_mode & 0o777 == 0o600 and len(salt_file.read_text()) == 64
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "other_user"))
    assert pseudonymise("LIDC-IDRI-0001") != first  # another user's salt
    monkeypatch.setenv(PSEUDONYM_SALT_ENV, "site-secret")
    assert pseudonymise("LIDC-IDRI-0001") == hashlib.sha256(b"site-secret:LIDC-IDRI-0001").hexdigest()[:16]


def test_inference_items_all_have_the_same_keys(tmp_path):
    """Inference keeps the request's keys (MONAI Label passes its request through the transforms), so its items are
    made uniform instead: a data list with a grayscale mark on some items and a patient id on others still batches."""
    items = [{"id": "a", "image": str(real_ct_copy(tmp_path / "a.dcm")), "to_grayscale": True},
             {"id": "b", "image": str(real_ct_copy(tmp_path / "b.dcm")), "patient_id": "p", "label": 1}]
    path = write_datalist(tmp_path, [], items)
    loaded = load_inference_items(path, "test")
    assert [sorted(i) for i in loaded] == [["id", "image", "to_grayscale"]] * 2
    assert [i["to_grayscale"] for i in loaded] == [True, False]
