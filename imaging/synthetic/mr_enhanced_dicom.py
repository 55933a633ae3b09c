"""Write a synthetic ``MRVolume`` as one Enhanced MR Image Storage (multi-frame) object."""

from __future__ import annotations

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

ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"

FrameOrder = Literal["reversed", "shuffled", "slice"]

_IMAGE_TYPE = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
# (0020,9111) Frame Content Sequence, (0020,9056) Stack ID, (0020,9057) In-Stack Position Number.
_FRAME_CONTENT_SEQUENCE = 0x00209111
_STACK_ID = 0x00209056
_IN_STACK_POSITION_NUMBER = 0x00209057


def write_enhanced_mr_series(
    volume: MRVolume,
    study: SyntheticStudy,
    *,
    out_dir: Path,
    series_number: int,
    uid_seed: str,
    frame_order: FrameOrder = "reversed",
) -> Path:
    """Write ``volume`` as one Enhanced MR Image Storage file in ``out_dir``.

    ``frame_order`` says how frames relate to slices: ``"reversed"`` stores the
    last slice first (a scanner acquiring against the slice direction),
    ``"shuffled"`` stores them in a seeded random order, ``"slice"`` in slice
    order. Each frame's PlanePositionSequence and its In-Stack Position Number
    (the slice index + 1) give the true geometry. The file is named by a hash
    of its SOP Instance UID; every UID derives from ``uid_seed`` and
    ``series_number``.

    Returns:
        The written path.

    Raises:
        ValueError: ``volume`` is inconsistent, or ``frame_order`` or
            ``series_number`` is not valid.
    """
    if frame_order not in get_args(FrameOrder):
        raise ValueError(
            f'Argument "frame_order" must be one of {get_args(FrameOrder)}, got {frame_order!r}'
        )
    if series_number < 1:
        raise ValueError(f'Argument "series_number" must be positive, got {series_number}')
    validate_volume(volume)
    acquisition = parse_acquisition(volume.acquisition)
    rescale = choose_rescale(volume.pixels)
    stored = rescale.stored_values(volume.pixels)
    slice_of_frame = _slice_of_frame(volume.pixels.shape[0], frame_order, (uid_seed, series_number))
    sop_instance_uid = deterministic_uid(uid_seed, "mr-enhanced-instance", series_number)

    dataset = Dataset()
    dataset.file_meta = file_meta(ENHANCED_MR_IMAGE_STORAGE, sop_instance_uid)
    add_common_modules(
        dataset,
        study,
        acquisition,
        series_instance_uid=deterministic_uid(uid_seed, "mr-enhanced-series", series_number),
        frame_of_reference_uid=deterministic_uid(uid_seed, "mr-frame-of-reference", series_number),
        series_number=series_number,
    )
    dataset.SOPClassUID = ENHANCED_MR_IMAGE_STORAGE
    dataset.SOPInstanceUID = sop_instance_uid
    duration_s = _acquisition_duration_s(acquisition, volume.pixels.shape)
    _add_enhanced_mr_image_module(dataset, study, acquisition, duration_s)
    _add_pulse_sequence_module(dataset, acquisition)
    _add_dimension_module(dataset, uid_seed, series_number)
    dataset.AcquisitionContextSequence = []

    slices, rows, columns = volume.pixels.shape
    add_image_pixel_module(dataset, rows, columns)
    dataset.NumberOfFrames = slices
    dataset.SharedFunctionalGroupsSequence = [
        _shared_functional_groups(volume, acquisition, rescale, window(stored, rescale))
    ]
    acquisition_datetime = _acquisition_datetime(study)
    dataset.PerFrameFunctionalGroupsSequence = [
        _frame_functional_groups(volume, int(index), acquisition_datetime, 1000.0 * duration_s)
        for index in slice_of_frame
    ]
    dataset.PixelData = stored[slice_of_frame].astype("<i2", copy=False).tobytes()

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / hashed_file_name(sop_instance_uid)
    dataset.save_as(path, enforce_file_format=True)
    return path


def _slice_of_frame(count: int, frame_order: FrameOrder, seed: tuple[object, ...]) -> np.ndarray:
    """The slice index stored in each frame."""
    if frame_order == "reversed":
        return np.arange(count)[::-1]
    if frame_order == "shuffled":
        digest = deterministic_uid(*seed, "mr-enhanced-frame-order")
        return np.random.default_rng(int(digest.split(".")[-1])).permutation(count)
    return np.arange(count)


def _acquisition_datetime(study: SyntheticStudy) -> str:
    return study.study_date.strftime("%Y%m%d") + study.study_time


def _add_enhanced_mr_image_module(
    dataset: Dataset, study: SyntheticStudy, acquisition: MRAcquisition, duration_s: float
) -> None:
    """Enhanced MR Image module with its Common CT/MR and MR Image Description macros."""
    dataset.ImageType = _IMAGE_TYPE
    dataset.PixelPresentation = "MONOCHROME"
    dataset.VolumetricProperties = "VOLUME"
    dataset.VolumeBasedCalculationTechnique = "NONE"
    dataset.ComplexImageComponent = "MAGNITUDE"
    # Every synthetic series is T1-weighted: MPRAGE or a spoiled gradient echo.
    dataset.AcquisitionContrast = "T1"
    dataset.InstanceNumber = 1
    dataset.ContentDate = study.study_date.strftime("%Y%m%d")
    dataset.ContentTime = study.study_time
    dataset.AcquisitionNumber = 1
    dataset.AcquisitionDateTime = _acquisition_datetime(study)
    dataset.AcquisitionDuration = duration_s
    dataset.ContentQualification = "RESEARCH"
    dataset.ResonantNucleus = "1H"
    dataset.KSpaceFiltering = "NONE"
    dataset.MagneticFieldStrength = ds_string(acquisition.magnetic_field_strength_t)
    dataset.ApplicableSafetyStandardAgency = "IEC"
    dataset.ImageComments = "Synthetic volume; no real patient"
    dataset.BurnedInAnnotation = "NO"
    dataset.LossyImageCompression = "00"
    dataset.PresentationLUTShape = "IDENTITY"


def _acquisition_duration_s(acquisition: MRAcquisition, shape: tuple[int, ...]) -> float:
    """Scan time of a 3D acquisition with phase encoding along rows and slices."""
    slices, rows, _ = shape
    # An MPRAGE shot reads every partition of one phase line after each inversion (one
    # TR); a plain spoiled gradient echo reads one line per TR.
    lines = rows if acquisition.inversion_recovery else rows * slices
    return acquisition.repetition_time_ms * lines / 1000.0


def _add_pulse_sequence_module(dataset: Dataset, acquisition: MRAcquisition) -> None:
    """MR Pulse Sequence module: a 3D spoiled gradient echo, inversion-prepared by default."""
    dataset.PulseSequenceName = acquisition.sequence_name
    dataset.MRAcquisitionType = "3D"
    dataset.EchoPulseSequence = "GRADIENT"
    dataset.MultiPlanarExcitation = "NO"
    dataset.PhaseContrast = "NO"
    dataset.TimeOfFlightContrast = "NO"
    dataset.SteadyStatePulseSequence = "NONE"
    dataset.EchoPlanarPulseSequence = "NO"
    dataset.SaturationRecovery = "NO"
    dataset.SpectrallySelectedSuppression = "NONE"
    dataset.OversamplingPhase = "NONE"
    dataset.GeometryOfKSpaceTraversal = "RECTILINEAR"
    dataset.RectilinearPhaseEncodeReordering = "LINEAR"
    dataset.SegmentedKSpaceTraversal = "SINGLE"
    dataset.CoverageOfKSpace = "FULL"
    dataset.NumberOfKSpaceTrajectories = 1


def _add_dimension_module(dataset: Dataset, uid_seed: str, series_number: int) -> None:
    """Multi-frame Dimension module: frames are indexed by stack and in-stack position."""
    organization_uid = deterministic_uid(uid_seed, "mr-dimension-organization", series_number)
    organization = Dataset()
    organization.DimensionOrganizationUID = organization_uid
    dataset.DimensionOrganizationSequence = [organization]
    dataset.DimensionOrganizationType = "3D"
    dimensions = []
    for pointer, label in (
        (_STACK_ID, "Stack ID"),
        (_IN_STACK_POSITION_NUMBER, "In-Stack Position Number"),
    ):
        dimension = Dataset()
        dimension.DimensionOrganizationUID = organization_uid
        dimension.DimensionIndexPointer = pointer
        dimension.FunctionalGroupPointer = _FRAME_CONTENT_SEQUENCE
        dimension.DimensionDescriptionLabel = label
        dimensions.append(dimension)
    dataset.DimensionIndexSequence = dimensions


def _item(**attributes: object) -> Dataset:
    """A sequence item holding ``attributes`` (DICOM keywords)."""
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def _shared_functional_groups(
    volume: MRVolume,
    acquisition: MRAcquisition,
    rescale: Rescale,
    voi_window: tuple[float, float],
) -> Dataset:
    """The functional groups that hold for every frame."""
    _, rows, columns = volume.pixels.shape
    center, width = voi_window
    ir = acquisition.inversion_recovery
    modifier = _item(
        InversionRecovery="YES" if ir else "NO",
        FlowCompensation="NONE",
        Spoiling="RF_AND_GRADIENT",
        T2Preparation="NO",
        SpectrallySelectedExcitation="NONE",
        SpatialPresaturation="NONE",
        PartialFourier="NO",
        ParallelAcquisition="NO",
    )
    if ir:
        modifier.InversionTimes = [acquisition.inversion_time_ms]
    return _item(
        FrameAnatomySequence=[
            _item(
                AnatomicRegionSequence=[
                    _item(CodeValue="69536005", CodingSchemeDesignator="SCT", CodeMeaning="Head")
                ],
                FrameLaterality="U",
            )
        ],
        PixelMeasuresSequence=[
            _item(
                PixelSpacing=ds_strings(volume.pixel_spacing),
                SliceThickness=ds_string(volume.slice_thickness),
                SpacingBetweenSlices=ds_string(volume.slice_spacing),
            )
        ],
        PlaneOrientationSequence=[
            _item(
                ImageOrientationPatient=ds_strings(
                    np.concatenate([volume.row_direction, volume.column_direction])
                )
            )
        ],
        PixelValueTransformationSequence=[
            _item(
                RescaleIntercept=ds_string(rescale.intercept),
                RescaleSlope=ds_string(rescale.slope),
                RescaleType="US",
            )
        ],
        FrameVOILUTSequence=[_item(WindowCenter=ds_string(center), WindowWidth=ds_string(width))],
        MRImageFrameTypeSequence=[
            _item(
                FrameType=_IMAGE_TYPE,
                PixelPresentation="MONOCHROME",
                VolumetricProperties="VOLUME",
                VolumeBasedCalculationTechnique="NONE",
                ComplexImageComponent="MAGNITUDE",
                AcquisitionContrast="T1",
            )
        ],
        MRTimingAndRelatedParametersSequence=[
            _item(
                RepetitionTime=ds_string(acquisition.repetition_time_ms),
                FlipAngle=ds_string(acquisition.flip_angle_deg),
                EchoTrainLength=1,
                RFEchoTrainLength=0,
                GradientEchoTrainLength=1,
                SpecificAbsorptionRateSequence=[
                    _item(
                        SpecificAbsorptionRateDefinition="IEC_WHOLE_BODY",
                        SpecificAbsorptionRateValue=0.05,
                    )
                ],
                GradientOutputType="DB_DT",
                GradientOutput=0.0,
                OperatingModeSequence=[
                    _item(OperatingModeType="STATIC FIELD", OperatingMode="IEC_NORMAL"),
                    _item(OperatingModeType="RF", OperatingMode="IEC_NORMAL"),
                    _item(OperatingModeType="GRADIENT", OperatingMode="IEC_NORMAL"),
                ],
            )
        ],
        MRFOVGeometrySequence=[
            _item(
                InPlanePhaseEncodingDirection="COLUMN",
                MRAcquisitionFrequencyEncodingSteps=columns,
                MRAcquisitionPhaseEncodingStepsInPlane=rows,
                MRAcquisitionPhaseEncodingStepsOutOfPlane=volume.pixels.shape[0],
                PercentSampling="100",
                PercentPhaseFieldOfView=ds_string(percent_phase_field_of_view(volume)),
            )
        ],
        MREchoSequence=[_item(EffectiveEchoTime=acquisition.echo_time_ms)],
        MRModifierSequence=[modifier],
        MRImagingModifierSequence=[
            _item(
                MagnetizationTransfer="NONE",
                BloodSignalNulling="NO",
                Tagging="NONE",
                TransmitterFrequency=acquisition.imaging_frequency_mhz,
                PixelBandwidth="240",
            )
        ],
        MRReceiveCoilSequence=[
            _item(
                ReceiveCoilName="Head_32",
                ReceiveCoilManufacturerName="",
                ReceiveCoilType="MULTICOIL",
                QuadratureReceiveCoil="NO",
                MultiCoilDefinitionSequence=[
                    _item(MultiCoilElementName="HEA;HEP", MultiCoilElementUsed="YES")
                ],
            )
        ],
        MRTransmitCoilSequence=[
            _item(
                TransmitCoilName="Body",
                TransmitCoilManufacturerName="",
                TransmitCoilType="BODY",
            )
        ],
        MRAveragesSequence=[_item(NumberOfAverages="1")],
    )


def _frame_functional_groups(
    volume: MRVolume, slice_index: int, acquisition_datetime: str, duration_ms: float
) -> Dataset:
    """The functional groups of the frame that holds slice ``slice_index``."""
    return _item(
        FrameContentSequence=[
            _item(
                FrameAcquisitionNumber=1,
                FrameReferenceDateTime=acquisition_datetime,
                FrameAcquisitionDateTime=acquisition_datetime,
                # A 3D acquisition samples every frame for its whole duration.
                FrameAcquisitionDuration=duration_ms,
                StackID="1",
                InStackPositionNumber=slice_index + 1,
                DimensionIndexValues=[1, slice_index + 1],
            )
        ],
        PlanePositionSequence=[
            _item(ImagePositionPatient=ds_strings(volume.slice_origins[slice_index]))
        ],
    )
