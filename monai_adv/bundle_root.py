"""The default ``bundle_root`` of our bundles: the working directory, but only when it is the bundle itself.

Model-zoo bundles set ``bundle_root`` to ``"."`` and are run from inside the bundle; their outputs
(``output_dir``, ``ckpt_path``) live under it. Run from anywhere else, ``"."`` silently puts every bundle's
checkpoint and outputs in the same ``./models`` and ``./eval``, where one bundle reads another's model. So our
configs ask :func:`working_bundle_root`, which returns ``"."`` inside the bundle and otherwise stops with an error
saying which setting to pass.
"""

from __future__ import annotations

import os
from pathlib import Path

from monai_adv.io import DataError

__all__ = ["working_bundle_root", "BundleRootError"]


class BundleRootError(DataError):
    """``bundle_root`` was not given and the working directory is not the bundle."""


def working_bundle_root(bundle_name: str, cwd: str | os.PathLike | None = None) -> str:
    """``"."`` when the working directory (``cwd``, default the process's) is the bundle ``bundle_name``: a folder of
    that name holding ``configs/metadata.json``. Otherwise :class:`BundleRootError`, which names ``bundle_root``
    (a renamed copy of a bundle runs with ``--bundle_root .``)."""
    here = Path(cwd or os.getcwd()).resolve()
    metadata = here / "configs" / "metadata.json"
    if here.name == bundle_name and metadata.is_file():
        return "."
    where = "another bundle or a renamed copy" if metadata.is_file() else "not a bundle folder"
    raise BundleRootError(
        f"bundle_root is not set and the working directory {here} is {where}, not the {bundle_name} bundle: run from "
        f"inside the bundle (cd into it), or pass --bundle_root <the {bundle_name} folder> (--bundle_root . for a "
        "renamed copy); outputs and checkpoints go under it, so two bundles never share them"
    )
