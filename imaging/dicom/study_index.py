"""Index a folder, zip or DICOMDIR of DICOM files into patients, studies, series and instances.

Only headers are read (reading stops before Pixel Data), so indexing a study costs
little more than listing it. Every file goes through :func:`read_dicom` or
:func:`read_dicom_bytes`; a file that fails becomes a :class:`FileFailure` naming it
and the reason, and the good files are indexed all the same.

What counts as a DICOM candidate, and how zips and DICOMDIRs are read, is in
:mod:`imaging.dicom.study_sources`. Files that are not candidates (``.txt``, ``.png``...)
are listed in :attr:`StudyIndex.skipped`, never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imaging.dicom.reading import require_uid
from imaging.dicom.study_sources import DEFAULT_INDEX_LIMITS, IndexLimits, iter_source_items
from imaging.errors import DicomReadError, FileFailure

__all__ = [
    "IndexLimits",
    "InstanceRecord",
    "PatientRecord",
    "SeriesRecord",
    "StudyIndex",
    "StudyRecord",
    "index_dicom_source",
]


@dataclass(frozen=True)
class InstanceRecord:
    """One SOP instance: where it is and what it holds.

    ``path`` is the file, or the zip archive whose member ``member`` holds the object.
    A member name identifies the object in reports only; it is never used as a path.
    """

    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None
    transfer_syntax_uid: str
    number_of_frames: int
    path: Path
    member: str | None = None

    @property
    def location(self) -> str:
        """The file, or ``archive.zip!member``, for messages."""
        return str(self.path) if self.member is None else f"{self.path}!{self.member}"


@dataclass(frozen=True)
class SeriesRecord:
    """One series; image attributes are those of its first instance."""

    series_instance_uid: str
    study_instance_uid: str
    modality: str
    series_number: int | None
    series_description: str
    image_type: tuple[str, ...]
    sop_class_uid: str
    rows: int | None
    columns: int | None
    mr_acquisition_type: str
    instances: tuple[InstanceRecord, ...]

    @property
    def number_of_instances(self) -> int:
        return len(self.instances)

    @property
    def number_of_frames(self) -> int:
        """Images in the series: one per single-frame instance, NumberOfFrames per multi-frame."""
        return sum(instance.number_of_frames for instance in self.instances)


@dataclass(frozen=True)
class StudyRecord:
    """One study of one patient."""

    study_instance_uid: str
    patient_id: str
    study_date: str
    accession_number: str
    study_description: str
    series: tuple[SeriesRecord, ...]

    @property
    def modalities(self) -> tuple[str, ...]:
        """The distinct modalities of its series, sorted."""
        return tuple(sorted({series.modality for series in self.series}))


@dataclass(frozen=True)
class PatientRecord:
    """One patient (keyed by Patient ID, which may be empty) and their studies."""

    patient_id: str
    patient_name: str
    studies: tuple[StudyRecord, ...]


@dataclass(frozen=True)
class StudyIndex:
    """What a source holds, what failed, and what was not tried."""

    source: Path
    patients: tuple[PatientRecord, ...]
    failures: list[FileFailure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def studies(self) -> tuple[StudyRecord, ...]:
        return tuple(study for patient in self.patients for study in patient.studies)

    @property
    def series(self) -> tuple[SeriesRecord, ...]:
        return tuple(series for study in self.studies for series in study.series)

    def get_patient(self, patient_id: str) -> PatientRecord:
        """The patient with ``patient_id``; ``KeyError`` naming it if absent."""
        return _find(self.patients, "patient_id", patient_id, "patient")

    def get_study(self, study_instance_uid: str) -> StudyRecord:
        """The study with ``study_instance_uid``; ``KeyError`` naming it if absent."""
        return _find(self.studies, "study_instance_uid", study_instance_uid, "study")

    def get_series(self, series_instance_uid: str) -> SeriesRecord:
        """The series with ``series_instance_uid``; ``KeyError`` naming it if absent."""
        return _find(self.series, "series_instance_uid", series_instance_uid, "series")


def _find(records: tuple[Any, ...], attribute: str, value: str, what: str) -> Any:
    for record in records:
        if getattr(record, attribute) == value:
            return record
    raise KeyError(f"no {what} with {attribute} {value!r} in the index")


def index_dicom_source(
    source: str | Path, *, limits: IndexLimits = DEFAULT_INDEX_LIMITS
) -> StudyIndex:
    """Index the DICOM objects of a folder (recursively), a ``.zip`` file or a DICOMDIR.

    A folder with a ``DICOMDIR`` at its root is indexed through the DICOMDIR's records;
    a single DICOM file is indexed on its own.

    Raises:
        DicomReadError: ``source`` does not exist, or is a zip or DICOMDIR that cannot
            be read as a whole. Problems with single files are in ``failures`` instead.
    """
    source = Path(source)
    builder = _IndexBuilder()
    for item in iter_source_items(source, limits):
        if item.skipped:
            builder.skipped.append(item.where)
        elif item.error is not None:
            builder.failures.append(FileFailure.from_exception(item.where, item.error))
        else:
            try:
                builder.add(item.dataset, item.path, item.member, item.where)
            except Exception as exc:  # one bad header must not stop the others
                builder.failures.append(FileFailure.from_exception(item.where, exc))
    return builder.build(source)


@dataclass
class _Header:
    """The attributes of one object that the index keeps."""

    patient_id: str
    patient_name: str
    study: dict[str, str]
    series: dict[str, Any]
    instance: InstanceRecord


class _IndexBuilder:
    """Accumulates headers, checks cross-file consistency, then freezes the tree."""

    def __init__(self) -> None:
        self.headers: dict[str, _Header] = {}  # by SOP Instance UID, first seen wins
        self.study_patient: dict[str, str] = {}
        self.series_study: dict[str, str] = {}
        self.failures: list[FileFailure] = []
        self.skipped: list[str] = []

    def add(self, dataset: Any, path: Path, member: str | None, where: str) -> None:
        header = _extract(dataset, path, member, where)
        uid = header.instance.sop_instance_uid
        if uid in self.headers:
            first = self.headers[uid].instance.location
            raise DicomReadError(
                where, f"duplicate SOP Instance UID {uid}, already indexed from {first}"
            )
        study_uid = header.study["study_instance_uid"]
        series_uid = header.series["series_instance_uid"]
        owner = self.study_patient.setdefault(study_uid, header.patient_id)
        if owner != header.patient_id:
            raise DicomReadError(
                where,
                f"study {study_uid} is indexed under patient {owner!r}, "
                f"this file says {header.patient_id!r}",
            )
        parent = self.series_study.setdefault(series_uid, study_uid)
        if parent != study_uid:
            raise DicomReadError(
                where,
                f"series {series_uid} is indexed under study {parent}, this file says {study_uid}",
            )
        self.headers[uid] = header

    def build(self, source: Path) -> StudyIndex:
        patients: dict[str, list[_Header]] = {}
        for header in self.headers.values():
            patients.setdefault(header.patient_id, []).append(header)
        records = tuple(
            _patient(patient_id, headers) for patient_id, headers in sorted(patients.items())
        )
        return StudyIndex(
            source=source, patients=records, failures=self.failures, skipped=self.skipped
        )


def _patient(patient_id: str, headers: list[_Header]) -> PatientRecord:
    studies: dict[str, list[_Header]] = {}
    for header in headers:
        studies.setdefault(header.study["study_instance_uid"], []).append(header)
    records = sorted(
        (_study(group) for group in studies.values()),
        key=lambda s: (s.study_date, s.study_instance_uid),
    )
    return PatientRecord(
        patient_id=patient_id, patient_name=headers[0].patient_name, studies=tuple(records)
    )


def _study(headers: list[_Header]) -> StudyRecord:
    series: dict[str, list[_Header]] = {}
    for header in headers:
        series.setdefault(header.series["series_instance_uid"], []).append(header)
    records = sorted(
        (_series(group) for group in series.values()),
        key=lambda s: (s.series_number is None, s.series_number or 0, s.series_instance_uid),
    )
    return StudyRecord(patient_id=headers[0].patient_id, series=tuple(records), **headers[0].study)


def _series(headers: list[_Header]) -> SeriesRecord:
    instances = sorted(
        (header.instance for header in headers),
        key=lambda i: (i.instance_number is None, i.instance_number or 0, i.sop_instance_uid),
    )
    first = next(h for h in headers if h.instance is instances[0])
    return SeriesRecord(instances=tuple(instances), **first.series)


def _extract(dataset: Any, path: Path, member: str | None, where: str) -> _Header:
    """The indexed attributes of one object, validated; raises DicomReadError if unusable."""
    transfer_syntax = str(dataset.file_meta.get("TransferSyntaxUID", ""))
    frames = _optional_int(dataset, "NumberOfFrames", where)
    if frames is not None and frames < 1:
        raise DicomReadError(where, f"NumberOfFrames {frames} is not positive")
    instance = InstanceRecord(
        sop_instance_uid=_uid(dataset, "SOPInstanceUID", where),
        sop_class_uid=_uid(dataset, "SOPClassUID", where),
        instance_number=_optional_int(dataset, "InstanceNumber", where),
        transfer_syntax_uid=transfer_syntax,
        number_of_frames=frames or 1,
        path=path,
        member=member,
    )
    rows, columns = _optional_int(dataset, "Rows", where), _optional_int(dataset, "Columns", where)
    for keyword, value in (("Rows", rows), ("Columns", columns)):
        if value is not None and value < 1:
            raise DicomReadError(where, f"{keyword} {value} is not positive")
    image_type = dataset.get("ImageType") or ()
    image_type = (image_type,) if isinstance(image_type, str) else tuple(image_type)
    return _Header(
        patient_id=_text(dataset, "PatientID"),
        patient_name=_text(dataset, "PatientName"),
        study={
            "study_instance_uid": _uid(dataset, "StudyInstanceUID", where),
            "study_date": _text(dataset, "StudyDate"),
            "accession_number": _text(dataset, "AccessionNumber"),
            "study_description": _text(dataset, "StudyDescription"),
        },
        series={
            "series_instance_uid": _uid(dataset, "SeriesInstanceUID", where),
            "study_instance_uid": _uid(dataset, "StudyInstanceUID", where),
            "modality": _text(dataset, "Modality").upper(),
            "series_number": _optional_int(dataset, "SeriesNumber", where),
            "series_description": _text(dataset, "SeriesDescription"),
            "image_type": tuple(str(value).strip().upper() for value in image_type),
            "sop_class_uid": instance.sop_class_uid,
            "rows": rows,
            "columns": columns,
            "mr_acquisition_type": _text(dataset, "MRAcquisitionType").upper(),
        },
        instance=instance,
    )


def _uid(dataset: Any, keyword: str, where: str) -> str:
    """A required UID, also refused when its explicit VR is not UI (a number is no UID)."""
    element = dataset.data_element(keyword) if keyword in dataset else None
    if element is not None and element.VR != "UI":
        raise DicomReadError(where, f"{keyword} has VR {element.VR}, not UI")
    return require_uid(dataset, keyword, where)


def _text(dataset: Any, keyword: str) -> str:
    value = dataset.get(keyword)
    return "" if value is None else str(value).strip()


def _optional_int(dataset: Any, keyword: str, where: str) -> int | None:
    value = dataset.get(keyword)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise DicomReadError(where, f"{keyword} {str(value)[:40]!r} is not an integer") from exc
