"""Retrieval metrics against hand-computed values, and the baselines."""

from __future__ import annotations

import numpy as np
import pytest

from multimodal_rag.evaluation import (
    classifier_feature_baseline,
    embedding_retrieval_metrics,
    image_to_report_median_rank,
    random_baseline,
    rank_neighbours,
    retrieval_metrics,
)


def test_retrieval_metrics_equal_hand_computed_values() -> None:
    metrics = retrieval_metrics(
        ["A", "B", "C", None],
        [["A", "B", "A", "B"], ["A", "A", "B", "B"], ["C", "B", "B"], ["A"]],
        k=2,
        n_resamples=50,
    )
    # Query A: P@2 1/2, recall 1/2 (2 relevant), AP@2 = (1/1) / min(2, 2) = 1/2.
    # Query B: nothing relevant in the top 2: 0, 0, 0.
    # Query C: P@2 1/2, recall 1/1, AP@2 = (1/1) / min(2, 1) = 1. The None query is dropped.
    assert metrics["precision_at_k"].value == pytest.approx((0.5 + 0 + 0.5) / 3)
    assert metrics["recall_at_k"].value == pytest.approx((0.5 + 0 + 1) / 3)
    assert metrics["map_at_k"].value == pytest.approx((0.5 + 0 + 1) / 3)
    assert metrics["map_at_k"].n == 3


def test_average_precision_rewards_early_hits_and_skips_queries_without_relevant() -> None:
    metrics = retrieval_metrics(
        ["A", "A", "Z"],
        [["B", "A", "A"], ["A", "B", "A"], ["A", "B"]],
        k=3,
        n_resamples=50,
    )
    # AP@3: (1/2 + 2/3) / 2 = 7/12 and (1 + 2/3) / 2 = 5/6; "Z" has no relevant candidate.
    assert metrics["map_at_k"].value == pytest.approx((7 / 12 + 5 / 6) / 2)
    assert metrics["recall_at_k"].value == pytest.approx(1.0)
    assert metrics["precision_at_k"].value == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)


def test_rank_neighbours_excludes_the_query_and_its_patient() -> None:
    # Row 2's cosines: row 0 0, row 1 0.10, row 3 0.71.
    features = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.7, 0.7]])
    rankings = rank_neighbours(features, ["p1", "p1", "p2", "p3"])
    assert [r.tolist() for r in rankings] == [[3, 2], [3, 2], [3, 1, 0], [1, 0, 2]]
    euclidean = rank_neighbours([[0.0], [1.0], [3.0]], ["a", "b", "c"], metric="euclidean")
    assert [r.tolist() for r in euclidean] == [[1, 2], [0, 2], [1, 0]]


def clustered(n_per_label: int, seed: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Embeddings around one centre per label, one study per patient."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(2, 16))
    labels = ["AD"] * n_per_label + ["CN"] * n_per_label
    embeddings = centres[[0] * n_per_label + [1] * n_per_label] + rng.normal(
        0, 0.3, (2 * n_per_label, 16)
    )
    return embeddings, labels, np.arange(2 * n_per_label)


def test_random_baseline_precision_is_the_prevalence() -> None:
    labels = ["A"] * 120 + ["B"] * 280
    metrics = random_baseline(labels, np.arange(400), k=10, seed=0, n_resamples=100)
    # Expected P@10 of a random ranking: the share of same-label candidates, 119/399 or 279/399.
    expected = 0.3 * 119 / 399 + 0.7 * 279 / 399
    assert metrics["precision_at_k"].value == pytest.approx(expected, abs=0.02)
    assert metrics["recall_at_k"].value == pytest.approx(10 / 399, abs=0.003)
    assert metrics["precision_at_k"].low < expected < metrics["precision_at_k"].high


def test_embeddings_and_classifier_features_beat_random() -> None:
    embeddings, labels, patients = clustered(50, seed=1)
    embedded = embedding_retrieval_metrics(embeddings, labels, patients, k=10, n_resamples=100)
    assert embedded["precision_at_k"].value == pytest.approx(1.0)
    assert embedded["map_at_k"].value == pytest.approx(1.0)
    assert embedded["recall_at_k"].value == pytest.approx(10 / 49)
    rng = np.random.default_rng(2)
    probability = np.r_[rng.uniform(0.6, 1.0, 50), rng.uniform(0.0, 0.4, 50)]
    by_classifier = classifier_feature_baseline(probability, labels, patients, n_resamples=100)
    assert by_classifier["precision_at_k"].value == pytest.approx(1.0)
    chance = random_baseline(labels, patients, n_resamples=100)
    assert chance["precision_at_k"].high < 0.6 < embedded["precision_at_k"].low


def test_image_to_report_median_rank() -> None:
    rng = np.random.default_rng(3)
    images = rng.normal(size=(41, 8))
    patients = np.arange(41)
    assert image_to_report_median_rank(images, images, patients, n_resamples=50).value == 1.0
    shuffled = image_to_report_median_rank(
        images, rng.permutation(images), patients, n_resamples=50
    )
    assert 10 < shuffled.value < 32  # about half of 41 candidates
    # Each image matches the other study's report better (0.99 > 0.8, 0.6 > 0.11): rank 2
    # when the studies are two patients', rank 1 when they are one patient's two visits.
    pair = np.array([[1.0, 0.0], [0.0, 1.0]])
    reports = np.array([[0.8, 0.6], [0.9, 0.1]])
    assert image_to_report_median_rank(pair, reports, ["p", "q"], n_resamples=10).value == 2.0
    assert image_to_report_median_rank(pair, reports, ["p", "p"], n_resamples=10).value == 1.0
