"""The ingest side as one long-running unit: store, catalog, ingestor, DICOM listener, jobs.

``mmdx listen`` runs it alone (an ingest node); a process that also classifies passes its
pipeline as ``process`` and the same runtime works the jobs too. Everything a restart
needs is on disk: instances are durable before their success status is sent, and jobs
are rows in the catalog, so a crash (SIGKILL, power loss) loses no acknowledged instance
and no job.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType, TracebackType

from serving.catalog import Catalog, ResumeReport, utc_now
from serving.dicom_listener import DicomListener
from serving.ingest import InstanceIngestor
from serving.jobs import DEFAULT_MAX_ATTEMPTS, JobRunner, JobScheduler, Process
from serving.settings import Settings
from serving.store import StudyStore

logger = logging.getLogger(__name__)

# A receive in progress rewrites its file with every PDU, and pynetdicom drops an
# association after its network timeout (60 s by default), so a temporary file
# untouched for ten minutes belongs to no live receive, in this process or another.
DEFAULT_STALE_TEMP_AFTER_S = 600.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class IngestRuntime:
    """The DICOM listener, the store and catalog behind it, and the job scheduler or runner.

    Built from :class:`~serving.settings.Settings`: the store in ``settings.store_dir``,
    the catalog at ``settings.resolved_catalog_url``, the listener on
    ``settings.dicom_host:dicom_port`` as ``settings.dicom_ae_title``.

    Args:
        settings: The installation's settings.
        process: The pipeline run on each stable study (Study Instance UID in, result
            payload out). ``None`` runs an ingest-only node: stable studies are still
            queued as jobs, for a processing node to claim.
        poll_interval_s: How often stable studies are looked for (and queued jobs, when
            processing).
        stale_temp_after_s: At start, files in the store's incoming folder untouched for
            this long are deleted (receives a crash cut short).
        max_attempts: Interrupted runs of a job allowed before it is given up as failed.

    A runtime is started once; :meth:`stop` closes the catalog.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        process: Process | None = None,
        poll_interval_s: float = 1.0,
        stale_temp_after_s: float = DEFAULT_STALE_TEMP_AFTER_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        if poll_interval_s <= 0:
            raise ValueError(f'Argument "poll_interval_s" must be positive, got {poll_interval_s}')
        if stale_temp_after_s < 0:
            raise ValueError(
                f'Argument "stale_temp_after_s" must be at least 0, got {stale_temp_after_s}'
            )
        self.settings = settings
        self.store = StudyStore(settings.store_dir)
        self.catalog = Catalog.open(settings.resolved_catalog_url)
        self.ingestor = InstanceIngestor(self.store, self.catalog)
        self.listener = DicomListener.from_settings(
            settings, self.ingestor, self.catalog, temp_dir=self.store.temp_dir()
        )
        self.scheduler = JobScheduler(self.catalog, stable_after_s=settings.listener.stable_after_s)
        self.runner: JobRunner | None = None
        if process is not None:
            self.runner = JobRunner(
                self.catalog,
                process,
                scheduler=self.scheduler,
                poll_interval_s=poll_interval_s,
                max_attempts=max_attempts,
            )
        self._poll_interval_s = poll_interval_s
        self._stale_temp_after_s = stale_temp_after_s
        self._max_attempts = max_attempts
        self._stopping = threading.Event()
        self._ticker: threading.Thread | None = None
        self._started = False

    @property
    def port(self) -> int:
        """The listener's bound TCP port (the free one picked when configured with 0)."""
        return self.listener.port

    def start(self) -> None:
        """Clean up after a crash, then listen and work in background threads; returns at once.

        Deletes stale incoming files, requeues jobs a crash left processing (only when
        this runtime processes: an ingest-only node must not requeue a job a live
        processing node is running), binds the listener, then starts the job runner (or,
        ingest-only, the scheduler alone).

        Raises:
            RuntimeError: The runtime was already started.
            OSError: The listener's address cannot be bound.
        """
        if self._started:
            raise RuntimeError("the ingest runtime was already started")
        self._started = True
        removed = self.store.remove_stale_temp_files(older_than_s=self._stale_temp_after_s)
        if removed:
            logger.warning("removed %d incomplete received files left by a crash", removed)
        try:
            if self.runner is not None:
                self.resume_unfinished()
            self.listener.start()
            if self.runner is not None:
                self.runner.start()
            else:
                self._ticker = threading.Thread(
                    target=self._tick_loop, name="mmdx-job-scheduler", daemon=True
                )
                self._ticker.start()
        except BaseException:
            self.stop()
            raise

    def resume_unfinished(self) -> ResumeReport:
        """Requeue the jobs a crash left ``processing`` (failing those tried too often).

        :meth:`start` calls it when this runtime processes jobs; call it on an
        ingest-only node only when no processing node is running.
        """
        if self.runner is not None:
            return self.runner.resume_unfinished()
        return self.catalog.jobs.resume_unfinished(max_attempts=self._max_attempts, now=utc_now())

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop listening (open associations are aborted), stop the jobs, close the catalog.

        A job still running after ``timeout_s`` stays ``processing`` and is requeued at
        the next start.
        """
        self.listener.stop()
        self._stopping.set()
        if self.runner is not None and not self.runner.stop(timeout_s):
            logger.warning("a job was still running at shutdown; it resumes at the next start")
        if self._ticker is not None:
            self._ticker.join(timeout_s)
            self._ticker = None
        self.store.close()
        self.catalog.close()

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Block until SIGTERM or SIGINT arrives (or ``timeout_s`` passes).

        Call it from the main thread (Python delivers signals there only).

        Returns:
            The signal number received, or ``None`` at the timeout.
        """
        received: list[int] = []
        arrived = threading.Event()

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            received.append(signum)
            arrived.set()

        previous = {number: signal.signal(number, on_signal) for number in _STOP_SIGNALS}
        try:
            arrived.wait(timeout_s)
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
        return received[0] if received else None

    def _tick_loop(self) -> None:
        while not self._stopping.wait(self._poll_interval_s):
            try:
                self.scheduler.tick()
            except Exception:  # the catalog unreachable for a while: log, retry next round
                logger.exception("job scheduler round failed")

    def __enter__(self) -> IngestRuntime:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
