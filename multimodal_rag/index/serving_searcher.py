"""The searcher the service queries: FAISS HNSW past a size, the Lance table below it.

LanceDB stays the store of record. Measured here on 1,000,000 clustered 512-d vectors
(``python -m bench.vector_index``), Lance's own ANN index answered in about 30 ms at p50
(71 ms with a modality filter, no faster than a flat scan), outside the 10 ms goal, while
the FAISS HNSW graph rebuilt from the same table version answered in under 1.1 ms at the
same recall. So above ``faiss_threshold`` rows, queries go to FAISS graphs persisted next
to the table (rebuilt when the table's version moved on); below it, the table's exact
search is fast and always current.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from multimodal_rag.cases import SearchHit
from multimodal_rag.index.faiss_index import FaissServingIndex, HnswParams
from multimodal_rag.index.lance_index import CaseIndex, EmbeddingColumn
from multimodal_rag.index.schema import EMBEDDING_COLUMNS

DEFAULT_FAISS_THRESHOLD = 100_000


class ServingSearcher:
    """A :class:`~multimodal_rag.retrieval.Searcher` over a case index, FAISS when large.

    Args:
        case_index: The Lance case table (store of record; hits' fields come from it).
        serving_indexes: FAISS graphs per embedding column; a column without one is
            searched in the table.
    """

    def __init__(
        self,
        case_index: CaseIndex,
        serving_indexes: Mapping[EmbeddingColumn, FaissServingIndex] | None = None,
    ) -> None:
        self.case_index = case_index
        self.serving_indexes = dict(serving_indexes or {})

    @classmethod
    def open(
        cls,
        case_index: CaseIndex,
        serving_dir: Path,
        *,
        faiss_threshold: int = DEFAULT_FAISS_THRESHOLD,
        params: HnswParams | None = None,
    ) -> ServingSearcher:
        """FAISS graphs for both columns when the table has ``faiss_threshold`` rows or more.

        Graphs are loaded from ``serving_dir`` (``image_embedding.faiss``,
        ``text_embedding.faiss``), or built from the table and saved when missing, stale
        or damaged.
        """
        if len(case_index) < faiss_threshold:
            return cls(case_index)
        serving_dir.mkdir(parents=True, exist_ok=True)
        indexes = {
            column: FaissServingIndex.load_or_build(
                serving_dir / f"{column}.faiss", case_index, column=column, params=params
            )
            for column in EMBEDDING_COLUMNS
        }
        return cls(case_index, indexes)

    def search(
        self,
        vector: np.ndarray,
        *,
        column: EmbeddingColumn,
        k: int,
        where: Mapping[str, Any] | None = None,
        exclude: Mapping[str, Any] | None = None,
    ) -> list[SearchHit]:
        """The ``k`` best cases for ``vector`` in ``column``, filters applied, best first."""
        serving = self.serving_indexes.get(column)
        if serving is None:
            return self.case_index.search(vector, column=column, k=k, where=where, exclude=exclude)
        return serving.search(vector, self.case_index, k=k, where=where, exclude=exclude)
