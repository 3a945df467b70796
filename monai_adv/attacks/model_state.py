"""The model's state around an attack: eval mode for the attack, and every module's flag and parameter ``.grad``
given back afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["eval_mode", "preserved_grads"]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode; on exit give every submodule back its own ``training`` flag.

    Restoring per module (rather than calling ``model.train()``) keeps mixed states such as frozen BatchNorm layers in
    an otherwise training model.
    """
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


@contextlib.contextmanager
def preserved_grads(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every parameter's ``.grad`` on exit, for attack code that calls ``.backward()`` (torchattacks' CW,
    DeepFool, FAB, ...). Our own attacks never need it: they only take input gradients."""
    saved = [(p, None if p.grad is None else p.grad.detach().clone()) for p in model.parameters()]
    try:
        yield model
    finally:
        for p, g in saved:
            p.grad = g
