"""Demo ``brain_lesion_mri``: 64x64 crops of contrast-enhanced T1-weighted brain MRI, one 2-D NIfTI file per crop.

Classes: ``"no_tumor"`` (0) and ``"tumor"`` (1), i.e. the brain-metastasis registry's question "is there a malignant
lesion (metastasis) in this region of interest?": the original code names its two arrays ``normal`` and ``tumor``.
Tumor crops are centred on the lesion; no-tumor crops are regions of brain without one.

What a crop holds (int16 intensities on an arbitrary MR scale, roughly 0..1500; 2-D NIfTI ``.nii.gz`` with an LPS-like
affine: negative in-plane axes, 0.9..1.2 mm pixels, 5 mm slice, non-zero origin):
- brain tissue: white matter (about 850) and cortical gray matter (about 600) folded in a gyral pattern, dark sulcal
  CSF lines, sometimes a ventricle; enhancing cortical veins (bright curves) and vessels seen end-on (bright dots);
  a smooth coil bias field, patient-specific scanner gain and Rician noise;
- a focal enhancing lesion whose size and contrast grow with a hidden score
  (:func:`~monai_adv.demo._common.latent_score`): absent for a typical no-tumor crop, a small bright nodule for a low
  score, and above about 6 mm a ring-enhancing lesion with a dark necrotic core and surrounding T1-dark vasogenic
  oedema. The classes overlap by construction: some tumor crops hold only a small enhancing focus, like a vessel seen
  end-on, and some no-tumor crops hold one too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from monai_adv.demo import _common as C

NAME = "brain_lesion_mri"
CLASSES = ("no_tumor", "tumor")
CODE = 3
SIZE = 64
SPREAD = 0.55
DEFAULT_PATIENTS = 210


def patient_parameters(seed: int, index: int) -> dict:
    rng = C.rng_for(seed, CODE, index, 1 << 20)
    return {
        "spacing": round(float(rng.uniform(0.9, 1.2)), 4),
        "gain": float(rng.uniform(0.8, 1.25)),
        "noise": float(rng.uniform(12, 30)),
        "origin": [float(v) for v in np.round(rng.uniform(-120, -80, 3), 2)],
    }


def _brain(rng: np.random.Generator, rr: np.ndarray, cc: np.ndarray) -> np.ndarray:
    shape = (SIZE, SIZE)
    folds = C.smooth_noise(rng, shape, 4.0)
    white = 1.0 / (1.0 + np.exp(-(folds - 0.2) / 0.12))
    img = 600 + 250 * white + 20 * C.smooth_noise(rng, shape, 1.5)
    sulci = np.exp(-((C.smooth_noise(rng, shape, 4.0) / 0.2) ** 2)) * (1.0 - white)
    img = C.blend(img, 220, 0.85 * sulci)
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
    diameter = 16.0 * (t - 0.3) / 0.7 + rng.normal(0, 1.2)  # mm; <= 1 mm means nothing visible
    if diameter <= 1.0:
        return img
    radius = diameter / 2 / spacing
    centre = (SIZE / 2 - 0.5 + rng.normal(0, 1.5), SIZE / 2 - 0.5 + rng.normal(0, 1.5))
    harmonics = C.random_harmonics(rng, 0.12)
    if diameter > 6.0:
        extent = radius * rng.uniform(1.8, 3.0)
        oedema = C.star_shape(rr, cc, centre, extent, C.random_harmonics(rng, 0.35), blur=2.5)
        img = img * (1.0 - 0.25 * oedema)
    enhancement = 950 + 450 * min(t, 1.0) + rng.normal(0, 60)
    mask = C.star_shape(rr, cc, centre, radius, harmonics, blur=0.7)
    img = C.blend(img, enhancement + 40 * C.smooth_noise(rng, img.shape, 1.0), mask)
    if diameter > 6.0:
        core = C.star_shape(rr, cc, centre, radius * rng.uniform(0.45, 0.7), C.random_harmonics(rng, 0.15), blur=0.8)
        img = C.blend(img, rng.uniform(350, 500), core)
    return img


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
