"""Clean Pixel Data for ultrasound: blank everything that is not declared image.

Ultrasound scanners burn the patient's name, ID, the institution and the date into
the pixels, above and beside the image. The Sequence of Ultrasound Regions declares
where the image data lie; everything outside the union of the region boxes is set to
0 in every frame. Where no region is declared (or none reaches into the image), the
header band is blanked instead (:func:`imaging.dicom.us_regions.below_header_band`).
A malformed region sequence is refused: where the image lies is then unknown.

Compressed input is decoded and the cleaned pixels are stored uncompressed; colour
comes back from the decoder as RGB, so YBR photometric interpretations become RGB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from imaging.dicom.pixels import decode_pixel_array, pixel_layout
from imaging.dicom.reading import DEFAULT_READ_LIMITS, ReadLimits
from imaging.dicom.us_regions import (
    below_header_band,
    is_ultrasound,
    parse_ultrasound_regions,
    region_mask,
)
from imaging.errors import CineLoopError, DeidentificationError

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


def clean_ultrasound_pixels(
    dataset: Any, source: str, limits: ReadLimits = DEFAULT_READ_LIMITS
) -> CleanedPixels:
    """Decode the pixels of an ultrasound object and blank everything outside its image.

    Raises:
        DeidentificationError: The object is not ultrasound, or its Sequence of
            Ultrasound Regions is malformed.
        PixelDataError, ResourceLimitError, UnsupportedTransferSyntaxError: The pixels
            cannot be decoded within ``limits``.
    """
    if not is_ultrasound(dataset):
        raise DeidentificationError(
            source,
            f"Clean Pixel Data handles ultrasound only, not SOP Class {dataset.get('SOPClassUID')}",
        )
    try:
        regions = parse_ultrasound_regions(dataset, source)
    except CineLoopError as exc:
        raise DeidentificationError(
            source, f"cannot tell the image from burned-in text: {exc.reason}"
        ) from exc
    layout = pixel_layout(dataset, source, limits)
    pixels = np.array(decode_pixel_array(dataset, source, limits), copy=True)
    # A view: frames and samples as their own axes whatever pydicom's shape was.
    per_pixel = pixels.reshape(layout.frames, layout.rows, layout.columns, -1)
    keep = region_mask(regions, layout.rows, layout.columns, tissue_only=False)
    method: CleaningMethod = "ultrasound regions"
    if not keep.any():
        method = "header band"
        bits_stored = int(dataset.get("BitsStored") or layout.bits_allocated)
        keep = below_header_band(per_pixel, bits_stored=bits_stored)
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
