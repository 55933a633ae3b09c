"""The screen's results on disk: ``DIR/results/part-NNNNNN.parquet``, appended, never rewritten.

Each finished batch becomes one part, written to a hidden temporary file, fsynced and
renamed into place, so a part is either whole or absent and a killed run loses only the
batches it had not written yet. A rerun reads the study ids already recorded and skips
them. Reading deduplicates: a study found twice (a part written twice around a crash, a
failed study retried) keeps its first ``done`` row, else its first ``failed`` row.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.store import fsync_path

if TYPE_CHECKING:
    import pyarrow as pa

RESULTS_DIR = "results"
STATUSES = ("done", "failed")
ERROR_STAGES = ("discover", "decode", "preprocess", "infer")
_PART = re.compile(r"^part-(\d{6})\.parquet$")
# Column name -> Arrow type name; every row carries every column (nulls where noted).
RESULT_COLUMNS: dict[str, str] = {
    "study_id": "string",
    "patient_pseudonym": "string",
    "modality": "string",
    "site_id": "string",
    "sex": "string",
    "age_years": "float64",
    "model_name": "string",
    "model_version": "string",
    "prediction": "string",
    "probability": "float64",
    "positive_label": "string",
    "positive_probability": "float64",
    "ef_percent": "float64",
    "decode_ms": "float64",
    "infer_ms": "float64",
    "finished_at": "timestamp",
    "status": "string",
    "error": "string",
    "error_stage": "string",
    # Which Ray node decoded and which one classified the study (null when not run on Ray).
    "decode_node": "string",
    "infer_node": "string",
}


def results_schema() -> pa.Schema:
    """The Arrow schema of a results part (``finished_at`` in microseconds, UTC)."""
    import pyarrow as pa

    types = {"string": pa.string(), "float64": pa.float64(), "timestamp": pa.timestamp("us", "UTC")}
    return pa.schema(
        [
            pa.field(name, types[kind], nullable=name not in ("study_id", "status"))
            for name, kind in RESULT_COLUMNS.items()
        ]
    )


def results_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Result rows as a table of :func:`results_schema`: missing keys and NaN become null.

    Raises:
        ValueError: A row without ``study_id``, or with a status not in ``STATUSES``.
    """
    import pyarrow as pa

    clean = [_clean_row(row, index) for index, row in enumerate(rows)]
    return pa.Table.from_pylist(clean, schema=results_schema())


def _clean_row(row: Mapping[str, Any], index: int) -> dict[str, Any]:
    if not row.get("study_id"):
        raise ValueError(f'Argument "rows" item {index} has no study_id')
    if row.get("status") not in STATUSES:
        raise ValueError(
            f'Argument "rows" item {index} has status {row.get("status")!r}; use one of {STATUSES}'
        )
    clean: dict[str, Any] = {}
    for name, kind in RESULT_COLUMNS.items():
        value: Any = row.get(name)
        if _missing(value):
            value = None
        elif kind == "float64":
            value = float(value)
        elif kind == "string":
            value = str(value)
        elif kind == "timestamp":
            value = _utc(value)
        clean[name] = value
    return clean


def _missing(value: Any) -> bool:
    """None, NaN, pandas' NA/NaT."""
    if value is None:
        return True
    try:
        return bool(value != value)
    except (TypeError, ValueError):  # pandas.NA refuses bool()
        return True


def _utc(value: Any) -> datetime:
    if hasattr(value, "to_pydatetime"):  # pandas.Timestamp
        value = value.to_pydatetime()
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise ValueError(f"finished_at must be a datetime, got {type(value).__name__}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ResultsStore:
    """The Parquet parts under ``out_dir/results``.

    Args:
        out_dir: The screen's output folder (created when a part is first written).
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.folder = self.out_dir / RESULTS_DIR

    def parts(self) -> list[Path]:
        """The finished parts, in the order they were written."""
        if not self.folder.is_dir():
            return []
        return sorted(path for path in self.folder.iterdir() if _PART.match(path.name))

    def append(self, rows: Sequence[Mapping[str, Any]]) -> Path | None:
        """Write ``rows`` as the next part (atomically); None when there are no rows."""
        import pyarrow.parquet as pq

        if not rows:
            return None
        table = results_table(rows)
        self.folder.mkdir(parents=True, exist_ok=True)
        parts = self.parts()
        number = _part_number(parts[-1]) + 1 if parts else 0
        final = self.folder / f"part-{number:06d}.parquet"
        temporary = self.folder / f".{final.name}.tmp"
        with temporary.open("wb") as handle:
            pq.write_table(table, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, final)
        fsync_path(self.folder)  # the rename is durable
        return final

    def remove_partial(self) -> list[Path]:
        """Delete temporary files a killed run left behind; return them."""
        if not self.folder.is_dir():
            return []
        left = [path for path in self.folder.glob(".part-*.tmp") if path.is_file()]
        for path in left:
            path.unlink()
        return left

    def recorded(self, statuses: Iterable[str] = STATUSES) -> set[str]:
        """Study ids with a row of one of ``statuses`` in any part."""
        import pyarrow.parquet as pq

        wanted = set(statuses)
        found: set[str] = set()
        for part in self.parts():
            table = pq.read_table(part, columns=["study_id", "status"])
            for study_id, status in zip(
                table.column("study_id").to_pylist(),
                table.column("status").to_pylist(),
                strict=True,
            ):
                if status in wanted:
                    found.add(str(study_id))
        return found

    def read(self) -> pa.Table:
        """Every study once: its first ``done`` row, else its first ``failed`` row."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        parts = self.parts()
        if not parts:
            return results_schema().empty_table()
        table = pa.concat_tables([pq.read_table(part, schema=results_schema()) for part in parts])
        statuses = table.column("status").to_pylist()
        chosen: dict[str, int] = {}
        for position, study_id in enumerate(table.column("study_id").to_pylist()):
            kept = chosen.get(study_id)
            if kept is None or (statuses[position] == "done" and statuses[kept] != "done"):
                chosen[study_id] = position
        return table.take(sorted(chosen.values()))


def _part_number(path: Path) -> int:
    match = _PART.match(path.name)
    if match is None:
        raise ValueError(f"{path} is not a results part")
    return int(match.group(1))
