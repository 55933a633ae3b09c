"""C-STORE ingest: mmdx (`mmdx listen`) against dcmtk `storescp` and Orthanc, same run.

The same sender (dcmtk ``storescu``, one association per set, ``TCP_NODELAY=1`` for
every process) sends small MR instances, then large uncompressed ultrasound cine loops,
to each target in turn: mmdx (durable: each file fsynced and catalogued before its
success status), ``storescp`` writing to disk (no fsync) and Orthanc (its own config in a
temporary folder; ``SyncStorageArea`` on, its default: one fdatasync per stored file, no
folder sync, its SQLite index at ``SYNCHRONOUS=NORMAL``, seen with strace). The maximum PDU
is 128 KiB everywhere (storescu's own cap). Figures: instances/s and MB/s per target,
and the ratios mmdx/Orthanc and mmdx/storescp. Usage:

    python -m bench.dicom_ingest [--small 1000] [--large 50] [--large-frames 32]

Orthanc binds every interface: run as root, the whole bench re-runs itself inside a
network namespace holding only ``lo``; elsewhere the Orthanc arm is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import UID

from imaging.synthetic.echo_cine import EchoAppearance, synthesize_a4c_cine
from imaging.synthetic.mr_dicom import write_mr_series
from imaging.synthetic.records import (
    MRVolume,
    Site,
    SyntheticPatient,
    SyntheticStudy,
    deterministic_uid,
)
from imaging.synthetic.us_dicom import write_us_multiframe

ORTHANC = Path("/usr/sbin/Orthanc")
MAX_PDU_BYTES = 131_072  # dcmtk's upper bound; storescu sends no larger PDUs to anyone
START_TIMEOUT_S = 60.0
SEND_TIMEOUT_S = 3600.0
MB = 1_000_000
SENDER_ENV = {**os.environ, "TCP_NODELAY": "1"}


# Data ---------------------------------------------------------------------------------


def _study(index: int, description: str) -> SyntheticStudy:
    return SyntheticStudy(
        patient=SyntheticPatient(f"BENCH{index:04d}", f"Bench^{index}", date(1960, 1, 1), "F"),
        site=Site("bench", "Bench Hospital", "SIEMENS", "Prisma", "BENCH01"),
        study_instance_uid=deterministic_uid("bench-study", description, index),
        accession_number=f"B{index:05d}",
        study_date=date(2024, 1, 2),
        study_time="101500",
        referring_physician_name="Referrer^Rita",
        study_description=description,
    )


def write_small_mr(
    folder: Path, count: int, *, seed: str, size: int = 128, per_study: int = 100
) -> None:
    """``count`` single-frame MR instances (``size`` x ``size``, 16 bit), 100 per study.

    Every UID derives from ``seed``.
    """
    rng = np.random.default_rng(0)
    for index, start in enumerate(range(0, count, per_study)):
        slices = min(per_study, count - start)
        pixels = rng.uniform(0, 1000, size=(slices, size, size)).astype(np.float32)
        volume = MRVolume(
            pixels=pixels,
            row_direction=np.array([1.0, 0.0, 0.0]),
            column_direction=np.array([0.0, 1.0, 0.0]),
            slice_origins=np.outer(np.arange(slices), [0.0, 0.0, 1.0]),
            pixel_spacing=(1.0, 1.0),
            slice_thickness=1.0,
        )
        write_mr_series(
            volume,
            _study(index, f"BENCH MR {seed}"),
            out_dir=folder / f"study{index:03d}",
            series_number=1,
            uid_seed=f"{seed}-{index}",
        )


def write_large_us(folder: Path, count: int, *, frames: int, seed: str) -> None:
    """``count`` uncompressed RGB cine loops of 480 x 640 x ``frames``, one study each.

    One loop is rendered, then copied under new study, series and instance UIDs (from
    ``seed``).
    """
    study = _study(0, "BENCH ECHO")
    cine = synthesize_a4c_cine(
        ejection_fraction=0.55, edv_ml=120.0, heart_rate_bpm=70.0, frame_rate_fps=30.0,
        rows=480, columns=640, study=study, rng=np.random.default_rng(0),
        appearance=EchoAppearance(), number_of_frames=frames,
    )  # fmt: skip
    template = write_us_multiframe(
        cine, study, path=folder / "template.tmp", encoding="rgb", uid_seed="bench"
    )
    dataset = pydicom.dcmread(template)
    template.unlink()
    for index in range(count):
        dataset.StudyInstanceUID = deterministic_uid(seed, "us-study", index)
        dataset.SeriesInstanceUID = deterministic_uid(seed, "us-series", index)
        dataset.SOPInstanceUID = deterministic_uid(seed, "us-instance", index)
        dataset.file_meta.MediaStorageSOPInstanceUID = UID(dataset.SOPInstanceUID)
        dataset.save_as(folder / f"us{index:03d}.dcm", enforce_file_format=True)


# Targets ------------------------------------------------------------------------------


@dataclass
class Target:
    """A running C-STORE SCP and how to count what it stored."""

    name: str
    ae_title: str
    port: int
    count_stored: Callable[[], int]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_echo(process: subprocess.Popen[bytes], ae_title: str, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    command = ["echoscu", "-aec", ae_title, "127.0.0.1", str(port)]
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{ae_title} exited with {process.returncode} while starting")
        if subprocess.run(command, env=SENDER_ENV, capture_output=True, timeout=30).returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{ae_title} did not answer C-ECHO within {START_TIMEOUT_S} s")


@contextmanager
def _running(
    command: list[str], log: Path, ae_title: str, port: int, env: dict[str, str] | None = None
) -> Iterator[None]:
    """Start ``command`` (``TCP_NODELAY=1`` and ``env`` added to this environment), wait
    until it answers C-ECHO, stop it by PID on exit."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**SENDER_ENV, **(env or {})}
        )
    try:
        _wait_for_echo(process, ae_title, port)
        yield
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(30)


@contextmanager
def mmdx_target(work: Path) -> Iterator[Target]:
    """`mmdx listen` on a free loopback port, storing into ``work``."""
    from serving.catalog import Catalog

    port, data_dir = free_port(), work / "mmdx"
    command = [str(Path(sys.executable).with_name("mmdx")), "listen"]
    settings = {
        "MMDX_DATA_DIR": str(data_dir),
        "MMDX_DICOM_PORT": str(port),
        "MMDX_DICOM_AE_TITLE": "MMDX",
        "MMDX_LISTENER__MAX_PDU_BYTES": str(MAX_PDU_BYTES),
    }

    def count() -> int:
        catalog = Catalog.open(f"sqlite:///{data_dir / 'catalog.sqlite'}")
        try:
            return len(catalog.search_instances({}))
        finally:
            catalog.close()

    with _running(command, work / "mmdx.log", "MMDX", port, settings):
        yield Target("mmdx", "MMDX", port, count)


@contextmanager
def storescp_target(work: Path) -> Iterator[Target]:
    """dcmtk ``storescp`` accepting every transfer syntax, writing files into ``work``."""
    port, out_dir = free_port(), work / "storescp"
    out_dir.mkdir()
    command = ["storescp", "-aet", "STORESCP", "+xa", "--max-pdu", str(MAX_PDU_BYTES),
               "-od", str(out_dir), str(port)]  # fmt: skip
    with _running(command, work / "storescp.log", "STORESCP", port):
        yield Target("storescp", "STORESCP", port, lambda: len(list(out_dir.iterdir())))


@contextmanager
def orthanc_target(work: Path) -> Iterator[Target]:
    """Orthanc with its own configuration: private ports, storage in ``work``, no plugins."""
    port, http_port = free_port(), free_port()
    config = {
        "Name": "mmdx-bench",
        "StorageDirectory": str(work / "orthanc" / "storage"),
        "IndexDirectory": str(work / "orthanc" / "index"),
        "StorageCompression": False,
        "SyncStorageArea": True,  # the default since 1.7.4: fdatasync of each file only
        "Plugins": [],
        "DicomServerEnabled": True,
        "DicomAet": "ORTHANC",
        "DicomPort": port,
        "DicomCheckCalledAet": False,
        "MaximumPduLength": MAX_PDU_BYTES,
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "SaveJobs": False,
    }
    config_path = work / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    with _running([str(ORTHANC), str(config_path)], work / "orthanc.log", "ORTHANC", port):

        def count() -> int:
            url = f"http://127.0.0.1:{http_port}/statistics"
            with urllib.request.urlopen(url, timeout=30) as reply:
                return int(json.load(reply)["CountInstances"])

        yield Target("orthanc", "ORTHANC", port, count)


# Measurement --------------------------------------------------------------------------


def send(target: Target, folder: Path) -> float:
    """Send every file under ``folder`` over one association; returns the wall time."""
    command = ["storescu", "-nh", "-aec", target.ae_title, "+sd", "+r",
               "127.0.0.1", str(target.port), str(folder)]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(
        command, env=SENDER_ENV, capture_output=True, text=True, timeout=SEND_TIMEOUT_S
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"storescu to {target.name} failed: {result.stderr[-2000:]}")
    return elapsed


StartTarget = Callable[[Path], AbstractContextManager[Target]]


def measure(
    start: StartTarget, work: Path, sets: dict[str, tuple[Path, int, int]]
) -> dict[str, dict[str, float]]:
    """Both sets into one fresh target: instances/s and MB/s, checked against its count.

    The ``warm-up`` set goes first, untimed: the first instance of each kind pays for
    lazy imports and caches in every server, which is not ingest throughput.
    """
    figures: dict[str, dict[str, float]] = {}
    with start(work) as target:
        expected = 0
        for name, (folder, count, size) in sets.items():
            if name == "warm-up":
                send(target, folder)
                expected += count
                continue
            os.sync()  # the previous arm's writeback must not land in this one's time
            seconds = send(target, folder)
            expected += count
            stored = target.count_stored()
            if stored != expected:
                raise RuntimeError(f"{target.name} holds {stored} instances, expected {expected}")
            figures[name] = {
                "instances": count,
                "seconds": round(seconds, 3),
                "instances_per_s": round(count / seconds, 2),
                "mb_per_s": round(size / MB / seconds, 2),
            }
    return figures


def folder_bytes(folder: Path) -> tuple[int, int]:
    files = [path for path in folder.rglob("*") if path.is_file()]
    return len(files), sum(path.stat().st_size for path in files)


def main(argv: list[str] | None = None) -> None:
    """Print instances/s and MB/s of each target, the ratios, and a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=1000, help="Small MR instances.")
    parser.add_argument("--large", type=int, default=50, help="Large US cine loops.")
    parser.add_argument("--large-frames", type=int, default=32, help="Frames per cine loop.")
    args = parser.parse_args(argv)
    arguments = sys.argv[1:] if argv is None else argv
    from tests.integration.netns import rerun_in_loopback_namespace

    status = rerun_in_loopback_namespace("bench.dicom_ingest", arguments, prefix="mmdxbench")
    if status is not None:
        sys.exit(status)

    from tests.integration.netns import only_loopback

    targets: dict[str, StartTarget] = {
        "mmdx": mmdx_target,
        "storescp": storescp_target,
    }
    skipped: dict[str, str] = {}
    if not ORTHANC.exists():
        skipped["orthanc"] = f"{ORTHANC} is not installed"
    elif not only_loopback():
        skipped["orthanc"] = "Orthanc binds every interface; run as root to isolate it"
    else:
        targets["orthanc"] = orthanc_target
    if shutil.which("storescu") is None:
        raise SystemExit("dcmtk (storescu, storescp, echoscu) is not installed")

    with tempfile.TemporaryDirectory(prefix="mmdx-bench-") as scratch:
        root = Path(scratch)
        write_small_mr(root / "warm-up", 1, seed="warm-up")
        write_large_us(root / "warm-up", 1, frames=args.large_frames, seed="warm-up")
        write_small_mr(root / "small", args.small, seed="bench")
        write_large_us(root / "large", args.large, frames=args.large_frames, seed="bench")
        sets: dict[str, tuple[Path, int, int]] = {}
        for name in ("warm-up", "small", "large"):
            count, size = folder_bytes(root / name)
            sets[name] = (root / name, count, size)
        results = {}
        for name, start in targets.items():
            work = root / f"target-{name}"
            work.mkdir()
            results[name] = measure(start, work, sets)
            shutil.rmtree(work)
    ratios = _ratios(results)
    _print_table(results, ratios, skipped)
    summary = {
        "benchmark": "dicom_ingest",
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "sets": {
            name: {"instances": count, "mb": round(size / MB, 1)}
            for name, (_, count, size) in sets.items()
        },
        "large_frames": args.large_frames,
        "max_pdu_bytes": MAX_PDU_BYTES,
        "results": results,
        "ratios": ratios,
        "skipped": skipped,
        "durability": {
            "mmdx": "fsync file and folder, SQLite synchronous=FULL, before the success status",
            "orthanc": "fdatasync per file; no folder sync; index SQLite SYNCHRONOUS=NORMAL",
            "storescp": "no fsync",
        },
    }
    print(json.dumps(summary, indent=2))


def _ratios(results: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """mmdx's instances/s over each baseline's, per set."""
    ratios: dict[str, dict[str, float]] = {}
    for baseline in ("orthanc", "storescp"):
        if baseline in results and "mmdx" in results:
            ratios[f"mmdx/{baseline}"] = {
                name: round(row["instances_per_s"] / results[baseline][name]["instances_per_s"], 3)
                for name, row in results["mmdx"].items()
            }
    return ratios


def _print_table(
    results: dict[str, dict[str, dict[str, float]]],
    ratios: dict[str, dict[str, float]],
    skipped: dict[str, str],
) -> None:
    print(f"C-STORE ingest (engineering figures, {os.cpu_count()} cores)")
    for target, figures in results.items():
        for name, row in figures.items():
            print(
                f"  {target:9s} {name:5s} {int(row['instances']):5d} in {row['seconds']:8.2f} s "
                f"{row['instances_per_s']:8.1f} instances/s {row['mb_per_s']:7.1f} MB/s"
            )
    for ratio, values in ratios.items():
        print(f"  {ratio}: " + ", ".join(f"{name} {value:.2f}x" for name, value in values.items()))
    for target, reason in skipped.items():
        print(f"  {target} skipped: {reason}")


if __name__ == "__main__":
    main()
