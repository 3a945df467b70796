"""Dictionary transforms used by every bundle: loading a crop with named errors, and checking its label."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from monai_adv.datacheck import GRAYSCALE_KEY
from monai_adv.io import DataError, read_image, to_grayscale

__all__ = ["LoadCropd", "CheckLabeld"]


class LoadCropd(MapTransform):
    """Load each ``keys`` path with :func:`monai_adv.io.read_image` into a channel-first float32 ``MetaTensor``.

    Values stay in native units (Hounsfield units for CT, raw gray levels otherwise); the bundle's intensity transform
    maps them to [0, 1]. An item with ``"to_grayscale": true`` (set by ``scripts/prepare_folder.py --grayscale``)
    has an RGB image converted to one luma channel; nothing is converted otherwise. Errors name the item by
    ``id_key`` (the data-list id). The metadata holds the file name, format, modality and spacing, never patient
    identifiers.

    Args:
        keys: keys of the image paths.
        spatial_dims: 2 for images, 3 for volumes; singleton axes beyond it are squeezed, anything else raises.
        id_key: key of the item's id, used in error messages.
        channels: the number of channels the network takes (1 gray, 3 RGB); another count raises. ``None`` (the
            default) accepts any.
    """

    def __init__(
        self, keys: KeysCollection, spatial_dims: int = 2, id_key: str = "id", channels: int | None = None
    ) -> None:
        super().__init__(keys)
        self.spatial_dims = spatial_dims
        self.id_key = id_key
        self.channels = channels

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            item = d.get(self.id_key)
            array, meta = read_image(d[key], item=None if item is None else str(item), spatial_dims=self.spatial_dims)
            if d.get(GRAYSCALE_KEY) and array.shape[0] == 3:
                array = to_grayscale(array)
            if self.channels is not None and array.shape[0] != self.channels:
                name = f"{item} ({d[key]})" if item is not None else str(d[key])
                raise DataError(
                    f"{name}: expected {self.channels} channel(s), got {array.shape[0]} (array shape {array.shape})"
                )
            d[key] = MetaTensor(torch.from_numpy(array), meta=meta)
        return d


class CheckLabeld(MapTransform):
    """Raise :class:`~monai_adv.io.DataError` naming the item when a label is not an integer in ``[0, num_classes)``.

    Args:
        keys: keys of the integer class labels.
        num_classes: number of classes.
        id_key: key of the item's id, used in error messages.
    """

    def __init__(self, keys: KeysCollection, num_classes: int, id_key: str = "id") -> None:
        super().__init__(keys)
        self.num_classes = num_classes
        self.id_key = id_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            value = label.item() if isinstance(label, torch.Tensor) and label.numel() == 1 else label
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < self.num_classes:
                raise DataError(
                    f"{d.get(self.id_key, '<no id>')}: label {value!r} is outside the classes 0..{self.num_classes - 1}"
                )
        return d
