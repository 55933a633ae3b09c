"""Retrieval against the real Lance case index: modes, filters and exclusions end to end.

Thirty de-identified cases with hand-made 4-d embeddings, so every score is a known cosine:
case ``i`` has its image embedding at angle ``3i`` degrees in the first plane and its report
embedding at ``3 * (7i mod 30)`` degrees in the second. Case ``i`` is MR when ``i`` is even
(US when odd), from site ``S{i % 3}``, of patient ``P{i // 2}`` (two studies per patient).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from multimodal_rag.cases import DeidentifiedArchiveStudy, DeidentifiedCase, SearchHit
from multimodal_rag.index import CaseIndex
from multimodal_rag.retrieval import Query, Searcher, search_similar

SECRET = b"retrieval-index-test-secret-0123"
COUNT = 30


def angle_vector(degrees: float, *, plane: int) -> np.ndarray:
    """A unit vector at ``degrees`` in plane 0 (dims 0-1) or plane 1 (dims 2-3)."""
    vector = np.zeros(4, dtype=np.float32)
    radians = np.radians(degrees)
    vector[2 * plane : 2 * plane + 2] = (np.cos(radians), np.sin(radians))
    return vector


def make_case(number: int) -> DeidentifiedCase:
    row = {
        "study_instance_uid": f"1.2.826.0.1.3680043.8.498.{number}",
        "patient_id": f"P{number // 2:05d}",
        "site_id": f"S{number % 3}",
        "modality": "MR" if number % 2 == 0 else "US",
        "study_date": f"{2018 + number % 5}-03-01",
        "label": "AD" if number % 2 == 0 else "normal_ef",
    }
    study = DeidentifiedArchiveStudy.from_manifest_row(
        row, secret=SECRET, report_text=f"Report {number}."
    )
    return DeidentifiedCase.from_deidentified(
        study,
        image_embedding=angle_vector(3 * number, plane=0),
        text_embedding=angle_vector(3 * ((7 * number) % COUNT), plane=1),
    )


@pytest.fixture(scope="module")
def cases() -> list[DeidentifiedCase]:
    return [make_case(i) for i in range(COUNT)]


@pytest.fixture(scope="module")
def index(cases: list[DeidentifiedCase]) -> CaseIndex:
    index = CaseIndex.open("memory://retrieval", embedding_dim=4)
    index.add(cases)
    return index


def numbers(hits: Sequence[SearchHit], cases: list[DeidentifiedCase]) -> list[int]:
    """Case numbers of the hits (case ids are keyed hashes)."""
    number_of = {case.case_id: i for i, case in enumerate(cases)}
    return [number_of[hit.case_id] for hit in hits]


def cos(degrees: float) -> float:
    return float(np.cos(np.radians(degrees)))


def test_the_case_index_is_a_searcher(index: CaseIndex) -> None:
    # mypy checks this assignment: CaseIndex.search matches the Searcher protocol.
    searcher: Searcher = index
    assert len(index) == COUNT
    assert searcher.search(angle_vector(0, plane=0), column="image_embedding", k=1)[0].rank == 1


def test_image_to_image_with_a_site_filter_and_a_patient_exclusion(
    index: CaseIndex, cases: list[DeidentifiedCase]
) -> None:
    # Query: case 4's image (12 deg), without case 4 and patient P1 (cases 2 and 3).
    query = Query(
        image_embedding=cases[4].image_embedding,
        exclude_case_id=cases[4].case_id,
        exclude_patient=cases[3].patient_pseudonym,
    )
    hits = search_similar(
        query, index, mode="image_to_image", k=3, adaptive=False, filters={"site_id": "S0"}
    )
    # Site S0 is cases 0, 3, 6, 9, ...; 3 (3 deg away) is P1's, so 6 (6), 0 (12), 9 (15).
    assert numbers(hits, cases) == [6, 0, 9]
    assert [h.score for h in hits] == pytest.approx([cos(6), cos(12), cos(15)], abs=1e-5)
    assert [h.why for h in hits] == ["image 0.99", "image 0.98", "image 0.97"]
    assert [h.site_id for h in hits] == ["S0", "S0", "S0"]


def test_text_to_image_with_a_site_list_and_a_patient_exclusion(
    index: CaseIndex, cases: list[DeidentifiedCase]
) -> None:
    # A typed query embedded at 44 deg in the image plane. Unfiltered, cases 15 (1 deg away),
    # 14 (2) and 16 (4) come first; P7 (14, 15) is excluded and site S2 (14, 17) left out.
    query = Query(
        text_embedding=angle_vector(44, plane=0), exclude_patient=cases[14].patient_pseudonym
    )
    unfiltered = search_similar(query, index, mode="text_to_image", k=3, adaptive=False)
    assert numbers(unfiltered, cases) == [16, 13, 17]
    hits = search_similar(
        query,
        index,
        mode="text_to_image",
        k=3,
        adaptive=False,
        filters={"site_id": ["S0", "S1"]},
    )
    assert numbers(hits, cases) == [16, 13, 12]
    assert [h.score for h in hits] == pytest.approx([cos(4), cos(5), cos(8)], abs=1e-5)
    assert [h.why for h in hits] == ["image 1.00", "image 1.00", "image 0.99"]


def test_study_to_study_combines_image_and_report_within_a_modality(
    index: CaseIndex, cases: list[DeidentifiedCase]
) -> None:
    # Query: case 4 (image 12 deg, report 84 deg), excluding its patient P2 (cases 4, 5),
    # MR only (even cases). Each column returns 2k + 1 = 7 candidates: images 2, 6 (6 deg
    # away), 0, 8 (12), 10, 12, 14 (30); reports 8 (6), 12, 16, 20, 24, 28, 2 (42).
    # Case 16 has no image score (36 deg, not returned): the image floor cos 30 bounds it.
    query = Query.from_case(cases[4])
    hits = search_similar(
        query, index, mode="study_to_study", k=3, adaptive=False, filters={"modality": "MR"}
    )
    assert numbers(hits, cases) == [8, 12, 16]
    expected = [
        (cos(12) + cos(6)) / 2,
        (cos(24) + cos(12)) / 2,
        (cos(30) + cos(18)) / 2,
    ]
    assert [h.score for h in hits] == pytest.approx(expected, abs=1e-5)
    assert [h.why for h in hits] == [
        "image 0.98; report 0.99",
        "image 0.91; report 0.98",
        "image <=0.87; report 0.95",
    ]
    assert {h.modality for h in hits} == {"MR"}
