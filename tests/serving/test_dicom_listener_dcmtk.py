"""The DICOM listener against dcmtk's echoscu, storescu and findscu, as a PACS would call it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

from tests.serving.test_dicom_listener import (
    LISTENER_AE,
    STUDY_ROWS,
    FakeQuery,
    FileSink,
    running_listener,
    write_mr_files,
)

pytestmark = pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed")

# dcmtk leaves Nagle's algorithm on unless told; with it, small C-STOREs crawl.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def dcmtk(
    tool: str, port: int, *options: str, files: list[Path] | tuple[Path, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run a dcmtk SCU verbosely against the listener on ``port`` (files go last)."""
    command = [tool, "-v", "-aec", LISTENER_AE, *options, "127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(command, env=DCMTK_ENV, capture_output=True, text=True, timeout=60)


def echo_loop() -> Path:
    """The pydicom-data SonoSite A4C echo: 120 JPEG Baseline frames, 480x640."""
    return Path(get_testdata_file("color3d_jpeg_baseline.dcm", download=False))  # type: ignore[arg-type]


def test_echoscu_answers_and_unlisted_calling_ae_is_rejected(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "store")
    with running_listener(tmp_path, sink, allowed_calling_ae_titles=["PACS"]) as listener:
        allowed = dcmtk("echoscu", listener.port, "-aet", "PACS")
        intruder = dcmtk("echoscu", listener.port, "-aet", "INTRUDER")
    assert allowed.returncode == 0, allowed.stderr
    assert "Received Echo Response (Success)" in allowed.stderr
    assert intruder.returncode != 0
    assert "Association Rejected" in intruder.stderr


def test_storescu_mr_series_and_jpeg_echo_arrive_unchanged(tmp_path: Path) -> None:
    originals = [*write_mr_files(tmp_path / "series"), echo_loop()]
    sink = FileSink(tmp_path / "store")
    with running_listener(tmp_path, sink) as listener:
        # -xy also proposes JPEG Baseline, so the echo goes as encoded, not decompressed.
        result = dcmtk("storescu", listener.port, "-R", "-xy", files=originals)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("Received Store Response (Success)") == 4
    for path in originals:
        original = pydicom.dcmread(path)
        received = sink.stored(str(original.SOPInstanceUID))
        assert received == original
        assert received.PixelData == original.PixelData
        assert received.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    transfer_syntaxes = {
        sink.stored(uid).file_meta.TransferSyntaxUID
        for uid in (c.sop_instance_uid or "" for c in sink.calls)
    }
    assert transfer_syntaxes == {ExplicitVRLittleEndian, JPEGBaseline8Bit}
    assert [call.calling_ae for call in sink.calls] == ["STORESCU"] * 4
    assert list((tmp_path / "incoming").iterdir()) == []


def test_storescu_sees_refusal_then_stores_the_next_file(tmp_path: Path) -> None:
    first, second = write_mr_files(tmp_path / "series", slices=2)
    sink = FileSink(
        tmp_path / "store", refuse=frozenset({str(pydicom.dcmread(first).SOPInstanceUID)})
    )
    with running_listener(tmp_path, sink) as listener:
        result = dcmtk("storescu", listener.port, "-nh", files=(first, second))
    responses = [line for line in result.stderr.splitlines() if "Received Store Response" in line]
    assert responses == [
        "I: Received Store Response (Error: CannotUnderstand)",
        "I: Received Store Response (Success)",
    ]
    assert [p.name for p in sink.store_dir.iterdir()] == [
        f"{pydicom.dcmread(second).SOPInstanceUID}.dcm"
    ]
    assert list((tmp_path / "incoming").iterdir()) == []


def test_storescu_sees_failure_when_sink_raises_and_listener_still_answers(tmp_path: Path) -> None:
    (only,) = write_mr_files(tmp_path / "series", slices=1)
    sink = FileSink(tmp_path / "store", fail_with=RuntimeError("catalog unavailable"))
    with running_listener(tmp_path, sink) as listener:
        store = dcmtk("storescu", listener.port, files=(only,))
        echo = dcmtk("echoscu", listener.port)
    assert "Received Store Response (Error: CannotUnderstand)" in store.stderr
    assert "catalog unavailable" not in store.stderr  # the reason stays inside
    assert echo.returncode == 0 and "Received Echo Response (Success)" in echo.stderr


def test_findscu_lists_the_matching_studies(tmp_path: Path) -> None:
    query = FakeQuery(STUDY_ROWS)
    with running_listener(tmp_path, FileSink(tmp_path / "store"), query) as listener:
        result = dcmtk(
            "findscu", listener.port, "-S",
            "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=",
            "-k", "PatientID=SYN*", "-k", "StudyDate=20240101-",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert query.calls == [
        ("STUDY", {"PatientID": "SYN*", "StudyDate": "20240101-"}, {"limit": 1001})
    ]
    assert "Find Response: 2 (Pending)" in result.stderr
    assert "Received Final Find Response (Success)" in result.stderr
    for row in STUDY_ROWS:
        assert f"[{row['StudyInstanceUID']}" in result.stderr
        assert f"[{row['PatientID']}" in result.stderr


def test_hundred_small_stores_over_one_association(tmp_path: Path) -> None:
    files = write_mr_files(tmp_path / "series", slices=100, size=8)
    sink = FileSink(tmp_path / "store")
    with running_listener(tmp_path, sink) as listener:
        started = time.perf_counter()
        result = dcmtk("storescu", listener.port, files=files)
        elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("Requesting Association") == 1
    assert len(list(sink.store_dir.iterdir())) == 100
    # With Nagle's algorithm on, 100 stores take 5 s or more; with it off, well under 1 s.
    assert elapsed < 10.0
    print(f"100 small C-STOREs in {elapsed:.2f} s ({100 / elapsed:.0f} instances/s)")
