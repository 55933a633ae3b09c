"""The two stages of a screen, as plain Python: prepare a study (CPU), classify a batch.

:func:`prepare_row` decodes and preprocesses one study exactly as ``mmdx predict`` does
(:func:`imaging.inference.inputs.load_input`, then :func:`imaging.predict.preprocess`)
and carries the network input on as bytes. :class:`InferBatch` holds one
:class:`~serving.pipeline.classification.StudyClassifier` per modality and runs each
batch's prepared studies in one forward pass per modality, so its numbers are those of
``mmdx predict`` and of the service. A study that fails at any stage becomes a failed
row naming the stage and the reason; the others go on. Ray Data runs these stages
(:mod:`serving.screening.ray_pipeline`); they need no Ray.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.screening.inputs import describe_error
from serving.screening.results_store import RESULT_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

    from imaging.transforms.pipelines import EchoPreprocessing, MRIPreprocessing
    from serving.pipeline.classification import PreparedStudy, StudyClassifier

Row = dict[str, Any]


def prepare_row(
    row: Mapping[str, Any],
    *,
    preprocessing: Mapping[str, MRIPreprocessing | EchoPreprocessing],
    roots: Sequence[str] = (),
) -> Row:
    """Decode and preprocess one task row; the row comes back ``prepared`` or ``failed``.

    Args:
        row: A :meth:`StudyTask.as_row` dict (``path``, ``modality``...).
        preprocessing: The preset of each modality's model.
        roots: Folder prefixes cut from the paths an error names (the input, the work folder).

    Returns:
        The row with ``status``, ``x`` (the float network input's bytes), ``x_shape`` and
        ``x_dtype``, ``source`` and ``warnings`` (JSON), ``decode_ms``, ``preprocess_ms``,
        ``decode_node``; or ``status`` ``failed`` with ``error`` and ``error_stage``.
    """
    from imaging.inference.inputs import load_input
    from imaging.predict import preprocess

    out: Row = {**row, "decode_node": _node_id(), "error": None, "error_stage": None}
    out.update(x=b"", x_shape="", x_dtype="", source="", warnings="")
    started = time.perf_counter()
    stage = "decode"
    try:
        decoded = load_input(str(row["path"]), str(row["modality"]))
        decoded_at = time.perf_counter()
        stage = "preprocess"
        x = preprocess(decoded, preprocessing[str(row["modality"])])
        array = x.detach().cpu().contiguous().numpy()
    except Exception as exc:  # one bad study must not stop the screen
        out.update(status="failed", error=describe_error(exc, roots), error_stage=stage)
        out.update(decode_ms=_ms(time.perf_counter() - started), preprocess_ms=None)
        return out
    out.update(
        status="prepared",
        x=array.tobytes(),
        x_shape=json.dumps(list(array.shape)),
        x_dtype=str(array.dtype),
        source=json.dumps(decoded.source),
        warnings=json.dumps(list(decoded.warnings)),
        decode_ms=_ms(decoded_at - started),
        preprocess_ms=_ms(time.perf_counter() - decoded_at),
    )
    return out


class InferBatch:
    """Classify batches of prepared rows with one bundle per modality.

    Args:
        bundles: Modality -> bundle folder.
        device: Torch device; default CUDA when available, else the CPU.

    Raises:
        CheckpointError: A bundle that does not load.
    """

    def __init__(self, bundles: Mapping[str, str | Path], device: str | None = None) -> None:
        import torch

        from serving.pipeline.classification import StudyClassifier

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.classifiers = {
            modality: StudyClassifier(path, device=device) for modality, path in bundles.items()
        }

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        """Ray Data's entry point: a pandas batch of prepared rows in, result rows out."""
        import pandas as pd

        rows = [{str(k): v for k, v in row.items()} for row in batch.to_dict("records")]
        return pd.DataFrame(self.classify_rows(rows), columns=list(RESULT_COLUMNS))

    def classify_rows(self, rows: Sequence[Mapping[str, Any]]) -> list[Row]:
        """One result row per prepared (or already failed) row, in order."""
        results: list[Row | None] = [None] * len(rows)
        by_modality: dict[str, list[int]] = {}
        for position, row in enumerate(rows):
            if row.get("status") == "prepared":
                by_modality.setdefault(str(row["modality"]), []).append(position)
            else:
                results[position] = failed_row(row, str(row["error"]), str(row["error_stage"]))
        for modality, positions in by_modality.items():
            for position, result in zip(
                positions, self._classify([rows[p] for p in positions], modality), strict=True
            ):
                results[position] = result
        return [row for row in results if row is not None]

    def _classify(self, rows: Sequence[Mapping[str, Any]], modality: str) -> list[Row]:
        node = _node_id()
        classifier = self.classifiers.get(modality)
        if classifier is None:
            reason = f"PredictionInputError: no model for modality {modality}"
            return [failed_row(row, reason, "infer") for row in rows]
        try:
            prepared = [_prepared_study(row) for row in rows]
            outputs = classifier.classify_batch(prepared)
        except Exception as exc:  # a failed pass fails its studies, not the screen
            return [failed_row(row, describe_error(exc), "infer") for row in rows]
        shapes = [tuple(item.x.shape) for item in prepared]
        results = []
        for row, result, shape in zip(rows, outputs, shapes, strict=True):
            # Studies of one shape share a forward pass: each is charged its share.
            infer_ms = result["timing_ms"]["inference"] / shapes.count(shape)
            decode_ms = _sum(row.get("decode_ms"), row.get("preprocess_ms"))
            results.append(
                result_row(row, result, classifier, decode_ms=decode_ms, infer_ms=infer_ms)
                | {"infer_node": node}
            )
        return results


def result_row(
    task: Mapping[str, Any],
    result: Mapping[str, Any],
    classifier: StudyClassifier,
    *,
    decode_ms: float | None,
    infer_ms: float | None,
) -> Row:
    """The results row of a study ``result`` (shaped as ``predict_path``'s) describes."""
    names = classifier.class_names
    positive = names[1] if len(names) == 2 else None
    probabilities = result.get("probabilities") or {}
    return {
        **_task_columns(task),
        "model_name": classifier.name,
        "model_version": classifier.version,
        "prediction": result.get("label"),
        "probability": result.get("probability"),
        "positive_label": positive,
        "positive_probability": probabilities.get(positive) if positive else None,
        "ef_percent": result.get("ef_percent"),
        "decode_ms": decode_ms,
        "infer_ms": infer_ms,
        "finished_at": datetime.now(UTC),
        "status": "done",
        "error": None,
        "error_stage": None,
        "decode_node": task.get("decode_node"),
        "infer_node": None,
    }


def failed_row(task: Mapping[str, Any], error: str, stage: str) -> Row:
    """The results row of a study that failed at ``stage`` with ``error``."""
    return {
        **_task_columns(task),
        "model_name": None,
        "model_version": None,
        "prediction": None,
        "probability": None,
        "positive_label": None,
        "positive_probability": None,
        "ef_percent": None,
        "decode_ms": task.get("decode_ms"),
        "infer_ms": None,
        "finished_at": datetime.now(UTC),
        "status": "failed",
        "error": error,
        "error_stage": stage,
        "decode_node": task.get("decode_node"),
        "infer_node": None,
    }


_TASK_KEYS = ("study_id", "patient_pseudonym", "modality", "site_id", "sex", "age_years")


def _task_columns(task: Mapping[str, Any]) -> Row:
    return {key: task.get(key) for key in _TASK_KEYS}


def _prepared_study(row: Mapping[str, Any]) -> PreparedStudy:
    """The :class:`PreparedStudy` a prepared row carries (a copy of its input tensor)."""
    import numpy as np
    import torch

    from serving.pipeline.classification import PreparedStudy

    shape = json.loads(str(row["x_shape"]))
    array = np.frombuffer(row["x"], dtype=np.dtype(str(row["x_dtype"]))).reshape(shape)
    return PreparedStudy(
        path=Path(str(row["path"])),
        x=torch.from_numpy(array.copy()),
        source=json.loads(str(row["source"])),
        warnings=list(json.loads(str(row["warnings"]))),
        timing_ms={"decode": row["decode_ms"], "preprocess": row["preprocess_ms"]},
    )


def _node_id() -> str | None:
    """The Ray node running this code; None outside Ray (never imports Ray itself)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return str(ray.get_runtime_context().get_node_id())


def _sum(*values: Any) -> float | None:
    numbers = [float(v) for v in values if v is not None and v == v]
    return round(sum(numbers), 3) if numbers else None


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)
