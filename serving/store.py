"""The study store: received DICOM files on disk, one folder per study and series.

Layout: ``<root>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. Every
UID is checked before it becomes a path component, so a hostile UID (``..``, a slash,
an absolute path) can never name a file outside the store.

A file is made durable before :meth:`StudyStore.put` returns: its bytes are fsynced,
it is renamed into place (atomic on one filesystem: a reader sees the old file or the
new one, never half of one), and the folders whose entries changed are fsynced, so a
crash after a success status was sent cannot lose the instance. The first of those
flushes can be started early (:meth:`StudyStore.sync_soon`), so that it runs while the
caller validates the file; ``put`` still waits for it before the rename.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

# Digits separated by single dots: no empty component, no leading or trailing dot.
# Looser than PS3.5 9.1 (which also forbids leading zeros) because the store only
# needs UIDs that are safe as file names; the ingestor checks the strict form.
_PATH_SAFE_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
MAX_UID_LENGTH = 64
INCOMING_DIR = ".incoming"
LOCKS_DIR = ".locks"
_LOCK_STRIPES = 256
_MAX_REMEMBERED_DIRS = 10_000
# Flushes started early run on this many threads; more concurrent receives queue.
_SYNC_WORKERS = 8


def check_uid(value: str, name: str) -> str:
    """``value`` if it is a UID that is safe as a path component.

    Raises:
        ValueError: Naming ``name`` and the reason.
    """
    if not isinstance(value, str) or not value:
        raise ValueError(f'Argument "{name}" must be a non-empty UID string, got {value!r}')
    if len(value) > MAX_UID_LENGTH:
        raise ValueError(
            f'Argument "{name}" must be at most {MAX_UID_LENGTH} characters, got {len(value)}'
        )
    if not _PATH_SAFE_UID.match(value):
        raise ValueError(
            f'Argument "{name}" must be digits separated by single dots, got {value[:80]!r}'
        )
    return value


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's data and metadata to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class StudyStore:
    """Received instances as files, filed by UID; also an ``InstanceLocator``.

    Args:
        root: The store folder (created if missing). Receivers write into
            :meth:`temp_dir`, which lies inside it, so that :meth:`put` is a rename.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._incoming = self.root / INCOMING_DIR
        self._incoming.mkdir(parents=True, exist_ok=True)
        self._locks = self.root / LOCKS_DIR
        self._locks.mkdir(exist_ok=True)
        fsync_path(self.root.parent)
        fsync_path(self.root)
        # Folders known to exist with their entry durable in the parent folder.
        self._durable_dirs: set[Path] = {self.root}
        self._dirs_lock = threading.Lock()
        # Threads start on first use, so a store that never syncs early costs nothing.
        self._syncer = ThreadPoolExecutor(_SYNC_WORKERS, thread_name_prefix="mmdx-store-sync")

    def temp_dir(self) -> Path:
        """A folder on the store's filesystem for files being received."""
        return self._incoming

    def new_temp_file(self, suffix: str = ".part") -> Path:
        """Create an empty, uniquely named file in :meth:`temp_dir` and return its path."""
        descriptor, name = tempfile.mkstemp(suffix=suffix, dir=self._incoming)
        os.close(descriptor)
        return Path(name)

    def sync_soon(self, temp_path: Path) -> Future[None]:
        """Start flushing a complete received file's bytes to disk, in the background.

        Pass the returned future to :meth:`put` as ``synced``. The flush (a few
        milliseconds on a busy disk) then overlaps whatever the caller does meanwhile,
        such as reading and checking the file, instead of adding to it. The file must
        not be written to after this call.
        """
        try:
            return self._syncer.submit(fsync_path, temp_path)
        except RuntimeError:  # closed, or the interpreter is exiting: flush here instead
            done: Future[None] = Future()
            try:
                fsync_path(temp_path)
                done.set_result(None)
            except OSError as exc:
                done.set_exception(exc)
            return done

    def close(self) -> None:
        """Wait for flushes in progress and stop their threads (an idle store has none)."""
        self._syncer.shutdown(wait=True)

    def path_for(
        self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str
    ) -> Path:
        """Where an instance is (or would be) stored.

        Raises:
            ValueError: A UID is not digits and dots, or is longer than 64 characters.
        """
        return (
            self.root
            / check_uid(study_instance_uid, "study_instance_uid")
            / check_uid(series_instance_uid, "series_instance_uid")
            / f"{check_uid(sop_instance_uid, 'sop_instance_uid')}.dcm"
        )

    def study_dir(self, study_instance_uid: str) -> Path:
        """The folder of one study (it may not exist)."""
        return self.root / check_uid(study_instance_uid, "study_instance_uid")

    def put(
        self,
        temp_path: Path,
        *,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_instance_uid: str,
        synced: Future[None] | None = None,
    ) -> Path:
        """Move a complete received file into the store, durably, and return its new path.

        ``temp_path`` must lie on the store's filesystem (in :meth:`temp_dir`), so the
        move is a rename. A file already stored under these UIDs is replaced atomically.
        ``synced`` is the flush :meth:`sync_soon` started for ``temp_path``: it is
        waited for instead of flushing again.

        Raises:
            ValueError: A UID is not safe as a path component.
            OSError: The file cannot be synced or moved (another filesystem: EXDEV).
        """
        target = self.path_for(study_instance_uid, series_instance_uid, sop_instance_uid)
        self._ensure_durable_dir(target.parent)
        # The bytes must be on disk before the name points at them.
        if synced is None:
            fsync_path(temp_path)
        else:
            synced.result()  # re-raises the flush's OSError
        os.replace(temp_path, target)
        fsync_path(target.parent)
        return target

    @contextmanager
    def instance_lock(self, sop_instance_uid: str) -> Iterator[None]:
        """Hold an exclusive lock on one SOP Instance UID, across threads and processes.

        Writers check the catalog, move the file in and catalogue it under this lock,
        so two copies of one instance received at once cannot overwrite each other.
        UIDs share one of a fixed set of lock files (by hash), so the set stays small.
        """
        stripe = zlib.crc32(sop_instance_uid.encode()) % _LOCK_STRIPES
        # flock locks belong to the open file, so each holder opens its own: threads of
        # one process exclude each other as separate processes do.
        with (self._locks / f"{stripe:03d}.lock").open("a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def instance_path(
        self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str
    ) -> Path | None:
        """The stored file, or ``None`` when it is not stored (or a UID is not valid)."""
        try:
            path = self.path_for(study_instance_uid, series_instance_uid, sop_instance_uid)
        except ValueError:
            return None
        return path if path.is_file() else None

    def study_files(self, study_instance_uid: str) -> list[Path]:
        """The stored files of one study, sorted by series then SOP Instance UID."""
        folder = self.study_dir(study_instance_uid)
        if not folder.is_dir():
            return []
        return sorted(folder.glob("*/*.dcm"))

    def remove_stale_temp_files(self, *, older_than_s: float, now: float | None = None) -> int:
        """Delete files left in :meth:`temp_dir` by receives that never finished.

        Returns:
            How many files were deleted.
        """
        cutoff = (time.time() if now is None else now) - older_than_s
        removed = 0
        for path in self._incoming.iterdir():
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:  # another process cleaned it or moved it in
                continue
        return removed

    def _ensure_durable_dir(self, folder: Path) -> None:
        """Create ``folder`` (and missing parents), each made durable in its parent.

        A folder counts as durable only once its parent was fsynced after it was
        created, so a second writer never relies on a folder whose entry could still
        vanish in a crash.
        """
        with self._dirs_lock:
            if folder in self._durable_dirs:
                return
        if folder.parent != self.root:
            self._ensure_durable_dir(folder.parent)
        folder.mkdir(exist_ok=True)
        fsync_path(folder.parent)
        with self._dirs_lock:
            if len(self._durable_dirs) >= _MAX_REMEMBERED_DIRS:
                # Forgetting only costs a repeated mkdir and fsync; memory stays bounded.
                self._durable_dirs = {self.root}
            self._durable_dirs.add(folder)
