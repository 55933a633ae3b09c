"""Echo preprocessing: sector masking, grayscale, EchoNet-Dynamic clip sampling, the preset.

Each transform is a small class over a pure function, with a ``d``-suffixed dictionary
variant, as in MONAI; MONAI's own transforms do the rest (crop, resize, pad, normalise).

Clip sampling follows EchoNet-Dynamic (``echonet.datasets.Echo``): a clip is frames
``start + period * k`` for ``k < clip_length``; a loop shorter than
``clip_length * period`` frames is first zero-padded at its end to that length, and a
random start is drawn uniformly from ``range(frames - (clip_length - 1) * period)``.
EchoNet pads after normalising, so its zero frames are the mean grey; the preset keeps
that order. ``padding="repeat"`` instead plays the loop again from its first frame.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import (
    CastToTyped,
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    EnsureTyped,
    MapTransform,
    NormalizeIntensityd,
    Randomizable,
    RandSpatialCropd,
    Resized,
    SpatialPadd,
    SqueezeDimd,
    Transform,
)
from monai.utils import (
    TransformBackends,
    convert_data_type,
    convert_to_dst_type,
    convert_to_tensor,
)
from pydantic import BaseModel, ConfigDict, Field

from imaging.config_files import REPOSITORY_CONFIGS, load_yaml_model

ClipPadding = Literal["zero", "repeat"]

# ITU-R BT.601 luma. The integer weights (in 1/256, summing to 256) keep grey pixels exact
# and match imaging.synthetic's CineLoop.grayscale_frames.
_LUMA = (0.299, 0.587, 0.114)
_LUMA_256 = (77, 150, 29)
# What MONAI's Transform.backend declares: these transforms take numpy arrays and tensors.
_BACKENDS = [TransformBackends.TORCH, TransformBackends.NUMPY]
# EchoNet-Dynamic's video model pads every frame by 12 pixels and crops back at random.
ECHONET_AUGMENT_PAD = 12


def apply_sector_mask(
    image: NdarrayOrTensor, mask: NdarrayOrTensor, *, channel_last: bool = False
) -> NdarrayOrTensor:
    """Zero the pixels outside ``mask``; same type, shape and dtype as ``image``.

    Args:
        image: ``(..., H, W)``, or ``(..., H, W, C)`` with ``channel_last``.
        mask: ``(H, W)``, True (non-zero) where the image is kept.
        channel_last: The image's last axis holds channels (as in ``UltrasoundCine.frames``).

    Raises:
        ValueError: ``mask`` is not 2D, does not match the image, or keeps no pixel.
    """
    if mask.ndim != 2:
        raise ValueError(f'Argument "mask" must be 2D (H, W), got shape {tuple(mask.shape)}')
    spatial = tuple(image.shape[-3:-1] if channel_last else image.shape[-2:])
    if spatial != tuple(mask.shape):
        raise ValueError(
            f'Argument "mask" has shape {tuple(mask.shape)}; the image\'s (H, W) is {spatial}'
        )
    if not bool(mask.any()):
        raise ValueError('Argument "mask" keeps no pixel (the loop has no 2D tissue region)')
    keep = convert_to_dst_type(mask != 0, dst=image, dtype=image.dtype)[0]
    return image * (keep[..., None] if channel_last else keep)


def to_grayscale(image: NdarrayOrTensor, *, channel_dim: int = -1) -> NdarrayOrTensor:
    """BT.601 luma over ``channel_dim`` (kept, with size 1); grey input is passed through.

    uint8 input gives uint8 luma (rounded integer weights, so a 120-frame 480x640 loop
    needs no float copy); any other dtype gives float32.

    Raises:
        ValueError: The channel axis has neither 1 nor 3 entries.
    """
    channels = image.shape[channel_dim]
    if channels not in (1, 3):
        raise ValueError(
            f'Argument "image" must have 1 or 3 channels on axis {channel_dim}, got {channels}'
        )
    if channels == 1:
        grey: NdarrayOrTensor = image
    elif _is_uint8(image):
        grey = _integer_luma(convert_data_type(image, np.ndarray)[0], channel_dim)
    else:
        r, g, b = convert_to_tensor(image, track_meta=False).to(torch.float32).unbind(channel_dim)
        grey = (r * _LUMA[0] + g * _LUMA[1] + b * _LUMA[2]).unsqueeze(channel_dim)
    dtype = np.uint8 if _is_uint8(grey) else np.float32
    return convert_to_dst_type(grey, dst=image, dtype=dtype)[0]


def _is_uint8(image: NdarrayOrTensor) -> bool:
    if isinstance(image, torch.Tensor):
        return image.dtype == torch.uint8
    return bool(image.dtype == np.uint8)


def _integer_luma(pixels: np.ndarray, channel_dim: int) -> np.ndarray:
    """uint8 luma in uint16 arithmetic: ``(77 R + 150 G + 29 B + 128) >> 8`` never exceeds 65535."""
    channels = np.moveaxis(pixels, channel_dim, -1)
    luma = np.full(channels.shape[:-1], 128, dtype=np.uint16)
    for index, weight in enumerate(_LUMA_256):
        luma += np.multiply(channels[..., index], np.uint16(weight), dtype=np.uint16)
    return np.expand_dims((luma >> 8).astype(np.uint8), channel_dim)


def clip_start_count(number_of_frames: int, *, clip_length: int, period: int) -> int:
    """How many start frames EchoNet-Dynamic draws from (after padding a short loop)."""
    padded = max(number_of_frames, clip_length * period)
    return padded - (clip_length - 1) * period


def clip_indices(start: int, *, clip_length: int, period: int) -> np.ndarray:
    """The frames of a clip: ``start + period * k`` for ``k`` in ``range(clip_length)``."""
    return start + period * np.arange(clip_length)


def sample_clip(
    frames: NdarrayOrTensor,
    *,
    start: int,
    clip_length: int = 32,
    period: int = 2,
    time_dim: int = 0,
    padding: ClipPadding = "zero",
) -> NdarrayOrTensor:
    """The clip of ``clip_length`` frames, every ``period``-th from ``start``, on ``time_dim``.

    Frames past the end of a short loop are zeros (EchoNet-Dynamic) or, with
    ``padding="repeat"``, the loop played again from its start.

    Raises:
        ValueError: A length or period below 1, an unknown ``padding``, or a ``start``
            outside ``range(clip_start_count(...))``.
    """
    _check_clip_arguments(clip_length, period, padding)
    number_of_frames = frames.shape[time_dim]
    starts = clip_start_count(number_of_frames, clip_length=clip_length, period=period)
    if not 0 <= start < starts:
        raise ValueError(
            f'Argument "start" must lie in [0, {starts}) for {number_of_frames} frames, '
            f"clip_length {clip_length} and period {period}; got {start}"
        )
    indices = clip_indices(start, clip_length=clip_length, period=period)
    past_end = indices >= number_of_frames
    if padding == "repeat":
        indices = indices % number_of_frames
    pixels = convert_to_tensor(frames, track_meta=False)
    index = torch.as_tensor(np.minimum(indices, number_of_frames - 1), device=pixels.device)
    clip = pixels.index_select(time_dim, index)
    if padding == "zero" and past_end.any():
        clip.index_fill_(time_dim, torch.as_tensor(np.flatnonzero(past_end)), 0)
    return convert_to_dst_type(clip, dst=frames)[0]


class ApplySectorMask(Transform):
    """Zero the pixels outside a sector mask (see :func:`apply_sector_mask`)."""

    backend = _BACKENDS

    def __init__(self, channel_last: bool = False) -> None:
        self.channel_last = channel_last

    def __call__(self, img: NdarrayOrTensor, mask: NdarrayOrTensor) -> NdarrayOrTensor:  # type: ignore[override]
        return apply_sector_mask(img, mask, channel_last=self.channel_last)


class ApplySectorMaskd(MapTransform):
    """Dictionary :class:`ApplySectorMask`: the mask is ``data[mask_key]``."""

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str = "sector_mask",
        channel_last: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.masker = ApplySectorMask(channel_last)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.masker(d[key], d[self.mask_key])
        return d


class ToGrayscale(Transform):
    """BT.601 luma over the channel axis (see :func:`to_grayscale`)."""

    backend = _BACKENDS

    def __init__(self, channel_dim: int = -1) -> None:
        self.channel_dim = channel_dim

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        return to_grayscale(img, channel_dim=self.channel_dim)


class ToGrayscaled(MapTransform):
    """Dictionary :class:`ToGrayscale`."""

    def __init__(
        self, keys: KeysCollection, channel_dim: int = -1, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = ToGrayscale(channel_dim)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d


class SampleClip(Transform):
    """The EchoNet-Dynamic clip from a fixed ``start`` (see :func:`sample_clip`)."""

    backend = _BACKENDS

    def __init__(
        self,
        clip_length: int = 32,
        period: int = 2,
        start: int = 0,
        time_dim: int = 0,
        padding: ClipPadding = "zero",
    ) -> None:
        _check_clip_arguments(clip_length, period, padding)
        self.clip_length, self.period, self.start = clip_length, period, start
        self.time_dim, self.padding = time_dim, padding

    def __call__(self, img: NdarrayOrTensor, start: int | None = None) -> NdarrayOrTensor:
        """Sample ``img``, from ``start`` when given, else from the configured start."""
        return sample_clip(
            img,
            start=self.start if start is None else start,
            clip_length=self.clip_length,
            period=self.period,
            time_dim=self.time_dim,
            padding=self.padding,
        )


class RandSampleClip(Randomizable, SampleClip):
    """:class:`SampleClip` from a random start, drawn as EchoNet-Dynamic draws it (training)."""

    def randomize(self, data: int) -> None:
        """Draw the start for a loop of ``data`` frames."""
        count = clip_start_count(data, clip_length=self.clip_length, period=self.period)
        self.start = int(self.R.randint(count))

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:  # type: ignore[override]
        if randomize:
            self.randomize(img.shape[self.time_dim])
        return super().__call__(img)


class SampleClipd(MapTransform):
    """Dictionary :class:`SampleClip`: every key gets the same frames."""

    def __init__(
        self,
        keys: KeysCollection,
        clip_length: int = 32,
        period: int = 2,
        start: int = 0,
        time_dim: int = 0,
        padding: ClipPadding = "zero",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.sampler = SampleClip(clip_length, period, start, time_dim, padding)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.sampler(d[key])
        return d


class RandSampleClipd(Randomizable, MapTransform):
    """Dictionary :class:`RandSampleClip`: one start per call, shared by every key."""

    def __init__(
        self,
        keys: KeysCollection,
        clip_length: int = 32,
        period: int = 2,
        time_dim: int = 0,
        padding: ClipPadding = "zero",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.sampler = RandSampleClip(clip_length, period, 0, time_dim, padding)

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> RandSampleClipd:
        super().set_random_state(seed, state)
        self.sampler.set_random_state(seed, state)
        return self

    def randomize(self, data: int) -> None:
        """Draw the start for a loop of ``data`` frames."""
        self.sampler.randomize(data)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if keys:
            self.randomize(d[keys[0]].shape[self.sampler.time_dim])
        for key in keys:
            d[key] = self.sampler(d[key], randomize=False)
        return d


def create_echo_preset(
    *,
    spatial_size: int = 112,
    clip_length: int = 32,
    period: int = 2,
    mean: float | None = None,
    std: float | None = None,
    train: bool = False,
) -> Compose:
    """The echo preprocessing for ``{"cine": frames, "sector_mask": mask}`` dictionaries.

    ``frames`` is ``(T, H, W, C)`` (``UltrasoundCine.frames``), ``mask`` ``(H, W)`` bool.
    Out comes ``"cine"`` as a float32 ``torch.Tensor`` ``(1, clip_length, spatial_size,
    spatial_size)``: grey, zero outside the sector, cropped to the sector's box, resized
    (aspect kept, box-averaged) and centred on a black square, as EchoNet-Dynamic's
    videos are; normalised; then the clip sampled as EchoNet-Dynamic does.

    Args:
        spatial_size: Side of the output frames.
        clip_length: Frames per clip.
        period: Step between sampled frames.
        mean: Grey level (0-255) subtracted, as EchoNet's dataset mean; None normalises
            each loop by its own mean and standard deviation.
        std: Grey levels per unit after normalising; used with ``mean``.
        train: Draw the clip start at random and shift the frames by up to
            ``ECHONET_AUGMENT_PAD`` pixels (EchoNet's augmentation); else start at frame 0.

    Raises:
        ValueError: ``mean`` and ``std`` are not both given or both None, or ``std`` <= 0.
    """
    if (mean is None) != (std is None):
        raise ValueError('Arguments "mean" and "std" must be given together')
    if std is not None and std <= 0:
        raise ValueError(f'Argument "std" must be positive, got {std}')
    keys = ["cine"]
    sampler: MapTransform = (
        RandSampleClipd(keys, clip_length, period)
        if train
        else SampleClipd(keys, clip_length, period, start=0)
    )
    augment = (
        [
            SpatialPadd(keys, spatial_size=[spatial_size + 2 * ECHONET_AUGMENT_PAD] * 2),
            RandSpatialCropd(keys, roi_size=[spatial_size] * 2, random_size=False),
        ]
        if train
        else []
    )
    # Time stands on the channel axis until the end, so MONAI's 2D transforms act per frame.
    return Compose(
        [
            ToGrayscaled(keys, channel_dim=-1),
            SqueezeDimd(keys, dim=-1),
            ApplySectorMaskd(keys, mask_key="sector_mask"),
            # A writable copy: UltrasoundCine's mask is read-only, which torch warns about.
            CastToTyped("sector_mask", dtype=np.uint8),
            EnsureChannelFirstd("sector_mask", channel_dim="no_channel"),
            CropForegroundd(keys, source_key="sector_mask", allow_smaller=True),
            Resized(keys, spatial_size=spatial_size, size_mode="longest", mode="area"),
            SpatialPadd(keys, spatial_size=[spatial_size] * 2),
            NormalizeIntensityd(keys, subtrahend=_scalar(mean), divisor=_scalar(std)),
            sampler,
            *augment,
            EnsureChannelFirstd(keys, channel_dim="no_channel"),
            EnsureTyped(keys, data_type="tensor", dtype=torch.float32, track_meta=False),
        ]
    )


def _scalar(value: float | None) -> np.ndarray | None:
    return None if value is None else np.asarray(value, dtype=np.float32)


def _check_clip_arguments(clip_length: int, period: int, padding: str) -> None:
    if clip_length < 1:
        raise ValueError(f'Argument "clip_length" must be at least 1, got {clip_length}')
    if period < 1:
        raise ValueError(f'Argument "period" must be at least 1, got {period}')
    if padding not in get_args(ClipPadding):
        raise ValueError(
            f'Argument "padding" must be one of {get_args(ClipPadding)}, got {padding!r}'
        )


class EchoPresetConfig(BaseModel):
    """The ``echo`` section of ``configs/preprocessing.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spatial_size: int = Field(default=112, ge=8)
    clip_length: int = Field(default=32, ge=1)
    period: int = Field(default=2, ge=1)
    mean: float | None = None
    std: float | None = Field(default=None, gt=0)

    def create_preset(self, *, train: bool = False) -> Compose:
        """:func:`create_echo_preset` with this configuration."""
        return create_echo_preset(
            spatial_size=self.spatial_size,
            clip_length=self.clip_length,
            period=self.period,
            mean=self.mean,
            std=self.std,
            train=train,
        )


def load_echo_preset_config(path: Path | None = None) -> EchoPresetConfig:
    """Read the ``echo`` section of ``path`` (default: the repository's preprocessing.yaml).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The section is missing or invalid; the message names the file and field.
    """
    path = REPOSITORY_CONFIGS / "preprocessing.yaml" if path is None else Path(path)
    return load_yaml_model(path, EchoPresetConfig, what="echo preset", section="echo")
