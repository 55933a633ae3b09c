"""The results JSON routes: worklist, study, result, reprocess, similar-case search.

Studies and results name patients, so they need ``studies:read`` or ``results:read``
(radiologists, admins); the case search returns de-identified cases and is open to
researchers too. Every body carries the "not for diagnostic use" disclaimer.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import JSONResponse

from serving.api.context import ServiceContext
from serving.api.models import (
    CaseSearchResponse,
    ProcessingStatus,
    ReprocessResponse,
    ResultModel,
    SeriesSummary,
    StudyDetail,
    WorklistPage,
    error_responses,
)
from serving.api.security import UID_PATTERN, Gatekeeper
from serving.api.worklist import (
    WorklistSort,
    WorklistStatus,
    job_model,
    list_worklist,
    mark_for_reprocessing,
    result_model,
)
from serving.auth import Permission, Role
from serving.catalog import utc_now

StudyUid = Annotated[
    str,
    Path(
        pattern=UID_PATTERN,
        min_length=1,
        max_length=64,
        description="Study Instance UID: digits and dots, at most 64 characters.",
    ),
]
MAX_PAGE = 500


def create_results_router(context: ServiceContext, gate: Gatekeeper) -> APIRouter:
    """The ``/api`` routes over studies, results and similar cases."""
    router = APIRouter(tags=["results"])
    catalog = context.catalog

    @router.get(
        "/studies",
        response_model=WorklistPage,
        responses=error_responses(401, 403),
        summary="The worklist",
        dependencies=[Depends(gate.require("studies.list", Permission.READ_STUDIES))],
    )
    def list_studies(
        modality: Annotated[str | None, Query(pattern=r"^[A-Z0-9_]{1,16}$")] = None,
        status: WorklistStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
        sort: WorklistSort = "-received",
    ) -> WorklistPage:
        """Studies with their latest job state and, once done, the predicted label."""
        items, total = list_worklist(
            catalog, modality=modality, status=status, limit=limit, offset=offset, sort=sort
        )
        return WorklistPage(items=items, total=total, limit=limit, offset=offset)

    @router.get(
        "/studies/{uid}",
        response_model=StudyDetail,
        responses=error_responses(401, 403, 404),
        summary="One study",
        dependencies=[Depends(gate.require("studies.read", Permission.READ_STUDIES))],
    )
    def read_study(
        uid: StudyUid,
    ) -> StudyDetail:
        """The study, its series, its job history and its latest result."""
        rows = catalog.search_studies({"StudyInstanceUID": uid}, limit=1)
        if not rows:
            raise HTTPException(404, "no such study")
        row = rows[0]
        series = [
            SeriesSummary(
                series_instance_uid=entry["SeriesInstanceUID"],
                modality=entry.get("Modality", ""),
                series_number=int(entry["SeriesNumber"]) if "SeriesNumber" in entry else None,
                series_description=entry.get("SeriesDescription", ""),
                number_of_instances=int(entry.get("NumberOfSeriesRelatedInstances", "0")),
            )
            for entry in catalog.search_series({}, study_instance_uid=uid)
        ]
        result = catalog.latest_result(uid)
        return StudyDetail(
            study_instance_uid=uid,
            patient_name=row.get("PatientName", ""),
            patient_id=row.get("PatientID", ""),
            patient_birth_date=row.get("PatientBirthDate", ""),
            patient_sex=row.get("PatientSex", ""),
            study_date=row.get("StudyDate", ""),
            study_time=row.get("StudyTime", ""),
            accession_number=row.get("AccessionNumber", ""),
            study_description=row.get("StudyDescription", ""),
            modalities=[m for m in row.get("ModalitiesInStudy", "").split("\\") if m],
            series=series,
            jobs=[job_model(job) for job in catalog.jobs.list_jobs(study_instance_uid=uid)],
            result=None if result is None else result_model(result),
        )

    @router.get(
        "/studies/{uid}/result",
        response_model=ResultModel,
        responses={
            202: {"model": ProcessingStatus, "description": "Not processed yet."},
            **error_responses(401, 403, 404),
        },
        summary="A study's latest result",
        dependencies=[Depends(gate.require("results.read", Permission.READ_RESULTS))],
    )
    def read_result(
        uid: StudyUid,
    ) -> ResultModel | JSONResponse:
        """The latest result; 202 while the study waits or is processed, 404 without one."""
        result = catalog.latest_result(uid)
        if result is not None:
            return result_model(result)
        if not catalog.search_studies({"StudyInstanceUID": uid}, limit=1):
            raise HTTPException(404, "no such study")
        jobs = catalog.jobs.list_jobs(study_instance_uid=uid)
        state: Literal["waiting", "received", "processing"]
        if not jobs:
            state, detail = "waiting", "the study is processed once no instance came for a while"
        elif jobs[-1].state in ("received", "processing"):
            state, detail = jobs[-1].state, "the study is queued or being processed"  # type: ignore[assignment]
        else:
            raise HTTPException(404, "the study has no result: its processing failed")
        status = ProcessingStatus(study_instance_uid=uid, state=state, detail=detail)
        return JSONResponse(status.model_dump(), status_code=202)

    @router.post(
        "/studies/{uid}/reprocess",
        response_model=ReprocessResponse,
        status_code=202,
        responses=error_responses(401, 403, 404),
        summary="Process a study again",
        dependencies=[Depends(gate.require("studies.reprocess", role=Role.ADMIN))],
    )
    def reprocess_study(
        uid: StudyUid,
    ) -> ReprocessResponse:
        """Queue the study for processing again (admins)."""
        if context.reprocess is not None:
            if not catalog.search_studies({"StudyInstanceUID": uid}, limit=1):
                raise HTTPException(404, "no such study")
            context.reprocess(uid)
            return ReprocessResponse(study_instance_uid=uid, job=None, detail="queued")
        try:
            job = mark_for_reprocessing(catalog, uid, now=utc_now())
        except KeyError:
            raise HTTPException(404, "no such study") from None
        if job is None:
            detail = "a job is queued or running; the study is processed again after it"
            return ReprocessResponse(study_instance_uid=uid, job=None, detail=detail)
        return ReprocessResponse(study_instance_uid=uid, job=job_model(job), detail="queued")

    @router.get(
        "/cases/search",
        response_model=CaseSearchResponse,
        responses=error_responses(400, 401, 403, 503),
        summary="Search similar de-identified cases by text",
        dependencies=[Depends(gate.require("cases.search", Permission.READ_CASES))],
    )
    def search_cases(
        text: Annotated[str, Query(min_length=1, max_length=1000)],
        k: Annotated[int | None, Query(ge=1, le=100)] = None,
        modality: Literal["MR", "US"] | None = None,
        label: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
        site: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    ) -> CaseSearchResponse:
        """The de-identified cases whose reports and images best match ``text``."""
        if context.case_search is None:
            raise HTTPException(503, "case search is not configured (no case index loaded)")
        count = k if k is not None else context.settings.models.similar_cases
        try:
            hits = context.case_search.search_text(
                text, k=count, modality=modality, label=label, site=site
            )
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        return CaseSearchResponse(hits=hits, k=count)

    return router
