"""Processing jobs as persisted state: received -> processing -> done | failed.

A study is *due* once no instance has come for ``stable_after_s`` and no job has
taken on its latest instances yet; new instances after a job (even while it runs)
make it due again. Every
transition is one transaction, so a crash leaves each job in a state from which
:meth:`JobQueue.resume_unfinished` can carry on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from serving.catalog.tables import Job, Result, Study

if TYPE_CHECKING:
    from serving.catalog.catalog import Catalog

ACTIVE_STATES = ("received", "processing")
_REASON_LIMIT = 2000


@dataclass(frozen=True)
class JobRecord:
    """A job as stored."""

    id: int
    study_instance_uid: str
    state: str
    reason: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ResultRecord:
    """A study's stored result."""

    study_instance_uid: str
    job_id: int | None
    payload: dict[str, Any]
    model_versions: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class ResumeReport:
    """What :meth:`JobQueue.resume_unfinished` did: job ids requeued and given up."""

    requeued: list[int]
    gave_up: list[int]


def _job_record(job: Job) -> JobRecord:
    return JobRecord(
        id=job.id,
        study_instance_uid=job.study_instance_uid,
        state=job.state,
        reason=job.reason,
        attempts=job.attempts,
        created_at=job.created_at,
        updated_at=job.updated_at,
    )


def result_record(row: Result) -> ResultRecord:
    """The plain record of a result row."""
    return ResultRecord(
        study_instance_uid=row.study_instance_uid,
        job_id=row.job_id,
        payload=dict(row.payload),
        model_versions=dict(row.model_versions),
        created_at=row.created_at,
    )


def add_result(
    session: Session,
    study_instance_uid: str,
    payload: Mapping[str, Any],
    model_versions: Mapping[str, Any] | None,
    job_id: int | None,
    now: datetime,
) -> Result:
    """Add a result row in ``session``'s transaction."""
    row = Result(
        study_instance_uid=study_instance_uid,
        job_id=job_id,
        payload=dict(payload),
        model_versions=dict(model_versions or {}),
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


class JobQueue:
    """The jobs table of a :class:`Catalog` (reached as ``catalog.jobs``)."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def due_studies(self, *, now: datetime, stable_after_s: float) -> list[str]:
        """Studies with instances no job has taken on, none received for ``stable_after_s``.

        A study whose job is queued or running is not due until that job ends.
        """
        active = exists(
            select(Job.id).where(
                Job.study_instance_uid == Study.study_instance_uid, Job.state.in_(ACTIVE_STATES)
            )
        )
        statement = (
            select(Study.study_instance_uid)
            .where(
                Study.needs_processing.is_(True),
                Study.last_received_at <= now - timedelta(seconds=stable_after_s),
                ~active,
            )
            .order_by(Study.last_received_at, Study.study_instance_uid)
        )
        with self._catalog.read_session() as session:
            return list(session.scalars(statement))

    def enqueue(self, study_instance_uid: str, *, now: datetime) -> JobRecord | None:
        """Queue a job for a study with unprocessed instances, unless one is queued or running.

        Returns:
            The new job, or ``None`` when the study is unknown, has nothing new since
            its last job, or has a job queued or running.
        """
        try:
            with self._catalog.write_session() as session:
                study = session.scalar(
                    select(Study).where(Study.study_instance_uid == study_instance_uid)
                )
                if study is None or not study.needs_processing:
                    return None
                active = select(Job.id).where(
                    Job.study_instance_uid == study_instance_uid, Job.state.in_(ACTIVE_STATES)
                )
                if session.scalar(active.limit(1)) is not None:
                    return None
                job = Job(
                    study_instance_uid=study_instance_uid,
                    state="received",
                    attempts=0,
                    received_through=study.last_received_at,
                    created_at=now,
                    updated_at=now,
                )
                session.add(job)
                study.needs_processing = False
                session.flush()
                return _job_record(job)
        except IntegrityError:  # another scheduler queued it at the same moment
            return None

    def claim_next(self, *, now: datetime) -> JobRecord | None:
        """Take the oldest queued job (received -> processing), or ``None`` if none waits.

        The state change is conditional on the job still being queued, so two runners
        never take the same job. The job covers every instance received until now.
        """
        while True:
            with self._catalog.write_session() as session:
                job = session.scalar(
                    select(Job)
                    .where(Job.state == "received")
                    .order_by(Job.created_at, Job.id)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                )
                if job is None:
                    return None
                study = session.scalars(
                    select(Study).where(Study.study_instance_uid == job.study_instance_uid)
                ).one()
                claimed = session.execute(
                    update(Job)
                    .where(Job.id == job.id, Job.state == "received")
                    .values(
                        state="processing",
                        attempts=Job.attempts + 1,
                        received_through=study.last_received_at,
                        updated_at=now,
                    )
                    .execution_options(synchronize_session=False)
                )
                if claimed.rowcount == 1:  # type: ignore[attr-defined]
                    # Whatever arrived since the job was queued is processed now, too.
                    study.needs_processing = False
                    session.refresh(job)
                    return _job_record(job)

    def finish(
        self,
        job_id: int,
        payload: Mapping[str, Any],
        *,
        model_versions: Mapping[str, Any] | None = None,
        now: datetime,
    ) -> ResultRecord:
        """Mark a processing job done and store its result, in one transaction.

        Raises:
            ValueError: The job does not exist or is not processing.
        """
        with self._catalog.write_session() as session:
            job = self._processing_job(session, job_id)
            job.state, job.reason, job.updated_at = "done", None, now
            row = add_result(session, job.study_instance_uid, payload, model_versions, job.id, now)
            return result_record(row)

    def fail(self, job_id: int, reason: str, *, now: datetime) -> JobRecord:
        """Mark a processing job failed with ``reason``.

        Raises:
            ValueError: The job does not exist or is not processing.
        """
        with self._catalog.write_session() as session:
            job = self._processing_job(session, job_id)
            job.state, job.reason, job.updated_at = "failed", reason[:_REASON_LIMIT], now
            session.flush()
            return _job_record(job)

    @staticmethod
    def _processing_job(session: Session, job_id: int) -> Job:
        job = session.get(Job, job_id)
        if job is None:
            raise ValueError(f"job {job_id} does not exist")
        if job.state != "processing":
            raise ValueError(f"job {job_id} is {job.state}, not processing")
        return job

    def resume_unfinished(self, *, max_attempts: int, now: datetime) -> ResumeReport:
        """After a restart: requeue jobs left processing, or fail those tried too often.

        Call it once at start-up, before any runner claims jobs (a job another live
        runner is processing would otherwise be requeued too).
        """
        if max_attempts < 1:
            raise ValueError(f'Argument "max_attempts" must be at least 1, got {max_attempts}')
        requeued: list[int] = []
        gave_up: list[int] = []
        with self._catalog.write_session() as session:
            for job in session.scalars(select(Job).where(Job.state == "processing")).all():
                job.updated_at = now
                if job.attempts >= max_attempts:
                    job.state = "failed"
                    job.reason = f"interrupted {job.attempts} times (service stopped mid-job)"
                    gave_up.append(job.id)
                else:
                    job.state = "received"
                    requeued.append(job.id)
        return ResumeReport(requeued=requeued, gave_up=gave_up)

    def get(self, job_id: int) -> JobRecord | None:
        """One job, or ``None``."""
        with self._catalog.read_session() as session:
            job = session.get(Job, job_id)
            return None if job is None else _job_record(job)

    def list_jobs(
        self, *, study_instance_uid: str | None = None, state: str | None = None
    ) -> list[JobRecord]:
        """Jobs, oldest first, optionally of one study or in one state."""
        statement = select(Job).order_by(Job.created_at, Job.id)
        if study_instance_uid is not None:
            statement = statement.where(Job.study_instance_uid == study_instance_uid)
        if state is not None:
            statement = statement.where(Job.state == state)
        with self._catalog.read_session() as session:
            return [_job_record(job) for job in session.scalars(statement)]
