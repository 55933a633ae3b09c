"""The listener's event handlers: C-ECHO, C-STORE and C-FIND, and TCP_NODELAY on each peer.

Each handler turns one DIMSE request into calls on the :mod:`serving.study_access`
protocols and their answers into DICOM status codes; nothing here knows the store or
the catalog. A handler never lets an exception escape: pynetdicom would answer with a
status of its own choosing and log the traceback, which may quote identifiers.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom.events import Event

from serving.study_access import (
    INSTANCE_KEYWORDS,
    SERIES_KEYWORDS,
    STUDY_KEYWORDS,
    IngestResult,
    InstanceSink,
    StudyQuery,
)

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
# C-STORE failures (PS3.4 B.2.3).
STORE_OUT_OF_RESOURCES = 0xA700
STORE_DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
STORE_CANNOT_UNDERSTAND = 0xC000
STORE_PROCESSING_FAILURE = 0xC001

# C-FIND statuses (PS3.4 C.4.1.1.4).
FIND_PENDING = 0xFF00
FIND_PENDING_KEYS_NOT_SUPPORTED = 0xFF01
FIND_CANCELLED = 0xFE00
FIND_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
FIND_UNABLE_TO_PROCESS = 0xC000
FIND_PROCESSING_FAILURE = 0xC001

# Attributes of the request, not of the matches: never filters, never copied into rows.
_REQUEST_KEYWORDS = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet"})
# Keys PS3.4 defines for return only; a value in a request asks for nothing.
_RETURN_ONLY_KEYWORDS = frozenset(
    {
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "NumberOfSeriesRelatedInstances",
    }
)
_INTEGER_VRS = frozenset({"US", "UL", "SS", "SL", "UV", "SV"})
_FLOAT_VRS = frozenset({"FL", "FD"})
# ErrorComment is LO: at most 64 characters of the default repertoire.
_ERROR_COMMENT_LENGTH = 64


class IdentifierError(ValueError):
    """A C-FIND identifier the listener cannot turn into a query."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class FindRequest:
    """One C-FIND identifier as a :class:`~serving.study_access.StudyQuery` call.

    Attributes:
        level: ``"STUDY"``, ``"SERIES"`` or ``"IMAGE"``.
        filters: Matching keys with a value, keyed by keyword, in the query's form.
        study_instance_uid: The one study searched (series and image levels), if given.
        series_instance_uid: The one series searched (image level), if given.
        ignored_keys: Keys with a value the listener does not match on (answered with
            the "optional keys not supported" pending status).
    """

    level: str
    filters: Mapping[str, str]
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    ignored_keys: tuple[str, ...] = ()


_LEVEL_KEYWORDS = {"STUDY": STUDY_KEYWORDS, "SERIES": SERIES_KEYWORDS, "IMAGE": INSTANCE_KEYWORDS}
# The unique keys of a level and the levels above it, which every match carries.
_UNIQUE_KEYS = {
    "STUDY": ("StudyInstanceUID",),
    "SERIES": ("StudyInstanceUID", "SeriesInstanceUID"),
    "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"),
}
# The unique keys of the levels above, which scope a search when they name one entity.
_SCOPE_KEYS = {level: keys[:-1] for level, keys in _UNIQUE_KEYS.items()}


def parse_find_identifier(identifier: Dataset) -> FindRequest:
    """The query a C-FIND identifier asks for.

    Keys with no value (or ``*``) match anything. At the series and image levels a
    single Study (and Series) Instance UID scopes the search; a list of UIDs is a filter.

    Raises:
        IdentifierError: The level is missing or not one the listener answers.
    """
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in _LEVEL_KEYWORDS:
        raise IdentifierError(
            FIND_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
            f"QueryRetrieveLevel {level or '(none)'} not answered: use STUDY/SERIES/IMAGE",
        )
    matchable = set(_LEVEL_KEYWORDS[level]) - _RETURN_ONLY_KEYWORDS
    scope: dict[str, str | None] = dict.fromkeys(("StudyInstanceUID", "SeriesInstanceUID"))
    filters: dict[str, str] = {}
    ignored: list[str] = []
    for element in identifier:
        keyword = element.keyword
        if keyword in _REQUEST_KEYWORDS or element.tag.group == 0x0000:
            continue
        if element.VR == "SQ":
            # Sequence matching is not offered: a key with items is reported as ignored.
            if element.value:
                ignored.append(keyword)
            continue
        value = _query_value(element)
        if value is None:
            continue
        if keyword in _SCOPE_KEYS[level] and "," not in value:
            scope[keyword] = value
        elif keyword in matchable:
            filters[keyword] = value
        else:
            ignored.append(keyword or str(element.tag))
    return FindRequest(
        level=level,
        filters=filters,
        study_instance_uid=scope["StudyInstanceUID"],
        series_instance_uid=scope["SeriesInstanceUID"],
        ignored_keys=tuple(ignored),
    )


def _query_value(element: DataElement) -> str | None:
    """An identifier element's value in the query's string form; ``None`` for universal."""
    value = element.value
    if value is None or value == "":
        return None
    if isinstance(value, MultiValue):
        # UID lists are comma-separated in the query contract; other lists keep DICOM's "\".
        separator = "," if element.VR == "UI" else "\\"
        text = separator.join(str(item) for item in value)
    else:
        text = str(value)
    text = text.strip()
    return None if text in ("", "*") else text


def run_find(query: StudyQuery, request: FindRequest, *, limit: int) -> list[dict[str, str]]:
    """The rows ``query`` matches for ``request``, at most ``limit``."""
    if request.level == "STUDY":
        return query.search_studies(request.filters, limit=limit)
    if request.level == "SERIES":
        return query.search_series(
            request.filters, study_instance_uid=request.study_instance_uid, limit=limit
        )
    return query.search_instances(
        request.filters,
        study_instance_uid=request.study_instance_uid,
        series_instance_uid=request.series_instance_uid,
        limit=limit,
    )


def match_identifier(identifier: Dataset, level: str, row: Mapping[str, str]) -> Dataset:
    """The response identifier for one match: the requested keys, valued from ``row``.

    Requested keys the row lacks come back empty; the unique keys of ``level`` and the
    levels above are always present.
    """
    response = Dataset()
    response.QueryRetrieveLevel = level
    for element in identifier:
        keyword = element.keyword
        if keyword in _REQUEST_KEYWORDS or element.tag.group == 0x0000:
            continue
        if element.VR == "SQ":
            response.add(DataElement(element.tag, "SQ", []))
            continue
        response.add(
            DataElement(element.tag, element.VR, _element_value(element.VR, row.get(keyword)))
        )
    for keyword in _UNIQUE_KEYS[level]:
        if keyword not in response and row.get(keyword):
            setattr(response, keyword, row[keyword])
    if any(isinstance(value, str) and not value.isascii() for value in row.values()):
        response.SpecificCharacterSet = "ISO_IR 192"
    return response


def _element_value(vr: str, text: str | None) -> Any:
    """``text`` (a row value, DICOM string form) as a value of ``vr``; empty when absent."""
    if text is None or text == "":
        return None
    if vr in _INTEGER_VRS:
        return [int(part) for part in text.split("\\")] if "\\" in text else int(text)
    if vr in _FLOAT_VRS:
        return [float(part) for part in text.split("\\")] if "\\" in text else float(text)
    return text


def _log_failure(action: str, exc: BaseException) -> None:
    """Log that ``action`` raised ``exc``: its type, and its stack at debug level.

    Never the message: a database error quotes its parameters, which may be a patient's.
    """
    logger.error("%s failed with %s", action, type(exc).__name__)
    if logger.isEnabledFor(logging.DEBUG):
        stack = "".join(traceback.format_tb(exc.__traceback__))
        logger.debug("%s failed with %s at\n%s", action, type(exc).__name__, stack)


def failure_status(status: int, comment: str) -> Dataset:
    """A status dataset carrying ``comment`` as its Error Comment (ASCII, 64 characters)."""
    dataset = Dataset()
    dataset.Status = status
    printable = "".join(
        c if c.isascii() and c.isprintable() and c != "\\" else "?" for c in comment
    )
    dataset.ErrorComment = printable[:_ERROR_COMMENT_LENGTH]
    return dataset


def store_status(result: IngestResult, requested_sop_class_uid: str) -> int | Dataset:
    """The C-STORE status for an ingest result.

    A refused object whose SOP Class differs from the one the request named gets
    "Data Set does not match SOP Class" (0xA900); any other refusal "Cannot
    understand" (0xC000). Both carry the reason.
    """
    if result.accepted:
        return SUCCESS
    mismatched = (
        result.sop_class_uid is not None and result.sop_class_uid != requested_sop_class_uid
    )
    code = STORE_DATA_SET_DOES_NOT_MATCH_SOP_CLASS if mismatched else STORE_CANNOT_UNDERSTAND
    return failure_status(code, result.reason or "refused")


class ListenerHandlers:
    """The handlers one listener binds, sharing its sink, query and limits.

    Args:
        sink: Takes each received file.
        query: Answers C-FIND; ``None`` when the listener offers no query service.
        max_find_matches: Most matches one C-FIND returns; more are dropped with a warning.
    """

    def __init__(
        self, sink: InstanceSink, query: StudyQuery | None, *, max_find_matches: int
    ) -> None:
        self._sink = sink
        self._query = query
        self._max_find_matches = max_find_matches

    def on_echo(self, event: Event) -> int:
        """C-ECHO: always success."""
        return SUCCESS

    def on_store(self, event: Event) -> int | Dataset:
        """C-STORE: hand the received file to the sink and answer its verdict.

        The file is already on disk (chunked receive), in Part 10 form with the
        file meta pynetdicom wrote from the request and the accepted transfer syntax.
        Success is answered only after the sink returns, so only once the instance is
        durable and catalogued.
        """
        path = Path(event.dataset_path)
        calling_ae = str(event.assoc.requestor.ae_title).strip()
        request = event.request
        source = f"C-STORE message {request.MessageID} from {calling_ae}"
        try:
            result = self._sink.ingest_file(
                path, source=source, received_via="c-store", calling_ae=calling_ae
            )
        except Exception as exc:  # the association must keep answering
            path.unlink(missing_ok=True)
            _log_failure(f"{source}: ingest", exc)
            code = STORE_OUT_OF_RESOURCES if isinstance(exc, OSError) else STORE_PROCESSING_FAILURE
            return failure_status(code, f"ingest failed: {type(exc).__name__}")
        if not result.accepted:
            path.unlink(missing_ok=True)
            # The reason may quote header values (names, hostile UIDs): debug level only.
            logger.warning("%s refused", source)
            logger.debug("%s refused: %s", source, result.reason)
        else:
            logger.debug("%s %s: %s", source, result.status, result.sop_instance_uid)
        return store_status(result, str(request.AffectedSOPClassUID))

    def on_find(self, event: Event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        """C-FIND: pending responses with each match, then success (or a failure)."""
        calling_ae = str(event.assoc.requestor.ae_title).strip()
        if self._query is None:
            yield failure_status(FIND_UNABLE_TO_PROCESS, "query service not configured"), None
            return
        try:
            identifier = event.identifier
            request = parse_find_identifier(identifier)
        except IdentifierError as exc:
            yield failure_status(exc.status, exc.reason), None
            return
        except Exception as exc:  # an undecodable identifier is the peer's error
            logger.warning(
                "C-FIND from %s: identifier unreadable (%s)", calling_ae, type(exc).__name__
            )
            yield failure_status(FIND_UNABLE_TO_PROCESS, "identifier could not be decoded"), None
            return
        try:
            rows = run_find(self._query, request, limit=self._max_find_matches + 1)
        except ValueError as exc:
            yield failure_status(FIND_UNABLE_TO_PROCESS, str(exc)), None
            return
        except Exception as exc:  # the association must keep answering
            _log_failure(f"C-FIND from {calling_ae}: query", exc)
            yield (
                failure_status(FIND_PROCESSING_FAILURE, f"query failed: {type(exc).__name__}"),
                None,
            )
            return
        if len(rows) > self._max_find_matches:
            logger.warning(
                "C-FIND from %s matched more than %d %s records; the rest are not returned",
                calling_ae,
                self._max_find_matches,
                request.level.lower(),
            )
            rows = rows[: self._max_find_matches]
        pending = FIND_PENDING_KEYS_NOT_SUPPORTED if request.ignored_keys else FIND_PENDING
        for row in rows:
            if event.is_cancelled:
                yield FIND_CANCELLED, None
                return
            try:
                match = match_identifier(identifier, request.level, row)
            except (TypeError, ValueError) as exc:  # a catalog value the requested VR cannot hold
                logger.error(
                    "C-FIND from %s: a match could not be encoded (%s)",
                    calling_ae,
                    type(exc).__name__,
                )
                yield failure_status(FIND_PROCESSING_FAILURE, "a match could not be encoded"), None
                return
            yield pending, match
        yield SUCCESS, None
