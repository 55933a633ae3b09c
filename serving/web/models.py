"""Request and response bodies of the web page's routes (session, viewer, cases, feedback)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving.api.models import DISCLAIMER
from serving.api.security import UID_PATTERN
from serving.auth import Role

MAX_COMMENT = 2000
# A pseudonymous case id as the index holds them (a 2.25 UID, or a site's own code).
CASE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class SessionRequest(BaseModel):
    """Sign in with the token ``mmdx users add`` printed."""

    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=256)


class SessionInfo(BaseModel):
    """Who is signed in, and until when."""

    user: str
    role: Role
    expires_at: datetime


class VolumeViewer(BaseModel):
    """An MR result's volume: slices per plane and the key slice of each (the heat's peak).

    Slices are drawn in neurological orientation: the patient's left on the left,
    anterior (axial) or superior (coronal, sagittal) up.
    """

    modality: Literal["MR"] = "MR"
    kind: Literal["volume"] = "volume"
    shape: list[int] = Field(description="[X, Y, Z] of the network input's RAS grid.")
    planes: dict[str, int] = Field(
        description="Slices per plane: axial, coronal, sagittal (Z, Y and X)."
    )
    key: dict[str, int] = Field(description="Per plane, the slice through the heat's maximum.")
    method: str
    target: str
    disclaimer: str = DISCLAIMER


class CineViewer(BaseModel):
    """An echo result's clip: its frames, key frames and frame interval."""

    modality: Literal["US"] = "US"
    kind: Literal["cine"] = "cine"
    shape: list[int] = Field(description="[T, H, W] of the clip the model saw.")
    frames: int
    key_frames: list[int]
    frame_interval_ms: float | None = Field(
        description="Time between two frames of the clip; null when the loop's rate is unknown."
    )
    method: str
    target: str
    disclaimer: str = DISCLAIMER


class CaseDetail(BaseModel):
    """One de-identified case of the index (no patient pseudonym, name, ID or UID)."""

    case_id: str
    modality: str
    label: str | None
    site_id: str
    study_year: int | None
    ef_percent: float | None
    report_text: str
    disclaimer: str = DISCLAIMER


class FeedbackRequest(BaseModel):
    """A reader's verdict or comment on a study's prediction, or on one of its similar cases."""

    model_config = ConfigDict(extra="forbid")

    study_instance_uid: str = Field(pattern=UID_PATTERN, min_length=1, max_length=64)
    target: Literal["prediction", "case"]
    case_id: str | None = Field(
        default=None, pattern=CASE_ID_PATTERN, description="Required iff target is case."
    )
    modality: Literal["MR", "US"] | None = None
    verdict: Literal["agree", "disagree"] | None = None
    comment: str | None = Field(default=None, max_length=MAX_COMMENT)

    @model_validator(mode="after")
    def _consistent(self) -> FeedbackRequest:
        if (self.target == "case") != (self.case_id is not None):
            raise ValueError('"case_id" is required when "target" is "case", and only then')
        if self.comment is not None:
            self.comment = self.comment.strip() or None
        if self.verdict is None and self.comment is None:
            raise ValueError('give a "verdict" or a "comment" (or both)')
        return self


class FeedbackEntry(BaseModel):
    """Stored feedback, with who gave it and when."""

    id: int
    study_instance_uid: str
    target: Literal["prediction", "case"]
    case_id: str | None
    modality: str | None
    verdict: Literal["agree", "disagree"] | None
    comment: str | None
    user: str
    created_at: datetime


class FeedbackList(BaseModel):
    """Feedback, newest first."""

    items: list[FeedbackEntry]
    total: int = Field(description="Entries matching the filter, over all pages.")
