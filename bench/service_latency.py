"""The live service: time from a study's last instance to its result, and batching's gain.

Starts ``mmdx serve`` (Ray on loopback with token auth, the Serve application, the DICOM
listener and job runner) on a scratch data directory, with tiny random-init bundles and
a small case index embedded with ``clip_tiny`` (the builders of
``tests/serving/pipeline_fixtures.py``), then measures:

- **latency**: from the moment dcmtk ``storescu`` (``TCP_NODELAY=1``) has the success
  status of a study's last instance to the moment the study's result (and its SR) is
  stored, polled through ``GET /api/studies/{uid}/result``; an MR series and an echo
  loop, each ``--repeats`` times after one warm-up, median. It includes the stability
  wait (``--stable-after``) and the job runner's 1 s poll, printed beside it.
- **batching**: requests/s of the MR classifier deployment called by handle with
  ``--concurrency`` studies in flight, as deployed (``max_batch_size`` 8) and redeployed
  with ``max_batch_size`` 1, in the same run; the ratio.

Usage::

    python -m bench.service_latency [--repeats 5] [--concurrency 32] [--rounds 3]

Ray binds every interface: run as root, the bench re-runs itself inside a network
namespace holding only ``lo``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.dicom_ingest import SENDER_ENV, free_port

START_TIMEOUT_S = 600.0
RESULT_TIMEOUT_S = 120.0
POLL_S = 0.02
JOB_POLL_S = 1.0  # IngestRuntime's default poll interval, which mmdx serve uses
READY_MARK = "mmdx serving:"
CLIP_CONFIG = "clip_tiny"
CLIP_DIM = 64  # clip_tiny's embed_dim
BATCH_SIZES = (8, 1)


# The service ---------------------------------------------------------------------------


def prepare(data_dir: Path) -> tuple[dict[str, str], str]:
    """Bundles, case index and a radiologist in ``data_dir``; the service's env, the token."""
    from serving.auth import UserDirectory
    from serving.catalog import Catalog
    from tests.serving.pipeline_fixtures import make_case_index, make_echo_bundle, make_mri_bundle

    mri, echo = data_dir / "models" / "mri", data_dir / "models" / "echo"
    make_mri_bundle(mri)
    make_echo_bundle(echo)
    make_case_index(str(data_dir / "case_index"), CLIP_DIM)
    catalog = Catalog.open(f"sqlite:///{data_dir / 'catalog.sqlite'}")
    try:
        token = UserDirectory(catalog).add("bench", "radiologist")
    finally:
        catalog.close()
    env = {
        "MMDX_DATA_DIR": str(data_dir),
        "MMDX_HTTP_PORT": str(free_port()),
        "MMDX_DICOM_PORT": str(free_port()),
        "MMDX_MODELS__MRI_BUNDLE": str(mri),
        "MMDX_MODELS__ECHO_BUNDLE": str(echo),
        "MMDX_MODELS__CLIP_CONFIG": CLIP_CONFIG,
    }
    return env, token


@contextmanager
def running_service(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``mmdx serve`` with ``env`` added, in its own session; stopped by SIGTERM on exit."""
    command = [str(Path(sys.executable).with_name("mmdx")), "serve"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env},
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while READY_MARK not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"mmdx serve did not start:\n{tail}")
            time.sleep(0.2)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its session: Ray's processes too
                process.wait(30)


def gcs_address(service_pid: int) -> str:
    """The GCS address of the Ray that ``mmdx serve`` started, from its raylet's flags.

    The GCS picks its port at start (``--gcs_server_port=0``); the processes started
    after it, the raylet first, are told the address with ``--gcs-address``.
    """
    import psutil

    for child in psutil.Process(service_pid).children(recursive=True):
        try:
            arguments = child.cmdline()
        except psutil.Error:
            continue
        for argument in arguments:
            if argument.startswith("--gcs-address="):
                return argument.split("=", 1)[1]
    raise RuntimeError(f"no Ray process under process {service_pid} names the GCS address")


# Latency -------------------------------------------------------------------------------


def send(folder: Path, port: int) -> None:
    """Every file under ``folder`` over one association (storescu, TCP_NODELAY=1)."""
    command = ["storescu", "-nh", "-xy", "+sd", "+r", "-aec", "MMDX", "127.0.0.1", str(port),
               str(folder)]  # fmt: skip
    result = subprocess.run(command, env=SENDER_ENV, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"storescu failed: {result.stderr[-2000:]}")


def api_get(url: str, token: str) -> tuple[int, str]:
    """GET with the bearer token, straight to loopback (no proxy): status and body."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with opener.open(request, timeout=60) as reply:
            return int(reply.status), reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def wait_for_result(base_url: str, token: str, uid: str) -> dict[str, Any]:
    """Poll the study's result until it is stored (HTTP 200).

    A failed job is not final: when the stability wait elapsed between two instances
    under load, a partial study fails and is processed again once the rest arrived.
    """
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    reason = "still processing"
    while time.monotonic() < deadline:
        status, body = api_get(f"{base_url}/api/studies/{uid}/result", token)
        if status == 200:
            result: dict[str, Any] = json.loads(body)
            return result
        if status not in (202, 404):
            raise RuntimeError(f"study {uid}: HTTP {status}: {body[:500]}")
        if "failed" in body:
            _, study = api_get(f"{base_url}/api/studies/{uid}", token)
            jobs = json.loads(study).get("jobs", []) if study.startswith("{") else []
            reason = jobs[-1]["reason"] if jobs else body[:500]
        time.sleep(POLL_S)
    raise RuntimeError(f"study {uid}: no result within {RESULT_TIMEOUT_S} s ({reason})")


def write_study(folder: Path, modality: str, index: int) -> str:
    """A fresh MR series (48 slices) or echo loop (24 frames) under a new Study UID."""
    from tests.serving.pipeline_fixtures import write_echo_study, write_mr_study

    uid = f"1.2.826.0.1.3680043.8.498.77{1 if modality == 'MR' else 2}{index:04d}"
    if modality == "MR":
        write_mr_study(folder, study_instance_uid=uid, seed=index)
    else:
        folder.mkdir(parents=True)
        write_echo_study(folder / "echo.dcm", study_instance_uid=uid, seed=index)
    return uid


def measure_latency(
    scratch: Path, base_url: str, token: str, dicom_port: int, repeats: int
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Per modality: the seconds from sent to result, after one warm-up; and a study UID each."""
    figures: dict[str, dict[str, Any]] = {}
    last_uid: dict[str, str] = {}
    for modality in ("MR", "US"):
        seconds, processing_ms = [], []
        for index in range(repeats + 1):
            folder = scratch / "studies" / f"{modality}{index}"
            uid = write_study(folder, modality, index)
            send(folder, dicom_port)
            sent = time.perf_counter()
            result = wait_for_result(base_url, token, uid)
            if index == 0:  # warm-up: first request of each replica
                continue
            seconds.append(time.perf_counter() - sent)
            processing_ms.append(float(result["payload"]["timing_ms"]["total"]))
            last_uid[modality] = uid
        figures[modality] = {
            "median_s": round(statistics.median(seconds), 3),
            "runs_s": [round(value, 3) for value in seconds],
            "pipeline_median_ms": round(statistics.median(processing_ms), 1),
        }
    return figures, last_uid


# Batching ------------------------------------------------------------------------------


def requests_per_second(
    handle: Any, series_dir: str, concurrency: int, rounds: int
) -> dict[str, float]:
    """Classifications/s with ``concurrency`` requests in flight, after one warm-up round.

    Also, from the timed results: the mean batch the replica formed, and the median
    milliseconds of a study's preparation (read, resample) and of its batch's forward pass.
    """
    results: list[dict[str, Any]] = []
    for round_number in range(rounds + 1):
        if round_number == 1:
            started = time.perf_counter()
            results.clear()
        responses = [handle.classify.remote((series_dir, None)) for _ in range(concurrency)]
        for response in responses:
            outcome = response.result()
            if not isinstance(outcome, dict):
                raise RuntimeError(f"classification failed: {outcome}")
            results.append(outcome)
    elapsed = time.perf_counter() - started
    timings = [result["timing_ms"] for result in results]
    return {
        "requests_per_s": round(concurrency * rounds / elapsed, 2),
        "mean_batch_size": round(statistics.mean(r["batch_size"] for r in results), 2),
        "prepare_median_ms": round(
            statistics.median(t["total"] - t["inference"] for t in timings), 1
        ),
        "forward_median_ms": round(statistics.median(t["inference"] for t in timings), 1),
    }


def measure_batching(
    service_pid: int, env: dict[str, str], series_dir: str, concurrency: int, rounds: int
) -> dict[str, Any]:
    """MR classifier requests/s as deployed (batch 8), then redeployed with batch 1."""
    os.environ.update(env)
    data_dir = Path(env["MMDX_DATA_DIR"])
    # Before `import ray`: Ray reads its auth mode at import (see serving.ray_runtime).
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(data_dir / "secrets" / "ray_token")
    import ray
    from ray import serve

    from serving.deployments.app import APP_NAME, CLASSIFIER_NAMES, build_app
    from serving.ray_runtime import RAY_NAMESPACE
    from serving.settings import Settings

    ray.init(address=gcs_address(service_pid), namespace=RAY_NAMESPACE, log_to_driver=False)
    try:
        arms: dict[str, dict[str, float]] = {}
        for batch_size in BATCH_SIZES:
            settings = Settings()
            if batch_size != settings.serve.max_batch_size:
                changed = settings.serve.model_copy(update={"max_batch_size": batch_size})
                settings = settings.model_copy(update={"serve": changed})
                serve.run(build_app(settings=settings), name=APP_NAME, route_prefix="/")
            handle = serve.get_deployment_handle(CLASSIFIER_NAMES["MR"], app_name=APP_NAME)
            arms[f"max_batch_size_{batch_size}"] = requests_per_second(
                handle, series_dir, concurrency, rounds
            )
    finally:
        ray.shutdown()  # disconnects this driver; the service's Ray stays up
    return {
        "concurrency": concurrency,
        "rounds": rounds,
        "arms": arms,
        "ratio_batch_8_over_1": round(
            arms["max_batch_size_8"]["requests_per_s"] / arms["max_batch_size_1"]["requests_per_s"],
            3,
        ),
    }


# Main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Print the latency and batching figures and a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="Timed studies per modality.")
    parser.add_argument("--concurrency", type=int, default=32, help="Requests in flight.")
    parser.add_argument("--rounds", type=int, default=3, help="Timed rounds per batch size.")
    parser.add_argument("--stable-after", type=float, default=1.0, help="Stability wait, s.")
    args = parser.parse_args(argv)
    from tests.integration.netns import rerun_in_loopback_namespace

    status = rerun_in_loopback_namespace(
        "bench.service_latency", sys.argv[1:] if argv is None else argv, prefix="mmdxlat"
    )
    if status is not None:
        sys.exit(status)

    from serving.store import StudyStore

    with tempfile.TemporaryDirectory(prefix="mmdx-latency-") as scratch_name:
        scratch = Path(scratch_name)
        env, token = prepare(scratch / "data")
        env["MMDX_LISTENER__STABLE_AFTER_S"] = str(args.stable_after)
        started = time.perf_counter()
        with running_service(env, scratch / "serve.log") as service:
            startup_s = time.perf_counter() - started
            base_url = f"http://127.0.0.1:{env['MMDX_HTTP_PORT']}"
            latency, uids = measure_latency(
                scratch, base_url, token, int(env["MMDX_DICOM_PORT"]), args.repeats
            )
            store = StudyStore(Path(env["MMDX_DATA_DIR"]) / "store")
            series_dir = str(store.study_files(uids["MR"])[0].parent)
            batching = measure_batching(service.pid, env, series_dir, args.concurrency, args.rounds)
    summary = {
        "benchmark": "service_latency",
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "service": {
            "startup_s": round(startup_s, 1),
            "stable_after_s": args.stable_after,
            "job_poll_s": JOB_POLL_S,
            "models": "random-init resnet10_3d_tiny (MR, 32^3) and r2plus1d_tiny_echo (8 x 32^2)",
            "embedder": CLIP_CONFIG,
        },
        "latency_last_instance_to_result": latency,
        "batching_mr_classifier_by_handle": batching,
    }
    _print_table(summary)
    print(json.dumps(summary, indent=2))


def _print_table(summary: dict[str, Any]) -> None:
    service = summary["service"]
    print(
        f"mmdx serve latency and batching (engineering figures, {os.cpu_count()} cores; "
        f"service up in {service['startup_s']} s)"
    )
    for modality, row in summary["latency_last_instance_to_result"].items():
        print(
            f"  {modality}: last instance -> result stored: median {row['median_s']:.2f} s "
            f"(pipeline {row['pipeline_median_ms']:.0f} ms; stable-after "
            f"{service['stable_after_s']} s, job poll {service['job_poll_s']} s)"
        )
    batching = summary["batching_mr_classifier_by_handle"]
    print(f"  MR classifier by handle, {batching['concurrency']} requests in flight:")
    for name, arm in batching["arms"].items():
        print(
            f"    {name}: {arm['requests_per_s']:.1f} requests/s (mean batch "
            f"{arm['mean_batch_size']:.1f}; per study: prepare {arm['prepare_median_ms']:.0f} ms, "
            f"its batch's forward {arm['forward_median_ms']:.0f} ms)"
        )
    print(f"    batch 8 / batch 1: {batching['ratio_batch_8_over_1']:.2f}x")


if __name__ == "__main__":
    main()
