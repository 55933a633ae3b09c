"""CLIP embedder configurations (``configs/clip/*.yaml``): architecture, weights, inputs.

A configuration names exactly one model source: an open_clip built-in architecture
(``architecture: ViT-B-32``), an open_clip model configuration written inline
(``model_cfg: {embed_dim, vision_cfg, text_cfg}``, used for the tiny test model), or
a folder holding an open_clip export (``local_dir``: its ``open_clip_config.json`` and
tokenizer files, e.g. BiomedCLIP placed by the user). Weights always come from
``checkpoint``, a local file whose ``sha256`` must be recorded: an export's weights file
is named there too, so nothing loads unverified. Relative paths resolve against the
configuration file's folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from imaging.config_files import REPOSITORY_CONFIGS, load_yaml_model

CLIP_CONFIGS = REPOSITORY_CONFIGS / "clip"
DEFAULT_CLIP_CONFIG = "clip_vit_b32"
_HEX = re.compile(r"[0-9a-f]{8,64}")


class ClipPreprocess(BaseModel):
    """How a grey slice or frame in [0, 1] becomes the model's input."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_size: int = Field(ge=8)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @field_validator("std")
    @classmethod
    def _positive_std(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(value) <= 0:
            raise ValueError(f"every std must be positive, got {value}")
        return value


class ClipSampling(BaseModel):
    """Which images of a study are embedded and pooled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slices_per_plane: int = Field(default=3, ge=1, le=32)
    # Fraction of each axis the slices span, centred on the middle of the volume.
    slice_spread: float = Field(default=0.3, ge=0.0, le=0.9)
    frames: int = Field(default=8, ge=1, le=128)


class ClipConfig(BaseModel):
    """One embedder configuration; see the module docstring for the model sources."""

    # ``model_cfg`` is open_clip's own key name; pydantic reserves the ``model_`` prefix.
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    name: str
    description: str = ""
    architecture: str | None = None
    model_cfg: dict[str, Any] | None = None
    local_dir: Path | None = None
    checkpoint: Path | None = None
    sha256: str | None = None
    init_seed: int = 0
    preprocess: ClipPreprocess
    sampling: ClipSampling = ClipSampling()
    batch_size: int = Field(default=32, ge=1)

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None and not _HEX.fullmatch(value.lower()):
            raise ValueError(f"sha256 must be 8 to 64 hex digits, got {value!r}")
        return None if value is None else value.lower()

    @model_validator(mode="after")
    def _one_source(self) -> ClipConfig:
        sources = [
            name
            for name, value in (
                ("architecture", self.architecture),
                ("model_cfg", self.model_cfg),
                ("local_dir", self.local_dir),
            )
            if value is not None
        ]
        if len(sources) != 1:
            raise ValueError(
                "exactly one of architecture, model_cfg, local_dir must be given, "
                f"got {sources or 'none'}"
            )
        if self.model_cfg is not None:
            missing = {"embed_dim", "vision_cfg", "text_cfg"} - set(self.model_cfg)
            if missing:
                raise ValueError(f"model_cfg lacks {sorted(missing)}")
        return self

    @property
    def source(self) -> str:
        """The model source in words, for provenance."""
        if self.architecture is not None:
            return f"open_clip:{self.architecture}"
        if self.local_dir is not None:
            return f"local-dir:{self.local_dir}"
        return f"model_cfg:{self.name}"


def list_clip_configs(folder: Path = CLIP_CONFIGS) -> list[str]:
    """Names of the configurations in ``folder`` (the repository's ``configs/clip``)."""
    return sorted(path.stem for path in Path(folder).glob("*.yaml"))


def load_clip_config(name_or_path: str | Path) -> ClipConfig:
    """Load a configuration by name (``configs/clip/NAME.yaml``) or from a YAML file.

    Relative ``local_dir`` and ``checkpoint`` paths are resolved against the file's folder.

    Raises:
        ValueError: No such configuration (the message lists the known ones), or invalid.
    """
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = CLIP_CONFIGS / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ValueError(
                f'Argument "name" must be a CLIP configuration, one of '
                f"{list_clip_configs()}, or a YAML file; got {str(name_or_path)!r}"
            )
    elif not path.is_file():
        raise ValueError(f'Argument "name": no such configuration file {path}')
    config = load_yaml_model(path, ClipConfig, what="CLIP configuration")
    base = path.resolve().parent
    updates = {
        field: base / value
        for field, value in (("local_dir", config.local_dir), ("checkpoint", config.checkpoint))
        if value is not None and not value.is_absolute()
    }
    return config.model_copy(update=updates) if updates else config
