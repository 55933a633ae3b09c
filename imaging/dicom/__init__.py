"""DICOM input: safe reading, study indexing, series-to-volume, cine loops, de-identification."""
