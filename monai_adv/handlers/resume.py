"""Handler that makes a training run resumable: the whole training state at the end of every epoch, restored at start.

A training run killed at any point (SIGKILL included) and started again with the same configuration continues after
the last completed epoch and ends with the same weights as a run that was never interrupted, because everything a
run's future depends on is saved, not only the network:

- the network, the optimizer (momentum buffers) and the learning-rate scheduler;
- the trainer's epoch and iteration counters and whether it was told to stop (early stopping);
- the early-stopping counter and best score, the best-checkpoint saver's record of what it kept (so a worse later
  epoch never overwrites the best checkpoint) and the validator's best metric;
- every random number generator the next epochs draw from: torch (CPU and CUDA), numpy, Python's ``random``, the
  data loader's generator when it has one, and the state of every random transform of the training data set
  (MONAI seeds each transform's own ``numpy.random.RandomState``).

The file holds tensors and plain containers only, so it is read with ``torch.load(..., weights_only=True)``, and it
is written to a temporary file, then renamed. A small JSON sidecar (``<name>.json``) says which epoch it holds.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from monai_adv.checkpoints import CheckpointError, read_checkpoint
from monai_adv.utils import atomic_torch_save, atomic_write_json

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["TrainingResume", "resume_epoch", "transform_random_states"]

FORMAT = 1


def transform_random_states(root: Any) -> list[np.random.RandomState]:
    """The ``numpy.random.RandomState`` of every MONAI ``Randomizable`` reachable from ``root`` (a data set, a
    ``Compose`` or a transform), each once, in a fixed order: the order of the objects' attributes and lists, which
    the same configuration always builds the same way."""
    from monai.transforms import Randomizable, Transform

    states: list[np.random.RandomState] = []
    seen: set[int] = set()

    def visit(obj: Any, depth: int) -> None:
        if depth > 12 or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, (list, tuple)):
            for item in obj:
                visit(item, depth + 1)
            return
        if isinstance(obj, dict):
            for item in obj.values():
                visit(item, depth + 1)
            return
        if isinstance(obj, Randomizable):
            state = getattr(obj, "R", None)
            if isinstance(state, np.random.RandomState) and id(state) not in seen:
                seen.add(id(state))
                states.append(state)
        if isinstance(obj, (Transform, Randomizable)):
            for value in vars(obj).values():
                visit(value, depth + 1)

    visit(getattr(root, "transform", root), 0)
    return states


def _numpy_state(state: tuple) -> dict[str, Any]:
    name, keys, pos, has_gauss, gauss = state
    return {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss)}


def _numpy_tuple(state: dict[str, Any]) -> tuple:
    keys = state["keys"].numpy().astype(np.uint32)
    return state["name"], keys, state["pos"], state["has_gauss"], state["gauss"]


def _python_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def _python_tuple(state: dict[str, Any]) -> tuple:
    return state["version"], tuple(int(v) for v in state["internal"].tolist()), state["gauss"]


class TrainingResume:
    """Save the training state after every ``interval`` epochs to ``path``; when ``path`` exists at the start of a
    run, restore it and continue after the epoch it holds.

    Attach it to a trainer after every other handler (in a bundle: ``$@resume.attach(@train#trainer)`` appended to
    ``initialize`` by a config after the others, as ``monai_adv/resources/resume_training.json`` does, so it also
    follows the handlers an overlay attaches in its ``initialize``), so that the state is saved after validation,
    early stopping and the best-checkpoint saver have seen the epoch, and restored after a ``CheckpointLoader`` that
    initialises the network (adversarial training starts from the clean model).

    Args:
        path: the resume file, e.g. ``<output_dir>/resume.pt``. In a distributed run every rank keeps its own
            (``resume.rank<r>.pt``): their data samplers and random states differ.
        lr_scheduler: the scheduler stepped by the run, if any.
        early_stop: the ``EarlyStopHandler`` (MONAI) or ignite ``EarlyStopping`` of the validator, if any.
        checkpoint_saver: the ``CheckpointSaver`` that keeps the best checkpoint, if any.
        validator: the evaluator run by ``ValidationHandler``, to keep its best metric, if any.
        extra_state: more objects with ``state_dict()`` and ``load_state_dict()`` to keep (``None`` entries are
            skipped), e.g. the validator's :class:`~monai_adv.handlers.CatastrophicOverfittingGuard`.
        interval: save every ``interval`` epochs (and always at the last one).
        name: logger name; ``None`` uses the engine's logger.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        lr_scheduler: Any = None,
        early_stop: Any = None,
        checkpoint_saver: Any = None,
        validator: Any = None,
        extra_state: Sequence[Any] | None = None,
        interval: int = 1,
        name: str | None = None,
    ) -> None:
        if interval < 1:
            raise ValueError(f"interval must be at least 1, got {interval}")
        self.path = Path(path)
        self.lr_scheduler = lr_scheduler
        self.early_stop = early_stop
        self.checkpoint_saver = checkpoint_saver
        self.validator = validator
        self.extra_state = [obj for obj in (extra_state or []) if obj is not None]
        self.interval = int(interval)
        self.logger = logging.getLogger(name) if name else None
        self.resumed_epoch: int | None = None

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        if self.logger is None:
            self.logger = engine.logger
        engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    # the file -------------------------------------------------------------------------------------------------------

    def rank_path(self) -> Path:
        """``path``, or ``<stem>.rank<r><suffix>`` in a distributed run."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return self.path.with_name(f"{self.path.stem}.rank{dist.get_rank()}{self.path.suffix}")
        return self.path

    def _early_stopping(self) -> Any:
        handler = getattr(self.early_stop, "_handler", self.early_stop)
        return handler if hasattr(handler, "state_dict") else None

    def _saver_checkpoint(self) -> Any:
        return getattr(self.checkpoint_saver, "_key_metric_checkpoint", None)

    def _random_states(self, engine: Engine) -> list[np.random.RandomState]:
        loader = getattr(engine, "data_loader", None)
        dataset = getattr(loader, "dataset", None)
        return transform_random_states(dataset) if dataset is not None else []

    def state(self, engine: Engine) -> dict[str, Any]:
        """Everything :meth:`restore` needs, as tensors and plain containers."""
        loader = getattr(engine, "data_loader", None)
        generator = getattr(loader, "generator", None)
        stopper, saver = self._early_stopping(), self._saver_checkpoint()
        state: dict[str, Any] = {
            "format": FORMAT,
            "engine": dict(engine.state_dict()),
            "terminated": bool(engine.should_terminate),
            "best_metric": getattr(engine.state, "best_metric", None),
            "best_metric_epoch": getattr(engine.state, "best_metric_epoch", None),
            "network": engine.network.state_dict(),
            "optimizer": engine.optimizer.state_dict(),
            "lr_scheduler": None if self.lr_scheduler is None else self.lr_scheduler.state_dict(),
            "early_stop": None if stopper is None else dict(stopper.state_dict()),
            "checkpoint_saver": None if saver is None else {"_saved": [(p, f) for p, f in saver._saved]},
            "validator": None,
            "extra_state": [obj.state_dict() for obj in self.extra_state],
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": _numpy_state(np.random.get_state()),
                "python": _python_state(),
                "loader": None if generator is None else generator.get_state(),
                "transforms": [_numpy_state(r.get_state()) for r in self._random_states(engine)],
            },
        }
        if self.validator is not None:
            state["validator"] = {
                "best_metric": getattr(self.validator.state, "best_metric", None),
                "best_metric_epoch": getattr(self.validator.state, "best_metric_epoch", None),
            }
        return state

    def save(self, engine: Engine) -> None:
        """At the end of an epoch: write the state (every ``interval`` epochs, at the last one, or when stopping)."""
        epoch = engine.state.epoch
        last = engine.should_terminate or (engine.state.max_epochs is not None and epoch >= engine.state.max_epochs)
        if epoch % self.interval and not last:
            return
        path = self.rank_path()
        state = self.state(engine)
        atomic_torch_save(path, state)
        atomic_write_json(path.with_suffix(".json"), {"epoch": epoch, "terminated": state["terminated"]})

    def load(self, engine: Engine) -> None:
        """At the start of a run: restore the state when the resume file exists."""
        path = self.rank_path()
        if not path.is_file():
            return
        try:
            state = read_checkpoint(path)
        except CheckpointError as error:
            raise CheckpointError(f"resume file {error}; delete it to train from the start") from error
        if state.get("format") != FORMAT:
            raise RuntimeError(f"resume file {path} has format {state.get('format')}, expected {FORMAT}")
        self.restore(engine, state, path)

    def restore(self, engine: Engine, state: dict[str, Any], source: os.PathLike | str = "state") -> None:
        """Put ``state`` (from :meth:`state`) back into the engine, its handlers and the random generators."""
        max_epochs = engine.state.max_epochs
        saved_epochs = state["engine"].get("max_epochs")
        if max_epochs is not None and saved_epochs is not None and saved_epochs != max_epochs:
            raise RuntimeError(f"resume file {source} is of a run of {saved_epochs} epochs, this run has {max_epochs}")
        engine.load_state_dict(state["engine"])
        engine.state.max_epochs = max_epochs
        for key in ("best_metric", "best_metric_epoch"):
            if state.get(key) is not None:
                setattr(engine.state, key, state[key])
        engine.network.load_state_dict(state["network"])
        engine.optimizer.load_state_dict(state["optimizer"])
        self._restore_handlers(state, source)
        self._restore_rng(engine, state["rng"], source)
        self.resumed_epoch = int(engine.state.epoch)
        self.logger.info(f"resumed training from {source} after epoch {self.resumed_epoch}")
        if state.get("terminated"):
            self.logger.info("the interrupted run had already stopped (early stopping): nothing left to train")
            engine.terminate()

    def _restore_handlers(self, state: dict[str, Any], source: os.PathLike | str) -> None:
        for key, target in (
            ("lr_scheduler", self.lr_scheduler), ("early_stop", self._early_stopping()),
            ("checkpoint_saver", self._saver_checkpoint()),
        ):
            saved = state.get(key)
            if (saved is None) != (target is None):
                raise RuntimeError(f"resume file {source}: {key} is {'absent' if saved is None else 'present'} in the "
                                   "file but not in this run (a different configuration)")
            if target is not None:
                target.load_state_dict(saved)
        extra = state.get("extra_state", [])
        if len(extra) != len(self.extra_state):
            raise RuntimeError(f"resume file {source} holds {len(extra)} extra states, this run has "
                               f"{len(self.extra_state)} (a different configuration)")
        for target, saved in zip(self.extra_state, extra):
            target.load_state_dict(saved)
        if self.validator is not None and state.get("validator"):
            for key, value in state["validator"].items():
                if value is not None:
                    setattr(self.validator.state, key, value)

    def _restore_rng(self, engine: Engine, rng: dict[str, Any], source: os.PathLike | str) -> None:
        transforms = self._random_states(engine)
        if len(transforms) != len(rng["transforms"]):
            raise RuntimeError(f"resume file {source} holds {len(rng['transforms'])} random transform states, this "
                               f"run's training data set has {len(transforms)} (a different configuration)")
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        np.random.set_state(_numpy_tuple(rng["numpy"]))
        random.setstate(_python_tuple(rng["python"]))
        generator = getattr(getattr(engine, "data_loader", None), "generator", None)
        if generator is not None and rng["loader"] is not None:
            generator.set_state(rng["loader"])
        for target, saved in zip(transforms, rng["transforms"]):
            target.set_state(_numpy_tuple(saved))


def resume_epoch(path: str | os.PathLike) -> int | None:
    """The epoch held by a resume file, from its JSON sidecar, or ``None`` when there is none."""
    import json

    sidecar = Path(path).with_suffix(".json")
    try:
        return int(json.loads(sidecar.read_text(encoding="utf-8"))["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None

