"""The screening report: ``summary.json`` and a self-contained ``report.html``.

:func:`write_report` joins the screen's results (one row per study, the Parquet schema
of ``DIR/results``) with a labels CSV (the ``mmdx synth`` manifest or any CSV with
``study_instance_uid`` and the truth columns) and reports, per modality and model:
ROC with AUC, sensitivity/specificity at operating points, calibration, the confusion
matrix, subgroups by site, sex and age band, and for echo the EF agreement; then the
failed studies and the throughput. Truth: MR positive when ``label == "AD"`` (the
model's positive label); echo positive when ``reduced_ef`` is 1/true.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imaging.evaluation.report import DISCLAIMER
from serving.screening.evaluate import truth_label
from serving.screening.report_stats import UNKNOWN, Bootstrap, TaskData, task_summary
from serving.screening.report_throughput import throughput

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
REQUIRED_RESULT_COLUMNS = ("study_id", "status")
LABEL_KEYS = ("study_instance_uid", "study_id")


class ReportInputError(ValueError):
    """The results or labels cannot make a report; the message names the input and why."""


def write_report(
    results: pa.Table | pd.DataFrame,
    labels_csv: Path,
    out_dir: Path,
    *,
    run_info: Mapping[str, Any],
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    n_bins: int = 10,
) -> dict[str, Any]:
    """Write ``summary.json`` and ``report.html`` into ``out_dir``; return the summary.

    Args:
        results: The screen's results, one row per study (Parquet schema of the contract).
        labels_csv: Truth per study, joined on ``study_instance_uid`` (or ``study_id``).
        out_dir: The screen's output folder.
        run_info: The run's ``run.json`` content (input, models, started/finished).
        n_resamples: Bootstrap resamples for every CI.
        seed: Seeds the bootstrap.
        confidence: Coverage of the CIs.
        n_bins: Equal-width bins of the calibration curve and ECE.

    Returns:
        The summary written to ``summary.json`` (JSON-serialisable).

    Raises:
        ReportInputError: Missing result columns, or a labels file that cannot be read.
    """
    from serving.screening.report_html import render_report
    from serving.screening.report_plots import task_figures

    boot = Bootstrap(n_resamples=n_resamples, seed=seed, confidence=confidence)
    frame = _results_frame(results)
    labels = read_labels(labels_csv)
    tasks = build_tasks(frame, labels)
    summary = build_summary(frame, tasks, run_info, boot, n_bins=n_bins, labelled=len(labels))
    figures = {
        task.key: task_figures(task, entry, n_bins=n_bins)
        for task, entry in zip(tasks, summary["tasks"], strict=True)
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=2, allow_nan=False) + "\n")
    _write_atomic(out / REPORT_FILE, render_report(summary, figures))
    return summary


def read_labels(labels_csv: Path) -> pd.DataFrame:
    """The labels CSV as strings, indexed by study id (first row wins on duplicates).

    Raises:
        ReportInputError: The file is missing, unreadable, or has no study id column.
    """
    import pandas as pd

    path = Path(labels_csv)
    try:
        labels = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise ReportInputError(f'labels "{path}": cannot be read ({exc})') from exc
    key = next((k for k in LABEL_KEYS if k in labels.columns), None)
    if key is None:
        raise ReportInputError(f'labels "{path}": needs a column named one of {LABEL_KEYS}')
    labels = labels.drop_duplicates(subset=key, keep="first").set_index(key)
    labels.index = labels.index.astype(str)
    return labels


def build_tasks(frame: pd.DataFrame, labels: pd.DataFrame) -> list[TaskData]:
    """One task per modality and model among the done, labelled studies."""
    done = frame[(frame["status"] == "done") & frame["positive_probability"].notna()]
    tasks = []
    for (modality, model_name), rows in done.groupby(
        [done["modality"].fillna(UNKNOWN), done["model_name"].fillna(UNKNOWN)], sort=True
    ):
        joined = rows.join(labels, on="study_id", how="inner", suffixes=("", "_label"))
        if joined.empty:
            continue
        positive = str(joined["positive_label"].dropna().iloc[0])
        truth = np.array([truth_label(positive, row) for _, row in joined.iterrows()], dtype=object)
        keep = np.array([t is not None for t in truth], dtype=bool)
        if not keep.any():
            continue
        joined = joined[keep]
        tasks.append(_task(str(modality), str(model_name), positive, joined, truth[keep]))
    return tasks


def build_summary(
    frame: pd.DataFrame,
    tasks: list[TaskData],
    run_info: Mapping[str, Any],
    boot: Bootstrap,
    *,
    n_bins: int,
    labelled: int,
) -> dict[str, Any]:
    """The JSON-serialisable summary of the whole screen (see :func:`write_report`)."""
    done = frame["status"] == "done"
    failed = frame[frame["status"] == "failed"]
    finished = [_python_time(t) for t in frame["finished_at"]]
    stages = failed["error_stage"].fillna(UNKNOWN).astype(str)
    return {
        "disclaimer": DISCLAIMER,
        "split_statement": split_statement(len(frame), run_info),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run": {key: run_info.get(key) for key in ("input", "started", "finished", "ray_address")},
        "models": [_model_row(entry) for entry in run_info.get("models") or []],
        "bootstrap": {
            "method": "percentile",
            "n_resamples": boot.n_resamples,
            "confidence": boot.confidence,
            "seed": boot.seed,
        },
        "counts": {
            "studies": len(frame),
            "done": int(done.sum()),
            "failed": len(failed),
            "labels_rows": labelled,
            "labelled_scored": int(sum(t.y_true.size for t in tasks)),
        },
        "tasks": [
            {
                "bootstrap_unit": "study" if t.groups is None else "patient",
                **task_summary(t, boot, n_bins=n_bins),
            }
            for t in tasks
        ],
        "failed_studies": [
            {
                "study_id": str(row.study_id),
                "stage": _text(row.error_stage),
                "reason": _text(row.error),
            }
            for row in failed.itertuples(index=False)
        ],
        "failures_by_stage": {
            str(k): int(v) for k, v in stages.value_counts().sort_index().items()
        },
        "throughput": throughput(finished, int(done.sum()), run_info),
    }


def split_statement(n_studies: int, run_info: Mapping[str, Any]) -> str:
    """Says that every study was screened and what each model was trained on."""
    parts = []
    for entry in run_info.get("models") or []:
        model = _model_row(entry)
        trained = model.get("trained_on") or "the data its model card names"
        split = f" (evaluated by {model['split_type']})" if model.get("split_type") else ""
        parts.append(
            f"{model.get('name')} {model.get('version')} was trained on {trained}{split}, "
            "as its model card says"
        )
    models = "; ".join(parts) if parts else "the models were trained on the data their cards name"
    return (
        f"All {n_studies} studies of the input were screened, whatever split they belonged to; "
        f"{models}. Studies a model was trained on are not excluded, so its figures here can "
        "be optimistic."
    )


def _results_frame(results: pa.Table | pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    frame = results if isinstance(results, pd.DataFrame) else results.to_pandas()
    missing = [c for c in REQUIRED_RESULT_COLUMNS if c not in frame.columns]
    if missing:
        raise ReportInputError(f'Argument "results" lacks the columns {missing}')
    frame = frame.copy()
    for column in (
        "patient_pseudonym",
        "modality",
        "site_id",
        "sex",
        "age_years",
        "model_name",
        "model_version",
        "positive_label",
        "positive_probability",
        "ef_percent",
        "finished_at",
        "error",
        "error_stage",
    ):
        if column not in frame.columns:
            frame[column] = None
    frame["study_id"] = frame["study_id"].astype(str)
    return frame


def _task(
    modality: str, model_name: str, positive: str, rows: pd.DataFrame, truth: np.ndarray
) -> TaskData:
    groups = _patient_groups(rows)
    ef_true = ef_pred = None
    if rows["ef_percent"].notna().any():
        ef_pred = _floats(rows["ef_percent"])
        ef_true = _floats(rows["ef"]) if "ef" in rows.columns else np.full(len(rows), np.nan)
    return TaskData(
        key=f"{modality}/{model_name}",
        modality=modality,
        model_name=model_name,
        model_version=str(rows["model_version"].dropna().iloc[0])
        if rows["model_version"].notna().any()
        else UNKNOWN,
        positive_label=positive,
        y_true=truth.astype(np.int64),
        prob=_floats(rows["positive_probability"]),
        groups=groups,
        sites=_categories(rows, "site_id"),
        sexes=_categories(rows, "sex"),
        ages=np.where(
            rows["age_years"].notna(), _floats(rows["age_years"]), _label_floats(rows, "age")
        ),
        ef_true=ef_true,
        ef_pred=ef_pred,
    )


def _patient_groups(rows: pd.DataFrame) -> np.ndarray | None:
    """Patient of each study for the bootstrap: pseudonyms, else the labels' patient ids.

    A study without either counts as a patient of its own; None when no study has one
    (the bootstrap then resamples studies). Labels' ids group rows only, never shown.
    """
    patients = rows["patient_pseudonym"]
    if patients.isna().all() and "patient_id" in rows.columns:
        patients = rows["patient_id"].replace("", None)
    if patients.isna().all():
        return None
    return np.where(patients.notna(), patients.astype(str), "study:" + rows["study_id"])


def _categories(rows: pd.DataFrame, column: str) -> np.ndarray:
    """The results' column, else the labels' (``<column>_label`` after the join)."""
    values = rows[column].astype(object)
    fallback = f"{column}_label"
    if fallback in rows.columns:
        values = values.where(values.notna(), rows[fallback].replace("", None))
    return np.array([UNKNOWN if _is_null(v) else str(v) for v in values], dtype=str)


def _label_floats(rows: pd.DataFrame, column: str) -> np.ndarray:
    if column not in rows.columns:
        return np.full(len(rows), np.nan)
    return _floats(rows[column])


def _floats(values: pd.Series) -> np.ndarray:
    import pandas as pd

    return pd.to_numeric(values.replace("", None), errors="coerce").to_numpy(dtype=np.float64)


def _model_row(entry: Mapping[str, Any]) -> dict[str, Any]:
    """Name, version, sha256 and what the model card says it was trained on."""
    row = {key: entry.get(key) for key in ("name", "version", "sha256")}
    source = entry.get("data_source")
    split = entry.get("split_type")
    bundle = entry.get("path") or entry.get("bundle")
    if (source is None or split is None) and bundle:
        card = _model_card(Path(str(bundle)))
        source = source or card.get("data_source")
        split = split or ((card.get("mmdx") or {}).get("evaluation") or {}).get("split_type")
    row["trained_on"] = (source or {}).get("description") if isinstance(source, dict) else source
    row["split_type"] = split
    return row


def _model_card(bundle: Path) -> dict[str, Any]:
    from imaging.bundle import read_metadata
    from imaging.errors import CheckpointError

    try:
        return read_metadata(bundle)
    except CheckpointError:
        return {}


def _python_time(value: Any) -> datetime | None:
    """A datetime, or None for null/NaT (pandas gives Timestamps)."""
    if _is_null(value):
        return None
    return value.to_pydatetime() if hasattr(value, "to_pydatetime") else value


def _text(value: Any) -> str | None:
    return None if _is_null(value) else str(value)


def _is_null(value: Any) -> bool:
    """None, NaN, NaT or pandas' NA."""
    import pandas as pd

    if value is None:
        return True
    return np.ndim(value) == 0 and bool(pd.isna(value))


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
