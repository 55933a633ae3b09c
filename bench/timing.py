"""The timer every benchmark arm uses: one warm-up run, then the median of repeats."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``run``, after one untimed warm-up call.

    The warm-up pays for imports and fills the page cache, so the figures compare
    steady-state work.
    """
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)
