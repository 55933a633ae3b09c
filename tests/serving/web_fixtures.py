"""A seeded service for the web page: an MR and an echo study with results, heat maps, cases.

:func:`seeded_web_service` builds what the page needs without models or Ray: two
catalogued studies (synthetic patients), a result for each shaped as the study pipeline
writes it (prediction, explanation with its viewer file, similar cases from the real
``hit_summary`` and an extractive draft citing them), a LanceDB case index of
de-identified cases with thumbnails behind the real :class:`IndexCaseLookup`, a text
search over the same cases, and one user per role. Engineering fixtures, synthetic
only; nothing here is for diagnostic use.

Run it as a module to serve the seeded app on loopback for a browser::

    .venv/bin/python -m tests.serving.web_fixtures --data-dir /tmp/web --port 8765

It prints one JSON line (``url``, ``tokens``, ``studies``) and serves until stopped.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from imaging.explain import Explanation
from imaging.synthetic.us_dicom import write_us_multiframe
from imaging.viewer_file import save_viewer
from multimodal_rag.cases import (
    DeidentifiedArchiveStudy,
    DeidentifiedCase,
    SearchHit,
    make_thumbnail_png,
)
from multimodal_rag.draft import draft_report
from multimodal_rag.index import CaseIndex
from serving.api.app import create_app
from serving.api.context import ServiceContext
from serving.pipeline.similar_cases import SimilarCases, hit_summary
from serving.settings import Settings
from serving.web.case_lookup import CASE_INDEX_DIR, IndexCaseLookup
from tests.serving.api_service import write_mr_study
from tests.synthetic_cases import make_cine, make_echo_study, make_patient

# Network-input grids of the seeded heat maps: MR (X, Y, Z), echo (T, H, W).
MR_SHAPE = (12, 10, 8)
US_SHAPE = (6, 16, 20)
US_FRAME_INTERVAL_MS = 66.667
EMBEDDING_DIM = 8
SECRET = b"web-fixture-secret-0123456789"
T0 = datetime(2024, 6, 4, 12, 0, tzinfo=UTC)
ROLES = ("radiologist", "researcher", "admin")
# (modality, positive) -> (label, report after "Case N.")
REPORTS = {
    ("MR", True): ("AD", "Moderate hippocampal atrophy. Widened temporal horns."),
    ("MR", False): ("CN", "No atrophy for age. Ventricles normal in size."),
    ("US", True): ("reduced_ef", "Reduced ejection fraction with dilated left ventricle."),
    ("US", False): ("normal_ef", "Normal left ventricular size and ejection fraction."),
}


@dataclass
class WebService:
    """The seeded app, its context, a token per role and the two studies' UIDs."""

    context: ServiceContext
    client: TestClient
    tokens: dict[str, str]
    mr_uid: str
    us_uid: str
    cases: list[DeidentifiedCase]

    def auth(self, user: str) -> dict[str, str]:
        """The Authorization header of ``user`` (``radiologist``, ``researcher``, ``admin``)."""
        return {"Authorization": f"Bearer {self.tokens[user]}"}


class CaseTextSearch:
    """The app's ``CaseSearch`` over the seeded cases: ranked by shared words with ``text``."""

    def __init__(self, cases: list[DeidentifiedCase]) -> None:
        self._cases = cases

    def search_text(
        self, text: str, *, k: int, modality: str | None, label: str | None, site: str | None
    ) -> list[dict[str, Any]]:
        """Hit summaries, best first (score: share of the query's words in the report)."""
        words = {w.strip(".,").lower() for w in text.split() if w.strip(".,")}
        scored = []
        for case in self._cases:
            if (modality and case.modality != modality) or (label and case.label != label):
                continue
            if site and case.site_id != site:
                continue
            report = {w.strip(".,").lower() for w in case.report_text.split()}
            scored.append((len(words & report) / max(len(words), 1), case))
        scored.sort(key=lambda item: (-item[0], item[1].case_id))
        return [
            hit_summary(_hit(case, score, rank, query_words=words))
            for rank, (score, case) in enumerate(scored[:k], start=1)
        ]


def make_index_cases() -> list[DeidentifiedCase]:
    """Six MR and six echo de-identified cases with reports and thumbnails."""
    rng = np.random.default_rng(7)
    cases = []
    for number in range(12):
        modality = "MR" if number % 2 == 0 else "US"
        positive = number % 4 < 2
        label, report = REPORTS[(modality, positive)]
        report = f"Case {number}. {report}"
        row = {
            "study_instance_uid": f"1.2.826.0.1.3680043.8.498.77{number}",
            "patient_id": f"ARCH{number:04d}",
            "site_id": f"site-{'abc'[number % 3]}",
            "modality": modality,
            "study_date": f"{2018 + number % 5}-03-01",
            "label": label,
            "ef": "" if modality == "MR" else ("32" if positive else "61"),
        }
        study = DeidentifiedArchiveStudy.from_manifest_row(row, secret=SECRET, report_text=report)
        vector = rng.standard_normal(EMBEDDING_DIM)
        thumbnail = make_thumbnail_png(rng.random((24, 32)).astype(np.float32))
        cases.append(
            DeidentifiedCase.from_deidentified(
                study, image_embedding=vector, text_embedding=vector[::-1], thumbnail_png=thumbnail
            )
        )
    return cases


def mr_explanation() -> Explanation:
    """An MR heat map whose image is bright in one corner: patient's left, anterior, superior.

    In RAS that is X = 0, Y = Y-1, Z = Z-1; the heat peaks at the volume's centre.
    """
    image = np.zeros(MR_SHAPE, dtype=np.float32)
    image[:3, -3:, -3:] = 1.0  # over 1% of the voxels: above the display window's low end
    heat = np.zeros(MR_SHAPE, dtype=np.float32)
    x, y, z = (n // 2 for n in MR_SHAPE)
    heat[x - 1 : x + 2, y - 1 : y + 2, z - 1 : z + 2] = 0.5
    heat[x, y, z] = 1.0
    return Explanation("gradcam", heat, image, 0, "AD", "MR", "backbone.layer3")


def us_explanation() -> Explanation:
    """An echo heat map over a clip whose frame ``t`` is bright in its top-left ``t + 1`` rows."""
    image = np.zeros(US_SHAPE, dtype=np.float32)
    for t in range(US_SHAPE[0]):
        image[t, : t + 1, :4] = 1.0
    heat = np.zeros(US_SHAPE, dtype=np.float32)
    heat[2, 4:8, 5:10] = 1.0
    return Explanation("gradcam", heat, image, 1, "reduced_ef", "US", "backbone.layer2")


def result_payload(
    modality: str, explanation: Explanation, viewer: Path, cases: list[DeidentifiedCase]
) -> dict[str, Any]:
    """One study's result payload, shaped as ``StudyPipeline.process`` writes it."""
    positive = "AD" if modality == "MR" else "reduced_ef"
    negative = "CN" if modality == "MR" else "normal_ef"
    probability = 0.83 if modality == "MR" else 0.71
    prediction: dict[str, Any] = {
        "task": "classification" if modality == "MR" else "ef_multitask",
        "label": positive,
        "probability": probability,
        "probabilities": {negative: 1 - probability, positive: probability},
        "positive_label": positive,
        "positive_probability": probability,
        "fused_probability": probability - 0.05,
        "ef_percent": None if modality == "MR" else 34.5,
        "temperature": 1.3,
    }
    query = {"atrophy", "hippocampal"} if modality == "MR" else {"reduced", "ejection"}
    hits = [
        _hit(case, score=0.95 - 0.04 * rank, rank=rank, query_words=query)
        for rank, case in enumerate((c for c in cases if c.modality == modality), start=1)
    ]
    draft = draft_report(prediction, hits, max_sentences=3)
    similar = SimilarCases(modality, tuple(hits), positive, 0.6, draft).to_dict()
    return {
        "modality": modality,
        "series_instance_uid": "2.25.1",
        "series_description": "T1 MPRAGE" if modality == "MR" else "A4C",
        "prediction": prediction,
        "model": {
            "name": "mri-ad" if modality == "MR" else "echo-ef",
            "version": "0.1.0",
            "architecture": "resnet10_3d_tiny" if modality == "MR" else "r2plus1d_tiny_echo",
        },
        "explanation": {
            "method": explanation.method,
            "target": explanation.target_name,
            "target_index": explanation.target_index,
            "target_layer": explanation.target_layer,
            "shape": list(explanation.heatmap.shape),
            "peak": list(explanation.peak),
            "files": [],
            "viewer": str(viewer),
        },
        **similar,
        "sr": None,
        "warnings": [],
    }


def seed_study_results(
    context: ServiceContext, mr_uid: str, us_uid: str, cases: list[DeidentifiedCase]
) -> None:
    """Viewer files under ``data_dir/results`` and a result per study in the catalog."""
    results = context.settings.data_dir / "results" / "explanations"
    for uid, modality, explanation, interval in (
        (mr_uid, "MR", mr_explanation(), None),
        (us_uid, "US", us_explanation(), US_FRAME_INTERVAL_MS),
    ):
        viewer = save_viewer(
            explanation, results / uid / modality, prefix="seed", frame_interval_ms=interval
        )
        payload = {
            "study_instance_uid": uid,
            "disclaimer": "not for diagnostic use",
            "results": [result_payload(modality, explanation, viewer.resolve(), cases)],
            "skipped": [],
        }
        context.catalog.save_result(uid, payload, model_versions={}, now=T0)


@contextmanager
def seeded_web_service(tmp_path: Path) -> Iterator[WebService]:
    """The app over a new data folder with both studies, their results and the case index."""
    context, tokens, mr_uid, us_uid, cases = build_seeded_context(tmp_path / "data")
    client = TestClient(create_app(context))
    try:
        yield WebService(context, client, tokens, mr_uid, us_uid, cases)
    finally:
        client.close()
        context.close()


def build_seeded_context(
    data_dir: Path,
) -> tuple[ServiceContext, dict[str, str], str, str, list[DeidentifiedCase]]:
    """(context, token per role, MR study UID, echo study UID, indexed cases) in ``data_dir``."""
    cases = make_index_cases()
    index = CaseIndex.open(data_dir / CASE_INDEX_DIR, embedding_dim=EMBEDDING_DIM)
    index.upsert(cases)
    settings = Settings(data_dir=data_dir)
    context = ServiceContext.from_settings(
        settings,
        case_search=CaseTextSearch(cases),
        cases=IndexCaseLookup(data_dir / CASE_INDEX_DIR),
    )
    tokens = {role: context.users.add(role, role) for role in ROLES}
    sources = data_dir.parent / "sources"
    mr_files = write_mr_study(
        sources, seed="web-mr", patient_id="WEB-MR-1", patient_name="Synthetic^Mara"
    )
    echo_study = make_echo_study(
        patient=make_patient(patient_id="WEB-US-1", patient_name="Synthetic^Ugo"),
        study_instance_uid="2.25.424242424242",
    )
    us_file = write_us_multiframe(
        make_cine(echo_study, number_of_frames=4),
        echo_study,
        path=sources / "web-us" / "loop.dcm",
        encoding="monochrome2",
        uid_seed="web-us",
    )
    for path in [*mr_files, us_file]:
        result = context.ingestor.ingest_file(path, source=path.name, received_via="c-store")
        if result.status != "stored":
            raise RuntimeError(f"seeding {path.name}: {result.status}")
    mr_uid = _study_uid(mr_files[0])
    us_uid = echo_study.study_instance_uid
    seed_study_results(context, mr_uid, us_uid, cases)
    return context, tokens, mr_uid, us_uid, cases


def _study_uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def _hit(case: DeidentifiedCase, score: float, rank: int, *, query_words: set[str]) -> SearchHit:
    sentences = [s.strip() + "." for s in case.report_text.split(".") if s.strip()]
    matched = tuple(
        s for s in sentences if query_words & {w.strip(".,").lower() for w in s.split()}
    )
    return SearchHit(
        case_id=case.case_id,
        score=score,
        rank=rank,
        modality=case.modality,
        label=case.label,
        site_id=case.site_id,
        report_text=case.report_text,
        why=f"image {score:.2f}",
        matched_sentences=matched,
    )


def main() -> None:
    """Serve the seeded app on 127.0.0.1 (for trying the page in a browser)."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8765)
    arguments = parser.parse_args()
    context, tokens, mr_uid, us_uid, _ = build_seeded_context(arguments.data_dir)
    url = f"http://127.0.0.1:{arguments.port}"
    studies = {"MR": mr_uid, "US": us_uid}
    print(json.dumps({"url": url, "tokens": tokens, "studies": studies}), flush=True)
    try:
        uvicorn.run(create_app(context), host="127.0.0.1", port=arguments.port, log_level="warning")
    finally:
        context.close()


if __name__ == "__main__":
    main()
