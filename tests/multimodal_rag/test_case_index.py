"""Case index: only de-identified cases enter; search, filters, upsert, delete, versions, FAISS."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from multimodal_rag.cases import DeidentifiedArchiveStudy, DeidentifiedCase
from multimodal_rag.index import (
    AnnParams,
    CaseFilter,
    CaseIndex,
    FaissServingIndex,
    HnswParams,
    StaleServingIndexError,
)

DIM = 16
SECRET = b"index-test-secret-0123456789"


def make_case(
    number: int, vector: np.ndarray, *, modality: str = "MR", label: str | None = "CN"
) -> DeidentifiedCase:
    row = {
        "study_instance_uid": f"1.2.826.0.1.3680043.8.498.{number}",
        "patient_id": f"P{number // 2:05d}",  # two studies per patient
        "site_id": f"S{number % 3}",
        "modality": modality,
        "study_date": f"{2018 + number % 5}-03-01",
        "label": label or "",
    }
    study = DeidentifiedArchiveStudy.from_manifest_row(
        row, secret=SECRET, report_text=f"Report {number}."
    )
    return DeidentifiedCase.from_deidentified(
        study, image_embedding=vector, text_embedding=vector[::-1]
    )


def make_cases(count: int, seed: int = 0) -> list[DeidentifiedCase]:
    """Cases in 8 clusters; even numbers MR labelled AD, odd ones US labelled normal_ef."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, DIM))
    vectors = centres[np.arange(count) % 8] + 0.3 * rng.standard_normal((count, DIM))
    return [
        make_case(
            i,
            vectors[i],
            modality="MR" if i % 2 == 0 else "US",
            label="AD" if i % 2 == 0 else "normal_ef",
        )
        for i in range(count)
    ]


@pytest.fixture
def index() -> CaseIndex:
    return CaseIndex.open("memory://", embedding_dim=DIM, ann_threshold=10_000)


@dataclasses.dataclass(frozen=True)
class LookAlike:
    """Every field of a DeidentifiedCase, built by hand."""

    case_id: str
    patient_pseudonym: str
    modality: str
    label: str | None
    site_id: str
    study_year: int | None
    report_text: str
    image_embedding: np.ndarray
    text_embedding: np.ndarray
    thumbnail_png: bytes
    ef_percent: float | None


def test_index_accepts_only_deidentified_cases(index: CaseIndex) -> None:
    case = make_cases(1)[0]
    fields = {f.name: getattr(case, f.name) for f in dataclasses.fields(LookAlike)}
    raw = pydicom.dcmread(str(get_testdata_file("MR_small.dcm", download=False)))

    for item in (fields, raw, LookAlike(**fields)):
        with pytest.raises(TypeError, match="accepts only DeidentifiedCase"):
            index.add([item])  # type: ignore[list-item]
        with pytest.raises(TypeError, match="accepts only DeidentifiedCase"):
            index.upsert([case, item])  # type: ignore[list-item]
    assert len(index) == 0


def test_exact_search_finds_each_case_first_with_its_fields(index: CaseIndex) -> None:
    cases = make_cases(40)
    index.add(cases)

    for case in cases[:5]:
        hits = index.search(case.image_embedding, k=3)
        assert hits[0].case_id == case.case_id
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert [h.rank for h in hits] == [1, 2, 3]
        assert hits[0].why == "image 1.00"
        assert (hits[0].modality, hits[0].label, hits[0].report_text) == (
            case.modality,
            case.label,
            case.report_text,
        )
    by_text = index.search(cases[7].text_embedding, column="text_embedding", k=1)
    assert by_text[0].case_id == cases[7].case_id
    assert by_text[0].why.startswith("report ")
    assert not index.has_ann_index()


def test_filters_apply_before_the_top_k(index: CaseIndex) -> None:
    cases = make_cases(40)
    index.add(cases)
    query = cases[1].image_embedding  # a US case

    hits = index.search(query, k=5, where={"modality": "MR", "study_year": [2018, 2019]})
    assert len(hits) == 5
    assert all(h.modality == "MR" for h in hits)
    assert cases[1].case_id not in {h.case_id for h in hits}
    excluded = index.search(query, k=40, exclude={"patient_pseudonym": cases[1].patient_pseudonym})
    assert {cases[0].case_id, cases[1].case_id}.isdisjoint(h.case_id for h in excluded)
    assert len(excluded) == 38
    assert index.count({"label": "AD"}) == 20
    assert index.count({"site_id": ("S0", "S1")}) == 27


def test_filter_values_cannot_inject_sql(index: CaseIndex) -> None:
    cases = make_cases(10)
    quoted = make_case(99, cases[0].image_embedding, label="O'Brien' OR '1'='1")
    index.add([*cases, quoted])

    assert index.count({"label": "AD' OR '1'='1"}) == 0
    hits = index.search(cases[0].image_embedding, k=10, where={"label": "O'Brien' OR '1'='1"})
    assert [h.case_id for h in hits] == [quoted.case_id]
    assert CaseFilter.create({"label": "a'b"}).to_sql() == "(label IN ('a''b'))"
    with pytest.raises(ValueError, match="keys must be in"):
        index.search(cases[0].image_embedding, where={"label = 'AD' OR 1=1 --": "x"})
    with pytest.raises(ValueError, match="takes integers"):
        index.count({"study_year": "2019 OR 1=1"})
    with pytest.raises(ValueError, match="takes strings"):
        index.count({"modality": 1})
    index.delete(["x') OR ('1'='1"])
    assert len(index) == 11


def test_upsert_delete_and_versions(index: CaseIndex) -> None:
    cases = make_cases(20)
    first = index.add(cases)
    with pytest.raises(ValueError, match="already in the index"):
        index.add(cases[:1])
    relabelled = dataclasses.replace(cases[0], label="CN")
    new_case = make_case(500, cases[3].image_embedding)

    upserted = index.upsert([relabelled, new_case])
    deleted = index.delete([cases[5].case_id])

    assert len(index) == 20
    assert index.count({"case_id": cases[0].case_id, "label": "CN"}) == 1
    assert index.count({"case_id": cases[5].case_id}) == 0
    assert first < upserted < deleted == index.version
    old = index.checkout(first)
    assert (len(old), old.count({"label": "CN"}), old.count({"case_id": cases[5].case_id})) == (
        20,
        0,
        1,
    )
    with pytest.raises(ValueError, match="read-only"):
        old.delete([cases[0].case_id])
    with pytest.raises(ValueError, match="No version"):
        index.checkout(999)
    index.restore(first)
    assert index.count({"case_id": cases[5].case_id}) == 1
    assert index.version > deleted


def test_reopening_a_directory_keeps_rows_and_checks_the_dimension(tmp_path: Path) -> None:
    CaseIndex.open(tmp_path / "case_index", embedding_dim=DIM).add(make_cases(4))

    assert len(CaseIndex.open(tmp_path / "case_index", embedding_dim=DIM)) == 4
    with pytest.raises(ValueError, match="holds 16-d embeddings"):
        CaseIndex.open(tmp_path / "case_index", embedding_dim=32)
    with pytest.raises(ValueError, match="length 16"):
        CaseIndex.open(tmp_path / "case_index", embedding_dim=DIM).search(np.ones(8))


def test_ann_index_is_built_past_the_threshold_and_results_stay_right() -> None:
    index = CaseIndex.open("memory://", embedding_dim=DIM, ann_threshold=300, ann=AnnParams())
    cases = make_cases(400)
    index.add(cases[:200])
    assert not index.has_ann_index()

    index.add(cases[200:])

    assert index.has_ann_index("image_embedding") and index.has_ann_index("text_embedding")
    for case in cases[::50]:
        assert index.search(case.image_embedding, k=1)[0].case_id == case.case_id
        hits = index.search(case.image_embedding, k=10, where={"modality": "US"})
        exact = index.search(case.image_embedding, k=10, where={"modality": "US"}, exact=True)
        assert all(h.modality == "US" for h in hits) and len(hits) == 10
        assert len({h.case_id for h in hits} & {h.case_id for h in exact}) >= 9


@pytest.fixture
def filled(index: CaseIndex) -> tuple[CaseIndex, list[DeidentifiedCase]]:
    cases = make_cases(120)
    index.add(cases)
    return index, cases


@pytest.mark.parametrize("exact_below", [0, 10_000])
def test_faiss_serving_index_agrees_with_lance_and_keeps_filters(
    filled: tuple[CaseIndex, list[DeidentifiedCase]], exact_below: int
) -> None:
    index, cases = filled
    serving = FaissServingIndex.build(index, params=HnswParams(exact_below=exact_below))

    for case in cases[:10]:
        lance = [h.case_id for h in index.search(case.image_embedding, k=5, exact=True)]
        hits = serving.search(case.image_embedding, index, k=5)
        assert [h.case_id for h in hits][:1] == lance[:1]
        assert len(set(lance) & {h.case_id for h in hits}) >= 4
        filtered = serving.search(case.image_embedding, index, k=5, where={"label": "normal_ef"})
        assert len(filtered) == 5 and all(h.label == "normal_ef" for h in filtered)
    assert serving.search_ids(cases[0].image_embedding, where={"label": "nobody"}) == []


def test_faiss_round_trip_checksum_and_stale_version(
    filled: tuple[CaseIndex, list[DeidentifiedCase]], tmp_path: Path
) -> None:
    index, cases = filled
    path = tmp_path / "serving" / "image.faiss"
    built = FaissServingIndex.load_or_build(path, index)
    sidecar = json.loads((tmp_path / "serving" / "image.faiss.json").read_text())
    assert sidecar["table_version"] == index.version and sidecar["rows"] == 120
    query = cases[3].image_embedding

    loaded = FaissServingIndex.load(path, index)
    assert loaded.search_ids(query, k=5) == built.search_ids(query, k=5)
    assert not list(path.parent.glob("*.tmp"))

    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StaleServingIndexError, match="sha256"):
        FaissServingIndex.load(path, index)
    rebuilt = FaissServingIndex.load_or_build(path, index)
    assert rebuilt.search_ids(query, k=5) == built.search_ids(query, k=5)

    index.add([make_case(1000, query)])
    with pytest.raises(StaleServingIndexError, match="table version"):
        FaissServingIndex.load(path, index)
    fresh = FaissServingIndex.load_or_build(path, index)
    assert fresh.table_version == index.version and len(fresh) == 121
    assert FaissServingIndex.load(path, index).table_version == index.version
