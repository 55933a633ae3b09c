"""Typed errors of the imaging layer: each names what failed (file, series) and why.

Protocol edges translate them: the DICOM listener to a C-STORE failure status, the
HTTP API to a 4xx with the reason, the batch tools to a row in a per-file report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class ImagingError(Exception):
    """Base class: ``source`` names the file or series, ``reason`` says what is wrong."""

    def __init__(self, source: str | Path, reason: str) -> None:
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


class DicomReadError(ImagingError):
    """The bytes are not a readable DICOM Part 10 object (not DICOM, truncated, malformed)."""


class ResourceLimitError(ImagingError):
    """Reading would exceed a configured size limit (file, inflated data set, pixel data)."""


class UnsupportedTransferSyntaxError(ImagingError):
    """The pixel data are encoded in a transfer syntax no installed decoder handles."""


class PixelDataError(ImagingError):
    """The pixel data are missing, inconsistent with the image attributes, or fail to decode."""


class SeriesAssemblyError(ImagingError):
    """The instances of a series do not form one regular volume (gaps, duplicates, tilt...)."""


class CineLoopError(ImagingError):
    """An ultrasound object is not a usable cine loop (attributes, timing, regions)."""


class DeidentificationError(ImagingError):
    """An object cannot be de-identified safely (so it must not leave the hospital)."""


class NiftiReadError(ImagingError):
    """A NIfTI file or BIDS table is missing, corrupt, or not what the reader needs."""


class EchoNetLayoutError(ImagingError):
    """The EchoNet-Dynamic tables are missing or malformed (names the file and row)."""


class CheckpointError(ImagingError):
    """A weights file cannot be used: unreadable, wrong checksum, or keys/shapes that do not fit."""


class PredictionInputError(ImagingError):
    """A path cannot be predicted: unknown kind, another modality, no usable series."""


@dataclass(frozen=True)
class FileFailure:
    """One row of a per-file error report: which file, which error, why."""

    path: str
    error: str
    reason: str

    @classmethod
    def from_exception(cls, path: str | Path, exc: Exception) -> FileFailure:
        """Describe ``exc`` (raised while handling ``path``) for a report."""
        reason = exc.reason if isinstance(exc, ImagingError) else str(exc)
        return cls(path=str(path), error=type(exc).__name__, reason=reason)
