"""Find the DICOM objects of a folder, zip or DICOMDIR and read their headers, boundedly.

Which files are tried: every regular file, whatever its name (DICOM files often have
no extension, or one such as ``.IMA``), except hidden files and files whose extension
says they are something else (``.txt``, ``.csv``, ``.nii.gz``, ``.png``, ``.zip``...).
Those come back as skipped items, never dropped silently; a ``README`` without an
extension is tried and fails as "not a DICOM Part 10 file".
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imaging.dicom.reading import DEFAULT_READ_LIMITS, ReadLimits, read_dicom, read_dicom_bytes
from imaging.errors import DicomReadError, ResourceLimitError

MIB = 1024**2
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
NOT_DICOM_SUFFIXES = frozenset(
    {
        ".avi", ".bmp", ".csv", ".gif", ".gz", ".htm", ".html", ".ini", ".jpeg", ".jpg",
        ".json", ".log", ".md", ".mp4", ".nii", ".pdf", ".png", ".tsv", ".txt", ".xml", ".zip",
    }
)  # fmt: skip
# PS3.10 8.2: a File ID component is 1 to 8 of A-Z, 0-9 and "_"; lower case is accepted
# because media mounted on Linux often show their names lower-cased.
_FILE_ID_COMPONENT = re.compile(r"[A-Za-z0-9_]{1,8}")
# Below this inflated size a high compression ratio is harmless (padding, blank images).
_RATIO_CHECK_FLOOR = 1 * MIB


@dataclass(frozen=True)
class IndexLimits:
    """Bounds for indexing: per-object read limits plus caps on zip members."""

    read: ReadLimits = DEFAULT_READ_LIMITS
    max_member_bytes: int = 512 * MIB
    max_compression_ratio: float = 100.0


DEFAULT_INDEX_LIMITS = IndexLimits()


@dataclass(frozen=True)
class SourceItem:
    """One file or zip member: its header, the error it raised, or neither (skipped).

    ``path`` is the file, or the zip archive holding member ``member``. A member name
    identifies the object in reports only; it is never used as a path.
    """

    where: str
    path: Path
    member: str | None = None
    dataset: Any = None
    error: Exception | None = None

    @property
    def skipped(self) -> bool:
        return self.dataset is None and self.error is None


def iter_source_items(
    source: Path, limits: IndexLimits = DEFAULT_INDEX_LIMITS
) -> Iterator[SourceItem]:
    """Headers (read up to Pixel Data) of every object in ``source``, in a stable order.

    ``source`` is a folder (walked recursively; through its root ``DICOMDIR`` if it has
    one), a ``.zip`` file, a DICOMDIR file or a single DICOM file.

    Raises:
        DicomReadError: ``source`` does not exist, or is a zip or DICOMDIR that cannot
            be read as a whole. A single bad file is an item with an ``error`` instead.
    """
    if source.is_dir():
        dicomdir = source / "DICOMDIR"
        if dicomdir.is_file():
            yield from _dicomdir_items(dicomdir, limits.read)
        else:
            yield from _folder_items(source, limits.read)
    elif source.is_file() and source.suffix.lower() == ".zip":
        yield from _zip_items(source, limits)
    elif source.is_file() and source.name.upper() == "DICOMDIR":
        yield from _dicomdir_items(source, limits.read)
    elif source.is_file():
        yield _file_item(source, limits.read)
    else:
        raise DicomReadError(source, "no such file or folder")


def _file_item(path: Path, limits: ReadLimits) -> SourceItem:
    try:
        dataset = read_dicom(path, stop_before_pixels=True, limits=limits)
    except Exception as exc:  # one bad file must not stop the others
        return SourceItem(str(path), path, error=exc)
    return SourceItem(str(path), path, dataset=dataset)


def _is_not_dicom(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.startswith(".") or Path(base).suffix.lower() in NOT_DICOM_SUFFIXES


def _folder_items(folder: Path, limits: ReadLimits) -> Iterator[SourceItem]:
    unreadable: list[OSError] = []
    for directory, subdirectories, names in os.walk(folder, onerror=unreadable.append):
        subdirectories.sort()  # os.walk follows this order, so the walk is deterministic
        for name in sorted(names):
            path = Path(directory) / name
            if _is_not_dicom(name) or name.upper() == "DICOMDIR":
                yield SourceItem(str(path), path)
            elif not path.is_file():  # a FIFO or device would block or never end
                yield SourceItem(str(path), path, error=DicomReadError(path, "not a regular file"))
            else:
                yield _file_item(path, limits)
    for exc in unreadable:
        where = Path(exc.filename or folder)
        yield SourceItem(
            str(where), where, error=DicomReadError(where, f"cannot list: {exc.strerror}")
        )


def _zip_items(archive_path: Path, limits: IndexLimits) -> Iterator[SourceItem]:
    try:
        archive = zipfile.ZipFile(archive_path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DicomReadError(archive_path, f"not a readable zip archive: {exc}") from exc
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            where = f"{archive_path}!{info.filename}"
            item = SourceItem(where, archive_path, member=info.filename)
            if _is_not_dicom(info.filename):
                yield item
                continue
            try:
                data = _read_member(archive, info, where, limits)
                dataset = read_dicom_bytes(data, where, stop_before_pixels=True, limits=limits.read)
            except Exception as exc:  # one bad member must not stop the others
                yield SourceItem(where, archive_path, member=info.filename, error=exc)
                continue
            yield SourceItem(where, archive_path, member=info.filename, dataset=dataset)


def _read_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, limits: IndexLimits
) -> bytes:
    """The member's bytes, refused before inflating if its declared size or ratio is too large."""
    if info.file_size > limits.max_member_bytes:
        raise ResourceLimitError(
            where,
            f"member inflates to {info.file_size} bytes, over the {limits.max_member_bytes} limit",
        )
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > _RATIO_CHECK_FLOOR and ratio > limits.max_compression_ratio:
        raise ResourceLimitError(
            where,
            f"compression ratio {ratio:.0f}:1 is over the {limits.max_compression_ratio:.0f}:1 "
            "limit (zip bomb)",
        )
    try:
        # ZipExtFile never yields more than the declared file_size checked above.
        with archive.open(info) as member:
            return bytes(member.read(info.file_size))
    except Exception as exc:  # zipfile lets zlib.error, EOFError, RuntimeError... through
        raise DicomReadError(where, f"corrupt or unsupported zip member: {exc}") from exc


def _dicomdir_items(dicomdir: Path, limits: ReadLimits) -> Iterator[SourceItem]:
    directory = read_dicom(dicomdir, limits=limits)
    if str(directory.file_meta.get("MediaStorageSOPClassUID", "")) != MEDIA_STORAGE_DIRECTORY:
        raise DicomReadError(dicomdir, "not a DICOMDIR: not a Media Storage Directory object")
    root = dicomdir.parent
    for record in directory.get("DirectoryRecordSequence", []):
        value = record.get("ReferencedFileID")
        if not value:
            continue  # patient, study and series records reference no file
        file_id = (str(value),) if isinstance(value, str) else tuple(str(part) for part in value)
        where = f"{dicomdir}: {'/'.join(file_id)}"
        if not 1 <= len(file_id) <= 8 or not all(_FILE_ID_COMPONENT.fullmatch(p) for p in file_id):
            # a component such as ".." would reach outside the file-set
            error = DicomReadError(where, "ReferencedFileID is not a valid PS3.10 file ID")
            yield SourceItem(where, dicomdir, error=error)
            continue
        path = root.joinpath(*file_id)
        lower = root.joinpath(*(part.lower() for part in file_id))
        if not path.is_file() and lower.is_file():
            path = lower
        if not path.is_file():
            error = DicomReadError(path, "listed in the DICOMDIR but missing")
            yield SourceItem(str(path), path, error=error)
            continue
        yield _file_item(path, limits)
