"""Embedded demo data: small, deterministic, synthetic data sets in the real file formats, so that every bundle runs
end to end on a fresh machine with no download.

=============================== ======= ========================= ============================================
name                            classes files                     what the classes look like
=============================== ======= ========================= ============================================
``lung_nodule_ct``              2       DICOM CT (HU + 1024)      :mod:`monai_adv.demo.lung_ct`
``breast_lesion_mammography``   2       DICOM MG (12 bit)         :mod:`monai_adv.demo.mammography`
``brain_lesion_mri``            2       2-D NIfTI ``.nii.gz``     :mod:`monai_adv.demo.brain_mri`
``mnist_digit``                 10      MNIST IDX -> prepare      :mod:`monai_adv.demo.mnist_digit`
``cifar10_object``              10      CIFAR-10 binary -> prep.  :mod:`monai_adv.demo.cifar10_object`
=============================== ======= ========================= ============================================

The medical sets hold about two crops per patient (1-3 crops each, all crops of a patient in one class, the two
classes with exactly as many crops; 210 patients, about 420 crops, for mammography and MRI, 300 patients, about 600
crops, for CT), split 2:1 by patient with :func:`monai_adv.datalist.split_by_patient`. Their class features are drawn
from a hidden score whose class distributions overlap, so a classifier cannot be perfect. The CT set's only class cue
is a fine internal texture of a few tens of HU (see :mod:`monai_adv.demo.lung_ct`), so its models are fragile, as the
paper's; the mammography and MRI sets still differ by large-scale features (size, brightness, margins) from the
hidden score. The demo training recipe (32x32 inputs, width-0.125 VGG16) reaches about 0.8-0.95 test accuracy. The DICOM headers carry FAKE patient identifiers
(``DEMO-CT-0007``, ``Demo^Patient7``, ``19700101``); only their pseudonyms (:func:`monai_adv.datalist.pseudonymise`)
reach data lists and file names. MNIST and CIFAR-10 demos hold 600 training and 200 test images written in the
publishers' formats and converted by :mod:`monai_adv.prepare`.

Data lists carry the usual keys (``name``, ``modality``, ``native_units``, ``classes``, ``training``, ``test``) plus
``demo: true``, ``demo_version`` and ``seed``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from monai_adv.demo import _common

__all__ = ["DEMO_DATASETS", "generate_demo_data", "ensure_demo_data", "default_cache_dir"]

DEMO_DATASETS: tuple[str, ...] = (
    "lung_nodule_ct",
    "breast_lesion_mammography",
    "brain_lesion_mri",
    "mnist_digit",
    "cifar10_object",
)
_MODULES = {
    "lung_nodule_ct": "lung_ct",
    "breast_lesion_mammography": "mammography",
    "brain_lesion_mri": "brain_mri",
    "mnist_digit": "mnist_digit",
    "cifar10_object": "cifar10_object",
}
ENV_CACHE_DIR = "MONAI_ADV_DEMO_DIR"
_PARTIAL = ".partial"
_STALE_SECONDS = 3600


def _module(name: str):
    import importlib

    if name not in _MODULES:
        raise ValueError(f"unknown demo data set {name!r}; choose one of {', '.join(DEMO_DATASETS)}")
    return importlib.import_module(f"monai_adv.demo.{_MODULES[name]}")


def generate_demo_data(name: str, output_dir: str | Path, seed: int = 0, n_patients: int | None = None) -> Path:
    """Write demo data set ``name`` into ``output_dir`` and return the path of its data list JSON.

    Args:
        name: one of :data:`DEMO_DATASETS`.
        output_dir: folder to write ``datalist.json`` and ``images/`` into (created; existing files are overwritten).
        seed: the same seed gives the same files, byte for byte; another seed gives another data set.
        n_patients: number of patients of a medical set (rounded up to even; default 210, about 420 crops), or the
            number of images of the MNIST/CIFAR-10 sets (default 800; three quarters for training).

    This call is not atomic; :func:`ensure_demo_data` is.
    """
    module = _module(name)
    if n_patients is not None and int(n_patients) < 2:
        raise ValueError(f"n_patients must be at least 2, got {n_patients}")
    return Path(module.generate(Path(output_dir), seed=int(seed), n_patients=n_patients))


def default_cache_dir() -> Path:
    """``$MONAI_ADV_DEMO_DIR`` if set, else ``~/.cache/monai_adv/demo``."""
    env = os.environ.get(ENV_CACHE_DIR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "monai_adv" / "demo"


def _is_complete(datalist: Path) -> bool:
    import json

    try:
        content = json.loads(datalist.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return content.get("demo_version") == _common.DEMO_VERSION


def _remove_stale_partials(root: Path, prefix: str) -> None:
    """Remove temporary folders of killed runs (older than an hour, so a generation still running is left alone)."""
    now = time.time()
    for entry in root.glob(f".{prefix}.*{_PARTIAL}"):
        try:
            if now - entry.stat().st_mtime > _STALE_SECONDS:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass


def ensure_demo_data(name: str, cache_dir: str | Path | None = None, seed: int = 0) -> str:
    """The data list path of demo set ``name``, generated on first use into ``<cache_dir>/<name>-seed<seed>``.

    ``cache_dir`` defaults to :func:`default_cache_dir`. Generation writes into a temporary sibling folder that is
    renamed into place once complete, so an interrupted run never leaves a folder that looks complete; when two
    processes race, the first rename wins and the other discards its copy. A cached set written by another version of
    the generators is replaced. Later calls only check that the data list exists.
    """
    _module(name)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder_name = f"{name}-seed{int(seed)}"
    final = root / folder_name
    datalist = final / "datalist.json"
    if _is_complete(datalist):
        return str(datalist)
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(root, folder_name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder_name}.", suffix=_PARTIAL, dir=root))
    try:
        generate_demo_data(name, tmp, seed=seed)
        _move_into_place(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if not _is_complete(datalist):
        raise RuntimeError(f"demo data set {name} could not be placed at {final}")
    return str(datalist)


def _move_into_place(tmp: Path, final: Path) -> None:
    try:
        os.rename(tmp, final)  # atomic; fails when ``final`` exists and is not empty
        return
    except OSError:
        if _is_complete(final / "datalist.json"):
            return  # another process finished first: keep its copy, ours is removed by the caller
    # ``final`` holds something else (an older generator version, or a folder put there by hand): move it aside
    aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
    try:
        os.rename(final, aside / final.name)
    except FileNotFoundError:
        pass
    try:
        os.rename(tmp, final)
    except OSError:
        if not _is_complete(final / "datalist.json"):
            raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)
