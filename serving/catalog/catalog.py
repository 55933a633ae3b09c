"""The catalog: what the store holds (patients, studies, series, instances) and its results.

One :class:`Catalog` is shared by the DICOM listener's association threads, the job
runner and the API, possibly in several processes. On SQLite it runs in WAL mode
(readers never wait for the writer) with a busy timeout, and every write transaction
starts with ``BEGIN IMMEDIATE``: a deferred transaction that reads and then writes can
fail at once with "database is locked" when another writer got in between, while an
immediate one waits its turn.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from serving.catalog import matching
from serving.catalog.job_queue import JobQueue, ResultRecord, add_result, result_record
from serving.catalog.tables import Base, Instance, Patient, Result, Series, Study

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
_TEXT_LIMIT = 1024  # header strings longer than any VR allows are cut, not stored whole


def utc_now() -> datetime:
    """The current time, zone-aware UTC (the catalog refuses naive timestamps)."""
    return datetime.now(UTC)


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
class StoredInstance:
    """One catalogued instance; ``file_path`` is relative to the store root."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str
    file_path: str
    size_bytes: int
    received_at: datetime


def _create_engines(url: str) -> tuple[Engine, Engine]:
    """(writer, reader) engines; one engine serves both outside SQLite files."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(url, pool_pre_ping=True)
        return engine, engine
    if parsed.database in (None, "", ":memory:"):
        # One shared connection, so every session sees the same in-memory database.
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
        _configure_sqlite(engine, begin="BEGIN IMMEDIATE")
        return engine, engine
    Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    writer = create_engine(url, connect_args={"check_same_thread": False})
    reader = create_engine(url, connect_args={"check_same_thread": False})
    _configure_sqlite(writer, begin="BEGIN IMMEDIATE")
    _configure_sqlite(reader, begin="BEGIN")
    return writer, reader


def _configure_sqlite(engine: Engine, *, begin: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own implicit BEGIN is switched off so that ours (below) is used.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on disk when it returns (the listener's success status waits on it).
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)


class Catalog:
    """The catalog database; also the service's ``StudyQuery``.

    Open it with :meth:`open`; the tables are created if missing.
    """

    def __init__(self, writer: Engine, reader: Engine) -> None:
        self._writer = writer
        self._reader = reader
        self._write_sessions = sessionmaker(writer, expire_on_commit=False)
        self._read_sessions = sessionmaker(reader, expire_on_commit=False)
        self.jobs = JobQueue(self)

    @classmethod
    def open(cls, url: str) -> Catalog:
        """Connect to the catalog at SQLAlchemy ``url`` and create missing tables.

        ``sqlite:///path/catalog.sqlite`` (the parent folder is created) or
        ``postgresql+psycopg://user@host/db``. In-memory SQLite (``sqlite://``)
        keeps one connection and suits single-threaded tests only.
        """
        writer, reader = _create_engines(url)
        Base.metadata.create_all(writer)
        return cls(writer, reader)

    def close(self) -> None:
        """Release every connection."""
        self._writer.dispose()
        self._reader.dispose()

    @contextmanager
    def write_session(self) -> Iterator[Session]:
        """A session in one write transaction, committed on success, rolled back on error."""
        with self._write_sessions.begin() as session:
            yield session

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for reading (a consistent snapshot on SQLite WAL and PostgreSQL)."""
        with self._read_sessions.begin() as session:
            yield session

    # Instances -------------------------------------------------------------------------

    def record_instance(self, attributes: InstanceAttributes) -> bool:
        """Catalogue a stored instance, creating its patient, study and series as needed.

        Idempotent on the SOP Instance UID: a second call changes nothing.

        Returns:
            ``True`` when the instance is new, ``False`` when it was already catalogued.

        Raises:
            CatalogConflictError: The series is catalogued under another study.
        """
        for attempt in range(3):
            try:
                with self.write_session() as session:
                    return _insert_instance(session, attributes)
            except IntegrityError:
                # Another process inserted the same row first (PostgreSQL, where a
                # transaction does not lock the table); its row now answers.
                if self.has_instance(attributes.sop_instance_uid):
                    return False
                if attempt == 2:
                    raise
        raise RuntimeError("unreachable")

    def has_instance(self, sop_instance_uid: str) -> bool:
        """Whether an instance with this SOP Instance UID is catalogued."""
        with self.read_session() as session:
            statement = select(Instance.id).where(Instance.sop_instance_uid == sop_instance_uid)
            return session.scalar(statement) is not None

    def series_study_uid(self, series_instance_uid: str) -> str | None:
        """The study a catalogued series belongs to, or ``None`` for an unknown series."""
        with self.read_session() as session:
            statement = (
                select(Study.study_instance_uid)
                .join(Series, Series.study_pk == Study.id)
                .where(Series.series_instance_uid == series_instance_uid)
            )
            return session.scalar(statement)

    def list_instances(self, study_instance_uid: str) -> list[StoredInstance]:
        """The catalogued instances of one study, by series then SOP Instance UID."""
        with self.read_session() as session:
            statement = (
                select(Instance, Series)
                .join(Series, Instance.series_pk == Series.id)
                .join(Study, Series.study_pk == Study.id)
                .where(Study.study_instance_uid == study_instance_uid)
                .order_by(Series.series_instance_uid, Instance.sop_instance_uid)
            )
            return [
                StoredInstance(
                    study_instance_uid=study_instance_uid,
                    series_instance_uid=series.series_instance_uid,
                    sop_instance_uid=instance.sop_instance_uid,
                    sop_class_uid=instance.sop_class_uid,
                    transfer_syntax_uid=instance.transfer_syntax_uid,
                    modality=series.modality,
                    file_path=instance.file_path,
                    size_bytes=instance.size_bytes,
                    received_at=instance.received_at,
                )
                for instance, series in session.execute(statement)
            ]

    # StudyQuery --------------------------------------------------------------------------

    def search_studies(
        self, filters: Mapping[str, str], *, limit: int | None = None, offset: int = 0
    ) -> list[dict[str, str]]:
        """Matching studies, one row of ``STUDY_KEYWORDS`` each (see ``matching``)."""
        with self.read_session() as session:
            return matching.search_studies(session, filters, limit, offset)

    def search_series(
        self,
        filters: Mapping[str, str],
        *,
        study_instance_uid: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, str]]:
        """Matching series (of one study when given), one row of ``SERIES_KEYWORDS`` each."""
        with self.read_session() as session:
            return matching.search_series(session, filters, study_instance_uid, limit, offset)

    def search_instances(
        self,
        filters: Mapping[str, str],
        *,
        study_instance_uid: str | None = None,
        series_instance_uid: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, str]]:
        """Matching instances, one row of ``INSTANCE_KEYWORDS`` each."""
        with self.read_session() as session:
            return matching.search_instances(
                session, filters, study_instance_uid, series_instance_uid, limit, offset
            )

    # Results ----------------------------------------------------------------------------

    def save_result(
        self,
        study_instance_uid: str,
        payload: Mapping[str, Any],
        *,
        model_versions: Mapping[str, Any] | None = None,
        job_id: int | None = None,
        now: datetime | None = None,
    ) -> ResultRecord:
        """Store a result of a study (the latest one is what the API serves)."""
        with self.write_session() as session:
            row = add_result(
                session, study_instance_uid, payload, model_versions, job_id, now or utc_now()
            )
            return result_record(row)

    def latest_result(self, study_instance_uid: str) -> ResultRecord | None:
        """The newest result of a study, or ``None`` if it has none yet."""
        with self.read_session() as session:
            statement = (
                select(Result)
                .where(Result.study_instance_uid == study_instance_uid)
                .order_by(Result.created_at.desc(), Result.id.desc())
                .limit(1)
            )
            row = session.scalar(statement)
            return None if row is None else result_record(row)


def _text(value: str) -> str:
    return value[:_TEXT_LIMIT]


def _insert_instance(session: Session, attributes: InstanceAttributes) -> bool:
    existing = session.scalar(
        select(Instance.id).where(Instance.sop_instance_uid == attributes.sop_instance_uid)
    )
    if existing is not None:
        return False
    study = session.scalar(
        select(Study).where(Study.study_instance_uid == attributes.study_instance_uid)
    )
    if study is None:
        study = Study(
            study_instance_uid=attributes.study_instance_uid,
            patient=_patient(session, attributes),
            study_date=attributes.study_date[:8],
            study_time=attributes.study_time[:32],
            accession_number=_text(attributes.accession_number),
            study_id=_text(attributes.study_id),
            study_description=_text(attributes.study_description),
            first_received_at=attributes.received_at,
            last_received_at=attributes.received_at,
            needs_processing=True,
        )
        session.add(study)
        session.flush()
    else:
        study.last_received_at = max(study.last_received_at, attributes.received_at)
        study.needs_processing = True
    series = session.scalar(
        select(Series).where(Series.series_instance_uid == attributes.series_instance_uid)
    )
    if series is None:
        series = Series(
            series_instance_uid=attributes.series_instance_uid,
            study_pk=study.id,
            modality=attributes.modality[:16],
            series_number=attributes.series_number,
            series_description=_text(attributes.series_description),
        )
        session.add(series)
        session.flush()
    elif series.study_pk != study.id:
        raise CatalogConflictError(
            "SeriesInstanceUID is already catalogued under another StudyInstanceUID"
        )
    session.add(
        Instance(
            sop_instance_uid=attributes.sop_instance_uid,
            series_pk=series.id,
            sop_class_uid=attributes.sop_class_uid,
            instance_number=attributes.instance_number,
            rows=attributes.rows,
            columns=attributes.columns,
            number_of_frames=attributes.number_of_frames,
            file_path=attributes.file_path,
            size_bytes=attributes.size_bytes,
            transfer_syntax_uid=attributes.transfer_syntax_uid,
            received_via=attributes.received_via[:16],
            calling_ae=None if attributes.calling_ae is None else attributes.calling_ae[:16],
            received_at=attributes.received_at,
        )
    )
    session.flush()
    return True


def _patient(session: Session, attributes: InstanceAttributes) -> Patient:
    """The study's patient, found by Patient ID and issuer; an empty ID is never shared."""
    if attributes.patient_id:
        key = f"{attributes.issuer_of_patient_id}|{attributes.patient_id}"
    else:
        key = f"study:{attributes.study_instance_uid}"
    patient = session.scalar(select(Patient).where(Patient.patient_key == key))
    if patient is None:
        patient = Patient(
            patient_key=_text(key),
            patient_id=_text(attributes.patient_id),
            issuer_of_patient_id=_text(attributes.issuer_of_patient_id),
            patient_name=_text(attributes.patient_name),
            patient_birth_date=attributes.patient_birth_date[:8],
            patient_sex=attributes.patient_sex[:16],
        )
        session.add(patient)
    return patient
