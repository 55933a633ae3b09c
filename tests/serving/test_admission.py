"""Admission control: up to the limits requests run or wait, beyond them 503 with Retry-After.

The HTTP tests run a real uvicorn server on a free loopback port in a thread, over a
tiny app whose ``/slow`` route blocks on an event, and send requests from client
threads; the gate's own tests drive it on an event loop directly.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from serving.api.admission import AdmissionControl, AdmissionGate, mount_admission_control
from serving.api.app import create_app
from serving.api.context import ServiceContext
from serving.settings import AdmissionSettings, ServeSettings, Settings

CLIENT_TIMEOUT_S = 20.0


@dataclass
class TinyApp:
    """The app under test: ``/slow`` waits for ``release``; counts who got in."""

    app: FastAPI
    gate: AdmissionGate | None
    release: threading.Event = field(default_factory=threading.Event)
    entered: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def make_tiny_app(limits: AdmissionSettings) -> TinyApp:
    app = FastAPI()
    tiny = TinyApp(app, None)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/slow")
    def slow() -> dict[str, str]:
        with tiny.lock:
            tiny.entered += 1
        tiny.release.wait(CLIENT_TIMEOUT_S)
        return {"status": "done"}

    @app.get("/fast")
    def fast() -> dict[str, str]:
        return {"status": "done"}

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("handler failed")

    tiny.gate = mount_admission_control(app, limits)
    return tiny


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` under uvicorn on a free 127.0.0.1 port; its base URL; stopped on exit."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="critical", lifespan="off", access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, "uvicorn to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        listener.close()
        if thread.is_alive():
            pytest.fail("uvicorn did not stop")


def wait_until(condition: object, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def get(url: str) -> requests.Response:
    return requests.get(url, timeout=CLIENT_TIMEOUT_S)


def timed_get(url: str) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = get(url)
    return response, time.monotonic() - started


def test_up_to_the_limits_requests_run_or_wait_and_beyond_get_503_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limits = AdmissionSettings(max_concurrent=2, max_waiting=1, wait_s=30.0, retry_after_s=3)
    tiny = make_tiny_app(limits)
    gate = tiny.gate
    assert gate is not None
    caplog.set_level(logging.INFO, logger="serving.api.admission")
    with serving(tiny.app) as url, ThreadPoolExecutor(max_workers=4) as clients:
        running = [clients.submit(get, f"{url}/slow") for _ in range(2)]
        wait_until(lambda: tiny.entered == 2, "two requests in the handler")
        waiting = clients.submit(get, f"{url}/slow")
        wait_until(lambda: gate.stats().waiting == 1, "a third request waiting")

        refused, seconds = timed_get(f"{url}/slow")
        health = get(f"{url}/healthz")
        during = gate.stats()
        tiny.release.set()
        answers = [future.result() for future in [*running, waiting]]

    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "3"
    assert refused.json() == {"detail": "the service is busy; retry after 3 s"}
    assert seconds < 2.0  # answered at once, not after the 30 s wait
    assert health.status_code == 200  # never counted, never refused
    assert (during.in_flight, during.waiting, during.shed) == (2, 1, 1)
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert tiny.entered == 3  # the waiting request was served once a slot freed
    assert gate.stats() == type(during)(in_flight=0, waiting=0, admitted=3, shed=1)
    messages = [r.getMessage() for r in caplog.records if r.name == "serving.api.admission"]
    assert messages == [
        "load shedding: 1 requests refused with 503 so far (2 in flight, 1 waiting)"
    ]


def test_a_waiting_request_is_refused_once_its_wait_is_over() -> None:
    limits = AdmissionSettings(max_concurrent=1, max_waiting=1, wait_s=0.3, retry_after_s=1)
    tiny = make_tiny_app(limits)
    gate = tiny.gate
    assert gate is not None
    with serving(tiny.app) as url, ThreadPoolExecutor(max_workers=1) as clients:
        holder: Future[requests.Response] = clients.submit(get, f"{url}/slow")
        wait_until(lambda: tiny.entered == 1, "one request in the handler")
        refused, seconds = timed_get(f"{url}/fast")
        after_wait = gate.stats()
        tiny.release.set()
        assert holder.result().status_code == 200
        served = get(f"{url}/fast")

    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"
    assert 0.25 <= seconds < 5.0
    assert (after_wait.waiting, after_wait.shed) == (0, 1)
    assert served.status_code == 200
    assert gate.stats().in_flight == 0


def test_a_failing_handler_gives_its_slot_back() -> None:
    limits = AdmissionSettings(max_concurrent=1, max_waiting=0, wait_s=0.0)
    tiny = make_tiny_app(limits)
    gate = tiny.gate
    assert gate is not None
    with serving(tiny.app) as url:
        failed = get(f"{url}/boom")
        served = get(f"{url}/fast")

    assert failed.status_code == 500
    assert served.status_code == 200
    assert gate.stats() == type(gate.stats())(in_flight=0, waiting=0, admitted=2, shed=0)


def test_a_cancelled_waiter_leaves_the_queue_and_a_handed_slot_is_passed_on() -> None:
    gate = AdmissionGate(AdmissionSettings(max_concurrent=1, max_waiting=2, wait_s=30.0))

    async def scenario() -> list[tuple[int, int]]:
        seen = []
        assert await gate.acquire()
        first = asyncio.create_task(gate.acquire())
        second = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        seen.append((gate.stats().in_flight, gate.stats().waiting))  # (1, 2)
        first.cancel()  # the client went away while waiting
        await asyncio.gather(first, return_exceptions=True)
        seen.append((gate.stats().in_flight, gate.stats().waiting))  # (1, 1)
        gate.release()  # handed to the second waiter...
        second.cancel()  # ...which is cancelled before it resumes: the slot comes back
        await asyncio.gather(second, return_exceptions=True)
        seen.append((gate.stats().in_flight, gate.stats().waiting))  # (0, 0)
        return seen

    assert asyncio.run(scenario()) == [(1, 2), (1, 1), (0, 0)]
    assert gate.stats().admitted == 1


def test_the_service_app_sheds_api_and_dicomweb_but_not_health_or_the_page(tmp_path: Path) -> None:
    admission = AdmissionSettings(max_concurrent=1, max_waiting=0, retry_after_s=2)
    settings = Settings(data_dir=tmp_path / "data", serve=ServeSettings(admission=admission))
    context = ServiceContext.from_settings(settings)
    token = context.users.add("radiologist", "radiologist")
    auth = {"Authorization": f"Bearer {token}"}
    app = create_app(context)
    gate = app.state.admission
    assert isinstance(gate, AdmissionGate)
    assert app.user_middleware[0].cls is AdmissionControl  # outermost: refuses first
    try:
        with TestClient(app) as client:
            assert asyncio.run(gate.acquire())  # the one slot taken, as by a slow request
            busy = {
                path: client.get(path, headers=auth)
                for path in ("/api/studies", "/dicom-web/studies", "/healthz", "/ui/")
            }
            gate.release()
            freed = client.get("/dicom-web/studies", headers=auth)
    finally:
        context.close()

    assert {path: r.status_code for path, r in busy.items()} == {
        "/api/studies": 503,
        "/dicom-web/studies": 503,
        "/healthz": 200,
        "/ui/": 200,
    }
    assert busy["/api/studies"].headers["Retry-After"] == "2"
    assert freed.status_code == 200


def test_turned_off_mounts_nothing() -> None:
    app = FastAPI()
    assert mount_admission_control(app, AdmissionSettings(max_concurrent=0)) is None
    assert app.state.admission is None
    assert app.user_middleware == []


def test_limits_must_stay_below_serves_own(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match=r"max_waiting \(12\) must be below max_ongoing"):
        ServeSettings(max_ongoing_requests=12)  # the default 8 + 4 would fill every slot
    assert ServeSettings(max_ongoing_requests=12, admission=AdmissionSettings(max_concurrent=0))
    monkeypatch.setenv("MMDX_SERVE__ADMISSION__MAX_CONCURRENT", "3")
    loaded = Settings().serve.admission
    assert (loaded.max_concurrent, loaded.max_waiting, loaded.retry_after_s) == (3, 4, 1)
