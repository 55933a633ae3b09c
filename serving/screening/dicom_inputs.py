"""The studies of a DICOM folder or zip, each given a folder of its own to predict from.

The input is indexed once (:func:`imaging.dicom.study_index.index_dicom_source`: headers
only). A study is then read the way ``mmdx predict STUDY_FOLDER`` reads it, so a study
needs a folder holding its objects and no other study's: the deepest folder common to
its files when no other study lives under it (a PACS export's patient/study/series
tree), otherwise a folder under the run's work folder with links to its files, or, for
a zip, its members extracted there (member names are never used as paths). A file that
no header could be read from becomes a failed task named by its path.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.screening.inputs import Pseudonymiser, StudyTask

if TYPE_CHECKING:
    from imaging.dicom.study_index import StudyIndex, StudyRecord

MODALITY_ORDER = ("MR", "US")
_AGE = re.compile(r"^(\d{3})([DWMY])$")
_AGE_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


def dicom_tasks(
    source: Path,
    sources: Mapping[str, str],
    pseudonymise: Pseudonymiser,
    *,
    workdir: Path,
    exclude: set[str],
) -> tuple[list[StudyTask], int]:
    """One task per study of ``source`` and one per unreadable file; and the skipped count.

    Args:
        source: A DICOM folder (or DICOMDIR, or single file) or a ``.zip``.
        sources: The modalities with a model (a study goes to the first it holds, MR first).
        pseudonymise: Turns the Patient ID into the pseudonym.
        workdir: Where studies without a folder of their own get one.
        exclude: Study ids already screened: no folder is prepared for them.

    Raises:
        DicomReadError: ``source`` is a zip that cannot be read as a whole.
    """
    from imaging.dicom.study_index import index_dicom_source

    index = index_dicom_source(source)
    root = source if source.is_dir() else source.parent
    owners = _owners_by_folder(index)
    tasks: list[StudyTask] = []
    for study in index.studies:
        task = StudyTask(study_id=study.study_instance_uid, modality=_modality(study, sources))
        if task.modality is None:
            found = ", ".join(study.modalities) or "none"
            tasks.append(
                replace(task, error=f"PredictionInputError: no MR or US series (found: {found})")
            )
            continue
        if task.study_id in exclude:
            tasks.append(task)
            continue
        try:
            folder = _study_folder(study, owners, workdir, source)
        except (OSError, zipfile.BadZipFile) as exc:
            tasks.append(replace(task, error=f"{type(exc).__name__}: cannot prepare: {exc}"))
            continue
        header_file = _first_file(study, folder)
        tasks.append(_with_header(replace(task, path=str(folder)), header_file, pseudonymise))
    for failure in index.failures:
        where = failure.path.replace(f"{root}/", "")
        reason = failure.reason.replace(f"{root}/", "")
        tasks.append(StudyTask(study_id=where, error=f"{failure.error}: {where}: {reason}"))
    return tasks, len(index.skipped)


def _modality(study: StudyRecord, sources: Mapping[str, str]) -> str | None:
    """The first modality of ``MODALITY_ORDER`` the study holds with a model, else without."""
    held = [modality for modality in MODALITY_ORDER if modality in study.modalities]
    with_model = [modality for modality in held if modality in sources]
    return next(iter(with_model or held), None)


def _owners_by_folder(index: StudyIndex) -> dict[Path, set[str]]:
    """For every folder holding files of the index, the studies found under it."""
    owners: dict[Path, set[str]] = {}
    for study in index.studies:
        for series in study.series:
            for instance in series.instances:
                if instance.member is not None:
                    continue
                for folder in instance.path.parents:
                    owners.setdefault(folder, set()).add(study.study_instance_uid)
    return owners


def _study_folder(
    study: StudyRecord, owners: Mapping[Path, set[str]], workdir: Path, source: Path
) -> Path:
    """A folder holding this study's objects and no other study's."""
    instances = [instance for series in study.series for instance in series.instances]
    if all(instance.member is None for instance in instances):
        common = Path(os.path.commonpath([instance.path.parent for instance in instances]))
        if owners.get(common) == {study.study_instance_uid}:
            return common
    key = hashlib.sha256(study.study_instance_uid.encode()).hexdigest()[:16]
    folder = workdir / key
    if folder.exists():
        shutil.rmtree(folder)  # a run killed while preparing it
    folder.mkdir(parents=True)
    members = [instance for instance in instances if instance.member is not None]
    if members:
        with zipfile.ZipFile(source) as archive:
            for number, instance in enumerate(members):
                info = archive.getinfo(str(instance.member))
                # The index refused members over its size and ratio limits already.
                with archive.open(info) as member:
                    (folder / f"{number:06d}.dcm").write_bytes(member.read(info.file_size))
    for number, instance in enumerate(instances):
        if instance.member is None:
            (folder / f"link{number:06d}.dcm").symlink_to(instance.path.resolve())
    return folder


def _first_file(study: StudyRecord, folder: Path) -> Path:
    """The study's first object as a file (a zip's first member is extracted first)."""
    first = study.series[0].instances[0]
    if first.member is None:
        return first.path
    members = [i for series in study.series for i in series.instances if i.member is not None]
    return folder / f"{members.index(first):06d}.dcm"


def _with_header(task: StudyTask, header_file: Path, pseudonymise: Pseudonymiser) -> StudyTask:
    """Pseudonym, site, sex and age from the header of the study's first object."""
    from imaging.dicom.reading import read_dicom

    try:
        header = read_dicom(header_file, stop_before_pixels=True)
    except Exception:  # the decode step reports an unreadable study with its reason
        return task
    issuer = _text(header, "IssuerOfPatientID") or ""
    return replace(
        task,
        patient_pseudonym=pseudonymise(_text(header, "PatientID"), issuer),
        site_id=_text(header, "InstitutionName"),
        sex=_text(header, "PatientSex"),
        age_years=age_in_years(
            _text(header, "PatientAge"),
            _text(header, "PatientBirthDate"),
            _text(header, "StudyDate"),
        ),
    )


def age_in_years(
    patient_age: str | None, birth_date: str | None, study_date: str | None
) -> float | None:
    """Age at the study from Patient's Age (``"073Y"``), else from the two DICOM dates."""
    match = _AGE.match(patient_age or "")
    if match is not None:
        return round(int(match.group(1)) * _AGE_UNIT_YEARS[match.group(2)], 3)
    born, studied = _date(birth_date), _date(study_date)
    if born is None or studied is None or studied < born:
        return None
    return round((studied - born).days / 365.25, 3)


def _date(value: str | None) -> date | None:
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:8])) if value else None
    except ValueError:
        return None


def _text(dataset: Any, keyword: str) -> str | None:
    value = str(dataset.get(keyword) or "").strip()
    return value or None
