"""Closed-loop HTTP load: client threads, each looping over the endpoints, and their figures.

Each client is a thread with its own ``requests.Session`` (keep-alive) that sends the
next request as soon as the last one is answered, for a fixed time. A refused request
comes straight back unless ``honour_retry_after`` (then the client first waits the
``Retry-After`` seconds, as a well-behaved client does). A prober asks ``/healthz``
meanwhile, half a second after each answer. An answer counts as:

- ``ok``: any 2xx;
- ``shed``: 429 or 503 with an integer ``Retry-After`` (the service said when to retry);
- ``error``: anything else, a 503 without ``Retry-After``, a timeout or a broken
  connection included (``timeouts`` counts those that timed out).

Latency percentiles are of the ok answers (what a served user waits) and of all answers.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import requests

HEALTH_INTERVAL_S = 0.5
SHED_STATUSES = (429, 503)


@dataclass(frozen=True)
class Endpoint:
    """One endpoint under load: a name and a path (with its query) under the base URL."""

    name: str
    path: str


@dataclass(frozen=True)
class Answer:
    """One request's outcome: HTTP status (``None`` when none came), seconds, Retry-After."""

    endpoint: str
    status: int | None
    seconds: float
    retry_after: str | None = None
    failure: str | None = None  # "timeout" or "connection" when no status came

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def shed(self) -> bool:
        return (
            self.status in SHED_STATUSES
            and self.retry_after is not None
            and self.retry_after.isdigit()
        )


def ask(session: requests.Session, name: str, url: str, timeout_s: float) -> Answer:
    """One GET; its outcome, never an exception."""
    started = time.perf_counter()
    try:
        response = session.get(url, timeout=timeout_s)
        response.content  # noqa: B018 - read the body: its time is part of the answer
    except requests.Timeout:
        return Answer(name, None, time.perf_counter() - started, failure="timeout")
    except requests.RequestException:
        return Answer(name, None, time.perf_counter() - started, failure="connection")
    seconds = time.perf_counter() - started
    return Answer(name, response.status_code, seconds, response.headers.get("Retry-After"))


def run_load(
    base_url: str,
    endpoints: list[Endpoint],
    headers: Mapping[str, str],
    *,
    clients: int,
    seconds: float,
    timeout_s: float = 30.0,
    honour_retry_after: bool = False,
) -> dict[str, Any]:
    """``clients`` closed-loop clients for ``seconds`` against ``endpoints``; the summary.

    Client ``i`` starts at endpoint ``i`` modulo their number and then takes them in
    turn, so each endpoint gets a third of the clients' turns with three endpoints.
    """
    if clients < 1:
        raise ValueError(f'Argument "clients" must be at least 1, not {clients}')
    if seconds <= 0:
        raise ValueError(f'Argument "seconds" must be positive, not {seconds}')
    if not endpoints:
        raise ValueError('Argument "endpoints" must name at least one endpoint')
    stop = threading.Event()
    health: list[Answer] = []

    def client(number: int) -> list[Answer]:
        answers = []
        with requests.Session() as session:
            session.headers.update(headers)
            session.trust_env = False  # loopback: no proxy from the environment
            turn = number
            while not stop.is_set():
                endpoint = endpoints[turn % len(endpoints)]
                answer = ask(session, endpoint.name, base_url + endpoint.path, timeout_s)
                answers.append(answer)
                if honour_retry_after and answer.shed and answer.retry_after:
                    stop.wait(int(answer.retry_after))
                turn += 1
        return answers

    def probe() -> None:
        with requests.Session() as session:
            session.trust_env = False
            while not stop.wait(HEALTH_INTERVAL_S):
                health.append(ask(session, "healthz", f"{base_url}/healthz", timeout_s))

    prober = threading.Thread(target=probe, name="healthz-probe")
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients, thread_name_prefix="load") as pool:
        futures = [pool.submit(client, number) for number in range(clients)]
        prober.start()
        stop.wait(seconds)
        stop.set()
        answers = [answer for future in futures for answer in future.result()]
    prober.join()
    elapsed = time.perf_counter() - started
    per_endpoint = {
        endpoint.name: summarize([a for a in answers if a.endpoint == endpoint.name], elapsed)
        for endpoint in endpoints
    }
    return {
        "clients": clients,
        "honour_retry_after": honour_retry_after,
        "seconds": round(elapsed, 3),
        "endpoints": per_endpoint,
        "all": summarize(answers, elapsed),
        "healthz": summarize(health, elapsed),
    }


def summarize(answers: list[Answer], seconds: float) -> dict[str, Any]:
    """Counts, rates and latency percentiles (ms) of ``answers`` over ``seconds``."""
    ok = [a.seconds for a in answers if a.ok]
    shed = sum(a.shed for a in answers)
    errors = len(answers) - len(ok) - shed
    statuses = Counter(str(a.status if a.status is not None else a.failure) for a in answers)
    total = max(len(answers), 1)
    return {
        "requests": len(answers),
        "ok": len(ok),
        "shed": shed,
        "errors": errors,
        "timeouts": sum(a.failure == "timeout" for a in answers),
        "unmarked_refusals": sum(
            a.status in SHED_STATUSES and not a.shed for a in answers
        ),  # 429/503 without Retry-After
        "statuses": dict(sorted(statuses.items())),
        "per_s": len(answers) / seconds,
        "ok_per_s": len(ok) / seconds,
        "error_rate": errors / total,
        "shed_share": shed / total,
        "p50_ms": _percentile_ms(ok, 50),
        "p99_ms": _percentile_ms(ok, 99),
        "p99_all_ms": _percentile_ms([a.seconds for a in answers], 99),
    }


def _percentile_ms(seconds: list[float], q: float) -> float | None:
    return float(np.percentile(seconds, q)) * 1000.0 if seconds else None


def format_table(title: str, report: dict[str, Any]) -> str:
    """The report as a fixed-width table, one row per endpoint plus all and /healthz."""
    header = (
        f"{'endpoint':<12}{'requests':>9}{'req/s':>8}{'ok/s':>8}{'errors':>8}{'err %':>7}"
        f"{'shed %':>8}{'p50 ms':>9}{'p99 ms':>9}{'p99 all':>9}"
    )
    rows = [title, header]
    named = {**report["endpoints"], "all": report["all"], "healthz": report["healthz"]}
    for name, row in named.items():
        rows.append(
            f"{name:<12}{row['requests']:>9}{row['per_s']:>8.1f}{row['ok_per_s']:>8.1f}"
            f"{row['errors']:>8}{100 * row['error_rate']:>7.2f}{100 * row['shed_share']:>8.1f}"
            f"{_ms(row['p50_ms']):>9}{_ms(row['p99_ms']):>9}{_ms(row['p99_all_ms']):>9}"
        )
    return "\n".join(rows)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"
