"""The catalog on SQLite: recording, QIDO/C-FIND matching, the job lifecycle, results."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from serving.catalog import Catalog, CatalogConflictError, InstanceAttributes, InstanceLookup
from serving.catalog.tables import Patient, Study

T0 = datetime(2024, 6, 4, 12, 0, 0, tzinfo=UTC)
MR, US = "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.3.1"


def instance(study: str, series: str, sop: str, **overrides: Any) -> InstanceAttributes:
    defaults: dict[str, Any] = {
        "study_instance_uid": study,
        "series_instance_uid": series,
        "sop_instance_uid": sop,
        "sop_class_uid": MR,
        "transfer_syntax_uid": "1.2.840.10008.1.2.1",
        "file_path": f"{study}/{series}/{sop}.dcm",
        "size_bytes": 1000,
        "received_via": "c-store",
        "received_at": T0,
        "modality": "MR",
    }
    return InstanceAttributes(**{**defaults, **overrides})


@pytest.fixture
def catalog(tmp_path: Path) -> Any:
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'db' / 'catalog.sqlite'}")
    yield catalog
    catalog.close()


@pytest.fixture
def three_studies(catalog: Catalog) -> Catalog:
    """A: MR, 2 instances; B: US; C: MR and US. Dates 2024-01-01, 03-15, 12-31."""
    a = {
        "patient_id": "P1",
        "patient_name": "Doe^Jane",
        "study_date": "20240101",
        "study_time": "081500",
        "accession_number": "ACC1",
        "study_description": "MRI BRAIN",
    }
    b = {
        "patient_id": "P2",
        "patient_name": "Roe^Richard",
        "study_date": "20240315",
        "study_time": "143000",
        "accession_number": "ACC2",
        "study_description": "Echo TTE",
    }
    c = {
        "patient_id": "P3",
        "patient_name": "Doe^John",
        "study_date": "20241231",
        "study_time": "235959",
        "accession_number": "acc3",
        "study_description": "MRI KNEE",
    }
    rows = [
        instance("1.2.3.1", "1.2.3.1.1", "1.2.3.1.1.1", series_number=1, instance_number=1, **a),
        instance("1.2.3.1", "1.2.3.1.1", "1.2.3.1.1.2", series_number=1, instance_number=2, **a),
        instance("1.2.3.2", "1.2.3.2.1", "1.2.3.2.1.1", modality="US", sop_class_uid=US, **b),
        instance("1.2.3.3", "1.2.3.3.1", "1.2.3.3.1.1", series_number=1, **c),
        instance("1.2.3.3", "1.2.3.3.2", "1.2.3.3.2.1", modality="US", sop_class_uid=US, **c),
    ]
    for row in rows:
        assert catalog.record_instance(row)
    return catalog


def study_uids(rows: list[dict[str, str]]) -> list[str]:
    return [row["StudyInstanceUID"] for row in rows]


def test_record_is_idempotent_on_sop_instance_uid(catalog: Catalog) -> None:
    first = instance("1.2.3", "1.2.3.4", "1.2.3.4.5", patient_name="Doe^Jane")
    assert catalog.record_instance(first) is True
    assert catalog.record_instance(replace(first, size_bytes=5)) is False
    assert catalog.has_instance("1.2.3.4.5")
    (stored,) = catalog.list_instances("1.2.3")
    assert (stored.size_bytes, stored.file_path) == (1000, "1.2.3/1.2.3.4/1.2.3.4.5.dcm")
    assert catalog.search_studies({})[0]["NumberOfStudyRelatedInstances"] == "1"


def test_a_series_cannot_move_to_another_study(catalog: Catalog) -> None:
    catalog.record_instance(instance("1.2.3", "1.2.3.4", "1.2.3.4.5"))
    with pytest.raises(CatalogConflictError, match="SeriesInstanceUID"):
        catalog.record_instance(instance("1.2.9", "1.2.3.4", "1.2.3.4.6"))
    assert catalog.series_study_uid("1.2.3.4") == "1.2.3"
    assert not catalog.has_instance("1.2.3.4.6")


def test_lookup_tells_a_catalogued_instance_and_the_owner_of_its_series(
    catalog: Catalog,
) -> None:
    assert catalog.lookup_instance("1.2.3.4.5", "1.2.3.4") == InstanceLookup(False, None)
    catalog.record_instance(instance("1.2.3", "1.2.3.4", "1.2.3.4.5"))
    assert catalog.lookup_instance("1.2.3.4.5", "1.2.3.4") == InstanceLookup(True, "1.2.3")
    assert catalog.lookup_instance("1.2.3.4.6", "1.2.3.4") == InstanceLookup(False, "1.2.3")
    assert catalog.lookup_instance("1.2.3.4.6", "1.2.3.9") == InstanceLookup(False, None)


def test_recording_keeps_the_latest_receipt_and_shares_patients(catalog: Catalog) -> None:
    later = T0 + timedelta(minutes=5)
    catalog.record_instance(instance("1.2.3", "1.2.3.4", "1.2.3.4.5", received_at=later))
    catalog.record_instance(instance("1.2.3", "1.2.3.4", "1.2.3.4.6", received_at=T0))
    catalog.record_instance(instance("1.2.7", "1.2.7.1", "1.2.7.1.1", patient_id="P1"))
    catalog.record_instance(instance("1.2.8", "1.2.8.1", "1.2.8.1.1", patient_id="P1"))
    with catalog.read_session() as session:
        study = session.scalar(select(Study).where(Study.study_instance_uid == "1.2.3"))
        assert study is not None
        assert (study.first_received_at, study.last_received_at) == (later, later)
        patients = session.scalars(select(Patient.patient_key).order_by(Patient.id)).all()
    assert patients == ["study:1.2.3", "|P1"]
    assert [row["NumberOfStudyRelatedInstances"] for row in catalog.search_studies({})] == [
        "2",
        "1",
        "1",
    ]


def test_study_rows_carry_attributes_and_counts(three_studies: Catalog) -> None:
    rows = three_studies.search_studies({})
    assert study_uids(rows) == ["1.2.3.1", "1.2.3.2", "1.2.3.3"]
    assert rows[2] == {
        "StudyInstanceUID": "1.2.3.3",
        "StudyDate": "20241231",
        "StudyTime": "235959",
        "AccessionNumber": "acc3",
        "PatientName": "Doe^John",
        "PatientID": "P3",
        "StudyDescription": "MRI KNEE",
        "ModalitiesInStudy": "MR\\US",
        "NumberOfStudyRelatedSeries": "2",
        "NumberOfStudyRelatedInstances": "2",
    }


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"PatientName": "doe*"}, ["1.2.3.1", "1.2.3.3"]),
        ({"PatientName": "DOE^JANE"}, ["1.2.3.1"]),
        ({"PatientName": "D?e^J*"}, ["1.2.3.1", "1.2.3.3"]),
        ({"PatientName": "Doe"}, []),  # no wildcard: the whole value must match
        ({"AccessionNumber": "ACC*"}, ["1.2.3.1", "1.2.3.2"]),  # case-sensitive
        ({"AccessionNumber": "ACC_"}, []),  # "_" and "%" are literal, not wildcards
        ({"AccessionNumber": "ACC%"}, []),
        ({"StudyDescription": "MRI*"}, ["1.2.3.1", "1.2.3.3"]),
        ({"StudyDate": "20240101"}, ["1.2.3.1"]),
        ({"StudyDate": "20240301-"}, ["1.2.3.2", "1.2.3.3"]),
        ({"StudyDate": "-20240315"}, ["1.2.3.1", "1.2.3.2"]),
        ({"StudyDate": "20240102-20241230"}, ["1.2.3.2"]),
        ({"StudyTime": "1200-2359"}, ["1.2.3.2", "1.2.3.3"]),
        ({"StudyInstanceUID": "1.2.3.1,1.2.3.3"}, ["1.2.3.1", "1.2.3.3"]),
        ({"StudyInstanceUID": "1.2.3.2\\1.2.3.9"}, ["1.2.3.2"]),
        ({"ModalitiesInStudy": "US"}, ["1.2.3.2", "1.2.3.3"]),
        ({"ModalitiesInStudy": "MR", "PatientID": "P3"}, ["1.2.3.3"]),
        ({"PatientID": "", "StudyTime": "*"}, ["1.2.3.1", "1.2.3.2", "1.2.3.3"]),  # return keys
    ],
)
def test_study_matching(
    three_studies: Catalog, filters: dict[str, str], expected: list[str]
) -> None:
    assert study_uids(three_studies.search_studies(filters)) == expected


def test_limit_and_offset_page_in_date_order(three_studies: Catalog) -> None:
    assert study_uids(three_studies.search_studies({}, limit=2)) == ["1.2.3.1", "1.2.3.2"]
    assert study_uids(three_studies.search_studies({}, limit=1, offset=1)) == ["1.2.3.2"]
    assert three_studies.search_studies({}, offset=3) == []
    with pytest.raises(ValueError, match="negative"):
        three_studies.search_studies({}, offset=-1)


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"ReferringPhysicianName": "X"}, "ReferringPhysicianName"),
        ({"StudyDate": "2024-01-01"}, "StudyDate"),
        ({"StudyDate": "-"}, "StudyDate"),
        ({"SeriesNumber": "one"}, "SeriesNumber"),
        ({"NumberOfStudyRelatedSeries": "2"}, "computed"),
    ],
)
def test_bad_filters_raise_naming_the_attribute(
    three_studies: Catalog, filters: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        three_studies.search_series(filters)


def test_series_and_instance_searches(three_studies: Catalog) -> None:
    series = three_studies.search_series({"Modality": "MR"})
    assert [row["SeriesInstanceUID"] for row in series] == ["1.2.3.1.1", "1.2.3.3.1"]
    assert series[0] == {
        "StudyInstanceUID": "1.2.3.1",
        "SeriesInstanceUID": "1.2.3.1.1",
        "Modality": "MR",
        "SeriesNumber": "1",
        "NumberOfSeriesRelatedInstances": "2",
    }
    of_c = three_studies.search_series({}, study_instance_uid="1.2.3.3")
    assert [row["Modality"] for row in of_c] == ["MR", "US"]
    # Relational: an instance search may filter on study attributes.
    by_patient = three_studies.search_instances({"PatientID": "P1", "InstanceNumber": "2"})
    assert [row["SOPInstanceUID"] for row in by_patient] == ["1.2.3.1.1.2"]
    us = three_studies.search_instances({"SOPClassUID": US})
    assert [row["SOPInstanceUID"] for row in us] == ["1.2.3.2.1.1", "1.2.3.3.2.1"]
    scoped = three_studies.search_instances(
        {}, study_instance_uid="1.2.3.3", series_instance_uid="1.2.3.3.2", limit=5
    )
    assert [row["SOPInstanceUID"] for row in scoped] == ["1.2.3.3.2.1"]


# Jobs ------------------------------------------------------------------------------------


def test_a_study_is_due_once_stable_and_queued_once(catalog: Catalog) -> None:
    catalog.record_instance(instance("1.2.3", "1.2.3.4", "1.2.3.4.5", received_at=T0))
    jobs = catalog.jobs
    assert jobs.due_studies(now=T0 + timedelta(seconds=9), stable_after_s=10) == []
    assert jobs.due_studies(now=T0 + timedelta(seconds=10), stable_after_s=10) == ["1.2.3"]
    job = jobs.enqueue("1.2.3", now=T0 + timedelta(seconds=10))
    assert job is not None and (job.state, job.attempts) == ("received", 0)
    assert jobs.enqueue("1.2.3", now=T0 + timedelta(seconds=11)) is None
    assert jobs.due_studies(now=T0 + timedelta(seconds=60), stable_after_s=10) == []
    assert jobs.enqueue("9.9.9", now=T0) is None  # unknown study


def test_lifecycle_and_reprocessing_after_new_instances(catalog: Catalog) -> None:
    jobs = catalog.jobs
    catalog.record_instance(instance("1.2.3", "1.2.3.4", "1.2.3.4.5", received_at=T0))
    jobs.enqueue("1.2.3", now=T0 + timedelta(seconds=10))
    claimed = jobs.claim_next(now=T0 + timedelta(seconds=11))
    assert claimed is not None and (claimed.state, claimed.attempts) == ("processing", 1)
    assert jobs.claim_next(now=T0 + timedelta(seconds=11)) is None

    # An instance arrives while the job runs: not queued twice, but due once it ends.
    late = T0 + timedelta(seconds=12)
    catalog.record_instance(instance("1.2.3", "1.2.3.4", "1.2.3.4.6", received_at=late))
    assert jobs.due_studies(now=late + timedelta(seconds=10), stable_after_s=10) == []
    assert jobs.enqueue("1.2.3", now=late + timedelta(seconds=10)) is None

    result = jobs.finish(claimed.id, {"label": "normal"}, model_versions={"mri": "1.0"}, now=late)
    assert result.job_id == claimed.id
    assert jobs.due_studies(now=late + timedelta(seconds=10), stable_after_s=10) == ["1.2.3"]
    again = jobs.enqueue("1.2.3", now=late + timedelta(seconds=10))
    assert again is not None
    second = jobs.claim_next(now=late + timedelta(seconds=11))
    assert second is not None and second.id == again.id
    jobs.finish(second.id, {"label": "abnormal"}, now=late + timedelta(seconds=12))
    assert jobs.due_studies(now=late + timedelta(seconds=99), stable_after_s=10) == []
    latest = catalog.latest_result("1.2.3")
    assert latest is not None and latest.payload == {"label": "abnormal"}
    assert [job.state for job in jobs.list_jobs(study_instance_uid="1.2.3")] == ["done", "done"]
    with pytest.raises(ValueError, match="done, not processing"):
        jobs.fail(second.id, "late", now=late)


def test_instances_queued_before_the_claim_are_covered_by_the_job(catalog: Catalog) -> None:
    jobs = catalog.jobs
    catalog.record_instance(instance("1.2.3", "1.2.3.4", "1.2.3.4.5", received_at=T0))
    jobs.enqueue("1.2.3", now=T0 + timedelta(seconds=10))
    later = T0 + timedelta(seconds=11)
    catalog.record_instance(instance("1.2.3", "1.2.3.4", "1.2.3.4.6", received_at=later))
    job = jobs.claim_next(now=later)
    assert job is not None
    jobs.finish(job.id, {}, now=later)
    assert jobs.due_studies(now=later + timedelta(hours=1), stable_after_s=10) == []


def test_failure_keeps_the_reason_and_is_not_retried(catalog: Catalog) -> None:
    catalog.record_instance(instance("1.2.3", "1.2.3.4", "1.2.3.4.5"))
    catalog.jobs.enqueue("1.2.3", now=T0)
    job = catalog.jobs.claim_next(now=T0)
    assert job is not None
    failed = catalog.jobs.fail(job.id, "PredictionInputError: no usable series", now=T0)
    assert (failed.state, failed.reason) == ("failed", "PredictionInputError: no usable series")
    assert catalog.jobs.due_studies(now=T0 + timedelta(hours=1), stable_after_s=10) == []


def test_resume_unfinished_after_a_crash(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    catalog = Catalog.open(url)
    catalog.record_instance(instance("1.2.3", "1.2.3.4", "1.2.3.4.5"))
    catalog.jobs.enqueue("1.2.3", now=T0)
    assert catalog.jobs.claim_next(now=T0) is not None
    catalog.close()  # the process dies with the job processing

    for attempt in (2, 3):
        catalog = Catalog.open(url)
        report = catalog.jobs.resume_unfinished(max_attempts=3, now=T0)
        assert len(report.requeued) == 1 and report.gave_up == []
        job = catalog.jobs.claim_next(now=T0)
        assert job is not None and job.attempts == attempt
        catalog.close()  # and dies again

    catalog = Catalog.open(url)
    report = catalog.jobs.resume_unfinished(max_attempts=3, now=T0)
    assert report.requeued == [] and len(report.gave_up) == 1
    job = catalog.jobs.get(report.gave_up[0])
    assert job is not None and job.state == "failed"
    assert job.reason == "interrupted 3 times (service stopped mid-job)"
    catalog.close()


def test_concurrent_claims_take_each_job_once(catalog: Catalog) -> None:
    for index in range(8):
        catalog.record_instance(instance(f"1.2.{index}", f"1.2.{index}.1", f"1.2.{index}.1.1"))
        catalog.jobs.enqueue(f"1.2.{index}", now=T0)
    claimed: list[int] = []
    lock = threading.Lock()

    def claim_all() -> None:
        while (job := catalog.jobs.claim_next(now=T0)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=claim_all) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == 8


def test_results_latest_wins(catalog: Catalog) -> None:
    catalog.record_instance(instance("1.2.3", "1.2.3.4", "1.2.3.4.5"))
    assert catalog.latest_result("1.2.3") is None
    catalog.save_result("1.2.3", {"ef": 0.41}, now=T0)
    catalog.save_result("1.2.3", {"ef": 0.55}, model_versions={"echo": "2"}, now=T0)
    latest = catalog.latest_result("1.2.3")
    assert latest is not None
    assert (latest.payload, latest.model_versions) == ({"ef": 0.55}, {"echo": "2"})
    assert latest.created_at == T0


def test_naive_timestamps_are_refused(catalog: Catalog) -> None:
    with pytest.raises(Exception, match="time zone"):
        catalog.record_instance(
            instance("1.2.3", "1.2.3.4", "1.2.3.4.5", received_at=datetime(2024, 1, 1))
        )
