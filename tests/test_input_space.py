"""The input space read off a bundle's preprocessing (``monai_adv.input_space.derive``) with MONAI's own transforms,
and the unit eps is stated in when the native scale is unknown."""

from __future__ import annotations

import pytest
import torch
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    LoadImaged,
    NormalizeIntensityd,
    Resized,
    ScaleIntensityd,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
)

from monai_adv.input_space import (
    PER_IMAGE_UNITS,
    SPACE_ID,
    WINDOW_UNITS,
    InputSpace,
    InputSpaceError,
    ZScoreInputSpace,
    derive,
)

LOAD = [LoadImaged("image"), EnsureChannelFirstd("image")]


def test_a_clipped_hu_window_is_fixed_with_native_units():
    space = derive(Compose([*LOAD, ScaleIntensityRanged("image", -1000, 400, -1.0, 1.0, clip=True)]), "HU")
    assert type(space) is InputSpace and (space.low, space.high) == (-1.0, 1.0)
    assert space.native_per_unit == 1400.0 and space.native_units == "HU"
    assert space.native(0.004) == pytest.approx(5.6)


def test_a_fixed_normalisation_after_the_window_stays_fixed():
    space = derive([ScaleIntensityRanged("image", 0, 255, 0.0, 1.0, clip=True),
                    NormalizeIntensityd("image", subtrahend=0.5, divisor=0.25)])
    assert type(space) is InputSpace and (space.low, space.high) == (-2.0, 2.0)
    u = torch.rand(2, 1, 4, 4)
    assert torch.allclose(space.to_network(u), (u - 0.5) / 0.25)


@pytest.mark.parametrize("scaling", [ScaleIntensityd("image"),
                                     ScaleIntensityRangePercentilesd("image", 1, 99, 0.0, 1.0, clip=True)])
def test_a_per_image_range_says_so_in_its_unit(scaling):
    space = derive([*LOAD, scaling])
    assert type(space) is InputSpace and space.native_per_unit is None
    assert space.native_units == PER_IMAGE_UNITS
    zscore = derive([*LOAD, scaling, NormalizeIntensityd("image")])
    assert type(zscore) is ZScoreInputSpace and zscore.native_units == PER_IMAGE_UNITS


def test_a_fixed_window_without_native_scale_is_not_called_per_image():
    """Regression: InputSpace(-1, 1) with no native scale was labelled "fraction of each image's own intensity
    range", which is false for a window that is the same for every image."""
    space = InputSpace(-1.0, 1.0)
    assert space.native_units == WINDOW_UNITS and "each image" not in space.native_units
    assert InputSpace(-1.0, 1.0, native_units="window fraction").native_units == "window fraction"
    assert ZScoreInputSpace().native_units == PER_IMAGE_UNITS
    assert ZScoreInputSpace(255.0, "gray levels").native_units == "gray levels"


@pytest.mark.parametrize(
    "preprocessing, message",
    [
        ([*LOAD], "no intensity window found"),
        ([ScaleIntensityRanged("image", -1000, 400, 0.0, 1.0)], "without clip=True"),
        ([ScaleIntensityRanged("image", -1000, 400, 0.0, 1.0, clip=True), NormalizeIntensityd("image")],
         "a per-image z-score after a fixed window cannot be inverted"),
        ([ScaleIntensityd("image"), NormalizeIntensityd("image"), Resized("image", (8, 8))],
         "Resized after the z-score"),
        ([ScaleIntensityd("image"), ScaleIntensityd("image")], "more than one intensity window"),
    ],
)
def test_what_cannot_be_told_names_the_id_to_set(preprocessing, message):
    with pytest.raises(InputSpaceError, match=message) as raised:
        derive(preprocessing, config_id="validate#preprocessing")
    assert "validate#preprocessing" in str(raised.value) and SPACE_ID in str(raised.value)
