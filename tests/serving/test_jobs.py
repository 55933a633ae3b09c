"""The scheduler queues stable studies; the runner processes them and survives failures."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from serving.catalog import Catalog, InstanceAttributes, utc_now
from serving.jobs import JobRunner, JobScheduler

T0 = datetime(2024, 6, 4, 12, 0, tzinfo=UTC)


def record(catalog: Catalog, study: str, sop: str, received_at: datetime) -> None:
    catalog.record_instance(
        InstanceAttributes(
            study_instance_uid=study,
            series_instance_uid=f"{study}.1",
            sop_instance_uid=sop,
            sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            file_path=f"{study}/{study}.1/{sop}.dcm",
            size_bytes=10,
            received_via="c-store",
            received_at=received_at,
        )
    )


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.sqlite'}")
    yield catalog
    catalog.close()


def test_tick_queues_stable_studies_and_requeues_after_new_instances(catalog: Catalog) -> None:
    scheduler = JobScheduler(catalog, stable_after_s=10)
    record(catalog, "1.2.1", "1.2.1.1.1", T0)
    record(catalog, "1.2.2", "1.2.2.1.1", T0 + timedelta(seconds=5))
    assert scheduler.tick(T0 + timedelta(seconds=9)) == []
    assert [job.study_instance_uid for job in scheduler.tick(T0 + timedelta(seconds=10))] == [
        "1.2.1"
    ]
    assert [job.study_instance_uid for job in scheduler.tick(T0 + timedelta(seconds=15))] == [
        "1.2.2"
    ]
    assert scheduler.tick(T0 + timedelta(seconds=60)) == []

    runner = JobRunner(catalog, lambda study: {"study": study})
    assert runner.run_once(T0 + timedelta(seconds=61)) is not None
    record(catalog, "1.2.1", "1.2.1.1.2", T0 + timedelta(seconds=70))  # more arrive later
    assert [job.study_instance_uid for job in scheduler.tick(T0 + timedelta(seconds=80))] == [
        "1.2.1"
    ]


def test_run_once_stores_results_and_fails_on_errors(catalog: Catalog) -> None:
    def process(study: str) -> Mapping[str, Any]:
        if study == "1.2.2":
            raise RuntimeError("no MR series to classify")
        if study == "1.2.3":
            return {"probability": object()}
        return {"label": "normal", "model_versions": {"mri": "0.3"}}

    for study in ("1.2.1", "1.2.2", "1.2.3"):
        record(catalog, study, f"{study}.1.1", T0)
    JobScheduler(catalog, stable_after_s=1).tick(T0 + timedelta(seconds=2))
    runner = JobRunner(catalog, process)

    done, failed, not_json = (runner.run_once(T0 + timedelta(seconds=3)) for _ in range(3))
    assert runner.run_once() is None
    assert done is not None and done.state == "done"
    assert failed is not None
    assert (failed.state, failed.reason) == ("failed", "RuntimeError: no MR series to classify")
    assert not_json is not None and not_json.state == "failed"
    assert not_json.reason is not None and not_json.reason.startswith("result is not JSON")
    result = catalog.latest_result("1.2.1")
    assert result is not None and result.model_versions == {"mri": "0.3"}
    assert catalog.latest_result("1.2.2") is None


def test_background_runner_processes_due_studies_and_stops(catalog: Catalog) -> None:
    processed = threading.Event()
    seen: list[str] = []

    def process(study: str) -> Mapping[str, Any]:
        seen.append(study)
        processed.set()
        return {"ok": True}

    record(catalog, "1.2.1", "1.2.1.1.1", utc_now() - timedelta(seconds=1))
    scheduler = JobScheduler(catalog, stable_after_s=0.1)
    runner = JobRunner(catalog, process, scheduler=scheduler, poll_interval_s=0.05)
    runner.start()
    try:
        assert processed.wait(10)
    finally:
        assert runner.stop(timeout_s=10)
    assert seen == ["1.2.1"]
    assert [job.state for job in catalog.jobs.list_jobs()] == ["done"]


def test_start_resumes_a_job_a_crash_left_processing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    crashed = Catalog.open(url)
    record(crashed, "1.2.1", "1.2.1.1.1", T0)
    crashed.jobs.enqueue("1.2.1", now=T0)
    assert crashed.jobs.claim_next(now=T0) is not None
    crashed.close()

    catalog = Catalog.open(url)
    done = threading.Event()

    def process(study: str) -> Mapping[str, Any]:
        done.set()
        return {"study": study}

    runner = JobRunner(catalog, process, poll_interval_s=0.05)
    runner.start()
    try:
        assert done.wait(10)
    finally:
        assert runner.stop(timeout_s=10)
    # stop() joined the thread, so the job finished process() and was marked done.
    (job,) = catalog.jobs.list_jobs()
    assert (job.state, job.attempts) == ("done", 2)
    catalog.close()


def test_stop_times_out_while_a_job_hangs_and_the_job_stays_processing(
    catalog: Catalog,
) -> None:
    release = threading.Event()
    started = threading.Event()

    def process(study: str) -> Mapping[str, Any]:
        started.set()
        release.wait(10)
        return {}

    record(catalog, "1.2.1", "1.2.1.1.1", T0)
    catalog.jobs.enqueue("1.2.1", now=T0)
    runner = JobRunner(catalog, process, poll_interval_s=0.05)
    runner.start()
    try:
        assert started.wait(10)
        assert runner.stop(timeout_s=0.1) is False
        assert catalog.jobs.list_jobs()[0].state == "processing"
    finally:
        release.set()
        assert runner.stop(timeout_s=10)
