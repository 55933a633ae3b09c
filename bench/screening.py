"""Retrospective screening: `mmdx screen` (Ray Data) against a naive serial loop, same run.

Both arms screen the same studies of one synthetic archive (``mmdx synth``: MRI and echo
mixed, read from the DICOM studies as a PACS archive holds them, or with ``--source
files`` from the NIfTI volumes and AVI loops) with the same two bundles:

- baseline: the loop a script would write, one study at a time in this process: for each
  manifest row, :func:`imaging.predict.predict_path` (what ``mmdx predict`` runs, no heat
  map) reads, preprocesses and predicts it (torch with its default threads);
- candidate: :func:`serving.screening.run.run_screen` (what ``mmdx screen`` runs) on a
  local Ray started beforehand; Ray's start-up is printed apart (paid once per session),
  everything else (bundle checks, discovery, Parquet writes) is in the screen's time.

The bundles are random-init networks of the CPU training recipes (ResNet-10 tiny on
48^3 at 4 mm, tiny R(2+1)D on 16 x 64 x 64 clips; time does not depend on the weights)
unless ``--mri-bundle``/``--echo-bundle`` name trained ones. Figures: wall time and
studies per hour of each arm, their ratio (goal: at least 1.8x on 2 cores), and the CPU
utilisation of this process tree (CPU seconds of this process and every descendant, Ray's
included, over wall time x cores). Both arms must agree on every probability. Usage:

    python -m bench.screening [--studies 40] [--batch-size 8] [--workers 1] [--source dicom]

Ray binds every interface: run as root, the bench re-runs itself inside a network
namespace holding only ``lo`` and stops what is left there by PID.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOURCES = ("dicom", "files")
SAMPLE_SECONDS = 0.2


@dataclass(frozen=True)
class Arm:
    """One arm's figures."""

    name: str
    studies: int
    failed: int
    seconds: float
    cpu_seconds: float

    def per_hour(self) -> float:
        return self.studies / self.seconds * 3600.0

    def utilisation(self, cores: int) -> float:
        return self.cpu_seconds / (self.seconds * cores)


class TreeCPU:
    """CPU seconds used by this process and all its descendants while it is running.

    A sampler thread records each process's latest CPU time, so processes that start and
    end in between (Ray workers) count up to their last sample.
    """

    def __init__(self) -> None:
        import psutil

        self._root = psutil.Process()
        self._baseline = self._sample()
        self._latest = dict(self._baseline)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _sample(self) -> dict[int, float]:
        import psutil

        times = {}
        for process in [self._root, *self._root.children(recursive=True)]:
            try:
                cpu = process.cpu_times()
            except psutil.Error:  # ended since it was listed
                continue
            times[process.pid] = cpu.user + cpu.system
        return times

    def _poll(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._latest.update(self._sample())

    @contextmanager
    def measure(self) -> Iterator[Callable[[], float]]:
        """Yields a function giving the CPU seconds used since entering."""
        self._thread.start()
        try:
            yield lambda: sum(t - self._baseline.get(pid, 0.0) for pid, t in self._latest.items())
        finally:
            self._latest.update(self._sample())
            self._stop.set()
            self._thread.join()


def build_bundles(folder: Path, source: str) -> tuple[Path, Path]:
    """Random-init MR (AD/CN) and echo (EF) bundles of the CPU recipes' sizes."""
    import torch

    from imaging.bundle import save_bundle
    from imaging.models.factory import create_model, load_model_config
    from imaging.transforms.pipelines import EchoPreprocessing, MRIPreprocessing

    torch.manual_seed(0)
    mri = save_bundle(
        create_model("resnet10_3d_tiny"),
        load_model_config("resnet10_3d_tiny"),
        folder / "mri_ad_bench",
        preprocessing=MRIPreprocessing(
            source="dicom" if source == "dicom" else "nifti",
            spacing=(4.0, 4.0, 4.0),
            spatial_size=(48, 48, 48),
            augment=False,
        ),
        class_names=["CN", "AD"],
        name="mri_ad_bench",
        description="random-init ResNet-10 tiny for the screening bench",
    )
    echo = save_bundle(
        create_model("r2plus1d_tiny_echo"),
        load_model_config("r2plus1d_tiny_echo"),
        folder / "echo_ef_bench",
        preprocessing=EchoPreprocessing(
            source="dicom" if source == "dicom" else "echonet",
            spatial_size=64,
            clip_length=16,
            period=2,
            augment=False,
        ),
        name="echo_ef_bench",
        description="random-init tiny R(2+1)D for the screening bench",
    )
    return mri, echo


def ensure_archive(folder: Path, studies: int) -> Path:
    """The archive's manifest; generated (half MRI, half echo, 3 sites) unless it exists."""
    from imaging.synthetic.archive import ArchiveSpec, generate_archive

    manifest = folder / "manifest.csv"
    if manifest.is_file() and sum(1 for _ in manifest.open()) - 1 == studies:
        return manifest
    mri = studies // 2
    generate_archive(ArchiveSpec(out_dir=folder, mri_studies=mri, echo_studies=studies - mri,
                                 sites=3, seed=0))  # fmt: skip
    return manifest


def manifest_inputs(manifest: Path, source: str) -> list[tuple[str, str, Path]]:
    """(study id, modality, path to read) per manifest row, as the screen's discovery picks."""
    columns = {"MR": "nifti_path", "US": "video_path"} if source == "files" else {}
    with manifest.open(newline="") as handle:
        return [
            (row["study_instance_uid"], row["modality"],
             manifest.parent / row[columns.get(row["modality"], "dicom_path")])
            for row in csv.DictReader(handle)
        ]  # fmt: skip


def serial_loop(
    studies: list[tuple[str, str, Path]], bundles: dict[str, Any]
) -> dict[str, float | None]:
    """Predict every study in turn as ``mmdx predict`` does; probability by study id.

    A study that cannot be read is recorded as None and the loop goes on.
    """
    from imaging.errors import ImagingError
    from imaging.predict import predict_path

    probabilities: dict[str, float | None] = {}
    for study_id, modality, path in studies:
        try:
            result = predict_path(path, bundles[modality], explain=False)
        except ImagingError:
            probabilities[study_id] = None
            continue
        probabilities[study_id] = result["probability"]
    return probabilities


def run_serial(
    manifest: Path, bundle_dirs: tuple[Path, Path], source: str
) -> tuple[Arm, dict[str, float | None]]:
    """The baseline arm, after one untimed warm-up study (imports, first-call set-up)."""
    from imaging.bundle import load_bundle

    bundles = {}
    for folder in bundle_dirs:
        loaded = load_bundle(folder)
        bundles[loaded.modality] = loaded
    studies = manifest_inputs(manifest, source)
    serial_loop(studies[:1], bundles)
    tree = TreeCPU()
    with tree.measure() as cpu_seconds:
        started = time.perf_counter()
        probabilities = serial_loop(studies, bundles)
        seconds = time.perf_counter() - started
        used = cpu_seconds()
    failed = sum(p is None for p in probabilities.values())
    arm = Arm("serial loop (mmdx predict)", len(probabilities), failed, seconds, used)
    return arm, probabilities


def run_parallel(
    manifest: Path,
    bundle_dirs: tuple[Path, Path],
    out: Path,
    settings: Any,
    *,
    batch_size: int,
    workers: int,
) -> tuple[Arm, dict[str, float | None], float, float | None]:
    """The candidate arm: ``run_screen`` on a local Ray started first (timed apart)."""
    from serving.ray_runtime import start_ray
    from serving.screening.run import run_screen

    started = time.perf_counter()
    # Before `import ray`: it reads the auth mode at import. num_cpus: the cores this
    # process may use (taskset), which Ray would not see by itself.
    start_ray(settings, num_cpus=len(os.sched_getaffinity(0)))
    ray_start = time.perf_counter() - started
    import ray

    try:
        tree = TreeCPU()
        with tree.measure() as cpu_seconds:
            started = time.perf_counter()
            summary = run_screen(
                manifest, out, models=list(bundle_dirs), batch_size=batch_size,
                workers=workers, progress=False, settings=settings,
            )  # fmt: skip
            seconds = time.perf_counter() - started
            used = cpu_seconds()
    finally:
        ray.shutdown()
    table = _results(out)
    probabilities = dict(zip(table["study_id"], table["probability"], strict=True))
    arm = Arm(
        "mmdx screen (Ray Data)", summary.done + summary.failed, summary.failed, seconds, used
    )
    return arm, probabilities, ray_start, steady_per_hour(table["finished_at"])


def _results(out: Path) -> dict[str, list[Any]]:
    import pyarrow.parquet as pq

    table = pq.read_table(out / "results")
    names = ("study_id", "probability", "finished_at")
    return {name: table.column(name).to_pylist() for name in names}


def steady_per_hour(finished_at: list[Any]) -> float | None:
    """Studies per hour after the first batch (the pipeline's start-up left out).

    The span runs from the first result to the last; the rows of the first batch (those
    within half a second of the first result) are where it starts, so they are not counted.
    """
    times = sorted(finished_at)
    first, last = times[0], times[-1]
    after_first = sum(1 for t in times if (t - first).total_seconds() > 0.5)
    span = (last - first).total_seconds()
    return after_first / span * 3600.0 if span > 0 and after_first else None


def max_difference(a: dict[str, float | None], b: dict[str, float | None]) -> float:
    """Largest |difference| of the two arms' probabilities; inf if they differ in studies."""
    if a.keys() != b.keys():
        return float("inf")
    largest = 0.0
    for key, value in a.items():
        other = b[key]
        if (value is None) != (other is None):
            return float("inf")
        if value is not None and other is not None:
            largest = max(largest, abs(value - other))
    return largest


def main(argv: list[str] | None = None) -> None:
    """Print studies per hour of both arms, their ratio and CPU utilisation."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=40, help="Half MRI, half echo.")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="Inference actors.")
    parser.add_argument("--source", choices=SOURCES, default="dicom")
    parser.add_argument("--mri-bundle", type=Path, help="A trained MR bundle instead.")
    parser.add_argument("--echo-bundle", type=Path, help="A trained echo bundle instead.")
    parser.add_argument("--archive", type=Path, help="Keep (and reuse) the archive here.")
    args = parser.parse_args(argv)
    if args.studies < 2:
        parser.error("--studies must be at least 2")
    from tests.integration.netns import rerun_in_loopback_namespace

    status = rerun_in_loopback_namespace(
        "bench.screening", sys.argv[1:] if argv is None else argv, prefix="mmdxscr", ray=True
    )
    if status is not None:
        if status != 0:
            raise SystemExit(status)
        return

    from serving.settings import Settings

    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="mmdx-bench-screen-") as scratch:
        work = Path(scratch)
        manifest = ensure_archive(args.archive or work / "archive", args.studies)
        built = build_bundles(work / "models", args.source)
        bundle_dirs = (args.mri_bundle or built[0], args.echo_bundle or built[1])
        settings = Settings(data_dir=work / "data")
        serial, serial_p = run_serial(manifest, bundle_dirs, args.source)
        screen, screen_p, ray_start, steady = run_parallel(
            manifest, bundle_dirs, work / "screen", settings,
            batch_size=args.batch_size, workers=args.workers,
        )  # fmt: skip
    print(
        f"screening {args.studies} studies (MRI and echo, {args.source}), {cores} cores, "
        f"batch {args.batch_size}, {args.workers} inference actor(s) (engineering figures)"
    )
    print(f"  {'arm':28s} {'wall s':>8s} {'studies/h':>10s} {'failed':>6s} {'CPU util':>8s}")
    for arm in (serial, screen):
        print(
            f"  {arm.name:28s} {arm.seconds:8.1f} {arm.per_hour():10,.0f} {arm.failed:6d} "
            f"{arm.utilisation(cores):8.0%}"
        )
    print(
        f"  speed-up (screen studies/h / serial studies/h): "
        f"{screen.per_hour() / serial.per_hour():.2f}x (goal >= 1.8x on 2 cores)"
    )
    if steady is not None:
        print(
            f"  screen after its first batch (pipeline start-up left out): {steady:,.0f} "
            f"studies/h, {steady / serial.per_hour():.2f}x the serial loop"
        )
    print(f"  Ray start-up, once per session, not in the screen's time: {ray_start:.1f} s")
    print(
        f"  same predictions: max |probability difference| {max_difference(serial_p, screen_p):.2e}"
    )


if __name__ == "__main__":
    main()
