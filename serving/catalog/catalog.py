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

from sqlalchemy import (
    Engine,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from serving.catalog import matching
from serving.catalog.job_queue import JobQueue, ResultRecord, add_result, result_record
from serving.catalog.recording import (
    LOOKUP_INSTANCE,
    InstanceAttributes,
    InstanceLookup,
    insert_instance,
)
from serving.catalog.tables import Base, Instance, Result, Series, Study

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000


def utc_now() -> datetime:
    """The current time, zone-aware UTC (the catalog refuses naive timestamps)."""
    return datetime.now(UTC)


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
                # One write transaction (BEGIN IMMEDIATE, one synced commit) per instance.
                with self._writer.begin() as connection:
                    return insert_instance(connection, attributes)
            except IntegrityError:
                # Another process inserted the same row first (PostgreSQL, where a
                # transaction does not lock the table); its row now answers.
                if self.has_instance(attributes.sop_instance_uid):
                    return False
                if attempt == 2:
                    raise
        raise RuntimeError("unreachable")

    def lookup_instance(self, sop_instance_uid: str, series_instance_uid: str) -> InstanceLookup:
        """Whether an instance is catalogued and which study its series belongs to.

        One read (no write lock, no sync): the ingestor asks this before it moves a
        file into the store.
        """
        parameters = {"sop": sop_instance_uid, "series": series_instance_uid}
        with self._reader.begin() as connection:
            row = connection.execute(LOOKUP_INSTANCE, parameters).one()
        return InstanceLookup(catalogued=bool(row[0]), series_study_uid=row[1])

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
