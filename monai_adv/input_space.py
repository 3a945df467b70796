"""The space the attacks step and clip in, for a network whose input is not [0, 1].

The paper's attacks perturb an image ``u`` in [0, 1] (a fraction of the intensity window) with ``eps`` in the same
units. A bundle's preprocessing may hand the network something else: raw HU, a ``ScaleIntensityRanged`` to [-1, 1],
or a z-score (``NormalizeIntensityd``). An :class:`InputSpace` states how the network input ``x`` follows from ``u``:

* :class:`InputSpace` (``low``, ``high``): ``x = low + u * (high - low)``, the same for every image (a fixed window,
  a global mean and standard deviation). ``low=0, high=1`` is the paper's case and leaves the model untouched.
* :class:`ZScoreInputSpace`: ``x = (u - mean(u)) / std(u)`` per image, recomputed on the attacked image as
  ``NormalizeIntensityd`` would; ``u`` is recovered from ``x`` by its own minimum and maximum, so this needs a ``u``
  that spans [0, 1] (min-max or percentile scaling with clipping before the z-score).

Attacks then run on ``space.wrap(model)`` and ``space.to_unit(x)`` and hand ``space.to_network(u_adv)`` back, so
``eps`` is always a fraction of the window; ``native_per_unit`` converts it to native units (HU per unit) for the
tables, or is ``None`` where the window differs per image.

:func:`derive` reads the space off a bundle's preprocessing and raises :class:`InputSpaceError`, naming the config id
to set, whenever it cannot tell.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "InputSpace", "ZScoreInputSpace", "InputSpaceError", "derive", "SPACE_ID", "PER_IMAGE_UNITS", "WINDOW_UNITS",
]

SPACE_ID = "adv_input_space"
"""The config id of the overlays' input space: the one a user sets when :func:`derive` cannot tell."""

PER_IMAGE_UNITS = "fraction of each image's own intensity range"
"""The unit of eps when each image is scaled by its own range (``ScaleIntensityd``, percentiles, a z-score)."""
WINDOW_UNITS = "fraction of the intensity window (native scale not stated)"
"""The unit of eps for a fixed window whose native scale nobody stated."""


class InputSpaceError(ValueError):
    """The network's input space cannot be derived, or an input does not fit the stated space."""


def _per_sample(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def _expand(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, *([1] * (like.ndim - 1)))


class _InputSpaceModel(nn.Module):
    """``model(space.to_network(u))``: the network seen from the attack's [0, 1] space."""

    def __init__(self, model: nn.Module, space: InputSpace) -> None:
        super().__init__()
        self.model = model
        self.space = space

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.model(self.space.to_network(u))


class InputSpace:
    """A fixed affine window: the network input is ``x = low + u * (high - low)`` for ``u`` in [0, 1].

    Args:
        low: the network input of the window's lower end (``u = 0``); 0 for the paper's [0, 1] images.
        high: the network input of the window's upper end (``u = 1``); ``high > low``.
        native_per_unit: native units per unit of ``u`` (1400 for a [-1000, 400] HU window); ``None`` when unknown
            or different per image. Tables then give eps as a fraction of the window only.
        native_units: the name of the native unit (``"HU"``); without ``native_per_unit``, how eps is read instead
            (default :data:`WINDOW_UNITS`).
        tolerance: how far (in units of ``u``) a clean input may lie outside the window before it is refused.
    """

    def __init__(
        self,
        low: float = 0.0,
        high: float = 1.0,
        native_per_unit: float | None = None,
        native_units: str | None = None,
        tolerance: float = 1e-5,
    ) -> None:
        low, high = float(low), float(high)
        if not high > low:
            raise InputSpaceError(f"InputSpace: high ({high:g}) must exceed low ({low:g})")
        if native_per_unit is not None and not float(native_per_unit) > 0:
            raise InputSpaceError(f"InputSpace: native_per_unit must be positive, got {native_per_unit!r}")
        self.low, self.high = low, high
        self.native_per_unit = None if native_per_unit is None else float(native_per_unit)
        self.native_units = native_units if self.native_per_unit is not None else (native_units or WINDOW_UNITS)
        self.tolerance = float(tolerance)

    @property
    def is_unit(self) -> bool:
        """Whether the network input already is ``u`` (the attacks then see the model unchanged)."""
        return self.low == 0.0 and self.high == 1.0

    def to_network(self, u: torch.Tensor) -> torch.Tensor:
        """The network input of ``u`` (differentiable)."""
        return u if self.is_unit else self.low + u * (self.high - self.low)

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """``u`` of a clean network input ``x``; raises :class:`InputSpaceError` when ``x`` leaves the window."""
        u = x if self.is_unit else (x - self.low) / (self.high - self.low)
        lo, hi = (float(v) for v in torch.aminmax(u.detach()))
        if not (lo >= -self.tolerance and hi <= 1.0 + self.tolerance):
            raise InputSpaceError(
                f"network inputs span [{float(self.to_network(torch.tensor(lo))):.6g}, "
                f"{float(self.to_network(torch.tensor(hi))):.6g}], outside the stated input space {self}: set "
                f"{SPACE_ID} to the window the preprocessing maps to (low, high)"
            )
        return u.clamp(0.0, 1.0) if not self.is_unit else u

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` as a function of ``u`` (``model`` itself for the [0, 1] space)."""
        return model if self.is_unit else _InputSpaceModel(model, self)

    def native(self, eps: float) -> float | None:
        """``eps`` (a fraction of the window) in native units, or ``None``."""
        return None if self.native_per_unit is None else eps * self.native_per_unit

    def __repr__(self) -> str:
        native = ("" if self.native_per_unit is None
                  else f", {self.native_per_unit:g} {self.native_units or 'native units'} per unit")
        return f"{type(self).__name__}(low={self.low:g}, high={self.high:g}{native})"


class ZScoreInputSpace(InputSpace):
    """A per-image z-score of a [0, 1] image: ``x = (u - mean(u)) / std(u)`` over each image's channels and voxels
    (population standard deviation; a constant image is divided by 1), as MONAI's ``NormalizeIntensityd`` with its
    defaults. ``u = (x - min x) / (max x - min x)``: the clean ``u`` must span [0, 1] (see the module doc).
    """

    def __init__(self, native_per_unit: float | None = None, native_units: str | None = None) -> None:
        super().__init__(0.0, 1.0, native_per_unit, native_units or (None if native_per_unit else PER_IMAGE_UNITS))

    @property
    def is_unit(self) -> bool:
        return False

    def to_network(self, u: torch.Tensor) -> torch.Tensor:
        flat = _per_sample(u)
        mean = flat.mean(dim=1)
        std = flat.std(dim=1, unbiased=False)
        std = torch.where(std == 0, torch.ones_like(std), std)
        return (u - _expand(mean, u)) / _expand(std, u)

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        flat = _per_sample(x)
        lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
        span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
        return ((x - _expand(lo, x)) / _expand(span, x)).clamp(0.0, 1.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(per-image z-score of a [0, 1] image)"


# ---------------------------------------------------------------------------------------------------------------------
# derivation from a bundle's preprocessing

_WINDOWS = {"ScaleIntensityRange", "ScaleIntensityRanged"}
_PER_IMAGE_RANGES = {"ScaleIntensity", "ScaleIntensityd", "ScaleIntensityRangePercentiles",
                     "ScaleIntensityRangePercentilesd"}
_ZSCORES = {"NormalizeIntensity", "NormalizeIntensityd"}
_RESAMPLING = ("Resize", "Spacing", "Zoom", "Rotate", "Affine", "Resample", "Orientation")


def _flatten(transforms: Any) -> list[Any]:
    inner = getattr(transforms, "transforms", None)
    if inner is None and isinstance(transforms, Iterable) and not isinstance(transforms, (str, bytes)):
        inner = transforms
    if inner is None:
        return [transforms]
    return [t for item in inner for t in _flatten(item)]


def _changes_intensity(name: str) -> bool:
    return any(word in name for word in ("Intensity", "Normalize", "Histogram", "Contrast", "Gamma"))


def _scalar(value: Any, what: str, transform: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    raise InputSpaceError(f"{transform}: a per-channel {what} is not supported by derive(); set {SPACE_ID}")


def _inner(transform: Any) -> Any:
    """The array transform of a dictionary transform (``ScaleIntensityRanged.scaler`` ...), else ``transform``."""
    for attr in ("scaler", "normalizer", "transform"):
        inner = getattr(transform, attr, None)
        if inner is not None and not callable(getattr(inner, "transforms", None)):
            return inner
    return transform


def derive(preprocessing: Any, native_units: str | None = None, config_id: str = "validate#preprocessing") -> InputSpace:
    """The input space of a bundle whose network reads the output of ``preprocessing`` (a ``Compose`` or a list).

    Recognised: one window (``ScaleIntensityRanged`` with ``clip=True``: fixed, ``native_per_unit = a_max - a_min``
    in ``native_units``; ``ScaleIntensityd`` or ``ScaleIntensityRangePercentilesd`` with clipping: per image), then
    optionally ``NormalizeIntensityd`` (with scalar ``subtrahend`` and ``divisor``: a fixed window; without: a
    per-image z-score, which needs a per-image window before it and no resampling after it).

    Raises:
        InputSpaceError: no or several windows, an intensity transform it does not know, an unclipped window, a
            channel-wise or masked z-score, ...; the message names ``config_id`` and the id to set instead
            (:data:`SPACE_ID`).
    """
    window: tuple[str, float, float, float | None] | None = None  # (kind, low, high, native_per_unit)
    zscore: tuple[float, float] | None = None  # (subtrahend, divisor); (nan, nan) for per image
    resampled_after_zscore = None
    ask = f"set {SPACE_ID} (monai_adv.input_space.InputSpace(low=..., high=...) or ZScoreInputSpace())"
    for transform in _flatten(preprocessing):
        name = type(transform).__name__
        array = _inner(transform)
        if zscore is not None and any(word in name for word in _RESAMPLING):
            resampled_after_zscore = name
        if name in _WINDOWS or name in _PER_IMAGE_RANGES:
            if window is not None or zscore is not None:
                raise InputSpaceError(f"{config_id}: more than one intensity window ({name}); {ask}")
            if name in _WINDOWS:
                if not getattr(array, "clip", False):
                    raise InputSpaceError(f"{config_id}: {name} without clip=True leaves values outside its window; {ask}")
                a_min, a_max, b_min, b_max = (getattr(array, k) for k in ("a_min", "a_max", "b_min", "b_max"))
                if None in (b_min, b_max) or not b_max > b_min or not a_max > a_min:
                    raise InputSpaceError(f"{config_id}: {name} maps to no increasing range; {ask}")
                window = ("fixed", float(b_min), float(b_max), float(a_max) - float(a_min))
            elif name.startswith("ScaleIntensityRangePercentiles"):
                if not getattr(array, "clip", False) or getattr(array, "channel_wise", False):
                    raise InputSpaceError(f"{config_id}: {name} needs clip=True and channel_wise=False; {ask}")
                window = ("per_image", float(array.b_min), float(array.b_max), None)
            else:
                minv, maxv = getattr(array, "minv", None), getattr(array, "maxv", None)
                if minv is None or maxv is None or getattr(array, "factor", None) is not None \
                        or getattr(array, "channel_wise", False) or not maxv > minv:
                    raise InputSpaceError(f"{config_id}: {name} needs minv < maxv, no factor, channel_wise=False; {ask}")
                window = ("per_image", float(minv), float(maxv), None)
        elif name in _ZSCORES:
            if zscore is not None:
                raise InputSpaceError(f"{config_id}: more than one {name}; {ask}")
            if getattr(array, "nonzero", False) or getattr(array, "channel_wise", False):
                raise InputSpaceError(f"{config_id}: {name} with nonzero or channel_wise is not supported; {ask}")
            sub = _scalar(getattr(array, "subtrahend", None), "subtrahend", name)
            div = _scalar(getattr(array, "divisor", None), "divisor", name)
            if (sub is None) != (div is None):
                raise InputSpaceError(f"{config_id}: {name} with only one of subtrahend and divisor; {ask}")
            zscore = (sub, div) if sub is not None else (float("nan"), float("nan"))
        elif _changes_intensity(name):
            raise InputSpaceError(f"{config_id}: {name} changes intensities in a way derive() does not know; {ask}")
    if window is None:
        raise InputSpaceError(f"{config_id}: no intensity window found, so the valid input range is unknown; {ask}")
    kind, low, high, native_per_unit = window
    units = native_units if native_per_unit is not None else PER_IMAGE_UNITS
    if zscore is None:
        return InputSpace(low, high, native_per_unit, units)
    sub, div = zscore
    if sub == sub:  # a fixed subtrahend and divisor
        return InputSpace((low - sub) / div, (high - sub) / div, native_per_unit, units)
    if kind != "per_image":
        raise InputSpaceError(
            f"{config_id}: a per-image z-score after a fixed window cannot be inverted (the image need not span the "
            f"window); {ask}"
        )
    if resampled_after_zscore:
        raise InputSpaceError(
            f"{config_id}: {resampled_after_zscore} after the z-score changes each image's mean and spread; move it "
            f"before NormalizeIntensityd or {ask}"
        )
    return ZScoreInputSpace(native_per_unit, units)


def as_input_space(value: InputSpace | Sequence[float] | None) -> InputSpace:
    """``value`` as an :class:`InputSpace`: ``None`` is the paper's [0, 1], a pair ``(low, high)`` a fixed window."""
    if value is None:
        return InputSpace()
    if isinstance(value, InputSpace):
        return value
    if isinstance(value, Sequence) and len(value) == 2:
        return InputSpace(*value)
    raise InputSpaceError(f"{SPACE_ID} must be an InputSpace or a pair (low, high), got {value!r}")
