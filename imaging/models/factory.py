"""One factory for every network: ``create_model(name, pretrained=KEY_OR_PATH)``.

Architectures are data (``configs/models/NAME.yaml``, see
:class:`imaging.models.config.ModelConfig`); this module reads them and builds the
network. Importing it is cheap: torch, MONAI and torchvision are imported when a model
is built.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imaging.config_files import REPOSITORY_CONFIGS, load_yaml_model
from imaging.models.config import ModelConfig

if TYPE_CHECKING:
    from imaging.models.networks import BackboneHeadModel
    from imaging.models.weights import WeightsRegistry

DEFAULT_MODEL_CONFIGS = REPOSITORY_CONFIGS / "models"


def list_models(config_dir: Path | None = None) -> list[str]:
    """Names of the model configurations in ``config_dir`` (default ``configs/models``), sorted."""
    folder = Path(config_dir) if config_dir is not None else DEFAULT_MODEL_CONFIGS
    return sorted(path.stem for path in folder.glob("*.yaml"))


def load_model_config(name: str, config_dir: Path | None = None) -> ModelConfig:
    """The configuration ``name`` from ``config_dir`` (default ``configs/models``).

    Raises:
        ValueError: No such model (the message lists the known ones), or an invalid file,
            or a file whose ``name`` differs from its file name.
    """
    folder = Path(config_dir) if config_dir is not None else DEFAULT_MODEL_CONFIGS
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f'Unknown model "{name}"; known models: {list_models(folder)}')
    config = load_yaml_model(path, ModelConfig, what="model configuration")
    if config.name != name:
        raise ValueError(f'{path}: "name" is "{config.name}", expected the file name "{name}"')
    return config


def apply_overrides(config: ModelConfig, overrides: dict[str, Any]) -> ModelConfig:
    """``config`` with ``overrides``: top-level fields by name, anything else into ``settings``.

    Raises:
        ValueError: The result is not a valid configuration.
    """
    if not overrides:
        return config
    data = config.model_dump()
    for key, value in overrides.items():
        if key in ModelConfig.model_fields and key != "settings":
            data[key] = value
        else:
            data["settings"][key] = value
    try:
        return ModelConfig.model_validate(data)
    except Exception as exc:
        raise ValueError(f'Overrides {overrides} make "{config.name}" invalid: {exc}') from exc


def build_model(config: ModelConfig) -> BackboneHeadModel:
    """The randomly initialised network ``config`` describes (``backbone`` and ``head``).

    Raises:
        ValueError: A setting the architecture's builder does not take.
    """
    builder = _builders()[config.architecture]
    try:
        return builder(config)
    except TypeError as exc:
        raise ValueError(
            f'{config.name}: settings do not fit "{config.architecture}": {exc}'
        ) from exc


def create_model(
    name: str,
    *,
    pretrained: str | Path | None = None,
    registry: WeightsRegistry | None = None,
    config_dir: Path | None = None,
    **overrides: Any,
) -> BackboneHeadModel:
    """Build model ``name`` and, given ``pretrained``, load a backbone into it.

    Args:
        name: A configuration in ``config_dir`` (see :func:`list_models`).
        pretrained: A weights registry key or a checkpoint path; the head stays new.
        registry: The weights registry; default ``configs/weights.yaml``.
        config_dir: Folder of model configurations; default ``configs/models``.
        **overrides: Configuration fields (``num_classes``, ``dropout``) or settings.

    Raises:
        ValueError: Unknown model, invalid overrides or settings.
        CheckpointError: The weights are missing, fail their checksum or do not fit.
    """
    config = apply_overrides(load_model_config(name, config_dir), overrides)
    model = build_model(config)
    if pretrained is not None:
        from imaging.models.weights import load_pretrained

        load_pretrained(model, pretrained, registry=registry, architecture=config.name)
    return model


def _builders() -> dict[str, Callable[[ModelConfig], BackboneHeadModel]]:
    from imaging.models.echo import build_r2plus1d_18, build_video_resnet_r2plus1d
    from imaging.models.networks import build_monai_densenet121, build_monai_resnet

    return {
        "monai_densenet121": build_monai_densenet121,
        "monai_resnet": build_monai_resnet,
        "r2plus1d_18": build_r2plus1d_18,
        "video_resnet_r2plus1d": build_video_resnet_r2plus1d,
    }
