"""Stack 2D DICOM frames into one regular 3D lattice, or say why they do not form one.

Pure geometry on numbers already read from the headers: no pydicom, no pixels.
Coordinates are DICOM patient coordinates (LPS millimetres). ImagePositionPatient is
the centre of a frame's first pixel; the first ImageOrientationPatient triplet is the
direction in which the column index grows, the second the one in which the row index
grows, and the slice normal is their cross product.

Voxel index convention of the lattice: ``(column, row, slice)``, with slices in
ascending position along the normal. That is the order ITK, dcm2niix and
``imaging.synthetic.records.MRVolume`` use, so the affines compare directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from imaging.errors import SeriesAssemblyError

# Positions agree when they differ by at most this (mm), or by RELATIVE_TOLERANCE of the
# slice spacing where that is larger: DS strings and scanner rounding leave ~1e-4 mm.
POSITION_TOLERANCE_MM = 0.01
RELATIVE_TOLERANCE = 0.01
# Direction cosines agree when every component differs by at most this.
ORIENTATION_TOLERANCE = 1e-4
# A direction is a unit vector, and the two are orthogonal, within this.
UNIT_TOLERANCE = 1e-3
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class PlaneGeometry:
    """Where one 2D frame lies in the patient, as its DICOM header says."""

    name: str  # the file (and frame) for error messages
    position: np.ndarray  # (3,) ImagePositionPatient, LPS mm
    orientation: np.ndarray  # (6,) ImageOrientationPatient: row then column direction
    pixel_spacing: tuple[float, float]  # (between rows, between columns) mm
    rows: int
    columns: int


@dataclass(frozen=True)
class StackGeometry:
    """A regular lattice: which frame is slice ``k`` and where every voxel lies."""

    order: np.ndarray  # order[k] indexes the plane that is slice k
    affine_lps: np.ndarray  # 4x4: voxel index (column, row, slice) -> LPS mm
    shape: tuple[int, int, int]  # (columns, rows, slices)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) along (column, row, slice) index."""
        sizes = np.linalg.norm(self.affine_lps[:3, :3], axis=0)
        return (float(sizes[0]), float(sizes[1]), float(sizes[2]))

    def affine_ras(self) -> np.ndarray:
        """The same lattice in RAS millimetres (the NIfTI, nibabel and MONAI convention)."""
        return LPS_TO_RAS @ self.affine_lps


def stack_geometry(planes: Sequence[PlaneGeometry], source: str) -> StackGeometry:
    """Order ``planes`` along their normal and check that they form one regular volume.

    The slice order comes from the positions projected on the normal, never from
    file names or instance numbers; the slice spacing comes from the positions, not
    from SliceThickness. Oblique orientations are kept as they are.

    Args:
        planes: One entry per frame, in any order.
        source: Names the series in errors (its SeriesInstanceUID or folder).

    Raises:
        SeriesAssemblyError: Fewer than two frames; frames of different size, pixel
            spacing or orientation; an invalid orientation; two frames at one
            position; non-uniform spacing (a missing slice, a varying step); or
            positions that drift off the normal (gantry tilt, a sheared stack).
    """
    if len(planes) < 2:
        # One position gives no slice spacing, and a 3D classifier needs a volume.
        raise SeriesAssemblyError(source, f"{len(planes)} slice(s); a volume needs at least 2")
    first = planes[0]
    _check_same_grid(planes, source)
    row_direction, column_direction = _directions(first, source)
    normal = np.cross(row_direction, column_direction)

    positions = np.stack([plane.position for plane in planes])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along = along[order]
    positions = positions[order]
    names = [planes[int(index)].name for index in order]

    steps = np.diff(along)
    # The median step is the spacing the scanner meant; one missing slice cannot move it.
    typical = float(np.median(steps))
    tolerance = max(POSITION_TOLERANCE_MM, RELATIVE_TOLERANCE * typical)
    for k, step in enumerate(steps):
        if step <= tolerance:
            raise SeriesAssemblyError(
                source,
                f"duplicate slice position {along[k]:.3f} mm along the normal: "
                f"{names[k]} and {names[k + 1]}",
            )
    worst = int(np.argmax(np.abs(steps - typical)))
    if abs(steps[worst] - typical) > tolerance:
        raise SeriesAssemblyError(
            source,
            f"non-uniform slice spacing: {steps[worst]:.3f} mm between {names[worst]} and "
            f"{names[worst + 1]}, {typical:.3f} mm between most slices (a missing slice?)",
        )
    spacing = float(along[-1] - along[0]) / (len(planes) - 1)
    # Steps each within tolerance can still add up (a slowly varying spacing): every
    # slice must lie on the lattice the affine will describe.
    off_lattice = np.abs(along - along[0] - spacing * np.arange(len(planes)))
    worst = int(np.argmax(off_lattice))
    if off_lattice[worst] > tolerance:
        raise SeriesAssemblyError(
            source,
            f"slice spacing varies: {names[worst]} lies {off_lattice[worst]:.3f} mm from a "
            f"regular grid of {spacing:.3f} mm steps",
        )

    # Each slice must sit where the first one, moved along the normal, would be.
    off_normal = positions - positions[0] - np.outer(along - along[0], normal)
    drift = np.linalg.norm(off_normal, axis=1)
    worst = int(np.argmax(drift))
    if drift[worst] > tolerance:
        raise SeriesAssemblyError(
            source,
            f"slice positions drift {drift[worst]:.3f} mm off the slice normal at "
            f"{names[worst]} (gantry tilt or a sheared stack)",
        )

    affine = np.eye(4)
    affine[:3, 0] = row_direction * first.pixel_spacing[1]
    affine[:3, 1] = column_direction * first.pixel_spacing[0]
    affine[:3, 2] = normal * spacing
    affine[:3, 3] = positions[0]
    return StackGeometry(
        order=order, affine_lps=affine, shape=(first.columns, first.rows, len(planes))
    )


def _check_same_grid(planes: Sequence[PlaneGeometry], source: str) -> None:
    """Every frame has the first frame's size, pixel spacing and orientation."""
    first = planes[0]
    for plane in planes[1:]:
        if (plane.rows, plane.columns) != (first.rows, first.columns):
            raise SeriesAssemblyError(
                source,
                f"mixed image sizes: {first.name} is {first.rows}x{first.columns}, "
                f"{plane.name} is {plane.rows}x{plane.columns} (rows x columns)",
            )
        if not np.allclose(plane.pixel_spacing, first.pixel_spacing, rtol=0.0, atol=1e-4):
            raise SeriesAssemblyError(
                source,
                f"mixed pixel spacing: {first.name} has {list(first.pixel_spacing)} mm, "
                f"{plane.name} has {list(plane.pixel_spacing)} mm",
            )
        if np.abs(plane.orientation - first.orientation).max() > ORIENTATION_TOLERANCE:
            raise SeriesAssemblyError(
                source,
                f"mixed orientations: {first.name} has ImageOrientationPatient "
                f"{_cosines(first.orientation)}, {plane.name} has {_cosines(plane.orientation)}",
            )


def _directions(plane: PlaneGeometry, source: str) -> tuple[np.ndarray, np.ndarray]:
    """The row and column direction cosines, checked to be orthogonal unit vectors."""
    row_direction, column_direction = plane.orientation[:3], plane.orientation[3:]
    norms = np.linalg.norm(row_direction), np.linalg.norm(column_direction)
    if (
        max(abs(norms[0] - 1.0), abs(norms[1] - 1.0)) > UNIT_TOLERANCE
        or abs(float(np.dot(row_direction, column_direction))) > UNIT_TOLERANCE
    ):
        raise SeriesAssemblyError(
            source,
            f"ImageOrientationPatient {_cosines(plane.orientation)} of {plane.name} is not "
            "two orthogonal unit vectors",
        )
    # Normalising removes the DS rounding, so the affine's columns are exactly the spacings.
    return row_direction / norms[0], column_direction / norms[1]


def _cosines(orientation: np.ndarray) -> list[float]:
    return [round(float(value), 6) for value in orientation]
