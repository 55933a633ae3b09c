"""Response bodies of the results and admin routes (so the OpenAPI schema is exact)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

DISCLAIMER = (
    "not for diagnostic use: machine-generated research results, not verified by a physician"
)
JobState = Literal["received", "processing", "done", "failed"]


class ErrorBody(BaseModel):
    """An error: what went wrong, never a stack trace."""

    detail: str


class Health(BaseModel):
    """The service answers."""

    status: Literal["ok"]


class Prediction(BaseModel):
    """The headline of a study's latest result."""

    label: str
    probability: float | None = None


class WorklistItem(BaseModel):
    """One study of the worklist."""

    study_instance_uid: str
    patient_name: str
    patient_id: str
    study_date: str = Field(description="YYYYMMDD, empty when unknown.")
    study_description: str
    accession_number: str
    modalities: list[str]
    number_of_instances: int
    last_received_at: datetime
    job_state: JobState | None = Field(description="State of the latest job; null: none yet.")
    prediction: Prediction | None = Field(description="From the latest result, once there is one.")


class WorklistPage(BaseModel):
    """A page of the worklist."""

    items: list[WorklistItem]
    total: int = Field(description="Studies matching the filters, over all pages.")
    limit: int
    offset: int
    disclaimer: str = DISCLAIMER


class SeriesSummary(BaseModel):
    """One series of a study."""

    series_instance_uid: str
    modality: str
    series_number: int | None
    series_description: str
    number_of_instances: int


class JobModel(BaseModel):
    """A processing job."""

    id: int
    study_instance_uid: str
    state: JobState
    reason: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime


class ResultModel(BaseModel):
    """A study's result as the pipeline stored it."""

    study_instance_uid: str
    job_id: int | None
    created_at: datetime
    model_versions: dict[str, Any]
    payload: dict[str, Any] = Field(
        description="Prediction, probability, EF, explanation images, similar cases, draft."
    )
    disclaimer: str = DISCLAIMER


class StudyDetail(BaseModel):
    """A study with its series, job history and latest result."""

    study_instance_uid: str
    patient_name: str
    patient_id: str
    patient_birth_date: str
    patient_sex: str
    study_date: str
    study_time: str
    accession_number: str
    study_description: str
    modalities: list[str]
    series: list[SeriesSummary]
    jobs: list[JobModel] = Field(description="Oldest first.")
    result: ResultModel | None
    disclaimer: str = DISCLAIMER


class ProcessingStatus(BaseModel):
    """A study whose result is not ready yet (HTTP 202)."""

    study_instance_uid: str
    state: Literal["waiting", "received", "processing"]
    detail: str


class ReprocessResponse(BaseModel):
    """What a reprocess request did."""

    study_instance_uid: str
    job: JobModel | None = Field(description="The job queued now, when one was.")
    detail: str


class CaseSearchResponse(BaseModel):
    """De-identified similar cases, best first."""

    hits: list[dict[str, Any]]
    k: int
    disclaimer: str = DISCLAIMER


class AuditEventModel(BaseModel):
    """One audited access."""

    at: datetime
    user: str | None = Field(description="null: a request without a valid token.")
    action: str
    resource: str
    study_instance_uid: str | None
    client_address: str | None
    outcome: str


class AuditEventList(BaseModel):
    """Audit events, newest first."""

    events: list[AuditEventModel]


class JobList(BaseModel):
    """Jobs, oldest first."""

    jobs: list[JobModel]


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error statuses a route can answer."""
    descriptions = {
        400: "A parameter is not valid.",
        401: "No valid bearer token (missing, wrong or revoked).",
        403: "The caller's role may not do this.",
        404: "No such study.",
        503: "The service part this route needs is not configured.",
    }
    return {code: {"model": ErrorBody, "description": descriptions[code]} for code in codes}
