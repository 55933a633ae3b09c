"""`make bench`: run every benchmark, each against its named baseline, and rewrite
docs/benchmarks.md with what they printed.

    python -m bench [--quick] [--only NAME ...] [--no-write] [--doc PATH]

Each benchmark runs as its own process (``python -m bench.NAME ARGS``): several re-run
themselves in a network namespace, and a crash or an exit in one does not stop the
others. Its output (figures and ratios against the baseline it measured in the same run)
goes into the page verbatim, under the command that reproduces it, the baseline, and the
machine. ``--quick`` runs each with smaller sizes (stated in the page), for a first look.
The evaluation experiments (``site_leakage``, ``transfer_learning``: hours of training) and
``dcm2niix_agreement`` (needs an archive; the tests run it) are run on their own.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
TIMEOUT_S = 4 * 3600


@dataclass(frozen=True)
class Benchmark:
    """One benchmark module, what it is measured against, and its arguments."""

    name: str
    what: str
    baseline: str
    args: tuple[str, ...] = ()
    quick_args: tuple[str, ...] = ()


BENCHMARKS = (
    Benchmark(
        "synth_throughput", "Sample-archive generation, studies/s",
        "the same generator in one process (workers=1)", (), ("--mri", "8", "--echo", "8"),
    ),
    Benchmark(
        "series_to_volume", "MR series (176 slices of MNI152) to a volume and NIfTI",
        "dcm2niix on the same series", (), ("--repeats", "2"),
    ),
    Benchmark(
        "cine_decode", "120-frame JPEG echo loop (pydicom-data) decoded to RGB",
        "dcmtk dcmdjpeg and PyAV (FFmpeg) on the same loop", (), ("--repeats", "2"),
    ),
    Benchmark(
        "inference", "Inference per study, MRI DenseNet121 3D and echo R(2+1)D-18",
        "the machine's dense matmul GFLOP/s in the same run", (), ("--quick",),
    ),
    Benchmark(
        "vector_index", "Similar-case search, recall@10 and latency",
        "exact search (FAISS flat); LanceDB ANN and FAISS HNSW against it", (),
        ("--n", "100000", "--queries", "100", "--centres", "1000"),
    ),
    Benchmark(
        "dicom_ingest", "C-STORE ingest, instances/s and MB/s",
        "dcmtk storescp and Orthanc receiving the same storescu sends", (),
        ("--small", "300", "--large", "10"),
    ),
    Benchmark(
        "load", "32 clients on prediction, similar-case and QIDO endpoints",
        "the same app without admission control", (), ("--seconds", "20"),
    ),
    Benchmark(
        "screening", "Retrospective screening, studies/h and CPU use",
        "a naive serial loop (read, preprocess, predict one study at a time)", (),
        ("--studies", "100"),
    ),
    Benchmark(
        "service_latency", "Live service: last instance to result; batching",
        "the MR classifier redeployed with max_batch_size 1", (), ("--repeats", "2"),
    ),
)  # fmt: skip


def machine() -> str:
    """CPU model, cores, memory, GPU and library versions, one line."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        kib = int(meminfo.read_text().split("\n", 1)[0].split()[1])
        memory = f", {kib / 1024**2:.0f} GiB"
    gpu = "no GPU"
    try:
        names = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.split("\n")  # fmt: skip
        gpu = ", ".join(name for name in names if name) or gpu
    except (OSError, subprocess.SubprocessError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{memory}, {gpu}, Python {platform.python_version()}"


def run(benchmark: Benchmark, quick: bool) -> tuple[str, str, float, int]:
    """Run one benchmark; its command line, output, seconds and exit status."""
    args = benchmark.quick_args if quick else benchmark.args
    command = [sys.executable, "-m", f"bench.{benchmark.name}", *args]
    shown = " ".join(["python", "-m", f"bench.{benchmark.name}", *args])
    print(f"\n=== {shown}", flush=True)
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
        output, status = (
            done.stdout + (done.stderr[-3000:] if done.returncode else ""),
            done.returncode,
        )
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        output, status = f"{partial}\n(timed out after {TIMEOUT_S} s)", -1
    seconds = time.perf_counter() - started
    print(output, flush=True)
    return shown, output, seconds, status


def page(results: list[tuple[Benchmark, str, str, float, int]], quick: bool) -> str:
    """docs/benchmarks.md from the runs."""
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m bench`); do not edit by hand. Each section is one",
        "benchmark's output: its figures and the ratios against the baseline it measured in the",
        "same run, on the same machine. Absolute times on a shared machine are noisy; the",
        "ratios are the figures to compare. Data are synthetic or shipped test files: these",
        "are engineering figures, not clinical performance. Not for diagnostic use.",
        "",
        "Not run here: the evaluation experiments `bench.site_leakage` and",
        "`bench.transfer_learning` (they train models for hours; figures in the README) and",
        "`bench.dcm2niix_agreement ARCHIVE` (a check against dcm2niix that the tests run).",
        "",
        f"- Run: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}"
        + (" with `--quick` (smaller sizes, as each command shows)" if quick else ""),
        f"- Machine: {machine()}",
        "",
        "| benchmark | measures | baseline (same run) | command | status |",
        "|---|---|---|---|---|",
    ]
    for benchmark, command, _, seconds, status in results:
        verdict = f"ok, {seconds:.0f} s" if status == 0 else f"failed ({status})"
        lines.append(
            f"| [{benchmark.name}](#{benchmark.name.replace('_', '-')}) | {benchmark.what} "
            f"| {benchmark.baseline} | `{command}` | {verdict} |"
        )
    for benchmark, command, output, _, _ in results:
        lines += [
            "",
            f"## {benchmark.name.replace('_', '-')}",
            "",
            f"{benchmark.what}. Baseline: {benchmark.baseline}. Reproduce: `{command}`.",
            "",
            "```",
            output.strip(),
            "```",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, a first look")
    parser.add_argument("--only", nargs="+", choices=[b.name for b in BENCHMARKS])
    parser.add_argument("--no-write", action="store_true", help="do not rewrite the page")
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(argv)
    chosen = [b for b in BENCHMARKS if args.only is None or b.name in args.only]
    results = [(b, *run(b, args.quick)) for b in chosen]
    if not args.no_write:
        args.doc.write_text(page(results, args.quick))
        print(f"\nwrote {args.doc}")
    return 0 if all(status == 0 for *_, status in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
