"""Builders of the synthetic sites, patients, studies, MR volumes and echo loops tests share.

Every builder takes keyword overrides, so a test names only what it relies on. The
defaults are an MR study (:func:`make_study`) and an echo study (:func:`make_echo_study`);
some tests assert their values (burned-in header text, Patient ID, Station Name).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import numpy as np

from imaging.synthetic.echo_cine import CineLoop, EchoAppearance, synthesize_a4c_cine
from imaging.synthetic.records import (
    MRVolume,
    Site,
    SyntheticPatient,
    SyntheticStudy,
    deterministic_uid,
)

# A slice plane as (row direction, column direction), DICOM LPS unit vectors.
Plane = tuple[np.ndarray, np.ndarray]

AXIS_ALIGNED_PLANES: dict[str, Plane] = {
    "axial": (np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])),
    "sagittal": (np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])),
    "coronal": (np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, -1.0])),
}

# A patient whose name and ID are long enough to wrap the header text of a narrow loop.
AGNES = SyntheticPatient("MMDX000042", "Abernathy^Agnes", date(1959, 4, 2), "F")


def make_site(
    *,
    site_id: str = "site-a",
    institution_name: str = "Synthetic General",
    manufacturer: str = "SIEMENS",
    manufacturer_model_name: str = "Prisma",
    station_name: str = "MRC40123",
) -> Site:
    """An imaging site; the defaults are an MR scanner."""
    return Site(site_id, institution_name, manufacturer, manufacturer_model_name, station_name)


def make_patient(
    *,
    patient_id: str = "SYN0001",
    patient_name: str = "Synthetic^Jane",
    birth_date: date = date(1953, 5, 2),
    sex: str = "F",
) -> SyntheticPatient:
    """A synthetic patient."""
    return SyntheticPatient(patient_id, patient_name, birth_date, sex)


def make_study(
    *,
    patient: SyntheticPatient | None = None,
    site: Site | None = None,
    study_instance_uid: str | None = None,
    accession_number: str = "ACC0001",
    study_date: date = date(2024, 6, 4),
    study_time: str = "101500",
    referring_physician_name: str = "Referrer^Rita",
    study_description: str = "MRI BRAIN",
) -> SyntheticStudy:
    """A study; the defaults are an MR brain study of :func:`make_patient` at :func:`make_site`."""
    return SyntheticStudy(
        patient=patient or make_patient(),
        site=site or make_site(),
        study_instance_uid=study_instance_uid or deterministic_uid("test-study"),
        accession_number=accession_number,
        study_date=study_date,
        study_time=study_time,
        referring_physician_name=referring_physician_name,
        study_description=study_description,
    )


def make_echo_study(
    *,
    patient: SyntheticPatient | None = None,
    institution_name: str = "St Elsewhere",
    study_instance_uid: str = "2.25.1234567890",
    study_date: date = date(2024, 3, 5),
) -> SyntheticStudy:
    """A transthoracic echo study.

    The default patient and institution are short, so that the burned-in header text
    fits two lines of a 160-column loop; :data:`AGNES` and a longer institution need
    a wider loop (:func:`make_cine`'s default is wide enough).
    """
    return make_study(
        patient=patient
        or make_patient(patient_id="P42", patient_name="Doe^Jane", birth_date=date(1960, 1, 1)),
        site=make_site(
            institution_name=institution_name,
            manufacturer="Acme Ultrasound",
            manufacturer_model_name="S7",
            station_name="ECHO01",
        ),
        study_instance_uid=study_instance_uid,
        accession_number="A1",
        study_date=study_date,
        study_time="142233",
        referring_physician_name="Marlowe^Iris",
        study_description="Echocardiogram TTE",
    )


def make_cine(
    study: SyntheticStudy | None = None,
    *,
    seed: int = 0,
    ejection_fraction: float = 0.55,
    number_of_frames: int = 24,
    rows: int = 200,
    columns: int = 264,
    appearance: EchoAppearance | None = None,
) -> CineLoop:
    """An A4C loop (EDV 120 ml, 90 bpm, 30 frames/s) of ``study`` (:func:`make_echo_study`)."""
    return synthesize_a4c_cine(
        ejection_fraction=ejection_fraction,
        edv_ml=120.0,
        heart_rate_bpm=90.0,
        frame_rate_fps=30.0,
        rows=rows,
        columns=columns,
        study=study or make_echo_study(),
        rng=np.random.default_rng(seed),
        appearance=appearance or EchoAppearance(),
        number_of_frames=number_of_frames,
    )


def make_mr_volume(
    pixels: np.ndarray,
    *,
    plane: Plane = AXIS_ALIGNED_PLANES["axial"],
    first_origin: Sequence[float] | np.ndarray = (0.0, 0.0, 0.0),
    pixel_spacing: tuple[float, float] = (1.0, 1.0),
    slice_spacing: float = 1.0,
    slice_thickness: float | None = None,
    acquisition: dict[str, float | str] | None = None,
) -> MRVolume:
    """``pixels`` ``(slices, rows, columns)`` as a volume of evenly spaced slices in ``plane``.

    Slice ``k`` lies at ``first_origin + k * slice_spacing`` along row x column direction;
    ``slice_thickness`` defaults to the spacing.
    """
    row_direction, column_direction = plane
    normal = np.cross(row_direction, column_direction)
    origins = np.asarray(first_origin, dtype=np.float64) + np.outer(
        np.arange(pixels.shape[0]), normal * slice_spacing
    )
    return MRVolume(
        pixels=pixels.astype(np.float32),
        row_direction=row_direction,
        column_direction=column_direction,
        slice_origins=origins,
        pixel_spacing=pixel_spacing,
        slice_thickness=slice_spacing if slice_thickness is None else slice_thickness,
        acquisition=dict(acquisition or {}),
    )


def rotation_matrix(axis: tuple[float, float, float], degrees: float) -> np.ndarray:
    """The 3x3 rotation by ``degrees`` about the unit vector ``axis`` (Rodrigues)."""
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = np.radians(degrees)
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def oblique_plane(z_degrees: float, x_degrees: float) -> Plane:
    """The axial plane turned by ``x_degrees`` about x, then by ``z_degrees`` about z."""
    tilt = rotation_matrix((0.0, 0.0, 1.0), z_degrees) @ rotation_matrix((1.0, 0.0, 0.0), x_degrees)
    return tilt @ np.array([1.0, 0.0, 0.0]), tilt @ np.array([0.0, 1.0, 0.0])
