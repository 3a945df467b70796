"""Adversarial training and robust validation as MONAI engines.

* :class:`MixedAdversarialTrainer`: a ``SupervisedTrainer`` that replaces a fraction ``ratio`` of every batch with
  adversarial examples crafted against the current network (PGD-7 with step eps/4 and one random start by default,
  Table S4 of Joel et al. 2022; ``ratio=0.5`` is the paper's 50/50 mix, ``ratio=1.0`` is Madry et al. and what the
  paper's public code did). ``attack="fgsm_rs"`` gives "fast" adversarial training (Wong et al., ICLR 2020).
  Epsilon can be warmed up linearly or follow a piecewise schedule (the public code trained in two eps stages).
* :class:`AdversarialEvaluator`: a ``SupervisedEvaluator`` that scores white-box adversarial examples crafted
  against the current network, for checkpoint selection by robust accuracy or for plain robust evaluation.

The validator's guard against catastrophic overfitting is a handler:
:class:`monai_adv.handlers.CatastrophicOverfittingGuard`.

Both engines only change the images their ``prepare_batch`` returns; the rest of MONAI's iteration runs unchanged, so
every Ignite/MONAI event fires and postprocessing, metrics and handlers work as with the plain engines. The attacks
(:mod:`monai_adv.attacks`) run the network in eval mode (BatchNorm statistics and dropout untouched) and take
gradients with ``torch.autograd.grad`` w.r.t. the input only, so parameter ``.grad`` is never touched.

The attacks step and clip in [0, 1] (eps is a fraction of the intensity window). Network inputs are [0, 1] images by
default; for other inputs (a z-score, raw HU) give ``input_space`` (:mod:`monai_adv.input_space`): the attacks then
run on ``u = input_space.to_unit(x)`` against ``input_space.wrap(model)`` and the batch receives
``input_space.to_network(u_adv)``. Labels are class indices ``(B,)``. The network's outputs are checked once, on the
first iteration (:func:`~monai_adv.network_output.check_classifier_outputs`): a network returning probabilities
stops the run.
Reference the classes from bundle configs by full dotted path, e.g. ``monai_adv.engines.MixedAdversarialTrainer``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from ignite.engine import Engine, EventEnum
from ignite.metrics import Metric
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.engines.utils import default_metric_cmp_fn, default_prepare_batch
from monai.utils.enums import CommonKeys
from monai.inferers import Inferer, SimpleInferer
from monai.transforms import Transform
from monai.utils import ForwardMode
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from monai_adv.attacks import BIM, FGSM, PGD
from monai_adv.attacks.base import check_eps, plain_tensor, restore_type
from monai_adv.handlers.adversarial_batches import AdversarialBatches
from monai_adv.input_space import InputSpace
from monai_adv.network_output import check_classifier_outputs

__all__ = [
    "ADVERSARIAL_KEY",
    "ATTACK_NAMES",
    "AttackConfig",
    "AttackFactory",
    "MixedAdversarialTrainer",
    "AdversarialEvaluator",
    "adversarial_count",
    "replace_with_adversarial",
]

ADVERSARIAL_KEY = "adversarial"
"""Output key of the ``(B,)`` bool mask of the samples that were replaced by adversarial examples."""

ATTACK_NAMES = ("pgd", "fgsm_rs", "fgsm", "bim")

AttackFactory = Callable[[nn.Module, float], Callable[..., torch.Tensor]]
"""``factory(model, eps) -> attack`` with ``attack(images, labels) -> adversarial images`` (torchattacks-like)."""


# ---------------------------------------------------------------------------------------------------------------------
# attack construction


@dataclass(frozen=True)
class AttackConfig:
    """What crafts the adversarial examples, from plain (JSON-friendly) values.

    Args:
        name: ``"pgd"`` (uniform random start, ``steps`` steps of ``step_size``), ``"fgsm_rs"`` (fast AT of Wong et
            al. 2020: random start, one step of 1.25 eps; this is PGD with one step), ``"fgsm"`` (one step of eps from
            the clean image) or ``"bim"`` (PGD without random start, step eps/10).
        steps: gradient steps of ``"pgd"``/``"bim"``; ``None`` gives ``default_steps``. Must be ``None`` or 1 for
            the FGSM variants.
        step_size: absolute step in [0, 1] units, the same for every eps of a schedule; ``None`` (default) gives a
            fraction of the current eps: eps/4 for PGD (Table S4), 1.25 eps for FGSM-RS, eps/10 for BIM.
        restarts: random starts of ``"pgd"``/``"fgsm_rs"`` (Table S4: 1); the strongest one is kept per sample.
        default_steps: steps used when ``steps`` is ``None`` (7 for training as Table S4, 10 for evaluation as S1).
    """

    name: str = "pgd"
    steps: int | None = None
    step_size: float | None = None
    restarts: int = 1
    default_steps: int = 7

    def __post_init__(self) -> None:
        if self.name not in ATTACK_NAMES:
            raise ValueError(f"attack must be one of {ATTACK_NAMES} or a callable factory, got {self.name!r}")
        if self.name in ("fgsm", "fgsm_rs") and self.steps not in (None, 1):
            raise ValueError(f"attack {self.name!r} takes one step, got steps={self.steps}")
        if self.steps is not None and (int(self.steps) != self.steps or self.steps < 1):
            raise ValueError(f"steps must be a positive integer, got {self.steps}")
        if self.step_size is not None:
            check_eps(self.step_size, "step_size")
        if self.name in ("fgsm", "bim") and self.restarts != 1:
            raise ValueError(f"attack {self.name!r} has no random start, restarts must be 1")

    @property
    def num_steps(self) -> int:
        """Input-gradient passes per attacked sample (per restart)."""
        if self.name in ("fgsm", "fgsm_rs"):
            return 1
        return self.default_steps if self.steps is None else int(self.steps)

    def build(self, model: nn.Module, eps: float, use_predicted_labels: bool = False) -> Callable[..., torch.Tensor]:
        """The attack for ``model`` at radius ``eps``: ``attack(images, labels) -> adversarial images``."""
        if self.name == "fgsm":
            return FGSM(model, eps, use_predicted_labels=use_predicted_labels)
        if self.name == "bim":
            return BIM(model, eps, self.num_steps, self.step_size, use_predicted_labels=use_predicted_labels)
        step = self.step_size
        if step is None and self.name == "fgsm_rs":
            step = 1.25 * eps
        return PGD(
            model, eps, self.num_steps, step, random_start=True, restarts=self.restarts,
            use_predicted_labels=use_predicted_labels,
        )


def _attack_config(attack: str | AttackFactory, steps: int | None, step_size: float | None, restarts: int,
                   default_steps: int) -> AttackConfig | AttackFactory:
    if callable(attack):
        return attack
    return AttackConfig(str(attack).lower(), steps, step_size, restarts, default_steps)


def _attack_name(attack: AttackConfig | AttackFactory) -> str:
    return attack.name if isinstance(attack, AttackConfig) else getattr(attack, "__name__", type(attack).__name__)


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


# ---------------------------------------------------------------------------------------------------------------------
# trainer


class MixedAdversarialTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` on batches in which a fraction ``ratio`` of the samples is replaced by adversarial
    examples crafted, in eval mode, against the current network ("mixed" clean/adversarial batches; named so as not
    to clash with MONAI's GAN-style ``AdversarialTrainer``).

    Per iteration: ``prepare_batch`` as usual -> pick ``k = round(ratio * B)`` samples (halves rounded up) -> craft
    them with the attack at the current epoch's eps using the batch labels -> the unchanged
    ``SupervisedTrainer`` iteration (train mode, ``zero_grad``, forward, loss, backward, step, every event) on the
    mixed batch. The loss is the usual batch mean over all ``B`` samples, clean and adversarial alike.

    Which samples: ``selection="random"`` (default) draws a random subset with ``torch.randperm`` (global RNG, so
    ``set_determinism`` makes it reproducible); it stays unbiased with unshuffled or class-ordered (balanced)
    batches. ``selection="first"`` takes the first ``k`` samples, which is random only after a shuffling loader.

    What an iteration did is in ``engine.state.adversarial`` (``{"count": k, "eps": eps, "attack": name,
    "mask": (B,) bool}``, set before the forward pass) and ``output["adversarial"]`` (the ``(B,)`` bool mask, from
    ``FORWARD_COMPLETED`` on, decollated with the rest of the output). ``output["image"]`` holds the mixed images,
    ``engine.state.batch`` the clean batch from the loader. With eps 0 (start of a warm-up or schedule) or ``k = 0``
    nothing is crafted and the count is 0.

    Args:
        device ... accumulation_steps: as ``monai.engines.SupervisedTrainer``.
        eps: L-infinity radius in [0, 1] intensity units (Table S4: CT 0.003, mammography 0.002, MRI 0.004). Needed
            unless ``eps_schedule`` is given.
        attack: ``"pgd"`` (default), ``"fgsm_rs"`` (fast AT, Wong et al. 2020: uniform random start in the ball, one
            step of 1.25 eps), ``"fgsm"``, ``"bim"``, or a factory ``factory(model, eps) -> attack`` with
            ``attack(images, labels) -> adversarial images``; such an attack must itself run the model in eval mode
            and take input gradients only (torchattacks 3.5.1 attacks do).
        ratio: fraction of each batch replaced, in [0, 1] (default 0.5 as in the paper; 1.0 = Madry et al.).
        steps: PGD/BIM steps (default 7, Table S4).
        step_size: absolute step; default a fraction of the current eps (PGD eps/4, FGSM-RS 1.25 eps).
        restarts: random starts (default 1, Table S4).
        selection: ``"random"`` (default) or ``"first"``, see above.
        eps_warmup_epochs: ``N > 0``: eps grows linearly over the first ``N`` epochs, epoch ``e <= N`` (1-based)
            uses ``eps_warmup_start + (eps - eps_warmup_start) * e / N``, later epochs ``eps``.
        eps_warmup_start: eps the warm-up starts from (reached at "epoch 0"; default 0).
        eps_schedule: piecewise-constant eps as ``[[first_epoch, eps], ...]`` with increasing 1-based epochs starting
            at 1; an epoch uses the entry with the largest ``first_epoch <= epoch``. E.g. the public code's LIDC run:
            ``[[1, 0.001], [151, 0.002]]``. Not combinable with ``eps_warmup_epochs``; ``eps``, if also given, must
            equal the last entry (``self.eps`` is set to it).
        input_space: how the network input follows from the [0, 1] image ``u`` the attacks perturb (an
            :class:`~monai_adv.input_space.InputSpace`, ``ZScoreInputSpace()``, or a pair ``(low, high)``);
            ``None`` (default): the network reads [0, 1] images, attacked as they are. A factory ``attack`` is
            given the model as a function of ``u`` and called on ``u``.

    The attacks call ``inferer(x, network, *args, **kwargs)`` directly (unwrapping ``DistributedDataParallel``;
    extra arguments from ``prepare_batch`` that are per-sample tensors ``(B, ...)`` are restricted to the attacked
    samples) and use cross-entropy (BCE-with-logits for a single logit), not ``loss_function``. Labels must be class
    indices.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: nn.Module,
        optimizer: Optimizer,
        loss_function: Callable,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        iteration_update: Callable[[Engine, Any], Any] | None = None,
        inferer: Inferer | None = None,
        postprocessing: Transform | None = None,
        key_train_metric: dict[str, Metric] | None = None,
        additional_metrics: dict[str, Metric] | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        event_names: list[str | EventEnum | type[EventEnum]] | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = True,
        optim_set_to_none: bool = False,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
        compile: bool = False,
        compile_kwargs: dict | None = None,
        accumulation_steps: int = 1,
        *,
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
    ) -> None:
        self.adversarial_batches = AdversarialBatches(
            eps, attack, ratio, steps, step_size, restarts, selection, eps_warmup_epochs, eps_warmup_start,
            eps_schedule, input_space, default_steps=7,
        )
        super().__init__(
            device=device, max_epochs=max_epochs, train_data_loader=train_data_loader, network=network,
            optimizer=optimizer, loss_function=loss_function, epoch_length=epoch_length, non_blocking=non_blocking,
            prepare_batch=prepare_batch, iteration_update=iteration_update, inferer=inferer,
            postprocessing=postprocessing, key_train_metric=key_train_metric, additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn, train_handlers=None, amp=amp, event_names=event_names,
            event_to_attr=event_to_attr, decollate=decollate, optim_set_to_none=optim_set_to_none,
            to_kwargs=to_kwargs, amp_kwargs=amp_kwargs, compile=compile, compile_kwargs=compile_kwargs,
            accumulation_steps=accumulation_steps,
        )
        self.adversarial_batches.attach(self)  # before the user's handlers: they all see output["adversarial"]
        if train_handlers is not None:
            self._register_handlers(train_handlers)

    eps = property(lambda self: self.adversarial_batches.eps, doc="the final eps (of a schedule or warm-up)")
    attack = property(lambda self: self.adversarial_batches.attack)
    ratio = property(lambda self: self.adversarial_batches.ratio)
    input_space = property(lambda self: self.adversarial_batches.input_space)

    def eps_at(self, epoch: int) -> float:
        """Eps used during the 1-based ``epoch``, by ``eps_schedule`` or the linear warm-up (see class doc)."""
        return self.adversarial_batches.eps_at(epoch)


# ---------------------------------------------------------------------------------------------------------------------
# evaluator


class AdversarialEvaluator(SupervisedEvaluator):
    """``SupervisedEvaluator`` on adversarial examples crafted white-box against the current network: every sample
    of every batch is replaced by ``attack(image, label)`` before the usual (no-grad, eval-mode) forward pass, so
    the key metric is robust accuracy and ``CheckpointSaver`` selects checkpoints by it. Crafting runs with
    ``torch.enable_grad()`` and the network in eval mode; the network's gradients and BatchNorm statistics are
    untouched.

    ``output["image"]`` holds the adversarial images, ``engine.state.batch`` the clean batch,
    ``output["adversarial"]`` a ``(B,)`` all-True mask and ``engine.state.adversarial`` ``{"count", "eps", "attack",
    "mask"}``. Batches without labels are attacked at the network's clean predictions.

    Args:
        device ... compile_kwargs: as ``monai.engines.SupervisedEvaluator``.
        eps: L-infinity radius in [0, 1] intensity units (required).
        attack: ``"pgd"`` (default; random start), ``"bim"``, ``"fgsm"``, ``"fgsm_rs"`` or a factory
            ``factory(model, eps) -> attack``.
        steps: PGD/BIM steps (default 10, Table S1).
        step_size: absolute step; default eps/4 for PGD (eps/10 for BIM).
        restarts: PGD random restarts (default 1); more gives a stronger, slower evaluation.
        use_predicted_labels: attack the clean predictions instead of the labels (what the paper's code did with
            ART); default False (attack the true labels).
        input_space: as for :class:`MixedAdversarialTrainer`; ``output["image"]`` holds the network inputs
            ``input_space.to_network(u_adv)``.

    A validation ``eps`` should be the training eps (or the final eps of a schedule): robust accuracy at a larger
    eps is not what the training optimises.
    """

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader: Iterable | DataLoader,
        network: nn.Module,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        iteration_update: Callable[[Engine, Any], Any] | None = None,
        inferer: Inferer | None = None,
        postprocessing: Transform | None = None,
        key_val_metric: dict[str, Metric] | None = None,
        additional_metrics: dict[str, Metric] | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        val_handlers: Sequence | None = None,
        amp: bool = False,
        mode: ForwardMode | str = ForwardMode.EVAL,
        event_names: list[str | EventEnum | type[EventEnum]] | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = True,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
        compile: bool = False,
        compile_kwargs: dict | None = None,
        *,
        eps: float,
        attack: str | AttackFactory = "pgd",
        steps: int | None = None,
        step_size: float | None = None,
        restarts: int = 1,
        use_predicted_labels: bool = False,
        input_space: InputSpace | Sequence[float] | None = None,
    ) -> None:
        self.adversarial_batches = AdversarialBatches(
            eps, attack, 1.0, steps, step_size, restarts, input_space=input_space,
            use_predicted_labels=use_predicted_labels, default_steps=10,
        )
        super().__init__(
            device=device, val_data_loader=val_data_loader, network=network, epoch_length=epoch_length,
            non_blocking=non_blocking, prepare_batch=prepare_batch, iteration_update=iteration_update,
            inferer=inferer, postprocessing=postprocessing, key_val_metric=key_val_metric,
            additional_metrics=additional_metrics, metric_cmp_fn=metric_cmp_fn, val_handlers=None, amp=amp,
            mode=mode, event_names=event_names, event_to_attr=event_to_attr, decollate=decollate,
            to_kwargs=to_kwargs, amp_kwargs=amp_kwargs, compile=compile, compile_kwargs=compile_kwargs,
        )
        self.adversarial_batches.attach(self)
        if val_handlers is not None:
            self._register_handlers(val_handlers)

    eps = property(lambda self: self.adversarial_batches.eps)
    attack = property(lambda self: self.adversarial_batches.attack)
    input_space = property(lambda self: self.adversarial_batches.input_space)
    use_predicted_labels = property(lambda self: self.adversarial_batches.use_predicted_labels)
