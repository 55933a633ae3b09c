"""The DICOM listener: C-ECHO, C-STORE and C-FIND SCP over the study-access protocols."""

from __future__ import annotations

from serving.dicom_listener.listener import DicomListener

__all__ = ["DicomListener"]
