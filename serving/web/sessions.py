"""Browser sessions: an opaque cookie standing for a user who signed in with their token.

Signing in exchanges a bearer token for a session id (``secrets.token_urlsafe(32)``,
256 random bits) sent once in an ``HttpOnly; SameSite=Strict`` cookie; the catalog keeps
only its SHA-256 (the same hash as tokens, :func:`serving.auth.hash_token`), so a copy
of the database opens no session. A session lasts :data:`SESSION_TTL` and answers only
while its user is not revoked: a revoked user's sessions stop at once.

Cross-site requests cannot carry the cookie (``SameSite=Strict``); as a second guard,
a request that changes something with the cookie must be JSON (:func:`require_json`),
which a cross-site HTML form cannot send.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import HTTPException, Request, Response
from sqlalchemy import delete, select

from serving.auth import Principal, Role, hash_token
from serving.catalog import Catalog, utc_now
from serving.catalog.tables import User, WebSession

SESSION_COOKIE = "mmdx_session"
SESSION_TTL = timedelta(hours=8)
# Longer values are not ours (token_urlsafe(32) gives 43 characters): not even hashed.
_MAX_SESSION_ID_LENGTH = 128
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Session:
    """A live session: who signed in and until when."""

    user: str
    role: Role
    expires_at: datetime

    @property
    def principal(self) -> Principal:
        """The caller this session authenticates."""
        return Principal(self.user, self.role)


class SessionStore:
    """The catalog's ``web_sessions`` table: create, look up, delete.

    Args:
        catalog: The catalog holding users and sessions.
        ttl: How long a session lasts from sign-in.
    """

    def __init__(self, catalog: Catalog, *, ttl: timedelta = SESSION_TTL) -> None:
        if ttl <= timedelta(0):
            raise ValueError(f'Argument "ttl" must be positive, got {ttl}')
        self._catalog = catalog
        self.ttl = ttl

    def create(self, principal: Principal, *, now: datetime | None = None) -> tuple[str, Session]:
        """A new session for ``principal``: its id (for the cookie only) and what it holds.

        Expired sessions of every user are removed on the way.

        Raises:
            KeyError: ``principal`` names no active user.
        """
        now = now or utc_now()
        session_id = secrets.token_urlsafe(32)
        expires_at = now + self.ttl
        with self._catalog.write_session() as db:
            db.execute(delete(WebSession).where(WebSession.expires_at <= now))
            user_id = db.scalar(
                select(User.id).where(User.name == principal.user, User.revoked_at.is_(None))
            )
            if user_id is None:
                raise KeyError(principal.user)
            db.add(
                WebSession(
                    session_hash=hash_token(session_id),
                    user_id=user_id,
                    created_at=now,
                    expires_at=expires_at,
                )
            )
        return session_id, Session(principal.user, principal.role, expires_at)

    def lookup(self, session_id: str, *, now: datetime | None = None) -> Session | None:
        """The live session with this id, or ``None`` (unknown, expired, revoked user)."""
        if not session_id or len(session_id) > _MAX_SESSION_ID_LENGTH:
            return None
        statement = (
            select(User.name, User.role, WebSession.expires_at)
            .join(User, User.id == WebSession.user_id)
            .where(
                WebSession.session_hash == hash_token(session_id),
                WebSession.expires_at > (now or utc_now()),
                User.revoked_at.is_(None),
            )
        )
        with self._catalog.read_session() as db:
            row = db.execute(statement).one_or_none()
        return None if row is None else Session(row.name, Role(row.role), row.expires_at)

    def delete(self, session_id: str) -> bool:
        """End a session; ``False`` if there was none with this id."""
        if not session_id or len(session_id) > _MAX_SESSION_ID_LENGTH:
            return False
        with self._catalog.write_session() as db:
            result = db.execute(
                delete(WebSession).where(WebSession.session_hash == hash_token(session_id))
            )
            return bool(getattr(result, "rowcount", 0))


def session_cookie(request: Request) -> str | None:
    """The session id the request's cookie carries, or ``None``."""
    value = request.cookies.get(SESSION_COOKIE)
    return value or None


def set_session_cookie(
    response: Response, request: Request, session_id: str, *, max_age: timedelta = SESSION_TTL
) -> None:
    """Send the session cookie: HttpOnly, SameSite=Strict, whole site, ``Secure`` on https."""
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=int(max_age.total_seconds()),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    """Tell the browser to drop the session cookie."""
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def is_json(request: Request) -> bool:
    """Whether the request says its body is JSON (``application/json``, any parameters)."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media_type == "application/json"


def require_json(request: Request) -> None:
    """A FastAPI dependency: 415 unless the request is JSON.

    Raises:
        HTTPException: 415 for any other content type (or none).
    """
    if not is_json(request):
        raise HTTPException(415, "the request must be application/json")
