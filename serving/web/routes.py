"""The web page's shell (``/ui/``, its static files) and its session (``/ui/api/session``).

The shell holds no data, so it needs no credential; everything it shows comes from the
JSON API with the session cookie. Pages carry a strict Content-Security-Policy: scripts,
styles and images from this origin only (images also as ``data:``/``blob:``), no inline
script or style, no framing. These routes stay out of the OpenAPI schema (the API's
clients use bearer tokens).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, RedirectResponse

from serving.api.context import ServiceContext
from serving.api.security import Gatekeeper
from serving.web.models import SessionInfo, SessionRequest
from serving.web.sessions import (
    SessionStore,
    clear_session_cookie,
    require_json,
    session_cookie,
    set_session_cookie,
)

STATIC_DIR = Path(__file__).parent / "static"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
    "script-src 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # The page changes with the service: revalidate (ETag) rather than keep a stale copy.
    "Cache-Control": "no-cache",
}
# A static file's path: names of letters, digits, ._- (not starting with a dot), in folders.
_STATIC_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$")
# ES modules must be served as JavaScript; the platform's MIME table is not relied on.
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".woff2": "font/woff2",
}


def create_ui_router(
    context: ServiceContext,
    gate: Gatekeeper,
    sessions: SessionStore,
    *,
    static_dir: Path = STATIC_DIR,
) -> APIRouter:
    """``/`` (redirect), ``/ui/``, ``/ui/static/{name}`` and ``/ui/api/session``."""
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    def root() -> RedirectResponse:
        """The page."""
        return RedirectResponse("/ui/", status_code=307)

    @router.get("/ui")
    def ui_without_slash() -> RedirectResponse:
        """The page (relative URLs in it need the trailing slash)."""
        return RedirectResponse("/ui/", status_code=307)

    @router.get("/ui/")
    def page() -> FileResponse:
        """The page's shell."""
        return static_file(static_dir, "index.html")

    @router.get("/ui/static/{name:path}")
    def static(name: Annotated[str, PathParam(max_length=200)]) -> FileResponse:
        """A file of the page (scripts, styles, images)."""
        return static_file(static_dir, name)

    @router.post("/ui/api/session", dependencies=[Depends(require_json)])
    def sign_in(body: SessionRequest, request: Request, response: Response) -> SessionInfo:
        """Exchange a bearer token for a session cookie (HttpOnly, SameSite=Strict)."""
        principal = context.users.authenticate(body.token)
        if principal is None:
            gate.record(request, None, "ui.sign_in", "denied")
            raise HTTPException(401, "unknown or revoked token")
        previous = session_cookie(request)
        if previous is not None:  # a new id on every sign-in (no session fixation)
            sessions.delete(previous)
        session_id, session = sessions.create(principal)
        gate.record(request, principal.user, "ui.sign_in", "allowed")
        set_session_cookie(response, request, session_id, max_age=sessions.ttl)
        response.headers.update(PAGE_HEADERS)
        return SessionInfo(user=session.user, role=session.role, expires_at=session.expires_at)

    @router.get("/ui/api/session")
    def current_session(request: Request, response: Response) -> SessionInfo:
        """Who the session cookie signs in, or 401 (audited either way)."""
        session_id = session_cookie(request)
        session = None if session_id is None else sessions.lookup(session_id)
        if session is None:
            gate.record(request, None, "ui.session", "denied")
            raise HTTPException(401, "not signed in (or the session expired)")
        gate.record(request, session.user, "ui.session", "allowed")
        response.headers.update(PAGE_HEADERS)
        return SessionInfo(user=session.user, role=session.role, expires_at=session.expires_at)

    @router.delete("/ui/api/session", status_code=204, dependencies=[Depends(require_json)])
    def sign_out(request: Request) -> Response:
        """End the session: its row is deleted and the cookie cleared."""
        session_id = session_cookie(request)
        session = None if session_id is None else sessions.lookup(session_id)
        if session_id is not None:
            sessions.delete(session_id)
        outcome = "allowed" if session is not None else "no session"
        gate.record(request, None if session is None else session.user, "ui.sign_out", outcome)
        response = Response(status_code=204, headers=PAGE_HEADERS)
        clear_session_cookie(response, request)
        return response

    return router


def static_file(static_dir: Path, name: str) -> FileResponse:
    """``name`` under ``static_dir`` with the page headers; 404 outside it or missing.

    Raises:
        HTTPException: 404 for a name that is not a plain relative path of the folder.
    """
    if not _STATIC_NAME.match(name):
        raise HTTPException(404, "no such file")
    base = static_dir.resolve()
    path = (base / name).resolve()
    if not path.is_relative_to(base) or not path.is_file():
        raise HTTPException(404, "no such file")
    media_type = MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return FileResponse(path, media_type=media_type, headers=PAGE_HEADERS)
