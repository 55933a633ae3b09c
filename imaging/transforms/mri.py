"""The MRI preprocessing preset: a MONAI ``Compose`` from a T1 volume to a fixed-size tensor.

Steps: orientation to RAS, resampling to a configured spacing (trilinear), crop to
the head's bounding box, percentile intensity scaling to [0, 1], pad/crop to a
configured size, float32. With ``train=True`` random flips, small affine
transforms and gamma changes follow.

Why the intensity step is skull-agnostic: it needs no brain mask, so it runs the same
on skull-on images (as scanners and the sample archive produce them) and on
skull-stripped ones. Foreground is "brighter than a small fraction of the upper
percentile", which separates air from tissue whether skull and scalp are present or
were zeroed by stripping. Percentiles of the cropped head, not the maximum, set the
scale, so each scanner's arbitrary intensity units cancel out and the few very bright
voxels (vessels, fat) are clipped instead of compressing the rest. It does not make a
skull-on and a stripped image of one head identical (the scalp moves the upper
percentile), so a model should be trained and used on one kind of input.

The parameters live in ``configs/preprocessing.yaml`` (section ``mri``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from imaging.config_files import REPOSITORY_CONFIGS, load_yaml_model

if TYPE_CHECKING:
    from monai.transforms import Compose

DEFAULT_PREPROCESSING_PATH = REPOSITORY_CONFIGS / "preprocessing.yaml"


class MRIIntensity(BaseModel):
    """Foreground crop and percentile scaling."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lower_percentile: float = Field(default=0.5, ge=0.0, le=100.0)
    upper_percentile: float = Field(default=99.5, ge=0.0, le=100.0)
    foreground_fraction: float = Field(default=0.05, ge=0.0, lt=1.0)
    margin: int = Field(default=2, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> MRIIntensity:
        if self.lower_percentile >= self.upper_percentile:
            raise ValueError(
                f"lower_percentile {self.lower_percentile} must be below "
                f"upper_percentile {self.upper_percentile}"
            )
        return self


class MRIAugmentation(BaseModel):
    """Random transforms applied only when training."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flip_prob: float = Field(default=0.5, ge=0.0, le=1.0)
    affine_prob: float = Field(default=0.5, ge=0.0, le=1.0)
    rotate_range: float = Field(default=0.1, ge=0.0)
    scale_range: float = Field(default=0.05, ge=0.0)
    contrast_prob: float = Field(default=0.3, ge=0.0, le=1.0)
    gamma_range: tuple[float, float] = (0.8, 1.25)


DEFAULT_INTENSITY = MRIIntensity()
DEFAULT_AUGMENTATION = MRIAugmentation()


class MRIPresetConfig(BaseModel):
    """The ``mri`` section of ``configs/preprocessing.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spacing: tuple[float, float, float] = (2.0, 2.0, 2.0)
    spatial_size: tuple[int, int, int] = (96, 96, 96)
    intensity: MRIIntensity = DEFAULT_INTENSITY
    augmentation: MRIAugmentation = DEFAULT_AUGMENTATION

    def create_preset(self, *, keys: Sequence[str] = ("image",), train: bool = False) -> Compose:
        """:func:`create_mri_preset` with this configuration."""
        return create_mri_preset(
            spacing=self.spacing,
            spatial_size=self.spatial_size,
            keys=keys,
            train=train,
            intensity=self.intensity,
            augmentation=self.augmentation,
        )


def load_mri_preset_config(path: Path | None = None) -> MRIPresetConfig:
    """Read the ``mri`` section of ``path`` (default: the repository's preprocessing.yaml).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The section is missing or invalid; the message names the file and field.
    """
    path = DEFAULT_PREPROCESSING_PATH if path is None else Path(path)
    return load_yaml_model(path, MRIPresetConfig, what="MRI preset", section="mri")


def create_mri_preset(
    *,
    spacing: Sequence[float] = (2.0, 2.0, 2.0),
    spatial_size: Sequence[int] = (96, 96, 96),
    keys: Sequence[str] = ("image",),
    train: bool = False,
    intensity: MRIIntensity = DEFAULT_INTENSITY,
    augmentation: MRIAugmentation = DEFAULT_AUGMENTATION,
) -> Compose:
    """The MRI preset over dictionary items whose ``keys`` hold channel-first 3D images.

    Every key is resampled trilinearly, so all must be intensity images (not label maps);
    the first key's foreground decides the crop for all of them. The input should be a
    ``MetaTensor`` whose affine is in RAS (as :func:`load_nifti_volume` gives it).

    Raises:
        ValueError: ``spacing``, ``spatial_size`` or ``keys`` is not valid.
    """
    import torch
    from monai.transforms import (
        Compose,
        CropForegroundd,
        EnsureTyped,
        Orientationd,
        RandAdjustContrastd,
        RandAffined,
        RandFlipd,
        ResizeWithPadOrCropd,
        ScaleIntensityRangePercentilesd,
        Spacingd,
    )

    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f'Argument "spacing" must be three positive numbers, got {spacing!r}')
    if len(spatial_size) != 3 or min(spatial_size) < 1:
        raise ValueError(
            f'Argument "spatial_size" must be three positive integers, got {spatial_size!r}'
        )
    if not keys:
        raise ValueError('Argument "keys" must name at least one image')
    keys = list(keys)
    transforms: list[Any] = [
        Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        Spacingd(keys, pixdim=tuple(spacing), mode="bilinear"),
        CropForegroundd(
            keys,
            source_key=keys[0],
            select_fn=functools.partial(
                above_fraction_of_percentile,
                fraction=intensity.foreground_fraction,
                percentile=intensity.upper_percentile,
            ),
            margin=intensity.margin,
            allow_smaller=True,
        ),
        ScaleIntensityRangePercentilesd(
            keys,
            lower=intensity.lower_percentile,
            upper=intensity.upper_percentile,
            b_min=0.0,
            b_max=1.0,
            clip=True,
            channel_wise=True,
        ),
        ResizeWithPadOrCropd(keys, spatial_size=tuple(spatial_size)),
    ]
    if train:
        transforms += [
            RandFlipd(keys, prob=augmentation.flip_prob, spatial_axis=0),  # RAS axis 0: L-R
            RandAffined(
                keys,
                prob=augmentation.affine_prob,
                rotate_range=(augmentation.rotate_range,) * 3,
                scale_range=(augmentation.scale_range,) * 3,
                mode="bilinear",
                padding_mode="zeros",
            ),
            RandAdjustContrastd(
                keys, prob=augmentation.contrast_prob, gamma=augmentation.gamma_range
            ),
        ]
    transforms.append(EnsureTyped(keys, dtype=torch.float32))
    return Compose(transforms)


def above_fraction_of_percentile(image: Any, *, fraction: float, percentile: float) -> Any:
    """Foreground mask: voxels brighter than ``fraction`` of the image's ``percentile``.

    A blank image has no such voxel; then every voxel counts, so the crop keeps the
    whole image instead of producing an empty one.

    A module-level function (not a lambda) so that presets pickle into data-loader workers.
    """
    import torch

    values = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
    values = values.float()
    # torch.quantile refuses inputs over 2**24 elements; a regular subsample of at most
    # about a million voxels estimates a percentile of a whole head closely enough.
    sample = values.flatten()[:: max(1, values.numel() // 1_000_000)]
    mask = values > fraction * torch.quantile(sample, percentile / 100.0)
    return mask if bool(mask.any()) else torch.ones_like(mask)
