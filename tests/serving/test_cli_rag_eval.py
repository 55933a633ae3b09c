"""``mmdx rag-eval`` on a case index written to disk, with classifier predictions."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from multimodal_rag.cases import DeidentifiedArchiveStudy, DeidentifiedCase
from multimodal_rag.index import CaseIndex
from serving.cli import app
from serving.settings import get_settings

SECRET = "cli-rag-eval-secret-0123456789"
DIM = 24


@pytest.fixture
def settings_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("MMDX_DEID__SECRET", SECRET)
    monkeypatch.setenv("MMDX_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def write_archive_index(tmp_path: Path) -> tuple[str, Path]:
    """40 MR cases whose embeddings carry the label, 20 US cases, and MR predictions."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((2, DIM))
    cases, predictions = [], []
    for number in range(60):
        modality = "MR" if number < 40 else "US"
        positive = number % 2 == 0
        label = ("AD" if positive else "CN") if modality == "MR" else "normal_ef"
        row = {
            "study_instance_uid": f"1.2.826.0.1.3680043.8.498.{number}",
            "patient_id": f"P{number:04d}",
            "site_id": f"S{number % 3}",
            "modality": modality,
            "study_date": "2021-05-01",
            "label": label,
        }
        study = DeidentifiedArchiveStudy.from_manifest_row(
            row, secret=SECRET.encode(), report_text=f"Report {number}."
        )
        vector = centres[int(positive)] + 0.7 * rng.standard_normal(DIM)
        cases.append(
            DeidentifiedCase.from_deidentified(study, image_embedding=vector, text_embedding=vector)
        )
        if modality == "MR":
            probability = 0.6 if positive else 0.4
            predictions.append([row["study_instance_uid"], f"{probability:.2f}"])
    uri = str(tmp_path / "case_index")
    CaseIndex.open(uri, embedding_dim=DIM).add(cases)
    csv_path = tmp_path / "predictions.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["study_instance_uid", "calibrated_score"])
        writer.writerows(predictions)
    return uri, csv_path


@pytest.mark.usefixtures("settings_env")
def test_rag_eval_reports_retrieval_baselines_and_fusion(tmp_path: Path) -> None:
    uri, predictions = write_archive_index(tmp_path)
    out = tmp_path / "rag_eval.json"
    result = CliRunner().invoke(
        app,
        ["rag-eval", "--index", uri, "--predictions", str(predictions), "--resamples", "200",
         "--out", str(out), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert json.loads(out.read_text()) == summary
    assert "not for diagnostic use" in summary["disclaimer"].lower()
    mr, us = summary["modalities"]["MR"], summary["modalities"]["US"]
    # The predictions matched all 40 MR cases through their keyed study UIDs.
    assert mr["n_cases"] == 40 and mr["label_counts"] == {"AD": 20, "CN": 20}
    assert mr["image_to_image"]["precision_at_k"]["value"] > mr["random"]["precision_at_k"]["value"]
    # A classifier output of exactly 0.6 or 0.4 puts every same-label case at distance 0.
    assert mr["classifier_features"]["precision_at_k"]["value"] == 1.0
    assert set(mr["fusion_leave_sites_out"]["metrics"]) == {"classifier", "retrieval", "fused"}
    assert mr["fusion_leave_sites_out"]["metrics"]["classifier"]["auc"]["value"] == 1.0
    # No US predictions: retrieval figures only.
    assert us["n_cases"] == 20 and "fusion_leave_sites_out" not in us

    text = CliRunner().invoke(app, ["rag-eval", "--index", uri, "--modality", "MR"])
    assert text.exit_code == 0, text.output
    assert "image embedding" in text.stdout and "not for diagnostic use" in text.stdout


@pytest.mark.usefixtures("settings_env")
def test_rag_eval_without_an_index_says_how_to_build_one(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["rag-eval", "--index", str(tmp_path / "missing")])
    assert result.exit_code == 1
    assert "mmdx index" in result.output
