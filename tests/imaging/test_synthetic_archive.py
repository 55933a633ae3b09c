"""The sample archive as a whole: layout, manifests, identities, validity, determinism."""

from __future__ import annotations

import csv
import hashlib
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from imaging.synthetic.archive import MANIFEST_COLUMNS, ArchiveSpec, generate_archive
from tests.dicom_validation import dciodvfy_errors

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
US_MULTIFRAME_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"


def _read_csv(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight MR and eight echo studies over four sites (seed chosen so all kinds occur)."""
    out = tmp_path_factory.mktemp("archive")
    generate_archive(ArchiveSpec(out_dir=out, mri_studies=8, echo_studies=8, sites=4, seed=5))
    return out


@pytest.fixture(scope="module")
def manifest(archive: Path) -> list[dict[str, str]]:
    return _read_csv(archive / "manifest.csv")


def _files(archive: Path, row: dict[str, str]) -> list[Path]:
    return sorted((archive / row["dicom_path"]).rglob("*.dcm"))


def test_manifest_lists_every_study_with_labels(
    archive: Path, manifest: list[dict[str, str]]
) -> None:
    assert list(manifest[0]) == list(MANIFEST_COLUMNS)
    assert [row["modality"] for row in manifest] == ["MR"] * 8 + ["US"] * 8
    assert len({row["study_instance_uid"] for row in manifest}) == 16
    for row in manifest:
        assert (archive / row["report_path"]).read_text().startswith("EXAMINATION:")
        assert _files(archive, row)
        if row["modality"] == "MR":
            assert row["label"] in {"CN", "AD"}
            assert (archive / row["nifti_path"]).is_file()
        else:
            ef = float(row["ef"])
            assert row["reduced_ef"] == str(int(ef < 40.0))
            assert row["label"] == ("reduced_ef" if ef < 40.0 else "normal_ef")
            assert float(row["esv_ml"]) == pytest.approx(
                float(row["edv_ml"]) * (1 - ef / 100), abs=0.2
            )
            assert (archive / row["video_path"]).is_file()
    assert (archive / "README.txt").read_text().startswith("SYNTHETIC")


def test_archive_holds_every_storage_class_and_encoding(manifest: list[dict[str, str]]) -> None:
    kinds = {(row["sop_class"], row["transfer_syntax"]) for row in manifest}
    assert (MR_STORAGE, "1.2.840.10008.1.2.1") in kinds
    assert (ENHANCED_MR_STORAGE, "1.2.840.10008.1.2.1") in kinds
    assert (US_MULTIFRAME_STORAGE, "1.2.840.10008.1.2.4.50") in kinds
    assert (US_MULTIFRAME_STORAGE, "1.2.840.10008.1.2.1") in kinds


def test_bids_and_echonet_indexes_match_the_manifest(
    archive: Path, manifest: list[dict[str, str]]
) -> None:
    participants = _read_csv(archive / "nifti" / "participants.tsv", delimiter="\t")
    mr_patients = {row["patient_id"] for row in manifest if row["modality"] == "MR"}
    assert {row["participant_id"] for row in participants} == {f"sub-{p}" for p in mr_patients}
    assert set(participants[0]) >= {"participant_id", "sex", "age", "group", "site"}

    file_list = _read_csv(archive / "echonet" / "FileList.csv")
    assert list(file_list[0]) == [
        "FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames",
        "Split",
    ]  # fmt: skip
    echo_rows = [row for row in manifest if row["modality"] == "US"]
    by_video = {Path(row["video_path"]).stem: row for row in echo_rows}
    assert {row["FileName"] for row in file_list} == set(by_video)
    for entry in file_list:
        assert float(entry["EF"]) == pytest.approx(float(by_video[entry["FileName"]]["ef"]), 0.01)
        assert entry["Split"] in {"TRAIN", "VAL", "TEST"}


def test_tags_carry_the_synthetic_identity(archive: Path, manifest: list[dict[str, str]]) -> None:
    for row in manifest:
        dataset = pydicom.dcmread(_files(archive, row)[0], stop_before_pixels=True)
        assert dataset.PatientID == row["patient_id"]
        assert dataset.StudyInstanceUID == row["study_instance_uid"]
        assert dataset.AccessionNumber == row["accession_number"]
        assert dataset.Modality == row["modality"]
        assert dataset.PatientSex == row["sex"]
        assert str(dataset.PatientName).count("^") >= 1
        assert dataset.PatientBirthDate and dataset.InstitutionName


def test_every_kind_of_object_passes_dciodvfy(
    archive: Path, manifest: list[dict[str, str]]
) -> None:
    checked: set[tuple[str, str, str]] = set()
    for row in manifest:
        kind = (row["sop_class"], row["transfer_syntax"], row["site_id"])
        if kind in checked:
            continue
        checked.add(kind)
        for path in _files(archive, row)[:2]:
            assert dciodvfy_errors(path) == [], path
    assert len(checked) >= 5


def _canonical(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.as_closest_canonical(nib.load(path))
    return np.asarray(image.get_fdata()), image.affine


@pytest.mark.parametrize("sop_class", [MR_STORAGE, ENHANCED_MR_STORAGE])
def test_dcm2niix_recovers_the_volume_the_generator_wrote(
    archive: Path, manifest: list[dict[str, str]], tmp_path: Path, sop_class: str
) -> None:
    row = next(row for row in manifest if row["sop_class"] == sop_class)
    series_dir = _files(archive, row)[0].parent
    subprocess.run(
        ["dcm2niix", "-z", "n", "-b", "n", "-f", "converted", "-o", str(tmp_path), str(series_dir)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    converted, converted_affine = _canonical(tmp_path / "converted.nii")
    written, written_affine = _canonical(archive / row["nifti_path"])
    slope = float(nib.load(archive / row["nifti_path"]).dataobj.slope)
    assert converted.shape == written.shape
    assert np.abs(converted - written).max() <= slope / 2
    assert np.abs(converted_affine - written_affine).max() < 0.01


def test_same_seed_writes_the_same_bytes(tmp_path: Path) -> None:
    digests = []
    for workers, name in ((1, "serial"), (2, "parallel")):
        out = tmp_path / name
        generate_archive(
            ArchiveSpec(
                out_dir=out, mri_studies=2, echo_studies=2, sites=2, seed=9, workers=workers
            )
        )
        digests.append(
            {
                path.relative_to(out).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
                for path in sorted(out.rglob("*"))
                if path.is_file()
            }
        )
    assert digests[0] == digests[1]
    assert len(digests[0]) > 10


def test_different_seeds_write_different_archives(tmp_path: Path) -> None:
    manifests = []
    for seed in (1, 2):
        out = tmp_path / str(seed)
        generate_archive(ArchiveSpec(out_dir=out, mri_studies=1, echo_studies=1, seed=seed))
        manifests.append(_read_csv(out / "manifest.csv"))
    assert manifests[0][0]["patient_id"] != manifests[1][0]["patient_id"] or (
        manifests[0][0]["study_instance_uid"] != manifests[1][0]["study_instance_uid"]
    )
