"""DICOM modules that every synthetic object carries, whatever its modality.

Patient, General Study and Patient Study come from the ``SyntheticStudy``;
General Equipment from its ``Site``. The modality writers add their series and
image modules on top.
"""

from __future__ import annotations

import hashlib

from pydicom.dataset import Dataset

from imaging.synthetic.records import Site, SyntheticStudy


def add_patient_and_study_modules(dataset: Dataset, study: SyntheticStudy) -> None:
    """Add the Patient, General Study and Patient Study modules, and the character set."""
    dataset.SpecificCharacterSet = "ISO_IR 100"
    dataset.PatientName = study.patient.patient_name
    dataset.PatientID = study.patient.patient_id
    dataset.PatientBirthDate = study.patient.birth_date.strftime("%Y%m%d")
    dataset.PatientSex = study.patient.sex

    dataset.StudyInstanceUID = study.study_instance_uid
    dataset.StudyDate = study.study_date.strftime("%Y%m%d")
    dataset.StudyTime = study.study_time
    dataset.AccessionNumber = study.accession_number
    dataset.ReferringPhysicianName = study.referring_physician_name
    dataset.StudyDescription = study.study_description
    dataset.StudyID = study.accession_number[-16:]
    dataset.PatientAge = f"{study.patient_age:03d}Y"


def add_equipment_module(dataset: Dataset, site: Site) -> None:
    """Add the General Equipment module of the site's scanner."""
    dataset.Manufacturer = site.manufacturer
    dataset.ManufacturerModelName = site.manufacturer_model_name
    dataset.InstitutionName = site.institution_name
    dataset.StationName = site.station_name
    # Derived from the site so that every object from one scanner shares it.
    dataset.DeviceSerialNumber = hashlib.sha256(site.site_id.encode()).hexdigest()[:8].upper()
    dataset.SoftwareVersions = "mmdx synthetic 1.0"
