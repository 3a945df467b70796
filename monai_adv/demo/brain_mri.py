"""Demo ``brain_lesion_mri``: 64x64 crops of contrast-enhanced T1-weighted brain MRI, one 2-D NIfTI file per crop.

Classes: ``"no_tumor"`` (0) and ``"tumor"`` (1), i.e. the brain-metastasis registry's question "is this a malignant
lesion (metastasis)?": the original code names its two arrays ``normal`` and ``tumor``. Every crop is centred on a
ring-enhancing lesion: a metastasis with a necrotic centre (tumor), or a non-neoplastic ring-enhancing lesion of the
same size, such as an abscess or a resolving haematoma (no_tumor).

What a crop holds (int16 intensities on an arbitrary MR scale, roughly 0..1500; 2-D NIfTI ``.nii.gz`` with an LPS-like
affine: negative in-plane axes, 0.9..1.2 mm pixels, 5 mm slice, non-zero origin):
- brain tissue: white matter (about 850) and cortical gray matter (about 720) folded in a gyral pattern, darker sulcal
  CSF lines, sometimes a ventricle; enhancing cortical veins (bright curves) and vessels seen end-on (bright dots);
  a smooth coil bias field, patient-specific scanner gain and Rician noise (8-20);
- the lesion near the centre, 30 mm across on average: T1-dark vasogenic oedema around it, an enhancing wall 2-3
  pixels thick (1300..1450) and a non-enhancing core (600..700).

What differs between "no_tumor" (0) and "tumor" (1): only the texture of the core. Size, position, shape, wall
brightness and thickness, core brightness, oedema and the brain around it are drawn from the same distributions for
both classes, so no large-scale shortcut exists. Inside the core a zero-mean heterogeneity field (Gaussian-filtered
white noise, correlation length about one pixel = 1 mm) is added with a standard deviation of ``TEXTURE_MR * t``, where
``t`` in (0, 1) is the case's hidden score (:func:`~monai_adv.demo._common.latent_score`, squashed): about 13 for a
typical no-tumor lesion, about 62 for a typical metastasis, with overlap, so a classifier cannot be perfect.

Radiological motivation: the ring-enhancing differential (metastasis, abscess, resolving haematoma, tumefactive
demyelination) is a daily question of brain MRI, and a metastasis's necrotic centre is heterogeneous (coagulative
necrosis mixed with viable tumour, haemorrhage and leaky neovessels) where an abscess cavity holds homogeneous pus; on
contrast-enhanced T1 alone the difference is a fine mottling of the core of a few per cent of the image range. A
perturbation of the same order can partly create or erase it, which is why a model that reads it is fragile.

The bundle scales every crop by its own 0.5th and 99.5th percentiles; the textured core lies between the CSF (the
darkest pixels) and the enhancing wall (the brightest), so the scaling, and the scaled mean levels, do not depend on
the class (a linear classifier on 8 x 8 block means and the range is at chance). A solid enhancing lesion with the same
texture would set the brightest pixels itself and make the scaling a class cue.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from monai_adv.demo import _common as C

NAME = "brain_lesion_mri"
CLASSES = ("no_tumor", "tumor")
CODE = 3
SIZE = 64
SPREAD = 0.55  # latent-score spread: an observer knowing the score is right with probability Phi(1/SPREAD) ~ 0.96
DEFAULT_PATIENTS = 300
TEXTURE_MR = 75.0  # standard deviation of the core's heterogeneity at t = 1 (MR gray levels before the gain)
TEXTURE_SIGMA = 1.0  # correlation length (pixels) of the heterogeneity field
DIAMETER_MM = (30.0, 3.0)  # lesion diameter (mm), mean and standard deviation, clipped at 2.7 sd; both classes


def patient_parameters(seed: int, index: int) -> dict:
    rng = C.rng_for(seed, CODE, index, 1 << 20)
    return {
        "spacing": round(float(rng.uniform(0.9, 1.2)), 4),
        "gain": float(rng.uniform(0.8, 1.25)),
        "noise": float(rng.uniform(8, 20)),
        "origin": [float(v) for v in np.round(rng.uniform(-120, -80, 3), 2)],
    }


def _brain(rng: np.random.Generator, rr: np.ndarray, cc: np.ndarray) -> np.ndarray:
    shape = (SIZE, SIZE)
    folds = C.smooth_noise(rng, shape, 4.0)
    white = 1.0 / (1.0 + np.exp(-(folds - 0.2) / 0.12))
    img = 720 + 130 * white + 20 * C.smooth_noise(rng, shape, 1.5)
    sulci = np.exp(-((C.smooth_noise(rng, shape, 4.0) / 0.2) ** 2)) * (1.0 - white)
    img = C.blend(img, 220, 0.5 * sulci)
    if rng.random() < 0.2:
        centre = tuple(rng.uniform(6, SIZE - 6, 2))
        if np.hypot(centre[0] - SIZE / 2, centre[1] - SIZE / 2) > 12:
            ventricle = C.star_shape(rr, cc, centre, rng.uniform(5, 11), C.random_harmonics(rng, 0.3), blur=0.8)
            img = C.blend(img, 180, ventricle)
    for _ in range(int(rng.integers(0, 3))):
        vein = C.curve_profile(rr, cc, C.random_curve(rng, SIZE, (0.2, 0.6)), rng.uniform(0.5, 1.0), taper=0.4)
        img = C.blend(img, rng.uniform(1100, 1350), 0.9 * vein)
    for _ in range(int(rng.poisson(1.2))):
        dot = C.star_shape(rr, cc, tuple(rng.uniform(3, SIZE - 3, 2)), rng.uniform(0.6, 1.6), blur=0.6)
        img = C.blend(img, rng.uniform(1050, 1350), dot)
    return img


def _lesion(rng: np.random.Generator, img: np.ndarray, rr: np.ndarray, cc: np.ndarray, t: float, spacing: float):
    """The ring-enhancing lesion at the centre of every crop: size, position, rim and core brightness, rim thickness,
    lobulation and edge blur from the same distributions for both classes; the class cue is the heterogeneity of its
    non-enhancing core, ``TEXTURE_MR * t``."""
    mean, sd = DIAMETER_MM
    diameter = float(np.clip(rng.normal(mean, sd), mean - 2.7 * sd, mean + 2.7 * sd))
    radius = diameter / 2 / spacing
    centre = (SIZE / 2 - 0.5 + rng.normal(0, 1.5), SIZE / 2 - 0.5 + rng.normal(0, 1.5))
    harmonics = C.random_harmonics(rng, rng.uniform(0.03, 0.12))
    oedema = C.star_shape(rr, cc, centre, radius * rng.uniform(1.4, 2.0), C.random_harmonics(rng, 0.3), blur=2.5)
    img = img * (1.0 - 0.2 * oedema)  # T1-dark vasogenic oedema
    rim = C.star_shape(rr, cc, centre, radius, harmonics, blur=rng.uniform(0.6, 1.0))
    img = C.blend(img, rng.uniform(1300, 1450) + 20 * C.smooth_noise(rng, img.shape, 1.5), rim)
    core_radius = radius - rng.uniform(2.0, 3.0)  # the enhancing wall: 2-3 pixels
    core = C.star_shape(rr, cc, centre, core_radius, harmonics, blur=rng.uniform(0.6, 1.0))
    # the class cue: zero-mean heterogeneity of the core, TEXTURE_MR * t at a correlation length of one pixel; the core
    # (about 650) lies between the CSF and the enhancing wall, which hold the crop's darkest and brightest pixels
    texture = TEXTURE_MR * t * C.smooth_noise(rng, img.shape, TEXTURE_SIGMA)
    return C.blend(img, rng.uniform(600, 700) + texture, core)


def render(rng: np.random.Generator, label: int, patient: dict) -> np.ndarray:
    rr, cc = C.coords(SIZE)
    img = _brain(rng, rr, cc)
    t = C.squash(C.latent_score(rng, label, SPREAD))
    img = _lesion(rng, img, rr, cc, t, patient["spacing"])
    img = img * patient["gain"] * (1.0 + 0.08 * C.smooth_noise(rng, img.shape, 20.0))
    noise = patient["noise"] * rng.standard_normal((2, SIZE, SIZE))
    return np.hypot(img + noise[0], noise[1])  # Rician magnitude noise


def make_crop(output_dir: Path, index: int, crop: int, label: int, seed: int) -> dict:
    patient = patient_parameters(seed, index)
    fake = C.fake_patient("MR", index)  # never written: NIfTI carries no patient fields; only its pseudonym is used
    rng = C.rng_for(seed, CODE, index, crop)
    img = np.clip(np.rint(render(rng, label, patient)), 0, 32767).astype(np.int16)
    item = C.item_for(fake["PatientID"], crop, label, ".nii.gz")
    s = patient["spacing"]
    origin = patient["origin"]
    affine = np.array(
        [[-s, 0.0, 0.0, -origin[0]], [0.0, -s, 0.0, -origin[1]], [0.0, 0.0, 5.0, origin[2] + 10.0 * crop], [0, 0, 0, 1]]
    )
    C.write_nifti(output_dir / item["image"], img, affine)
    return item


def generate(output_dir: str | Path, seed: int = 0, n_patients: int | None = None) -> Path:
    items = C.generate_medical(output_dir, seed, CODE, n_patients or DEFAULT_PATIENTS, make_crop)
    return C.finish(Path(output_dir), NAME, "MR", "gray level", CLASSES, items, seed)
