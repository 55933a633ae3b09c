"""What the HTTP application works on: the store, catalog, users, audit log and helpers.

The app receives one :class:`ServiceContext` and reaches everything through it, so
tests build one over a temporary folder and the service builds one from its settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from serving.audit import AuditLog
from serving.auth import UserDirectory
from serving.catalog import Catalog
from serving.ingest import InstanceIngestor
from serving.settings import Settings
from serving.store import StudyStore


class CaseSearch(Protocol):
    """Text search over the de-identified case index (the retriever deployment)."""

    def search_text(
        self,
        text: str,
        *,
        k: int,
        modality: str | None,
        label: str | None,
        site: str | None,
    ) -> list[dict[str, Any]]:
        """The ``k`` best cases for ``text``, best first, as JSON-ready dicts.

        Each hit describes a de-identified case only (case id, score, modality, label,
        site, reasons): never a patient name, ID or an original UID.

        Raises:
            ValueError: A filter value is not valid (the API answers 400 with the message).
        """
        ...


class CaseLookup(Protocol):
    """One de-identified case of the index by its case id (the web page's case detail)."""

    def case_detail(self, case_id: str) -> dict[str, Any] | None:
        """``case_id``, ``modality``, ``label``, ``site_id``, ``study_year``, ``ef_percent``
        and ``report_text`` of the case, or ``None`` when the index has no such case.

        Never the patient pseudonym, a name, an ID or an original UID.
        """
        ...

    def thumbnail_png(self, case_id: str) -> bytes | None:
        """The case's thumbnail (PNG bytes), or ``None`` without case or thumbnail."""
        ...


@dataclass
class ServiceContext:
    """The parts the HTTP application is built on.

    Attributes:
        settings: The installation's settings (STOW limits, similar-case count).
        store: The study store (WADO-RS reads from it; STOW-RS writes into its temp folder).
        catalog: The catalog (queries, jobs, results).
        ingestor: Takes STOW-RS instances into the store and catalog.
        users: Authenticates bearer tokens.
        audit: Records every access.
        case_search: Similar-case text search; ``None`` answers 503 on the search route.
        reprocess: Queues a study for processing again; ``None`` queues a catalog job.
        cases: De-identified case detail and thumbnails; ``None`` answers 503 on those routes.
    """

    settings: Settings
    store: StudyStore
    catalog: Catalog
    ingestor: InstanceIngestor
    users: UserDirectory
    audit: AuditLog
    case_search: CaseSearch | None = None
    reprocess: Callable[[str], None] | None = None
    cases: CaseLookup | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        case_search: CaseSearch | None = None,
        reprocess: Callable[[str], None] | None = None,
        cases: CaseLookup | None = None,
    ) -> ServiceContext:
        """Open the store and catalog the settings name (created if missing)."""
        store = StudyStore(settings.store_dir)
        catalog = Catalog.open(settings.resolved_catalog_url)
        return cls(
            settings=settings,
            store=store,
            catalog=catalog,
            ingestor=InstanceIngestor(store, catalog),
            users=UserDirectory(catalog),
            audit=AuditLog(catalog),
            case_search=case_search,
            reprocess=reprocess,
            cases=cases,
        )

    def close(self) -> None:
        """Release the catalog's connections."""
        self.catalog.close()
