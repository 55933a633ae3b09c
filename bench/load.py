"""Load: 32 clients on loopback, without and with admission control, in the same run.

Three endpoints, each a third of the clients' turns (``bench/load_clients.py`` says how
answers are counted and timed):

- ``prediction``: ``GET /api/studies/{uid}/result`` of a study with a stored result;
- ``similar``: ``GET /api/cases/search?text=...``, the real text search of the
  ``SimilarCases`` deployment's class (``clip_tiny`` text tower, random init, over a
  12-case LanceDB index), called in the server process without Ray;
- ``qido``: ``GET /dicom-web/studies`` (QIDO-RS over the catalog).

Each arm serves the service's FastAPI app (:func:`serving.api.app.create_app`: bearer
tokens, audit trail and SQLite catalog included) under uvicorn on 127.0.0.1, in a child
process so that the clients' threads do not share its interpreter lock, over a copy of
the same seeded data folder (two synthetic studies with results, from
``tests/serving/web_fixtures.py``). Arms:

- baseline: admission control off (``serve.admission.max_concurrent: 0``): every
  request waits in uvicorn's thread pool however long it takes;
- shedding: the settings' admission control (at most 8 handled, 4 waiting, then 503
  with ``Retry-After``), clients sending again at once (the worst case: refusals churn);
- shedding, polite clients: the same, clients waiting out ``Retry-After`` first.

Printed per arm and endpoint: requests, throughput, error rate, share shed, p50 and p99
of the served answers and p99 of all; then the ratio of the served p99 without and with
shedding, and of the served throughput. Without Ray Serve in front: ``mmdx serve`` adds
its proxy and Serve's own queue limit (``tests/integration/test_service_load.py`` runs
the same clients against it).

Usage::

    python -m bench.load [--seconds 60] [--clients 32]
    python -m bench.load --url http://127.0.0.1:8000 --study UID [--json]  # a running service

With ``--url`` the bearer token comes from the ``BENCH_LOAD_TOKEN`` environment variable
(not the command line, which other users can read). Engineering figures on synthetic
data; nothing here is for diagnostic use.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from bench.load_clients import Endpoint, format_table, run_load

REPOSITORY = Path(__file__).resolve().parents[1]
CLIP_CONFIG = "clip_tiny"
CLIP_DIM = 64  # clip_tiny's embed_dim
CLIP_INDEX = "clip_case_index"
SEARCH_TEXT = "hippocampal atrophy with widened temporal horns"
START_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 30.0
TOKEN_VARIABLE = "BENCH_LOAD_TOKEN"


def endpoints_for(study_uid: str) -> list[Endpoint]:
    """The three endpoints under load, for the study ``study_uid``."""
    text = urllib.parse.quote(SEARCH_TEXT)
    return [
        Endpoint("prediction", f"/api/studies/{study_uid}/result"),
        Endpoint("similar", f"/api/cases/search?text={text}"),
        Endpoint("qido", "/dicom-web/studies"),
    ]


# The server side (the child process) ---------------------------------------------------


class PipelineTextSearch:
    """The ``SimilarCases`` deployment's own text search, in this process (no Ray)."""

    def __init__(self, index_dir: Path) -> None:
        from serving.deployments.models import SimilarCasesDeployment

        # A Serve Deployment at run time (its stubs say a class): func_or_class is the
        # plain class under the decorator.
        deployment: Any = SimilarCasesDeployment
        self._deployment = deployment.func_or_class(CLIP_CONFIG, str(index_dir))

    def search_text(
        self, text: str, *, k: int, modality: str | None, label: str | None, site: str | None
    ) -> list[dict[str, Any]]:
        """What the deployment answers a handle call with."""
        hits: list[dict[str, Any]] = asyncio.run(
            self._deployment.search_text(text, k=k, modality=modality, label=label, site=site)
        )
        return hits


def serve(data_dir: Path, port: int, *, admission: bool) -> None:
    """The service's app over ``data_dir`` on 127.0.0.1:``port`` until SIGTERM."""
    import uvicorn

    from serving.api.app import create_app
    from serving.api.context import ServiceContext
    from serving.settings import AdmissionSettings, Settings

    serve_settings = Settings().serve
    if not admission:
        serve_settings = serve_settings.model_copy(
            update={"admission": AdmissionSettings(max_concurrent=0)}
        )
    settings = Settings(data_dir=data_dir, serve=serve_settings)
    search = PipelineTextSearch(data_dir.parent / CLIP_INDEX)
    context = ServiceContext.from_settings(settings, case_search=search)
    try:
        uvicorn.run(
            create_app(context), host="127.0.0.1", port=port, log_level="warning",
            access_log=False,
        )  # fmt: skip
    finally:
        context.close()


# The parent: seed, start each arm, load it -------------------------------------------


def seed(root: Path) -> tuple[str, str]:
    """The seeded data folder ``root/seeded/data`` and CLIP index; (radiologist token, MR UID)."""
    from tests.serving.pipeline_fixtures import make_case_index
    from tests.serving.web_fixtures import build_seeded_context

    context, tokens, mr_uid, _, _ = build_seeded_context(root / "seeded" / "data")
    context.close()
    make_case_index(str(root / "seeded" / CLIP_INDEX), CLIP_DIM)
    return tokens["radiologist"], mr_uid


@dataclass(frozen=True)
class Arm:
    """One arm of the run: its name, whether admission control is on, the clients' manners."""

    name: str
    admission: bool
    honour_retry_after: bool

    def title(self) -> str:
        if not self.admission:
            return f"{self.name}: admission control off"
        manners = "wait out Retry-After" if self.honour_retry_after else "retry at once"
        return f"{self.name}: admission control {describe_admission()}; clients {manners}"


ARMS = (
    Arm("baseline", admission=False, honour_retry_after=False),
    Arm("shedding", admission=True, honour_retry_after=False),
    Arm("polite", admission=True, honour_retry_after=True),
)


def run_arm(
    root: Path, arm: Arm, *, token: str, study_uid: str, arguments: argparse.Namespace
) -> dict[str, Any]:
    """One arm: a copy of the seeded folder, its server, the load; the load's report."""
    from tests.serving.pipeline_fixtures import free_port

    arm_dir = root / arm.name
    shutil.copytree(root / "seeded", arm_dir)
    port = free_port()
    command = [sys.executable, "-m", "bench.load", "--serve", str(arm_dir / "data"),
               "--port", str(port), "--admission", "on" if arm.admission else "off"]  # fmt: skip
    log = root / f"{arm.name}.log"
    with log.open("wb") as out:
        server = subprocess.Popen(command, cwd=REPOSITORY, stdout=out, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base_url, server, log)
        return run_load(
            base_url, endpoints_for(study_uid), {"Authorization": f"Bearer {token}"},
            clients=arguments.clients, seconds=arguments.seconds, timeout_s=arguments.timeout,
            honour_retry_after=arm.honour_retry_after,
        )  # fmt: skip
    finally:
        stop(server)


def wait_healthy(base_url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``/healthz`` until it answers 200; raise with the log if the server dies first."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if requests.get(f"{base_url}/healthz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"the load server did not answer /healthz:\n{tail}")


def stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM by PID, SIGKILL after ``STOP_TIMEOUT_S``."""
    if server.poll() is not None:
        return
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(10)


def compare(reports: dict[str, dict[str, Any]]) -> list[str]:
    """Lines: per endpoint, served p99 and throughput of each arm against the baseline.

    p99 ratio: baseline / arm (above 1: shedding shortens the wait of those served);
    throughput ratio: arm / baseline (below 1: shedding costs served answers).
    """
    baseline = reports["baseline"]
    lines = []
    for arm, report in reports.items():
        if arm == "baseline":
            continue
        lines.append(f"{arm} against baseline (served answers):")
        for name in [*baseline["endpoints"], "all"]:
            before = baseline["endpoints"].get(name) or baseline["all"]
            after = report["endpoints"].get(name) or report["all"]
            p99 = _ratio(before["p99_ms"], after["p99_ms"])
            throughput = _ratio(after["ok_per_s"], before["ok_per_s"])
            lines.append(
                f"  {name:<12}p99 {_ms(before['p99_ms']):>6} / {_ms(after['p99_ms']):>6} ms = "
                f"{p99:>6}   ok/s {after['ok_per_s']:>6.1f} / {before['ok_per_s']:>6.1f} = "
                f"{throughput:>6}"
            )
    return lines


def _ratio(numerator: float | None, denominator: float | None) -> str:
    return f"{numerator / denominator:.2f}x" if numerator and denominator else "-"


def describe_admission() -> str:
    """The settings' admission limits in words."""
    from serving.settings import Settings

    limits = Settings().serve.admission
    return (
        f"on ({limits.max_concurrent} handled, {limits.max_waiting} waiting up to "
        f"{limits.wait_s:g} s, Retry-After {limits.retry_after_s} s)"
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def machine() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}"
    )


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0, help="load time per arm")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--timeout", type=float, default=30.0, help="client timeout (s)")
    parser.add_argument(
        "--url", help=f"load this running service instead (token: ${TOKEN_VARIABLE})"
    )
    parser.add_argument("--study", help="with --url: the study whose result is read")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    # The child process of an arm.
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--admission", choices=("on", "off"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    arguments = parse(argv)
    if arguments.serve is not None:
        serve(arguments.serve, arguments.port, admission=arguments.admission == "on")
        return
    if arguments.url is not None:
        load_running_service(arguments)
        return
    print(f"load: {arguments.clients} clients x {arguments.seconds:.0f} s per arm on {machine()}")
    print("  engineering figures on synthetic data, not for diagnostic use")
    root = Path(tempfile.mkdtemp(prefix="mmdx-load-"))
    try:
        token, study_uid = seed(root)
        reports = {}
        for arm in ARMS:
            reports[arm.name] = run_arm(
                root, arm, token=token, study_uid=study_uid, arguments=arguments
            )
            print(format_table(f"\n{arm.title()}", reports[arm.name]))
        print()
        print("\n".join(compare(reports)))
        if arguments.json:
            print(json.dumps(reports))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"reproduce: python -m bench.load --seconds {arguments.seconds:.0f} "
          f"--clients {arguments.clients}")  # fmt: skip


def load_running_service(arguments: argparse.Namespace) -> None:
    """The load against ``--url``; the table, or the JSON report with ``--json``."""
    token = os.environ.get(TOKEN_VARIABLE)
    if not token or not arguments.study:
        raise SystemExit(f"--url needs --study and the token in ${TOKEN_VARIABLE}")
    report = run_load(
        arguments.url.rstrip("/"), endpoints_for(arguments.study),
        {"Authorization": f"Bearer {token}"}, clients=arguments.clients,
        seconds=arguments.seconds, timeout_s=arguments.timeout,
    )  # fmt: skip
    if arguments.json:
        print(json.dumps(report))
    else:
        print(format_table(f"load on {arguments.url}", report))


if __name__ == "__main__":
    main()
