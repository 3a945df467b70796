"""The embedded demo data sets: determinism, real file formats, data-list rules, no identifier leaks, and the atomic
cache of ensure_demo_data. No model is trained here (the bundles' tests train on these sets)."""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from scipy import ndimage

import monai_adv.demo as demo
from monai_adv.datalist import load_datalist, pseudonymise
from monai_adv.demo._common import DEMO_SALT
from monai_adv.demo import DEMO_DATASETS, _common, ensure_demo_data, generate_demo_data
from monai_adv.demo import brain_mri, cifar10_object, lung_ct, mammography, mnist_digit
from monai_adv.io import read_image

MEDICAL = ("lung_nodule_ct", "breast_lesion_mammography", "brain_lesion_mri")
MODULES = {"lung_nodule_ct": lung_ct, "breast_lesion_mammography": mammography, "brain_lesion_mri": brain_mri}
SMALL = {name: 8 for name in MEDICAL} | {"mnist_digit": 40, "cifar10_object": 40}
FAKE_MARKERS = ("DEMO-", "Demo^", "Patient", "19700101")


def _load(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _items(datalist: dict) -> list[dict]:
    return datalist["training"] + datalist["test"]


def _pixels(path: Path) -> dict[str, np.ndarray]:
    datalist = _load(path)
    return {i["id"]: read_image(path.parent / i["image"])[0] for i in _items(datalist)}


@pytest.fixture(scope="module")
def small_sets(tmp_path_factory) -> dict[str, Path]:
    """Every demo set, small, with seed 0."""
    root = tmp_path_factory.mktemp("demo")
    return {name: generate_demo_data(name, root / name, seed=0, n_patients=SMALL[name]) for name in DEMO_DATASETS}


@pytest.fixture(scope="module")
def full_ct(tmp_path_factory) -> Path:
    """The lung CT set at its default size (about 3 s)."""
    return generate_demo_data("lung_nodule_ct", tmp_path_factory.mktemp("full") / "ct", seed=0)


def test_names_and_unknown_name(tmp_path):
    assert DEMO_DATASETS == (
        "lung_nodule_ct",
        "breast_lesion_mammography",
        "brain_lesion_mri",
        "mnist_digit",
        "cifar10_object",
    )
    with pytest.raises(ValueError, match="unknown demo data set"):
        generate_demo_data("lidc", tmp_path)
    with pytest.raises(ValueError, match="unknown demo data set"):
        ensure_demo_data("lidc", cache_dir=tmp_path)


@pytest.mark.parametrize("name", DEMO_DATASETS)
def test_deterministic_per_seed(name, small_sets, tmp_path):
    first = small_sets[name]
    again = generate_demo_data(name, tmp_path / "again", seed=0, n_patients=SMALL[name])
    other = generate_demo_data(name, tmp_path / "other", seed=1, n_patients=SMALL[name])
    assert again.read_bytes() == first.read_bytes()
    pixels, pixels_again = _pixels(first), _pixels(again)
    assert pixels.keys() == pixels_again.keys()
    for key in pixels:
        np.testing.assert_array_equal(pixels[key], pixels_again[key])
    for item in _items(_load(first))[:5]:
        assert (first.parent / item["image"]).read_bytes() == (again.parent / item["image"]).read_bytes()
    assert other.read_bytes() != first.read_bytes()
    pixels_other = _pixels(other)
    shared = sorted(pixels.keys() & pixels_other.keys()) or None
    if shared:  # MNIST/CIFAR ids are positions, so the same ids hold other pictures
        assert any(not np.array_equal(pixels[k], pixels_other[k]) for k in shared)
    else:  # medical ids come from the (seed-independent) pseudonyms; a different seed gives other images
        first_images = sorted(v.tobytes() for v in pixels.values())
        assert first_images != sorted(v.tobytes() for v in pixels_other.values())


@pytest.mark.parametrize("name", DEMO_DATASETS)
def test_datalist_rules(name, small_sets):
    path = small_sets[name]
    datalist = _load(path)
    medical = name in MEDICAL
    assert datalist["name"] == name and datalist["demo"] is True
    assert datalist["modality"] == {"lung_nodule_ct": "CT", "breast_lesion_mammography": "MG"}.get(
        name, "MR" if name == "brain_lesion_mri" else "none"
    )
    assert datalist["native_units"] == ("HU" if name == "lung_nodule_ct" else "gray level")
    assert len(datalist["classes"]) == (2 if medical else 10)
    for item in _items(datalist):
        assert set(item) == {"id", "image", "label", "patient_id"}
        assert not os.path.isabs(item["image"]) and (path.parent / item["image"]).is_file()
    train_patients = {i["patient_id"] for i in datalist["training"]}
    test_patients = {i["patient_id"] for i in datalist["test"]}
    assert train_patients and test_patients and not train_patients & test_patients
    load_datalist(path, "training")  # validates labels and reads every image
    load_datalist(path, "test")
    if medical:
        counts = Counter(i["label"] for i in _items(datalist))
        assert counts[0] == counts[1]
        per_patient = Counter(i["patient_id"] for i in _items(datalist))
        assert max(per_patient.values()) >= 2 and min(per_patient.values()) >= 1
        labels_of = {}
        for item in _items(datalist):
            assert labels_of.setdefault(item["patient_id"], item["label"]) == item["label"]
    else:
        assert len(datalist["training"]) == 30 and len(datalist["test"]) == 10


@pytest.mark.parametrize("name", MEDICAL)
def test_default_size_and_split(name):
    module = MODULES[name]
    plan = _common.crops_per_patient(0, module.CODE, module.DEFAULT_PATIENTS)
    total = sum(n for _, n in plan)
    assert abs(total - 2 * module.DEFAULT_PATIENTS) <= 0.15 * 2 * module.DEFAULT_PATIENTS  # 1-3 crops, 2 on average
    assert sum(n for label, n in plan if label == 0) == total // 2


def test_full_size_ct(full_ct):
    datalist = _load(full_ct)
    n = len(_items(datalist))
    assert abs(n - 2 * lung_ct.DEFAULT_PATIENTS) <= 0.15 * 2 * lung_ct.DEFAULT_PATIENTS
    assert 0.28 * n <= len(datalist["test"]) <= 0.39 * n  # a third, split by patient
    assert Counter(i["label"] for i in datalist["test"])[0] == pytest.approx(len(datalist["test"]) / 2, abs=8)


def test_ct_files_are_dicom_ct_in_hounsfield_units(small_sets):
    path = small_sets["lung_nodule_ct"]
    datalist = _load(path)
    for item in _items(datalist)[:6]:
        ds = pydicom.dcmread(path.parent / item["image"])
        assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
        assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID
        assert ds.Modality == "CT" and ds.PhotometricInterpretation == "MONOCHROME2"
        assert float(ds.RescaleIntercept) == -1024 and float(ds.RescaleSlope) == 1
        assert ds.pixel_array.dtype == np.uint16 and ds.Rows == ds.Columns == 64
        assert all(0.4 < float(v) < 1.0 for v in ds.PixelSpacing)
        assert str(ds.PatientID).startswith("DEMO-CT-") and str(ds.PatientName).startswith("Demo^Patient")
        assert ds.PatientBirthDate == "19700101"
        assert pseudonymise(str(ds.PatientID), salt=DEMO_SALT) == item["patient_id"]  # only the pseudonym
        hu, meta = read_image(path.parent / item["image"])
        assert meta["modality"] == "CT" and hu.shape == (1, 64, 64)
        np.testing.assert_array_equal(hu[0], ds.pixel_array.astype(np.float32) - 1024)
        assert -1024 <= hu.min() and hu.max() <= 2000
        assert -950 < np.median(hu) < -700  # mostly aerated lung
        centre = hu[0, 28:36, 28:36]
        assert np.median(centre) > -500  # the nodule sits in the middle


def test_mammography_files_are_dicom_mg(small_sets):
    path = small_sets["breast_lesion_mammography"]
    for item in _items(_load(path))[:6]:
        ds = pydicom.dcmread(path.parent / item["image"])
        assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.1.2"
        assert ds.Modality == "MG" and ds.PhotometricInterpretation == "MONOCHROME2"
        assert ds.BitsAllocated == 16 and ds.BitsStored == 12
        assert str(ds.PatientID).startswith("DEMO-MG-")
        pixels = ds.pixel_array
        assert pixels.dtype == np.uint16 and 0 <= pixels.min() and pixels.max() <= 4095
        arr, meta = read_image(path.parent / item["image"])
        assert meta["modality"] == "MG" and arr.shape == (1, 64, 64) and arr.std() > 50


def test_mri_files_are_2d_nifti(small_sets):
    path = small_sets["brain_lesion_mri"]
    datalist = _load(path)
    assert datalist["classes"] == ["no_tumor", "tumor"]
    for item in _items(datalist)[:6]:
        assert item["image"].endswith(".nii.gz")
        img = nib.load(path.parent / item["image"])
        assert img.shape == (64, 64) and img.get_data_dtype() == np.int16
        assert not np.allclose(img.affine, np.eye(4))
        assert all(0.8 < z < 1.3 for z in img.header.get_zooms())
        arr, meta = read_image(path.parent / item["image"])
        assert meta["format"] == "nifti" and arr.shape == (1, 64, 64)
        assert 0 <= arr.min() and 300 < np.median(arr) < 1500


def _render_at(module, score: float, seed: int, index: int) -> np.ndarray:
    """One crop of ``module`` rendered with its hidden score fixed to ``score`` (the draw still consumed, so every other
    draw is the same as for any other score)."""
    patient = module.patient_parameters(seed, index)
    rng = _common.rng_for(seed, module.CODE, index, 0)
    original = _common.latent_score
    try:
        _common.latent_score = lambda rng, label, spread: (rng.standard_normal(), score)[1]
        return module.render(rng, 0, patient)
    finally:
        _common.latent_score = original


@pytest.mark.parametrize("name", MEDICAL)
def test_class_cue_is_a_fine_zero_mean_texture(name):
    """The hidden score changes only a fine, zero-mean texture in the middle of the crop: the same crop rendered for a
    clearly benign and a clearly malignant score differs by a field of no mean, with no large-scale part, and (for
    the percentile-scaled sets) hardly moves the crop's 0.5th and 99.5th percentiles, so the bundle's scaling, and with
    it every large-scale level the network sees, does not tell the classes apart."""
    module = MODULES[name]
    percentile_shift, relative_means = [], []
    for index in range(12):
        low, high = _render_at(module, -1.5, 0, index), _render_at(module, 1.5, 0, index)
        diff = high - low
        assert diff.std() > 5  # the score does change the crop
        rr, cc = np.mgrid[0:64, 0:64]
        corners = np.hypot(rr - 31.5, cc - 31.5) > 40
        assert np.abs(diff[corners]).max() < 0.01  # nothing (of a stored unit) changes in the corners
        relative_means.append(diff.mean() / diff.std())
        assert abs(relative_means[-1]) < 0.2  # a brighter or larger lesion would give about 1
        # 16 x 16 pixel means keep a large-scale difference (size, brightness: about 0.9 of its standard deviation)
        # and about a quarter of a one-pixel texture's
        assert ndimage.uniform_filter(diff, 16).std() < 0.45 * diff.std()
        if name != "lung_nodule_ct":  # the CT bundle uses a fixed window
            span = np.percentile(low, 99.5) - np.percentile(low, 0.5)
            shift = np.abs(np.percentile(high, [0.5, 99.5]) - np.percentile(low, [0.5, 99.5])).max()
            percentile_shift.append(shift / span)
    assert abs(np.mean(relative_means)) < 0.06, relative_means  # zero mean: no brightness cue
    if percentile_shift:
        assert np.mean(percentile_shift) < 0.02, percentile_shift


def test_mnist_went_through_idx_files(small_sets):
    from monai_adv.prepare import mnist

    path = small_sets["mnist_digit"]
    datalist = _load(path)
    assert datalist["classes"] == [str(d) for d in range(10)]
    source = path.parent / mnist_digit.SOURCE_DIR
    images = mnist.read_idx(source / "train-images-idx3-ubyte", mnist.IMAGES_MAGIC)
    labels = mnist.read_idx(source / "train-labels-idx1-ubyte", mnist.LABELS_MAGIC)
    assert images.shape == (30, 28, 28) and images.max() == 255
    for item in datalist["training"][:5]:
        index = int(item["id"].rsplit("_", 1)[1])
        assert item["label"] == labels[index]
        np.testing.assert_array_equal(read_image(path.parent / item["image"])[0][0], images[index])


def test_cifar_went_through_binary_batches(small_sets):
    from monai_adv.prepare import cifar10

    path = small_sets["cifar10_object"]
    datalist = _load(path)
    assert datalist["classes"] == list(cifar10_object.CLASSES)
    batches = path.parent / cifar10_object.SOURCE_DIR / cifar10.BATCH_FOLDER
    assert cifar10.read_class_names(batches / cifar10.META_FILE) == datalist["classes"]
    images, labels = cifar10.read_cifar_binary(batches / cifar10.TEST_BATCH)
    assert images.shape == (10, 32, 32, 3)
    for item in datalist["test"][:5]:
        index = int(item["id"].rsplit("_", 1)[1])
        assert item["label"] == labels[index]
        arr = read_image(path.parent / item["image"])[0]
        np.testing.assert_array_equal(np.moveaxis(arr, 0, -1), images[index])


@pytest.mark.parametrize("name", MEDICAL)
def test_fake_identifiers_never_leak(name, small_sets):
    path = small_sets[name]
    text = path.read_text(encoding="utf-8")
    files = [str(p.relative_to(path.parent)) for p in path.parent.rglob("*")]
    for marker in FAKE_MARKERS:
        assert marker not in text
        assert not any(marker in f for f in files)
    if name != "brain_lesion_mri":  # the DICOM headers do hold the fake identifiers, so the check above means something
        first = _items(_load(path))[0]
        assert str(pydicom.dcmread(path.parent / first["image"]).PatientID).startswith("DEMO-")


@pytest.fixture
def tiny_defaults(monkeypatch):
    """Make the default-size medical sets tiny, so ensure_demo_data is quick."""
    for module in MODULES.values():
        monkeypatch.setattr(module, "DEFAULT_PATIENTS", 6)


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


def test_ensure_generates_once_then_reuses(tmp_path, tiny_defaults, monkeypatch):
    calls = []
    real = demo.generate_demo_data
    monkeypatch.setattr(demo, "generate_demo_data", lambda *a, **k: calls.append(a) or real(*a, **k))
    path = ensure_demo_data("lung_nodule_ct", cache_dir=tmp_path)
    assert isinstance(path, str) and Path(path) == tmp_path / "lung_nodule_ct-seed0" / "datalist.json"
    first_image = Path(path).parent / _load(Path(path))["training"][0]["image"]
    stamps = (os.stat(path).st_mtime_ns, os.stat(first_image).st_mtime_ns)
    assert ensure_demo_data("lung_nodule_ct", cache_dir=tmp_path) == path
    assert (os.stat(path).st_mtime_ns, os.stat(first_image).st_mtime_ns) == stamps
    assert len(calls) == 1 and _leftovers(tmp_path) == []
    other = ensure_demo_data("lung_nodule_ct", cache_dir=tmp_path, seed=2)
    assert Path(other).parent.name == "lung_nodule_ct-seed2" and len(calls) == 2


def test_ensure_honours_env_and_default(tmp_path, tiny_defaults, monkeypatch):
    monkeypatch.setenv("MONAI_ADV_DEMO_DIR", str(tmp_path / "env"))
    path = ensure_demo_data("brain_lesion_mri")
    assert Path(path) == tmp_path / "env" / "brain_lesion_mri-seed0" / "datalist.json"
    assert _load(Path(path))["name"] == "brain_lesion_mri"
    explicit = ensure_demo_data("brain_lesion_mri", cache_dir=tmp_path / "explicit")
    assert Path(explicit).parent.parent == tmp_path / "explicit"
    monkeypatch.delenv("MONAI_ADV_DEMO_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert demo.default_cache_dir() == tmp_path / "home" / ".cache" / "monai_adv" / "demo"


def test_ensure_leaves_nothing_when_generation_fails(tmp_path, tiny_defaults, monkeypatch):
    real = _common.write_dicom
    written = []

    def failing(*args, **kwargs):
        if len(written) >= 3:
            raise OSError("disk full (simulated)")
        written.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(_common, "write_dicom", failing)
    with pytest.raises(OSError, match="simulated"):
        ensure_demo_data("lung_nodule_ct", cache_dir=tmp_path)
    assert len(written) == 3 and not (tmp_path / "lung_nodule_ct-seed0").exists()
    assert _leftovers(tmp_path) == []
    monkeypatch.setattr(_common, "write_dicom", real)
    path = Path(ensure_demo_data("lung_nodule_ct", cache_dir=tmp_path))
    load_datalist(path, "training")


def test_ensure_ignores_partial_and_outdated_folders(tmp_path, tiny_defaults):
    killed = tmp_path / ".lung_nodule_ct-seed0.abc123.partial"  # what a killed run leaves behind
    (killed / "images").mkdir(parents=True)
    (killed / "datalist.json").write_text("{")
    old = tmp_path / ".lung_nodule_ct-seed0.old999.partial"  # ... and one killed over an hour ago
    old.mkdir()
    os.utime(old, (1_000_000_000, 1_000_000_000))
    outdated = tmp_path / "lung_nodule_ct-seed1"
    outdated.mkdir()
    (outdated / "datalist.json").write_text(json.dumps({"demo_version": -1, "training": [], "test": []}))
    path = Path(ensure_demo_data("lung_nodule_ct", cache_dir=tmp_path))
    assert path.parent.name == "lung_nodule_ct-seed0" and _load(path)["training"]
    assert not old.exists()
    updated = Path(ensure_demo_data("lung_nodule_ct", cache_dir=tmp_path, seed=1))
    assert updated == outdated / "datalist.json" and _load(updated)["demo_version"] == _common.DEMO_VERSION
    assert _leftovers(tmp_path) == [killed.name]  # a recent partial folder may belong to a running process


def test_ensure_racing_callers_agree(tmp_path, tiny_defaults):
    results, errors = [], []

    def worker():
        try:
            results.append(ensure_demo_data("brain_lesion_mri", cache_dir=tmp_path))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    load_datalist(results[0], "test")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["brain_lesion_mri-seed0"]


def test_ct_classes_differ_only_in_the_nodules_fine_texture():
    """The CT demo's rule: inside the nodule, mean density is drawn alike for both classes, and only the fine
    (one-pixel) heterogeneity grows with the hidden malignancy score; the white noise is the patient's, alike too."""
    from scipy import ndimage

    density, fine = {0: [], 1: []}, {0: [], 1: []}
    rr, cc = np.mgrid[0:lung_ct.SIZE, 0:lung_ct.SIZE]
    centre = np.hypot(rr - lung_ct.SIZE / 2 + 0.5, cc - lung_ct.SIZE / 2 + 0.5) < 6  # inside every nodule
    for index in range(80):
        label = index % 2
        patient = dict(lung_ct.patient_parameters(0, index), noise=15.0)
        hu = lung_ct.render(_common.rng_for(0, lung_ct.CODE, index, 0), label, patient)
        density[label].append(hu[centre].mean())
        detail = hu - ndimage.gaussian_filter(hu, 2.0)  # what a few-pixel filter sees
        fine[label].append(detail[centre].std())
    # same mean density (uniform 5..55 HU for both): the class means differ by noise only
    assert abs(np.mean(density[0]) - np.mean(density[1])) < 6.0
    assert 15 < np.mean(density[0]) < 45
    # the fine texture: about 7 HU at a typical benign score, 33 HU at a typical malignant one, on 15 HU of noise
    # (measured medians of the high-pass SD: about 16 and 28 HU)
    assert np.median(fine[1]) > 1.5 * np.median(fine[0])
