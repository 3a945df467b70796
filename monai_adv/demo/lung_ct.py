"""Demo ``lung_nodule_ct``: 64x64 axial CT crops centred on a lung nodule, one DICOM file per crop.

What a crop holds (Hounsfield units; stored value = HU + 1024, RescaleSlope 1, RescaleIntercept -1024, 12 bits):
- lung parenchyma around -850 HU (patient-specific level), with smooth texture and white CT noise;
- 1-4 in-plane vessels (bent tubes, -80..+40 HU) and vessel cross-sections (small dots, easily confused with tiny
  nodules); a chest wall (soft tissue and fat) enters one side of some crops;
- the nodule near the centre: soft tissue (5..55 HU) with internal texture.

What differs between "benign" (0) and "malignant" (1): every class-specific feature is drawn from a hidden score
(:func:`~monai_adv.demo._common.latent_score`), so the classes overlap by construction. A higher score gives a larger
nodule (about 7 mm typical benign, 16 mm typical malignant, with scatter), lobulated and blurred (ill-defined)
margins, spicules radiating from the margin and sometimes a ground-glass halo; a lower score gives a small, smooth,
sharply marginated nodule that is often calcified (central, popcorn, laminated or diffuse, +250..+700 HU).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from monai_adv.demo import _common as C

NAME = "lung_nodule_ct"
CLASSES = ("benign", "malignant")
CODE = 1
SIZE = 64
SPREAD = 0.55  # latent-score spread: an observer knowing the score is right with probability Phi(1/SPREAD) ~ 0.96
DEFAULT_PATIENTS = 210
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def patient_parameters(seed: int, index: int) -> dict:
    """Per-patient scanner and lung properties, shared by all crops of the patient."""
    rng = C.rng_for(seed, CODE, index, 1 << 20)
    return {
        "spacing": round(float(rng.uniform(0.6, 0.8)), 4),
        "lung": float(-850 + rng.normal(0, 25)),
        "texture": float(rng.uniform(15, 35)),
        "noise": float(rng.uniform(12, 30)),
    }


def _chest_wall(rng: np.random.Generator, img: np.ndarray, rr: np.ndarray, cc: np.ndarray) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    distance = rng.uniform(20, 30)
    normal = np.array([np.cos(angle), np.sin(angle)])
    curvature = rng.uniform(-0.01, 0.01)
    along = -(rr - SIZE / 2) * normal[1] + (cc - SIZE / 2) * normal[0]
    depth = (rr - SIZE / 2) * normal[0] + (cc - SIZE / 2) * normal[1] - distance + curvature * along**2
    muscle = 0.5 * C.erfc(-depth / np.sqrt(2.0))
    fat = 0.5 * C.erfc(-(depth - rng.uniform(3, 7)) / np.sqrt(2.0))
    img = C.blend(img, 35 + 10 * C.smooth_noise(rng, img.shape, 1.5), muscle)
    return C.blend(img, -100 + 10 * C.smooth_noise(rng, img.shape, 1.5), fat)


def render(rng: np.random.Generator, label: int, patient: dict) -> np.ndarray:
    """One crop in HU (float, before rounding)."""
    rr, cc = C.coords(SIZE)
    shape = (SIZE, SIZE)
    img = patient["lung"] + patient["texture"] * C.smooth_noise(rng, shape, 2.5) + 10 * C.smooth_noise(rng, shape, 0.8)
    if rng.random() < 0.25:
        img = _chest_wall(rng, img, rr, cc)
    for _ in range(int(rng.integers(1, 5))):
        width = rng.uniform(0.5, 1.8)
        profile = C.curve_profile(rr, cc, C.random_curve(rng, SIZE), width, taper=0.5)
        img = C.blend(img, rng.uniform(-80, 40), profile * min(1.0, width / 1.2))  # thin vessels: partial volume
    for _ in range(int(rng.poisson(2.0))):
        dot = C.star_shape(rr, cc, tuple(rng.uniform(4, SIZE - 4, 2)), rng.uniform(0.8, 2.2), blur=0.6)
        img = C.blend(img, rng.uniform(-60, 40), dot)

    # the nodule: everything below depends on the hidden score t in (0, 1)
    t = C.squash(C.latent_score(rng, label, SPREAD))
    spacing = patient["spacing"]
    diameter = float(np.clip(5.0 + 13.0 * t + rng.normal(0, 1.5), 3.5, 28.0))
    radius = diameter / 2 / spacing
    centre = (SIZE / 2 - 0.5 + rng.normal(0, 1.5), SIZE / 2 - 0.5 + rng.normal(0, 1.5))
    density = rng.uniform(5, 55)
    if rng.random() < 0.35 * t:  # part-solid: ground-glass halo
        halo = C.star_shape(rr, cc, centre, radius * rng.uniform(1.3, 1.7), C.random_harmonics(rng, 0.15), blur=2.0)
        img = C.blend(img, rng.uniform(-550, -350) + 30 * C.smooth_noise(rng, shape, 1.0), halo)
    harmonics = C.random_harmonics(rng, 0.04 + 0.22 * t)
    blur = 0.5 + 1.3 * t * rng.uniform(0.5, 1.0)
    mask = C.star_shape(rr, cc, centre, radius, harmonics, blur=blur)
    img = C.blend(img, density + 12 * C.smooth_noise(rng, shape, 1.2), mask)
    for _ in range(int(rng.poisson(12.0 * t**2))):
        a = rng.uniform(0, 2 * np.pi)
        direction = np.array([np.sin(a), np.cos(a)])
        start = np.array(centre) + 0.7 * radius * direction
        end = np.array(centre) + radius * (1.0 + rng.uniform(0.5, 1.3)) * direction
        spike = C.segment_profile(rr, cc, tuple(start), tuple(end), rng.uniform(0.5, 0.9), taper=0.7)
        img = C.blend(img, density - 20, 0.9 * spike)
    if rng.random() < 0.65 * (1.0 - t) ** 3:
        img = _calcify(rng, img, rr, cc, centre, radius, mask)
    img = img + patient["noise"] * rng.standard_normal(shape)
    return img


def _calcify(rng, img, rr, cc, centre, radius, mask):
    kind = rng.choice(["central", "popcorn", "laminated", "diffuse"])
    value = rng.uniform(250, 700)
    if kind == "central":
        return C.blend(img, value, C.star_shape(rr, cc, centre, max(1.0, radius * rng.uniform(0.3, 0.55)), blur=0.5))
    if kind == "popcorn":
        for _ in range(int(rng.integers(3, 6))):
            offset = rng.uniform(-0.5, 0.5, 2) * radius
            spot = C.star_shape(rr, cc, (centre[0] + offset[0], centre[1] + offset[1]), rng.uniform(0.8, 1.8), blur=0.5)
            img = C.blend(img, value, spot)
        return img
    if kind == "laminated":
        outer = C.star_shape(rr, cc, centre, radius * 0.75, blur=0.5)
        ring = outer - C.star_shape(rr, cc, centre, radius * 0.5, blur=0.5)
        return C.blend(img, value, np.clip(ring, 0, 1))
    return C.blend(img, value * 0.7, mask)


def make_crop(output_dir: Path, index: int, crop: int, label: int, seed: int) -> dict:
    patient = patient_parameters(seed, index)
    rng = C.rng_for(seed, CODE, index, crop)
    hu = np.rint(render(rng, label, patient))
    stored = np.clip(hu + 1024, 0, 4095).astype(np.uint16)
    item = C.item_for(C.fake_patient("CT", index)["PatientID"], crop, label, ".dcm")
    spacing = patient["spacing"]
    tags = {
        **C.study_tags(NAME, seed, index, crop, "CT"),
        "PatientSex": "O",
        "FrameOfReferenceUID": C.demo_uid(NAME, seed, index, "frame"),
        "StudyDescription": "Synthetic lung nodule crop (not patient data)",
        "ImageType": ["DERIVED", "SECONDARY", "AXIAL"],
        "BodyPartExamined": "CHEST",
        "KVP": 120,
        "SliceThickness": 1.25,
        "PixelSpacing": [spacing, spacing],
        "ImagePositionPatient": [0.0, 0.0, float(-100 - 20 * crop)],
        "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
        "RescaleIntercept": -1024,
        "RescaleSlope": 1,
        "RescaleType": "HU",
        "WindowCenter": -600,
        "WindowWidth": 1500,
        "BitsStored": 12,
        "BurnedInAnnotation": "NO",
    }
    C.write_dicom(output_dir / item["image"], stored, tags, CT_IMAGE_STORAGE)
    return item


def generate(output_dir: str | Path, seed: int = 0, n_patients: int | None = None) -> Path:
    items = C.generate_medical(output_dir, seed, CODE, n_patients or DEFAULT_PATIENTS, make_crop)
    return C.finish(Path(output_dir), NAME, "CT", "HU", CLASSES, items, seed)
