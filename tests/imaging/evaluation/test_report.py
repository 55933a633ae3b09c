"""Evaluation summaries pool out-of-fold predictions, state the split and stay JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imaging.evaluation.metrics import classification_metrics
from imaging.evaluation.report import (
    DISCLAIMER,
    FoldPredictions,
    classification_fold,
    evaluation_summary,
    markdown_table,
    pool_folds,
)
from imaging.evaluation.splits import Split, leave_sites_out, pooled_random_split

SITES = ("S01", "S02", "S03", "S04")


def site_records(n_patients: int, prevalence: tuple[float, ...], seed: int) -> list[dict[str, Any]]:
    """Patients spread over the sites, AD prevalence per site, a follow-up for every 4th."""
    rng = np.random.default_rng(seed)
    records = []
    for p in range(n_patients):
        site = p % len(prevalence)
        label = "AD" if rng.random() < prevalence[site] else "CN"
        for visit in range(1, 2 + (p % 4 == 0)):
            records.append(
                {"patient_id": f"P{p:03d}", "site_id": SITES[site], "label": label, "visit": visit}
            )
    return records


def overconfident_folds(
    records: list[dict[str, Any]], splits: list[Split], seed: int
) -> list[FoldPredictions]:
    """A model with calibrated logits times 3, temperature-scaled on each fold's val part."""
    rng = np.random.default_rng(seed)
    y = np.array([r["label"] == "AD" for r in records], dtype=int)
    logits = 3 * ((2 * y - 1) * 1.0 + rng.normal(0, 1.5, len(y)))
    folds = []
    for split in splits:
        test, val = list(split.test), list(split.val)
        folds.append(
            classification_fold(
                split.name,
                y[test],
                logits[test],
                [records[i]["patient_id"] for i in test],
                [records[i]["site_id"] for i in test],
                val_logits=logits[val],
                val_y_true=y[val],
            )
        )
    return folds


def test_leave_sites_out_summary_states_split_sites_cis_and_calibration(tmp_path: Path) -> None:
    records = site_records(160, (0.5, 0.5, 0.5, 0.5), seed=0)
    splits = leave_sites_out(records, val_fraction=0.5, seed=0)
    folds = overconfident_folds(records, splits, seed=1)
    summary = evaluation_summary(
        folds, split_kind="leave-sites-out", task="classification", target="AD vs CN",
        splits=splits, records=records, n_resamples=200, diagram_path=tmp_path / "rel.png",
    )  # fmt: skip
    json.dumps(summary, allow_nan=False)
    assert summary["disclaimer"] == (
        "Engineering figures on synthetic data; not clinical performance; not for diagnostic use."
    )
    assert (summary["split_type"], summary["task"], summary["threshold"]) == (
        "leave-sites-out", "classification", 0.5,
    )  # fmt: skip
    assert summary["n"] == {
        "folds": 4, "test_records": 200, "test_patients": 160, "sites": list(SITES),
    }  # fmt: skip
    assert [p["fold"] for p in summary["parts"]] == [f"site {s}" for s in SITES]
    assert summary["parts"][0]["test"]["sites"] == ["S01"]
    assert summary["parts"][0]["test"]["patients"] == 40

    pooled = summary["pooled"]
    y = np.concatenate([f.y_true for f in folds])
    prob = np.concatenate([f.scores for f in folds])
    patients = np.concatenate([f.patient_ids for f in folds])
    expected = classification_metrics(y, prob, groups=patients, n_resamples=200)
    assert pooled["metrics"]["auc"] == expected["auc"].to_dict()
    assert pooled["metrics"]["auc"]["n_groups"] == 160
    assert pooled["calibration"]["ece_after"] < pooled["calibration"]["ece_before"] - 0.05

    # Each fold tests one site, so the per-site rows repeat the per-fold rows.
    assert [row["site_id"] for row in summary["per_site"]] == list(SITES)
    for site_row, fold_row in zip(summary["per_site"], summary["per_fold"], strict=True):
        assert site_row["metrics"] == fold_row["metrics"]
        assert fold_row["temperature"] == pytest.approx(3.0, rel=0.5)
    assert sum(row["n"] for row in summary["per_site"]) == 200
    assert Path(summary["reliability_diagram"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    table = markdown_table([summary], ["auc", "balanced_accuracy"])
    assert "| AD vs CN | leave-sites-out | auc | " in table
    assert table.endswith(f"CIs: 95% percentile bootstrap over patients. *{DISCLAIMER}*")


def test_pooled_random_split_is_optimistic_when_sites_differ_in_prevalence() -> None:
    """A model that learns the site (scanner signature) looks good only if sites leak."""
    from sklearn.linear_model import LogisticRegression

    records = site_records(400, (0.1, 0.9, 0.15, 0.85), seed=2)
    rng = np.random.default_rng(3)
    y = np.array([r["label"] == "AD" for r in records], dtype=int)
    site_signature = np.array([[r["site_id"] == s for s in SITES] for r in records], dtype=float)
    features = np.column_stack([site_signature, 0.5 * y + rng.normal(0, 1, len(y))])

    def evaluate(splits: list[Split], kind: str) -> dict[str, Any]:
        folds = []
        for split in splits:
            train, test = list(split.train), list(split.test)
            model = LogisticRegression().fit(features[train], y[train])
            folds.append(
                classification_fold(
                    split.name,
                    y[test],
                    model.decision_function(features[test]),
                    [records[i]["patient_id"] for i in test],
                    [records[i]["site_id"] for i in test],
                )
            )
        return evaluation_summary(
            folds, split_kind=kind, task="classification", target="AD vs CN", n_resamples=200
        )

    pooled = evaluate([pooled_random_split(records, seed=0)], "pooled random")
    sites_out = evaluate(leave_sites_out(records, seed=0), "leave-sites-out")
    optimism = (
        pooled["pooled"]["metrics"]["auc"]["value"]
        - (sites_out["pooled"]["metrics"]["auc"]["value"])
    )
    assert optimism > 0.15
    assert pooled["pooled"]["calibration"]["ece_after"] is None  # no validation logits given


def test_regression_summary_reports_mae_rmse_r2() -> None:
    rng = np.random.default_rng(4)
    folds = []
    for site in SITES[:2]:
        ef = rng.normal(55, 10, 50)
        folds.append(
            FoldPredictions(
                fold=f"site {site}",
                y_true=ef,
                scores=ef + rng.normal(0, 4, 50),
                patient_ids=np.array([f"{site}-{i}" for i in range(50)]),
                site_ids=np.array([site] * 50),
            )
        )
    summary = evaluation_summary(
        folds, split_kind="leave-sites-out", task="regression", target="EF (%)", n_resamples=200
    )
    json.dumps(summary, allow_nan=False)
    metrics = summary["pooled"]["metrics"]
    assert set(metrics) == {"mae", "rmse", "r2"}
    assert 2.5 < metrics["mae"]["value"] < 4.0
    assert metrics["mae"]["low"] < metrics["mae"]["value"] < metrics["mae"]["high"]
    assert "calibration" not in summary["pooled"] and "threshold" not in summary


def test_two_class_logits_equal_their_difference_as_a_binary_logit() -> None:
    rng = np.random.default_rng(5)
    two = rng.normal(0, 2, (30, 2))
    y = (rng.random(30) < 0.5).astype(int)
    ids = [str(i) for i in range(30)]
    a = classification_fold("f", y, two, ids, ["S01"] * 30, val_logits=two, val_y_true=y)
    b = classification_fold(
        "f", y, two[:, 1] - two[:, 0], ids, ["S01"] * 30,
        val_logits=two[:, 1] - two[:, 0], val_y_true=y,
    )  # fmt: skip
    np.testing.assert_allclose(a.scores, b.scores)
    assert a.temperature == pytest.approx(b.temperature, rel=1e-4)


def test_pooling_refuses_a_patient_tested_twice() -> None:
    def fold(name: str, patients: list[str]) -> FoldPredictions:
        n = len(patients)
        return FoldPredictions(
            fold=name, y_true=np.zeros(n), scores=np.zeros(n), patient_ids=np.array(patients),
            site_ids=np.array(["S01"] * n),
        )  # fmt: skip

    assert len(pool_folds([fold("a", ["P1", "P1"]), fold("b", ["P2"])]).y_true) == 3
    with pytest.raises(ValueError, match="patient P1 is tested in both a and b"):
        pool_folds([fold("a", ["P1"]), fold("b", ["P1"])])


def test_bad_arguments_raise() -> None:
    fold = FoldPredictions(
        fold="f", y_true=np.array([0, 1]), scores=np.array([0.2, 0.8]),
        patient_ids=np.array(["a", "b"]), site_ids=np.array(["S01", "S01"]),
    )  # fmt: skip
    with pytest.raises(ValueError, match='"split_kind" must be one of'):
        evaluation_summary([fold], split_kind="random", task="classification", target="x")
    with pytest.raises(ValueError, match='"task" must be one of'):
        evaluation_summary([fold], split_kind="pooled random", task="survival", target="x")
    with pytest.raises(ValueError, match="same length"):
        FoldPredictions(
            fold="f", y_true=np.array([0]), scores=np.array([0.2, 0.8]),
            patient_ids=np.array(["a", "b"]), site_ids=np.array(["S01", "S01"]),
        )  # fmt: skip
