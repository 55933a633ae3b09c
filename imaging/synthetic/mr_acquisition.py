"""Acquire a synthetic brain the way a site's scanner would: grid, orientation, artefacts.

Site effects are what make multi-site data hard (and a pooled random split
optimistic): each protocol has its own orientation (including oblique,
AC-PC-like tilts), voxel size, slice thickness, intensity scale, T1 contrast,
bias field and noise level. The subject's head also sits a little differently
in every scanner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from imaging.synthetic.brain import (
    BrainPhenotype,
    HeadTemplate,
    sample_head,
    subject_to_template,
    template_sampling_grid,
)
from imaging.synthetic.records import MRVolume

Orientation = Literal["sagittal", "axial", "coronal", "oblique_axial"]

# DICOM (LPS) row and column directions of the standard acquisition planes.
PLANE_DIRECTIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "oblique_axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
}
# Field of view of a head acquisition (mm): in-plane square and extent across slices.
HEAD_FIELD_OF_VIEW = {"sagittal": 164.0, "coronal": 192.0, "axial": 168.0, "oblique_axial": 168.0}
IN_PLANE_FIELD_OF_VIEW = 224.0


@dataclass(frozen=True)
class MRProtocol:
    """A site's 3D T1 protocol and its scanner's signature."""

    orientation: Orientation
    pixel_spacing_mm: float
    slice_thickness_mm: float
    intensity_scale: float  # scanner units for template intensity 1.0
    contrast_gamma: float  # T1 contrast differences between sequences and vendors
    bias_field_strength: float  # peak log-amplitude of the smooth multiplicative field
    noise_fraction: float  # Rician noise sigma relative to white matter
    oblique_tilt_deg: float = 0.0  # rotation about left-right (AC-PC-like) for oblique_axial
    repetition_time_ms: float = 2300.0
    echo_time_ms: float = 2.98
    inversion_time_ms: float = 900.0
    flip_angle_deg: float = 9.0
    magnetic_field_strength_t: float = 3.0
    sequence_name: str = "tfl3d1_16ns"
    series_description: str = "T1 MPRAGE"


def rotation_matrix(rx_deg: float, ry_deg: float, rz_deg: float) -> np.ndarray:
    """Rotation about x, then y, then z (degrees), as a 3x3 matrix."""
    rx, ry, rz = np.deg2rad([rx_deg, ry_deg, rz_deg])
    about_x = np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]])
    about_y = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
    about_z = np.array([[np.cos(rz), -np.sin(rz), 0], [np.sin(rz), np.cos(rz), 0], [0, 0, 1]])
    return np.asarray(about_z @ about_y @ about_x)


def acquisition_grid(protocol: MRProtocol, rng: np.random.Generator) -> MRVolume:
    """An empty volume laid out as the protocol acquires it, centred near the head."""
    row_direction, column_direction = (np.array(v) for v in PLANE_DIRECTIONS[protocol.orientation])
    if protocol.orientation == "oblique_axial":
        tilt = rotation_matrix(protocol.oblique_tilt_deg, 0.0, rng.uniform(-4.0, 4.0))
        row_direction, column_direction = tilt @ row_direction, tilt @ column_direction
    slice_direction = np.cross(row_direction, column_direction)

    matrix = round(IN_PLANE_FIELD_OF_VIEW / protocol.pixel_spacing_mm)
    slices = round(HEAD_FIELD_OF_VIEW[protocol.orientation] / protocol.slice_thickness_mm)
    # The centre of the field of view in LPS; the head's centre sits about 20 mm superior
    # of the template origin, and technologists centre it within a few millimetres.
    centre = np.array([0.0, 10.0, 20.0]) + rng.normal(0.0, 3.0, size=3)
    first_pixel = (
        centre
        - row_direction * protocol.pixel_spacing_mm * (matrix - 1) / 2
        - column_direction * protocol.pixel_spacing_mm * (matrix - 1) / 2
        - slice_direction * protocol.slice_thickness_mm * (slices - 1) / 2
    )
    slice_origins = first_pixel + np.outer(np.arange(slices), slice_direction) * (
        protocol.slice_thickness_mm
    )
    return MRVolume(
        pixels=np.zeros((slices, matrix, matrix), dtype=np.float32),
        row_direction=row_direction,
        column_direction=column_direction,
        slice_origins=slice_origins,
        pixel_spacing=(protocol.pixel_spacing_mm, protocol.pixel_spacing_mm),
        slice_thickness=protocol.slice_thickness_mm,
        acquisition={
            "repetition_time_ms": protocol.repetition_time_ms,
            "echo_time_ms": protocol.echo_time_ms,
            "inversion_time_ms": protocol.inversion_time_ms,
            "flip_angle_deg": protocol.flip_angle_deg,
            "magnetic_field_strength_t": protocol.magnetic_field_strength_t,
            "sequence_name": protocol.sequence_name,
            "series_description": f"{protocol.series_description} {protocol.orientation.upper()}",
        },
    )


def voxel_positions_lps(volume: MRVolume, step: int = 1) -> np.ndarray:
    """LPS position (mm) of voxel centres, shape (slices, rows, columns, 3).

    With ``step`` > 1, a coarse lattice of about every ``step``-th voxel that
    still includes the first and last voxel of each axis (for interpolation).
    """
    shape = volume.pixels.shape
    slice_index, row_index, column_index = (
        np.linspace(0.0, size - 1.0, max(2, -(-(size - 1) // step) + 1)) for size in shape
    )
    slice_step = volume.slice_direction * volume.slice_spacing
    row_step = volume.column_direction * volume.pixel_spacing[0]
    column_step = volume.row_direction * volume.pixel_spacing[1]
    return (
        volume.slice_origins[0]
        + slice_index[:, None, None, None] * slice_step
        + row_index[None, :, None, None] * row_step
        + column_index[None, None, :, None] * column_step
    ).astype(np.float32)


def acquire_mr(
    phenotype: BrainPhenotype,
    protocol: MRProtocol,
    template: HeadTemplate,
    rng: np.random.Generator,
) -> MRVolume:
    """Render a subject through a site's protocol: head pose, slice profile, bias, noise."""
    import torch
    from scipy import ndimage

    volume = acquisition_grid(protocol, rng)
    # The head's pose in the scanner: a few degrees of nod and turn, a few mm of shift.
    pose = rotation_matrix(*rng.normal(0.0, [5.0, 2.5, 2.5])).astype(np.float32)
    head_centre_lps = np.array([0.0, 10.0, 20.0]) + rng.normal(0.0, [2.0, 4.0, 4.0])
    # The map from scanner to template is smooth, so it is computed on a coarse
    # lattice and interpolated: rendering then costs one sampling pass per voxel.
    coarse = voxel_positions_lps(volume, step=4)
    ras_offsets = (coarse - head_centre_lps) * np.array([-1.0, -1.0, 1.0], dtype=np.float32)
    # Subject coordinates are head-centred RAS with the template's origin convention.
    subject = ras_offsets @ pose + np.array([0.0, -10.0, 20.0], np.float32)
    mni = subject_to_template(subject.reshape(-1, 3), phenotype).reshape(subject.shape)
    coarse_grid = torch.from_numpy(template_sampling_grid(mni, template))
    grid = torch.nn.functional.interpolate(
        coarse_grid.permute(3, 0, 1, 2)[None],
        size=volume.pixels.shape,
        mode="trilinear",
        align_corners=True,
    )[0].permute(1, 2, 3, 0)
    t1 = sample_head(grid.numpy(), phenotype, template)

    # Slices thicker than the in-plane pixels average more tissue across the slice.
    through_plane = max(0.4, 0.35 * protocol.slice_thickness_mm / protocol.pixel_spacing_mm)
    t1 = ndimage.gaussian_filter(t1, sigma=(through_plane, 0.45, 0.45), truncate=2.5)
    signal = np.power(np.clip(t1, 0.0, None), np.float32(protocol.contrast_gamma))

    normalised = (coarse - head_centre_lps.astype(np.float32)) / np.float32(100.0)
    coefficients = rng.normal(0.0, 1.0, size=(3, 2)).astype(np.float32)
    log_bias = normalised @ coefficients[:, 0] + (normalised**2) @ coefficients[:, 1] * 0.5
    log_bias *= protocol.bias_field_strength / max(float(np.abs(log_bias).max()), 1e-6)
    bias = torch.nn.functional.interpolate(
        torch.from_numpy(np.exp(log_bias))[None, None],
        size=volume.pixels.shape,
        mode="trilinear",
        align_corners=True,
    )[0, 0].numpy()
    signal = signal * bias

    sigma = np.float32(protocol.noise_fraction)
    real = signal + sigma * rng.standard_normal(size=signal.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(size=signal.shape, dtype=np.float32)
    magnitude = np.sqrt(real**2 + imaginary**2)
    volume.pixels = magnitude * np.float32(protocol.intensity_scale)
    return volume
