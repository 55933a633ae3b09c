"""``mmdx deid IN OUT``: good files written, bad files reported, exit status 1 on failure."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from imaging.synthetic.mr_dicom import write_mr_series
from serving.cli import app
from serving.settings import get_settings
from tests.synthetic_cases import make_mr_volume, make_patient, make_study


@pytest.fixture
def study_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder named after the patient: two MR slices and one file that is not DICOM."""
    monkeypatch.setenv("MMDX_DEID__SECRET", "cli-test-secret-0123456789")
    monkeypatch.setenv("MMDX_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    study = make_study(patient=make_patient(patient_name="Doe^Jane"), study_date=date(2024, 5, 6))
    volume = make_mr_volume(np.full((2, 6, 6), 100.0))
    folder = tmp_path / "in" / "Doe^Jane"
    write_mr_series(volume, study, out_dir=folder, series_number=1, uid_seed="cli")
    (folder / "truncated.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    yield tmp_path / "in"
    get_settings.cache_clear()


def test_deid_writes_good_files_and_reports_the_bad_one(study_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["deid", str(study_folder), str(out), "--json"])

    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert (summary["written"], summary["failed"]) == (2, 1)
    assert summary["retain_longitudinal_temporal"] is True
    written = sorted(out.rglob("*.dcm"))
    assert len(written) == 2
    for path in written:
        dataset = pydicom.dcmread(path)
        assert dataset.PatientIdentityRemoved == "YES"
        assert "Doe" not in str(path) and str(dataset.PatientName) != "Doe^Jane"
        assert dataset.StudyDate == "20240506"
    with (out / "deid-report.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [Path(row["path"]).name for row in rows] == ["truncated.dcm"]
    assert rows[0]["error"] == "DicomReadError"


def test_deid_without_dates_and_all_good_exits_zero(study_folder: Path, tmp_path: Path) -> None:
    (study_folder / "Doe^Jane" / "truncated.dcm").unlink()
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["deid", str(study_folder), str(out), "--no-retain-dates"])

    assert result.exit_code == 0, result.output
    dataset = pydicom.dcmread(next(out.rglob("*.dcm")))
    assert not dataset.StudyDate
    assert dataset.LongitudinalTemporalInformationModified == "REMOVED"
    with (out / "deid-report.csv").open() as handle:
        assert list(csv.reader(handle)) == [["path", "error", "reason"]]
