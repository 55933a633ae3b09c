"""Read DICOM Part 10 objects defensively: bounded memory, typed errors, nothing lazy left.

Everything that accepts DICOM from outside (folders, zips, C-STORE, STOW-RS) reads it
through :func:`read_dicom` or :func:`read_dicom_bytes`. They differ from a bare
``pydicom.dcmread`` in three ways that matter for hostile or broken input:

- a length field can never make a read larger than the bytes that exist, so an absurd
  length costs nothing (pydicom would ask the file object for the full length);
- a deflated data set is inflated incrementally with a size cap (a 1 KiB deflate bomb
  that inflates to gigabytes is refused, not expanded);
- every element is decoded at read time, so a bad value raises here, naming the file
  and tag, instead of later inside a model pipeline.
"""

from __future__ import annotations

import io
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from imaging.errors import DicomReadError, ResourceLimitError

MIB = 1024**2
GIB = 1024**3
_UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


@dataclass(frozen=True)
class ReadLimits:
    """Upper bounds that keep one bad object from exhausting memory."""

    max_file_bytes: int = 2 * GIB
    max_inflated_bytes: int = 256 * MIB
    max_inflate_ratio: int = 200  # above 64 MiB, inflated size per compressed byte
    max_pixel_bytes: int = 2 * GIB
    max_frames: int = 10_000


DEFAULT_READ_LIMITS = ReadLimits()


class _BoundedReader(io.RawIOBase):
    """A read-only stream whose reads never ask for more bytes than remain.

    ``BufferedReader.read(n)`` allocates ``n`` bytes before reading; pydicom passes
    a value length straight through, so a length of 0xFFFFFFF0 would allocate 4 GiB.
    pydicom also keeps a value shorter than its length field says; the reader
    notices instead. At a clean end of data pydicom asks once for the next element
    header and gets nothing; a short read, or a second empty one (a value missing
    entirely), means the data ended inside an element.
    """

    def __init__(self, raw: IO[bytes], size: int) -> None:
        super().__init__()
        self._raw = raw
        self._size = size
        self._empty_reads = 0
        self.truncated_at: int | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._raw.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def read(self, size: int | None = -1) -> bytes:
        position = self._raw.tell()
        remaining = max(0, self._size - position)
        if size is None or size < 0:
            return self._raw.read(remaining)
        if size > remaining:
            if remaining > 0 or self._empty_reads > 0:
                self.truncated_at = position if self.truncated_at is None else self.truncated_at
            self._empty_reads += remaining == 0
            size = remaining
        return self._raw.read(size)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def read_dicom(
    path: str | Path,
    *,
    stop_before_pixels: bool = False,
    limits: ReadLimits = DEFAULT_READ_LIMITS,
) -> Any:
    """Read a DICOM Part 10 file into a ``pydicom.FileDataset``.

    Args:
        path: The file.
        stop_before_pixels: Stop at the Pixel Data element (for indexing).
        limits: Size limits; exceeding one raises :class:`ResourceLimitError`.

    Raises:
        DicomReadError: Not DICOM, truncated or malformed; the message names the file.
        ResourceLimitError: The file or its inflated data set is too large.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DicomReadError(path, f"cannot open: {exc.strerror or exc}") from exc
    if size > limits.max_file_bytes:
        raise ResourceLimitError(
            path, f"file is {size} bytes, over the {limits.max_file_bytes} limit"
        )
    with path.open("rb") as raw:
        dataset = _parse(_BoundedReader(raw, size), str(path), stop_before_pixels, limits)
    dataset.filename = str(path)
    return dataset


def read_dicom_bytes(
    data: bytes,
    source: str,
    *,
    stop_before_pixels: bool = False,
    limits: ReadLimits = DEFAULT_READ_LIMITS,
) -> Any:
    """Read a DICOM Part 10 object held in memory (zip member, STOW-RS part).

    ``source`` names the object in error messages.
    """
    if len(data) > limits.max_file_bytes:
        raise ResourceLimitError(
            source, f"object is {len(data)} bytes, over the {limits.max_file_bytes} limit"
        )
    reader = _BoundedReader(io.BytesIO(data), len(data))
    return _parse(reader, source, stop_before_pixels, limits)


# Leading bytes of a preamble that would make the file something else as well.
_POLYGLOT_MAGIC = (
    (b"MZ", "Windows executable (PE)"),
    (b"\x7fELF", "ELF executable"),
    (b"\xcf\xfa\xed\xfe", "Mach-O executable"),
    (b"\xfe\xed\xfa\xce", "Mach-O executable"),
    (b"\xca\xfe\xba\xbe", "Mach-O or Java class"),
    (b"#!", "script"),
    (b"PK\x03\x04", "ZIP archive"),
    (b"%PDF", "PDF document"),
    (b"<!", "HTML document"),
    (b"<html", "HTML document"),
    (b"<script", "HTML document"),
)


def _parse(
    reader: _BoundedReader, source: str, stop_before_pixels: bool, limits: ReadLimits
) -> Any:
    from pydicom.dataset import FileDataset
    from pydicom.filereader import _read_file_meta_info, read_dataset
    from pydicom.uid import UID

    stream = cast(BinaryIO, reader)
    preamble = stream.read(128)
    if len(preamble) < 128 or stream.read(4) != b"DICM":
        raise DicomReadError(
            source, "not a DICOM Part 10 file: no 'DICM' prefix after the preamble"
        )
    _check_preamble(preamble, source)
    try:
        # pydicom has no public reader for the meta group on an open stream; this one
        # leaves the stream at the first data set element, which the deflate path needs.
        file_meta = _read_file_meta_info(stream)
        # Values are converted on first access: a corrupt VR or value raises only here.
        _decode_every_element(file_meta, source)
        transfer_syntax = file_meta.get("TransferSyntaxUID")
    except Exception as exc:  # pydicom raises several types for broken meta groups
        raise DicomReadError(source, f"unreadable file meta information: {exc}") from exc
    if not transfer_syntax:
        raise DicomReadError(source, "file meta has no (0002,0010) Transfer Syntax UID")
    transfer_syntax = UID(str(transfer_syntax))
    if not transfer_syntax.is_transfer_syntax:
        raise DicomReadError(source, f"unknown transfer syntax {transfer_syntax!r}")

    body = reader
    if transfer_syntax.is_deflated:
        compressed = stream.read()
        limit = min(
            limits.max_inflated_bytes, max(64 * MIB, limits.max_inflate_ratio * len(compressed))
        )
        inflated = _inflate(compressed, source, limit)
        body = _BoundedReader(io.BytesIO(inflated), len(inflated))

    def at_pixel_data(tag: Any, _vr: str | None, _length: int) -> bool:
        return stop_before_pixels and int(tag) >= 0x7FE00000

    try:
        dataset = read_dataset(
            cast(BinaryIO, body),
            is_implicit_VR=transfer_syntax.is_implicit_VR,
            is_little_endian=transfer_syntax.is_little_endian,
            stop_when=at_pixel_data,
        )
        if body.truncated_at is not None:
            raise DicomReadError(
                source, f"data ends inside an element (value runs past byte {body.truncated_at})"
            )
        result = FileDataset(source, dataset, preamble=preamble, file_meta=file_meta)
        _decode_every_element(result, source)
    except (DicomReadError, ResourceLimitError):
        raise
    except Exception as exc:
        raise DicomReadError(source, f"malformed data set: {type(exc).__name__}: {exc}") from exc
    return result


def _check_preamble(preamble: bytes, source: str) -> None:
    """Refuse a preamble that makes the file also an executable, script or archive.

    PS3.10 leaves the 128 bytes to applications (a TIFF header there is legitimate), but
    a PE, ELF or Mach-O header turns the object into a program that passes for an image
    (CVE-2019-11687); nothing a scanner writes looks like one.
    """
    head = preamble[:16]
    for magic, kind in _POLYGLOT_MAGIC:
        if head.startswith(magic) or (magic.startswith(b"<") and head.lower().startswith(magic)):
            raise DicomReadError(
                source, f"the preamble holds a {kind} header: a DICOM/{kind} polyglot"
            )


def _inflate(compressed: bytes, source: str, limit: int) -> bytes:
    """Inflate a raw deflate stream, refusing to produce more than ``limit`` bytes."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    chunks: list[bytes] = []
    produced = 0
    pending = compressed
    try:
        while pending:
            chunk = inflater.decompress(pending, 1 << 20)
            produced += len(chunk)
            if produced > limit:
                raise ResourceLimitError(
                    source, f"deflated data set inflates past the {limit}-byte limit"
                )
            chunks.append(chunk)
            pending = inflater.unconsumed_tail
            if inflater.eof:
                break
    except zlib.error as exc:
        raise DicomReadError(source, f"corrupt deflated data set: {exc}") from exc
    return b"".join(chunks)


def _decode_every_element(dataset: Any, source: str) -> None:
    """Convert every raw element (recursing into sequences) so bad values fail now.

    pydicom only warns about a DS or IS that is not a number and keeps the text;
    geometry and rescale are computed from these, so they must be numbers here.
    """
    for element in dataset:
        try:
            value = element.value
        except Exception as exc:
            raise DicomReadError(source, f"cannot decode {_name(element)}: {exc}") from exc
        vr = element.VR
        if vr == "SQ":
            for item in value:
                _decode_every_element(item, source)
        elif vr in ("DS", "IS") and value not in (None, ""):
            values = value if isinstance(value, list | tuple) or element.VM > 1 else [value]
            if any(isinstance(item, str) for item in values):
                reason = f"{_name(element)} ({vr}) is not a number: {value!r}"
                raise DicomReadError(source, reason)


def _name(element: Any) -> str:
    return f"{element.tag} {element.keyword}".strip()


def require(dataset: Any, keyword: str, source: str) -> Any:
    """The value of a required attribute, or a :class:`DicomReadError` naming it."""
    from pydicom.datadict import tag_for_keyword

    value = dataset.get(keyword)
    if value is None or value == "":
        tag = tag_for_keyword(keyword)
        where = f"({tag >> 16:04X},{tag & 0xFFFF:04X}) " if tag is not None else ""
        raise DicomReadError(source, f"missing {where}{keyword}")
    return value


def require_uid(dataset: Any, keyword: str, source: str) -> str:
    """A required UID, checked against PS3.5 9.1 so it is safe to use in a path or query."""
    value = str(require(dataset, keyword, source))
    if dataset[keyword].VR != "UI":
        raise DicomReadError(source, f"{keyword} is stored with VR {dataset[keyword].VR}, not UI")
    if len(value) > 64 or not _UID_PATTERN.match(value):
        raise DicomReadError(source, f"{keyword} {value[:80]!r} is not a valid UID")
    return value
