"""Clean Pixel Data for ultrasound: blank everything that is not declared image.

Ultrasound scanners burn the patient's name, ID, the institution and the date into
the pixels, above and beside the image. The Sequence of Ultrasound Regions declares
where the image data lie; everything outside the union of the region boxes is set to
0 in every frame. Where no usable region is declared, a header band is blanked
instead, found by :func:`header_band_rows`.

Compressed input is decoded and the cleaned pixels are stored uncompressed; colour
comes back from the decoder as RGB, so YBR photometric interpretations become RGB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from imaging.dicom.pixels import decode_pixel_array, pixel_layout
from imaging.dicom.reading import DEFAULT_READ_LIMITS, ReadLimits
from imaging.errors import DeidentificationError

US_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
        "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image Storage
        "1.2.840.10008.5.1.4.1.1.6",  # Ultrasound Image Storage (Retired)
        "1.2.840.10008.5.1.4.1.1.3",  # Ultrasound Multi-frame Image Storage (Retired)
    }
)

# Header band heuristic (see header_band_rows).
MIN_HEADER_FRACTION = 0.10
MAX_HEADER_FRACTION = 0.50
# Stored values at or below 1/16 of full scale count as black (JPEG leaves noise there).
_BLACK_FRACTION = 1.0 / 16.0
# Dilation that joins speckle into one image component while text lines stay apart.
_JOIN_ITERATIONS = 2

CleaningMethod = Literal["ultrasound regions", "header band"]


@dataclass(frozen=True)
class CleanedPixels:
    """Cleaned pixel data ready to store, and how it was cleaned.

    Attributes:
        pixels: The array as pydicom shapes it (``([frames,] rows, columns[, samples])``),
            zero outside ``keep``.
        keep: Boolean ``(rows, columns)`` mask of the pixels left unchanged.
        method: ``"ultrasound regions"`` or ``"header band"``.
    """

    pixels: np.ndarray
    keep: np.ndarray
    method: CleaningMethod


def is_ultrasound(dataset: Any) -> bool:
    """Whether ``dataset`` is an Ultrasound Image or Ultrasound Multi-frame Image."""
    return str(dataset.get("SOPClassUID", "")) in US_SOP_CLASSES


def region_keep_mask(dataset: Any, rows: int, columns: int) -> np.ndarray | None:
    """The union of the declared ultrasound region boxes, or ``None`` where none is usable.

    Region corners are inclusive pixel coordinates (PS3.3 C.8.5.5.1); boxes are
    clipped to the image and empty boxes ignored.
    """
    keep = np.zeros((rows, columns), dtype=bool)
    usable = False
    for region in dataset.get("SequenceOfUltrasoundRegions") or []:
        corners = [
            region.get(keyword)
            for keyword in (
                "RegionLocationMinX0",
                "RegionLocationMinY0",
                "RegionLocationMaxX1",
                "RegionLocationMaxY1",
            )
        ]
        if not all(isinstance(value, int) for value in corners):
            continue
        x0, y0 = max(corners[0], 0), max(corners[1], 0)
        x1, y1 = min(corners[2], columns - 1), min(corners[3], rows - 1)
        if x0 > x1 or y0 > y1:
            continue
        keep[y0 : y1 + 1, x0 : x1 + 1] = True
        usable = True
    return keep if usable else None


def header_band_rows(frames: np.ndarray, bits_stored: int) -> int:
    """Rows at the top of the image that hold burned-in text, by a documented heuristic.

    ``frames`` has shape ``(frames, rows, columns, samples)``. The brightest value of
    each pixel over all frames and samples is thresholded at 1/16 of full scale,
    dilated by two pixels so that speckle joins up, and split into 8-connected
    components. The largest component is taken as the image; the band is every row
    above its first row, clamped to between 10% and 50% of the rows. Text beside the
    image, below the band, is not found: declared regions are the reliable source.
    """
    from scipy import ndimage

    rows = frames.shape[1]
    minimum = math.ceil(MIN_HEADER_FRACTION * rows)
    maximum = math.floor(MAX_HEADER_FRACTION * rows)
    peak = frames.max(axis=(0, 3))
    foreground = peak > (2**bits_stored - 1) * _BLACK_FRACTION
    joined = ndimage.binary_dilation(foreground, iterations=_JOIN_ITERATIONS)
    labels, count = ndimage.label(joined, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return minimum
    largest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    first_row = int(np.nonzero((labels == largest).any(axis=1))[0][0])
    return min(max(first_row, minimum), maximum)


def clean_ultrasound_pixels(
    dataset: Any, source: str, limits: ReadLimits = DEFAULT_READ_LIMITS
) -> CleanedPixels:
    """Decode the pixels of an ultrasound object and blank everything outside its image.

    Raises:
        DeidentificationError: The object is not ultrasound.
        PixelDataError, ResourceLimitError, UnsupportedTransferSyntaxError: The pixels
            cannot be decoded within ``limits``.
    """
    if not is_ultrasound(dataset):
        raise DeidentificationError(
            source,
            f"Clean Pixel Data handles ultrasound only, not SOP Class {dataset.get('SOPClassUID')}",
        )
    layout = pixel_layout(dataset, source, limits)
    pixels = np.array(decode_pixel_array(dataset, source, limits), copy=True)
    # A view: frames and samples as their own axes whatever pydicom's shape was.
    per_pixel = pixels.reshape(layout.frames, layout.rows, layout.columns, -1)
    keep = region_keep_mask(dataset, layout.rows, layout.columns)
    method: CleaningMethod = "ultrasound regions"
    if keep is None:
        method = "header band"
        bits_stored = int(dataset.get("BitsStored") or layout.bits_allocated)
        keep = np.ones((layout.rows, layout.columns), dtype=bool)
        keep[: header_band_rows(per_pixel, bits_stored)] = False
    per_pixel[:, ~keep, :] = 0
    return CleanedPixels(pixels=pixels, keep=keep, method=method)


def store_native_pixels(dataset: Any, cleaned: CleanedPixels, *, lossy_source: bool) -> None:
    """Put cleaned pixels into ``dataset`` uncompressed, with the attributes that describe them.

    The caller writes the result as Explicit VR Little Endian. Decoded colour is
    RGB with interleaved samples; a lossy source stays marked as lossy.
    """
    bits_allocated = int(dataset.BitsAllocated)
    pixels = np.ascontiguousarray(cleaned.pixels)
    if pixels.dtype.byteorder == ">":
        pixels = pixels.astype(pixels.dtype.newbyteorder("<"))
    data = pixels.tobytes()
    # PS3.5 7.1: values have even length; odd 8-bit pixel data get one padding byte.
    dataset.PixelData = data + b"\x00" if len(data) % 2 else data
    dataset["PixelData"].VR = "OB" if bits_allocated <= 8 else "OW"
    if int(dataset.SamplesPerPixel) == 3:
        if str(dataset.get("PhotometricInterpretation", "")).startswith("YBR"):
            dataset.PhotometricInterpretation = "RGB"
        dataset.PlanarConfiguration = 0
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in dataset:
            delattr(dataset, keyword)
    if lossy_source and dataset.get("LossyImageCompression") != "01":
        dataset.LossyImageCompression = "01"
    dataset.BurnedInAnnotation = "NO"
