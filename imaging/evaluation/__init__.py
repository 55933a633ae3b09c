"""Leakage-free evaluation: patient and site splits, bootstrap CIs, calibration, reports.

Pure numpy; scikit-learn, scipy and matplotlib are imported inside the functions that
need them, so importing this package is cheap.
"""
