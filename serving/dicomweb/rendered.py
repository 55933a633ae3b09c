"""One frame of a stored instance rendered as PNG or JPEG (WADO-RS ``/rendered``).

Greyscale frames go through the Modality LUT (Rescale Slope/Intercept) and the first
VOI window of the instance (linear, PS3.3 C.11.2.1.2), or a min-max window when it
has none; MONOCHROME1 is inverted so that higher values are darker. Colour frames are
sent as decoded (RGB), 16-bit colour scaled down to 8 bits.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Literal

import numpy as np

from imaging.dicom.pixels import decode_pixel_array, pixel_layout
from imaging.dicom.reading import read_dicom
from imaging.errors import PixelDataError

RenderedType = Literal["image/jpeg", "image/png"]
RENDERED_TYPES: tuple[RenderedType, ...] = ("image/jpeg", "image/png")
DEFAULT_JPEG_QUALITY = 90


def render_frame(
    path: Path,
    frame_number: int,
    media_type: RenderedType,
    *,
    quality: int = DEFAULT_JPEG_QUALITY,
) -> bytes:
    """Frame ``frame_number`` (from 1) of the DICOM file at ``path``, encoded as ``media_type``.

    Only that frame is decoded when the pixel data is encapsulated (one JPEG of a
    cine loop, not the whole loop).

    Raises:
        PixelDataError: No pixel data, or ``frame_number`` is not a frame of it.
        DicomReadError, ResourceLimitError, UnsupportedTransferSyntaxError: From reading
            and decoding.
    """
    source = path.name
    dataset = read_dicom(path)
    frames = pixel_layout(dataset, source).frames
    if not 1 <= frame_number <= frames:
        raise PixelDataError(source, f"frame {frame_number} is not in 1..{frames}")
    pixels = _decode_frame(dataset, source, frame_number, frames)
    image = to_display(pixels, dataset)
    return encode_image(image, media_type, quality=quality)


def _decode_frame(dataset: Any, source: str, frame_number: int, frames: int) -> np.ndarray:
    """The stored values of one frame, ``(rows, columns[, samples])``."""
    if frames > 1 and dataset.file_meta.TransferSyntaxUID.is_compressed:
        from pydicom.encaps import encapsulate, get_frame

        try:
            fragment = get_frame(dataset.PixelData, frame_number - 1, number_of_frames=frames)
        except (ValueError, IndexError) as exc:
            raise PixelDataError(source, f"cannot find frame {frame_number}: {exc}") from exc
        # The data set was read for this call alone, so it becomes a one-frame image in
        # place, which the shared decoder checks and decodes like any other.
        dataset.PixelData = encapsulate([fragment])
        dataset.NumberOfFrames = 1
        return decode_pixel_array(dataset, source)
    array = decode_pixel_array(dataset, source)
    return array[frame_number - 1] if frames > 1 else array


def to_display(pixels: np.ndarray, dataset: Any) -> np.ndarray:
    """8-bit display values: greyscale windowed, colour as RGB.

    Args:
        pixels: Stored values of one frame, ``(rows, columns)`` or ``(rows, columns, 3)``.
        dataset: The data set holding the rescale, window and photometric attributes.
    """
    if pixels.ndim == 3:
        if pixels.dtype == np.uint8:
            return pixels
        peak = float(pixels.max()) or 1.0
        return np.clip(pixels.astype(np.float32) * (255.0 / peak), 0, 255).astype(np.uint8)
    values = pixels.astype(np.float32)
    slope = float(dataset.get("RescaleSlope", 1) or 1)
    intercept = float(dataset.get("RescaleIntercept", 0) or 0)
    values = values * slope + intercept
    window = _first_window(dataset)
    if window is not None:
        center, width = window
        # PS3.3 C.11.2.1.2.1: linear function on [center - 0.5 - (width-1)/2, ...].
        scaled = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    else:
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0.0
    display = np.clip(scaled, 0, 255).astype(np.uint8)
    if dataset.get("PhotometricInterpretation") == "MONOCHROME1":
        display = 255 - display
    return display


def _first_window(dataset: Any) -> tuple[float, float] | None:
    """The first Window Center/Width pair, when present and usable (width above 1)."""
    center, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
    if center is None or width is None:
        return None
    try:
        center_value = float(center[0] if _is_multi(center) else center)
        width_value = float(width[0] if _is_multi(width) else width)
    except (TypeError, ValueError, IndexError):
        return None
    return (center_value, width_value) if width_value > 1 else None


def _is_multi(value: Any) -> bool:
    return isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"


def encode_image(image: np.ndarray, media_type: RenderedType, *, quality: int) -> bytes:
    """Encode 8-bit greyscale or RGB pixels as JPEG or PNG."""
    from PIL import Image

    picture = Image.fromarray(image)  # uint8: "L" for 2-D, "RGB" for 3 samples
    buffer = io.BytesIO()
    if media_type == "image/png":
        picture.save(buffer, format="PNG")
    else:
        picture.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
