"""Backup and restore of a data directory: catalog, study store, case index, models, results.

A backup is one gzip tar holding the data directory's files and ``mmdx-backup.json``, a
manifest with every file's size and SHA-256, the row count of every catalog table and the
case index's row count. It can be taken while the service runs:

- a SQLite catalog is copied through SQLite's online backup API, so the copy is one
  consistent snapshot even while the listener writes;
- the snapshot is taken *before* the files are walked, and an instance is catalogued only
  after its file is on disk, so every catalogued instance has its file in the archive
  (files that arrive later are in the archive too, uncatalogued, and are indexed again
  when the PACS resends them);
- a PostgreSQL catalog is not copied (``pg_dump`` does that); its counts are still recorded
  so a restore can be checked against them.

Restoring extracts into an empty folder, refuses members that would land outside it, and
verifies every file's checksum, every table's row count and the case index's row count.
``secrets/`` (the de-identification key, the Ray token) is left out unless asked for:
it belongs with the backup, but kept apart from it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import func, select

from serving.catalog import Catalog
from serving.catalog.tables import Base

MANIFEST_NAME = "mmdx-backup.json"
BACKUP_FORMAT = 1
CATALOG_FILE = "catalog.sqlite"
CASE_INDEX_DIR = "case_index"
SECRETS_DIR = "secrets"
# The live catalog (archived as a snapshot instead), parts in flight and lock files.
_SKIPPED = {
    CATALOG_FILE, f"{CATALOG_FILE}-wal", f"{CATALOG_FILE}-shm", "store/.incoming", "store/.locks",
}  # fmt: skip
_CHUNK = 1 << 20


class BackupError(Exception):
    """A backup could not be written, or a restore could not be verified."""


@dataclass(frozen=True)
class BackupEntry:
    """One archived file, relative to the data directory."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class BackupManifest:
    """What a backup holds and what a restore must find again.

    Attributes:
        created_at: When the catalog snapshot was taken (UTC, ISO 8601).
        catalog: ``"sqlite"`` (the snapshot is in the archive) or ``"external"``.
        table_rows: Row count of every catalog table at the snapshot.
        case_index_rows: Cases in the index, ``None`` when there is no index.
        secrets_included: Whether ``secrets/`` is in the archive.
        files: Every archived file with its size and checksum.
    """

    created_at: str
    catalog: str
    table_rows: dict[str, int]
    case_index_rows: int | None
    secrets_included: bool
    files: list[BackupEntry] = field(default_factory=list)
    format: int = BACKUP_FORMAT

    def to_json(self) -> bytes:
        """The manifest as stored in the archive."""
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> BackupManifest:
        """Parse a stored manifest.

        Raises:
            BackupError: Not a manifest of a format this version reads.
        """
        try:
            raw = json.loads(data)
            if raw.get("format") != BACKUP_FORMAT:
                raise BackupError(f"backup format {raw.get('format')!r} is not {BACKUP_FORMAT}")
            raw["files"] = [BackupEntry(**entry) for entry in raw["files"]]
            return cls(**raw)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise BackupError(f"{MANIFEST_NAME} is not a valid manifest: {exc}") from exc


def create_backup(
    data_dir: Path, catalog_url: str, archive: Path, *, include_secrets: bool = False
) -> BackupManifest:
    """Write a verified-on-restore backup of ``data_dir`` to ``archive`` (gzip tar).

    Args:
        data_dir: The service's data directory.
        catalog_url: The catalog's URL (``settings.resolved_catalog_url``).
        archive: The file written (replaced atomically once complete).
        include_secrets: Also archive ``secrets/`` (the de-identification key).

    Raises:
        BackupError: The data directory does not exist, or the archive would lie inside it.
    """
    data_dir = data_dir.resolve()
    archive = archive.resolve()
    if not data_dir.is_dir():
        raise BackupError(f"data directory {data_dir} does not exist")
    if archive.is_relative_to(data_dir):
        raise BackupError(f"archive {archive} must not lie inside the data directory {data_dir}")
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=archive.parent, prefix=".mmdx-backup-") as staging:
        created_at = datetime.now(UTC).isoformat()
        catalog_copy = _snapshot_catalog(catalog_url, Path(staging) / CATALOG_FILE)
        table_rows = count_table_rows(catalog_url if catalog_copy is None else _url(catalog_copy))
        members: list[tuple[Path, str]] = []
        if catalog_copy is not None:
            members.append((catalog_copy, CATALOG_FILE))
        members += [
            (path, name) for path, name in _data_files(data_dir) if include_secrets or
            not name.startswith(f"{SECRETS_DIR}/")
        ]  # fmt: skip
        manifest = BackupManifest(
            created_at=created_at,
            catalog="sqlite" if catalog_copy is not None else "external",
            table_rows=table_rows,
            case_index_rows=case_index_rows(data_dir / CASE_INDEX_DIR),
            secrets_included=include_secrets,
            files=[_entry(path, name) for path, name in members],
        )
        partial = archive.with_name(archive.name + ".partial")
        with tarfile.open(partial, "w:gz") as tar:
            _add_bytes(tar, MANIFEST_NAME, manifest.to_json())
            for path, name in members:
                tar.add(path, arcname=name, recursive=False)
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        partial.replace(archive)
    return manifest


def restore_backup(archive: Path, data_dir: Path) -> BackupManifest:
    """Extract ``archive`` into the empty (or new) ``data_dir`` and verify it.

    Raises:
        BackupError: ``data_dir`` is not empty, the archive holds a member that is not a
            plain file inside the folder or not in its manifest, or verification failed
            (the message lists every problem).
    """
    if data_dir.exists() and any(data_dir.iterdir()):
        raise BackupError(f"restore target {data_dir} is not empty")
    data_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        manifest_member = tar.extractfile(MANIFEST_NAME)
        if manifest_member is None:
            raise BackupError(f"{archive} holds no {MANIFEST_NAME}")
        manifest = BackupManifest.from_json(manifest_member.read())
        listed = {entry.path for entry in manifest.files}
        members = [m for m in tar.getmembers() if m.name != MANIFEST_NAME]
        for member in members:
            _check_member(member, listed)
        # The "data" filter refuses links, devices and absolute or escaping names again.
        tar.extractall(data_dir, members=members, filter="data")
    _protect_secrets(data_dir / SECRETS_DIR)
    problems = verify_data_dir(data_dir, manifest)
    if problems:
        raise BackupError(
            f"restored data in {data_dir} does not match the backup: " + "; ".join(problems)
        )
    return manifest


def verify_data_dir(
    data_dir: Path, manifest: BackupManifest, catalog_url: str | None = None
) -> list[str]:
    """Everything in ``data_dir`` that differs from ``manifest`` (empty: all verified).

    Args:
        data_dir: A restored data directory.
        manifest: The backup's manifest.
        catalog_url: The catalog to count; default the SQLite file in ``data_dir``.
    """
    problems = []
    for entry in manifest.files:
        path = data_dir / entry.path
        if not path.is_file():
            problems.append(f"{entry.path}: missing")
        elif path.stat().st_size != entry.size or _sha256(path) != entry.sha256:
            problems.append(f"{entry.path}: checksum differs")
    url = catalog_url or _url(data_dir / CATALOG_FILE)
    if manifest.catalog == "sqlite" or catalog_url is not None:
        rows = count_table_rows(url)
        for table, expected in manifest.table_rows.items():
            if rows.get(table) != expected:
                problems.append(
                    f"catalog table {table}: {rows.get(table)} rows, backup had {expected}"
                )
    rows_now = case_index_rows(data_dir / CASE_INDEX_DIR)
    if rows_now != manifest.case_index_rows:
        problems.append(f"case index: {rows_now} cases, backup had {manifest.case_index_rows}")
    return problems


def count_table_rows(catalog_url: str) -> dict[str, int]:
    """Rows of every catalog table (the schema is created if missing, as the service does)."""
    catalog = Catalog.open(catalog_url)
    try:
        with catalog.read_session() as session:
            return {
                table.name: int(session.scalar(select(func.count()).select_from(table)) or 0)
                for table in Base.metadata.sorted_tables
            }
    finally:
        catalog.close()


def case_index_rows(index_dir: Path) -> int | None:
    """Cases in the index at ``index_dir``; ``None`` when there is none."""
    if not index_dir.is_dir():
        return None
    from multimodal_rag.index import CaseIndex

    try:
        return len(CaseIndex.open(index_dir))
    except ValueError:  # a folder without a case table
        return None


def _snapshot_catalog(catalog_url: str, target: Path) -> Path | None:
    """Copy a SQLite catalog consistently to ``target``; ``None`` for other databases."""
    prefix = "sqlite:///"
    if not catalog_url.startswith(prefix):
        return None
    source = Path(catalog_url.removeprefix(prefix))
    if not source.is_file():
        raise BackupError(f"catalog {source} does not exist")
    with (
        closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as src,
        closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)
    return target


def _data_files(data_dir: Path) -> Iterator[tuple[Path, str]]:
    """Every regular file under ``data_dir`` except the live catalog and in-flight parts."""
    for root, dirs, files in os.walk(data_dir):
        relative_root = Path(root).relative_to(data_dir)
        dirs[:] = sorted(d for d in dirs if (relative_root / d).as_posix() not in _SKIPPED)
        for name in sorted(files):
            path = Path(root) / name
            relative = (relative_root / name).as_posix()
            if relative not in _SKIPPED and path.is_file() and not path.is_symlink():
                yield path, relative


def _check_member(member: tarfile.TarInfo, listed: set[str]) -> None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise BackupError(f"archive member {member.name!r} would be written outside the target")
    if not member.isfile():
        raise BackupError(f"archive member {member.name!r} is not a plain file")
    if member.name not in listed:
        raise BackupError(f"archive member {member.name!r} is not in {MANIFEST_NAME}")


def _protect_secrets(secrets: Path) -> None:
    """Owner-only modes on restored secrets, whatever the extraction's umask gave them."""
    if secrets.is_dir():
        secrets.chmod(0o700)
        for path in secrets.iterdir():
            path.chmod(0o600)


def _entry(path: Path, name: str) -> BackupEntry:
    return BackupEntry(path=name, size=path.stat().st_size, sha256=_sha256(path))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(datetime.now(UTC).timestamp())
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(data))


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def manifest_summary(manifest: BackupManifest) -> dict[str, Any]:
    """A short, printable summary (counts and total size) of a manifest."""
    return {
        "created_at": manifest.created_at,
        "catalog": manifest.catalog,
        "files": len(manifest.files),
        "bytes": sum(entry.size for entry in manifest.files),
        "table_rows": manifest.table_rows,
        "case_index_rows": manifest.case_index_rows,
        "secrets_included": manifest.secrets_included,
    }
