"""Write synthetic cine loops in the EchoNet-Dynamic layout.

EchoNet-Dynamic ships ``Videos/<FileName>.avi`` (112 x 112 Motion-JPEG, the
sector cropped out of the scanner image), ``FileList.csv`` with one row of
labels per video, and ``VolumeTracings.csv`` with the LV long axis and the
chords of the method of discs at one end-systolic and one end-diastolic frame.
"""

from __future__ import annotations

import csv
import math
from fractions import Fraction
from pathlib import Path

import numpy as np

from imaging.synthetic.echo_cine import CineLoop

ECHONET_SIZE = 112
FILE_LIST_COLUMNS = (
    "FileName",
    "EF",
    "ESV",
    "EDV",
    "FrameHeight",
    "FrameWidth",
    "FPS",
    "NumberOfFrames",
    "Split",
)
VOLUME_TRACING_COLUMNS = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")
SPLITS = ("TRAIN", "VAL", "TEST")
DISCS = 20
# FFmpeg's FF_QP2LAMBDA: quantiser scale to the lambda unit of ``global_quality``.
_QP2LAMBDA = 118


def write_echonet_video(cine: CineLoop, path: Path) -> dict[str, object]:
    """Write the loop's sector as a 112 x 112 Motion-JPEG AVI; return its FileList row.

    The fan's bounding box is centred in a black square, so no header text or ECG
    enters the video, and resized; the grey image is stored in all three channels.

    Returns:
        The ``FileList.csv`` fields except ``Split``: ``FileName`` (``path``'s stem),
        ``EF`` in percent, ``ESV`` and ``EDV`` in mL, ``FrameHeight``, ``FrameWidth``,
        ``FPS`` and ``NumberOfFrames``.
    """
    import av
    from PIL import Image

    side, (left, top) = _crop_square(cine)
    x0, y0, x1, y1 = cine.sector_bounding_box
    grey = cine.grayscale_frames()
    square = np.zeros((side, side), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame_rate = Fraction(cine.frame_rate_fps).limit_denominator(1001)
    with av.open(str(path), mode="w", format="avi") as container:
        stream = container.add_stream("mjpeg", rate=frame_rate)
        stream.width = stream.height = ECHONET_SIZE
        stream.pix_fmt = "yuvj420p"
        # Fixed quantiser scale 2 (ffmpeg's ``-q:v 2``): near-lossless, still small at 112 px.
        stream.codec_context.flags |= av.codec.context.Flags.qscale
        stream.codec_context.global_quality = 2 * _QP2LAMBDA
        stream.codec_context.qmin = 1
        for frame in grey:
            square[y0 - top : y1 + 1 - top, x0 - left : x1 + 1 - left] = frame[
                y0 : y1 + 1, x0 : x1 + 1
            ]
            small = Image.fromarray(square).resize(
                (ECHONET_SIZE, ECHONET_SIZE), Image.Resampling.BILINEAR
            )
            rgb = np.repeat(np.asarray(small)[..., None], 3, axis=2)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    return {
        "FileName": path.stem,
        "EF": round(100.0 * cine.ejection_fraction, 4),
        "ESV": round(cine.esv_ml, 4),
        "EDV": round(cine.edv_ml, 4),
        "FrameHeight": ECHONET_SIZE,
        "FrameWidth": ECHONET_SIZE,
        "FPS": round(cine.frame_rate_fps, 3),
        "NumberOfFrames": cine.number_of_frames,
    }


def write_echonet_filelist(rows: list[dict[str, object]], path: Path) -> None:
    """Write ``FileList.csv``; every row needs the FileList fields and a ``Split``.

    Raises:
        ValueError: A row lacks a column, or its ``Split`` is not TRAIN, VAL or TEST.
    """
    for index, row in enumerate(rows):
        missing = [column for column in FILE_LIST_COLUMNS if column not in row]
        if missing:
            raise ValueError(f'Argument "rows" item {index} lacks the columns {missing}')
        if row["Split"] not in SPLITS:
            raise ValueError(
                f'Argument "rows" item {index} has Split {row["Split"]!r}; use one of {SPLITS}'
            )
    _write_csv(path, FILE_LIST_COLUMNS, rows)


def echonet_volume_tracings(cine: CineLoop, file_name: str) -> list[dict[str, object]]:
    """VolumeTracings rows in video pixels: first an end-systolic frame, then end-diastolic.

    For each frame the first row is the long axis from the apex to the far end of
    the cavity ellipse, then come the chords of ``DISCS`` equal discs across it,
    so the method of discs gives back the ellipsoid's volume. ``file_name`` is
    written as EchoNet does, with the ``.avi`` extension.
    """
    end_diastole = cine.end_diastole_frames[0] if cine.end_diastole_frames else None
    end_systole = cine.end_systole_frames[0] if cine.end_systole_frames else None
    if end_diastole is None or end_systole is None:
        raise ValueError('Argument "cine" must contain an end-diastolic and an end-systolic frame')
    side, (left, top) = _crop_square(cine)
    scale = ECHONET_SIZE / side
    geometry = cine.lv_geometry
    ux, uy = geometry.axis
    rows: list[dict[str, object]] = []
    for frame in (end_systole, end_diastole):
        half_length = float(geometry.half_length_mm[frame])
        half_width = float(geometry.half_width_mm[frame])
        # (p along the axis from the apex, q across it), both in mm.
        segments = [((0.0, 0.0), (2.0 * half_length, 0.0))]
        for disc in range(DISCS):
            p = 2.0 * half_length * (disc + 0.5) / DISCS
            centred = p - half_length
            width = half_width * (1.0 + geometry.egg_factor * centred / half_length)
            q = width * math.sqrt(max(0.0, 1.0 - (centred / half_length) ** 2))
            segments.append(((p, -q), (p, q)))
        for start, end in segments:
            (x1, y1), (x2, y2) = (
                _video_point(cine, frame, point, ux, uy, left, top, scale) for point in (start, end)
            )
            rows.append(
                {
                    "FileName": f"{file_name}.avi",
                    "X1": x1,
                    "Y1": y1,
                    "X2": x2,
                    "Y2": y2,
                    "Frame": frame,
                }
            )
    return rows


def write_echonet_tracings(rows: list[dict[str, object]], path: Path) -> None:
    """Write ``VolumeTracings.csv`` from ``echonet_volume_tracings`` rows."""
    _write_csv(path, VOLUME_TRACING_COLUMNS, rows)


def _crop_square(cine: CineLoop) -> tuple[int, tuple[int, int]]:
    """Side and top-left pixel of the square, centred on the fan's box, that the video shows."""
    x0, y0, x1, y1 = cine.sector_bounding_box
    side = max(x1 - x0 + 1, y1 - y0 + 1)
    return side, (x0 - (side - (x1 - x0 + 1)) // 2, y0 - (side - (y1 - y0 + 1)) // 2)


def _video_point(
    cine: CineLoop,
    frame: int,
    point: tuple[float, float],
    ux: float,
    uy: float,
    left: int,
    top: int,
    scale: float,
) -> tuple[float, float]:
    p, q = point
    geometry = cine.lv_geometry
    x_mm = float(geometry.apex_x_mm[frame]) + p * ux + q * uy
    y_mm = float(geometry.apex_y_mm[frame]) + p * uy - q * ux
    column = cine.sector_apex_xy[0] + x_mm / cine.mm_per_pixel_x
    row = cine.sector_apex_xy[1] + y_mm / cine.mm_per_pixel_y
    # Pixel centres map to pixel centres under the resize.
    return (column - left + 0.5) * scale - 0.5, (row - top + 0.5) * scale - 0.5


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
