"""Imaging: DICOM, NIfTI and video readers, MONAI preprocessing, models and DICOM builders.

Importing this package is cheap and has no side effects; heavy libraries are
imported inside the functions that need them.
"""
