"""Config overlays that add monai_adv's capabilities to a MONAI classification bundle.

Each overlay is appended after the bundle's own configs in ``--config_file`` (MONAI merges later files over earlier
ones; ``+key`` appends to a list). ``python -m monai_adv overlay <name>`` prints the files to append, comma-separated:
``common.json`` (the shared settings) and the overlay itself. The bundle must follow the model zoo's conventions:
``network``, ``device``, ``num_classes``, ``bundle_root``, ``output_dir``, ``ckpt_path``, ``validate#evaluator``,
``validate#preprocessing``, ``validate#handlers`` and, for adversarial training, ``train#trainer`` and
``train#handlers``; the README's "Any MONAI bundle" section lists every id an overlay reads and sets.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["OVERLAYS", "overlay_files", "overlay_argument", "check_clean_model_kept", "OverlayError"]

HERE = Path(__file__).resolve().parent
COMMON = HERE / "common.json"
OVERLAYS: dict[str, str] = {
    "attack_sweep": "every attack at every eps on the evaluator's data (Table 1, Figures 1-2); on train + evaluate",
    "adversarial_train": "PGD adversarial training from the clean model (Table S4); on train",
    "compare": "the sweep on the clean and the adversarially trained model (Table S5, Figure 3); on train + evaluate",
    "triage": "per-image minimal flipping eps, the most sensitive fraction flagged (Table 2); on train + evaluate",
    "referral": "inference with the sensitivity bracket and a refer flag from a triage run; on inference",
}


class OverlayError(ValueError):
    """An overlay cannot be applied to this bundle as configured."""


def overlay_files(name: str) -> list[Path]:
    """The package config files of overlay ``name``, in ``--config_file`` order (``common.json`` first)."""
    if name not in OVERLAYS:
        raise OverlayError(f"no overlay {name!r}; choose one of {', '.join(OVERLAYS)}")
    return [COMMON, HERE / f"{name}.json"]


def overlay_argument(name: str) -> str:
    """``overlay_files(name)`` as one comma-separated string, to append to ``--config_file``."""
    return ",".join(str(f) for f in overlay_files(name))


def _saved_file(handler: Any) -> str | None:
    """Where a checkpoint saver writes its key-metric model, for MONAI's ``CheckpointSaver`` and ours."""
    save_dir = getattr(handler, "save_dir", None)
    filename = getattr(handler, "key_metric_filename", None)
    if save_dir is None or not filename:
        return None
    return os.path.abspath(os.path.join(save_dir, filename))


def check_clean_model_kept(init_ckpt: str, ckpt_path: str, handlers: Iterable[Any]) -> None:
    """Stop adversarial training before it starts when it would overwrite the clean model it starts from.

    Raises:
        OverlayError: ``ckpt_path`` (where the adversarially trained model goes) is ``init_ckpt``, or a checkpoint
            saver among ``handlers`` writes ``init_ckpt`` (a saver whose file does not follow ``ckpt_path``).
    """
    clean = os.path.abspath(init_ckpt)
    if os.path.abspath(ckpt_path) == clean:
        raise OverlayError(
            f"adversarial training would overwrite the clean model {init_ckpt}: set robust_ckpt_path to another file"
        )
    for handler in handlers:
        if handler is not None and _saved_file(handler) == clean:
            raise OverlayError(
                f"{type(handler).__name__} in the bundle's handlers saves to {init_ckpt}, the clean model adversarial "
                "training starts from: let it save to @ckpt_path (save_dir: $os.path.dirname(@ckpt_path), "
                "key_metric_filename: $os.path.basename(@ckpt_path)), which the overlay points at robust_ckpt_path"
            )
