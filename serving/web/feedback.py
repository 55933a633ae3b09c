"""Readers' feedback on results, kept in the catalog: the labels of a later retraining."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select

from serving.catalog import Catalog, utc_now
from serving.catalog.tables import Feedback
from serving.web.models import FeedbackEntry, FeedbackRequest


class FeedbackStore:
    """The catalog's ``feedback`` table: add and list."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def add(
        self, request: FeedbackRequest, *, user: str, now: datetime | None = None
    ) -> FeedbackEntry:
        """Store ``request`` (validated by its model) as given by ``user``.

        The study must be catalogued (the table refers to it); the route checks first.
        """
        row = Feedback(
            study_instance_uid=request.study_instance_uid,
            target=request.target,
            case_id=request.case_id,
            modality=request.modality,
            verdict=request.verdict,
            comment=request.comment,
            user_name=user,
            created_at=now or utc_now(),
        )
        with self._catalog.write_session() as session:
            session.add(row)
            session.flush()
            return _entry(row)

    def list_entries(
        self, *, study_instance_uid: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[FeedbackEntry], int]:
        """A page of feedback (of one study when given), newest first, and the total.

        Raises:
            ValueError: ``limit`` below 1 or ``offset`` below 0.
        """
        if limit < 1:
            raise ValueError(f'Argument "limit" must be at least 1, got {limit}')
        if offset < 0:
            raise ValueError(f'Argument "offset" must not be negative, got {offset}')
        statement = select(Feedback)
        if study_instance_uid is not None:
            statement = statement.where(Feedback.study_instance_uid == study_instance_uid)
        with self._catalog.read_session() as session:
            total = session.scalar(select(func.count()).select_from(statement.subquery())) or 0
            rows = session.scalars(
                statement.order_by(Feedback.created_at.desc(), Feedback.id.desc())
                .offset(offset)
                .limit(limit)
            )
            return [_entry(row) for row in rows], total


def _entry(row: Feedback) -> FeedbackEntry:
    return FeedbackEntry.model_validate(
        {
            "id": row.id,
            "study_instance_uid": row.study_instance_uid,
            "target": row.target,
            "case_id": row.case_id,
            "modality": row.modality,
            "verdict": row.verdict,
            "comment": row.comment,
            "user": row.user_name,
            "created_at": row.created_at,
        }
    )
