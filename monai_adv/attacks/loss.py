"""The loss the attacks maximise and the prediction they try to change, for ``(B, K)`` logits (``K >= 2``:
cross-entropy and ``argmax``) or a single binary logit ``(B, 1)`` (BCE-with-logits and ``z > 0``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["num_classes", "classification_loss", "predict"]


def num_classes(logits: torch.Tensor) -> int:
    """Number of classes a ``(B, K)`` output represents (2 for a single binary logit)."""
    return max(2, logits.shape[1])


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy for ``(B, K)`` logits; BCE-with-logits for a single logit ``(B, 1)`` (equal to the
    cross-entropy of the logits ``[0, z]``)."""
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], labels.to(logits.dtype), reduction=reduction)
    return F.cross_entropy(logits, labels, reduction=reduction)


def predict(logits: torch.Tensor) -> torch.Tensor:
    """Predicted class ``(B,)``: ``argmax`` of ``(B, K)`` logits, ``z > 0`` for a single logit."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)
