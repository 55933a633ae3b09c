"""The studies of a screen's input: one :class:`StudyTask` per study, or per failure found.

An input is a DICOM folder or ``.zip`` (:mod:`serving.screening.dicom_inputs`), a BIDS-like
NIfTI folder (``sub-*/[ses-*/]anat/*_T1w.nii[.gz]``), an EchoNet-Dynamic folder
(``FileList.csv`` + ``Videos/``) or a manifest CSV as ``mmdx synth`` writes it. Each study
becomes a task naming the path a model reads (what ``mmdx predict`` would be given) and
what the subgroups need: a keyed patient pseudonym (never the Patient ID itself), site,
sex and age. What cannot become a study (an unreadable file, a row without a path, a
modality no model takes) becomes a task carrying its error, so it is recorded as a
failed row and the others go on. Only an input that is not one of the four kinds raises.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

INPUT_KINDS = ("dicom", "bids", "echonet", "manifest")
# Which manifest column holds the file a model of each preprocessing source reads.
MANIFEST_PATH_COLUMNS = {"nifti": "nifti_path", "echonet": "video_path", "dicom": "dicom_path"}
MANIFEST_KEY = "study_instance_uid"


class ScreenInputError(ValueError):
    """The screen's input is not a DICOM folder or zip, BIDS folder, EchoNet folder or manifest."""


@dataclass(frozen=True)
class StudyTask:
    """One study to screen, or something found that cannot be screened.

    Attributes:
        study_id: StudyInstanceUID (DICOM, manifest), the file's stem (NIfTI, EchoNet), or
            for a file no study could be read from its path relative to the input.
        modality: ``"MR"`` or ``"US"`` when known.
        path: What the model of ``modality`` reads (a study folder, NIfTI file or AVI).
        patient_pseudonym: Keyed HMAC pseudonym of the Patient ID, as de-identification gives.
        site_id: The site (manifest or BIDS ``site``; DICOM Institution Name).
        sex: ``"F"``, ``"M"``... as recorded.
        age_years: Age at the study, in years.
        error: ``"<ErrorType>: <reason>"`` when the study failed at discovery.
    """

    study_id: str
    modality: str | None = None
    path: str | None = None
    patient_pseudonym: str | None = None
    site_id: str | None = None
    sex: str | None = None
    age_years: float | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        """Whether discovery already failed it."""
        return self.error is not None

    def as_row(self) -> dict[str, Any]:
        """The task as a plain dict (what the pipeline stages take)."""
        return {
            "study_id": self.study_id,
            "modality": self.modality,
            "path": self.path,
            "patient_pseudonym": self.patient_pseudonym,
            "site_id": self.site_id,
            "sex": self.sex,
            "age_years": self.age_years,
        }


@dataclass(frozen=True)
class Discovery:
    """What an input holds.

    Attributes:
        input: The input path.
        kind: One of ``INPUT_KINDS``.
        tasks: One task per study id (the first seen), failures included.
        duplicates: Study ids seen again after the first (dropped).
        skipped: Files passed over as not DICOM by their name (DICOM inputs).
    """

    input: Path
    kind: str
    tasks: list[StudyTask]
    duplicates: list[str] = field(default_factory=list)
    skipped: int = 0


@dataclass(frozen=True)
class Pseudonymiser:
    """Keyed patient pseudonyms, as :mod:`imaging.dicom.deid` gives them."""

    secret: bytes

    def __call__(self, patient_id: str | None, issuer: str = "") -> str | None:
        """The pseudonym of ``patient_id`` (None when there is no ID)."""
        from imaging.dicom.deid.deidentify import DeidOptions
        from imaging.dicom.deid.replacements import pseudonym

        if not patient_id or not patient_id.strip():
            return None
        key = ("id", patient_id.strip(), issuer.strip())
        return pseudonym(self.secret, key, DeidOptions().pseudonym_prefix)


def detect_input_kind(path: str | Path) -> str:
    """Which of ``INPUT_KINDS`` ``path`` is.

    Raises:
        ScreenInputError: No such path, or a file that is neither a ``.csv`` nor a ``.zip``.
    """
    path = Path(path)
    if not path.exists():
        raise ScreenInputError(f'Argument "input" {path}: no such file or folder')
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".csv":
            return "manifest"
        if suffix == ".zip":
            return "dicom"
        raise ScreenInputError(
            f'Argument "input" {path}: a file must be a manifest .csv or a .zip of DICOM'
        )
    if (path / "FileList.csv").is_file():
        return "echonet"
    if (path / "participants.tsv").is_file() or any(path.glob("sub-*/*anat")):
        return "bids"
    if any(path.glob("sub-*/ses-*/anat")):
        return "bids"
    return "dicom"


def discover_studies(
    input_path: str | Path,
    *,
    sources: Mapping[str, str],
    secret: bytes,
    workdir: Path,
    exclude: Iterable[str] = (),
) -> Discovery:
    """Every study of ``input_path``, each with the path its modality's model reads.

    Args:
        input_path: A DICOM folder or zip, a BIDS folder, an EchoNet folder or a manifest.
        sources: The modalities with a model, each with the model's preprocessing source
            (``"nifti"``, ``"echonet"`` or ``"dicom"``: which manifest column to read).
        secret: The de-identification key of the patient pseudonyms.
        workdir: Where studies without a folder of their own (zip members, studies sharing
            a folder) get one.
        exclude: Study ids already screened: a DICOM study among them is not prepared again.

    Raises:
        ScreenInputError: ``input_path`` is none of the four kinds, or its table is unreadable.
    """
    from imaging.errors import ImagingError

    path = Path(input_path)
    kind = detect_input_kind(path)
    pseudonymise = Pseudonymiser(secret)
    skipped = 0
    try:
        if kind == "manifest":
            tasks = _manifest_tasks(path, sources, pseudonymise)
        elif kind == "bids":
            tasks = _bids_tasks(path, pseudonymise)
        elif kind == "echonet":
            tasks = _echonet_tasks(path)
        else:
            from serving.screening.dicom_inputs import dicom_tasks

            tasks, skipped = dicom_tasks(
                path, sources, pseudonymise, workdir=workdir, exclude=set(exclude)
            )
    except (ImagingError, OSError, csv.Error, UnicodeDecodeError) as exc:
        raise ScreenInputError(f'Argument "input" {path}: {exc}') from exc
    tasks = [_check_modality(task, sources) for task in tasks]
    unique, duplicates = _first_of_each(tasks)
    return Discovery(path, kind, unique, duplicates, skipped)


def describe_error(exc: BaseException, roots: Iterable[str | Path] = ()) -> str:
    """``"<ErrorType>: <message>"`` with the ``roots`` prefixes cut from the paths it names."""
    text = f"{type(exc).__name__}: {exc}"
    for root in roots:
        prefix = str(Path(root))
        if prefix not in (".", "/"):  # "./" would also match inside "../"
            text = text.replace(f"{prefix}/", "")
    return text


def _check_modality(task: StudyTask, sources: Mapping[str, str]) -> StudyTask:
    if task.failed or task.modality in sources:
        return task
    wanted = "a modality" if task.modality is None else f"modality {task.modality}"
    return replace(
        task,
        error=f"PredictionInputError: no model for {wanted} "
        f"(models given: {', '.join(sorted(sources)) or 'none'})",
    )


def _first_of_each(tasks: list[StudyTask]) -> tuple[list[StudyTask], list[str]]:
    seen: set[str] = set()
    unique: list[StudyTask] = []
    duplicates: list[str] = []
    for task in tasks:
        if task.study_id in seen:
            duplicates.append(task.study_id)
            continue
        seen.add(task.study_id)
        unique.append(task)
    return unique, duplicates


def _manifest_tasks(
    manifest: Path, sources: Mapping[str, str], pseudonymise: Pseudonymiser
) -> list[StudyTask]:
    """One task per manifest row; paths are relative to the manifest's folder."""
    with manifest.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or MANIFEST_KEY not in reader.fieldnames:
            raise ScreenInputError(f"{manifest}: a manifest needs a {MANIFEST_KEY} column")
        rows = list(reader)
    tasks = []
    for number, row in enumerate(rows, start=2):
        study_id = _cell(row, MANIFEST_KEY) or f"{manifest.name} line {number}"
        modality = _cell(row, "modality")
        base = StudyTask(
            study_id=study_id,
            modality=modality,
            patient_pseudonym=pseudonymise(_cell(row, "patient_id")),
            site_id=_cell(row, "site_id"),
            sex=_cell(row, "sex"),
            age_years=_float(_cell(row, "age")),
        )
        if _cell(row, MANIFEST_KEY) is None:
            tasks.append(replace(base, error=f"ValueError: line {number} has no {MANIFEST_KEY}"))
            continue
        column = _manifest_column(row, modality, sources)
        if column is None:
            columns = ", ".join(MANIFEST_PATH_COLUMNS.values())
            tasks.append(replace(base, error=f"ValueError: line {number} has none of {columns}"))
            continue
        tasks.append(replace(base, path=str(manifest.parent / str(_cell(row, column)))))
    return tasks


def _manifest_column(
    row: Mapping[str, str], modality: str | None, sources: Mapping[str, str]
) -> str | None:
    """The model's preferred path column when the row has it, else any other path column."""
    preferred = MANIFEST_PATH_COLUMNS.get(sources.get(modality or "", ""))
    candidates = [preferred] if preferred else []
    candidates += [c for c in MANIFEST_PATH_COLUMNS.values() if c != preferred]
    return next((column for column in candidates if _cell(row, column)), None)


def _bids_tasks(root: Path, pseudonymise: Pseudonymiser) -> list[StudyTask]:
    """One MR task per T1w image; the subject label is the patient ID."""
    from imaging.readers.nifti import read_bids_t1w

    tasks = []
    for record in read_bids_t1w(root):
        tasks.append(
            StudyTask(
                study_id=_nifti_stem(record.path),
                modality="MR",
                path=str(record.path),
                patient_pseudonym=pseudonymise(record.subject.removeprefix("sub-")),
                site_id=record.column("site"),
                sex=record.sex,
                age_years=record.age,
            )
        )
    return tasks


def _echonet_tasks(root: Path) -> list[StudyTask]:
    """One US task per ``FileList.csv`` row; EchoNet carries no patient, site, sex or age."""
    from imaging.readers.echonet import list_echonet_studies

    tasks = []
    for study in list_echonet_studies(root):
        task = StudyTask(study_id=study.file_name, modality="US", path=str(study.video_path))
        if not study.video_path.is_file():
            relative = study.video_path.relative_to(root)
            task = replace(task, error=f"FileNotFoundError: {relative}: no such video")
        tasks.append(task)
    return tasks


def _nifti_stem(path: Path) -> str:
    return path.name.removesuffix(".gz").removesuffix(".nii")


def _cell(row: Mapping[str, str | None], column: str) -> str | None:
    value = (row.get(column) or "").strip()
    return value or None


def _float(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None
