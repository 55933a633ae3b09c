"""The screening report's figures equal independently computed ones; the HTML stands alone."""

from __future__ import annotations

import base64
import csv
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from sklearn import metrics as skm

from serving.screening.report import ReportInputError, write_report
from serving.screening.report_stats import threshold_for_specificity

STARTED = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
N_MR, N_US = 60, 40
FAILED = [
    ("1.2.826.0.1.9001", "decode", "DicomReadError: 9001/IM1.dcm: truncated <b>file</b>"),
    ("1.2.826.0.1.9002", "infer", "RuntimeError: model output is NaN"),
]
RESAMPLES = 200


def synthetic_screen(seed: int = 0) -> tuple[pa.Table, list[dict[str, str]], dict[str, Any]]:
    """A results table (contract schema), its labels rows and ground truth arrays."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    labels: list[dict[str, str]] = []
    truth: dict[str, Any] = {"MR": ([], []), "US": ([], []), "ef": ([], [])}
    for i in range(N_MR + N_US):
        modality = "MR" if i < N_MR else "US"
        study_id = f"1.2.826.0.1.{i}"
        y = int(rng.random() < 0.4)
        prob = float(np.clip(0.35 * y + 0.65 * rng.random(), 0, 1).round(2))
        site = f"S0{i % 3}"
        ef_true = float(rng.uniform(20, 70)) if modality == "US" else None
        ef_pred = ef_true + float(rng.normal(1.0, 4.0)) if ef_true is not None else None
        rows.append(
            {
                "study_id": study_id,
                "patient_pseudonym": f"pseudo-{i // 2:03d}",  # two studies per patient
                "modality": modality,
                "site_id": site,
                "sex": "F" if i % 2 else "M",
                "age_years": float(45 + i % 45),
                "model_name": "mri_ad" if modality == "MR" else "echo_ef",
                "model_version": "0.1.0",
                "prediction": None,
                "probability": None,
                "positive_label": "AD" if modality == "MR" else "reduced_ef",
                "positive_probability": prob,
                "ef_percent": ef_pred,
                "decode_ms": 10.0,
                "infer_ms": 5.0,
                "finished_at": STARTED + timedelta(seconds=1 + i),
                "status": "done",
                "error": None,
                "error_stage": None,
            }
        )
        if modality == "MR":
            label, reduced = ("AD" if y else "CN"), ""
        else:
            # The US truth is the reduced_ef flag; the label column disagrees on purpose.
            label, reduced = "normal_ef", str(y)
        labels.append(
            {
                "study_instance_uid": study_id,
                "patient_id": f"P{i // 2:03d}",
                "site_id": site,
                "age": str(45 + i % 45),
                "sex": "F",
                "label": label,
                "ef": "" if ef_true is None else f"{ef_true:.4f}",
                "reduced_ef": reduced,
            }
        )
        truth[modality][0].append(y)
        truth[modality][1].append(prob)
        if ef_true is not None and ef_pred is not None:
            truth["ef"][0].append(float(f"{ef_true:.4f}"))
            truth["ef"][1].append(ef_pred)
    for study_id, stage, reason in FAILED:
        rows.append(
            {
                "study_id": study_id,
                "status": "failed",
                "error_stage": stage,
                "error": reason,
                "finished_at": STARTED + timedelta(seconds=200),
            }
        )
    # A study done in an earlier run (before this run started), without a label.
    rows.append(
        {
            "study_id": "1.2.826.0.1.8000",
            "status": "done",
            "modality": "MR",
            "model_name": "mri_ad",
            "positive_label": "AD",
            "positive_probability": 0.7,
            "finished_at": STARTED - timedelta(days=1),
        }
    )
    columns = sorted({key for row in rows for key in row})
    table = pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows])
    return table, labels, truth


def write_labels(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


RUN_INFO = {
    "input": "archive/manifest.csv",
    "started": STARTED.isoformat(),
    "finished": (STARTED + timedelta(seconds=360)).isoformat(),
    "models": [
        {
            "name": "mri_ad",
            "version": "0.1.0",
            "sha256": "0" * 64,
            "data_source": {"description": "synthetic sample archive, sites S00-S02"},
            "split_type": "leave-sites-out",
        },
        {"name": "echo_ef", "version": "0.1.0", "sha256": "1" * 64},
    ],
}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, dict]:
    folder = tmp_path_factory.mktemp("screen")
    table, labels, truth = synthetic_screen()
    summary = write_report(
        table,
        write_labels(folder / "labels.csv", labels),
        folder / "out",
        run_info=RUN_INFO,
        n_resamples=RESAMPLES,
    )
    return summary, folder / "out", truth


def task(summary: dict[str, Any], modality: str) -> dict[str, Any]:
    return next(t for t in summary["tasks"] if t["modality"] == modality)


def test_summary_json_on_disk_is_the_returned_summary(report: tuple) -> None:
    summary, out, _ = report
    assert json.loads((out / "summary.json").read_text()) == summary
    assert "not for diagnostic use" in summary["disclaimer"]
    assert "Engineering figures on synthetic data" in summary["disclaimer"]
    assert [t["key"] for t in summary["tasks"]] == ["MR/mri_ad", "US/echo_ef"]


def test_auc_equals_scikit_learn_with_a_patient_bootstrap_ci(report: tuple) -> None:
    summary, _, truth = report
    for modality, n in (("MR", N_MR), ("US", N_US)):
        y, prob = truth[modality]
        entry = task(summary, modality)
        auc = entry["auc"]
        assert auc["value"] == pytest.approx(skm.roc_auc_score(y, prob), abs=1e-12)
        assert auc["low"] < auc["value"] < auc["high"]
        assert (auc["n"], auc["n_groups"], auc["confidence"]) == (n, n // 2, 0.95)
        assert entry["bootstrap_unit"] == "patient"
        assert entry["n_positive"] == sum(y)
        assert entry["prevalence"] == pytest.approx(sum(y) / n)
        fpr, tpr, _ = skm.roc_curve(y, prob)
        assert entry["roc"]["fpr"] == pytest.approx(list(fpr))
        assert entry["roc"]["tpr"] == pytest.approx(list(tpr))


def test_operating_points_and_confusion_matrix(report: tuple) -> None:
    summary, _, truth = report
    y, prob = (np.asarray(a) for a in truth["MR"])
    entry = task(summary, "MR")
    called = (prob >= 0.5).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, called).ravel()
    assert entry["confusion_matrix"] == {
        "threshold": 0.5,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }
    fixed, by_sens, by_spec = entry["operating_points"]
    assert fixed["sensitivity"]["value"] == pytest.approx(skm.recall_score(y, called))
    assert fixed["specificity"]["value"] == pytest.approx(skm.recall_score(y, called, pos_label=0))
    for point in (by_sens, by_spec):
        low, high = point["sensitivity"]["low"], point["sensitivity"]["high"]
        assert low <= point["sensitivity"]["value"] <= high
    # 90% sensitivity: the highest threshold that reaches it.
    sens = [((prob >= t) & (y == 1)).sum() / y.sum() for t in np.unique(prob)]
    best = max(t for t, s in zip(np.unique(prob), sens, strict=True) if s >= 0.9)
    assert by_sens["threshold"] == best and by_sens["sensitivity"]["value"] >= 0.9
    # 90% specificity: the lowest threshold that reaches it.
    spec = [((prob < t) & (y == 0)).sum() / (y == 0).sum() for t in np.unique(prob)]
    lowest = min(t for t, s in zip(np.unique(prob), spec, strict=True) if s >= 0.9)
    assert by_spec["threshold"] == lowest and by_spec["specificity"]["value"] >= 0.9
    assert by_spec["picked_on_these_studies"] and not fixed["picked_on_these_studies"]


def test_calibration_ece_by_hand(report: tuple) -> None:
    summary, _, truth = report
    y, prob = (np.asarray(a, dtype=float) for a in truth["US"])
    bins = np.minimum((prob * 10).astype(int), 9)
    expected = sum(
        abs(y[bins == b].mean() - prob[bins == b].mean()) * (bins == b).sum()
        for b in range(10)
        if (bins == b).any()
    ) / len(y)
    calibration = task(summary, "US")["calibration"]
    assert calibration["ece"] == pytest.approx(expected)
    assert sum(b["count"] for b in calibration["bins"]) == N_US


def test_subgroups_by_site_sex_and_age(report: tuple) -> None:
    summary, _, truth = report
    y, prob = (np.asarray(a) for a in truth["MR"])
    groups = task(summary, "MR")["subgroups"]
    sites = np.array([f"S0{i % 3}" for i in range(N_MR)])
    site_rows = {row["value"]: row for row in groups["site"]}
    assert sorted(site_rows) == ["S00", "S01", "S02"]
    s02 = site_rows["S02"]
    assert s02["n"] == 20 and s02["small"]  # under 30 studies: flagged
    assert s02["auc"]["value"] == pytest.approx(
        skm.roc_auc_score(y[sites == "S02"], prob[sites == "S02"])
    )
    # Sex comes from the results (the labels say F for all): 30 and 30.
    assert {row["value"]: row["n"] for row in groups["sex"]} == {"F": 30, "M": 30}
    ages = 45 + np.arange(N_MR) % 45
    bands = {row["value"]: row["n"] for row in groups["age_band"]}
    assert bands == {
        "<50": int((ages < 50).sum()),
        "50-59": int(((ages >= 50) & (ages < 60)).sum()),
        "60-69": 10,
        "70-79": 10,
        "80+": int((ages >= 80).sum()),
    }
    assert bands["50-59"] == 20
    assert [row["value"] for row in groups["age_band"]] == ["<50", "50-59", "60-69", "70-79", "80+"]


def test_ef_agreement_and_bland_altman(report: tuple) -> None:
    summary, _, truth = report
    ef_true, ef_pred = (np.asarray(a) for a in truth["ef"])
    ef = task(summary, "US")["ef"]
    difference = ef_pred - ef_true
    assert ef["n"] == N_US
    assert ef["mae"]["value"] == pytest.approx(skm.mean_absolute_error(ef_true, ef_pred))
    assert ef["mae"]["low"] < ef["mae"]["value"] < ef["mae"]["high"]
    blend = ef["bland_altman"]
    assert blend["bias"]["value"] == pytest.approx(difference.mean())
    assert blend["loa_low"] == pytest.approx(difference.mean() - 1.96 * difference.std(ddof=1))
    assert blend["loa_high"] == pytest.approx(difference.mean() + 1.96 * difference.std(ddof=1))
    assert "ef" not in task(summary, "MR")


def test_counts_failed_studies_and_throughput(report: tuple) -> None:
    summary, _, _ = report
    assert summary["counts"] == {
        "studies": N_MR + N_US + 3,
        "done": N_MR + N_US + 1,
        "failed": 2,
        "labels_rows": N_MR + N_US,
        "labelled_scored": N_MR + N_US,
    }
    assert summary["failed_studies"] == [
        {"study_id": s, "stage": stage, "reason": reason} for s, stage, reason in FAILED
    ]
    assert summary["failures_by_stage"] == {"decode": 1, "infer": 1}
    speed = summary["throughput"]
    # The study from the earlier run is not this run's work: 100 done + 2 failed in 360 s.
    assert speed["studies_this_run"] == N_MR + N_US + 2
    assert speed["studies_per_hour"] == pytest.approx((N_MR + N_US + 2) / 360 * 3600)
    assert speed["physician_hours_equivalent"] == pytest.approx((N_MR + N_US + 1) * 7 / 60)


def test_split_statement_names_what_the_models_were_trained_on(report: tuple) -> None:
    statement = report[0]["split_statement"]
    assert statement.startswith(f"All {N_MR + N_US + 3} studies of the input were screened")
    assert "mri_ad 0.1.0 was trained on synthetic sample archive, sites S00-S02" in statement
    assert "(evaluated by leave-sites-out), as its model card says" in statement


def test_html_is_self_contained_with_embedded_images(report: tuple) -> None:
    _, out, _ = report
    html = (out / "report.html").read_text()
    links = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html)
    assert links and all(link.startswith("data:image/png;base64,") for link in links)
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html and "<link" not in html
    # ROC and calibration for both tasks, EF scatter/Bland-Altman for echo.
    assert len(links) == 5
    for link in links:
        assert base64.b64decode(link.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert html.count("not for diagnostic use") >= 2
    for study_id, stage, _ in FAILED:
        assert study_id in html and f"<td>{stage}</td>" in html
    # Reasons are escaped, never markup.
    assert "truncated &lt;b&gt;file&lt;/b&gt;" in html and "<b>file</b>" not in html
    assert "physician-hours equivalent at 7 min per report" in html


def test_hand_computed_example_without_pseudonyms(tmp_path: Path) -> None:
    ids = ["a", "b", "c", "d"]
    table = pa.table(
        {
            "study_id": ids,
            "status": ["done"] * 4,
            "modality": ["MR"] * 4,
            "model_name": ["m"] * 4,
            "positive_label": ["AD"] * 4,
            "positive_probability": [0.1, 0.6, 0.4, 0.9],
        }
    )
    labels = write_labels(
        tmp_path / "labels.csv",
        [
            {"study_id": s, "label": lab}
            for s, lab in zip(ids, ["CN", "CN", "AD", "AD"], strict=True)
        ],
    )
    summary = write_report(table, labels, tmp_path / "out", run_info={}, n_resamples=50)
    (entry,) = summary["tasks"]
    # 3 of the 4 (positive, negative) pairs are ordered; 0.6 and 0.9 are called positive.
    assert entry["auc"]["value"] == 0.75
    assert entry["bootstrap_unit"] == "study" and entry["auc"]["n_groups"] is None
    assert entry["confusion_matrix"] == {"threshold": 0.5, "tp": 1, "fp": 1, "tn": 1, "fn": 1}
    assert summary["throughput"]["studies_per_hour"] is None  # no timings given
    assert (tmp_path / "out" / "report.html").is_file()


def test_threshold_for_specificity_hand_computed() -> None:
    y = np.array([0, 0, 0, 0, 1, 1])
    prob = np.array([0.1, 0.2, 0.3, 0.7, 0.5, 0.9])
    # Specificity 3/4 once the threshold exceeds 0.3, 4/4 only above 0.7.
    assert threshold_for_specificity(y, prob, 0.75) == 0.5
    assert threshold_for_specificity(y, prob, 1.0) == 0.9
    with pytest.raises(ValueError, match='"target"'):
        threshold_for_specificity(y, prob, 0.0)


def test_bad_inputs_name_the_file_or_argument(tmp_path: Path) -> None:
    table = pa.table({"study_id": ["a"], "status": ["done"]})
    no_key = write_labels(tmp_path / "labels.csv", [{"uid": "a", "label": "AD"}])
    with pytest.raises(ReportInputError, match=r"labels.csv.*study_instance_uid"):
        write_report(table, no_key, tmp_path / "out", run_info={})
    with pytest.raises(ReportInputError, match=r"labels.*cannot be read"):
        write_report(table, tmp_path / "missing.csv", tmp_path / "out", run_info={})
    with pytest.raises(ReportInputError, match=r'"results" lacks.*status'):
        write_report(pa.table({"study_id": ["a"]}), no_key, tmp_path / "out", run_info={})


def test_labels_patient_ids_group_the_bootstrap_without_pseudonyms(tmp_path: Path) -> None:
    ids = [f"s{i}" for i in range(8)]
    table = pa.table(
        {
            "study_id": ids,
            "status": ["done"] * 8,
            "modality": ["MR"] * 8,
            "model_name": ["m"] * 8,
            "positive_label": ["AD"] * 8,
            "positive_probability": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
        }
    )
    rows = [
        {"study_id": s, "patient_id": f"patient-id-{i // 2}", "label": "AD" if i >= 4 else "CN"}
        for i, s in enumerate(ids)
    ]
    summary = write_report(
        table,
        write_labels(tmp_path / "l.csv", rows),
        tmp_path / "out",
        run_info={},
        n_resamples=50,
    )
    (entry,) = summary["tasks"]
    assert entry["bootstrap_unit"] == "patient" and entry["auc"]["n_groups"] == 4
    assert entry["n_patients"] == 4 and entry["auc"]["value"] == 1.0
    # Patient ids group the resamples only; they are never written out.
    assert "patient-id-0" not in (tmp_path / "out" / "summary.json").read_text()
    assert "patient-id-0" not in (tmp_path / "out" / "report.html").read_text()
