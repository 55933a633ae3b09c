"""Index evaluation: evidence only from other sites and patients, metrics against baselines."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from imaging.dicom.deid.replacements import keyed_uid
from multimodal_rag.index_evaluation import (
    CaseMatrix,
    evaluate_modality,
    neighbour_evidence,
    read_classifier_probabilities,
)

SECRET = b"index-evaluation-secret-0123456789"


def matrix(
    vectors: np.ndarray, labels: list[str | None], patients: list[str], sites: list[str]
) -> CaseMatrix:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    label_array = np.empty(len(labels), dtype=object)
    label_array[:] = labels
    return CaseMatrix(
        case_ids=np.array([f"case{i}" for i in range(len(labels))], dtype=object),
        patients=np.array(patients, dtype=object),
        sites=np.array(sites, dtype=object),
        labels=label_array,
        image_embeddings=unit,
        text_embeddings=unit.copy(),
    )


def test_evidence_ignores_the_same_patient_and_the_same_site() -> None:
    # Case 0's nearest cases are its own patient's other visit (AD) and a same-site AD
    # case; the only cases it may use are at site B, both CN.
    vectors = np.array([[1.0, 0.0], [1.0, 0.01], [1.0, 0.02], [1.0, 0.5], [1.0, 0.6]])
    cases = matrix(
        vectors,
        ["CN", "AD", "AD", "CN", "CN"],
        ["p0", "p0", "p1", "p2", "p3"],
        ["A", "A", "A", "B", "B"],
    )
    evidence = neighbour_evidence(cases, "AD", k=3)
    assert evidence[0] == 0.0
    # Allowing the same site lets the AD case of another patient count.
    assert neighbour_evidence(cases, "AD", k=3, other_sites_only=False)[0] > 0.3
    # Case 3 (site B) sees site A's cases: two AD and one CN, the AD ones nearer.
    assert 0.5 < evidence[3] < 1.0


def clustered_cases(n: int, seed: int) -> tuple[CaseMatrix, np.ndarray]:
    """Two clusters that carry the label, 4 sites, one study per patient."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    centres = rng.standard_normal((2, 32))
    vectors = centres[y] + 0.8 * rng.standard_normal((n, 32))
    cases = matrix(
        vectors,
        ["AD" if v else "CN" for v in y],
        [f"p{i}" for i in range(n)],
        [f"S{i % 4}" for i in range(n)],
    )
    return cases, y


def test_embeddings_that_carry_the_label_beat_random_and_fusion_is_reported() -> None:
    cases, y = clustered_cases(120, seed=1)
    rng = np.random.default_rng(2)
    # A weak classifier: probabilities only loosely follow the label.
    classifier = np.clip(0.5 + 0.15 * (2 * y - 1) + 0.25 * rng.standard_normal(len(y)), 0.01, 0.99)
    summary = evaluate_modality(
        cases, positive_label="AD", classifier_prob=classifier, k=10, n_resamples=200
    )
    embedding, random = summary["image_to_image"], summary["random"]
    assert embedding["precision_at_k"]["low"] > random["precision_at_k"]["high"]
    assert embedding["precision_at_k"]["value"] > 0.9
    assert 0.35 < random["precision_at_k"]["value"] < 0.65
    assert summary["n_cases"] == 120 and summary["sites"] == ["S0", "S1", "S2", "S3"]
    # Text embeddings equal the image ones here: every study finds its own report first.
    assert summary["image_to_report"]["median_rank"]["value"] == 1.0
    assert summary["image_to_report"]["random_expected_median_rank"] == 60.5  # (120 + 1) / 2
    fusion = summary["fusion_leave_sites_out"]
    metrics = fusion["metrics"]
    assert set(metrics) == {"classifier", "retrieval", "fused"}
    # The evidence is far stronger than this classifier, and the fit learns to use it.
    assert metrics["retrieval"]["auc"]["value"] > metrics["classifier"]["auc"]["value"] + 0.1
    assert fusion["auc_gain_fused_minus_classifier"]["low"] > 0
    assert set(fusion["per_site"]) == {"S0", "S1", "S2", "S3"}


def test_without_classifier_probabilities_there_is_no_fusion() -> None:
    cases, _ = clustered_cases(30, seed=3)
    summary = evaluate_modality(cases, positive_label="AD", n_resamples=100)
    assert "fusion_leave_sites_out" not in summary and "classifier_features" not in summary


def test_classifier_probabilities_are_matched_by_keyed_study_uid(tmp_path: Path) -> None:
    path = tmp_path / "predictions.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["study_instance_uid", "score", "calibrated_score"])
        writer.writerow(["1.2.3.4", "0.9", "0.75"])
        writer.writerow(["1.2.3.5", "0.1", "0.2"])
    probabilities = read_classifier_probabilities(path, SECRET)
    assert probabilities == {keyed_uid(SECRET, "1.2.3.4"): 0.75, keyed_uid(SECRET, "1.2.3.5"): 0.2}


def test_bad_prediction_files_are_refused_with_the_reason(tmp_path: Path) -> None:
    no_column = tmp_path / "a.csv"
    no_column.write_text("study_instance_uid,score\n1.2.3,0.4\n")
    with pytest.raises(ValueError, match="calibrated_score"):
        read_classifier_probabilities(no_column, SECRET)
    out_of_range = tmp_path / "b.csv"
    out_of_range.write_text("study_instance_uid,calibrated_score\n1.2.3,0.4\n1.2.4,1.7\n")
    with pytest.raises(ValueError, match="line 3"):
        read_classifier_probabilities(out_of_range, SECRET)


def test_other_sites_metrics_drop_a_label_carried_only_by_the_site() -> None:
    # The embedding encodes the site, and each site holds one label: same-site retrieval
    # looks perfect, other-site retrieval finds the opposite label every time.
    rng = np.random.default_rng(4)
    sites = [f"S{i % 2}" for i in range(40)]
    centres = {"S0": np.array([1.0, 0.0]), "S1": np.array([0.0, 1.0])}
    vectors = np.array([centres[s] + 0.05 * rng.standard_normal(2) for s in sites])
    labels = ["AD" if s == "S0" else "CN" for s in sites]
    cases = matrix(vectors, labels, [f"p{i}" for i in range(40)], sites)
    summary = evaluate_modality(cases, positive_label="AD", k=5, n_resamples=100)
    assert summary["image_to_image"]["precision_at_k"]["value"] == 1.0
    assert summary["image_to_image_other_sites"]["precision_at_k"]["value"] == 0.0
    assert summary["random_other_sites"]["precision_at_k"]["value"] == 0.0
