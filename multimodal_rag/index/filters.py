"""Metadata filters of the case index: one validated form, rendered as SQL or as a row mask.

A filter is a mapping from a column to a value: a scalar means equality, a list, tuple or
set means membership, ``None`` means the column is empty. ``where`` keeps the rows that
match every entry; ``exclude`` drops the rows that match any entry (rows whose column is
empty are kept, so excluding a label never drops unlabelled cases).

Columns are checked against :data:`FILTER_COLUMNS` and values against the column's type
before anything is rendered; strings become SQL literals with quotes doubled, so a value
can never end the literal and add SQL of its own. Lance (SQL) and FAISS (mask over
in-memory columns) apply the same :class:`CaseFilter`, so the two serving paths agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

# Filterable columns and the Python type of their values.
FILTER_COLUMNS: dict[str, type] = {
    "case_id": str,
    "patient_pseudonym": str,
    "modality": str,
    "label": str,
    "site_id": str,
    "study_year": int,
}
_MAX_VALUES = 10_000

Scalar = str | int


@dataclass(frozen=True)
class Condition:
    """One validated entry: ``column`` in ``values`` (``None`` in values means empty)."""

    column: str
    values: tuple[Scalar | None, ...]


@dataclass(frozen=True)
class CaseFilter:
    """Validated ``where`` (all must hold) and ``exclude`` (none may hold) conditions."""

    where: tuple[Condition, ...] = ()
    exclude: tuple[Condition, ...] = ()

    @classmethod
    def create(
        cls, where: Mapping[str, Any] | None = None, exclude: Mapping[str, Any] | None = None
    ) -> CaseFilter:
        """Validate ``where`` and ``exclude`` mappings.

        Raises:
            ValueError: Unknown column, empty value list or a value of the wrong type.
        """
        return cls(
            where=_conditions(where or {}, "where"), exclude=_conditions(exclude or {}, "exclude")
        )

    @property
    def is_empty(self) -> bool:
        return not self.where and not self.exclude

    def to_sql(self) -> str | None:
        """The filter as a SQL predicate for Lance, or ``None`` when it keeps every row."""
        parts = [_condition_sql(c) for c in self.where]
        parts += [f"NOT ({_condition_sql(c, null_matches=False)})" for c in self.exclude]
        return " AND ".join(f"({part})" for part in parts) if parts else None

    def mask(
        self, columns: Mapping[str, np.ndarray], nulls: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        """Boolean mask of the rows kept, over in-memory ``columns`` and their null masks."""
        size = len(next(iter(columns.values())))
        keep = np.ones(size, dtype=bool)
        for condition in self.where:
            keep &= _condition_mask(condition, columns, nulls)
        for condition in self.exclude:
            keep &= ~_condition_mask(condition, columns, nulls)
        return keep


def sql_literal(value: Scalar) -> str:
    """``value`` as a SQL literal: integers as digits, strings quoted with quotes doubled."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"Filter values must be str or int, got {type(value).__name__}")
    if isinstance(value, int):
        return str(int(value))
    return "'" + value.replace("'", "''") + "'"


def in_list_sql(column: str, values: list[str]) -> str:
    """``column IN (...)`` for a checked column and quoted values (deletes, lookups)."""
    if column not in FILTER_COLUMNS:
        raise ValueError(f"Column must be one of {sorted(FILTER_COLUMNS)}, got {column!r}")
    return f"{column} IN ({', '.join(sql_literal(_checked_str(v, column)) for v in values)})"


def _conditions(mapping: Mapping[str, Any], argument: str) -> tuple[Condition, ...]:
    if not isinstance(mapping, Mapping):
        raise ValueError(f'Argument "{argument}" must be a mapping, got {type(mapping).__name__}')
    conditions = []
    for column, raw in mapping.items():
        if column not in FILTER_COLUMNS:
            raise ValueError(
                f'Argument "{argument}" keys must be in {sorted(FILTER_COLUMNS)}, got {column!r}'
            )
        values = tuple(raw) if isinstance(raw, list | tuple | set | frozenset) else (raw,)
        if not values or len(values) > _MAX_VALUES:
            raise ValueError(
                f'Argument "{argument}[{column!r}]" must hold 1 to {_MAX_VALUES} values'
            )
        conditions.append(Condition(column, tuple(_checked(v, column) for v in values)))
    return tuple(conditions)


def _checked(value: Any, column: str) -> Scalar | None:
    if value is None:
        return None
    if FILTER_COLUMNS[column] is int:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"Filter on {column!r} takes integers, got {value!r}")
        return int(value)
    return _checked_str(value, column)


def _checked_str(value: Any, column: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"Filter on {column!r} takes strings, got {value!r}")
    if "\x00" in value:
        raise ValueError(f"Filter on {column!r} must not contain NUL characters")
    return value


def _condition_sql(condition: Condition, *, null_matches: bool = True) -> str:
    present = [v for v in condition.values if v is not None]
    parts = []
    if present:
        parts.append(f"{condition.column} IN ({', '.join(sql_literal(v) for v in present)})")
    if None in condition.values:
        parts.append(f"{condition.column} IS NULL")
    sql = " OR ".join(parts)
    # NOT over a comparison with NULL is NULL (row dropped); keep empty rows when excluding.
    if not null_matches and None not in condition.values:
        sql = f"{condition.column} IS NOT NULL AND ({sql})"
    return sql


def _condition_mask(
    condition: Condition,
    columns: Mapping[str, np.ndarray],
    nulls: Mapping[str, np.ndarray],
) -> np.ndarray:
    # An empty row never matches a value, so excluding values keeps it (as in the SQL).
    values = columns[condition.column]
    is_null = nulls[condition.column]
    present = [v for v in condition.values if v is not None]
    match = np.isin(values, np.asarray(present)) & ~is_null if present else np.zeros_like(is_null)
    if None in condition.values:
        match |= is_null
    return match
