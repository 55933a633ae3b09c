"""Restart safety: `mmdx listen` killed (SIGKILL) mid-transfer loses no acknowledged instance.

The real console script runs as a subprocess; dcmtk's ``storescu`` sends 200 small MR
instances and its verbose log says which received a success status. After a restart
every acknowledged instance is in the store (complete) and the catalog, and resending
the lot stores each instance once. A job a killed process left ``processing`` is
requeued and completed by the next runtime.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest

from imaging.synthetic.mr_dicom import write_mr_series
from serving.catalog import Catalog
from serving.runtime import IngestRuntime
from serving.settings import Settings
from serving.store import StudyStore
from tests.synthetic_cases import make_mr_volume, make_study

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed"),
]

MMDX = Path(sys.executable).with_name("mmdx")
AE_TITLE = "MMDX"
START_TIMEOUT_S = 30.0
SEND_TIMEOUT_S = 60.0
# dcmtk leaves Nagle's algorithm on unless told; with it, small C-STOREs crawl.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    """A TCP port free on loopback now (bound to port 0, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` every 10 ms until true; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM the process by PID, SIGKILL it if it has not ended after ``timeout_s``."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout_s)


@dataclass
class ListenProcess:
    """One running `mmdx listen`."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    stdout: Path

    @property
    def catalog_url(self) -> str:
        return f"sqlite:///{self.data_dir / 'catalog.sqlite'}"

    def output(self) -> str:
        return self.stdout.read_text()

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or closed."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


@contextmanager
def mmdx_listen(data_dir: Path, **settings: str) -> Iterator[ListenProcess]:
    """`mmdx listen` on a free loopback port, storing into ``data_dir``; stopped on exit.

    Extra ``settings`` are environment variables (``MMDX_LISTENER__STABLE_AFTER_S=...``).
    """
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    stdout = data_dir.parent / f"listen-{port}.out"
    env = {
        **DCMTK_ENV,
        "MMDX_DATA_DIR": str(data_dir),
        "MMDX_DICOM_PORT": str(port),
        "MMDX_DICOM_AE_TITLE": AE_TITLE,
        **settings,
    }
    with stdout.open("wb") as out, (data_dir.parent / f"listen-{port}.err").open("wb") as err:
        process = subprocess.Popen([str(MMDX), "listen"], stdout=out, stderr=err, env=env)
    running = ListenProcess(process, port, data_dir, stdout)
    try:
        wait_until(
            lambda: "mmdx listening" in running.output() or process.poll() is not None,
            START_TIMEOUT_S,
            "mmdx listen to start",
        )
        assert process.poll() is None, (data_dir.parent / f"listen-{port}.err").read_text()
        assert f"on 127.0.0.1:{port}" in running.output()
        yield running
    finally:
        stop_process(process)


def storescu_command(port: int, files: list[Path]) -> list[str]:
    """Verbose storescu that goes on after a failed file (``-nh``), files last."""
    return ["storescu", "-v", "-nh", "-aec", AE_TITLE, "127.0.0.1", str(port), *map(str, files)]


def store_outcomes(log: str) -> dict[str, str]:
    """Each file storescu sent, with the store response it got (``Success``, an error...).

    storescu -v logs ``Sending file: PATH`` before each request and ``Received Store
    Response (STATUS)`` after; a file with no response line got none (the peer died).
    """
    outcomes: dict[str, str] = {}
    current: str | None = None
    for line in log.splitlines():
        sending = re.search(r"Sending file: (.+)$", line)
        if sending:
            current = sending.group(1)
            outcomes[current] = "no response"
            continue
        response = re.search(r"Received Store Response \((.+)\)", line)
        if response and current is not None:
            outcomes[current] = response.group(1)
            current = None
    return outcomes


def write_instances(out_dir: Path, *, studies: int = 2, slices: int = 100) -> list[Path]:
    """``studies`` synthetic MR studies of ``slices`` single-frame 32x32 instances."""
    paths: list[Path] = []
    for index in range(studies):
        pixels = np.arange(slices * 32 * 32, dtype=np.float32).reshape(slices, 32, 32) + index
        study = make_study(study_instance_uid=f"2.25.{9100 + index}", accession_number=f"R{index}")
        paths += write_mr_series(
            make_mr_volume(pixels),
            study,
            out_dir=out_dir / f"study{index}",
            series_number=1,
            uid_seed=f"restart-{index}",
        )
    return paths


def stored_files(store_dir: Path) -> list[Path]:
    """Instances filed in the store (not the incoming folder, which starts with a dot)."""
    return list(store_dir.glob("[0-9]*/*/*.dcm"))


def test_killed_listener_keeps_every_acknowledged_instance_and_resend_adds_none(
    tmp_path: Path,
) -> None:
    files = write_instances(tmp_path / "outgoing")
    originals = {str(path): pydicom.dcmread(path) for path in files}
    data_dir = tmp_path / "data"
    store_dir = data_dir / "store"
    sender_log = tmp_path / "storescu-first.log"

    with mmdx_listen(data_dir) as first:
        with sender_log.open("wb") as log:
            sender = subprocess.Popen(
                storescu_command(first.port, files), stdout=log, stderr=subprocess.STDOUT,
                env=DCMTK_ENV,
            )  # fmt: skip
        try:
            wait_until(lambda: len(stored_files(store_dir)) >= 60, SEND_TIMEOUT_S, "60 stored")
            first.kill()
            sender.wait(SEND_TIMEOUT_S)
        finally:
            stop_process(sender)
    outcomes = store_outcomes(sender_log.read_text())
    acknowledged = [path for path, outcome in outcomes.items() if outcome == "Success"]
    assert outcomes, sender_log.read_text()
    assert 50 <= len(acknowledged) < len(files), "the kill must land mid-transfer"
    assert set(outcomes.values()) <= {"Success", "no response"}

    with mmdx_listen(data_dir, MMDX_LISTENER__STABLE_AFTER_S="0.5") as second:
        catalog = Catalog.open(second.catalog_url)
        store = StudyStore(store_dir)
        try:
            catalogued = {row["SOPInstanceUID"] for row in catalog.search_instances({})}
            assert {str(originals[path].SOPInstanceUID) for path in acknowledged} <= catalogued
            by_uid = {str(dataset.SOPInstanceUID): dataset for dataset in originals.values()}
            for uid in catalogued:  # acknowledged or not, a catalogued file is whole
                original = by_uid[uid]
                kept = store.instance_path(
                    original.StudyInstanceUID, original.SeriesInstanceUID, uid
                )
                assert kept is not None, f"{uid} is catalogued but not in the store"
                assert pydicom.dcmread(kept) == original  # every element, pixels included

            result = subprocess.run(
                storescu_command(second.port, files), env=DCMTK_ENV, capture_output=True,
                text=True, timeout=SEND_TIMEOUT_S,
            )  # fmt: skip
            resent = store_outcomes(result.stderr)
            assert list(resent.values()) == ["Success"] * len(files), result.stderr

            rows = catalog.search_instances({})
            expected = sorted(str(dataset.SOPInstanceUID) for dataset in originals.values())
            assert sorted(row["SOPInstanceUID"] for row in rows) == expected
            assert sorted(path.stem for path in stored_files(store_dir)) == expected
            for study in ("2.25.9100", "2.25.9101"):
                assert len(catalog.list_instances(study)) == 100
            # Ingest only: the stable studies are queued for a processing node.
            wait_until(
                lambda: len(catalog.jobs.list_jobs(state="received")) == 2,
                10.0,
                "both studies queued as jobs",
            )
            assert {job.study_instance_uid for job in catalog.jobs.list_jobs()} == {
                "2.25.9100",
                "2.25.9101",
            }
        finally:
            catalog.close()
        os.kill(second.process.pid, signal.SIGTERM)
        assert second.process.wait(15) == 0
        assert "mmdx listener stopped (SIGTERM)" in second.output()


HANGING_PROCESSOR = textwrap.dedent(
    """
    import sys, threading
    from serving.runtime import IngestRuntime
    from serving.settings import Settings

    def hang(study_instance_uid):
        print("processing", study_instance_uid, flush=True)
        threading.Event().wait()  # never returns: the process is killed mid-job

    settings = Settings(
        data_dir=sys.argv[1], dicom_port=int(sys.argv[2]), listener={"stable_after_s": 0.2}
    )
    runtime = IngestRuntime(settings, process=hang, poll_interval_s=0.1)
    runtime.start()
    print("ready", flush=True)
    runtime.wait()
    """
)


def test_job_left_processing_by_a_killed_process_is_resumed_and_completed(
    tmp_path: Path,
) -> None:
    files = write_instances(tmp_path / "outgoing", studies=1, slices=3)
    data_dir = tmp_path / "data"
    port = free_port()
    stdout = tmp_path / "processor.out"
    with stdout.open("wb") as out:
        processor = subprocess.Popen(
            [sys.executable, "-c", HANGING_PROCESSOR, str(data_dir), str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=DCMTK_ENV,
        )  # fmt: skip
    try:
        wait_until(lambda: "ready" in stdout.read_text(), START_TIMEOUT_S, "the processor")
        sent = subprocess.run(
            storescu_command(port, files), env=DCMTK_ENV, capture_output=True, text=True,
            timeout=SEND_TIMEOUT_S,
        )  # fmt: skip
        assert list(store_outcomes(sent.stderr).values()) == ["Success"] * 3, sent.stderr
        wait_until(lambda: "processing" in stdout.read_text(), 10.0, "the job to start")
        os.kill(processor.pid, signal.SIGKILL)
        processor.wait(10)
    finally:
        stop_process(processor)

    calls: list[str] = []

    def classify(study_instance_uid: str) -> dict[str, object]:
        calls.append(study_instance_uid)
        return {"prediction": "CN", "model_versions": {"mri": "test-1"}}

    settings = Settings(data_dir=data_dir, dicom_port=free_port(), listener={"stable_after_s": 0.2})
    runtime = IngestRuntime(settings, process=classify, poll_interval_s=0.1)
    try:
        (interrupted,) = runtime.catalog.jobs.list_jobs()
        assert (interrupted.study_instance_uid, interrupted.state) == ("2.25.9100", "processing")
        report = runtime.resume_unfinished()
        assert (report.requeued, report.gave_up) == ([interrupted.id], [])
        assert runtime.catalog.jobs.get(interrupted.id).state == "received"  # type: ignore[union-attr]
        runtime.start()
        wait_until(
            lambda: runtime.catalog.jobs.get(interrupted.id).state == "done",  # type: ignore[union-attr]
            10.0,
            "the resumed job to finish",
        )
        result = runtime.catalog.latest_result("2.25.9100")
        assert result is not None and result.job_id == interrupted.id
        assert result.payload["prediction"] == "CN"
        assert result.model_versions == {"mri": "test-1"}
        assert calls == ["2.25.9100"]
        assert runtime.catalog.jobs.get(interrupted.id).attempts == 2  # type: ignore[union-attr]
    finally:
        runtime.stop()


def test_start_removes_stale_incoming_files_and_keeps_fresh_ones(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", dicom_port=free_port())
    incoming = StudyStore(settings.store_dir).temp_dir()
    stale, fresh = incoming / "stale.part", incoming / "fresh.part"
    stale.write_bytes(b"half an instance")
    fresh.write_bytes(b"an instance arriving now")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    runtime = IngestRuntime(settings)
    try:
        runtime.start()
        assert runtime.listener.running and runtime.port > 0
        assert sorted(path.name for path in incoming.iterdir()) == ["fresh.part"]
    finally:
        runtime.stop()
    assert not runtime.listener.running
