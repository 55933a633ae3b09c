"""The catalog database: studies received, processing jobs, results, users, audit events.

SQLAlchemy 2 over SQLite (the embedded default) or PostgreSQL (through a URL).
"""

from __future__ import annotations

from serving.catalog.catalog import (
    Catalog,
    CatalogConflictError,
    InstanceAttributes,
    StoredInstance,
    utc_now,
)
from serving.catalog.job_queue import JobQueue, JobRecord, ResultRecord, ResumeReport

__all__ = [
    "Catalog",
    "CatalogConflictError",
    "InstanceAttributes",
    "JobQueue",
    "JobRecord",
    "ResultRecord",
    "ResumeReport",
    "StoredInstance",
    "utc_now",
]
