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

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from imaging.synthetic.records import SyntheticStudy

_HEADER_TEXT_LEVEL = 235
_ECG_BAND_ROWS = 26
_ECG_GREEN = (40, 210, 90)
_MARGIN_PX = 3
# Reflectivities relative to myocardium (linear amplitude, before speckle).
_BLOOD_LEVEL = 0.012
_PERICARDIUM_LEVEL = 1.7
_LEAFLET_LEVEL = 1.2
# Amplitude 1 maps this far below white, so bright echoes keep some room before clipping.
_HEADROOM_DB = 10.0


@dataclass(frozen=True)
class EchoAppearance:
    """How one machine and one sonographer make images look; the anatomy is separate.

    Attributes:
        sector_angle_deg: Opening angle of the fan.
        depth_mm: Imaging depth from the transducer to the bottom of the fan.
        gain_db: Overall gain added before log compression.
        dynamic_range_db: Range of echo amplitudes mapped onto 0..255.
        gamma: Post-compression grey map exponent (1 is linear in dB).
        speckle_strength: 0 draws smooth tissue, 1 fully developed speckle.
        speckle_decorrelation: Share of the speckle redrawn each frame (0 frozen, 1 independent).
        noise_level: Electronic noise amplitude relative to myocardium.
        edge_blur_mm: Width of the partial-volume blur at blood-tissue borders.
        near_field_clutter: Haze near the transducer that fills the apex of the cavity.
        attenuation_db_per_cm: Residual depth attenuation after time-gain compensation.
        tint: Multipliers for red, green, blue of the grey map; (1, 1, 1) is neutral.
        show_ecg: Draw the ECG strip with a cursor under the fan.
    """

    sector_angle_deg: float = 80.0
    depth_mm: float = 160.0
    gain_db: float = 0.0
    dynamic_range_db: float = 50.0
    gamma: float = 1.0
    speckle_strength: float = 0.9
    speckle_decorrelation: float = 0.5
    noise_level: float = 0.005
    edge_blur_mm: float = 2.5
    near_field_clutter: float = 0.15
    attenuation_db_per_cm: float = 0.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    show_ecg: bool = True

    def __post_init__(self) -> None:
        bounds = {
            "sector_angle_deg": (60.0, 100.0),
            "depth_mm": (80.0, 240.0),
            "dynamic_range_db": (20.0, 90.0),
            "gamma": (0.3, 3.0),
            "speckle_strength": (0.0, 1.0),
            "speckle_decorrelation": (0.0, 1.0),
            "noise_level": (0.0, 1.0),
            "edge_blur_mm": (0.1, 10.0),
            "near_field_clutter": (0.0, 1.0),
        }
        for name, (low, high) in bounds.items():
            _check_range(name, getattr(self, name), low, high)
        if len(self.tint) != 3 or not all(0.0 <= c <= 1.0 for c in self.tint):
            raise ValueError(f'Argument "tint" must be three values in [0, 1], got {self.tint}')


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


@dataclass(frozen=True)
class TextBox:
    """A burned-in text string and its pixel box ``(x0, y0, x1, y1)``, end-exclusive."""

    text: str
    box: tuple[int, int, int, int]


@dataclass(frozen=True, eq=False)
class LVGeometry:
    """The left-ventricular cavity in each frame, in millimetres from the sector apex.

    ``x`` grows to the right of the image and ``y`` with depth. The cavity is the
    ellipse ``(q / (a (1 + k p / b)))^2 + (p / b)^2 <= 1``, where ``p`` runs
    along the long axis from the cavity centre towards the base and ``q`` across
    it towards the lateral wall; ``k`` narrows the apex without changing the area.
    """

    apex_x_mm: np.ndarray  # (frames,) endocardial apex
    apex_y_mm: np.ndarray
    half_width_mm: np.ndarray  # a
    half_length_mm: np.ndarray  # b
    axis_angle_rad: float  # long axis from straight down, positive towards the right
    egg_factor: float  # k

    @property
    def axis(self) -> tuple[float, float]:
        """Unit vector of the long axis, apex to base."""
        return math.sin(self.axis_angle_rad), math.cos(self.axis_angle_rad)


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
    _check_range("ejection_fraction", ejection_fraction, 0.0, 0.95)
    _check_range("edv_ml", edv_ml, 10.0, 500.0)
    _check_range("heart_rate_bpm", heart_rate_bpm, 30.0, 200.0)
    _check_range("frame_rate_fps", frame_rate_fps, 5.0, 200.0)
    _check_range("rows", rows, 128, 4096)
    _check_range("columns", columns, 128, 4096)
    rr_s = 60.0 / heart_rate_bpm
    if number_of_frames is None:
        number_of_frames = math.ceil(max(2.0, 2.2 * rr_s) * frame_rate_fps)
    _check_range("number_of_frames", number_of_frames, 2, 10_000)

    header, text_boxes = _header_band(study, columns)
    scan = _scan_geometry(
        rows, columns, header.shape[0], appearance.sector_angle_deg, appearance.depth_mm
    )
    times = np.arange(number_of_frames) / frame_rate_fps
    rhythm = _Rhythm.sample(rr_s, rng)
    cycle = _CardiacCycle.sample(rr_s, edv_ml, edv_ml * (1.0 - ejection_fraction), rng)
    phase = rhythm.cycles(times)
    volume = np.interp(np.mod(phase, 1.0), cycle.grid, cycle.volume_ml)
    inflow = np.interp(np.mod(phase, 1.0), cycle.grid, cycle.inflow)
    systolic = (edv_ml - volume) / max(edv_ml * ejection_fraction, 1e-9)

    heart = _Heart.sample(ejection_fraction, edv_ml, rng).placed_in_sector(scan.half_angle)
    motion = _probe_motion(times, systolic, rng)
    geometry = heart.lv_geometry(volume, systolic, motion)
    levels = _render_polar(scan, heart, geometry, systolic, inflow, appearance, rng)
    frames = _compose(levels, scan, header, appearance, rows, columns)
    if appearance.show_ecg:
        _draw_ecg(frames, rhythm, cycle, times)
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


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f'Argument "{name}" must lie in [{low}, {high}], got {value}')


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


@dataclass(frozen=True)
class _Rhythm:
    """Sinus rhythm whose rate swings a few percent with breathing."""

    rr_s: float
    start_cycles: float
    variability: float
    breathing_hz: float
    breathing_phase: float

    @classmethod
    def sample(cls, rr_s: float, rng: np.random.Generator) -> _Rhythm:
        return cls(
            rr_s=rr_s,
            start_cycles=float(rng.uniform(0.0, 1.0)),
            variability=float(rng.uniform(0.0, 0.04)),
            breathing_hz=float(rng.uniform(0.15, 0.3)),
            breathing_phase=float(rng.uniform(0.0, 2.0 * math.pi)),
        )

    def cycles(self, times: np.ndarray) -> np.ndarray:
        """Cardiac cycles elapsed at ``times`` (s); integers fall on R waves (end-diastole)."""
        omega = 2.0 * math.pi * self.breathing_hz
        swing = np.cos(omega * times + self.breathing_phase) - math.cos(self.breathing_phase)
        return self.start_cycles + (times - self.variability / omega * swing) / self.rr_s


@dataclass(frozen=True, eq=False)
class _CardiacCycle:
    """LV volume over one cycle sampled on ``grid`` (fractions of the cycle, 0 = R wave)."""

    grid: np.ndarray
    volume_ml: np.ndarray
    inflow: np.ndarray  # how far the atrioventricular valves are open, 0..1
    end_systole: float  # end of ejection, as a fraction of the cycle

    @classmethod
    def sample(
        cls, rr_s: float, edv_ml: float, esv_ml: float, rng: np.random.Generator
    ) -> _CardiacCycle:
        # Ejection time shortens with rate (Weissler); isovolumic phases scale with the cycle.
        ejection = float(np.clip(0.413 - 0.0017 * 60.0 / rr_s, 0.16, 0.36)) * rng.uniform(
            0.93, 1.07
        )
        contraction = 0.045 * min(1.0, rr_s / 0.75)
        relaxation = 0.075 * min(1.0, rr_s / 0.75)
        ejection = min(ejection, 0.55 * rr_s)
        diastole = rr_s - contraction - ejection - relaxation
        rapid = min(0.16, 0.55 * diastole)
        atrial = min(0.12, 0.35 * diastole)
        diastasis = diastole - rapid - atrial
        early_share = rng.uniform(0.6, 0.8)
        diastasis_share = 0.06 if diastasis > 0.05 else 0.0

        grid = np.linspace(0.0, 1.0, 1024, endpoint=False)
        t = grid * rr_s
        stroke = edv_ml - esv_ml
        # Each phase fills (or empties) its share with a smooth step; ejection is front-loaded.
        ejected = _smooth_step((t - contraction) / ejection, skew=0.75)
        start_fill = contraction + ejection + relaxation
        filled = (
            early_share * _smooth_step((t - start_fill) / rapid, skew=0.7)
            + diastasis_share * np.clip((t - start_fill - rapid) / max(diastasis, 1e-6), 0, 1)
            + (1.0 - early_share - diastasis_share)
            * _smooth_step((t - (rr_s - atrial)) / atrial, skew=1.0)
        )
        volume = edv_ml - stroke * ejected * (1.0 - np.where(t >= start_fill, filled, 0.0))
        filling_rate = np.clip(np.gradient(volume), 0.0, None)
        inflow = np.clip(filling_rate / max(float(filling_rate.max()) * 0.35, 1e-9), 0.0, 1.0)
        return cls(grid, volume, inflow, (contraction + ejection) / rr_s)


def _smooth_step(u: np.ndarray, *, skew: float) -> np.ndarray:
    """0 before ``u = 0``, 1 after ``u = 1``, a raised cosine between; ``skew < 1`` rises early."""
    return np.asarray((1.0 - np.cos(math.pi * np.clip(u, 0.0, 1.0) ** skew)) / 2.0)


@dataclass(frozen=True)
class _Heart:
    """Per-case anatomy in millimetres; wall thicknesses are end-diastolic."""

    half_width_ed: float
    half_length_ed: float
    length_ratio_es: float  # b_es / b_ed
    egg_factor: float
    tilt_rad: float
    apex_x: float
    apex_y: float
    septum: float
    lateral_wall: float
    apical_wall: float
    thickening: float
    annulus: float  # mitral annulus below the cavity centre, in half-lengths
    rv_half_width: float
    rv_half_length: float
    rv_shortening: float
    rv_wall: float
    tricuspid_offset: float
    la_half_width: float
    la_half_length: float
    la_offset: float
    ra_half_width: float
    ra_half_length: float
    atrial_growth: float
    atrial_wall: float
    atrial_septum: float

    @classmethod
    def sample(cls, ejection_fraction: float, edv_ml: float, rng: np.random.Generator) -> _Heart:
        u = rng.uniform
        egg = u(0.0, 0.18)
        # Dilated ventricles are rounder.
        aspect = float(np.clip(1.85 - 0.0025 * (edv_ml - 100.0), 1.35, 2.1)) * u(0.9, 1.1)
        half_width = (edv_ml * 1000.0 / (4.0 / 3.0 * math.pi * aspect * (1 + egg**2 / 5))) ** (
            1 / 3
        )
        # Sick hearts shorten less; the cavity never widens in systole.
        shortening = u(0.05, 0.15) * float(np.clip(ejection_fraction / 0.55, 0.3, 1.2))
        length_ratio = max(1.0 - shortening, (1.0 - ejection_fraction) ** (1.0 / 3.0))
        size = (edv_ml / 110.0) ** (1.0 / 6.0)
        return cls(
            half_width_ed=half_width,
            half_length_ed=aspect * half_width,
            length_ratio_es=length_ratio,
            egg_factor=egg,
            tilt_rad=math.radians(u(6.0, 20.0)),
            apex_x=u(-6.0, 8.0),
            apex_y=u(12.0, 24.0),
            septum=u(7.0, 13.0),
            lateral_wall=u(6.0, 11.0),
            apical_wall=u(4.0, 8.0),
            thickening=u(0.25, 0.5) * float(np.clip(ejection_fraction / 0.6, 0.25, 1.3)),
            annulus=u(0.78, 0.88),
            rv_half_width=u(12.0, 18.0) * size,
            rv_half_length=u(0.65, 0.8) * aspect * half_width,
            rv_shortening=u(0.12, 0.25),
            rv_wall=u(3.0, 5.0),
            tricuspid_offset=u(3.0, 8.0),
            la_half_width=u(15.0, 21.0) * size,
            la_half_length=u(18.0, 26.0) * size,
            la_offset=u(0.0, 5.0),
            ra_half_width=u(14.0, 19.0) * size,
            ra_half_length=u(16.0, 24.0) * size,
            atrial_growth=u(0.08, 0.18),
            atrial_wall=u(2.0, 3.5),
            atrial_septum=u(3.0, 6.0),
        )

    def placed_in_sector(self, half_angle: float) -> _Heart:
        """The heart moved, as a sonographer would, so the whole LV and its walls are in the fan."""
        turn = np.linspace(0.0, 2.0 * math.pi, 72, endpoint=False)
        along = self.half_length_ed + (self.half_length_ed + self.apical_wall) * np.cos(turn)
        across = np.where(
            np.sin(turn) > 0,
            self.half_width_ed + self.lateral_wall,
            self.half_width_ed + self.septum,
        ) * np.sin(turn)
        ux, uy = math.sin(self.tilt_rad), math.cos(self.tilt_rad)
        # Room for the breathing and jitter of ``_probe_motion``.
        margin = 4.0
        apex_x, apex_y = self.apex_x, self.apex_y
        for _ in range(100):
            x = apex_x + along * ux + across * uy
            y = apex_y + along * uy - across * ux
            reach = y * math.tan(half_angle) - margin
            low, high = float(np.max(-reach - x)), float(np.min(reach - x))
            if low <= high:
                return dataclasses.replace(
                    self, apex_x=apex_x + min(max(0.0, low), high), apex_y=apex_y
                )
            apex_y += 2.0  # deeper, where the fan is wider
        raise ValueError('Argument "edv_ml" gives a ventricle wider than the sector')

    def lv_geometry(
        self, volume_ml: np.ndarray, systolic: np.ndarray, motion: np.ndarray
    ) -> LVGeometry:
        """Cavity per frame: the apex stays put while the base descends towards it."""
        half_length = self.half_length_ed * (1.0 - (1.0 - self.length_ratio_es) * systolic)
        shape = 4.0 / 3.0 * math.pi * (1.0 + self.egg_factor**2 / 5.0)
        half_width = np.sqrt(volume_ml * 1000.0 / (shape * half_length))
        return LVGeometry(
            apex_x_mm=self.apex_x + motion[:, 0],
            apex_y_mm=self.apex_y + motion[:, 1],
            half_width_mm=half_width,
            half_length_mm=half_length,
            axis_angle_rad=self.tilt_rad,
            egg_factor=self.egg_factor,
        )


def _probe_motion(times: np.ndarray, systolic: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Heart shift against the probe per frame (mm, x and y): breathing and hand jitter."""
    motion = np.zeros((len(times), 2))
    for amplitude, low_hz, high_hz in ((rng.uniform(0.5, 2.5), 0.15, 0.3), (0.4, 0.5, 1.5)):
        direction = rng.uniform(0.0, 2.0 * math.pi)
        wave = np.sin(
            2 * math.pi * rng.uniform(low_hz, high_hz) * times + rng.uniform(0, 2 * math.pi)
        )
        motion += amplitude * wave[:, None] * np.array([math.cos(direction), math.sin(direction)])
    motion[:, 1] -= rng.uniform(0.0, 1.5) * systolic  # the apex rises slightly in systole
    return motion


@dataclass(frozen=True, eq=False)
class _ScanGeometry:
    """Where the fan lies in the image and how beam samples map to its pixels."""

    apex_x: float
    apex_y: float
    depth_px: float
    mm_per_pixel: float
    half_angle: float
    x_mm: np.ndarray  # (beams, samples), lateral from the apex
    y_mm: np.ndarray  # (beams, samples), depth below the apex
    range_mm: np.ndarray  # (samples,)
    fan_index: np.ndarray  # flat pixel indices inside the fan
    near_index: np.ndarray  # flat beam-sample index of each fan pixel, and of its next beam
    far_index: np.ndarray
    far_weight: np.ndarray


@lru_cache(maxsize=16)
def _scan_geometry(
    rows: int, columns: int, header_rows: int, angle_deg: float, depth_mm: float
) -> _ScanGeometry:
    half_angle = math.radians(angle_deg) / 2.0
    available = rows - header_rows - _ECG_BAND_ROWS - 2 * _MARGIN_PX
    depth_px = min(available, (columns - 2 * _MARGIN_PX) / (2.0 * math.sin(half_angle)))
    if depth_px < 48:
        raise ValueError(f'Arguments "rows" and "columns" leave a fan only {depth_px:.0f} px deep')
    # A whole-pixel apex keeps it exact as the DICOM region's reference pixel.
    apex_x, apex_y = float(columns // 2), float(header_rows + _MARGIN_PX)
    mm_per_pixel = depth_mm / depth_px
    # About one sample per pixel along the beam and beams 2.6 px apart at the bottom of the fan.
    n_samples = math.ceil(depth_px / 1.1)
    n_beams = math.ceil(depth_px * 2.0 * half_angle / 2.6) + 1
    angles = np.linspace(-half_angle, half_angle, n_beams)
    range_mm = (np.arange(n_samples) + 0.5) * depth_mm / n_samples
    x_mm = (np.sin(angles)[:, None] * range_mm).astype(np.float32)
    y_mm = (np.cos(angles)[:, None] * range_mm).astype(np.float32)

    row, column = np.mgrid[0:rows, 0:columns]
    dx, dy = column - apex_x, row - apex_y
    radius = np.hypot(dx, dy)
    angle = np.arctan2(dx, dy)
    inside = (radius <= depth_px) & (np.abs(angle) <= half_angle) & (dy >= 0)
    beam = (angle[inside] + half_angle) / (2.0 * half_angle) * (n_beams - 1)
    near_beam = np.minimum(np.floor(beam).astype(np.int64), n_beams - 2)
    sample = np.minimum((radius[inside] / depth_px * n_samples).astype(np.int64), n_samples - 1)
    return _ScanGeometry(
        apex_x=apex_x,
        apex_y=apex_y,
        depth_px=float(depth_px),
        mm_per_pixel=float(mm_per_pixel),
        half_angle=half_angle,
        x_mm=x_mm,
        y_mm=y_mm,
        range_mm=range_mm.astype(np.float32),
        fan_index=np.flatnonzero(inside),
        near_index=near_beam * n_samples + sample,
        far_index=(near_beam + 1) * n_samples + sample,
        far_weight=(beam - near_beam).astype(np.float32),
    )


def _render_polar(
    scan: _ScanGeometry,
    heart: _Heart,
    geometry: LVGeometry,
    systolic: np.ndarray,
    inflow: np.ndarray,
    appearance: EchoAppearance,
    rng: np.random.Generator,
) -> np.ndarray:
    """Display levels (uint8) of every frame on the beam-by-sample grid."""

    def per_frame(values: np.ndarray | float) -> np.ndarray:
        return np.asarray(values, dtype=np.float32).reshape(-1, 1, 1)

    blur = appearance.edge_blur_mm

    def soft(
        radius2: np.ndarray, level: np.ndarray | float, scale: np.ndarray | float
    ) -> np.ndarray:
        # ~ 0.5 + signed distance inside the border / blur, for an ellipse of size ``scale``.
        value = (level - radius2) * (np.asarray(scale, dtype=np.float32) / (2.0 * blur)) + 0.5
        return np.clip(value, 0.0, 1.0, out=value)

    # p runs along the LV axis from its apex, q across it towards the lateral wall (image
    # right); the RV lies at q < 0 beyond the septum and the atria at p beyond the valves.
    ux, uy = geometry.axis
    p = (
        scan.x_mm * ux
        + scan.y_mm * uy
        - per_frame(geometry.apex_x_mm * ux + geometry.apex_y_mm * uy)
    )
    q = (
        scan.x_mm * uy
        - scan.y_mm * ux
        - per_frame(geometry.apex_x_mm * uy - geometry.apex_y_mm * ux)
    )
    a, b, s = (per_frame(v) for v in (geometry.half_width_mm, geometry.half_length_mm, systolic))
    thick = 1.0 + heart.thickening * s
    septum, lateral = heart.septum * thick, heart.lateral_wall * thick
    rv_a = heart.rv_half_width * (1.0 - heart.rv_shortening * s)

    centred = p - b
    egg = 1.0 + heart.egg_factor * centred / b
    lv_blood = soft((q / (a * egg)) ** 2 + (centred / b) ** 2, 1.0, a)
    # One envelope holds both ventricles; the cavities are cut out of it.
    septal_side = a + septum + 2.0 * rv_a + heart.rv_wall
    width = np.where(q > 0, a + lateral, septal_side) * egg
    # The envelope reaches past the apex by the apical wall but tapers into the annulus.
    half_length = np.where(centred > 0, 1.15 * b, b + heart.apical_wall * thick)
    r2_heart = (q / width) ** 2 + (centred / half_length) ** 2
    ventricles = soft(r2_heart, 1.0, a + lateral)
    pericardium = soft(r2_heart, (1.0 + 3.0 / (a + lateral)) ** 2, a + lateral) - ventricles
    pericardium *= q > -a  # the bright pericardial line shows along the lateral wall and apex

    mitral = b * (1.0 + heart.annulus)
    tricuspid = mitral - heart.tricuspid_offset
    rv_b = heart.rv_half_length - 0.8 * (1.0 + heart.annulus) * (heart.half_length_ed - b)
    rv_q, rv_p = -(a + septum + rv_a), tricuspid - 0.8 * rv_b
    r2_rv = ((q - rv_q) / rv_a) ** 2 + ((p - rv_p) / rv_b) ** 2
    rv_inner = (1.0 - heart.rv_wall / septal_side) ** 2
    rv_blood = np.minimum(soft(r2_rv, 1.0, rv_a), soft(r2_heart, rv_inner, septal_side))
    atrial = p >= np.where(q > -(a + septum / 2.0), mitral, tricuspid)

    growth = 1.0 + heart.atrial_growth * s
    la_a, la_b = heart.la_half_width * growth, heart.la_half_length * growth
    ra_a, ra_b = heart.ra_half_width * growth, heart.ra_half_length * growth
    ra_q = heart.la_offset - la_a - heart.atrial_septum - ra_a
    r2_la = ((q - heart.la_offset) / la_a) ** 2 + ((p - mitral - 0.7 * la_b) / la_b) ** 2
    r2_ra = ((q - ra_q) / ra_a) ** 2 + ((p - tricuspid - 0.7 * ra_b) / ra_b) ** 2
    wall = heart.atrial_wall
    atrial_blood = np.maximum(soft(r2_la, 1.0, la_a), soft(r2_ra, 1.0, ra_a)) * atrial
    atrial_tissue = np.maximum(
        soft(r2_la, (1.0 + wall / la_a) ** 2, la_a), soft(r2_ra, (1.0 + wall / ra_a) ** 2, ra_a)
    )
    tissue = np.where(atrial, atrial_tissue, ventricles)
    pericardium *= ~atrial
    blood = np.maximum(np.maximum(lv_blood, rv_blood), atrial_blood)

    background, myocardium, blood_level = _static_reflectivity(scan, appearance, rng)
    amplitude = background + (myocardium - background) * tissue
    amplitude += (_PERICARDIUM_LEVEL * myocardium - amplitude) * np.clip(pericardium, 0.0, 1.0)
    amplitude += (blood_level - amplitude) * blood
    _draw_leaflets(amplitude, p, q, heart, a, rv_q, rv_a, mitral, tricuspid, inflow, scan, geometry)
    return _log_compress(amplitude, scan, appearance, rng)


def _draw_leaflets(
    amplitude: np.ndarray,
    p: np.ndarray,
    q: np.ndarray,
    heart: _Heart,
    a: np.ndarray,
    rv_q: np.ndarray,
    rv_a: np.ndarray,
    mitral: np.ndarray,
    tricuspid: np.ndarray,
    inflow: np.ndarray,
    scan: _ScanGeometry,
    geometry: LVGeometry,
) -> None:
    """Mitral and tricuspid leaflets: tented towards the apex when shut, open with inflow."""
    mitral_half = a * (1.0 + heart.egg_factor * heart.annulus) * math.sqrt(1 - heart.annulus**2)
    # (hinge q, hinge p, length, +1 when the leaflet points towards +q); q and p per frame.
    leaflets = (
        (-mitral_half, mitral, 1.05 * mitral_half, 1.0),
        (mitral_half, mitral, 0.85 * mitral_half, -1.0),
        (rv_q - 0.6 * rv_a, tricuspid, 0.6 * rv_a, 1.0),
        (rv_q + 0.6 * rv_a, tricuspid, 0.5 * rv_a, -1.0),
    )
    angle = np.radians(20.0 + 55.0 * inflow).astype(np.float32).reshape(-1, 1, 1)
    along_q, along_p = np.cos(angle), -np.sin(angle)

    # Draw only inside the beams and samples that the leaflets can reach.
    ux, uy = geometry.axis
    apex_x, apex_y = geometry.apex_x_mm, geometry.apex_y_mm
    reach = 3.0 + max(float(np.max(length)) for _, _, length, _ in leaflets)
    xs, ys = [], []
    for hinge_q, hinge_p, _, _ in leaflets:
        hq, hp = np.ravel(hinge_q * np.ones_like(a)), np.ravel(hinge_p * np.ones_like(a))
        xs.append(apex_x + hp * ux + hq * uy)
        ys.append(apex_y + hp * uy - hq * ux)
    x_low, x_high = float(np.min(xs)) - reach, float(np.max(xs)) + reach
    y_low, y_high = max(float(np.min(ys)) - reach, 0.0), float(np.max(ys)) + reach
    corners = [(x, y) for x in (x_low, x_high) for y in (y_low, y_high)]
    n_beams, n_samples = scan.x_mm.shape
    angles = [math.atan2(x, y) for x, y in corners]
    to_beam = (n_beams - 1) / (2.0 * scan.half_angle)
    first_beam = max(0, math.floor((min(angles) + scan.half_angle) * to_beam))
    last_beam = min(n_beams, math.ceil((max(angles) + scan.half_angle) * to_beam) + 1)
    to_sample = n_samples / float(scan.range_mm[-1] + scan.range_mm[0])
    first_sample = max(0, math.floor(y_low * to_sample))
    last_sample = min(n_samples, math.ceil(max(math.hypot(x, y) for x, y in corners) * to_sample))
    if first_beam >= last_beam or first_sample >= last_sample:
        return
    window = np.s_[:, first_beam:last_beam, first_sample:last_sample]
    p_window, q_window = p[window], q[window]
    target = amplitude[window]
    for hinge_q, hinge_p, length, side in leaflets:
        rel_q, rel_p = q_window - hinge_q, p_window - hinge_p
        direction_q = side * along_q
        t = np.clip(rel_q * direction_q + rel_p * along_p, 0.0, length)
        distance2 = (rel_q - t * direction_q) ** 2 + (rel_p - t * along_p) ** 2
        np.maximum(target, _LEAFLET_LEVEL * np.clip(1.0 - distance2 / 2.0, 0.0, 1.0), out=target)


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, int], coarse: tuple[int, int]
) -> np.ndarray:
    """A unit-variance random field over ``coarse`` cells, bilinearly upsampled to ``shape``."""
    field = rng.standard_normal(coarse)
    for axis, size in enumerate(shape):
        position = np.linspace(0.0, coarse[axis] - 1.0, size)
        low = np.minimum(position.astype(np.int64), coarse[axis] - 2)
        weight = (position - low).reshape([-1 if i == axis else 1 for i in range(2)])
        field = (
            np.take(field, low, axis=axis) * (1 - weight)
            + np.take(field, low + 1, axis=axis) * weight
        )
    return field.astype(np.float32)


def _static_reflectivity(
    scan: _ScanGeometry, appearance: EchoAppearance, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background, myocardium and blood amplitude on the beam grid; fixed for the loop."""
    shape = scan.x_mm.shape
    depth = scan.range_mm[None, :]
    lateral = np.abs(np.arctan2(scan.x_mm, scan.y_mm)) / scan.half_angle
    chest_wall = 0.9 * np.exp(-depth / rng.uniform(6.0, 12.0))
    lung = 1.0 - 0.6 * lateral**4
    background = 0.07 * np.exp(0.45 * _smooth_field(rng, shape, (6, 9))) * lung + chest_wall
    # Walls parallel to the beams reflect weakly: dim a band of beams, usually the lateral wall.
    dropout_centre = rng.uniform(0.1, 0.7) * scan.half_angle
    beam_angle = np.arctan2(scan.x_mm[:, -1], scan.y_mm[:, -1])[:, None]
    dropout = 1.0 - rng.uniform(0.0, 0.65) * np.exp(-(((beam_angle - dropout_centre) / 0.12) ** 2))
    myocardium = 0.55 * np.exp(0.25 * _smooth_field(rng, shape, (10, 14))) * dropout
    haze = appearance.near_field_clutter * 40.0 * np.exp(-depth / rng.uniform(15.0, 30.0))
    blood = _BLOOD_LEVEL * (1.0 + haze) * np.exp(0.3 * _smooth_field(rng, shape, (8, 12)))
    return tuple(np.asarray(v, dtype=np.float32) for v in (background, myocardium, blood))  # type: ignore[return-value]


def _log_compress(
    amplitude: np.ndarray, scan: _ScanGeometry, appearance: EchoAppearance, rng: np.random.Generator
) -> np.ndarray:
    """Speckle, noise, attenuation and the log grey map, as uint8 display levels."""
    shape = amplitude.shape
    fresh = rng.standard_exponential(shape, dtype=np.float32)
    frozen = rng.standard_exponential(shape[1:], dtype=np.float32)
    mix = appearance.speckle_decorrelation
    intensity = fresh * mix + frozen * (1.0 - mix)
    # A short axial pulse correlates neighbouring samples.
    smoothed = intensity * 0.5
    smoothed[..., 1:] += intensity[..., :-1] * 0.25
    smoothed[..., :-1] += intensity[..., 1:] * 0.25
    strength = appearance.speckle_strength
    amplitude *= np.sqrt(smoothed) * (strength / 0.9) + (1.0 - strength)
    amplitude += appearance.noise_level * np.sqrt(fresh[::-1])
    attenuation = 10.0 ** (appearance.attenuation_db_per_cm * scan.range_mm / 200.0)
    amplitude *= attenuation.astype(np.float32)
    scale = 255.0 / appearance.dynamic_range_db
    offset = (appearance.gain_db + appearance.dynamic_range_db - _HEADROOM_DB) * scale
    levels = np.log10(np.maximum(amplitude, 1e-6, out=amplitude), out=amplitude)
    levels *= 20.0 * scale
    levels += offset
    stored = np.clip(levels, 0.0, 255.0, out=levels).astype(np.uint8)
    grey_map = 255.0 * (np.arange(256) / 255.0) ** appearance.gamma
    return np.asarray(grey_map.astype(np.uint8)[stored])


def _compose(
    levels: np.ndarray,
    scan: _ScanGeometry,
    header: np.ndarray,
    appearance: EchoAppearance,
    rows: int,
    columns: int,
) -> np.ndarray:
    """Scan-convert the beam grid into the fan, tint it, and burn in the header text."""
    n_frames = levels.shape[0]
    flat = levels.reshape(n_frames, -1)
    near = flat[:, scan.near_index].astype(np.float32)
    far = flat[:, scan.far_index]
    near += (far - near) * scan.far_weight + 0.5
    flat_grey = np.zeros((n_frames, rows * columns), dtype=np.uint8)
    flat_grey[:, scan.fan_index] = near.astype(np.uint8)
    grey = flat_grey.reshape(n_frames, rows, columns)
    frames = np.empty((n_frames, rows, columns, 3), dtype=np.uint8)
    for channel, weight in enumerate(appearance.tint):
        if weight == 1.0:
            frames[..., channel] = grey
        else:
            lookup = np.rint(np.arange(256) * weight).astype(np.uint8)
            frames[..., channel] = lookup[grey]
    band = frames[:, : header.shape[0]]
    np.maximum(band, header[None, :, :, None], out=band)
    return frames


def _header_band(study: SyntheticStudy, columns: int) -> tuple[np.ndarray, tuple[TextBox, ...]]:
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
    usable = columns - 2 * _MARGIN_PX
    side_by_side = all(
        font.getlength(lt) + font.getlength(rt) + 12 <= usable
        for lt, rt in zip(left, right, strict=True)
    )
    # Each placement: text, x, line; right-aligned strings share lines with the left ones.
    if side_by_side:
        placements = [(text, float(_MARGIN_PX), line) for line, text in enumerate(left)] + [
            (text, columns - _MARGIN_PX - font.getlength(text), line)
            for line, text in enumerate(right)
        ]
        n_lines = 2
    else:
        placements = [(text, float(_MARGIN_PX), line) for line, text in enumerate(left + right)]
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


def _draw_ecg(frames: np.ndarray, rhythm: _Rhythm, cycle: _CardiacCycle, times: np.ndarray) -> None:
    """A green ECG strip over the whole loop under the fan, with a cursor at each frame's time."""
    from PIL import Image, ImageDraw

    rows, columns = frames.shape[1:3]
    span = max(float(times[-1]), 1e-6)
    strip_times = np.linspace(0.0, span, columns)
    signal = _ecg(rhythm.cycles(strip_times), rhythm.rr_s, cycle.end_systole)
    baseline, height = _ECG_BAND_ROWS - 7, _ECG_BAND_ROWS - 10
    points = [(float(x), float(baseline - height * v)) for x, v in enumerate(signal)]
    image = Image.new("L", (columns, _ECG_BAND_ROWS), 0)
    ImageDraw.Draw(image).line(points, fill=255, width=1)
    trace = np.asarray(image) > 0
    band = frames[:, rows - _ECG_BAND_ROWS :]
    band[:, trace] = _ECG_GREEN
    cursor = np.rint(times / span * (columns - 1)).astype(np.int64)
    for frame, column in enumerate(cursor):
        band[frame, :, column] = 200
