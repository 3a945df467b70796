"""The VGG16 classifier of Joel et al. 2022 (Table S2), for 2-D images and 3-D volumes.

The network takes inputs scaled to [0, 1] (after the CT window or intensity scaling) and normalises them in its first
layer, so an attack's epsilon means the same thing for every bundle.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["PaperVGG16", "IntensityNormalisation", "VGG16_BLOCKS", "load_imagenet_vgg16_weights"]

# (number of 3x3 conv layers, output channels) per block, as torchvision's "D" configuration and Table S2.
VGG16_BLOCKS: tuple[tuple[int, int], ...] = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
FC_FEATURES: tuple[int, int] = (4096, 1024)


class IntensityNormalisation(nn.Module):
    """``(x - mean) / std`` per channel, stored as buffers so it travels with the weights and TorchScript.

    Args:
        mean: one value, or one per channel.
        std: one value, or one per channel; must be positive.
        spatial_dims: 2 for images ``(B, C, H, W)``, 3 for volumes ``(B, C, D, H, W)``.
    """

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float], spatial_dims: int = 2) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, *([1] * spatial_dims))
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, *([1] * spatial_dims))
        if bool((std_t <= 0).any()):
            raise ValueError(f"std must be positive, got {std}")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _as_tuple(value: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * spatial_dims
    value = tuple(int(v) for v in value)
    if len(value) != spatial_dims:
        raise ValueError(f"input_size {value} must have {spatial_dims} entries for spatial_dims={spatial_dims}")
    return value


class PaperVGG16(nn.Module):
    """VGG16 of Table S2: 13 3x3 convolutions in 5 max-pooled blocks, dropout, then FC 4096 -> 1024 -> classes.

    At ``input_size=224``, ``in_channels=3``, ``num_classes=2`` and ``width=1`` it has exactly 121,676,610 parameters.
    The head follows the input size: 224 gives a 7x7x512 feature map, 116 gives 3x3x512, 32 gives 1x1x512.

    Args:
        spatial_dims: 2 for ``(B, C, H, W)`` images, 3 for ``(B, C, D, H, W)`` volumes.
        in_channels: input channels (1 for CT/MRI/mammography crops, 3 for RGB).
        num_classes: number of output logits. 1 gives a single-logit binary model.
        input_size: spatial size of the input, an int or one per dimension; at least 32 per dimension.
        width: multiplier on every conv and fully connected width (1.0 is the paper's network; 0.125 is a CPU demo).
        dropout: dropout probability on the last feature map and after the first FC layer (0.5 in the paper's code).
        batch_norm: add BatchNorm after every convolution (the VGG16-BN variant; not in the paper).
        norm_mean: mean subtracted from the [0, 1] input, one value or one per channel.
        norm_std: standard deviation the input is divided by, one value or one per channel.
        pretrained_path: optional local file of ImageNet VGG16 weights in torchvision's layout (``features.N``,
            ``classifier.N``). Only the convolutions are loaded; 1-channel inputs average the first conv's RGB filters.
            Needs ``width=1`` and ``spatial_dims=2``. Nothing is ever downloaded.

    Returns from ``forward``: logits of shape ``(B, num_classes)``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        input_size: int | Sequence[int] = 224,
        width: float = 1.0,
        dropout: float = 0.5,
        batch_norm: bool = False,
        norm_mean: float | Sequence[float] = 0.0,
        norm_std: float | Sequence[float] = 1.0,
        pretrained_path: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        if num_classes < 1 or in_channels < 1:
            raise ValueError(f"num_classes and in_channels must be >= 1, got {num_classes} and {in_channels}")
        size = _as_tuple(input_size, spatial_dims)
        if min(size) < 32:
            raise ValueError(f"input_size {size} is too small: five 2x poolings need at least 32 per dimension")
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        pool = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
        norm = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.input_size = size
        self.normalise = IntensityNormalisation(norm_mean, norm_std, spatial_dims)

        layers: list[nn.Module] = []
        channels = in_channels
        for n_convs, out_channels in VGG16_BLOCKS:
            out_channels = max(1, round(out_channels * width))
            for _ in range(n_convs):
                layers.append(conv(channels, out_channels, kernel_size=3, padding=1))
                if batch_norm:
                    layers.append(norm(out_channels))
                layers.append(nn.ReLU(inplace=True))
                channels = out_channels
            layers.append(pool(kernel_size=2, stride=2))
        self.features = nn.Sequential(*layers)

        feature_size = size
        for _ in VGG16_BLOCKS:
            feature_size = tuple(s // 2 for s in feature_size)
        flat = channels
        for s in feature_size:
            flat *= s
        fc1, fc2 = (max(1, round(f * width)) for f in FC_FEATURES)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Flatten(),
            nn.Linear(flat, fc1),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc1, fc2),
            nn.ReLU(inplace=True),
            nn.Linear(fc2, num_classes),
        )
        self._init_weights()
        if pretrained_path is not None:
            if width != 1.0 or spatial_dims != 2 or batch_norm:
                raise ValueError("ImageNet VGG16 weights need width=1, spatial_dims=2 and batch_norm=False")
            load_imagenet_vgg16_weights(self, pretrained_path)

    def _init_weights(self) -> None:
        # He initialisation on every layer: without BatchNorm, torchvision's N(0, 0.01) head (and Keras's glorot)
        # leaves a narrow 16-layer VGG16 stuck at chance when trained from scratch.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalise(x)
        x = self.features(x)
        return self.classifier(x)


def load_imagenet_vgg16_weights(model: PaperVGG16, path: str | os.PathLike) -> None:
    """Copy the 13 convolutions of a torchvision-layout VGG16 state dict from a local file into ``model``.

    The fully connected head is not loaded: its input size and output classes differ from ImageNet's.
    For ``model.in_channels == 1`` the first conv's RGB filters are averaged; other channel counts must be 3.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ImageNet VGG16 weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    source_convs = sorted(
        {k.rsplit(".", 1)[0] for k in state if k.startswith("features.") and k.endswith(".weight")},
        key=lambda k: int(k.split(".")[1]),
    )
    target_convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    if len(source_convs) != len(target_convs):
        raise ValueError(f"{path}: expected {len(target_convs)} conv layers, found {len(source_convs)}")
    with torch.no_grad():
        for name, conv in zip(source_convs, target_convs):
            weight, bias = state[name + ".weight"], state[name + ".bias"]
            if conv is target_convs[0] and weight.shape[1] != conv.in_channels:
                if conv.in_channels != 1:
                    raise ValueError(f"{path}: cannot map {weight.shape[1]} input channels to {conv.in_channels}")
                weight = weight.mean(dim=1, keepdim=True)
            if weight.shape != conv.weight.shape:
                raise ValueError(f"{path}: {name}.weight has shape {tuple(weight.shape)}, need {tuple(conv.weight.shape)}")
            conv.weight.copy_(weight)
            conv.bias.copy_(bias)
