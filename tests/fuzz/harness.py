"""The fuzz targets, the mutation engine and the check of one input.

A target takes bytes and either succeeds or refuses them with one of its domain errors.
Anything else is a finding: another exception (a crash), a run over ``HANG_S`` (a hang),
or a Python heap peak over ``PEAK_BYTES`` (an allocation the limits should have stopped).
The mutations are byte-level and DICOM-aware: truncations, bit flips, random bytes, and
lying 16- and 32-bit length fields written just after the VR codes where DICOM keeps them.
"""

from __future__ import annotations

import random
import shutil
import signal
import tempfile
import time
import traceback
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from imaging.dicom.cine import load_us_cine
from imaging.dicom.pixels import decode_pixel_array
from imaging.dicom.reading import ReadLimits, read_dicom_bytes
from imaging.dicom.series_volume import mr_series_to_volume
from imaging.errors import ImagingError
from serving.dicomweb.multipart import (
    MultipartError,
    MultipartReader,
    RequestTooLargeError,
    iter_multipart,
)

MIB = 1024 * 1024
# Small limits, so that a limit that does not hold shows up as a large heap peak.
FUZZ_LIMITS = ReadLimits(
    max_file_bytes=8 * MIB, max_inflated_bytes=4 * MIB, max_pixel_bytes=16 * MIB, max_frames=200
)
PEAK_BYTES = 160 * MIB
HANG_S = 10.0
BOUNDARY = "fuzz-boundary-7d3a"
DICOM_TYPE = "application/dicom"
# VR codes whose 2-byte (or, for these long forms, 4-byte after 2 reserved) length follows.
_SHORT_VRS = (b"UI", b"CS", b"US", b"UL", b"DS", b"IS", b"LO", b"PN", b"SH", b"DA", b"TM")
_LONG_VRS = (b"OB", b"OW", b"SQ", b"UN", b"UT", b"OF")
_LYING_LENGTHS = (0, 1, 0x7FFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFE, 0x7FFFFFFF, 0x00100000)


class FuzzHang(Exception):
    """A target ran past ``HANG_S``."""


@dataclass(frozen=True)
class Outcome:
    """What one input did to one target."""

    target: str
    verdict: str  # "ok", "refused", "crash", "hang" or "memory"
    detail: str
    peak_bytes: int
    seconds: float

    @property
    def is_finding(self) -> bool:
        return self.verdict in ("crash", "hang", "memory")


@dataclass(frozen=True)
class Target:
    """A parser under fuzz: its seed inputs, how to run one input, what it may raise."""

    name: str
    seeds: tuple[bytes, ...]
    run: Callable[[bytes], object]
    refusals: tuple[type[BaseException], ...]


def read_and_decode(data: bytes) -> object:
    """The listener's and STOW's path: parse with limits, then decode the pixels."""
    dataset = read_dicom_bytes(data, "fuzz-input", limits=FUZZ_LIMITS)
    if "PixelData" in dataset:
        return decode_pixel_array(dataset, "fuzz-input", FUZZ_LIMITS)
    return dataset


def assemble_series(slices: tuple[bytes, ...]) -> Callable[[bytes], object]:
    """A series of ``slices`` whose middle one is replaced by the fuzzed bytes."""

    def run(data: bytes) -> object:
        parts = list(slices)
        parts[len(parts) // 2] = data
        datasets = []
        for number, part in enumerate(parts):
            dataset = read_dicom_bytes(part, f"slice-{number}", limits=FUZZ_LIMITS)
            dataset.filename = f"slice-{number}"
            datasets.append(dataset)
        return mr_series_to_volume(datasets, limits=FUZZ_LIMITS)

    return run


def decode_cine(data: bytes) -> object:
    """An ultrasound loop, read and decoded into frames."""
    dataset = read_dicom_bytes(data, "fuzz-cine", limits=FUZZ_LIMITS)
    return load_us_cine(dataset, limits=FUZZ_LIMITS)


def multipart_body(parts: tuple[bytes, ...]) -> bytes:
    """A STOW-RS request body holding ``parts``."""
    return b"".join(iter_multipart(list(parts), boundary=BOUNDARY, part_type=DICOM_TYPE))


def read_multipart(data: bytes) -> object:
    """Feed ``data`` to the STOW-RS reader in uneven chunks; every temp file must go."""
    work_dir = Path(tempfile.mkdtemp(prefix="mmdx-fuzz-"))
    reader = MultipartReader(
        BOUNDARY, work_dir, max_request_bytes=4 * MIB, max_part_bytes=2 * MIB, max_parts=16
    )
    chunking = random.Random(len(data))
    try:
        position = 0
        while position < len(data):
            size = chunking.choice((1, 7, 64, 1000, 65536))
            reader.feed(data[position : position + size])
            position += size
        return reader.finish()
    finally:
        reader.discard()
        left = list(work_dir.iterdir())
        shutil.rmtree(work_dir, ignore_errors=True)
        if left:
            raise RuntimeError(f"temporary files left after discard: {len(left)}")


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to four random mutations of ``data``."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(6)
        if not out:
            out += rng.randbytes(rng.randint(1, 64))
        elif kind == 0:  # truncate
            del out[rng.randrange(len(out)) :]
        elif kind == 1:  # flip bits
            for _ in range(rng.randint(1, 16)):
                out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        elif kind == 2:  # random bytes over a stretch
            start = rng.randrange(len(out))
            out[start : start + rng.randint(1, 32)] = rng.randbytes(rng.randint(1, 32))
        elif kind == 3:  # repeat a stretch (duplicate elements, items)
            start = rng.randrange(len(out))
            out[start:start] = out[start : start + rng.randint(1, 512)]
        else:  # a lying length after a VR code
            _lie_about_a_length(out, rng)
    return bytes(out)


def _lie_about_a_length(out: bytearray, rng: random.Random) -> None:
    long_form = rng.random() < 0.5
    codes = _LONG_VRS if long_form else _SHORT_VRS
    code = rng.choice(codes)
    positions = [i for i in _find_all(out, code) if i > 128]
    if not positions:
        return
    at = rng.choice(positions) + 2
    value = rng.choice(_LYING_LENGTHS)
    if long_form:
        out[at + 2 : at + 6] = value.to_bytes(4, "little")
    else:
        out[at : at + 2] = (value & 0xFFFF).to_bytes(2, "little")


def _find_all(data: bytearray, needle: bytes) -> Iterator[int]:
    start = data.find(needle)
    while start >= 0:
        yield start
        start = data.find(needle, start + 1)


def check(target: Target, data: bytes) -> Outcome:
    """Run ``target`` on ``data`` once, timed and with the heap peak measured."""
    tracemalloc.start()
    started = time.perf_counter()
    verdict, detail = "ok", ""
    try:
        with _deadline(HANG_S):
            target.run(data)
    except FuzzHang:
        verdict, detail = "hang", f"over {HANG_S} s"
    except target.refusals as exc:
        verdict, detail = "refused", f"{type(exc).__name__}: {exc}"[:200]
    except Exception as exc:  # the finding itself: any other exception
        verdict = "crash"
        detail = "".join(traceback.format_exception(exc))[-4000:]
    finally:
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    if verdict != "crash" and peak > PEAK_BYTES:
        verdict, detail = "memory", f"heap peak {peak / MIB:.0f} MiB over {PEAK_BYTES / MIB:.0f}"
    return Outcome(target.name, verdict, detail, peak, seconds)


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`FuzzHang` in the main thread after ``seconds`` (SIGALRM)."""

    def expire(_signum: int, _frame: FrameType | None) -> None:
        raise FuzzHang

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def warm_up(targets: dict[str, Target]) -> None:
    """Run every seed once unmonitored: first calls import MONAI, decoders and the like,
    which must neither count against the deadline nor be interrupted by it."""
    for target in targets.values():
        for seed in target.seeds:
            target.run(seed)


def build_targets(seeds: dict[str, bytes], mr_slices: tuple[bytes, ...]) -> dict[str, Target]:
    """The four targets over the sample objects of :mod:`tests.fuzz.seeds`."""
    dicom = (seeds["mr"], seeds["us"], seeds["enhanced"], seeds["deflated"])
    imaging_errors = (ImagingError,)
    return {
        "dicom_reader": Target("dicom_reader", dicom, read_and_decode, imaging_errors),
        "series_assembler": Target(
            "series_assembler", (mr_slices[1],), assemble_series(mr_slices), imaging_errors
        ),
        "cine_decoder": Target("cine_decoder", (seeds["us"],), decode_cine, imaging_errors),
        "stow_multipart": Target(
            "stow_multipart",
            (multipart_body((seeds["mr"], seeds["enhanced"])),),
            read_multipart,
            (MultipartError, RequestTooLargeError),
        ),
    }
