"""The modules and helpers every synthetic MR writer shares.

The single-frame writer, the Enhanced MR writer and the NIfTI writer all
validate a volume, read its acquisition parameters and store its voxels
through one int16 rescale; the Patient, Study, Series, Frame of Reference,
Equipment and Image Pixel modules, the Part 10 file meta and the Decimal
String helpers live here so that every MR object spells them the same way.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian
from pydicom.valuerep import format_number_as_ds

from imaging.synthetic.dicom_modules import add_equipment_module, add_patient_and_study_modules
from imaging.synthetic.records import MRVolume, SyntheticStudy

# Gyromagnetic ratio of 1H over 2π, in MHz per tesla (CODATA 2018).
_PROTON_MHZ_PER_TESLA = 42.577478518
_INT16_MAX = 32767
# The smallest power of two whose decimal form fits a 16-character DS
# ("3.0517578125e-05"); below it the slope would no longer be exact.
_SMALLEST_SLOPE_EXPONENT = -15
_GEOMETRY_TOLERANCE_MM = 1e-3


@dataclass(frozen=True)
class Rescale:
    """The linear map from stored int16 values to scanner units: ``slope * stored + intercept``."""

    slope: float
    intercept: float

    def stored_values(self, pixels: np.ndarray) -> np.ndarray:
        """The int16 values that this rescale maps back to ``pixels`` within ``slope / 2``."""
        stored = np.rint((np.asarray(pixels, dtype=np.float64) - self.intercept) / self.slope)
        return np.clip(stored, -_INT16_MAX - 1, _INT16_MAX).astype(np.int16)


def choose_rescale(pixels: np.ndarray) -> Rescale:
    """Choose the one rescale that stores every voxel of a series as int16.

    The rule: intercept 0 and slope the smallest power of two (at least
    ``2**-15``) for which the largest magnitude fits in int16. A power of two
    is exact in a DICOM DS string, in NIfTI's float32 ``scl_slope`` and in the
    product with any int16, so DICOM and NIfTI agree bit for bit after
    scaling, and the rounding error is at most ``slope / 2`` (under
    ``max|pixels| / 65534``). Zero stays zero.

    Raises:
        ValueError: ``pixels`` is empty or holds a NaN or an infinity.
    """
    values = np.asarray(pixels, dtype=np.float64)
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError('Argument "pixels" must be non-empty and hold only finite values')
    peak = float(np.max(np.abs(values)))
    if peak == 0.0:
        return Rescale(slope=1.0, intercept=0.0)
    exponent = max(math.ceil(math.log2(peak / _INT16_MAX)), _SMALLEST_SLOPE_EXPONENT)
    return Rescale(slope=math.ldexp(1.0, exponent), intercept=0.0)


@dataclass(frozen=True)
class MRAcquisition:
    """Acquisition parameters of a series; the defaults describe a 3 T 3D T1 MPRAGE."""

    repetition_time_ms: float = 2300.0
    echo_time_ms: float = 2.98
    inversion_time_ms: float = 900.0  # 0 means no inversion pulse
    flip_angle_deg: float = 9.0
    magnetic_field_strength_t: float = 3.0
    sequence_name: str = "*tfl3d1_16ns"
    series_description: str = "T1 MPRAGE SAG"

    @property
    def imaging_frequency_mhz(self) -> float:
        return _PROTON_MHZ_PER_TESLA * self.magnetic_field_strength_t

    @property
    def inversion_recovery(self) -> bool:
        return self.inversion_time_ms > 0.0


def parse_acquisition(acquisition: dict[str, float | str]) -> MRAcquisition:
    """Read ``MRVolume.acquisition``; absent keys take the defaults, unknown keys are ignored.

    Raises:
        ValueError: a numeric key holds something that is not a non-negative number.
    """
    defaults = MRAcquisition()
    numbers: dict[str, float] = {}
    for key in (
        "repetition_time_ms",
        "echo_time_ms",
        "inversion_time_ms",
        "flip_angle_deg",
        "magnetic_field_strength_t",
    ):
        value = acquisition.get(key, getattr(defaults, key))
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number < 0.0:
            raise ValueError(
                f'Argument "volume.acquisition[{key!r}]" must be a non-negative number, '
                f"got {value!r}"
            )
        numbers[key] = number
    return MRAcquisition(
        **numbers,
        sequence_name=str(acquisition.get("sequence_name", defaults.sequence_name)),
        series_description=str(acquisition.get("series_description", defaults.series_description)),
    )


def validate_volume(volume: MRVolume) -> None:
    """Check that ``volume`` describes a regular lattice that DICOM and NIfTI can both express.

    Raises:
        ValueError: naming the field of ``volume`` that is inconsistent.
    """
    if volume.pixels.ndim != 3 or min(volume.pixels.shape) < 1:
        raise ValueError(
            f'Argument "volume.pixels" must have shape (slices, rows, columns), '
            f"got {volume.pixels.shape}"
        )
    row, column = np.asarray(volume.row_direction), np.asarray(volume.column_direction)
    if (
        row.shape != (3,)
        or column.shape != (3,)
        or abs(np.linalg.norm(row) - 1.0) > 1e-4
        or abs(np.linalg.norm(column) - 1.0) > 1e-4
        or abs(float(np.dot(row, column))) > 1e-4
    ):
        raise ValueError(
            'Arguments "volume.row_direction" and "volume.column_direction" must be '
            "orthogonal unit 3-vectors"
        )
    if min(volume.pixel_spacing) <= 0.0 or volume.slice_thickness <= 0.0:
        raise ValueError(
            'Arguments "volume.pixel_spacing" and "volume.slice_thickness" must be positive'
        )
    origins = np.asarray(volume.slice_origins, dtype=np.float64)
    if origins.shape != (volume.pixels.shape[0], 3):
        raise ValueError(
            f'Argument "volume.slice_origins" must have shape ({volume.pixels.shape[0]}, 3), '
            f"got {origins.shape}"
        )
    expected = origins[0] + np.outer(
        np.arange(len(origins)), volume.slice_direction * volume.slice_spacing
    )
    if len(origins) > 1 and (
        volume.slice_spacing <= 0.0
        or float(np.max(np.abs(origins - expected))) > _GEOMETRY_TOLERANCE_MM
    ):
        raise ValueError(
            'Argument "volume.slice_origins" must be evenly spaced along '
            "row_direction x column_direction, in increasing order"
        )


def ds_string(value: float) -> str:
    """A number as a DICOM Decimal String of at most 16 characters."""
    return format_number_as_ds(float(value))


def ds_strings(values: Sequence[float] | np.ndarray) -> list[str]:
    """Several numbers as DICOM Decimal Strings."""
    return [ds_string(value) for value in values]


def window(stored: np.ndarray, rescale: Rescale) -> tuple[float, float]:
    """A display window (center, width) in scanner units from the 1st to 99th percentile."""
    low, high = np.percentile(stored, [1.0, 99.0]) * rescale.slope + rescale.intercept
    width = max(float(high - low), rescale.slope)
    return float(low) + width / 2.0, width


def percent_phase_field_of_view(volume: MRVolume) -> float:
    """Phase over frequency field of view, in percent, with phase encoded along columns."""
    _, rows, columns = volume.pixels.shape
    return 100.0 * rows * volume.pixel_spacing[0] / (columns * volume.pixel_spacing[1])


def add_common_modules(
    dataset: Dataset,
    study: SyntheticStudy,
    acquisition: MRAcquisition,
    *,
    series_instance_uid: str,
    frame_of_reference_uid: str,
    series_number: int,
) -> None:
    """Add the Patient, Study, Series, Frame of Reference and Equipment modules of an MR object."""
    study_date = study.study_date.strftime("%Y%m%d")
    add_patient_and_study_modules(dataset, study)
    dataset.InstanceCreationDate = study_date
    dataset.InstanceCreationTime = study.study_time

    dataset.Modality = "MR"
    dataset.SeriesInstanceUID = series_instance_uid
    dataset.SeriesNumber = series_number
    dataset.SeriesDescription = acquisition.series_description
    dataset.ProtocolName = acquisition.series_description
    dataset.SeriesDate = study_date
    dataset.SeriesTime = study.study_time
    dataset.PatientPosition = "HFS"
    dataset.BodyPartExamined = "HEAD"

    dataset.FrameOfReferenceUID = frame_of_reference_uid
    dataset.PositionReferenceIndicator = ""

    add_equipment_module(dataset, study.site)


def add_image_pixel_module(dataset: Dataset, rows: int, columns: int) -> None:
    """Describe int16 MONOCHROME2 pixels."""
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.Rows = rows
    dataset.Columns = columns
    dataset.BitsAllocated = 16
    dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 1


def file_meta(sop_class_uid: str, sop_instance_uid: str) -> FileMetaDataset:
    """Part 10 file meta information for an Explicit VR Little Endian object."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def hashed_file_name(sop_instance_uid: str) -> str:
    """A file name that hides the slice order, as PACS exports named by hash do."""
    return hashlib.sha256(sop_instance_uid.encode()).hexdigest()[:16] + ".dcm"
