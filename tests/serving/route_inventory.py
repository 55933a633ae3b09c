"""Every route of the HTTP app, and a request that reaches each with the seeded values.

:func:`list_routes` walks the app's routes (the ones FastAPI includes from routers too)
as (method, path template) pairs. :class:`SeededValues` holds real values of the seeded
web service (:mod:`tests.serving.web_fixtures`) and fills a template's path parameters
by name, so a request lands on a real study, series, instance and case; a parameter
name it does not know raises, so a new route cannot be skipped silently.
Synthetic data only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from tests.serving.api_service import STOW_TYPE, stow_body
from tests.serving.web_fixtures import WebService

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON_TYPE = "application/json"
_PARAMETER = re.compile(r"\{(\w+)(?::\w+)?\}")


@dataclass(frozen=True, order=True)
class Route:
    """One method of one path template, as the app declares it."""

    method: str
    path: str

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def list_routes(app: FastAPI) -> list[Route]:
    """Every (method, path template) the app answers, sorted; HEAD only where declared."""
    routes: set[Route] = set()
    for context in iter_route_contexts(app.routes):
        path = context.path
        if path is None:
            raise ValueError(f"route {context.original_route!r} has no path")
        routes.update(Route(method, path) for method in context.methods or ())
    return sorted(routes)


def fill_path(template: str, values: Mapping[str, str]) -> str:
    """``template`` with each ``{name}`` (or ``{name:converter}``) replaced by its value."""
    return _PARAMETER.sub(lambda match: values[match.group(1)], template)


@dataclass(frozen=True)
class Call:
    """A request ready for a test client: URL, query, body and its content type."""

    method: str
    url: str
    params: dict[str, str] = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None
    content_type: str | None = None

    def headers(self) -> dict[str, str]:
        """The Content-Type header of the body (JSON for every body-less mutation)."""
        return {"Content-Type": self.content_type} if self.content_type else {}


@dataclass(frozen=True)
class SeededValues:
    """Real values of the seeded service that route parameters take.

    Attributes:
        path_values: Path parameter name -> value (an MR study of the seeded service).
        stow: A STOW-RS body holding one instance already stored (a duplicate).
        case_id: A de-identified case of the index.
    """

    path_values: dict[str, str]
    stow: bytes
    case_id: str

    @classmethod
    def of(cls, web: WebService) -> SeededValues:
        """The values of ``web``'s MR study, its first instance and its first case."""
        [row] = web.context.catalog.search_instances({}, study_instance_uid=web.mr_uid, limit=1)
        series, instance = row["SeriesInstanceUID"], row["SOPInstanceUID"]
        path = web.context.store.instance_path(web.mr_uid, series, instance)
        if path is None:
            raise FileNotFoundError(f"the seeded instance {instance} is not in the store")
        case_id = web.cases[0].case_id
        values = {
            "uid": web.mr_uid,
            "study": web.mr_uid,
            "series": series,
            "instance": instance,
            "case_id": case_id,
            "modality": "MR",
            "plane": "axial",
            "index": "0",
            "tag": "7FE00010",
            "frames": "1",
            "name": "app.css",
        }
        return cls(values, stow_body([path]), case_id)

    def path_parameters(self, template: str) -> dict[str, str]:
        """The value of each parameter of ``template``.

        Raises:
            KeyError: A parameter this inventory has no value for (a new route).
        """
        names = _PARAMETER.findall(template)
        unknown = [name for name in names if name not in self.path_values]
        if unknown:
            raise KeyError(f"no seeded value for path parameter(s) {unknown} of {template}")
        return {name: self.path_values[name] for name in names}

    def call(self, route: Route) -> Call:
        """A request to ``route`` with valid path parameters and a minimal valid body."""
        url = fill_path(route.path, self.path_parameters(route.path))
        if route.path == "/api/cases/search":
            return Call(route.method, url, params={"text": "hippocampal atrophy"})
        if route.method not in UNSAFE_METHODS:
            return Call(route.method, url)
        if route.path.startswith("/dicom-web/studies"):
            return Call(route.method, url, content=self.stow, content_type=STOW_TYPE)
        if route.path == "/api/feedback":
            body = {
                "study_instance_uid": self.path_values["uid"],
                "target": "case",
                "case_id": self.case_id,
                "verdict": "agree",
            }
            return Call(route.method, url, json=body, content_type=JSON_TYPE)
        # Reprocess, sign-in (its token is the test's to add), sign-out: JSON, as the page sends.
        return Call(route.method, url, content_type=JSON_TYPE)
