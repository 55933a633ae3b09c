"""ECE separates calibrated from overconfident predictions; temperature scaling repairs them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.calibration import calibration_curve
from sklearn.metrics import log_loss

from imaging.evaluation.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_curve,
    save_reliability_diagram,
)


def calibrated_logits(n: int, seed: int, n_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from the probabilities the logits state (binary: 1-D)."""
    rng = np.random.default_rng(seed)
    if n_classes == 2:
        logits = rng.normal(0, 2, n)
        return logits, (rng.random(n) < apply_temperature(logits, 1.0)).astype(int)
    logits = rng.normal(0, 2, (n, n_classes))
    cumulative = apply_temperature(logits, 1.0).cumsum(axis=1)
    labels = (rng.random((n, 1)) > cumulative).sum(axis=1)
    return logits, labels


def test_ece_by_hand_with_equal_width_bins() -> None:
    # Bins [0.2, 0.3): gap 0.2; [0.3, 0.4): gap 0.3; [0.8, 0.9): two cases, gap 0.175.
    y = [0, 1, 1, 0]
    prob = [0.2, 0.8, 0.85, 0.3]
    assert expected_calibration_error(y, prob, n_bins=10) == pytest.approx(
        (0.2 + 0.3 + 2 * 0.175) / 4
    )
    curve = reliability_curve([0, 1], [0.0, 1.0], n_bins=4)
    assert curve.counts.tolist() == [1, 0, 0, 1]  # 1.0 falls in the last, closed bin
    assert np.isnan(curve.observed[1]) and curve.observed[3] == 1.0


def test_reliability_curve_matches_scikit_learn_on_filled_bins() -> None:
    rng = np.random.default_rng(0)
    prob = rng.random(500)
    y = (rng.random(500) < prob**2).astype(int)
    curve = reliability_curve(y, prob, n_bins=8)
    observed, predicted = calibration_curve(y, prob, n_bins=8, strategy="uniform")
    filled = curve.counts > 0
    np.testing.assert_allclose(curve.observed[filled], observed)
    np.testing.assert_allclose(curve.mean_predicted[filled], predicted)


def test_ece_is_near_zero_when_calibrated_and_large_when_overconfident() -> None:
    logits, y = calibrated_logits(20_000, seed=1)
    assert expected_calibration_error(y, apply_temperature(logits, 1.0)) < 0.015
    overconfident = apply_temperature(3 * logits, 1.0)
    assert expected_calibration_error(y, overconfident) > 0.1


def test_temperature_scaling_repairs_overconfident_logits() -> None:
    val_logits, val_y = calibrated_logits(4000, seed=2)
    test_logits, test_y = calibrated_logits(4000, seed=3)
    temperature = fit_temperature(3 * val_logits, val_y)
    assert temperature == pytest.approx(3.0, rel=0.1)
    before = apply_temperature(3 * test_logits, 1.0)
    after = apply_temperature(3 * test_logits, temperature)
    assert negative_log_likelihood(3 * test_logits, test_y, temperature) < 0.8 * (
        negative_log_likelihood(3 * test_logits, test_y)
    )
    assert expected_calibration_error(test_y, after) < 0.3 * expected_calibration_error(
        test_y, before
    )
    # Scaling never reorders predictions.
    assert (np.argsort(after, kind="stable") == np.argsort(before, kind="stable")).all()


@pytest.mark.parametrize("n_classes", [2, 4])
def test_calibrated_logits_give_temperature_near_one(n_classes: int) -> None:
    logits, y = calibrated_logits(5000, seed=4, n_classes=n_classes)
    assert fit_temperature(logits, y) == pytest.approx(1.0, abs=0.08)
    if n_classes > 2:
        probabilities = apply_temperature(logits, 1.0)
        assert expected_calibration_error(y, probabilities) < 0.03  # top-label ECE
        assert fit_temperature(logits / 2, y) == pytest.approx(0.5, rel=0.1)


def test_nll_equals_scikit_learn_log_loss() -> None:
    logits, y = calibrated_logits(300, seed=5)
    assert negative_log_likelihood(logits, y) == pytest.approx(
        log_loss(y, apply_temperature(logits, 1.0))
    )
    multi, labels = calibrated_logits(300, seed=5, n_classes=3)
    assert negative_log_likelihood(multi, labels, 2.0) == pytest.approx(
        log_loss(labels, apply_temperature(multi, 2.0), labels=[0, 1, 2])
    )


def test_apply_temperature_is_stable_for_extreme_logits() -> None:
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        binary = apply_temperature(np.array([-1000.0, 0.0, 1000.0]), 1.0)
        softmax = apply_temperature(np.array([[1000.0, 0.0], [0.0, 0.0]]), 0.5)
    np.testing.assert_allclose(binary, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(softmax, [[1.0, 0.0], [0.5, 0.5]])


def test_reliability_diagram_png_is_written(tmp_path: Path) -> None:
    logits, y = calibrated_logits(500, seed=6)
    out = save_reliability_diagram(
        tmp_path / "figures" / "reliability.png",
        y,
        apply_temperature(3 * logits, 1.0),
        "Overconfident",
        calibrated_prob=apply_temperature(3 * logits, 3.0),
    )
    assert out == tmp_path / "figures" / "reliability.png"
    with Image.open(out) as image:
        assert (image.format, image.size) == ("PNG", (500, 600))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: apply_temperature([1.0], 0.0), '"temperature" must be positive'),
        (lambda: fit_temperature([1.0, 2.0], [0, 2]), r'"y_true" must hold 2 labels in 0\.\.1'),
        (lambda: fit_temperature([[1.0, 2.0]], [3]), r"labels in 0\.\.1"),
        (lambda: expected_calibration_error([0], [1.5]), '"prob" must lie in'),
        (lambda: expected_calibration_error([0], [0.5], n_bins=0), '"n_bins"'),
        (lambda: fit_temperature([np.inf], [1]), '"logits"'),
    ],
)
def test_bad_inputs_raise_naming_the_argument(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]
