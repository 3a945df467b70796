"""Small shared helpers: atomic file writes with the user's normal permissions, strict JSON, writable folders.

Every output the project writes goes through :func:`atomic_write`: the content is written to a temporary file beside
the target and renamed onto it, so a crash, a full disk or a kill leaves the previous file (or nothing), never a
truncated one. The file gets the permissions a plain ``open(path, "w")`` would give it (``0o666 & ~umask``).
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monai_adv.io import DataError

__all__ = [
    "WRITE_ERRNOS",
    "WriteError",
    "OutputDirError",
    "atomic_write",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_torch_save",
    "finite_or_none",
    "ensure_writable_dir",
    "temporary_file_pattern",
]

WRITE_ERRNOS = frozenset(
    code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EROFS, errno.EACCES, errno.EPERM,
                      errno.EFBIG) if code is not None
)
"""Error numbers that mean "this file cannot be written here" (full disk or quota, read-only file system, no
permission, file too large): :func:`atomic_write` re-raises them as :class:`WriteError` naming the output."""


class WriteError(OSError):
    """An output file could not be written. ``errno`` and ``strerror`` are those of the underlying :class:`OSError`
    (its ``__cause__``); ``filename`` is the output's final path (not the temporary file's)."""


class OutputDirError(DataError):
    """An output folder setting names a folder that cannot be created or written; the message names the setting,
    the folder and the reason. A :class:`~monai_adv.io.DataError`, so a failed bundle run prints it as its last
    line (:mod:`monai_adv.bundle_errors`)."""


_TOKEN_BYTES = 6  # the random part of a temporary name: 12 hex digits


def _temporary_name(name: str, token: str) -> str:
    return f".{name}.{token}.tmp{''.join(Path(name).suffixes)}"


def temporary_file_pattern(name: str) -> re.Pattern[str]:
    """The names :func:`atomic_write` gives its temporary files for a file called ``name``
    (``.<name>.<12 hex digits>.tmp<name's suffixes>``): what a write killed midway leaves behind."""
    return re.compile(re.escape(_temporary_name(name, "@")).replace("@", f"[0-9a-f]{{{2 * _TOKEN_BYTES}}}"))


def _create_temp(path: Path) -> Path:
    """Create an empty, new temporary file beside ``path`` and return its name.

    The file is created with ``os.open(..., O_CREAT | O_EXCL, 0o666)``, exactly as ``open(path, "w")`` creates a
    file, so the kernel applies the umask (and a folder's default ACL): unlike :func:`tempfile.mkstemp` (always
    ``0o600``), the output ends up with the user's normal permissions. The name keeps ``path``'s suffixes so writers
    that pick a format from the extension still work.
    """
    for _ in range(100):
        tmp = path.parent / _temporary_name(path.name, secrets.token_hex(_TOKEN_BYTES))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", str(path.parent))


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it onto ``path``; return ``path``.

    - A crash or an exception in ``write`` leaves ``path`` untouched (either the old file or nothing), never
      half-written, and removes the temporary file.
    - The file gets the user's normal permissions, ``0o666 & ~umask``, as a plain ``open()`` would give it (also when
      it replaces a file of other permissions); ``write`` must write into the existing temporary file (open it with
      ``"w"``/``"wb"``), not delete and recreate it.
    - The temporary name keeps ``path``'s suffixes so writers that pick a format from the extension still work.
    - The folder is created when missing.

    Raises:
        WriteError: when the folder, the temporary file or the rename fails, or ``write`` raises, with an
            :class:`OSError` of :data:`WRITE_ERRNOS` (full disk, read-only file system, no permission...); its
            ``filename`` is ``path`` and its ``__cause__`` the original error. Other exceptions propagate unchanged.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_temp(path)
        write(str(tmp))
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.lexists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and not isinstance(e, WriteError) and e.errno in WRITE_ERRNOS:
            raise WriteError(e.errno, e.strerror or os.strerror(e.errno), str(path)) from e
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write ``payload`` as indented, strict JSON (RFC 8259) to ``path`` atomically (:func:`atomic_write`).

    ``NaN`` and ``±Infinity`` are not JSON: a payload holding one is refused (nothing is written), so every reader,
    however strict, can parse what the project writes. Writers decide what a non-finite number means and store that
    instead, usually ``null`` (:func:`finite_or_none`), and document it.

    Raises:
        ValueError: naming ``path``, when ``payload`` holds a non-finite float.
    """
    try:
        text = json.dumps(payload, indent=2, allow_nan=False)
    except ValueError as e:
        raise ValueError(
            f"{path}: refusing to write non-finite numbers (NaN, Infinity) into JSON: {e}; "
            "convert them at the source, e.g. with monai_adv.utils.finite_or_none"
        ) from e
    return atomic_write_text(path, text + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (:func:`atomic_write`), through a Python file object.

    Saving to a file object rather than a file name makes a full disk surface as ``OSError(ENOSPC)`` (a
    :class:`WriteError` naming ``path``) rather than torch's ``RuntimeError: ... unexpected pos``.
    """
    import torch

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)

    return atomic_write(path, write)


def finite_or_none(value: float | None) -> float | None:
    """``float(value)`` when it is a finite number, ``None`` for ``None``, ``NaN`` and ``±inf``: how JSON outputs
    store a number that is undefined (``NaN``) or unbounded (``inf``) in memory."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def ensure_writable_dir(path: str | os.PathLike, setting: str = "output_dir") -> Path:
    """Create the folder ``path`` if needed and prove it writable (create and remove a temporary file); return it.

    Meant for the start of a run (a bundle config's ``initialize``), so that an output folder that cannot be
    written stops the run before any work rather than after the evaluation.

    Args:
        path: the folder.
        setting: the name of the config setting that gave ``path``, for the message.

    Raises:
        OutputDirError: naming ``setting``, ``path`` and the reason, when the folder cannot be created (a parent is a
            file, no permission, read-only file system...), ``path`` is not a folder, or a file cannot be created
            in it.
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as e:  # a file (or a dangling link) of that name
        raise OutputDirError(f"{setting} = {folder}: exists and is not a folder") from e
    except OSError as e:
        reason = e.strerror or str(e)
        where = f" ({e.filename})" if e.filename and str(e.filename) != str(folder) else ""
        raise OutputDirError(f"{setting} = {folder}: cannot create the folder: {reason}{where}") from e
    if not folder.is_dir():
        raise OutputDirError(f"{setting} = {folder}: exists and is not a folder")
    try:
        probe = _create_temp(folder / ".write-test")
        os.remove(probe)
    except OSError as e:
        raise OutputDirError(f"{setting} = {folder}: cannot write in the folder: {e.strerror or e}") from e
    return folder
