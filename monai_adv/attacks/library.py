"""Any torchattacks 3.5.1 attack by name, behind this package's conventions.

:class:`LibraryAttack` adds what torchattacks leaves to the caller: the [0, 1] input check, label checks, predicted
labels, single-logit binary models (shown to torchattacks as two logits ``[0, z]``), per-module eval mode, parameter
``.grad`` left as it was (CW, DeepFool, FAB call ``.backward()``), the caller's global RNG left as it was (APGD, APGDT,
FAB and Square re-seed it), and clear errors for the cases torchattacks 3.5.1 cannot handle (found by running them):

* 2-D images ``(B, C, H, W)`` only: Square, APGD, APGDT, AutoAttack, OnePixel, Pixle, DIFGSM, TIFGSM
  (on volumes they fail with "too many values to unpack" or a 6-D conv3d input);
* DLR losses need 3 classes, targeted DLR 4: APGD(loss="dlr") >= 3, APGDT >= 4, AutoAttack >= 4 (>= 3 for
  ``version="rand"``), otherwise "IndexError: index -3 is out of bounds";
* JSMA untargeted targets ``(y + 1) % 10``: needs >= 10 classes; TIFGSM's kernel needs 3 input channels.

``n_classes`` (FAB, APGDT, AutoAttack, default 10 in torchattacks) is set from the model's output when not given.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any

import torch
from torch import nn

from .checks import check_images, check_labels, plain_tensor, restore_type
from .loss import num_classes, predict
from .model_state import eval_mode, preserved_grads

__all__ = ["LibraryAttack", "TwoLogits", "UnsupportedAttackError", "library_attack_names"]

_IMAGES_2D_ONLY = frozenset({"Square", "APGD", "APGDT", "AutoAttack", "OnePixel", "Pixle", "DIFGSM", "TIFGSM"})
_RESEEDS_GLOBAL_RNG = frozenset({"APGD", "APGDT", "FAB", "Square", "AutoAttack"})
_NOT_BY_NAME = frozenset({"MultiAttack", "LGV"})  # wrappers: they take attacks or a data loader, not (model, eps)
_TARGETED_MODES = {
    "random": "set_mode_targeted_random",
    "least_likely": "set_mode_targeted_least_likely",
    "label": "set_mode_targeted_by_label",
}


class UnsupportedAttackError(ValueError):
    """torchattacks cannot run this attack on this model or input (a known limitation, or a failure inside it)."""


def _torchattacks() -> Any:
    try:
        import torchattacks
    except ImportError as err:  # pragma: no cover - torchattacks is a project dependency
        raise ImportError("LibraryAttack needs torchattacks (pip install --no-deps torchattacks==3.5.1)") from err
    return torchattacks


def library_attack_names() -> list[str]:
    """Names of the torchattacks attacks :class:`LibraryAttack` can build."""
    return sorted(n for n in _torchattacks().__all__ if n not in _NOT_BY_NAME)


class TwoLogits(nn.Module):
    """Show a single-logit binary classifier ``(B, 1)`` as two logits ``(B, 2) = [0, z]`` (softmax of which is
    ``[1 - sigmoid(z), sigmoid(z)]``, so cross-entropy equals BCE-with-logits). ``(B, K >= 2)`` passes through."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        return torch.cat([torch.zeros_like(z), z], dim=1) if z.ndim == 2 and z.shape[1] == 1 else z


class LibraryAttack:
    """A torchattacks 3.5.1 attack by name: ``LibraryAttack("Square", model, eps=0.004)(images, labels)``.

    Args:
        name: torchattacks class name, case-insensitive (see :func:`library_attack_names`).
        model: classifier, ``(B, C, *spatial)`` images in [0, 1] -> ``(B, K)`` logits or one logit ``(B, 1)``.
        eps: perturbation size passed to torchattacks as ``eps`` (omit for attacks without one, e.g. DeepFool).
        use_predicted_labels: attack the clean predictions instead of the given labels.
        targeted: ``None`` (untargeted), ``"random"``, ``"least_likely"`` or ``"label"`` (the labels passed are the
            targets), for attacks that support it.
        check_known_limits: raise :class:`UnsupportedAttackError` before running when the case is a known
            torchattacks limitation (default). Failures inside torchattacks are turned into the same error either way.
        **kwargs: other constructor arguments of the torchattacks class (``steps``, ``n_queries``, ``loss``, ...).

    Shapes: images ``(B, C, H, W)`` or ``(B, C, D, H, W)`` in [0, 1]; labels ``(B,)`` or ``None``; output like images.
    """

    def __init__(
        self,
        name: str,
        model: nn.Module,
        eps: float | None = None,
        use_predicted_labels: bool = False,
        targeted: str | None = None,
        check_known_limits: bool = True,
        **kwargs: Any,
    ) -> None:
        ta = _torchattacks()
        names = {n.lower(): n for n in library_attack_names()}
        if name.lower() not in names:
            raise ValueError(f"unknown torchattacks attack {name!r}; available: {', '.join(names.values())}")
        self.name = names[name.lower()]
        self.cls = getattr(ta, self.name)
        if eps is not None:
            kwargs["eps"] = eps
        params = inspect.signature(self.cls.__init__).parameters
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            accepted = [p for p in params if p not in ("self", "model")]
            raise ValueError(f"torchattacks.{self.name} does not take {unknown}; it takes {accepted}")
        if targeted is not None and targeted not in _TARGETED_MODES:
            raise ValueError(f"targeted must be None or one of {sorted(_TARGETED_MODES)}, got {targeted!r}")
        self.model = model
        self.kwargs = kwargs
        self.use_predicted_labels = use_predicted_labels
        self.targeted = targeted
        self.check_known_limits = check_known_limits
        self._wrapped = TwoLogits(model)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"LibraryAttack({self.name!r}{', ' + args if args else ''})"

    def known_problem(self, images: torch.Tensor, n_classes: int) -> str | None:
        """Why torchattacks 3.5.1 cannot run this attack on ``images`` with ``n_classes`` classes, or ``None``."""
        name, kw = self.name, self.kwargs
        if name in _IMAGES_2D_ONLY and images.ndim != 4:
            return f"torchattacks.{name} works on 2-D images (B, C, H, W) only, got shape {tuple(images.shape)}"
        need, why = 0, ""
        if name == "APGD" and kw.get("loss", "ce") == "dlr":
            need, why = 3, "its DLR loss uses the 3rd-largest logit"
        elif name == "APGDT" or (name == "AutoAttack" and kw.get("version", "standard") in ("standard", "plus")):
            need, why = 4, "its targeted DLR loss (APGDT) uses the 4th-largest logit"
        elif name == "AutoAttack":
            need, why = 3, "its APGD-DLR uses the 3rd-largest logit"
        elif name == "JSMA" and self.targeted is None:
            need, why = 10, "untargeted JSMA aims at class (y + 1) % 10"
        if n_classes < need:
            return (
                f"torchattacks.{name} needs at least {need} classes ({why}), this model has {n_classes}; "
                "for binary models use APGD(loss='ce'), FAB or Square"
            )
        if name == "TIFGSM" and images.shape[1] != 3:
            return f"torchattacks.TIFGSM's smoothing kernel needs 3 input channels, got {images.shape[1]}"
        return None

    def _build(self, n_classes: int) -> Any:
        kwargs = dict(self.kwargs)
        if "n_classes" in inspect.signature(self.cls.__init__).parameters:
            kwargs.setdefault("n_classes", n_classes)
        attack = self.cls(self._wrapped, **kwargs)
        if self.targeted is not None:
            getattr(attack, _TARGETED_MODES[self.targeted])(quiet=True)
        return attack

    def __call__(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Adversarial images, same shape, dtype, device and tensor type as ``images``."""
        x = plain_tensor(images).detach()
        check_images(x)
        with eval_mode(self.model), torch.no_grad():
            clean = self._wrapped(x)
        k = num_classes(clean)
        y = predict(clean) if labels is None or self.use_predicted_labels else check_labels(labels, x.shape[0], k)
        y = y.to(x.device)
        problem = self.known_problem(x, k) if self.check_known_limits else None
        if problem is not None:
            raise UnsupportedAttackError(problem)
        attack = self._build(k)
        keep_rng = (
            torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else [])
            if self.name in _RESEEDS_GLOBAL_RNG
            else contextlib.nullcontext()
        )
        try:
            with eval_mode(self.model), preserved_grads(self.model), keep_rng:
                adv = attack(x, y)
        except (IndexError, RuntimeError, ValueError, TypeError) as err:
            hint = self.known_problem(x, k)
            raise UnsupportedAttackError(
                f"torchattacks.{self.name} failed on images of shape {tuple(x.shape)} with a {k}-class model: "
                f"{type(err).__name__}: {err}" + (f". Known limitation: {hint}" if hint else "")
            ) from err
        adv = plain_tensor(adv).detach().to(device=x.device, dtype=x.dtype)
        if adv.shape != x.shape:
            raise UnsupportedAttackError(
                f"torchattacks.{self.name} returned shape {tuple(adv.shape)} for input {tuple(x.shape)}"
            )
        return restore_type(images, adv)
