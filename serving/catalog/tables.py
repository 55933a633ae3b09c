"""The catalog's tables (SQLAlchemy 2 ORM), portable between SQLite and PostgreSQL.

Dates and times of DICOM attributes are kept as their DICOM strings (``YYYYMMDD``,
``HHMMSS.FFFFFF``), which sort and compare correctly as text; timestamps of our own
events are UTC ``datetime`` values.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

UID = String(64)
JOB_STATES = ("received", "processing", "done", "failed")


class UTCDateTime(TypeDecorator[datetime]):
    """A UTC timestamp, stored without zone, always returned zone-aware.

    SQLite keeps no zone at all, so values are normalised to naive UTC on the way in
    and marked UTC on the way out; comparisons in SQL then agree on every backend.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"timestamp {value!r} has no time zone; pass UTC datetimes")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """Base of the catalog tables."""


class Patient(Base):
    """A patient; ``patient_key`` is Patient ID and issuer, or the study for an empty ID."""

    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_key: Mapped[str] = mapped_column(Text, unique=True)
    patient_id: Mapped[str] = mapped_column(Text, default="")
    issuer_of_patient_id: Mapped[str] = mapped_column(Text, default="")
    patient_name: Mapped[str] = mapped_column(Text, default="")
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")


class Study(Base):
    """A study; ``last_received_at`` drives the "stable, so process it" rule.

    ``needs_processing`` is set by every new instance and cleared when a job takes
    the study on, so finding due studies never scans the studies already processed.
    """

    __tablename__ = "studies"
    __table_args__ = (Index("ix_studies_due", "needs_processing", "last_received_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    study_date: Mapped[str] = mapped_column(String(8), default="", index=True)
    study_time: Mapped[str] = mapped_column(String(32), default="")
    accession_number: Mapped[str] = mapped_column(Text, default="")
    study_id: Mapped[str] = mapped_column(Text, default="")
    study_description: Mapped[str] = mapped_column(Text, default="")
    first_received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    needs_processing: Mapped[bool] = mapped_column(Boolean, default=True)

    patient: Mapped[Patient] = relationship()


class Series(Base):
    """A series of one study."""

    __tablename__ = "series"

    id: Mapped[int] = mapped_column(primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    series_number: Mapped[int | None] = mapped_column(Integer)
    series_description: Mapped[str] = mapped_column(Text, default="")


class Instance(Base):
    """A stored instance: one file in the study store."""

    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    instance_number: Mapped[int | None] = mapped_column(Integer)
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    number_of_frames: Mapped[int | None] = mapped_column(Integer)
    file_path: Mapped[str] = mapped_column(Text)  # relative to the store root
    size_bytes: Mapped[int] = mapped_column(Integer)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    received_via: Mapped[str] = mapped_column(String(16))
    calling_ae: Mapped[str | None] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Job(Base):
    """One processing run of a study.

    ``received_through`` is the study's ``last_received_at`` when the job was queued:
    instances received after it make the study due again.
    """

    __tablename__ = "jobs"
    # At most one queued or running job per study, even with several schedulers.
    __table_args__ = (
        Index(
            "uq_jobs_one_active_per_study",
            "study_instance_uid",
            unique=True,
            sqlite_where=text("state IN ('received', 'processing')"),
            postgresql_where=text("state IN ('received', 'processing')"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(
        UID, ForeignKey("studies.study_instance_uid"), index=True
    )
    state: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    received_through: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Result(Base):
    """A study's processing result (the JSON the API serves)."""

    __tablename__ = "results"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(
        UID, ForeignKey("studies.study_instance_uid"), index=True
    )
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    model_versions: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class User(Base):
    """A service user; only the SHA-256 of the bearer token is kept."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditEvent(Base):
    """Who did what to which resource, from where, with what outcome, when."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_user_at", "user_name", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    user_name: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64), index=True)
    resource: Mapped[str] = mapped_column(Text)
    study_instance_uid: Mapped[str | None] = mapped_column(UID, index=True)
    client_address: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(32))


class WebSession(Base):
    """A signed-in browser; only the SHA-256 of the session id in its cookie is kept."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class Feedback(Base):
    """A reader's verdict or comment on a study's prediction or on one of its similar cases.

    Kept with the user and the time: the labels of a later retraining.
    """

    __tablename__ = "feedback"
    __table_args__ = (Index("ix_feedback_study_created", "study_instance_uid", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(UID, ForeignKey("studies.study_instance_uid"))
    target: Mapped[str] = mapped_column(String(16))
    case_id: Mapped[str | None] = mapped_column(String(128))
    modality: Mapped[str | None] = mapped_column(String(16))
    verdict: Mapped[str | None] = mapped_column(String(16))
    comment: Mapped[str | None] = mapped_column(Text)
    user_name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
