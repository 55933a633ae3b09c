"""PNG images of a result's viewer file: a slice or frame, greyscale, or its heat layer.

The image layer is the windowed input in grey; the heat layer is the same slice of the
heat map through the jet colour map, with opacity proportional to the heat (so a page
stacks it over the image and sets the overall opacity itself). Both have the slice's
own size, one pixel per voxel of the network input's grid. MR slices are in
neurological orientation (:func:`imaging.explain.oriented_slice`); echo frames as
acquired, first row at the top.

Viewer files are read once and kept (a few files, each a few MB at most), so paging
through a volume does not decompress it for every slice.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np

from imaging.explain import PLANE_AXES, oriented_slice
from imaging.viewer_file import ViewerData, load_viewer

Layer = Literal["image", "heat"]
FRAME_PLANE = "frame"
_CACHED_FILES = 8


class ViewerCache:
    """The last few viewer files read, keyed by path, size and modification time."""

    def __init__(self, size: int = _CACHED_FILES) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[str, int, int], ViewerData] = OrderedDict()
        self._lock = threading.Lock()

    def load(self, path: Path) -> ViewerData:
        """The viewer file at ``path`` (read again when it changed).

        Raises:
            ValueError: Not a viewer file.
            OSError: It cannot be read.
        """
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        data = load_viewer(path)
        with self._lock:
            self._entries[key] = data
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return data


def planes_of(data: ViewerData) -> dict[str, int]:
    """Plane name -> number of slices (MR), or ``{"frame": T}`` (echo)."""
    if data.modality == "MR":
        return {plane: int(data.image.shape[axis]) for plane, axis in PLANE_AXES.items()}
    return {FRAME_PLANE: int(data.image.shape[0])}


def render_png(data: ViewerData, plane: str, index: int, layer: Layer) -> bytes:
    """Slice or frame ``index`` of ``plane`` as PNG bytes (``L`` image or ``RGBA`` heat).

    Raises:
        ValueError: The plane is not one of the viewer's, or ``index`` is out of range.
    """
    if plane not in planes_of(data):
        raise ValueError(
            f'Argument "plane" must be one of {sorted(planes_of(data))} for {data.modality}, '
            f"got {plane!r}"
        )
    volume = data.image if layer == "image" else data.heat
    if data.modality == "MR":
        pixels = oriented_slice(volume, plane, index)
    elif 0 <= index < volume.shape[0]:
        pixels = volume[index]
    else:
        raise ValueError(f'Argument "index" must be in 0..{volume.shape[0] - 1}, got {index}')
    return _png(pixels if layer == "image" else heat_rgba(pixels))


def heat_rgba(heat: np.ndarray) -> np.ndarray:
    """uint8 heat ``(H, W)`` -> ``(H, W, 4)``: jet colour, alpha equal to the heat."""
    rgba = _jet_lut()[heat]
    rgba[..., 3] = heat
    return rgba


@cache
def _jet_lut() -> np.ndarray:
    """The jet colour map as 256 RGBA uint8 entries (matplotlib's, without pyplot)."""
    from matplotlib import colormaps

    table = colormaps["jet"](np.linspace(0.0, 1.0, 256))
    lut = np.round(np.asarray(table) * 255.0).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    return buffer.getvalue()
