"""The ``mmdx`` command line: one entry point, a subcommand per job.

Subcommands import their heavy libraries inside the function, so ``mmdx --help``
answers at once.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

app = typer.Typer(
    help="mmdx: multimodal imaging diagnostic service (MRI and echo). Not for diagnostic use.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Keep subcommands explicit even while there is only one."""


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the archive into.")],
    mri: Annotated[int, typer.Option(min=0, help="Number of MRI studies.")] = 200,
    echo: Annotated[int, typer.Option(min=0, help="Number of echo studies.")] = 200,
    sites: Annotated[int, typer.Option(min=1, help="Number of imaging sites.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed; the same seed gives the same archive.")] = 0,
    workers: Annotated[
        int | None, typer.Option(min=0, help="Processes (0: one per core; default from settings).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary only.")] = False,
) -> None:
    """Write a synthetic sample archive: DICOM, NIfTI, EchoNet layout, reports, manifest."""
    from rich.console import Console

    from imaging.synthetic.archive import ArchiveSpec, generate_archive
    from serving.settings import get_settings

    spec = ArchiveSpec(
        out_dir=out,
        mri_studies=mri,
        echo_studies=echo,
        sites=sites,
        seed=seed,
        workers=get_settings().synth.workers if workers is None else workers,
    )
    console = Console(stderr=True)
    started = time.perf_counter()
    with progress_bar(console, disable=as_json) as progress:
        task = progress.add_task("synthesising studies", total=mri + echo)
        rows = generate_archive(spec, on_study_done=lambda _row: progress.advance(task))
    summary = summarise_archive(rows, out, time.perf_counter() - started)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    console.print(f"[bold]Synthetic sample archive[/bold] in {out} ({summary['seconds']:.1f} s)")
    console.print("All identities are invented; no real patient data. Not for diagnostic use.")
    for modality, counts in summary["labels"].items():
        console.print(f"  {modality}: {summary['studies'][modality]} studies, labels {counts}")
    console.print(f"  patients: {summary['patients']}, sites: {summary['sites']}")
    console.print(f"  DICOM files: {summary['dicom_files']}, manifest: {summary['manifest']}")


@app.command()
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


@app.command()
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


@app.command()
def train(
    config: Annotated[
        str, typer.Argument(metavar="CONFIG", help="Recipe file, or a name in configs/training.")
    ],
    manifest: Annotated[Path, typer.Option("--manifest", help="The archive's manifest.csv.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder (default: the recipe's run_dir).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume/--no-resume", help="Continue from the run's last.pt.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary only.")] = False,
) -> None:
    """Train a model from a recipe on the recipe's patient-level split of an archive.

    Checkpoints (last.pt every epoch, best.pt on a better validation metric), TensorBoard
    logs, recipe.json and split.json go to the run folder; a second call resumes there.
    """
    from imaging.errors import ImagingError
    from imaging.training.recipe import load_recipe
    from imaging.training.run import train_from_recipe

    started = time.perf_counter()
    try:
        recipe = load_recipe(config)
        result = train_from_recipe(
            recipe, manifest=manifest, out_dir=out, resume=resume, progress=not as_json
        )
    except (ImagingError, ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from exc
    summary = {
        "recipe": recipe.name,
        "model": recipe.model,
        "out_dir": str(result.out_dir),
        "best_checkpoint": str(result.best_checkpoint),
        "monitor": result.monitor,
        "best_metric": _finite_or_none(result.best_metric),
        "best_epoch": result.best_epoch,
        "epochs_completed": result.epochs_completed,
        "stopped_early": result.stopped_early,
        "seconds": round(time.perf_counter() - started, 2),
        "history": [
            {
                "epoch": epoch.epoch,
                "train_loss": _finite_or_none(epoch.train_loss),
                **{name: _finite_or_none(value) for name, value in epoch.metrics.items()},
            }
            for epoch in result.history
        ],
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    best = summary["best_metric"]
    typer.echo(
        f"{recipe.name}: {result.epochs_completed} epochs"
        f"{' (stopped early)' if result.stopped_early else ''}, best {result.monitor} "
        f"{'undefined' if best is None else f'{best:.4f}'} at epoch {result.best_epoch}; "
        f"run in {result.out_dir} ({summary['seconds']:.1f} s)"
    )


@app.command()
def evaluate(
    config: Annotated[
        str, typer.Argument(metavar="CONFIG", help="Recipe file, or a name in configs/training.")
    ],
    manifest: Annotated[Path, typer.Option("--manifest", help="The archive's manifest.csv.")],
    split: Annotated[
        Literal["leave-sites-out", "kfold", "pooled"],
        typer.Option("--split", help="Leave-sites-out, patient-level k-fold or pooled random."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for summary, predictions, folds.")],
    k: Annotated[int, typer.Option("--k", min=2, help="Folds for --split kfold.")] = 5,
    backbone_runs: Annotated[
        Path | None,
        typer.Option(
            "--backbone-runs",
            help="An earlier evaluate --out (e.g. of mri_age_pretrain, same split): each fold "
            "starts from the backbone of that fold's best.pt.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON summary only.")] = False,
) -> None:
    """Cross-validate a recipe: one model per fold, pooled out-of-fold metrics with 95% CIs.

    Writes OUT/summary.json (metrics with bootstrap CIs over patients, per site, ECE before
    and after temperature scaling), OUT/predictions.csv, a reliability diagram and one
    run folder per fold; finished folds are not retrained. Synthetic-data figures are
    engineering figures, not for diagnostic use.
    """
    from imaging.errors import ImagingError
    from imaging.training.crossval import cross_validate
    from imaging.training.recipe import load_recipe

    split_kind = {"leave-sites-out": "leave-sites-out", "kfold": "patient-level k-fold"}.get(
        split, "pooled random"
    )
    started = time.perf_counter()
    try:
        recipe = load_recipe(config)
        summary = cross_validate(
            recipe, manifest=manifest, split_kind=split_kind, k=k, out_dir=out,
            progress=not as_json, backbone_runs=backbone_runs,
        )  # fmt: skip
    except (ImagingError, ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    seconds = time.perf_counter() - started
    typer.echo(f"{recipe.name}, {split_kind}, {len(summary['folds'])} folds ({seconds:.1f} s)")
    for name, block in summary["summaries"].items():
        pooled = block["pooled"]
        typer.echo(f"  {block['target']} ({name}), {pooled['n_patients']} test patients:")
        for metric, value in pooled["metrics"].items():
            typer.echo(f"    {metric}: {_format_ci(value)}")
        if "calibration" in pooled:
            calibration = pooled["calibration"]
            after = calibration["ece_after"]
            typer.echo(
                f"    ECE: {calibration['ece_before']:.3f} before, "
                f"{'n/a' if after is None else f'{after:.3f}'} after temperature scaling"
            )
    typer.echo(f"  summary: {out / 'summary.json'}; {summary['disclaimer']}")


def _finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN: an undefined metric is null."""
    return None if value is None or value != value else float(value)


def _format_ci(metric: dict[str, Any]) -> str:
    if metric["value"] is None:
        return "undefined"
    if metric["low"] is None:
        return f"{metric['value']:.3f}"
    level = f"{metric['confidence']:.0%}"
    return f"{metric['value']:.3f} ({level} CI {metric['low']:.3f}-{metric['high']:.3f})"


@app.command()
def predict(
    path: Annotated[
        Path,
        typer.Argument(
            metavar="PATH",
            help="DICOM study or series folder, DICOM file, NIfTI file or AVI video.",
        ),
    ],
    bundle: Annotated[
        Path,
        typer.Option(
            "--bundle", help="Model bundle folder (models/model.pt, configs/metadata.json)."
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON only.")] = False,
    explain: Annotated[
        bool, typer.Option("--explain/--no-explain", help="Compute a Grad-CAM heat map.")
    ] = True,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for the heat-map PNGs (default: predictions/)."),
    ] = None,
) -> None:
    """Classify one study with a model bundle; print label, probability, EF and explanation.

    The bundle's model card says which modality and preprocessing it takes; a study
    folder's series is chosen by the selection rules for that modality. The bundle is
    explicit for now (no default per modality). Exit status 2 when the input or the
    bundle cannot be used. Research software: not for diagnostic use.
    """
    from imaging.bundle import load_bundle
    from imaging.errors import ImagingError
    from imaging.predict import predict_path

    try:
        loaded = load_bundle(bundle)
        result = predict_path(
            path, loaded, explain=explain, out_dir=(out or Path("predictions")) if explain else None
        )
    except ImagingError as exc:
        if as_json:
            error = {"error": type(exc).__name__, "source": exc.source, "reason": exc.reason}
            typer.echo(json.dumps(error, indent=2))
        else:
            typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"{result['model']['name']} {result['model']['version']}: {path}")
    if result["label"] is not None:
        typer.echo(f"  label: {result['label']} (probability {result['probability']:.3f})")
    if "ef_percent" in result:
        typer.echo(f"  EF: {result['ef_percent']:.1f} %")
    if "value" in result:
        typer.echo(f"  value: {result['value']:.3f}")
    for warning in result["warnings"]:
        typer.echo(f"  warning: {warning}")
    for file in (result["explanation"] or {}).get("files", []):
        typer.echo(f"  heat map: {file}")
    typer.echo(f"  {result['disclaimer']}")


def progress_bar(console: Console, *, disable: bool) -> Progress:
    """The progress bar every long command shows: description, bar, done/total, ETA."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=disable,
    )


def summarise_archive(rows: list[dict[str, str]], out: Path, seconds: float) -> dict[str, Any]:
    """Counts a person or a script checks after ``mmdx synth``."""
    labels: dict[str, dict[str, int]] = {}
    for modality in sorted({row["modality"] for row in rows}):
        counter = Counter(row["label"] for row in rows if row["modality"] == modality)
        labels[modality] = dict(sorted(counter.items()))
    return {
        "out": str(out),
        "seconds": round(seconds, 2),
        "studies": dict(Counter(row["modality"] for row in rows)),
        "labels": labels,
        "patients": len({row["patient_id"] for row in rows}),
        "sites": dict(sorted(Counter(row["site_id"] for row in rows).items())),
        "dicom_files": sum(1 for path in (out / "dicom").rglob("*.dcm")) if rows else 0,
        "manifest": str(out / "manifest.csv"),
    }


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
