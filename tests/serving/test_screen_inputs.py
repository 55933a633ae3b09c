"""Discovery of the screen's studies in the four input kinds, corrupt files reported, not raised."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from imaging.dicom.deid.replacements import pseudonym
from imaging.inference.inputs import load_input
from serving.screening.dicom_inputs import age_in_years
from serving.screening.inputs import (
    ScreenInputError,
    StudyTask,
    detect_input_kind,
    discover_studies,
)
from tests.serving.screen_fixtures import SECRET, ScreenArchive, write_screen_archive

KEY = SECRET.encode()
DEFAULT_SOURCES = {"MR": "nifti", "US": "echonet"}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> ScreenArchive:
    return write_screen_archive(tmp_path_factory.mktemp("screen-archive"), mr=3, us=3)


def by_id(tasks: list[StudyTask]) -> dict[str, StudyTask]:
    return {task.study_id: task for task in tasks}


def test_detect_input_kind(archive: ScreenArchive, tmp_path: Path) -> None:
    assert detect_input_kind(archive.manifest) == "manifest"
    assert detect_input_kind(archive.nifti) == "bids"
    assert detect_input_kind(archive.echonet) == "echonet"
    assert detect_input_kind(archive.dicom) == "dicom"
    (tmp_path / "a.zip").write_bytes(b"")
    assert detect_input_kind(tmp_path / "a.zip") == "dicom"
    with pytest.raises(ScreenInputError, match="no such file or folder"):
        detect_input_kind(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ScreenInputError, match=r"manifest \.csv or a \.zip"):
        detect_input_kind(tmp_path / "notes.txt")


def test_manifest_rows_read_the_models_source_with_pseudonyms(
    archive: ScreenArchive, tmp_path: Path
) -> None:
    found = discover_studies(
        archive.manifest, sources=DEFAULT_SOURCES, secret=KEY, workdir=tmp_path
    )
    tasks = by_id(found.tasks)
    assert found.kind == "manifest"
    assert list(tasks) == [row["study_instance_uid"] for row in archive.rows]
    mr, us = tasks[archive.mr_ids[1]], tasks[archive.us_ids[0]]
    assert mr.path == str(archive.root / archive.row(mr.study_id)["nifti_path"])
    assert us.path == str(archive.root / archive.row(us.study_id)["video_path"])
    assert mr.patient_pseudonym == pseudonym(KEY, ("id", "SCRMR001", ""), "MMDX-")
    assert "SCRMR001" not in str(mr.patient_pseudonym)
    assert (mr.modality, mr.site_id, mr.sex, mr.age_years) == ("MR", "S2", "F", 75.0)
    # Corrupt files are not opened at discovery: they fail when decoded.
    assert not any(task.failed for task in found.tasks)

    # A DICOM-trained model reads the study folders.
    dicom = discover_studies(
        archive.manifest, sources={"MR": "dicom", "US": "echonet"}, secret=KEY, workdir=tmp_path
    )
    assert by_id(dicom.tasks)[mr.study_id].path == str(archive.dicom / "SCRMR001" / "AMR001")


def test_manifest_rows_without_key_path_or_model_fail_alone(
    archive: ScreenArchive, tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.csv"
    lines = archive.manifest.read_text().splitlines()
    header = lines[0].split(",")
    no_paths = lines[1].split(",")
    for column in ("dicom_path", "nifti_path", "video_path"):
        no_paths[header.index(column)] = ""
    no_key = lines[2].split(",")
    no_key[0] = ""
    manifest.write_text("\n".join([lines[0], ",".join(no_paths), ",".join(no_key), *lines[3:]]))
    found = discover_studies(manifest, sources={"MR": "nifti"}, secret=KEY, workdir=tmp_path)
    failed = {task.study_id: task.error for task in found.tasks if task.failed}
    assert failed[archive.mr_ids[0]] == (
        "ValueError: line 2 has none of nifti_path, video_path, dicom_path"
    )
    assert failed["manifest.csv line 3"] == "ValueError: line 3 has no study_instance_uid"
    assert failed[archive.us_ids[0]] == (
        "PredictionInputError: no model for modality US (models given: MR)"
    )
    assert len([task for task in found.tasks if not task.failed]) == 2  # MR 2 and the corrupt one


def test_bids_folder_gives_one_mr_study_per_t1w(archive: ScreenArchive, tmp_path: Path) -> None:
    found = discover_studies(archive.nifti, sources=DEFAULT_SOURCES, secret=KEY, workdir=tmp_path)
    tasks = by_id(found.tasks)
    assert sorted(tasks) == [f"sub-SCRMR{i:03d}_ses-01_T1w" for i in range(4)]
    task = tasks["sub-SCRMR001_ses-01_T1w"]
    assert (task.modality, task.site_id, task.sex, task.age_years) == ("MR", "S2", "F", 75.0)
    # The same pseudonym as the manifest row and the DICOM header of that patient give.
    assert task.patient_pseudonym == pseudonym(KEY, ("id", "SCRMR001", ""), "MMDX-")
    assert Path(str(task.path)).name == "sub-SCRMR001_ses-01_T1w.nii.gz"


def test_echonet_folder_reports_a_listed_video_that_is_missing(
    archive: ScreenArchive, tmp_path: Path
) -> None:
    root = tmp_path / "echonet"
    shutil.copytree(archive.echonet, root)
    (root / "Videos" / "0XSCREEN0001.avi").unlink()
    found = discover_studies(root, sources=DEFAULT_SOURCES, secret=KEY, workdir=tmp_path)
    tasks = by_id(found.tasks)
    assert sorted(tasks) == [f"0XSCREEN{j:04d}" for j in range(4)]
    assert tasks["0XSCREEN0001"].error == (
        "FileNotFoundError: Videos/0XSCREEN0001.avi: no such video"
    )
    assert tasks["0XSCREEN0000"].modality == "US"
    assert tasks["0XSCREEN0000"].patient_pseudonym is None  # EchoNet has no patients


def test_dicom_folder_gives_each_study_its_folder_and_reports_unreadable_files(
    archive: ScreenArchive, tmp_path: Path
) -> None:
    found = discover_studies(archive.dicom, sources=DEFAULT_SOURCES, secret=KEY, workdir=tmp_path)
    tasks = by_id(found.tasks)
    assert set(tasks) == {*archive.mr_ids, *archive.us_ids, *archive.bad_ids, "JUNK/not_dicom.dcm"}
    assert tasks["JUNK/not_dicom.dcm"].error == (
        "DicomReadError: JUNK/not_dicom.dcm: not a DICOM Part 10 file: no 'DICM' prefix after "
        "the preamble"
    )
    mr = tasks[archive.mr_ids[1]]
    assert mr.path == str(archive.dicom / "SCRMR001" / "AMR001" / "MR1")  # its own folder
    assert (mr.modality, mr.site_id, mr.sex, mr.age_years) == ("MR", "Site S2", "F", 75.0)
    assert mr.patient_pseudonym == pseudonym(KEY, ("id", "SCRMR001", ""), "MMDX-")
    us = tasks[archive.us_ids[2]]
    assert us.modality == "US" and us.path == str(archive.dicom / "SCRUS002" / "AUS002" / "US1")
    assert not list(tmp_path.iterdir())  # no study needed a folder of its own
    assert load_input(str(mr.path), "MR").source["study_instance_uid"] == mr.study_id


def test_dicom_zip_and_shared_folders_get_folders_of_their_own(
    archive: ScreenArchive, tmp_path: Path
) -> None:
    bundle = tmp_path / "archive.zip"
    with zipfile.ZipFile(bundle, "w") as handle:
        for path in sorted(archive.dicom.rglob("*.dcm")):
            handle.write(path, path.relative_to(archive.dicom))
    found = discover_studies(bundle, sources=DEFAULT_SOURCES, secret=KEY, workdir=tmp_path / "w")
    tasks = by_id(found.tasks)
    junk = "archive.zip!JUNK/not_dicom.dcm"
    assert set(tasks) == {*archive.mr_ids, *archive.us_ids, *archive.bad_ids, junk}
    assert str(tasks[junk].error).startswith(f"DicomReadError: {junk}: not a DICOM Part 10 file")
    mr = tasks[archive.mr_ids[0]]
    assert Path(str(mr.path)).parent == tmp_path / "w"
    assert len(list(Path(str(mr.path)).iterdir())) == 48
    assert load_input(str(mr.path), "MR").source["study_instance_uid"] == mr.study_id
    assert mr.sex == "M" and mr.patient_pseudonym is not None

    # Two studies' files in one flat folder: each study gets links to its own files.
    flat = tmp_path / "flat"
    flat.mkdir()
    for folder in ("SCRMR000", "SCRUS000"):
        for number, path in enumerate(sorted((archive.dicom / folder).rglob("*.dcm"))):
            shutil.copy(path, flat / f"{folder}-{number}.dcm")
    found = discover_studies(flat, sources=DEFAULT_SOURCES, secret=KEY, workdir=tmp_path / "f")
    tasks = by_id(found.tasks)
    assert set(tasks) == {archive.mr_ids[0], archive.us_ids[0]}
    for task in tasks.values():
        folder = Path(str(task.path))
        assert folder.parent == tmp_path / "f"
        assert all(path.is_symlink() for path in folder.iterdir())
    assert load_input(str(tasks[archive.us_ids[0]].path), "US").modality == "US"


def test_a_study_without_a_modality_model_fails_at_discovery(
    archive: ScreenArchive, tmp_path: Path
) -> None:
    found = discover_studies(archive.dicom, sources={"MR": "nifti"}, secret=KEY, workdir=tmp_path)
    error = by_id(found.tasks)[archive.us_ids[0]].error
    assert error == "PredictionInputError: no model for modality US (models given: MR)"


def test_excluded_studies_get_no_folder(archive: ScreenArchive, tmp_path: Path) -> None:
    bundle = tmp_path / "one.zip"
    with zipfile.ZipFile(bundle, "w") as handle:
        for path in sorted((archive.dicom / "SCRMR000").rglob("*.dcm")):
            handle.write(path, path.name)
    found = discover_studies(
        bundle,
        sources=DEFAULT_SOURCES,
        secret=KEY,
        workdir=tmp_path / "w",
        exclude={archive.mr_ids[0]},
    )
    assert [(task.study_id, task.path) for task in found.tasks] == [(archive.mr_ids[0], None)]
    assert not (tmp_path / "w").exists()


def test_age_from_patient_age_or_dates() -> None:
    assert age_in_years("073Y", None, None) == 73.0
    assert age_in_years("006M", None, None) == 0.5
    assert age_in_years(None, "19500301", "20240301") == pytest.approx(74.0, abs=0.01)
    assert age_in_years("bad", "2024", "20240301") is None
