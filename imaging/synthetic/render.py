"""Render and write one planned study (runs in worker processes), and the archive indexes."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from imaging.synthetic.archive import (
    REDUCED_EF_THRESHOLD,
    ArchiveSpec,
    StudyPlan,
    seeded_rng,
)
from imaging.synthetic.brain import create_brain_phenotype, load_head_template
from imaging.synthetic.reports import write_echo_report, write_mri_report

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
US_MULTIFRAME_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
ECHONET_SPLITS = (("TRAIN", 0.75), ("VAL", 0.125), ("TEST", 0.125))


@dataclass(frozen=True)
class RenderedStudy:
    """What a worker hands back: the manifest row and, for echo, the EchoNet FileList row."""

    manifest_row: dict[str, str]
    echonet_row: dict[str, object] | None = None


def load_shared_data() -> None:
    """Load what every study needs once (the brain template), before workers fork."""
    load_head_template()


def initialise_worker() -> None:
    """Worker set-up: one torch thread per worker process, the brain template loaded."""
    import torch

    torch.set_num_threads(1)
    load_shared_data()


def render_study(plan: StudyPlan, spec: ArchiveSpec) -> RenderedStudy:
    """Render ``plan`` and write its DICOM, NIfTI or video, and report under ``spec.out_dir``."""
    if plan.modality == "MR":
        return _render_mr(plan, spec)
    return _render_echo(plan, spec)


def _study_dir(spec: ArchiveSpec, plan: StudyPlan) -> Path:
    return spec.out_dir / "dicom" / plan.study.patient.patient_id / plan.study.accession_number


def _relative(path: Path, spec: ArchiveSpec) -> str:
    return path.relative_to(spec.out_dir).as_posix()


def _common_row(plan: StudyPlan, spec: ArchiveSpec, report: str) -> dict[str, str]:
    report_path = spec.out_dir / "reports" / f"{plan.study.accession_number}.txt"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(report)
    return {
        "study_instance_uid": plan.study.study_instance_uid,
        "accession_number": plan.study.accession_number,
        "patient_id": plan.study.patient.patient_id,
        "site_id": plan.site.site_id,
        "modality": plan.modality,
        "visit": str(plan.visit),
        "study_date": plan.study.study_date.isoformat(),
        "age": str(plan.study.patient_age),
        "sex": plan.study.patient.sex,
        "dicom_path": _relative(_study_dir(spec, plan), spec),
        "report_path": _relative(report_path, spec),
    }


def _render_mr(plan: StudyPlan, spec: ArchiveSpec) -> RenderedStudy:
    from imaging.synthetic.mr_acquisition import acquire_mr
    from imaging.synthetic.mr_dicom import write_mr_series
    from imaging.synthetic.mr_enhanced_dicom import write_enhanced_mr_series
    from imaging.synthetic.mr_nifti import write_nifti

    # The anatomy belongs to the patient, so a follow-up visit shows the same brain.
    anatomy_rng = seeded_rng(spec.seed, "MR-anatomy", plan.patient_index)
    rng = seeded_rng(spec.seed, "MR-study", plan.index)
    phenotype = create_brain_phenotype(
        age_years=plan.study.patient_age,
        sex=plan.study.patient.sex,
        ad_severity=plan.severity,
        rng=anatomy_rng,
    )
    volume = acquire_mr(phenotype, plan.site.mr_protocol, load_head_template(), rng)
    series_dir = _study_dir(spec, plan) / "MR1"
    uid_seed = f"{spec.seed}-MR-{plan.index}"
    if plan.site.mr_enhanced:
        write_enhanced_mr_series(
            volume, plan.study, out_dir=series_dir, series_number=1, uid_seed=uid_seed
        )
    else:
        write_mr_series(
            volume,
            plan.study,
            out_dir=series_dir,
            series_number=1,
            uid_seed=uid_seed,
            file_order=plan.site.mr_file_order,
        )
    subject = f"sub-{plan.study.patient.patient_id}"
    session = f"ses-{plan.visit:02d}"
    nifti_path = (
        spec.out_dir / "nifti" / subject / session / "anat" / f"{subject}_{session}_T1w.nii.gz"
    )
    nifti_path.parent.mkdir(parents=True, exist_ok=True)
    write_nifti(volume, nifti_path)

    report = write_mri_report(
        phenotype,
        age_years=plan.study.patient_age,
        rng=rng,
        comparison_date=plan.comparison_date,
    )
    row = _common_row(plan, spec, report)
    row.update(
        label="AD" if plan.diseased else "CN",
        nifti_path=_relative(nifti_path, spec),
        sop_class=ENHANCED_MR_STORAGE if plan.site.mr_enhanced else MR_STORAGE,
        transfer_syntax=EXPLICIT_VR_LITTLE_ENDIAN,
        truth_ad_severity=f"{plan.severity:.4f}",
        truth_hippocampal_loss=f"{phenotype.hippocampal_loss:.4f}",
        truth_ventricular_expansion=f"{phenotype.ventricular_expansion:.4f}",
        truth_cortical_thinning=f"{phenotype.cortical_thinning:.4f}",
    )
    return RenderedStudy(manifest_row=row)


def _render_echo(plan: StudyPlan, spec: ArchiveSpec) -> RenderedStudy:
    from imaging.synthetic.echo_cine import synthesize_a4c_cine
    from imaging.synthetic.echonet import write_echonet_video
    from imaging.synthetic.us_dicom import write_us_multiframe

    heart_rng = seeded_rng(spec.seed, "US-heart", plan.patient_index)
    rng = seeded_rng(spec.seed, "US-study", plan.index)
    ejection_fraction = plan.severity
    # Failing ventricles dilate: reduced EF comes with larger end-diastolic volumes.
    base_edv = 95.0 if plan.study.patient.sex == "F" else 120.0
    dilation = 1.0 + max(0.0, 50.0 - ejection_fraction) / 40.0
    edv_ml = float(np.clip(base_edv * dilation * heart_rng.normal(1.0, 0.15), 55.0, 320.0))
    esv_ml = edv_ml * (1.0 - ejection_fraction / 100.0)
    heart_rate = float(np.clip(rng.normal(72.0 + 0.2 * (55.0 - ejection_fraction), 11.0), 48, 120))
    frame_rate = float(rng.uniform(*plan.site.echo_frame_rate_fps))
    appearance = replace(
        plan.site.echo_appearance,
        gain_db=float(np.clip(plan.site.echo_appearance.gain_db + rng.normal(0.0, 1.5), -8, 8)),
    )
    rows, columns = plan.site.echo_frame_shape
    cine = synthesize_a4c_cine(
        ejection_fraction=ejection_fraction / 100.0,
        edv_ml=edv_ml,
        heart_rate_bpm=heart_rate,
        frame_rate_fps=frame_rate,
        rows=rows,
        columns=columns,
        study=plan.study,
        rng=rng,
        appearance=appearance,
    )
    series_dir = _study_dir(spec, plan) / "US1"
    series_dir.mkdir(parents=True, exist_ok=True)
    uid_seed = f"{spec.seed}-US-{plan.index}"
    dicom_file = series_dir / f"{hashlib.sha256(uid_seed.encode()).hexdigest()[:16]}.dcm"
    write_us_multiframe(
        cine, plan.study, path=dicom_file, encoding=plan.site.echo_encoding, uid_seed=uid_seed
    )
    video_name = "0X" + hashlib.sha256(plan.study.study_instance_uid.encode()).hexdigest()[:16]
    video_path = spec.out_dir / "echonet" / "Videos" / f"{video_name.upper()}.avi"
    video_path.parent.mkdir(parents=True, exist_ok=True)
    echonet_row = write_echonet_video(cine, video_path)
    echonet_row["Split"] = _echonet_split(spec.seed, plan.patient_index)

    report = write_echo_report(
        ejection_fraction_percent=ejection_fraction,
        edv_ml=edv_ml,
        esv_ml=esv_ml,
        heart_rate_bpm=heart_rate,
        rng=rng,
    )
    row = _common_row(plan, spec, report)
    row.update(
        label="reduced_ef" if plan.diseased else "normal_ef",
        ef=f"{ejection_fraction:.2f}",
        reduced_ef=str(int(ejection_fraction < REDUCED_EF_THRESHOLD)),
        edv_ml=f"{edv_ml:.1f}",
        esv_ml=f"{esv_ml:.1f}",
        video_path=_relative(video_path, spec),
        sop_class=US_MULTIFRAME_STORAGE,
        transfer_syntax=(
            JPEG_BASELINE
            if plan.site.echo_encoding == "jpeg_baseline"
            else EXPLICIT_VR_LITTLE_ENDIAN
        ),
        truth_heart_rate_bpm=f"{heart_rate:.1f}",
        truth_frame_rate_fps=f"{frame_rate:.2f}",
    )
    return RenderedStudy(manifest_row=row, echonet_row=echonet_row)


def _echonet_split(seed: int, patient_index: int) -> str:
    """TRAIN, VAL or TEST by patient, so a patient's loops never straddle splits."""
    draw = seeded_rng(seed, "US-split", patient_index).random()
    cumulative = 0.0
    for name, share in ECHONET_SPLITS:
        cumulative += share
        if draw < cumulative:
            return name
    return ECHONET_SPLITS[-1][0]


def write_archive_indexes(
    out_dir: Path, plans: list[StudyPlan], rendered: list[RenderedStudy]
) -> None:
    """Write the BIDS-like participants and sessions tables and EchoNet's FileList.csv."""
    mr = [
        (plan, study) for plan, study in zip(plans, rendered, strict=True) if plan.modality == "MR"
    ]
    if mr:
        _write_bids_tables(out_dir / "nifti", mr)
    echonet_rows = [study.echonet_row for study in rendered if study.echonet_row is not None]
    if echonet_rows:
        from imaging.synthetic.echonet import write_echonet_filelist

        write_echonet_filelist(echonet_rows, out_dir / "echonet" / "FileList.csv")
    (out_dir / "README.txt").write_text(
        "SYNTHETIC SAMPLE ARCHIVE generated by `mmdx synth`.\n"
        "Every patient, name, identifier, date and image here is invented. No real patient data.\n"
        "Not for diagnostic use. See docs/synthetic-data.md for the generative model.\n"
    )


def _write_bids_tables(nifti_dir: Path, studies: list[tuple[StudyPlan, RenderedStudy]]) -> None:
    participants: dict[str, dict[str, str]] = {}
    sessions: dict[str, list[dict[str, str]]] = {}
    for plan, study in studies:
        row = study.manifest_row
        subject = f"sub-{plan.study.patient.patient_id}"
        participants.setdefault(
            subject,
            {
                "participant_id": subject,
                "sex": plan.study.patient.sex,
                "age": row["age"],
                "group": row["label"],
                "site": plan.site.site_id,
            },
        )["group"] = row["label"]  # the latest visit's diagnosis
        sessions.setdefault(subject, []).append(
            {
                "session_id": f"ses-{plan.visit:02d}",
                "acq_time": plan.study.study_date.isoformat(),
                "age": row["age"],
                "group": row["label"],
            }
        )
    _write_tsv(nifti_dir / "participants.tsv", list(participants.values()))
    for subject, rows in sessions.items():
        _write_tsv(nifti_dir / subject / f"{subject}_sessions.tsv", rows)


def _write_tsv(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
