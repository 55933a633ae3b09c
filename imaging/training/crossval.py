"""Cross-validate a training recipe: one run per fold, pooled out-of-fold evaluation.

Each fold of a leave-sites-out, patient-level k-fold or pooled random split trains its
own model (:func:`imaging.training.run.prepare_run` and ``fit``) in its own run folder,
then predicts its test and validation parts with the best checkpoint. Temperature
scaling is fitted on each fold's validation logits and applied to its test logits; the
test predictions of all folds are pooled (every patient predicted once, by the model
that never saw it) and summarised with bootstrap CIs by :mod:`imaging.evaluation.report`.

Output folder::

    summary.json          every summary, the folds' training figures, the disclaimer
    predictions.csv       one row per test study: ids, fold, target, score(s)
    reliability*.png      pooled reliability diagrams (classification targets)
    folds/<fold>/         the fold's run (checkpoints, TensorBoard, split.json) and
                          fold.json, its predictions: a fold with fold.json is done

Summaries by task: classification -> one binary summary (class 1 positive);
regression -> MAE, RMSE, R^2 of the target; ef_multitask -> EF regression and reduced-EF
classification, two summaries in one file.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imaging.evaluation.report import (
    DISCLAIMER,
    FoldPredictions,
    classification_fold,
    evaluation_summary,
)
from imaging.evaluation.splits import (
    SPLIT_KINDS,
    Split,
    leave_sites_out,
    patient_kfold,
)
from imaging.training.data import (
    create_dataset,
    create_loader,
    read_manifest,
    resolve_preprocessing,
    training_records,
)
from imaging.training.loop import BEST_CHECKPOINT, fit
from imaging.training.predictions import (
    predict_dataset,
    predictions_from_dict,
    predictions_to_dict,
)
from imaging.training.recipe import TrainingRecipe, load_recipe
from imaging.training.run import default_split, prepare_run

FOLD_FILE = "fold.json"
PARTS = ("test", "val")


def create_splits(
    rows: Sequence[Mapping[str, str]], recipe: TrainingRecipe, split_kind: str, k: int = 5
) -> list[Split]:
    """The folds of ``split_kind`` over ``rows``, with the recipe's seed and fractions.

    ``"pooled random"`` is the recipe's single patient-level split (``recipe.split``);
    ``k`` applies to ``"patient-level k-fold"`` only.

    Raises:
        ValueError: Unknown ``split_kind``, or the splitter's own errors (too few sites
            or patients).
    """
    settings = recipe.split
    if split_kind == "leave-sites-out":
        return leave_sites_out(
            rows,
            val_fraction=settings.val_fraction,
            seed=settings.seed,
            stratify_by=settings.stratify_by,
        )
    if split_kind == "patient-level k-fold":
        return patient_kfold(
            rows,
            k,
            seed=settings.seed,
            stratify_by=settings.stratify_by,
            val_fraction=settings.val_fraction,
        )
    if split_kind == "pooled random":
        return [default_split(rows, recipe)]
    raise ValueError(f'Argument "split_kind" must be one of {SPLIT_KINDS}, got {split_kind!r}')


def fold_dir(out_dir: str | Path, split_name: str) -> Path:
    """The run folder of a fold: ``out_dir/folds/<name as a slug>`` (e.g. ``site-S01``)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", split_name).strip("-") or "fold"
    return Path(out_dir) / "folds" / slug


def cross_validate(
    recipe: TrainingRecipe | str | Path,
    *,
    manifest: str | Path,
    split_kind: str,
    k: int = 5,
    out_dir: str | Path,
    resume: bool = True,
    progress: bool = True,
    backbone_runs: str | Path | None = None,
    n_resamples: int = 1000,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Train and test one model per fold, then summarise the pooled out-of-fold predictions.

    Args:
        recipe: A recipe, its file, or a name under ``configs/training``.
        manifest: The archive's ``manifest.csv``.
        split_kind: ``"leave-sites-out"``, ``"patient-level k-fold"`` or ``"pooled random"``.
        k: Folds for patient-level k-fold.
        out_dir: Where the summary, predictions and fold runs go.
        resume: Skip folds that finished (``fold.json``) and continue interrupted runs
            from ``last.pt``; False retrains every fold from scratch.
        progress: Show each fold's training progress bar.
        backbone_runs: Another cross-validation's ``out_dir`` (e.g. of a pretraining
            recipe on the same folds): each fold starts from the backbone of the
            same-named fold's ``best.pt`` there, replacing ``recipe.backbone_checkpoint``,
            so no fold's backbone has seen its test patients.
        n_resamples: Bootstrap resamples for the CIs.
        device: Default CUDA when available, else CPU.

    Returns:
        The content of ``summary.json``: ``disclaimer``, ``recipe``, ``model``, ``task``,
        ``split_type``, ``folds`` (training figures per fold), ``summaries`` (target name
        -> :func:`imaging.evaluation.report.evaluation_summary`), ``predictions_csv``.

    Raises:
        ValueError: Unknown split kind, a recipe that does not fit its model or the
            manifest, or a classifier with more than two classes.
        FileNotFoundError: No such recipe, manifest or backbone run.
        CheckpointError: A backbone checkpoint cannot be loaded.
    """
    if not isinstance(recipe, TrainingRecipe):
        recipe = load_recipe(recipe)
    if recipe.class_names is not None and len(recipe.class_names) != 2:
        raise ValueError(
            f'recipe "{recipe.name}": cross-validation reports binary classifiers only, '
            f"got classes {list(recipe.class_names)}"
        )
    manifest, out = Path(manifest), Path(out_dir)
    rows = read_manifest(manifest, recipe.modality)
    splits = create_splits(rows, recipe, split_kind, k)
    out.mkdir(parents=True, exist_ok=True)
    folds = []
    for split in splits:
        fold_recipe = recipe
        if backbone_runs is not None:
            checkpoint = fold_dir(backbone_runs, split.name) / BEST_CHECKPOINT
            if not checkpoint.is_file():
                raise FileNotFoundError(f"{split.name}: no backbone run at {checkpoint}")
            fold_recipe = recipe.model_copy(update={"backbone_checkpoint": checkpoint})
        folds.append(
            run_fold(
                fold_recipe,
                split,
                rows=rows,
                manifest=manifest,
                out_dir=out,
                resume=resume,
                progress=progress,
                device=device,
            )
        )
    summaries = summarise_folds(
        recipe,
        folds,
        split_kind=split_kind,
        splits=splits,
        rows=rows,
        out_dir=out,
        n_resamples=n_resamples,
    )
    predictions_csv = write_predictions_csv(out / "predictions.csv", recipe, folds)
    summary = {
        "disclaimer": DISCLAIMER,
        "recipe": recipe.name,
        "model": recipe.model,
        "task": recipe.task,
        "split_type": split_kind,
        "manifest": str(manifest),
        "backbone_runs": None if backbone_runs is None else str(backbone_runs),
        "folds": [
            {key: value for key, value in fold.items() if key not in (*PARTS, "recipe")}
            for fold in folds
        ],
        "summaries": summaries,
        "predictions_csv": str(predictions_csv),
    }
    _write_json_atomic(out / "summary.json", summary)
    return summary


def run_fold(
    recipe: TrainingRecipe,
    split: Split,
    *,
    rows: Sequence[Mapping[str, str]],
    manifest: Path,
    out_dir: Path,
    resume: bool = True,
    progress: bool = True,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Train one fold (or reuse its finished result) and predict its test and validation parts.

    Returns:
        The fold's record as written to ``fold.json``: ``fold``, ``run_dir``, training
        figures, and ``test``/``val`` predictions (``predictions_to_dict`` layout;
        ``val`` None when the split has no validation part).
    """
    run_dir = fold_dir(out_dir, split.name)
    done = run_dir / FOLD_FILE
    test_studies = [rows[i]["study_instance_uid"] for i in split.test]
    settings = json.loads(json.dumps(recipe.model_dump(mode="json")))
    if resume and done.is_file():
        record: dict[str, Any] = json.loads(done.read_text())
        same_split = record.get("test", {}).get("study_instance_uid") == test_studies
        if same_split and record.get("recipe") == settings:
            return record
        # Another recipe or split (archive, seed, fractions) ran here: its checkpoints
        # are stale.
        resume = False
    run = prepare_run(recipe, manifest=manifest, split=split, out_dir=run_dir)
    result = fit(
        run.model,
        run.train_loader,
        run.val_loader,
        run.recipe,
        out_dir=run_dir,
        resume=resume,
        progress=progress,
        device=device,
    )
    best = result.best_checkpoint if result.best_checkpoint.is_file() else result.last_checkpoint
    state = torch.load(best, map_location="cpu", weights_only=True)["model"]
    run.model.load_state_dict(state)
    test_records = training_records([rows[i] for i in split.test], manifest.parent, recipe)
    test_loader = create_loader(
        create_dataset(
            test_records,
            resolve_preprocessing(recipe, run.model_config.input),
            train=False,
            # One pass over the test part: a memory cache would only cost memory.
            cache="disk" if recipe.cache == "disk" else "none",
            cache_dir=recipe.cache_dir,
        ),
        batch_size=recipe.batch_size,
        shuffle=False,
    )
    test = predict_dataset(run.model, test_loader, device=device)
    val = predict_dataset(run.model, run.val_loader, device=device) if run.val_loader else None
    record = {
        "fold": split.name,
        "run_dir": str(run_dir),
        "recipe": settings,
        "checkpoint": best.name,
        "train_studies": len(run.train_loader.dataset),
        "monitor": result.monitor,
        # JSON has no NaN: a metric undefined on the validation part is null.
        "best_metric": None
        if result.best_metric is None or np.isnan(result.best_metric)
        else result.best_metric,
        "best_epoch": result.best_epoch,
        "epochs_completed": result.epochs_completed,
        "stopped_early": result.stopped_early,
        "backbone_checkpoint": None
        if recipe.backbone_checkpoint is None
        else str(recipe.backbone_checkpoint),
        "test": predictions_to_dict(test),
        "val": None if val is None else predictions_to_dict(val),
    }
    _write_json_atomic(done, record)
    return record


def summary_targets(recipe: TrainingRecipe) -> dict[str, str]:
    """Summary key -> the description each summary's ``target`` field carries."""
    if recipe.task == "classification":
        names = recipe.class_names or ("0", "1")
        return {recipe.target: f"{names[1]} vs {names[0]}"}
    units = {"age": "age (years)", "ef": "EF (%)"}
    targets: dict[str, str] = {recipe.target: units.get(recipe.target, recipe.target)}
    if recipe.task == "ef_multitask":
        targets["reduced_ef"] = "reduced EF (EF < 40%)"
    return targets


def fold_predictions(
    recipe: TrainingRecipe, folds: Sequence[Mapping[str, Any]]
) -> dict[str, list[FoldPredictions]]:
    """Per summary key, every fold's test predictions (temperature-scaled where binary)."""
    found: dict[str, list[FoldPredictions]] = {key: [] for key in summary_targets(recipe)}
    for fold in folds:
        name = fold["fold"]
        test = predictions_from_dict(fold["test"])
        val = None if not fold.get("val") else predictions_from_dict(fold["val"])
        if val is not None and len(val.outputs) == 0:
            val = None  # nothing to fit a temperature on
        patients, sites = test.ids["patient_id"], test.ids["site_id"]
        if recipe.task == "classification":
            found[recipe.target].append(
                classification_fold(
                    name,
                    test.targets.astype(int),
                    test.outputs,
                    patients,
                    sites,
                    val_logits=None if val is None else val.outputs,
                    val_y_true=None if val is None else val.targets.astype(int),
                )
            )
            continue
        found[recipe.target].append(
            FoldPredictions(
                fold=name,
                y_true=test.targets,
                scores=test.outputs[:, 0].astype(np.float64),
                patient_ids=np.asarray(patients, dtype=str),
                site_ids=np.asarray(sites, dtype=str),
            )
        )
        if recipe.task == "ef_multitask" and test.reduced_ef is not None:
            # Output 1 is the reduced-EF logit (sigmoid): temperature-scaled like a classifier.
            val_reduced = None if val is None else val.reduced_ef
            found["reduced_ef"].append(
                classification_fold(
                    name,
                    test.reduced_ef.astype(int),
                    test.outputs[:, 1],
                    patients,
                    sites,
                    val_logits=None if val is None or val_reduced is None else val.outputs[:, 1],
                    val_y_true=None if val_reduced is None else val_reduced.astype(int),
                )
            )
    return found


def summarise_folds(
    recipe: TrainingRecipe,
    folds: Sequence[Mapping[str, Any]],
    *,
    split_kind: str,
    splits: Sequence[Split],
    rows: Sequence[Mapping[str, str]],
    out_dir: Path,
    n_resamples: int = 1000,
) -> dict[str, dict[str, Any]]:
    """One :func:`evaluation_summary` per summary key, with reliability diagrams in ``out_dir``."""
    targets = summary_targets(recipe)
    summaries = {}
    for key, predictions in fold_predictions(recipe, folds).items():
        binary = recipe.task == "classification" or key == "reduced_ef"
        diagram = "reliability.png" if recipe.task == "classification" else f"reliability_{key}.png"
        summaries[key] = evaluation_summary(
            predictions,
            split_kind=split_kind,
            task="classification" if binary else "regression",
            target=targets[key],
            splits=splits,
            records=rows,
            n_resamples=n_resamples,
            diagram_path=out_dir / diagram if binary else None,
        )
    return summaries


def write_predictions_csv(
    path: Path, recipe: TrainingRecipe, folds: Sequence[Mapping[str, Any]]
) -> Path:
    """One row per test study: ids, fold, target and score (plus calibrated or EF columns).

    ``score`` is the probability of class 1 (classification) or the predicted value;
    ``calibrated_score`` the probability after the fold's temperature. For EF, the
    ``reduced_ef`` columns hold the reduced-EF label and probabilities.
    """
    per_key = fold_predictions(recipe, folds)
    columns = ["study_instance_uid", "patient_id", "site_id", "fold", "target", "score"]
    binary_key = recipe.target if recipe.task == "classification" else "reduced_ef"
    if recipe.task == "classification":
        columns.append("calibrated_score")
    if recipe.task == "ef_multitask":
        columns += ["reduced_ef", "reduced_ef_score", "reduced_ef_calibrated_score"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for i, fold in enumerate(folds):
            main = per_key[recipe.target][i]
            binary = per_key[binary_key][i] if per_key.get(binary_key) else None
            studies = fold["test"]["study_instance_uid"]
            for j, study in enumerate(studies):
                row = [study, main.patient_ids[j], main.site_ids[j], fold["fold"]]
                row += [_number(main.y_true[j]), _number(main.scores[j])]
                if recipe.task == "classification":
                    row.append(_number(main.calibrated_scores, j))
                if recipe.task == "ef_multitask" and binary is not None:
                    row += [
                        _number(binary.y_true[j]),
                        _number(binary.scores[j]),
                        _number(binary.calibrated_scores, j),
                    ]
                writer.writerow(row)
    return path


def _number(values: Any, index: int | None = None) -> str:
    if index is not None:
        if values is None:
            return ""
        values = values[index]
    return f"{float(values):.6g}"


def _write_json_atomic(path: Path, data: Any) -> None:
    """Write then rename, so a fold file is either complete or absent."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(partial, path)
