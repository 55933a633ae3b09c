"""A private PostgreSQL server for tests: Debian's binaries, a temporary cluster, Unix socket only.

The server listens on no TCP port at all (``listen_addresses=''``); clients reach it
through a socket in the cluster's folder. It runs as the ``postgres`` user (initdb refuses
root) and is stopped and deleted by the fixture that started it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import count
from pathlib import Path

START_TIMEOUT_S = 60


def unavailable_reason() -> str | None:
    """Why a private PostgreSQL cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root to run PostgreSQL as the postgres user"
    if not _bin_dir():
        return "Debian's postgresql package is not installed"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres user"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed"
    return None


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Start a throwaway cluster; stop and delete it afterwards."""
    bin_dir = _bin_dir()
    assert bin_dir is not None, unavailable_reason()
    # Not under pytest's tmp folders: they are 0700 root, the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="mmdx-pg-"))
    os.chmod(root, 0o755)
    shutil.chown(root, "postgres")
    data = root / "data"
    as_postgres = ["runuser", "-u", "postgres", "--"]
    try:
        subprocess.run(
            [*as_postgres, f"{bin_dir}/initdb", "-D", str(data), "-A", "trust", "-U", "postgres",
             "--no-sync"],
            check=True, capture_output=True, timeout=START_TIMEOUT_S,
        )  # fmt: skip
        subprocess.run(
            [*as_postgres, f"{bin_dir}/pg_ctl", "-D", str(data), "-w", "-l", str(root / "log"),
             "-o", f"-c listen_addresses='' -k {root} -c fsync=on", "start"],
            check=True, capture_output=True, timeout=START_TIMEOUT_S,
        )  # fmt: skip
        yield PostgresServer(root)
    finally:
        subprocess.run(
            [*as_postgres, f"{bin_dir}/pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True, timeout=START_TIMEOUT_S,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


class PostgresServer:
    """A running throwaway cluster: new empty databases on demand."""

    def __init__(self, socket_dir: Path) -> None:
        self.socket_dir = socket_dir
        self._numbers = count(1)

    def new_database(self) -> str:
        """Create an empty database; return its SQLAlchemy URL."""
        import psycopg

        name = f"mmdx_test_{next(self._numbers)}"
        with psycopg.connect(
            host=str(self.socket_dir), user="postgres", dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://postgres@/{name}?host={self.socket_dir}"


def _bin_dir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return str(Path(found[-1]).parent) if found else None
