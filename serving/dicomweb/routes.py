"""The DICOMweb router: STOW-RS, QIDO-RS and WADO-RS over the study store's contracts.

Mounted by the service under ``/dicom-web``. Every request first passes the injected
:class:`AccessCheck` (authentication, roles and audit live there), then the handlers
talk only to :class:`~serving.study_access.InstanceSink`,
:class:`~serving.study_access.StudyQuery` and
:class:`~serving.study_access.InstanceLocator`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.filereader import read_file_meta_info

from imaging.dicom.reading import read_dicom
from imaging.errors import ImagingError
from serving.dicomweb.dicom_json import dataset_to_json, row_to_json
from serving.dicomweb.multipart import (
    DICOM_MEDIA_TYPE,
    iter_multipart,
    multipart_content_type,
    multipart_length,
    new_boundary,
    parse_content_type,
)
from serving.dicomweb.openapi import (
    BULKDATA,
    DICOM_JSON,
    INSTANCE,
    MAX_QUERY_NUMBER,
    METADATA,
    RENDERED,
    SEARCH_INSTANCES,
    SEARCH_SERIES,
    SEARCH_STUDIES,
    STORE,
)
from serving.dicomweb.rendered import RENDERED_TYPES, RenderedType, render_frame
from serving.dicomweb.stow import receive_stow
from serving.study_access import InstanceLocator, InstanceSink, StudyQuery

logger = logging.getLogger(__name__)

MAX_QUERY_RESULTS = 1000
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
MAX_FRAME_NUMBER = 2**31 - 1
_QIDO_CONTROLS = frozenset({"limit", "offset", "fuzzymatching", "includefield"})


class AccessCheck(Protocol):
    """Decides whether a request may go on; raises ``HTTPException`` (401/403) if not.

    ``action`` is ``"stow"``, ``"qido"`` or ``"wado"``; ``study_instance_uid`` is the
    study the request names in its path, ``None`` for requests across studies.
    """

    def __call__(self, request: Request, action: str, study_instance_uid: str | None) -> None:
        """Refuse the request by raising, or return to let it go on."""
        ...


def create_dicomweb_router(
    sink: InstanceSink,
    query: StudyQuery,
    locator: InstanceLocator,
    *,
    work_dir: Path,
    max_request_bytes: int,
    max_instance_bytes: int,
    access: AccessCheck,
) -> APIRouter:
    """The DICOMweb routes, to be mounted under ``/dicom-web``.

    Args:
        sink: Takes STOW-RS instances into the store and catalog.
        query: Answers QIDO-RS.
        locator: Finds stored files for WADO-RS.
        work_dir: Where STOW-RS parts are written while a request is received.
        max_request_bytes: Largest STOW-RS body (413 above it).
        max_instance_bytes: Largest single part (that part fails above it).
        access: Called first on every request.
    """
    # The handlers build their own responses; the schema's media types come from openapi.py.
    router = APIRouter(default_response_class=Response)

    async def store(request: Request, study: str | None) -> Response:
        access(request, "stow", study)
        if study is not None:
            _check_uid("study", study)
        status, body = await receive_stow(
            request,
            sink,
            study_instance_uid=study,
            work_dir=work_dir,
            max_request_bytes=max_request_bytes,
            max_instance_bytes=max_instance_bytes,
            instance_url=lambda se, st, i: _instance_url(request, se, st, i),
        )
        return JSONResponse(body, status_code=status, media_type=DICOM_JSON)

    @router.post("/studies", name="dicomweb_store", **STORE)
    async def store_instances(request: Request) -> Response:
        """STOW-RS: store the instances of a ``multipart/related`` body."""
        return await store(request, None)

    @router.post("/studies/{study}", name="dicomweb_store_study", **STORE)
    async def store_study_instances(request: Request, study: str) -> Response:
        """STOW-RS into one study: parts of another study fail."""
        return await store(request, study)

    def search(
        request: Request, study: str | None, search_rows: _Search, series: str | None = None
    ) -> Response:
        access(request, "qido", study)  # first: a caller who may not search learns nothing
        if study is not None:
            _check_uid("study", study)
        if series is not None:
            _check_uid("series", series)
        filters, limit, offset = _qido_parameters(request)
        capped = MAX_QUERY_RESULTS if limit is None else min(limit, MAX_QUERY_RESULTS)
        try:
            rows = search_rows(filters, capped, offset)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        body = [
            row_to_json(row, retrieve_url=_row_instance_url(request, row)) for row in rows[:capped]
        ]
        headers = {}
        if len(rows) >= capped and (limit is None or limit > capped):
            # PS3.18 8.3.4.4.1: tell the client more results exist past the server's cap.
            headers["Warning"] = (
                f'299 {request.url.hostname}: "There are additional results that can be requested"'
            )
        return JSONResponse(body, media_type=DICOM_JSON, headers=headers)

    @router.get("/studies", name="dicomweb_search_studies", **SEARCH_STUDIES)
    def search_for_studies(request: Request) -> Response:
        """QIDO-RS: studies."""
        return search(request, None, lambda f, n, o: query.search_studies(f, limit=n, offset=o))

    @router.get("/series", name="dicomweb_search_all_series", **SEARCH_SERIES)
    def search_for_all_series(request: Request) -> Response:
        """QIDO-RS: series of every study."""
        return search(request, None, lambda f, n, o: query.search_series(f, limit=n, offset=o))

    @router.get("/studies/{study}/series", name="dicomweb_search_series", **SEARCH_SERIES)
    def search_for_series(request: Request, study: str) -> Response:
        """QIDO-RS: series of one study."""
        return search(
            request,
            study,
            lambda f, n, o: query.search_series(f, study_instance_uid=study, limit=n, offset=o),
        )

    @router.get("/instances", name="dicomweb_search_all_instances", **SEARCH_INSTANCES)
    def search_for_all_instances(request: Request) -> Response:
        """QIDO-RS: instances of every study."""
        return search(request, None, lambda f, n, o: query.search_instances(f, limit=n, offset=o))

    @router.get(
        "/studies/{study}/instances", name="dicomweb_search_study_instances", **SEARCH_INSTANCES
    )
    def search_for_study_instances(request: Request, study: str) -> Response:
        """QIDO-RS: instances of one study."""
        return search(
            request,
            study,
            lambda f, n, o: query.search_instances(f, study_instance_uid=study, limit=n, offset=o),
        )

    @router.get(
        "/studies/{study}/series/{series}/instances",
        name="dicomweb_search_series_instances",
        **SEARCH_INSTANCES,
    )
    def search_for_series_instances(request: Request, study: str, series: str) -> Response:
        """QIDO-RS: instances of one series."""
        return search(
            request,
            study,
            lambda f, n, o: query.search_instances(
                f, study_instance_uid=study, series_instance_uid=series, limit=n, offset=o
            ),
            series,
        )

    def stored_path(request: Request, study: str, series: str, instance: str) -> Path:
        access(request, "wado", study)
        for name, uid in (("study", study), ("series", series), ("instance", instance)):
            _check_uid(name, uid)
        path = locator.instance_path(study, series, instance)
        if path is None or not path.is_file():
            raise HTTPException(404, "no such instance")
        return path

    @router.get(
        "/studies/{study}/series/{series}/instances/{instance}",
        name="dicomweb_instance",
        **INSTANCE,
    )
    def retrieve_instance(request: Request, study: str, series: str, instance: str) -> Response:
        """WADO-RS: the stored file, as sent, in a ``multipart/related`` body."""
        path = stored_path(request, study, series, instance)
        transfer_syntax = str(read_file_meta_info(path).TransferSyntaxUID)
        _check_dicom_accept(request.headers.get("accept", ""), transfer_syntax)
        return _multipart_response([path], f"{DICOM_MEDIA_TYPE}; transfer-syntax={transfer_syntax}")

    @router.get(
        "/studies/{study}/series/{series}/instances/{instance}/metadata",
        name="dicomweb_instance_metadata",
        **METADATA,
    )
    def retrieve_instance_metadata(
        request: Request, study: str, series: str, instance: str
    ) -> Response:
        """WADO-RS: the instance's DICOM JSON, pixel data as a BulkDataURI."""
        path = stored_path(request, study, series, instance)
        body = [_metadata(request, path, study, series, instance)]
        return JSONResponse(body, media_type=DICOM_JSON)

    @router.get(
        "/studies/{study}/series/{series}/metadata", name="dicomweb_series_metadata", **METADATA
    )
    def retrieve_series_metadata(request: Request, study: str, series: str) -> Response:
        """WADO-RS: the DICOM JSON of every instance of a series (what viewers load)."""
        access(request, "wado", study)
        _check_uid("study", study)
        _check_uid("series", series)
        rows = query.search_instances({}, study_instance_uid=study, series_instance_uid=series)
        body = []
        for row in rows:
            instance = row["SOPInstanceUID"]
            path = locator.instance_path(study, series, instance)
            if path is not None and path.is_file():
                body.append(_metadata(request, path, study, series, instance))
        if not body:
            raise HTTPException(404, "no such series")
        return JSONResponse(body, media_type=DICOM_JSON)

    @router.get(
        "/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag}",
        name="dicomweb_bulkdata",
        **BULKDATA,
    )
    def retrieve_bulkdata(
        request: Request, study: str, series: str, instance: str, tag: str
    ) -> Response:
        """WADO-RS: the value of one top-level binary element (a metadata BulkDataURI)."""
        path = stored_path(request, study, series, instance)
        if not _TAG.match(tag):
            raise HTTPException(400, f"tag {tag!r} is not 8 hexadecimal digits")
        element = _read(path).get(int(tag, 16))
        if element is None or not isinstance(element.value, bytes):
            raise HTTPException(404, f"instance has no binary element {tag.upper()}")
        return _multipart_response([element.value], "application/octet-stream")

    def rendered(request: Request, study: str, series: str, instance: str, frames: str) -> Response:
        path = stored_path(request, study, series, instance)  # the access check first
        frame_number = _natural(frames, MAX_FRAME_NUMBER)
        if frame_number is None or frame_number < 1:
            raise HTTPException(400, f"frames {frames[:40]!r}: give one frame number, from 1")
        media_type = _rendered_type(request.headers.get("accept", ""))
        quality = _quality(request.query_params.get("quality"))
        try:
            image = render_frame(path, frame_number, media_type, quality=quality)
        except ImagingError as exc:
            raise HTTPException(400, f"cannot render: {exc.reason}") from exc
        return Response(image, media_type=media_type)

    @router.get(
        "/studies/{study}/series/{series}/instances/{instance}/rendered",
        name="dicomweb_instance_rendered",
        **RENDERED,
    )
    def retrieve_instance_rendered(
        request: Request, study: str, series: str, instance: str
    ) -> Response:
        """WADO-RS: the first frame of the instance as JPEG or PNG."""
        return rendered(request, study, series, instance, "1")

    @router.get(
        "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
        name="dicomweb_frame_rendered",
        **RENDERED,
    )
    def retrieve_frame_rendered(
        request: Request, study: str, series: str, instance: str, frames: str
    ) -> Response:
        """WADO-RS: one frame (numbered from 1) as JPEG or PNG."""
        return rendered(request, study, series, instance, frames)

    return router


_Search = Callable[[dict[str, str], int, int], list[dict[str, str]]]


def _check_uid(name: str, uid: str) -> None:
    """Refuse a path UID that is not a UID, before it reaches the store (no '..')."""
    if len(uid) > 64 or not _UID.match(uid):
        raise HTTPException(400, f"{name} {uid[:80]!r} is not a DICOM UID")


def _qido_parameters(request: Request) -> tuple[dict[str, str], int | None, int]:
    """Attribute filters keyed by keyword, limit and offset; 400 naming a bad parameter."""
    filters: dict[str, str] = {}
    limit: int | None = None
    offset = 0
    for name, value in request.query_params.multi_items():
        if name in ("limit", "offset"):
            number = _natural(value, MAX_QUERY_NUMBER)
            if number is None:
                raise HTTPException(
                    400, f"{name} {value[:40]!r} is not an integer from 0 to {MAX_QUERY_NUMBER}"
                )
            if name == "limit":
                limit = number
            else:
                offset = number
        elif name in _QIDO_CONTROLS:
            continue  # fuzzy matching is not offered; every known field is returned
        else:
            keyword = _filter_keyword(name)
            if keyword in filters:
                raise HTTPException(400, f"filter {name!r} is given twice")
            filters[keyword] = value
    return filters, limit, offset


def _filter_keyword(name: str) -> str:
    """The keyword a query parameter names, by keyword or by tag (``0020000D``)."""
    if _TAG.match(name):
        keyword = keyword_for_tag(int(name, 16))
        if keyword:
            return keyword
    elif tag_for_keyword(name) is not None:
        return name
    raise HTTPException(400, f"query parameter {name!r} is not a DICOM attribute or option")


def _row_instance_url(request: Request, row: dict[str, str]) -> str | None:
    """The WADO-RS URL of an instance row; ``None`` for study and series rows."""
    uids = (row.get("StudyInstanceUID"), row.get("SeriesInstanceUID"), row.get("SOPInstanceUID"))
    if all(uids):
        return _instance_url(request, *(str(uid) for uid in uids))
    return None


def _instance_url(request: Request, study: str, series: str, instance: str) -> str:
    return str(request.url_for("dicomweb_instance", study=study, series=series, instance=instance))


def _read(path: Path, *, stop_before_pixels: bool = False) -> Any:
    """A stored file's data set; a stored file that no longer reads is a server fault."""
    try:
        return read_dicom(path, stop_before_pixels=stop_before_pixels)
    except ImagingError as exc:
        logger.error("stored file %s does not read: %s", path.name, exc.reason)
        raise HTTPException(500, "the stored instance cannot be read") from exc


def _metadata(request: Request, path: Path, study: str, series: str, instance: str) -> Any:
    """DICOM JSON of a stored file, read without its pixel data (cheap for cine loops)."""

    def bulk_data_uri(tag: str) -> str:
        return str(
            request.url_for(
                "dicomweb_bulkdata", study=study, series=series, instance=instance, tag=tag
            )
        )

    dataset = _read(path, stop_before_pixels=True)
    return dataset_to_json(dataset, bulk_data_uri, pixel_data_omitted=True)


def _multipart_response(parts: Sequence[Path | bytes], part_type: str) -> Response:
    """A streamed ``multipart/related`` response; ``part_type`` may carry parameters."""
    boundary = new_boundary()
    length = multipart_length(parts, boundary=boundary, part_type=part_type)
    return StreamingResponse(
        iter_multipart(parts, boundary=boundary, part_type=part_type),
        media_type=multipart_content_type(boundary, part_type.split(";")[0]),
        headers={"Content-Length": str(length)},
    )


def _media_ranges(accept: str) -> list[tuple[str, dict[str, str]]]:
    """The media ranges of an Accept header, highest quality first (stable)."""
    ranges = [parse_content_type(item) for item in accept.split(",") if item.strip()]
    ranges = [(media, parameters) for media, parameters in ranges if _q(parameters) > 0]
    return sorted(ranges, key=lambda entry: -_q(entry[1]))


def _q(parameters: dict[str, str]) -> float:
    try:
        return float(parameters.get("q", "1"))
    except ValueError:
        return 0.0


def _check_dicom_accept(accept: str, transfer_syntax: str) -> None:
    """406 unless the Accept header takes the instance in its stored transfer syntax.

    Files are sent as stored, never transcoded. A range without ``transfer-syntax``
    is taken to accept any, as viewers send it so.
    """
    if not accept.strip():
        return
    for media, parameters in _media_ranges(accept):
        if media in ("*/*", "multipart/*", DICOM_MEDIA_TYPE):
            return
        if media == "multipart/related":
            part_type = parse_content_type(parameters.get("type", DICOM_MEDIA_TYPE))[0]
            wanted = parameters.get("transfer-syntax", "*")
            if part_type in (DICOM_MEDIA_TYPE, "*/*") and wanted in ("*", transfer_syntax):
                return
    raise HTTPException(406, f"the instance is stored as {transfer_syntax} and is not transcoded")


def _rendered_type(accept: str) -> RenderedType:
    """JPEG unless the Accept header prefers PNG; 406 when it takes neither."""
    if not accept.strip():
        return "image/jpeg"
    for media, _ in _media_ranges(accept):
        for rendered_type in RENDERED_TYPES:
            if media == rendered_type:
                return rendered_type
        if media in ("*/*", "image/*"):
            return "image/jpeg"
    raise HTTPException(406, "rendered frames are offered as image/jpeg or image/png")


def _quality(value: str | None) -> int:
    if value is None:
        return 90
    number = _natural(value, 100)
    if number is None or number < 1:
        raise HTTPException(400, f"quality {value[:40]!r} is not an integer from 1 to 100")
    return number


def _natural(value: str, maximum: int) -> int | None:
    """``value`` as an integer from 0 to ``maximum``, or ``None``.

    ASCII digits only: ``str.isdigit`` also takes characters ``int`` refuses ("²"), and a
    number past the SQL integer range would fail in the catalog rather than here.
    """
    if not value.isascii() or not value.isdigit() or len(value) > len(str(maximum)):
        return None
    number = int(value)
    return number if number <= maximum else None
