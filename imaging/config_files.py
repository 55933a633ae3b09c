"""Typed YAML configuration files under ``configs/`` (presets, selection rules, models).

Imaging code never reads the service's settings; callers pass a path or take the
repository's file. YAML holds data only: it is parsed with ``yaml.safe_load`` and
validated by a pydantic model, and any error names the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

REPOSITORY_CONFIGS = Path(__file__).resolve().parent.parent / "configs"

ConfigModel = TypeVar("ConfigModel", bound=BaseModel)


def load_yaml_model(
    path: Path, model: type[ConfigModel], *, what: str, section: str | None = None
) -> ConfigModel:
    """Validate ``path`` (or its top-level ``section``) as ``model``; ``what`` names it in errors.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: Not YAML, no such section, or invalid; the message names file and field.
    """
    import yaml

    with Path(path).open() as handle:
        try:
            data = yaml.safe_load(handle)
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    where = f"{path}"
    if section is not None:
        if not isinstance(data, dict) or section not in data:
            raise ValueError(f"{path}: no '{section}' section")
        data, where = data[section], f"{path} section '{section}'"
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"{where}: invalid {what}: {exc}") from exc
