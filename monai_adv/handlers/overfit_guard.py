"""Handler that stops and/or rolls back adversarial training when robust validation accuracy collapses."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim import Optimizer

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["CatastrophicOverfittingGuard"]


class CatastrophicOverfittingGuard:
    """Watch robust (PGD) validation accuracy and stop training and/or roll the network back when it collapses.

    Fast adversarial training (FGSM-RS) can "catastrophically overfit": within an epoch or two PGD accuracy falls to
    about 0 while FGSM accuracy rises (Wong et al., ICLR 2020, section 5). Attach the guard to the validation
    evaluator that measures PGD accuracy (a :class:`monai_adv.engines.AdversarialEvaluator`); it runs on that
    evaluator's ``EPOCH_COMPLETED``, after the metrics are computed. Bundle configs reference it as
    ``monai_adv.handlers.CatastrophicOverfittingGuard``.

    Rule, with ``value`` the metric of this validation round and ``best`` the highest earlier value:

    * ``value > best``: new best; the network's (and, if given, the optimizer's) state is copied to CPU memory;
    * collapse if ``best - value > max_drop`` or, when ``floor`` is set, ``value < floor <= best`` (below the floor
      after having reached it);
    * on collapse: ``rollback`` loads the best state back into the network (and optimizer); ``stop`` terminates the
      trainer after its current epoch. Without ``stop`` training goes on from the restored state.

    Args:
        trainer: the trainer to stop; may be set later with :meth:`set_trainer` (bundle configs must, since the
            trainer references the evaluator). Needed only when ``stop``.
        metric_name: name in ``engine.state.metrics``; ``None`` (default) uses the evaluator's key metric.
        max_drop: largest tolerated fall below the best value, in metric units (default 0.2: 20 accuracy points).
        floor: optional absolute floor of the metric (e.g. 0.05).
        rollback: restore the best state on collapse (default True).
        stop: terminate the trainer on collapse (default True).
        network: module to snapshot and restore; default the evaluator's ``network``.
        optimizer: optional optimizer whose state (momentum buffers, ...) is snapshot and restored too.
        name: logger name; ``None`` uses the engine's logger.
        enabled: ``False`` makes :meth:`attach` a no-op (a config switch, e.g. on only for FGSM-RS training).

    Attributes after a run: ``best_metric``, ``best_epoch``, ``collapse_epochs`` (validation epochs judged as
    collapses), ``history`` (list of ``(epoch, value)``).
    """

    def __init__(
        self,
        trainer: Engine | None = None,
        metric_name: str | None = None,
        max_drop: float = 0.2,
        floor: float | None = None,
        rollback: bool = True,
        stop: bool = True,
        network: nn.Module | None = None,
        optimizer: Optimizer | None = None,
        name: str | None = None,
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        if max_drop < 0:
            raise ValueError(f"max_drop must be >= 0, got {max_drop}")
        self.trainer = trainer
        self.metric_name = metric_name
        self.max_drop = float(max_drop)
        self.floor = None if floor is None else float(floor)
        self.rollback = rollback
        self.stop = stop
        self.network = network
        self.optimizer = optimizer
        self.logger = logging.getLogger(name) if name is not None else None
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.collapse_epochs: list[int] = []
        self.history: list[tuple[int, float]] = []
        self._best_network_state: dict | None = None
        self._best_optimizer_state: dict | None = None

    def set_trainer(self, trainer: Engine) -> None:
        """Set the trainer to terminate on collapse."""
        self.trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        """What the guard remembers (best value and epoch, collapses, history, the best state to roll back to), as
        tensors and plain containers, so that a resumed training run (:class:`monai_adv.handlers.TrainingResume`)
        guards exactly as the uninterrupted one."""
        return {
            "best_metric": self.best_metric, "best_epoch": self.best_epoch,
            "collapse_epochs": list(self.collapse_epochs), "history": [list(h) for h in self.history],
            "best_network_state": self._best_network_state, "best_optimizer_state": self._best_optimizer_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.best_metric, self.best_epoch = state["best_metric"], state["best_epoch"]
        self.collapse_epochs = list(state["collapse_epochs"])
        self.history = [(int(e), float(v)) for e, v in state["history"]]
        self._best_network_state = state["best_network_state"]
        self._best_optimizer_state = state["best_optimizer_state"]

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        if not self.enabled:
            return
        if self.logger is None:
            self.logger = engine.logger
        if not engine.has_event_handler(self, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def is_collapse(self, value: float) -> bool:
        """Whether ``value`` is a collapse relative to the best value so far (see the class doc)."""
        if self.best_metric is None:
            return False
        if self.best_metric - value > self.max_drop:
            return True
        return self.floor is not None and value < self.floor <= self.best_metric

    def __call__(self, engine: Engine) -> None:
        name = self.metric_name or engine.state.key_metric_name
        if name is None or name not in engine.state.metrics:
            raise KeyError(f"metric {name!r} not found in engine.state.metrics ({sorted(engine.state.metrics)})")
        value = float(engine.state.metrics[name])
        epoch = int(engine.state.epoch)
        self.history.append((epoch, value))
        network = self.network if self.network is not None else engine.network
        if self.best_metric is None or value > self.best_metric:
            self.best_metric, self.best_epoch = value, epoch
            self._best_network_state = _cpu_copy(network.state_dict())
            if self.optimizer is not None:
                self._best_optimizer_state = _cpu_copy(self.optimizer.state_dict())
            return
        if not self.is_collapse(value):
            return
        self.collapse_epochs.append(epoch)
        logger = self.logger or logging.getLogger(__name__)
        logger.warning(
            f"catastrophic overfitting at epoch {epoch}: {name} = {value:.4f}, best {self.best_metric:.4f} "
            f"(epoch {self.best_epoch}); {'rolling back to the best state' if self.rollback else 'no rollback'}"
            f"{', stopping training' if self.stop else ''}"
        )
        if self.rollback:
            network.load_state_dict(self._best_network_state)
            if self.optimizer is not None and self._best_optimizer_state is not None:
                self.optimizer.load_state_dict(self._best_optimizer_state)
        if self.stop:
            if self.trainer is None:
                raise RuntimeError("CatastrophicOverfittingGuard(stop=True) needs the trainer: call set_trainer()")
            self.trainer.terminate()


def _cpu_copy(obj: Any) -> Any:
    """Deep copy of a (nested) state dict with every tensor cloned to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        out = type(obj)((k, _cpu_copy(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # module versions, read by BatchNorm's load_state_dict
            out._metadata = obj._metadata
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj
