"""The catalog database: studies received, processing jobs, results, users, audit events.

SQLAlchemy 2 over SQLite (the embedded default) or PostgreSQL (through a URL).
"""

from __future__ import annotations

from serving.catalog.catalog import Catalog, StoredInstance, utc_now
from serving.catalog.job_queue import JobQueue, JobRecord, ResultRecord, ResumeReport
from serving.catalog.recording import CatalogConflictError, InstanceAttributes, InstanceLookup

__all__ = [
    "Catalog",
    "CatalogConflictError",
    "InstanceAttributes",
    "InstanceLookup",
    "JobQueue",
    "JobRecord",
    "ResultRecord",
    "ResumeReport",
    "StoredInstance",
    "utc_now",
]
