"""Admission control: beyond capacity, answer 503 with ``Retry-After`` at once.

A pure ASGI middleware in front of the whole app. Per ingress replica, at most
``max_concurrent`` requests are handled at a time and at most ``max_waiting`` more wait,
first come first served, up to ``wait_s`` for a slot; any other request is refused at
once with ``503 Service Unavailable``, ``Retry-After: N`` and
``{"detail": "the service is busy; retry after N s"}``. A client is never left holding
a socket until its own timeout. ``/healthz`` and the web page's static files are never
counted nor refused, so a load balancer's health check stays green under load.

Why below Ray Serve's limit: the Serve proxy sends a replica at most
``max_ongoing_requests`` requests and queues the rest itself (``max_queued_requests``,
then its own 503). Requests queued there are invisible to the replica: with our limit
above Serve's, clients would wait in the proxy's queue instead of being told to come
back, and ``/healthz`` would queue behind them. Holding ``max_concurrent + max_waiting``
strictly below ``max_ongoing_requests`` (checked by :class:`~serving.settings.ServeSettings`)
makes this middleware answer first and keeps a replica slot for the health check;
Serve's queue limit stays behind it for what a replica cannot even receive.

Refused requests are counted (:meth:`AdmissionGate.stats`) and logged at INFO on the
first refusal and every :data:`LOG_EVERY_SHED` after, with counts only: no path, no
client, no identity.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.settings import AdmissionSettings

logger = logging.getLogger(__name__)

LOG_EVERY_SHED = 100
# The liveness route and the page's shell and static files: cheap, and must answer under load.
EXEMPT_PATHS = frozenset({"/healthz", "/", "/ui", "/ui/"})
EXEMPT_PREFIXES = ("/ui/static/",)


@dataclass(frozen=True)
class AdmissionStats:
    """Counts of one gate: now (``in_flight``, ``waiting``) and since it was built."""

    in_flight: int
    waiting: int
    admitted: int
    shed: int


class AdmissionGate:
    """The slots of one ingress replica: at most ``max_concurrent`` held, FIFO waiters.

    Used from one event loop (the replica's); no lock is needed since nothing here
    awaits between reading and updating the counts.
    """

    def __init__(self, limits: AdmissionSettings) -> None:
        if limits.max_concurrent < 1:
            raise ValueError('Argument "limits" must have max_concurrent >= 1 to admit anything')
        self.limits = limits
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._admitted = 0
        self._shed = 0

    def stats(self) -> AdmissionStats:
        """The counts now."""
        return AdmissionStats(self._in_flight, len(self._waiters), self._admitted, self._shed)

    async def acquire(self) -> bool:
        """Take a slot, waiting up to ``wait_s`` if allowed; ``False`` when refused."""
        limits = self.limits
        if self._in_flight < limits.max_concurrent and not self._waiters:
            self._in_flight += 1
            self._admitted += 1
            return True
        if len(self._waiters) >= limits.max_waiting:
            self._refuse()
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            # asyncio.wait, not wait_for: it never cancels the waiter, so a slot handed
            # over just as the wait ends is seen below and kept, not lost.
            await asyncio.wait({waiter}, timeout=limits.wait_s)
        except BaseException:  # cancelled: the client went away while waiting
            self._give_up(waiter)
            raise
        if waiter.done():
            self._admitted += 1
            return True
        self._give_up(waiter)
        self._refuse()
        return False

    def release(self) -> None:
        """Hand the slot to the first waiter, or free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on: in_flight unchanged
                return
        self._in_flight -= 1

    def _give_up(self, waiter: asyncio.Future[None]) -> None:
        """A waiter leaves: a slot already handed to it is passed on."""
        if waiter.done() and not waiter.cancelled():
            self.release()
            return
        waiter.cancel()
        self._waiters.remove(waiter)

    def _refuse(self) -> None:
        self._shed += 1
        if self._shed == 1 or self._shed % LOG_EVERY_SHED == 0:
            logger.info(
                "load shedding: %d requests refused with 503 so far (%d in flight, %d waiting)",
                self._shed,
                self._in_flight,
                len(self._waiters),
            )


class AdmissionControl:
    """ASGI middleware: ``gate`` limits every HTTP request but the exempt ones."""

    def __init__(
        self,
        app: ASGIApp,
        gate: AdmissionGate,
        exempt_paths: Collection[str] = EXEMPT_PATHS,
        exempt_prefixes: tuple[str, ...] = EXEMPT_PREFIXES,
    ) -> None:
        self.app = app
        self.gate = gate
        self.exempt_paths = frozenset(exempt_paths)
        self.exempt_prefixes = exempt_prefixes
        retry_after = gate.limits.retry_after_s
        self._busy_body = json.dumps(
            {"detail": f"the service is busy; retry after {retry_after} s"}
        ).encode()
        self._busy_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self._busy_body)).encode()),
            (b"retry-after", str(retry_after).encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        if not await self.gate.acquire():
            await send(
                {"type": "http.response.start", "status": 503, "headers": self._busy_headers}
            )
            await send({"type": "http.response.body", "body": self._busy_body})
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.gate.release()

    def _exempt(self, path: str) -> bool:
        return path in self.exempt_paths or path.startswith(self.exempt_prefixes)


def mount_admission_control(app: FastAPI, limits: AdmissionSettings) -> AdmissionGate | None:
    """Put admission control in front of ``app`` (outermost); ``None`` when turned off.

    The gate is also ``app.state.admission`` (``None`` when off), for its counts.
    """
    gate = AdmissionGate(limits) if limits.max_concurrent > 0 else None
    app.state.admission = gate
    if gate is not None:
        app.add_middleware(AdmissionControl, gate=gate)
    return gate
