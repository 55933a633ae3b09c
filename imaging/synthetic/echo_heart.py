"""Anatomy and timing of the synthetic heart, in millimetres and seconds.

The rhythm maps time to cardiac cycles with a breathing-driven rate swing, the
cardiac cycle gives the left-ventricular volume and valve inflow over one beat,
and the heart holds per-case anatomy (ventricles, atria, walls) placed inside
the sector; from these comes the LV cavity geometry of every frame, together
with the probe motion from breathing and hand jitter.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np


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


@dataclass(frozen=True)
class Rhythm:
    """Sinus rhythm whose rate swings a few percent with breathing."""

    rr_s: float
    start_cycles: float
    variability: float
    breathing_hz: float
    breathing_phase: float

    @classmethod
    def sample(cls, rr_s: float, rng: np.random.Generator) -> Rhythm:
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
class CardiacCycle:
    """LV volume over one cycle sampled on ``grid`` (fractions of the cycle, 0 = R wave)."""

    grid: np.ndarray
    volume_ml: np.ndarray
    inflow: np.ndarray  # how far the atrioventricular valves are open, 0..1
    end_systole: float  # end of ejection, as a fraction of the cycle

    @classmethod
    def sample(
        cls, rr_s: float, edv_ml: float, esv_ml: float, rng: np.random.Generator
    ) -> CardiacCycle:
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
class Heart:
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
    def sample(cls, ejection_fraction: float, edv_ml: float, rng: np.random.Generator) -> Heart:
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

    def placed_in_sector(self, half_angle: float) -> Heart:
        """The heart moved, as a sonographer would, so the whole LV and its walls are in the fan."""
        turn = np.linspace(0.0, 2.0 * math.pi, 72, endpoint=False)
        along = self.half_length_ed + (self.half_length_ed + self.apical_wall) * np.cos(turn)
        across = np.where(
            np.sin(turn) > 0,
            self.half_width_ed + self.lateral_wall,
            self.half_width_ed + self.septum,
        ) * np.sin(turn)
        ux, uy = math.sin(self.tilt_rad), math.cos(self.tilt_rad)
        # Room for the breathing and jitter of ``probe_motion``.
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


def probe_motion(times: np.ndarray, systolic: np.ndarray, rng: np.random.Generator) -> np.ndarray:
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
