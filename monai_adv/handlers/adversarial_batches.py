"""A handler that turns any MONAI supervised engine into adversarial training or robust validation."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import torch

from monai_adv.attacks.base import check_eps
from monai_adv.input_space import InputSpace, as_input_space

if TYPE_CHECKING:
    from ignite.engine import Engine

    from monai_adv.engines import AttackFactory

__all__ = ["AdversarialBatches"]


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
        steps, step_size, restarts: of the attack (see :class:`monai_adv.engines.AttackConfig`); ``steps`` ``None``
            gives ``default_steps``.
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
        from monai_adv.engines import _attack_config

        if not 0.0 <= float(ratio) <= 1.0:
            raise ValueError(f"ratio must lie in [0, 1], got {ratio}")
        if selection not in ("random", "first"):
            raise ValueError(f"selection must be 'random' or 'first', got {selection!r}")
        self.attack = _attack_config(attack, steps, step_size, restarts, default_steps=default_steps)
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
        from monai.engines.utils import IterationEvents

        from monai_adv.engines import _add_mask_to_output, _attack_name, _check_outputs_once

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
            f"adversarial batches: {_attack_name(self.attack)} at eps {self.eps:g} ({self.input_space}) replace "
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
        from monai_adv.engines import (
            AttackConfig, _attack_model, _attack_name, _split_batch, adversarial_count, replace_with_adversarial,
        )

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
        engine.state.adversarial = {"count": count, "eps": eps, "attack": _attack_name(self.attack), "mask": mask}
        return (inputs, targets) if len(batch) == 2 else (inputs, targets, *batch[2:])
