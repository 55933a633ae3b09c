"""The catalog's tests again, on PostgreSQL (the scale-out catalog, through a URL).

Every test of ``tests/serving/test_catalog.py`` that takes the ``catalog`` fixture is
imported here and runs against a fresh database on a private PostgreSQL server.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from serving.catalog import Catalog
from tests.integration.postgres import PostgresServer, postgres_server, unavailable_reason
from tests.serving.test_catalog import (  # noqa: F401  (collected here with this catalog)
    test_a_series_cannot_move_to_another_study,
    test_a_study_is_due_once_stable_and_queued_once,
    test_bad_filters_raise_naming_the_attribute,
    test_concurrent_claims_take_each_job_once,
    test_failure_keeps_the_reason_and_is_not_retried,
    test_instances_queued_before_the_claim_are_covered_by_the_job,
    test_lifecycle_and_reprocessing_after_new_instances,
    test_limit_and_offset_page_in_date_order,
    test_lookup_tells_a_catalogued_instance_and_the_owner_of_its_series,
    test_naive_timestamps_are_refused,
    test_record_is_idempotent_on_sop_instance_uid,
    test_recording_keeps_the_latest_receipt_and_shares_patients,
    test_results_latest_wins,
    test_series_and_instance_searches,
    test_study_matching,
    test_study_rows_carry_attributes_and_counts,
    three_studies,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with postgres_server() as server:
        yield server


@pytest.fixture
def catalog(postgres: PostgresServer) -> Iterator[Catalog]:
    catalog = Catalog.open(postgres.new_database())
    yield catalog
    catalog.close()
