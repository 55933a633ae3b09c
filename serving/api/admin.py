"""Admin routes: the audit trail and the processing jobs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from serving.api.context import ServiceContext
from serving.api.models import AuditEventList, AuditEventModel, JobList, JobState, error_responses
from serving.api.security import UID_PATTERN, Gatekeeper
from serving.api.worklist import job_model
from serving.audit import DEFAULT_QUERY_LIMIT, MAX_QUERY_LIMIT
from serving.auth import Permission, Role

DEFAULT_JOBS = 1000
MAX_JOBS = 10_000


def create_admin_router(context: ServiceContext, gate: Gatekeeper) -> APIRouter:
    """The ``/api`` routes only admins may use."""
    router = APIRouter(tags=["admin"])

    @router.get(
        "/audit",
        response_model=AuditEventList,
        responses=error_responses(401, 403),
        summary="Query the audit trail",
        dependencies=[Depends(gate.require("audit.read", Permission.READ_AUDIT))],
    )
    def query_audit(
        user: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
        action: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
        study: Annotated[str | None, Query(pattern=UID_PATTERN, max_length=64)] = None,
        since: Annotated[
            datetime | None, Query(description="ISO 8601; without a zone, UTC.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_QUERY_LIMIT)] = DEFAULT_QUERY_LIMIT,
    ) -> AuditEventList:
        """Audit events matching every given filter, newest first."""
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        entries = context.audit.query(
            user=user, action=action, study_instance_uid=study, since=since, limit=limit
        )
        return AuditEventList(
            events=[
                AuditEventModel(
                    at=entry.at,
                    user=entry.user,
                    action=entry.action,
                    resource=entry.resource,
                    study_instance_uid=entry.study_instance_uid,
                    client_address=entry.client_address,
                    outcome=entry.outcome,
                )
                for entry in entries
            ]
        )

    @router.get(
        "/jobs",
        response_model=JobList,
        responses=error_responses(401, 403),
        summary="List processing jobs",
        dependencies=[Depends(gate.require("jobs.list", role=Role.ADMIN))],
    )
    def list_jobs(
        state: JobState | None = None,
        study: Annotated[str | None, Query(pattern=UID_PATTERN, max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_JOBS)] = DEFAULT_JOBS,
    ) -> JobList:
        """The newest ``limit`` jobs, oldest first, optionally in one state or of one study."""
        jobs = context.catalog.jobs.list_jobs(study_instance_uid=study, state=state)
        return JobList(jobs=[job_model(job) for job in jobs[-limit:]])

    return router
