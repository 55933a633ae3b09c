"""Retrieval evidence and its fusion with the classifier, on constructed data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from imaging.evaluation.metrics import binary_scores
from multimodal_rag.cases import SearchHit
from multimodal_rag.fusion import FusionModel, compare_fusion, retrieval_evidence


def hit(score: float, label: str | None) -> SearchHit:
    return SearchHit("c", score, 1, "US", label, "S1", "", "")


def test_retrieval_evidence_is_a_softmax_weighted_vote() -> None:
    hits = [hit(0.9, "reduced_ef"), hit(0.8, "normal_ef"), hit(0.95, None)]
    # Weights e^(0.9/0.1) and e^(0.8/0.1): share e^1 / (e^1 + 1); the unlabelled hit is ignored.
    expected = math.e / (math.e + 1)
    assert retrieval_evidence(hits, "reduced_ef", temperature=0.1) == pytest.approx(expected)
    assert retrieval_evidence(hits, "normal_ef", temperature=0.1) == pytest.approx(1 - expected)
    assert retrieval_evidence(hits, "reduced_ef", temperature=1e6) == pytest.approx(0.5)
    assert retrieval_evidence([hit(0.9, None)], "reduced_ef") == 0.5
    assert retrieval_evidence([], "reduced_ef") == 0.5
    with pytest.raises(ValueError, match='"temperature" must be positive'):
        retrieval_evidence(hits, "reduced_ef", temperature=0)


def independent_signals(n: int, seed: int, retrieval_signal: float = 1.0) -> tuple[np.ndarray, ...]:
    """Labels, a classifier and retrieval evidence whose errors are independent."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    sign = 2 * y - 1
    classifier = 1 / (1 + np.exp(-(sign + rng.normal(0, 1.5, n))))
    evidence = 1 / (1 + np.exp(-(retrieval_signal * sign + rng.normal(0, 1.5, n))))
    return y, classifier, evidence


def auc(y: np.ndarray, prob: np.ndarray) -> float:
    return binary_scores(y, prob, threshold=0.5)["auc"]


def test_fusion_beats_either_input_when_both_carry_independent_signal() -> None:
    y_val, c_val, e_val = independent_signals(3000, seed=1)
    y_test, c_test, e_test = independent_signals(3000, seed=2)
    model = FusionModel.fit(c_val, e_val, y_val)
    assert model.classifier_weight == pytest.approx(model.retrieval_weight, rel=0.25)
    assert model.classifier_weight > 0.5
    fused = model.predict(c_test, e_test)
    assert auc(y_test, fused) > auc(y_test, c_test) + 0.03
    assert auc(y_test, fused) > auc(y_test, e_test) + 0.03


def test_fusion_ignores_evidence_without_signal() -> None:
    y, classifier, evidence = independent_signals(3000, seed=3, retrieval_signal=0.0)
    model = FusionModel.fit(classifier, evidence, y)
    assert abs(model.retrieval_weight) < 0.1
    assert model.classifier_weight > 0.5


def test_compare_fusion_reports_auc_and_ece_with_intervals() -> None:
    y_val, c_val, e_val = independent_signals(1500, seed=4)
    y_test, c_test, e_test = independent_signals(1500, seed=5)
    groups = np.arange(1500) // 2  # two studies per patient
    result = compare_fusion(
        y_val, c_val, e_val, y_test, c_test, e_test, groups_test=groups, n_resamples=200
    )
    assert set(result.metrics) == {"classifier", "retrieval", "fused"}
    fused_auc = result.metrics["fused"]["auc"]
    classifier_auc = result.metrics["classifier"]["auc"]
    assert fused_auc.value > classifier_auc.value
    assert fused_auc.value > result.metrics["retrieval"]["auc"].value
    assert fused_auc.low < fused_auc.value < fused_auc.high
    assert fused_auc.n_groups == 750
    assert result.auc_gain.value == pytest.approx(fused_auc.value - classifier_auc.value)
    assert result.auc_gain.low > 0  # fusion helps, beyond resampling noise
    # The fused probability is fitted by log-loss, so it is calibrated on the test sites too.
    assert result.metrics["fused"]["ece"].value < 0.05
    assert result.retrieval_calibration.classifier_weight == 0.0
    summary = result.to_dict()
    assert summary["fusion"]["retrieval_weight"] == result.fusion.retrieval_weight  # type: ignore[index]


def test_fusion_validates_its_inputs() -> None:
    with pytest.raises(ValueError, match='"evidence" must lie in'):
        FusionModel.fit([0.2, 0.7], [0.5, 1.5], [0, 1])
    with pytest.raises(ValueError, match="same length"):
        FusionModel.fit([0.2, 0.7], [0.5], [0, 1])
    with pytest.raises(ValueError, match='"y_true" must be'):
        FusionModel.fit([0.2, 0.7], [0.5, 0.5], [0, 2])
