"""Authorization matrix: every route of the app against every credential, and its audit.

Each route the app declares (JSON API, DICOMweb, the page, its session, the schema) is
called with valid path parameters of the seeded service and a minimal valid body, once
per credential: none, a wrong bearer token, a forged session cookie, each role's bearer
token and each role's session cookie. :data:`EXPECTED` says who may use each route; a
route missing from it (a new one) fails the test. Every request to a route that is not
public must leave exactly one audit row naming the right user and outcome, and no audit
row may hold a token or a session id. The matrix is printed and, when
``$MMDX_TEST_ARTIFACTS`` is set, written there as ``authorization_matrix.md``.
Synthetic patients only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from sqlalchemy import select

from serving.auth import Principal, Role
from serving.catalog.tables import AuditEvent
from serving.web.sessions import SESSION_COOKIE, SessionStore
from tests.integration.web_fixtures import artifact_dir
from tests.serving.api_service import STOW_TYPE
from tests.serving.route_inventory import (
    JSON_TYPE,
    UNSAFE_METHODS,
    Call,
    Route,
    SeededValues,
    fill_path,
    list_routes,
)
from tests.serving.web_fixtures import WebService, seeded_web_service

Special = Literal["public", "sign-in", "session", "sign-out"]
Access = frozenset[Role] | Special
ANY_ROLE = frozenset(Role)
CLINICAL = frozenset({Role.RADIOLOGIST, Role.ADMIN})  # identified data: studies, results
ADMIN = frozenset({Role.ADMIN})
WRONG_TOKEN = "wrong-token-0123456789abcdefghijklmnopqrstuvwxyzABCD"
WRONG_SESSION = "forged-session-0123456789abcdefghijklmnopqrstuvwxyz"
DICOMWEB = [
    "/studies",
    "/series",
    "/instances",
    "/studies/{study}/series",
    "/studies/{study}/instances",
    "/studies/{study}/series/{series}/instances",
    "/studies/{study}/series/{series}/instances/{instance}",
    "/studies/{study}/series/{series}/instances/{instance}/metadata",
    "/studies/{study}/series/{series}/metadata",
    "/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag}",
    "/studies/{study}/series/{series}/instances/{instance}/rendered",
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
]

# Who may use each route. "public": anyone, nothing audited; "sign-in": the token is in
# the body; "session": the cookie only (a bearer token is not a session); "sign-out":
# anyone, audited with the session's user if there is one.
EXPECTED: dict[Route, Access] = {
    Route("GET", "/"): "public",
    Route("GET", "/ui"): "public",
    Route("GET", "/ui/"): "public",
    Route("GET", "/ui/static/{name:path}"): "public",
    Route("GET", "/healthz"): "public",
    Route("POST", "/ui/api/session"): "sign-in",
    Route("GET", "/ui/api/session"): "session",
    Route("DELETE", "/ui/api/session"): "sign-out",
    Route("GET", "/openapi.json"): ANY_ROLE,
    Route("GET", "/api/studies"): CLINICAL,
    Route("GET", "/api/studies/{uid}"): CLINICAL,
    Route("GET", "/api/studies/{uid}/result"): CLINICAL,
    Route("POST", "/api/studies/{uid}/reprocess"): ADMIN,
    Route("GET", "/api/studies/{uid}/viewer/{modality}"): CLINICAL,
    Route("GET", "/api/studies/{uid}/viewer/{modality}/{plane}/{index}.png"): CLINICAL,
    Route("POST", "/api/feedback"): CLINICAL,
    Route("GET", "/api/feedback"): CLINICAL,
    Route("GET", "/api/cases/search"): ANY_ROLE,  # de-identified cases: researchers too
    Route("GET", "/api/cases/{case_id}"): ANY_ROLE,
    Route("GET", "/api/cases/{case_id}/thumbnail.png"): ANY_ROLE,
    Route("GET", "/api/audit"): ADMIN,
    Route("GET", "/api/jobs"): ADMIN,
    Route("POST", "/dicom-web/studies"): CLINICAL,  # STOW-RS
    Route("POST", "/dicom-web/studies/{study}"): CLINICAL,
    **{Route("GET", f"/dicom-web{path}"): CLINICAL for path in DICOMWEB},  # QIDO, WADO
}


@dataclass(frozen=True)
class Credential:
    """What a request presents: nothing, a bearer token or a session cookie, and whose."""

    name: str
    carrier: Literal["none", "bearer", "cookie"]
    role: Role | None = None  # None with a carrier: a wrong token or a forged cookie


CREDENTIALS = (
    Credential("none", "none"),
    Credential("wrong token", "bearer"),
    Credential("forged cookie", "cookie"),
    *(Credential(role.value, "bearer", role) for role in Role),
    *(Credential(f"{role.value} cookie", "cookie", role) for role in Role),
)


@dataclass(frozen=True)
class Expected:
    """What one request must get.

    Attributes:
        status: The status; ``None``: 2xx for an allowed role, any status but 401, 403
            and 5xx on a public route.
        audit: (user, outcome) of the request's one audit row; ``None``: no row.
    """

    status: int | None
    audit: tuple[str | None, str] | None


def expected(access: Access, route: Route, call: Call, credential: Credential) -> Expected:
    """What the service must answer ``credential`` on ``route``, and audit."""
    user = None if credential.role is None else credential.role.value
    if access == "public":
        return Expected(None, None)
    if access == "sign-in":
        if credential.carrier != "bearer":
            return Expected(422, None)  # no token in the body: refused before any lookup
        return Expected(200, (user, "allowed")) if user else Expected(401, (None, "denied"))
    if access == "session":
        if credential.carrier == "cookie" and user:
            return Expected(200, (user, "allowed"))
        return Expected(401, (None, "denied"))
    if access == "sign-out":
        if credential.carrier == "cookie" and user:
            return Expected(204, (user, "allowed"))
        return Expected(204, (None, "no session"))
    if user is None:
        return Expected(401, (None, "denied"))
    not_json = route.method in UNSAFE_METHODS and call.content_type != JSON_TYPE
    if credential.carrier == "cookie" and not_json:
        return Expected(415, (user, "denied"))  # the cookie's CSRF guard, before the role
    if credential.role in access:
        return Expected(None, (user, "allowed"))
    return Expected(403, (user, "denied"))


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebService]:
    with seeded_web_service(tmp_path_factory.mktemp("authz")) as web:
        yield web


def audit_rows(web: WebService, after: int) -> list[tuple[Any, ...]]:
    """(id, user, action, resource, study, client, outcome) of the rows after id ``after``."""
    columns = (
        AuditEvent.id,
        AuditEvent.user_name,
        AuditEvent.action,
        AuditEvent.resource,
        AuditEvent.study_instance_uid,
        AuditEvent.client_address,
        AuditEvent.outcome,
    )
    statement = select(*columns).where(AuditEvent.id > after).order_by(AuditEvent.id)
    with web.context.catalog.read_session() as session:
        return [tuple(row) for row in session.execute(statement)]


def send(
    web: WebService, call: Call, access: Access, credential: Credential, presented: set[str]
) -> int:
    """Send ``call`` with ``credential`` (a fresh session for a cookie); the status."""
    headers = call.headers()
    body = call.json
    secret: str | None = None
    if credential.carrier == "bearer":
        secret = web.tokens[credential.role.value] if credential.role else WRONG_TOKEN
        if access == "sign-in":
            body = {"token": secret}
        else:
            headers["Authorization"] = f"Bearer {secret}"
    elif credential.carrier == "cookie":
        if credential.role is None:
            secret = WRONG_SESSION
        else:
            principal = Principal(credential.role.value, credential.role)
            secret, _ = SessionStore(web.context.catalog).create(principal)
        headers["Cookie"] = f"{SESSION_COOKIE}={secret}"
    if secret is not None:
        presented.add(secret)
    response = web.client.request(
        call.method,
        call.url,
        params=call.params,
        headers=headers,
        json=body,
        content=call.content,
        follow_redirects=False,
    )
    # A sign-in sets the cookie in the client's jar; the next credential must not carry it.
    web.client.cookies.clear()
    return response.status_code


def check(
    route: Route, call: Call, want: Expected, status: int, rows: list[tuple[Any, ...]]
) -> list[str]:
    """What is wrong with one request's status and audit rows (empty: all right)."""
    problems = []
    if want.status is not None and status != want.status:
        problems.append(f"status {status}, expected {want.status}")
    if want.status is None and want.audit is not None and not 200 <= status < 300:
        problems.append(f"status {status} for an allowed role, expected 2xx")
    if want.status is None and (status in (401, 403) or status >= 500):
        problems.append(f"status {status} where the caller is let in")
    # STOW-RS adds one "stow.study" row per study written to, by the same user.
    access_rows = [row for row in rows if row[2] != "stow.study"]
    if want.audit is None and rows:
        problems.append(f"{len(rows)} audit row(s) for a request that is not audited")
    elif want.audit is not None:
        if len(access_rows) != 1:
            problems.append(f"{len(access_rows)} audit rows, expected 1")
        elif (access_rows[0][1], access_rows[0][6]) != want.audit:
            problems.append(
                f"audited {access_rows[0][1]!r}/{access_rows[0][6]!r}, not {want.audit}"
            )
        elif access_rows[0][3] != call.url:
            problems.append(f"audited resource {access_rows[0][3]!r}")
        if any(row[1] != want.audit[0] for row in rows if row[2] == "stow.study"):
            problems.append("a stow.study row names another user")
    return [f"{route}: {problem}" for problem in problems]


def access_label(access: Access) -> str:
    if isinstance(access, str):
        return access
    return "+".join(role.value for role in Role if role in access)


def matrix_markdown(statuses: dict[Route, dict[str, int]], checked: int) -> str:
    """The route x credential table of statuses, with each route's access."""
    names = [credential.name for credential in CREDENTIALS]
    lines = [
        f"Authorization matrix: {len(statuses)} routes x {len(names)} credentials = "
        f"{checked} requests checked (engineering figure, synthetic data).",
        "",
        "| route | access | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for route, row in statuses.items():
        cells = " | ".join(str(row[name]) for name in names)
        lines.append(f"| `{route}` | {access_label(EXPECTED[route])} | {cells} |")
    return "\n".join(lines) + "\n"


def test_every_route_of_the_app_has_an_expected_access(web: WebService) -> None:
    routes = set(list_routes(web.client.app))  # type: ignore[arg-type]

    missing = sorted(routes - set(EXPECTED))
    stale = sorted(set(EXPECTED) - routes)
    assert not missing, f"routes without an entry in EXPECTED: {[str(r) for r in missing]}"
    assert not stale, f"EXPECTED names routes the app no longer has: {[str(r) for r in stale]}"
    assert len(routes) >= 36


def test_every_route_against_every_credential_is_enforced_and_audited(
    web: WebService, tmp_path: Path
) -> None:
    values = SeededValues.of(web)
    presented = set(web.tokens.values())
    statuses: dict[Route, dict[str, int]] = {}
    problems: list[str] = []
    last = max((row[0] for row in audit_rows(web, 0)), default=0)
    for route in list_routes(web.client.app):  # type: ignore[arg-type]
        access = EXPECTED[route]
        call = values.call(route)
        statuses[route] = {}
        for credential in CREDENTIALS:
            status = send(web, call, access, credential, presented)
            rows = audit_rows(web, last)
            last = max((row[0] for row in rows), default=last)
            want = expected(access, route, call, credential)
            found = check(route, call, want, status, rows)
            problems += [f"[{credential.name}] {problem}" for problem in found]
            statuses[route][credential.name] = status

    checked = sum(len(row) for row in statuses.values())
    table = matrix_markdown(statuses, checked)
    print("\n" + table)
    (artifact_dir(tmp_path) / "authorization_matrix.md").write_text(table)
    assert not problems, "\n".join(problems)
    assert checked == len(EXPECTED) * len(CREDENTIALS) >= 36 * 9
    # Concrete cells a user relies on: a researcher never reads identified data.
    assert statuses[Route("GET", "/api/studies/{uid}")]["researcher"] == 403
    assert statuses[Route("GET", "/dicom-web/studies")]["researcher cookie"] == 403
    assert statuses[Route("GET", "/api/cases/{case_id}")]["researcher"] == 200
    assert statuses[Route("POST", "/dicom-web/studies")]["radiologist"] == 200
    assert statuses[Route("GET", "/api/audit")]["radiologist cookie"] == 403

    rows = audit_rows(web, 0)
    leaked = [row for row in rows for secret in presented if any(secret in str(v) for v in row)]
    assert not leaked, f"{len(leaked)} audit rows hold a token or session id"


def test_no_credential_is_refused_before_any_parameter_is_checked(web: WebService) -> None:
    # A caller without a credential learns nothing from validation (400, 404, 422) and
    # is audited, whatever the path holds. (A body that is not JSON at all is refused
    # by FastAPI with 422 before any dependency runs: that one is not audited.)
    refused: dict[str, int] = {}
    for route in list_routes(web.client.app):  # type: ignore[arg-type]
        if isinstance(EXPECTED[route], str):
            continue
        names = SeededValues.of(web).path_parameters(route.path)
        url = fill_path(route.path, {name: "1..x" for name in names})
        stow = route.method == "POST" and url.startswith("/dicom-web/")
        last = max((row[0] for row in audit_rows(web, 0)), default=0)
        response = web.client.request(
            route.method,
            url,
            headers={"Content-Type": STOW_TYPE if stow else JSON_TYPE},
            content=b"--x--" if stow else None,
        )
        rows = audit_rows(web, last)
        refused[str(route)] = response.status_code
        assert [(row[1], row[6]) for row in rows] == [(None, "denied")], route

    assert set(refused.values()) == {401}, {r: s for r, s in refused.items() if s != 401}
    assert len(refused) == sum(not isinstance(access, str) for access in EXPECTED.values())
