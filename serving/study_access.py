"""The contracts between the study store, the catalog and the protocol edges.

The DICOM listener and the DICOMweb routes depend only on these protocols, so each is
tested with an in-memory fake and wired to the real store and catalog by the service:

- :class:`InstanceSink` takes one received DICOM file and answers whether it was kept;
  both C-STORE and STOW-RS call it, so both refuse the same objects for the same reasons.
- :class:`StudyQuery` answers C-FIND and QIDO-RS from the catalog.
- :class:`InstanceLocator` finds a stored instance's file for WADO-RS.

Query rows are plain dicts keyed by DICOM keyword (``"StudyInstanceUID"``), values as
strings in their DICOM form (dates ``YYYYMMDD``, numbers as decimal strings), so that
either edge can turn them into datasets or DICOM JSON without knowing the catalog.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

IngestStatus = Literal["stored", "duplicate", "refused"]

# Attributes each query level returns (when the catalog knows them).
STUDY_KEYWORDS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "StudyDescription",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
SERIES_KEYWORDS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "NumberOfSeriesRelatedInstances",
)
INSTANCE_KEYWORDS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "Rows",
    "Columns",
    "NumberOfFrames",
)


@dataclass(frozen=True)
class IngestResult:
    """What happened to one received object.

    Attributes:
        status: ``"stored"`` (new, durable: file fsynced and catalogued),
            ``"duplicate"`` (this SOP Instance UID was already stored; nothing changed)
            or ``"refused"`` (not kept; ``reason`` says why).
        source: Where the object came from, for messages (file name, STOW part number).
        sop_instance_uid: The object's SOP Instance UID when it could be read.
        sop_class_uid: Its SOP Class UID when it could be read.
        study_instance_uid: Its Study Instance UID when it could be read.
        reason: Why it was refused (names the tag or check), ``None`` otherwise.
    """

    status: IngestStatus
    source: str
    sop_instance_uid: str | None = None
    sop_class_uid: str | None = None
    study_instance_uid: str | None = None
    reason: str | None = None

    @property
    def accepted(self) -> bool:
        """Stored now or before: the sender may forget the object."""
        return self.status != "refused"


class InstanceSink(Protocol):
    """Takes received DICOM files into the store and catalog."""

    def ingest_file(
        self, path: Path, *, source: str, received_via: str, calling_ae: str | None = None
    ) -> IngestResult:
        """Validate, store durably and catalogue the DICOM file at ``path``.

        Never raises for bad input: a malformed or unsupported object is refused with a
        reason. ``path`` may be moved into the store; the caller must not reuse it.

        Args:
            path: A complete DICOM file (Part 10, with file meta information).
            source: A name for messages (file name, ``"part 3"``).
            received_via: ``"c-store"`` or ``"stow-rs"`` (recorded with the instance).
            calling_ae: The sender's AE title, for C-STORE.
        """
        ...


class StudyQuery(Protocol):
    """C-FIND and QIDO-RS matching over the catalog.

    ``filters`` are keyed by DICOM keyword. Matching follows PS3.4 C.2.2.2: an exact
    value; ``*`` and ``?`` wildcards for names and other text; a date range
    ``YYYYMMDD-YYYYMMDD`` (either end open) for dates; a comma-separated UID list for
    UIDs. Unknown keywords raise ``ValueError`` naming them. Rows come ordered by study
    date then UID, so that ``limit`` and ``offset`` page stably.
    """

    def search_studies(
        self, filters: Mapping[str, str], *, limit: int | None = None, offset: int = 0
    ) -> list[dict[str, str]]:
        """Matching studies, one row of ``STUDY_KEYWORDS`` each."""
        ...

    def search_series(
        self,
        filters: Mapping[str, str],
        *,
        study_instance_uid: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, str]]:
        """Matching series (of one study when given), one row of ``SERIES_KEYWORDS`` each."""
        ...

    def search_instances(
        self,
        filters: Mapping[str, str],
        *,
        study_instance_uid: str | None = None,
        series_instance_uid: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, str]]:
        """Matching instances, one row of ``INSTANCE_KEYWORDS`` each."""
        ...


class InstanceLocator(Protocol):
    """Finds stored instances' files."""

    def instance_path(
        self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str
    ) -> Path | None:
        """The stored file, or ``None`` when this instance is not stored."""
        ...
