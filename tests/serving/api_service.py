"""A service context over a temporary folder, with one user per role, for the API tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from imaging.synthetic.mr_dicom import write_mr_series
from serving.api.app import create_app
from serving.api.context import CaseSearch, ServiceContext
from serving.settings import Settings
from tests.synthetic_cases import make_mr_volume, make_patient, make_study

RECEIVED_AT = datetime(2024, 6, 4, 12, 0, tzinfo=UTC)
STOW_BOUNDARY = "api-test-boundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary="{STOW_BOUNDARY}"'


@dataclass
class Service:
    """The app under test, its context and a token per user."""

    context: ServiceContext
    client: TestClient
    tokens: dict[str, str]

    def auth(self, user: str) -> dict[str, str]:
        """The Authorization header of ``user`` ("radiologist", "researcher", "admin")."""
        return {"Authorization": f"Bearer {self.tokens[user]}"}


@contextmanager
def running_service(
    tmp_path: Path,
    *,
    case_search: CaseSearch | None = None,
    reprocess: Callable[[str], None] | None = None,
    raise_server_exceptions: bool = True,
) -> Iterator[Service]:
    """The app over a new store and SQLite catalog; one user per role, named after it."""
    settings = Settings(data_dir=tmp_path / "data")
    context = ServiceContext.from_settings(settings, case_search=case_search, reprocess=reprocess)
    tokens = {
        role: context.users.add(role, role) for role in ("radiologist", "researcher", "admin")
    }
    client = TestClient(create_app(context), raise_server_exceptions=raise_server_exceptions)
    try:
        yield Service(context, client, tokens)
    finally:
        client.close()
        context.close()


def write_mr_study(
    folder: Path, *, seed: str, patient_id: str, patient_name: str, description: str = "MRI BRAIN"
) -> list[Path]:
    """Two 8x10 MR slices of a new study of a new patient (UIDs derive from ``seed``)."""
    pixels = np.arange(2 * 8 * 10, dtype=np.float32).reshape(2, 8, 10)
    study = make_study(
        patient=make_patient(patient_id=patient_id, patient_name=patient_name),
        study_instance_uid=f"2.25.{int.from_bytes(seed.encode(), 'big') % 10**30}",
        study_description=description,
    )
    return write_mr_series(
        make_mr_volume(pixels), study, out_dir=folder / seed, series_number=1, uid_seed=seed
    )


def stow_body(paths: list[Path]) -> bytes:
    """A STOW-RS ``multipart/related`` body of the DICOM files ``paths``."""
    parts = b"".join(
        f"--{STOW_BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + path.read_bytes()
        + b"\r\n"
        for path in paths
    )
    return parts + f"--{STOW_BOUNDARY}--\r\n".encode()


def audit_events(service: Service, **filters: Any) -> list[dict[str, Any]]:
    """The audit events the admin sees (this query itself is audited too)."""
    response = service.client.get("/api/audit", params=filters, headers=service.auth("admin"))
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events
