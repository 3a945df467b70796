"""Reading network checkpoints safely, and loading them only into the architecture they were saved from.

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain containers only, never arbitrary pickled
objects (which could run code). Every failure raises one :class:`CheckpointError` naming the file and what is wrong:
a missing file, a file that is not a weights-only PyTorch checkpoint, non-finite weights, or a state dict that does
not fit the network (missing and unexpected keys, the first shape mismatches, and the architecture each side has).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from monai_adv.io import DataError

__all__ = [
    "CheckpointError", "read_checkpoint", "network_state", "load_network_state", "describe_state", "ModelIdentity",
    "IDENTITY_KEY", "checkpoint_identity", "checkpoint_class_names", "weights_digest",
]

# How many names of each kind of difference an error message lists.
LISTED = 5


class CheckpointError(DataError):
    """A checkpoint that cannot be used: the message names the file and what is wrong. A :class:`DataError`, so code
    that stops on bad input data stops on it too."""


def _torch_reason(error: BaseException) -> str:
    """The informative part of a ``torch.load`` error, without PyTorch's advice to retry with ``weights_only=False``."""
    text = str(error)
    match = re.search(r"unsupported GLOBAL (\S+)", text)
    if match:
        return (
            f"it holds a pickled Python object ({match.group(1)}) besides tensors and plain containers; it is not "
            "unpickled, since that could run arbitrary code"
        )
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(boilerplate)]
    reason = " ".join(lines) or type(error).__name__
    return reason if len(reason) <= 300 else reason[:297] + "..."


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(path, map_location, weights_only=True)`` with one :class:`CheckpointError` naming ``path`` for a
    missing file, a corrupt or truncated file, or one holding pickled objects other than tensors and containers.

    Args:
        path: the checkpoint file (``.pt``/``.pth``, PyTorch's zip format or its legacy format).
        map_location: passed to ``torch.load``. Default ``"cpu"``.

    Returns:
        What the file holds (for a bundle checkpoint, a state dict ``{name: Tensor}`` or ``{"model": state dict}``).
    """
    if not os.path.isfile(path):
        raise CheckpointError(
            f"{path}: checkpoint file not found (train the bundle first, or pass the file with --ckpt_path)"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: not a weights-only PyTorch checkpoint: {_torch_reason(e)}") from e
    except Exception as e:  # zip reader RuntimeError, EOFError for truncated legacy files, ...
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (corrupt or truncated?): {_torch_reason(e)}"
        ) from e


def network_state(checkpoint: Any, path: str | os.PathLike, key: str = "model") -> dict[str, torch.Tensor]:
    """The network's state dict inside a checkpoint: ``checkpoint[key]`` when present (MONAI's CheckpointSaver with
    several objects), else the checkpoint itself (Ignite stores a one-object save dict bare). Raises
    :class:`CheckpointError` naming ``path`` when that is not a mapping of names to tensors, or holds NaN or infinite
    values."""
    state = checkpoint.get(key, checkpoint) if isinstance(checkpoint, Mapping) else checkpoint
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(
            f"{path}: holds {type(state).__name__ if not isinstance(state, Mapping) else 'an empty dict'}, "
            f"not a network state dict (a mapping of parameter names to tensors, optionally under '{key}')"
        )
    not_tensors = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"{path}: not a network state dict: {len(not_tensors)} entries are not tensors, e.g. {not_tensors[:LISTED]}"
        )
    for name, tensor in state.items():
        if tensor.is_floating_point() or tensor.is_complex():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise CheckpointError(f"{path}: {name} has {bad} NaN or infinite values (a diverged training?)")
    return dict(state)


def describe_state(state: Mapping[str, torch.Tensor]) -> str:
    """A short architecture summary read from a state dict's shapes: spatial dimensionality, input channels and
    filters of the first convolution, and outputs of the last linear layer; ``"N tensors"`` always.

    For :class:`~monai_adv.networks.PaperVGG16` the first convolution has ``round(64 * width)`` filters.
    """
    weights = [(k, v) for k, v in state.items() if k.endswith("weight") and isinstance(v, torch.Tensor)]
    parts = []
    conv = next(((k, v) for k, v in weights if v.ndim >= 3), None)
    if conv is not None:
        spatial = conv[1].ndim - 2
        channels, filters = conv[1].shape[1], conv[1].shape[0]
        parts.append(f"{spatial}-D first conv {conv[0]} with {channels} input channels and {filters} filters")
    linear = [(k, v) for k, v in weights if v.ndim == 2]
    if linear:
        parts.append(f"{linear[-1][1].shape[0]} outputs ({linear[-1][0]})")
    parts.append(f"{len(state)} tensors")
    return ", ".join(parts)


def _describe_network(network: nn.Module) -> str:
    fields = [
        f"{name}={getattr(network, name)}"
        for name in ("spatial_dims", "in_channels", "num_classes", "input_size")
        if hasattr(network, name)
    ]
    return f"{type(network).__name__}({', '.join(fields)})"


def _unwrap(network: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel, so keys carry no ``module.`` prefix."""
    return network.module if isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else network


def weights_digest(network: nn.Module) -> str:
    """SHA-256 (hex) of ``network``'s state dict (inside ``DistributedDataParallel``): every key, dtype, shape and
    value in key order, computed on the CPU; equal weights give equal digests on any device and in any process."""
    import hashlib

    digest = hashlib.sha256()
    for key, value in sorted(_unwrap(network).state_dict().items()):
        tensor = value.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def load_network_state(
    network: nn.Module,
    path: str | os.PathLike,
    key: str = "model",
    map_location: Any = "cpu",
    checkpoint: Any = None,
) -> nn.Module:
    """Load the weights of checkpoint ``path`` into ``network``, strictly, after checking they fit.

    Keys and shapes are compared before anything is copied, so a checkpoint of another architecture (another width,
    number of classes or input channels, or another network altogether) raises one :class:`CheckpointError` that
    names the file, the missing and unexpected keys, the first shape mismatches and both architectures, and leaves
    ``network`` unchanged.

    Args:
        network: the module to load into (a DDP/DataParallel wrapper is unwrapped).
        path: the checkpoint file; named in errors.
        key: the entry holding the network in a multi-object checkpoint. Default ``"model"``.
        map_location: passed to ``torch.load``.
        checkpoint: what :func:`read_checkpoint` returned, if the caller already read the file.

    Returns:
        ``network``.
    """
    if checkpoint is None:
        checkpoint = read_checkpoint(path, map_location=map_location)
    state = network_state(checkpoint, path, key=key)
    target = _unwrap(network)
    expected = target.state_dict()
    if all(k.startswith("module.") for k in state) and not any(k.startswith("module.") for k in expected):
        state = {k[len("module.") :]: v for k, v in state.items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the network"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        problems = []
        if mismatched:
            problems.append(f"{len(mismatched)} shape mismatches, first: " + "; ".join(mismatched[:LISTED]))
        if missing:
            problems.append(f"{len(missing)} missing keys, first: {missing[:LISTED]}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys, first: {unexpected[:LISTED]}")
        raise CheckpointError(
            f"{path}: checkpoint of another architecture. The config builds {_describe_network(target)} "
            f"[{describe_state(expected)}]; the file holds [{describe_state(state)}]. " + ". ".join(problems)
            + ". Check network_width, network_batch_norm, image_size, class_names and in_channels against the run that "
            "saved it."
        )
    target.load_state_dict(state, strict=True)
    return network


# the checkpoint entry holding a ModelIdentity's state
IDENTITY_KEY = "identity"


def _network_name(network: nn.Module | str) -> str:
    if isinstance(network, str):
        return network
    module = _unwrap(network)
    return f"{type(module).__module__}.{type(module).__qualname__}"


class ModelIdentity:
    """Which bundle and network a checkpoint belongs to, and the classes its outputs mean.

    Saved beside the weights (``save_dict={"model": @network, "identity": @model_identity}``: Ignite's checkpoint
    calls :meth:`state_dict`, which holds strings only, so the file still loads with ``weights_only=True``) and
    compared when a checkpoint is loaded (:class:`~monai_adv.handlers.StrictCheckpointLoad` calls :meth:`check`).
    Two bundles with the same architecture (our five VGG16s) load each other's weights without a shape error; the
    identity makes that one clear :class:`CheckpointError` instead of a silently wrong model.

    Args:
        bundle: the bundle's name (its ``bundle_name`` id).
        network: the network (or its class's dotted path).
        class_names: the class names, in output order.
        required: a checkpoint without an identity (saved by another tool) is refused; ``False`` accepts it (its
            architecture is still checked by shape). A checkpoint with another identity is always refused.
        settings: config ids that shape the network (``{"image_size": [32, 32], "network_width": 0.125}``): a
            checkpoint trained with others is named by them (e.g. a model of the demo profile loaded without
            ``configs/demo.json``), not by a list of tensor shapes.
    """

    def __init__(
        self,
        bundle: str,
        network: nn.Module | str,
        class_names: Any,
        required: bool = True,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.bundle = str(bundle)
        self.network = _network_name(network)
        self.class_names = [str(c) for c in class_names]
        self.required = bool(required)
        self.settings = {str(k): _plain(v) for k, v in (settings or {}).items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle, "network": self.network, "class_names": list(self.class_names),
            "settings": dict(self.settings),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Compare (never change): raises :class:`CheckpointError` when ``state`` names another bundle, network or
        classes."""
        self.check({IDENTITY_KEY: state}, "checkpoint")

    def describe(self, state: Mapping[str, Any] | None = None) -> str:
        state = self.state_dict() if state is None else state
        classes = ", ".join(str(c) for c in state.get("class_names", []))
        return f"bundle {state.get('bundle')!r}, network {state.get('network')}, classes [{classes}]"

    def check(self, checkpoint: Any, path: str | os.PathLike) -> None:
        """Raise :class:`CheckpointError` naming ``path`` unless ``checkpoint`` (what :func:`read_checkpoint`
        returned) carries this identity."""
        state = checkpoint.get(IDENTITY_KEY) if isinstance(checkpoint, Mapping) else None
        if state is None:
            if self.required:
                raise CheckpointError(
                    f"{path}: the checkpoint does not say which bundle, network and classes it belongs to (it was not "
                    f"saved by a monai_adv bundle); this run is {self.describe()}. If you know it fits, set "
                    "require_model_identity to false"
                )
            return
        if not isinstance(state, Mapping):
            raise CheckpointError(f"{path}: its '{IDENTITY_KEY}' entry is not a mapping")
        mine = self.state_dict()
        differs = [k for k in ("bundle", "network", "class_names") if _comparable(state.get(k)) != _comparable(mine[k])]
        if differs:
            raise CheckpointError(
                f"{path}: checkpoint of another model: it was saved by {self.describe(state)}; this run is "
                f"{self.describe()} ({', '.join(differs)} differ). Point ckpt_path at this bundle's own checkpoint"
            )
        saved = state.get("settings") or {}
        changed = sorted(k for k in saved.keys() & self.settings.keys() if _plain(saved[k]) != self.settings[k])
        if changed:
            then = ", ".join(f"{k}={saved[k]}" for k in changed)
            now = ", ".join(f"{k}={self.settings[k]}" for k in changed)
            raise CheckpointError(
                f"{path}: the checkpoint was trained with {then}; this run builds {now}. Run with the settings it was "
                "trained with (a model of the CPU demo profile needs configs/demo.json among the config files)"
            )


def _plain(value: Any) -> Any:
    """A setting as plain JSON-like data (tuples as lists), so a saved and a configured value compare equal."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _comparable(value: Any) -> Any:
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else value


def checkpoint_identity(path: str | os.PathLike) -> dict[str, Any]:
    """The identity a checkpoint was saved with (:class:`ModelIdentity`'s state), read weights-only.

    Raises:
        CheckpointError: naming ``path``, for a missing or unreadable file, or one saved without an identity.
    """
    checkpoint = read_checkpoint(path, map_location="cpu")
    state = checkpoint.get(IDENTITY_KEY) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping) or not state.get("class_names"):
        raise CheckpointError(
            f"{path}: the checkpoint does not record its classes (not saved by a monai_adv bundle); set class_names "
            "on the command line"
        )
    return dict(state)


def checkpoint_class_names(path: str | os.PathLike, default: Sequence[str] | None = None) -> list[str]:
    """The class names a checkpoint's outputs mean, in output order: what inference labels its predictions with.

    ``default`` (e.g. the bundle's own classes) is returned when the file does not exist yet (so a network can be
    built before training, as MONAI's ``verify_net_in_out`` does) or records no classes (loading it then fails unless
    the identity check is switched off). Without ``default`` both raise :class:`CheckpointError`.
    """
    if default is not None and not os.path.isfile(path):
        return [str(c) for c in default]
    try:
        return [str(c) for c in checkpoint_identity(path)["class_names"]]
    except CheckpointError:
        if default is None or not os.path.isfile(path):
            raise
        checkpoint = read_checkpoint(path)  # unreadable files raise here, not return the default
        if isinstance(checkpoint, Mapping) and IDENTITY_KEY in checkpoint:
            raise
        return [str(c) for c in default]
