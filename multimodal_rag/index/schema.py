"""The case table's Arrow schema and conversions between cases, rows and hits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from multimodal_rag.cases import DeidentifiedCase, SearchHit

EMBEDDING_COLUMNS: tuple[Literal["image_embedding", "text_embedding"], ...] = (
    "image_embedding",
    "text_embedding",
)
# What a hit needs; thumbnails and embeddings stay in the table.
HIT_COLUMNS = ["case_id", "modality", "label", "site_id", "report_text"]
_WHY_NAMES = {"image_embedding": "image", "text_embedding": "report"}


def case_schema(embedding_dim: int) -> pa.Schema:
    """One row per case; embeddings are fixed-size float32 lists of ``embedding_dim``."""
    vector = pa.list_(pa.float32(), embedding_dim)
    return pa.schema(
        [
            pa.field("case_id", pa.string(), nullable=False),
            pa.field("patient_pseudonym", pa.string(), nullable=False),
            pa.field("modality", pa.string(), nullable=False),
            pa.field("label", pa.string()),
            pa.field("site_id", pa.string(), nullable=False),
            pa.field("study_year", pa.int32()),
            pa.field("report_text", pa.string(), nullable=False),
            pa.field("ef_percent", pa.float64()),
            pa.field("thumbnail_png", pa.binary(), nullable=False),
            pa.field("image_embedding", vector, nullable=False),
            pa.field("text_embedding", vector, nullable=False),
        ]
    )


def embedding_dim_of(schema: pa.Schema) -> int:
    """The embedding length a case table was created with."""
    return int(schema.field("image_embedding").type.list_size)


def cases_to_table(cases: Sequence[DeidentifiedCase], embedding_dim: int) -> pa.Table:
    """Arrow rows of ``cases``; refuses anything that is not a :class:`DeidentifiedCase`.

    Raises:
        TypeError: An item is not a ``DeidentifiedCase`` (only de-identified cases may enter).
        ValueError: Duplicate case ids, or an embedding of the wrong length.
    """
    seen: set[str] = set()
    for position, case in enumerate(cases):
        # An exact type check: a look-alike class or subclass is not a de-identified case.
        if type(case) is not DeidentifiedCase:
            raise TypeError(
                f"The case index accepts only DeidentifiedCase, got {type(case).__name__} "
                f"at position {position}"
            )
        if case.case_id in seen:
            raise ValueError(f"Case {case.case_id!r} appears twice in one batch")
        seen.add(case.case_id)
        for column in EMBEDDING_COLUMNS:
            length = getattr(case, column).shape[0]
            if length != embedding_dim:
                raise ValueError(
                    f"Case {case.case_id!r}: {column} has length {length}, "
                    f"the index holds {embedding_dim}"
                )
    columns: dict[str, Any] = {
        name: [getattr(case, name) for case in cases]
        for name in (
            "case_id", "patient_pseudonym", "modality", "label", "site_id", "study_year",
            "report_text", "ef_percent", "thumbnail_png",
        )
    }  # fmt: skip
    for column in EMBEDDING_COLUMNS:
        flat = (
            np.concatenate([getattr(case, column) for case in cases])
            if cases
            else np.zeros(0, np.float32)
        )
        columns[column] = pa.FixedSizeListArray.from_arrays(
            pa.array(flat, type=pa.float32()), embedding_dim
        )
    return pa.table(columns, schema=case_schema(embedding_dim))


def rows_to_hits(rows: pa.Table, column: str) -> list[SearchHit]:
    """Hits from a Lance result sorted by distance; ``dot`` distance is ``1 - cosine``."""
    name = _WHY_NAMES[column]
    hits = []
    for rank, row in enumerate(rows.to_pylist(), start=1):
        score = 1.0 - float(row["_distance"])
        hits.append(
            SearchHit(
                case_id=row["case_id"],
                score=score,
                rank=rank,
                modality=row["modality"],
                label=row["label"],
                site_id=row["site_id"],
                report_text=row["report_text"],
                why=f"{name} {score:.2f}",
            )
        )
    return hits
