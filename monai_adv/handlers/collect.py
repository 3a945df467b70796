"""A base of handlers that collect every image's id, probabilities and label during an evaluation (the loop over an
evaluator's data for handlers that attack it afterwards is :mod:`monai_adv.handlers.evaluator_data`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from monai_adv.distributed import gather_by_id

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["PerImageCollector"]


def _rows(value: Any) -> list[dict]:
    """Engine state batch/output as a list of per-image dicts, whether decollated or not."""
    if isinstance(value, dict):
        size = len(next(iter(value.values())))
        return [{k: v[i] for k, v in value.items()} for i in range(size)]
    return list(value)


class PerImageCollector:
    """Collects ``(id, probabilities, label)`` per image over one evaluator run, gathered across ranks on completion.

    Probabilities are read from ``engine.state.output[i][prob_key]`` (the bundle's postprocessing copies the softmax
    there); ids and integer labels from ``engine.state.batch[i]``. Subclasses implement :meth:`write`, called on
    ``save_rank`` only with ``ids`` (list of N str), ``probs`` (N, C) float array and ``labels`` (N,) int array
    (-1 where the data has no label). Duplicate ids (distributed padding) are dropped; rows are sorted by id so the
    result does not depend on the number of processes.

    Args:
        prob_key: key of the ``(C,)`` probabilities in each output dict.
        label_key: key of the integer label in each batch dict.
        id_key: key of the item id in each batch dict; missing ids fall back to the image file name.
        save_rank: the rank that writes.
        name: logger name; ``None`` uses the engine's logger.
    """

    def __init__(
        self,
        prob_key: str = "prob",
        label_key: str = "label",
        id_key: str = "id",
        save_rank: int = 0,
        name: str | None = None,
    ) -> None:
        self.prob_key = prob_key
        self.label_key = label_key
        self.id_key = id_key
        self.save_rank = save_rank
        self.logger = logging.getLogger(name) if name else None
        self._ids: list[str] = []
        self._probs: list[torch.Tensor] = []
        self._labels: list[int] = []

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        if self.logger is None:
            self.logger = engine.logger
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _reset(self, engine: Engine) -> None:
        self._ids, self._probs, self._labels = [], [], []

    def _collect(self, engine: Engine) -> None:
        for batch_row, output_row in zip(_rows(engine.state.batch), _rows(engine.state.output)):
            item_id = batch_row.get(self.id_key)
            if item_id is None:
                meta = getattr(batch_row.get("image"), "meta", {}) or {}
                item_id = str(meta.get("filename_or_obj", f"image{len(self._ids)}")).rsplit("/", 1)[-1]
            label = batch_row.get(self.label_key)
            self._ids.append(str(item_id))
            self._probs.append(torch.as_tensor(output_row[self.prob_key]).detach().float().reshape(-1).cpu())
            self._labels.append(-1 if label is None else int(torch.as_tensor(label).reshape(-1)[0]))

    def __call__(self, engine: Engine) -> None:
        probs = torch.stack(self._probs) if self._probs else torch.zeros(0, 0)
        labels = torch.tensor(self._labels, dtype=torch.int64)
        ids, values = gather_by_id(self._ids, {"probs": probs, "labels": labels})
        if engine.state.rank != self.save_rank:
            return
        self.write(engine, ids, values["probs"], values["labels"])

    def write(self, engine: Engine, ids: list[str], probs: np.ndarray, labels: np.ndarray) -> None:
        raise NotImplementedError
