"""The web page's tests in Chromium: the sites they drive and the browser that drives them.

Two sites serve the same page and API:

- ``seeded``: the app over :func:`tests.serving.web_fixtures.build_seeded_context` (two
  studies with stored results, heat maps and a 12-case index; no models, no Ray) served
  by uvicorn in a thread on 127.0.0.1. Seconds to start.
- ``service``: `mmdx serve` with tiny models and Orthanc in a loopback-only network
  namespace (:mod:`tests.integration.service_fixtures`); an MR study and an echo loop
  are sent to its DICOM listener with storescu and processed by the real pipeline.
  Minutes to start. Chromium must run in that namespace: it is started through a
  two-line wrapper that ``ip netns exec``s Debian's ``/usr/bin/chromium``, while
  Playwright's driver stays in the test process and talks to it over the pipes the
  browser inherits (no debugging port is opened).

Engineering fixtures with synthetic patients only; nothing here is for diagnostic use.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from tests.integration.netns import NetworkNamespace
from tests.integration.service_fixtures import MMDX_AE, Hospital, wait_for
from tests.serving.pipeline_fixtures import (
    ECHO_STUDY_UID,
    MR_STUDY_UID,
    write_echo_study,
    write_mr_study,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright, ViewportSize

CHROMIUM = Path("/usr/bin/chromium")
# Headless, no sandbox (root in a container), no GPU, nothing fetched in the background.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
# Received (listener quiet for 2 s), then classified, explained and retrieved on a
# loaded 2-core machine.
RESULT_TIMEOUT_S = 300.0
SERVER_START_TIMEOUT_S = 30.0


def unavailable_reason() -> str | None:
    """Why the browser tests cannot run here (no Chromium or Playwright), or ``None``."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing: install Debian's chromium package"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    return None


@dataclass(frozen=True)
class WebSite:
    """A served page and API with two studies: what a test needs to drive and check it.

    Attributes:
        name: ``seeded`` or ``service``.
        url: Base URL (``http://127.0.0.1:PORT``).
        tokens: Bearer token per role (``radiologist``, ``researcher``, ``admin``).
        mr_uid: The MR study's Study Instance UID.
        echo_uid: The echo study's Study Instance UID.
        chromium: The browser executable that reaches ``url``.
        http: ``requests.request``-like call that reaches ``url``.
    """

    name: str
    url: str
    tokens: dict[str, str]
    mr_uid: str
    echo_uid: str
    chromium: Path
    http: Callable[..., requests.Response]

    def request(self, path: str, **params: Any) -> requests.Response:
        """``GET path`` with the radiologist's bearer token."""
        return self.http(
            "GET",
            self.url + path,
            params=params,
            headers={"Authorization": f"Bearer {self.tokens['radiologist']}"},
            timeout=60.0,
        )

    def get(self, path: str, **params: Any) -> Any:
        """``GET path`` with the radiologist's bearer token; the JSON body (fails unless 200)."""
        response = self.request(path, **params)
        if response.status_code != 200:
            pytest.fail(f"GET {path}: {response.status_code} {response.text}")
        return response.json()

    def result(self, uid: str) -> dict[str, Any]:
        """The study's only result entry (one modality per study here), from the API."""
        (entry,) = self.get(f"/api/studies/{uid}/result")["payload"]["results"]
        return dict(entry)


@contextmanager
def seeded_site(folder: Path) -> Iterator[WebSite]:
    """The app over a seeded context, served by uvicorn in a thread on 127.0.0.1."""
    from serving.api.app import create_app
    from tests.serving.web_fixtures import build_seeded_context

    context, tokens, mr_uid, us_uid, _ = build_seeded_context(folder / "data")
    try:
        with serving_in_thread(create_app(context)) as url:
            yield WebSite("seeded", url, tokens, mr_uid, us_uid, CHROMIUM, requests.request)
    finally:
        context.close()


@contextmanager
def serving_in_thread(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on a loopback socket bound here; yields its base URL."""
    import uvicorn

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [listener]}, name="web-ui-server", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                pytest.fail("uvicorn did not start serving the seeded app")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        listener.close()


def service_site(hospital: Hospital, folder: Path) -> WebSite:
    """The MR study and the echo loop sent to `mmdx serve` by storescu and processed.

    Fails the test when a file is not stored, or a result does not come in time.
    """
    files = [*write_mr_study(folder / "mr"), write_echo_study(folder / "echo.dcm")]
    hospital.push(files, ae_title=MMDX_AE, port=hospital.mmdx.dicom_port)
    pending = {MR_STUDY_UID, ECHO_STUDY_UID}

    def processed() -> bool:
        for uid in sorted(pending):
            response = hospital.http(
                "GET",
                f"{hospital.mmdx.url}/api/studies/{uid}/result",
                headers=hospital.mmdx.auth("radiologist"),
            )
            if response.status_code == 200:
                pending.discard(uid)
            elif response.status_code != 202:
                pytest.fail(f"result of {uid}: {response.status_code} {response.text}")
        return not pending

    wait_for(
        processed,
        RESULT_TIMEOUT_S,
        "the MR and echo results",
        interval_s=2.0,
        diagnosis=lambda: hospital.mmdx.output()[-3000:],
    )
    return WebSite(
        "service",
        hospital.mmdx.url,
        dict(hospital.mmdx.tokens),
        MR_STUDY_UID,
        ECHO_STUDY_UID,
        chromium_in(hospital.namespace, folder / "chromium"),
        hospital.http,
    )


def chromium_in(namespace: NetworkNamespace, folder: Path) -> Path:
    """An executable that runs ``/usr/bin/chromium`` with its arguments inside ``namespace``.

    ``ip netns exec`` execs the browser (same PID) and keeps the file descriptors, the
    pipes Playwright talks over among them.
    """
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / "chromium-in-namespace"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {namespace.name} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def launch_browser(playwright: Playwright, executable: Path) -> Browser:
    """Headless Chromium from ``executable`` with :data:`CHROMIUM_ARGS`."""
    return playwright.chromium.launch(
        executable_path=str(executable), headless=True, args=CHROMIUM_ARGS
    )


def artifact_dir(fallback: Path) -> Path:
    """Where test artefacts go: ``$MMDX_TEST_ARTIFACTS`` when set, else ``fallback``."""
    folder = Path(os.environ.get("MMDX_TEST_ARTIFACTS") or fallback)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def sign_in(page: Page, site: WebSite, role: str) -> None:
    """Open the page and sign in with the token of ``role`` through its form."""
    page.goto(f"{site.url}/ui/")
    page.get_by_label("Access token").fill(site.tokens[role])
    page.get_by_role("button", name="Sign in").click()


def page_fetch_status(page: Page, path: str) -> int:
    """The HTTP status the page's own ``fetch`` gets for ``path`` (with its cookies)."""
    status = page.evaluate("path => fetch(path).then(response => response.status)", path)
    return int(status)
