"""Demo ``breast_lesion_mammography``: 64x64 mammogram crops centred on a mass, one DICOM MG file per crop.

Like the paper's 1,696 CBIS-DDSM lesions (the CBIS-DDSM mass subset), every crop holds a mass.

What a crop holds (12-bit gray levels, MONOCHROME2, bright = dense; no rescale; 0.4..0.6 mm pixels):
- breast tissue: fat (about 850) and fibroglandular tissue (about 1050) mixed in a streaked pattern with soft
  boundaries whose dense fraction is a property of the patient (fatty to extremely dense breasts), a few faint Cooper's
  ligaments, fine texture and quantum noise (6-15);
- one mass near the centre, denser than glandular tissue (+500..800) with a denser centre (+250 over 40 % of its
  radius: a projected mass is thickest there), oval to slightly lobulated, 18 mm across on average.

What differs between "benign" (0) and "malignant" (1): only the texture of the mass's periphery. Size, position,
density, shape, lobulation, edge blur, the dense centre and the breast around it are drawn from the same distributions
for both classes, so no large-scale shortcut (size, brightness, spicules, halo, calcifications) exists. Outside the
dense centre a zero-mean heterogeneity field (Gaussian-filtered white noise, correlation length about one pixel =
0.5 mm) is added with a standard deviation of ``TEXTURE_GL * t`` gray levels, where ``t`` in (0, 1) is the case's
hidden malignancy score (:func:`~monai_adv.demo._common.latent_score`, squashed): about 14 gray levels for a typical
benign mass, about 66 for a typical malignant one, with overlap (score spread 0.75, CT's is 0.55), so a classifier
cannot be perfect.

Radiological motivation: a fibroadenoma or a cyst has a homogeneous density, while an invasive carcinoma of the same
size is heterogeneous at the sub-millimetre scale: tumour infiltrating fat and stroma, desmoplastic strands and
clustered microcalcifications below the size of a resolvable speck give its periphery a granular, mottled density
(the texture features of mass regions in CBIS-DDSM studies measure it). A cue of a few tens of gray levels at the scale
of one or two pixels is what a perturbation of a few gray levels can partly create or erase, which is why a model that
reads it is fragile.

The bundle scales every crop by its own 0.5th and 99.5th percentiles, so a cue that reached the crop's brightest or
darkest pixels would change the scaling of the whole image, a large-scale shortcut. The textured periphery lies between
the surrounding tissue and the untextured dense centre, which holds the brightest pixels: after scaling, the classes
have the same per-image range and mean levels (a linear classifier on 8 x 8 block means and the range is at chance).
With version 2's sharper, brighter glandular pattern (and a texture of the same strength) the network stayed below
0.66 validation accuracy in 80 epochs; with the softer pattern here it learns the cue, slowly, hence the bundle's 80
demo epochs. The texture's
strength is a compromise measured on the demo profile: at 60 the network stayed at chance, at 90 two of five
seeds kept 0.71-0.74 of their accuracy under PGD at eps 0.004 (see the README).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from monai_adv.demo import _common as C

NAME = "breast_lesion_mammography"
CLASSES = ("benign", "malignant")
CODE = 2
SIZE = 64
SPREAD = 0.75  # latent-score spread: an observer knowing the score is right with probability Phi(1/SPREAD) ~ 0.91
DEFAULT_PATIENTS = 300
TEXTURE_GL = 80.0  # standard deviation (gray levels) of the periphery's heterogeneity at t = 1
TEXTURE_SIGMA = 1.0  # correlation length (pixels) of the heterogeneity field
CORE = 250.0  # how much denser (gray levels) the centre of the mass is than its periphery
CORE_FRACTION = 0.4  # the dense centre's radius, as a fraction of the mass radius
DIAMETER_MM = (18.0, 2.0)  # mass diameter (mm), mean and standard deviation, clipped at 2.7 sd; both classes
MAMMOGRAPHY_STORAGE = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image Storage - For Presentation


def patient_parameters(seed: int, index: int) -> dict:
    rng = C.rng_for(seed, CODE, index, 1 << 20)
    return {
        "spacing": round(float(rng.uniform(0.4, 0.6)), 4),
        "density": float(rng.uniform(0.15, 0.7)),  # dense (fibroglandular) fraction of the breast
        "fat": float(rng.uniform(800, 900)),
        "gland": float(rng.uniform(1000, 1100)),
        "noise": float(rng.uniform(6, 15)),
        "laterality": "L" if rng.random() < 0.5 else "R",
    }


def _background(rng: np.random.Generator, patient: dict, rr: np.ndarray, cc: np.ndarray) -> np.ndarray:
    shape = (SIZE, SIZE)
    field = 0.6 * C.oriented_noise(rng, SIZE, 7.0, 1.8, rng.uniform(0, 180)) + 0.8 * C.smooth_noise(rng, shape, 4.0)
    field = field / field.std()
    threshold = np.quantile(field, 1.0 - patient["density"])
    dense = 1.0 / (1.0 + np.exp(-(field - threshold) / 0.6))
    img = patient["fat"] + (patient["gland"] - patient["fat"]) * dense
    img = img + 10 * C.smooth_noise(rng, shape, 1.0) * (0.4 + dense)
    for _ in range(int(rng.integers(0, 4))):
        ligament = C.curve_profile(rr, cc, C.random_curve(rng, SIZE), rng.uniform(0.5, 0.9), taper=0.5)
        img = img + rng.uniform(80, 160) * ligament
    return img


def _mass(rng, img, rr, cc, t, patient):
    """The mass: size, position, brightness, lobulation, edge blur and dense centre from the same distributions for
    both classes; the class cue is the fine heterogeneity of its periphery, ``TEXTURE_GL * t`` gray levels."""
    spacing = patient["spacing"]
    mean, sd = DIAMETER_MM
    diameter = float(np.clip(rng.normal(mean, sd), mean - 2.7 * sd, mean + 2.7 * sd))
    radius = diameter / 2 / spacing
    centre = (SIZE / 2 - 0.5 + rng.normal(0, 1.5), SIZE / 2 - 0.5 + rng.normal(0, 1.5))
    value = patient["gland"] + rng.uniform(500, 800)
    harmonics = C.random_harmonics(rng, rng.uniform(0.03, 0.12), orders=(3, 4, 5, 6))
    harmonics.append((2, rng.uniform(0.0, 0.25), rng.uniform(0, 2 * np.pi)))  # oval
    mask = C.star_shape(rr, cc, centre, radius, harmonics, blur=rng.uniform(0.6, 1.4))
    # the class cue: a zero-mean heterogeneity, TEXTURE_GL * t gray levels at about one pixel, in the mass's
    # periphery; its dense centre (CORE_FRACTION of the radius, CORE gray levels denser, untextured) holds the crop's
    # brightest pixels, so the per-image percentile scaling does not depend on the class
    texture = TEXTURE_GL * t * C.smooth_noise(rng, img.shape, TEXTURE_SIGMA)
    img = C.blend(img, value + 15 * C.smooth_noise(rng, img.shape, 2.0) + texture, mask)
    core = C.star_shape(rr, cc, centre, radius * CORE_FRACTION, harmonics, blur=1.5)
    return C.blend(img, value + CORE, core)


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
