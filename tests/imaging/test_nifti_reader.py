"""BIDS-like NIfTI folders: records with participant/session columns, volumes as MetaTensors."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from imaging.errors import NiftiReadError, ResourceLimitError
from imaging.readers.nifti import load_nifti_volume, read_bids_t1w
from imaging.synthetic.archive import ArchiveSpec, generate_archive

AFFINE = np.array(
    [[-1.5, 0.0, 0.0, 40.0], [0.0, 1.25, 0.0, -20.0], [0.0, 0.0, 2.0, -30.0], [0.0, 0.0, 0.0, 1.0]]
)


def write_image(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def write_tsv(path: Path, header: str, *rows: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")


@pytest.fixture
def bids(tmp_path: Path) -> Path:
    """Two subjects with sessions, one without; a sidecar and a T2w that must be ignored."""
    data = np.zeros((4, 5, 6), dtype=np.int16)
    for subject, session in (("sub-01", "ses-01"), ("sub-01", "ses-02"), ("sub-02", "ses-01")):
        write_image(tmp_path / subject / session / "anat" / f"{subject}_{session}_T1w.nii.gz", data)
    write_image(tmp_path / "sub-03" / "anat" / "sub-03_acq-mprage_T1w.nii", data)
    write_image(tmp_path / "sub-02" / "ses-01" / "anat" / "sub-02_ses-01_T2w.nii.gz", data)
    (tmp_path / "sub-03" / "anat" / "sub-03_acq-mprage_T1w.json").write_text("{}")
    write_tsv(
        tmp_path / "participants.tsv",
        "participant_id\tsex\tage\tdiagnosis",
        "sub-01\tF\t71\tCN",
        "sub-02\tM\tn/a\tAD",
        "sub-03\tF\t66.5\tn/a",
    )
    write_tsv(
        tmp_path / "sub-01" / "sub-01_sessions.tsv",
        "session_id\tage\tdiagnosis",
        "ses-01\t71\tCN",
        "ses-02\t73\tAD",
    )
    return tmp_path


def test_bids_folder_gives_one_record_per_t1w_with_table_columns(bids: Path) -> None:
    records = read_bids_t1w(bids)
    assert [(r.subject, r.session, r.path.name) for r in records] == [
        ("sub-01", "ses-01", "sub-01_ses-01_T1w.nii.gz"),
        ("sub-01", "ses-02", "sub-01_ses-02_T1w.nii.gz"),
        ("sub-02", "ses-01", "sub-02_ses-01_T1w.nii.gz"),
        ("sub-03", None, "sub-03_acq-mprage_T1w.nii"),
    ]
    first, second, third, fourth = records
    assert (first.age, first.sex, first.label) == (71.0, "F", "CN")
    assert (second.age, second.label) == (73.0, "AD")  # the session's row wins
    assert second.participant["diagnosis"] == "CN"
    assert (third.age, third.sex, third.label) == (None, "M", "AD")  # n/a is missing
    assert (fourth.age, fourth.label, fourth.session_columns) == (66.5, None, {})


def test_malformed_tables_and_misplaced_files_raise_typed_errors(bids: Path) -> None:
    write_tsv(bids / "participants.tsv", "participant_id\tage", "sub-01\t71", "sub-01\t72")
    with pytest.raises(NiftiReadError, match="participant_id 'sub-01' appears twice"):
        read_bids_t1w(bids)
    write_tsv(bids / "participants.tsv", "subject\tage", "sub-01\t71")
    with pytest.raises(NiftiReadError, match="line 2 has no participant_id"):
        read_bids_t1w(bids)
    (bids / "participants.tsv").unlink()
    write_image(bids / "sub-04" / "anat" / "sub-05_T1w.nii.gz", np.zeros((2, 2, 2), np.int16))
    with pytest.raises(NiftiReadError, match="file name says sub-05"):
        read_bids_t1w(bids)
    with pytest.raises(NiftiReadError, match="not a folder"):
        read_bids_t1w(bids / "absent")


def test_volume_loads_channel_first_with_its_ras_affine(tmp_path: Path) -> None:
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    path = write_image(tmp_path / "t1.nii.gz", data)

    image = load_nifti_volume(path)

    assert tuple(image.shape) == (1, 4, 5, 6)
    np.testing.assert_array_equal(image[0].numpy(), data)
    np.testing.assert_allclose(image.affine.numpy(), AFFINE)
    assert image.meta["space"] == "RAS"
    assert image.meta["filename_or_obj"] == str(path)


def test_missing_corrupt_truncated_and_oversized_files_raise_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(NiftiReadError, match="no such file"):
        load_nifti_volume(tmp_path / "absent.nii.gz")
    (tmp_path / "text.nii.gz").write_text("not an image")
    with pytest.raises(NiftiReadError, match="not a readable NIfTI file"):
        load_nifti_volume(tmp_path / "text.nii.gz")

    data = np.random.default_rng(0).integers(0, 1000, (20, 20, 20), dtype=np.int16)
    good = write_image(tmp_path / "good.nii", data)
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(gzip.compress(good.read_bytes()[: 352 + 100]))  # header + 100 bytes
    with pytest.raises(NiftiReadError, match="corrupt or truncated NIfTI data"):
        load_nifti_volume(truncated)

    with pytest.raises(ResourceLimitError, match="data would be 16000 bytes, over the 1000 limit"):
        load_nifti_volume(good, max_bytes=1000)
    four_d = write_image(tmp_path / "bold.nii.gz", np.zeros((3, 3, 3, 5), np.int16))
    with pytest.raises(NiftiReadError, match=r"not a 3D volume: data shape \(3, 3, 3, 5\)"):
        load_nifti_volume(four_d)


@pytest.mark.slow
def test_sample_archive_nifti_folder(tmp_path: Path) -> None:
    """The generator's ``nifti/`` layout, with a follow-up visit, reads back as written."""
    generate_archive(
        ArchiveSpec(out_dir=tmp_path, mri_studies=3, echo_studies=0, sites=1, seed=3, workers=1)
    )
    records = read_bids_t1w(tmp_path / "nifti")
    assert [(r.subject, r.session) for r in records] == [
        ("sub-MMDX000000", "ses-01"),
        ("sub-MMDX000001", "ses-01"),
        ("sub-MMDX000001", "ses-02"),
    ]
    assert [r.label for r in records] == ["CN", "CN", "CN"]
    assert all(r.sex in {"F", "M"} and r.age is not None for r in records)
    assert records[2].age is not None and records[1].age is not None
    assert records[2].age >= records[1].age  # the follow-up's own age, from the sessions table

    image = load_nifti_volume(records[0].path)
    expected: Any = nib.load(records[0].path)
    assert tuple(image.shape) == (1, *expected.shape)
    np.testing.assert_allclose(image.affine.numpy(), expected.affine, atol=1e-5)
    np.testing.assert_allclose(image[0].numpy(), expected.get_fdata(), rtol=1e-6)
