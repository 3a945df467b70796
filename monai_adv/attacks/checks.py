"""Input checks of the attacks: images in [0, 1], class-index labels, perturbation sizes, and per-sample values
shaped for broadcasting; also the plain-tensor view that keeps MONAI ``MetaTensor`` overhead out of the attack loop.
"""

from __future__ import annotations

import torch

__all__ = [
    "RANGE_TOLERANCE",
    "plain_tensor",
    "restore_type",
    "check_images",
    "check_labels",
    "check_eps",
    "per_sample",
    "take",
    "positive_int",
]

RANGE_TOLERANCE = 1e-6
"""How far outside [0, 1] an input value may lie before it is rejected (float round-off of an intensity window)."""


def plain_tensor(x: torch.Tensor) -> torch.Tensor:
    """View a tensor subclass (MONAI ``MetaTensor``) as a plain ``torch.Tensor``, so the attack loop pays no
    ``__torch_function__`` overhead. Shares memory."""
    return x.as_subclass(torch.Tensor) if type(x) is not torch.Tensor else x


def restore_type(like: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Return ``x`` as the same tensor type as ``like`` (a ``MetaTensor`` keeps ``like``'s metadata)."""
    if type(like) is torch.Tensor:
        return x
    out = like.detach().clone()
    with torch.no_grad():
        out.copy_(x)
    return out


def check_images(images: torch.Tensor, tolerance: float = RANGE_TOLERANCE) -> torch.Tensor:
    """Check that ``images`` is a floating batch ``(B, ...)`` with values in ``[0, 1]`` (up to ``tolerance``).

    Raises:
        ValueError: wrong dtype or rank, non-finite values, or values outside ``[-tolerance, 1 + tolerance]``.
    """
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise ValueError(f"images must be a floating-point tensor, got {getattr(images, 'dtype', type(images))}")
    if images.ndim < 2 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty batch (B, C, ...), got shape {tuple(images.shape)}")
    lo, hi = torch.aminmax(images.detach())
    lo, hi = float(lo), float(hi)
    if not (lo >= -tolerance and hi <= 1.0 + tolerance):  # also catches NaN
        raise ValueError(
            f"images must lie in [0, 1] (tolerance {tolerance:g}), got values in [{lo:.6g}, {hi:.6g}]. Map the "
            "intensities (CT window, min-max or percentile scaling) to [0, 1] before attacking and put any "
            "z-score normalisation inside the network, so that eps is in [0, 1] units."
        )
    return images


def check_labels(labels: torch.Tensor, batch_size: int, n_classes: int | None = None) -> torch.Tensor:
    """Return ``labels`` as a ``(B,)`` int64 tensor of class indices, checking shape, values and (when
    ``n_classes`` is given) the range ``0 <= y < n_classes``. ``(B, 1)`` and integral float labels are accepted.

    Raises:
        ValueError: wrong shape, non-integral values, or labels out of range.
    """
    labels = plain_tensor(torch.as_tensor(labels)).detach()
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or labels.shape[0] != batch_size:
        raise ValueError(f"labels must have shape ({batch_size},) (class indices), got {tuple(labels.shape)}")
    if labels.is_floating_point():
        if not bool((labels == labels.round()).all()):
            raise ValueError("labels must be class indices; got non-integral floating-point values")
    labels = labels.long()
    if n_classes is not None and batch_size > 0:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= n_classes:
            raise ValueError(
                f"labels must lie in [0, {n_classes - 1}] for a model with {n_classes} classes, "
                f"got values in [{lo}, {hi}]"
            )
    return labels


def check_eps(eps: float | torch.Tensor, name: str = "eps") -> None:
    """Reject negative or non-finite perturbation sizes (a float or a tensor)."""
    bad = (
        not bool(torch.isfinite(eps).all() and (eps >= 0).all())
        if isinstance(eps, torch.Tensor)
        else not (float(eps) >= 0 and float(eps) != float("inf"))
    )
    if bad:
        raise ValueError(f"{name} must be finite and >= 0, got {eps}")


def per_sample(value: float | torch.Tensor, like: torch.Tensor, name: str = "eps") -> float | torch.Tensor:
    """Shape a perturbation size for broadcasting against the batch ``like`` ``(B, ...)``.

    A Python number (or a 0-d tensor) stays a Python float, so scalar attacks do exactly torchattacks' arithmetic.
    A tensor of shape ``(B,)`` (or ``(B, 1, ..., 1)``) becomes ``(B, 1, ..., 1)`` in ``like``'s dtype and device.
    """
    if not isinstance(value, torch.Tensor):
        return float(value)
    if value.numel() == 1 and value.ndim == 0:
        return float(value)
    batch = like.shape[0]
    if value.shape[0] != batch or value.numel() != batch:
        raise ValueError(f"a per-sample {name} must have shape ({batch},), got {tuple(value.shape)}")
    return plain_tensor(value).detach().to(device=like.device, dtype=like.dtype).reshape(batch, *[1] * (like.ndim - 1))


def take(value: float | torch.Tensor, index: torch.Tensor) -> float | torch.Tensor:
    """``value[index]`` for a per-sample tensor; a float is shared by every sample and returned as is."""
    return value[index] if isinstance(value, torch.Tensor) else value


def positive_int(value: float, name: str) -> int:
    """``value`` as an ``int``; raises ``ValueError`` naming ``name`` unless it is a whole number >= 1."""
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)
