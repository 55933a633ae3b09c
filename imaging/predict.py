"""Predict one study with a bundle: decode, preprocess, run, calibrate, explain.

:func:`predict_path` is what ``mmdx predict PATH --bundle DIR`` calls. The input is
decoded by :func:`imaging.inference.inputs.load_input`, preprocessed by the same
evaluation pipeline training used (the bundle's preset parameters), and run with the
model in eval mode under ``torch.inference_mode``. The explanation (Grad-CAM needs
gradients) is computed afterwards, outside inference mode. The result is a
JSON-serialisable dict that always carries the disclaimer.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imaging.inference.inputs import DecodedInput, load_input
from imaging.model_card import EF_CLASS_NAMES

if TYPE_CHECKING:
    import torch

    from imaging.bundle import LoadedBundle
    from imaging.dicom.series_selection import SelectionRules
    from imaging.explain import Method
    from imaging.transforms.pipelines import EchoPreprocessing, MRIPreprocessing

DISCLAIMER = "Research software; not for diagnostic use."
# EF below this (percent) is reduced, as the sample archive labels it.
REDUCED_EF_PERCENT = 40.0


def predict_path(
    path: str | Path,
    bundle: LoadedBundle | str | Path,
    *,
    explain: bool = True,
    method: Method = "gradcam",
    out_dir: str | Path | None = None,
    rules: SelectionRules | None = None,
) -> dict[str, Any]:
    """Run ``bundle`` on the study at ``path``; return a JSON-serialisable result.

    Args:
        path: A DICOM study or series folder, a DICOM file, a NIfTI file or an AVI.
        bundle: A loaded bundle or its folder.
        explain: Compute a heat map of what drove the output.
        method: ``"gradcam"`` or ``"occlusion"``.
        out_dir: Where the explanation's PNG overlays and viewer file go; None writes
            no file.
        rules: Series selection rules for study folders; default the repository's.

    Returns:
        ``label``, ``probability`` (of that label, temperature-calibrated) and
        ``probabilities``; for echo also ``ef_percent``; ``model`` (name, version,
        bundle), ``input`` (path, kind, UIDs used), ``explanation`` (method, target,
        peak, files, viewer), ``timing_ms``, ``warnings`` and ``disclaimer``.

    Raises:
        PredictionInputError: The path cannot feed this model (kind, modality, series).
        ImagingError: A reader's error for a file that cannot be decoded.
        CheckpointError: ``bundle`` is a folder that does not load.
    """
    import torch

    from imaging.bundle import load_bundle

    started = time.perf_counter()
    loaded = bundle if not isinstance(bundle, str | Path) else load_bundle(bundle)
    timing: dict[str, float] = {}

    decoded = load_input(path, loaded.modality, rules=rules)
    timing["decode"] = _elapsed_ms(started)

    mark = time.perf_counter()
    x = preprocess(decoded, loaded.preprocessing)
    timing["preprocess"] = _elapsed_ms(mark)

    mark = time.perf_counter()
    model = loaded.model
    model.eval()
    with torch.inference_mode():
        outputs = model(x).float().cpu().numpy()[0]
    timing["inference"] = _elapsed_ms(mark)

    result: dict[str, Any] = {
        "disclaimer": DISCLAIMER,
        "model": {
            "name": loaded.name,
            "version": loaded.version,
            "architecture": loaded.config.architecture,
            "bundle": str(loaded.path),
        },
        "modality": loaded.modality,
        "task": loaded.config.task,
        **interpret_outputs(outputs, loaded),
        "input": decoded.source,
        "warnings": list(decoded.warnings),
    }
    result["explanation"] = None
    if explain:
        mark = time.perf_counter()
        result["explanation"] = explain_prediction(loaded, x, result, method, out_dir, decoded)
        timing["explain"] = _elapsed_ms(mark)
    timing["total"] = _elapsed_ms(started)
    result["timing_ms"] = timing
    return result


def preprocess(
    decoded: DecodedInput, preprocessing: MRIPreprocessing | EchoPreprocessing
) -> torch.Tensor:
    """The network input ``(1, C, ...)`` for ``decoded``: training's evaluation pipeline.

    That pipeline (:func:`imaging.transforms.pipelines.create_transform` without augmentation)
    starts by decoding a path; the input is decoded already, so that first step is left
    out and everything after it (the preset, channel repeat, typing) runs unchanged.
    """
    from monai.transforms import Compose

    from imaging.transforms.pipelines import LoadCined, LoadMRIVolumed, create_transform

    steps = list(create_transform(preprocessing, train=False).transforms)
    if not isinstance(steps[0], LoadMRIVolumed | LoadCined):
        raise TypeError(f"the evaluation pipeline starts with {type(steps[0]).__name__}")
    item = Compose(steps[1:])(dict(decoded.item))
    image = item["image"]
    return image.as_tensor()[None] if hasattr(image, "as_tensor") else image[None]


def interpret_outputs(outputs: np.ndarray, bundle: LoadedBundle) -> dict[str, Any]:
    """Label, calibrated probabilities (and EF) from one row of raw outputs.

    Classification: softmax of ``logits / temperature``; the label is the most probable
    class. EF multi-task: column 0 is the EF in percent, column 1 the reduced-EF logit
    (sigmoid of ``logit / temperature``). Regression: the value.
    """
    from imaging.evaluation.calibration import apply_temperature

    temperature = bundle.temperature
    task = bundle.config.task
    result: dict[str, Any] = {"temperature": temperature, "raw_outputs": _floats(outputs)}
    if task == "regression":
        result.update(label=None, probability=None, probabilities=None, value=float(outputs[0]))
        return result
    if task == "ef_multitask":
        names = bundle.class_names or EF_CLASS_NAMES
        reduced = float(apply_temperature(outputs[1:2], temperature)[0])
        probabilities = {names[0]: 1.0 - reduced, names[1]: reduced}
        result["ef_percent"] = float(outputs[0])
        result["ef_reduced_threshold_percent"] = REDUCED_EF_PERCENT
    else:
        names = bundle.class_names or tuple(f"class_{i}" for i in range(len(outputs)))
        row = apply_temperature(outputs[None, :], temperature)[0]
        probabilities = {name: float(p) for name, p in zip(names, row, strict=True)}
    label = max(probabilities, key=lambda name: probabilities[name])
    result.update(
        label=label,
        probability=probabilities[label],
        probabilities=probabilities,
    )
    return result


def explain_prediction(
    bundle: LoadedBundle,
    x: torch.Tensor,
    result: dict[str, Any],
    method: Method,
    out_dir: str | Path | None,
    decoded: DecodedInput,
) -> dict[str, Any]:
    """Heat map of what drove ``result``'s label (EF models: the reduced-EF output).

    Args:
        bundle: The bundle that produced ``result``.
        x: The preprocessed input, ``(1, C, ...)``.
        result: The prediction (its ``label`` picks the target class).
        method: ``"gradcam"`` or ``"occlusion"``.
        out_dir: Where the PNG overlays and the viewer file
            (:func:`imaging.viewer_file.save_viewer`) go; None writes no file.
        decoded: The decoded study (its image is the overlays' background).
    """
    from imaging.explain import explain, save_overlays
    from imaging.viewer_file import save_viewer

    task = bundle.config.task
    if task == "ef_multitask":
        index, name = 1, (bundle.class_names or EF_CLASS_NAMES)[1]
    elif task == "classification":
        names = list(result["probabilities"])
        index, name = names.index(result["label"]), str(result["label"])
    else:
        index, name = 0, "value"
    explanation = explain(
        bundle.model, x, modality=bundle.modality, target_index=index, target_name=name,
        method=method,
    )  # fmt: skip
    files: list[str] = []
    viewer: str | None = None
    if out_dir is not None:
        prefix = _safe_stem(decoded.source.get("series_instance_uid") or decoded.source["path"])
        files = [str(p) for p in save_overlays(explanation, out_dir, prefix=prefix)]
        interval = clip_frame_interval_ms(bundle, decoded.source)
        viewer_file = save_viewer(explanation, out_dir, prefix=prefix, frame_interval_ms=interval)
        # Absolute: a service reads it from another process and working folder.
        viewer = str(viewer_file.resolve())
    return {
        "method": explanation.method,
        "target": name,
        "target_index": index,
        "target_layer": explanation.target_layer,
        "grid": "network input (MR: RAS at the preset spacing; echo: the sampled clip)",
        "shape": list(explanation.heatmap.shape),
        "peak": list(explanation.peak),
        "files": files,
        "viewer": viewer,
    }


def clip_frame_interval_ms(bundle: LoadedBundle, source: Mapping[str, Any]) -> float | None:
    """Milliseconds between two frames of the clip an echo model saw, when known.

    The clip takes every ``period``-th frame of the loop, so the interval is ``period``
    frames at the loop's frame rate (``source["frame_rate_hz"]``). ``None`` for MR or a
    loop without a usable frame rate.
    """
    from imaging.transforms.pipelines import ECHO_DEFAULTS, EchoPreprocessing

    rate = source.get("frame_rate_hz")
    preprocessing = bundle.preprocessing
    if not isinstance(preprocessing, EchoPreprocessing) or not isinstance(rate, int | float):
        return None
    if isinstance(rate, bool) or not math.isfinite(rate) or rate <= 0:
        return None
    period = preprocessing.period or ECHO_DEFAULTS["period"]
    return round(1000.0 * period / float(rate), 3)


def _safe_stem(text: str) -> str:
    stem = Path(text).name.removesuffix(".gz").removesuffix(".nii").removesuffix(".avi")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:80] or "input"


def _floats(values: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(values).reshape(-1)]


def _elapsed_ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000.0, 1)
