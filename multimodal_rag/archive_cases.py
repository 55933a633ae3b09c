"""De-identified cases of the sample archive, and query studies read from files.

:func:`build_archive_cases` turns every row of an archive's ``manifest.csv`` into a
:class:`~multimodal_rag.cases.DeidentifiedCase`: the NIfTI volume or EchoNet video is
embedded with its report, and every identifier of the row is replaced by a keyed
pseudonym (:meth:`DeidentifiedArchiveStudy.from_manifest_row`). A row that cannot be
read becomes a :class:`~imaging.errors.FileFailure` and the others go on.

:func:`load_study` reads a query study (NIfTI, AVI, a DICOM MR series folder or an
ultrasound DICOM file) for :func:`embed_study`.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imaging.errors import FileFailure, ImagingError
from multimodal_rag.cases import DeidentifiedArchiveStudy, DeidentifiedCase, Modality

if TYPE_CHECKING:
    from imaging.dicom.cine import UltrasoundCine
    from multimodal_rag.embedding.embedder import Embedder

# What a row may fail with: unreadable image (typed), missing file, bad manifest value.
ROW_ERRORS = (ImagingError, OSError, ValueError)
VIDEO_SUFFIXES = (".avi",)
NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True)
class LoadedStudy:
    """A study's pixels, ready to embed.

    Attributes:
        modality: ``"MR"`` or ``"US"``.
        volume: The ``(1, X, Y, Z)`` MR volume, or ``None`` for ultrasound.
        cine: The ultrasound loop, or ``None`` for MR.
    """

    modality: Modality
    volume: Any = None
    cine: UltrasoundCine | None = None


def build_archive_cases(
    manifest: Path,
    embedder: Embedder,
    *,
    secret: bytes,
    modality: Modality | None = None,
    on_case: Callable[[int, int], None] | None = None,
    failures: list[FileFailure] | None = None,
) -> list[DeidentifiedCase]:
    """One de-identified case per manifest row with a NIfTI volume or an EchoNet video.

    Paths in the manifest are relative to its folder. Each case holds the image and
    report embeddings, a thumbnail, the row's label, site and EF, and only keyed
    pseudonyms in place of the row's identifiers.

    Args:
        manifest: The archive's ``manifest.csv``.
        embedder: Embeds images and reports.
        secret: The de-identification key (the same as ``mmdx deid``'s).
        modality: Only rows of this modality, or every row when ``None``.
        on_case: Called with (rows done, rows to do) after each row, built or failed.
        failures: Receives a :class:`FileFailure` for each row that could not be built.

    Raises:
        FileNotFoundError: No manifest.
        ValueError: ``modality`` is neither ``"MR"`` nor ``"US"``, or the secret is too short.
    """
    if modality not in (None, "MR", "US"):
        raise ValueError(f'Argument "modality" must be "MR", "US" or None, got {modality!r}')
    manifest = Path(manifest)
    with manifest.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if modality in (None, row.get("modality"))]
    archive_dir = manifest.parent
    cases: list[DeidentifiedCase] = []
    for done, row in enumerate(rows, start=1):
        try:
            cases.append(_row_case(row, archive_dir, embedder, secret))
        except ROW_ERRORS as exc:
            if failures is not None:
                failures.append(FileFailure.from_exception(_row_source(row, archive_dir), exc))
        if on_case is not None:
            on_case(done, len(rows))
    return cases


def load_study(path: Path) -> LoadedStudy:
    """Read a query study: NIfTI volume, EchoNet AVI, DICOM MR series folder or US DICOM.

    A folder is read as DICOM: if its first file is ultrasound, that file is the loop;
    otherwise every file in it forms one MR series. A single DICOM file is an
    ultrasound loop or a one-file (Enhanced) MR series.

    Raises:
        ImagingError: The study cannot be read (the error names the file and the reason).
        FileNotFoundError: ``path`` does not exist.
    """
    from imaging.dicom.cine import load_us_cine
    from imaging.dicom.reading import read_dicom
    from imaging.dicom.series_volume import load_mr_series

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No study at {path}")
    name = path.name.lower()
    if path.is_file() and name.endswith(NIFTI_SUFFIXES):
        from imaging.readers.nifti import load_nifti_volume

        return LoadedStudy("MR", volume=load_nifti_volume(path))
    if path.is_file() and name.endswith(VIDEO_SUFFIXES):
        from imaging.readers.echonet import load_echonet_video

        return LoadedStudy("US", cine=load_echonet_video(path))
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name != "DICOMDIR")
        if not files:
            raise FileNotFoundError(f"No files under {path}")
    else:
        files = [path]
    header = read_dicom(files[0], stop_before_pixels=True)
    if str(header.get("Modality", "")) == "US":
        return LoadedStudy("US", cine=load_us_cine(files[0]))
    return LoadedStudy("MR", volume=load_mr_series(files))


def embed_study(embedder: Embedder, study: LoadedStudy) -> np.ndarray:
    """The ``(d,)`` unit-norm image embedding of a loaded study."""
    if study.cine is not None:
        return embedder.embed_cine(
            np.asarray(study.cine.frames), np.asarray(study.cine.sector_mask)
        )
    return embedder.embed_volume(study.volume)


def _row_case(
    row: dict[str, str], archive_dir: Path, embedder: Embedder, secret: bytes
) -> DeidentifiedCase:
    """The case of one manifest row (raises on any unreadable part)."""
    record = DeidentifiedArchiveStudy.from_manifest_row(row, secret=secret, archive_dir=archive_dir)
    nifti, video = (row.get("nifti_path") or "").strip(), (row.get("video_path") or "").strip()
    if nifti:
        study = load_study(archive_dir / nifti)
    elif video:
        study = load_study(archive_dir / video)
    else:
        raise ValueError('Manifest row has neither a "nifti_path" nor a "video_path"')
    image_embedding = embed_study(embedder, study)
    if study.cine is not None:
        thumbnail = embedder.thumbnail_png(
            np.asarray(study.cine.frames), sector_mask=np.asarray(study.cine.sector_mask)
        )
    else:
        thumbnail = embedder.thumbnail_png(study.volume)
    # The scrubbed report is embedded, so no identifier reaches the text embedding either.
    text_embedding = embedder.embed_texts([record.report_text])[0]
    return DeidentifiedCase.from_deidentified(
        record,
        image_embedding=image_embedding,
        text_embedding=text_embedding,
        thumbnail_png=thumbnail,
    )


def _row_source(row: dict[str, str], archive_dir: Path) -> Path:
    """The file a failure is reported against: the image, else the report, else the archive."""
    for column in ("nifti_path", "video_path", "report_path"):
        if (row.get(column) or "").strip():
            return archive_dir / row[column]
    return archive_dir
