"""Authentication (bearer token or browser session), role checks and the audit trail.

Every route but ``/healthz`` and the web page's shell passes :class:`Gatekeeper`. The
caller is the holder of an ``Authorization: Bearer`` token or, without that header, of a
web session cookie (:mod:`serving.web.sessions`); both are looked up by their SHA-256
(:meth:`serving.auth.UserDirectory.authenticate`, :meth:`SessionStore.lookup`), so no
stored secret is ever compared with the presented one byte by byte and the lookup's
timing tells nothing about any token. A request that changes something with the cookie
must be JSON (415 otherwise). Each decision is written to the audit log: ``"denied"``
for a missing, wrong, expired or revoked credential (user ``None``) and for a role
without the permission, ``"allowed"`` otherwise; the app's error middleware adds
``"error"`` when a request that was let in fails. Nothing here logs a token, a session
id, a user name or a patient identity.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from fastapi.security import HTTPBearer

from serving.audit import AuditLog
from serving.auth import Permission, Principal, Role, UserDirectory
from serving.study_access import IngestResult, InstanceSink
from serving.web.sessions import SAFE_METHODS, SessionStore, is_json, session_cookie

# Declares the scheme in the OpenAPI schema; the check itself is Gatekeeper's (auto_error
# off, so a missing header gets our 401 with WWW-Authenticate rather than FastAPI's).
bearer_scheme = HTTPBearer(
    auto_error=False, description="A token from `mmdx users add` (Authorization: Bearer ...)."
)

# A UID as the routes accept it in a path: digits and dots (checked again by the store).
UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"
_PATH_UID = re.compile(UID_PATTERN)
# What each DICOMweb action needs: QIDO and WADO return identified data.
DICOMWEB_PERMISSIONS: dict[str, Permission] = {
    "stow": Permission.WRITE_STUDIES,
    "qido": Permission.READ_STUDIES,
    "wado": Permission.READ_STUDIES,
}
AUDIT_SCOPE_KEY = "mmdx_audit"  # request.state attribute read by the error middleware


@dataclass(frozen=True)
class AuditScope:
    """What the audit entry of a request that was let in says (kept on ``request.state``)."""

    user: str
    action: str
    study_instance_uid: str | None


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or ``None``."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def client_address(request: Request) -> str | None:
    """The peer's address as the server saw it."""
    return request.client.host if request.client is not None else None


def path_study_uid(request: Request, name: str = "uid") -> str | None:
    """The study UID in the request path, when there is one and it is a UID."""
    value = request.path_params.get(name)
    return value if isinstance(value, str) and _is_uid(value) else None


def audit_scope(state: Mapping[str, Any]) -> AuditScope | None:
    """The audit scope a request was let in with, from its ASGI ``scope["state"]``."""
    value = state.get(AUDIT_SCOPE_KEY)
    return value if isinstance(value, AuditScope) else None


class Gatekeeper:
    """Authenticates requests, checks roles and records the decisions.

    Args:
        users: Where tokens are looked up.
        audit: Where decisions are recorded.
        sessions: Where web sessions are looked up; ``None`` accepts bearer tokens only.
    """

    def __init__(
        self, users: UserDirectory, audit: AuditLog, sessions: SessionStore | None = None
    ) -> None:
        self.users = users
        self.audit = audit
        self.sessions = sessions

    def check(
        self,
        request: Request,
        action: str,
        *,
        permission: Permission | None = None,
        role: Role | None = None,
        study_instance_uid: str | None = None,
    ) -> Principal:
        """The caller, if their credential is valid and their role allows ``action``.

        Raises:
            HTTPException: 401 (with ``WWW-Authenticate: Bearer``) for a missing, wrong,
                expired or revoked token or session; 415 for a request that changes
                something with the session cookie and is not JSON; 403 when the role
                lacks ``permission`` or is not ``role``.
        """
        principal, presented, by_cookie = self._principal(request)
        if principal is None:
            self.record(request, None, action, "denied", study_instance_uid)
            challenge = 'Bearer error="invalid_token"' if presented else "Bearer"
            raise HTTPException(
                401, "a valid bearer token is required", headers={"WWW-Authenticate": challenge}
            )
        if by_cookie and request.method not in SAFE_METHODS and not is_json(request):
            self.record(request, principal.user, action, "denied", study_instance_uid)
            raise HTTPException(415, "a request with the session cookie must be application/json")
        allowed = (permission is None or principal.can(permission)) and (
            role is None or principal.role == role
        )
        if not allowed:
            self.record(request, principal.user, action, "denied", study_instance_uid)
            raise HTTPException(403, f"the {principal.role.value} role may not do this")
        self.record(request, principal.user, action, "allowed", study_instance_uid)
        setattr(
            request.state,
            AUDIT_SCOPE_KEY,
            AuditScope(principal.user, action, study_instance_uid),
        )
        return principal

    def _principal(self, request: Request) -> tuple[Principal | None, bool, bool]:
        """(caller or ``None``, whether a credential was presented, whether by cookie).

        A bearer header wins over the cookie, so an API client never acts as whoever
        signed in to a browser on the same machine.
        """
        token = bearer_token(request)
        if token is not None:
            return self.users.authenticate(token), True, False
        session_id = session_cookie(request) if self.sessions is not None else None
        if self.sessions is None or session_id is None:
            return None, False, False
        session = self.sessions.lookup(session_id)
        return (None if session is None else session.principal), True, True

    def record(
        self,
        request: Request,
        user: str | None,
        action: str,
        outcome: str,
        study_instance_uid: str | None = None,
    ) -> None:
        """Write one audit entry for ``request`` (its path without query string)."""
        self.audit.record(
            user=user,
            action=action,
            resource=request.url.path,
            outcome=outcome,
            study_instance_uid=study_instance_uid,
            client_address=client_address(request),
        )

    def require(
        self, action: str, permission: Permission | None = None, *, role: Role | None = None
    ) -> Callable[[Request], Principal]:
        """A FastAPI dependency that lets in callers allowed ``action`` (study from ``{uid}``).

        Sync on purpose: FastAPI runs it in a worker thread, off the event loop, since
        it queries and writes the catalog.
        """

        def dependency(request: Request) -> Principal:
            return self.check(
                request,
                action,
                permission=permission,
                role=role,
                study_instance_uid=path_study_uid(request),
            )

        return dependency

    def dicomweb_access(
        self, request: Request, action: str, study_instance_uid: str | None
    ) -> None:
        """The DICOMweb router's ``AccessCheck``: STOW needs write, QIDO and WADO read.

        An action this map does not know is refused (403) rather than let through.
        """
        permission = DICOMWEB_PERMISSIONS.get(action)
        study = study_instance_uid if study_instance_uid and _is_uid(study_instance_uid) else None
        if permission is None:
            self.record(request, None, action, "denied", study)
            raise HTTPException(403, f"unknown DICOMweb action {action!r}")
        principal = self.check(request, action, permission=permission, study_instance_uid=study)
        if action == "stow":
            _stow_scope.set(_StowScope(principal.user, request.url.path, client_address(request)))


def _is_uid(value: str) -> bool:
    return len(value) <= 64 and _PATH_UID.match(value) is not None


@dataclass
class _StowScope:
    """Who is storing in the current STOW-RS request, and the studies already recorded."""

    user: str
    resource: str
    client_address: str | None
    recorded: set[tuple[str, str]] = field(default_factory=set)


# Set by the STOW access check in the request's task; the sink runs in worker threads
# that copy the task's context, so it sees the value (and shares its ``recorded`` set).
_stow_scope: ContextVar[_StowScope | None] = ContextVar("mmdx_stow_scope", default=None)


class AuditingSink:
    """An ``InstanceSink`` that records, per STOW-RS request, each study written to.

    The request-level entry (action ``"stow"``) cannot name the studies of a body
    posted to ``/studies``; this adds one ``"stow.study"`` entry per study and outcome
    (``"stored"``, ``"duplicate"``, ``"refused"``), so a study's audit trail shows who
    wrote to it. Outside a STOW-RS request it only passes the file on.
    """

    def __init__(self, sink: InstanceSink, audit: AuditLog) -> None:
        self._sink = sink
        self._audit = audit

    def ingest_file(
        self, path: Path, *, source: str, received_via: str, calling_ae: str | None = None
    ) -> IngestResult:
        """Ingest through the wrapped sink, then record the study written to."""
        result = self._sink.ingest_file(
            path, source=source, received_via=received_via, calling_ae=calling_ae
        )
        scope = _stow_scope.get()
        study = result.study_instance_uid
        if scope is not None and study is not None and (study, result.status) not in scope.recorded:
            scope.recorded.add((study, result.status))
            self._audit.record(
                user=scope.user,
                action="stow.study",
                resource=scope.resource,
                outcome=result.status,
                study_instance_uid=study,
                client_address=scope.client_address,
            )
        return result
