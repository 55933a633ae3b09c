"""Write a synthetic ``CineLoop`` as a DICOM Ultrasound Multi-frame Image.

Three pixel encodings cover what echo archives hold: JPEG Baseline in
YBR_FULL_422 (what most scanners send), uncompressed RGB, and uncompressed
MONOCHROME2. The US Region Calibration module carries the physical scale and
the sector apex, so measurements in pixels convert to centimetres.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.tag import Tag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from imaging.synthetic.dicom_modules import add_equipment_module, add_patient_and_study_modules
from imaging.synthetic.echo_cine import CineLoop
from imaging.synthetic.records import SyntheticStudy, deterministic_uid

US_MULTIFRAME_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"

UltrasoundEncoding = Literal["jpeg_baseline", "rgb", "monochrome2"]

_JPEG_QUALITY = 90
# Region Spatial Format 1 is 2D tissue or flow; Region Data Type 1 is tissue; units 3 are cm.
_REGION_2D, _REGION_TISSUE, _UNITS_CM = 1, 1, 3


def write_us_multiframe(
    cine: CineLoop,
    study: SyntheticStudy,
    *,
    path: Path,
    encoding: UltrasoundEncoding,
    series_number: int = 1,
    uid_seed: str,
) -> Path:
    """Write ``cine`` as one Ultrasound Multi-frame Image Storage file at ``path``.

    Every UID derives from ``uid_seed``, the study and ``series_number``, so a
    seed reproduces the file byte for byte.

    Args:
        cine: The loop to store; its header text makes BurnedInAnnotation ``YES``.
        study: Patient, study and site attributes.
        path: Where to write the Part 10 file; parent folders are created.
        encoding: ``"jpeg_baseline"`` (lossy, YBR_FULL_422), ``"rgb"`` or ``"monochrome2"``
            (both Explicit VR Little Endian).
        series_number: The series number, positive.
        uid_seed: Seed of the series and instance UIDs.

    Returns:
        ``path``.

    Raises:
        ValueError: ``encoding`` is not one of the three, or ``series_number`` is not positive.
    """
    if encoding not in get_args(UltrasoundEncoding):
        raise ValueError(
            f'Argument "encoding" must be one of {get_args(UltrasoundEncoding)}, got {encoding!r}'
        )
    if series_number < 1:
        raise ValueError(f'Argument "series_number" must be positive, got {series_number}')

    series_uid = deterministic_uid(uid_seed, study.study_instance_uid, "us-series", series_number)
    instance_uid = deterministic_uid(uid_seed, series_uid, "us-instance", 1)
    dataset = Dataset()
    _add_patient_study_series(dataset, study, series_uid, series_number)
    _add_image(dataset, cine, instance_uid)
    _add_cine(dataset, cine)
    _add_region_calibration(dataset, cine)
    transfer_syntax = _add_pixels(dataset, cine, encoding)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(US_MULTIFRAME_IMAGE_STORAGE)
    meta.MediaStorageSOPInstanceUID = UID(instance_uid)
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    dataset.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path


def _add_patient_study_series(
    dataset: Dataset, study: SyntheticStudy, series_uid: str, series_number: int
) -> None:
    """Patient, General Study, Patient Study, General Series and General Equipment."""
    add_patient_and_study_modules(dataset, study)

    dataset.Modality = "US"
    dataset.SeriesInstanceUID = series_uid
    dataset.SeriesNumber = series_number
    dataset.SeriesDescription = "Apical 4 chamber"
    dataset.SeriesDate = dataset.StudyDate
    dataset.SeriesTime = study.study_time
    dataset.BodyPartExamined = "HEART"
    add_equipment_module(dataset, study.site)


def _add_image(dataset: Dataset, cine: CineLoop, instance_uid: str) -> None:
    """General Image, the non-pixel part of US Image, and SOP Common."""
    dataset.SOPClassUID = US_MULTIFRAME_IMAGE_STORAGE
    dataset.SOPInstanceUID = instance_uid
    dataset.InstanceCreationDate = dataset.StudyDate
    dataset.InstanceCreationTime = dataset.StudyTime
    dataset.InstanceNumber = 1
    dataset.ContentDate = dataset.StudyDate
    dataset.ContentTime = dataset.StudyTime
    dataset.AcquisitionDateTime = dataset.StudyDate + dataset.StudyTime
    dataset.PatientOrientation = ""
    # Value 3 is the US exam type (transthoracic); value 4 "0001" the mode bit map for 2D.
    dataset.ImageType = ["ORIGINAL", "PRIMARY", "TTE", "0001"]
    dataset.BurnedInAnnotation = "YES"
    dataset.HeartRate = round(cine.heart_rate_bpm)
    dataset.TransducerType = "SECTOR_PHASED"


def _add_cine(dataset: Dataset, cine: CineLoop) -> None:
    """Cine and Multi-frame: a looping clip at a constant frame time."""
    frame_rate = round(cine.frame_rate_fps)
    dataset.NumberOfFrames = cine.number_of_frames
    dataset.FrameIncrementPointer = Tag("FrameTime")
    dataset.FrameTime = f"{cine.frame_time_ms:.4f}"
    dataset.CineRate = frame_rate
    dataset.RecommendedDisplayFrameRate = frame_rate
    dataset.ActualFrameDuration = round(cine.frame_time_ms)
    dataset.PreferredPlaybackSequencing = 0
    dataset.StartTrim = 1
    dataset.StopTrim = cine.number_of_frames


def _add_region_calibration(dataset: Dataset, cine: CineLoop) -> None:
    """One sector region: the fan's box, cm per pixel, and the apex as the physical origin."""
    x0, y0, x1, y1 = cine.sector_bounding_box
    apex_x, apex_y = cine.sector_apex_xy
    region = Dataset()
    region.RegionSpatialFormat = _REGION_2D
    region.RegionDataType = _REGION_TISSUE
    region.RegionFlags = 0
    region.RegionLocationMinX0 = x0
    region.RegionLocationMinY0 = y0
    region.RegionLocationMaxX1 = x1
    region.RegionLocationMaxY1 = y1
    region.ReferencePixelX0 = round(apex_x) - x0
    region.ReferencePixelY0 = round(apex_y) - y0
    region.ReferencePixelPhysicalValueX = 0.0
    region.ReferencePixelPhysicalValueY = 0.0
    region.PhysicalUnitsXDirection = _UNITS_CM
    region.PhysicalUnitsYDirection = _UNITS_CM
    region.PhysicalDeltaX = cine.mm_per_pixel_x / 10.0
    region.PhysicalDeltaY = cine.mm_per_pixel_y / 10.0
    dataset.SequenceOfUltrasoundRegions = [region]


def _add_pixels(dataset: Dataset, cine: CineLoop, encoding: UltrasoundEncoding) -> UID:
    """Image Pixel and the pixel part of US Image; returns the transfer syntax."""
    dataset.Rows = cine.rows
    dataset.Columns = cine.columns
    dataset.BitsAllocated = 8
    dataset.BitsStored = 8
    dataset.HighBit = 7
    dataset.PixelRepresentation = 0
    if encoding == "monochrome2":
        dataset.SamplesPerPixel = 1
        dataset.PhotometricInterpretation = "MONOCHROME2"
        dataset.LossyImageCompression = "00"
        dataset.PixelData = np.ascontiguousarray(cine.grayscale_frames()).tobytes()
        dataset["PixelData"].VR = "OB"
        return ExplicitVRLittleEndian

    dataset.SamplesPerPixel = 3
    dataset.PlanarConfiguration = 0
    if encoding == "rgb":
        dataset.PhotometricInterpretation = "RGB"
        dataset.LossyImageCompression = "00"
        dataset.PixelData = np.ascontiguousarray(cine.frames).tobytes()
        dataset["PixelData"].VR = "OB"
        return ExplicitVRLittleEndian

    frames = [_jpeg_baseline(frame) for frame in cine.frames]
    dataset.PhotometricInterpretation = "YBR_FULL_422"
    dataset.LossyImageCompression = "01"
    dataset.LossyImageCompressionMethod = "ISO_10918_1"
    ratio = cine.frames.nbytes / sum(len(frame) for frame in frames)
    dataset.LossyImageCompressionRatio = f"{ratio:.2f}"
    dataset.PixelData = encapsulate(frames, has_bot=True)
    dataset["PixelData"].VR = "OB"
    dataset["PixelData"].is_undefined_length = True
    return JPEGBaseline8Bit


def _jpeg_baseline(rgb: np.ndarray) -> bytes:
    """One frame as a baseline JPEG with 4:2:2 chroma, as DICOM's YBR_FULL_422 describes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(
        buffer, format="JPEG", quality=_JPEG_QUALITY, subsampling=1
    )
    return buffer.getvalue()
