"""Model bundles in MONAI bundle style: ``models/model.pt`` and ``configs/metadata.json``.

A bundle is what :func:`imaging.predict.predict_path` runs and what a reader of the
results checks: the weights (a ``backbone.*``/``head.*`` state dict) and the model card.
The card follows MONAI's bundle metadata (``network_data_format`` with ``inputs`` and
``outputs``, ``intended_use``, ``data_source``...) and adds, under ``"mmdx"``, what this
project needs to rebuild and run the model: the model configuration, the preprocessing
preset parameters, the class names, the calibration temperature, the evaluation summary
with its confidence intervals and split type, and the SHA-256 of ``model.pt``.

Loading verifies the hash and that the weights fit the configuration key for key and
shape for shape; anything else raises :class:`imaging.errors.CheckpointError`. Torch is
imported inside the functions that need it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imaging.errors import CheckpointError
from imaging.model_card import (
    build_model_card,
    class_names_for,
    network_input_shape,
    preprocessing_from_json,
)
from imaging.models.config import ModelConfig

if TYPE_CHECKING:
    from torch import nn

    from imaging.transforms.pipelines import EchoPreprocessing, MRIPreprocessing

BUNDLE_FORMAT = "mmdx-bundle/1"
MODEL_FILE = Path("models/model.pt")
METADATA_FILE = Path("configs/metadata.json")


@dataclass(frozen=True, eq=False)
class LoadedBundle:
    """A bundle ready to run: the model in eval mode and everything its card says.

    Attributes:
        path: The bundle folder.
        model: The network (``backbone``/``head``), on CPU, in eval mode.
        config: Its model configuration.
        metadata: The parsed ``configs/metadata.json``.
        preprocessing: The preset parameters to apply to an input.
        class_names: Names of the classes (classification, EF multi-task), else None.
        temperature: Calibration temperature for the logits (1.0 when none was fitted).
    """

    path: Path
    model: nn.Module
    config: ModelConfig
    metadata: dict[str, Any]
    preprocessing: MRIPreprocessing | EchoPreprocessing
    class_names: tuple[str, ...] | None
    temperature: float

    @property
    def name(self) -> str:
        """The bundle's name (the model card's ``name``)."""
        return str(self.metadata["name"])

    @property
    def version(self) -> str:
        """The bundle's version."""
        return str(self.metadata["version"])

    @property
    def modality(self) -> str:
        """``"MR"`` or ``"US"``."""
        return self.config.modality


def save_bundle(
    model: nn.Module,
    config: ModelConfig,
    out_dir: str | Path,
    *,
    preprocessing: MRIPreprocessing | EchoPreprocessing,
    class_names: Sequence[str] | None = None,
    metrics_summary: Mapping[str, Any] | None = None,
    training_data: Mapping[str, Any] | None = None,
    temperature: float | None = None,
    version: str = "0.1.0",
    name: str | None = None,
    description: str = "",
) -> Path:
    """Write ``model`` and its model card as a bundle folder; return the folder.

    Args:
        model: A network from :func:`imaging.models.factory.create_model` (trained).
        config: Its configuration.
        out_dir: The bundle folder (created; existing files are replaced).
        preprocessing: The resolved preset parameters the model was trained with
            (:func:`imaging.training.data.resolve_preprocessing`).
        class_names: Class names in output order (classification); the EF multi-task
            defaults to ``EF_CLASS_NAMES``.
        metrics_summary: An :func:`imaging.evaluation.report.evaluation_summary`; its
            pooled metrics, CIs, split type and calibration go on the card.
        training_data: What the model was trained on (description, sites, n_studies...);
            default: the synthetic sample archive, counts unknown.
        temperature: Calibration temperature fitted on validation data.
        version: The bundle's version.
        name: The bundle's name; default the model configuration's.
        description: One line on what the model does.

    Raises:
        ValueError: ``class_names`` do not fit the outputs, or ``temperature`` <= 0.
    """
    import torch

    names = class_names_for(config, class_names)
    if temperature is not None and not temperature > 0:
        raise ValueError(f'Argument "temperature" must be positive, got {temperature}')
    out = Path(out_dir)
    (out / MODEL_FILE).parent.mkdir(parents=True, exist_ok=True)
    (out / METADATA_FILE).parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    torch.save(state, out / MODEL_FILE)

    from imaging.models.checkpoints import sha256_of

    metadata = build_model_card(
        config,
        names,
        preprocessing=preprocessing,
        metrics_summary=metrics_summary,
        training_data=training_data,
        temperature=temperature,
        version=version,
        name=name or config.name,
        description=description or config.description,
        model_sha256=sha256_of(out / MODEL_FILE),
        bundle_format=BUNDLE_FORMAT,
        model_file=str(MODEL_FILE),
    )
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return out


def load_bundle(bundle_dir: str | Path) -> LoadedBundle:
    """Read a bundle folder: verify ``model.pt``'s hash, rebuild the model, load the weights.

    Raises:
        CheckpointError: Missing or unreadable files, a model card of another format, a
            hash mismatch, a configuration that no longer builds, or weights whose keys
            or shapes do not fit it.
    """
    from imaging.models.checkpoints import verify_sha256
    from imaging.models.factory import build_model
    from imaging.models.weights import load_pretrained

    folder = Path(bundle_dir)
    metadata = read_metadata(folder)
    card = metadata["mmdx"]
    try:
        config = ModelConfig.model_validate(card["model_config"])
        preprocessing = preprocessing_from_json(card["preprocessing"])
        model = build_model(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(folder / METADATA_FILE, f"invalid model card: {exc}") from exc
    declared = metadata.get("network_data_format", {}).get("inputs", {}).get("image", {})
    expected = list(network_input_shape(config, preprocessing))
    if declared.get("spatial_shape") != expected:
        raise CheckpointError(
            folder / METADATA_FILE,
            f"network_data_format input shape {declared.get('spatial_shape')} does not match "
            f"the {expected} that the model configuration and preprocessing give",
        )
    weights = folder / MODEL_FILE
    if not weights.is_file():
        raise CheckpointError(weights, "the bundle has no model weights")
    verify_sha256(weights, str(card["model_sha256"]))
    load_pretrained(model, weights, format="mmdx", include_head=True)
    model.eval()
    names = card.get("class_names")
    temperature = card.get("calibration", {}).get("temperature")
    return LoadedBundle(
        path=folder,
        model=model,
        config=config,
        metadata=metadata,
        preprocessing=preprocessing,
        class_names=tuple(names) if names else None,
        temperature=float(temperature) if temperature else 1.0,
    )


def read_metadata(bundle_dir: str | Path) -> dict[str, Any]:
    """The model card of a bundle, checked to be this project's format.

    Raises:
        CheckpointError: No card, not JSON, or not an ``mmdx`` bundle card.
    """
    path = Path(bundle_dir) / METADATA_FILE
    if not path.is_file():
        raise CheckpointError(Path(bundle_dir), f"not a model bundle: no {METADATA_FILE}")
    try:
        metadata = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(path, f"unreadable model card: {exc}") from exc
    if not isinstance(metadata, dict) or metadata.get("mmdx", {}).get("format") != BUNDLE_FORMAT:
        raise CheckpointError(path, f"not an {BUNDLE_FORMAT} model card")
    return metadata
