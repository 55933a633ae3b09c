"""The audit trail: every read and write of a study, by whom, from where, with what outcome.

Entries name the user (never the token), the action, the resource path (its query
string is dropped: QIDO filters can carry patient names), the study and the client
address. Admins query them; nothing else reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from serving.catalog import Catalog, utc_now
from serving.catalog.tables import AuditEvent

_RESOURCE_LIMIT = 512
DEFAULT_QUERY_LIMIT = 100
MAX_QUERY_LIMIT = 10_000


@dataclass(frozen=True)
class AuditEntry:
    """One audited access.

    Attributes:
        at: When (UTC).
        user: The authenticated user, or ``None`` for a refused anonymous request.
        action: What was attempted (``"qido.studies"``, ``"stow"``, ``"results.read"``).
        resource: The path acted on, without query string.
        study_instance_uid: The study concerned, when one is.
        client_address: Where the request came from (IP address or AE title).
        outcome: ``"success"``, ``"denied"`` or ``"error"`` (or an HTTP status).
    """

    at: datetime
    user: str | None
    action: str
    resource: str
    study_instance_uid: str | None
    client_address: str | None
    outcome: str


class AuditLog:
    """Writes and queries the catalog's audit events."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def record(
        self,
        *,
        user: str | None,
        action: str,
        resource: str,
        outcome: str,
        study_instance_uid: str | None = None,
        client_address: str | None = None,
        at: datetime | None = None,
    ) -> AuditEntry:
        """Write one entry (committed when this returns) and return it."""
        entry = AuditEntry(
            at=at or utc_now(),
            user=user,
            action=action[:64],
            resource=resource.split("?", 1)[0][:_RESOURCE_LIMIT],
            study_instance_uid=None if study_instance_uid is None else study_instance_uid[:64],
            client_address=None if client_address is None else client_address[:64],
            outcome=outcome[:32],
        )
        with self._catalog.write_session() as session:
            session.add(
                AuditEvent(
                    at=entry.at,
                    user_name=entry.user,
                    action=entry.action,
                    resource=entry.resource,
                    study_instance_uid=entry.study_instance_uid,
                    client_address=entry.client_address,
                    outcome=entry.outcome,
                )
            )
        return entry

    def query(
        self,
        *,
        user: str | None = None,
        action: str | None = None,
        study_instance_uid: str | None = None,
        since: datetime | None = None,
        limit: int = DEFAULT_QUERY_LIMIT,
    ) -> list[AuditEntry]:
        """Entries matching every given criterion, newest first.

        Raises:
            ValueError: ``limit`` is not in 1..10000.
        """
        if not 1 <= limit <= MAX_QUERY_LIMIT:
            raise ValueError(f'Argument "limit" must be in 1..{MAX_QUERY_LIMIT}, got {limit}')
        statement = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        if user is not None:
            statement = statement.where(AuditEvent.user_name == user)
        if action is not None:
            statement = statement.where(AuditEvent.action == action)
        if study_instance_uid is not None:
            statement = statement.where(AuditEvent.study_instance_uid == study_instance_uid)
        if since is not None:
            statement = statement.where(AuditEvent.at >= since)
        with self._catalog.read_session() as session:
            return [
                AuditEntry(
                    at=event.at,
                    user=event.user_name,
                    action=event.action,
                    resource=event.resource,
                    study_instance_uid=event.study_instance_uid,
                    client_address=event.client_address,
                    outcome=event.outcome,
                )
                for event in session.scalars(statement.limit(limit))
            ]
