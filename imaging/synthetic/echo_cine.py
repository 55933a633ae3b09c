"""Synthetic apical four-chamber (A4C) echocardiography cine loops, rendered in memory.

The heart is drawn in millimetres on a beam-by-sample (polar) grid, as a phased
array acquires it, and then scan-converted into the sector fan. The left
ventricle is a prolate ellipsoid whose in-plane section is the cavity: its
half-width ``a`` and half-length ``b`` follow the ejection fraction through a
cardiac cycle, so that the area-length volume ``8 A^2 / (3 pi L)`` measured in
pixels, with the reported millimetres per pixel, gives back the true volumes.
A header band carries burned-in patient text, so the pixels hold PHI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from imaging.synthetic.echo_heart import CardiacCycle, Heart, LVGeometry, Rhythm, probe_motion
from imaging.synthetic.echo_overlays import TextBox, draw_ecg, header_band
from imaging.synthetic.echo_render import (
    EchoAppearance,
    check_range,
    compose,
    render_polar,
    scan_geometry,
)
from imaging.synthetic.records import SyntheticStudy

__all__ = [
    "CineLoop",
    "EchoAppearance",
    "LVGeometry",
    "TextBox",
    "lv_cavity_mask",
    "sample_echo_appearance",
    "synthesize_a4c_cine",
]


def sample_echo_appearance(rng: np.random.Generator) -> EchoAppearance:
    """Draw a plausible machine look: preset, gain, grey map, speckle, noise and tint."""
    tints = ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (1.0, 0.93, 0.8), (0.85, 0.93, 1.0))
    return EchoAppearance(
        sector_angle_deg=float(rng.uniform(72.0, 90.0)),
        depth_mm=float(rng.uniform(140.0, 180.0)),
        gain_db=float(rng.uniform(-4.0, 4.0)),
        dynamic_range_db=float(rng.uniform(42.0, 60.0)),
        gamma=float(rng.uniform(0.8, 1.3)),
        speckle_strength=float(rng.uniform(0.7, 1.0)),
        speckle_decorrelation=float(rng.uniform(0.3, 0.8)),
        noise_level=float(rng.uniform(0.002, 0.02)),
        edge_blur_mm=float(rng.uniform(1.5, 4.5)),
        near_field_clutter=float(rng.uniform(0.0, 0.4)),
        attenuation_db_per_cm=float(rng.uniform(-0.6, 0.2)),
        tint=tints[int(rng.integers(len(tints)))],
        show_ecg=bool(rng.random() < 0.8),
    )


@dataclass(frozen=True, eq=False)
class CineLoop:
    """A rendered A4C cine loop with its acquisition geometry and ground truth.

    Attributes:
        frames: uint8 RGB pixels, shape ``(frames, rows, columns, 3)``, read-only; the fan
            is grey (or tinted), the ECG strip green, the header text white.
        frame_time_ms: Time between frames.
        heart_rate_bpm: Mean heart rate.
        mm_per_pixel_x: Physical width of a pixel column step.
        mm_per_pixel_y: Physical height of a pixel row step.
        sector_apex_xy: Fan apex in pixels, ``(column, row)``.
        sector_angle_deg: Fan opening angle.
        sector_depth_px: Fan radius in pixels.
        ejection_fraction: True LV ejection fraction as a fraction in [0, 1]
            (EchoNet-Dynamic's ``EF`` is this times 100).
        edv_ml: True end-diastolic volume.
        esv_ml: True end-systolic volume, ``edv_ml * (1 - ejection_fraction)``.
        end_diastole_frames: Frames nearest each end-diastole (largest LV volume).
        end_systole_frames: Frames nearest each end-systole (smallest LV volume).
        lv_volume_ml: True LV volume in each frame.
        lv_geometry: The LV cavity in each frame.
        header_rows: Height of the header band that holds the burned-in text.
        text_boxes: Every burned-in text string with its box.
    """

    frames: np.ndarray
    frame_time_ms: float
    heart_rate_bpm: float
    mm_per_pixel_x: float
    mm_per_pixel_y: float
    sector_apex_xy: tuple[float, float]
    sector_angle_deg: float
    sector_depth_px: float
    ejection_fraction: float
    edv_ml: float
    esv_ml: float
    end_diastole_frames: tuple[int, ...]
    end_systole_frames: tuple[int, ...]
    lv_volume_ml: np.ndarray
    lv_geometry: LVGeometry
    header_rows: int
    text_boxes: tuple[TextBox, ...]

    @property
    def number_of_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def rows(self) -> int:
        return int(self.frames.shape[1])

    @property
    def columns(self) -> int:
        return int(self.frames.shape[2])

    @property
    def frame_rate_fps(self) -> float:
        return 1000.0 / self.frame_time_ms

    @property
    def sector_bounding_box(self) -> tuple[int, int, int, int]:
        """Pixel box ``(x0, y0, x1, y1)`` of the fan, inclusive, as DICOM regions give it."""
        apex_x, apex_y = self.sector_apex_xy
        half_width = self.sector_depth_px * math.sin(math.radians(self.sector_angle_deg) / 2.0)
        x0 = max(0, math.floor(apex_x - half_width))
        x1 = min(self.columns - 1, math.ceil(apex_x + half_width))
        y1 = min(self.rows - 1, math.ceil(apex_y + self.sector_depth_px))
        return x0, max(0, math.floor(apex_y)), x1, y1

    def grayscale_frames(self) -> np.ndarray:
        """The frames as uint8 luma (ITU-R BT.601), shape ``(frames, rows, columns)``."""
        # Weights in 1/256 that sum to 256, so grey pixels keep their value exactly.
        rgb = self.frames.astype(np.uint16)
        luma = rgb[..., 0] * 77 + rgb[..., 1] * 150 + rgb[..., 2] * 29 + 128
        return (luma >> 8).astype(np.uint8)


def lv_cavity_mask(cine: CineLoop, frame: int) -> np.ndarray:
    """The pixels inside the LV cavity of one frame, as the renderer drew its border."""
    if not 0 <= frame < cine.number_of_frames:
        raise ValueError(f'Argument "frame" must lie in [0, {cine.number_of_frames}), got {frame}')
    geometry = cine.lv_geometry
    rows, columns = np.mgrid[0 : cine.rows, 0 : cine.columns].astype(np.float64)
    x_mm = (columns - cine.sector_apex_xy[0]) * cine.mm_per_pixel_x
    y_mm = (rows - cine.sector_apex_xy[1]) * cine.mm_per_pixel_y
    return np.asarray(_lv_radius2(geometry, frame, x_mm, y_mm) <= 1.0)


def _lv_radius2(geometry: LVGeometry, frame: int, x_mm: np.ndarray, y_mm: np.ndarray) -> np.ndarray:
    ux, uy = geometry.axis
    a = float(geometry.half_width_mm[frame])
    b = float(geometry.half_length_mm[frame])
    dx = x_mm - geometry.apex_x_mm[frame]
    dy = y_mm - geometry.apex_y_mm[frame]
    p = dx * ux + dy * uy - b
    q = dx * uy - dy * ux
    width = a * (1.0 + geometry.egg_factor * p / b)
    return np.asarray((q / width) ** 2 + (p / b) ** 2)


def synthesize_a4c_cine(
    *,
    ejection_fraction: float,
    edv_ml: float,
    heart_rate_bpm: float,
    frame_rate_fps: float,
    rows: int,
    columns: int,
    study: SyntheticStudy,
    rng: np.random.Generator,
    appearance: EchoAppearance,
    number_of_frames: int | None = None,
) -> CineLoop:
    """Render an apical four-chamber cine loop of a heart with the given LV function.

    Args:
        ejection_fraction: LV ejection fraction as a fraction in [0, 0.95].
        edv_ml: LV end-diastolic volume in millilitres, in [10, 500].
        heart_rate_bpm: Mean heart rate, in [30, 200]; it varies a few percent with breathing.
        frame_rate_fps: Frames per second, in [5, 200].
        rows: Image height in pixels, at least 128.
        columns: Image width in pixels, at least 128.
        study: The study whose patient and site are burned into the header band.
        rng: The only source of randomness: one generator state gives one loop.
        appearance: Machine and preset effects.
        number_of_frames: Frames to render; by default enough for 2.2 cardiac cycles and
            at least two seconds.

    Raises:
        ValueError: An argument lies outside its range.
    """
    check_range("ejection_fraction", ejection_fraction, 0.0, 0.95)
    check_range("edv_ml", edv_ml, 10.0, 500.0)
    check_range("heart_rate_bpm", heart_rate_bpm, 30.0, 200.0)
    check_range("frame_rate_fps", frame_rate_fps, 5.0, 200.0)
    check_range("rows", rows, 128, 4096)
    check_range("columns", columns, 128, 4096)
    rr_s = 60.0 / heart_rate_bpm
    if number_of_frames is None:
        number_of_frames = math.ceil(max(2.0, 2.2 * rr_s) * frame_rate_fps)
    check_range("number_of_frames", number_of_frames, 2, 10_000)

    header, text_boxes = header_band(study, columns)
    scan = scan_geometry(
        rows, columns, header.shape[0], appearance.sector_angle_deg, appearance.depth_mm
    )
    times = np.arange(number_of_frames) / frame_rate_fps
    rhythm = Rhythm.sample(rr_s, rng)
    cycle = CardiacCycle.sample(rr_s, edv_ml, edv_ml * (1.0 - ejection_fraction), rng)
    phase = rhythm.cycles(times)
    volume = np.interp(np.mod(phase, 1.0), cycle.grid, cycle.volume_ml)
    inflow = np.interp(np.mod(phase, 1.0), cycle.grid, cycle.inflow)
    systolic = (edv_ml - volume) / max(edv_ml * ejection_fraction, 1e-9)

    heart = Heart.sample(ejection_fraction, edv_ml, rng).placed_in_sector(scan.half_angle)
    motion = probe_motion(times, systolic, rng)
    geometry = heart.lv_geometry(volume, systolic, motion)
    levels = render_polar(scan, heart, geometry, systolic, inflow, appearance, rng)
    frames = compose(levels, scan, header, appearance, rows, columns)
    if appearance.show_ecg:
        draw_ecg(frames, rhythm, cycle, times)
    lv_arrays = (
        geometry.apex_x_mm,
        geometry.apex_y_mm,
        geometry.half_width_mm,
        geometry.half_length_mm,
    )
    for array in (frames, volume, *lv_arrays):
        array.flags.writeable = False

    return CineLoop(
        frames=frames,
        frame_time_ms=1000.0 / frame_rate_fps,
        heart_rate_bpm=float(heart_rate_bpm),
        mm_per_pixel_x=scan.mm_per_pixel,
        mm_per_pixel_y=scan.mm_per_pixel,
        sector_apex_xy=(scan.apex_x, scan.apex_y),
        sector_angle_deg=float(appearance.sector_angle_deg),
        sector_depth_px=scan.depth_px,
        ejection_fraction=float(ejection_fraction),
        edv_ml=float(edv_ml),
        esv_ml=float(edv_ml * (1.0 - ejection_fraction)),
        end_diastole_frames=_nearest_frames(phase, 0.0),
        end_systole_frames=_nearest_frames(phase, cycle.end_systole),
        lv_volume_ml=volume,
        lv_geometry=geometry,
        header_rows=int(header.shape[0]),
        text_boxes=text_boxes,
    )


def _nearest_frames(phase: np.ndarray, event: float) -> tuple[int, ...]:
    """Frames nearest each time the cycle phase passes ``event`` (a fraction of the cycle)."""
    step = float(np.max(np.diff(phase))) if len(phase) > 1 else 1.0
    first = math.ceil(phase[0] - event - step / 2.0)
    last = math.floor(phase[-1] - event + step / 2.0)
    frames = []
    for cycle in range(first, last + 1):
        distance = np.abs(phase - (cycle + event))
        if float(distance.min()) <= step / 2.0 + 1e-9:
            frames.append(int(np.argmin(distance)))
    return tuple(frames)
