"""MONAI's ``CheckpointSaver`` with atomic writes: a full disk or a kill during a save never truncates a checkpoint."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ignite.handlers import DiskSaver
from monai.handlers import CheckpointSaver

from monai_adv.utils import atomic_torch_save

__all__ = ["AtomicCheckpointSaver", "AtomicDiskSaver"]


class AtomicDiskSaver(DiskSaver):
    """Ignite ``DiskSaver`` that writes every checkpoint atomically and removes old ones only after a good save.

    - A save goes to a temporary file beside the target, renamed onto it when complete
      (:func:`monai_adv.utils.atomic_torch_save`): a failed or interrupted save leaves the previous file at the
      target (or nothing), never a truncated one, and no temporary file; a full disk raises
      :class:`~monai_adv.utils.WriteError` naming the target.
    - The file gets the user's normal permissions (``0o666 & ~umask``), as MONAI's non-atomic saver gives it.
    - Ignite's ``Checkpoint`` removes the file it is replacing *before* saving the new one, and MONAI's
      ``CheckpointSaver`` removes the previous final checkpoint first too. Here :meth:`remove` only records the file;
      it is deleted after the next save succeeds, unless that save wrote the same file (a fixed ``filename``, as
      ``key_metric_filename``), which the rename already replaced. So a failing save never costs the previous
      checkpoint.

    Args:
        dirname: folder of the checkpoints (created when missing).
        filename: a fixed file name used for every save and removal instead of Ignite's (MONAI's ``final_filename``
            / ``key_metric_filename``); ``None`` keeps Ignite's names.
        save_on_rank: the rank that writes (with ``torch.save``; Ignite's ``xm.save`` path for TPUs is not used).
    """

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None, save_on_rank: int = 0) -> None:
        # atomic=False: the atomic write is done here (Ignite's atomic mode writes the file with mode 0600)
        super().__init__(dirname=dirname, atomic=False, require_empty=False, save_on_rank=save_on_rank)
        self.filename = filename
        self._pending_removal: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        """Save ``checkpoint`` (a mapping of state dicts) as ``filename`` (or the fixed one), then delete the files
        :meth:`remove` recorded, except the one just written."""
        import ignite.distributed as idist

        if idist.get_rank() != self.save_on_rank:
            return
        name = self.filename or filename
        atomic_torch_save(self.dirname / name, checkpoint)
        pending, self._pending_removal = self._pending_removal, []
        for old in dict.fromkeys(pending):
            if old != name:
                (self.dirname / old).unlink(missing_ok=True)

    def remove(self, filename: str) -> None:
        """Record ``filename`` (or the fixed one) for deletion after the next successful save."""
        import ignite.distributed as idist

        if idist.get_rank() == self.save_on_rank:
            self._pending_removal.append(self.filename or filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """``monai.handlers.CheckpointSaver`` (same arguments, events and file names) whose saves are atomic.

    Every ``Checkpoint`` MONAI builds (final, key metric, interval) writes through an :class:`AtomicDiskSaver`: the
    checkpoint is written to a temporary file beside the target and renamed onto it, with the user's normal
    permissions; when a save fails (full disk, kill), the previous checkpoint stays in place, complete, and no
    temporary file is left. Files hold what MONAI's saver writes (state dicts: loadable with
    ``torch.load(weights_only=True)``).

    Args:
        save_dir, save_dict, name, file_prefix, save_final, final_filename, save_key_metric, key_metric_name,
        key_metric_n_saved, key_metric_filename, key_metric_save_state, key_metric_greater_or_equal,
        key_metric_negative_sign, epoch_level, save_interval, n_saved: as ``monai.handlers.CheckpointSaver``.
    """

    def __init__(self, save_dir: str, save_dict: dict, *args: Any, **kwargs: Any) -> None:
        super().__init__(save_dir, save_dict, *args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is None:
                continue
            handler = checkpoint.save_handler
            if not isinstance(handler, DiskSaver):  # MONAI builds them all with its DiskSaver subclass
                raise TypeError(f"unexpected save handler {type(handler).__name__} in MONAI's CheckpointSaver")
            checkpoint.save_handler = AtomicDiskSaver(
                handler.dirname, filename=getattr(handler, "filename", None), save_on_rank=handler.save_on_rank
            )
