"""FAISS HNSW serving index, rebuilt from the Lance table (the store of record).

When LanceDB's own ANN index is too slow for the serving goal, queries go to an HNSW graph
(M=32, inner product on normalised vectors, so scores are cosines) built from one column of
the case table. The graph, the case ids and the filterable columns are saved in one ``.npz``
file, written to a temporary file, fsynced and renamed into place; a JSON sidecar, written
the same way after it, records the file's sha256 and the table version it was built from.
:meth:`FaissServingIndex.load_or_build` checks both and rebuilds a stale or damaged index.

Filters are never given up: the same :class:`~multimodal_rag.index.filters.CaseFilter` as
Lance's SQL becomes a row mask; few matching rows are searched exactly, many through an
HNSW search restricted to the mask (a FAISS id selector).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from multimodal_rag.cases import SearchHit, normalised_embedding
from multimodal_rag.index.filters import FILTER_COLUMNS, CaseFilter
from multimodal_rag.index.lance_index import CaseIndex, EmbeddingColumn
from multimodal_rag.index.schema import HIT_COLUMNS

logger = logging.getLogger(__name__)
FORMAT_VERSION = 1
_HASH_CHUNK = 1 << 20
_MASK_CACHE = 16


class StaleServingIndexError(RuntimeError):
    """The saved serving index does not match its checksum or the table's version."""


@dataclass(frozen=True)
class HnswParams:
    """HNSW graph parameters: ``m`` links per node, build and search breadth."""

    m: int = 32
    ef_construction: int = 100
    ef_search: int = 64
    # At most this many matching rows: search them exactly instead of through the graph.
    exact_below: int = 4_096


class FaissServingIndex:
    """An HNSW index over one embedding column of a :class:`CaseIndex` table version."""

    def __init__(
        self,
        index: Any,
        case_ids: np.ndarray,
        columns: dict[str, np.ndarray],
        nulls: dict[str, np.ndarray],
        *,
        column: EmbeddingColumn,
        table_version: int,
        params: HnswParams,
    ) -> None:
        """Use :meth:`build` or :meth:`load_or_build`."""
        self._index = index
        self.case_ids = case_ids
        self._columns = columns
        self._nulls = nulls
        self.column = column
        self.table_version = table_version
        self.params = params
        self._index.hnsw.efSearch = params.ef_search
        self._masks: dict[CaseFilter, np.ndarray] = {}

    @classmethod
    def build(
        cls,
        case_index: CaseIndex,
        *,
        column: EmbeddingColumn = "image_embedding",
        params: HnswParams | None = None,
    ) -> FaissServingIndex:
        """Build the graph from every row of ``case_index`` at its current version."""
        import faiss

        params = params or HnswParams()
        version = case_index.version
        rows = case_index.scan(["case_id", column, *_filter_columns()])
        vectors = (
            rows[column].combine_chunks().flatten().to_numpy().astype(np.float32, copy=False)
        ).reshape(rows.num_rows, case_index.embedding_dim)
        index = faiss.IndexHNSWFlat(case_index.embedding_dim, params.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
        if rows.num_rows:
            index.add(np.ascontiguousarray(vectors))
        columns, nulls = {}, {}
        for name in _filter_columns():
            array = rows[name]
            nulls[name] = array.is_null().to_numpy(zero_copy_only=False)
            filler: Any = 0 if FILTER_COLUMNS[name] is int else ""
            values = array.fill_null(filler).to_numpy(zero_copy_only=False)
            columns[name] = values.astype(np.int64 if filler == 0 else str)
        case_ids = np.asarray(rows["case_id"].to_pylist(), dtype=str)
        return cls(
            index,
            case_ids,
            columns,
            nulls,
            column=column,
            table_version=version,
            params=params,
        )

    @classmethod
    def load(cls, path: Path, case_index: CaseIndex) -> FaissServingIndex:
        """Load a saved index, checking its checksum and that the table has not moved on.

        Raises:
            StaleServingIndexError: Missing sidecar, checksum mismatch or another table version.
        """
        import faiss

        path = Path(path)
        sidecar = _sidecar(path)
        if not path.exists() or not sidecar.exists():
            raise StaleServingIndexError(f"{path}: index or sidecar {sidecar.name} missing")
        meta = json.loads(sidecar.read_text())
        digest = _sha256(path)
        if meta.get("sha256") != digest or meta.get("format") != FORMAT_VERSION:
            raise StaleServingIndexError(f"{path}: sha256 {digest} != sidecar {meta.get('sha256')}")
        if meta.get("table_version") != case_index.version:
            raise StaleServingIndexError(
                f"{path}: built from table version {meta.get('table_version')}, "
                f"the table is at {case_index.version}"
            )
        with np.load(path, allow_pickle=False) as data:
            index = faiss.deserialize_index(data["index"])
            columns = {name: data[f"col_{name}"] for name in _filter_columns()}
            nulls = {name: data[f"null_{name}"] for name in _filter_columns()}
            case_ids = data["case_ids"]
        return cls(
            index,
            case_ids,
            columns,
            nulls,
            column=meta["column"],
            table_version=int(meta["table_version"]),
            params=HnswParams(**meta["params"]),
        )

    @classmethod
    def load_or_build(
        cls,
        path: Path,
        case_index: CaseIndex,
        *,
        column: EmbeddingColumn = "image_embedding",
        params: HnswParams | None = None,
    ) -> FaissServingIndex:
        """Load the saved index, or rebuild and save it when it is missing, stale or damaged."""
        try:
            loaded = cls.load(path, case_index)
            if loaded.column == column:
                return loaded
            logger.warning(
                "Serving index %s holds %s, rebuilding for %s", path, loaded.column, column
            )
        except StaleServingIndexError as error:
            logger.warning("Rebuilding serving index: %s", error)
        built = cls.build(case_index, column=column, params=params)
        built.save(path)
        return built

    def save(self, path: Path) -> None:
        """Write the index atomically, then its sidecar (sha256, table version, column)."""
        import faiss

        path = Path(path)
        arrays: dict[str, Any] = {
            "index": faiss.serialize_index(self._index),
            "case_ids": self.case_ids,
            **{f"col_{name}": values for name, values in self._columns.items()},
            **{f"null_{name}": values for name, values in self._nulls.items()},
        }
        _atomic_write(path, lambda handle: np.savez(handle, **arrays))
        meta = {
            "format": FORMAT_VERSION,
            "sha256": _sha256(path),
            "table_version": self.table_version,
            "column": self.column,
            "rows": len(self.case_ids),
            "params": self.params.__dict__,
        }
        payload = json.dumps(meta, indent=2).encode()
        _atomic_write(_sidecar(path), lambda handle: handle.write(payload))

    def __len__(self) -> int:
        return len(self.case_ids)

    def search_ids(
        self,
        vector: np.ndarray,
        *,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        exclude: Mapping[str, Any] | None = None,
    ) -> list[tuple[str, float]]:
        """``(case_id, cosine)`` of the ``k`` nearest rows matching the filter, best first."""
        import faiss

        if k < 1:
            raise ValueError(f'Argument "k" must be positive, got {k}')
        query = normalised_embedding(vector, "vector")[None, :]
        case_filter = CaseFilter.create(where, exclude)
        if len(self.case_ids) == 0:
            return []
        if case_filter.is_empty:
            scores, positions = self._index.search(query, k)
        else:
            mask = self._mask(case_filter)
            allowed = np.flatnonzero(mask)
            if allowed.size == 0:
                return []
            if allowed.size <= self.params.exact_below:
                scores, positions = self._exact(query, allowed, k)
            else:
                bitmap = np.packbits(mask, bitorder="little")
                selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bitmap))
                search_params = faiss.SearchParametersHNSW(  # type: ignore[attr-defined]
                    sel=selector, efSearch=max(self.params.ef_search, k)
                )
                scores, positions = self._index.search(query, k, params=search_params)
        return [
            (str(self.case_ids[p]), float(s))
            for s, p in zip(scores[0], positions[0], strict=True)
            if p >= 0
        ]

    def search(
        self,
        vector: np.ndarray,
        case_index: CaseIndex,
        *,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        exclude: Mapping[str, Any] | None = None,
    ) -> list[SearchHit]:
        """Hits like :meth:`CaseIndex.search`, their fields read from the Lance table."""
        found = self.search_ids(vector, k=k, where=where, exclude=exclude)
        rows = {
            row["case_id"]: row
            for row in case_index.get([c for c, _ in found], HIT_COLUMNS).to_pylist()
        }
        name = "image" if self.column == "image_embedding" else "report"
        return [
            SearchHit(
                case_id=case_id,
                score=score,
                rank=rank,
                modality=rows[case_id]["modality"],
                label=rows[case_id]["label"],
                site_id=rows[case_id]["site_id"],
                report_text=rows[case_id]["report_text"],
                why=f"{name} {score:.2f}",
            )
            for rank, (case_id, score) in enumerate(found, start=1)
            if case_id in rows
        ]

    def _mask(self, case_filter: CaseFilter) -> np.ndarray:
        """The filter's row mask; the last few are cached (a service repeats its filters)."""
        mask = self._masks.pop(case_filter, None)
        if mask is None:
            mask = case_filter.mask(self._columns, self._nulls)
        self._masks[case_filter] = mask
        while len(self._masks) > _MASK_CACHE:
            del self._masks[next(iter(self._masks))]
        return mask

    def _exact(
        self, query: np.ndarray, allowed: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        scores = self._vectors()[allowed] @ query[0]
        top = np.argsort(-scores, kind="stable")[:k]
        return scores[top][None, :], allowed[top][None, :]

    def _vectors(self) -> np.ndarray:
        """The stored vectors (a view of the flat storage, no copy)."""
        import faiss

        storage = faiss.downcast_index(self._index.storage)
        return faiss.rev_swig_ptr(
            storage.get_xb(),  # type: ignore[attr-defined]
            storage.ntotal * storage.d,
        ).reshape(storage.ntotal, storage.d)


def _filter_columns() -> list[str]:
    return [name for name in FILTER_COLUMNS if name != "case_id"]


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write(path: Path, write: Any) -> None:
    """Write through ``write(handle)`` to a temporary file, fsync, rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    # The rename is durable only once the directory entry is on disk.
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
