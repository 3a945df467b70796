"""Classification metrics from per-image probabilities: accuracy, ROC AUC, confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_roc_auc

__all__ = ["classification_metrics", "scores_and_class_indices"]


def classification_metrics(
    probabilities: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, class_names: Sequence[str]
) -> dict[str, Any]:
    """Metrics of a C-class classifier on N images.

    Args:
        probabilities: ``(N, C)`` class probabilities (rows sum to 1).
        labels: ``(N,)`` integer true classes.
        class_names: C names, in class-index order.

    Returns:
        ``n``, ``accuracy``, ``roc_auc`` (binary: AUC of the positive class; more classes: macro one-vs-rest; ``None``
        when a class is absent), ``confusion_matrix`` (rows true class, columns predicted), ``classes`` and
        ``per_class`` sensitivity (recall) and precision.
    """
    probs = torch.as_tensor(np.asarray(probabilities), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64).reshape(-1)
    n, c = probs.shape
    if len(class_names) != c or y.numel() != n:
        raise ValueError(f"shapes disagree: probabilities {tuple(probs.shape)}, {y.numel()} labels, {len(class_names)} classes")
    pred = probs.argmax(dim=1)
    confusion = torch.zeros(c, c, dtype=torch.int64)
    confusion.index_put_((y, pred), torch.ones_like(y), accumulate=True)
    present = torch.bincount(y, minlength=c) > 0
    roc_auc = None
    if n and bool(present.all()):
        onehot = torch.nn.functional.one_hot(y, c)
        roc_auc = float(compute_roc_auc(probs[:, 1:], onehot[:, 1:]) if c == 2 else compute_roc_auc(probs, onehot))
    per_class = {}
    for i, name in enumerate(class_names):
        tp = int(confusion[i, i])
        per_class[name] = {
            "n": int(confusion[i].sum()),
            "sensitivity": tp / int(confusion[i].sum()) if confusion[i].sum() else None,
            "precision": tp / int(confusion[:, i].sum()) if confusion[:, i].sum() else None,
        }
    return {
        "n": n,
        "accuracy": float((pred == y).double().mean()) if n else None,
        "roc_auc": roc_auc,
        "confusion_matrix": confusion.tolist(),
        "classes": list(class_names),
        "per_class": per_class,
    }


def scores_and_class_indices(output: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Output transform for Ignite's ``Accuracy`` on a MONAI engine: ``(scores (B, C), class indices (B,))``.

    MONAI classification postprocessing turns both ``pred`` and ``label`` into one-hot vectors. Given two one-hot
    tensors of equal shape, ``Accuracy`` scores every vector element as a binary prediction, which for C classes
    reports about ``1 - 2 (1 - accuracy) / C`` (0.877 for a 10-class model whose accuracy is 0.385). This passes the
    per-class scores and the labels as class indices (a one-hot label becomes its argmax), so ``Accuracy`` counts
    images. ``output`` is the engine's output, decollated (a list of per-image dicts) or not.
    """
    from monai.handlers import from_engine

    preds, labels = from_engine(["pred", "label"])(output)
    scores = torch.stack([torch.as_tensor(p).reshape(-1) for p in preds]) if isinstance(preds, list) else preds
    scores = torch.as_tensor(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores_and_class_indices: expected per-class scores (B, C), got shape {tuple(scores.shape)}")
    label_list = list(labels) if isinstance(labels, (list, tuple)) else list(torch.as_tensor(labels))
    indices = []
    for label in label_list:
        label = torch.as_tensor(label).reshape(-1)
        indices.append(label.argmax() if label.numel() > 1 else label[0])
    return scores, torch.stack(indices).long().to(scores.device)
