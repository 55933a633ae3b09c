"""The HTTP application's gate: tokens, roles, the audit trail, error bodies, the schema."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.serving.api_service import (
    Service,
    audit_events,
    running_service,
    write_mr_study,
)

PATIENT_NAME = "Doe^John"


@pytest.fixture(scope="module")
def mr_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_mr_study(
        tmp_path_factory.mktemp("mr"), seed="security", patient_id="P1", patient_name=PATIENT_NAME
    )


@pytest.fixture
def service(tmp_path: Path, mr_files: list[Path]) -> Iterator[Service]:
    """The app with one stored MR study (two instances)."""
    with running_service(tmp_path) as service:
        for path in mr_files:
            result = service.context.ingestor.ingest_file(
                path, source=path.name, received_via="stow-rs"
            )
            assert result.status == "stored"
        yield service


def uids(path: Path) -> tuple[str, str, str]:
    header = pydicom.dcmread(path, stop_before_pixels=True)
    return str(header.StudyInstanceUID), str(header.SeriesInstanceUID), str(header.SOPInstanceUID)


def test_healthz_needs_no_token_and_says_only_ok(service: Service) -> None:
    response = service.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert audit_events(service, action="healthz") == []


def test_requests_without_a_valid_token_are_refused_and_audited(
    service: Service, mr_files: list[Path]
) -> None:
    study, series, instance = uids(mr_files[0])
    revoked = service.context.users.add("leaver", "radiologist")
    service.context.users.revoke("leaver")
    paths = [
        "/api/studies",
        f"/api/studies/{study}",
        f"/api/studies/{study}/result",
        "/api/audit",
        "/api/jobs",
        "/api/cases/search?text=atrophy",
        "/openapi.json",
        "/dicom-web/studies",
        f"/dicom-web/studies/{study}/series/{series}/instances/{instance}",
    ]
    attempts = [
        ({}, "Bearer"),
        ({"Authorization": "Bearer not-a-token"}, 'Bearer error="invalid_token"'),
        ({"Authorization": f"Basic {service.tokens['admin']}"}, "Bearer"),  # wrong scheme
        ({"Authorization": f"Bearer {revoked}"}, 'Bearer error="invalid_token"'),
    ]
    for path in paths:
        for headers, challenge in attempts:
            response = service.client.get(path, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert response.headers["WWW-Authenticate"] == challenge
            assert response.json() == {"detail": "a valid bearer token is required"}
    denied = [event for event in audit_events(service, limit=1000) if event["user"] is None]
    assert len(denied) == len(paths) * len(attempts)
    assert {event["outcome"] for event in denied} == {"denied"}
    assert {event["client_address"] for event in denied} == {"testclient"}
    by_path = {event["resource"]: event for event in denied}
    assert by_path[f"/api/studies/{study}"]["study_instance_uid"] == study
    assert by_path[f"/api/studies/{study}"]["action"] == "studies.read"
    assert by_path["/dicom-web/studies"]["action"] == "qido"
    assert by_path["/api/cases/search"]["action"] == "cases.search"  # no query string


def test_a_researcher_cannot_fetch_identified_data(service: Service, mr_files: list[Path]) -> None:
    study, series, instance = uids(mr_files[0])
    wado = f"/dicom-web/studies/{study}/series/{series}/instances/{instance}"
    refused = {
        "/api/studies": "studies.list",
        f"/api/studies/{study}": "studies.read",
        f"/api/studies/{study}/result": "results.read",
        "/dicom-web/studies?PatientName=Doe*": "qido",
        f"/dicom-web/studies/{study}/series": "qido",
        wado: "wado",
        f"{wado}/metadata": "wado",
        f"{wado}/rendered": "wado",
    }
    for path in refused:
        response = service.client.get(path, headers=service.auth("researcher"))
        assert response.status_code == 403, path
        assert response.json() == {"detail": "the researcher role may not do this"}
        assert "Doe" not in response.text
    events = audit_events(service, user="researcher")
    assert len(events) == len(refused)
    assert {event["outcome"] for event in events} == {"denied"}
    seen = {(event["resource"], event["action"], event["study_instance_uid"]) for event in events}
    expected = {
        (path.split("?")[0], action, study if study in path else None)
        for path, action in refused.items()
    }
    assert seen == expected
    assert not any("Doe" in str(event) for event in events)  # the QIDO filter is not kept


def test_a_researcher_cannot_store(service: Service) -> None:
    response = service.client.post(
        "/dicom-web/studies",
        content=b"--x--\r\n",
        headers={
            **service.auth("researcher"),
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=x',
        },
    )
    assert response.status_code == 403
    [event] = audit_events(service, user="researcher")
    assert (event["action"], event["outcome"]) == ("stow", "denied")


def test_admin_audit_query_lists_accesses_without_tokens(
    service: Service, mr_files: list[Path]
) -> None:
    study, series, instance = uids(mr_files[0])
    radiologist = service.auth("radiologist")
    assert service.client.get(f"/api/studies/{study}", headers=radiologist).status_code == 200
    wado = f"/dicom-web/studies/{study}/series/{series}/instances/{instance}/metadata"
    assert service.client.get(wado, headers=radiologist).status_code == 200
    assert service.client.get("/api/studies", headers=radiologist).status_code == 200

    response = service.client.get(
        "/api/audit", params={"user": "radiologist"}, headers=service.auth("admin")
    )
    assert response.status_code == 200
    for token in service.tokens.values():
        assert token not in response.text
    events = response.json()["events"]
    assert [(e["action"], e["resource"], e["study_instance_uid"]) for e in events] == [
        ("studies.list", "/api/studies", None),
        ("wado", wado, study),
        ("studies.read", f"/api/studies/{study}", study),
    ]  # newest first
    assert {(e["user"], e["client_address"], e["outcome"]) for e in events} == {
        ("radiologist", "testclient", "allowed")
    }
    assert [e["action"] for e in audit_events(service, study=study)] == ["wado", "studies.read"]
    assert len(audit_events(service, user="radiologist", limit=1)) == 1
    assert audit_events(service, since="2999-01-01T00:00:00") == []
    assert [e["action"] for e in audit_events(service, action="audit.read", limit=2)] == [
        "audit.read",
        "audit.read",
    ]


@pytest.mark.parametrize("user", ["radiologist", "researcher"])
def test_admin_routes_refuse_other_roles(service: Service, mr_files: list[Path], user: str) -> None:
    study = uids(mr_files[0])[0]
    headers = service.auth(user)
    assert service.client.get("/api/audit", headers=headers).status_code == 403
    assert service.client.get("/api/jobs", headers=headers).status_code == 403
    response = service.client.post(f"/api/studies/{study}/reprocess", headers=headers)
    assert response.status_code == 403
    assert service.context.catalog.jobs.list_jobs() == []


@pytest.mark.parametrize(
    "uid", ["1.2.abc", "1..2", ".1.2", "1" * 65, "1.2.3%20", "%2E%2E"], ids=str
)
def test_path_uids_are_validated(service: Service, uid: str) -> None:
    response = service.client.get(f"/api/studies/{uid}", headers=service.auth("radiologist"))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "uid"]


class FailingSearch:
    def search_text(self, text: str, **_: Any) -> list[dict[str, Any]]:
        raise RuntimeError(f"index broke on {PATIENT_NAME} at /srv/secret/index")


def test_an_unexpected_error_is_a_bare_500_audited_as_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with running_service(
        tmp_path, case_search=FailingSearch(), raise_server_exceptions=False
    ) as service:
        response = service.client.get(
            "/api/cases/search", params={"text": "atrophy"}, headers=service.auth("researcher")
        )
        assert response.status_code == 500
        assert response.json() == {"detail": "internal server error"}
        events = audit_events(service, user="researcher")
    assert [(e["action"], e["outcome"]) for e in events] == [
        ("cases.search", "error"),
        ("cases.search", "allowed"),
    ]
    assert "RuntimeError" in caplog.text
    assert "Doe" not in caplog.text and "secret" not in caplog.text
    for token in service.tokens.values():
        assert token not in caplog.text


def test_the_openapi_schema_declares_auth_and_error_responses(service: Service) -> None:
    assert service.client.get("/openapi.json").status_code == 401
    response = service.client.get("/openapi.json", headers=service.auth("researcher"))
    assert response.status_code == 200
    schema = response.json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert {"/healthz", "/api/studies/{uid}/result", "/dicom-web/studies"} <= set(schema["paths"])
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if path == "/healthz":
                assert "security" not in operation
                continue
            assert operation["security"] == [{"HTTPBearer": []}], (method, path)
            assert {"401", "403"} <= set(operation["responses"]), (method, path)
    study = schema["paths"]["/api/studies/{uid}"]["get"]
    assert {"200", "401", "403", "404", "422"} <= set(study["responses"])
    [uid] = [p for p in study["parameters"] if p["name"] == "uid"]
    assert uid["schema"]["pattern"] == r"^[0-9]+(\.[0-9]+)*$"
    assert uid["schema"]["maxLength"] == 64
    result = schema["paths"]["/api/studies/{uid}/result"]["get"]["responses"]
    assert result["202"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ProcessingStatus"
    )
