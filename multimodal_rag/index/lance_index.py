"""The similar-case index: a LanceDB table of de-identified cases, the store of record.

Embedded LanceDB under ``{data_dir}/case_index`` (or any URI, ``memory://`` in tests), one
table ``cases``. Below ``ann_threshold`` rows a search is exact (a flat scan); once the
table passes it, an ANN index is built on both embedding columns, and rebuilt when the rows
added since outgrow a fifth of those indexed (rows not yet in the index are still searched,
by a flat scan of the new fragments). Every write makes a new table version; old versions
stay readable through :meth:`CaseIndex.checkout`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from multimodal_rag.cases import DeidentifiedCase, SearchHit, normalised_embedding
from multimodal_rag.index.filters import CaseFilter, in_list_sql
from multimodal_rag.index.schema import (
    EMBEDDING_COLUMNS,
    HIT_COLUMNS,
    case_schema,
    cases_to_table,
    embedding_dim_of,
    rows_to_hits,
)

TABLE_NAME = "cases"
EmbeddingColumn = Literal["image_embedding", "text_embedding"]
AnnIndexType = Literal["IVF_HNSW_SQ", "IVF_PQ"]
_REINDEX_FRACTION = 0.2
_ID_CHUNK = 1_000


@dataclass(frozen=True)
class AnnParams:
    """How the ANN index is built and searched.

    Attributes:
        index_type: ``IVF_HNSW_SQ`` (HNSW graph per IVF partition, 8-bit scalar quantised) or
            ``IVF_PQ`` (product quantised).
        rows_per_partition: IVF partitions are rows / this, at least 1.
        nprobes: IVF partitions searched per query.
        refine_factor: Candidates re-scored on the full vectors, as a multiple of k.
        ef: HNSW search breadth (IVF_HNSW_SQ only).
        num_sub_vectors: PQ sub-vectors (IVF_PQ only); the dimension must divide by it.
    """

    index_type: AnnIndexType = "IVF_HNSW_SQ"
    rows_per_partition: int = 250_000
    nprobes: int = 8
    refine_factor: int | None = 4
    ef: int = 100
    num_sub_vectors: int = 64


class CaseIndex:
    """De-identified cases in a LanceDB table, searchable by image or report embedding."""

    def __init__(
        self,
        db: Any,
        table: Any,
        *,
        embedding_dim: int,
        ann_threshold: int,
        ann: AnnParams,
        read_only: bool = False,
    ) -> None:
        """Use :meth:`open`; this wraps an open LanceDB connection and its case table."""
        self._db = db
        self._table = table
        self.embedding_dim = embedding_dim
        self.ann_threshold = ann_threshold
        self.ann = ann
        self.read_only = read_only

    @classmethod
    def open(
        cls,
        uri: str | Path,
        *,
        embedding_dim: int | None = None,
        ann_threshold: int = 20_000,
        ann: AnnParams | None = None,
    ) -> CaseIndex:
        """Open (or create) the case table at ``uri``.

        Args:
            uri: A directory (``{data_dir}/case_index``) or ``memory://``.
            embedding_dim: Length of both embeddings; must match an existing table.
                ``None`` opens an existing table for reading whatever its length.
            ann_threshold: Row count from which an ANN index is built; below it, exact search.
            ann: ANN index and search parameters.

        Raises:
            ValueError: ``embedding_dim`` or ``ann_threshold`` invalid, the existing table
                was created with another embedding length, or no table exists and
                ``embedding_dim`` is ``None``.
        """
        import lancedb

        if embedding_dim is not None and embedding_dim < 1:
            raise ValueError(f'Argument "embedding_dim" must be positive, got {embedding_dim}')
        if ann_threshold < 1:
            raise ValueError(f'Argument "ann_threshold" must be positive, got {ann_threshold}')
        db = lancedb.connect(str(uri))
        if TABLE_NAME in db.list_tables().tables:
            table = db.open_table(TABLE_NAME)
            existing = embedding_dim_of(table.schema)
            if embedding_dim is not None and existing != embedding_dim:
                raise ValueError(
                    f"The case index at {uri} holds {existing}-d embeddings, "
                    f'argument "embedding_dim" is {embedding_dim}'
                )
            embedding_dim = existing
        elif embedding_dim is None:
            raise ValueError(f"No case index at {uri}; build one with mmdx index")
        else:
            table = db.create_table(TABLE_NAME, schema=case_schema(embedding_dim))
        return cls(
            db,
            table,
            embedding_dim=embedding_dim,
            ann_threshold=ann_threshold,
            ann=ann or AnnParams(),
        )

    # Reading -------------------------------------------------------------------------

    @property
    def version(self) -> int:
        """The table version this index reads (each write adds one)."""
        return int(self._table.version)

    def list_versions(self) -> list[int]:
        """Every version of the table still stored, oldest first."""
        return [int(v["version"]) for v in self._table.list_versions()]

    def __len__(self) -> int:
        return int(self._table.count_rows())

    def count(self, where: Mapping[str, Any] | None = None) -> int:
        """Rows matching ``where`` (see :mod:`multimodal_rag.index.filters`)."""
        return int(self._table.count_rows(CaseFilter.create(where).to_sql()))

    def has_ann_index(self, column: EmbeddingColumn = "image_embedding") -> bool:
        """Whether ``column`` has an ANN index."""
        return any(column in index.columns for index in self._table.list_indices())

    def search(
        self,
        vector: np.ndarray,
        *,
        column: EmbeddingColumn = "image_embedding",
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        exclude: Mapping[str, Any] | None = None,
        exact: bool = False,
    ) -> list[SearchHit]:
        """The ``k`` cases whose ``column`` embedding is closest (cosine) to ``vector``.

        Args:
            vector: Query embedding (normalised here).
            column: ``"image_embedding"`` or ``"text_embedding"``.
            k: Number of hits.
            where: Keep only cases matching every entry, e.g. ``{"modality": "MR"}``.
            exclude: Drop cases matching any entry, e.g. ``{"patient_pseudonym": "MMDX-..."}``.
            exact: Scan every row even when an ANN index exists.

        Returns:
            Hits, best first, ranks from 1; filters apply before the top k is taken.
        """
        query = self._query(vector, column, k, CaseFilter.create(where, exclude), exact)
        return rows_to_hits(query.select([*HIT_COLUMNS, "_distance"]).to_arrow(), column)

    def search_ids(
        self,
        vector: np.ndarray,
        *,
        column: EmbeddingColumn = "image_embedding",
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        exact: bool = False,
    ) -> list[str]:
        """Case ids of the ``k`` nearest cases only (no other columns read)."""
        query = self._query(vector, column, k, CaseFilter.create(where), exact)
        return [str(v) for v in query.select(["case_id", "_distance"]).to_arrow()["case_id"]]

    def get(self, case_ids: Sequence[str], columns: Sequence[str] | None = None) -> pa.Table:
        """Rows of ``case_ids`` (all columns unless ``columns``), in no particular order."""
        names = list(columns) if columns is not None else self._table.schema.names
        parts = [
            self._table.search()
            .where(in_list_sql("case_id", list(case_ids[i : i + _ID_CHUNK])))
            .select(names)
            .limit(None)
            .to_arrow()
            for i in range(0, len(case_ids), _ID_CHUNK)
        ]
        return pa.concat_tables(parts) if parts else self._table.schema.empty_table().select(names)

    def scan(self, columns: Sequence[str]) -> pa.Table:
        """Every row's ``columns`` (for building serving indexes and evaluation)."""
        return self._table.search().select(list(columns)).limit(None).to_arrow()

    # Writing -------------------------------------------------------------------------

    def add(self, cases: Sequence[DeidentifiedCase]) -> int:
        """Insert new cases; returns the new version.

        Raises:
            TypeError: An item is not a :class:`DeidentifiedCase`.
            ValueError: A case id is already in the index or twice in ``cases``.
        """
        self._check_writable()
        rows = cases_to_table(list(cases), self.embedding_dim)
        if rows.num_rows == 0:
            return self.version
        present = self.get(rows["case_id"].to_pylist(), ["case_id"])["case_id"].to_pylist()
        if present:
            raise ValueError(f"Cases already in the index (use upsert): {sorted(present)[:5]}")
        self._table.add(rows)
        self._maintain_ann_index()
        return self.version

    def upsert(self, cases: Sequence[DeidentifiedCase]) -> int:
        """Insert new cases and replace those whose ``case_id`` exists; returns the version."""
        self._check_writable()
        rows = cases_to_table(list(cases), self.embedding_dim)
        if rows.num_rows == 0:
            return self.version
        (
            self._table.merge_insert("case_id")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(rows)
        )
        self._maintain_ann_index()
        return self.version

    def delete(self, case_ids: Iterable[str]) -> int:
        """Delete cases by id (unknown ids are ignored); returns the new version."""
        self._check_writable()
        ids = list(case_ids)
        for start in range(0, len(ids), _ID_CHUNK):
            self._table.delete(in_list_sql("case_id", ids[start : start + _ID_CHUNK]))
        return self.version

    def checkout(self, version: int) -> CaseIndex:
        """A read-only view of the index as it was at ``version``.

        Raises:
            ValueError: The version does not exist.
        """
        if version not in self.list_versions():
            raise ValueError(f"No version {version}; stored: {self.list_versions()}")
        table = self._db.open_table(TABLE_NAME)
        table.checkout(version)
        return CaseIndex(
            self._db,
            table,
            embedding_dim=self.embedding_dim,
            ann_threshold=self.ann_threshold,
            ann=self.ann,
            read_only=True,
        )

    def restore(self, version: int) -> int:
        """Make ``version``'s content the latest version again (a new version); returns it."""
        self._check_writable()
        self._table.restore(version)
        return self.version

    def build_ann_index(self, columns: Sequence[EmbeddingColumn] = EMBEDDING_COLUMNS) -> None:
        """Build (or rebuild) the ANN index on ``columns`` (both embeddings) now."""
        from lancedb.index import Bitmap, BTree, HnswSq, IvfPq

        self._check_writable()
        rows = len(self)
        partitions = max(1, rows // self.ann.rows_per_partition)
        config: Any
        if self.ann.index_type == "IVF_PQ":
            # Normalised vectors: dot is cosine.
            config = IvfPq(
                distance_type="dot",
                num_partitions=partitions,
                num_sub_vectors=self.ann.num_sub_vectors,
            )
        else:
            config = HnswSq(distance_type="dot", num_partitions=partitions)
        for column in columns:
            self._table.create_index(column, config=config, replace=True)
        # Lookups, deletes and upserts by case id; prefilters on the metadata columns
        # (a bitmap per value for the few-valued ones) instead of a scan per query.
        self._table.create_index("case_id", config=BTree(), replace=True)
        for name in ("modality", "label", "site_id"):
            self._table.create_index(name, config=Bitmap(), replace=True)
        self._table.create_index("study_year", config=BTree(), replace=True)

    # Internals -----------------------------------------------------------------------

    def _query(
        self, vector: np.ndarray, column: str, k: int, case_filter: CaseFilter, exact: bool
    ) -> Any:
        if column not in EMBEDDING_COLUMNS:
            raise ValueError(
                f'Argument "column" must be one of {EMBEDDING_COLUMNS}, got {column!r}'
            )
        if k < 1:
            raise ValueError(f'Argument "k" must be positive, got {k}')
        query_vector = normalised_embedding(vector, "vector")
        if query_vector.shape[0] != self.embedding_dim:
            raise ValueError(
                f'Argument "vector" must have length {self.embedding_dim}, '
                f"got {query_vector.shape[0]}"
            )
        query = (
            self._table.search(query_vector, vector_column_name=column)
            .distance_type("dot")
            .limit(k)
        )
        sql = case_filter.to_sql()
        if sql is not None:
            # Prefilter: the top k is taken among matching rows, never fewer than k hits.
            query = query.where(sql, prefilter=True)
        if exact:
            return query.bypass_vector_index()
        query = query.nprobes(self.ann.nprobes)
        if self.ann.index_type == "IVF_HNSW_SQ":
            query = query.ef(max(self.ann.ef, k))
        if self.ann.refine_factor:
            query = query.refine_factor(self.ann.refine_factor)
        return query

    def _maintain_ann_index(self) -> None:
        """Build the ANN index past the threshold; rebuild when many rows are unindexed."""
        rows = len(self)
        if rows < self.ann_threshold:
            return
        indexed = self._indexed_rows()
        if indexed is None or rows - indexed > _REINDEX_FRACTION * max(indexed, 1):
            self.build_ann_index()

    def _indexed_rows(self) -> int | None:
        for index in self._table.list_indices():
            if "image_embedding" in index.columns:
                stats = self._table.index_stats(index.name)
                return int(stats.num_indexed_rows) if stats is not None else 0
        return None

    def _check_writable(self) -> None:
        if self.read_only:
            raise ValueError("This case index is a read-only checkout of an old version")
