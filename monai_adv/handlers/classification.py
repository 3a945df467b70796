"""Handlers that write an evaluation's metrics and per-image predictions."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from monai_adv.handlers.collect import PerImageCollector
from monai_adv.metrics import classification_metrics
from monai_adv.utils import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["ClassificationMetricsWriter", "PredictionCSVWriter"]


class ClassificationMetricsWriter(PerImageCollector):
    """At the end of an evaluation, write accuracy, ROC AUC and the confusion matrix to ``output_dir/filename``.

    The JSON holds what :func:`monai_adv.metrics.classification_metrics` returns. The metrics are also stored in
    ``engine.state.metric_details["classification"]`` and logged.

    Args:
        output_dir: folder of the metrics file.
        class_names: class names in index order.
        filename: metrics file name (JSON). Default ``metrics.json``.
        kwargs: see :class:`~monai_adv.handlers.collect.PerImageCollector`.
    """

    def __init__(self, output_dir: str, class_names: Sequence[str], filename: str = "metrics.json", **kwargs) -> None:
        super().__init__(**kwargs)
        self.path = os.path.join(output_dir, filename)
        self.class_names = list(class_names)

    def write(self, engine: Engine, ids: list[str], probs: np.ndarray, labels: np.ndarray) -> None:
        if (labels < 0).any():
            raise ValueError(f"{self.path}: metrics need a label for every image; {int((labels < 0).sum())} have none")
        metrics = classification_metrics(probs, labels, self.class_names)
        atomic_write_json(self.path, metrics)
        engine.state.metric_details["classification"] = metrics
        self.logger.info(
            f"test n={metrics['n']} accuracy={metrics['accuracy']:.4f} roc_auc={metrics['roc_auc']} -> {self.path}"
        )


class PredictionCSVWriter(PerImageCollector):
    """Write one CSV row per image: ``id``, ``prediction`` (class name), ``probability`` (of that class) and one
    ``p_<class>`` column per class; with labels present, ``label`` too. Rows are sorted by id.

    Args:
        output_dir: folder of the CSV.
        class_names: class names in index order.
        filename: CSV file name. Default ``predictions.csv``.
        kwargs: see :class:`~monai_adv.handlers.collect.PerImageCollector`.
    """

    def __init__(self, output_dir: str, class_names: Sequence[str], filename: str = "predictions.csv", **kwargs) -> None:
        super().__init__(**kwargs)
        self.path = os.path.join(output_dir, filename)
        self.class_names = list(class_names)

    def write(self, engine: Engine, ids: list[str], probs: np.ndarray, labels: np.ndarray) -> None:
        with_labels = bool(len(labels)) and bool((labels >= 0).all())
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        header = ["id", "prediction", "probability"] + [f"p_{c}" for c in self.class_names]
        writer.writerow(header + (["label"] if with_labels else []))
        for item_id, p, label in zip(ids, probs, labels):
            k = int(np.argmax(p))
            row = [item_id, self.class_names[k], f"{p[k]:.6f}"] + [f"{v:.6f}" for v in p]
            writer.writerow(row + ([self.class_names[int(label)]] if with_labels else []))
        atomic_write_text(self.path, buffer.getvalue())
        self.logger.info(f"wrote {len(ids)} predictions to {self.path}")
