"""Archive rows become de-identified cases: embedded, labelled, free of the row's identifiers."""

from __future__ import annotations

import csv
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from imaging.dicom.deid.replacements import keyed_uid
from imaging.errors import FileFailure
from imaging.synthetic.archive import ArchiveSpec, generate_archive
from multimodal_rag.archive_cases import build_archive_cases, embed_study, load_study
from multimodal_rag.cases import DeidentifiedCase
from multimodal_rag.embedding import create_embedder
from multimodal_rag.embedding.embedder import Embedder

SECRET = b"archive-cases-test-secret-0123"
IDENTIFIER_COLUMNS = ("patient_id", "accession_number", "study_instance_uid")


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four MR and four echo studies from two sites; returns the manifest."""
    out_dir = tmp_path_factory.mktemp("archive")
    generate_archive(ArchiveSpec(out_dir, mri_studies=4, echo_studies=4, sites=2, seed=11))
    return out_dir / "manifest.csv"


@pytest.fixture(scope="module")
def rows(archive: Path) -> list[dict[str, str]]:
    with archive.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return create_embedder("clip_tiny")


@pytest.fixture(scope="module")
def cases(archive: Path, embedder: Embedder) -> list[DeidentifiedCase]:
    return build_archive_cases(archive, embedder, secret=SECRET)


def test_every_row_becomes_a_case_with_its_labels(
    cases: list[DeidentifiedCase], rows: list[dict[str, str]], embedder: Embedder
) -> None:
    assert len(cases) == 8
    by_id = {case.case_id: case for case in cases}
    for row in rows:
        case = by_id[keyed_uid(SECRET, row["study_instance_uid"])]
        assert case.modality == row["modality"]
        assert case.label == row["label"]
        assert case.site_id == row["site_id"]
        assert case.ef_percent == (float(row["ef"]) if row.get("ef") else None)
        assert case.study_year == int(row["study_date"][:4])
        for vector in (case.image_embedding, case.text_embedding):
            assert vector.shape == (embedder.embed_dim,)
            assert float(np.linalg.norm(vector)) == pytest.approx(1.0, abs=1e-5)
        assert case.thumbnail_png.startswith(b"\x89PNG\r\n\x1a\n")
    assert sorted(case.modality for case in cases) == ["MR"] * 4 + ["US"] * 4
    assert {case.label for case in cases if case.modality == "US"} <= {"reduced_ef", "normal_ef"}
    assert {case.site_id for case in cases} == {"S01", "S02"}


def test_no_identifier_of_the_manifest_row_is_in_any_case_field(
    cases: list[DeidentifiedCase], rows: list[dict[str, str]]
) -> None:
    identifiers = {row[column] for row in rows for column in IDENTIFIER_COLUMNS if row[column]}
    assert len(identifiers) >= 8 * 2  # UIDs and accession numbers are per study
    for case in cases:
        for item in fields(case):
            value = getattr(case, item.name)
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            leaked = [identifier for identifier in identifiers if identifier in text]
            assert leaked == [], f"{item.name} holds {leaked}"


def test_the_image_embedding_is_the_study_files_embedding(
    cases: list[DeidentifiedCase], rows: list[dict[str, str]], archive: Path, embedder: Embedder
) -> None:
    us_row = next(row for row in rows if row["modality"] == "US")
    case = next(c for c in cases if c.case_id == keyed_uid(SECRET, us_row["study_instance_uid"]))
    study = load_study(archive.parent / us_row["video_path"])
    assert study.modality == "US"
    np.testing.assert_allclose(embed_study(embedder, study), case.image_embedding, atol=1e-5)


def test_a_bad_row_is_a_recorded_failure_and_the_rest_goes_on(
    archive: Path, rows: list[dict[str, str]], embedder: Embedder
) -> None:
    mr_rows = [dict(row) for row in rows if row["modality"] == "MR"][:2]
    mr_rows[0]["nifti_path"] = "nifti/missing.nii.gz"
    manifest = archive.parent / "manifest_bad.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(mr_rows)
    failures: list[FileFailure] = []
    progress: list[tuple[int, int]] = []
    built = build_archive_cases(
        manifest,
        embedder,
        secret=SECRET,
        failures=failures,
        on_case=lambda done, total: progress.append((done, total)),
    )
    assert [case.case_id for case in built] == [keyed_uid(SECRET, mr_rows[1]["study_instance_uid"])]
    assert len(failures) == 1
    assert failures[0].path == str(archive.parent / "nifti/missing.nii.gz")
    assert (failures[0].error, failures[0].reason) == (
        "FileNotFoundError",
        f"No study at {archive.parent / 'nifti/missing.nii.gz'}",
    )
    assert progress == [(1, 2), (2, 2)]


def test_the_modality_option_keeps_only_that_modality(
    archive: Path, rows: list[dict[str, str]], embedder: Embedder
) -> None:
    us_rows = [row for row in rows if row["modality"] == "US"][:1]
    mr_rows = [row for row in rows if row["modality"] == "MR"][:1]
    manifest = archive.parent / "manifest_mixed.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(mr_rows + us_rows)
    built = build_archive_cases(manifest, embedder, secret=SECRET, modality="US")
    assert [case.modality for case in built] == ["US"]
    with pytest.raises(ValueError, match="modality"):
        build_archive_cases(manifest, embedder, secret=SECRET, modality="CT")  # type: ignore[arg-type]
