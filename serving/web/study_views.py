"""The ``/api`` routes of the study view: key images, heat layers and readers' feedback.

A result's viewer file (:mod:`imaging.viewer_file`) is found only through the study's
latest result payload (``results[].explanation.viewer``) and served only when it lies
inside the data directory: a payload naming any other file gets a 404, whatever the
file is. Images and feedback name the patient's study, so they need ``results:read``
(writing feedback ``feedback:write``): radiologists and admins.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from fastapi import Path as PathParam

from imaging.explain import PLANE_AXES
from imaging.viewer_file import ViewerData
from serving.api.context import ServiceContext
from serving.api.models import ErrorBody, error_responses
from serving.api.results import MAX_PAGE, StudyUid
from serving.api.security import UID_PATTERN, Gatekeeper
from serving.auth import Permission, Principal
from serving.web.feedback import FeedbackStore
from serving.web.models import (
    CineViewer,
    FeedbackEntry,
    FeedbackList,
    FeedbackRequest,
    VolumeViewer,
)
from serving.web.sessions import require_json
from serving.web.viewer_images import FRAME_PLANE, Layer, ViewerCache, planes_of, render_png

logger = logging.getLogger(__name__)

Modality = Literal["MR", "US"]
Plane = Literal["axial", "coronal", "sagittal", "frame"]
IMAGE_CACHE_CONTROL = "private, max-age=300"
_NOT_JSON: dict[int | str, dict[str, Any]] = {
    415: {"model": ErrorBody, "description": "The body is not application/json."}
}


def create_study_views_router(context: ServiceContext, gate: Gatekeeper) -> APIRouter:
    """The viewer and feedback routes (mounted under ``/api``)."""
    router = APIRouter(tags=["web"])
    viewers = ViewerCache()
    feedback = FeedbackStore(context.catalog)
    data_dir = context.settings.data_dir

    def load(uid: str, modality: str) -> ViewerData:
        path = viewer_file(context, uid, modality, data_dir)
        if path is None:
            raise HTTPException(404, f"the study has no {modality} result with images")
        try:
            return viewers.load(path)
        except (OSError, ValueError) as exc:
            logger.warning("viewer file not readable: %s", type(exc).__name__)
            raise HTTPException(404, f"the study's {modality} images cannot be read") from None

    @router.get(
        "/studies/{uid}/viewer/{modality}",
        response_model=VolumeViewer | CineViewer,
        responses=error_responses(401, 403, 404),
        summary="What the viewer of a result shows",
        dependencies=[Depends(gate.require("viewer.read", Permission.READ_RESULTS))],
    )
    def read_viewer(uid: StudyUid, modality: Modality) -> VolumeViewer | CineViewer:
        """Planes and key slices (MR) or frames, key frames and frame interval (echo)."""
        data = load(uid, modality)
        shape = [int(n) for n in data.image.shape]
        if data.modality == "MR":
            return VolumeViewer(
                shape=shape,
                planes=planes_of(data),
                key={plane: data.peak[axis] for plane, axis in PLANE_AXES.items()},
                method=data.method,
                target=data.target,
            )
        return CineViewer(
            shape=shape,
            frames=shape[0],
            key_frames=list(data.key_frames),
            frame_interval_ms=data.frame_interval_ms,
            method=data.method,
            target=data.target,
        )

    @router.get(
        "/studies/{uid}/viewer/{modality}/{plane}/{index}.png",
        response_class=Response,
        responses={
            200: {"content": {"image/png": {}}, "description": "The slice or frame."},
            **error_responses(401, 403, 404),
        },
        summary="One slice or frame of a result, or its heat layer",
        dependencies=[Depends(gate.require("viewer.image", Permission.READ_RESULTS))],
    )
    def read_viewer_image(
        uid: StudyUid,
        modality: Modality,
        plane: Plane,
        index: Annotated[int, PathParam(ge=0, le=100_000)],
        layer: Layer = "image",
    ) -> Response:
        """Greyscale slice (``layer=image``) or jet-coloured heat with alpha (``layer=heat``)."""
        if (plane == FRAME_PLANE) != (modality == "US"):
            raise HTTPException(404, f"no {plane} plane in a {modality} result")
        data = load(uid, modality)
        try:
            png = render_png(data, plane, index, layer)
        except ValueError:
            raise HTTPException(404, f"no {plane} image {index}") from None
        return Response(
            png,
            media_type="image/png",
            headers={"Cache-Control": IMAGE_CACHE_CONTROL, "X-Content-Type-Options": "nosniff"},
        )

    write_feedback = gate.require("feedback.write", Permission.WRITE_FEEDBACK)
    writer = Depends(write_feedback)  # one call per request: FastAPI caches dependencies

    @router.post(
        "/feedback",
        response_model=FeedbackEntry,
        status_code=201,
        responses={**error_responses(400, 401, 403, 404), **_NOT_JSON},
        summary="Agree, disagree or comment on a prediction or a similar case",
        # The caller first (401/403), then the body's type (415), then the body (422).
        dependencies=[writer, Depends(require_json)],
    )
    def post_feedback(
        body: FeedbackRequest,
        # A default, not Annotated: the annotation is a string that cannot see this closure.
        principal: Principal = writer,
    ) -> FeedbackEntry:
        """Store the feedback with the caller's name and the time."""
        if not context.catalog.search_studies(
            {"StudyInstanceUID": body.study_instance_uid}, limit=1
        ):
            raise HTTPException(404, "no such study")
        return feedback.add(body, user=principal.user)

    @router.get(
        "/feedback",
        response_model=FeedbackList,
        responses=error_responses(401, 403),
        summary="Readers' feedback, newest first",
        dependencies=[Depends(gate.require("feedback.list", Permission.READ_RESULTS))],
    )
    def list_feedback(
        study_instance_uid: Annotated[
            str | None, Query(pattern=UID_PATTERN, min_length=1, max_length=64)
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    ) -> FeedbackList:
        """Feedback on one study (or all), with who gave it and when."""
        items, total = feedback.list_entries(
            study_instance_uid=study_instance_uid, limit=limit, offset=offset
        )
        return FeedbackList(items=items, total=total)

    return router


def viewer_file(context: ServiceContext, uid: str, modality: str, data_dir: Path) -> Path | None:
    """The viewer file of the study's latest ``modality`` result, if inside ``data_dir``.

    The path comes from the stored payload; it is resolved (links followed) and refused
    unless it is a ``.npz`` file under the resolved data directory.
    """
    result = context.catalog.latest_result(uid)
    entries = result.payload.get("results") if result is not None else None
    if not isinstance(entries, list):
        return None
    for entry in entries:
        if not isinstance(entry, Mapping) or entry.get("modality") != modality:
            continue
        explanation = entry.get("explanation")
        value = explanation.get("viewer") if isinstance(explanation, Mapping) else None
        if isinstance(value, str) and value:
            return confined(value, data_dir)
    return None


def confined(value: str, root: Path) -> Path | None:
    """``value`` resolved, when it is an existing ``.npz`` file inside ``root``; else None."""
    try:
        path = Path(value).resolve(strict=True)
        base = root.resolve()
    except (OSError, RuntimeError, ValueError):  # missing, a link loop, a NUL byte
        return None
    if path.suffix != ".npz" or not path.is_relative_to(base) or not path.is_file():
        return None
    return path
