"""Retrieval evaluation: same-label precision@k, recall@k, mAP@k, image-to-report rank.

Conventions (binding for every function here):

* Leave one patient out. A query's candidates are all other rows whose patient differs
  from the query's: the query itself and every other study of the same patient are
  excluded, because follow-up visits of one patient are near-duplicates that would
  inflate every score without saying anything about finding *similar cases*.
* A candidate is relevant when its label equals the query's label. Queries without a label
  (``None``) are dropped; unlabelled candidates are never relevant.
* ``precision@k`` = relevant among the first ``k`` / ``k``; ``recall@k`` = relevant among
  the first ``k`` / relevant among all candidates; ``AP@k`` = sum over relevant ranks
  ``i <= k`` of precision@i, divided by ``min(k, R)`` with ``R`` the relevant candidates
  (so a perfect top-k scores 1 even when ``R < k``). ``mAP@k`` is the mean of ``AP@k``.
  Queries with no relevant candidate (``R = 0``) have undefined recall and AP and are
  left out of those means (``MetricCI.n`` still counts every query).
* Confidence intervals resample query patients (``groups``) with
  ``imaging.evaluation.metrics.bootstrap_ci``.

Pure numpy; rankings are built from an ``n x n`` similarity matrix, which suits archives
of up to some ten thousand studies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from imaging.evaluation.metrics import MetricCI, bootstrap_ci, bootstrap_metrics

RETRIEVAL_METRICS = ("precision_at_k", "recall_at_k", "map_at_k")


def rank_neighbours(
    features: ArrayLike,
    patient_ids: ArrayLike,
    *,
    metric: Literal["cosine", "euclidean"] = "cosine",
    sites: ArrayLike | None = None,
) -> list[np.ndarray]:
    """For each row, the other patients' rows ordered from most to least similar.

    Args:
        features: ``(n, d)`` embeddings (cosine) or classifier features (euclidean).
        patient_ids: ``(n,)`` patient (pseudonym) per row; same-patient rows are excluded.
        metric: ``"cosine"`` (rows are normalised here) or ``"euclidean"``.
        sites: ``(n,)`` site per row; when given, same-site rows are excluded too, so
            that scanner or site appearance cannot stand in for the label.

    Returns:
        Per row, candidate row indices best first; ties keep index order.
    """
    x = _as_matrix("features", features)
    patients = _as_1d("patient_ids", patient_ids, len(x))
    if metric == "cosine":
        unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        distance = -(unit @ unit.T)
    elif metric == "euclidean":
        squared = (x**2).sum(axis=1)
        distance = squared[:, None] + squared[None, :] - 2 * (x @ x.T)
    else:
        raise ValueError(f'Argument "metric" must be "cosine" or "euclidean", got {metric!r}')
    site_array = None if sites is None else _as_1d("sites", sites, len(x))
    rankings = []
    for i in range(len(x)):
        order = np.argsort(distance[i], kind="stable")
        keep = patients[order] != patients[i]
        if site_array is not None:
            keep &= site_array[order] != site_array[i]
        rankings.append(order[keep])
    return rankings


def retrieval_metrics(
    query_labels: Sequence[object] | np.ndarray,
    ranked_neighbour_labels: Sequence[Sequence[object]] | np.ndarray,
    k: int = 10,
    groups: ArrayLike | None = None,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, MetricCI]:
    """Same-label precision@k, recall@k and mAP@k with bootstrap CIs over query patients.

    Args:
        query_labels: Label per query (``None`` drops the query).
        ranked_neighbour_labels: Per query, the labels of *all* its candidates, best
            first, with the query and its patient already excluded (see
            ``rank_neighbours``); recall needs the complete ranking, not only the top k.
        k: Cut-off.
        groups: Patient id per query, to resample patients instead of queries.
        n_resamples: Bootstrap resamples.
        seed: Seeds the resampling.
        confidence: Coverage of the intervals.

    Returns:
        ``MetricCI`` per name in ``RETRIEVAL_METRICS``.
    """
    if k < 1:
        raise ValueError(f'Argument "k" must be at least 1, got {k}')
    if len(query_labels) != len(ranked_neighbour_labels):
        raise ValueError(
            'Arguments "query_labels" and "ranked_neighbour_labels" must have the same length, '
            f"got {len(query_labels)} and {len(ranked_neighbour_labels)}"
        )
    keep = [i for i, label in enumerate(query_labels) if label is not None]
    if not keep:
        raise ValueError('Argument "query_labels" must hold at least one label')
    per_query = np.array(
        [_query_scores(query_labels[i], ranked_neighbour_labels[i], k) for i in keep]
    )
    group_array = None if groups is None else _as_1d("groups", groups, len(query_labels))[keep]
    return bootstrap_metrics(
        lambda scores: {
            name: _nanmean(scores[:, column]) for column, name in enumerate(RETRIEVAL_METRICS)
        },
        [per_query],
        groups=group_array,
        n_resamples=n_resamples,
        seed=seed,
        confidence=confidence,
    )


def embedding_retrieval_metrics(
    embeddings: ArrayLike,
    labels: Sequence[object] | np.ndarray,
    patient_ids: ArrayLike,
    *,
    k: int = 10,
    n_resamples: int = 1000,
    seed: int = 0,
    sites: ArrayLike | None = None,
) -> dict[str, MetricCI]:
    """Leave-one-patient-out same-label retrieval by cosine similarity of embeddings.

    With ``sites``, each query's candidates come from other sites only.
    """
    rankings = rank_neighbours(embeddings, patient_ids, metric="cosine", sites=sites)
    return _metrics_from_rankings(rankings, labels, patient_ids, k, n_resamples, seed)


def classifier_feature_baseline(
    classifier_output: ArrayLike,
    labels: Sequence[object] | np.ndarray,
    patient_ids: ArrayLike,
    *,
    k: int = 10,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, MetricCI]:
    """Retrieval by euclidean distance in the classifier's logit space.

    The baseline asks whether image embeddings find same-label cases better than simply
    matching the classifier's output. Probabilities are turned into logits (clipped to
    ``[1e-6, 1 - 1e-6]``) so that distances near 0 and 1 are not compressed.

    Args:
        classifier_output: ``(n,)`` probability of the positive class, or ``(n, C)``
            class probabilities (rows summing to 1) or logits.
        labels: Label per row.
        patient_ids: Patient per row.
        k: Cut-off.
        n_resamples: Bootstrap resamples.
        seed: Seeds the resampling.
    """
    output = np.asarray(classifier_output, dtype=np.float64)
    if output.ndim == 1:
        output = output[:, None]
    if ((output >= 0) & (output <= 1)).all():
        clipped = np.clip(output, 1e-6, 1 - 1e-6)
        output = np.log(clipped / (1 - clipped))
    rankings = rank_neighbours(output, patient_ids, metric="euclidean")
    return _metrics_from_rankings(rankings, labels, patient_ids, k, n_resamples, seed)


def random_baseline(
    labels: Sequence[object] | np.ndarray,
    patient_ids: ArrayLike,
    *,
    k: int = 10,
    seed: int = 0,
    n_resamples: int = 1000,
    sites: ArrayLike | None = None,
) -> dict[str, MetricCI]:
    """Retrieval with each query's candidates in a seeded random order.

    With ``sites``, the candidates are other sites' cases only (as for
    :func:`embedding_retrieval_metrics` with sites).

    Its expected precision@k is the prevalence of the query's label among the candidates
    and its expected recall@k is ``k / n_candidates``: the floor any embedding must beat.
    """
    patients = _as_1d("patient_ids", patient_ids, len(labels))
    rng = np.random.default_rng(seed)
    rows = np.arange(len(patients))
    allowed = patients[None, :] != patients[:, None]
    if sites is not None:
        site_array = _as_1d("sites", sites, len(patients))
        allowed &= site_array[None, :] != site_array[:, None]
    rankings = [rng.permutation(rows[allowed[i]]) for i in rows]
    return _metrics_from_rankings(rankings, labels, patient_ids, k, n_resamples, seed)


def image_to_report_median_rank(
    image_emb: ArrayLike,
    text_emb: ArrayLike,
    patient_ids: ArrayLike,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> MetricCI:
    """Median rank of each study's own report when its image queries all reports.

    Row ``i`` of ``image_emb`` and ``text_emb`` belong to the same study. The candidates
    for image ``i`` are its own report and the reports of *other* patients: reports of
    the same patient's other visits are left out (they describe the same heart or brain,
    and ranking them first is not an error). Rank 1 is best; a random embedding has an
    expected median rank of about half the candidates.

    Returns:
        The median rank with a bootstrap CI over patients.
    """
    images = _as_matrix("image_emb", image_emb)
    texts = _as_matrix("text_emb", text_emb)
    if images.shape != texts.shape:
        raise ValueError(
            'Arguments "image_emb" and "text_emb" must have the same shape, '
            f"got {images.shape} and {texts.shape}"
        )
    patients = _as_1d("patient_ids", patient_ids, len(images))
    images = images / np.maximum(np.linalg.norm(images, axis=1, keepdims=True), 1e-12)
    texts = texts / np.maximum(np.linalg.norm(texts, axis=1, keepdims=True), 1e-12)
    similarity = images @ texts.T
    own = np.diag(similarity)
    other_patient = patients[None, :] != patients[:, None]
    ranks = 1 + ((similarity > own[:, None]) & other_patient).sum(axis=1)
    return bootstrap_ci(
        np.median, ranks.astype(np.float64), groups=patients, n_resamples=n_resamples, seed=seed
    )


def _metrics_from_rankings(
    rankings: list[np.ndarray],
    labels: Sequence[object] | np.ndarray,
    patient_ids: ArrayLike,
    k: int,
    n_resamples: int,
    seed: int,
) -> dict[str, MetricCI]:
    label_array = np.empty(len(labels), dtype=object)
    label_array[:] = list(labels)
    return retrieval_metrics(
        list(label_array),
        [label_array[r] for r in rankings],
        k,
        groups=patient_ids,
        n_resamples=n_resamples,
        seed=seed,
    )


def _query_scores(label: object, neighbour_labels: Sequence[object], k: int) -> list[float]:
    relevant = np.array([n is not None and n == label for n in neighbour_labels], dtype=bool)
    top = relevant[:k]
    n_relevant = int(relevant.sum())
    precision = float(top.sum()) / k
    if n_relevant == 0:
        return [precision, np.nan, np.nan]
    recall = float(top.sum()) / n_relevant
    precision_at_rank = np.cumsum(top) / np.arange(1, len(top) + 1)
    average_precision = float(precision_at_rank[top].sum()) / min(k, n_relevant)
    return [precision, recall, average_precision]


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else np.nan


def _as_matrix(name: str, values: ArrayLike) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or len(array) == 0 or not np.isfinite(array).all():
        raise ValueError(f'Argument "{name}" must be a non-empty 2-D array of finite numbers')
    return array


def _as_1d(name: str, values: ArrayLike, n: int) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or len(array) != n:
        raise ValueError(f'Argument "{name}" must be a 1-D array of length {n}')
    return array
