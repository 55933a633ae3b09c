"""The streaming multipart/related reader and the writer of WADO-RS bodies."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from serving.dicomweb.multipart import (
    MultipartError,
    MultipartReader,
    ReceivedPart,
    RequestTooLargeError,
    boundary_of,
    iter_multipart,
    multipart_length,
    parse_content_type,
)

BOUNDARY = "0f3cf5c0-70e0-41ef-baef-c6f9f65ec3e1"


def body(
    parts: list[bytes],
    *,
    boundary: str = BOUNDARY,
    part_type: str = "application/dicom",
    preamble: bytes = b"\r\n",
    epilogue: bytes = b"",
) -> bytes:
    """A body as dicomweb-client writes it: each part after CRLF--boundary."""
    out = bytearray(preamble.removesuffix(b"\r\n"))
    for part in parts:
        out += f"\r\n--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + part
    out += f"\r\n--{boundary}--".encode() + epilogue
    return bytes(out)


def read(
    data: bytes,
    tmp_path: Path,
    *,
    chunk: int = 65536,
    boundary: str = BOUNDARY,
    max_request_bytes: int = 10**9,
    max_part_bytes: int = 10**8,
    max_parts: int = 10_000,
) -> list[ReceivedPart]:
    reader = MultipartReader(
        boundary,
        tmp_path,
        max_request_bytes=max_request_bytes,
        max_part_bytes=max_part_bytes,
        max_parts=max_parts,
    )
    for start in range(0, len(data), chunk):
        reader.feed(data[start : start + chunk])
    return reader.finish()


def contents(parts: list[ReceivedPart]) -> list[bytes]:
    return [part.path.read_bytes() if part.path else b"" for part in parts]


def test_parts_are_written_to_files(tmp_path: Path) -> None:
    payloads = [b"DICM" * 1000, b"\r\n-- not a boundary \r\n", b""]
    parts = read(body(payloads), tmp_path)
    assert [part.number for part in parts] == [1, 2, 3]
    assert contents(parts) == payloads
    assert [part.size for part in parts] == [4000, 22, 0]
    assert all(part.failure is None and part.content_type == "application/dicom" for part in parts)


def test_body_may_open_with_the_delimiter_and_carry_preamble_and_epilogue(
    tmp_path: Path,
) -> None:
    data = (
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\nfirst"
        f"\r\n--{BOUNDARY}  \r\ncontent-type:\r\n Application/DICOM; transfer-syntax=1.2\r\n"
        f"\r\nsecond\r\n--{BOUNDARY}--\r\nepilogue --{BOUNDARY}\r\n"
    ).encode()
    assert contents(read(data, tmp_path)) == [b"first", b"second"]
    with_preamble = body(
        [b"x"], preamble=b"This is a preamble\r\n--almost\r\n", epilogue=b"\r\ntrailing words"
    )
    assert contents(read(with_preamble, tmp_path)) == [b"x"]


def test_a_boundary_split_across_chunks_is_found(tmp_path: Path) -> None:
    payloads = [bytes(range(256)) * 40, b"\r\n--" + BOUNDARY.encode()[:-1] + b"!", b"z"]
    data = body(payloads)
    for chunk in (1, 2, 3, 7, len(BOUNDARY) + 3, 4096):
        assert contents(read(data, tmp_path, chunk=chunk)) == payloads


def test_quoted_boundary_and_parameters() -> None:
    value = 'Multipart/Related; type="application/dicom"; boundary="a b:c=d"; start="<1;2>"'
    assert parse_content_type(value) == (
        "multipart/related",
        {"type": "application/dicom", "boundary": "a b:c=d", "start": "<1;2>"},
    )
    assert boundary_of(value) == "a b:c=d"
    assert boundary_of("multipart/related; boundary=plain") == "plain"


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/related; type=application/dicom",
        "multipart/related; boundary=",
        'multipart/related; boundary="ends in space "',
        "multipart/related; boundary=" + "x" * 71,
        "multipart/related; boundary=bad\u00e9",
        "application/dicom; boundary=abc",
    ],
)
def test_missing_or_invalid_boundary_is_refused(content_type: str) -> None:
    with pytest.raises(MultipartError):
        boundary_of(content_type)


def test_quoted_boundary_with_space_reads(tmp_path: Path) -> None:
    boundary = boundary_of('multipart/related; boundary="with space"')
    parts = read(body([b"one", b"two"], boundary=boundary), tmp_path, boundary=boundary)
    assert contents(parts) == [b"one", b"two"]


def test_truncated_body_is_an_error(tmp_path: Path) -> None:
    data = body([b"a" * 100, b"b" * 100])
    with pytest.raises(MultipartError, match="inside part 2"):
        read(data[:-60], tmp_path)
    with pytest.raises(MultipartError, match="no boundary"):
        read(b"just some bytes, no delimiter at all", tmp_path)


def test_boundary_followed_by_data_is_an_error(tmp_path: Path) -> None:
    data = f"--{BOUNDARY}\r\n\r\nabc\r\n--{BOUNDARY}XYZ\r\n\r\nmore".encode()
    with pytest.raises(MultipartError, match="followed by data"):
        read(data, tmp_path)


def test_oversize_part_fails_alone(tmp_path: Path) -> None:
    parts = read(
        body([b"s" * 10, b"L" * 5000, b"t" * 20]), tmp_path, max_part_bytes=1000, chunk=300
    )
    assert [part.failure is None for part in parts] == [True, False, True]
    assert "1000-byte instance limit" in str(parts[1].failure)
    assert parts[1].path is None and parts[1].size == 5000
    assert contents(parts) == [b"s" * 10, b"", b"t" * 20]
    assert sorted(p.stat().st_size for p in tmp_path.iterdir()) == [10, 20]


def test_request_over_the_limit_raises_and_discard_cleans_up(tmp_path: Path) -> None:
    reader = MultipartReader(BOUNDARY, tmp_path, max_request_bytes=2000, max_part_bytes=10**6)
    data = body([b"q" * 900, b"r" * 900, b"s" * 900])
    with pytest.raises(RequestTooLargeError, match="2000-byte limit"):
        for start in range(0, len(data), 500):
            reader.feed(data[start : start + 500])
    assert any(tmp_path.iterdir())
    reader.discard()
    assert list(tmp_path.iterdir()) == []


def test_part_of_another_type_fails_and_is_not_written(tmp_path: Path) -> None:
    data = (
        f"--{BOUNDARY}\r\nContent-Type: application/json\r\n\r\n{{}}"
        f"\r\n--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\nok"
        f"\r\n--{BOUNDARY}\r\nX-Other: 1\r\n\r\nno type"
        f"\r\n--{BOUNDARY}--"
    ).encode()
    parts = read(data, tmp_path)
    assert parts[0].failure == "part content type 'application/json' is not application/dicom"
    assert parts[0].path is None
    # A part without Content-Type takes the related type.
    assert contents(parts[1:]) == [b"ok", b"no type"]
    assert len(list(tmp_path.iterdir())) == 2


def test_many_tiny_parts_in_one_chunk_take_linear_time(tmp_path: Path) -> None:
    count = 5000
    data = body([b"p%d" % i for i in range(count)])
    started = time.perf_counter()
    parts = read(data, tmp_path, chunk=len(data))
    elapsed = time.perf_counter() - started
    assert len(parts) == count
    assert parts[-1].path is not None and parts[-1].path.read_bytes() == b"p4999"
    assert elapsed < 5.0  # file creation dominates; quadratic compaction took minutes
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(RequestTooLargeError, match="more than 100 parts"):
        read(data, elsewhere, max_parts=100)


def test_endless_headers_and_padding_are_bounded(tmp_path: Path) -> None:
    headers = f"--{BOUNDARY}\r\nX: ".encode() + b"h" * 20_000
    with pytest.raises(MultipartError, match="headers are over"):
        read(headers, tmp_path, chunk=1000)
    padding = f"--{BOUNDARY}".encode() + b" " * 1000
    with pytest.raises(MultipartError, match="padding"):
        read(padding, tmp_path, chunk=100)


def test_header_trickled_byte_by_byte(tmp_path: Path) -> None:
    header = "Content-Type: application/dicom\r\n" + "X-Pad: " + "y" * 8000 + "\r\n"
    data = f"--{BOUNDARY}\r\n{header}\r\nbody\r\n--{BOUNDARY}--".encode()
    assert contents(read(data, tmp_path, chunk=1)) == [b"body"]


def test_writer_output_reads_back(tmp_path: Path) -> None:
    first = tmp_path / "first.dcm"
    first.write_bytes(b"\x00" * 3000 + b"DICM")
    parts: list[Path | bytes] = [first, b"in memory"]
    written = b"".join(iter_multipart(parts, boundary="B0UND", part_type="application/dicom"))
    assert len(written) == multipart_length(parts, boundary="B0UND", part_type="application/dicom")
    assert written.startswith(
        b"--B0UND\r\nContent-Type: application/dicom\r\nContent-Length: 3004\r\n\r\n"
    )
    out = tmp_path / "out"
    out.mkdir()
    assert contents(read(written, out, boundary="B0UND")) == [first.read_bytes(), b"in memory"]
