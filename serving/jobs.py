"""Process studies once they are stable: a scheduler that queues them, a runner that works.

:class:`JobScheduler` turns "no instance came for N seconds" into queued jobs;
:class:`JobRunner` claims queued jobs one at a time and calls the injected pipeline
``process(study_instance_uid) -> dict``. A pipeline error fails that job with the
reason and the runner goes on; a crash leaves the job ``processing``, and the next
start requeues it (:meth:`serving.catalog.JobQueue.resume_unfinished`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from serving.catalog import Catalog, JobRecord, ResumeReport, utc_now

logger = logging.getLogger(__name__)

Process = Callable[[str], Mapping[str, Any]]
DEFAULT_MAX_ATTEMPTS = 3


class JobScheduler:
    """Queues a job for every study that is due.

    Args:
        catalog: The catalog holding studies and jobs.
        stable_after_s: Seconds without a new instance before a study is processed
            (``settings.listener.stable_after_s``).
    """

    def __init__(self, catalog: Catalog, *, stable_after_s: float) -> None:
        if stable_after_s <= 0:
            raise ValueError(f'Argument "stable_after_s" must be positive, got {stable_after_s}')
        self._catalog = catalog
        self.stable_after_s = stable_after_s

    def tick(self, now: datetime | None = None) -> list[JobRecord]:
        """Queue the due studies; returns the jobs queued now."""
        now = now or utc_now()
        queued = []
        for study_uid in self._catalog.jobs.due_studies(
            now=now, stable_after_s=self.stable_after_s
        ):
            job = self._catalog.jobs.enqueue(study_uid, now=now)
            if job is not None:
                queued.append(job)
        if queued:
            logger.info("queued %d stable studies", len(queued))
        return queued


class JobRunner:
    """Claims queued jobs and runs the pipeline on them, in a background thread.

    Args:
        catalog: The catalog holding the jobs.
        process: The pipeline: takes a Study Instance UID, returns the result payload
            (a JSON-serialisable mapping; its ``"model_versions"`` entry, if any, is
            also stored on its own).
        scheduler: Ticked before each round of work, so one thread does both.
        poll_interval_s: Wait between rounds when no job is queued.
        max_attempts: Interrupted runs allowed before a job is given up as failed.
    """

    def __init__(
        self,
        catalog: Catalog,
        process: Process,
        *,
        scheduler: JobScheduler | None = None,
        poll_interval_s: float = 1.0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        if poll_interval_s <= 0:
            raise ValueError(f'Argument "poll_interval_s" must be positive, got {poll_interval_s}')
        self._catalog = catalog
        self._process = process
        self._scheduler = scheduler
        self._poll_interval_s = poll_interval_s
        self.max_attempts = max_attempts
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def resume_unfinished(self, now: datetime | None = None) -> ResumeReport:
        """Requeue jobs a crash left processing (failing those tried ``max_attempts`` times)."""
        report = self._catalog.jobs.resume_unfinished(
            max_attempts=self.max_attempts, now=now or utc_now()
        )
        if report.requeued or report.gave_up:
            logger.warning(
                "resumed %d interrupted jobs, gave up %d",
                len(report.requeued),
                len(report.gave_up),
            )
        return report

    def run_once(self, now: datetime | None = None) -> JobRecord | None:
        """Claim one queued job and run it to done or failed.

        Returns:
            The job as it ended, or ``None`` when no job was queued.
        """
        job = self._catalog.jobs.claim_next(now=now or utc_now())
        if job is None:
            return None
        try:
            payload = dict(self._process(job.study_instance_uid))
        except Exception as exc:  # any pipeline error fails this job, not the runner
            logger.warning("job %d failed: %s", job.id, type(exc).__name__)
            reason = f"{type(exc).__name__}: {exc}"
            return self._catalog.jobs.fail(job.id, reason, now=utc_now())
        try:
            json.dumps(payload)
        except (TypeError, ValueError) as exc:
            return self._catalog.jobs.fail(job.id, f"result is not JSON: {exc}", now=utc_now())
        model_versions = payload.get("model_versions")
        self._catalog.jobs.finish(
            job.id,
            payload,
            model_versions=model_versions if isinstance(model_versions, Mapping) else None,
            now=utc_now(),
        )
        logger.info("job %d done", job.id)
        return self._catalog.jobs.get(job.id)

    def run_pending(self) -> int:
        """Tick the scheduler and run queued jobs until none is left; returns how many ran."""
        if self._scheduler is not None:
            self._scheduler.tick()
        count = 0
        while not self._stopping.is_set() and self.run_once() is not None:
            count += 1
        return count

    def wake(self) -> None:
        """Look for work now instead of at the next poll (after an ingest, say)."""
        self._wake.set()

    def start(self) -> None:
        """Resume interrupted jobs, then work in a background thread until :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the job runner is already running")
        self.resume_unfinished()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="mmdx-job-runner", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop after the current job; returns whether the thread ended within ``timeout_s``.

        A job still running at the timeout stays ``processing`` and is requeued at the
        next start.
        """
        self._stopping.set()
        self._wake.set()
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        stopped = not self._thread.is_alive()
        if stopped:
            self._thread = None
        return stopped

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.run_pending()
            except Exception:  # the catalog unreachable for a while: log, wait, retry
                logger.exception("job runner round failed")
            self._wake.wait(self._poll_interval_s)
            self._wake.clear()
