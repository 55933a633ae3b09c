"""A corpus of malformed DICOM files, generated from valid seeds, yields only typed errors.

Every case goes through ``read_dicom``, ``decode_pixel_array`` and ``index_dicom_source``:
only :class:`ImagingError` subclasses may come out, each case within a time bound, the
good files beside them are indexed, and memory stays bounded (measured in a subprocess).
The cases themselves are built in ``tests/imaging/malformed_corpus.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imaging.dicom.pixels import decode_pixel_array
from imaging.dicom.reading import ReadLimits, read_dicom
from imaging.dicom.study_index import IndexLimits, index_dicom_source
from imaging.errors import ImagingError
from tests.imaging.malformed_corpus import (
    MIB,
    PIXEL_DATA_TAG,
    build_corpus,
    build_seeds,
    deflate_bomb,
    deflated_meta,
    element,
    meta_end,
)

# pydicom warns about every invalid value it meets on the way; here that is the point.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom")

SMALL_LIMITS = ReadLimits(
    max_file_bytes=64 * MIB, max_inflated_bytes=4 * MIB, max_pixel_bytes=64 * MIB, max_frames=1000
)
SECONDS_PER_CASE = 5.0
IMAGING_ERRORS = {ImagingError.__name__, *(cls.__name__ for cls in ImagingError.__subclasses__())}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return build_seeds(tmp_path_factory.mktemp("seeds"))


@pytest.fixture(scope="module")
def corpus(seeds: dict[str, bytes]) -> dict[str, bytes]:
    return build_corpus(seeds)


def run_case(path: Path, limits: ReadLimits) -> tuple[str, str, float]:
    """Read and decode ``path``; the stage that raised and the error's class name, or ok."""
    started = time.perf_counter()
    try:
        dataset = read_dicom(path, limits=limits)
        read_dicom(path, stop_before_pixels=True, limits=limits)
    except ImagingError as exc:
        return "read", type(exc).__name__, time.perf_counter() - started
    try:
        decode_pixel_array(dataset, str(path), limits)
    except ImagingError as exc:
        return "decode", type(exc).__name__, time.perf_counter() - started
    return "ok", "", time.perf_counter() - started


def write_folder(folder: Path, seeds: dict[str, bytes], corpus: dict[str, bytes]) -> None:
    """Good files first in name order, so malformed copies sharing their UIDs are the duplicates."""
    folder.mkdir()
    for name, data in seeds.items():
        (folder / f"000-good-{name}.dcm").write_bytes(data)
    for name, data in corpus.items():
        (folder / f"{name}.dcm").write_bytes(data)


# Cases whose headers and pixels read and decode; only the index can refuse them: UIDs
# that are paths, too long or binary (the uid-path-* family included).
INDEX_ONLY_NAMED = {
    "uid-path-sop-instance", "uid-path-study", "uid-path-series", "uid-too-long",
    "uid-binary-garbage", "wrong-vr-uid-as-us",
}  # fmt: skip
# Damage that leaves the object whole: pydicom finds the end of the meta group by its
# tags, not its length.
TOLERATED = {"absurd-length-meta-group"}
EXPECTED = {
    # A value shorter than its length field, and a DS that is not a number.
    "absurd-length-pixel-data": ("read", "DicomReadError"),
    "truncated-mr-last-byte": ("read", "DicomReadError"),
    "truncated-us-last-byte": ("read", "DicomReadError"),
    "wrong-vr-spacing-text": ("read", "DicomReadError"),
    "text": ("read", "DicomReadError"),
    "png": ("read", "DicomReadError"),
    "empty": ("read", "DicomReadError"),
    "dicm-then-garbage": ("read", "DicomReadError"),
    "deflate-bomb-over-small-limit": ("read", "ResourceLimitError"),
    "deflate-corrupt-stream": ("read", "DicomReadError"),
    "transfer-syntax-mpeg2": ("decode", "UnsupportedTransferSyntaxError"),
    "transfer-syntax-mpeg4": ("decode", "UnsupportedTransferSyntaxError"),
    "transfer-syntax-hevc": ("decode", "UnsupportedTransferSyntaxError"),
    "transfer-syntax-unknown-uid": ("read", "DicomReadError"),
    "missing-pixel-data-mr": ("decode", "PixelDataError"),
    "missing-pixel-data-us": ("decode", "PixelDataError"),
    "pixel-data-short-mr": ("decode", "PixelDataError"),
    "pixel-data-short-enhanced": ("decode", "PixelDataError"),
    "pixel-data-jpeg-garbage": ("decode", "PixelDataError"),
    "dims-absurd-frames": ("decode", "ResourceLimitError"),
    "dims-absurd-size": ("decode", "ResourceLimitError"),
    "wrong-vr-rows-text": ("decode", "PixelDataError"),
}


def test_corpus_covers_every_kind_with_at_least_200_cases(corpus: dict[str, bytes]) -> None:
    assert len(corpus) >= 200
    kinds = {name.split("-")[0] for name in corpus}
    assert {"truncated", "text", "png", "empty", "wrong", "absurd", "deflate", "missing", "vr",
            "length", "polyglot",
            "transfer", "pixel", "dims", "uid", "sequence"} <= kinds  # fmt: skip
    assert set(EXPECTED) | INDEX_ONLY_NAMED <= set(corpus)


# What each generated family (malformed_corpus.families) must raise, and where.
FAMILY_EXPECTED = {
    "vr-": ("read", "DicomReadError"),
    "length-past-end-": ("read", "DicomReadError"),
    "polyglot-": ("read", "DicomReadError"),
    "pixel-size-": ("decode", "PixelDataError"),
}


def index_only(corpus: dict[str, bytes]) -> set[str]:
    """The cases only the index refuses: the named ones and the path-like UID family."""
    return INDEX_ONLY_NAMED | {name for name in corpus if name.startswith("uid-path-")}


def test_every_case_raises_only_typed_errors_quickly(
    seeds: dict[str, bytes], corpus: dict[str, bytes], tmp_path: Path
) -> None:
    for name, data in seeds.items():
        path = tmp_path / f"good-{name}.dcm"
        path.write_bytes(data)
        assert run_case(path, SMALL_LIMITS)[:2] == ("ok", ""), name

    outcomes = {}
    for name, data in corpus.items():
        path = tmp_path / f"{name}.dcm"
        path.write_bytes(data)
        outcomes[name] = run_case(path, SMALL_LIMITS)  # any other exception fails the test

    slow = {
        name: seconds for name, (_, _, seconds) in outcomes.items() if seconds > SECONDS_PER_CASE
    }
    assert slow == {}
    accepted = {name for name, (stage, _, _) in outcomes.items() if stage == "ok"}
    assert accepted == index_only(corpus) | TOLERATED
    for name, expected in EXPECTED.items():
        assert outcomes[name][:2] == expected, name
    for prefix, expected in FAMILY_EXPECTED.items():
        members = [name for name in outcomes if name.startswith(prefix)]
        assert len(members) >= 8, prefix
        assert {name: outcomes[name][:2] for name in members} == dict.fromkeys(members, expected)


def test_folder_with_the_corpus_still_indexes_the_good_files(
    seeds: dict[str, bytes], corpus: dict[str, bytes], tmp_path: Path
) -> None:
    folder = tmp_path / "inbox"
    write_folder(folder, seeds, corpus)

    index = index_dicom_source(folder, limits=IndexLimits(read=SMALL_LIMITS))

    indexed = {i.path.name for s in index.series for i in s.instances}
    assert {f"000-good-{name}.dcm" for name in seeds} <= indexed
    assert {f.error for f in index.failures} <= IMAGING_ERRORS
    failed = {Path(f.path).stem for f in index.failures}
    for name in index_only(corpus) | {"text", "empty", "deflate-bomb-over-small-limit"}:
        assert name in failed, name
    # Whatever was not refused has a header the index accepted: a malformed copy of a
    # good file becomes a duplicate, never a second instance of the same UID.
    assert len(failed) + len(indexed) == len(corpus) + len(seeds)
    reasons = {Path(f.path).stem: f.reason for f in index.failures}
    assert (
        reasons["uid-path-sop-instance"] == "SOPInstanceUID '../../etc/passwd' is not a valid UID"
    )


# Run in a fresh interpreter so that the peak RSS belongs to this work alone.
_MEASURE = """
import json, sys, time, warnings
from pathlib import Path
warnings.simplefilter("ignore")
from imaging.dicom.pixels import decode_pixel_array
from imaging.dicom.reading import DEFAULT_READ_LIMITS, ReadLimits, read_dicom
from imaging.dicom.study_index import IndexLimits, index_dicom_source
from imaging.errors import ImagingError

def status_kb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])

folder, small = Path(sys.argv[1]), sys.argv[2] == "small"
limits = ReadLimits(**json.loads(sys.argv[3])) if small else DEFAULT_READ_LIMITS
files = sorted(folder.iterdir())
for path in files:  # the good files load pydicom's readers and the decoder libraries
    if path.name.startswith("000-good-"):
        decode_pixel_array(read_dicom(path, limits=limits), "warm-up", limits)
baseline = status_kb("VmRSS")
# getrusage's ru_maxrss survives exec (it would report pytest's peak); VmHWM belongs to
# this process image, and writing 5 to clear_refs resets it to the current RSS.
Path("/proc/self/clear_refs").write_text("5")
errors, started = {}, time.perf_counter()
for path in files:
    try:
        decode_pixel_array(read_dicom(path, limits=limits), str(path), limits)
    except ImagingError as exc:
        errors[path.name] = type(exc).__name__
index = index_dicom_source(folder, limits=IndexLimits(read=limits))
seconds = time.perf_counter() - started
peak = status_kb("VmHWM")
print(json.dumps({"growth_mb": (peak - baseline) / 1024, "seconds": seconds, "errors": errors,
                  "indexed": len({i.path for s in index.series for i in s.instances})}))
"""


def measure(folder: Path, *, limits: ReadLimits | None) -> dict[str, object]:
    arguments = ["small", json.dumps(limits.__dict__)] if limits else ["default", "{}"]
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(folder), *arguments],
        capture_output=True, text=True, timeout=120, check=True,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_whole_corpus_runs_in_bounded_memory(
    seeds: dict[str, bytes], corpus: dict[str, bytes], tmp_path: Path
) -> None:
    folder = tmp_path / "inbox"
    write_folder(folder, seeds, corpus)
    figures = measure(folder, limits=SMALL_LIMITS)
    print(f"corpus of {len(corpus)} cases: {figures['growth_mb']} MB peak RSS growth")
    assert isinstance(figures["growth_mb"], float) and figures["growth_mb"] < 200, figures[
        "growth_mb"
    ]
    assert isinstance(figures["indexed"], int) and figures["indexed"] >= len(seeds)
    errors = figures["errors"]
    assert isinstance(errors, dict) and set(errors.values()) <= IMAGING_ERRORS
    assert len(errors) == len(corpus) - len(index_only(corpus) | TOLERATED)


@pytest.mark.slow
def test_gigabyte_deflate_bomb_is_refused_quickly_under_default_limits(
    seeds: dict[str, bytes], tmp_path: Path
) -> None:
    """1.3 MB on disk inflating to 1.25 GiB: refused at the 200:1 inflate-ratio cap."""
    mr = seeds["mr"]
    header = mr[meta_end(mr) : mr.rindex(PIXEL_DATA_TAG)]
    size = 1280 * MIB
    bomb = deflated_meta(mr) + deflate_bomb(
        header + element(0x7FE0, 0x0010, b"OB", b"", size), size
    )
    folder = tmp_path / "bomb"
    folder.mkdir()
    (folder / "000-good-mr.dcm").write_bytes(mr)
    (folder / "bomb.dcm").write_bytes(bomb)
    assert len(bomb) < 2 * MIB

    figures = measure(folder, limits=None)

    assert figures["errors"] == {"bomb.dcm": "ResourceLimitError"}
    assert figures["indexed"] == 1
    assert isinstance(figures["seconds"], float) and figures["seconds"] < 20.0
    print(f"deflate bomb under default limits: {figures}")
    # The ratio cap stops inflating at 200 times the compressed size (about 260 MB here).
    assert isinstance(figures["growth_mb"], float) and figures["growth_mb"] < 400
