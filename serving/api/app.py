"""The service's FastAPI application: ``/healthz``, ``/api``, ``/dicom-web`` and the ``/ui/`` page.

A plain FastAPI app over a :class:`~serving.api.context.ServiceContext`; the Ray Serve
ingress deployment wraps it. Every route but ``/healthz``, the page's shell and its
sign-in needs a bearer token or the page's session cookie, the OpenAPI schema included
(served at ``/openapi.json`` to any authenticated user). An unexpected exception becomes
a 500 with a fixed message: no stack trace, no identity.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import Depends, FastAPI, Security
from fastapi.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.api.admin import create_admin_router
from serving.api.admission import mount_admission_control
from serving.api.context import ServiceContext
from serving.api.models import Health, error_responses
from serving.api.results import create_results_router
from serving.api.security import AuditingSink, Gatekeeper, audit_scope, bearer_scheme
from serving.audit import AuditLog
from serving.dicomweb.routes import create_dicomweb_router
from serving.web.case_views import create_case_views_router
from serving.web.routes import create_ui_router
from serving.web.sessions import SessionStore
from serving.web.study_views import create_study_views_router

logger = logging.getLogger(__name__)

_INTERNAL_ERROR = json.dumps({"detail": "internal server error"}).encode()


def create_app(context: ServiceContext) -> FastAPI:
    """The HTTP application of the service over ``context``."""
    sessions = SessionStore(context.catalog)
    gate = Gatekeeper(context.users, context.audit, sessions)
    app = FastAPI(
        title="mmdx",
        summary="MRI and echo study classification with similar cases (not for diagnostic use)",
        openapi_url=None,  # served below, behind authentication
        docs_url=None,
        redoc_url=None,
    )
    app.state.context = context
    authenticated = [Security(bearer_scheme)]  # the scheme in the schema; Gatekeeper checks

    @app.get("/healthz", response_model=Health, tags=["service"])
    def healthz() -> Health:
        """Liveness: the service answers (no token needed, nothing about its contents)."""
        return Health(status="ok")

    @app.get(
        "/openapi.json",
        include_in_schema=False,
        dependencies=[Depends(gate.require("openapi.read"))],
    )
    def openapi() -> dict[str, Any]:
        """The OpenAPI schema, to any authenticated user."""
        return app.openapi()

    app.include_router(
        create_results_router(context, gate), prefix="/api", dependencies=authenticated
    )
    app.include_router(
        create_admin_router(context, gate), prefix="/api", dependencies=authenticated
    )
    # After the results router: its /cases/search wins over /cases/{case_id}.
    for router in (
        create_study_views_router(context, gate),
        create_case_views_router(context, gate),
    ):
        app.include_router(router, prefix="/api", dependencies=authenticated)
    app.include_router(create_ui_router(context, gate, sessions))
    dicomweb = create_dicomweb_router(
        AuditingSink(context.ingestor, context.audit),
        context.catalog,
        context.store,
        # On the store's filesystem: the ingestor moves received parts instead of copying.
        work_dir=context.store.temp_dir(),
        max_request_bytes=context.settings.stow.max_request_bytes,
        max_instance_bytes=context.settings.stow.max_instance_bytes,
        access=gate.dicomweb_access,
    )
    app.include_router(
        dicomweb,
        prefix="/dicom-web",
        tags=["dicomweb"],
        dependencies=authenticated,
        responses=error_responses(400, 401, 403, 404),
    )
    app.add_middleware(InternalErrorMiddleware, audit=context.audit)
    mount_admission_control(app, context.settings.serve.admission)  # outermost: sheds first
    return app


class InternalErrorMiddleware:
    """Turns an unexpected exception into a bare 500 and audits server errors.

    Starlette's own handler would re-raise the exception to the server, which logs its
    traceback, and exception messages can quote header values (patient names). Here
    only the exception's type is logged; a request that was let in and ends in a 5xx
    adds an ``"error"`` entry to the audit trail.
    """

    def __init__(self, app: ASGIApp, audit: AuditLog) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Created here so the app's request.state writes into this very dict.
        state = scope.setdefault("state", {})
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if message["status"] >= 500:
                    await self._record_error(scope, state)
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception as exc:
            route = getattr(scope.get("route"), "path", "unmatched route")
            logger.error("%s %s failed: %s", scope["method"], route, type(exc).__name__)
            if started:
                return  # the server closes the half-sent response
            await self._record_error(scope, state)
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(_INTERNAL_ERROR)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _INTERNAL_ERROR})

    async def _record_error(self, scope: Scope, state: dict[str, Any]) -> None:
        granted = audit_scope(state)
        if granted is None:
            return
        client = scope.get("client")
        try:
            await run_in_threadpool(
                self.audit.record,
                user=granted.user,
                action=granted.action,
                resource=scope["path"],
                outcome="error",
                study_instance_uid=granted.study_instance_uid,
                client_address=client[0] if client else None,
            )
        except Exception as exc:  # the catalog itself may be what failed
            logger.error("audit entry of a failed request not written: %s", type(exc).__name__)
