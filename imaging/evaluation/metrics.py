"""Binary-classification and regression metrics with percentile bootstrap CIs.

Classification takes ``y_true`` in {0, 1} and ``prob``, the predicted probability of
class 1; a case is called positive when ``prob >= threshold``. Metrics are computed in
numpy (they agree with scikit-learn's) so that 1000 resamples take milliseconds.

The bootstrap resamples rows, or whole patients when ``groups`` (patient ids) is given:
follow-up visits of one patient are correlated, and resampling them independently makes
the interval too narrow. Resamples where a metric is undefined (one class only, constant
target) are skipped for that metric, and ``MetricCI.n_resamples`` says how many were used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "auc")
REGRESSION_METRICS = ("mae", "rmse", "r2")


@dataclass(frozen=True)
class MetricCI:
    """A point estimate with its percentile bootstrap confidence interval.

    ``value``, ``low`` and ``high`` are NaN where the metric is undefined on the data
    (or on every resample). ``n`` counts rows, ``n_groups`` patients when resampling
    patients, and ``n_resamples`` the resamples on which the metric was defined.
    """

    value: float
    low: float
    high: float
    n: int
    n_resamples: int = 0
    n_groups: int | None = None
    confidence: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; NaN becomes ``None``."""
        return {
            "value": _json_float(self.value),
            "low": _json_float(self.low),
            "high": _json_float(self.high),
            "n": self.n,
            "n_groups": self.n_groups,
            "n_resamples": self.n_resamples,
            "confidence": self.confidence,
        }


@dataclass(frozen=True)
class OperatingPoint:
    """The highest threshold whose sensitivity reaches ``target_sensitivity``."""

    target_sensitivity: float
    threshold: float
    sensitivity: float
    specificity: float

    def to_dict(self) -> dict[str, float]:
        """A JSON-serialisable dict."""
        return {
            "target_sensitivity": self.target_sensitivity,
            "threshold": self.threshold,
            "sensitivity": self.sensitivity,
            "specificity": self.specificity,
        }


def bootstrap_ci(
    metric_fn: Callable[..., float],
    *arrays: ArrayLike,
    groups: ArrayLike | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> MetricCI:
    """Percentile bootstrap CI of ``metric_fn(*arrays)``.

    Args:
        metric_fn: Computes the metric from the arrays; returns NaN or raises
            ``ValueError`` where it is undefined (such resamples are skipped).
        *arrays: Equal-length arrays, resampled together along the first axis.
        groups: One id per row (patient ids); whole groups are resampled when given.
        n_resamples: Number of bootstrap resamples.
        seed: Seeds the resampling.
        confidence: Coverage of the interval, in (0, 1).

    Returns:
        The metric on all rows with its interval.
    """
    results = bootstrap_metrics(
        lambda *a: {"metric": _call_or_nan(metric_fn, *a)},
        [np.asarray(a) for a in arrays],
        groups=groups,
        n_resamples=n_resamples,
        seed=seed,
        confidence=confidence,
    )
    return results["metric"]


def classification_metrics(
    y_true: ArrayLike,
    prob: ArrayLike,
    *,
    threshold: float = 0.5,
    groups: ArrayLike | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, MetricCI]:
    """Accuracy, balanced accuracy, sensitivity, specificity and AUC with bootstrap CIs.

    All metrics share the same resamples. Balanced accuracy is the mean of sensitivity
    and specificity, undefined (like both of them and AUC) when a class is absent.

    Args:
        y_true: Labels in {0, 1}.
        prob: Predicted probability of class 1, in [0, 1].
        threshold: A case is called positive when ``prob >= threshold``.
        groups: Patient ids, to resample patients instead of rows.
        n_resamples: Number of bootstrap resamples.
        seed: Seeds the resampling.
        confidence: Coverage of the intervals.

    Returns:
        ``MetricCI`` per name in ``CLASSIFICATION_METRICS``.
    """
    y, p = _check_binary(y_true, prob)
    return bootstrap_metrics(
        lambda yy, pp: binary_scores(yy, pp, threshold=threshold),
        [y, p],
        groups=groups,
        n_resamples=n_resamples,
        seed=seed,
        confidence=confidence,
    )


def regression_metrics(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    groups: ArrayLike | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, MetricCI]:
    """MAE, RMSE and R² with bootstrap CIs (R² is undefined for a constant target).

    Args:
        y_true: Reference values (e.g. EF in percent).
        y_pred: Predictions in the same unit.
        groups: Patient ids, to resample patients instead of rows.
        n_resamples: Number of bootstrap resamples.
        seed: Seeds the resampling.
        confidence: Coverage of the intervals.

    Returns:
        ``MetricCI`` per name in ``REGRESSION_METRICS``.
    """
    y = _as_finite_1d("y_true", y_true)
    pred = _as_finite_1d("y_pred", y_pred)
    _check_same_length({"y_true": y, "y_pred": pred})
    return bootstrap_metrics(
        regression_scores,
        [y, pred],
        groups=groups,
        n_resamples=n_resamples,
        seed=seed,
        confidence=confidence,
    )


def binary_scores(y_true: np.ndarray, prob: np.ndarray, *, threshold: float) -> dict[str, float]:
    """Point values of ``CLASSIFICATION_METRICS`` (NaN where undefined), unchecked input."""
    positive = y_true == 1
    called = prob >= threshold
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    sensitivity = float((called & positive).sum() / n_pos) if n_pos else np.nan
    specificity = float((~called & ~positive).sum() / n_neg) if n_neg else np.nan
    return {
        "accuracy": float((called == positive).mean()) if positive.size else np.nan,
        "balanced_accuracy": (sensitivity + specificity) / 2,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "auc": _auc(positive, prob, n_pos, n_neg),
    }


def regression_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Point values of ``REGRESSION_METRICS`` (NaN where undefined), unchecked input."""
    if y_true.size == 0:
        return dict.fromkeys(REGRESSION_METRICS, np.nan)
    error = y_pred - y_true
    total = float(((y_true - y_true.mean()) ** 2).sum())
    return {
        "mae": float(np.abs(error).mean()),
        "rmse": float(np.sqrt((error**2).mean())),
        "r2": 1.0 - float((error**2).sum()) / total if total > 0 else np.nan,
    }


def operating_points(
    y_true: ArrayLike, prob: ArrayLike, sensitivities: Sequence[float] = (0.9, 0.95)
) -> list[OperatingPoint]:
    """For each target sensitivity, the highest threshold that reaches it.

    The highest such threshold gives the best specificity at that sensitivity; pick it on
    validation data and report the test sensitivity and specificity it achieves.

    Raises:
        ValueError: Bad inputs, a target outside (0, 1], or a class absent.
    """
    y, p = _check_binary(y_true, prob)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError('Argument "y_true" must hold both classes for operating points')
    order = np.argsort(-p, kind="stable")
    p_sorted = p[order]
    true_pos = np.cumsum(y[order])
    false_pos = np.cumsum(1 - y[order])
    # Calling positive at threshold t = p_sorted[i] includes every tie of that value.
    last_of_value = np.r_[p_sorted[1:] != p_sorted[:-1], True]
    thresholds = p_sorted[last_of_value]
    sens = true_pos[last_of_value] / n_pos
    spec = 1 - false_pos[last_of_value] / n_neg
    points = []
    for target in sensitivities:
        if not 0 < target <= 1:
            raise ValueError(f'Argument "sensitivities" must lie in (0, 1], got {target}')
        i = int(np.argmax(sens >= target - 1e-12))
        points.append(
            OperatingPoint(float(target), float(thresholds[i]), float(sens[i]), float(spec[i]))
        )
    return points


def bootstrap_indices(
    n: int, *, groups: ArrayLike | None, n_resamples: int, seed: int
) -> Iterator[np.ndarray]:
    """Row indices of each bootstrap resample (whole groups at a time when given)."""
    rng = np.random.default_rng(seed)
    if groups is None:
        for _ in range(n_resamples):
            yield rng.integers(0, n, size=n)
        return
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = int(inverse.max()) + 1
    rows = np.arange(n)
    for _ in range(n_resamples):
        times_drawn = np.bincount(rng.integers(0, n_groups, size=n_groups), minlength=n_groups)
        yield np.repeat(rows, times_drawn[inverse])


def bootstrap_metrics(
    compute: Callable[..., Mapping[str, float]],
    arrays: list[np.ndarray],
    *,
    groups: ArrayLike | None,
    n_resamples: int,
    seed: int,
    confidence: float,
) -> dict[str, MetricCI]:
    """Percentile bootstrap CIs of every metric ``compute(*arrays)`` returns, by name.

    All metrics share the same resamples (one pass); non-finite values of a metric in
    a resample are skipped for that metric only.
    """
    if not 0 < confidence < 1:
        raise ValueError(f'Argument "confidence" must be in (0, 1), got {confidence}')
    if n_resamples < 1:
        raise ValueError(f'Argument "n_resamples" must be at least 1, got {n_resamples}')
    named = {f"array {i}": a for i, a in enumerate(arrays)}
    group_array = None if groups is None else np.asarray(groups)
    if group_array is not None:
        named["groups"] = group_array
    n = _check_same_length(named)
    n_groups = None if group_array is None else len(np.unique(group_array))
    point = compute(*arrays)
    samples: dict[str, list[float]] = {name: [] for name in point}
    for rows in bootstrap_indices(n, groups=group_array, n_resamples=n_resamples, seed=seed):
        for name, value in compute(*(a[rows] for a in arrays)).items():
            if np.isfinite(value):
                samples[name].append(value)
    tail = 100 * (1 - confidence) / 2
    results = {}
    for name, value in point.items():
        if samples[name] and np.isfinite(value):
            low, high = np.percentile(samples[name], [tail, 100 - tail])
        else:
            low = high = np.nan
        results[name] = MetricCI(
            value=float(value),
            low=float(low),
            high=float(high),
            n=n,
            n_resamples=len(samples[name]),
            n_groups=n_groups,
            confidence=confidence,
        )
    return results


def _auc(positive: np.ndarray, prob: np.ndarray, n_pos: int, n_neg: int) -> float:
    """Mann-Whitney AUC with ties counted as one half (as scikit-learn's ``roc_auc_score``)."""
    if n_pos == 0 or n_neg == 0:
        return np.nan
    _, inverse, counts = np.unique(prob, return_inverse=True, return_counts=True)
    mean_rank = np.cumsum(counts) - (counts - 1) / 2
    rank_sum = float(mean_rank[inverse][positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _call_or_nan(metric_fn: Callable[..., float], *arrays: np.ndarray) -> float:
    try:
        return float(metric_fn(*arrays))
    except ValueError:
        return np.nan


def _check_binary(y_true: ArrayLike, prob: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    if y.ndim != 1 or not np.isin(y, (0, 1)).all():
        raise ValueError('Argument "y_true" must be a 1-D array of 0 and 1')
    p = _as_finite_1d("prob", prob)
    if ((p < 0) | (p > 1)).any():
        raise ValueError('Argument "prob" must lie in [0, 1] (probability of class 1)')
    _check_same_length({"y_true": y, "prob": p})
    return y.astype(np.int64), p


def _as_finite_1d(name: str, values: ArrayLike) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or not np.isfinite(array).all():
        raise ValueError(f'Argument "{name}" must be a 1-D array of finite numbers')
    return array


def _check_same_length(arrays: Mapping[str, np.ndarray]) -> int:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"Arrays must have the same length, got {lengths}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError("Arrays must not be empty")
    return n


def _json_float(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
