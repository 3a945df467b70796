"""Demo ``mnist_digit``: synthetic handwritten-looking digits, written as MNIST's four IDX files and then converted by
:func:`monai_adv.prepare.mnist.prepare`, the path real MNIST takes.

Each digit is drawn with PIL's built-in default font at a random size and stroke width, then randomly rotated
(+-10 degrees), sheared, scaled (0.85..1.15) and elastically distorted, and normalised the way MNIST was: the digit's bounding box scaled to fit
20x20 and placed in a 28x28 frame by its centre of mass. Labels are balanced and shuffled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from monai_adv.demo import _common as C

NAME = "mnist_digit"
CLASSES = tuple(str(d) for d in range(10))
CODE = 4
DEFAULT_IMAGES = 800  # 600 training + 200 test
SOURCE_DIR = "source"


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size), 1
    except (TypeError, ImportError, OSError):  # no FreeType: the small bitmap font, drawn then enlarged
        return ImageFont.load_default(), 4


def draw_digit(rng: np.random.Generator, digit: int) -> np.ndarray:
    """One 28x28 uint8 digit (white on black)."""
    from PIL import Image, ImageDraw

    font, upscale = _font(int(rng.integers(38, 50)))
    canvas = 72 // upscale
    img = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(img)
    stroke = int(rng.integers(1, 4)) if upscale == 1 else 0
    centre = (canvas / 2, canvas / 2)
    draw.text(centre, str(digit), fill=255, font=font, anchor="mm", stroke_width=stroke, stroke_fill=255)
    if upscale > 1:
        img = img.resize((72, 72), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.float64) / 255.0

    # random affine about the centre: rotation, shear, anisotropic scale
    angle = np.deg2rad(rng.uniform(-10, 10))
    shear = rng.uniform(-0.2, 0.2)
    scale = rng.uniform(0.85, 1.15, 2)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = rot @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag(scale)
    inverse = np.linalg.inv(matrix)
    centre = np.array(arr.shape) / 2
    arr = ndimage.affine_transform(arr, inverse, offset=centre - inverse @ centre, order=1)
    # elastic distortion: smooth random displacements of about 2 pixels
    rr, cc = np.mgrid[0 : arr.shape[0], 0 : arr.shape[1]].astype(np.float64)
    dr = 1.5 * C.smooth_noise(rng, arr.shape, 8.0)
    dc = 1.5 * C.smooth_noise(rng, arr.shape, 8.0)
    arr = ndimage.map_coordinates(arr, [rr + dr, cc + dc], order=1)
    arr = ndimage.gaussian_filter(arr, rng.uniform(0.3, 1.0))
    return _mnist_frame(arr)


def _mnist_frame(arr: np.ndarray) -> np.ndarray:
    """Fit the ink's bounding box into 20x20 (aspect kept), then centre its mass in a 28x28 frame."""
    from PIL import Image

    rows, cols = np.nonzero(arr > 0.05)
    if rows.size == 0:
        return np.zeros((28, 28), dtype=np.uint8)
    box = arr[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    factor = 20.0 / max(box.shape)
    size = (max(1, round(box.shape[1] * factor)), max(1, round(box.shape[0] * factor)))
    small = np.asarray(Image.fromarray((box * 255).astype(np.uint8)).resize(size, Image.LANCZOS), dtype=np.float64)
    frame = np.zeros((28, 28))
    top, left = (28 - small.shape[0]) // 2, (28 - small.shape[1]) // 2
    frame[top : top + small.shape[0], left : left + small.shape[1]] = small
    com = ndimage.center_of_mass(frame)
    frame = ndimage.shift(frame, (13.5 - com[0], 13.5 - com[1]), order=1)
    return np.clip(np.rint(frame * (255.0 / max(frame.max(), 1.0))), 0, 255).astype(np.uint8)


def _split(seed: int, split: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(count) % 10
    labels = C.rng_for(seed, CODE, split, 1 << 20).permutation(labels).astype(np.uint8)
    images = np.stack([draw_digit(C.rng_for(seed, CODE, split, k), int(d)) for k, d in enumerate(labels)])
    return images, labels


def generate(output_dir: str | Path, seed: int = 0, n_patients: int | None = None) -> Path:
    """``n_patients`` is the number of digits (each its own "patient"); three quarters go to training."""
    from monai_adv.prepare import mnist

    total = max(4, int(n_patients or DEFAULT_IMAGES))
    n_train = round(0.75 * total)
    output_dir = Path(output_dir)
    source = output_dir / SOURCE_DIR
    for split, count, (image_file, label_file) in (
        (0, n_train, mnist.FILES["training"]),
        (1, total - n_train, mnist.FILES["test"]),
    ):
        images, labels = _split(seed, split, count)
        mnist.write_idx_images(source / image_file, images)
        mnist.write_idx_labels(source / label_file, labels)
    path = mnist.prepare(source, output_dir, seed=seed)
    return C.relabel(path, NAME, seed)
