"""De-identification: PS3.15 Annex E Basic Profile, full-dates option, Clean Pixel Data."""

from __future__ import annotations

from imaging.dicom.deid.clean_pixels import CleanedPixels, clean_ultrasound_pixels
from imaging.dicom.deid.deidentify import DeidentifiedDataset, DeidOptions, deidentify_dataset
from imaging.dicom.deid.files import DeidReport, deidentify_path, list_input_files
from imaging.dicom.deid.profile import BASIC_PROFILE, ProfileAttribute, profile_attribute

__all__ = [
    "BASIC_PROFILE",
    "CleanedPixels",
    "DeidOptions",
    "DeidReport",
    "DeidentifiedDataset",
    "ProfileAttribute",
    "clean_ultrasound_pixels",
    "deidentify_dataset",
    "deidentify_path",
    "list_input_files",
    "profile_attribute",
]
