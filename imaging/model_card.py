"""The model card of a bundle (``configs/metadata.json``), built from what the model is.

MONAI's bundle metadata fields (``network_data_format`` with ``inputs`` and
``outputs``, ``intended_use``, ``data_source``, ``eval_metrics``) and an ``"mmdx"``
section with what :mod:`imaging.bundle` needs to rebuild and run the model.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from imaging.models.config import ModelConfig

if TYPE_CHECKING:
    from imaging.transforms.pipelines import EchoPreprocessing, MRIPreprocessing

INTENDED_USE = "research; not for diagnostic use"
DISCLAIMER = (
    "Research software trained and evaluated on synthetic data. Not a medical device; "
    "not for diagnostic use."
)
DEFAULT_TRAINING_DATA: dict[str, Any] = {
    "description": "synthetic sample archive (mmdx synth); invented identities, no patient data",
    "sites": [],
    "n_studies": None,
    "n_patients": None,
}
# Output classes of the EF multi-task head's reduced-EF column, as the archive labels them.
EF_CLASS_NAMES = ("normal_ef", "reduced_ef")


def class_names_for(config: ModelConfig, class_names: Sequence[str] | None) -> list[str] | None:
    """The class names a bundle records: given, defaulted, or None for regression.

    Raises:
        ValueError: Names for a regression model, or a count that differs from the outputs.
    """
    if config.task == "ef_multitask":
        names = list(class_names or EF_CLASS_NAMES)
        expected = 2
    elif config.task == "classification":
        names = list(class_names or (f"class_{i}" for i in range(config.num_classes or 0)))
        expected = config.num_classes or 0
    else:
        if class_names:
            raise ValueError(f'task "{config.task}" has no classes; drop "class_names"')
        return None
    if len(names) != expected:
        raise ValueError(
            f'Argument "class_names" must name {expected} classes for {config.name}, got {names}'
        )
    return names


def network_input_shape(
    config: ModelConfig, preprocessing: MRIPreprocessing | EchoPreprocessing
) -> tuple[int, ...]:
    """The shape of one network input (no batch axis) that ``preprocessing`` produces.

    MR: ``(1, X, Y, Z)``; echo: ``(channels, frames, side, side)``, one grey channel
    unless the preprocessing repeats it over three.
    """
    from imaging.transforms.pipelines import MRIPreprocessing

    if isinstance(preprocessing, MRIPreprocessing):
        return (config.input.channels, *(preprocessing.spatial_size or config.input.spatial_size))
    side = preprocessing.spatial_size or config.input.spatial_size[0]
    frames = preprocessing.clip_length or config.input.frames or 0
    return (preprocessing.channels or 1, frames, side, side)


def _network_data_format(
    config: ModelConfig,
    names: list[str] | None,
    preprocessing: MRIPreprocessing | EchoPreprocessing,
) -> dict[str, Any]:
    image: dict[str, Any] = {
        "type": "image" if config.modality == "MR" else "video",
        "format": "magnitude",
        "modality": config.modality,
        "num_channels": network_input_shape(config, preprocessing)[0],
        "spatial_shape": list(network_input_shape(config, preprocessing)),
        "dtype": "float32",
        "is_patch_data": False,
    }
    if config.modality == "MR":
        image["axes"] = "C, X, Y, Z (RAS)"
        image["pixdim_mm"] = list(getattr(preprocessing, "spacing", None) or ())
        image["value_range"] = [0.0, 1.0]
        image["intensity"] = "percentiles 0.5 and 99.5 of the volume mapped to 0 and 1, clipped"
    else:
        image["axes"] = "C, T, H, W"
        image["period"] = getattr(preprocessing, "period", None)
        mean, std = getattr(preprocessing, "mean", None), getattr(preprocessing, "std", None)
        image["intensity"] = (
            "grey levels standardised per loop (mean 0, standard deviation 1)"
            if mean is None
            else f"(grey level - {mean}) / {std}"
        )
    outputs: dict[str, Any]
    if config.task == "ef_multitask":
        outputs = {
            "ef_percent": {"column": 0, "type": "regression", "units": "percent"},
            "reduced_ef_logit": {
                "column": 1,
                "type": "logit",
                "units": "logit of P(reduced EF: EF < 40 %)",
                "classes": names,
            },
        }
    elif config.task == "regression":
        outputs = {"value": {"column": 0, "type": "regression", "units": "target units"}}
    else:
        outputs = {
            "pred": {
                "type": "logits",
                "format": "classes",
                "num_channels": config.num_classes,
                "units": "logits; softmax(logits / temperature) gives calibrated probabilities",
                "channel_def": {str(i): name for i, name in enumerate(names or [])},
            }
        }
    return {"inputs": {"image": image}, "outputs": outputs}


def _evaluation(summary: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if summary is None:
        return None
    pooled = summary.get("pooled", {})
    return {
        "split_type": summary.get("split_type"),
        "target": summary.get("target"),
        "task": summary.get("task"),
        "n": summary.get("n"),
        "bootstrap": summary.get("bootstrap"),
        "metrics": pooled.get("metrics"),
        "calibration": pooled.get("calibration"),
        "per_site": [
            {"site_id": row.get("site_id"), "n": row.get("n"), "metrics": row.get("metrics")}
            for row in summary.get("per_site", [])
        ],
        "disclaimer": summary.get("disclaimer"),
    }


def build_model_card(
    config: ModelConfig,
    names: list[str] | None,
    *,
    preprocessing: MRIPreprocessing | EchoPreprocessing,
    metrics_summary: Mapping[str, Any] | None,
    training_data: Mapping[str, Any] | None,
    temperature: float | None,
    version: str,
    name: str,
    description: str,
    model_sha256: str,
    bundle_format: str,
    model_file: str,
) -> dict[str, Any]:
    """The model card as a JSON-serialisable dict (see the module docstring)."""
    import monai
    import numpy
    import torch

    evaluation = _evaluation(metrics_summary)
    return {
        "schema": "MONAI bundle metadata (subset) with an mmdx section",
        "name": name,
        "version": version,
        "description": description,
        "task": config.task,
        "modality": config.modality,
        "intended_use": INTENDED_USE,
        "disclaimer": DISCLAIMER,
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "python_version": platform.python_version(),
        "data_source": dict(training_data or DEFAULT_TRAINING_DATA),
        "network_data_format": _network_data_format(config, names, preprocessing),
        "eval_metrics": evaluation["metrics"] if evaluation else None,
        "mmdx": {
            "format": bundle_format,
            "model_config": config.model_dump(mode="json"),
            "preprocessing": preprocessing_to_json(preprocessing),
            "class_names": names,
            "calibration": {
                "method": "temperature scaling" if temperature is not None else None,
                "temperature": temperature,
            },
            "evaluation": evaluation,
            "model_file": model_file,
            "model_sha256": model_sha256,
        },
    }


def preprocessing_to_json(preprocessing: MRIPreprocessing | EchoPreprocessing) -> dict[str, Any]:
    """The preset parameters with a ``kind`` (``mri`` or ``echo``) to read them back."""
    from imaging.transforms.pipelines import MRIPreprocessing

    kind = "mri" if isinstance(preprocessing, MRIPreprocessing) else "echo"
    return {"kind": kind, **preprocessing.model_dump(mode="json")}


def preprocessing_from_json(data: Mapping[str, Any]) -> MRIPreprocessing | EchoPreprocessing:
    """Inverse of :func:`preprocessing_to_json`.

    Raises:
        ValueError: Unknown kind or invalid parameters.
    """
    from imaging.transforms.pipelines import EchoPreprocessing, MRIPreprocessing

    fields = {key: value for key, value in data.items() if key != "kind"}
    if data.get("kind") == "mri":
        return MRIPreprocessing.model_validate(fields)
    if data.get("kind") == "echo":
        return EchoPreprocessing.model_validate(fields)
    raise ValueError(f"unknown preprocessing kind {data.get('kind')!r}")
