"""Indexing a folder, zip or DICOMDIR into patients/studies/series, with bad files mixed in."""

from __future__ import annotations

import shutil
import zipfile
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.uid import UID, ExplicitVRLittleEndian

from imaging.dicom.study_index import IndexLimits, StudyIndex, index_dicom_source
from imaging.errors import DicomReadError
from imaging.synthetic.mr_dicom import MR_IMAGE_STORAGE, write_mr_series
from imaging.synthetic.mr_enhanced_dicom import write_enhanced_mr_series
from imaging.synthetic.records import MRVolume, SyntheticStudy, deterministic_uid
from tests.synthetic_cases import make_mr_volume, make_patient, make_study

US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"


def _study(patient_id: str, name: str, key: str, when: date, description: str) -> SyntheticStudy:
    return make_study(
        patient=make_patient(patient_id=patient_id, patient_name=name, birth_date=date(1950, 1, 2)),
        study_instance_uid=deterministic_uid("index-test", key),
        accession_number=f"ACC-{key}",
        study_date=when,
        study_description=description,
    )


ANN_MR = _study("PAT-A", "Ann^Able", "a-mr", date(2023, 1, 5), "MRI BRAIN")
ANN_ECHO = _study("PAT-A", "Ann^Able", "a-us", date(2023, 3, 9), "ECHO TTE")
BOB_MR = _study("PAT-B", "Bob^Baker", "b-mr", date(2022, 7, 1), "MRI HEAD")


def _volume(slices: int, description: str) -> MRVolume:
    pixels = np.arange(slices * 6 * 5, dtype=np.float32).reshape(slices, 6, 5)
    return make_mr_volume(
        pixels, slice_spacing=2.0, acquisition={"series_description": description}
    )


def write_instance(
    path: Path,
    study: SyntheticStudy,
    *,
    series_uid: str,
    sop_uid: str,
    sop_class: str,
    modality: str,
    series_number: int,
    description: str,
    image_type: list[str],
    instance_number: int = 1,
    frames: int = 1,
) -> Path:
    """A small but complete image object written with pydicom."""
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    dataset.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID, dataset.SOPInstanceUID = sop_class, sop_uid
    dataset.PatientID, dataset.PatientName = study.patient.patient_id, study.patient.patient_name
    dataset.StudyInstanceUID = study.study_instance_uid
    dataset.StudyDate = study.study_date.strftime("%Y%m%d")
    dataset.StudyTime, dataset.StudyID = study.study_time, "1"
    dataset.AccessionNumber = study.accession_number
    dataset.StudyDescription = study.study_description
    dataset.SeriesInstanceUID, dataset.SeriesNumber = series_uid, series_number
    dataset.Modality, dataset.SeriesDescription = modality, description
    dataset.ImageType, dataset.InstanceNumber = image_type, instance_number
    dataset.Rows, dataset.Columns, dataset.SamplesPerPixel = 4, 4, 1
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 8, 8, 7
    dataset.PixelRepresentation, dataset.PhotometricInterpretation = 0, "MONOCHROME2"
    if frames > 1:
        dataset.NumberOfFrames = frames
    dataset.PixelData = bytes(16 * frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path


def build_good_folder(root: Path) -> dict[str, list[Path]]:
    """Two patients, three studies, five series; returns the files of each series by name."""
    series: dict[str, list[Path]] = {}
    series["t1"] = write_mr_series(
        _volume(6, "T1 MPRAGE SAG"), ANN_MR, out_dir=root / "ann/mr/t1", series_number=3,
        uid_seed="index-t1",
    )  # fmt: skip
    localizer_uid = deterministic_uid("index", "localizer")
    series["localizer"] = [
        write_instance(
            root / f"ann/mr/loc/IM{k}",
            ANN_MR,
            series_uid=localizer_uid,
            sop_uid=deterministic_uid("index", "localizer", k),
            sop_class=MR_IMAGE_STORAGE,
            modality="MR",
            series_number=1,
            description="localizer",
            image_type=["ORIGINAL", "PRIMARY", "LOCALIZER"],
            instance_number=3 - k,
        )
        for k in range(3)
    ]
    series["cine"] = [
        write_instance(
            root / "ann/echo/cine.dcm",
            ANN_ECHO,
            series_uid=deterministic_uid("index", "cine"),
            sop_uid=deterministic_uid("index", "cine", 0),
            sop_class=US_MULTIFRAME,
            modality="US",
            series_number=1,
            description="Apical 4 chamber",
            image_type=["ORIGINAL", "PRIMARY"],
            frames=20,
        )
    ]
    series["enhanced"] = [
        write_enhanced_mr_series(
            _volume(5, "3D T1 TFE"),
            BOB_MR,
            out_dir=root / "bob/mr",
            series_number=2,
            uid_seed="index-enhanced",
        )
    ]
    series["derived"] = [
        write_instance(
            root / "bob/mr/derived/MPR1",
            BOB_MR,
            series_uid=deterministic_uid("index", "mpr"),
            sop_uid=deterministic_uid("index", "mpr", 0),
            sop_class=MR_IMAGE_STORAGE,
            modality="MR",
            series_number=5,
            description="T1 MPR COR",
            image_type=["DERIVED", "SECONDARY", "MPR"],
        )
    ]
    return series


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[Path]]]:
    root = tmp_path_factory.mktemp("good")
    return root, build_good_folder(root)


def assert_good_structure(index: StudyIndex) -> None:
    assert [p.patient_id for p in index.patients] == ["PAT-A", "PAT-B"]
    assert [p.patient_name for p in index.patients] == ["Ann^Able", "Bob^Baker"]
    ann, bob = index.patients
    assert [s.study_instance_uid for s in ann.studies] == [
        ANN_MR.study_instance_uid,
        ANN_ECHO.study_instance_uid,
    ]  # sorted by study date
    assert len(index.studies) == 3 and len(index.series) == 5
    mr = index.get_study(ANN_MR.study_instance_uid)
    assert mr.modalities == ("MR",)
    assert (mr.study_date, mr.accession_number, mr.study_description) == (
        "20230105",
        "ACC-a-mr",
        "MRI BRAIN",
    )
    localizer, t1 = mr.series  # sorted by series number (1, 3)
    assert (localizer.series_number, localizer.series_description) == (1, "localizer")
    assert localizer.image_type == ("ORIGINAL", "PRIMARY", "LOCALIZER")
    assert [i.instance_number for i in localizer.instances] == [1, 2, 3]
    assert (t1.series_number, t1.series_description, t1.mr_acquisition_type) == (
        3,
        "T1 MPRAGE SAG",
        "3D",
    )
    assert (t1.number_of_instances, t1.number_of_frames, t1.rows, t1.columns) == (6, 6, 6, 5)
    assert t1.sop_class_uid == MR_IMAGE_STORAGE
    assert {i.transfer_syntax_uid for i in t1.instances} == {ExplicitVRLittleEndian}
    (cine,) = index.get_study(ANN_ECHO.study_instance_uid).series
    assert (cine.modality, cine.sop_class_uid, cine.number_of_frames) == ("US", US_MULTIFRAME, 20)
    enhanced, derived = bob.studies[0].series
    assert (enhanced.number_of_instances, enhanced.number_of_frames) == (1, 5)
    assert enhanced.sop_class_uid == "1.2.840.10008.5.1.4.1.1.4.1"
    assert enhanced.image_type[0] == "ORIGINAL" and enhanced.mr_acquisition_type == "3D"
    assert derived.image_type == ("DERIVED", "SECONDARY", "MPR")
    assert index.get_series(cine.series_instance_uid) is cine


def test_folder_is_indexed_into_patients_studies_and_series(
    good_folder: tuple[Path, dict[str, list[Path]]],
) -> None:
    root, files = good_folder
    index = index_dicom_source(root)
    assert index.failures == [] and index.skipped == []
    assert_good_structure(index)
    t1 = index.get_series(pydicom.dcmread(files["t1"][0]).SeriesInstanceUID)
    assert {i.path for i in t1.instances} == set(files["t1"])
    assert all(i.member is None for i in t1.instances)
    with pytest.raises(KeyError, match=r"no study with study_instance_uid '1\.2\.3'"):
        index.get_study("1.2.3")


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # pydicom reading the bad UID
def test_bad_files_are_reported_and_good_ones_still_indexed(
    good_folder: tuple[Path, dict[str, list[Path]]], tmp_path: Path
) -> None:
    root, files = good_folder
    mixed = tmp_path / "mixed"
    shutil.copytree(root, mixed)
    (mixed / "README").write_text("PACS export of 2023-03-10\n")
    (mixed / "notes.txt").write_text("not an image\n")
    (mixed / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    good_bytes = files["localizer"][0].read_bytes()
    (mixed / "truncated.dcm").write_bytes(good_bytes[:300])
    (mixed / "ann/mr/t1/copy-of-first.dcm").write_bytes(files["t1"][0].read_bytes())
    bad_uid = pydicom.dcmread(files["derived"][0])
    with pytest.warns(UserWarning, match="Invalid value for VR UI"):
        bad_uid.SOPInstanceUID = "../../etc/passwd"
        bad_uid.save_as(mixed / "bad-uid.dcm")

    index = index_dicom_source(mixed)

    assert_good_structure(index)
    reasons = {Path(f.path).name: (f.error, f.reason) for f in index.failures}
    assert set(reasons) == {"README", "truncated.dcm", "copy-of-first.dcm", "bad-uid.dcm"}
    assert reasons["README"][0] == "DicomReadError"
    assert "no 'DICM' prefix" in reasons["README"][1]
    assert reasons["truncated.dcm"][0] == "DicomReadError"
    assert reasons["copy-of-first.dcm"][1].startswith("duplicate SOP Instance UID")
    first = mixed / files["t1"][0].relative_to(root)
    assert reasons["copy-of-first.dcm"][1].endswith(f"already indexed from {first}")
    assert reasons["bad-uid.dcm"] == (
        "DicomReadError",
        "SOPInstanceUID '../../etc/passwd' is not a valid UID",
    )
    assert sorted(Path(p).name for p in index.skipped) == [".DS_Store", "notes.txt"]


def test_zip_members_are_indexed_and_bombs_refused(
    good_folder: tuple[Path, dict[str, list[Path]]], tmp_path: Path
) -> None:
    root, files = good_folder
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(root).as_posix())
        zf.writestr("../../outside/evil.dcm", files["derived"][0].read_bytes()[:200])
        # 2 MiB of zeros deflates about 1000:1: refused from the header, never inflated
        zf.writestr("bomb.dcm", bytes(2 * 1024**2))
        zf.writestr("README.txt", "hello")

    index = index_dicom_source(archive)

    assert_good_structure(index)
    cine = index.series[2]
    assert (cine.instances[0].path, cine.instances[0].member) == (archive, "ann/echo/cine.dcm")
    assert cine.instances[0].location == f"{archive}!ann/echo/cine.dcm"
    failures = {f.path: f for f in index.failures}
    assert set(failures) == {f"{archive}!../../outside/evil.dcm", f"{archive}!bomb.dcm"}
    assert failures[f"{archive}!../../outside/evil.dcm"].error == "DicomReadError"
    bomb = failures[f"{archive}!bomb.dcm"]
    assert bomb.error == "ResourceLimitError" and "zip bomb" in bomb.reason
    assert index.skipped == [f"{archive}!README.txt"]
    assert not (tmp_path.parent / "outside").exists()

    capped = index_dicom_source(archive, limits=IndexLimits(max_member_bytes=100_000))
    assert_good_structure(capped)
    assert [f.reason for f in capped.failures if f.path.endswith("bomb.dcm")] == [
        "member inflates to 2097152 bytes, over the 100000 limit"
    ]


def _write_file_set(files: dict[str, list[Path]], out: Path) -> Path:
    file_set = FileSet()
    for paths in files.values():
        for path in paths:
            file_set.add(path)
    file_set.write(out)
    return out


def test_dicomdir_records_find_the_files(
    good_folder: tuple[Path, dict[str, list[Path]]], tmp_path: Path
) -> None:
    _, files = good_folder
    media = _write_file_set(files, tmp_path / "media")
    (media / "stray.dcm").write_bytes(files["t1"][0].read_bytes())  # not in the DICOMDIR

    by_folder = index_dicom_source(media)
    by_file = index_dicom_source(media / "DICOMDIR")

    for index in (by_folder, by_file):
        assert index.failures == []
        assert_good_structure(index)
        paths = {i.path for s in index.series for i in s.instances}
        assert all(p.is_relative_to(media) and p.name != "stray.dcm" for p in paths)


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")  # pydicom writing the bad file ID
def test_dicomdir_file_ids_outside_the_file_set_are_refused(
    good_folder: tuple[Path, dict[str, list[Path]]], tmp_path: Path
) -> None:
    _, files = good_folder
    media = _write_file_set({"cine": files["cine"]}, tmp_path / "media")
    directory = pydicom.dcmread(media / "DICOMDIR")
    (record,) = [r for r in directory.DirectoryRecordSequence if "ReferencedFileID" in r]
    record.ReferencedFileID = ["..", "..", "ETC", "PASSWD"]
    directory.save_as(media / "DICOMDIR")

    index = index_dicom_source(media)

    assert index.patients == ()
    (failure,) = index.failures
    assert failure.error == "DicomReadError"
    assert failure.reason == "ReferencedFileID is not a valid PS3.10 file ID"


def test_missing_or_unreadable_sources_raise_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(DicomReadError, match="no such file or folder"):
        index_dicom_source(tmp_path / "absent")
    not_zip = tmp_path / "export.zip"
    not_zip.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DicomReadError, match="not a readable zip archive"):
        index_dicom_source(not_zip)
