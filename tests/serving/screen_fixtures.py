"""A tiny archive for the screen tests, in all four input layouts, with corrupt files mixed in.

Every study exists as DICOM (``dicom/<patient>/<accession>/``), and as the file the
models read by default: a BIDS T1w NIfTI for MR, an EchoNet AVI for echo. The manifest
names all three paths per study (as ``mmdx synth``'s does). With ``corrupt=True`` two
more studies come with broken files: an MR study with a truncated slice and a garbage
``.nii.gz``, an echo study with a truncated multi-frame file and a zero-byte AVI; and a
file that is not DICOM at all lies in the DICOM tree. Identities are invented.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

from imaging.synthetic.echonet import write_echonet_filelist, write_echonet_video
from imaging.synthetic.mr_dicom import write_mr_series
from imaging.synthetic.records import deterministic_uid
from imaging.synthetic.us_dicom import write_us_multiframe
from tests.synthetic_cases import (
    make_cine,
    make_echo_study,
    make_mr_volume,
    make_patient,
    make_site,
    make_study,
)

SECRET = "screen-test-secret-0123456789abcdef"
MANIFEST_COLUMNS = (
    "study_instance_uid", "accession_number", "patient_id", "site_id", "modality", "age", "sex",
    "label", "ef", "reduced_ef", "dicom_path", "nifti_path", "video_path",
)  # fmt: skip
BAD_MR = "bad-mr"
BAD_US = "bad-us"


@dataclass(frozen=True)
class ScreenArchive:
    """Where the layouts are and what they hold.

    Attributes:
        root: The archive folder (``manifest.csv``, ``dicom/``, ``nifti/``, ``echonet/``).
        mr_ids: Study Instance UIDs of the good MR studies.
        us_ids: Study Instance UIDs of the good echo studies.
        bad_ids: Study Instance UIDs of the corrupt studies (MR first).
        rows: The manifest rows.
    """

    root: Path
    mr_ids: list[str]
    us_ids: list[str]
    bad_ids: list[str] = field(default_factory=list)
    rows: list[dict[str, str]] = field(default_factory=list)

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.csv"

    @property
    def dicom(self) -> Path:
        return self.root / "dicom"

    @property
    def nifti(self) -> Path:
        return self.root / "nifti"

    @property
    def echonet(self) -> Path:
        return self.root / "echonet"

    def row(self, study_id: str) -> dict[str, str]:
        return next(row for row in self.rows if row["study_instance_uid"] == study_id)


def write_screen_archive(
    root: Path, *, mr: int = 6, us: int = 6, corrupt: bool = True
) -> ScreenArchive:
    """Write ``mr`` MR and ``us`` echo studies (and two corrupt ones) under ``root``."""
    rows: list[dict[str, str]] = []
    filelist: list[dict[str, object]] = []
    participants: list[str] = []
    for i in range(mr + int(corrupt)):
        bad = i == mr
        rows.append(_mr_study(root, i, bad=bad, participants=participants))
    for j in range(us + int(corrupt)):
        bad = j == us
        rows.append(_us_study(root, j, bad=bad, filelist=filelist))
    nifti = root / "nifti"
    (nifti / "participants.tsv").write_text(
        "participant_id\tsex\tage\tgroup\tsite\n" + "".join(participants)
    )
    write_echonet_filelist(filelist, root / "echonet" / "FileList.csv")
    if corrupt:
        junk = root / "dicom" / "JUNK" / "not_dicom.dcm"
        junk.parent.mkdir(parents=True)
        junk.write_bytes(b"this is not a DICOM file" * 10)
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    ids = [row["study_instance_uid"] for row in rows]
    return ScreenArchive(
        root=root,
        mr_ids=ids[:mr],
        us_ids=ids[mr + int(corrupt) : mr + int(corrupt) + us],
        bad_ids=[ids[mr], ids[-1]] if corrupt else [],
        rows=rows,
    )


def _mr_study(root: Path, i: int, *, bad: bool, participants: list[str]) -> dict[str, str]:
    patient_id = f"SCRMR{i:03d}"
    uid = deterministic_uid("screen-test", "MR", i)
    sex = "F" if i % 2 else "M"
    site = f"S{i % 2 + 1}"
    patient = make_patient(patient_id=patient_id, sex=sex, birth_date=date(1950 - i, 3, 1))
    study = make_study(
        patient=patient,
        site=make_site(institution_name=f"Site {site}"),
        study_instance_uid=uid,
        accession_number=f"AMR{i:03d}",
    )
    pixels = _blob(i)
    series_dir = root / "dicom" / patient_id / f"AMR{i:03d}" / "MR1"
    paths = write_mr_series(
        make_mr_volume(pixels, acquisition={"series_description": "T1 MPRAGE SAG"}),
        study,
        out_dir=series_dir,
        series_number=3,
        uid_seed=f"screen-{uid}",
    )
    nifti = root / "nifti" / f"sub-{patient_id}" / "ses-01" / "anat"
    nifti.mkdir(parents=True)
    nifti_path = nifti / f"sub-{patient_id}_ses-01_T1w.nii.gz"
    if bad:
        data = paths[len(paths) // 2].read_bytes()
        paths[len(paths) // 2].write_bytes(data[: len(data) - 300])
        nifti_path.write_bytes(b"\x1f\x8b garbage, not a NIfTI volume")
    else:
        _write_nifti(nifti_path, pixels)
    age = study.patient_age
    label = "AD" if i % 2 else "CN"
    participants.append(f"sub-{patient_id}\t{sex}\t{age}\t{label}\t{site}\n")
    return {
        "study_instance_uid": uid,
        "accession_number": f"AMR{i:03d}",
        "patient_id": patient_id,
        "site_id": site,
        "modality": "MR",
        "age": str(age),
        "sex": sex,
        "label": label,
        "ef": "",
        "reduced_ef": "",
        "dicom_path": str(series_dir.parent.relative_to(root)),
        "nifti_path": str(nifti_path.relative_to(root)),
        "video_path": "",
    }


def _us_study(
    root: Path, j: int, *, bad: bool, filelist: list[dict[str, object]]
) -> dict[str, str]:
    patient_id = f"SCRUS{j:03d}"
    uid = deterministic_uid("screen-test", "US", j)
    sex = "M" if j % 2 else "F"
    site = f"S{j % 2 + 1}"
    patient = make_patient(patient_id=patient_id, sex=sex, birth_date=date(1960 - j, 6, 1))
    study = make_echo_study(
        patient=patient, study_instance_uid=uid, institution_name=f"Site {site}"
    )
    ejection_fraction = 0.30 if j % 2 else 0.60
    cine = make_cine(
        study, seed=j, ejection_fraction=ejection_fraction, number_of_frames=24, rows=128
    )
    study_dir = root / "dicom" / patient_id / f"AUS{j:03d}" / "US1"
    dicom_path = write_us_multiframe(
        cine, study, path=study_dir / "loop.dcm", encoding="rgb", series_number=7,
        uid_seed=f"screen-{uid}",
    )  # fmt: skip
    name = f"0XSCREEN{j:04d}"
    video = root / "echonet" / "Videos" / f"{name}.avi"
    row = write_echonet_video(cine, video)
    filelist.append({**row, "Split": "TEST"})
    if bad:
        data = dicom_path.read_bytes()
        dicom_path.write_bytes(data[: len(data) // 2])
        video.write_bytes(b"")
    ef = 100.0 * ejection_fraction
    return {
        "study_instance_uid": uid,
        "accession_number": f"AUS{j:03d}",
        "patient_id": patient_id,
        "site_id": site,
        "modality": "US",
        "age": str(study.patient_age),
        "sex": sex,
        "label": "reduced_ef" if ef < 40 else "normal_ef",
        "ef": f"{ef:.2f}",
        "reduced_ef": "1" if ef < 40 else "0",
        "dicom_path": str(study_dir.parent.relative_to(root)),
        "nifti_path": "",
        "video_path": str(video.relative_to(root)),
    }


def _blob(seed: int, slices: int = 48) -> np.ndarray:
    """A bright blob in noise, ``(slices, 20, 20)``, placed by ``seed``."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0:slices, 0:20, 0:20]
    centre = rng.uniform([slices * 0.3, 6, 6], [slices * 0.7, 14, 14])
    blob = np.exp(
        -(((z - centre[0]) / 8) ** 2 + ((y - centre[1]) / 5) ** 2 + ((x - centre[2]) / 5) ** 2)
    )
    return 800.0 * blob + rng.normal(100.0, 10.0, blob.shape)


def _write_nifti(path: Path, pixels: np.ndarray) -> None:
    import nibabel as nib

    volume = np.ascontiguousarray(pixels.transpose(2, 1, 0)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.diag([1.0, 1.0, 1.0, 1.0])), str(path))
