"""Demo ``lung_nodule_ct``: 64x64 axial CT crops centred on a lung nodule, one DICOM file per crop.

What a crop holds (Hounsfield units; stored value = HU + 1024, RescaleSlope 1, RescaleIntercept -1024, 12 bits), a
targeted small-field reconstruction (0.45-0.55 mm pixels, so the crop spans about 32 mm):
- lung parenchyma around -850 HU (patient-specific level), with smooth texture and white CT noise (12-30 HU);
- 1-4 in-plane vessels (bent tubes, -80..+40 HU) and vessel cross-sections (small dots); a chest wall (soft tissue
  and fat) enters one side of some crops;
- the nodule near the centre: a solid, slightly lobulated soft-tissue nodule of 14-26 mm.

What differs between "benign" (0) and "malignant" (1): only the nodule's internal texture. Size, position, mean
density (5..55 HU), lobulation, margin blur, vessels, chest wall and noise level are drawn from the same distributions
for both classes, so no large-scale shortcut (size, brightness, position, calcification) exists. Inside the nodule a
zero-mean heterogeneity field (Gaussian-filtered white noise, correlation length about one pixel = 0.5 mm) is added
with a standard deviation of ``TEXTURE_HU * t`` HU, where ``t`` in (0, 1) is the case's hidden malignancy score
(:func:`~monai_adv.demo._common.latent_score`, squashed): about 7 HU for a typical benign nodule, about 33 HU for a
typical malignant one, with overlap, so a classifier cannot be perfect.

Radiological motivation: the CT appearance that separates many solid malignant nodules from benign granulomas and
hamartomas of the same size is internal heterogeneity: necrosis, mucin, air bronchiolograms and uneven cellularity
give a mottled attenuation that varies by a few tens of HU over a millimetre, while a benign solid nodule is
homogeneous (texture analysis of nodules and radiomics rest on the same cue). A cue of a few tens of HU at the scale
of one or two pixels is what a perturbation of a few HU can partly create or erase: this is why a model that reads it
is fragile, and why the demo reproduces the paper's finding. At the 32-pixel demo input size (area-downsampled by 2)
the field keeps about 90 % of its contrast (about 30 HU in a typical malignant nodule) while the white noise halves.
The amplitude was chosen by measurement (``scripts/demo_seeds.py``): at 65 HU the BatchNorm network of the demo
profile read the cue robustly enough that PGD at eps 0.004 kept 0.60 of its accuracy; at 30 HU adversarial training
gained less (the robust cue is too weak for the narrow network); 40 HU keeps the model fragile and trainable.
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
DEFAULT_PATIENTS = 300
TEXTURE_HU = 40.0  # standard deviation (HU) of the internal heterogeneity at t = 1
TEXTURE_SIGMA = 1.0  # correlation length (pixels) of the heterogeneity field
DIAMETER_MM = (20.0, 2.2)  # nodule diameter (mm), mean and standard deviation, clipped at 2.7 sd; both classes
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def patient_parameters(seed: int, index: int) -> dict:
    """Per-patient scanner and lung properties, shared by all crops of the patient."""
    rng = C.rng_for(seed, CODE, index, 1 << 20)
    return {
        "spacing": round(float(rng.uniform(0.45, 0.55)), 4),
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

    # the nodule: size, position, density and margin from the same distributions for both classes
    t = C.squash(C.latent_score(rng, label, SPREAD))
    spacing = patient["spacing"]
    mean, sd = DIAMETER_MM
    diameter = float(np.clip(rng.normal(mean, sd), mean - 2.7 * sd, mean + 2.7 * sd))
    radius = diameter / 2 / spacing
    centre = (SIZE / 2 - 0.5 + rng.normal(0, 1.5), SIZE / 2 - 0.5 + rng.normal(0, 1.5))
    density = rng.uniform(5, 55)
    harmonics = C.random_harmonics(rng, rng.uniform(0.03, 0.15))
    mask = C.star_shape(rr, cc, centre, radius, harmonics, blur=rng.uniform(0.5, 1.2))
    # the class cue: zero-mean internal heterogeneity, TEXTURE_HU * t HU at a correlation length of about one pixel
    texture = TEXTURE_HU * t * C.smooth_noise(rng, shape, TEXTURE_SIGMA)
    img = C.blend(img, density + texture, mask)
    return img + patient["noise"] * rng.standard_normal(shape)


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
