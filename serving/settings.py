"""Typed settings: environment (``MMDX_*``) over ``configs/settings.yaml`` over defaults.

Nothing reads the environment at import time: ``get_settings()`` builds the
settings on first call and caches them; tests call ``get_settings.cache_clear()``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

REPOSITORY_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def settings_file() -> Path:
    """The YAML settings file: ``MMDX_CONFIG`` if set, else ``configs/settings.yaml``."""
    return Path(os.environ.get("MMDX_CONFIG", REPOSITORY_CONFIGS / "settings.yaml"))


class SynthSettings(BaseModel):
    """Sample-archive generation."""

    workers: int = Field(default=0, ge=0, description="Processes; 0 means one per CPU core.")


class Settings(BaseSettings):
    """Settings of one mmdx installation (the embedded default unless told otherwise)."""

    model_config = SettingsConfigDict(env_prefix="MMDX_", env_nested_delimiter="__", extra="forbid")

    data_dir: Path = Field(default=Path("data"), description="Study store, catalog, index, models.")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=1, le=65535)
    dicom_host: str = "127.0.0.1"
    dicom_port: int = Field(default=11112, ge=1, le=65535)
    dicom_ae_title: str = Field(default="MMDX", min_length=1, max_length=16)
    synth: SynthSettings = SynthSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_settings = YamlConfigSettingsSource(settings_cls, yaml_file=settings_file())
        return (init_settings, env_settings, yaml_settings)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, built once."""
    return Settings()
