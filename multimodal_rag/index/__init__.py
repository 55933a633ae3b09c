"""The similar-case index: LanceDB store of record, metadata filters, FAISS serving index."""

from __future__ import annotations

from multimodal_rag.index.faiss_index import FaissServingIndex, HnswParams, StaleServingIndexError
from multimodal_rag.index.filters import FILTER_COLUMNS, CaseFilter
from multimodal_rag.index.lance_index import AnnParams, CaseIndex
from multimodal_rag.index.serving_searcher import ServingSearcher

__all__ = [
    "FILTER_COLUMNS",
    "AnnParams",
    "CaseFilter",
    "CaseIndex",
    "FaissServingIndex",
    "HnswParams",
    "ServingSearcher",
    "StaleServingIndexError",
]
