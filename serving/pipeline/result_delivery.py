"""The result SR of one classified series: built from the evidence headers, kept, sent.

:func:`result_sr` turns a classification (and its similar cases) into
:class:`~imaging.dicom.result_sr.AIResult` and builds the Comprehensive 3D SR in the
study of the evidence; :func:`keep_sr` writes it under the results folder, so it can be
re-sent; :func:`deliver_sr` sends it and reports a refusal instead of raising, because
a result stands even when the PACS is down.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydicom.dataset import Dataset

from imaging.dicom.reading import read_dicom
from imaging.dicom.result_sr import TASK_LABELS, AIResult, SimilarCase, Task, build_result_sr
from serving.settings import DestinationSettings
from serving.sr_delivery import DeliveryError
from serving.store import check_uid

logger = logging.getLogger(__name__)

SrSender = Callable[[Dataset, DestinationSettings], None]

# The SR's task, and the Series Number of its new series, per modality classified.
TASKS: dict[str, Task] = {"MR": "mri_ad", "US": "echo_ef"}
SR_SERIES_NUMBERS = {"MR": 990, "US": 991}


def task_of(modality: str) -> Task:
    """The SR task of a modality's classifier.

    Raises:
        ValueError: No task for ``modality``.
    """
    if modality not in TASKS:
        raise ValueError(f'Argument "modality" must be one of {sorted(TASKS)}, got {modality!r}')
    return TASKS[modality]


def result_sr(
    evidence_paths: Sequence[Path],
    *,
    modality: str,
    classification: Mapping[str, Any],
    positive_probability: float,
    fused_probability: float | None = None,
    similar_cases: Sequence[Mapping[str, Any]] = (),
    draft_text: str | None = None,
) -> Dataset:
    """The Comprehensive 3D SR of one classification, in the study of ``evidence_paths``.

    Args:
        evidence_paths: The instances the model read (their headers are read here).
        modality: ``"MR"`` or ``"US"``.
        classification: A :class:`~serving.pipeline.classification.StudyClassifier` result.
        positive_probability: Calibrated probability of the task's positive class.
        fused_probability: That probability fused with the similar cases, if computed.
        similar_cases: Hit summaries (``case_id``, ``score``, ``label``).
        draft_text: The cited draft report.

    Raises:
        ValueError: The classification's label is not one of the task's, or the evidence
            does not form one study.
        ImagingError: An evidence header cannot be read.
    """
    task = task_of(modality)
    labels = TASK_LABELS[task]
    ef = classification.get("ef_percent")
    result = AIResult(
        model_name=str(classification["model"]["name"]),
        model_version=str(classification["model"]["version"]),
        task=task,
        predicted_label=str(classification["label"]),
        probability=positive_probability,
        ef_percent=None if ef is None else clipped_ef(float(ef)),
        fused_probability=fused_probability,
        similar_cases=tuple(
            SimilarCase(
                str(case["case_id"]),
                float(case["score"]),
                case["label"] if case["label"] in labels else None,
            )
            for case in similar_cases
        ),
        draft_report=draft_text,
    )
    evidence = [read_dicom(path, stop_before_pixels=True) for path in evidence_paths]
    return build_result_sr(
        evidence, result, series_number=SR_SERIES_NUMBERS[modality], instance_number=1
    )


def clipped_ef(ef_percent: float) -> float:
    """An ejection fraction brought into [0, 100] (a regression head can overshoot)."""
    if not math.isfinite(ef_percent):
        raise ValueError(f"ejection fraction {ef_percent} is not a number")
    return min(max(ef_percent, 0.0), 100.0)


def keep_sr(sr: Dataset, sr_dir: Path) -> Path:
    """Write ``sr`` to ``sr_dir/<StudyInstanceUID>/<SOPInstanceUID>.dcm``; return the file."""
    folder = Path(sr_dir) / check_uid(str(sr.StudyInstanceUID), "study_instance_uid")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{check_uid(str(sr.SOPInstanceUID), 'sop_instance_uid')}.dcm"
    sr.save_as(path, enforce_file_format=True)
    return path


def deliver_sr(
    sr: Dataset, destination: DestinationSettings, sender: SrSender
) -> dict[str, str | None]:
    """Send ``sr`` unless the destination is ``"none"``; a refusal is reported, not raised.

    Returns:
        ``sent_to`` (where the peer confirmed storage, else None) and ``delivery_error``
        (the :class:`~serving.sr_delivery.DeliveryError` message, else None).
    """
    if destination.kind == "none":
        return {"sent_to": None, "delivery_error": None}
    try:
        sender(sr, destination)
    except DeliveryError as exc:
        logger.warning("result SR not delivered: %s", exc.reason)
        return {"sent_to": None, "delivery_error": str(exc)}
    return {"sent_to": destination_label(destination), "delivery_error": None}


def destination_label(destination: DestinationSettings) -> str:
    """``AE@host:port`` for C-STORE, ``host[:port]/path`` (no credentials) for STOW-RS."""
    if destination.kind == "cstore":
        return f"{destination.ae_title}@{destination.host}:{destination.port}"
    parts = urlsplit(destination.stow_url or "")
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"
