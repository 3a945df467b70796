"""Checks that a classifier returns logits, which the attacks' cross-entropy gradient needs.

A network that ends in ``softmax`` or ``sigmoid`` returns probabilities: cross-entropy on them is the loss of the
wrong function, its gradient vanishes where the probabilities saturate, and every attack looks weaker than it is.
The checks refuse such a network with an error; they never guess a correction.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ProbabilityOutputError", "check_classifier_outputs", "final_activation"]

_PROBABILITY_LAYERS = (nn.Softmax, nn.Sigmoid, nn.LogSoftmax, nn.Softmax2d)


class ProbabilityOutputError(ValueError):
    """The network returns probabilities (or log-probabilities), not logits."""


def final_activation(network: nn.Module) -> nn.Module | None:
    """The network's last registered leaf module when it is a softmax, sigmoid or log-softmax layer, else ``None``.

    Registration order follows ``__init__``, the usual order of ``forward`` in ``nn.Sequential`` and MONAI's
    networks; a functional ``torch.softmax`` in ``forward`` is caught by :func:`check_classifier_outputs` instead.
    """
    leaves = [m for m in network.modules() if not list(m.children())]
    return leaves[-1] if leaves and isinstance(leaves[-1], _PROBABILITY_LAYERS) else None


def check_classifier_outputs(network: nn.Module, outputs: torch.Tensor, name: str = "network") -> torch.Tensor:
    """Check ``outputs`` of ``network`` on one batch: logits ``(B, K)`` with ``K >= 2`` or one logit ``(B, 1)``.

    Refused, with :class:`ProbabilityOutputError`: a final softmax/sigmoid/log-softmax layer, and (for ``K >= 2``
    and a batch of at least 2) outputs that are non-negative with every row summing to 1 (a functional softmax) or
    non-positive with every row's exponentials summing to 1 (log-softmax). Other shapes raise ``ValueError``.
    Returns ``outputs``.
    """
    if outputs.ndim != 2 or outputs.shape[1] < 1:
        raise ValueError(f"{name} must return logits (B, K) or (B, 1), got shape {tuple(outputs.shape)}")
    layer = final_activation(network)
    hint = "remove it (MONAI's postprocessing or the bundle's Activationsd applies it) so that the network returns logits"
    if layer is not None:
        raise ProbabilityOutputError(
            f"{name} ends in {type(layer).__name__}: it returns probabilities, and attacks need the logits; {hint}"
        )
    values = outputs.detach().float()
    if values.shape[1] >= 2 and values.shape[0] >= 2:
        if bool((values >= 0).all()) and torch.allclose(values.sum(1), torch.ones_like(values[:, 0]), atol=1e-4):
            raise ProbabilityOutputError(
                f"{name} returns rows that are non-negative and sum to 1 (softmax probabilities); attacks need the "
                f"logits; {hint}"
            )
        if bool((values <= 0).all()) and torch.allclose(values.exp().sum(1), torch.ones_like(values[:, 0]), atol=1e-4):
            raise ProbabilityOutputError(
                f"{name} returns log-probabilities (log-softmax); attacks need the logits; {hint}"
            )
    return outputs
