"""Evaluate a case index: same-label retrieval against baselines, and fusion on held-out sites.

What ``mmdx rag-eval`` measures, per modality, on the cases stored in the index:

- image-to-image same-label retrieval (precision@k, recall@k, mAP@k) leaving each query's
  patient out, against a seeded random ranking and, when classifier probabilities are
  given, against ranking by the classifier's output (``multimodal_rag.evaluation``);
- image-to-report median rank of each study's own report;
- with classifier probabilities: classifier-only, retrieval-only and fused AUC and ECE,
  site by site (:func:`multimodal_rag.fusion.compare_fusion_leave_sites_out`), the
  retrieval evidence of each case coming only from cases at *other* sites.

Rankings here are exact cosine rankings over the stored embeddings (what the index's
exact search returns), so the figures measure the embeddings, not the ANN index.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from imaging.dicom.deid.replacements import keyed_uid
from multimodal_rag.cases import Modality
from multimodal_rag.evaluation import (
    classifier_feature_baseline,
    embedding_retrieval_metrics,
    image_to_report_median_rank,
    random_baseline,
)
from multimodal_rag.fusion import (
    DEFAULT_TEMPERATURE,
    compare_fusion_leave_sites_out,
    retrieval_evidence,
)

# The positive class of each modality's classifier (the label the evidence counts).
POSITIVE_LABELS: dict[Modality, str] = {"MR": "AD", "US": "reduced_ef"}
EVALUATION_COLUMNS = [
    "case_id",
    "patient_pseudonym",
    "modality",
    "label",
    "site_id",
    "image_embedding",
    "text_embedding",
]
# Probability columns of `mmdx evaluate`'s predictions.csv, preferred first: the
# temperature-scaled probability of the binary task.
PROBABILITY_COLUMNS = ("reduced_ef_calibrated_score", "calibrated_score")


@dataclass(frozen=True)
class CaseMatrix:
    """The evaluated cases as aligned arrays (one row per case).

    Attributes:
        case_ids: Pseudonymous case ids.
        patients: Patient pseudonyms.
        sites: Site codes.
        labels: Labels (``None`` when unknown), dtype object.
        image_embeddings: ``(n, d)`` L2-normalised image embeddings.
        text_embeddings: ``(n, d)`` L2-normalised report embeddings.
    """

    case_ids: np.ndarray
    patients: np.ndarray
    sites: np.ndarray
    labels: np.ndarray
    image_embeddings: np.ndarray
    text_embeddings: np.ndarray

    @classmethod
    def from_table(cls, table: pa.Table, modality: Modality) -> CaseMatrix:
        """The rows of ``modality`` from a table with :data:`EVALUATION_COLUMNS`."""
        rows = table.filter(pc.equal(table["modality"], modality))
        labels = np.empty(rows.num_rows, dtype=object)
        labels[:] = rows["label"].to_pylist()
        return cls(
            case_ids=np.array(rows["case_id"].to_pylist(), dtype=object),
            patients=np.array(rows["patient_pseudonym"].to_pylist(), dtype=object),
            sites=np.array(rows["site_id"].to_pylist(), dtype=object),
            labels=labels,
            image_embeddings=_vectors(rows["image_embedding"]),
            text_embeddings=_vectors(rows["text_embedding"]),
        )

    def __len__(self) -> int:
        return len(self.case_ids)

    def select(self, mask: np.ndarray) -> CaseMatrix:
        """The rows where ``mask`` is true."""
        return CaseMatrix(
            self.case_ids[mask],
            self.patients[mask],
            self.sites[mask],
            self.labels[mask],
            self.image_embeddings[mask],
            self.text_embeddings[mask],
        )


def neighbour_evidence(
    cases: CaseMatrix,
    positive_label: str,
    *,
    k: int = 10,
    other_sites_only: bool = True,
    temperature: float = DEFAULT_TEMPERATURE,
) -> np.ndarray:
    """Retrieval evidence per case from its ``k`` most similar labelled cases.

    Candidates are labelled cases of other patients and, with ``other_sites_only``, of
    other sites: a held-out site's own labels never inform its evidence. The evidence is
    the softmax-weighted share of positive neighbours (``fusion.retrieval_evidence``).
    """
    if k < 1:
        raise ValueError(f'Argument "k" must be at least 1, got {k}')
    similarity = cases.image_embeddings @ cases.image_embeddings.T
    labelled = np.array([label is not None for label in cases.labels])
    evidence = np.empty(len(cases))
    for i in range(len(cases)):
        allowed = labelled & (cases.patients != cases.patients[i])
        if other_sites_only:
            allowed &= cases.sites != cases.sites[i]
        candidates = np.flatnonzero(allowed)
        top = candidates[np.argsort(-similarity[i, candidates], kind="stable")[:k]]
        hits = [_Neighbour(float(similarity[i, j]), cases.labels[j]) for j in top]
        evidence[i] = retrieval_evidence(hits, positive_label, temperature=temperature)
    return evidence


def evaluate_modality(
    cases: CaseMatrix,
    *,
    positive_label: str,
    classifier_prob: np.ndarray | None = None,
    k: int = 10,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Retrieval metrics with baselines and, given classifier probabilities, fusion.

    Args:
        cases: One modality's cases.
        positive_label: The classifier's positive label.
        classifier_prob: Out-of-site probability of ``positive_label`` per case, aligned
            with ``cases`` (only cases with a probability should be passed).
        k: Cut-off of the retrieval metrics and neighbours of the evidence.
        n_resamples: Bootstrap resamples (over patients).
        seed: Seeds the random baseline and the resampling.

    Returns:
        A JSON-serialisable summary.
    """
    if len(cases) < 3 or len(set(cases.patients.tolist())) < 3:
        raise ValueError(f"at least 3 patients are needed, got {len(set(cases.patients))}")
    common = {"k": k, "n_resamples": n_resamples, "seed": seed}
    summary: dict[str, Any] = {
        "n_cases": len(cases),
        "n_patients": len(set(cases.patients.tolist())),
        "sites": sorted(set(cases.sites.tolist())),
        "label_counts": _counts(cases.labels),
        "k": k,
        "image_to_image": _as_dicts(
            embedding_retrieval_metrics(
                cases.image_embeddings, cases.labels, cases.patients, **common
            )
        ),
        "random": _as_dicts(random_baseline(cases.labels, cases.patients, **common)),
    }
    if len(set(cases.sites.tolist())) > 1:
        # Candidates from other sites only: what is left when the site cannot help.
        summary["image_to_image_other_sites"] = _as_dicts(
            embedding_retrieval_metrics(
                cases.image_embeddings, cases.labels, cases.patients, sites=cases.sites, **common
            )
        )
        summary["random_other_sites"] = _as_dicts(
            random_baseline(cases.labels, cases.patients, sites=cases.sites, **common)
        )
    if classifier_prob is not None:
        summary["classifier_features"] = _as_dicts(
            classifier_feature_baseline(classifier_prob, cases.labels, cases.patients, **common)
        )
    rank = image_to_report_median_rank(
        cases.image_embeddings,
        cases.text_embeddings,
        cases.patients,
        n_resamples=n_resamples,
        seed=seed,
    )
    candidates = np.array([(cases.patients != p).sum() + 1 for p in cases.patients])
    summary["image_to_report"] = {
        "median_rank": rank.to_dict(),
        # A random ordering puts the own report at (candidates + 1) / 2 on average.
        "random_expected_median_rank": float(np.median((candidates + 1) / 2)),
        "candidates_median": int(np.median(candidates)),
    }
    if classifier_prob is not None:
        y = np.array([label == positive_label for label in cases.labels], dtype=np.int64)
        evidence = neighbour_evidence(cases, positive_label, k=k)
        fusion = compare_fusion_leave_sites_out(
            y,
            classifier_prob,
            evidence,
            cases.sites,
            groups=cases.patients,
            n_resamples=n_resamples,
            seed=seed,
        )
        summary["fusion_leave_sites_out"] = fusion.to_dict()
    return summary


def read_classifier_probabilities(predictions_csv: Path, secret: bytes) -> dict[str, float]:
    """Probability per case id from ``mmdx evaluate``'s ``predictions.csv``.

    The CSV names studies by their original Study Instance UID; the index holds keyed
    UIDs, so each UID is mapped with the same de-identification key as ``mmdx index``.

    Raises:
        FileNotFoundError: No such file.
        ValueError: No probability column, or a value that is not a probability.
    """
    path = Path(predictions_csv)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        column = next((name for name in PROBABILITY_COLUMNS if name in columns), None)
        if column is None or "study_instance_uid" not in columns:
            raise ValueError(
                f"{path}: needs study_instance_uid and one of {', '.join(PROBABILITY_COLUMNS)}"
            )
        probabilities: dict[str, float] = {}
        for line, row in enumerate(reader, start=2):
            value = float(row[column])
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{path}, line {line}: {column} {value} is not a probability")
            probabilities[keyed_uid(secret, row["study_instance_uid"])] = value
    return probabilities


def evaluate_index_table(
    table: pa.Table,
    *,
    modalities: Sequence[Modality] = ("MR", "US"),
    probabilities: Mapping[str, float] | None = None,
    positive_labels: Mapping[Modality, str] = POSITIVE_LABELS,
    k: int = 10,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """:func:`evaluate_modality` for each modality present in ``table``.

    With ``probabilities`` (case id -> probability), a modality is evaluated on its cases
    that have one, when any has; otherwise on all its cases without the classifier parts.
    """
    results: dict[str, Any] = {}
    for modality in modalities:
        cases = CaseMatrix.from_table(table, modality)
        if len(cases) == 0:
            continue
        prob = None
        if probabilities:
            known = np.array([case_id in probabilities for case_id in cases.case_ids])
            if known.any():
                cases = cases.select(known)
                prob = np.array([probabilities[case_id] for case_id in cases.case_ids])
        results[modality] = evaluate_modality(
            cases,
            positive_label=positive_labels[modality],
            classifier_prob=prob,
            k=k,
            n_resamples=n_resamples,
            seed=seed,
        )
    return results


@dataclass(frozen=True)
class _Neighbour:
    score: float
    label: str | None


def _vectors(column: pa.ChunkedArray) -> np.ndarray:
    flat = column.combine_chunks()
    dim = flat.type.list_size
    return np.asarray(flat.values.to_numpy(zero_copy_only=False), dtype=np.float64).reshape(-1, dim)


def _counts(labels: np.ndarray) -> dict[str, int]:
    names = ["unlabelled" if label is None else str(label) for label in labels]
    return {name: names.count(name) for name in sorted(set(names))}


def _as_dicts(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {name: ci.to_dict() for name, ci in metrics.items()}
