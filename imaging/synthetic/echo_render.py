"""Rendering of the synthetic A4C heart into ultrasound display levels.

The scan geometry places the sector fan in the image and maps beam samples to
pixels; the heart is drawn on that beam-by-sample (polar) grid with blurred
borders, valve leaflets and static reflectivity, speckled and log-compressed
into grey levels, and finally scan-converted, tinted and combined with the
header band. The machine look that drives all of this is ``EchoAppearance``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from imaging.synthetic.echo_heart import Heart, LVGeometry
from imaging.synthetic.echo_overlays import ECG_BAND_ROWS, MARGIN_PX

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
            check_range(name, getattr(self, name), low, high)
        if len(self.tint) != 3 or not all(0.0 <= c <= 1.0 for c in self.tint):
            raise ValueError(f'Argument "tint" must be three values in [0, 1], got {self.tint}')


def check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f'Argument "{name}" must lie in [{low}, {high}], got {value}')


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
def scan_geometry(
    rows: int, columns: int, header_rows: int, angle_deg: float, depth_mm: float
) -> _ScanGeometry:
    half_angle = math.radians(angle_deg) / 2.0
    available = rows - header_rows - ECG_BAND_ROWS - 2 * MARGIN_PX
    depth_px = min(available, (columns - 2 * MARGIN_PX) / (2.0 * math.sin(half_angle)))
    if depth_px < 48:
        raise ValueError(f'Arguments "rows" and "columns" leave a fan only {depth_px:.0f} px deep')
    # A whole-pixel apex keeps it exact as the DICOM region's reference pixel.
    apex_x, apex_y = float(columns // 2), float(header_rows + MARGIN_PX)
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


def render_polar(
    scan: _ScanGeometry,
    heart: Heart,
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
    heart: Heart,
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


def compose(
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
