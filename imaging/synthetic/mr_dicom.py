"""Write a synthetic ``MRVolume`` as a single-frame MR Image Storage series.

The modules this writer shares with the Enhanced MR and NIfTI writers live in
``imaging.synthetic.mr_dicom_modules``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from pydicom.dataset import Dataset

from imaging.synthetic.mr_dicom_modules import (
    MRAcquisition,
    Rescale,
    add_common_modules,
    add_image_pixel_module,
    choose_rescale,
    ds_string,
    ds_strings,
    file_meta,
    hashed_file_name,
    parse_acquisition,
    percent_phase_field_of_view,
    validate_volume,
    window,
)
from imaging.synthetic.records import MRVolume, SyntheticStudy, deterministic_uid

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"

FileOrder = Literal["hashed", "sop_instance_uid", "reversed_instance_numbers"]


def unordered_instance_uids(
    count: int, uid_parts: tuple[object, ...], file_name: Callable[[str], str]
) -> tuple[list[str], list[str]]:
    """SOP Instance UIDs and file names whose lexical order is not the slice order.

    A salt is added to the UID derivation until the order differs, so every
    seed gives a series that a reader must sort by geometry.
    """
    salt = 0
    while True:
        uids = [deterministic_uid(*uid_parts, index, salt) for index in range(count)]
        names = [file_name(uid) for uid in uids]
        if count < 2 or sorted(names) != names:
            return uids, names
        salt += 1


def write_mr_series(
    volume: MRVolume,
    study: SyntheticStudy,
    *,
    out_dir: Path,
    series_number: int,
    uid_seed: str,
    file_order: FileOrder = "hashed",
) -> list[Path]:
    """Write ``volume`` as single-frame MR Image Storage files, one per slice, into ``out_dir``.

    ``file_order`` says how files and instance numbers relate to the slices:
    ``"hashed"`` names files by a hash of their SOP Instance UID, with
    InstanceNumber growing along the slice direction; ``"sop_instance_uid"``
    names them ``<SOPInstanceUID>.dcm``; ``"reversed_instance_numbers"`` names
    them by hash and numbers instances against the slice direction. In every
    case the lexical file order differs from the slice order and
    ImagePositionPatient gives the true geometry. Every UID derives from
    ``uid_seed`` and ``series_number``, so a seed reproduces the files.

    Returns:
        The written paths, in slice order (``paths[k]`` holds ``volume.pixels[k]``).

    Raises:
        ValueError: ``volume`` is inconsistent, or ``file_order`` or
            ``series_number`` is not valid.
    """
    if file_order not in get_args(FileOrder):
        raise ValueError(
            f'Argument "file_order" must be one of {get_args(FileOrder)}, got {file_order!r}'
        )
    if series_number < 1:
        raise ValueError(f'Argument "series_number" must be positive, got {series_number}')
    validate_volume(volume)
    acquisition = parse_acquisition(volume.acquisition)
    rescale = choose_rescale(volume.pixels)
    stored = rescale.stored_values(volume.pixels)
    center, width = window(stored, rescale)
    count = volume.pixels.shape[0]

    series_uid = deterministic_uid(uid_seed, "mr-series", series_number)
    frame_of_reference_uid = deterministic_uid(uid_seed, "mr-frame-of-reference", series_number)
    file_name = (lambda uid: f"{uid}.dcm") if file_order == "sop_instance_uid" else hashed_file_name
    sop_uids, names = unordered_instance_uids(
        count, (uid_seed, "mr-instance", series_number), file_name
    )
    template = _series_template(volume, study, acquisition, rescale, (center, width))
    add_common_modules(
        template,
        study,
        acquisition,
        series_instance_uid=series_uid,
        frame_of_reference_uid=frame_of_reference_uid,
        series_number=series_number,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for index in range(count):
        instance_number = count - index if file_order == "reversed_instance_numbers" else index + 1
        dataset = _slice_dataset(
            template, volume, index, stored[index], sop_uids[index], instance_number
        )
        path = out_dir / names[index]
        dataset.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _series_template(
    volume: MRVolume,
    study: SyntheticStudy,
    acquisition: MRAcquisition,
    rescale: Rescale,
    voi_window: tuple[float, float],
) -> Dataset:
    """The attributes every slice of the series shares, except the common modules."""
    slices, rows, columns = volume.pixels.shape
    dataset = Dataset()
    dataset.SOPClassUID = MR_IMAGE_STORAGE
    dataset.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    dataset.AcquisitionNumber = 1
    dataset.AcquisitionDate = study.study_date.strftime("%Y%m%d")
    dataset.AcquisitionTime = study.study_time
    dataset.ContentDate = study.study_date.strftime("%Y%m%d")
    dataset.ContentTime = study.study_time
    dataset.BurnedInAnnotation = "NO"
    dataset.LossyImageCompression = "00"

    dataset.PixelSpacing = ds_strings(volume.pixel_spacing)
    dataset.ImageOrientationPatient = ds_strings(
        np.concatenate([volume.row_direction, volume.column_direction])
    )
    dataset.SliceThickness = ds_string(volume.slice_thickness)
    dataset.SpacingBetweenSlices = ds_string(volume.slice_spacing)

    add_image_pixel_module(dataset, rows, columns)
    dataset.RescaleIntercept = ds_string(rescale.intercept)
    dataset.RescaleSlope = ds_string(rescale.slope)
    dataset.WindowCenter = ds_string(voi_window[0])
    dataset.WindowWidth = ds_string(voi_window[1])

    dataset.ScanningSequence = ["GR", "IR"] if acquisition.inversion_recovery else "GR"
    dataset.SequenceVariant = ["SP", "MP"] if acquisition.inversion_recovery else "SP"
    dataset.ScanOptions = "IR" if acquisition.inversion_recovery else ""
    dataset.MRAcquisitionType = "3D"
    dataset.SequenceName = acquisition.sequence_name
    dataset.AngioFlag = "N"
    dataset.RepetitionTime = ds_string(acquisition.repetition_time_ms)
    dataset.EchoTime = ds_string(acquisition.echo_time_ms)
    if acquisition.inversion_recovery:
        dataset.InversionTime = ds_string(acquisition.inversion_time_ms)
    dataset.NumberOfAverages = "1"
    dataset.ImagingFrequency = ds_string(acquisition.imaging_frequency_mhz)
    dataset.ImagedNucleus = "1H"
    dataset.EchoNumbers = "1"
    dataset.MagneticFieldStrength = ds_string(acquisition.magnetic_field_strength_t)
    dataset.NumberOfPhaseEncodingSteps = rows
    dataset.EchoTrainLength = "1"
    dataset.PercentSampling = "100"
    dataset.PercentPhaseFieldOfView = ds_string(percent_phase_field_of_view(volume))
    dataset.PixelBandwidth = "240"
    dataset.ReceiveCoilName = "Head_32"
    dataset.TransmitCoilName = "Body"
    # Frequency rows\frequency columns\phase rows\phase columns; with phase encoding
    # along the column direction only the first and last are used.
    dataset.AcquisitionMatrix = [columns, 0, 0, rows]
    dataset.InPlanePhaseEncodingDirection = "COL"
    dataset.FlipAngle = ds_string(acquisition.flip_angle_deg)
    dataset.VariableFlipAngleFlag = "N"
    dataset.SAR = "0.05"
    dataset.dBdt = "0"
    dataset.ImagesInAcquisition = slices
    return dataset


def _slice_dataset(
    template: Dataset,
    volume: MRVolume,
    index: int,
    stored: np.ndarray,
    sop_instance_uid: str,
    instance_number: int,
) -> Dataset:
    """One slice: the template plus its position, identity and pixels."""
    dataset = Dataset()
    dataset.update(template)
    dataset.file_meta = file_meta(MR_IMAGE_STORAGE, sop_instance_uid)
    dataset.SOPInstanceUID = sop_instance_uid
    dataset.InstanceNumber = instance_number
    origin = np.asarray(volume.slice_origins[index], dtype=np.float64)
    dataset.ImagePositionPatient = ds_strings(origin)
    dataset.SliceLocation = ds_string(float(np.dot(origin, volume.slice_direction)))
    dataset.PixelData = stored.astype("<i2", copy=False).tobytes()
    return dataset
