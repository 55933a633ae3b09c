"""Catalog reads and writes the results routes need beyond the catalog's own methods.

Built on the catalog's session API and tables: the worklist (studies with their latest
job state and result headline, filtered, sorted and paged in SQL) and the flag that
makes a processed study due again.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Select, exists, func, select
from sqlalchemy.orm import Session

from serving.api.models import JobModel, Prediction, ResultModel, WorklistItem
from serving.catalog import Catalog, JobRecord, ResultRecord
from serving.catalog.tables import Instance, Job, Patient, Result, Series, Study

WorklistStatus = Literal["pending", "received", "processing", "done", "failed"]
WorklistSort = Literal["-received", "received", "-date", "date"]


def list_worklist(
    catalog: Catalog,
    *,
    modality: str | None,
    status: WorklistStatus | None,
    limit: int,
    offset: int,
    sort: WorklistSort,
) -> tuple[list[WorklistItem], int]:
    """One page of studies and the number matching the filters.

    Args:
        catalog: The catalog.
        modality: Only studies with a series of this modality.
        status: The latest job's state, or ``"pending"`` for studies no job took yet.
        limit: Page size.
        offset: Studies skipped.
        sort: ``received`` (last instance received) or ``date`` (Study Date); a leading
            ``-`` sorts newest first. Ties break on the Study Instance UID.
    """
    with catalog.read_session() as session:
        latest_job = _latest(Job, Job.state).subquery()
        statement: Select[Any] = (
            select(Study, Patient, latest_job.c.state)
            .join(Patient, Study.patient_pk == Patient.id)
            .outerjoin(latest_job, latest_job.c.study_instance_uid == Study.study_instance_uid)
        )
        if modality is not None:
            statement = statement.where(
                exists(
                    select(Series.id).where(
                        Series.study_pk == Study.id, Series.modality == modality
                    )
                )
            )
        if status == "pending":
            statement = statement.where(latest_job.c.state.is_(None))
        elif status is not None:
            statement = statement.where(latest_job.c.state == status)
        total = session.scalar(select(func.count()).select_from(statement.subquery())) or 0
        column = Study.last_received_at if sort.lstrip("-") == "received" else Study.study_date
        order = (
            (column.desc(), Study.study_instance_uid.desc())
            if sort.startswith("-")
            else (
                column.asc(),
                Study.study_instance_uid.asc(),
            )
        )
        rows = session.execute(statement.order_by(*order).offset(offset).limit(limit)).all()
        study_ids = [study.id for study, _, _ in rows]
        uids = [study.study_instance_uid for study, _, _ in rows]
        modalities = _modalities(session, study_ids)
        counts = _instance_counts(session, study_ids)
        payloads = _latest_payloads(session, uids)
    items = [
        WorklistItem(
            study_instance_uid=study.study_instance_uid,
            patient_name=patient.patient_name,
            patient_id=patient.patient_id,
            study_date=study.study_date,
            study_description=study.study_description,
            accession_number=study.accession_number,
            modalities=modalities.get(study.id, []),
            number_of_instances=counts.get(study.id, 0),
            last_received_at=study.last_received_at,
            job_state=state,
            prediction=prediction(payloads.get(study.study_instance_uid)),
        )
        for study, patient, state in rows
    ]
    return items, total


def _latest(table: type[Job] | type[Result], *columns: Any) -> Select[Any]:
    """The newest row of ``table`` per study (by ``created_at``, then id)."""
    ranked = select(
        table.study_instance_uid,
        *columns,
        func.row_number()
        .over(
            partition_by=table.study_instance_uid,
            order_by=(table.created_at.desc(), table.id.desc()),
        )
        .label("rank"),
    ).subquery()
    selected = [ranked.c.study_instance_uid, *(ranked.c[c.key] for c in columns)]
    return select(*selected).where(ranked.c.rank == 1)


def _modalities(session: Session, study_ids: list[int]) -> dict[int, list[str]]:
    found: dict[int, set[str]] = {}
    statement = select(Series.study_pk, Series.modality).where(Series.study_pk.in_(study_ids))
    for study_pk, modality in session.execute(statement.distinct()):
        if modality:
            found.setdefault(study_pk, set()).add(modality)
    return {study_pk: sorted(values) for study_pk, values in found.items()}


def _instance_counts(session: Session, study_ids: list[int]) -> dict[int, int]:
    statement = (
        select(Series.study_pk, func.count(Instance.id))
        .join(Instance, Instance.series_pk == Series.id)
        .where(Series.study_pk.in_(study_ids))
        .group_by(Series.study_pk)
    )
    return {study_pk: count for study_pk, count in session.execute(statement)}


def _latest_payloads(session: Session, uids: list[str]) -> dict[str, dict[str, Any]]:
    latest = _latest(Result, Result.payload).subquery()
    statement = select(latest.c.study_instance_uid, latest.c.payload).where(
        latest.c.study_instance_uid.in_(uids)
    )
    return {uid: payload for uid, payload in session.execute(statement)}


def prediction(payload: Mapping[str, Any] | None) -> Prediction | None:
    """The headline of a result payload: the first result's label and probability.

    The payload is :meth:`serving.pipeline.study_pipeline.StudyPipeline.process`'s: one
    entry per processed modality under ``results``, each with a ``prediction``. A payload
    without a string label (regression, a failed model) has no headline.
    """
    results = payload.get("results") if payload is not None else None
    if not isinstance(results, list) or not results or not isinstance(results[0], Mapping):
        return None
    first = results[0].get("prediction")
    if not isinstance(first, Mapping) or not isinstance(first.get("label"), str):
        return None
    probability = first.get("probability")
    if not isinstance(probability, int | float) or isinstance(probability, bool):
        probability = None
    return Prediction(label=first["label"], probability=probability)


def job_model(job: JobRecord) -> JobModel:
    """The API form of a job."""
    return JobModel(
        id=job.id,
        study_instance_uid=job.study_instance_uid,
        state=job.state,  # the catalog stores only JOB_STATES; pydantic checks
        reason=job.reason,
        attempts=job.attempts,
        created_at=job.created_at,
        updated_at=job.updated_at,
    )


def result_model(result: ResultRecord) -> ResultModel:
    """The API form of a result."""
    return ResultModel(
        study_instance_uid=result.study_instance_uid,
        job_id=result.job_id,
        created_at=result.created_at,
        model_versions=result.model_versions,
        payload=result.payload,
    )


def mark_for_reprocessing(
    catalog: Catalog, study_instance_uid: str, *, now: datetime
) -> JobRecord | None:
    """Make a study due again and queue its job now, unless one is queued or running.

    With a job queued or running, the flag alone makes the scheduler queue another
    once that one ends.

    Returns:
        The job queued now, or ``None``.

    Raises:
        KeyError: The study is not catalogued.
    """
    with catalog.write_session() as session:
        study = session.scalar(select(Study).where(Study.study_instance_uid == study_instance_uid))
        if study is None:
            raise KeyError(study_instance_uid)
        study.needs_processing = True
    return catalog.jobs.enqueue(study_instance_uid, now=now)
