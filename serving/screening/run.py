"""``mmdx screen``: screen every study of an input, resumably, and report when labels are given.

:func:`run_screen` finds the studies (:func:`serving.screening.inputs.discover_studies`),
skips those the output folder records already, writes the discovery failures, runs the
rest on Ray Data (:func:`serving.screening.ray_pipeline.screen_batches`) appending each
finished batch as a Parquet part, keeps ``DIR/run.json`` up to date and, with a labels
CSV, writes ``summary.json`` and ``report.html``. One run at a time per output folder
(a lock file): a second one is refused at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imaging.predict import DISCLAIMER
from serving.screening.inputs import Discovery, StudyTask
from serving.screening.results_store import ResultsStore
from serving.screening.stages import failed_row

if TYPE_CHECKING:
    from serving.screening.bundles import ScreenModel
    from serving.settings import Settings

RUN_FILE = "run.json"
LOCK_FILE = ".screen.lock"
WORK_DIR = "input"
Batches = Iterable[Sequence[Mapping[str, Any]]]


class ScreenBusyError(RuntimeError):
    """Another screen is writing to the same output folder."""


@dataclass(frozen=True)
class ScreenSummary:
    """What a screen did.

    Attributes:
        out_dir: The output folder.
        run_info: The ``run.json`` written at the end.
        done: Studies screened by this run.
        failed: Studies that failed in this run (discovery included).
        skipped: Studies the folder had recorded already (not run again).
        total_done: ``done`` studies in the results, all runs.
        total_failed: ``failed`` studies in the results, all runs.
        seconds: This run's wall time.
        failures: This run's failures: ``study_id``, ``stage``, ``error``.
        report: The labels report's summary (``summary.json``), when labels were given.
    """

    out_dir: Path
    run_info: dict[str, Any]
    done: int
    failed: int
    skipped: int
    total_done: int
    total_failed: int
    seconds: float
    failures: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] | None = None

    @property
    def results_dir(self) -> Path:
        """Where the Parquet parts are."""
        return ResultsStore(self.out_dir).folder

    @property
    def studies_per_hour(self) -> float | None:
        """This run's rate (done and failed studies per hour of wall time)."""
        finished = self.done + self.failed
        return finished / self.seconds * 3600.0 if self.seconds > 0 and finished else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (``--json``)."""
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        data["results_dir"] = str(self.results_dir)
        data["studies_per_hour"] = self.studies_per_hour
        data["disclaimer"] = DISCLAIMER
        return data


def run_screen(
    input_path: str | Path,
    out_dir: str | Path,
    *,
    address: str | None = None,
    models: Sequence[str | Path] | None = None,
    labels: str | Path | None = None,
    batch_size: int = 8,
    workers: int = 1,
    retry_failed: bool = False,
    progress: bool = True,
    settings: Settings | None = None,
) -> ScreenSummary:
    """Screen every study of ``input_path`` into ``out_dir``; resume where a run stopped.

    Args:
        input_path: A DICOM folder or zip, a BIDS folder, an EchoNet folder or a manifest CSV.
        out_dir: The output folder (``results/``, ``run.json``, the report).
        address: A Ray cluster to run on; None starts a local Ray on loopback.
        models: Bundle names or folders (one per modality); default the settings' bundles.
        labels: A labels CSV (the ``mmdx synth`` manifest): write the report too.
        batch_size: Studies per forward pass.
        workers: Inference actors.
        retry_failed: Run studies again that failed in an earlier run.
        progress: Show a progress bar (done, failed, rate, ETA) on stderr.
        settings: The installation's settings; default :func:`get_settings`.

    Raises:
        ScreenInputError: The input is none of the four kinds.
        ModelChoiceError: No model, an unknown one, or two for one modality.
        CheckpointError: A bundle that does not load.
        ScreenBusyError: Another screen is writing to ``out_dir``.
    """
    from serving.screening.bundles import choose_models
    from serving.screening.inputs import detect_input_kind, discover_studies
    from serving.settings import get_settings, load_deid_secret

    detect_input_kind(input_path)  # a wrong input is refused before the models load
    settings = settings or get_settings()
    out = Path(out_dir)
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    with _exclusive(out):
        chosen = choose_models(models, settings)
        store = ResultsStore(out)
        store.remove_partial()
        recorded = store.recorded(("done",) if retry_failed else ("done", "failed"))
        discovery = discover_studies(
            input_path,
            sources={modality: model.source for modality, model in chosen.items()},
            secret=load_deid_secret(settings),
            workdir=out / WORK_DIR,
            exclude=recorded,
        )
        pending = [task for task in discovery.tasks if task.study_id not in recorded]
        run_info = _run_info(discovery, chosen, address, batch_size, workers, started_at)
        run_info["counts"]["already_recorded"] = len(discovery.tasks) - len(pending)
        _write_json(out / RUN_FILE, run_info)
        roots = [str(Path(input_path).resolve()), str(Path(input_path)), str(out / WORK_DIR)]
        if Path(input_path).is_file():
            roots += [str(Path(input_path).parent.resolve()), str(Path(input_path).parent)]
        counts = _drive(
            store,
            pending,
            lambda runnable: _ray_batches(
                settings, address, runnable, chosen, batch_size, workers, roots
            ),
            progress=progress,
        )
        seconds = time.perf_counter() - started
        table = store.read()
        statuses = table.column("status").to_pylist()
        run_info["finished"] = datetime.now(UTC).isoformat()
        run_info["wall_seconds"] = round(seconds, 3)
        run_info["counts"].update(
            done=counts["done"],
            failed=counts["failed"],
            results_done=statuses.count("done"),
            results_failed=statuses.count("failed"),
        )
        _write_json(out / RUN_FILE, run_info)
        report = None
        if labels is not None:
            from serving.screening.report import write_report

            report = write_report(table, Path(labels), out, run_info=run_info)
    return ScreenSummary(
        out_dir=out,
        run_info=run_info,
        done=counts["done"],
        failed=counts["failed"],
        skipped=run_info["counts"]["already_recorded"],
        total_done=statuses.count("done"),
        total_failed=statuses.count("failed"),
        seconds=round(seconds, 3),
        failures=counts["failures"],
        report=report,
    )


def _ray_batches(
    settings: Settings,
    address: str | None,
    tasks: Sequence[StudyTask],
    models: Mapping[str, ScreenModel],
    batch_size: int,
    workers: int,
    roots: Sequence[str],
) -> Iterator[list[dict[str, Any]]]:
    from serving.screening.ray_pipeline import ray_session, screen_batches

    with ray_session(settings, address):
        yield from screen_batches(
            tasks, models, batch_size=batch_size, workers=workers, roots=roots
        )


def _drive(
    store: ResultsStore,
    pending: Sequence[StudyTask],
    run: Callable[[Sequence[StudyTask]], Batches],
    *,
    progress: bool,
) -> dict[str, Any]:
    """Write the discovery failures, then each batch ``run(runnable tasks)`` yields.

    ``run`` is called only when there is something to run (no Ray for a finished screen).
    Returns the counts of this run and its failures.
    """
    from rich.console import Console

    from serving.commands.progress import progress_bar

    failures: list[dict[str, Any]] = []
    counts: dict[str, Any] = {"done": 0, "failed": 0, "failures": failures}
    discovered_failed = [
        failed_row(task.as_row(), str(task.error), "discover") for task in pending if task.failed
    ]
    runnable = [task for task in pending if not task.failed]
    started = time.perf_counter()
    with progress_bar(Console(stderr=True), disable=not progress) as bar:
        bar_task = bar.add_task("screening", total=len(pending))

        def record(rows: Sequence[Mapping[str, Any]]) -> None:
            store.append(rows)
            for row in rows:
                if row["status"] == "done":
                    counts["done"] += 1
                else:
                    counts["failed"] += 1
                    failures.append(
                        {
                            "study_id": row["study_id"],
                            "stage": row["error_stage"],
                            "error": row["error"],
                        }
                    )
            finished = counts["done"] + counts["failed"]
            rate = finished / max(time.perf_counter() - started, 1e-9) * 3600.0
            bar.update(
                bar_task,
                advance=len(rows),
                description=f"screening: {counts['done']} done, {counts['failed']} failed, "
                f"{rate:,.0f} studies/h",
            )

        if discovered_failed:
            record(discovered_failed)
        if runnable:
            for rows in run(runnable):
                record(rows)
    return counts


def _run_info(
    discovery: Discovery,
    models: Mapping[str, ScreenModel],
    address: str | None,
    batch_size: int,
    workers: int,
    started_at: datetime,
) -> dict[str, Any]:
    return {
        "disclaimer": DISCLAIMER,
        "input": str(discovery.input),
        "input_kind": discovery.kind,
        "models": [model.describe() for model in models.values()],
        "started": started_at.isoformat(),
        "finished": None,
        "wall_seconds": None,
        "ray_address": address or "local",
        "batch_size": batch_size,
        "workers": workers,
        "counts": {
            "studies": len(discovery.tasks),
            "duplicates_dropped": len(discovery.duplicates),
            "files_skipped_not_dicom": discovery.skipped,
        },
    }


@contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Hold ``out``'s lock file for the run; refuse when another process holds it."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / LOCK_FILE).open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ScreenBusyError(f"{out}: another screen is writing to this folder") from None
        yield


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write then rename, so the file is whole or the previous one."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temporary, path)
