"""``mmdx index`` then ``mmdx search``: archive studies indexed, searched by text and by study."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imaging.dicom.deid.replacements import keyed_uid
from imaging.synthetic.archive import ArchiveSpec, generate_archive
from serving.cli import app
from serving.settings import get_settings

SECRET = "cli-rag-test-secret-0123456789"


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three MR and three echo studies from two sites."""
    out_dir = tmp_path_factory.mktemp("archive")
    generate_archive(ArchiveSpec(out_dir, mri_studies=3, echo_studies=3, sites=2, seed=5))
    return out_dir / "manifest.csv"


@pytest.fixture
def settings_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("MMDX_DEID__SECRET", SECRET)
    monkeypatch.setenv("MMDX_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def invoke(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(app, [*args, "--config", "clip_tiny", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def rows_of(manifest: Path) -> list[dict[str, str]]:
    with manifest.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.usefixtures("settings_env")
def test_index_then_search_by_text_and_by_study(manifest: Path, tmp_path: Path) -> None:
    index_uri = str(tmp_path / "case_index")
    summary = invoke("index", "--manifest", str(manifest), "--index", index_uri)
    assert (summary["indexed"], summary["rows"], summary["failed"]) == (6, 6, [])

    by_text = invoke(
        "search", "--text", "Echocardiogram with reduced ejection fraction", "--index", index_uri,
        "--k", "4", "--no-adaptive",
    )  # fmt: skip
    hits = by_text["hits"]
    assert isinstance(hits, list) and len(hits) == 4
    assert by_text["mode"] == "text_to_image"
    assert "not for diagnostic use" in str(by_text["notice"])
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert [hit["rank"] for hit in hits] == [1, 2, 3, 4]
    assert all(hit["why"].startswith("image ") for hit in hits)

    # An indexed study with its report finds itself first, by image and report.
    row = next(row for row in rows_of(manifest) if row["modality"] == "MR")
    by_study = invoke(
        "search", "--study", str(manifest.parent / row["nifti_path"]),
        "--report", str(manifest.parent / row["report_path"]), "--index", index_uri,
        "--modality", "MR", "--no-adaptive",
    )  # fmt: skip
    hits = by_study["hits"]
    assert isinstance(hits, list) and by_study["mode"] == "study_to_study"
    assert [hit["modality"] for hit in hits] == ["MR"] * 3
    assert hits[0]["case_id"] == keyed_uid(SECRET.encode(), row["study_instance_uid"])
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert "image 1.00" in hits[0]["why"] and "report 1.00" in hits[0]["why"]
    assert hits[0]["score"] > hits[1]["score"] >= hits[2]["score"]


@pytest.mark.usefixtures("settings_env")
def test_search_by_an_ultrasound_dicom_file_is_image_to_image(
    manifest: Path, tmp_path: Path
) -> None:
    index_uri = str(tmp_path / "case_index")
    invoke("index", "--manifest", str(manifest), "--index", index_uri, "--modality", "US")
    row = next(row for row in rows_of(manifest) if row["modality"] == "US")
    result = invoke(
        "search", "--study", str(manifest.parent / row["dicom_path"]), "--index", index_uri,
        "--no-adaptive",
    )  # fmt: skip
    hits = result["hits"]
    assert isinstance(hits, list) and result["mode"] == "image_to_image"
    assert [hit["modality"] for hit in hits] == ["US"] * 3
    assert [hit["rank"] for hit in hits] == [1, 2, 3]


@pytest.mark.usefixtures("settings_env")
def test_search_needs_exactly_one_query_and_an_existing_index(tmp_path: Path) -> None:
    runner = CliRunner()
    both = runner.invoke(app, ["search", "--text", "x", "--study", str(tmp_path)])
    assert both.exit_code == 2 and "exactly one of --study and --text" in both.output
    missing = runner.invoke(app, ["search", "--text", "x", "--index", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "no case index" in missing.output
    bad = runner.invoke(app, ["search", "--text", "x", "--modality", "CT"])
    assert bad.exit_code == 2 and "MR or US" in bad.output
