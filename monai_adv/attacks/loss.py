"""The losses the attacks maximise and the prediction they try to change, for ``(B, K)`` logits (``K >= 2``:
cross-entropy and ``argmax``) or a single binary logit ``(B, 1)`` (BCE-with-logits and ``z > 0``), read as the two
logits ``[0, z]``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["num_classes", "classification_loss", "predict", "two_logits", "margin_loss", "dlr_loss", "LOSSES"]


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


def two_logits(logits: torch.Tensor) -> torch.Tensor:
    """``(B, K)`` logits as they are; a single logit ``(B, 1)`` as the two logits ``[0, z]`` ``(B, 2)``."""
    return torch.cat([torch.zeros_like(logits), logits], dim=1) if logits.shape[1] == 1 else logits


def margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``max_{j != y} z_j - z_y`` per sample ``(B,)`` (Carlini and Wagner's margin): positive exactly when the
    prediction is wrong. Unlike the cross-entropy it does not saturate for a confidently correct sample."""
    z = two_logits(logits)
    true = z.gather(1, labels.view(-1, 1))[:, 0]
    others = z.scatter(1, labels.view(-1, 1), float("-inf"))
    return others.amax(dim=1) - true


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The difference of logits ratio of Croce and Hein (ICML 2020) per sample ``(B,)``:
    ``-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3)``, with ``z_pi`` the logits sorted in decreasing order; invariant to
    shifting and scaling the logits. Needs ``K >= 3`` classes.

    Raises:
        ValueError: for fewer than three classes (use :func:`margin_loss`).
    """
    if num_classes(logits) < 3:
        raise ValueError(f"the DLR loss needs at least 3 classes, the model has {num_classes(logits)}: use the margin "
                         "loss")
    ordered = logits.sort(dim=1).values
    return margin_loss(logits, labels) / (ordered[:, -1] - ordered[:, -3] + 1e-12)


LOSSES = ("ce", "margin", "dlr")
"""Loss names of the attacks that take one: cross-entropy, the margin (DLR for ``K >= 3``, the plain margin for two
classes) and DLR (``K >= 3`` only)."""
