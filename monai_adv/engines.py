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

from collections.abc import Sequence
from typing import Any

from monai.engines import SupervisedEvaluator, SupervisedTrainer

from monai_adv.attacks.config import AttackFactory
from monai_adv.handlers.adversarial_batches import AdversarialBatches
from monai_adv.input_space import InputSpace

__all__ = ["MixedAdversarialTrainer", "AdversarialEvaluator"]

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
        args, kwargs: as ``monai.engines.SupervisedTrainer`` (``device``, ``max_epochs``, ``train_data_loader``,
            ``network``, ``optimizer``, ``loss_function``, ..., ``train_handlers``); give them by keyword after the
            first six.
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
        *args: Any,
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
        train_handlers: Sequence | None = None,
        **kwargs: Any,
    ) -> None:
        self.adversarial_batches = AdversarialBatches(
            eps, attack, ratio, steps, step_size, restarts, selection, eps_warmup_epochs, eps_warmup_start,
            eps_schedule, input_space, default_steps=7,
        )
        super().__init__(*args, train_handlers=None, **kwargs)
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
        args, kwargs: as ``monai.engines.SupervisedEvaluator`` (``device``, ``val_data_loader``, ``network``, ...,
            ``val_handlers``); give them by keyword after the first three.
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
        *args: Any,
        eps: float,
        attack: str | AttackFactory = "pgd",
        steps: int | None = None,
        step_size: float | None = None,
        restarts: int = 1,
        use_predicted_labels: bool = False,
        input_space: InputSpace | Sequence[float] | None = None,
        val_handlers: Sequence | None = None,
        **kwargs: Any,
    ) -> None:
        self.adversarial_batches = AdversarialBatches(
            eps, attack, 1.0, steps, step_size, restarts, input_space=input_space,
            use_predicted_labels=use_predicted_labels, default_steps=10,
        )
        super().__init__(*args, val_handlers=None, **kwargs)
        self.adversarial_batches.attach(self)
        if val_handlers is not None:
            self._register_handlers(val_handlers)

    eps = property(lambda self: self.adversarial_batches.eps)
    attack = property(lambda self: self.adversarial_batches.attack)
    input_space = property(lambda self: self.adversarial_batches.input_space)
    use_predicted_labels = property(lambda self: self.adversarial_batches.use_predicted_labels)
