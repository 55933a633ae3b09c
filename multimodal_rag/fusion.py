"""Hybrid evidence: the classifier's probability fused with the labels of retrieved cases.

Retrieval evidence is a similarity-weighted vote of the hits' labels (see
:func:`retrieval_evidence`). The fusion is a logistic regression (stacking) on the two
logits, ``sigmoid(b + w_c * logit(classifier) + w_r * logit(evidence))``, fitted on
validation data by minimising log-loss (lightly L2-regularised; Newton's method). A
logistic regression rather than a convex weight because it also recalibrates: the vote
of ten neighbours is not a probability, and its logit needs a scale the weight learns.

Report the comparison on held-out sites: :func:`compare_fusion` fits on validation sites
and evaluates on the others; :func:`compare_fusion_leave_sites_out` does it once per site and
pools the held-out probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike

from imaging.evaluation.calibration import expected_calibration_error
from imaging.evaluation.metrics import (
    MetricCI,
    binary_scores,
    bootstrap_ci,
    classification_metrics,
)

DEFAULT_TEMPERATURE = 0.05
# Logits of probabilities clipped to [EPSILON, 1 - EPSILON]: a unanimous vote is strong
# evidence, not infinite evidence.
EPSILON = 0.01
METHODS = ("classifier", "retrieval", "fused")


class LabelledHit(Protocol):
    """What the evidence needs from a hit (``SearchHit`` has both)."""

    @property
    def score(self) -> float:
        """Cosine similarity to the query."""
        ...

    @property
    def label(self) -> str | None:
        """The hit's label, or ``None``."""
        ...


def retrieval_evidence(
    hits: Sequence[LabelledHit], positive_label: str, *, temperature: float = DEFAULT_TEMPERATURE
) -> float:
    """Similarity-weighted share of retrieved cases carrying ``positive_label``.

    Each labelled hit gets the weight ``softmax(score / temperature)`` over the labelled
    hits, and the evidence is the weighted share with the positive label. Cosines of
    similar cases differ by hundredths, so the default temperature (0.05) lets a hit 0.05
    more similar count ``e`` times as much; a large temperature gives a plain vote.
    Unlabelled hits are ignored; with no labelled hit the evidence is 0.5 (none either way).

    Args:
        hits: Retrieved cases with ``score`` and ``label``.
        positive_label: The label counted as positive (e.g. ``"AD"``, ``"reduced_ef"``).
        temperature: Softmax temperature, > 0.

    Returns:
        Evidence for the positive label, in [0, 1].
    """
    if not temperature > 0:
        raise ValueError(f'Argument "temperature" must be positive, got {temperature}')
    labelled = [hit for hit in hits if hit.label is not None]
    if not labelled:
        return 0.5
    scores = np.array([hit.score for hit in labelled], dtype=np.float64) / temperature
    weights = np.exp(scores - scores.max())
    positive = np.array([hit.label == positive_label for hit in labelled])
    return float(weights[positive].sum() / weights.sum())


@dataclass(frozen=True)
class FusionModel:
    """Logistic regression on ``[logit(classifier prob), logit(retrieval evidence)]``.

    Attributes:
        intercept: ``b``.
        classifier_weight: ``w_c``, the weight of the classifier's logit.
        retrieval_weight: ``w_r``, the weight of the evidence's logit.
    """

    intercept: float
    classifier_weight: float
    retrieval_weight: float

    @classmethod
    def fit(
        cls,
        classifier_prob: ArrayLike,
        evidence: ArrayLike,
        y_true: ArrayLike,
        *,
        l2: float = 1e-3,
    ) -> FusionModel:
        """Fit on validation data (never on the sites it is evaluated on).

        Args:
            classifier_prob: Calibrated classifier probability of the positive class.
            evidence: Retrieval evidence per case (:func:`retrieval_evidence`).
            y_true: Labels in {0, 1}.
            l2: Penalty on the two weights (not the intercept), per case; keeps the fit
                finite on separable data.
        """
        features = _features(classifier_prob, evidence)
        y = _binary("y_true", y_true, len(features))
        b, w_c, w_r = _fit_logistic(features, y, l2)
        return cls(intercept=b, classifier_weight=w_c, retrieval_weight=w_r)

    def predict(self, classifier_prob: ArrayLike, evidence: ArrayLike) -> np.ndarray:
        """Fused probability of the positive class."""
        features = _features(classifier_prob, evidence)
        z = self.intercept + features @ np.array([self.classifier_weight, self.retrieval_weight])
        return _sigmoid(z)


@dataclass(frozen=True)
class FusionComparison:
    """AUC and ECE of each method on the test cases, with the fusion fitted on validation.

    Attributes:
        metrics: ``metrics[method][name]`` for method in :data:`METHODS` and name in
            ``("auc", "ece")``.
        auc_gain: Fused minus classifier-only AUC, paired bootstrap CI.
        fusion: The fitted fusion.
        retrieval_calibration: Platt scaling of the evidence alone (the retrieval-only
            probability), as a ``FusionModel`` with ``classifier_weight == 0``.
    """

    metrics: dict[str, dict[str, MetricCI]]
    auc_gain: MetricCI
    fusion: FusionModel
    retrieval_calibration: FusionModel

    def to_dict(self) -> dict[str, object]:
        """A JSON-serialisable summary."""
        return {
            "metrics": _metrics_dict(self.metrics),
            "auc_gain_fused_minus_classifier": self.auc_gain.to_dict(),
            "fusion": asdict(self.fusion),
            "retrieval_calibration": asdict(self.retrieval_calibration),
        }


def compare_fusion(
    y_val: ArrayLike,
    classifier_val: ArrayLike,
    evidence_val: ArrayLike,
    y_test: ArrayLike,
    classifier_test: ArrayLike,
    evidence_test: ArrayLike,
    *,
    groups_test: ArrayLike | None = None,
    n_bins: int = 10,
    n_resamples: int = 1000,
    seed: int = 0,
) -> FusionComparison:
    """Classifier-only, retrieval-only and fused AUC and ECE on held-out test cases.

    The fusion and the retrieval-only Platt scaling are fitted on the validation arrays;
    the classifier probability is used as given (it should already be calibrated, e.g. by
    temperature scaling on the same validation data). All CIs share the same resamples of
    the test cases (of patients with ``groups_test``).

    Args:
        y_val: Validation labels in {0, 1}.
        classifier_val: Validation classifier probabilities.
        evidence_val: Validation retrieval evidence.
        y_test: Test labels (held-out sites).
        classifier_test: Test classifier probabilities.
        evidence_test: Test retrieval evidence.
        groups_test: Test patient ids, to resample patients.
        n_bins: ECE bins.
        n_resamples: Bootstrap resamples.
        seed: Seeds the resampling.
    """
    probabilities, fusion, retrieval_only = _held_out_probabilities(
        (classifier_val, evidence_val, y_val), classifier_test, evidence_test
    )
    y = _binary("y_test", y_test, len(probabilities["classifier"]))
    metrics, auc_gain = _score_methods(y, probabilities, groups_test, n_bins, n_resamples, seed)
    return FusionComparison(metrics, auc_gain, fusion, retrieval_only)


@dataclass(frozen=True)
class LeaveSitesOutFusion:
    """Fusion evaluated site by site: each site's cases scored by fits on the other sites.

    Attributes:
        metrics: Pooled over all sites, ``metrics[method][name]`` as in
            :class:`FusionComparison`.
        auc_gain: Fused minus classifier-only AUC, pooled, paired bootstrap CI.
        per_site: Per held-out site, its fitted fusion and its case count.
    """

    metrics: dict[str, dict[str, MetricCI]]
    auc_gain: MetricCI
    per_site: dict[str, dict[str, object]]

    def to_dict(self) -> dict[str, object]:
        """A JSON-serialisable summary."""
        return {
            "metrics": _metrics_dict(self.metrics),
            "auc_gain_fused_minus_classifier": self.auc_gain.to_dict(),
            "per_site": self.per_site,
        }


def compare_fusion_leave_sites_out(
    y_true: ArrayLike,
    classifier_prob: ArrayLike,
    evidence: ArrayLike,
    sites: ArrayLike,
    *,
    groups: ArrayLike | None = None,
    n_bins: int = 10,
    n_resamples: int = 1000,
    seed: int = 0,
) -> LeaveSitesOutFusion:
    """Classifier-only, retrieval-only and fused AUC and ECE on held-out sites.

    For each site, the fusion and the retrieval-only scaling are fitted on the cases of
    every other site and applied to that site's cases; the metrics pool all sites'
    held-out probabilities. Inputs should themselves be out-of-site: classifier
    probabilities from models that never saw the site (``mmdx evaluate --split
    leave-sites-out``) and evidence from neighbours at other sites.

    Args:
        y_true: Labels in {0, 1}.
        classifier_prob: Calibrated classifier probability per case.
        evidence: Retrieval evidence per case.
        sites: Site per case; at least two sites.
        groups: Patient per case, to resample patients.
        n_bins: ECE bins.
        n_resamples: Bootstrap resamples.
        seed: Seeds the resampling.
    """
    classifier = _probability("classifier_prob", classifier_prob)
    y = _binary("y_true", y_true, len(classifier))
    site_array = np.asarray(sites)
    unique_sites = sorted(set(site_array.tolist()))
    if len(site_array) != len(y) or len(unique_sites) < 2:
        raise ValueError('Argument "sites" must give a site per case and name at least two sites')
    evidence_array = _probability("evidence", evidence)
    probabilities = {method: np.empty(len(y)) for method in METHODS}
    per_site: dict[str, dict[str, object]] = {}
    for site in unique_sites:
        test = site_array == site
        held_out, fusion, _ = _held_out_probabilities(
            (classifier[~test], evidence_array[~test], y[~test]),
            classifier[test],
            evidence_array[test],
        )
        for method, values in held_out.items():
            probabilities[method][test] = values
        per_site[str(site)] = {"n_cases": int(test.sum()), "fusion": asdict(fusion)}
    metrics, auc_gain = _score_methods(y, probabilities, groups, n_bins, n_resamples, seed)
    return LeaveSitesOutFusion(metrics, auc_gain, per_site)


def _held_out_probabilities(
    fit_on: tuple[ArrayLike, ArrayLike, ArrayLike],
    classifier_test: ArrayLike,
    evidence_test: ArrayLike,
) -> tuple[dict[str, np.ndarray], FusionModel, FusionModel]:
    """Each method's probabilities on test cases, the fusions fitted on ``fit_on``.

    Args:
        fit_on: ``(classifier prob, evidence, labels)`` of the cases to fit on.
        classifier_test: Test classifier probabilities (used as given).
        evidence_test: Test retrieval evidence.

    Returns:
        ``probabilities[method]`` for each of :data:`METHODS`, the fusion and the
        retrieval-only scaling.
    """
    classifier_fit, evidence_fit, y_fit = fit_on
    fusion = FusionModel.fit(classifier_fit, evidence_fit, y_fit)
    retrieval_only = _fit_retrieval_only(evidence_fit, y_fit)
    classifier = np.asarray(classifier_test, dtype=np.float64)
    probabilities = {
        "classifier": classifier,
        "retrieval": retrieval_only.predict(np.full(len(classifier), 0.5), evidence_test),
        "fused": fusion.predict(classifier, evidence_test),
    }
    return probabilities, fusion, retrieval_only


def _metrics_dict(metrics: dict[str, dict[str, MetricCI]]) -> dict[str, object]:
    return {
        method: {name: ci.to_dict() for name, ci in values.items()}
        for method, values in metrics.items()
    }


def _score_methods(
    y: np.ndarray,
    probabilities: dict[str, np.ndarray],
    groups: ArrayLike | None,
    n_bins: int,
    n_resamples: int,
    seed: int,
) -> tuple[dict[str, dict[str, MetricCI]], MetricCI]:
    """AUC and ECE per method, and the paired fused-minus-classifier AUC, same resamples."""

    def ece(yy: np.ndarray, pp: np.ndarray) -> float:
        return expected_calibration_error(yy, pp, n_bins)

    def with_ci(metric: Callable[..., float], *arrays: np.ndarray) -> MetricCI:
        return bootstrap_ci(metric, *arrays, groups=groups, n_resamples=n_resamples, seed=seed)

    metrics = {
        method: {
            "auc": classification_metrics(
                y, prob, groups=groups, n_resamples=n_resamples, seed=seed
            )["auc"],
            "ece": with_ci(ece, y, prob),
        }
        for method, prob in probabilities.items()
    }
    auc_gain = with_ci(_auc_difference, y, probabilities["fused"], probabilities["classifier"])
    return metrics, auc_gain


def _fit_retrieval_only(evidence: ArrayLike, y_true: ArrayLike) -> FusionModel:
    logit_evidence = _logit(_probability("evidence", evidence))
    y = _binary("y_val", y_true, len(logit_evidence))
    b, w = _fit_logistic(logit_evidence[:, None], y, 1e-3)
    return FusionModel(intercept=b, classifier_weight=0.0, retrieval_weight=w)


def _auc_difference(y: np.ndarray, fused: np.ndarray, classifier: np.ndarray) -> float:
    auc_fused = binary_scores(y, fused, threshold=0.5)["auc"]
    return auc_fused - binary_scores(y, classifier, threshold=0.5)["auc"]


def _fit_logistic(features: np.ndarray, y: np.ndarray, l2: float) -> tuple[float, ...]:
    """Minimise mean log-loss + ``l2 * |w|^2`` by Newton's method (convex, ~10 steps)."""
    x = np.column_stack([np.ones(len(features)), features])
    penalty = np.full(x.shape[1], 2 * l2)
    penalty[0] = 0.0  # the intercept is not shrunk
    theta = np.zeros(x.shape[1])
    for _ in range(100):
        p = _sigmoid(x @ theta)
        gradient = x.T @ (p - y) / len(y) + penalty * theta
        hessian = (x.T * (p * (1 - p))) @ x / len(y) + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return tuple(float(t) for t in theta)


def _features(classifier_prob: ArrayLike, evidence: ArrayLike) -> np.ndarray:
    classifier = _probability("classifier_prob", classifier_prob)
    retrieved = _probability("evidence", evidence)
    if classifier.shape != retrieved.shape:
        raise ValueError(
            'Arguments "classifier_prob" and "evidence" must have the same length, '
            f"got {classifier.size} and {retrieved.size}"
        )
    return np.column_stack([_logit(classifier), _logit(retrieved)])


def _probability(name: str, values: ArrayLike) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0 or not np.isfinite(array).all():
        raise ValueError(f'Argument "{name}" must be a non-empty 1-D array of finite numbers')
    if ((array < 0) | (array > 1)).any():
        raise ValueError(f'Argument "{name}" must lie in [0, 1]')
    return array


def _binary(name: str, values: ArrayLike, n: int) -> np.ndarray:
    array = np.asarray(values)
    if array.shape != (n,) or not np.isin(array, (0, 1)).all():
        raise ValueError(f'Argument "{name}" must be a 1-D array of {n} zeros and ones')
    return array.astype(np.float64)


def _logit(p: np.ndarray) -> np.ndarray:
    clipped = np.clip(p, EPSILON, 1 - EPSILON)
    return np.log(clipped / (1 - clipped))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(z / 2))
