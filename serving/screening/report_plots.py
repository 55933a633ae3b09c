"""The screening report's figures as base64 PNGs, for embedding in ``report.html``.

Matplotlib's Agg canvas is used without pyplot (no global backend state); matplotlib is
imported inside the functions so that importing this module stays cheap.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.screening.report_html import format_ci
from serving.screening.report_stats import TaskData

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 90


def task_figures(task: TaskData, summary: Mapping[str, Any], *, n_bins: int) -> dict[str, str]:
    """Base64 PNGs by name: ``roc``, ``calibration`` and, for echo with EF, ``ef``."""
    figures = {"calibration": reliability_png(task, n_bins=n_bins)}
    if summary.get("roc") is not None:
        figures["roc"] = roc_png(summary)
    ef = summary.get("ef")
    if ef is not None and task.ef_true is not None and task.ef_pred is not None:
        figures["ef"] = ef_png(task.ef_true, task.ef_pred, ef)
    return figures


def roc_png(summary: Mapping[str, Any]) -> str:
    """ROC curve with the AUC and its CI in the legend, operating points marked."""
    figure = _figure((4.6, 4.4))
    axes = figure.subplots()
    roc, auc = summary["roc"], summary["auc"]
    label = f"AUC {format_ci(auc)}, n={summary['n']}"
    axes.plot(roc["fpr"], roc["tpr"], label=label)  # straight segments: ties are diagonal
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    for point, marker in zip(summary["operating_points"], ("o", "s", "^"), strict=False):
        sensitivity = point["sensitivity"]["value"]
        specificity = point["specificity"]["value"]
        if sensitivity is None or specificity is None:
            continue
        axes.plot(
            [1 - specificity],
            [sensitivity],
            marker=marker,
            linestyle="none",
            label=f"{point['name']} (t={point['threshold']:.3f})",
        )
    axes.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="1 - specificity",
        ylabel="sensitivity",
        title=f"{summary['modality']} {summary['model']['name']}: ROC",
    )
    axes.legend(loc="lower right", fontsize="x-small")
    figure.tight_layout()
    return _png_base64(figure)


def reliability_png(task: TaskData, *, n_bins: int) -> str:
    """Observed frequency vs predicted probability per bin, with the ECE; counts below.

    Drawn here rather than with ``save_reliability_diagram``: that one labels its curve
    "uncalibrated" (training's view), while the screen's probabilities are the bundle's
    temperature-calibrated ones.
    """
    from imaging.evaluation.calibration import expected_calibration_error, reliability_curve

    curve = reliability_curve(task.y_true, task.prob, n_bins)
    ece = expected_calibration_error(task.y_true, task.prob, n_bins)
    figure = _figure((4.6, 5.4))
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    filled = curve.counts > 0
    top.plot(
        curve.mean_predicted[filled],
        curve.observed[filled],
        marker="o",
        label=f"model probability (ECE {ece:.3f})",
    )
    top.set(
        xlim=(0, 1),
        ylim=(0, 1),
        ylabel="observed frequency",
        title=f"{task.modality} {task.model_name}: calibration",
    )
    top.legend(loc="upper left", fontsize="x-small")
    centres = (curve.bin_edges[:-1] + curve.bin_edges[1:]) / 2
    bottom.bar(centres, curve.counts, width=1 / n_bins, alpha=0.5)
    bottom.set(xlabel=f"predicted probability of {task.positive_label}", ylabel="studies")
    figure.tight_layout()
    return _png_base64(figure)


def ef_png(ef_true: np.ndarray, ef_pred: np.ndarray, ef: Mapping[str, Any]) -> str:
    """EF predicted vs reference (scatter) and the Bland-Altman plot side by side."""
    both = np.isfinite(ef_true) & np.isfinite(ef_pred)
    truth, pred = ef_true[both], ef_pred[both]
    figure = _figure((9.0, 4.2))
    scatter, agreement = figure.subplots(1, 2)
    low = float(min(truth.min(), pred.min(), 0.0))
    high = float(max(truth.max(), pred.max(), 80.0))
    scatter.scatter(truth, pred, s=12, alpha=0.7)
    scatter.plot([low, high], [low, high], linestyle="--", color="grey", label="identity")
    scatter.set(
        xlabel="reference EF (%)",
        ylabel="predicted EF (%)",
        title=f"EF, n={ef['n']}, MAE {format_ci(ef['mae'])}",
    )
    scatter.legend(loc="upper left", fontsize="x-small")
    blend = ef["bland_altman"]
    agreement.scatter((truth + pred) / 2, pred - truth, s=12, alpha=0.7)
    bias = blend["bias"]["value"]
    lines = [
        ("bias", bias, "-"),
        ("-1.96 SD", blend["loa_low"], "--"),
        ("+1.96 SD", blend["loa_high"], "--"),
    ]
    for name, value, style in lines:
        if value is not None:
            agreement.axhline(value, linestyle=style, color="tab:red", label=f"{name} {value:.1f}")
    agreement.set(
        xlabel="mean of predicted and reference (%)",
        ylabel="predicted - reference (%)",
        title="Bland-Altman",
    )
    agreement.legend(loc="upper right", fontsize="x-small")
    figure.tight_layout()
    return _png_base64(figure)


def _figure(size: tuple[float, float]) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _png_base64(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
