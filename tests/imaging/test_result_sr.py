"""The result SR: dciodvfy-valid, read by dsrdump, in the evidence's study, AIR-identified."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from imaging.dicom.result_sr import (
    SERIES_DESCRIPTION,
    AIResult,
    SimilarCase,
    algorithm_device_uid,
    build_result_sr,
)
from imaging.synthetic.mr_dicom import write_mr_series
from tests.dicom_validation import dciodvfy_errors
from tests.synthetic_cases import make_mr_volume, make_patient, make_study

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
ECHO_FILE = Path(pydicom.__file__).parents[1] / "data_store" / "data" / "color3d_jpeg_baseline.dcm"
# The real echo names its patient "PLA", which highdicom warns is a one-part person name.
pytestmark = pytest.mark.filterwarnings('ignore:The string "PLA":UserWarning')

# The de-identified ids of two indexed cases (keyed Study Instance UIDs).
CASE_A = "2.25.111111111111111111111111111111111111"
CASE_B = "2.25.222222222222222222222222222222222222"

MRI_RESULT = AIResult(
    model_name="mri-ad-densenet121",
    model_version="2.1.0",
    task="mri_ad",
    predicted_label="AD",
    probability=0.83,
    fused_probability=0.79,
    similar_cases=(SimilarCase(CASE_A, 0.912, "AD"), SimilarCase(CASE_B, 0.874, "CN")),
    draft_report="Pattern of atrophy consistent with AD [case 2.25.1111].",
)
ECHO_RESULT = AIResult(
    model_name="echo-ef-r2plus1d",
    model_version="1.0.3",
    task="echo_ef",
    predicted_label="reduced_ef",
    probability=0.71,
    ef_percent=38.5,
    similar_cases=(SimilarCase(CASE_B, 0.66, "reduced_ef"),),
)


@pytest.fixture(scope="module")
def mr_evidence(tmp_path_factory: pytest.TempPathFactory) -> list[Dataset]:
    """A 3-slice synthetic MR series of ``Synthetic^Jane``."""
    pixels = np.arange(3 * 8 * 10, dtype=np.float64).reshape(3, 8, 10)
    paths = write_mr_series(
        make_mr_volume(pixels),
        make_study(),
        out_dir=tmp_path_factory.mktemp("mr"),
        series_number=4,
        uid_seed="result-sr",
    )
    return [pydicom.dcmread(path) for path in paths]


@pytest.fixture(scope="module")
def echo_evidence() -> list[Dataset]:
    """The real SonoSite A4C loop of pydicom-data (header only: the SR needs no pixels)."""
    return [pydicom.dcmread(ECHO_FILE, stop_before_pixels=True)]


def save(sr: Dataset, path: Path) -> Path:
    sr.save_as(path, enforce_file_format=True)
    return path


def dsrdump(path: Path) -> str:
    if shutil.which("dsrdump") is None:
        pytest.fail("dsrdump is missing: install dcmtk")
    completed = subprocess.run(
        ["dsrdump", "+Pl", str(path)], capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def test_mri_result_sr_is_valid_and_reads_back(mr_evidence: list[Dataset], tmp_path: Path) -> None:
    path = save(
        build_result_sr(mr_evidence, MRI_RESULT, series_number=990, instance_number=1),
        tmp_path / "mri.dcm",
    )

    assert dciodvfy_errors(path) == []
    dump = dsrdump(path)
    assert "Comprehensive 3D SR Document" in dump
    assert "Verification Flag   : UNVERIFIED" in dump
    assert '(26929004,SCT,"Alzheimer\'s disease")' in dump
    assert '(,,"Alzheimer\'s disease")=(52101004,SCT,"Present")' in dump
    assert '(,,"Finding Site")=(12738006,SCT,"Brain")' in dump
    assert '(,,"Probability")="0.83" ({probability},UCUM,"probability")' in dump
    assert '(,,"Probability")="0.79"' in dump
    assert '(,,"Algorithm Name")="mri-ad-densenet121"' in dump
    assert '(,,"Algorithm Version")="2.1.0"' in dump
    assert f'(,,"Similar case")="case {CASE_A}; similarity 0.912; label AD"' in dump
    assert f'(,,"Similar case")="case {CASE_B}; similarity 0.874; label CN"' in dump
    assert "Pattern of atrophy consistent with AD" in dump


def test_echo_result_sr_on_a_real_loop_is_valid_and_reads_back(
    echo_evidence: list[Dataset], tmp_path: Path
) -> None:
    path = save(
        build_result_sr(echo_evidence, ECHO_RESULT, series_number=991, instance_number=2),
        tmp_path / "echo.dcm",
    )

    assert dciodvfy_errors(path) == []
    dump = dsrdump(path)
    assert '(,,"Left Ventricular Ejection Fraction by US")="38.5" (%,UCUM,"Percent")' in dump
    assert '(,,"Depression of left ventricular systolic function")=(52101004,SCT,"Present")' in dump
    assert '(,,"Procedure reported")=(40701008,SCT,"Echocardiography")' in dump
    assert '(,,"Probability")="0.71"' in dump
    assert '(,,"Device Observer Model Name")="echo-ef-r2plus1d"' in dump
    assert '(,,"Algorithm Version")="1.0.3"' in dump
    assert f"case {CASE_B}; similarity 0.660; label reduced_ef" in dump
    assert pydicom.dcmread(path).SpecificCharacterSet == "ISO_IR 100"  # the loop's own


def test_non_ascii_draft_report_switches_to_utf8(
    echo_evidence: list[Dataset], tmp_path: Path
) -> None:
    result = replace(ECHO_RESULT, draft_report="Dysfonction systolique modérée du VG.")
    path = save(
        build_result_sr(echo_evidence, result, series_number=991, instance_number=1),
        tmp_path / "utf8.dcm",
    )

    assert dciodvfy_errors(path) == []
    assert pydicom.dcmread(path).SpecificCharacterSet == "ISO_IR 192"
    assert "Dysfonction systolique modérée du VG." in dsrdump(path)


def test_normal_result_is_coded_absent_and_needs_no_cases(
    echo_evidence: list[Dataset], tmp_path: Path
) -> None:
    result = replace(
        ECHO_RESULT,
        predicted_label="normal_ef",
        probability=0.12,
        ef_percent=None,
        similar_cases=(),
    )
    path = save(
        build_result_sr(echo_evidence, result, series_number=991, instance_number=1),
        tmp_path / "normal.dcm",
    )

    assert dciodvfy_errors(path) == []
    dump = dsrdump(path)
    assert '(,,"Depression of left ventricular systolic function")=(272519000,SCT,"Absent")' in dump
    assert "Qualitative Evaluations" not in dump
    assert "Ejection Fraction" not in dump


def test_sr_lives_in_the_evidence_study_unverified_and_not_for_diagnosis(
    mr_evidence: list[Dataset],
) -> None:
    sr = build_result_sr(mr_evidence, MRI_RESULT, series_number=990, instance_number=1)
    first = mr_evidence[0]

    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR
    assert sr.Modality == "SR"
    assert sr.VerificationFlag == "UNVERIFIED"
    assert sr.CompletionFlag == "COMPLETE"
    assert sr.PreliminaryFlag == "PRELIMINARY"
    assert sr.SeriesDescription == SERIES_DESCRIPTION == "mmdx AI result - not for diagnostic use"
    assert sr.StudyInstanceUID == first.StudyInstanceUID
    assert (sr.PatientID, str(sr.PatientName)) == ("SYN0001", "Synthetic^Jane")
    assert sr.AccessionNumber == first.AccessionNumber == "ACC0001"
    assert sr.SeriesInstanceUID != first.SeriesInstanceUID
    assert sr.SOPInstanceUID not in {ds.SOPInstanceUID for ds in mr_evidence}
    assert (sr.SeriesNumber, sr.InstanceNumber, sr.Manufacturer) == (990, 1, "mmdx")
    (evidence_study,) = sr.CurrentRequestedProcedureEvidenceSequence
    (evidence_series,) = evidence_study.ReferencedSeriesSequence
    assert evidence_series.SeriesInstanceUID == first.SeriesInstanceUID
    assert {item.ReferencedSOPInstanceUID for item in evidence_series.ReferencedSOPSequence} == {
        ds.SOPInstanceUID for ds in mr_evidence
    }


def test_algorithm_is_contributing_equipment_as_ihe_air_asks(mr_evidence: list[Dataset]) -> None:
    sr = build_result_sr(mr_evidence, MRI_RESULT, series_number=990, instance_number=1)

    purposes = [item.PurposeOfReferenceCodeSequence[0] for item in sr.ContributingEquipmentSequence]
    assert [(code.CodeValue, code.CodingSchemeDesignator) for code in purposes] == [
        ("109101", "DCM"),  # the scanner that acquired the evidence
        ("109102", "DCM"),  # highdicom, which wrote the document
        ("Newcode1", "99IHE"),  # the algorithm (IHE AIR Rev 1.1, 6.5.3.1)
    ]
    algorithm = sr.ContributingEquipmentSequence[-1]
    assert purposes[-1].CodeMeaning == "Processing Algorithm"
    assert algorithm.Manufacturer == "mmdx"
    assert algorithm.ManufacturerModelName == "mri-ad-densenet121"
    assert algorithm.SoftwareVersions == "2.1.0"
    assert algorithm.DeviceUID == algorithm_device_uid("mmdx", "mri-ad-densenet121", "2.1.0")
    assert sr.ContributingEquipmentSequence[0].Manufacturer == "SIEMENS"
    assert {item.CodingSchemeDesignator for item in sr.CodingSchemeIdentificationSequence} == {
        "99MMDX",
        "99IHE",
    }


def test_device_uid_is_stable_per_model_version() -> None:
    uid = algorithm_device_uid("mmdx", "mri-ad-densenet121", "2.1.0")

    assert uid == algorithm_device_uid("mmdx", "mri-ad-densenet121", "2.1.0")
    assert uid != algorithm_device_uid("mmdx", "mri-ad-densenet121", "2.2.0")
    assert uid.startswith("2.25.")


def test_only_the_patient_of_the_study_is_named(mr_evidence: list[Dataset], tmp_path: Path) -> None:
    other = make_patient(patient_id="SYN0777", patient_name="Other^Olga")
    sr = build_result_sr(mr_evidence, MRI_RESULT, series_number=990, instance_number=1)
    names: list[str] = []

    def collect(dataset: Dataset, element: pydicom.DataElement) -> None:
        if element.VR == "PN" and element.value:
            names.append(str(element.value))

    sr.walk(collect)
    # The patient and the referring physician of this study, nobody else.
    assert sorted(names) == ["Referrer^Rita", "Synthetic^Jane"]
    data = save(sr, tmp_path / "sr.dcm").read_bytes()
    assert other.patient_name.encode() not in data
    assert other.patient_id.encode() not in data


@pytest.mark.parametrize("case_id", ["Doe^John", "Jane Doe", "", "x" * 65])
def test_similar_cases_must_be_pseudonymous_ids(case_id: str) -> None:
    with pytest.raises(ValueError, match='"similar_cases"'):
        replace(MRI_RESULT, similar_cases=(SimilarCase(case_id, 0.9, "AD"),))


def test_plain_tuples_become_similar_cases() -> None:
    result = replace(MRI_RESULT, similar_cases=((CASE_A, 0.5, "AD"),))  # type: ignore[arg-type]

    assert result.similar_cases == (SimilarCase(CASE_A, 0.5, "AD"),)
    assert result.similar_cases[0].case_id == CASE_A


@pytest.mark.parametrize(
    ("changes", "argument"),
    [
        ({"probability": 1.2}, "probability"),
        ({"probability": -0.01}, "probability"),
        ({"probability": float("nan")}, "probability"),
        ({"fused_probability": 1.5}, "fused_probability"),
        ({"predicted_label": "MCI"}, "predicted_label"),
        ({"task": "ct_lung"}, "task"),
        ({"ef_percent": 40.0}, "ef_percent"),
        ({"model_version": ""}, "model_version"),
        ({"similar_cases": ((CASE_A, float("inf"), "AD"),)}, "similar_cases"),
        ({"similar_cases": ((CASE_A, 0.5, "reduced_ef"),)}, "similar_cases"),
    ],
)
def test_bad_results_are_refused_naming_the_argument(
    changes: dict[str, object], argument: str
) -> None:
    with pytest.raises(ValueError, match=f'"{argument}"'):
        replace(MRI_RESULT, **changes)  # type: ignore[arg-type]


def test_echo_ef_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match='"ef_percent"'):
        replace(ECHO_RESULT, ef_percent=120.0)


def test_empty_evidence_is_refused() -> None:
    with pytest.raises(ValueError, match='"evidence" must contain at least one instance'):
        build_result_sr([], MRI_RESULT, series_number=990, instance_number=1)


def test_evidence_from_two_studies_is_refused(
    mr_evidence: list[Dataset], echo_evidence: list[Dataset]
) -> None:
    with pytest.raises(ValueError, match='"evidence" must come from one study, got 2'):
        build_result_sr(
            [*mr_evidence, *echo_evidence], MRI_RESULT, series_number=990, instance_number=1
        )


def test_result_naming_instances_not_given_is_refused(mr_evidence: list[Dataset]) -> None:
    result = replace(MRI_RESULT, evidence_sop_instance_uids=("2.25.42",))
    with pytest.raises(ValueError, match='"result" names 1 evidence instance'):
        build_result_sr(mr_evidence, result, series_number=990, instance_number=1)


def test_evidence_lacking_a_uid_is_refused(mr_evidence: list[Dataset]) -> None:
    header = Dataset()
    header.StudyInstanceUID = mr_evidence[0].StudyInstanceUID
    header.SOPClassUID = mr_evidence[0].SOPClassUID
    with pytest.raises(ValueError, match='"evidence" item 0 lacks SeriesInstanceUID'):
        build_result_sr([header], MRI_RESULT, series_number=990, instance_number=1)


def test_evidence_missing_type2_attributes_still_builds(mr_evidence: list[Dataset]) -> None:
    first = pydicom.dcmread(pydicom.filebase.DicomBytesIO(_encoded(mr_evidence[0])))
    del first.PatientBirthDate, first.StudyID

    sr = build_result_sr([first], MRI_RESULT, series_number=990, instance_number=1)

    assert "PatientBirthDate" in sr and not sr.PatientBirthDate
    assert "StudyID" in sr and not sr.StudyID
    assert "PatientBirthDate" not in first  # the caller's data set is left as it was


def test_series_and_instance_numbers_must_be_positive(mr_evidence: list[Dataset]) -> None:
    with pytest.raises(ValueError, match='"series_number"'):
        build_result_sr(mr_evidence, MRI_RESULT, series_number=0, instance_number=1)


def _encoded(dataset: Dataset) -> bytes:
    buffer = pydicom.filebase.DicomBytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
