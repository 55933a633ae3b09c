"""The real `mmdx serve` under 32 concurrent clients: refused with Retry-After, never timed out.

One hospital (:mod:`tests.integration.service_fixtures`: Orthanc and `mmdx serve` in a
loopback-only network namespace) for the module. A study is stored by STOW-RS and
classified first, so the prediction endpoint reads a real result. Then the load client
of ``bench/load.py`` runs in the namespace as its own process (its 32 threads do not
share pytest's interpreter lock): 32 closed-loop clients for 15 s over the prediction,
similar-case and QIDO endpoints, clients sending again at once after a refusal, while a
prober asks ``/healthz`` half a second after each of its answers.

Beyond capacity the ingress answers 503 with ``Retry-After`` (its admission control in
front, Serve's queue limit behind): every answer is a 2xx or such a refusal, none times
out, and ``/healthz`` answers throughout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.load_clients import format_table
from tests.integration.service_fixtures import (
    Hospital,
    running_hospital,
    tail,
    unavailable_reason,
    wait_for,
)
from tests.serving.api_service import STOW_TYPE, stow_body
from tests.serving.pipeline_fixtures import MR_STUDY_UID, write_mr_study

UNAVAILABLE = unavailable_reason()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or ""),
]

REPOSITORY = Path(__file__).resolve().parents[2]
CLIENTS = 32
LOAD_SECONDS = 15
CLIENT_TIMEOUT_S = 30
# Stable after 2 s, then classified on a loaded 2-core machine.
RESULT_TIMEOUT_S = 300.0


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hospital]:
    with running_hospital(tmp_path_factory.mktemp("hospital")) as running:
        yield running


@pytest.fixture(scope="module")
def classified_study(hospital: Hospital, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The 48-slice MR study, stored by STOW-RS and classified; its UID."""
    files = write_mr_study(tmp_path_factory.mktemp("load-study"))
    service = hospital.mmdx
    stored = hospital.http(
        "POST",
        f"{service.dicomweb_url}/studies",
        data=stow_body(files),
        headers={**service.auth("radiologist"), "Content-Type": STOW_TYPE},
    )
    assert stored.status_code == 200, stored.text
    result_url = f"{service.url}/api/studies/{MR_STUDY_UID}/result"
    wait_for(
        lambda: (
            hospital.http("GET", result_url, headers=service.auth("radiologist")).status_code == 200
        ),
        RESULT_TIMEOUT_S,
        "the stored study's result",
        interval_s=1.0,
        diagnosis=lambda: tail(service.log),
    )
    return MR_STUDY_UID


def run_load_in_namespace(hospital: Hospital, study_uid: str) -> dict[str, Any]:
    """``python -m bench.load --url ...`` in the namespace; its JSON report."""
    argv = [
        sys.executable, "-m", "bench.load", "--url", hospital.mmdx.url, "--study", study_uid,
        "--clients", str(CLIENTS), "--seconds", str(LOAD_SECONDS),
        "--timeout", str(CLIENT_TIMEOUT_S), "--json",
    ]  # fmt: skip
    env = {**os.environ, "BENCH_LOAD_TOKEN": hospital.mmdx.tokens["radiologist"]}
    done = subprocess.run(
        hospital.namespace.command(argv), cwd=REPOSITORY, env=env, capture_output=True,
        text=True, timeout=LOAD_SECONDS + CLIENT_TIMEOUT_S + 120,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.fail(f"the load client failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_beyond_capacity_requests_are_refused_with_retry_after_and_none_times_out(
    hospital: Hospital, classified_study: str
) -> None:
    report = run_load_in_namespace(hospital, classified_study)
    print(format_table(f"mmdx serve, {CLIENTS} clients x {LOAD_SECONDS} s", report))

    overall, health = report["all"], report["healthz"]
    for name, row in [*report["endpoints"].items(), ("all", overall)]:
        assert row["errors"] == 0, (name, row["statuses"])  # only 2xx or 503 + Retry-After
        assert row["timeouts"] == 0, (name, row["statuses"])
        assert row["unmarked_refusals"] == 0, (name, row["statuses"])
        assert row["ok"] > 0, (name, row["statuses"])  # every endpoint still serves
    assert set(overall["statuses"]) <= {"200", "503"}, overall["statuses"]
    # 32 clients are beyond one ingress replica's 8 handled + 4 waiting: some are shed.
    assert overall["shed"] > 0, overall["statuses"]
    # /healthz asked throughout (0.5 s after each answer), answered every time.
    assert health["requests"] >= LOAD_SECONDS // 3, health
    assert health["ok"] == health["requests"], health["statuses"]
    after = hospital.http(
        "GET",
        f"{hospital.mmdx.url}/api/studies/{classified_study}/result",
        headers=hospital.mmdx.auth("radiologist"),
    )
    assert after.status_code == 200  # the service is itself again once the load stops
    assert after.json()["study_instance_uid"] == classified_study
