"""A handler that turns any MONAI supervised engine into adversarial training or robust validation, and the helpers
that craft the adversarial part of a batch."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer, SimpleInferer
from monai.utils.enums import CommonKeys
from torch import nn

from monai_adv.attacks.checks import check_eps, plain_tensor, restore_type
from monai_adv.attacks.config import AttackConfig, AttackFactory, attack_config, attack_name
from monai_adv.input_space import InputSpace, as_input_space
from monai_adv.network_output import check_classifier_outputs

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["AdversarialBatches", "ADVERSARIAL_KEY", "adversarial_count", "replace_with_adversarial"]

ADVERSARIAL_KEY = "adversarial"
"""Output key of the ``(B,)`` bool mask of the samples that were replaced by adversarial examples."""


class _InfererForward(nn.Module):
    """``inferer(x, network, *args, **kwargs)`` as a module, so an attack differentiates the same forward pass the
    engine runs (extra network arguments from ``PrepareBatchExtraInput``, a non-trivial inferer)."""

    def __init__(self, network: nn.Module, inferer: Inferer, args: Sequence = (), kwargs: dict | None = None) -> None:
        super().__init__()
        self.network = network
        self.inferer = inferer
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inferer(x, self.network, *self.args, **self.kwargs)


def _take_samples(value: Any, index: torch.Tensor, batch_size: int) -> Any:
    """``value[index]`` for a per-sample tensor ``(B, ...)``; anything else is shared by the batch and kept."""
    if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == batch_size:
        return value[index.to(value.device)]
    return value


def _attack_model(
    network: nn.Module,
    inferer: Inferer,
    args: Sequence = (),
    kwargs: dict | None = None,
    index: torch.Tensor | None = None,
    batch_size: int = 0,
) -> nn.Module:
    """The module an attack differentiates. Extra network arguments that are per-sample tensors ``(B, ...)`` are
    restricted to the attacked samples ``index``."""
    if index is not None:
        args = tuple(_take_samples(a, index, batch_size) for a in args)
        kwargs = {k: _take_samples(v, index, batch_size) for k, v in (kwargs or {}).items()}
    # DDP would prepare a gradient all-reduce on every attack forward that the input-only backward never completes;
    # the examples are crafted per rank anyway, so attack the wrapped module.
    if isinstance(network, nn.parallel.DistributedDataParallel):
        network = network.module
    if type(inferer) is SimpleInferer and not args and not kwargs:
        return network
    return _InfererForward(network, inferer, args, kwargs)


def adversarial_count(batch_size: int, ratio: float) -> int:
    """Number of samples of a batch of ``batch_size`` to replace: ``round(ratio * batch_size)``, halves rounded up."""
    return min(batch_size, int(math.floor(ratio * batch_size + 0.5)))


def replace_with_adversarial(
    images: torch.Tensor,
    labels: torch.Tensor | None,
    index: torch.Tensor,
    attack: Callable[..., torch.Tensor],
    input_space: InputSpace | None = None,
) -> torch.Tensor:
    """Copy of the network inputs ``images`` ``(B, C, *spatial)`` whose samples ``index`` ``(k,)`` are replaced by
    ``input_space.to_network(attack(input_space.to_unit(images[index]), labels[index]))``; same tensor type
    (``MetaTensor`` metadata kept), dtype and device. ``labels`` ``(B,)`` (or ``(B, 1)``) class indices, or ``None``
    to attack the clean predictions. ``attack`` works on ``u`` in [0, 1], so it must attack the model as a function
    of ``u`` (``input_space.wrap(model)``). ``input_space`` ``None``: [0, 1] inputs, attacked as they are."""
    space = InputSpace() if input_space is None else input_space
    x = plain_tensor(images).detach()
    mixed = x.clone()
    if index.numel() > 0:
        sub_labels = None if labels is None else plain_tensor(labels).detach()[index]
        adv = attack(space.to_unit(x[index]), sub_labels)
        mixed[index] = space.to_network(plain_tensor(adv).detach()).to(mixed.dtype)
    return restore_type(images, mixed)


def _split_batch(batch: Sequence) -> tuple[torch.Tensor, torch.Tensor | None, tuple, dict]:
    if len(batch) == 2:
        return batch[0], batch[1], (), {}
    inputs, targets, args, kwargs = batch
    return inputs, targets, tuple(args or ()), dict(kwargs or {})


def _check_outputs_once(engine: Engine) -> None:
    """On the first ``FORWARD_COMPLETED`` of ``engine``: refuse a network whose predictions are not logits."""
    if getattr(engine, "_outputs_checked", False):
        return
    output = engine.state.output
    if isinstance(output, dict) and isinstance(output.get(CommonKeys.PRED), torch.Tensor):
        check_classifier_outputs(engine.network, output[CommonKeys.PRED], f"{type(engine).__name__}'s network")
    engine._outputs_checked = True


def _add_mask_to_output(engine: Engine) -> None:
    state = getattr(engine.state, "adversarial", None)
    if isinstance(engine.state.output, dict) and state:
        engine.state.output[ADVERSARIAL_KEY] = state["mask"]



class AdversarialBatches:
    """Replace a fraction ``ratio`` of every batch an engine prepares by adversarial examples crafted against its
    current network; attached to a bundle's own ``SupervisedTrainer`` (adversarial training) or
    ``SupervisedEvaluator`` (``ratio=1``: robust validation), whatever its config calls it.

    ``attach`` wraps ``engine.prepare_batch`` (kept as ``engine.clean_prepare_batch``): per iteration the clean
    ``prepare_batch``, then ``k = round(ratio * B)`` samples (halves rounded up; ``selection="random"`` draws them with
    ``torch.randperm`` unless ``k`` is 0 or ``B``, ``"first"`` takes the first ``k``) are replaced by
    ``input_space.to_network(attack(input_space.to_unit(x), y))`` at the epoch's eps, with the network in eval mode
    and input gradients only. The rest of MONAI's iteration runs unchanged, every event included.
    ``engine.state.adversarial`` holds ``{"count", "eps", "attack", "mask"}`` and ``output["adversarial"]`` the
    ``(B,)`` mask; the network's first outputs are checked for logits.

    Args:
        eps: L-infinity radius, a fraction of the intensity window; needed unless ``eps_schedule`` is given.
        attack: ``"pgd"``, ``"fgsm_rs"``, ``"fgsm"``, ``"bim"`` or ``factory(model, eps) -> attack``.
        ratio: fraction of each batch replaced, in [0, 1].
        steps, step_size, restarts: of the attack (see :class:`monai_adv.attacks.config.AttackConfig`);
            ``steps`` ``None`` gives ``default_steps``.
        selection: ``"random"`` or ``"first"``.
        eps_warmup_epochs, eps_warmup_start, eps_schedule: an eps that changes with the epoch (see
            :meth:`eps_at`).
        input_space: how the network input follows from the attacked [0, 1] image; ``None``: [0, 1].
        use_predicted_labels: attack the clean predictions (evaluation only); labels are then not needed.
        default_steps: 7 for training (Table S4), 10 for validation (Table S1).
        enabled: ``False`` attaches nothing (a config switch).
    """

    def __init__(
        self,
        eps: float | None = None,
        attack: str | AttackFactory = "pgd",
        ratio: float = 0.5,
        steps: int | None = None,
        step_size: float | None = None,
        restarts: int = 1,
        selection: str = "random",
        eps_warmup_epochs: int = 0,
        eps_warmup_start: float = 0.0,
        eps_schedule: Sequence[Sequence[float]] | None = None,
        input_space: InputSpace | Sequence[float] | None = None,
        use_predicted_labels: bool = False,
        default_steps: int = 7,
        enabled: bool = True,
    ) -> None:
        if not 0.0 <= float(ratio) <= 1.0:
            raise ValueError(f"ratio must lie in [0, 1], got {ratio}")
        if selection not in ("random", "first"):
            raise ValueError(f"selection must be 'random' or 'first', got {selection!r}")
        self.attack = attack_config(attack, steps, step_size, restarts, default_steps=default_steps)
        self.ratio = float(ratio)
        self.selection = selection
        self.input_space = as_input_space(input_space)
        self.use_predicted_labels = use_predicted_labels
        self.enabled = enabled
        self._set_eps(eps, eps_warmup_epochs, eps_warmup_start, eps_schedule)

    def _set_eps(self, eps: float | None, warmup_epochs: int, warmup_start: float,
                 schedule: Sequence[Sequence[float]] | None) -> None:
        if schedule is not None:
            if warmup_epochs:
                raise ValueError("give either eps_schedule or eps_warmup_epochs, not both")
            entries = [(int(e), float(v)) for e, v in schedule]
            epochs = [e for e, _ in entries]
            if not entries or epochs[0] != 1 or any(b <= a for a, b in zip(epochs, epochs[1:])):
                raise ValueError(
                    f"eps_schedule must be [[1, eps], [epoch, eps], ...] with increasing epochs, got {schedule}"
                )
            for _, v in entries:
                check_eps(v)
            if eps is not None and float(eps) != entries[-1][1]:
                raise ValueError(f"eps={eps} disagrees with the last eps of eps_schedule ({entries[-1][1]})")
            self.eps_schedule: list[tuple[int, float]] | None = entries
            self.eps = entries[-1][1]
        else:
            if eps is None:
                raise ValueError("eps (or eps_schedule) is required")
            check_eps(eps)
            check_eps(warmup_start, "eps_warmup_start")
            if int(warmup_epochs) != warmup_epochs or warmup_epochs < 0:
                raise ValueError(f"eps_warmup_epochs must be a non-negative integer, got {warmup_epochs}")
            self.eps_schedule = None
            self.eps = float(eps)
        self.eps_warmup_epochs = int(warmup_epochs)
        self.eps_warmup_start = float(warmup_start)

    def eps_at(self, epoch: int) -> float:
        """Eps of the 1-based ``epoch``: the entry of ``eps_schedule`` with the largest first epoch ``<= epoch``, or
        during a warm-up of ``N`` epochs ``eps_warmup_start + (eps - eps_warmup_start) * epoch / N``, else ``eps``."""
        if self.eps_schedule is not None:
            value = self.eps_schedule[0][1]
            for first_epoch, eps in self.eps_schedule:
                if epoch >= first_epoch:
                    value = eps
            return value
        if self.eps_warmup_epochs > 0 and epoch < self.eps_warmup_epochs:
            start = self.eps_warmup_start
            return start + (self.eps - start) * max(epoch, 0) / self.eps_warmup_epochs
        return self.eps

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        if getattr(engine, "clean_prepare_batch", None) is not None:
            raise ValueError(f"{type(engine).__name__} already crafts adversarial batches: attach one handler only")
        engine.clean_prepare_batch = engine.prepare_batch
        engine.prepare_batch = partial(self.prepare, engine)
        engine.state.adversarial = {}
        # registered before the handlers attached later, so that they see output["adversarial"]
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, _add_mask_to_output)
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, _check_outputs_once)
        engine.logger.info(
            f"adversarial batches: {attack_name(self.attack)} at eps {self.eps:g} ({self.input_space}) replace "
            f"{self.ratio:.0%} of every batch of {type(engine).__name__}"
        )

    def _select(self, batch_size: int, count: int, device: torch.device) -> torch.Tensor:
        # no random draw when there is nothing to choose, so ratio 0 or 1 leaves the RNG stream as a plain engine's
        if self.selection == "first" or count in (0, batch_size):
            index = torch.arange(count)
        else:
            index = torch.randperm(batch_size)[:count].sort().values
        return index.to(device)

    def prepare(
        self, engine: Engine, batchdata: Any, device: str | torch.device | None = None, non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple:
        """``engine.clean_prepare_batch`` followed by the replacement of ``round(ratio * B)`` inputs."""
        batch = engine.clean_prepare_batch(batchdata, device, non_blocking, **kwargs)
        inputs, targets, args, net_kwargs = _split_batch(batch)
        if targets is None and not self.use_predicted_labels:
            raise ValueError("adversarial batches need labels: prepare_batch returned no targets")
        eps = self.eps_at(engine.state.epoch)
        size = inputs.shape[0]
        count = adversarial_count(size, self.ratio) if eps > 0 else 0
        index = self._select(size, count, inputs.device)
        if count > 0:
            model = self.input_space.wrap(_attack_model(engine.network, engine.inferer, args, net_kwargs, index, size))
            if isinstance(self.attack, AttackConfig):
                attack = self.attack.build(model, eps, self.use_predicted_labels)
            else:
                attack = self.attack(model, eps)
            labels = None if self.use_predicted_labels else targets
            with torch.enable_grad():
                inputs = replace_with_adversarial(inputs, labels, index, attack, self.input_space)
        mask = torch.zeros(size, dtype=torch.bool, device=inputs.device)
        mask[index] = True
        engine.state.adversarial = {"count": count, "eps": eps, "attack": attack_name(self.attack), "mask": mask}
        return (inputs, targets) if len(batch) == 2 else (inputs, targets, *batch[2:])
