"""Retrieval modes, adaptive k, filters and matched sentences against an in-memory searcher."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from imaging.synthetic.reports import write_echo_report
from multimodal_rag.cases import SearchHit
from multimodal_rag.index.filters import CaseFilter
from multimodal_rag.retrieval import Column, Query, adaptive_k, search_similar, split_sentences


def unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


@dataclass
class FakeCase:
    case_id: str
    patient: str
    label: str
    image: np.ndarray
    text: np.ndarray
    report: str = "No findings."
    site: str = "S1"
    modality: str = "US"


class FakeSearcher:
    """Exact cosine search; filters applied in memory by the index's own ``CaseFilter``."""

    def __init__(self, cases: Sequence[FakeCase]) -> None:
        self.cases = list(cases)
        self.calls: list[tuple[str, int, Mapping[str, Any] | None, Mapping[str, Any] | None]] = []
        values: dict[str, list[Any]] = {
            "case_id": [c.case_id for c in self.cases],
            "patient_pseudonym": [c.patient for c in self.cases],
            "modality": [c.modality for c in self.cases],
            "label": [c.label for c in self.cases],
            "site_id": [c.site for c in self.cases],
            "study_year": [None] * len(self.cases),
        }
        self.columns = {name: np.asarray(v, dtype=object) for name, v in values.items()}
        self.nulls = {name: np.asarray([x is None for x in v]) for name, v in values.items()}

    def search(
        self,
        vector: np.ndarray,
        *,
        column: Column,
        k: int,
        where: Mapping[str, Any] | None = None,
        exclude: Mapping[str, Any] | None = None,
    ) -> list[SearchHit]:
        self.calls.append((column, k, where, exclude))
        keep = CaseFilter.create(where, exclude).mask(self.columns, self.nulls)
        rows = [c for c, kept in zip(self.cases, keep, strict=True) if kept]
        field = {"image_embedding": "image", "text_embedding": "text"}[column]
        scored = sorted(rows, key=lambda c: -float(getattr(c, field) @ vector))[:k]
        return [
            SearchHit(
                case_id=c.case_id,
                score=float(getattr(c, field) @ vector),
                rank=rank,
                modality=c.modality,
                label=c.label,
                site_id=c.site,
                report_text=c.report,
                why="index",
            )
            for rank, c in enumerate(scored, start=1)
        ]


# Image and report embeddings point in different directions, so using the wrong column
# gives a different order.
CASES = [
    FakeCase("a", "p1", "reduced_ef", unit(1, 0, 0), unit(0, 0, 1)),
    FakeCase("b", "p2", "reduced_ef", unit(0.8, 0.6, 0), unit(0, 0.6, 0.8)),
    FakeCase("c", "p3", "normal_ef", unit(0, 1, 0), unit(1, 0, 0)),
    FakeCase("d", "p4", "normal_ef", unit(0, 0, 1), unit(0.6, 0.8, 0), site="S2"),
]


def ids(hits: Sequence[SearchHit]) -> list[str]:
    return [hit.case_id for hit in hits]


def test_image_to_image_ranks_by_image_cosine_and_explains() -> None:
    hits = search_similar(
        Query(image_embedding=unit(1, 0, 0)),
        FakeSearcher(CASES),
        mode="image_to_image",
        k=3,
        adaptive=False,
    )
    assert ids(hits) == ["a", "b", "c"]
    assert [h.rank for h in hits] == [1, 2, 3]
    assert [h.score for h in hits] == pytest.approx([1.0, 0.8, 0.0], abs=1e-6)
    assert [h.why for h in hits] == ["image 1.00", "image 0.80", "image 0.00"]


def test_text_to_image_searches_image_column_and_image_to_report_the_report_column() -> None:
    searcher = FakeSearcher(CASES)
    text_query = Query(text_embedding=unit(0, 1, 0))
    hits = search_similar(text_query, searcher, mode="text_to_image", k=2, adaptive=False)
    assert ids(hits) == ["c", "b"]  # image column: c (1.0), b (0.6)
    image_query = Query(image_embedding=unit(0, 1, 0))
    hits = search_similar(image_query, searcher, mode="image_to_report", k=2, adaptive=False)
    assert ids(hits) == ["d", "b"]  # report column: d (0.8), b (0.6)
    assert hits[0].why == "report 0.80"
    assert [call[0] for call in searcher.calls] == ["image_embedding", "text_embedding"]


def test_study_to_study_weights_image_and_report_over_the_union() -> None:
    query = Query(image_embedding=unit(1, 0, 0), text_embedding=unit(0, 0.6, 0.8))
    searcher = FakeSearcher(CASES)
    hits = search_similar(
        query, searcher, mode="study_to_study", k=4, adaptive=False, report_weight=0.25
    )
    # image cosines a 1, b .8, c 0, d 0; report cosines a .8, b 1, c 0, d .48.
    assert ids(hits) == ["a", "b", "d", "c"]
    assert [h.score for h in hits] == pytest.approx([0.95, 0.85, 0.12, 0.0], abs=1e-6)
    assert hits[1].why == "image 0.80; report 1.00"
    assert [call[:2] for call in searcher.calls] == [("image_embedding", 9), ("text_embedding", 9)]


class ScriptedSearcher:
    """Returns fixed hit lists per column, as an index returning only its top candidates."""

    def __init__(self, per_column: dict[str, list[tuple[str, float]]]) -> None:
        self.per_column = per_column

    def search(
        self,
        vector: np.ndarray,
        *,
        column: Column,
        k: int,
        where: Mapping[str, Any] | None = None,
        exclude: Mapping[str, Any] | None = None,
    ) -> list[SearchHit]:
        return [
            SearchHit(case_id, score, rank, "MR", "AD", "S1", "No findings.", "index")
            for rank, (case_id, score) in enumerate(self.per_column[column], start=1)
        ]


def test_study_to_study_bounds_a_similarity_that_one_search_did_not_return() -> None:
    searcher = ScriptedSearcher(
        {
            "image_embedding": [("A", 0.9), ("B", 0.8), ("C", 0.7)],
            "text_embedding": [("D", 0.6), ("A", 0.5), ("E", 0.3)],
        }
    )
    query = Query(image_embedding=unit(1, 0), text_embedding=unit(0, 1))
    hits = search_similar(query, searcher, mode="study_to_study", k=3, adaptive=False)
    # B lacks a report score: the lowest returned (0.3) bounds it; D lacks an image one (0.7).
    assert ids(hits) == ["A", "D", "B"]
    assert [h.score for h in hits] == pytest.approx([0.70, 0.65, 0.55])
    assert [h.why for h in hits] == [
        "image 0.90; report 0.50",
        "image <=0.70; report 0.60",
        "image 0.80; report <=0.30",
    ]


@pytest.mark.parametrize(
    ("scores", "min_k", "max_k", "expected"),
    [
        ([0.90, 0.88, 0.87, 0.60, 0.58], 1, 5, 3),  # drops .02 .01 .27 .02
        ([0.90, 0.60, 0.59, 0.30, 0.29], 2, 5, 3),  # the .30 drop after hit 1 is below min_k
        ([0.90, 0.85, 0.84, 0.50], 1, 3, 3),  # the largest drop follows the 3rd = max_k
        ([0.90, 0.85, 0.84, 0.50], 1, 2, 1),  # beyond max_k it is not seen
        ([0.7, 0.7, 0.7, 0.7], 1, 3, 3),  # no drop: keep max_k
        ([0.9, 0.8], 3, 10, 2),  # fewer scores than min_k
        ([], 1, 10, 0),
    ],
)
def test_adaptive_k_cuts_at_the_largest_drop(
    scores: list[float], min_k: int, max_k: int, expected: int
) -> None:
    assert adaptive_k(scores, min_k=min_k, max_k=max_k) == expected


def test_adaptive_k_min_drop_and_bad_input() -> None:
    assert adaptive_k([0.80, 0.79, 0.78, 0.77], min_k=1, max_k=4, min_drop=0.05) == 4
    assert adaptive_k([0.80, 0.70, 0.69], min_k=1, max_k=3, min_drop=0.05) == 1
    with pytest.raises(ValueError, match="sorted best first"):
        adaptive_k([0.5, 0.9])
    with pytest.raises(ValueError, match="min_k <= max_k"):
        adaptive_k([0.9], min_k=3, max_k=2)


def test_search_similar_adaptive_cut_returns_the_close_cluster() -> None:
    close = [FakeCase(f"n{i}", f"p{i}", "AD", unit(1, 0.1 * i, 0), unit(1, 0, 0)) for i in range(3)]
    far = [FakeCase(f"f{i}", f"q{i}", "CN", unit(0.1 * i, 1, 0), unit(1, 0, 0)) for i in range(4)]
    searcher = FakeSearcher(close + far)
    query = Query(image_embedding=unit(1, 0, 0))
    hits = search_similar(query, searcher, mode="image_to_image", k=5, min_k=1)
    assert ids(hits) == ["n0", "n1", "n2"]
    assert searcher.calls[0][1] == 6  # k + 1 fetched to see a drop after the k-th
    fixed = search_similar(query, searcher, mode="image_to_image", k=5, adaptive=False)
    assert len(fixed) == 5


def test_filters_and_exclusions_reach_the_searcher_as_mappings() -> None:
    query = Query(image_embedding=unit(1, 0, 0), exclude_case_id="a", exclude_patient="p2")
    searcher = FakeSearcher(CASES)
    hits = search_similar(
        query, searcher, mode="image_to_image", k=3, adaptive=False, filters={"site_id": "S1"}
    )
    assert ids(hits) == ["c"]
    assert searcher.calls[0][2:] == (
        {"site_id": "S1"},
        {"case_id": "a", "patient_pseudonym": "p2"},
    )
    search_similar(Query(image_embedding=unit(1, 0, 0)), searcher, mode="image_to_image")
    assert searcher.calls[1][2:] == (None, None)


def test_bad_filters_are_refused_by_the_index_filter_and_bad_queries_by_retrieval() -> None:
    searcher = FakeSearcher(CASES)
    query = Query(image_embedding=unit(1, 0, 0))
    with pytest.raises(ValueError, match="keys must be in"):
        search_similar(query, searcher, mode="image_to_image", filters={"report_text": "x"})
    with pytest.raises(ValueError, match="keys must be in"):
        CaseFilter.create({"label = 'AD' OR 1=1 --": "x"})
    # A value is a literal: its quote is doubled, so it cannot end the string.
    assert CaseFilter.create({"site_id": "S1' OR '1'='1"}).to_sql() == (
        "(site_id IN ('S1'' OR ''1''=''1'))"
    )
    with pytest.raises(ValueError, match='"image_embedding" is required'):
        search_similar(Query(), searcher, mode="image_to_image")
    with pytest.raises(ValueError, match='"mode" must be one of'):
        search_similar(Query(), searcher, mode="video")  # type: ignore[arg-type]


VOCABULARY = ("reduced", "normal", "effusion")


def bag_of_words(sentences: list[str]) -> np.ndarray:
    """A text embedder with one dimension per vocabulary word (plus one for the rest)."""
    rows = []
    for sentence in sentences:
        words = sentence.lower().split()
        rows.append([*(float(any(w.startswith(v) for w in words)) for v in VOCABULARY), 0.5])
    return np.asarray(rows)


def test_matched_sentences_are_those_closest_to_the_query_text() -> None:
    report = (
        "FINDINGS: Left ventricular cavity size is normal. There is no pericardial effusion. "
        "Systolic function is reduced, EF 35%.\nIMPRESSION: Reduced LVEF."
    )
    cases = [FakeCase("a", "p1", "reduced_ef", unit(1, 0, 0), unit(1, 0, 0), report)]
    query = Query(image_embedding=unit(1, 0, 0), text_embedding=unit(1, 0, 0, 0))
    hits = search_similar(
        query, FakeSearcher(cases), mode="image_to_image", k=1, embed_texts=bag_of_words
    )
    # Both "reduced" sentences embed as (1, 0, 0, 0.5): cosine 0.89; the others 0.
    assert hits[0].matched_sentences == (
        "Systolic function is reduced, EF 35%.",
        "IMPRESSION: Reduced LVEF.",
    )
    assert hits[0].why == "image 1.00; sentence 0.89"


def test_split_sentences_handles_percentages_decimals_and_abbreviations() -> None:
    text = (
        "LVEF 35%. Trace MR. Approx. 3.5 cm mass vs. 2.1 cm before, e.g. in Fig. 2. "
        "QRS 96 ms. No effusion!"
    )
    assert split_sentences(text) == [
        "LVEF 35%.",
        "Trace MR.",
        "Approx. 3.5 cm mass vs. 2.1 cm before, e.g. in Fig. 2.",
        "QRS 96 ms.",
        "No effusion!",
    ]
    assert split_sentences("Findings wrapped\nover two lines. Done.") == [
        "Findings wrapped over two lines.",
        "Done.",
    ]


def test_split_sentences_on_a_synthetic_echo_report() -> None:
    report = write_echo_report(
        ejection_fraction_percent=35.0,
        edv_ml=150.0,
        esv_ml=98.0,
        heart_rate_bpm=70.0,
        rng=np.random.default_rng(3),
    )
    sentences = split_sentences(report)
    assert sentences[0] == "EXAMINATION: Transthoracic echocardiogram, apical four-chamber view."
    assert sentences[1] == "HEART RATE: 70 bpm."
    # Two header lines, seven findings sentences (one per line of the generator), impression.
    assert len(sentences) == 10
    assert sentences[2:4] == [
        "FINDINGS: Left ventricular cavity size is normal.",
        "End-diastolic volume 119 mL, end-systolic volume 68 mL.",
    ]
    assert sentences[-1] == "IMPRESSION: Mildly reduced LV systolic function (EF 43%)."
