"""Generate the sample archive: plan studies, render them in parallel, write the manifests.

Layout of an archive directory::

    manifest.csv                 one row per study: identifiers, site, labels, truth, paths
    dicom/<patient>/<accession>/ MR series (a file per slice, or one Enhanced MR file)
                                 and US multi-frame objects, as a PACS export would hold them
    nifti/participants.tsv       BIDS-like: sub-<patient>/ses-<visit>/anat/*_T1w.nii.gz
    echonet/FileList.csv         EchoNet-Dynamic layout, Videos/*.avi
    reports/<accession>.txt      the free-text report of each study

Planning (who, where, which label) runs in the calling process and is cheap;
rendering and writing run in worker processes. Every random draw comes from a
generator seeded by (seed, what, index), so a seed gives the same archive
whatever the number of workers.
"""

from __future__ import annotations

import csv
import hashlib
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TypeVar

import numpy as np

from imaging.synthetic.identities import (
    create_accession_number,
    create_patient,
    pick_referring_physician,
)
from imaging.synthetic.records import SyntheticPatient, SyntheticStudy, deterministic_uid
from imaging.synthetic.sites import SiteProfile, create_site_profiles

MANIFEST_COLUMNS = (
    "study_instance_uid", "accession_number", "patient_id", "site_id", "modality", "visit",
    "study_date", "age", "sex", "label", "ef", "reduced_ef", "edv_ml", "esv_ml",
    "dicom_path", "nifti_path", "video_path", "report_path", "sop_class", "transfer_syntax",
    "truth_ad_severity", "truth_hippocampal_loss", "truth_ventricular_expansion",
    "truth_cortical_thinning", "truth_heart_rate_bpm", "truth_frame_rate_fps",
)  # fmt: skip
Result = TypeVar("Result")
REDUCED_EF_THRESHOLD = 40.0  # percent; below it a study is labelled reduced EF
FOLLOW_UP_FRACTION = {"MR": 0.2, "US": 0.15}
FIRST_STUDY_DATE = date(2019, 1, 7)
STUDY_DATE_SPAN_DAYS = 6 * 365


@dataclass(frozen=True)
class ArchiveSpec:
    """What to generate. ``workers`` 0 means one process per CPU core."""

    out_dir: Path
    mri_studies: int = 200
    echo_studies: int = 200
    sites: int = 4
    seed: int = 0
    workers: int = 0

    def __post_init__(self) -> None:
        for name in ("mri_studies", "echo_studies", "workers"):
            if getattr(self, name) < 0:
                raise ValueError(f'Argument "{name}" must not be negative')
        if self.sites < 1:
            raise ValueError(f'Argument "sites" must be at least 1, got {self.sites}')


@dataclass(frozen=True)
class StudyPlan:
    """One study to render: who, where, what the truth is, and which visit."""

    modality: str  # "MR" or "US"
    index: int  # position among the archive's studies of this modality
    patient_index: int
    visit: int
    study: SyntheticStudy
    site: SiteProfile
    diseased: bool  # Alzheimer's-like (MR) or reduced EF (US)
    severity: float  # MR: disease severity 0..1; US: true EF in percent
    comparison_date: date | None


def seeded_rng(seed: int, what: str, index: int) -> np.random.Generator:
    """The generator for one named draw (``what``, ``index``) of the archive seeded ``seed``."""
    # Python's hash() is salted per process, so the name is hashed with sha256.
    key = int.from_bytes(hashlib.sha256(what.encode()).digest()[:8], "little")
    return np.random.default_rng(np.random.SeedSequence([seed, key, index]))


def plan_archive(spec: ArchiveSpec) -> tuple[list[SiteProfile], list[StudyPlan]]:
    """Decide every study of the archive without rendering anything."""
    sites = create_site_profiles(spec.sites, seeded_rng(spec.seed, "sites", 0))
    plans: list[StudyPlan] = []
    patient_counter = 0
    for modality, total in (("MR", spec.mri_studies), ("US", spec.echo_studies)):
        index = 0
        while index < total:
            rng = seeded_rng(spec.seed, f"{modality}-patient", patient_counter)
            site = sites[int(rng.integers(len(sites)))]
            prevalence = site.ad_prevalence if modality == "MR" else site.reduced_ef_prevalence
            diseased = bool(rng.random() < prevalence)
            sex = "F" if rng.random() < (0.58 if modality == "MR" else 0.45) else "M"
            if modality == "MR":
                mean_age = (76.0 if diseased else 71.0) + site.mean_age_offset
                age = int(np.clip(rng.normal(mean_age, 6.5), 55, 94))
                severity = (
                    float(np.clip(rng.beta(2.2, 2.0), 0.1, 1.0))
                    if diseased
                    else float(np.clip(rng.exponential(0.05), 0.0, 0.25))
                )
            else:
                age = int(np.clip(rng.normal(66.0 + site.mean_age_offset, 12.0), 25, 95))
                severity = (
                    float(rng.uniform(15.0, REDUCED_EF_THRESHOLD - 0.5))
                    if diseased
                    else float(np.clip(rng.normal(60.0, 7.0), REDUCED_EF_THRESHOLD, 78.0))
                )
            visits = 2 if rng.random() < FOLLOW_UP_FRACTION[modality] else 1
            study_date = FIRST_STUDY_DATE + timedelta(
                days=int(rng.integers(0, STUDY_DATE_SPAN_DAYS - 800))
            )
            patient = create_patient(
                index=patient_counter, sex=sex, age_years=age, study_date=study_date, rng=rng
            )
            previous: date | None = None
            for visit in range(1, visits + 1):
                if index >= total:
                    break
                if visit > 1:
                    study_date += timedelta(days=int(rng.integers(330, 760)))
                    if modality == "MR" and diseased:
                        severity = min(1.0, severity + float(rng.uniform(0.05, 0.15)))
                    elif modality == "US":
                        severity = float(np.clip(severity + rng.normal(0.0, 3.0), 10.0, 80.0))
                        diseased = severity < REDUCED_EF_THRESHOLD
                plans.append(
                    StudyPlan(
                        modality=modality,
                        index=index,
                        patient_index=patient_counter,
                        visit=visit,
                        study=_create_study(spec, modality, index, patient, site, study_date, rng),
                        site=site,
                        diseased=diseased,
                        severity=severity,
                        comparison_date=previous,
                    )
                )
                previous = study_date
                index += 1
            patient_counter += 1
    return sites, plans


def _create_study(
    spec: ArchiveSpec,
    modality: str,
    index: int,
    patient: SyntheticPatient,
    site: SiteProfile,
    study_date: date,
    rng: np.random.Generator,
) -> SyntheticStudy:
    equipment = site.mr_equipment if modality == "MR" else site.us_equipment
    return SyntheticStudy(
        patient=patient,
        site=equipment,
        study_instance_uid=deterministic_uid(spec.seed, modality, "study", index),
        accession_number=create_accession_number(rng),
        study_date=study_date,
        study_time=f"{int(rng.integers(7, 19)):02d}{int(rng.integers(0, 60)):02d}00",
        referring_physician_name=pick_referring_physician(rng),
        study_description="MR BRAIN WO CONTRAST" if modality == "MR" else "ECHO TTE COMPLETE",
    )


def generate_archive(
    spec: ArchiveSpec, on_study_done: Callable[[dict[str, str]], None] | None = None
) -> list[dict[str, str]]:
    """Write the whole archive under ``spec.out_dir`` and return the manifest rows.

    ``on_study_done`` is called in the calling process with each study's
    manifest row once the study is written (for progress display).
    """
    from imaging.synthetic.render import (
        RenderedStudy,
        initialise_worker,
        load_shared_data,
        render_study,
        write_archive_indexes,
    )

    _, plans = plan_archive(spec)
    spec.out_dir.mkdir(parents=True, exist_ok=True)
    workers = spec.workers or os.cpu_count() or 1
    rendered: list[RenderedStudy] = []
    for study in _map_in_order(
        render_study, plans, spec, workers, initialise_worker, preload=load_shared_data
    ):
        rendered.append(study)
        if on_study_done is not None:
            on_study_done(study.manifest_row)
    rows = [study.manifest_row for study in rendered]
    _write_manifest(rows, spec.out_dir / "manifest.csv")
    write_archive_indexes(spec.out_dir, plans, rendered)
    return rows


def _map_in_order(
    function: Callable[[StudyPlan, ArchiveSpec], Result],
    plans: list[StudyPlan],
    spec: ArchiveSpec,
    workers: int,
    initialiser: Callable[[], None],
    *,
    preload: Callable[[], None],
) -> Iterator[Result]:
    """Apply ``function`` to every plan in worker processes, yielding results in plan order.

    ``preload`` loads shared read-only data once in this process (workers fork after
    it); ``initialiser`` sets up each worker. The caller's own settings (its torch
    thread count) are left alone.
    """
    preload()
    if workers == 1 or len(plans) <= 1:
        for plan in plans:
            yield function(plan, spec)
        return
    # fork shares what the initialiser loaded copy-on-write; the parent has run
    # no torch kernels, so no OpenMP thread pool is inherited.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=initialiser) as pool:
        futures = [pool.submit(function, plan, spec) for plan in plans]
        for future in futures:
            yield future.result()


def _write_manifest(rows: list[dict[str, str]], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
