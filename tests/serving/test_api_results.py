"""The results JSON routes: STOW to worklist, results and their states, reprocess, case search."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.serving.api_service import (
    STOW_TYPE,
    Service,
    audit_events,
    running_service,
    stow_body,
    write_mr_study,
)

T0 = datetime(2024, 6, 4, 12, 0, tzinfo=UTC)


def payload(label: str, probability: float) -> dict[str, object]:
    """A result payload shaped as the study pipeline writes it (one MR result)."""
    return {
        "results": [
            {
                "modality": "MR",
                "prediction": {"label": label, "probability": probability},
                "similar_cases": [{"case_id": "case-0001", "score": 0.91}],
            }
        ],
        "disclaimer": "not for diagnostic use",
    }


PAYLOAD = payload("AD", 0.87)


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Three MR studies of three patients."""
    folder = tmp_path_factory.mktemp("studies")
    return {
        name: write_mr_study(folder, seed=name, patient_id=f"P-{name}", patient_name=patient)
        for name, patient in (("a", "Doe^John"), ("b", "Roe^Rita"), ("c", "Poe^Paul"))
    }


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    with running_service(tmp_path) as service:
        yield service


def study_uid(paths: list[Path]) -> str:
    return str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)


def ingest(service: Service, paths: list[Path]) -> str:
    for path in paths:
        result = service.context.ingestor.ingest_file(
            path, source=path.name, received_via="c-store"
        )
        assert result.status == "stored"
    return study_uid(paths)


def get(service: Service, path: str, user: str = "radiologist", **params: Any) -> Any:
    response = service.client.get(path, params=params, headers=service.auth(user))
    assert response.status_code == 200, response.text
    return response.json()


def test_a_radiologist_stows_a_study_and_finds_it(
    service: Service, studies: dict[str, list[Path]]
) -> None:
    paths = studies["a"]
    response = service.client.post(
        "/dicom-web/studies",
        content=stow_body(paths),
        headers={**service.auth("radiologist"), "Content-Type": STOW_TYPE},
    )
    assert response.status_code == 200, response.text
    uid = study_uid(paths)
    stored = service.context.store.study_files(uid)
    assert len(stored) == 2
    assert list(service.context.store.temp_dir().iterdir()) == []  # parts moved, none left

    [row] = get(service, "/dicom-web/studies", PatientName="doe*")
    assert row["0020000D"]["Value"] == [uid]
    assert row["00201208"]["Value"] == [2]  # NumberOfStudyRelatedInstances
    page = get(service, "/api/studies")
    assert page["total"] == 1 and page["disclaimer"].startswith("not for diagnostic use")
    [item] = page["items"]
    assert item["study_instance_uid"] == uid
    assert (item["patient_name"], item["patient_id"]) == ("Doe^John", "P-a")
    assert (item["study_date"], item["modalities"], item["number_of_instances"]) == (
        "20240604",
        ["MR"],
        2,
    )
    assert (item["job_state"], item["prediction"]) == (None, None)

    writes = audit_events(service, study=uid)
    assert [(e["user"], e["action"], e["outcome"]) for e in writes] == [
        ("radiologist", "stow.study", "stored")  # one entry per study, not per instance
    ]


def test_a_saved_result_is_served_with_the_disclaimer(
    service: Service, studies: dict[str, list[Path]]
) -> None:
    uid = ingest(service, studies["a"])
    catalog = service.context.catalog
    job = catalog.jobs.enqueue(uid, now=T0)
    assert job is not None and catalog.jobs.claim_next(now=T0) is not None
    catalog.jobs.finish(job.id, PAYLOAD, model_versions={"mri": "1.0.0"}, now=T0)

    result = get(service, f"/api/studies/{uid}/result")
    assert result["payload"] == PAYLOAD
    assert result["model_versions"] == {"mri": "1.0.0"}
    assert (result["job_id"], result["created_at"]) == (job.id, "2024-06-04T12:00:00Z")
    assert result["disclaimer"].startswith("not for diagnostic use")

    newer = payload("CN", 0.6)
    catalog.save_result(uid, newer, now=T0 + timedelta(hours=1))
    assert (
        get(service, f"/api/studies/{uid}/result")["payload"]["results"][0]["prediction"]["label"]
        == "CN"
    )
    [item] = get(service, "/api/studies")["items"]
    assert (item["job_state"], item["prediction"]) == ("done", {"label": "CN", "probability": 0.6})

    detail = get(service, f"/api/studies/{uid}")
    assert (detail["patient_name"], detail["patient_sex"], detail["modalities"]) == (
        "Doe^John",
        "F",
        ["MR"],
    )
    [series] = detail["series"]
    assert (series["modality"], series["series_number"], series["number_of_instances"]) == (
        "MR",
        1,
        2,
    )
    assert [(j["id"], j["state"], j["attempts"]) for j in detail["jobs"]] == [(job.id, "done", 1)]
    assert detail["result"]["payload"]["results"][0]["prediction"]["label"] == "CN"
    assert detail["disclaimer"].startswith("not for diagnostic use")


def test_the_result_route_says_where_processing_stands(
    service: Service, studies: dict[str, list[Path]]
) -> None:
    headers = service.auth("radiologist")
    missing = service.client.get("/api/studies/1.2.3/result", headers=headers)
    assert (missing.status_code, missing.json()) == (404, {"detail": "no such study"})
    assert service.client.get("/api/studies/1.2.3", headers=headers).status_code == 404

    uid = ingest(service, studies["a"])
    catalog = service.context.catalog

    def state() -> tuple[int, str]:
        response = service.client.get(f"/api/studies/{uid}/result", headers=headers)
        return response.status_code, response.json().get("state", response.json()["detail"])

    assert state() == (202, "waiting")
    job = catalog.jobs.enqueue(uid, now=T0)
    assert job is not None
    assert state() == (202, "received")
    catalog.jobs.claim_next(now=T0)
    assert state() == (202, "processing")
    catalog.jobs.fail(job.id, "model crashed", now=T0)
    assert state() == (404, "the study has no result: its processing failed")
    assert get(service, "/api/studies", status="failed")["total"] == 1


def test_the_worklist_filters_sorts_and_pages(
    service: Service, studies: dict[str, list[Path]]
) -> None:
    uids = {name: ingest(service, paths) for name, paths in studies.items()}
    catalog = service.context.catalog
    job = catalog.jobs.enqueue(uids["b"], now=T0)
    assert job is not None
    catalog.jobs.claim_next(now=T0)
    catalog.jobs.finish(job.id, PAYLOAD, now=T0)

    def listed(**params: Any) -> list[str]:
        page = get(service, "/api/studies", **params)
        names = {uid: name for name, uid in uids.items()}
        return [names[item["study_instance_uid"]] for item in page["items"]]

    assert listed() == ["c", "b", "a"]  # last received first
    assert listed(sort="received") == ["a", "b", "c"]
    assert listed(sort="received", limit=2, offset=1) == ["b", "c"]
    assert get(service, "/api/studies", limit=1)["total"] == 3
    assert listed(status="done") == ["b"]
    assert listed(status="pending", sort="received") == ["a", "c"]
    assert listed(status="processing") == []
    assert listed(modality="MR", sort="received") == ["a", "b", "c"]
    assert listed(modality="US") == []
    headers = service.auth("radiologist")
    for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"sort": "name"}, {"status": "x"}):
        assert service.client.get("/api/studies", params=bad, headers=headers).status_code == 422


def test_an_admin_requeues_a_processed_study(
    service: Service, studies: dict[str, list[Path]]
) -> None:
    uid = ingest(service, studies["a"])
    catalog = service.context.catalog
    first = catalog.jobs.enqueue(uid, now=T0)
    assert first is not None
    admin = service.auth("admin")
    later = datetime.now(UTC) + timedelta(minutes=1)  # the study is stable by then

    # A job is running: none is queued now, but the study is due again once it ends.
    catalog.jobs.claim_next(now=T0)
    response = service.client.post(f"/api/studies/{uid}/reprocess", headers=admin)
    assert response.status_code == 202
    assert response.json()["job"] is None
    assert catalog.jobs.due_studies(now=later, stable_after_s=1) == []
    catalog.jobs.finish(first.id, PAYLOAD, now=T0)
    assert catalog.jobs.due_studies(now=later, stable_after_s=1) == [uid]

    response = service.client.post(f"/api/studies/{uid}/reprocess", headers=admin)
    assert response.status_code == 202
    job = response.json()["job"]
    assert (job["state"], job["study_instance_uid"], job["attempts"]) == ("received", uid, 0)
    jobs = get(service, "/api/jobs", user="admin", state="received")["jobs"]
    assert [j["id"] for j in jobs] == [job["id"]]
    assert [j["state"] for j in get(service, "/api/jobs", user="admin", study=uid)["jobs"]] == [
        "done",
        "received",
    ]
    assert [j["id"] for j in get(service, "/api/jobs", user="admin", limit=1)["jobs"]] == [
        job["id"]
    ]
    missing = service.client.post("/api/studies/1.2.3/reprocess", headers=admin)
    assert missing.status_code == 404
    [event] = audit_events(service, action="studies.reprocess", study=uid, limit=1)
    assert (event["user"], event["outcome"]) == ("admin", "allowed")


def test_reprocess_goes_to_the_configured_pipeline(
    tmp_path: Path, studies: dict[str, list[Path]]
) -> None:
    calls: list[str] = []
    with running_service(tmp_path, reprocess=calls.append) as service:
        uid = ingest(service, studies["a"])
        response = service.client.post(
            f"/api/studies/{uid}/reprocess", headers=service.auth("admin")
        )
        assert (response.status_code, response.json()["detail"]) == (202, "queued")
        assert service.context.catalog.jobs.list_jobs() == []
    assert calls == [uid]


class FakeCaseSearch:
    """Answers every query with two de-identified cases and remembers the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def search_text(self, text: str, **options: Any) -> list[dict[str, Any]]:
        self.calls.append((text, options))
        if options["site"] == "nowhere":
            raise ValueError("site 'nowhere' is not in the index")
        hits = [
            {"case_id": "case-0007", "score": 0.82, "modality": "MR", "label": "AD"},
            {"case_id": "case-0003", "score": 0.64, "modality": "MR", "label": "CN"},
        ]
        return hits[: options["k"]]


def test_researchers_search_de_identified_cases(tmp_path: Path) -> None:
    search = FakeCaseSearch()
    with running_service(tmp_path, case_search=search) as service:
        body = get(service, "/api/cases/search", user="researcher", text="hippocampal atrophy")
        assert [hit["case_id"] for hit in body["hits"]] == ["case-0007", "case-0003"]
        assert body["k"] == 10  # settings.models.similar_cases
        assert body["disclaimer"].startswith("not for diagnostic use")
        get(service, "/api/cases/search", text="atrophy", k=1, modality="MR", label="AD", site="a")
        assert search.calls == [
            ("hippocampal atrophy", {"k": 10, "modality": None, "label": None, "site": None}),
            ("atrophy", {"k": 1, "modality": "MR", "label": "AD", "site": "a"}),
        ]
        headers = service.auth("researcher")
        bad = service.client.get(
            "/api/cases/search", params={"text": "x", "site": "nowhere"}, headers=headers
        )
        assert (bad.status_code, bad.json()) == (
            400,
            {"detail": "site 'nowhere' is not in the index"},
        )
        invalid: list[dict[str, str | int]] = [
            {"text": ""},
            {"text": "x", "k": 0},
            {"text": "x", "modality": "CT"},
        ]
        for params in invalid:
            response = service.client.get("/api/cases/search", params=params, headers=headers)
            assert response.status_code == 422
        events = audit_events(service, action="cases.search")
        assert {(e["user"], e["outcome"]) for e in events} == {
            ("researcher", "allowed"),
            ("radiologist", "allowed"),
        }


def test_case_search_without_an_index_is_503(service: Service) -> None:
    response = service.client.get(
        "/api/cases/search", params={"text": "atrophy"}, headers=service.auth("researcher")
    )
    assert response.status_code == 503
    assert response.json() == {"detail": "case search is not configured (no case index loaded)"}
