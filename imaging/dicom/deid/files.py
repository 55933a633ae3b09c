"""De-identify files: a file or a folder in, de-identified files and a per-file report out.

Output names come from the new UIDs only
(``OUT/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``), never from
input names, which may hold a patient's name. A file that cannot be read or safely
de-identified is recorded as a :class:`FileFailure`, and the rest goes on.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from imaging.dicom.deid.deidentify import DeidentifiedDataset, DeidOptions, deidentify_dataset
from imaging.dicom.deid.replacements import check_secret
from imaging.dicom.reading import read_dicom
from imaging.errors import DeidentificationError, FileFailure

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


@dataclass
class DeidReport:
    """What :func:`deidentify_path` did: files written and files refused, with why."""

    written: list[Path] = field(default_factory=list)
    failures: list[FileFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every input file was de-identified."""
        return not self.failures


def list_input_files(in_path: Path, *, exclude: Path | None = None) -> list[Path]:
    """The files under ``in_path`` (itself if a file), sorted, leaving out ``exclude``.

    ``exclude`` keeps an output folder inside the input folder from being read back.
    """
    if in_path.is_file():
        return [in_path]
    excluded = exclude.resolve() if exclude is not None else None
    files = []
    for path in sorted(in_path.rglob("*")):
        if not path.is_file():
            continue
        if excluded is not None and path.resolve().is_relative_to(excluded):
            continue
        files.append(path)
    return files


def output_path(out_dir: Path, deidentified: DeidentifiedDataset) -> Path:
    """Where a de-identified instance goes: a path made of its new UIDs."""
    return (
        out_dir
        / deidentified.study_instance_uid
        / deidentified.series_instance_uid
        / f"{deidentified.sop_instance_uid}.dcm"
    )


def deidentify_path(
    in_path: Path,
    out_dir: Path,
    *,
    secret: bytes,
    options: DeidOptions | None = None,
    on_file_done: Callable[[Path, FileFailure | None], None] | None = None,
) -> DeidReport:
    """De-identify a DICOM file, or every file under a folder, into ``out_dir``.

    Args:
        in_path: A file, or a folder searched recursively.
        out_dir: Output folder, created if needed.
        secret: Key of the UID and pseudonym hashes, at least 16 bytes.
        options: Profile options.
        on_file_done: Called after each input file with its failure, or ``None``.

    Returns:
        The files written and, for each file refused, a :class:`FileFailure`.

    Raises:
        FileNotFoundError: ``in_path`` does not exist.
        ValueError: ``secret`` is too short.
    """
    if not in_path.exists():
        raise FileNotFoundError(f"{in_path} does not exist")
    check_secret(secret)
    report = DeidReport()
    written: set[Path] = set()
    for path in list_input_files(in_path, exclude=out_dir):
        failure = None
        try:
            target = _deidentify_file(path, out_dir, secret, options, written)
        # Any failure stays with its file (recorded with its type) so one odd object
        # cannot stop a batch; a file is written only when every step succeeded.
        except Exception as exc:
            failure = FileFailure.from_exception(path, exc)
            report.failures.append(failure)
        else:
            report.written.append(target)
        if on_file_done is not None:
            on_file_done(path, failure)
    return report


def _deidentify_file(
    path: Path, out_dir: Path, secret: bytes, options: DeidOptions | None, written: set[Path]
) -> Path:
    dataset = read_dicom(path)
    if str(dataset.get("SOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY or (
        str(dataset.file_meta.get("MediaStorageSOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY
    ):
        raise DeidentificationError(path, "a DICOMDIR is not copied: its records name input files")
    deidentified = deidentify_dataset(dataset, secret=secret, options=options, source=str(path))
    target = output_path(out_dir, deidentified)
    if target in written:
        raise DeidentificationError(
            path, "another input file has the same SOP Instance UID; the first one was kept"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    deidentified.dataset.save_as(partial, enforce_file_format=True)
    os.replace(partial, target)
    written.add(target)
    return target
