"""One de-identified case of the LanceDB case index, by id: detail and thumbnail.

The ingress reads the index the ``SimilarCases`` deployment searches (LanceDB tables may
be read by several processes). Only the columns a reader may see are ever selected:
:data:`DETAIL_COLUMNS` leaves out the patient pseudonym and the embeddings. The index is
opened on first use, so the app starts without importing LanceDB.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.settings import Settings

if TYPE_CHECKING:
    from multimodal_rag.index import CaseIndex

CASE_INDEX_DIR = "case_index"
# What the case detail shows; never patient_pseudonym (nor embeddings).
DETAIL_COLUMNS = (
    "case_id",
    "modality",
    "label",
    "site_id",
    "study_year",
    "ef_percent",
    "report_text",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class IndexCaseLookup:
    """The ``CaseLookup`` of the HTTP app over the case index at ``uri``.

    Args:
        uri: The index folder (``{data_dir}/case_index``) or ``memory://`` URI.
    """

    def __init__(self, uri: str | Path) -> None:
        self._uri = uri
        self._index: CaseIndex | None = None
        self._lock = threading.Lock()

    def case_detail(self, case_id: str) -> dict[str, Any] | None:
        """The case's de-identified fields, or ``None`` when the index has no such case."""
        rows = self._table().get([case_id], columns=list(DETAIL_COLUMNS)).to_pylist()
        return dict(rows[0]) if rows else None

    def thumbnail_png(self, case_id: str) -> bytes | None:
        """The case's thumbnail, or ``None`` without case or PNG thumbnail."""
        rows = self._table().get([case_id], columns=["thumbnail_png"]).to_pylist()
        png = rows[0]["thumbnail_png"] if rows else None
        return bytes(png) if png and bytes(png[:8]) == PNG_SIGNATURE else None

    def _table(self) -> CaseIndex:
        with self._lock:
            if self._index is None:
                from multimodal_rag.index import CaseIndex

                self._index = CaseIndex.open(self._uri)
            return self._index


def open_case_lookup(settings: Settings) -> IndexCaseLookup | None:
    """The lookup over ``{data_dir}/case_index``, or ``None`` when there is no index."""
    index_dir = settings.data_dir / CASE_INDEX_DIR
    return IndexCaseLookup(index_dir) if index_dir.is_dir() else None
