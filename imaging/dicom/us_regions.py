"""Where an ultrasound image holds its picture: declared regions and the burned-in header band.

The Sequence of Ultrasound Regions (PS3.3 C.8.5.5) declares boxes of image data. Cine
loading keeps the 2D tissue regions (the B-mode sector) and de-identification keeps the
union of every declared region; :func:`region_mask` serves both through ``tissue_only``.

Where no region is declared, scanners still burn the patient's name, ID, the institution
and the date into a band at the top of the screen. :func:`below_header_band` finds that
band from the pixels: a fixed fraction of the rows would be a guess that cuts into some
screens' image and leaves other screens' text.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from imaging.errors import CineLoopError

Number = TypeVar("Number", int, float)

ULTRASOUND_IMAGE_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
        "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image Storage
        "1.2.840.10008.5.1.4.1.1.6",  # Ultrasound Image Storage (Retired)
        "1.2.840.10008.5.1.4.1.1.3",  # Ultrasound Multi-frame Image Storage (Retired)
    }
)
# Region Spatial Format 1 is "2D (tissue or flow)"; Region Data Type 1 is "tissue".
REGION_SPATIAL_FORMAT_2D = 1
REGION_DATA_TYPE_TISSUE = 1
PHYSICAL_UNITS = {
    0: "none", 1: "percent", 2: "dB", 3: "cm", 4: "seconds", 5: "hertz", 6: "dB/seconds",
    7: "cm/sec", 8: "cm2", 9: "cm2/sec", 10: "cm3", 11: "cm3/sec", 12: "degrees",
}  # fmt: skip

# The header band is clamped to between these fractions of the rows (see below_header_band).
MIN_HEADER_FRACTION = 0.10
MAX_HEADER_FRACTION = 0.50
# Stored values at or below 1/16 of full scale count as black (JPEG leaves noise there).
_BLACK_FRACTION = 1.0 / 16.0
# Dilation that joins speckle into one image component while text lines stay apart.
_JOIN_ITERATIONS = 2
_BOX_KEYWORDS = (
    "RegionLocationMinX0", "RegionLocationMinY0", "RegionLocationMaxX1",
    "RegionLocationMaxY1", "RegionSpatialFormat", "RegionDataType",
)  # fmt: skip


@dataclass(frozen=True)
class UltrasoundRegion:
    """One item of the Sequence of Ultrasound Regions; pixel bounds are inclusive.

    Attributes:
        min_x0, min_y0, max_x1, max_y1: The region's box in pixels (column, row).
        spatial_format: Region Spatial Format (1 = 2D, 2 = M-mode, 3 = spectral...).
        data_type: Region Data Type (1 = tissue, 2 = colour flow, 3 = PW Doppler...).
        flags: Region Flags bit map (0 when absent).
        physical_units_x, physical_units_y: Physical Units code (3 = cm, 4 = seconds...).
        physical_delta_x, physical_delta_y: Physical size of one pixel step, in those units.
        reference_pixel_x0, reference_pixel_y0: The reference pixel relative to the box
            corner (the sector apex on most scanners), or None.
    """

    min_x0: int
    min_y0: int
    max_x1: int
    max_y1: int
    spatial_format: int
    data_type: int
    flags: int
    physical_units_x: int | None
    physical_units_y: int | None
    physical_delta_x: float | None
    physical_delta_y: float | None
    reference_pixel_x0: int | None
    reference_pixel_y0: int | None

    @property
    def is_2d_tissue(self) -> bool:
        """Whether this region is a 2D tissue image (the B-mode sector)."""
        return (
            self.spatial_format == REGION_SPATIAL_FORMAT_2D
            and self.data_type == REGION_DATA_TYPE_TISSUE
        )

    @property
    def physical_units_x_name(self) -> str | None:
        """The X unit as a word (``"cm"``), or None when not declared."""
        return None if self.physical_units_x is None else PHYSICAL_UNITS.get(self.physical_units_x)

    @property
    def physical_units_y_name(self) -> str | None:
        """The Y unit as a word (``"cm"``), or None when not declared."""
        return None if self.physical_units_y is None else PHYSICAL_UNITS.get(self.physical_units_y)


def is_ultrasound(dataset: Any) -> bool:
    """Whether ``dataset`` is an Ultrasound Image or Ultrasound Multi-frame Image."""
    return str(dataset.get("SOPClassUID") or "") in ULTRASOUND_IMAGE_SOP_CLASSES


def parse_ultrasound_regions(dataset: Any, source: str) -> tuple[UltrasoundRegion, ...]:
    """The Sequence of Ultrasound Regions as records (empty when absent).

    Raises:
        CineLoopError: An item lacks its box, spatial format or data type, or its box is
            inverted (min above max).
    """
    regions = []
    for index, item in enumerate(dataset.get("SequenceOfUltrasoundRegions") or []):
        where = f"ultrasound region {index + 1}"
        values: dict[str, int] = {}
        for keyword in _BOX_KEYWORDS:
            value = item.get(keyword)
            if not isinstance(value, int):
                raise CineLoopError(source, f"{where} has no valid {keyword} ({value!r})")
            values[keyword] = value
        region = UltrasoundRegion(
            min_x0=values["RegionLocationMinX0"],
            min_y0=values["RegionLocationMinY0"],
            max_x1=values["RegionLocationMaxX1"],
            max_y1=values["RegionLocationMaxY1"],
            spatial_format=values["RegionSpatialFormat"],
            data_type=values["RegionDataType"],
            flags=_optional(item, "RegionFlags", int, where, source) or 0,
            physical_units_x=_optional(item, "PhysicalUnitsXDirection", int, where, source),
            physical_units_y=_optional(item, "PhysicalUnitsYDirection", int, where, source),
            physical_delta_x=_optional(item, "PhysicalDeltaX", float, where, source),
            physical_delta_y=_optional(item, "PhysicalDeltaY", float, where, source),
            reference_pixel_x0=_optional(item, "ReferencePixelX0", int, where, source),
            reference_pixel_y0=_optional(item, "ReferencePixelY0", int, where, source),
        )
        if region.min_x0 > region.max_x1 or region.min_y0 > region.max_y1:
            raise CineLoopError(
                source,
                f"{where} box ({region.min_x0},{region.min_y0})-({region.max_x1},"
                f"{region.max_y1}) has its minimum past its maximum",
            )
        regions.append(region)
    return tuple(regions)


def region_mask(
    regions: tuple[UltrasoundRegion, ...] | list[UltrasoundRegion],
    height: int,
    width: int,
    *,
    tissue_only: bool,
) -> np.ndarray:
    """``(height, width)`` bool: True inside the regions' boxes, clipped to the image.

    Args:
        regions: Parsed regions (:func:`parse_ultrasound_regions`).
        height, width: The image size in pixels.
        tissue_only: Keep only the 2D tissue regions (the B-mode sector a model sees);
            False keeps every declared region (all the image data de-identification
            must not blank).
    """
    mask = np.zeros((height, width), dtype=bool)
    for region in regions:
        if tissue_only and not region.is_2d_tissue:
            continue
        x0, y0 = max(region.min_x0, 0), max(region.min_y0, 0)
        mask[y0 : region.max_y1 + 1, x0 : region.max_x1 + 1] = True
    return mask


def below_header_band(frames: np.ndarray, *, bits_stored: int) -> np.ndarray:
    """``(rows, columns)`` bool: True below the band of burned-in text at the top.

    ``frames`` has shape ``(frames, rows, columns, samples)``. The brightest value of
    each pixel over all frames and samples is thresholded at 1/16 of full scale,
    dilated by two pixels so that speckle joins up, and split into 8-connected
    components. The largest component is taken as the image; the band is every row
    above its first row, clamped to between 10% and 50% of the rows. Text beside the
    image, below the band, is not found: declared regions are the reliable source.
    """
    from scipy import ndimage

    rows, columns = frames.shape[1:3]
    minimum = math.ceil(MIN_HEADER_FRACTION * rows)
    maximum = math.floor(MAX_HEADER_FRACTION * rows)
    peak = frames.max(axis=(0, 3))
    foreground = peak > (2**bits_stored - 1) * _BLACK_FRACTION
    joined = ndimage.binary_dilation(foreground, iterations=_JOIN_ITERATIONS)
    labels, count = ndimage.label(joined, structure=np.ones((3, 3), dtype=bool))
    band = minimum
    if count:
        largest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
        first_row = int(np.nonzero((labels == largest).any(axis=1))[0][0])
        band = min(max(first_row, minimum), maximum)
    mask = np.zeros((rows, columns), dtype=bool)
    mask[band:] = True
    return mask


def _optional(
    item: Any, keyword: str, convert: Callable[[Any], Number], where: str, source: str
) -> Number | None:
    """An optional single number of a region item; a list or text is refused, not guessed."""
    value = item.get(keyword)
    if value is None or value == "":
        return None
    try:
        return convert(value)
    except (TypeError, ValueError, OverflowError):
        raise CineLoopError(source, f"{where} has no valid {keyword} ({value!r})") from None
