"""Ultrasound cine loops: DICOM US (multi-frame) images to frames, timing and sector mask.

:func:`load_us_cine` decodes through :func:`imaging.dicom.pixels.decode_pixel_array`
(JPEG Baseline, JPEG-LS, JPEG 2000, RLE and native; YBR converted to RGB by pydicom),
applies a palette for PALETTE COLOR and inverts MONOCHROME1, so every loop comes back
as uint8 ``(frames, height, width, channels)`` with display polarity.

Timing follows PS3.3 C.7.6.5 (Cine Module): the attribute that Frame Increment
Pointer names comes first, then Frame Time, Frame Time Vector, Cine Rate and
Recommended Display Frame Rate. A timing attribute that is present but invalid is
an error, never skipped for the next one: a broken clock must not look like a good one.

The sector mask marks the 2D tissue regions of the Sequence of Ultrasound Regions
(PS3.3 C.8.5.5). Without any region the mask is everything below the band of
burned-in patient and machine text, found from the frames
(:func:`imaging.dicom.us_regions.below_header_band`). With regions but none of them
2D tissue (M-mode, spectral Doppler) the mask is empty: the loop holds no 2D image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from imaging.dicom.pixels import decode_pixel_array
from imaging.dicom.reading import DEFAULT_READ_LIMITS, ReadLimits, read_dicom, require_uid
from imaging.dicom.us_regions import (
    UltrasoundRegion,
    below_header_band,
    is_ultrasound,
    parse_ultrasound_regions,
    region_mask,
)
from imaging.errors import CineLoopError

TimingSource = Literal[
    "FrameTime", "FrameTimeVector", "CineRate", "RecommendedDisplayFrameRate", "VideoFrameRate"
]
MaskSource = Literal["regions", "header_band", "whole_frame"]

_TIMING_ORDER: tuple[TimingSource, ...] = (
    "FrameTime",
    "FrameTimeVector",
    "CineRate",
    "RecommendedDisplayFrameRate",
)
_TIMING_TAGS: dict[int, TimingSource] = {0x00181063: "FrameTime", 0x00181065: "FrameTimeVector"}
# Photometric interpretations that pydicom hands back as RGB (YBR_FULL* converted by
# pydicom, YBR_ICT/YBR_RCT undone by the JPEG 2000 decoder).
_RGB_PHOTOMETRICS = {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"}


@dataclass(frozen=True, eq=False)
class UltrasoundCine:
    """A decoded cine loop with its timing and the pixels that hold the 2D image.

    Attributes:
        frames: uint8 ``(frames, height, width, channels)``, channels 3 (RGB) or 1 (grey),
            read-only.
        frame_times_ms: Time of each frame from the first, ``(frames,)`` float64, read-only.
        frame_rate_hz: Frames per second (from the mean frame interval).
        timing_source: The attribute the times come from.
        regions: The Sequence of Ultrasound Regions, empty when none is declared.
        sector_mask: ``(height, width)`` bool, read-only: True inside the 2D tissue image.
        mask_source: ``"regions"``, ``"header_band"`` (no region declared: everything below
            the header band) or ``"whole_frame"`` (a video already cropped to the sector).
        sop_instance_uid: The SOP Instance UID, None for a video file.
        source: The file or object the loop was read from.
    """

    frames: np.ndarray
    frame_times_ms: np.ndarray
    frame_rate_hz: float
    timing_source: TimingSource
    regions: tuple[UltrasoundRegion, ...]
    sector_mask: np.ndarray
    mask_source: MaskSource
    sop_instance_uid: str | None
    source: str

    def __post_init__(self) -> None:
        # Read-only so a transform that writes in place must copy first (the echo
        # preset's loader does); whoever builds a loop need not remember it.
        for array in (self.frames, self.frame_times_ms, self.sector_mask):
            array.flags.writeable = False

    @property
    def number_of_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def channels(self) -> int:
        return int(self.frames.shape[3])


def load_us_cine(
    path_or_dataset: str | Path | Any, *, limits: ReadLimits = DEFAULT_READ_LIMITS
) -> UltrasoundCine:
    """Read an ultrasound (multi-frame) image into an :class:`UltrasoundCine`.

    Args:
        path_or_dataset: A DICOM file, or a ``pydicom.Dataset`` already read (with its
            ``file_meta``).
        limits: Size limits for reading and decoding.

    Raises:
        CineLoopError: Not an ultrasound image, or its timing, regions or pixel format
            make no usable loop.
        DicomReadError, ResourceLimitError, PixelDataError, UnsupportedTransferSyntaxError:
            From reading and decoding.
    """
    if isinstance(path_or_dataset, str | Path):
        dataset = read_dicom(path_or_dataset, limits=limits)
        source = str(path_or_dataset)
    else:
        dataset = path_or_dataset
        source = str(getattr(dataset, "filename", None) or "<in-memory dataset>")
    _check_ultrasound(dataset, source)
    sop_instance_uid = require_uid(dataset, "SOPInstanceUID", source)
    frames = _decode_frames(dataset, source, limits)
    times, rate, timing_source = frame_timing(dataset, frames.shape[0], source)
    regions = parse_ultrasound_regions(dataset, source)
    height, width = frames.shape[1:3]
    mask_source: MaskSource
    if regions:
        mask = region_mask(regions, height, width, tissue_only=True)
        mask_source = "regions"
    else:
        mask = below_header_band(frames, bits_stored=8)  # frames are uint8 by now
        mask_source = "header_band"
    return UltrasoundCine(
        frames=frames,
        frame_times_ms=times,
        frame_rate_hz=rate,
        timing_source=timing_source,
        regions=regions,
        sector_mask=mask,
        mask_source=mask_source,
        sop_instance_uid=sop_instance_uid,
        source=source,
    )


def frame_timing(
    dataset: Any, number_of_frames: int, source: str
) -> tuple[np.ndarray, float, TimingSource]:
    """Frame times in ms from the first frame, the frame rate, and the attribute used.

    Raises:
        CineLoopError: No timing attribute, or the one chosen is invalid (not a number,
            zero or negative, a Frame Time Vector whose length is not the frame count).
    """
    pointer = dataset.get("FrameIncrementPointer")
    pointed = [_TIMING_TAGS.get(int(tag)) for tag in _as_list(pointer)]
    order = [name for name in pointed if name] + list(_TIMING_ORDER)
    for name in dict.fromkeys(order):
        value = dataset.get(name)
        if value is None or value == "":
            continue
        if name == "FrameTimeVector":
            return (*_times_from_vector(value, number_of_frames, source), "FrameTimeVector")
        number = _positive_number(value, name, source)
        frame_time = number if name == "FrameTime" else 1000.0 / number
        times = np.arange(number_of_frames, dtype=np.float64) * frame_time
        return times, 1000.0 / frame_time, name
    raise CineLoopError(
        source,
        "no frame timing: none of FrameTime, FrameTimeVector, CineRate, "
        "RecommendedDisplayFrameRate is present",
    )


def _check_ultrasound(dataset: Any, source: str) -> None:
    modality = dataset.get("Modality")
    if modality != "US":
        raise CineLoopError(source, f"Modality is {modality!r}, not 'US'")
    if not is_ultrasound(dataset):
        sop_class = dataset.get("SOPClassUID") or "missing"
        raise CineLoopError(
            source, f"SOP Class {sop_class} is not an ultrasound (multi-frame) image"
        )


def _decode_frames(dataset: Any, source: str, limits: ReadLimits) -> np.ndarray:
    """uint8 ``(frames, rows, columns, channels)`` in display colours."""
    photometric = str(dataset.get("PhotometricInterpretation") or "")
    if dataset.get("PixelRepresentation", 0) != 0:
        raise CineLoopError(
            source, "signed pixel data (PixelRepresentation 1) in an ultrasound image"
        )
    bits_stored = dataset.get("BitsStored")
    if photometric != "PALETTE COLOR" and bits_stored != 8:
        raise CineLoopError(source, f"BitsStored {bits_stored!r}: ultrasound loops store 8 bits")
    samples = dataset.get("SamplesPerPixel")
    expected_samples = 3 if photometric in _RGB_PHOTOMETRICS else 1
    if samples != expected_samples:
        raise CineLoopError(
            source, f"{photometric or 'no photometric'} with SamplesPerPixel {samples!r}"
        )
    pixels = decode_pixel_array(dataset, source, limits)
    if int(dataset.get("NumberOfFrames") or 1) == 1:
        pixels = pixels[np.newaxis]
    if photometric == "PALETTE COLOR":
        pixels = _apply_palette(pixels, dataset, source)
    elif photometric in ("MONOCHROME1", "MONOCHROME2"):
        if photometric == "MONOCHROME1":
            pixels = 255 - pixels  # 0 is white in MONOCHROME1
        pixels = pixels[..., np.newaxis]
    elif photometric not in _RGB_PHOTOMETRICS:
        raise CineLoopError(source, f"photometric interpretation {photometric!r} is not supported")
    return np.ascontiguousarray(pixels, dtype=np.uint8)


def _apply_palette(indices: np.ndarray, dataset: Any, source: str) -> np.ndarray:
    from pydicom.pixels import apply_color_lut

    try:
        rgb = np.asarray(apply_color_lut(indices, dataset))
    except Exception as exc:  # pydicom raises ValueError/KeyError/IndexError for bad LUTs
        raise CineLoopError(source, f"cannot apply the palette colour LUT: {exc}") from exc
    bits = int(dataset.RedPaletteColorLookupTableDescriptor[2])
    # 16-bit palette entries keep their top byte; 8-bit entries are already display values.
    return (rgb >> 8).astype(np.uint8) if bits == 16 else rgb.astype(np.uint8)


def _times_from_vector(value: Any, number_of_frames: int, source: str) -> tuple[np.ndarray, float]:
    try:
        increments = np.atleast_1d(np.asarray(_as_list(value), dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise CineLoopError(source, f"FrameTimeVector {value!r} is not numeric") from exc
    if increments.size != number_of_frames:
        raise CineLoopError(
            source,
            f"FrameTimeVector has {increments.size} values for {number_of_frames} frames",
        )
    if number_of_frames < 2:
        raise CineLoopError(source, "a one-frame FrameTimeVector gives no frame rate")
    # The first increment is 0 by definition (PS3.3 C.7.6.5.1.2); its value is ignored.
    steps = increments[1:]
    if not np.all(np.isfinite(steps)) or np.any(steps <= 0):
        raise CineLoopError(
            source, f"FrameTimeVector has a zero, negative or non-finite increment: {steps.min()}"
        )
    times = np.concatenate([[0.0], np.cumsum(steps)])
    return times, 1000.0 * (number_of_frames - 1) / float(times[-1])


def _positive_number(value: Any, keyword: str, source: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise CineLoopError(source, f"{keyword} {value!r} is not a number") from exc
    if not math.isfinite(number) or number <= 0:
        raise CineLoopError(source, f"{keyword} is {number}; it must be positive")
    return number


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)
