"""The base of handlers that run over an evaluator's data again, after its run, and attack it in [0, 1] units."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from monai_adv.attacks.checks import plain_tensor
from monai_adv.attacks.model_state import eval_mode
from monai_adv.distributed import batch_ids, is_distributed
from monai_adv.input_space import InputSpace, as_input_space
from monai_adv.network_output import check_classifier_outputs

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["EvaluatorDataHandler", "evaluator_batches", "DEFAULT_NATIVE_UNITS"]

DEFAULT_NATIVE_UNITS = "gray levels of 255"
"""The native unit named when neither the handler's arguments nor its input space name one."""


def evaluator_batches(
    engine: Engine, desc: str, owner: str, id_key: str = "id"
) -> Iterator[tuple[list[str], torch.Tensor, torch.Tensor | None]]:
    """Run over the evaluator's data loader again, with a progress bar on rank 0 when stderr is a terminal.

    Yields ``(ids, images, labels)``: the batch's item ids (:func:`~monai_adv.distributed.batch_ids`; positions when
    the batch has none under ``id_key``), and the engine's ``prepare_batch`` output on its device, the images (the
    network inputs) as a plain tensor ``(B, C, *spatial)`` and the labels ``(B,)`` or ``None``.

    Raises ``ValueError`` (prefixed with ``owner``, the handler's name) once the loader is exhausted if it yielded no
    batch, or if a distributed run's batches lacked real ids: positions identify items only within one process.
    """
    from tqdm import tqdm

    n_items, from_data = 0, True
    # a progress bar only on a terminal: in a log file every refresh would append to one ever longer line
    quiet = engine.state.rank != 0 or not sys.stderr.isatty()
    for batch in tqdm(engine.data_loader, desc=desc, leave=False, disable=quiet):
        images, labels = engine.prepare_batch(batch, engine.state.device, engine.non_blocking)[:2]
        images = plain_tensor(images)
        ids, found = batch_ids(batch, len(images), id_key, offset=n_items)
        n_items += len(ids)
        from_data &= found
        yield ids, images, labels
    if n_items == 0:
        raise ValueError(f"{owner}: the evaluator's data loader yielded no batch")
    if is_distributed() and not from_data:
        raise ValueError(f"{owner}: a distributed run needs item ids under {id_key!r} in every batch")


class EvaluatorDataHandler:
    """Base of the handlers that, when an evaluator run completes (``Events.COMPLETED``), loop over its data again
    and attack ``engine.network`` (:class:`~monai_adv.handlers.AttackSweep`,
    :class:`~monai_adv.handlers.SensitivityTriage`, :class:`~monai_adv.handlers.RobustnessComparison`).

    The attacks step and clip in ``u``, the image in [0, 1] (eps is a fraction of the intensity window), whatever the
    network reads: :meth:`batches` hands out ``u = input_space.to_unit(x)`` of the network inputs ``x``, and
    :meth:`attack_model` the network as a function of ``u``. With the default ``InputSpace()`` (network inputs in
    [0, 1]) both are the network's own inputs and the network itself. The first batch of every loop runs the network
    once and refuses a network that returns probabilities
    (:func:`~monai_adv.network_output.check_classifier_outputs`) before any attack is spent on it.

    Subclasses implement ``__call__(engine)``.

    Args:
        input_space: how the network input follows from ``u``: an :class:`~monai_adv.input_space.InputSpace`
            (``ZScoreInputSpace()`` for a per-image z-score), a pair ``(low, high)`` (a fixed window), or ``None``
            (default: [0, 1], the network reads ``u``).
        id_key: key of the item id in each batch; without ids, positions in the loader stand in (single process
            only).
        save_rank: the rank that writes.
        name: logger name; ``None`` uses the engine's logger.
    """

    def __init__(
        self,
        input_space: InputSpace | Sequence[float] | None = None,
        id_key: str = "id",
        save_rank: int = 0,
        name: str | None = None,
    ) -> None:
        self.input_space = as_input_space(input_space)
        self.id_key = id_key
        self.save_rank = save_rank
        self.logger = logging.getLogger(name) if name else None

    def attach(self, engine: Engine) -> None:
        """Run ``self(engine)`` when ``engine`` completes its run."""
        from ignite.engine import Events

        if self.logger is None:
            self.logger = engine.logger
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        raise NotImplementedError

    def native_scale(
        self, native_per_unit: float | None, native_units: str | None, default_units: str = DEFAULT_NATIVE_UNITS
    ) -> tuple[float | None, str]:
        """``(native_per_unit, native_units)`` of the tables: explicit values win; ``None`` takes the input space's
        (its ``native_per_unit``; its ``native_units`` when it states a ``native_per_unit`` or is not [0, 1]), and
        otherwise ``default_units``, so that configs written for [0, 1] inputs give what they gave before."""
        space = self.input_space
        per_unit = native_per_unit if native_per_unit is not None else space.native_per_unit
        if native_units is not None:
            units = native_units
        elif space.native_per_unit is not None or not space.is_unit:
            units = space.native_units
        else:
            units = default_units
        return per_unit, units

    def attack_model(self, engine: Engine) -> nn.Module:
        """``engine.network`` as a function of ``u`` (``input_space.wrap``; the network itself for [0, 1])."""
        return self.input_space.wrap(engine.network)

    def check_outputs(self, engine: Engine, images: torch.Tensor) -> None:
        """Run ``engine.network`` once (eval mode, no gradient) on the network inputs ``images`` ``(B, C, ...)`` and
        raise :class:`~monai_adv.network_output.ProbabilityOutputError` (or ``ValueError`` for other shapes than
        ``(B, K)``) unless it returns logits."""
        network = engine.network
        with eval_mode(network), torch.no_grad():
            outputs = network(images)
        check_classifier_outputs(network, outputs, f"{type(self).__name__}: the evaluator's network")

    def batches(
        self, engine: Engine, desc: str
    ) -> Iterator[tuple[list[str], torch.Tensor, torch.Tensor | None]]:
        """The evaluator's data once more (see :func:`evaluator_batches`): ``(ids, u, labels)`` per batch, ``u`` the
        images in [0, 1] ``(B, C, *spatial)`` (``input_space.to_unit`` of the network inputs, which raises
        :class:`~monai_adv.input_space.InputSpaceError` for inputs outside the stated space), ``labels`` ``(B,)`` or
        ``None``. The network's outputs are checked on the first batch (:meth:`check_outputs`)."""
        first = True
        for ids, images, labels in evaluator_batches(engine, desc, type(self).__name__, self.id_key):
            if first:
                self.check_outputs(engine, images)
                first = False
            yield ids, self.input_space.to_unit(images), labels
