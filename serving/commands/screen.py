"""``mmdx screen``: batch retrospective screening of an archive on Ray Data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

# Failures listed on the console; the rest are in the results and the report.
SHOWN_FAILURES = 10


def screen(
    input_path: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT",
            help="DICOM folder or .zip, BIDS-like NIfTI folder, EchoNet-Dynamic folder, or a "
            "manifest CSV (mmdx synth's).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder (results/, run.json).")],
    address: Annotated[
        str | None,
        typer.Option("--address", help="Ray cluster to run on (default: a local Ray)."),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="Model bundle (folder, or name under DATA_DIR/models), one per modality; "
            "repeat for MR and US. Default: models.mri_bundle and models.echo_bundle.",
        ),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="Labels CSV (the manifest): write report.html too."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Studies per forward pass.")
    ] = 8,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Inference actors.")] = 1,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Run studies again that failed before.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary only.")] = False,
) -> None:
    """Screen every study of INPUT: per-study results in OUT/results/*.parquet.

    Studies are decoded in parallel CPU tasks and classified in batches by an actor pool
    (GPUs when the cluster has them). Rerunning with the same --out skips the studies
    already recorded, so a killed run loses only its unfinished batches; studies that
    fail are recorded with the stage and reason and do not stop the run. With --labels,
    OUT/summary.json and OUT/report.html hold ROC, CIs, calibration and subgroups.
    Exit status 2 when the input or a model cannot be used. Not for diagnostic use.
    """
    from rich.console import Console

    from imaging.errors import ImagingError
    from serving.screening.bundles import ModelChoiceError
    from serving.screening.inputs import ScreenInputError
    from serving.screening.run import ScreenBusyError, run_screen

    console = Console(stderr=True)
    try:
        summary = run_screen(
            input_path,
            out,
            address=address,
            models=model or None,
            labels=labels,
            batch_size=batch_size,
            workers=workers,
            retry_failed=retry_failed,
            progress=not as_json,
        )
    except (ScreenInputError, ModelChoiceError, ImagingError, ScreenBusyError) as exc:
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps(summary.to_dict(), indent=2, default=str))
        return
    rate = summary.studies_per_hour
    console.print(
        f"screened {summary.done} studies, {summary.failed} failed, {summary.skipped} recorded "
        f"before ({summary.seconds:.1f} s" + (f", {rate:,.0f} studies/h)" if rate else ")")
    )
    for failure in summary.failures[:SHOWN_FAILURES]:
        console.print(f"  failed ({failure['stage']}): {failure['study_id']}: {failure['error']}")
    if len(summary.failures) > SHOWN_FAILURES:
        console.print(f"  ... and {len(summary.failures) - SHOWN_FAILURES} more in the results")
    console.print(
        f"results: {summary.results_dir} ({summary.total_done} done, "
        f"{summary.total_failed} failed in all)"
    )
    if summary.report is not None:
        console.print(f"report: {out / 'report.html'}, summary: {out / 'summary.json'}")
    console.print(summary.run_info["disclaimer"])
