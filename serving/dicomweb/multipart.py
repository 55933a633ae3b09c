"""``multipart/related`` bodies: a streaming reader for STOW-RS, a writer for WADO-RS.

The reader takes the request body chunk by chunk and writes each part to its own
temporary file as it arrives, so a request costs disk, not memory. It is written for
hostile input: the buffer holds at most one chunk plus a delimiter's length (or one
part's header block, itself capped), every byte is scanned a bounded number of times,
and the request size, part size, part count and header size are all capped.

Syntax follows RFC 2046 section 5.1.1 and RFC 2387: a preamble before the first
delimiter and an epilogue after the closing one are ignored; the first delimiter may
open the body without a leading CRLF.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

DICOM_MEDIA_TYPE = "application/dicom"
MAX_HEADER_BYTES = 16 * 1024
MAX_PARTS = 10_000
# Linear whitespace allowed between a delimiter and its CRLF (RFC 2046 "transport padding").
_MAX_PADDING = 256
_BOUNDARY_PATTERN = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")
_WRITE_CHUNK = 1024 * 1024


class MultipartError(ValueError):
    """The body or its Content-Type is not a well-formed ``multipart/related`` message."""


class RequestTooLargeError(Exception):
    """The body passes a size or count limit; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class ReceivedPart:
    """One part of a received body.

    Attributes:
        number: Position in the body, from 1.
        content_type: The part's media type, lower case, without parameters.
        path: The temporary file holding the part's content; ``None`` when not kept.
        size: Content bytes received.
        failure: Why the part was not kept (wrong type, too large), else ``None``.
    """

    number: int
    content_type: str
    path: Path | None
    size: int
    failure: str | None = None


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type value into its lower-case media type and its parameters.

    Parameter names are lower-cased; quoted values are unquoted (``\\"`` unescaped).
    """
    media_type, _, rest = value.partition(";")
    parameters: dict[str, str] = {}
    # name=token or name="quoted string"; a quoted value may hold ';'.
    for match in re.finditer(r'\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)\s*;?', rest):
        name, raw = match.group(1).lower(), match.group(2).strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        parameters[name] = raw
    return media_type.strip().lower(), parameters


def boundary_of(content_type: str) -> str:
    """The boundary of a ``multipart/related`` Content-Type value.

    Raises:
        MultipartError: Not multipart/related, or the boundary is missing or invalid.
    """
    media_type, parameters = parse_content_type(content_type)
    if media_type != "multipart/related":
        raise MultipartError(f"Content-Type {media_type!r} is not multipart/related")
    boundary = parameters.get("boundary")
    if boundary is None:
        raise MultipartError("Content-Type has no boundary parameter")
    if not _BOUNDARY_PATTERN.match(boundary):
        raise MultipartError(
            "boundary must be 1 to 70 characters of RFC 2046 bchars, not ending in a space"
        )
    return boundary


class MultipartReader:
    """Reads a ``multipart/related`` body fed in chunks, each part into a temporary file.

    Call :meth:`feed` with each chunk, then :meth:`finish` for the parts, and always
    :meth:`discard` at the end (it removes the temporary files that are still there).

    Args:
        boundary: The boundary from the Content-Type (see :func:`boundary_of`).
        work_dir: Where the temporary files go.
        max_request_bytes: Largest body accepted (preamble and epilogue included).
        max_part_bytes: Largest part content kept; a larger part fails alone.
        part_type: The media type of the parts kept; a part of another type fails
            alone. A part without a Content-Type is taken to be of this type.
        max_parts: Most parts accepted in one body.
    """

    def __init__(
        self,
        boundary: str,
        work_dir: Path,
        *,
        max_request_bytes: int,
        max_part_bytes: int,
        part_type: str = DICOM_MEDIA_TYPE,
        max_parts: int = MAX_PARTS,
    ) -> None:
        self._delimiter = b"\r\n--" + boundary.encode("ascii")
        self._work_dir = work_dir
        self._max_request_bytes = max_request_bytes
        self._max_part_bytes = max_part_bytes
        self._part_type = part_type
        self._max_parts = max_parts
        # A CRLF in front lets a delimiter that opens the body match like any other.
        self._buffer = bytearray(b"\r\n")
        self._received = 0
        self._state = "preamble"
        self._header_scanned = 0
        self._parts: list[ReceivedPart] = []
        self._created: list[Path] = []
        self._part: _OpenPart | None = None

    def feed(self, chunk: bytes) -> None:
        """Take the next chunk of the body.

        Raises:
            RequestTooLargeError: The body passed ``max_request_bytes`` or ``max_parts``.
            MultipartError: The body is malformed.
        """
        self._received += len(chunk)
        if self._received > self._max_request_bytes:
            raise RequestTooLargeError(
                f"request body is over the {self._max_request_bytes}-byte limit"
            )
        if self._state == "epilogue":
            return
        self._buffer += chunk
        self._process()

    def finish(self) -> list[ReceivedPart]:
        """The parts, once the whole body was fed.

        Raises:
            MultipartError: The body ended before its closing delimiter.
        """
        if self._state == "preamble":
            raise MultipartError("the body holds no boundary delimiter")
        if self._state != "epilogue":
            raise MultipartError(
                f"the body ended inside part {len(self._parts) + 1}, before the closing boundary"
            )
        return list(self._parts)

    def discard(self) -> None:
        """Close the open part and remove every temporary file still present."""
        if self._part is not None:
            self._part.close()
            self._part = None
        for path in self._created:
            path.unlink(missing_ok=True)

    def _process(self) -> None:
        """Advance the state machine over the buffer, then drop the bytes consumed.

        ``position`` moves forward only, and the buffer is compacted once per chunk,
        so a chunk of many tiny parts costs time linear in its length.
        """
        buffer = self._buffer
        position = 0
        keep = len(self._delimiter) - 1
        while True:
            if self._state == "preamble":
                found = buffer.find(self._delimiter, position)
                if found < 0:
                    position = max(position, len(buffer) - keep)
                    break
                position = found + len(self._delimiter)
                self._state = "after_delimiter"
            elif self._state == "after_delimiter":
                advanced = self._after_delimiter(position)
                if advanced is None:
                    break
                position = advanced
            elif self._state == "headers":
                advanced = self._headers(position)
                if advanced is None:
                    break
                position = advanced
            elif self._state == "body":
                found = buffer.find(self._delimiter, position)
                if found < 0:
                    end = max(position, len(buffer) - keep)
                    self._write(buffer, position, end)
                    position = end
                    break
                self._write(buffer, position, found)
                self._end_part()
                position = found + len(self._delimiter)
                self._state = "after_delimiter"
            else:  # epilogue: ignored
                position = len(buffer)
                break
        del buffer[:position]

    def _after_delimiter(self, position: int) -> int | None:
        """After a delimiter: ``--`` closes the body, else padding and CRLF open a part."""
        buffer = self._buffer
        if len(buffer) - position < 2:
            return None
        if buffer[position : position + 2] == b"--":
            self._state = "epilogue"
            return len(buffer)
        line_end = buffer.find(b"\r\n", position, position + _MAX_PADDING + 2)
        padding = bytes(buffer[position : line_end if line_end >= 0 else position + _MAX_PADDING])
        # A CR alone may be the first half of the CRLF still to come.
        if padding.strip(b" \t\r"):
            raise MultipartError(
                f"boundary delimiter before part {len(self._parts) + 1} is followed by "
                "data instead of CRLF (the boundary occurs inside a part)"
            )
        if line_end < 0:
            if len(buffer) - position > _MAX_PADDING:
                raise MultipartError("too much padding after a boundary delimiter")
            return None
        self._state = "headers"
        self._header_scanned = 0
        return line_end + 2

    def _headers(self, position: int) -> int | None:
        """Read a part's header block once it is complete, and open the part."""
        buffer = self._buffer
        if len(buffer) - position < 2:
            return None
        if buffer[position : position + 2] == b"\r\n":  # no header fields at all
            self._start_part(b"")
            return position + 2
        # Resume 3 bytes before where the last search stopped (CRLFCRLF may straddle
        # chunks), so headers trickled a byte at a time are not scanned again and again.
        found = buffer.find(b"\r\n\r\n", position + max(0, self._header_scanned - 3))
        if found < 0:
            self._header_scanned = len(buffer) - position
            if self._header_scanned > MAX_HEADER_BYTES:
                raise MultipartError(
                    f"part {len(self._parts) + 1} headers are over {MAX_HEADER_BYTES} bytes"
                )
            return None
        if found - position > MAX_HEADER_BYTES:
            raise MultipartError(
                f"part {len(self._parts) + 1} headers are over {MAX_HEADER_BYTES} bytes"
            )
        self._start_part(bytes(buffer[position:found]))
        return found + 4

    def _start_part(self, header_block: bytes) -> None:
        number = len(self._parts) + 1
        if number > self._max_parts:
            raise RequestTooLargeError(f"request holds more than {self._max_parts} parts")
        content_type = _part_content_type(header_block) or self._part_type
        part = _OpenPart(number=number, content_type=content_type)
        if content_type != self._part_type:
            part.failure = f"part content type {content_type!r} is not {self._part_type}"
        else:
            descriptor, name = tempfile.mkstemp(
                prefix="stow-part-", suffix=".dcm", dir=self._work_dir
            )
            part.path = Path(name)
            part.file = os.fdopen(descriptor, "wb")
            self._created.append(part.path)
        self._part = part
        self._state = "body"

    def _write(self, buffer: bytearray, start: int, end: int) -> None:
        part = self._part
        if part is None or end <= start:
            return
        part.size += end - start
        if part.failure is not None:
            return
        if part.size > self._max_part_bytes:
            part.failure = f"part is over the {self._max_part_bytes}-byte instance limit"
            part.close()
            if part.path is not None:
                part.path.unlink(missing_ok=True)
            part.path = None
            return
        if part.file is not None:
            part.file.write(buffer[start:end])

    def _end_part(self) -> None:
        part = self._part
        if part is None:
            return
        part.close()
        self._parts.append(
            ReceivedPart(
                number=part.number,
                content_type=part.content_type,
                path=part.path if part.failure is None else None,
                size=part.size,
                failure=part.failure,
            )
        )
        self._part = None


@dataclass
class _OpenPart:
    """The part being received."""

    number: int
    content_type: str
    path: Path | None = None
    file: BinaryIO | None = None  # open while a kept part is being received
    size: int = 0
    failure: str | None = None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _part_content_type(header_block: bytes) -> str | None:
    """The media type named by a part's Content-Type header, if it has one."""
    text = header_block.decode("latin-1")
    # Unfold continuation lines (RFC 5322 section 2.2.3) before splitting fields.
    for line in re.sub(r"\r\n[ \t]+", " ", text).split("\r\n"):
        name, separator, value = line.partition(":")
        if separator and name.strip().lower() == "content-type":
            return parse_content_type(value)[0]
    return None


def new_boundary() -> str:
    """A random boundary that cannot occur in the parts it separates (in practice)."""
    return uuid.uuid4().hex


def multipart_content_type(boundary: str, part_type: str) -> str:
    """The Content-Type of a ``multipart/related`` body of ``part_type`` parts."""
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


def multipart_length(parts: Sequence[Path | bytes], *, boundary: str, part_type: str) -> int:
    """The byte length of the body :func:`iter_multipart` writes for ``parts``."""
    total = len(_closing(boundary))
    for part in parts:
        size = part.stat().st_size if isinstance(part, Path) else len(part)
        total += len(_part_header(boundary, part_type, size)) + size + 2
    return total


def iter_multipart(
    parts: Sequence[Path | bytes], *, boundary: str, part_type: str
) -> Iterator[bytes]:
    """Write a ``multipart/related`` body, streaming files in chunks.

    Each part is a file (streamed, never read whole) or bytes already in memory.

    Raises:
        OSError: A file changed size while it was being sent.
    """
    for part in parts:
        if isinstance(part, bytes):
            yield _part_header(boundary, part_type, len(part))
            yield part
        else:
            size = part.stat().st_size
            yield _part_header(boundary, part_type, size)
            yield from _file_chunks(part, size)
        yield b"\r\n"
    yield _closing(boundary)


def _file_chunks(path: Path, size: int) -> Iterator[bytes]:
    remaining = size
    with path.open("rb") as stream:
        while remaining > 0:
            chunk = stream.read(min(_WRITE_CHUNK, remaining))
            if not chunk:
                raise OSError(f"{path.name} shrank while it was being sent")
            remaining -= len(chunk)
            yield chunk


def _part_header(boundary: str, part_type: str, size: int) -> bytes:
    return (f"--{boundary}\r\nContent-Type: {part_type}\r\nContent-Length: {size}\r\n\r\n").encode(
        "ascii"
    )


def _closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode("ascii")
