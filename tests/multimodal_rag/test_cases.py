"""De-identified cases: built only from de-identified inputs, identifiers keyed like deid."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from imaging.dicom.deid import deidentify_dataset
from imaging.dicom.deid.replacements import keyed_uid
from multimodal_rag.cases import DeidentifiedArchiveStudy, DeidentifiedCase, SearchHit

SECRET = b"case-test-secret-0123456789"
ROW = {
    "study_instance_uid": "1.2.826.0.1.3680043.8.498.1",
    "accession_number": "A359666232",
    "patient_id": "MMDX000000",
    "site_id": "S04",
    "modality": "US",
    "study_date": "2020-12-12",
    "label": "reduced_ef",
    "ef": "34.50",
}
REPORT = "Accession A359666232 for patient MMDX000000. Ejection fraction 35%."


def _mr_small() -> pydicom.Dataset:
    return pydicom.dcmread(str(get_testdata_file("MR_small.dcm", download=False)))


def test_archive_row_identifiers_become_the_same_keyed_values_as_dicom_deid() -> None:
    original = _mr_small()
    deidentified = deidentify_dataset(original, secret=SECRET)
    row = dict(
        ROW,
        study_instance_uid=original.StudyInstanceUID,
        patient_id=original.PatientID,
        modality="MR",
        ef="",
    )

    study = DeidentifiedArchiveStudy.from_manifest_row(row, secret=SECRET, report_text="Normal.")

    assert study.case_id == deidentified.study_instance_uid
    assert study.case_id == keyed_uid(SECRET, original.StudyInstanceUID)
    assert study.patient_pseudonym == deidentified.pseudonym
    assert original.PatientID not in repr(study)


def test_archive_study_drops_identifiers_from_the_report_and_keeps_labels() -> None:
    study = DeidentifiedArchiveStudy.from_manifest_row(ROW, secret=SECRET, report_text=REPORT)

    assert study.report_text == (
        "Accession [REMOVED] for patient [REMOVED]. Ejection fraction 35%."
    )
    assert (study.modality, study.site_id, study.study_year) == ("US", "S04", 2020)
    assert (study.label, study.ef_percent) == ("reduced_ef", 34.5)
    other_key = DeidentifiedArchiveStudy.from_manifest_row(
        ROW, secret=b"another-secret-0123456789", report_text=REPORT
    )
    assert other_key.case_id != study.case_id


def test_archive_study_reads_the_report_from_the_archive(tmp_path: Path) -> None:
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "A359666232.txt").write_text(REPORT)
    row = dict(ROW, report_path="reports/A359666232.txt")

    study = DeidentifiedArchiveStudy.from_manifest_row(row, secret=SECRET, archive_dir=tmp_path)

    assert "MMDX000000" not in study.report_text
    with pytest.raises(ValueError, match="Modality must be one of"):
        DeidentifiedArchiveStudy.from_manifest_row(
            dict(ROW, modality="CT"), secret=SECRET, report_text=""
        )
    with pytest.raises(ValueError, match="secret"):
        DeidentifiedArchiveStudy.from_manifest_row(ROW, secret=b"short", report_text="")


def test_case_from_archive_study_normalises_and_freezes_embeddings() -> None:
    study = DeidentifiedArchiveStudy.from_manifest_row(ROW, secret=SECRET, report_text=REPORT)

    case = DeidentifiedCase.from_deidentified(
        study, image_embedding=[3.0, 4.0], text_embedding=np.array([0.0, 2.0])
    )

    np.testing.assert_allclose(case.image_embedding, [0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(case.text_embedding, [0.0, 1.0])
    assert case.image_embedding.dtype == np.float32
    assert not case.image_embedding.flags.writeable
    assert (case.case_id, case.label, case.ef_percent) == (study.case_id, "reduced_ef", 34.5)
    with pytest.raises(ValueError, match="zero vector"):
        DeidentifiedCase.from_deidentified(study, image_embedding=[0, 0], text_embedding=[1, 0])
    with pytest.raises(ValueError, match="same length"):
        DeidentifiedCase.from_deidentified(study, image_embedding=[1, 0], text_embedding=[1])
    with pytest.raises(ValueError, match="finite"):
        DeidentifiedCase.from_deidentified(
            study, image_embedding=[np.nan, 1], text_embedding=[1, 0]
        )


def test_case_from_deidentified_dataset_renders_a_thumbnail_from_its_pixels() -> None:
    deidentified = deidentify_dataset(_mr_small(), secret=SECRET)

    case = DeidentifiedCase.from_deidentified(
        deidentified,
        image_embedding=[1.0, 0.0],
        text_embedding=[0.0, 1.0],
        site_id="S01",
        label="CN",
        report_text="No acute findings.",
    )

    assert case.case_id == deidentified.study_instance_uid
    assert case.patient_pseudonym == deidentified.pseudonym
    assert (case.modality, case.study_year, case.site_id) == ("MR", 2004, "S01")
    assert case.thumbnail_png.startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match="site_id"):
        DeidentifiedCase.from_deidentified(
            deidentified, image_embedding=[1, 0], text_embedding=[1, 0], report_text=""
        )


@pytest.mark.parametrize("source", ["dict", "raw_dataset"])
def test_case_refuses_sources_that_were_not_deidentified(source: str) -> None:
    raw = {"dict": dict(ROW), "raw_dataset": _mr_small()}[source]

    with pytest.raises(TypeError, match="DeidentifiedDataset or DeidentifiedArchiveStudy"):
        DeidentifiedCase.from_deidentified(
            raw,  # type: ignore[arg-type]
            image_embedding=[1, 0],
            text_embedding=[1, 0],
            site_id="S01",
            report_text="",
        )


def test_direct_construction_and_lookalike_keys_are_refused() -> None:
    study = DeidentifiedArchiveStudy.from_manifest_row(ROW, secret=SECRET, report_text=REPORT)
    case = DeidentifiedCase.from_deidentified(study, image_embedding=[1], text_embedding=[1])
    fields = {f.name: getattr(case, f.name) for f in dataclasses.fields(case) if f.name != "_key"}

    with pytest.raises(TypeError, match="from_deidentified"):
        DeidentifiedCase(**fields)
    with pytest.raises(TypeError, match="from_deidentified"):
        DeidentifiedCase(**fields, _key=object())
    with pytest.raises(TypeError, match="from_manifest_row"):
        DeidentifiedArchiveStudy(
            **{
                f.name: getattr(study, f.name)
                for f in dataclasses.fields(study)
                if f.name != "_key"
            }
        )
    # A copy with a changed field stays a validly built case (the key travels with it).
    assert dataclasses.replace(case, label="normal_ef").label == "normal_ef"


def test_search_hit_has_the_interface_fields() -> None:
    hit = SearchHit(
        case_id="2.25.1",
        score=0.91,
        rank=1,
        modality="MR",
        label="AD",
        site_id="S01",
        report_text="Atrophy.",
        why="image 0.91",
    )

    assert hit.matched_sentences == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        hit.score = 0.5  # type: ignore[misc]
