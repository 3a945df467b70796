"""Handler that loads a checkpoint when an engine starts, weights-only and only into the architecture it fits."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torch import nn

from monai_adv.checkpoints import CheckpointError, ModelIdentity, load_network_state, read_checkpoint

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["StrictCheckpointLoad"]


class StrictCheckpointLoad:
    """Load ``load_path`` into the objects of ``load_dict`` when the engine starts (``Events.STARTED``).

    Used by every bundle in place of MONAI's ``CheckpointLoader``: the file is read with ``weights_only=True``
    (:func:`monai_adv.checkpoints.read_checkpoint`), and a network is loaded only after its keys and shapes are
    checked (:func:`monai_adv.checkpoints.load_network_state`), so a missing file, a file that is not a weights-only
    checkpoint, or a checkpoint of another architecture stops the run with one
    :class:`~monai_adv.checkpoints.CheckpointError` naming the file and what differs.

    Args:
        load_path: the checkpoint file.
        load_dict: ``{key: object}``; modules are loaded with the checks above, a
            :class:`~monai_adv.checkpoints.ModelIdentity` is compared with the one saved (another bundle, network or
            class list stops the run), other objects (an optimizer...) get their ``load_state_dict(checkpoint[key])``.
            With one module (and at most an identity), a bare state dict (what Ignite's ``CheckpointSaver`` writes
            for a one-object ``save_dict``) is accepted too.
        map_location: passed to ``torch.load``, e.g. the bundle's ``@device``. Default ``"cpu"``.
        name: logger name; ``None`` uses the engine's logger.
    """

    def __init__(
        self,
        load_path: str | os.PathLike,
        load_dict: Mapping[str, Any],
        map_location: Any = "cpu",
        name: str | None = None,
    ) -> None:
        if not load_dict:
            raise ValueError(f"StrictCheckpointLoad({load_path}): load_dict names nothing to load")
        self.load_path = load_path
        self.load_dict = dict(load_dict)
        self.map_location = map_location
        self.logger = logging.getLogger(name) if name else None

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        if self.logger is None:
            self.logger = engine.logger
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        """Read the file and load every object of ``load_dict``; ``engine`` is unused (Ignite passes it)."""
        checkpoint = read_checkpoint(self.load_path, map_location=self.map_location)
        single = sum(not isinstance(obj, ModelIdentity) for obj in self.load_dict.values()) == 1
        for obj in self.load_dict.values():  # the identity first: a wrong model is named as such, not by its shapes
            if isinstance(obj, ModelIdentity):
                obj.check(checkpoint, self.load_path)
        for key, obj in self.load_dict.items():
            if isinstance(obj, ModelIdentity):
                continue
            if isinstance(obj, nn.Module):
                if not single and not (isinstance(checkpoint, Mapping) and key in checkpoint):
                    raise CheckpointError(f"{self.load_path}: no '{key}' entry in the checkpoint")
                load_network_state(obj, self.load_path, key=key, checkpoint=checkpoint)
                continue
            if not (isinstance(checkpoint, Mapping) and key in checkpoint):
                raise CheckpointError(f"{self.load_path}: no '{key}' entry in the checkpoint")
            try:
                obj.load_state_dict(checkpoint[key])
            except (KeyError, ValueError, RuntimeError, TypeError) as e:
                raise CheckpointError(f"{self.load_path}: entry '{key}' does not fit {type(obj).__name__}: {e}") from e
        if self.logger is not None:
            self.logger.info(f"loaded {sorted(self.load_dict)} from {self.load_path}")
