"""What the DICOMweb routes declare in the OpenAPI schema: media types, statuses, parameters.

The handlers write their responses themselves (DICOM JSON, ``multipart/related``,
rendered images) and read the QIDO-RS query from the request, so FastAPI cannot infer
any of it. These declarations say it, so that a client generated from the schema, and
the schema fuzzer in the tests, see what the service really answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from serving.api.models import ErrorBody
from serving.study_access import INSTANCE_KEYWORDS, SERIES_KEYWORDS, STUDY_KEYWORDS

DICOM_JSON = "application/dicom+json"
Responses = dict[int | str, dict[str, Any]]
RouteDoc = dict[str, Any]
# The largest limit or offset a query takes (a signed 64-bit SQL integer).
MAX_QUERY_NUMBER = 2**63 - 1

_DATASETS = {DICOM_JSON: {"schema": {"type": "array", "items": {"type": "object"}}}}
_STOW = {DICOM_JSON: {"schema": {"type": "object"}}}


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


_NOT_ACCEPTABLE: Responses = {
    406: _error("The Accept header takes no media type this resource has.")
}

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_SEARCH_RESPONSES: Responses = {200: {"description": "Matching rows.", "content": _DATASETS}}
_RENDERED_QUERY = {
    "name": "quality",
    "in": "query",
    "required": False,
    "description": "JPEG quality, 1 to 100 (default 90).",
    "schema": {"type": "integer", "minimum": 1, "maximum": 100},
}


def search_query(keywords: Sequence[str]) -> dict[str, Any]:
    """The ``openapi_extra`` of a QIDO-RS route matching on ``keywords``.

    The route takes any attribute by keyword or tag; the schema lists the keywords the
    catalog returns at that level and above, and the paging and control parameters.
    """
    number = {"type": "integer", "minimum": 0, "maximum": MAX_QUERY_NUMBER}
    parameters: list[dict[str, Any]] = [
        {"name": "limit", "in": "query", "required": False, "schema": number},
        {"name": "offset", "in": "query", "required": False, "schema": number},
        {"name": "fuzzymatching", "in": "query", "required": False, "schema": {"type": "boolean"}},
        {"name": "includefield", "in": "query", "required": False, "schema": {"type": "string"}},
    ]
    parameters += [
        {"name": keyword, "in": "query", "required": False, "schema": {"type": "string"}}
        for keyword in dict.fromkeys(keywords)
    ]
    return {"parameters": parameters}


# Keyword arguments of each kind of route's decorator.
STORE: RouteDoc = {
    "responses": {
        200: {"description": "Every instance was stored (or already was).", "content": _STOW},
        202: {"description": "Some instances were stored, some failed.", "content": _STOW},
        409: {"description": "No instance was stored.", "content": _STOW},
        413: _error("The body is over the service's size limit."),
        415: _error("The body is not multipart/related of application/dicom."),
    },
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "content": {'multipart/related; type="application/dicom"': _BINARY},
        }
    },
}
SEARCH_STUDIES: RouteDoc = {
    "responses": _SEARCH_RESPONSES,
    "openapi_extra": search_query(STUDY_KEYWORDS),
}
SEARCH_SERIES: RouteDoc = {
    "responses": _SEARCH_RESPONSES,
    "openapi_extra": search_query([*STUDY_KEYWORDS, *SERIES_KEYWORDS]),
}
SEARCH_INSTANCES: RouteDoc = {
    "responses": _SEARCH_RESPONSES,
    "openapi_extra": search_query([*STUDY_KEYWORDS, *SERIES_KEYWORDS, *INSTANCE_KEYWORDS]),
}
INSTANCE: RouteDoc = {
    "responses": {
        200: {
            "description": "The stored file, as received, in one part.",
            "content": {"multipart/related": _BINARY},
        },
        **_NOT_ACCEPTABLE,
    }
}
METADATA: RouteDoc = {
    "responses": {
        200: {"description": "DICOM JSON; pixel data as a BulkDataURI.", "content": _DATASETS}
    }
}
BULKDATA: RouteDoc = {
    "responses": {
        200: {
            "description": "The element's value as one application/octet-stream part.",
            "content": {"multipart/related": _BINARY},
        }
    }
}
RENDERED: RouteDoc = {
    "responses": {
        200: {
            "description": "The frame, windowed, as JPEG (default) or PNG.",
            "content": {"image/jpeg": _BINARY, "image/png": _BINARY},
        },
        **_NOT_ACCEPTABLE,
    },
    "openapi_extra": {"parameters": [_RENDERED_QUERY]},
}
