"""Synthetic identities: names, IDs, birth dates, accession numbers, institutions.

Everything here is invented from small word lists combined at random; the
values exist so that de-identification and PHI-leak tests have something to
find, in the tags and burned into pixels.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np

from imaging.synthetic.records import SyntheticPatient

FAMILY_NAMES = (
    "Abernathy", "Bellweather", "Castellanos", "Drummond", "Eriksen", "Fairbanks", "Galloway",
    "Hargreaves", "Iwasaki", "Jablonski", "Kowalczyk", "Lindqvist", "Marchetti", "Nakamura",
    "Okonkwo", "Pemberton", "Quintero", "Rasmussen", "Szabo", "Thornbury", "Underwood",
    "Valdivia", "Whitcombe", "Xiong", "Yardley", "Zielinski",
)  # fmt: skip
GIVEN_NAMES = {
    "F": ("Agnes", "Beatrix", "Clementine", "Dagny", "Eleonora", "Frieda", "Greta", "Hilde",
          "Ingrid", "Josephine", "Katarina", "Leonie", "Marisol", "Noor", "Ottilie", "Philippa"),
    "M": ("Alistair", "Bartholomew", "Cornelius", "Desmond", "Evander", "Fitzgerald", "Gideon",
          "Horatio", "Ignatius", "Jasper", "Leopold", "Mortimer", "Nikolai", "Octavian",
          "Percival", "Rupert"),
}  # fmt: skip
REFERRING_PHYSICIANS = (
    "Marlowe^Iris^^Dr", "Okafor^Tobias^^Dr", "Sandoval^Priya^^Dr", "Wexford^Anselm^^Dr",
)  # fmt: skip


def create_patient(
    *, index: int, sex: str, age_years: int, study_date: date, rng: np.random.Generator
) -> SyntheticPatient:
    """Invent a patient who is ``age_years`` old on ``study_date``."""
    family = FAMILY_NAMES[int(rng.integers(len(FAMILY_NAMES)))]
    given = GIVEN_NAMES[sex][int(rng.integers(len(GIVEN_NAMES[sex])))]
    # Born between one day and a year before the anniversary that makes them age_years.
    leap_day = (study_date.month, study_date.day) == (2, 29)
    anniversary = date(
        study_date.year - age_years, study_date.month, 28 if leap_day else study_date.day
    )
    birth_date = anniversary - timedelta(days=int(rng.integers(1, 365)))
    return SyntheticPatient(
        patient_id=f"MMDX{index:06d}",
        patient_name=f"{family}^{given}",
        birth_date=birth_date,
        sex=sex,
    )


def create_accession_number(rng: np.random.Generator) -> str:
    """An accession number in the style of a RIS: letters then digits."""
    return f"A{int(rng.integers(10**8, 10**9))}"


def pick_referring_physician(rng: np.random.Generator) -> str:
    """A synthetic referring physician in DICOM PN form."""
    return REFERRING_PHYSICIANS[int(rng.integers(len(REFERRING_PHYSICIANS)))]
