"""Evaluation summaries: out-of-fold predictions pooled across folds, CIs, per-site rows.

Cross-validation is reported the usual way: every patient is predicted once, by the
model of the fold that held it out; those out-of-fold predictions are pooled and one
bootstrap CI (resampling patients) is computed over them. Per-fold and per-site rows
come from the same predictions. The summary is a JSON-serialisable dict that states the
split type and carries ``DISCLAIMER``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from imaging.evaluation.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    save_reliability_diagram,
)
from imaging.evaluation.metrics import MetricCI, classification_metrics, regression_metrics
from imaging.evaluation.splits import SPLIT_KINDS, Record, Split

DISCLAIMER = (
    "Engineering figures on synthetic data; not clinical performance; not for diagnostic use."
)
TASKS = ("classification", "regression")


@dataclass(frozen=True, eq=False)
class FoldPredictions:
    """Test-set predictions of one fold, one entry per record.

    Attributes:
        fold: The split's name, e.g. ``"site S01"``.
        y_true: Labels in {0, 1} (classification) or reference values (regression).
        scores: Probability of class 1 (classification) or predicted values (regression).
        patient_ids: Patient of each record, for patient-level bootstrap and pooling.
        site_ids: Site of each record, for per-site rows.
        calibrated_scores: Probability of class 1 after temperature scaling, if fitted.
        temperature: The temperature fitted on this fold's validation data, if any.
    """

    fold: str
    y_true: np.ndarray
    scores: np.ndarray
    patient_ids: np.ndarray
    site_ids: np.ndarray
    calibrated_scores: np.ndarray | None = None
    temperature: float | None = None

    def __post_init__(self) -> None:
        lengths = {
            name: len(getattr(self, name))
            for name in ("y_true", "scores", "patient_ids", "site_ids", "calibrated_scores")
            if getattr(self, name) is not None
        }
        if len(set(lengths.values())) != 1:
            raise ValueError(f"{self.fold}: arrays must have the same length, got {lengths}")


def classification_fold(
    fold: str,
    y_true: ArrayLike,
    logits: ArrayLike,
    patient_ids: ArrayLike,
    site_ids: ArrayLike,
    *,
    val_logits: ArrayLike | None = None,
    val_y_true: ArrayLike | None = None,
) -> FoldPredictions:
    """Predictions of a binary classifier from its logits, temperature-scaled if possible.

    Args:
        fold: The split's name.
        y_true: Test labels in {0, 1}.
        logits: Test logits, ``(n,)`` for a sigmoid output or ``(n, 2)`` for softmax.
        patient_ids: Patient of each test record.
        site_ids: Site of each test record.
        val_logits: Validation logits, the same layout; with ``val_y_true`` the
            temperature is fitted on them and applied to the test logits.
        val_y_true: Validation labels.

    Returns:
        The fold's predictions with ``scores`` = probability of class 1.
    """
    z = np.asarray(logits, dtype=np.float64)
    if not (z.ndim == 1 or (z.ndim == 2 and z.shape[1] == 2)):
        raise ValueError(f'Argument "logits" must have shape (n,) or (n, 2), got {z.shape}')
    temperature = None
    calibrated = None
    if (val_logits is None) != (val_y_true is None):
        raise ValueError('Arguments "val_logits" and "val_y_true" go together')
    if val_logits is not None and val_y_true is not None:
        temperature = fit_temperature(val_logits, val_y_true)
        calibrated = _positive_probability(apply_temperature(z, temperature))
    return FoldPredictions(
        fold=fold,
        y_true=np.asarray(y_true),
        scores=_positive_probability(apply_temperature(z, 1.0)),
        patient_ids=np.asarray(patient_ids).astype(str),
        site_ids=np.asarray(site_ids).astype(str),
        calibrated_scores=calibrated,
        temperature=temperature,
    )


def pool_folds(folds: Sequence[FoldPredictions]) -> FoldPredictions:
    """Concatenate out-of-fold predictions; a patient must be tested in one fold only.

    Raises:
        ValueError: No folds, or a patient appears in the test sets of two folds.
    """
    if not folds:
        raise ValueError('Argument "folds" must not be empty')
    tested_in: dict[str, str] = {}
    for fold in folds:
        for patient in np.unique(fold.patient_ids):
            if tested_in.setdefault(str(patient), fold.fold) != fold.fold:
                raise ValueError(
                    f"patient {patient} is tested in both {tested_in[str(patient)]} and "
                    f"{fold.fold}; pooled predictions need each patient once"
                )
    calibrated = [f.calibrated_scores for f in folds]
    return FoldPredictions(
        fold="pooled out-of-fold",
        y_true=np.concatenate([f.y_true for f in folds]),
        scores=np.concatenate([f.scores for f in folds]),
        patient_ids=np.concatenate([f.patient_ids for f in folds]),
        site_ids=np.concatenate([f.site_ids for f in folds]),
        calibrated_scores=None
        if any(c is None for c in calibrated)
        else np.concatenate([c for c in calibrated if c is not None]),
    )


def evaluation_summary(
    folds: Sequence[FoldPredictions],
    *,
    split_kind: str,
    task: str,
    target: str,
    splits: Sequence[Split] | None = None,
    records: Sequence[Record] | None = None,
    threshold: float = 0.5,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    n_bins: int = 10,
    diagram_path: str | Path | None = None,
) -> dict[str, Any]:
    """A JSON-serialisable summary of a cross-validated (or single-split) evaluation.

    Args:
        folds: Test predictions per fold (one fold for a single split).
        split_kind: One of ``SPLIT_KINDS``.
        task: ``"classification"`` or ``"regression"``.
        target: What is predicted, e.g. ``"AD vs CN"`` or ``"EF (%)"``.
        splits: The splits, with ``records``, to report record and patient counts per part.
        records: The records the splits index.
        threshold: Classification threshold on the probability of class 1.
        n_resamples: Bootstrap resamples (patients are resampled).
        seed: Seeds the bootstrap.
        confidence: Coverage of the intervals.
        n_bins: Bins for the expected calibration error.
        diagram_path: Where to write the pooled reliability diagram (classification).

    Returns:
        Keys ``disclaimer``, ``split_type``, ``task``, ``target``, ``bootstrap``, ``n``,
        ``parts`` (when splits are given), ``pooled``, ``per_fold`` and ``per_site``.
    """
    if split_kind not in SPLIT_KINDS:
        raise ValueError(f'Argument "split_kind" must be one of {SPLIT_KINDS}, got {split_kind!r}')
    if task not in TASKS:
        raise ValueError(f'Argument "task" must be one of {TASKS}, got {task!r}')
    if (splits is None) != (records is None):
        raise ValueError('Arguments "splits" and "records" go together')
    pooled = pool_folds(folds)

    def block(predictions: FoldPredictions, rows: np.ndarray | slice) -> dict[str, Any]:
        y = predictions.y_true[rows]
        scores = predictions.scores[rows]
        patients = predictions.patient_ids[rows]
        entry: dict[str, Any] = {"n": len(y), "n_patients": len(np.unique(patients))}
        if task == "regression":
            found = regression_metrics(
                y, scores, groups=patients, n_resamples=n_resamples, seed=seed,
                confidence=confidence,
            )  # fmt: skip
        else:
            found = classification_metrics(
                y, scores, threshold=threshold, groups=patients, n_resamples=n_resamples,
                seed=seed, confidence=confidence,
            )  # fmt: skip
            calibrated = predictions.calibrated_scores
            entry["calibration"] = {
                "n_bins": n_bins,
                "ece_before": expected_calibration_error(y, scores, n_bins),
                "ece_after": None
                if calibrated is None
                else expected_calibration_error(y, calibrated[rows], n_bins),
            }
        entry["metrics"] = _metric_dicts(found)
        return entry

    summary: dict[str, Any] = {
        "disclaimer": DISCLAIMER,
        "split_type": split_kind,
        "task": task,
        "target": target,
        "bootstrap": {
            "method": "percentile",
            "unit": "patient",
            "n_resamples": n_resamples,
            "confidence": confidence,
            "seed": seed,
        },
        "n": {
            "folds": len(folds),
            "test_records": len(pooled.y_true),
            "test_patients": len(np.unique(pooled.patient_ids)),
            "sites": sorted({str(s) for s in pooled.site_ids}),
        },
    }
    if task == "classification":
        summary["threshold"] = threshold
    if splits is not None and records is not None:
        summary["parts"] = [{"fold": s.name, **s.counts(records)} for s in splits]
    summary["pooled"] = block(pooled, slice(None))
    summary["per_fold"] = [
        {"fold": f.fold, "temperature": f.temperature, **block(f, slice(None))} for f in folds
    ]
    summary["per_site"] = [
        {"site_id": site, **block(pooled, pooled.site_ids == site)}
        for site in summary["n"]["sites"]
    ]
    if diagram_path is not None and task == "classification":
        written = save_reliability_diagram(
            diagram_path,
            pooled.y_true,
            pooled.scores,
            f"{target}, {split_kind}, pooled out-of-fold",
            n_bins=n_bins,
            calibrated_prob=pooled.calibrated_scores,
        )
        summary["reliability_diagram"] = str(written)
    return summary


def markdown_table(summaries: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> str:
    """A Markdown results table, one row per summary and metric, for a README.

    Rows show the pooled value with its CI and the number of test patients; the CI
    level and the disclaimer follow the table.
    """
    lines = [
        "| target | split | metric | value (CI) | test patients |",
        "|---|---|---|---|---|",
    ]
    for summary in summaries:
        for name in metrics:
            metric = summary["pooled"]["metrics"].get(name)
            if metric is None:
                continue
            lines.append(
                f"| {summary['target']} | {summary['split_type']} | {name} | "
                f"{_format_ci(metric)} | {summary['n']['test_patients']} |"
            )
    levels = sorted({f"{s['bootstrap']['confidence']:.0%}" for s in summaries})
    lines.append("")
    lines.append(f"CIs: {', '.join(levels)} percentile bootstrap over patients. *{DISCLAIMER}*")
    return "\n".join(lines)


def _metric_dicts(metrics: Mapping[str, MetricCI]) -> dict[str, dict[str, Any]]:
    return {name: metric.to_dict() for name, metric in metrics.items()}


def _format_ci(metric: Mapping[str, Any]) -> str:
    if metric["value"] is None:
        return "undefined"
    if metric["low"] is None:
        return f"{metric['value']:.3f}"
    return f"{metric['value']:.3f} ({metric['low']:.3f}–{metric['high']:.3f})"


def _positive_probability(prob: np.ndarray) -> np.ndarray:
    return prob if prob.ndim == 1 else prob[:, 1]
