"""Take received DICOM files into the study store and catalog (the service's ``InstanceSink``).

C-STORE and STOW-RS both hand every object to :meth:`InstanceIngestor.ingest_file`, so
both refuse the same objects for the same reasons. An object is kept only if it reads
cleanly within the size limits, carries valid UIDs, is one of the accepted storage
classes, and its pixel data are the size the image attributes promise and decode (the
first frame is decoded; a whole cine loop is not). Only then is the file moved into
the store (fsynced) and catalogued, and only then is "stored" answered.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime
from pathlib import Path
from typing import Any

from pydicom.multival import MultiValue

from imaging.dicom.pixels import PixelLayout, check_decoder, pixel_layout
from imaging.dicom.reading import DEFAULT_READ_LIMITS, ReadLimits, read_dicom, require_uid
from imaging.errors import DicomReadError, ImagingError, PixelDataError
from serving.catalog import Catalog, CatalogConflictError, InstanceAttributes, utc_now
from serving.store import StudyStore
from serving.study_access import IngestResult

logger = logging.getLogger(__name__)

ACCEPTED_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image Storage",
    "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame Image Storage",
}
_REASON_LIMIT = 400


class InstanceIngestor:
    """Validates, stores and catalogues received files; safe to call from many threads.

    Args:
        store: Where files go.
        catalog: Where they are recorded.
        limits: Size limits of the DICOM reader (file, inflated data set, pixel data, frames).
        clock: The time recorded as "received at" (UTC); tests pass a fixed one.
    """

    def __init__(
        self,
        store: StudyStore,
        catalog: Catalog,
        *,
        limits: ReadLimits = DEFAULT_READ_LIMITS,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._limits = limits
        self._clock = clock
        self._temp_dir = store.temp_dir().resolve()

    def ingest_file(
        self, path: Path, *, source: str, received_via: str, calling_ae: str | None = None
    ) -> IngestResult:
        """Validate, store durably and catalogue the DICOM file at ``path``; never raises.

        A file in the store's ``temp_dir()`` is consumed: moved into the store, or
        deleted when not kept. A file anywhere else is copied and left where it is.
        """
        path = Path(path)
        received = path.resolve().parent == self._temp_dir
        # A received file is complete and will be stored if it passes the checks: its
        # flush to disk starts now and runs while it is read and checked.
        synced = self._store.sync_soon(path) if received else None
        try:
            return self._ingest(path, source, received, synced, received_via, calling_ae)
        finally:
            if received:
                path.unlink(missing_ok=True)

    def _ingest(
        self,
        path: Path,
        source: str,
        received: bool,
        synced: Future[None] | None,
        received_via: str,
        calling_ae: str | None,
    ) -> IngestResult:
        try:
            dataset = read_dicom(path, limits=self._limits)
        except ImagingError as exc:
            return _refused(source, exc)
        except OSError as exc:  # not readable at all (permissions, vanished file)
            return _refused(source, DicomReadError(source, f"cannot read: {exc.strerror}"))
        identity = _identity(dataset)
        try:
            sop_class_uid = require_uid(dataset, "SOPClassUID", source)
            if sop_class_uid not in ACCEPTED_SOP_CLASSES:
                raise DicomReadError(source, _unaccepted_class(sop_class_uid))
            uids = {
                keyword: require_uid(dataset, keyword, source)
                for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
            }
            _check_file_meta(dataset, sop_class_uid, uids["SOPInstanceUID"], source)
            layout = pixel_layout(dataset, source, self._limits)
            check_decoder(dataset, source)
            _check_pixel_data(dataset, layout, source)
        except ImagingError as exc:
            return _refused(source, exc, **identity)

        with self._store.instance_lock(uids["SOPInstanceUID"]):
            known = self._catalog.lookup_instance(uids["SOPInstanceUID"], uids["SeriesInstanceUID"])
            if known.catalogued:
                return IngestResult(status="duplicate", source=source, **identity)
            if known.series_study_uid not in (None, uids["StudyInstanceUID"]):
                reason = "(0020,000E) SeriesInstanceUID is already stored under another study"
                return _refused(source, DicomReadError(source, reason), **identity)
            try:
                stored = self._store_file(path, received, synced, uids)
            except OSError as exc:
                logger.error("storage failure for %s: %s", source, exc.strerror)
                reason = f"storage failure: {exc.strerror or exc}"
                return IngestResult(status="refused", source=source, reason=reason, **identity)
            attributes = _attributes(
                dataset,
                uids,
                sop_class_uid,
                file_path=stored.relative_to(self._store.root).as_posix(),
                size_bytes=stored.stat().st_size,
                received_via=received_via,
                calling_ae=calling_ae,
                received_at=self._clock(),
            )
            try:
                self._catalog.record_instance(attributes)
            except CatalogConflictError as exc:
                stored.unlink(missing_ok=True)
                return _refused(source, DicomReadError(source, str(exc)), **identity)
            except Exception as exc:  # database down or locked past the timeout
                logger.exception("catalog failure for %s", source)
                reason = f"catalog failure: {type(exc).__name__}"
                return IngestResult(status="refused", source=source, reason=reason, **identity)
        logger.debug("stored %s (%s) via %s", source, uids["SOPInstanceUID"], received_via)
        return IngestResult(status="stored", source=source, **identity)

    def _store_file(
        self, path: Path, received: bool, synced: Future[None] | None, uids: dict[str, str]
    ) -> Path:
        """Move (or, for a file outside the store, copy) ``path`` into the store.

        ``synced`` is the flush already started for a received file.
        """
        staged = path
        if not received:
            staged = self._store.new_temp_file()
            shutil.copyfile(path, staged)
            synced = None
        try:
            return self._store.put(
                staged,
                study_instance_uid=uids["StudyInstanceUID"],
                series_instance_uid=uids["SeriesInstanceUID"],
                sop_instance_uid=uids["SOPInstanceUID"],
                synced=synced,
            )
        finally:
            if staged != path:
                staged.unlink(missing_ok=True)


def _refused(source: str, error: ImagingError, **identity: str | None) -> IngestResult:
    # The reason can quote header values, so it goes to the sender, not the log.
    logger.info("refused %s: %s", source, type(error).__name__)
    logger.debug("refused %s: %s", source, error.reason)
    return IngestResult(
        status="refused", source=source, reason=error.reason[:_REASON_LIMIT], **identity
    )


def _unaccepted_class(sop_class_uid: str) -> str:
    from pydicom.uid import UID

    name = UID(sop_class_uid).name
    label = f"{sop_class_uid} ({name})" if name != sop_class_uid else sop_class_uid
    accepted = ", ".join(ACCEPTED_SOP_CLASSES.values())
    return f"(0008,0016) SOPClassUID {label} is not accepted; accepted: {accepted}"


def _identity(dataset: Any) -> dict[str, str | None]:
    """The UIDs the result reports, where present and valid (``None`` otherwise)."""
    keywords = {
        "sop_instance_uid": "SOPInstanceUID",
        "sop_class_uid": "SOPClassUID",
        "study_instance_uid": "StudyInstanceUID",
    }
    identity: dict[str, str | None] = {}
    for field, keyword in keywords.items():
        try:
            identity[field] = require_uid(dataset, keyword, "")
        except ImagingError:
            identity[field] = None
    return identity


def _check_file_meta(dataset: Any, sop_class_uid: str, sop_instance_uid: str, source: str) -> None:
    """The file meta must describe the data set it carries (PS3.10 7.1)."""
    meta = dataset.file_meta
    if str(meta.get("MediaStorageSOPClassUID", sop_class_uid)) != sop_class_uid:
        raise DicomReadError(source, "(0002,0002) MediaStorageSOPClassUID differs from SOPClassUID")
    if str(meta.get("MediaStorageSOPInstanceUID", sop_instance_uid)) != sop_instance_uid:
        raise DicomReadError(
            source, "(0002,0003) MediaStorageSOPInstanceUID differs from SOPInstanceUID"
        )


def _check_pixel_data(dataset: Any, layout: PixelLayout, source: str) -> None:
    """The pixel data hold every frame the attributes announce, and frame 1 decodes.

    Native data are checked by length; encapsulated data by their fragments and
    offset table (each frame needs at least one fragment). Decoding one frame proves
    the codec reads it without paying for the whole loop.
    """
    from pydicom.encaps import parse_basic_offsets, parse_fragments
    from pydicom.pixels import get_decoder

    transfer_syntax = dataset.file_meta.TransferSyntaxUID
    if transfer_syntax.is_encapsulated:
        try:
            items, _ = parse_fragments(dataset.PixelData)
            offsets = parse_basic_offsets(dataset.PixelData)
        except Exception as exc:  # pydicom raises ValueError or struct.error
            raise PixelDataError(source, f"malformed encapsulated pixel data: {exc}") from exc
        fragments = items - 1  # the first item is the Basic Offset Table
        if offsets and len(offsets) != layout.frames:
            raise PixelDataError(
                source,
                f"Basic Offset Table lists {len(offsets)} frames, "
                f"(0028,0008) NumberOfFrames is {layout.frames}",
            )
        if fragments < layout.frames:
            raise PixelDataError(
                source, f"{fragments} pixel data fragments for {layout.frames} frames"
            )
    else:
        expected, actual = layout.decoded_bytes, len(dataset.PixelData)
        # An odd length is padded to even; anything else is a lie of the attributes,
        # and surplus bytes would be stored (and served) for nothing.
        if actual not in (expected, expected + expected % 2):
            raise PixelDataError(
                source,
                f"(7FE0,0010) PixelData holds {actual} bytes, the image attributes need {expected}",
            )
    try:
        get_decoder(transfer_syntax).as_array(dataset, index=0)
    except Exception as exc:  # decoder plugins raise their own types
        raise PixelDataError(source, f"pixel data do not decode: {exc}") from exc


def _text(dataset: Any, keyword: str) -> str:
    value = dataset.get(keyword)
    if value is None:
        return ""
    if isinstance(value, MultiValue):
        return "\\".join(str(item) for item in value)
    return str(value)


def _integer(dataset: Any, keyword: str) -> int | None:
    value = dataset.get(keyword)
    try:
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def _attributes(
    dataset: Any,
    uids: dict[str, str],
    sop_class_uid: str,
    *,
    file_path: str,
    size_bytes: int,
    received_via: str,
    calling_ae: str | None,
    received_at: datetime,
) -> InstanceAttributes:
    return InstanceAttributes(
        study_instance_uid=uids["StudyInstanceUID"],
        series_instance_uid=uids["SeriesInstanceUID"],
        sop_instance_uid=uids["SOPInstanceUID"],
        sop_class_uid=sop_class_uid,
        transfer_syntax_uid=str(dataset.file_meta.TransferSyntaxUID),
        file_path=file_path,
        size_bytes=size_bytes,
        received_via=received_via,
        received_at=received_at,
        calling_ae=calling_ae,
        patient_id=_text(dataset, "PatientID"),
        issuer_of_patient_id=_text(dataset, "IssuerOfPatientID"),
        patient_name=_text(dataset, "PatientName"),
        patient_birth_date=_text(dataset, "PatientBirthDate"),
        patient_sex=_text(dataset, "PatientSex"),
        study_date=_text(dataset, "StudyDate"),
        study_time=_text(dataset, "StudyTime"),
        accession_number=_text(dataset, "AccessionNumber"),
        study_id=_text(dataset, "StudyID"),
        study_description=_text(dataset, "StudyDescription"),
        modality=_text(dataset, "Modality"),
        series_number=_integer(dataset, "SeriesNumber"),
        series_description=_text(dataset, "SeriesDescription"),
        instance_number=_integer(dataset, "InstanceNumber"),
        rows=_integer(dataset, "Rows"),
        columns=_integer(dataset, "Columns"),
        number_of_frames=_integer(dataset, "NumberOfFrames"),
    )
