"""Users, roles, tokens, the audit log and the ``mmdx users`` commands."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from serving.audit import AuditLog
from serving.auth import Permission, Principal, Role, UserDirectory
from serving.catalog import Catalog
from serving.commands.users import users_app
from serving.settings import get_settings

T0 = datetime(2024, 6, 4, 12, 0, tzinfo=UTC)


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.sqlite'}")
    yield catalog
    catalog.close()


def test_tokens_authenticate_until_revoked(catalog: Catalog, tmp_path: Path) -> None:
    users = UserDirectory(catalog)
    token = users.add("dr.house", "radiologist")
    other = users.add("ana", Role.RESEARCHER)
    assert len(token) == 43 and token != other  # 32 random bytes, URL-safe base64
    assert users.authenticate(token) == Principal("dr.house", Role.RADIOLOGIST)
    assert users.authenticate(other) == Principal("ana", Role.RESEARCHER)
    assert users.authenticate(token + "x") is None
    assert users.authenticate("") is None
    assert users.authenticate("x" * 10_000) is None

    assert users.revoke("dr.house") is True
    assert users.revoke("dr.house") is False
    assert users.authenticate(token) is None
    assert users.authenticate(other) is not None
    with pytest.raises(KeyError):
        users.revoke("nobody")
    listed = {user.name: user.active for user in users.list_users()}
    assert listed == {"ana": True, "dr.house": False}

    # Only the SHA-256 of the token is in the database.
    raw = sqlite3.connect(tmp_path / "catalog.sqlite")
    hashes = {row[0] for row in raw.execute("SELECT token_hash FROM users")}
    raw.close()
    assert hashlib.sha256(token.encode()).hexdigest() in hashes
    for stored in tmp_path.glob("catalog.sqlite*"):  # the database and its WAL
        assert token.encode() not in stored.read_bytes()


@pytest.mark.parametrize(
    ("name", "role", "message"),
    [
        ("ok", "superuser", "radiologist, researcher, admin"),
        ("../x", "admin", '"name"'),
        ("", "admin", '"name"'),
        ("a" * 65, "admin", '"name"'),
    ],
)
def test_bad_users_are_refused(catalog: Catalog, name: str, role: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UserDirectory(catalog).add(name, role)


def test_a_name_is_never_reused(catalog: Catalog) -> None:
    users = UserDirectory(catalog)
    users.add("ana", "admin")
    users.revoke("ana")
    with pytest.raises(ValueError, match="already exists"):
        users.add("ana", "admin")


def test_role_permissions() -> None:
    radiologist = Principal("r", Role.RADIOLOGIST)
    researcher = Principal("s", Role.RESEARCHER)
    admin = Principal("a", Role.ADMIN)
    assert radiologist.can(Permission.READ_STUDIES) and radiologist.can(Permission.WRITE_FEEDBACK)
    assert not radiologist.can(Permission.READ_AUDIT)
    # A researcher sees de-identified material only.
    assert researcher.can(Permission.READ_CASES) and researcher.can(Permission.READ_AGGREGATES)
    for identified in (Permission.READ_STUDIES, Permission.READ_RESULTS, Permission.WRITE_STUDIES):
        assert not researcher.can(identified)
    assert all(admin.can(permission) for permission in Permission)


def test_audit_records_and_queries(catalog: Catalog) -> None:
    audit = AuditLog(catalog)
    audit.record(
        user="dr.house",
        action="wado.instance",
        resource="/dicom-web/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5",
        study_instance_uid="1.2.3",
        client_address="127.0.0.1",
        outcome="success",
        at=T0,
    )
    audit.record(
        user="ana",
        action="qido.studies",
        resource="/dicom-web/studies?PatientName=Doe*",
        client_address="10.0.0.7",
        outcome="denied",
        at=T0 + timedelta(minutes=1),
    )
    audit.record(
        user=None, action="qido.studies", resource="/dicom-web/studies", outcome="denied",
        at=T0 + timedelta(minutes=2),
    )  # fmt: skip
    newest_first = audit.query()
    assert [entry.user for entry in newest_first] == [None, "ana", "dr.house"]
    assert newest_first[1].resource == "/dicom-web/studies"  # the query string is dropped
    assert [entry.user for entry in audit.query(action="qido.studies", limit=1)] == [None]
    (house,) = audit.query(user="dr.house")
    assert (house.study_instance_uid, house.client_address, house.outcome, house.at) == (
        "1.2.3",
        "127.0.0.1",
        "success",
        T0,
    )
    assert [entry.user for entry in audit.query(study_instance_uid="1.2.3")] == ["dr.house"]
    assert [e.user for e in audit.query(since=T0 + timedelta(seconds=30))] == [None, "ana"]
    with pytest.raises(ValueError, match="limit"):
        audit.query(limit=0)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("MMDX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MMDX_CATALOG_URL", raising=False)
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


def test_users_commands(data_dir: Path) -> None:
    app = typer.Typer()
    app.add_typer(users_app, name="users")
    runner = CliRunner()

    added = runner.invoke(app, ["users", "add", "ana", "--role", "admin"])
    assert added.exit_code == 0, added.output
    token = added.stdout.strip().splitlines()[-1]
    assert (data_dir / "catalog.sqlite").is_file()

    catalog = Catalog.open(get_settings().resolved_catalog_url)
    try:
        assert UserDirectory(catalog).authenticate(token) == Principal("ana", Role.ADMIN)
        refused = runner.invoke(app, ["users", "add", "ana", "--role", "admin"])
        assert refused.exit_code == 2 and "already exists" in refused.output
        bad_role = runner.invoke(app, ["users", "add", "bob", "--role", "root"])
        assert bad_role.exit_code == 2 and "radiologist, researcher, admin" in bad_role.output

        listed = runner.invoke(app, ["users", "list", "--json"])
        rows = json.loads(listed.stdout)
        assert [(row["name"], row["role"], row["revoked_at"]) for row in rows] == [
            ("ana", "admin", None)
        ]
        assert token not in listed.stdout

        revoked = runner.invoke(app, ["users", "revoke", "ana"])
        assert revoked.exit_code == 0 and "revoked" in revoked.stdout
        assert UserDirectory(catalog).authenticate(token) is None
        assert runner.invoke(app, ["users", "revoke", "nobody"]).exit_code == 1
        assert "revoked" in runner.invoke(app, ["users", "list"]).stdout
    finally:
        catalog.close()
