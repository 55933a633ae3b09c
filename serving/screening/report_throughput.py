"""The screen's throughput: studies per hour, and the physician time they stand for."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

# The market article's figure: one report takes a physician about 7 minutes.
MINUTES_PER_REPORT = 7.0


def throughput(
    finished_at: Sequence[datetime | None],
    n_done: int,
    run_info: Mapping[str, Any],
) -> dict[str, Any]:
    """Studies per hour of the run and the physician time the screened studies stand for.

    The run's wall time is ``run_info["wall_seconds"]``, else ``finished - started``
    (ISO 8601 strings, also accepted as ``started_at``/``finished_at``). The studies
    counted are those finished within the run (a resumed run did the rest earlier).

    Args:
        finished_at: When each result row (done or failed) was written, UTC.
        n_done: Studies screened successfully over all runs.
        run_info: The run's ``run.json`` content.
    """
    started = _timestamp(run_info.get("started", run_info.get("started_at")), "started")
    finished = _timestamp(run_info.get("finished", run_info.get("finished_at")), "finished")
    wall = run_info.get("wall_seconds")
    if wall is None and started is not None and finished is not None:
        wall = (finished - started).total_seconds()
    stamps = [_timestamp(t, "finished_at") for t in finished_at]
    if started is None or all(t is None for t in stamps):
        n_run = len(stamps)  # nothing to tell this run's rows from earlier ones
    else:
        n_run = sum(1 for t in stamps if t is not None and t >= started)
    per_hour = n_run / wall * 3600.0 if wall and wall > 0 else None
    physician_hours = n_done * MINUTES_PER_REPORT / 60.0
    return {
        "studies_this_run": n_run,
        "wall_seconds": float(wall) if wall is not None else None,
        "studies_per_hour": per_hour,
        "minutes_per_report": MINUTES_PER_REPORT,
        "studies_screened": n_done,
        "physician_hours_equivalent": physician_hours,
        "machine_hours_at_this_rate": n_done / per_hour if per_hour else None,
        "times_physician_rate": per_hour / (60.0 / MINUTES_PER_REPORT) if per_hour else None,
    }


def _timestamp(value: Any, name: str) -> datetime | None:
    """A timezone-aware datetime from an ISO 8601 string or datetime (naive means UTC).

    Raises:
        ValueError: Neither None, a datetime nor an ISO 8601 string.
    """
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f'"{name}" must be an ISO 8601 time, got {value!r}') from None
    if not isinstance(value, datetime):
        raise ValueError(f'"{name}" must be an ISO 8601 time, got {value!r}')
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
