"""The DICOM listener over real associations on loopback, with a pynetdicom SCU as the peer.

The sink and the query are in-memory fakes of the :mod:`serving.study_access`
protocols; ``test_dicom_listener_dcmtk.py`` drives the same listener with dcmtk tools.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE
from pynetdicom.association import Association

from imaging.synthetic.mr_dicom import write_mr_series
from serving.dicom_listener import DicomListener, handlers
from serving.dicom_listener.contexts import STUDY_ROOT_FIND, VERIFICATION
from serving.dicom_listener.handlers import (
    FindRequest,
    IdentifierError,
    match_identifier,
    parse_find_identifier,
    store_status,
)
from serving.settings import Settings
from serving.study_access import IngestResult
from tests.synthetic_cases import make_mr_volume, make_study

LISTENER_AE = "MMDX"


@dataclass(frozen=True)
class SinkCall:
    """One ``ingest_file`` call as the sink saw it."""

    folder: Path
    source: str
    received_via: str
    calling_ae: str | None
    sop_instance_uid: str | None


class FileSink:
    """Keeps received files under ``store_dir`` by SOP Instance UID, as the real store does.

    Refuses the instances in ``refuse``; raises ``fail_with`` for every call when given.
    """

    def __init__(
        self,
        store_dir: Path,
        *,
        refuse: frozenset[str] = frozenset(),
        fail_with: Exception | None = None,
    ) -> None:
        self.store_dir = store_dir
        self.refuse = refuse
        self.fail_with = fail_with
        self.calls: list[SinkCall] = []
        store_dir.mkdir(parents=True, exist_ok=True)

    def ingest_file(
        self, path: Path, *, source: str, received_via: str, calling_ae: str | None = None
    ) -> IngestResult:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        uid = str(dataset.SOPInstanceUID)
        self.calls.append(SinkCall(path.parent, source, received_via, calling_ae, uid))
        if self.fail_with is not None:
            raise self.fail_with
        if uid in self.refuse:
            return IngestResult(
                "refused", source, uid, str(dataset.SOPClassUID), reason="no T1 in it"
            )
        target = self.store_dir / f"{uid}.dcm"
        if target.exists():
            return IngestResult("duplicate", source, uid)
        os.replace(path, target)
        return IngestResult("stored", source, uid)

    def stored(self, sop_instance_uid: str) -> Dataset:
        return pydicom.dcmread(self.store_dir / f"{sop_instance_uid}.dcm")


class FakeQuery:
    """Answers every level with fixed rows and records each call."""

    def __init__(self, rows: list[dict[str, str]], *, error: Exception | None = None) -> None:
        self.rows = rows
        self.error = error
        self.calls: list[tuple[str, dict[str, str], dict[str, object]]] = []

    def _answer(
        self, level: str, filters: Mapping[str, str], **scope: object
    ) -> list[dict[str, str]]:
        self.calls.append((level, dict(filters), scope))
        if self.error is not None:
            raise self.error
        limit = scope.get("limit")
        return self.rows[: limit if isinstance(limit, int) else None]

    def search_studies(
        self, filters: Mapping[str, str], *, limit: int | None = None, offset: int = 0
    ) -> list[dict[str, str]]:
        return self._answer("STUDY", filters, limit=limit)

    def search_series(
        self,
        filters: Mapping[str, str],
        *,
        study_instance_uid: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, str]]:
        return self._answer("SERIES", filters, study_instance_uid=study_instance_uid, limit=limit)

    def search_instances(
        self,
        filters: Mapping[str, str],
        *,
        study_instance_uid: str | None = None,
        series_instance_uid: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, str]]:
        return self._answer(
            "IMAGE",
            filters,
            study_instance_uid=study_instance_uid,
            series_instance_uid=series_instance_uid,
            limit=limit,
        )


STUDY_ROWS = [
    {"StudyInstanceUID": "1.2.3.1", "PatientID": "SYN0001", "PatientName": "Synthetic^Jane",
     "StudyDate": "20240604", "ModalitiesInStudy": "MR", "NumberOfStudyRelatedInstances": "24"},
    {"StudyInstanceUID": "1.2.3.2", "PatientID": "SYN0002", "PatientName": "Müller^Jörg",
     "StudyDate": "20240605", "ModalitiesInStudy": "MR\\US", "NumberOfStudyRelatedInstances": "3"},
]  # fmt: skip


@contextmanager
def running_listener(
    tmp_path: Path, sink: FileSink, query: FakeQuery | None = None, **options: object
) -> Iterator[DicomListener]:
    """A listener on a free loopback port, stopped on exit."""
    listener = DicomListener(
        sink, query, host="127.0.0.1", port=0, ae_title=LISTENER_AE,
        temp_dir=tmp_path / "incoming", **options,  # type: ignore[arg-type]
    )  # fmt: skip
    with listener:
        yield listener


def write_mr_files(
    out_dir: Path, *, slices: int = 3, size: int = 16, seed: str = "listener"
) -> list[Path]:
    """A small synthetic MR series, one file per slice."""
    pixels = np.arange(slices * size * size, dtype=np.float32).reshape(slices, size, size)
    return write_mr_series(
        make_mr_volume(pixels), make_study(), out_dir=out_dir, series_number=1, uid_seed=seed
    )


@contextmanager
def associate(port: int, *, ae_title: str = "PACS", find: bool = False) -> Iterator[Association]:
    """A pynetdicom SCU association to the listener, released on exit."""
    ae = AE(ae_title=ae_title)
    ae.add_requested_context(VERIFICATION)
    ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    if find:
        ae.add_requested_context(STUDY_ROOT_FIND)
    association = ae.associate("127.0.0.1", port, ae_title=LISTENER_AE)
    try:
        yield association
    finally:
        if association.is_established:
            association.release()


@contextmanager
def query_association(tmp_path: Path, query: FakeQuery, **options: object) -> Iterator[Association]:
    """An SCU association offering C-FIND to a listener answering from ``query``."""
    with (
        running_listener(tmp_path, FileSink(tmp_path / "store"), query, **options) as listener,
        associate(listener.port, find=True) as association,
    ):
        yield association


def find(association: Association, identifier: Dataset) -> list[tuple[Dataset, Dataset | None]]:
    """Every (status, identifier) response to one Study Root C-FIND."""
    return list(association.send_c_find(identifier, STUDY_ROOT_FIND))


def statuses(responses: list[tuple[Dataset, Dataset | None]]) -> list[int]:
    return [int(status.Status) for status, _ in responses]


def test_store_hands_sink_the_received_file_from_temp_dir(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "store")
    originals = write_mr_files(tmp_path / "series")
    with running_listener(tmp_path, sink) as listener, associate(listener.port) as association:
        assert association.is_established
        statuses = [int(association.send_c_store(path).Status) for path in originals]
        assert int(association.send_c_echo().Status) == 0x0000
        accepted = {str(cx.abstract_syntax) for cx in association.accepted_contexts}
        (acceptor,) = [
            t for t in threading.enumerate() if isinstance(t, Association) and t.is_acceptor
        ]
        accepted_socket = acceptor.dul.socket.socket if acceptor.dul.socket else None
        assert accepted_socket is not None
        no_delay = accepted_socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert no_delay != 0
    assert statuses == [0x0000] * 3
    assert MRImageStorage in accepted and CTImageStorage not in accepted
    for path, call in zip(originals, sink.calls, strict=True):
        original = pydicom.dcmread(path)
        received = sink.stored(str(original.SOPInstanceUID))
        assert received == original
        assert received.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert received.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
        assert call.folder == tmp_path / "incoming"
        assert (call.received_via, call.calling_ae) == ("c-store", "PACS")
    assert list((tmp_path / "incoming").iterdir()) == []


def test_two_listeners_receive_into_their_own_temp_dirs(tmp_path: Path) -> None:
    (original,) = write_mr_files(tmp_path / "series", slices=1)
    sinks = [FileSink(tmp_path / name / "store") for name in ("a", "b")]
    with (
        running_listener(tmp_path / "a", sinks[0]) as first,
        running_listener(tmp_path / "b", sinks[1]) as second,
    ):
        for listener in (second, first):
            with associate(listener.port) as association:
                assert int(association.send_c_store(original).Status) == 0x0000
    assert [sink.calls[0].folder for sink in sinks] == [
        tmp_path / "a" / "incoming",
        tmp_path / "b" / "incoming",
    ]


def test_listener_from_settings(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port free a moment ago; Settings refuses port 0
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    settings = Settings(
        data_dir=tmp_path, dicom_port=free_port, dicom_ae_title="MMDX",
        listener={"allowed_calling_ae_titles": ["PACS"], "max_pdu_bytes": 65536},
    )  # fmt: skip
    sink = FileSink(tmp_path / "store")
    (original,) = write_mr_files(tmp_path / "series", slices=1)
    with DicomListener.from_settings(
        settings, sink, None, temp_dir=tmp_path / "incoming"
    ) as listener:
        assert listener.port == free_port
        with associate(free_port, ae_title="PACS") as association:
            assert int(association.send_c_store(original).Status) == 0x0000
            assert association.acceptor.maximum_length == 65536
        with associate(free_port, ae_title="OTHER") as other:
            assert other.is_rejected
    assert sink.calls[0].folder == tmp_path / "incoming"


def test_duplicate_is_success_and_refusal_carries_reason(tmp_path: Path) -> None:
    originals = write_mr_files(tmp_path / "series")
    refused_uid = str(pydicom.dcmread(originals[0]).SOPInstanceUID)
    sink = FileSink(tmp_path / "store", refuse=frozenset({refused_uid}))
    with running_listener(tmp_path, sink) as listener, associate(listener.port) as association:
        refused = association.send_c_store(originals[0])
        stored = association.send_c_store(originals[1])
        duplicate = association.send_c_store(originals[1])
    assert (int(refused.Status), refused.ErrorComment) == (0xC000, "no T1 in it")
    assert int(stored.Status) == int(duplicate.Status) == 0x0000
    assert list((tmp_path / "incoming").iterdir()) == []
    assert sorted(p.name for p in sink.store_dir.iterdir()) == [
        f"{sink.calls[1].sop_instance_uid}.dcm"
    ]


@pytest.mark.parametrize(
    ("error", "status"),
    [(RuntimeError("INSERT failed: ('Synthetic^Jane',)"), 0xC001), (OSError(28, "full"), 0xA700)],
)
def test_sink_error_answers_failure_and_association_keeps_working(
    tmp_path: Path, error: Exception, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    originals = write_mr_files(tmp_path / "series", slices=1)
    sink = FileSink(tmp_path / "store", fail_with=error)
    with running_listener(tmp_path, sink) as listener:
        with associate(listener.port) as association:
            response = association.send_c_store(originals[0])
            echo = association.send_c_echo()
        with associate(listener.port) as second:
            assert second.is_established and int(second.send_c_echo().Status) == 0x0000
    assert int(response.Status) == status
    assert response.ErrorComment == f"ingest failed: {type(error).__name__}"
    assert int(echo.Status) == 0x0000
    assert list((tmp_path / "incoming").iterdir()) == []
    assert f"ingest failed with {type(error).__name__}" in caplog.text
    assert "Jane" not in caplog.text  # the message may quote identities: never logged


def test_calling_ae_outside_allowed_list_is_rejected(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "store")
    with running_listener(tmp_path, sink, allowed_calling_ae_titles=["ORTHANC"]) as listener:
        with associate(listener.port, ae_title="INTRUDER") as intruder:
            assert intruder.is_rejected
        with associate(listener.port, ae_title="ORTHANC") as pacs:
            assert pacs.is_established


def test_stop_closes_the_port_and_ends_association_threads(tmp_path: Path) -> None:
    listener = DicomListener(FileSink(tmp_path / "store"), None, port=0, temp_dir=tmp_path / "in")
    listener.start()
    port = listener.port
    with associate(port) as association:
        assert association.is_established
        listener.stop()
        association.join(timeout=10)
        assert association.is_aborted
    assert not listener.running
    assert not [t for t in threading.enumerate() if t.name.startswith("AcceptorThread")]
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 2):
        pass


def test_find_study_level_returns_requested_keys_of_each_match(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    query = FakeQuery(STUDY_ROWS)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.PatientID = "SYN*"
    identifier.StudyInstanceUID = ""
    identifier.PatientName = ""
    identifier.NumberOfStudyRelatedInstances = ""
    with query_association(tmp_path, query) as association:
        responses = find(association, identifier)
    assert query.calls == [("STUDY", {"PatientID": "SYN*"}, {"limit": 1001})]
    assert statuses(responses) == [0xFF00, 0xFF00, 0x0000]
    first, second = (match for _, match in responses[:2])
    assert first is not None and second is not None
    assert (first.StudyInstanceUID, first.PatientID, first.NumberOfStudyRelatedInstances) == (
        "1.2.3.1", "SYN0001", 24,
    )  # fmt: skip
    assert str(second.PatientName) == "Müller^Jörg"
    assert "StudyDate" not in first  # not requested
    assert "Jane" not in caplog.text and "SYN0001" not in caplog.text


def test_find_series_level_is_scoped_to_the_study(tmp_path: Path) -> None:
    query = FakeQuery(
        [{"StudyInstanceUID": "1.2.3.1", "SeriesInstanceUID": "1.2.3.1.7", "Modality": "MR"}]
    )
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES"
    identifier.StudyInstanceUID = "1.2.3.1"
    identifier.Modality = "MR"
    identifier.SeriesInstanceUID = ""
    with (
        running_listener(
            tmp_path, FileSink(tmp_path / "store"), query, max_find_matches=5
        ) as listener,
        associate(listener.port, find=True) as association,
    ):
        responses = find(association, identifier)
    assert query.calls == [
        ("SERIES", {"Modality": "MR"}, {"study_instance_uid": "1.2.3.1", "limit": 6})
    ]
    assert statuses(responses) == [0xFF00, 0x0000]
    assert responses[0][1] is not None and responses[0][1].SeriesInstanceUID == "1.2.3.1.7"


def test_find_failures_and_cap(tmp_path: Path) -> None:
    many = FakeQuery([{"StudyInstanceUID": f"1.2.{n}"} for n in range(5)])
    broken = FakeQuery([], error=ValueError("StudyDate range 2024-13 is not a date"))
    patient_level = Dataset()
    patient_level.QueryRetrieveLevel = "PATIENT"
    study_level = Dataset()
    study_level.QueryRetrieveLevel = "STUDY"
    study_level.StudyInstanceUID = ""
    with query_association(tmp_path / "a", many, max_find_matches=3) as association:
        capped = find(association, study_level)
        (level_status, _), *_ = find(association, patient_level)
    with query_association(tmp_path / "b", broken) as association:
        (failure, _), *_ = find(association, study_level)
        still_answers = int(association.send_c_echo().Status)
    assert statuses(capped) == [0xFF00] * 3 + [0x0000]
    assert (level_status.Status, level_status.ErrorComment) == (
        0xA900, "QueryRetrieveLevel PATIENT not answered: use STUDY/SERIES/IMAGE",
    )  # fmt: skip
    assert (failure.Status, failure.ErrorComment) == (
        0xC000,
        "StudyDate range 2024-13 is not a date",
    )
    assert still_answers == 0x0000


def test_find_stops_at_c_cancel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each match takes 5 ms to build, so the cancel always arrives while matches remain
    # (without this, a busy client may read all 1000 before its cancel is seen).
    build_match = handlers.match_identifier

    def slow_match(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.005)
        return build_match(*args, **kwargs)

    monkeypatch.setattr(handlers, "match_identifier", slow_match)
    query = FakeQuery([{"StudyInstanceUID": f"1.2.{n}"} for n in range(1000)])
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    received: list[int] = []
    with query_association(tmp_path, query) as association:
        for status, _ in association.send_c_find(identifier, STUDY_ROOT_FIND, msg_id=7):
            received.append(int(status.Status))
            if len(received) == 1:
                association.send_c_cancel(7, query_model=STUDY_ROOT_FIND)
    # Matches already on the wire arrive; the rest are not sent.
    assert received[-1] == 0xFE00
    assert len(received) < 1000 and set(received[:-1]) == {0xFF00}


def test_parse_find_identifier_maps_keys_to_filters_and_scope() -> None:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "IMAGE"
    identifier.StudyInstanceUID = "1.2.3"
    identifier.SeriesInstanceUID = ["1.2.3.4", "1.2.3.5"]
    identifier.SOPInstanceUID = ""
    identifier.InstanceNumber = ""
    identifier.Rows = 256
    identifier.PatientName = "*"  # universal matching, as if empty
    identifier.PatientID = "SYN*"  # a study-level key: not matched at image level
    assert parse_find_identifier(identifier) == FindRequest(
        level="IMAGE",
        filters={"SeriesInstanceUID": "1.2.3.4,1.2.3.5", "Rows": "256"},
        study_instance_uid="1.2.3",
        ignored_keys=("PatientID",),
    )
    identifier.QueryRetrieveLevel = ""
    with pytest.raises(IdentifierError, match=r"\(none\) not answered") as raised:
        parse_find_identifier(identifier)
    assert raised.value.status == 0xA900


def test_match_identifier_types_values_by_the_requested_vr() -> None:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "IMAGE"
    identifier.Rows = None
    identifier.NumberOfFrames = None
    identifier.InstanceNumber = None
    row = {"StudyInstanceUID": "1.2", "SeriesInstanceUID": "1.2.3", "SOPInstanceUID": "1.2.3.4",
           "Rows": "480", "InstanceNumber": "7"}  # fmt: skip
    match = match_identifier(identifier, "IMAGE", row)
    assert (match.Rows, match.InstanceNumber, match.SOPInstanceUID) == (480, 7, "1.2.3.4")
    assert match.NumberOfFrames is None and "SpecificCharacterSet" not in match


def test_store_status_distinguishes_sop_class_mismatch() -> None:
    wrong_class = IngestResult("refused", "x", sop_class_uid=CTImageStorage, reason="not MR")
    unreadable = IngestResult("refused", "x", reason="not DICOM: no DICM prefix")
    assert store_status(IngestResult("duplicate", "x"), MRImageStorage) == 0x0000
    mismatch = store_status(wrong_class, MRImageStorage)
    refusal = store_status(unreadable, MRImageStorage)
    assert isinstance(mismatch, Dataset) and isinstance(refusal, Dataset)
    assert (mismatch.Status, mismatch.ErrorComment) == (0xA900, "not MR")
    assert (refusal.Status, refusal.ErrorComment) == (0xC000, "not DICOM: no DICM prefix")


def test_listener_checks_its_arguments(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "store")
    with pytest.raises(ValueError, match='"ae_title"'):
        DicomListener(sink, None, ae_title="A" * 17, temp_dir=tmp_path)
    with pytest.raises(ValueError, match='"max_pdu_bytes"'):
        DicomListener(sink, None, max_pdu_bytes=1024, temp_dir=tmp_path)
    with pytest.raises(RuntimeError, match="not running"):
        _ = DicomListener(sink, None, temp_dir=tmp_path).port
