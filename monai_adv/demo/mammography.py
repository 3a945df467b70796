"""Demo ``breast_lesion_mammography``: 64x64 mammogram crops centred on a mass, one DICOM MG file per crop.

Like the paper's 1,696 CBIS-DDSM lesions (the CBIS-DDSM mass subset), every crop holds a mass.

What a crop holds (12-bit gray levels, MONOCHROME2, bright = dense; no rescale; 0.4..0.6 mm pixels):
- breast tissue: fat (about 850) and fibroglandular tissue (about 1200) mixed in a streaked pattern whose dense
  fraction is a property of the patient (fatty to extremely dense breasts), a few Cooper's ligaments, fine texture and
  quantum noise;
- one mass near the centre, denser than glandular tissue (+500..800), so dense tissue partly hides its margin.

What differs between "benign" (0) and "malignant" (1): every class-specific feature is drawn from a hidden score
(:func:`~monai_adv.demo._common.latent_score`), so the classes overlap by construction. A low score gives a smaller,
round or oval, circumscribed mass (sharp margin, sometimes a lucent fat halo or coarse popcorn calcifications), a high
score a larger, irregular, lobulated mass with an indistinct margin, long thin spicules and sometimes fine pleomorphic
calcifications in short lines. Calcifications are only a few hundred gray levels brighter than the mass, so they do
not take over the per-image percentile scaling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from monai_adv.demo import _common as C

NAME = "breast_lesion_mammography"
CLASSES = ("benign", "malignant")
CODE = 2
SIZE = 64
SPREAD = 0.5
DEFAULT_PATIENTS = 210
MAMMOGRAPHY_STORAGE = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image Storage - For Presentation


def patient_parameters(seed: int, index: int) -> dict:
    rng = C.rng_for(seed, CODE, index, 1 << 20)
    return {
        "spacing": round(float(rng.uniform(0.4, 0.6)), 4),
        "density": float(rng.uniform(0.15, 0.7)),  # dense (fibroglandular) fraction of the breast
        "fat": float(rng.uniform(800, 900)),
        "gland": float(rng.uniform(1150, 1300)),
        "noise": float(rng.uniform(20, 45)),
        "laterality": "L" if rng.random() < 0.5 else "R",
    }


def _background(rng: np.random.Generator, patient: dict, rr: np.ndarray, cc: np.ndarray) -> np.ndarray:
    shape = (SIZE, SIZE)
    field = 0.6 * C.oriented_noise(rng, SIZE, 7.0, 1.8, rng.uniform(0, 180)) + 0.8 * C.smooth_noise(rng, shape, 4.0)
    field = field / field.std()
    threshold = np.quantile(field, 1.0 - patient["density"])
    dense = 1.0 / (1.0 + np.exp(-(field - threshold) / 0.25))
    img = patient["fat"] + (patient["gland"] - patient["fat"]) * dense
    img = img + 40 * C.smooth_noise(rng, shape, 1.0) * (0.4 + dense)
    for _ in range(int(rng.integers(0, 4))):
        ligament = C.curve_profile(rr, cc, C.random_curve(rng, SIZE), rng.uniform(0.5, 0.9), taper=0.5)
        img = img + rng.uniform(150, 350) * ligament
    return img


def _mass(rng, img, rr, cc, t, patient):
    spacing = patient["spacing"]
    diameter = float(np.clip(6.0 + 14.0 * t + rng.normal(0, 2.5), 4.0, 26.0))
    radius = diameter / 2 / spacing
    centre = (SIZE / 2 - 0.5 + rng.normal(0, 1.5), SIZE / 2 - 0.5 + rng.normal(0, 1.5))
    value = patient["gland"] + rng.uniform(500, 800)
    harmonics = C.random_harmonics(rng, 0.03 + 0.3 * t, orders=(3, 4, 5, 6))
    harmonics.append((2, rng.uniform(0.05, 0.3) * (1.0 - t), rng.uniform(0, 2 * np.pi)))  # oval
    blur = 0.5 + 2.2 * t * rng.uniform(0.5, 1.0)
    if rng.random() < 0.5 * (1.0 - t) ** 2:  # lucent halo around a circumscribed mass
        halo = C.star_shape(rr, cc, centre, radius + 1.5, harmonics, blur=0.6)
        img = C.blend(img, patient["fat"], halo)
    for _ in range(int(rng.poisson(14.0 * t**2))):  # spicules, drawn under the mass
        a = rng.uniform(0, 2 * np.pi)
        direction = np.array([np.sin(a), np.cos(a)])
        start = np.array(centre) + 0.5 * radius * direction
        end = np.array(centre) + radius * (1.0 + rng.uniform(0.8, 2.2)) * direction
        spike = C.segment_profile(rr, cc, tuple(start), tuple(end), rng.uniform(0.5, 0.9), taper=0.6)
        img = np.maximum(img, C.blend(img, value - 100, 0.8 * spike))
    mask = C.star_shape(rr, cc, centre, radius, harmonics, blur=blur)
    img = C.blend(img, value + 40 * C.smooth_noise(rng, img.shape, 1.5), mask)
    if rng.random() < 0.3 * (1.0 - t) ** 3:  # popcorn calcification of an involuting fibroadenoma
        for _ in range(int(rng.integers(2, 5))):
            offset = rng.uniform(-0.5, 0.5, 2) * radius
            spot = C.star_shape(rr, cc, (centre[0] + offset[0], centre[1] + offset[1]), rng.uniform(1.0, 2.0), blur=0.5)
            img = C.blend(img, value + rng.uniform(500, 900), spot)
    elif rng.random() < 0.3 * t**3:
        img = _fine_calcifications(rng, img, rr, cc, centre, radius, value)
    return img


def _fine_calcifications(rng, img, rr, cc, centre, radius, value):
    """Fine pleomorphic calcifications in and around a suspicious mass, partly along short lines."""
    count = int(rng.integers(5, 16))
    axes = [rng.uniform(0, np.pi) for _ in range(int(rng.integers(1, 3)))]
    for k in range(count):
        if k % 2 == 0:
            a = axes[k % len(axes)]
            position = np.array(centre) + rng.uniform(-1.2, 1.2) * radius * np.array([np.sin(a), np.cos(a)])
        else:
            position = np.array(centre) + rng.normal(0, 0.6 * radius, 2)
        spot = C.star_shape(rr, cc, tuple(position), rng.uniform(0.4, 0.9), C.random_harmonics(rng, 0.3, (2, 3)))
        img = C.blend(img, value + rng.uniform(400, 800), spot)
    return img


def render(rng: np.random.Generator, label: int, patient: dict) -> np.ndarray:
    rr, cc = C.coords(SIZE)
    img = _background(rng, patient, rr, cc)
    t = C.squash(C.latent_score(rng, label, SPREAD))
    img = _mass(rng, img, rr, cc, t, patient)
    return img + patient["noise"] * rng.standard_normal(img.shape)


def make_crop(output_dir: Path, index: int, crop: int, label: int, seed: int) -> dict:
    patient = patient_parameters(seed, index)
    rng = C.rng_for(seed, CODE, index, crop)
    stored = np.clip(np.rint(render(rng, label, patient)), 0, 4095).astype(np.uint16)
    item = C.item_for(C.fake_patient("MG", index)["PatientID"], crop, label, ".dcm")
    spacing = patient["spacing"]
    tags = {
        **C.study_tags(NAME, seed, index, crop, "MG"),
        "PatientSex": "F",
        "StudyDescription": "Synthetic mammography lesion crop (not patient data)",
        "ImageType": ["DERIVED", "SECONDARY"],
        "PresentationIntentType": "FOR PRESENTATION",
        "BodyPartExamined": "BREAST",
        "ImageLaterality": patient["laterality"],
        "Laterality": patient["laterality"],
        "ViewPosition": "CC" if crop % 2 == 0 else "MLO",
        "PatientOrientation": ["A", "R" if patient["laterality"] == "L" else "L"],
        "PixelSpacing": [spacing, spacing],
        "ImagerPixelSpacing": [spacing, spacing],
        "WindowCenter": 2048,
        "WindowWidth": 4096,
        "BitsStored": 12,
        "BurnedInAnnotation": "NO",
    }
    C.write_dicom(output_dir / item["image"], stored, tags, MAMMOGRAPHY_STORAGE)
    return item


def generate(output_dir: str | Path, seed: int = 0, n_patients: int | None = None) -> Path:
    items = C.generate_medical(output_dir, seed, CODE, n_patients or DEFAULT_PATIENTS, make_crop)
    return C.finish(Path(output_dir), NAME, "MG", "gray level", CLASSES, items, seed)
