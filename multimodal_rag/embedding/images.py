"""From a study to the 2D images a CLIP image tower sees, and a thumbnail of it.

Volumes give slices in three planes around the centre, cine loops give evenly spaced
frames; each image is a grey ``(H, W)`` float array in [0, 1], shown the way a reader
looks at it (anterior or superior up), so one model sees every plane the same way.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from multimodal_rag.embedding.config import ClipPreprocess

PLANES = ("axial", "coronal", "sagittal")
# Robust intensity window of a volume: percentiles of its non-zero voxels.
_WINDOW_PERCENTILES = (0.5, 99.5)


def volume_slices(volume: Any, *, slices_per_plane: int, slice_spread: float) -> list[np.ndarray]:
    """Grey slices of a ``(1, X, Y, Z)`` volume: ``slices_per_plane`` per plane, axial first.

    The volume is reoriented to RAS when it carries an affine (a ``MetaTensor``), its
    intensities windowed to [0, 1] by percentiles of the non-zero voxels, and slices taken
    at evenly spaced positions over ``slice_spread`` of each axis around its centre.

    Raises:
        ValueError: The volume is not ``(1, X, Y, Z)`` or holds no finite voxel.
    """
    array = _ras_array(volume)
    if array.ndim != 4 or array.shape[0] != 1 or min(array.shape[1:]) < 1:
        raise ValueError(f'Argument "volume" must be (1, X, Y, Z), got shape {array.shape}')
    data = np.nan_to_num(array[0].astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    data = _window(data)
    slices: list[np.ndarray] = []
    for axis in (2, 1, 0):  # z (axial), y (coronal), x (sagittal)
        for index in _slice_positions(data.shape[axis], slices_per_plane, slice_spread):
            plane = np.take(data, index, axis=axis)
            # Rows run from the last remaining axis' high end (superior or anterior) down.
            slices.append(np.ascontiguousarray(np.flipud(plane.T)))
    return slices


def cine_frames(
    frames: np.ndarray, *, count: int, sector_mask: np.ndarray | None = None
) -> list[np.ndarray]:
    """``count`` evenly spaced grey frames of a ``(T, H, W, C)`` uint8 loop, sector only.

    Raises:
        ValueError: ``frames`` is not ``(T, H, W, 1 or 3)`` uint8 with T >= 1, or the mask
            does not fit (see :func:`imaging.transforms.echo.apply_sector_mask`).
    """
    from imaging.transforms.echo import apply_sector_mask, to_grayscale

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] < 1 or frames.dtype != np.uint8:
        raise ValueError(
            'Argument "frames" must be a (T, H, W, C) uint8 array with T >= 1, '
            f"got shape {frames.shape} and dtype {frames.dtype}"
        )
    indices = np.unique(np.linspace(0, frames.shape[0] - 1, num=count).round().astype(int))
    chosen = np.asarray(to_grayscale(frames[indices], channel_dim=-1))
    if sector_mask is not None:
        chosen = np.asarray(apply_sector_mask(chosen, np.asarray(sector_mask), channel_last=True))
    return [chosen[i, ..., 0].astype(np.float32) / 255.0 for i in range(len(indices))]


def to_model_input(images: list[np.ndarray], preprocess: ClipPreprocess) -> torch.Tensor:
    """Stack grey [0, 1] images into the model's ``(N, 3, S, S)`` normalised float input.

    Each image is zero-padded to a square (keeping its aspect), resized with antialiasing
    to ``image_size`` and repeated over the three channels before the mean/std normalisation.
    """
    import torch
    import torch.nn.functional as F

    size = preprocess.image_size
    batch = torch.empty((len(images), 3, size, size), dtype=torch.float32)
    for i, image in enumerate(images):
        square = torch.from_numpy(_pad_square(image))[None, None]
        resized = F.interpolate(
            square, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        batch[i] = resized[0].clamp(0.0, 1.0).expand(3, size, size)
    mean = torch.tensor(preprocess.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std, dtype=torch.float32).view(1, 3, 1, 1)
    return (batch - mean) / std


def thumbnail_png(study: Any, *, size: int = 128, sector_mask: np.ndarray | None = None) -> bytes:
    """A small grey PNG: the central axial slice of a ``(1, X, Y, Z)`` volume, or the
    middle frame of a ``(T, H, W, C)`` uint8 cine loop (outside ``sector_mask`` zeroed).

    The longer side is ``size`` pixels. Only pixels go in: no text, no metadata.

    Raises:
        ValueError: ``study`` is neither a volume nor a cine loop.
    """
    from PIL import Image

    array = np.asarray(study) if isinstance(study, np.ndarray) else None
    if array is not None and array.ndim == 4 and array.dtype == np.uint8:
        middle = array.shape[0] // 2
        image = cine_frames(array[middle : middle + 1], count=1, sector_mask=sector_mask)[0]
    else:
        image = volume_slices(study, slices_per_plane=1, slice_spread=0.0)[0]
    pixels = (np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    picture = Image.fromarray(pixels, mode="L")
    scale = size / max(picture.size)
    picture = picture.resize(
        (max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
        Image.Resampling.BILINEAR,
    )
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _ras_array(volume: Any) -> np.ndarray:
    """The volume's voxels as numpy, reoriented to RAS when it carries an affine."""
    affine = getattr(volume, "affine", None)
    if affine is not None and getattr(volume, "ndim", 0) == 4:
        from monai.transforms import Orientation

        volume = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(volume)
    if hasattr(volume, "detach"):
        return np.asarray(volume.detach().cpu().numpy())
    return np.asarray(volume)


def _window(data: np.ndarray) -> np.ndarray:
    """Intensities mapped to [0, 1] by robust percentiles of the non-zero voxels."""
    foreground = data[data != 0]
    if foreground.size == 0:
        return np.zeros_like(data)
    low, high = np.percentile(foreground, _WINDOW_PERCENTILES)
    if high <= low:  # one foreground level: show it as a mask
        return (data != 0).astype(np.float32)
    return np.clip((data - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _slice_positions(length: int, count: int, spread: float) -> list[int]:
    """``count`` indices spread over ``spread`` of an axis of ``length``, centred."""
    centre = (length - 1) / 2.0
    half = spread * (length - 1) / 2.0
    offsets = np.linspace(-half, half, num=count) if count > 1 else np.zeros(1)
    return [int(np.clip(round(centre + offset), 0, length - 1)) for offset in offsets]


def _pad_square(image: np.ndarray) -> np.ndarray:
    """Zero-pad a 2D image to a centred square, float32."""
    height, width = image.shape
    side = max(height, width)
    square = np.zeros((side, side), dtype=np.float32)
    top, left = (side - height) // 2, (side - width) // 2
    square[top : top + height, left : left + width] = image
    return square
