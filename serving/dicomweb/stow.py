"""STOW-RS: receive a ``multipart/related`` body to disk, then ingest each part.

The whole body is received before anything is ingested, so a body that is too large
(413) or malformed (400) stores nothing. Each part then goes to the
:class:`~serving.study_access.InstanceSink` alone: a part that fails does not stop
the others, and the response (PS3.18 10.5.3) says, for each, stored or why not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from imaging.dicom.reading import read_dicom
from imaging.errors import ImagingError
from serving.dicomweb.dicom_json import (
    FAILURE_CANNOT_UNDERSTAND,
    FAILURE_DOES_NOT_MATCH,
    FAILURE_OUT_OF_RESOURCES,
    FAILURE_PROCESSING,
    StowOutcome,
    stow_response,
)
from serving.dicomweb.multipart import (
    DICOM_MEDIA_TYPE,
    MultipartError,
    MultipartReader,
    ReceivedPart,
    RequestTooLargeError,
    boundary_of,
    parse_content_type,
)
from serving.study_access import InstanceSink

logger = logging.getLogger(__name__)

InstanceUrl = Callable[[str, str, str], str]


async def receive_stow(
    request: Request,
    sink: InstanceSink,
    *,
    study_instance_uid: str | None,
    work_dir: Path,
    max_request_bytes: int,
    max_instance_bytes: int,
    instance_url: InstanceUrl,
) -> tuple[int, dict[str, Any]]:
    """Receive and store a STOW-RS request; the status and the DICOM JSON response.

    Returns 200 when every part was stored (or was already), 202 when some failed,
    409 when none was stored.

    Raises:
        HTTPException: 415 for a body that is not ``multipart/related`` of
            ``application/dicom``, 413 for one over ``max_request_bytes``, 400 for a
            malformed one or one without parts.
    """
    boundary = _boundary(request.headers.get("content-type", ""))
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_request_bytes:
        raise HTTPException(413, f"request body is over the {max_request_bytes}-byte limit")
    work_dir.mkdir(parents=True, exist_ok=True)
    reader = MultipartReader(
        boundary,
        work_dir,
        max_request_bytes=max_request_bytes,
        max_part_bytes=max_instance_bytes,
    )
    try:
        try:
            async for chunk in request.stream():
                # Disk writes stay off the event loop.
                await run_in_threadpool(reader.feed, chunk)
            parts = reader.finish()
        except RequestTooLargeError as exc:
            raise HTTPException(413, exc.reason) from exc
        except MultipartError as exc:
            raise HTTPException(400, f"malformed multipart body: {exc}") from exc
        if not parts:
            raise HTTPException(400, "the request holds no parts")
        outcomes = [
            await run_in_threadpool(_ingest_part, part, sink, study_instance_uid, instance_url)
            for part in parts
        ]
    finally:
        await run_in_threadpool(reader.discard)
    stored = sum(outcome.stored for outcome in outcomes)
    logger.info("STOW-RS: %d of %d parts stored", stored, len(outcomes))
    status = 200 if stored == len(outcomes) else 409 if stored == 0 else 202
    return status, stow_response(outcomes, retrieve_url=None)


def _boundary(content_type: str) -> str:
    media_type, parameters = parse_content_type(content_type)
    if media_type != "multipart/related":
        raise HTTPException(415, f'STOW-RS takes multipart/related, not "{media_type}"')
    related_type = parse_content_type(parameters.get("type", DICOM_MEDIA_TYPE))[0]
    if related_type != DICOM_MEDIA_TYPE:
        raise HTTPException(415, f'STOW-RS takes application/dicom parts, not "{related_type}"')
    try:
        return boundary_of(content_type)
    except MultipartError as exc:
        raise HTTPException(400, str(exc)) from exc


def _ingest_part(
    part: ReceivedPart,
    sink: InstanceSink,
    study_instance_uid: str | None,
    instance_url: InstanceUrl,
) -> StowOutcome:
    """Store one received part; never raises."""
    if part.path is None:
        code = (
            FAILURE_CANNOT_UNDERSTAND
            if part.content_type != DICOM_MEDIA_TYPE
            else FAILURE_OUT_OF_RESOURCES
        )
        return StowOutcome(stored=False, failure_reason=code, reason=part.failure)
    header = _read_header(part.path)
    uids = {
        keyword: str(header.get(keyword, "")) if header is not None else ""
        for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
    }
    wrong_study = study_instance_uid is not None and uids["StudyInstanceUID"] != study_instance_uid
    if header is not None and wrong_study:
        return StowOutcome(
            stored=False,
            sop_class_uid=uids["SOPClassUID"] or None,
            sop_instance_uid=uids["SOPInstanceUID"] or None,
            failure_reason=FAILURE_DOES_NOT_MATCH,
            reason="StudyInstanceUID is not the study of the request",
        )
    try:
        result = sink.ingest_file(part.path, source=f"part {part.number}", received_via="stow-rs")
    except Exception:  # the sink promises not to raise; one bad part must not end the request
        logger.exception("STOW-RS: the store failed on part %d", part.number)
        return StowOutcome(
            stored=False,
            sop_class_uid=uids["SOPClassUID"] or None,
            sop_instance_uid=uids["SOPInstanceUID"] or None,
            failure_reason=FAILURE_PROCESSING,
            reason="the store failed on this part",
        )
    sop_class = result.sop_class_uid or uids["SOPClassUID"] or None
    sop_instance = result.sop_instance_uid or uids["SOPInstanceUID"] or None
    if not result.accepted:
        return StowOutcome(
            stored=False,
            sop_class_uid=sop_class,
            sop_instance_uid=sop_instance,
            failure_reason=FAILURE_CANNOT_UNDERSTAND,
            reason=result.reason,
        )
    study = result.study_instance_uid or uids["StudyInstanceUID"]
    series = uids["SeriesInstanceUID"]
    url = instance_url(study, series, sop_instance) if study and series and sop_instance else None
    return StowOutcome(
        stored=True, sop_class_uid=sop_class, sop_instance_uid=sop_instance, retrieve_url=url
    )


def _read_header(path: Path) -> Any | None:
    """The part's data set without pixel data, or ``None``: the sink says why it is bad."""
    try:
        return read_dicom(path, stop_before_pixels=True)
    except ImagingError:
        return None
