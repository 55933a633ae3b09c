"""The statistics of a screening report, one task (modality and model) at a time.

Pure numpy over in-memory arrays; the metrics, bootstrap and calibration come from
:mod:`imaging.evaluation`. Every rate carries a percentile bootstrap CI that resamples
patients (pseudonyms) when they are known, studies otherwise. Values are returned as
JSON-serialisable dicts (NaN becomes ``None``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from imaging.evaluation.calibration import expected_calibration_error, reliability_curve
from imaging.evaluation.metrics import (
    bootstrap_ci,
    classification_metrics,
    operating_points,
    regression_metrics,
)

# Below either, a subgroup's AUC and rates are too unstable to read: the row is flagged.
SMALL_GROUP_N = 30
SMALL_GROUP_CLASS_N = 5
AGE_BANDS: tuple[tuple[float, float, str], ...] = (
    (-math.inf, 50.0, "<50"),
    (50.0, 60.0, "50-59"),
    (60.0, 70.0, "60-69"),
    (70.0, 80.0, "70-79"),
    (80.0, math.inf, "80+"),
)
TARGET_SENSITIVITY = 0.9
TARGET_SPECIFICITY = 0.9
DEFAULT_THRESHOLD = 0.5
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Bootstrap:
    """How the CIs are computed: resamples, seed and coverage."""

    n_resamples: int = 1000
    seed: int = 0
    confidence: float = 0.95


@dataclass(frozen=True, eq=False)
class TaskData:
    """The labelled, successfully screened studies of one modality and model.

    Attributes:
        key: ``"MODALITY/model_name"``, unique per report.
        modality: ``"MR"`` or ``"US"`` (or ``"unknown"``).
        model_name: The bundle's name.
        model_version: The bundle's version.
        positive_label: The class whose probability is scored (``AD``, ``reduced_ef``).
        y_true: 1 where the label is the positive class, else 0.
        prob: The calibrated probability of the positive class.
        groups: Patient of each study for the bootstrap, or None to resample studies.
        sites: Site id per study (``"unknown"`` where missing).
        sexes: Sex per study (``"unknown"`` where missing).
        ages: Age in years per study (NaN where missing).
        ef_true: Reference EF (percent) for echo, NaN where missing; None for other tasks.
        ef_pred: Predicted EF (percent), NaN where missing; None for other tasks.
    """

    key: str
    modality: str
    model_name: str
    model_version: str
    positive_label: str
    y_true: np.ndarray
    prob: np.ndarray
    groups: np.ndarray | None
    sites: np.ndarray
    sexes: np.ndarray
    ages: np.ndarray
    ef_true: np.ndarray | None = None
    ef_pred: np.ndarray | None = None


def task_summary(task: TaskData, boot: Bootstrap, *, n_bins: int = 10) -> dict[str, Any]:
    """Everything the report says about one task: ROC, operating points, calibration...

    Returns:
        ``modality``, ``model``, ``positive_label``, ``n``, ``n_patients``,
        ``n_positive``, ``prevalence``, ``auc`` (with CI), ``roc`` (curve points),
        ``operating_points``, ``confusion_matrix``, ``calibration``, ``subgroups`` and,
        for echo with reference EF, ``ef``.
    """
    y, prob = task.y_true, task.prob
    n_positive = int(y.sum())
    summary: dict[str, Any] = {
        "key": task.key,
        "modality": task.modality,
        "model": {"name": task.model_name, "version": task.model_version},
        "positive_label": task.positive_label,
        "n": int(y.size),
        "n_patients": int(y.size if task.groups is None else len(np.unique(task.groups))),
        "n_positive": n_positive,
        "prevalence": n_positive / y.size,
    }
    metrics = _classification(y, prob, task.groups, boot, DEFAULT_THRESHOLD)
    summary["auc"] = metrics["auc"].to_dict()
    summary["roc"] = roc_points(y, prob)
    summary["operating_points"] = operating_point_rows(y, prob, task.groups, boot)
    summary["confusion_matrix"] = confusion_counts(y, prob, DEFAULT_THRESHOLD)
    summary["calibration"] = calibration_summary(y, prob, n_bins)
    summary["subgroups"] = {
        "site": subgroup_rows(task.sites, y, prob, task.groups, boot),
        "sex": subgroup_rows(task.sexes, y, prob, task.groups, boot),
        "age_band": subgroup_rows(
            age_bands(task.ages),
            y,
            prob,
            task.groups,
            boot,
            order=[band for _, _, band in AGE_BANDS] + [UNKNOWN],
        ),
    }
    if task.ef_true is not None and task.ef_pred is not None:
        summary["ef"] = ef_agreement(task.ef_true, task.ef_pred, task.groups, boot)
    return summary


def roc_points(y_true: np.ndarray, prob: np.ndarray) -> dict[str, list[float | None]] | None:
    """The ROC curve (false/true positive rates per threshold); None with one class only."""
    from sklearn.metrics import roc_curve

    if len(np.unique(y_true)) < 2:
        return None
    fpr, tpr, thresholds = roc_curve(y_true, prob)
    return {
        "fpr": [float(v) for v in fpr],
        "tpr": [float(v) for v in tpr],
        # sklearn's first threshold is +inf (nothing called positive); JSON has no inf.
        "thresholds": [float(v) if np.isfinite(v) else None for v in thresholds],
    }


def threshold_for_specificity(y_true: np.ndarray, prob: np.ndarray, target: float) -> float:
    """The lowest threshold (most sensitive) whose specificity reaches ``target``.

    A case is called positive when ``prob >= threshold``; the candidates are the
    observed probabilities and one just above the largest (nothing called positive).

    Raises:
        ValueError: ``target`` outside (0, 1], or no negative case.
    """
    if not 0 < target <= 1:
        raise ValueError(f'Argument "target" must lie in (0, 1], got {target}')
    negatives = np.sort(prob[y_true == 0])
    if negatives.size == 0:
        raise ValueError('Argument "y_true" must hold negative cases for a specificity target')
    candidates = np.unique(np.r_[prob, np.nextafter(prob.max(), np.inf)])
    # Specificity at t: negatives below t (searchsorted left counts values < t).
    specificity = np.searchsorted(negatives, candidates, side="left") / negatives.size
    return float(candidates[int(np.argmax(specificity >= target - 1e-12))])


def operating_point_rows(
    y_true: np.ndarray, prob: np.ndarray, groups: np.ndarray | None, boot: Bootstrap
) -> list[dict[str, Any]]:
    """Sensitivity and specificity with CIs at 0.5 and at 90% sensitivity / specificity.

    The 90% thresholds are picked on these same studies, so their rates are optimistic;
    the report says so. Empty when a class is absent.
    """
    if len(np.unique(y_true)) < 2:
        return []
    by_sensitivity = operating_points(y_true, prob, (TARGET_SENSITIVITY,))[0].threshold
    chosen = [
        ("fixed threshold 0.5", DEFAULT_THRESHOLD),
        (f"{TARGET_SENSITIVITY:.0%} sensitivity", by_sensitivity),
        (
            f"{TARGET_SPECIFICITY:.0%} specificity",
            threshold_for_specificity(y_true, prob, TARGET_SPECIFICITY),
        ),
    ]
    rows = []
    for name, threshold in chosen:
        metrics = _classification(y_true, prob, groups, boot, threshold)
        rows.append(
            {
                "name": name,
                "threshold": threshold,
                "picked_on_these_studies": threshold != DEFAULT_THRESHOLD,
                "sensitivity": metrics["sensitivity"].to_dict(),
                "specificity": metrics["specificity"].to_dict(),
                "confusion_matrix": confusion_counts(y_true, prob, threshold),
            }
        )
    return rows


def confusion_counts(y_true: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, Any]:
    """True/false positives and negatives when ``prob >= threshold`` is called positive."""
    called = prob >= threshold
    positive = y_true == 1
    return {
        "threshold": threshold,
        "tp": int((called & positive).sum()),
        "fp": int((called & ~positive).sum()),
        "tn": int((~called & ~positive).sum()),
        "fn": int((~called & positive).sum()),
    }


def calibration_summary(y_true: np.ndarray, prob: np.ndarray, n_bins: int) -> dict[str, Any]:
    """ECE and the reliability curve's bins (equal width on [0, 1])."""
    curve = reliability_curve(y_true, prob, n_bins)
    bins = [
        {
            "low": float(curve.bin_edges[i]),
            "high": float(curve.bin_edges[i + 1]),
            "count": int(curve.counts[i]),
            "mean_predicted": _json_float(curve.mean_predicted[i]),
            "observed": _json_float(curve.observed[i]),
        }
        for i in range(n_bins)
    ]
    return {
        "n_bins": n_bins,
        "ece": expected_calibration_error(y_true, prob, n_bins),
        "bins": bins,
    }


def subgroup_rows(
    values: np.ndarray,
    y_true: np.ndarray,
    prob: np.ndarray,
    groups: np.ndarray | None,
    boot: Bootstrap,
    *,
    order: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Per value of ``values`` (site, sex or age band): n, prevalence, AUC and rates at 0.5.

    A row is flagged ``small`` below ``SMALL_GROUP_N`` studies or ``SMALL_GROUP_CLASS_N``
    of either class; its AUC is ``None`` when a class is absent. Rows follow ``order``
    where given, else sorted values.
    """
    present = {str(v) for v in values}
    ranked = [v for v in order if v in present] if order is not None else sorted(present)
    rows = []
    for value in ranked:
        rows_in = values == value
        y, p = y_true[rows_in], prob[rows_in]
        g = None if groups is None else groups[rows_in]
        metrics = _classification(y, p, g, boot, DEFAULT_THRESHOLD)
        n_positive = int(y.sum())
        rows.append(
            {
                "value": value,
                "n": int(y.size),
                "n_positive": n_positive,
                "prevalence": n_positive / y.size,
                "auc": metrics["auc"].to_dict(),
                "sensitivity": metrics["sensitivity"].to_dict(),
                "specificity": metrics["specificity"].to_dict(),
                "small": bool(
                    y.size < SMALL_GROUP_N
                    or min(n_positive, y.size - n_positive) < SMALL_GROUP_CLASS_N
                ),
            }
        )
    return rows


def age_bands(ages: np.ndarray) -> np.ndarray:
    """The ``AGE_BANDS`` label of each age (``"unknown"`` where NaN)."""
    labels = np.full(ages.shape, UNKNOWN, dtype=object)
    for low, high, label in AGE_BANDS:
        labels[(ages >= low) & (ages < high)] = label
    return labels.astype(str)


def ef_agreement(
    ef_true: np.ndarray, ef_pred: np.ndarray, groups: np.ndarray | None, boot: Bootstrap
) -> dict[str, Any] | None:
    """EF predicted vs reference: MAE, RMSE, R² and Bland-Altman bias with CIs.

    Bland-Altman differences are predicted minus reference; the limits of agreement
    are ``bias ± 1.96 SD`` of the differences. None without a pair of values.
    """
    both = np.isfinite(ef_true) & np.isfinite(ef_pred)
    if not both.any():
        return None
    truth, pred = ef_true[both], ef_pred[both]
    g = None if groups is None else groups[both]
    metrics = regression_metrics(
        truth,
        pred,
        groups=g,
        n_resamples=boot.n_resamples,
        seed=boot.seed,
        confidence=boot.confidence,
    )
    difference = pred - truth
    bias = bootstrap_ci(
        np.mean,
        difference,
        groups=g,
        n_resamples=boot.n_resamples,
        seed=boot.seed,
        confidence=boot.confidence,
    )
    sd = float(difference.std(ddof=1)) if difference.size > 1 else math.nan
    return {
        "n": int(truth.size),
        "unit": "percent",
        "mae": metrics["mae"].to_dict(),
        "rmse": metrics["rmse"].to_dict(),
        "r2": metrics["r2"].to_dict(),
        "bland_altman": {
            "difference": "predicted - reference",
            "bias": bias.to_dict(),
            "sd": _json_float(sd),
            "loa_low": _json_float(bias.value - 1.96 * sd),
            "loa_high": _json_float(bias.value + 1.96 * sd),
        },
    }


def _classification(
    y: np.ndarray, p: np.ndarray, groups: np.ndarray | None, boot: Bootstrap, threshold: float
) -> dict[str, Any]:
    return classification_metrics(
        y,
        p,
        threshold=threshold,
        groups=groups,
        n_resamples=boot.n_resamples,
        seed=boot.seed,
        confidence=boot.confidence,
    )


def _json_float(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
