"""Imaging sites of the sample archive: equipment, protocols, file habits and case mix.

Sites differ in two ways that matter for evaluation, as in real multi-site
data: how their images look (scanner, protocol, echo machine) and whom they
see (a memory clinic has more Alzheimer's disease than a general hospital, a
heart-failure clinic more reduced ejection fraction). A model can learn the
site as a shortcut to the label, which a pooled random split rewards and a
leave-sites-out split exposes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from imaging.synthetic.echo_cine import EchoAppearance, sample_echo_appearance
from imaging.synthetic.mr_acquisition import MRProtocol
from imaging.synthetic.records import Site

EchoEncoding = Literal["jpeg_baseline", "rgb", "monochrome2"]
MRFileOrder = Literal["hashed", "sop_instance_uid", "reversed_instance_numbers"]


@dataclass(frozen=True)
class SiteProfile:
    """Everything that makes one site's studies look and distribute the way they do."""

    site_id: str
    mr_equipment: Site
    us_equipment: Site
    mr_protocol: MRProtocol
    mr_enhanced: bool  # one Enhanced MR multi-frame file instead of one file per slice
    mr_file_order: MRFileOrder
    echo_appearance: EchoAppearance
    echo_encoding: EchoEncoding
    echo_frame_shape: tuple[int, int]  # rows, columns
    echo_frame_rate_fps: tuple[float, float]  # range the site's machine uses
    ad_prevalence: float
    reduced_ef_prevalence: float
    mean_age_offset: float  # memory clinics see older patients


# One template per vendor; sites beyond these reuse them with jittered settings.
_INSTITUTIONS = (
    "Northbridge General Hospital", "St. Aldhelm Memory Clinic", "Riverside University Medical "
    "Centre", "Lakeshore Community Hospital", "Harbourview Heart Institute", "Elmstead Regional "
    "Hospital", "Quarry Hill Neurology Centre", "Westmarch Infirmary",
)  # fmt: skip
_MR_VENDORS = (
    ("SIEMENS", "Prisma", MRProtocol("sagittal", 1.8, 1.8, 900.0, 1.0, 0.15, 0.025)),
    (
        "GE MEDICAL SYSTEMS",
        "DISCOVERY MR750",
        MRProtocol(
            "axial", 2.0, 2.5, 2400.0, 1.25, 0.35, 0.045,
            repetition_time_ms=8.2, echo_time_ms=3.2, inversion_time_ms=450.0,
            flip_angle_deg=12.0, magnetic_field_strength_t=1.5, sequence_name="efgre3d",
            series_description="SAG 3D BRAVO",
        ),
    ),
    (
        "Philips Medical Systems",
        "Ingenia",
        MRProtocol(
            "oblique_axial", 2.0, 2.0, 1600.0, 0.9, 0.25, 0.035, oblique_tilt_deg=15.0,
            repetition_time_ms=8.1, echo_time_ms=3.7, inversion_time_ms=0.0, flip_angle_deg=8.0,
            sequence_name="T1TFE", series_description="3D T1 TFE",
        ),
    ),
    (
        "Canon Medical Systems",
        "Vantage Orian",
        MRProtocol(
            "coronal", 2.2, 3.0, 600.0, 1.15, 0.4, 0.05, magnetic_field_strength_t=1.5,
            sequence_name="FE3D", series_description="3D T1 FFE",
        ),
    ),
)  # fmt: skip
_US_VENDORS = (
    ("Philips Ultrasound", "EPIQ 7C", "rgb", (240, 320)),
    ("GE Vingmed Ultrasound", "Vivid E95", "jpeg_baseline", (256, 320)),
    ("SonoSite", "X-Porte", "jpeg_baseline", (240, 300)),
    ("Siemens Healthineers", "ACUSON SC2000", "monochrome2", (256, 336)),
)
_FILE_ORDERS: tuple[MRFileOrder, ...] = ("hashed", "reversed_instance_numbers", "hashed",
                                         "sop_instance_uid")  # fmt: skip
_AD_PREVALENCE = (0.3, 0.65, 0.45, 0.25)
_REDUCED_EF_PREVALENCE = (0.25, 0.5, 0.35, 0.2)
_AGE_OFFSET = (0.0, 4.0, 1.0, -2.0)


def create_site_profiles(count: int, rng: np.random.Generator) -> list[SiteProfile]:
    """``count`` sites, drawn from ``rng``.

    Philips sites write Enhanced MR multi-frame, as Philips scanners commonly do;
    with only two sites (no Philips among them) the second one does, so every
    archive of two or more sites holds both MR storage classes.
    """
    if count < 1:
        raise ValueError(f'Argument "count" must be at least 1, got {count}')
    profiles = []
    for index in range(count):
        vendor = index % len(_MR_VENDORS)
        manufacturer, model, protocol = _MR_VENDORS[vendor]
        us_manufacturer, us_model, encoding, frame_shape = _US_VENDORS[vendor]
        if index >= len(_MR_VENDORS):
            # A second site with the same vendor still has its own tuning and noise.
            protocol = replace(
                protocol,
                intensity_scale=protocol.intensity_scale * float(rng.uniform(0.7, 1.4)),
                bias_field_strength=float(rng.uniform(0.1, 0.45)),
                noise_fraction=float(rng.uniform(0.02, 0.055)),
            )
        institution = _INSTITUTIONS[index % len(_INSTITUTIONS)]
        site_id = f"S{index + 1:02d}"
        station = f"{site_id}{model.split()[0].upper()[:6]}"
        frame_rate_low = float(rng.choice([30.0, 40.0, 50.0]))
        profiles.append(
            SiteProfile(
                site_id=site_id,
                mr_equipment=Site(site_id, institution, manufacturer, model, f"{station}MR"),
                us_equipment=Site(site_id, institution, us_manufacturer, us_model, f"{station}US"),
                mr_protocol=protocol,
                mr_enhanced=vendor == 2 or (count == 2 and index == 1),
                mr_file_order=_FILE_ORDERS[index % len(_FILE_ORDERS)],
                echo_appearance=sample_echo_appearance(rng),
                echo_encoding=encoding,  # type: ignore[arg-type]
                echo_frame_shape=frame_shape,
                echo_frame_rate_fps=(frame_rate_low, frame_rate_low + 20.0),
                ad_prevalence=_AD_PREVALENCE[index % 4] * float(rng.uniform(0.85, 1.15)),
                reduced_ef_prevalence=_REDUCED_EF_PREVALENCE[index % 4]
                * float(rng.uniform(0.85, 1.15)),
                mean_age_offset=_AGE_OFFSET[index % 4],
            )
        )
    return profiles
