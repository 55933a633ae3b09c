"""Browser sessions: sign-in, the cookie on the API, sign-out, expiry, revocation, the shell."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from serving.api.security import Gatekeeper
from serving.auth import Principal, Role, UserDirectory, hash_token
from serving.catalog import Catalog, utc_now
from serving.catalog.tables import WebSession
from serving.ingest import InstanceIngestor
from serving.store import StudyStore
from serving.web.routes import CONTENT_SECURITY_POLICY, create_ui_router
from serving.web.sessions import SESSION_COOKIE, SessionStore
from tests.serving.api_service import Service, audit_events, running_service

JSON = {"Content-Type": "application/json"}
T_PG = datetime(2024, 6, 4, 12, 0, tzinfo=UTC)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    with running_service(tmp_path) as service:
        yield service


def sign_in(service: Service, user: str) -> str:
    """Sign ``user`` in; the session id the cookie now holds."""
    response = service.client.post("/ui/api/session", json={"token": service.tokens[user]})
    assert response.status_code == 200, response.text
    return response.cookies[SESSION_COOKIE]


def session_rows(service: Service) -> list[WebSession]:
    with service.context.catalog.read_session() as session:
        return list(session.scalars(select(WebSession)))


def test_sign_in_sets_a_strict_httponly_cookie_and_stores_only_its_hash(
    service: Service,
) -> None:
    before = utc_now()
    response = service.client.post("/ui/api/session", json={"token": service.tokens["radiologist"]})

    assert response.status_code == 200
    body = response.json()
    assert body["user"] == "radiologist" and body["role"] == "radiologist"
    expires = datetime.fromisoformat(body["expires_at"])
    assert before + timedelta(hours=8) <= expires <= utc_now() + timedelta(hours=8)
    cookie = response.headers["set-cookie"]
    session_id = response.cookies[SESSION_COOKIE]
    assert len(session_id) >= 43  # token_urlsafe(32)
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/", "max-age=28800"} <= attributes
    assert "secure" not in attributes  # plain http here; see the https test
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY

    [row] = session_rows(service)
    assert row.session_hash == hash_token(session_id) != session_id
    with service.context.catalog.read_session() as session:
        dump = " ".join(str(value) for value in session.execute(text("SELECT * FROM web_sessions")))
    assert session_id not in dump and service.tokens["radiologist"] not in dump
    [event] = audit_events(service, action="ui.sign_in")
    assert (event["user"], event["outcome"]) == ("radiologist", "allowed")


def test_the_cookie_opens_the_api_as_its_user_until_sign_out(service: Service) -> None:
    client = service.client
    sign_in(service, "radiologist")

    assert client.get("/api/studies").status_code == 200
    assert client.get("/ui/api/session").json()["user"] == "radiologist"
    [allowed] = audit_events(service, action="studies.list")
    assert (allowed["user"], allowed["outcome"]) == ("radiologist", "allowed")

    old_cookie = client.cookies[SESSION_COOKIE]
    response = client.delete("/ui/api/session", headers=JSON)
    assert response.status_code == 204
    assert 'mmdx_session=""' in response.headers["set-cookie"]
    assert "max-age=0" in response.headers["set-cookie"].lower()
    assert session_rows(service) == []
    [event] = audit_events(service, action="ui.sign_out")
    assert (event["user"], event["outcome"]) == ("radiologist", "allowed")

    client.cookies.set(SESSION_COOKIE, old_cookie)  # a copy kept by an attacker
    assert client.get("/api/studies").status_code == 401
    assert client.get("/ui/api/session").status_code == 401


def test_wrong_token_no_credential_and_a_forged_cookie_get_401_audited(
    service: Service,
) -> None:
    client = service.client
    response = client.post("/ui/api/session", json={"token": "not-a-token"})
    assert response.status_code == 401 and SESSION_COOKIE not in response.cookies
    [event] = audit_events(service, action="ui.sign_in")
    assert (event["user"], event["outcome"]) == (None, "denied")

    assert client.get("/api/studies").status_code == 401
    client.cookies.set(SESSION_COOKIE, "forged-session-id")
    response = client.get("/api/studies")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    denied = audit_events(service, action="studies.list")
    assert [(e["user"], e["outcome"]) for e in denied] == [(None, "denied"), (None, "denied")]


def test_an_expired_session_or_a_revoked_user_is_refused_at_once(service: Service) -> None:
    client = service.client
    store = SessionStore(service.context.catalog)
    old_id, _ = store.create(
        Principal("radiologist", Role.RADIOLOGIST), now=utc_now() - timedelta(hours=8, seconds=1)
    )
    client.cookies.set(SESSION_COOKIE, old_id)
    assert client.get("/api/studies").status_code == 401
    assert client.get("/ui/api/session").status_code == 401

    sign_in(service, "radiologist")
    assert client.get("/api/studies").status_code == 200
    service.context.users.revoke("radiologist")
    assert client.get("/api/studies").status_code == 401
    assert client.get("/ui/api/session").status_code == 401
    # Signing in purged the expired row; the revoked user's row stays but opens nothing.
    assert len(session_rows(service)) == 1


def test_a_researcher_session_is_refused_identified_data_but_reads_cases(
    service: Service,
) -> None:
    client = service.client
    assert sign_in(service, "researcher")
    assert client.get("/ui/api/session").json()["role"] == "researcher"

    response = client.get("/api/studies")
    assert response.status_code == 403
    [event] = audit_events(service, action="studies.list")
    assert (event["user"], event["outcome"]) == ("researcher", "denied")
    # Case search is open to researchers (503 here: no case index is configured).
    assert client.get("/api/cases/search", params={"text": "atrophy"}).status_code == 503


def test_a_bearer_header_wins_over_the_cookie(service: Service) -> None:
    sign_in(service, "radiologist")
    response = service.client.get("/api/studies", headers=service.auth("researcher"))
    assert response.status_code == 403


def test_mutations_must_be_json(service: Service) -> None:
    client = service.client
    token = service.tokens["radiologist"]
    form = client.post("/ui/api/session", data={"token": token})
    assert form.status_code == 415
    assert SESSION_COOKIE not in form.cookies
    sign_in(service, "radiologist")
    assert client.delete("/ui/api/session").status_code == 415
    assert len(session_rows(service)) == 1
    # Any change made with the cookie: a cross-site form could not send JSON.
    response = client.post(
        "/api/feedback",
        content=b"study_instance_uid=1.2.3&target=prediction&verdict=agree",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415
    [event] = audit_events(service, action="feedback.write")
    assert (event["user"], event["outcome"]) == ("radiologist", "denied")


def test_the_cookie_is_secure_over_https(tmp_path: Path) -> None:
    with running_service(tmp_path) as service:
        client = TestClient(service.client.app, base_url="https://testserver")
        response = client.post("/ui/api/session", json={"token": service.tokens["admin"]})
        assert response.status_code == 200
        assert "secure" in response.headers["set-cookie"].lower()
        assert client.get("/api/studies").status_code == 200


def test_the_shell_is_served_without_credentials_and_only_from_its_folder(
    service: Service, tmp_path: Path
) -> None:
    static = tmp_path / "static"
    (static / "modules").mkdir(parents=True)
    (static / "index.html").write_text("<!doctype html><title>mmdx</title>")
    (static / "app.js").write_text("export {};")
    (static / "modules" / "cases.js").write_text("export const cases = 1;")
    (static / ".hidden").write_text("no")
    (tmp_path / "secret.txt").write_text("outside")
    (static / "link.js").symlink_to(tmp_path / "secret.txt")
    context = service.context
    app = FastAPI()
    gate = Gatekeeper(context.users, context.audit)
    app.include_router(
        create_ui_router(context, gate, SessionStore(context.catalog), static_dir=static)
    )
    client = TestClient(app)

    root = client.get("/", follow_redirects=False)
    assert (root.status_code, root.headers["location"]) == (307, "/ui/")
    page = client.get("/ui/")
    assert page.status_code == 200 and "<title>mmdx</title>" in page.text
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert page.headers["x-frame-options"] == "DENY"
    script = client.get("/ui/static/app.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert client.get("/ui/static/modules/cases.js").text == "export const cases = 1;"
    for name in (
        ".hidden",
        "link.js",
        "..%2Fsecret.txt",
        "modules/..%2F..%2Fsecret.txt",
        "nope.js",
    ):
        assert client.get(f"/ui/static/{name}").status_code == 404, name


def test_opening_an_older_catalog_adds_the_session_and_feedback_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    catalog = Catalog.open(url)
    with catalog.write_session() as session:
        session.execute(text("DROP TABLE web_sessions"))
        session.execute(text("DROP TABLE feedback"))
    catalog.close()

    catalog = Catalog.open(url)
    try:
        with catalog.read_session() as session:
            rows = session.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'"))
            tables = {name for (name,) in rows}
        assert {"web_sessions", "feedback", "users", "studies"} <= tables
        assert SessionStore(catalog).lookup("anything") is None
    finally:
        catalog.close()


@pytest.mark.integration
def test_sessions_and_feedback_on_postgresql(tmp_path: Path) -> None:
    from serving.web.feedback import FeedbackStore
    from serving.web.models import FeedbackRequest
    from tests.integration.postgres import postgres_server, unavailable_reason
    from tests.serving.api_service import write_mr_study

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with postgres_server() as server:
        url = server.new_database()
        catalog = Catalog.open(url)
        with catalog.write_session() as session:  # an older catalog, without these tables
            session.execute(text("DROP TABLE web_sessions"))
            session.execute(text("DROP TABLE feedback"))
        catalog.close()
        catalog = Catalog.open(url)
        try:
            users = UserDirectory(catalog)
            users.add("reader", "radiologist")
            store = SessionStore(catalog)
            session_id, _ = store.create(Principal("reader", Role.RADIOLOGIST))
            found = store.lookup(session_id)
            assert found is not None and found.principal == Principal("reader", Role.RADIOLOGIST)
            assert store.delete(session_id) and store.lookup(session_id) is None

            path = write_mr_study(tmp_path, seed="pg", patient_id="PG1", patient_name="Pg^Pat")[0]
            InstanceIngestor(StudyStore(tmp_path / "store"), catalog).ingest_file(
                path, source=path.name, received_via="c-store"
            )
            [study] = catalog.search_studies({})
            uid = study["StudyInstanceUID"]
            feedback = FeedbackStore(catalog)
            for minute, verdict in enumerate(("agree", "disagree")):
                request = FeedbackRequest(
                    study_instance_uid=uid, target="prediction", verdict=verdict
                )
                feedback.add(request, user="reader", now=T_PG + timedelta(minutes=minute))
            items, total = feedback.list_entries(study_instance_uid=uid)
            assert total == 2 and [i.verdict for i in items] == ["disagree", "agree"]
        finally:
            catalog.close()
