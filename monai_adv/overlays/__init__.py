"""Config overlays that add monai_adv's capabilities to a MONAI classification bundle.

Each overlay is appended after the bundle's own configs in ``--config_file`` (MONAI merges later files over earlier
ones; ``+key`` appends to a list). ``python -m monai_adv overlay <name> <bundle configs...>`` prints the whole list for
``--config_file``: the bundle's configs, then ``common.json`` (the shared settings) and the overlay itself. The bundle must follow the model zoo's conventions:
``network``, ``device``, ``num_classes``, ``bundle_root``, ``output_dir``, ``ckpt_path`` and its engines, by default
``validate#evaluator`` and ``train#trainer`` (the ids ``adv_evaluator`` and ``adv_trainer`` say otherwise); the
README's "Any MONAI bundle" section lists every id an overlay reads and sets.
"""

from __future__ import annotations

import json
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
    "compare": "the sweep on the clean and the adversarially trained model (Table S5, Figure 3); on train + evaluate "
               "(compare#original_only and compare#original_report split it into two runs; compare#reuse_sweep takes "
               "an identical earlier sweep of the original model)",
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


def overlay_argument(name: str, bundle_configs: Iterable[str] = (), then: Iterable[str] = ()) -> str:
    """The ``--config_file`` value of ``monai.bundle run``: ``bundle_configs``, ``overlay_files(name)``, then
    ``then`` (settings merged over the overlay), as a JSON list (MONAI's command line reads a list literal; it does
    not split a comma-separated string)."""
    return json.dumps([*map(str, bundle_configs), *map(str, overlay_files(name)), *map(str, then)])


def _fixed_files(handler: Any) -> list[str]:
    """The fixed files a checkpoint saver (MONAI's ``CheckpointSaver`` or ours) writes: its final and key-metric
    checkpoints with a set file name (Ignite's generated names never equal a given path)."""
    save_dir = getattr(handler, "save_dir", None)
    if save_dir is None:
        return []
    files = []
    for name in ("_final_checkpoint", "_key_metric_checkpoint", "_interval_checkpoint"):
        saver = getattr(getattr(handler, name, None), "save_handler", None)
        filename = getattr(saver, "filename", None)
        if filename:
            files.append(os.path.abspath(os.path.join(getattr(saver, "dirname", save_dir), filename)))
    return files


def _attached_handlers(engine: Any) -> list[Any]:
    """The handler objects attached to an Ignite engine (the owners of its bound event methods)."""
    found = []
    for entries in getattr(engine, "_event_handlers", {}).values():
        for entry in entries:
            owner = getattr(entry[0], "__self__", entry[0])
            if owner not in found:
                found.append(owner)
    return found


def check_clean_model_kept(init_ckpt: str, ckpt_path: str, engines: Iterable[Any]) -> None:
    """Stop adversarial training before it starts when it would overwrite the clean model it starts from.

    Args:
        init_ckpt: the clean model (``adv_init_ckpt``).
        ckpt_path: where the adversarially trained model goes (the overlay sets it to ``robust_ckpt_path``).
        engines: the trainer and validator, whose attached checkpoint savers are checked.

    Raises:
        OverlayError: ``ckpt_path`` is ``init_ckpt``, or a saver attached to an engine writes ``init_ckpt`` (a
            saver whose file does not follow ``ckpt_path``).
    """
    clean = os.path.abspath(init_ckpt)
    if os.path.abspath(ckpt_path) == clean:
        raise OverlayError(
            f"adversarial training would overwrite the clean model {init_ckpt}: set robust_ckpt_path to another file"
        )
    for engine in engines:
        for handler in _attached_handlers(engine):
            if clean in _fixed_files(handler):
                raise OverlayError(
                    f"{type(handler).__name__} of the bundle's {type(engine).__name__} saves to {init_ckpt}, the "
                    "clean model adversarial training starts from: let it save to @ckpt_path (save_dir: "
                    "$os.path.dirname(@ckpt_path), key_metric_filename: $os.path.basename(@ckpt_path)), which the "
                    "overlay points at robust_ckpt_path"
                )
