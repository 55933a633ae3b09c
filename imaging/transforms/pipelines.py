"""Decode-and-preprocess pipelines shared by training and inference.

A pipeline turns ``{"image": path, ...}`` into ``{"image": float32 tensor, ...}``: it
decodes the file (a NIfTI file or DICOM series folder for MRI; an ultrasound DICOM file
or EchoNet AVI for echo) and runs the :mod:`imaging.transforms` preset. The settings are
typed (:class:`MRIPreprocessing`, :class:`EchoPreprocessing`): training recipes carry
them and model bundles record them, so a model sees at inference exactly what it saw in
training. Nothing here depends on training code.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any, Literal

from monai.config import KeysCollection
from monai.transforms import Compose, MapTransform
from pydantic import BaseModel, ConfigDict, Field, model_validator

ID_KEYS = ("study_instance_uid", "patient_id", "site_id")
# What a dataset item keeps after preprocessing (the rest is decoding by-products).
ITEM_KEYS = ("image", "target", "reduced_ef", *ID_KEYS)
# Preset defaults used when neither the recipe nor the model's input names a value.
MRI_DEFAULT_SPACING = (2.0, 2.0, 2.0)
MRI_DEFAULT_SIZE = (96, 96, 96)
ECHO_DEFAULTS = {"spatial_size": 112, "clip_length": 32, "period": 2, "channels": 1}


class MRIPreprocessing(BaseModel):
    """Overrides of the MRI preset; a None falls back to the model's input, then the preset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["nifti", "dicom"] = "nifti"
    spacing: tuple[float, float, float] | None = None
    spatial_size: tuple[int, int, int] | None = None
    augment: bool = True


class EchoPreprocessing(BaseModel):
    """Overrides of the echo preset; a None falls back to the model's input, then the preset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["echonet", "dicom"] = "echonet"
    spatial_size: int | None = Field(default=None, ge=8)
    clip_length: int | None = Field(default=None, ge=1)
    period: int | None = Field(default=None, ge=1)
    mean: float | None = None
    std: float | None = Field(default=None, gt=0.0)
    channels: Literal[1, 3] | None = None
    augment: bool = True

    @model_validator(mode="after")
    def _mean_with_std(self) -> EchoPreprocessing:
        if (self.mean is None) != (self.std is None):
            raise ValueError('"mean" and "std" must be given together')
        return self


def create_transform(
    preprocessing: MRIPreprocessing | EchoPreprocessing, *, train: bool
) -> Compose:
    """Decode, preprocess (the :mod:`imaging.transforms` preset) and keep ``ITEM_KEYS``.

    One flat ``Compose``, so that caching datasets see where the random part begins.
    ``train`` adds the preset's augmentation when the recipe asks for it.
    """
    from monai.transforms import CopyItemsd, EnsureTyped, RepeatChanneld, SelectItemsd

    from imaging.transforms.echo import create_echo_preset
    from imaging.transforms.mri import create_mri_preset

    augment = train and preprocessing.augment
    steps: list[Any]
    if isinstance(preprocessing, MRIPreprocessing):
        preset = create_mri_preset(
            spacing=preprocessing.spacing or MRI_DEFAULT_SPACING,
            spatial_size=preprocessing.spatial_size or MRI_DEFAULT_SIZE,
            train=augment,
        )
        steps = [LoadMRIVolumed(), *preset.transforms]
    else:
        preset = create_echo_preset(
            spatial_size=preprocessing.spatial_size or ECHO_DEFAULTS["spatial_size"],
            clip_length=preprocessing.clip_length or ECHO_DEFAULTS["clip_length"],
            period=preprocessing.period or ECHO_DEFAULTS["period"],
            mean=preprocessing.mean,
            std=preprocessing.std,
            train=augment,
        )
        steps = [LoadCined(), *preset.transforms, CopyItemsd("cine", names="image")]
        if preprocessing.channels == 3:  # grey repeated for networks pretrained on RGB video
            steps.append(RepeatChanneld("image", repeats=3))
    steps += [
        EnsureTyped("image", track_meta=False),
        SelectItemsd(ITEM_KEYS, allow_missing_keys=True),
    ]
    return Compose(steps)


class LoadMRIVolumed(MapTransform):
    """Replace each key's path (a NIfTI file or a DICOM series folder) with its volume."""

    def __init__(self, keys: KeysCollection = "image") -> None:
        super().__init__(keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from imaging.dicom.series_volume import load_mr_series
        from imaging.readers.nifti import load_nifti_volume

        item = dict(data)
        for key in self.key_iterator(item):
            path = Path(item[key])
            if path.is_dir():
                item[key] = load_mr_series(sorted(path.glob("*.dcm")))
            else:
                item[key] = load_nifti_volume(path)
        return item


class LoadCined(MapTransform):
    """Decode ``data[key]`` (an ultrasound DICOM file or an EchoNet AVI) into ``cine``.

    Sets ``cine`` (``(T, H, W, C)`` uint8) and ``sector_mask`` as the echo preset takes
    them, and drops the path.
    """

    def __init__(self, key: str = "image") -> None:
        super().__init__(key)
        self.key = key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from imaging.dicom.cine import load_us_cine
        from imaging.readers.echonet import load_echonet_video

        item = dict(data)
        path = Path(item.pop(self.key))
        cine = load_echonet_video(path) if path.suffix.lower() == ".avi" else load_us_cine(path)
        # The preset writes into both arrays; the cine's are read-only views.
        item["cine"] = cine.frames.copy()
        item["sector_mask"] = cine.sector_mask.copy()
        return item
