"""The viewer file of an explanation: the whole image and heat map, compact, for paging.

The PNG overlays of :func:`imaging.explain.save_overlays` show a few key slices or
frames. A viewer that pages through every slice of a volume or every frame of a clip
needs the whole grid: :func:`save_viewer` writes ``PREFIX_viewer.npz`` next to the
overlays, with the image after the overlays' display window and the heat map, both as
``uint8`` 0..255 on the network input's grid (MR: RAS ``(X, Y, Z)``; echo: ``(T, H, W)``),
and :func:`load_viewer` reads it back without unpickling anything.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imaging.explain import Explanation, display_range, key_frames

VIEWER_SUFFIX = "_viewer.npz"
_ARRAYS = ("image", "heat", "modality", "method", "target", "peak", "key_frames")
_MODALITIES = ("MR", "US")


@dataclass(frozen=True, eq=False)
class ViewerData:
    """An explanation as a viewer draws it.

    Attributes:
        modality: ``"MR"`` (a volume ``(X, Y, Z)``) or ``"US"`` (a clip ``(T, H, W)``).
        image: uint8 0..255, the input windowed to its 1st-99th percentile.
        heat: uint8 0..255, the heat map scaled to its maximum; ``image``'s shape.
        method: ``"gradcam"`` or ``"occlusion"``.
        target: What the heat explains (a class name, ``"reduced_ef"``...).
        peak: Index of the heat map's maximum (MR: the key slice of each plane).
        key_frames: Echo: the overlays' key frames; empty for MR.
        frame_interval_ms: Echo: time between two frames of the clip, when the loop's
            frame rate is known; else ``None``.
    """

    modality: str
    image: np.ndarray
    heat: np.ndarray
    method: str
    target: str
    peak: tuple[int, ...]
    key_frames: tuple[int, ...] = ()
    frame_interval_ms: float | None = None


def save_viewer(
    explanation: Explanation,
    out_dir: str | Path,
    *,
    prefix: str = "explanation",
    frame_interval_ms: float | None = None,
) -> Path:
    """Write ``PREFIX_viewer.npz`` (compressed) for ``explanation``; return the file.

    Args:
        explanation: The heat map and its input.
        out_dir: The folder (created if missing), usually the overlays'.
        prefix: The overlays' prefix.
        frame_interval_ms: Echo: milliseconds between two frames of the explained clip.

    Raises:
        ValueError: ``frame_interval_ms`` is given and not a positive number.
    """
    if frame_interval_ms is not None and not (
        math.isfinite(frame_interval_ms) and frame_interval_ms > 0
    ):
        raise ValueError(
            f'Argument "frame_interval_ms" must be a positive number, got {frame_interval_ms}'
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{prefix}{VIEWER_SUFFIX}"
    frames = key_frames(explanation.heatmap) if explanation.modality == "US" else []
    np.savez_compressed(
        path,
        image=_to_uint8(display_range(explanation.image)),
        heat=_to_uint8(explanation.heatmap),
        modality=np.array(explanation.modality),
        method=np.array(explanation.method),
        target=np.array(explanation.target_name),
        peak=np.array(explanation.peak, dtype=np.int64),
        key_frames=np.array(frames, dtype=np.int64),
        frame_interval_ms=np.array(
            np.nan if frame_interval_ms is None else frame_interval_ms, dtype=np.float64
        ),
    )
    return path


def load_viewer(path: str | Path) -> ViewerData:
    """Read a file :func:`save_viewer` wrote.

    Raises:
        ValueError: The file is not a viewer file (names the file and what is wrong).
        OSError: It cannot be read.
    """
    path = Path(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (EOFError, zipfile.BadZipFile, ValueError) as exc:  # truncated, other format, pickle
        raise ValueError(f"{path} is not a viewer file: {type(exc).__name__}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is not a viewer file: not an .npz archive")
    with loaded as data:
        missing = [name for name in _ARRAYS if name not in data.files]
        if missing:
            raise ValueError(f"{path} is not a viewer file: no {', '.join(missing)}")
        try:
            arrays = {name: data[name] for name in data.files}
        except (EOFError, zipfile.BadZipFile, ValueError) as exc:  # a damaged member
            raise ValueError(f"{path} is not a viewer file: {type(exc).__name__}") from None
    image, heat = arrays["image"], arrays["heat"]
    modality = str(arrays["modality"])
    if modality not in _MODALITIES or image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(f"{path} is not a viewer file: modality {modality!r}, image {image.shape}")
    if heat.shape != image.shape or heat.dtype != np.uint8:
        raise ValueError(f"{path}: heat map {heat.shape} does not match image {image.shape}")
    interval = float(arrays.get("frame_interval_ms", np.nan))
    return ViewerData(
        modality=modality,
        image=image,
        heat=heat,
        method=str(arrays["method"]),
        target=str(arrays["target"]),
        peak=tuple(int(i) for i in arrays["peak"]),
        key_frames=tuple(int(i) for i in arrays["key_frames"]),
        frame_interval_ms=interval if math.isfinite(interval) else None,
    )


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as uint8 0..255 (rounded)."""
    return np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
