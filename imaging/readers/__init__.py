"""Readers for non-DICOM inputs (EchoNet-Dynamic videos, NIfTI); importing this is cheap."""
