"""Demo ``cifar10_object``: synthetic 32x32 colour pictures of CIFAR-10's ten classes, written in the
``cifar-10-batches-bin`` layout and then converted by :func:`monai_adv.prepare.cifar10.prepare`, the path real
CIFAR-10 takes.

Each class is a crude drawing with its own typical scene and silhouette (an aeroplane's cross on sky, a car or a truck
with wheels on a road, a ship on water, four-legged animals of different builds on grass or indoors, a bird, a flat
green frog), with random colours, position, size, mirror image and pixel noise. Labels are balanced and shuffled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from monai_adv.demo import _common as C

NAME = "cifar10_object"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CODE = 5
DEFAULT_IMAGES = 800  # 600 training + 200 test
SOURCE_DIR = "source"
SCALE = 4  # drawn at 128x128, then reduced to 32x32 (anti-aliasing)


def _jitter(rng: np.random.Generator, colour, amount: int = 30) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def _background(rng, draw, kind: str) -> None:
    w = 32 * SCALE
    horizon = int(rng.uniform(0.45, 0.7) * w)
    sky = _jitter(rng, (120, 170, 230))
    if kind == "sky":
        draw.rectangle([0, 0, w, w], fill=sky)
    elif kind == "water":
        draw.rectangle([0, 0, w, horizon], fill=sky)
        draw.rectangle([0, horizon, w, w], fill=_jitter(rng, (30, 70, 140)))
    elif kind == "road":
        draw.rectangle([0, 0, w, horizon], fill=_jitter(rng, (150, 150, 160), 50))
        draw.rectangle([0, horizon, w, w], fill=_jitter(rng, (80, 80, 80)))
    elif kind == "grass":
        draw.rectangle([0, 0, w, horizon], fill=_jitter(rng, (140, 180, 120), 40))
        draw.rectangle([0, horizon, w, w], fill=_jitter(rng, (70, 130, 50)))
    elif kind == "indoor":
        draw.rectangle([0, 0, w, w], fill=_jitter(rng, (180, 150, 120), 50))
    elif kind == "ground":
        draw.rectangle([0, 0, w, w], fill=_jitter(rng, (110, 90, 60), 30))


def _wheels(draw, rng, xs, y, r):
    for x in xs:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=_jitter(rng, (20, 20, 20), 15))


def _quadruped(draw, rng, cx, cy, s, colour, legs, neck, head, ears=None, antlers=False, tail=False):
    bw, bh = legs["body"]
    draw.ellipse([cx - bw * s, cy - bh * s, cx + bw * s, cy + bh * s], fill=colour)
    for dx in (-0.8, -0.5, 0.5, 0.8):
        x = cx + dx * bw * s
        draw.line([x, cy, x, cy + legs["length"] * s], fill=colour, width=max(2, int(legs["width"] * s)))
    hx, hy = cx + bw * s * 0.9 + neck[0] * s, cy - neck[1] * s
    draw.line([cx + bw * s * 0.6, cy - bh * s * 0.3, hx, hy], fill=colour, width=max(3, int(neck[2] * s)))
    draw.ellipse([hx - head * s, hy - head * s * 0.8, hx + head * s * 1.2, hy + head * s * 0.8], fill=colour)
    if ears == "pointed":
        for ex in (-0.6, 0.5):
            x = hx + ex * head * s
            draw.polygon([(x - 0.4 * head * s, hy - 0.5 * head * s), (x + 0.4 * head * s, hy - 0.5 * head * s),
                          (x, hy - 1.6 * head * s)], fill=colour)
    elif ears == "floppy":
        draw.ellipse([hx - 0.9 * head * s, hy - 0.3 * head * s, hx - 0.2 * head * s, hy + 1.1 * head * s],
                     fill=tuple(max(0, c - 50) for c in colour))
    if antlers:
        for ex in (-0.3, 0.4):
            x = hx + ex * head * s
            draw.line([x, hy - 0.6 * head * s, x - 0.6 * head * s, hy - 2.2 * head * s], fill=(90, 60, 30), width=3)
            draw.line([x, hy - 0.6 * head * s, x + 0.6 * head * s, hy - 2.0 * head * s], fill=(90, 60, 30), width=3)
    if tail:
        draw.line([cx - bw * s, cy - 0.3 * bh * s, cx - bw * s * 1.5, cy + bh * s * 1.2], fill=colour, width=4)


def draw_object(rng: np.random.Generator, label: int) -> np.ndarray:
    """One 32x32x3 uint8 picture of class ``label``."""
    from PIL import Image, ImageDraw

    w = 32 * SCALE
    img = Image.new("RGB", (w, w))
    draw = ImageDraw.Draw(img)
    cx, cy = w / 2 + rng.uniform(-0.12, 0.12) * w, w / 2 + rng.uniform(-0.1, 0.1) * w
    s = rng.uniform(0.8, 1.2) * w / 32
    name = CLASSES[label]
    if name == "airplane":
        _background(rng, draw, "sky")
        colour = _jitter(rng, (200, 200, 210), 40)
        draw.ellipse([cx - 13 * s, cy - 2.5 * s, cx + 13 * s, cy + 2.5 * s], fill=colour)
        for side in (-1, 1):  # wings
            tip = cy + side * 12 * s
            wing = [(cx - 2 * s, cy), (cx + 4 * s, cy), (cx - 4 * s, tip), (cx - 7 * s, tip)]
            draw.polygon(wing, fill=colour)
        draw.polygon([(cx - 13 * s, cy), (cx - 9 * s, cy), (cx - 13 * s, cy - 6 * s)], fill=colour)
    elif name in ("automobile", "truck"):
        _background(rng, draw, "road")
        colour = _jitter(rng, tuple(int(v) for v in rng.integers(0, 256, 3)), 0)
        if name == "automobile":
            draw.rounded_rectangle([cx - 12 * s, cy - 3 * s, cx + 12 * s, cy + 4 * s], radius=2 * s, fill=colour)
            draw.polygon([(cx - 7 * s, cy - 3 * s), (cx - 4 * s, cy - 8 * s), (cx + 5 * s, cy - 8 * s),
                          (cx + 8 * s, cy - 3 * s)], fill=colour)
            draw.polygon([(cx - 5 * s, cy - 3.5 * s), (cx - 3.5 * s, cy - 7 * s), (cx + 4 * s, cy - 7 * s),
                          (cx + 6 * s, cy - 3.5 * s)], fill=(170, 200, 230))
            _wheels(draw, rng, [cx - 7 * s, cx + 7 * s], cy + 4 * s, 3 * s)
        else:
            draw.rectangle([cx - 14 * s, cy - 11 * s, cx + 5 * s, cy + 4 * s], fill=_jitter(rng, (220, 220, 220), 35))
            draw.rectangle([cx + 5 * s, cy - 6 * s, cx + 13 * s, cy + 4 * s], fill=colour)
            draw.rectangle([cx + 7 * s, cy - 5 * s, cx + 12 * s, cy - 1 * s], fill=(170, 200, 230))
            _wheels(draw, rng, [cx - 10 * s, cx - 4 * s, cx + 9 * s], cy + 4 * s, 2.8 * s)
    elif name == "ship":
        _background(rng, draw, "water")
        hull = _jitter(rng, (60, 50, 50), 40)
        y = w * 0.55 + rng.uniform(-4, 4) * SCALE
        draw.polygon([(cx - 15 * s, y - 4 * s), (cx + 15 * s, y - 4 * s), (cx + 11 * s, y + 3 * s),
                      (cx - 12 * s, y + 3 * s)], fill=hull)
        draw.rectangle([cx - 7 * s, y - 10 * s, cx + 6 * s, y - 4 * s], fill=_jitter(rng, (235, 235, 235), 20))
        draw.rectangle([cx - 2 * s, y - 15 * s, cx + 1 * s, y - 10 * s], fill=_jitter(rng, (180, 60, 40), 40))
    elif name == "bird":
        _background(rng, draw, "sky" if rng.random() < 0.5 else "grass")
        colour = _jitter(rng, (130, 90, 50), 60)
        draw.ellipse([cx - 6 * s, cy - 4 * s, cx + 6 * s, cy + 4 * s], fill=colour)
        draw.ellipse([cx + 4 * s, cy - 7 * s, cx + 9 * s, cy - 2 * s], fill=colour)
        beak = [(cx + 9 * s, cy - 5 * s), (cx + 12 * s, cy - 4 * s), (cx + 9 * s, cy - 3 * s)]
        draw.polygon(beak, fill=(230, 180, 40))
        draw.polygon([(cx - 5 * s, cy), (cx - 11 * s, cy - 2 * s), (cx - 10 * s, cy + 2 * s)], fill=colour)
    elif name == "frog":
        _background(rng, draw, "ground")
        colour = _jitter(rng, (60, 150, 50), 35)
        draw.ellipse([cx - 12 * s, cy - 5 * s, cx + 12 * s, cy + 7 * s], fill=colour)
        for ex in (-5, 5):
            draw.ellipse([cx + (ex - 2.5) * s, cy - 8 * s, cx + (ex + 2.5) * s, cy - 3 * s], fill=colour)
            draw.ellipse([cx + (ex - 1) * s, cy - 7 * s, cx + (ex + 1) * s, cy - 5 * s], fill=(10, 10, 10))
        for ex in (-12, 12):
            draw.ellipse([cx + (ex - 4) * s, cy + 3 * s, cx + (ex + 4) * s, cy + 8 * s], fill=colour)
    else:  # four-legged animals
        grey = int(rng.integers(20, 230))
        fur = {
            "cat": [(200, 120, 50), (grey, grey, grey)],
            "dog": [(150, 100, 60), (230, 220, 200), (40, 30, 25)],
            "deer": [(150, 100, 55)],
            "horse": [(110, 65, 35), (30, 25, 20), (200, 190, 170)],
        }[name]
        colour = _jitter(rng, fur[int(rng.integers(len(fur)))], 25)
        if name == "cat":
            _background(rng, draw, "indoor")
            _quadruped(draw, rng, cx - 2 * s, cy + 2 * s, s, colour, {"body": (8, 4), "length": 7, "width": 1.5},
                       (1, 4, 2), 4, ears="pointed", tail=True)
        elif name == "dog":
            _background(rng, draw, "grass" if rng.random() < 0.6 else "indoor")
            _quadruped(draw, rng, cx - 2 * s, cy + 2 * s, s, colour, {"body": (9, 5), "length": 8, "width": 2},
                       (2, 4, 3), 4.5, ears="floppy", tail=True)
        elif name == "deer":
            _background(rng, draw, "grass")
            _quadruped(draw, rng, cx - 2 * s, cy + 1 * s, s, colour, {"body": (8, 4), "length": 12, "width": 1.2},
                       (2, 8, 2), 3, ears="pointed", antlers=rng.random() < 0.6)
        else:
            _background(rng, draw, "grass")
            _quadruped(draw, rng, cx - 2 * s, cy, s, colour, {"body": (11, 5), "length": 12, "width": 2},
                       (4, 7, 4), 3.5, tail=True)
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    arr = np.asarray(img.resize((32, 32), Image.BOX), dtype=np.float64)
    arr = arr + rng.normal(0, rng.uniform(4, 14), arr.shape) + rng.normal(0, 12, (1, 1, 3))
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def _split(seed: int, split: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(count) % 10
    labels = C.rng_for(seed, CODE, split, 1 << 20).permutation(labels).astype(np.uint8)
    images = np.stack([draw_object(C.rng_for(seed, CODE, split, k), int(d)) for k, d in enumerate(labels)])
    return images, labels


def generate(output_dir: str | Path, seed: int = 0, n_patients: int | None = None) -> Path:
    """``n_patients`` is the number of pictures (each its own "patient"); three quarters go to training, spread over
    the five training batch files."""
    from monai_adv.prepare import cifar10

    total = max(10, int(n_patients or DEFAULT_IMAGES))
    n_train = round(0.75 * total)
    output_dir = Path(output_dir)
    batches = output_dir / SOURCE_DIR / cifar10.BATCH_FOLDER
    images, labels = _split(seed, 0, n_train)
    for k, part in enumerate(np.array_split(np.arange(n_train), len(cifar10.TRAIN_BATCHES))):
        cifar10.write_cifar_binary(batches / cifar10.TRAIN_BATCHES[k], images[part], labels[part])
    images, labels = _split(seed, 1, total - n_train)
    cifar10.write_cifar_binary(batches / cifar10.TEST_BATCH, images, labels)
    cifar10.write_cifar_meta(batches / cifar10.META_FILE, CLASSES)
    path = cifar10.prepare(output_dir / SOURCE_DIR, output_dir, seed=seed)
    return C.relabel(path, NAME, seed)
