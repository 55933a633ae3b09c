"""The DICOM Comprehensive 3D SR that carries an mmdx result back into the patient's study.

The document is a TID 1500 Measurement Report built with highdicom: one measurement
group (TID 1501) holds the coded finding (present or absent), the calibrated probability,
the fused probability and the ejection fraction, with the algorithm identified (TID 4019);
a "Qualitative Evaluations" container holds the similar cases, cited by de-identified case
id and similarity only, and the draft report. The algorithm is also described as IHE AI
Results (AIR) Rev 1.1 section 6.5.3.1 asks: a device observer (TID 1004) and an item of
the Contributing Equipment Sequence. The document is UNVERIFIED and PRELIMINARY, and its
series says "not for diagnostic use".

Codes are DICOM (DCM), SNOMED CT (SCT), LOINC (LN) and UCUM where one exists. The two
private schemes are declared in the Coding Scheme Identification Sequence: ``99IHE`` is
the code AIR Rev 1.1 assigns to "Processing Algorithm"; ``99MMDX`` is ours, for what no
standard code names (similar case, draft report, the two probability methods).
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Literal, NamedTuple, get_args

import highdicom as hd
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

Task = Literal["mri_ad", "echo_ef"]

# The labels of each task, the positive class first.
TASK_LABELS: dict[Task, tuple[str, str]] = {
    "mri_ad": ("AD", "CN"),
    "echo_ef": ("reduced_ef", "normal_ef"),
}

SERIES_DESCRIPTION = "mmdx AI result - not for diagnostic use"
DEFAULT_MANUFACTURER = "mmdx"

PRIVATE_SCHEME = "99MMDX"
SIMILAR_CASE = Code("SIMILAR_CASE", PRIVATE_SCHEME, "Similar case")
DRAFT_REPORT = Code("DRAFT_REPORT", PRIVATE_SCHEME, "AI draft report (unverified)")
CALIBRATED_MODEL = Code("CALIBRATED_MODEL", PRIVATE_SCHEME, "Calibrated image model")
CASE_FUSION = Code("CASE_FUSION", PRIVATE_SCHEME, "Image model fused with similar cases")
# IHE AIR Rev 1.1, 6.5.3.1: the Purpose of Reference of an algorithm's equipment item.
PROCESSING_ALGORITHM = Code("Newcode1", "99IHE", "Processing Algorithm")

# TID 1500 row "Qualitative Evaluations" (UMLS), which highdicom does not build itself.
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")
PROBABILITY_UNIT = Code("{probability}", "UCUM", "probability")


class TaskCodes(NamedTuple):
    """The codes of one task: the condition found or not, where, by which procedure."""

    condition: Code
    finding_site: Code
    procedure: Code


TASK_CODES: dict[Task, TaskCodes] = {
    "mri_ad": TaskCodes(
        condition=Code("26929004", "SCT", "Alzheimer's disease"),
        finding_site=codes.SCT.Brain,
        procedure=codes.SCT.ImagingProcedure,
    ),
    "echo_ef": TaskCodes(
        condition=codes.SCT.DepressionOfLeftVentricularSystolicFunction,
        finding_site=codes.SCT.LeftVentricle,
        procedure=codes.SCT.Echocardiography,
    ),
}
EJECTION_FRACTION = codes.LN.LeftVentricularEjectionFractionByUS

# What a pseudonymous case id may hold: a keyed UID (``2.25.<digits>``) or a short token.
# A person name (``^``, spaces) cannot pass.
_CASE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Attributes highdicom reads from the first evidence instance without a default.
_TYPE2_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
)
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


class SimilarCase(NamedTuple):
    """A similar case cited by the result: never more than its pseudonymous id.

    Attributes:
        case_id: De-identified case id (the keyed Study Instance UID of the index).
        similarity: Similarity score of the retrieval.
        label: The case's label, one of the task's labels, or ``None``.
    """

    case_id: str
    similarity: float
    label: str | None


@dataclass(frozen=True)
class AIResult:
    """One model result for one study, as the SR reports it.

    Attributes:
        model_name: Name of the model (the algorithm name).
        model_version: Version of the model (the algorithm version).
        task: ``"mri_ad"`` or ``"echo_ef"``.
        predicted_label: One of :data:`TASK_LABELS` of the task.
        probability: Calibrated probability of the positive class (the first label).
        ef_percent: Ejection fraction in percent (``echo_ef`` only).
        fused_probability: Probability after fusion with the similar cases.
        similar_cases: ``(case_id, similarity, label)`` of the retrieved cases.
        draft_report: Draft report text, unverified.
        evidence_sop_instance_uids: SOP Instance UIDs the result was computed from; when
            given, every one must be among the evidence passed to :func:`build_result_sr`.
    """

    model_name: str
    model_version: str
    task: Task
    predicted_label: str
    probability: float
    ef_percent: float | None = None
    fused_probability: float | None = None
    similar_cases: tuple[SimilarCase, ...] = field(default=())
    draft_report: str | None = None
    evidence_sop_instance_uids: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        for name in ("model_name", "model_version"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip() or len(value) > 64:
                raise ValueError(
                    f'Argument "{name}" must be a non-empty string of at most 64 characters'
                )
        if self.task not in get_args(Task):
            raise ValueError(f'Argument "task" must be one of {get_args(Task)}, got {self.task!r}')
        labels = TASK_LABELS[self.task]
        if self.predicted_label not in labels:
            raise ValueError(
                f'Argument "predicted_label" must be one of {labels}, got {self.predicted_label!r}'
            )
        _check_probability("probability", self.probability)
        if self.fused_probability is not None:
            _check_probability("fused_probability", self.fused_probability)
        if self.ef_percent is not None:
            if self.task != "echo_ef":
                raise ValueError('Argument "ef_percent" applies to task "echo_ef" only')
            if not math.isfinite(self.ef_percent) or not 0.0 <= self.ef_percent <= 100.0:
                raise ValueError(
                    f'Argument "ef_percent" must be in [0, 100], got {self.ef_percent}'
                )
        cases = tuple(SimilarCase(*case) for case in self.similar_cases)
        for case in cases:
            if not isinstance(case.case_id, str) or not _CASE_ID.fullmatch(case.case_id):
                raise ValueError(
                    'Argument "similar_cases" must cite de-identified case ids '
                    "(letters, digits, '.', '_', '-'; at most 64)"
                )
            if not math.isfinite(case.similarity):
                raise ValueError('Argument "similar_cases" must have finite similarity scores')
            if case.label is not None and case.label not in labels:
                raise ValueError(f'Argument "similar_cases" labels must be one of {labels} or None')
        object.__setattr__(self, "similar_cases", cases)
        object.__setattr__(
            self, "evidence_sop_instance_uids", tuple(self.evidence_sop_instance_uids)
        )

    @property
    def is_positive(self) -> bool:
        """Whether the predicted label is the task's positive class."""
        return self.predicted_label == TASK_LABELS[self.task][0]


def build_result_sr(
    evidence: Sequence[Dataset],
    result: AIResult,
    *,
    series_number: int,
    instance_number: int,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    manufacturer: str = DEFAULT_MANUFACTURER,
    institution_name: str | None = None,
    institutional_department_name: str | None = None,
    software_versions: str | None = None,
) -> hd.sr.Comprehensive3DSR:
    """Build the Comprehensive 3D SR of ``result`` in the study of ``evidence``.

    Args:
        evidence: Instances (headers suffice) the result was computed from, all of one study.
            The SR takes their patient and study modules and lists them as evidence.
        result: The result to report.
        series_number: Series Number of the new SR series.
        instance_number: Instance Number of the SR.
        series_instance_uid: UID of the new series; a new UID when ``None``.
        sop_instance_uid: UID of the SR; a new UID when ``None``.
        manufacturer: Manufacturer of the SR and of the algorithm.
        institution_name: Institution that runs mmdx, if any.
        institutional_department_name: Its department (needs ``institution_name``).
        software_versions: Software Versions of the SR; the installed mmdx version when ``None``.

    Returns:
        The SR document, ready to be saved or sent.

    Raises:
        ValueError: ``evidence`` is empty, lacks a UID, spans studies, or misses an
            instance the result names; or a number or name is out of range.
    """
    _check_evidence(evidence, result)
    if series_number < 1:
        raise ValueError(f'Argument "series_number" must be positive, got {series_number}')
    if instance_number < 1:
        raise ValueError(f'Argument "instance_number" must be positive, got {instance_number}')
    device_uid = algorithm_device_uid(manufacturer, result.model_name, result.model_version)
    report = _measurement_report(result, manufacturer, device_uid)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[_with_type2_defaults(evidence[0]), *evidence[1:]],
        content=report,
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or generate_uid(),
        instance_number=instance_number,
        manufacturer=manufacturer,
        is_complete=True,
        is_final=False,
        is_verified=False,
        institution_name=institution_name,
        institutional_department_name=institutional_department_name,
        series_description=SERIES_DESCRIPTION,
        manufacturer_model_name=result.model_name,
        software_versions=software_versions or _mmdx_version(),
        coding_schemes=[
            CodingSchemeIdentificationItem(
                PRIVATE_SCHEME, name="mmdx private codes", responsible_organization="mmdx project"
            ),
            CodingSchemeIdentificationItem(
                "99IHE", name="IHE private codes", responsible_organization="IHE"
            ),
        ],
        specific_character_set=_character_set(
            evidence[0], result, manufacturer, institution_name, institutional_department_name
        ),
    )
    # After highdicom's items (acquisition equipment of the evidence, highdicom itself).
    sr["ContributingEquipmentSequence"].value.append(
        _algorithm_equipment(result, manufacturer, device_uid)
    )
    return sr


def algorithm_device_uid(manufacturer: str, model_name: str, model_version: str) -> str:
    """The Device UID of one model version: the same for every SR it writes.

    AIR asks for a new Device UID whenever the model changes, so the version is part of it.
    """
    name = "\x1f".join(("mmdx-algorithm", manufacturer, model_name, model_version))
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}"


def _check_probability(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f'Argument "{name}" must be a probability in [0, 1], got {value!r}')


def _check_evidence(evidence: Sequence[Dataset], result: AIResult) -> None:
    if len(evidence) == 0:
        raise ValueError('Argument "evidence" must contain at least one instance')
    for index, dataset in enumerate(evidence):
        missing = [keyword for keyword in _REQUIRED_UIDS if not dataset.get(keyword)]
        if missing:
            raise ValueError(f'Argument "evidence" item {index} lacks {", ".join(missing)}')
    studies = {str(dataset.StudyInstanceUID) for dataset in evidence}
    if len(studies) > 1:
        raise ValueError(
            f'Argument "evidence" must come from one study, got {len(studies)} studies'
        )
    given = {str(dataset.SOPInstanceUID) for dataset in evidence}
    absent = [uid for uid in result.evidence_sop_instance_uids if uid not in given]
    if absent:
        raise ValueError(
            f'Argument "result" names {len(absent)} evidence instance(s) missing from "evidence"'
        )


def _character_set(first: Dataset, result: AIResult, *texts: str | None) -> str | list[str] | None:
    """The evidence's character set when our text is ASCII (which every set holds), else UTF-8.

    Keeping the evidence's set spares older readers UTF-8; the patient module, decoded from
    the evidence, re-encodes in either.
    """
    ours = [result.model_name, result.model_version, result.draft_report, *texts]
    if all(text is None or text.isascii() for text in ours):
        charset: str | list[str] | None = first.get("SpecificCharacterSet")
        return charset
    return "ISO_IR 192"


def _with_type2_defaults(dataset: Dataset) -> Dataset:
    """``dataset``'s header with empty values for the Type 2 attributes it lacks."""
    missing = [keyword for keyword in _TYPE2_PATIENT_STUDY if keyword not in dataset]
    if not missing:
        return dataset
    header = Dataset()
    for element in dataset:
        # Sharing the elements is safe: nothing here changes them, and the pixels are left out.
        if element.tag < 0x7FE00000:
            header.add(element)
    for keyword in missing:
        setattr(header, keyword, None)
    return header


def _measurement_report(
    result: AIResult, manufacturer: str, device_uid: str
) -> hd.sr.MeasurementReport:
    task_codes = TASK_CODES[result.task]
    observer = hd.sr.ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid,
            name=result.model_name,
            manufacturer_name=manufacturer,
            model_name=result.model_name,
        ),
    )
    algorithm = hd.sr.AlgorithmIdentification(
        name=result.model_name, version=result.model_version, manufacturer=manufacturer
    )
    measurements = [
        hd.sr.Measurement(
            name=codes.DCM.Probability,
            value=result.probability,
            unit=PROBABILITY_UNIT,
            method=CALIBRATED_MODEL,
        )
    ]
    if result.fused_probability is not None:
        measurements.append(
            hd.sr.Measurement(
                name=codes.DCM.Probability,
                value=result.fused_probability,
                unit=PROBABILITY_UNIT,
                method=CASE_FUSION,
            )
        )
    if result.ef_percent is not None:
        measurements.append(
            hd.sr.Measurement(
                name=EJECTION_FRACTION,
                value=result.ef_percent,
                unit=codes.UCUM.Percent,
            )
        )
    presence = codes.SCT.Present if result.is_positive else codes.SCT.Absent
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(), identifier=f"mmdx {result.task}"
        ),
        finding_type=task_codes.condition,
        algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(anatomic_location=task_codes.finding_site)],
        measurements=measurements,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=task_codes.condition, value=presence)
        ],
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=task_codes.procedure,
        imaging_measurements=[group],
    )
    evaluations = _qualitative_evaluations(result)
    if evaluations is not None:
        report[0].ContentSequence.append(evaluations)
    return report


def _qualitative_evaluations(result: AIResult) -> hd.sr.ContainerContentItem | None:
    """TID 1500's "Qualitative Evaluations": the cited cases and the draft report, as TEXT."""
    items = [
        hd.sr.TextContentItem(
            name=SIMILAR_CASE,
            value=f"case {case.case_id}; similarity {case.similarity:.3f}; "
            f"label {case.label or 'unknown'}",
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
        for case in result.similar_cases
    ]
    if result.draft_report:
        items.append(
            hd.sr.TextContentItem(
                name=DRAFT_REPORT,
                value=result.draft_report,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    if not items:
        return None
    container = hd.sr.ContainerContentItem(
        name=QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def _algorithm_equipment(result: AIResult, manufacturer: str, device_uid: str) -> Dataset:
    """The Contributing Equipment item IHE AIR Rev 1.1 (6.5.3.1) asks for each algorithm.

    Built by hand: highdicom's ``ContributingEquipment`` accepts DCM purposes only.
    """
    item = Dataset()
    item.PurposeOfReferenceCodeSequence = [hd.sr.CodedConcept.from_code(PROCESSING_ALGORITHM)]
    item.Manufacturer = manufacturer
    item.ManufacturerModelName = result.model_name
    item.SoftwareVersions = result.model_version
    item.DeviceUID = device_uid
    item.ContributionDescription = "AI model that produced this result"
    return item


def _mmdx_version() -> str:
    try:
        return metadata.version("mmdx")
    except metadata.PackageNotFoundError:
        return "unknown"
