"""``mmdx evaluate --bundle``: a fixed, trained bundle on every study of a manifest, serially.

No training and no split: every manifest study of the bundle's modality is predicted
alone (:func:`serving.screening.serial.predict_serially`, i.e. ``mmdx predict``), then
scored against the manifest's truth with :mod:`imaging.evaluation` (bootstrap CIs over
patients, ECE; for an EF model the EF errors too). The screen of the same studies with
the same bundle must give the same AUC. Writes ``predictions.csv`` and ``summary.json``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from serving.screening.bundles import ScreenModel
    from serving.settings import Settings

TRUE_FLAGS = {"1", "1.0", "true", "yes"}
FALSE_FLAGS = {"0", "0.0", "false", "no"}
PREDICTION_COLUMNS = (
    "study_id", "patient_pseudonym", "site_id", "sex", "age_years", "truth", "prediction",
    "positive_probability", "ef_percent", "ef_reference", "status", "error_stage", "error",
)  # fmt: skip
CONFIDENCE = 0.95
SPLIT_TYPE = "fixed bundle on every manifest study of its modality (no training, no split)"


def evaluate_bundle(
    bundle: str | Path,
    manifest: str | Path,
    out_dir: str | Path,
    *,
    settings: Settings,
    n_resamples: int = 1000,
    seed: int = 0,
    on_study: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Predict every manifest study of ``bundle``'s modality and score it; return the summary.

    Args:
        bundle: A bundle folder or a name under ``{data_dir}/models``.
        manifest: The archive's ``manifest.csv`` (truth in ``label``, ``reduced_ef``, ``ef``).
        out_dir: Where ``predictions.csv`` and ``summary.json`` go.
        settings: The installation's settings (models folder, pseudonym key).
        n_resamples: Bootstrap resamples of every CI.
        seed: Seeds the bootstrap.
        on_study: Called with (studies done, studies) after each study.

    Raises:
        ScreenInputError: ``manifest`` is not a manifest CSV.
        ModelChoiceError: No bundle of that name.
        CheckpointError: The bundle does not load.
    """
    from serving.screening.bundles import describe_bundle, resolve_bundle_path
    from serving.screening.inputs import ScreenInputError, detect_input_kind, discover_studies
    from serving.screening.serial import predict_serially
    from serving.settings import load_deid_secret

    manifest = Path(manifest)
    if detect_input_kind(manifest) != "manifest":
        raise ScreenInputError(f'Argument "manifest" {manifest}: not a manifest .csv')
    model = describe_bundle(resolve_bundle_path(bundle, settings))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    discovery = discover_studies(
        manifest,
        sources={model.modality: model.source},
        secret=load_deid_secret(settings),
        workdir=out / "input",
    )
    tasks = [task for task in discovery.tasks if task.modality == model.modality]
    rows: list[dict[str, Any]] = []
    for row in predict_serially(tasks, {model.modality: model}, roots=[str(manifest.parent)]):
        rows.append(row)
        if on_study is not None:
            on_study(len(rows), len(tasks))
    truth = _manifest_truth(manifest)
    _write_predictions(out / "predictions.csv", rows, truth, model)
    summary = bundle_summary(rows, truth, model, manifest, n_resamples=n_resamples, seed=seed)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def bundle_summary(
    rows: Sequence[Mapping[str, Any]],
    truth: Mapping[str, Mapping[str, str]],
    model: ScreenModel,
    manifest: Path,
    *,
    n_resamples: int,
    seed: int,
) -> dict[str, Any]:
    """Counts, metrics with CIs (patient bootstrap), calibration and EF errors of ``rows``."""
    from imaging.evaluation.calibration import expected_calibration_error
    from imaging.evaluation.metrics import classification_metrics, regression_metrics
    from imaging.evaluation.report import DISCLAIMER

    done = [row for row in rows if row["status"] == "done"]
    scored = [
        (row, label)
        for row in done
        if (label := truth_label(model.positive_label, truth.get(row["study_id"], {}))) is not None
        and row["positive_probability"] is not None
    ]
    summary: dict[str, Any] = {
        "disclaimer": DISCLAIMER,
        "split_type": SPLIT_TYPE,
        "model": model.describe(),
        "manifest": str(manifest),
        "positive_label": model.positive_label,
        "n": {"studies": len(rows), "done": len(done), "failed": len(rows) - len(done)},
        "failed_studies": [
            {"study_id": row["study_id"], "stage": row["error_stage"], "error": row["error"]}
            for row in rows
            if row["status"] != "done"
        ],
    }
    summary["bootstrap"] = {
        "method": "percentile",
        "unit": "patient",
        "n_resamples": n_resamples,
        "seed": seed,
        "confidence": CONFIDENCE,
    }
    if scored:
        y = np.array([label for _, label in scored])
        prob = np.array([float(row["positive_probability"]) for row, _ in scored])
        groups = np.array([_patient(row) for row, _ in scored])
        found = classification_metrics(
            y, prob, groups=groups, n_resamples=n_resamples, seed=seed, confidence=CONFIDENCE
        )
        summary["n"].update(scored=len(scored), positive=int(y.sum()), patients=len(set(groups)))
        summary["metrics"] = {name: metric.to_dict() for name, metric in found.items()}
        summary["calibration"] = {"n_bins": 10, "ece": expected_calibration_error(y, prob, 10)}
    pairs = [
        (ef, float(row["ef_percent"]), _patient(row))
        for row in done
        if row.get("ef_percent") is not None
        and (ef := _number(truth.get(row["study_id"], {}), "ef")) is not None
    ]
    if pairs:
        found = regression_metrics(
            np.array([ef for ef, _, _ in pairs]),
            np.array([predicted for _, predicted, _ in pairs]),
            groups=np.array([patient for _, _, patient in pairs]),
            n_resamples=n_resamples,
            seed=seed,
            confidence=CONFIDENCE,
        )
        summary["ef_metrics"] = {name: metric.to_dict() for name, metric in found.items()}
    return summary


def truth_label(positive: str | None, row: Mapping[str, str]) -> int | None:
    """1 when the study is positive, 0 when not, None without a usable label.

    Echo (``reduced_ef`` positive): the ``reduced_ef`` flag (1/true), else the label.
    Otherwise the ``label`` column equals the positive label (MR: ``AD``).
    """
    if positive is None:
        return None
    if positive == "reduced_ef":
        flag = str(row.get("reduced_ef") or "").strip().lower()
        if flag in TRUE_FLAGS:
            return 1
        if flag in FALSE_FLAGS:
            return 0
    label = str(row.get("label") or "").strip()
    return int(label == positive) if label else None


def _manifest_truth(manifest: Path) -> dict[str, dict[str, str]]:
    with manifest.open(newline="", encoding="utf-8") as handle:
        return {
            str(row.get("study_instance_uid") or "").strip(): row for row in csv.DictReader(handle)
        }


def _write_predictions(
    path: Path,
    rows: Sequence[Mapping[str, Any]],
    truth: Mapping[str, Mapping[str, str]],
    model: ScreenModel,
) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PREDICTION_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            reference = truth.get(row["study_id"], {})
            writer.writerow(
                {
                    **row,
                    "truth": truth_label(model.positive_label, reference),
                    "ef_reference": _number(reference, "ef"),
                }
            )


def _patient(row: Mapping[str, Any]) -> str:
    """The bootstrap unit: the patient pseudonym, else the study itself."""
    return str(row.get("patient_pseudonym") or row["study_id"])


def _number(row: Mapping[str, str], column: str) -> float | None:
    try:
        value = float(str(row.get(column) or "").strip())
    except ValueError:
        return None
    return value if np.isfinite(value) else None
