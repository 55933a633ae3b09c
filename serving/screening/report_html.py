"""``report.html``: the screening summary as one self-contained page.

Plots are embedded as ``data:image/png;base64`` images and the style sheet is inline,
so the file opens offline and can be attached to a paper's supplement as it is. Every
string from the data is HTML-escaped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 68rem; color: #222; }
h1, h2, h3 { font-weight: 600; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .9rem; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.banner { background: #fff3cd; border: 1px solid #e0c060; padding: .6rem 1rem; font-weight: 600; }
.small { color: #a05a00; } .note { color: #555; font-size: .9rem; }
figure { display: inline-block; margin: .5rem 1rem .5rem 0; } img { max-width: 100%; }
"""


def render_report(summary: Mapping[str, Any], figures: Mapping[str, Mapping[str, str]]) -> str:
    """The whole page for ``summary`` (see :func:`serving.screening.report.write_report`).

    Args:
        summary: The report's summary dict.
        figures: Per task key, base64 PNGs by name (``roc``, ``calibration``, ``ef``).
    """
    disclaimer = escape(summary["disclaimer"])
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>Retrospective screening report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>Retrospective screening report</h1>",
        f'<p class="banner">{disclaimer}</p>',
        f"<p>{escape(summary['split_statement'])}</p>",
        _run_section(summary),
        _throughput_section(summary["throughput"]),
    ]
    for task in summary["tasks"]:
        parts.append(_task_section(task, figures.get(task["key"], {}), summary["bootstrap"]))
    if not summary["tasks"]:
        parts.append("<h2>Performance</h2><p>No screened study has a usable label.</p>")
    parts.append(_failed_section(summary))
    parts.append(f'<p class="banner">{disclaimer}</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def format_ci(metric: Mapping[str, Any], digits: int = 3) -> str:
    """``value (low to high)`` of a ``MetricCI.to_dict()``; ``undefined`` without a value."""
    if metric.get("value") is None:
        return "undefined"
    if metric.get("low") is None:
        return f"{metric['value']:.{digits}f}"
    value, low, high = (f"{metric[k]:.{digits}f}" for k in ("value", "low", "high"))
    return f"{value} ({low} to {high})"


def _run_section(summary: Mapping[str, Any]) -> str:
    run, counts = summary["run"], summary["counts"]
    rows = [
        ("input", run.get("input")),
        ("started", run.get("started")),
        ("finished", run.get("finished")),
        ("studies", counts["studies"]),
        ("done", counts["done"]),
        ("failed", counts["failed"]),
        ("labelled and scored", counts["labelled_scored"]),
    ]
    models = _table(
        ("model", "version", "sha256", "trained on", "evaluated by"),
        [
            (
                m.get("name"),
                m.get("version"),
                (m.get("sha256") or "")[:16],
                m.get("trained_on"),
                m.get("split_type"),
            )
            for m in summary["models"]
        ],
    )
    return "<h2>Run</h2>" + _table(("", ""), rows) + (models if summary["models"] else "")


def _throughput_section(throughput: Mapping[str, Any]) -> str:
    rows = [
        ("studies finished in this run", throughput["studies_this_run"]),
        ("wall time (s)", _number(throughput["wall_seconds"], 1)),
        ("studies per hour", _number(throughput["studies_per_hour"], 0)),
        ("studies screened (all runs)", throughput["studies_screened"]),
        (
            f"physician-hours equivalent at {throughput['minutes_per_report']:g} min per report",
            _number(throughput["physician_hours_equivalent"], 1),
        ),
        ("machine hours at this rate", _number(throughput["machine_hours_at_this_rate"], 3)),
        ("times a physician's reading rate", _number(throughput["times_physician_rate"], 0)),
    ]
    return "<h2>Throughput</h2>" + _table(("", ""), rows)


def _task_section(
    task: Mapping[str, Any], figures: Mapping[str, str], bootstrap: Mapping[str, Any]
) -> str:
    title = f"{task['modality']}: {task['model']['name']} {task['model']['version']}"
    parts = [
        f"<h2>{escape(title)}</h2>",
        '<p class="note">'
        + escape(
            f"Positive class: {task['positive_label']}. {task['n']} studies of "
            f"{task['n_patients']} patients, prevalence {task['prevalence']:.1%}. "
            f"{bootstrap['confidence']:.0%} CIs: percentile bootstrap, "
            f"{bootstrap['n_resamples']} resamples over {task['bootstrap_unit']}s."
        )
        + "</p>",
        f"<p><b>AUC {escape(format_ci(task['auc']))}</b></p>",
        _image(figures.get("roc"), "ROC curve"),
        "<h3>Operating points</h3>",
        _operating_points(task["operating_points"]),
        "<h3>Confusion matrix at threshold 0.5</h3>",
        _confusion(task["confusion_matrix"], task["positive_label"]),
        "<h3>Calibration</h3>",
        f"<p>Expected calibration error {task['calibration']['ece']:.3f} "
        f"({task['calibration']['n_bins']} equal-width bins).</p>",
        _image(figures.get("calibration"), "reliability diagram"),
        "<h3>Subgroups</h3>",
    ]
    for name, rows in task["subgroups"].items():
        parts.append(f"<h4>{escape(name.replace('_', ' '))}</h4>{_subgroups(rows)}")
    if task.get("ef") is not None:
        parts.append(_ef_section(task["ef"], figures.get("ef")))
    return "\n".join(parts)


def _operating_points(points: Sequence[Mapping[str, Any]]) -> str:
    if not points:
        return "<p>Undefined: the labelled studies hold one class only.</p>"
    rows = [
        (
            p["name"],
            _number(p["threshold"], 3),
            format_ci(p["sensitivity"]),
            format_ci(p["specificity"]),
            "yes (optimistic)" if p["picked_on_these_studies"] else "no",
        )
        for p in points
    ]
    return _table(
        (
            "operating point",
            "threshold",
            "sensitivity (CI)",
            "specificity (CI)",
            "threshold picked on these studies",
        ),
        rows,
    )


def _confusion(counts: Mapping[str, Any], positive: str) -> str:
    rows = [
        (f"truth {positive}", counts["tp"], counts["fn"]),
        (f"truth not {positive}", counts["fp"], counts["tn"]),
    ]
    return _table(("", f"called {positive}", f"called not {positive}"), rows)


def _subgroups(rows: Sequence[Mapping[str, Any]]) -> str:
    body = [
        (
            row["value"],
            row["n"],
            f"{row['prevalence']:.1%}",
            format_ci(row["auc"]),
            format_ci(row["sensitivity"]),
            format_ci(row["specificity"]),
            "small group: read with care" if row["small"] else "",
        )
        for row in rows
    ]
    return _table(
        (
            "group",
            "n",
            "prevalence",
            "AUC (CI)",
            "sensitivity at 0.5",
            "specificity at 0.5",
            "flag",
        ),
        body,
    )


def _ef_section(ef: Mapping[str, Any], image: str | None) -> str:
    blend = ef["bland_altman"]
    low, high = blend["loa_low"], blend["loa_high"]
    rows = [
        ("studies with reference EF", ef["n"]),
        ("MAE (percentage points)", format_ci(ef["mae"], 2)),
        ("RMSE", format_ci(ef["rmse"], 2)),
        ("R²", format_ci(ef["r2"], 3)),
        ("bias, predicted - reference", format_ci(blend["bias"], 2)),
        ("95% limits of agreement", f"{_number(low, 2)} to {_number(high, 2)}"),
    ]
    return "<h3>Ejection fraction</h3>" + _table(("", ""), rows) + _image(image, "EF agreement")


def _failed_section(summary: Mapping[str, Any]) -> str:
    failed = summary["failed_studies"]
    if not failed:
        return "<h2>Failed studies</h2><p>None.</p>"
    stages = ", ".join(f"{k}: {v}" for k, v in summary["failures_by_stage"].items())
    rows = [(f["study_id"], f["stage"], f["reason"]) for f in failed]
    return f"<h2>Failed studies ({len(failed)})</h2><p>By stage: {escape(stages)}.</p>" + _table(
        ("study_id", "stage", "reason"), rows
    )


def _image(data: str | None, alt: str) -> str:
    if not data:
        return ""
    return f'<figure><img alt="{escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(value) for value in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f'<td class="num">{escape(str(value))}</td>'
    return f"<td>{escape('' if value is None else str(value))}</td>"


def _number(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"
