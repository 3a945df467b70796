"""The study's memory: fingerprints of what a stage read and of what it wrote, kept in a ledger file per folder.

A stage counts as done when the ledger holds an entry for it whose input fingerprint equals the fingerprint of the
inputs it would read now (configuration files, overrides, data, upstream outputs, code and library versions) and
whose recorded outputs all exist with the recorded SHA-256. Anything else (a changed configuration, a different
checkpoint upstream, an output deleted or edited by hand, a ledger from an older run) makes the stage run again; the
fingerprints of the stages after it then change with its outputs, so they run again too.

The ledger (``study_state.json``) is replaced atomically (a temporary file, then a rename) after every stage.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from monai_adv.utils import atomic_write_json

__all__ = [
    "LEDGER_NAME", "Ledger", "sha256_file", "fingerprint", "code_digest", "data_digest", "folder_digest",
    "library_versions",
]

LEDGER_NAME = "study_state.json"
FORMAT = 1
_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_digest(folder: str | os.PathLike) -> str:
    """SHA-256 over every file under ``folder`` (relative paths and bytes, hidden files included, links followed):
    the data of a bundle whose data list the study cannot read, whatever its layout."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    digest = hashlib.sha256(b"folder\0")
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + sha256_file(path).encode())
    return digest.hexdigest()


def fingerprint(payload: Any) -> str:
    """SHA-256 of ``payload`` as canonical JSON (sorted keys), in hex."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def code_digest(root: str | os.PathLike, include: Iterable[str] = ("**/*.py", "resources/*.json"),
                exclude: Iterable[str] = ()) -> str:
    """SHA-256 over the source files of a package folder (relative paths and bytes), skipping ``exclude`` sub-folders.

    The study hashes ``monai_adv`` without its ``study/`` folder into every bundle stage's fingerprint, so a change to
    the attacks, engines or handlers reruns the stages, and a change to the report alone does not.
    """
    root = Path(root)
    skipped = tuple(Path(e) for e in exclude)
    files = sorted(
        {p for pattern in include for p in root.glob(pattern) if p.is_file() and "__pycache__" not in p.parts}
    )
    digest = hashlib.sha256()
    for path in files:
        relative = path.relative_to(root)
        if any(relative.parts[: len(s.parts)] == s.parts for s in skipped):
            continue
        digest.update(relative.as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def data_digest(datalist_file: str | os.PathLike) -> str:
    """SHA-256 over a data list and every image file it names (training and test), relative to its folder.

    A missing image is hashed as missing: the bundle itself then stops with a ``DataError`` naming the item.
    """
    datalist_file = Path(datalist_file)
    if not datalist_file.is_file():
        raise FileNotFoundError(f"data list not found: {datalist_file}")
    content = datalist_file.read_bytes()
    digest = hashlib.sha256(b"datalist\0" + content)
    try:
        datalist = json.loads(content)
    except ValueError as error:
        raise ValueError(f"{datalist_file}: not a JSON data list ({error})") from error
    images: list[str] = []
    for key in ("training", "validation", "test"):
        for item in datalist.get(key, []) if isinstance(datalist, dict) else []:
            image = item.get("image") if isinstance(item, dict) else None
            images.extend(image if isinstance(image, list) else [image] if isinstance(image, str) else [])
    for image in images:
        path = Path(image) if os.path.isabs(image) else datalist_file.parent / image
        digest.update(image.encode() + b"\0")
        digest.update(sha256_file(path).encode() if path.is_file() else b"missing")
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions that change numbers: Python, torch, MONAI, numpy."""
    import monai
    import numpy
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__,
            "numpy": numpy.__version__}


class Ledger:
    """The stage ledger of one folder (``<folder>/study_state.json``): per stage, the input fingerprint, the SHA-256
    of each output (paths relative to the folder) and a few facts (seconds taken, the study run that did it)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LEDGER_NAME
        self.data: dict[str, Any] = {"format": FORMAT, "stages": {}}
        if self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                loaded = None  # unreadable: every stage runs again
            if isinstance(loaded, dict) and loaded.get("format") == FORMAT and isinstance(loaded.get("stages"), dict):
                self.data = loaded

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        return self.data["stages"]

    def entry(self, stage: str) -> dict[str, Any] | None:
        return self.stages.get(stage)

    def is_done(self, stage: str, inputs: str) -> bool:
        """Whether ``stage`` is recorded with these inputs and its outputs are all there, unchanged."""
        entry = self.entry(stage)
        if not entry or entry.get("inputs") != inputs:
            return False
        for relative, expected in entry.get("outputs", {}).items():
            path = self.folder / relative
            if not path.is_file() or sha256_file(path) != expected:
                return False
        return True

    def record(self, stage: str, inputs: str, outputs: Iterable[str], **facts: Any) -> dict[str, Any]:
        """Record ``stage`` as done: hash ``outputs`` (paths relative to the folder) and write the ledger."""
        hashed = {}
        for relative in outputs:
            path = self.folder / relative
            if not path.is_file():
                raise FileNotFoundError(f"stage {stage}: expected output {path} is missing")
            hashed[relative] = sha256_file(path)
        entry = {"inputs": inputs, "outputs": hashed, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **facts}
        self.stages[stage] = entry
        self.save()
        return entry

    def forget(self, stage: str) -> None:
        """Drop ``stage`` (it is about to run again)."""
        if self.stages.pop(stage, None) is not None:
            self.save()

    def output_hashes(self, stage: str) -> Mapping[str, str]:
        entry = self.entry(stage)
        return dict(entry.get("outputs", {})) if entry else {}

    def save(self) -> None:
        atomic_write_json(self.path, self.data)
