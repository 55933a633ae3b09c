"""Recording one stored instance: patient, study, series and instance rows in one write.

The listener's hot path: one ``BEGIN IMMEDIATE`` transaction per instance with statements
built once at import (Core, not the ORM), since every received instance pays for it
before its success status goes back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, CursorResult, bindparam, insert, select, update

from serving.catalog.tables import Instance, Patient, Series, Study

_TEXT_LIMIT = 1024  # header strings longer than any VR allows are cut, not stored whole


class CatalogConflictError(ValueError):
    """An instance contradicts the catalog (its series belongs to another study)."""


@dataclass(frozen=True)
class InstanceAttributes:
    """What the catalog records of one stored instance (header values as DICOM strings)."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    file_path: str
    size_bytes: int
    received_via: str
    received_at: datetime
    calling_ae: str | None = None
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_date: str = ""
    study_time: str = ""
    accession_number: str = ""
    study_id: str = ""
    study_description: str = ""
    modality: str = ""
    series_number: int | None = None
    series_description: str = ""
    instance_number: int | None = None
    rows: int | None = None
    columns: int | None = None
    number_of_frames: int | None = None


@dataclass(frozen=True)
class InstanceLookup:
    """What the catalog knows of an instance about to be stored.

    Attributes:
        catalogued: The SOP Instance UID is already catalogued.
        series_study_uid: The study its series is catalogued under (``None``: new series).
    """

    catalogued: bool
    series_study_uid: str | None


def _text(value: str) -> str:
    return value[:_TEXT_LIMIT]


# The statements of the ingest path, built once: each instance runs several, and building
# and cache-keying a statement costs more than SQLite takes to run it.
_INSTANCE_EXISTS = select(Instance.id).where(Instance.sop_instance_uid == bindparam("sop"))
LOOKUP_INSTANCE = select(
    _INSTANCE_EXISTS.exists(),
    select(Study.study_instance_uid)
    .join(Series, Series.study_pk == Study.id)
    .where(Series.series_instance_uid == bindparam("series"))
    .scalar_subquery(),
)
_FIND_STUDY = select(Study.id, Study.last_received_at).where(
    Study.study_instance_uid == bindparam("study")
)
_TOUCH_STUDY = (
    update(Study)
    .where(Study.id == bindparam("study_pk"))
    .values(last_received_at=bindparam("received_at"), needs_processing=True)
)
_FIND_SERIES = select(Series.id, Series.study_pk).where(
    Series.series_instance_uid == bindparam("series")
)
_FIND_PATIENT = select(Patient.id).where(Patient.patient_key == bindparam("key"))


def insert_instance(connection: Connection, attributes: InstanceAttributes) -> bool:
    """Insert one instance (and its patient, study and series when new) in Core statements.

    Core, not the ORM unit of work: this runs once per received instance, inside the
    write lock, and the ORM's bookkeeping cost more than the statements themselves.
    """
    if (
        connection.execute(_INSTANCE_EXISTS, {"sop": attributes.sop_instance_uid}).first()
        is not None
    ):
        return False
    received_at = attributes.received_at
    study = connection.execute(_FIND_STUDY, {"study": attributes.study_instance_uid}).first()
    if study is None:
        study_pk = _new_id(
            connection.execute(
                insert(Study),
                {
                    "study_instance_uid": attributes.study_instance_uid,
                    "patient_pk": _patient_pk(connection, attributes),
                    "study_date": attributes.study_date[:8],
                    "study_time": attributes.study_time[:32],
                    "accession_number": _text(attributes.accession_number),
                    "study_id": _text(attributes.study_id),
                    "study_description": _text(attributes.study_description),
                    "first_received_at": received_at,
                    "last_received_at": received_at,
                    "needs_processing": True,
                },
            )
        )
    else:
        study_pk = study.id
        latest = max(study.last_received_at, received_at)
        connection.execute(_TOUCH_STUDY, {"study_pk": study_pk, "received_at": latest})
    series = connection.execute(_FIND_SERIES, {"series": attributes.series_instance_uid}).first()
    if series is None:
        series_pk = _new_id(
            connection.execute(
                insert(Series),
                {
                    "series_instance_uid": attributes.series_instance_uid,
                    "study_pk": study_pk,
                    "modality": attributes.modality[:16],
                    "series_number": attributes.series_number,
                    "series_description": _text(attributes.series_description),
                },
            )
        )
    elif series.study_pk != study_pk:
        raise CatalogConflictError(
            "SeriesInstanceUID is already catalogued under another StudyInstanceUID"
        )
    else:
        series_pk = series.id
    connection.execute(
        insert(Instance),
        {
            "sop_instance_uid": attributes.sop_instance_uid,
            "series_pk": series_pk,
            "sop_class_uid": attributes.sop_class_uid,
            "instance_number": attributes.instance_number,
            "rows": attributes.rows,
            "columns": attributes.columns,
            "number_of_frames": attributes.number_of_frames,
            "file_path": attributes.file_path,
            "size_bytes": attributes.size_bytes,
            "transfer_syntax_uid": attributes.transfer_syntax_uid,
            "received_via": attributes.received_via[:16],
            "calling_ae": None if attributes.calling_ae is None else attributes.calling_ae[:16],
            "received_at": received_at,
        },
    )
    return True


def _patient_pk(connection: Connection, attributes: InstanceAttributes) -> int:
    """The study's patient, found by Patient ID and issuer; an empty ID is never shared."""
    if attributes.patient_id:
        key = f"{attributes.issuer_of_patient_id}|{attributes.patient_id}"
    else:
        key = f"study:{attributes.study_instance_uid}"
    key = _text(key)
    existing = connection.execute(_FIND_PATIENT, {"key": key}).scalar()
    if existing is not None:
        return int(existing)
    return _new_id(
        connection.execute(
            insert(Patient),
            {
                "patient_key": key,
                "patient_id": _text(attributes.patient_id),
                "issuer_of_patient_id": _text(attributes.issuer_of_patient_id),
                "patient_name": _text(attributes.patient_name),
                "patient_birth_date": attributes.patient_birth_date[:8],
                "patient_sex": attributes.patient_sex[:16],
            },
        )
    )


def _new_id(result: CursorResult[Any]) -> int:
    """The primary key of the row an ``INSERT`` just added."""
    key = result.inserted_primary_key
    if key is None:
        raise RuntimeError("the database reported no primary key for the inserted row")
    return int(key[0])
