"""``mmdx train``, ``mmdx evaluate`` and ``mmdx predict``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

if TYPE_CHECKING:
    pass


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


def evaluate(
    manifest: Annotated[Path, typer.Option("--manifest", help="The archive's manifest.csv.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for summary, predictions, folds.")],
    config: Annotated[
        str | None,
        typer.Argument(
            metavar="[CONFIG]",
            help="Recipe file, or a name in configs/training (cross-validation).",
        ),
    ] = None,
    split: Annotated[
        Literal["leave-sites-out", "kfold", "pooled"] | None,
        typer.Option("--split", help="Leave-sites-out, patient-level k-fold or pooled random."),
    ] = None,
    bundle: Annotated[
        str | None,
        typer.Option(
            "--bundle",
            help="Evaluate this trained bundle (folder, or name under DATA_DIR/models) as it "
            "is, serially, on every manifest study of its modality: no CONFIG, no --split.",
        ),
    ] = None,
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
    """Cross-validate a recipe (CONFIG --split), or score a fixed bundle (--bundle).

    Cross-validation: one model per fold, pooled out-of-fold metrics with 95% CIs. Writes
    OUT/summary.json (metrics with bootstrap CIs over patients, per site, ECE before
    and after temperature scaling), OUT/predictions.csv, a reliability diagram and one
    run folder per fold; finished folds are not retrained. With --bundle: no training;
    every study is predicted alone, as mmdx predict does, and OUT/summary.json holds the
    metrics (AUC...) with 95% CIs, OUT/predictions.csv one row per study. Synthetic-data
    figures are engineering figures, not for diagnostic use.
    """
    from imaging.errors import ImagingError

    if bundle is not None:
        if config is not None or split is not None:
            typer.echo(
                "error: --bundle evaluates a trained bundle: give no CONFIG or --split", err=True
            )
            raise typer.Exit(2)
        _evaluate_bundle(bundle, manifest, out, as_json=as_json)
        return
    if config is None or split is None:
        typer.echo("error: give CONFIG and --split (cross-validation) or --bundle", err=True)
        raise typer.Exit(2)
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


def _evaluate_bundle(bundle: str, manifest: Path, out: Path, *, as_json: bool) -> None:
    """``mmdx evaluate --bundle``: :func:`serving.screening.evaluate.evaluate_bundle`."""
    from rich.console import Console

    from imaging.errors import ImagingError
    from serving.commands.progress import progress_bar
    from serving.screening.bundles import ModelChoiceError
    from serving.screening.evaluate import evaluate_bundle
    from serving.screening.inputs import ScreenInputError
    from serving.settings import get_settings

    console = Console(stderr=True)
    try:
        with progress_bar(console, disable=as_json) as progress:
            task = progress.add_task("predicting studies", total=None)
            summary = evaluate_bundle(
                bundle,
                manifest,
                out,
                settings=get_settings(),
                on_study=lambda done, total: progress.update(task, completed=done, total=total),
            )
    except (ImagingError, ScreenInputError, ModelChoiceError) as exc:
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    model, counts = summary["model"], summary["n"]
    console.print(
        f"{model['name']} {model['version']} ({model['modality']}): {counts['done']} studies "
        f"predicted, {counts['failed']} failed; {summary['split_type']}"
    )
    for metric, value in (summary.get("metrics") or {}).items():
        console.print(f"  {metric}: {_format_ci(value)}")
    for metric, value in (summary.get("ef_metrics") or {}).items():
        console.print(f"  EF {metric}: {_format_ci(value)}")
    console.print(f"  summary: {out / 'summary.json'}; {summary['disclaimer']}")


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
