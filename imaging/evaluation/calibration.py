"""Calibration: expected calibration error, reliability curves, temperature scaling.

Binding conventions:

* ``prob`` 1-D is the predicted probability of class 1 for binary labels in {0, 1}; the
  reliability curve compares it with the observed frequency of class 1 (as
  scikit-learn's ``calibration_curve``).
* ``prob`` 2-D ``(n, C)`` holds class probabilities for labels in ``0..C-1``; the curve
  compares the top-label confidence with the accuracy of the top label (Guo et al. 2017).
* Bins are ``n_bins`` equal-width intervals of [0, 1], closed on the left, the last one
  also on the right. ECE is the bin-size-weighted mean of ``|observed - predicted|``.

Temperature scaling divides logits by one scalar ``T > 0`` fitted on validation data by
minimising the negative log-likelihood; it changes confidence, never the ranking, so AUC
and the predicted class are unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

TEMPERATURE_BOUNDS = (0.05, 20.0)


@dataclass(frozen=True, eq=False)
class ReliabilityCurve:
    """Per bin: edges (``n_bins + 1``), mean predicted, observed frequency, counts.

    Empty bins have count 0 and NaN means.
    """

    bin_edges: np.ndarray
    mean_predicted: np.ndarray
    observed: np.ndarray
    counts: np.ndarray


def reliability_curve(y_true: ArrayLike, prob: ArrayLike, n_bins: int = 10) -> ReliabilityCurve:
    """Bin predictions into equal-width bins and compare predicted with observed.

    Args:
        y_true: Labels: {0, 1} for 1-D ``prob``, ``0..C-1`` for 2-D ``prob``.
        prob: Probability of class 1 ``(n,)`` or class probabilities ``(n, C)``.
        n_bins: Number of equal-width bins on [0, 1].

    Returns:
        The curve; see ``ReliabilityCurve``.
    """
    predicted, outcome = _predicted_and_outcome(y_true, prob)
    if n_bins < 1:
        raise ValueError(f'Argument "n_bins" must be at least 1, got {n_bins}')
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Interior edges only, so that 1.0 falls in the last bin.
    bins = np.searchsorted(edges[1:-1], predicted, side="right")
    counts = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.bincount(bins, weights=predicted, minlength=n_bins) / counts
        observed = np.bincount(bins, weights=outcome, minlength=n_bins) / counts
    return ReliabilityCurve(edges, mean_predicted, observed, counts)


def expected_calibration_error(y_true: ArrayLike, prob: ArrayLike, n_bins: int = 10) -> float:
    """Expected calibration error over ``n_bins`` equal-width bins (see module docstring)."""
    curve = reliability_curve(y_true, prob, n_bins)
    filled = curve.counts > 0
    gaps = np.abs(curve.observed[filled] - curve.mean_predicted[filled])
    return float((gaps * curve.counts[filled]).sum() / curve.counts.sum())


def apply_temperature(logits: ArrayLike, temperature: float) -> np.ndarray:
    """Probabilities from ``logits / temperature``.

    Args:
        logits: ``(n,)`` binary logits (sigmoid) or ``(n, C)`` class logits (softmax).
        temperature: The scale, > 0.

    Returns:
        ``(n,)`` probability of class 1 or ``(n, C)`` class probabilities.
    """
    if not temperature > 0:
        raise ValueError(f'Argument "temperature" must be positive, got {temperature}')
    z = _as_logits(logits) / temperature
    if z.ndim == 1:
        return 0.5 * (1.0 + np.tanh(z / 2))  # the logistic function, without overflow
    shifted = np.exp(z - z.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def negative_log_likelihood(
    logits: ArrayLike, y_true: ArrayLike, temperature: float = 1.0
) -> float:
    """Mean NLL of ``y_true`` under ``logits / temperature`` (sigmoid or softmax)."""
    z = _as_logits(logits) / temperature
    y = _labels_for(z, y_true)
    if z.ndim == 1:
        # -log sigmoid(z) = log(1 + e^-z); -log(1 - sigmoid(z)) = log(1 + e^z).
        return float(np.where(y == 1, np.logaddexp(0, -z), np.logaddexp(0, z)).mean())
    top = z.max(axis=1)
    log_norm = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
    return float((log_norm - z[np.arange(len(y)), y]).mean())


def fit_temperature(logits: ArrayLike, y_true: ArrayLike) -> float:
    """The temperature that minimises validation NLL, within ``TEMPERATURE_BOUNDS``.

    Fit it on validation data, never on the test set. The NLL is minimised over
    ``log T`` with bounded Brent search (one scalar, so no gradient machinery is needed).
    Perfectly separated data drive ``T`` to the lower bound.

    Args:
        logits: ``(n,)`` binary logits or ``(n, C)`` class logits.
        y_true: Labels in {0, 1} or ``0..C-1``.

    Returns:
        The fitted temperature (> 0); > 1 softens overconfident predictions.
    """
    from scipy.optimize import minimize_scalar

    z = _as_logits(logits)
    y = _labels_for(z, y_true)
    low, high = (math.log(b) for b in TEMPERATURE_BOUNDS)
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(z, y, math.exp(log_t)),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(math.exp(result.x))


def save_reliability_diagram(
    path: str | Path,
    y_true: ArrayLike,
    prob: ArrayLike,
    title: str = "Reliability diagram",
    *,
    n_bins: int = 10,
    calibrated_prob: ArrayLike | None = None,
) -> Path:
    """Write a reliability diagram PNG: observed vs predicted per bin, counts below.

    Args:
        path: Output ``.png`` path; parent folders are created.
        y_true: Labels, as for ``reliability_curve``.
        prob: Predicted probabilities, as for ``reliability_curve``.
        title: Figure title.
        n_bins: Number of equal-width bins.
        calibrated_prob: Optional probabilities after temperature scaling, drawn as a
            second curve.

    Returns:
        The written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = {"uncalibrated": prob}
    if calibrated_prob is not None:
        curves["temperature-scaled"] = calibrated_prob
    figure = Figure(figsize=(5, 6), dpi=100)
    FigureCanvasAgg(figure)  # Agg canvas without pyplot: no global backend state
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    for (label, values), marker in zip(curves.items(), ("o", "s"), strict=False):
        curve = reliability_curve(y_true, values, n_bins)
        ece = expected_calibration_error(y_true, values, n_bins)
        filled = curve.counts > 0
        top.plot(
            curve.mean_predicted[filled],
            curve.observed[filled],
            marker=marker,
            label=f"{label} (ECE {ece:.3f})",
        )
        centres = (curve.bin_edges[:-1] + curve.bin_edges[1:]) / 2
        bottom.bar(centres, curve.counts, width=1 / n_bins, alpha=0.5, label=label)
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed frequency", title=title)
    top.legend(loc="upper left", fontsize="small")
    bottom.set(xlabel="predicted probability", ylabel="count")
    figure.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format="png")
    return out


def _predicted_and_outcome(y_true: ArrayLike, prob: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(prob, dtype=np.float64)
    if p.ndim not in (1, 2) or p.shape[0] == 0 or not np.isfinite(p).all():
        raise ValueError('Argument "prob" must be a non-empty (n,) or (n, C) array of numbers')
    if ((p < 0) | (p > 1)).any():
        raise ValueError('Argument "prob" must lie in [0, 1]')
    y = _labels_for(p, y_true)
    if p.ndim == 1:
        return p, y.astype(np.float64)
    return p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)


def _as_logits(logits: ArrayLike) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim not in (1, 2) or z.shape[0] == 0 or not np.isfinite(z).all():
        raise ValueError('Argument "logits" must be a non-empty (n,) or (n, C) array of numbers')
    return z


def _labels_for(scores: np.ndarray, y_true: ArrayLike) -> np.ndarray:
    """Check labels against 1-D (binary) or 2-D (C classes) scores."""
    y = np.asarray(y_true)
    n_classes = 2 if scores.ndim == 1 else scores.shape[1]
    if y.shape != scores.shape[:1] or not np.isin(y, np.arange(n_classes)).all():
        raise ValueError(
            f'Argument "y_true" must hold {scores.shape[0]} labels in 0..{n_classes - 1}'
        )
    return y.astype(np.int64)
