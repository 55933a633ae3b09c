"""``mmdx convert`` and ``mmdx deid``: DICOM series to NIfTI, de-identification."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    pass

from serving.commands.progress import progress_bar


def convert(
    series_dir: Annotated[
        Path, typer.Argument(metavar="SERIES_DIR", help="Folder holding one MR series.")
    ],
    out: Annotated[Path, typer.Option("--out", help="NIfTI file to write (.nii or .nii.gz).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary only.")] = False,
) -> None:
    """Assemble one MR series (single-frame or Enhanced MR) and write it as NIfTI.

    Slices are ordered by position along the slice normal and the affine comes from
    the DICOM geometry, so the output matches dcm2niix's. A folder holding several
    series, gaps, duplicate slices or gantry tilt is refused with the reason.
    """
    from imaging.dicom.series_volume import load_mr_series, write_nifti
    from imaging.errors import ImagingError

    if not series_dir.is_dir():
        typer.echo(f"error: {series_dir} is not a folder", err=True)
        raise typer.Exit(2)
    if not out.name.endswith((".nii", ".nii.gz")):
        typer.echo(f"error: --out {out} must end in .nii or .nii.gz", err=True)
        raise typer.Exit(2)
    paths = sorted(
        path for path in series_dir.rglob("*") if path.is_file() and path.name != "DICOMDIR"
    )
    started = time.perf_counter()
    try:
        volume = load_mr_series(paths)
    except ImagingError as exc:
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    write_nifti(volume, out)
    summary = {
        "series_instance_uid": volume.meta["series_instance_uid"],
        "files": len(paths),
        "shape": [int(size) for size in volume.shape[1:]],
        "spacing_mm": [round(float(step), 4) for step in volume.meta["spacing"]],
        "out": str(out),
        "seconds": round(time.perf_counter() - started, 3),
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        shape = "x".join(str(size) for size in summary["shape"])
        spacing = "x".join(f"{step:g}" for step in summary["spacing_mm"])
        typer.echo(f"{out}: {shape} voxels of {spacing} mm from {len(paths)} files")


def deid(
    in_path: Annotated[Path, typer.Argument(metavar="IN", help="A DICOM file or a folder.")],
    out: Annotated[Path, typer.Argument(metavar="OUT", help="Folder for the de-identified files.")],
    retain_dates: Annotated[
        bool | None,
        typer.Option(
            "--retain-dates/--no-retain-dates",
            help="Keep dates and times (default from settings: deid.retain_longitudinal_temporal).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary only.")] = False,
) -> None:
    """De-identify DICOM files (PS3.15 Basic Profile, Clean Pixel Data for ultrasound).

    Good files go to OUT/<study>/<series>/<instance>.dcm under new UIDs; each refused
    file is listed with its reason on the console and in OUT/deid-report.csv, and the
    exit status is 1 if any file was refused. The report names input files: it is for
    the operator, not for release.
    """
    import csv

    from rich.console import Console

    from imaging.dicom.deid import DeidOptions, deidentify_path, list_input_files
    from serving.settings import get_settings, load_deid_secret

    console = Console(stderr=True)
    if not in_path.exists():
        console.print(f"[red]{in_path} does not exist[/red]")
        raise typer.Exit(2)
    settings = get_settings()
    retain = settings.deid.retain_longitudinal_temporal if retain_dates is None else retain_dates
    options = DeidOptions(retain_longitudinal_temporal=retain)
    secret = load_deid_secret(settings)
    total = len(list_input_files(in_path, exclude=out))
    started = time.perf_counter()
    with progress_bar(console, disable=as_json) as progress:
        task = progress.add_task("de-identifying", total=total)
        report = deidentify_path(
            in_path,
            out,
            secret=secret,
            options=options,
            on_file_done=lambda _path, _failure: progress.advance(task),
        )
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / "deid-report.csv"
    with report_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "error", "reason"])
        for failure in report.failures:
            writer.writerow([failure.path, failure.error, failure.reason])
    summary = {
        "in": str(in_path),
        "out": str(out),
        "seconds": round(time.perf_counter() - started, 2),
        "retain_longitudinal_temporal": retain,
        "written": len(report.written),
        "failed": len(report.failures),
        "failures": [vars(failure) for failure in report.failures],
        "report": str(report_path),
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        console.print(
            f"[bold]De-identified[/bold] {summary['written']} of {total} files into {out} "
            f"({summary['seconds']:.1f} s); dates {'kept' if retain else 'removed'}"
        )
        for failure in report.failures:
            console.print(f"  [red]refused[/red] {failure.path}: {failure.error}: {failure.reason}")
        console.print(f"  report: {report_path}")
    if report.failures:
        raise typer.Exit(1)
