"""Handler that recomputes a network's BatchNorm statistics on training data before each evaluation."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from monai.utils import CommonKeys
from torch import nn

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["PreciseBatchNorm"]


class PreciseBatchNorm:
    """Replace the running mean and variance of every BatchNorm layer by their average over training batches.

    During training BatchNorm keeps exponential moving averages of the batch statistics (momentum 0.1): a few
    batches dominate them, and while the weights still move fast they describe a network of some iterations ago.
    A network evaluated with such statistics can score 0.5 in one epoch and 0.9 in the next (seen on the CT demo),
    and early stopping and the best-checkpoint choice then follow that noise. Attached to an evaluator, this
    handler recomputes the statistics on the evaluator's ``STARTED`` (before its first iteration): the network runs
    in training mode without gradients over ``num_batches`` batches of ``data_loader`` and every BatchNorm layer
    keeps the plain average of their statistics ("precise BN", Wu and Johnson, "Rethinking 'Batch' in BatchNorm",
    2021). Weights are untouched; the layers' momentum and the network's mode are restored afterwards. A network
    without BatchNorm is left as it is.

    Args:
        network: the network the evaluator runs.
        data_loader: training batches (dicts with ``image_key``, shape ``(N, C, *spatial)``, or tensors).
        num_batches: batches to average over; ``None`` (default) the whole loader.
        image_key: key of the images in a batch dict (default ``CommonKeys.IMAGE``).
        device: where the images go; default the device of the network's first parameter.
        enabled: ``False`` makes :meth:`attach` a no-op (a config switch).
    """

    def __init__(
        self,
        network: nn.Module,
        data_loader: Iterable,
        num_batches: int | None = None,
        image_key: str = CommonKeys.IMAGE,
        device: torch.device | str | None = None,
        enabled: bool = True,
    ) -> None:
        if not isinstance(enabled, bool):
            raise TypeError(f"PreciseBatchNorm: enabled must be True or False, got {enabled!r}")
        if num_batches is not None and (isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1):
            raise ValueError(f"PreciseBatchNorm: num_batches must be a positive integer or None, got {num_batches!r}")
        self.network = network
        self.data_loader = data_loader
        self.num_batches = num_batches
        self.image_key = image_key
        self.device = device
        self.enabled = enabled

    def attach(self, engine: Engine) -> None:
        """Recompute the statistics on ``engine``'s ``STARTED``."""
        from ignite.engine import Events

        if self.enabled:
            engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        """Recompute the statistics now; the number of batches used is returned by :meth:`update`."""
        self.update()

    def update(self) -> int:
        """Recompute the running statistics of every BatchNorm layer; returns the number of batches averaged."""
        layers = [m for m in self.network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        if not layers:
            return 0
        momenta = [layer.momentum for layer in layers]
        was_training = self.network.training
        device = self.device if self.device is not None else next(self.network.parameters()).device
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None  # cumulative average over the batches below
        batches = 0
        try:
            self.network.train()
            with torch.no_grad():
                for batch in self.data_loader:
                    if self.num_batches is not None and batches >= self.num_batches:
                        break
                    # not the evaluator's prepare_batch: under adversarial training it crafts PGD examples
                    images = batch[self.image_key] if isinstance(batch, dict) else batch
                    self.network(torch.as_tensor(images).to(device))
                    batches += 1
        finally:
            for layer, momentum in zip(layers, momenta):
                layer.momentum = momentum
            self.network.train(was_training)
        if batches == 0:
            raise ValueError("PreciseBatchNorm: the data loader gave no batch: the BatchNorm statistics would be empty")
        return batches
