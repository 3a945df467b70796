"""What the study may delete: only what it wrote.

The study replaces or removes whole folders of its output: a stage's folder when the stage runs again
(``<bundle>/<stage>/``, ``compare_datasets/``, ``report/``, moved aside to ``.<name>.old`` while it is replaced) and a
stage's working folder (``.<stage>.partial``). It keeps a manifest (:data:`MANIFEST_NAME`) in each of them:

- in a working folder, written as soon as the folder is made, naming the stage: everything else in the folder is
  then written by the study or by the bundle run it started for that stage;
- in a published folder, rewritten just before the folder is renamed into place, listing every file in it.

A folder is the study's own when its manifest names the same stage and, for a published folder, lists every file in
it (a listed file edited by hand is still the study's: its stage is redone and replaces it); a working folder that
holds nothing but empty folders and the manifest's own temporary file (the study was stopped while making it) is the
study's too. Anything else in those places is foreign: a file not listed, a folder without a manifest, a symbolic
link, a plain file where a folder should be. :func:`foreign_files` finds it, so the study can stop and name it
instead of deleting it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from monai_adv.utils import atomic_write_json, temporary_file_pattern

__all__ = [
    "MANIFEST_NAME", "Kind", "start_working_folder", "write_manifest", "foreign_files", "files_in", "describe",
    "remove_stale_temporaries",
]

MANIFEST_NAME = ".study_manifest.json"
FORMAT = 1
Kind = Literal["published", "partial"]


_MANIFEST_TEMPORARY = temporary_file_pattern(MANIFEST_NAME)


def files_in(folder: Path) -> list[str]:
    """Every entry under ``folder`` that is not a real folder (files, symbolic links, anything else), as sorted
    POSIX paths relative to it; symbolic links to folders are listed, not followed.

    Raises:
        OSError: a folder under ``folder`` cannot be listed (its files could not be vouched for).
    """
    entries = []

    def fail(error: OSError) -> None:
        raise error

    for root, dirs, files in os.walk(folder, onerror=fail):
        here = Path(root)
        entries += [(here / name).relative_to(folder).as_posix() for name in files]
        entries += [(here / name).relative_to(folder).as_posix() for name in dirs if (here / name).is_symlink()]
    return sorted(entries)


def _read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST_NAME
    if path.is_symlink() or not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def start_working_folder(folder: Path, stage: str) -> None:
    """Make a stage's working folder (if missing) and mark it as the study's, for ``stage``."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(folder)
    if manifest is None or manifest.get("stage") != stage:
        atomic_write_json(folder / MANIFEST_NAME, {"format": FORMAT, "stage": stage, "kind": "partial"})


def write_manifest(folder: Path, stage: str) -> list[str]:
    """List every file in ``folder`` (a stage's finished working folder, about to be published) in its manifest;
    return the list."""
    files = [f for f in files_in(folder) if f != MANIFEST_NAME]
    atomic_write_json(folder / MANIFEST_NAME, {"format": FORMAT, "stage": stage, "kind": "published", "files": files})
    return files


def foreign_files(path: Path, kind: Kind, stage: str) -> list[Path]:
    """What at ``path`` the study did not write for ``stage``: empty when ``path`` does not exist or is the study's
    own (see the module's rules), else the foreign entries (``path`` itself when nothing in it can be trusted).

    Args:
        path: a stage's published folder (or that folder moved aside), or its working folder.
        kind: ``"published"`` or ``"partial"`` (a working folder).
        stage: the stage the folder belongs to.
    """
    if not path.exists() and not path.is_symlink():
        return []
    if path.is_symlink() or not path.is_dir():
        return [path]
    entries = files_in(path)
    manifest = _read_manifest(path)
    if manifest is None or manifest.get("stage") != stage:
        if kind == "partial" and all("/" not in e and _MANIFEST_TEMPORARY.fullmatch(e) for e in entries):
            return []  # made, and stopped before its manifest was in place
        return [path / e for e in entries]  # empty folders at most: nothing to lose
    if kind == "partial":
        return []
    listed = manifest.get("files")
    listed = set(listed) if isinstance(listed, list) else set()
    return [path / e for e in entries if e != MANIFEST_NAME and e not in listed]


def remove_stale_temporaries(folder: Path, names: Iterable[str]) -> list[Path]:
    """Remove the temporary files that :func:`monai_adv.utils.atomic_write` left in ``folder`` (not below it) for the
    files called ``names``, when a write was killed; return them. Only regular files whose name has exactly that
    pattern are removed. Call it only while no other writer can be using ``folder`` (the study holds its lock)."""
    patterns = [temporary_file_pattern(name) for name in names]
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        if any(p.fullmatch(entry.name) for p in patterns) and entry.is_file() and not entry.is_symlink():
            entry.unlink()
            removed.append(entry)
    return removed


def describe(paths: Iterable[Path], root: Path, limit: int = 10) -> str:
    """``paths`` relative to ``root`` (where possible), the first ``limit`` of them, for an error message."""
    shown = []
    paths = list(paths)
    for path in paths[:limit]:
        try:
            shown.append(str(path.relative_to(root)))
        except ValueError:
            shown.append(str(path))
    more = len(paths) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")
