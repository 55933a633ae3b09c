"""StudyPipeline: a stored study to its result, its similar cases, its SR and the SR's delivery."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest

from imaging.bundle import LoadedBundle
from imaging.errors import CineLoopError
from multimodal_rag.cases import SearchHit
from multimodal_rag.draft import DraftReport, validate_citations
from multimodal_rag.embedding import create_embedder
from multimodal_rag.fusion import FusionModel
from serving.catalog import Catalog, utc_now
from serving.jobs import JobRunner
from serving.pipeline import (
    NoUsableSeriesError,
    SimilarCaseFinder,
    StudyClassifier,
    StudyNotFoundError,
    StudyPipeline,
)
from serving.settings import DestinationSettings, ModelSettings, Settings
from serving.store import StudyStore
from tests.dicom_validation import dciodvfy_errors
from tests.serving.pipeline_fixtures import (
    ECHO_STUDY_UID,
    MR_STUDY_UID,
    free_port,
    ingest,
    make_case_index,
    make_echo_bundle,
    make_mri_bundle,
    open_store,
    storescp,
    write_echo_study,
    write_mr_study,
)
from tests.synthetic_cases import make_study

MIXED_STUDY_UID = "1.2.826.0.1.3680043.8.498.7003"
LOCALIZER_STUDY_UID = "1.2.826.0.1.3680043.8.498.7004"
CASE_ID = re.compile(r"^2\.25\.\d+$")


@dataclass(frozen=True)
class World:
    store: StudyStore
    catalog: Catalog
    classifiers: dict[str, StudyClassifier]
    finder: SimilarCaseFinder
    mri_bundle: LoadedBundle
    root: Path

    def pipeline(self, destination: DestinationSettings, **options: Any) -> StudyPipeline:
        return StudyPipeline(
            self.store,
            classifiers=self.classifiers,
            finder=self.finder,
            destination=destination,
            explanations_dir=self.root / "results" / "explanations",
            sr_dir=self.root / "results" / "sr",
            **options,
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Tiny bundles, clip_tiny, 6 MR + 6 US indexed cases, and four studies in the store."""
    root = tmp_path_factory.mktemp("pipeline")
    mri_bundle = make_mri_bundle(root / "mri-bundle")
    classifiers = {
        "MR": StudyClassifier(mri_bundle),
        "US": StudyClassifier(make_echo_bundle(root / "echo-bundle")),
    }
    embedder = create_embedder("clip_tiny")
    finder = SimilarCaseFinder(embedder, make_case_index("memory://", embedder.embed_dim), k=5)
    store, catalog, ingestor = open_store(root)
    files = root / "incoming"
    ingest(ingestor, write_mr_study(files / "mr"))
    ingest(ingestor, [write_echo_study(files / "us.dcm")])
    mixed = make_study(study_instance_uid=MIXED_STUDY_UID)
    ingest(ingestor, write_mr_study(files / "mixed", study_instance_uid=MIXED_STUDY_UID, seed=1))
    ingest(ingestor, [write_echo_study(files / "mixed.dcm", study=mixed, seed=1)])
    localizer = write_mr_study(
        files / "localizer",
        study_instance_uid=LOCALIZER_STUDY_UID,
        slices=3,
        series_description="3-plane localizer",
    )
    ingest(ingestor, localizer)
    yield World(store, catalog, classifiers, finder, mri_bundle, root)
    catalog.close()


def hits_of(cases: list[dict[str, Any]]) -> list[SearchHit]:
    """The payload's similar cases as hits, for validate_citations."""
    return [
        SearchHit(
            case_id=c["case_id"],
            score=c["score"],
            rank=c["rank"],
            modality=c["modality"],
            label=c["label"],
            site_id=c["site_id"],
            report_text="",
            why=c["why"],
        )
        for c in cases
    ]


def test_a_mixed_study_gives_one_result_and_one_delivered_sr_per_modality(
    world: World, tmp_path: Path
) -> None:
    received = tmp_path / "pacs"
    with storescp(received) as port:
        pipeline = world.pipeline(DestinationSettings(kind="cstore", port=port, ae_title="PACS"))
        payload = pipeline.process(MIXED_STUDY_UID)

    text = json.dumps(payload)
    assert json.loads(text) == payload
    # No identity of the patient (Synthetic^Jane, SYN0001, ACC0001) in the result.
    assert "Synthetic" not in text and "SYN0001" not in text and "ACC0001" not in text
    assert payload["study_instance_uid"] == MIXED_STUDY_UID
    assert "not for diagnostic use" in payload["disclaimer"]
    assert payload["skipped"] == []
    assert payload["model_versions"] == {
        "resnet10_3d_tiny": "0.3.0",
        "r2plus1d_tiny_echo": "1.0.0",
        "embedder": world.finder.version,
    }
    mr, us = payload["results"]
    assert (mr["modality"], us["modality"]) == ("MR", "US")

    assert mr["prediction"]["label"] in ("AD", "CN")
    assert mr["prediction"]["positive_label"] == "AD"
    assert mr["prediction"]["positive_probability"] == mr["prediction"]["probabilities"]["AD"]
    assert mr["prediction"]["fused_probability"] is None
    assert us["prediction"]["label"] in ("reduced_ef", "normal_ef")
    assert 0.0 <= us["prediction"]["ef_percent"] <= 100.0
    assert mr["explanation"]["method"] == "gradcam"
    assert len(mr["explanation"]["files"]) == 3 and len(us["explanation"]["files"]) >= 4
    assert all(Path(f).is_file() for r in (mr, us) for f in r["explanation"]["files"])

    for result in (mr, us):
        cases = result["similar_cases"]
        assert 3 <= len(cases) <= 5
        assert [c["rank"] for c in cases] == list(range(1, len(cases) + 1))
        assert [c["score"] for c in cases] == sorted((c["score"] for c in cases), reverse=True)
        assert {c["modality"] for c in cases} == {result["modality"]}
        assert all(CASE_ID.match(c["case_id"]) and c["report_excerpt"] for c in cases)
        evidence = result["evidence"]
        assert evidence["positive_label"] == result["prediction"]["positive_label"]
        assert 0.0 <= evidence["probability"] <= 1.0
        draft = result["draft"]
        assert draft["text"].startswith("AI-generated draft; not for diagnostic use")
        assert draft["statements"] and draft["citations"]
        validate_citations(
            DraftReport(
                header="AI-generated draft; not for diagnostic use",
                prediction=draft["prediction"],
                statements=tuple(draft["statements"]),
                citations=draft["citations"],
            ),
            hits_of(cases),
        )

    delivered = {pydicom.dcmread(path).SOPInstanceUID: path for path in received.iterdir()}
    assert set(delivered) == {mr["sr"]["sop_instance_uid"], us["sr"]["sop_instance_uid"]}
    for result in (mr, us):
        sr = result["sr"]
        assert sr["sent_to"] == f"PACS@127.0.0.1:{port}" and sr["delivery_error"] is None
        kept = pydicom.dcmread(sr["path"])
        assert kept.StudyInstanceUID == MIXED_STUDY_UID
        assert kept.SOPInstanceUID == sr["sop_instance_uid"]
        assert kept.VerificationFlag == "UNVERIFIED"
        assert "not for diagnostic use" in kept.SeriesDescription
        assert dciodvfy_errors(Path(sr["path"])) == []
    us_sr = pydicom.dcmread(us["sr"]["path"])
    # The echo SR cites the one loop the model read.
    (evidence_item,) = us_sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert len(evidence_item.ReferencedSOPSequence) == 1


def test_a_refused_delivery_is_recorded_and_the_result_stands(world: World) -> None:
    nobody = DestinationSettings(kind="cstore", port=free_port(), ae_title="PACS")
    payload = world.pipeline(nobody).process(MR_STUDY_UID)

    (result,) = payload["results"]
    assert result["prediction"]["label"] in ("AD", "CN")
    sr = result["sr"]
    assert sr["sent_to"] is None
    assert sr["delivery_error"] == f"PACS@127.0.0.1:{nobody.port}: association failed"
    # Kept for a later re-send.
    assert pydicom.dcmread(sr["path"]).SOPInstanceUID == sr["sop_instance_uid"]


def test_fusion_combines_classifier_and_evidence_when_configured(world: World) -> None:
    fusion = FusionModel(intercept=0.0, classifier_weight=1.0, retrieval_weight=1.0)
    payload = world.pipeline(
        DestinationSettings(kind="none"), fusion={"US": fusion}, explain=False
    ).process(ECHO_STUDY_UID)

    (result,) = payload["results"]
    p = result["prediction"]["positive_probability"]
    e = result["evidence"]["probability"]
    logit = math.log(p / (1 - p)) + math.log(e / (1 - e))
    assert result["prediction"]["fused_probability"] == pytest.approx(1 / (1 + math.exp(-logit)))
    assert result["explanation"] is None
    assert result["sr"]["sent_to"] is None and result["sr"]["delivery_error"] is None
    kept = pydicom.dcmread(result["sr"]["path"])
    assert kept.StudyInstanceUID == ECHO_STUDY_UID


def test_a_localizer_only_study_fails_its_job_with_the_reason(world: World) -> None:
    pipeline = world.pipeline(DestinationSettings(kind="none"))
    with pytest.raises(NoUsableSeriesError, match="no series qualifies") as caught:
        pipeline.process(LOCALIZER_STUDY_UID)
    assert "locali" in caught.value.reason and "fewer than 48" in caught.value.reason
    with pytest.raises(StudyNotFoundError, match="no stored instance"):
        pipeline.process("1.2.3.4")

    job = world.catalog.jobs.enqueue(LOCALIZER_STUDY_UID, now=utc_now())
    assert job is not None
    ran = JobRunner(world.catalog, pipeline.process).run_once()
    assert ran is not None and ran.state == "failed"
    assert ran.reason is not None and ran.reason.startswith("NoUsableSeriesError: study")


def test_from_settings_loads_the_configured_models(world: World, tmp_path: Path) -> None:
    make_case_index(str(tmp_path / "case_index"), 64)
    settings = Settings(
        data_dir=tmp_path,
        models=ModelSettings(mri_bundle=world.mri_bundle.path, clip_config="clip_tiny"),
        destination=DestinationSettings(kind="none"),
    )
    pipeline = StudyPipeline.from_settings(settings, world.store)

    assert set(pipeline.classifiers) == {"MR"}
    assert pipeline.finder is not None
    assert pipeline.sr_dir == tmp_path / "results" / "sr"
    assert pipeline.destination == settings.destination
    payload = pipeline.process(MIXED_STUDY_UID)
    (result,) = payload["results"]
    assert result["modality"] == "MR" and len(result["similar_cases"]) >= 3
    assert payload["skipped"] == [{"modality": "US", "reason": "no US model configured"}]

    wrong = Settings(data_dir=tmp_path, models=ModelSettings(echo_bundle=world.mri_bundle.path))
    with pytest.raises(ValueError, match=r'"models\.echo_bundle" must name a US bundle'):
        StudyPipeline.from_settings(wrong, world.store)


class UnreadableFinder:
    """A finder whose study cannot be read."""

    version = "broken"

    def find(self, path: str | Path, modality: str, prediction: Any) -> Any:
        raise CineLoopError(path, "no usable frame")


def test_the_classification_stands_when_retrieval_cannot_read_the_study(world: World) -> None:
    pipeline = StudyPipeline(
        world.store,
        classifiers={"US": world.classifiers["US"]},
        finder=UnreadableFinder(),
        destination=DestinationSettings(kind="none"),
        explanations_dir=world.root / "results" / "explanations",
        sr_dir=world.root / "results" / "sr",
        explain=False,
    )
    (result,) = pipeline.process(ECHO_STUDY_UID)["results"]

    assert result["prediction"]["label"] in ("reduced_ef", "normal_ef")
    assert result["similar_cases"] == [] and result["draft"] is None
    assert result["warnings"] == ["similar cases unavailable: CineLoopError: no usable frame"]
    assert pydicom.dcmread(result["sr"]["path"]).StudyInstanceUID == ECHO_STUDY_UID
