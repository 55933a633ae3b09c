"""Burned-in overlays of the synthetic A4C cine: the header text band and the ECG strip.

The header band carries the patient name and ID, the institution and the study
date and time as white text above the fan, so the pixels hold PHI; each string
is reported with its pixel box. The ECG strip under the fan draws a lead-II-like
trace in green over the whole loop, with a cursor at each frame's time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imaging.synthetic.echo_heart import CardiacCycle, Rhythm
from imaging.synthetic.records import SyntheticStudy

_HEADER_TEXT_LEVEL = 235
ECG_BAND_ROWS = 26
_ECG_GREEN = (40, 210, 90)
MARGIN_PX = 3


@dataclass(frozen=True)
class TextBox:
    """A burned-in text string and its pixel box ``(x0, y0, x1, y1)``, end-exclusive."""

    text: str
    box: tuple[int, int, int, int]


def header_band(study: SyntheticStudy, columns: int) -> tuple[np.ndarray, tuple[TextBox, ...]]:
    """The header band's text pixels (uint8, rows x columns) and the boxes of its strings."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    family, _, rest = study.patient.patient_name.partition("^")
    given = rest.split("^")[0]
    name = f"{family}, {given}" if given else family
    time = study.study_time
    stamp = f"{study.study_date:%Y-%m-%d} {time[0:2]}:{time[2:4]}:{time[4:6]}"
    left = (name, f"ID: {study.patient.patient_id}")
    right = (study.site.institution_name, stamp)
    line_height = int(font.getbbox("Ag")[3]) + 3
    usable = columns - 2 * MARGIN_PX
    side_by_side = all(
        font.getlength(lt) + font.getlength(rt) + 12 <= usable
        for lt, rt in zip(left, right, strict=True)
    )
    # Each placement: text, x, line; right-aligned strings share lines with the left ones.
    if side_by_side:
        placements = [(text, float(MARGIN_PX), line) for line, text in enumerate(left)] + [
            (text, columns - MARGIN_PX - font.getlength(text), line)
            for line, text in enumerate(right)
        ]
        n_lines = 2
    else:
        placements = [(text, float(MARGIN_PX), line) for line, text in enumerate(left + right)]
        n_lines = 4
    height = n_lines * line_height + 4
    image = Image.new("L", (columns, height), 0)
    draw = ImageDraw.Draw(image)
    boxes = []
    for text, x, line in placements:
        position = (x, 2 + line * line_height)
        draw.text(position, text, fill=_HEADER_TEXT_LEVEL, font=font)
        x0, y0, x1, y1 = (round(v) for v in draw.textbbox(position, text, font=font))
        boxes.append(TextBox(text, (max(x0, 0), max(y0, 0), min(x1, columns), min(y1, height))))
    return np.asarray(image, dtype=np.uint8), tuple(boxes)


def _ecg(cycles: np.ndarray, rr_s: float, end_systole: float) -> np.ndarray:
    """A lead-II-like ECG (R wave = 1) at the given cycle phases; R waves fall on integers."""
    waves = (  # centre (s after the R wave), width (s), height
        (-0.16, 0.025, 0.12),
        (-0.025, 0.01, -0.12),
        (0.0, 0.011, 1.0),
        (0.028, 0.01, -0.25),
        (end_systole * rr_s - 0.07, 0.045, 0.28),
    )
    since_r = np.mod(cycles, 1.0) * rr_s
    signal = np.zeros_like(since_r)
    for shift in (-rr_s, 0.0, rr_s):
        for centre, width, height in waves:
            signal += height * np.exp(-0.5 * ((since_r + shift - centre) / width) ** 2)
    return signal


def draw_ecg(frames: np.ndarray, rhythm: Rhythm, cycle: CardiacCycle, times: np.ndarray) -> None:
    """A green ECG strip over the whole loop under the fan, with a cursor at each frame's time."""
    from PIL import Image, ImageDraw

    rows, columns = frames.shape[1:3]
    span = max(float(times[-1]), 1e-6)
    strip_times = np.linspace(0.0, span, columns)
    signal = _ecg(rhythm.cycles(strip_times), rhythm.rr_s, cycle.end_systole)
    baseline, height = ECG_BAND_ROWS - 7, ECG_BAND_ROWS - 10
    points = [(float(x), float(baseline - height * v)) for x, v in enumerate(signal)]
    image = Image.new("L", (columns, ECG_BAND_ROWS), 0)
    ImageDraw.Draw(image).line(points, fill=255, width=1)
    trace = np.asarray(image) > 0
    band = frames[:, rows - ECG_BAND_ROWS :]
    band[:, trace] = _ECG_GREEN
    cursor = np.rint(times / span * (columns - 1)).astype(np.int64)
    for frame, column in enumerate(cursor):
        band[frame, :, column] = 200
