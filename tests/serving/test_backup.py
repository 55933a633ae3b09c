"""Backup, restore and verify of a data directory: catalog, store, case index, models."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from imaging.synthetic.mr_dicom import write_mr_series
from multimodal_rag.index import CaseIndex
from serving.backup import (
    MANIFEST_NAME,
    BackupError,
    BackupManifest,
    count_table_rows,
    create_backup,
    restore_backup,
    verify_data_dir,
)
from serving.catalog import Catalog
from serving.ingest import InstanceIngestor
from serving.store import StudyStore
from tests.multimodal_rag.test_case_index import DIM, make_cases
from tests.synthetic_cases import make_mr_volume, make_study

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom")


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data directory as the service leaves it: 3 instances, 6 cases, a bundle, a key."""
    data = tmp_path / "data"
    store = StudyStore(data / "store")
    catalog = Catalog.open(f"sqlite:///{data / 'catalog.sqlite'}")
    ingestor = InstanceIngestor(store, catalog)
    pixels = np.arange(3 * 8 * 10, dtype=np.float32).reshape(3, 8, 10)
    files = write_mr_series(
        make_mr_volume(pixels), make_study(), out_dir=tmp_path / "mr", series_number=1,
        uid_seed="backup",
    )  # fmt: skip
    for path in files:
        assert ingestor.ingest_file(path, source=path.name, received_via="test").status == "stored"
    index = CaseIndex.open(data / "case_index", embedding_dim=DIM)
    index.add(make_cases(6))
    (data / "models").mkdir()
    (data / "models" / "mri.pt").write_bytes(b"weights" * 100)
    (data / "secrets").mkdir(mode=0o700)
    (data / "secrets" / "deid.key").write_text("k" * 64)
    (data / "secrets" / "deid.key").chmod(0o600)
    (data / "store" / ".incoming").mkdir(exist_ok=True)
    (data / "store" / ".incoming" / "part").write_bytes(b"half a file")
    # The catalog stays open (as under a running service) while the backup is taken.
    yield data
    store.close()
    catalog.close()


def test_backup_restore_verify_round_trip(data_dir: Path, tmp_path: Path) -> None:
    archive = tmp_path / "backups" / "mmdx.tar.gz"
    manifest = create_backup(data_dir, f"sqlite:///{data_dir / 'catalog.sqlite'}", archive)

    assert manifest.table_rows["instances"] == 3
    assert manifest.table_rows["studies"] == 1
    assert manifest.case_index_rows == 6
    names = {entry.path for entry in manifest.files}
    assert "catalog.sqlite" in names and "models/mri.pt" in names
    assert sum(name.startswith("store/") for name in names) == 3
    assert not any(name.startswith(("secrets/", "store/.incoming")) for name in names)
    assert any(name.startswith("case_index/") for name in names)

    restored = tmp_path / "restored"
    again = restore_backup(archive, restored)

    assert again == manifest
    assert count_table_rows(f"sqlite:///{restored / 'catalog.sqlite'}")["instances"] == 3
    assert len(CaseIndex.open(restored / "case_index")) == 6
    assert (restored / "models" / "mri.pt").read_bytes() == b"weights" * 100
    assert not (restored / "secrets").exists()
    assert verify_data_dir(restored, manifest) == []


def test_secrets_only_when_asked(data_dir: Path, tmp_path: Path) -> None:
    archive = tmp_path / "with-key.tar.gz"
    create_backup(
        data_dir, f"sqlite:///{data_dir / 'catalog.sqlite'}", archive, include_secrets=True
    )
    restored = tmp_path / "restored"
    manifest = restore_backup(archive, restored)

    assert manifest.secrets_included
    assert (restored / "secrets" / "deid.key").read_text() == "k" * 64
    assert (restored / "secrets" / "deid.key").stat().st_mode & 0o077 == 0


def test_verify_names_each_damaged_part(data_dir: Path, tmp_path: Path) -> None:
    archive = tmp_path / "mmdx.tar.gz"
    manifest = create_backup(data_dir, f"sqlite:///{data_dir / 'catalog.sqlite'}", archive)
    restored = tmp_path / "restored"
    restore_backup(archive, restored)
    store_file = next(e.path for e in manifest.files if e.path.startswith("store/"))
    (restored / store_file).write_bytes(b"tampered")
    (restored / "models" / "mri.pt").unlink()
    catalog = Catalog.open(f"sqlite:///{restored / 'catalog.sqlite'}")
    with catalog.write_session() as session:
        session.execute(text("DELETE FROM audit_events"))
        session.execute(text("DELETE FROM instances WHERE id IN (SELECT MIN(id) FROM instances)"))
    catalog.close()

    problems = verify_data_dir(restored, manifest)

    assert f"{store_file}: checksum differs" in problems
    assert "models/mri.pt: missing" in problems
    assert "catalog table instances: 2 rows, backup had 3" in problems


def test_restore_refuses_a_non_empty_target(data_dir: Path, tmp_path: Path) -> None:
    archive = tmp_path / "mmdx.tar.gz"
    create_backup(data_dir, f"sqlite:///{data_dir / 'catalog.sqlite'}", archive)
    target = tmp_path / "busy"
    target.mkdir()
    (target / "catalog.sqlite").write_bytes(b"live data")

    with pytest.raises(BackupError, match="not empty"):
        restore_backup(archive, target)
    assert (target / "catalog.sqlite").read_bytes() == b"live data"


@pytest.mark.parametrize(
    ("name", "kind", "reason"),
    [
        ("../escape.txt", tarfile.REGTYPE, "outside the target"),
        ("/etc/evil", tarfile.REGTYPE, "outside the target"),
        ("models/link", tarfile.SYMTYPE, "not a plain file"),
        ("models/extra.pt", tarfile.REGTYPE, "not in mmdx-backup.json"),
    ],
)
def test_restore_refuses_hostile_members(
    tmp_path: Path, name: str, kind: bytes, reason: str
) -> None:
    manifest = BackupManifest(
        created_at="2026-01-01T00:00:00+00:00", catalog="external", table_rows={},
        case_index_rows=None, secrets_included=False,
    )  # fmt: skip
    archive = tmp_path / "hostile.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for member_name, data, member_type in (
            (MANIFEST_NAME, manifest.to_json(), tarfile.REGTYPE),
            (name, b"payload", kind),
        ):
            info = tarfile.TarInfo(member_name)
            info.type = member_type
            if member_type == tarfile.SYMTYPE:
                info.linkname = "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

    with pytest.raises(BackupError, match=reason):
        restore_backup(archive, tmp_path / "target")
    assert not (tmp_path / "escape.txt").exists()


def test_archive_inside_the_data_dir_is_refused(data_dir: Path) -> None:
    with pytest.raises(BackupError, match="must not lie inside"):
        create_backup(data_dir, f"sqlite:///{data_dir / 'catalog.sqlite'}", data_dir / "b.tar.gz")


def test_cli_backup_then_restore(data_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from serving.cli import app
    from serving.settings import get_settings

    env = {"MMDX_DATA_DIR": str(data_dir)}
    get_settings.cache_clear()
    runner = CliRunner()
    archive = tmp_path / "cli.tar.gz"
    made = runner.invoke(app, ["backup", str(archive)], env=env)
    assert made.exit_code == 0, made.output
    assert '"case_index_rows": 6' in made.output

    restored = runner.invoke(app, ["restore", str(archive), "--data-dir", str(tmp_path / "r")])
    assert restored.exit_code == 0, restored.output
    assert (tmp_path / "r" / "catalog.sqlite").is_file()
    again = runner.invoke(app, ["restore", str(archive), "--data-dir", str(tmp_path / "r")])
    assert again.exit_code == 1 and "not empty" in again.output
    get_settings.cache_clear()
