"""The serving searcher: FAISS graphs past the threshold, the Lance table below it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from multimodal_rag.index import CaseIndex, ServingSearcher
from multimodal_rag.retrieval import Query, search_similar
from tests.multimodal_rag.test_case_index import DIM, make_cases


def filled_index(path: Path, count: int = 64) -> CaseIndex:
    index = CaseIndex.open(path, embedding_dim=DIM, ann_threshold=10_000)
    index.add(make_cases(count))
    return index


def test_small_tables_are_searched_in_lance(tmp_path: Path) -> None:
    searcher = ServingSearcher.open(filled_index(tmp_path / "idx"), tmp_path / "serving")
    assert searcher.serving_indexes == {}
    assert not (tmp_path / "serving").exists()


def test_large_tables_are_served_by_faiss_with_the_same_hits(tmp_path: Path) -> None:
    index = filled_index(tmp_path / "idx")
    searcher = ServingSearcher.open(index, tmp_path / "serving", faiss_threshold=32)
    assert set(searcher.serving_indexes) == {"image_embedding", "text_embedding"}
    assert sorted(p.name for p in (tmp_path / "serving").glob("*.faiss")) == [
        "image_embedding.faiss", "text_embedding.faiss",
    ]  # fmt: skip
    query = make_cases(1, seed=7)[0].image_embedding
    for column in ("image_embedding", "text_embedding"):
        served = searcher.search(query, column=column, k=5, where={"modality": "MR"})
        exact = index.search(query, column=column, k=5, where={"modality": "MR"}, exact=True)
        assert [h.case_id for h in served] == [h.case_id for h in exact]
        assert np.allclose([h.score for h in served], [h.score for h in exact], atol=1e-5)
        assert {h.modality for h in served} == {"MR"}
    # Retrieval runs on it unchanged (it is a Searcher).
    hits = search_similar(
        Query(image_embedding=query), searcher, mode="image_to_image", k=4, adaptive=False
    )
    assert len(hits) == 4 and hits[0].score >= hits[-1].score


def test_the_graphs_are_rebuilt_when_the_table_moves_on(tmp_path: Path) -> None:
    index = filled_index(tmp_path / "idx")
    first = ServingSearcher.open(index, tmp_path / "serving", faiss_threshold=32)
    index.delete([first.serving_indexes["image_embedding"].case_ids[0]])
    reopened = ServingSearcher.open(index, tmp_path / "serving", faiss_threshold=32)
    graph = reopened.serving_indexes["image_embedding"]
    assert graph.table_version == index.version and len(graph) == 63
