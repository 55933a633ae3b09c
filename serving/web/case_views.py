"""The ``/api/cases/{case_id}`` routes: one de-identified similar case and its thumbnail.

Cases are de-identified, so researchers may read them too (``cases:read``). The body
holds the fields of :class:`~serving.web.models.CaseDetail` only, whatever the lookup
returns: never a patient pseudonym, name, ID or original UID.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Response
from fastapi import Path as PathParam

from serving.api.context import CaseLookup, ServiceContext
from serving.api.models import error_responses
from serving.api.security import Gatekeeper
from serving.auth import Permission
from serving.web.models import CASE_ID_PATTERN, CaseDetail

CaseId = Annotated[
    str,
    PathParam(
        pattern=CASE_ID_PATTERN,
        min_length=1,
        max_length=128,
        description="A pseudonymous case id, as a similar-case hit names it.",
    ),
]
THUMBNAIL_CACHE_CONTROL = "private, max-age=3600"


def create_case_views_router(context: ServiceContext, gate: Gatekeeper) -> APIRouter:
    """The case detail and thumbnail routes (mounted under ``/api``, after the search)."""
    router = APIRouter(tags=["results"])

    def lookup() -> CaseLookup:
        if context.cases is None:
            raise HTTPException(503, "case detail is not configured (no case index loaded)")
        return context.cases

    @router.get(
        "/cases/{case_id}",
        response_model=CaseDetail,
        responses=error_responses(401, 403, 404, 503),
        summary="One de-identified similar case",
        dependencies=[Depends(gate.require("cases.read", Permission.READ_CASES))],
    )
    def read_case(case_id: CaseId) -> CaseDetail:
        """Modality, label, site, year, EF and the de-identified report of a case."""
        found = lookup().case_detail(case_id)
        if found is None:
            raise HTTPException(404, "no such case")
        return CaseDetail(
            case_id=str(found["case_id"]),
            modality=str(found["modality"]),
            label=found.get("label"),
            site_id=str(found["site_id"]),
            study_year=found.get("study_year"),
            ef_percent=found.get("ef_percent"),
            report_text=str(found.get("report_text") or ""),
        )

    @router.get(
        "/cases/{case_id}/thumbnail.png",
        response_class=Response,
        responses={
            200: {"content": {"image/png": {}}, "description": "The case's thumbnail."},
            **error_responses(401, 403, 404, 503),
        },
        summary="A similar case's thumbnail",
        dependencies=[Depends(gate.require("cases.thumbnail", Permission.READ_CASES))],
    )
    def read_case_thumbnail(case_id: CaseId) -> Response:
        """The PNG thumbnail the index keeps for the case (de-identified pixels)."""
        png = lookup().thumbnail_png(case_id)
        if png is None:
            raise HTTPException(404, "no thumbnail for this case")
        return Response(
            png,
            media_type="image/png",
            headers={"Cache-Control": THUMBNAIL_CACHE_CONTROL, "X-Content-Type-Options": "nosniff"},
        )

    return router
