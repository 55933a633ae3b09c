"""Metrics agree with scikit-learn and hand counts; bootstrap CIs behave as intervals should."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from sklearn import metrics as skm

from imaging.evaluation.metrics import (
    MetricCI,
    bootstrap_ci,
    classification_metrics,
    operating_points,
    regression_metrics,
)


def noisy_classifier(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities rounded to 0.05 so that ties occur."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    prob = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1).round(2)
    return y, prob


def width(metric: MetricCI) -> float:
    return metric.high - metric.low


def test_classification_point_values_equal_scikit_learn() -> None:
    y, prob = noisy_classifier(400, seed=0)
    found = classification_metrics(y, prob, threshold=0.5, n_resamples=10)
    called = (prob >= 0.5).astype(int)
    assert found["accuracy"].value == pytest.approx(skm.accuracy_score(y, called))
    assert found["balanced_accuracy"].value == pytest.approx(skm.balanced_accuracy_score(y, called))
    assert found["sensitivity"].value == pytest.approx(skm.recall_score(y, called))
    assert found["specificity"].value == pytest.approx(skm.recall_score(y, called, pos_label=0))
    assert found["auc"].value == pytest.approx(skm.roc_auc_score(y, prob))


def test_classification_hand_computed() -> None:
    # Called positive: 0.6 and 0.9. AUC: 3 of the 4 (positive, negative) pairs are ordered.
    found = classification_metrics([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], n_resamples=10)
    assert {name: m.value for name, m in found.items()} == {
        "accuracy": 0.5,
        "balanced_accuracy": 0.5,
        "sensitivity": 0.5,
        "specificity": 0.5,
        "auc": 0.75,
    }
    # A tie between a positive and a negative counts one half; prob == threshold is positive.
    tied = classification_metrics([0, 1], [0.5, 0.5], n_resamples=10)
    assert tied["auc"].value == 0.5
    assert tied["sensitivity"].value == 1.0
    assert tied["specificity"].value == 0.0


def test_regression_equals_scikit_learn_and_hand_values() -> None:
    found = regression_metrics([1.0, 2.0, 3.0], [2.0, 2.0, 5.0], n_resamples=10)
    assert found["mae"].value == pytest.approx(1.0)
    assert found["rmse"].value == pytest.approx(math.sqrt(5 / 3))
    assert found["r2"].value == pytest.approx(1 - 5 / 2)
    rng = np.random.default_rng(1)
    ef = rng.normal(55, 10, 200)
    predicted = ef + rng.normal(0, 4, 200)
    found = regression_metrics(ef, predicted, n_resamples=10)
    assert found["mae"].value == pytest.approx(skm.mean_absolute_error(ef, predicted))
    assert found["rmse"].value == pytest.approx(skm.root_mean_squared_error(ef, predicted))
    assert found["r2"].value == pytest.approx(skm.r2_score(ef, predicted))


def test_intervals_contain_the_estimate_and_narrow_with_n() -> None:
    small = classification_metrics(*noisy_classifier(60, seed=2), n_resamples=500)
    large = classification_metrics(*noisy_classifier(1500, seed=2), n_resamples=500)
    for name in small:
        for found in (small[name], large[name]):
            assert found.low <= found.value <= found.high
            assert found.n_resamples == 500
        assert width(large[name]) < 0.5 * width(small[name]), name
    assert (small["auc"].n, large["auc"].n) == (60, 1500)


def test_patient_bootstrap_is_wider_than_row_bootstrap_when_patients_repeat() -> None:
    # 30 patients with 5 identical visits each: rows are not independent.
    y, prob = noisy_classifier(30, seed=3)
    patients = np.repeat(np.arange(30), 5)
    rows = classification_metrics(np.repeat(y, 5), np.repeat(prob, 5), n_resamples=500)
    grouped = classification_metrics(
        np.repeat(y, 5), np.repeat(prob, 5), groups=patients, n_resamples=500
    )
    assert grouped["auc"].value == rows["auc"].value
    assert (grouped["auc"].n, grouped["auc"].n_groups, rows["auc"].n_groups) == (150, 30, None)
    for name in ("accuracy", "auc"):
        assert width(grouped[name]) > 1.6 * width(rows[name]), name
    # Resampling the 30 patients gives the same interval as the 30 one-visit rows would.
    single = classification_metrics(y, prob, groups=np.arange(30), n_resamples=500)
    assert width(grouped["auc"]) == pytest.approx(width(single["auc"]), rel=0.25)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_undefined_resamples_are_skipped_and_counted() -> None:
    from sklearn.metrics import roc_auc_score

    y = np.array([1, 0, 0, 0, 0, 0, 0, 0])
    prob = np.linspace(0.9, 0.1, 8)
    found = bootstrap_ci(roc_auc_score, y, prob, n_resamples=400, seed=0)
    assert found.value == 1.0
    # A resample lacks the one positive with probability (7/8)^8 = 34%.
    assert 200 < found.n_resamples < 330
    ours = classification_metrics(y, prob, n_resamples=400, seed=0)
    assert ours["auc"].n_resamples == found.n_resamples
    assert ours["accuracy"].n_resamples == 400


def test_an_undefined_metric_is_nan_and_serialises_as_null() -> None:
    found = classification_metrics([0, 0, 0], [0.2, 0.4, 0.7], n_resamples=20)
    assert math.isnan(found["auc"].value) and math.isnan(found["sensitivity"].low)
    assert found["specificity"].value == pytest.approx(2 / 3)
    as_json = json.dumps({k: m.to_dict() for k, m in found.items()}, allow_nan=False)
    assert '"auc": {"value": null, "low": null, "high": null' in as_json


def test_bootstrap_is_seeded() -> None:
    y, prob = noisy_classifier(80, seed=4)
    assert classification_metrics(y, prob, seed=1) == classification_metrics(y, prob, seed=1)
    assert classification_metrics(y, prob, seed=1) != classification_metrics(y, prob, seed=2)


def test_operating_points_match_the_roc_curve() -> None:
    y, prob = noisy_classifier(300, seed=5)
    fpr, tpr, thresholds = skm.roc_curve(y, prob)
    for point in operating_points(y, prob, sensitivities=(0.9, 0.95)):
        first = int(np.argmax(tpr >= point.target_sensitivity))
        assert point.threshold == thresholds[first]
        assert point.sensitivity == pytest.approx(tpr[first])
        assert point.specificity == pytest.approx(1 - fpr[first])
        assert point.sensitivity >= point.target_sensitivity
    # By hand: positives at 0.9, 0.7, 0.4, 0.2; 75% sensitivity needs threshold 0.4.
    (point,) = operating_points([1, 0, 1, 1, 0, 1], [0.9, 0.8, 0.7, 0.4, 0.3, 0.2], (0.75,))
    assert (point.threshold, point.sensitivity, point.specificity) == (0.4, 0.75, 0.5)


@pytest.mark.parametrize(
    ("y_true", "prob", "message"),
    [
        ([0, 2], [0.1, 0.2], '"y_true" must be a 1-D array of 0 and 1'),
        (["AD", "CN"], [0.1, 0.2], '"y_true"'),
        ([0, 1], [0.1, 1.2], '"prob" must lie in'),
        ([0, 1], [0.1, np.nan], '"prob" must be a 1-D array of finite'),
        ([0, 1, 1], [0.1, 0.2], "same length"),
        ([], [], "must not be empty"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(
    y_true: list[Any], prob: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        classification_metrics(y_true, prob, n_resamples=10)
