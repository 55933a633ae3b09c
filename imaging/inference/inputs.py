"""What a path holds, decoded for one model: an MR volume or an ultrasound cine loop.

A path may be a DICOM study folder (indexed; the series chosen by the selection rules
for the model's modality), a DICOM series folder, a single DICOM file (an Enhanced MR
or an ultrasound multi-frame object), a NIfTI file or an AVI video. Every refusal is a
:class:`imaging.errors.PredictionInputError` naming the path and the reason; readers'
own errors (``DicomReadError``, ``NiftiReadError``, ``CineLoopError``...) pass through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imaging.errors import PredictionInputError

if TYPE_CHECKING:
    from imaging.dicom.series_selection import SelectionRules
    from imaging.dicom.study_index import SeriesRecord, StudyRecord

NIFTI_SUFFIXES = (".nii", ".nii.gz")
VIDEO_SUFFIXES = (".avi",)
MODALITIES = ("MR", "US")


@dataclass(frozen=True, eq=False)
class DecodedInput:
    """A decoded input as the preprocessing presets take it.

    Attributes:
        modality: ``"MR"`` or ``"US"``.
        item: ``{"image": MetaTensor (1, X, Y, Z)}`` for MR; ``{"cine": (T, H, W, C) uint8,
            "sector_mask": (H, W) bool}`` for echo (writable copies).
        source: JSON-serialisable description: ``path``, ``kind`` (``dicom_study``,
            ``dicom_series``, ``dicom_file``, ``nifti``, ``video``) and the UIDs used.
        warnings: Why the selection rules would have refused an explicitly given series.
    """

    modality: str
    item: dict[str, Any]
    source: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def load_input(
    path: str | Path, modality: str, *, rules: SelectionRules | None = None
) -> DecodedInput:
    """Decode ``path`` for a model of ``modality`` (``"MR"`` or ``"US"``).

    Args:
        path: A DICOM study or series folder, a DICOM file, a NIfTI file or an AVI.
        modality: The model's modality; the input must be of it.
        rules: Series selection rules; default ``configs/series_selection.yaml``.

    Raises:
        PredictionInputError: Missing path, a kind of file the modality cannot use,
            several studies, or no series of the modality that qualifies.
    """
    if modality not in MODALITIES:
        raise ValueError(f'Argument "modality" must be one of {MODALITIES}, got {modality!r}')
    path = Path(path)
    if not path.exists():
        raise PredictionInputError(path, "no such file or folder")
    name = path.name.lower()
    if path.is_file() and name.endswith(NIFTI_SUFFIXES):
        return _nifti(path, modality)
    if path.is_file() and name.endswith(VIDEO_SUFFIXES):
        return _video(path, modality)
    return _dicom(path, modality, rules)


def _nifti(path: Path, modality: str) -> DecodedInput:
    from imaging.readers.nifti import load_nifti_volume

    if modality != "MR":
        raise PredictionInputError(path, f"a NIfTI volume cannot feed a {modality} model")
    volume = load_nifti_volume(path)
    return DecodedInput("MR", {"image": volume}, {"path": str(path), "kind": "nifti"})


def _video(path: Path, modality: str) -> DecodedInput:
    from imaging.readers.echonet import load_echonet_video

    if modality != "US":
        raise PredictionInputError(path, f"a video cannot feed a {modality} model")
    cine = load_echonet_video(path)
    source = {
        "path": str(path),
        "kind": "video",
        "frames": cine.number_of_frames,
        "frame_rate_hz": round(cine.frame_rate_hz, 3),
    }
    return DecodedInput("US", _cine_item(cine), source)


def _dicom(path: Path, modality: str, rules: SelectionRules | None) -> DecodedInput:
    from imaging.dicom.study_index import index_dicom_source

    index = index_dicom_source(path)
    studies = index.studies
    if not studies:
        failures = "; ".join(f"{f.path}: {f.reason}" for f in index.failures[:3])
        reason = "holds no readable DICOM object" + (f" ({failures})" if failures else "")
        raise PredictionInputError(path, reason)
    if len(studies) > 1:
        raise PredictionInputError(
            path, f"holds {len(studies)} studies; give the folder of one study or series"
        )
    study = studies[0]
    series, kind, warnings = _choose_series(path, study, modality, rules)
    if any(instance.member is not None for instance in series.instances):
        raise PredictionInputError(path, "series inside a zip archive: extract it first")
    if path.is_file():
        kind = "dicom_file"
    elif all(instance.path.parent == path for instance in series.instances):
        kind = "dicom_series"
    source: dict[str, Any] = {
        "path": str(path),
        "kind": kind,
        "study_instance_uid": study.study_instance_uid,
        "series_instance_uid": series.series_instance_uid,
        "series_description": series.series_description,
        "series_number": series.series_number,
    }
    if modality == "MR":
        from imaging.dicom.series_volume import load_mr_series

        volume = load_mr_series([instance.path for instance in series.instances])
        source["instances"] = series.number_of_instances
        return DecodedInput("MR", {"image": volume}, source, warnings)

    from imaging.dicom.cine import load_us_cine

    # A series may hold several loops; the longest one is read.
    instance = max(series.instances, key=lambda item: (item.number_of_frames, item.location))
    cine = load_us_cine(instance.path)
    source["sop_instance_uid"] = instance.sop_instance_uid
    source["frames"] = cine.number_of_frames
    source["frame_rate_hz"] = round(cine.frame_rate_hz, 3)
    return DecodedInput("US", _cine_item(cine), source, warnings)


def _choose_series(
    path: Path, study: StudyRecord, modality: str, rules: SelectionRules | None
) -> tuple[SeriesRecord, str, list[str]]:
    """The series to read, the input kind and warnings; a lone series is read whatever the rules."""
    from imaging.dicom.series_selection import (
        explain_series_selection,
        judge_series,
        load_selection_rules,
    )

    rules = rules if rules is not None else load_selection_rules()
    of_modality = [series for series in study.series if series.modality == modality]
    if not of_modality:
        found = ", ".join(study.modalities) or "none"
        raise PredictionInputError(path, f"holds no {modality} series (modalities: {found})")
    if len(study.series) == 1:
        # The user pointed at this series: read it, but say what the rules would object to.
        rule = rules.rules.get(modality)
        reasons = judge_series(of_modality[0], rule) if rule is not None else ()
        warnings = [f"series selection rules would refuse it: {r}" for r in reasons]
        return of_modality[0], "dicom_study", warnings
    selection = explain_series_selection(study, rules, modality=modality)
    if selection.selected is None:
        why = "; ".join(f"{uid}: {reason}" for uid, reason in selection.rejections().items())
        raise PredictionInputError(path, f"no {modality} series qualifies ({why})")
    return selection.selected, "dicom_study", []


def _cine_item(cine: Any) -> dict[str, Any]:
    # The presets write into both arrays; the cine's are read-only.
    return {"cine": cine.frames.copy(), "sector_mask": cine.sector_mask.copy()}
