"""Read the EchoNet-Dynamic layout: ``FileList.csv``, ``Videos/*.avi``, ``VolumeTracings.csv``.

``FileList.csv`` has one row per video: ``FileName`` (EchoNet writes it without the
``.avi`` extension; both spellings are accepted), the labels ``EF`` (percent), ``ESV``
and ``EDV`` (mL), ``FrameHeight``, ``FrameWidth``, ``FPS``, ``NumberOfFrames`` and
``Split`` (TRAIN, VAL or TEST). ``VolumeTracings.csv``, when present, holds the LV
long axis and the method-of-discs chords at an end-systolic and an end-diastolic
frame, in video pixels: per frame the first line is the long axis.

Listing parses the tables only; a missing or corrupt video is reported when it is
loaded, so one bad file does not hide the good ones.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imaging.dicom.cine import UltrasoundCine
from imaging.dicom.reading import DEFAULT_READ_LIMITS, ReadLimits
from imaging.errors import CineLoopError, EchoNetLayoutError, ResourceLimitError

FILE_LIST_COLUMNS = (
    "FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split",
)  # fmt: skip
VOLUME_TRACING_COLUMNS = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")
SPLITS = ("TRAIN", "VAL", "TEST")


@dataclass(frozen=True, eq=False)
class FrameTracing:
    """The tracing of one frame: ``lines`` is ``(n, 4)`` float64 ``X1, Y1, X2, Y2``.

    The first line is the LV long axis, the others the chords of the method of discs.
    """

    frame: int
    lines: np.ndarray


@dataclass(frozen=True)
class EchoNetStudy:
    """One ``FileList.csv`` row with its video path and (optional) tracings.

    Attributes:
        file_name: The video's name without ``.avi``.
        video_path: ``<root>/Videos/<file_name>.avi`` (not checked to exist).
        split: ``"TRAIN"``, ``"VAL"`` or ``"TEST"``.
        ef_percent: Ejection fraction in percent.
        esv_ml: End-systolic volume in mL.
        edv_ml: End-diastolic volume in mL.
        frame_height: Declared frame height in pixels.
        frame_width: Declared frame width in pixels.
        fps: Declared frames per second.
        number_of_frames: Declared frame count.
        tracings: Traced frames in file order (end-systole first in EchoNet), empty when
            ``VolumeTracings.csv`` is absent or has no row for this video.
    """

    file_name: str
    video_path: Path
    split: str
    ef_percent: float
    esv_ml: float
    edv_ml: float
    frame_height: int
    frame_width: int
    fps: float
    number_of_frames: int
    tracings: tuple[FrameTracing, ...] = ()


def list_echonet_studies(root: str | Path, *, split: str | None = None) -> list[EchoNetStudy]:
    """The studies of an EchoNet-Dynamic folder, in ``FileList.csv`` order.

    Args:
        root: The folder holding ``FileList.csv`` and ``Videos/``.
        split: Keep only this split (``"TRAIN"``, ``"VAL"`` or ``"TEST"``, any case);
            None keeps all.

    Raises:
        ValueError: ``split`` is not one of the three.
        EchoNetLayoutError: ``FileList.csv`` is missing, lacks a column, repeats a file
            name, or holds a value that is not a number or a known split; or
            ``VolumeTracings.csv`` is malformed.
    """
    if split is not None and split.upper() not in SPLITS:
        raise ValueError(f'Argument "split" must be one of {SPLITS} or None, got {split!r}')
    root = Path(root)
    file_list = root / "FileList.csv"
    rows = _read_table(file_list, FILE_LIST_COLUMNS)
    tracings_path = root / "VolumeTracings.csv"
    tracings = _read_tracings(tracings_path) if tracings_path.is_file() else {}
    studies: list[EchoNetStudy] = []
    seen: set[str] = set()
    for line, row in rows:
        study = _study_from_row(row, root, tracings, f"{file_list}, line {line}")
        if study.file_name in seen:
            raise EchoNetLayoutError(file_list, f"line {line}: FileName {study.file_name} repeats")
        seen.add(study.file_name)
        if split is None or study.split == split.upper():
            studies.append(study)
    return studies


def load_echonet_video(
    path: str | Path, *, limits: ReadLimits = DEFAULT_READ_LIMITS
) -> UltrasoundCine:
    """Decode an EchoNet AVI with PyAV into an :class:`UltrasoundCine` (RGB, 3 channels).

    The timing is the container's frame rate; the sector mask is the whole frame,
    since EchoNet videos are already cropped to the sector.

    Raises:
        CineLoopError: The file is missing, not a video, has no video stream or frame
            rate, or decodes to fewer frames than its header declares (truncated, corrupt).
        ResourceLimitError: The file or its decoded frames exceed ``limits``.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise CineLoopError(path, "video file does not exist")
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise ResourceLimitError(
            path, f"file is {size} bytes, over the {limits.max_file_bytes} limit"
        )
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise CineLoopError(path, "no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            if not rate or rate <= 0:
                raise CineLoopError(path, "the video stream declares no frame rate")
            frames = _decode_frames(container.decode(stream), path, limits)
            declared = int(stream.frames or 0)
    except av.error.FFmpegError as exc:
        raise CineLoopError(path, f"cannot decode video: {exc}") from exc
    if not frames:
        raise CineLoopError(path, "the video holds no decodable frame")
    if declared and len(frames) != declared:
        raise CineLoopError(
            path, f"decoded {len(frames)} of the {declared} frames the header declares"
        )
    pixels = np.stack(frames)
    frame_rate = float(rate)
    times = np.arange(len(frames), dtype=np.float64) * (1000.0 / frame_rate)
    mask = np.ones(pixels.shape[1:3], dtype=bool)
    return UltrasoundCine(
        frames=pixels,
        frame_times_ms=times,
        frame_rate_hz=frame_rate,
        timing_source="VideoFrameRate",
        regions=(),
        sector_mask=mask,
        mask_source="whole_frame",
        sop_instance_uid=None,
        source=str(path),
    )


def _decode_frames(decoded: object, path: Path, limits: ReadLimits) -> list[np.ndarray]:
    """RGB frames, refusing more frames or bytes than ``limits`` allow."""
    frames: list[np.ndarray] = []
    total = 0
    for frame in decoded:  # type: ignore[attr-defined]
        array = frame.to_ndarray(format="rgb24")
        if frames and array.shape != frames[0].shape:
            raise CineLoopError(
                path, f"frame {len(frames)} is {array.shape}, frame 0 is {frames[0].shape}"
            )
        total += array.nbytes
        if len(frames) + 1 > limits.max_frames or total > limits.max_pixel_bytes:
            raise ResourceLimitError(
                path,
                f"over the limits of {limits.max_frames} frames or {limits.max_pixel_bytes} bytes",
            )
        frames.append(array)
    return frames


def _read_table(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) pairs of a CSV that must hold ``columns``."""
    if not path.is_file():
        raise EchoNetLayoutError(path, "file does not exist")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in columns if c not in (reader.fieldnames or ())]
            if missing:
                raise EchoNetLayoutError(path, f"missing columns {missing}")
            return [(index + 2, row) for index, row in enumerate(reader)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EchoNetLayoutError(path, f"unreadable CSV: {exc}") from exc


def _study_from_row(
    row: dict[str, str], root: Path, tracings: dict[str, tuple[FrameTracing, ...]], where: str
) -> EchoNetStudy:
    file_name = _stem(row["FileName"] or "")
    if not file_name or "/" in file_name or "\\" in file_name:
        raise EchoNetLayoutError(where, f"FileName {row['FileName']!r} is not a plain file name")
    split = (row["Split"] or "").strip().upper()
    if split not in SPLITS:
        raise EchoNetLayoutError(where, f"Split {row['Split']!r} is not one of {SPLITS}")
    return EchoNetStudy(
        file_name=file_name,
        video_path=root / "Videos" / f"{file_name}.avi",
        split=split,
        ef_percent=_number(row, "EF", where),
        esv_ml=_number(row, "ESV", where),
        edv_ml=_number(row, "EDV", where),
        frame_height=int(_number(row, "FrameHeight", where, integer=True)),
        frame_width=int(_number(row, "FrameWidth", where, integer=True)),
        fps=_number(row, "FPS", where),
        number_of_frames=int(_number(row, "NumberOfFrames", where, integer=True)),
        tracings=tracings.get(file_name, ()),
    )


def _read_tracings(path: Path) -> dict[str, tuple[FrameTracing, ...]]:
    """Tracings per video name (without ``.avi``), frames in order of first appearance."""
    lines: dict[str, dict[int, list[list[float]]]] = {}
    for line, row in _read_table(path, VOLUME_TRACING_COLUMNS):
        where = f"{path}, line {line}"
        frame = int(_number(row, "Frame", where, integer=True))
        point = [_number(row, column, where) for column in ("X1", "Y1", "X2", "Y2")]
        lines.setdefault(_stem(row["FileName"] or ""), {}).setdefault(frame, []).append(point)
    return {
        name: tuple(
            FrameTracing(frame=frame, lines=np.asarray(segments, dtype=np.float64))
            for frame, segments in frames.items()
        )
        for name, frames in lines.items()
    }


def _stem(file_name: str) -> str:
    name = file_name.strip()
    return name[:-4] if name.lower().endswith(".avi") else name


def _number(row: dict[str, str], column: str, where: str, *, integer: bool = False) -> float:
    text = (row.get(column) or "").strip()
    try:
        value = float(text)
    except ValueError:
        raise EchoNetLayoutError(where, f"{column} {text!r} is not a number") from None
    if not np.isfinite(value) or (integer and (value != int(value) or value < 0)):
        kind = "a non-negative integer" if integer else "finite"
        raise EchoNetLayoutError(where, f"{column} {text!r} is not {kind}")
    return value
