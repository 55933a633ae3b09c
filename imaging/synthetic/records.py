"""Plain records shared by the sample-archive generators.

Geometry follows DICOM: patient coordinates are LPS millimetres, a slice is
``rows x columns`` pixels, ``row_direction`` is the direction in which the
column index grows (DICOM's first ImageOrientationPatient triplet) and
``column_direction`` the one in which the row index grows (the second triplet).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import date

import numpy as np


def deterministic_uid(*parts: object) -> str:
    """Return a DICOM UID under the UUID-derived root ``2.25`` that depends only on ``parts``.

    pydicom's ``generate_uid`` ignores its entropy sources under the ``2.25`` root,
    so seeded archives need their own derivation to be reproducible.
    """
    digest = hashlib.sha256("|".join(str(part) for part in parts).encode()).digest()
    derived = uuid.UUID(bytes=digest[:16], version=4)
    return f"2.25.{derived.int}"


@dataclass(frozen=True)
class Site:
    """An imaging site: the institution and the equipment its studies come from."""

    site_id: str
    institution_name: str
    manufacturer: str
    manufacturer_model_name: str
    station_name: str


@dataclass(frozen=True)
class SyntheticPatient:
    """A synthetic identity. Every field is invented; none belongs to a real person."""

    patient_id: str
    patient_name: str  # DICOM PN form, "Family^Given"
    birth_date: date
    sex: str  # "M" or "F"

    def age_at(self, when: date) -> int:
        """Age in whole years on ``when``."""
        before_birthday = (when.month, when.day) < (self.birth_date.month, self.birth_date.day)
        return when.year - self.birth_date.year - int(before_birthday)


@dataclass(frozen=True)
class SyntheticStudy:
    """One study of one patient at one site, with the identifiers a PACS would hold."""

    patient: SyntheticPatient
    site: Site
    study_instance_uid: str
    accession_number: str
    study_date: date
    study_time: str  # DICOM TM, "HHMMSS"
    referring_physician_name: str
    study_description: str

    @property
    def patient_age(self) -> int:
        return self.patient.age_at(self.study_date)


@dataclass
class MRVolume:
    """A reconstructed MR series in DICOM geometry, before it is written to files.

    ``pixels`` has shape ``(slices, rows, columns)`` in scanner intensity units
    (float); slice ``k`` lies at ``slice_origins[k]`` (ImagePositionPatient of its
    first pixel). Slices are ordered along ``slice_direction`` =
    ``row_direction x column_direction``.
    """

    pixels: np.ndarray
    row_direction: np.ndarray
    column_direction: np.ndarray
    slice_origins: np.ndarray  # (slices, 3) LPS mm
    pixel_spacing: tuple[float, float]  # (between rows, between columns) mm
    slice_thickness: float
    acquisition: dict[str, float | str] = field(default_factory=dict)

    @property
    def slice_direction(self) -> np.ndarray:
        return np.cross(self.row_direction, self.column_direction)

    @property
    def slice_spacing(self) -> float:
        if len(self.slice_origins) < 2:
            return self.slice_thickness
        return float(np.dot(self.slice_origins[1] - self.slice_origins[0], self.slice_direction))

    def affine_lps(self) -> np.ndarray:
        """4x4 map from voxel index (column, row, slice) to LPS millimetres."""
        affine = np.eye(4)
        affine[:3, 0] = self.row_direction * self.pixel_spacing[1]
        affine[:3, 1] = self.column_direction * self.pixel_spacing[0]
        affine[:3, 2] = self.slice_direction * self.slice_spacing
        affine[:3, 3] = self.slice_origins[0]
        return affine

    def affine_ras(self) -> np.ndarray:
        """The NIfTI affine: voxel index (column, row, slice) to RAS millimetres."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.affine_lps()
