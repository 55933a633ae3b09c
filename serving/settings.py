"""Typed settings: environment (``MMDX_*``) over ``configs/settings.yaml`` over defaults.

Nothing reads the environment at import time: ``get_settings()`` builds the
settings on first call and caches them; tests call ``get_settings.cache_clear()``.
"""

from __future__ import annotations

import os
import secrets
import stat
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from imaging.config_files import REPOSITORY_CONFIGS

MIN_DEID_SECRET_BYTES = 16


def settings_file() -> Path:
    """The YAML settings file: ``MMDX_CONFIG`` if set, else ``configs/settings.yaml``."""
    return Path(os.environ.get("MMDX_CONFIG", REPOSITORY_CONFIGS / "settings.yaml"))


class SynthSettings(BaseModel):
    """Sample-archive generation."""

    workers: int = Field(default=0, ge=0, description="Processes; 0 means one per CPU core.")


class DeidSettings(BaseModel):
    """De-identification (``mmdx deid``)."""

    secret: SecretStr | None = Field(
        default=None,
        description="Key of the UID and pseudonym hashes (MMDX_DEID__SECRET); when unset, "
        "a random key is created once in {data_dir}/secrets/deid.key.",
    )
    retain_longitudinal_temporal: bool = Field(
        default=True, description="Keep dates and times (the Full Dates Option)."
    )

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < MIN_DEID_SECRET_BYTES:
            raise ValueError(f"must be at least {MIN_DEID_SECRET_BYTES} bytes")
        return value


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
    deid: DeidSettings = DeidSettings()

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


def load_deid_secret(settings: Settings) -> bytes:
    """The de-identification key: ``deid.secret`` if set, else the installation's key file.

    The key file ``{data_dir}/secrets/deid.key`` is created on first use with 32
    random bytes (hex), readable by its owner only (mode 0600), and reused after, so
    pseudonyms and UIDs stay the same from run to run. No default key exists.

    Raises:
        PermissionError: The key file is readable by other users.
        ValueError: The key file is empty or too short.
    """
    if settings.deid.secret is not None:
        return settings.deid.secret.get_secret_value().encode()
    path = settings.data_dir / "secrets" / "deid.key"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        # O_EXCL: two processes starting at once cannot both create (and differ).
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(descriptor, "w") as key_file:
            key_file.write(secrets.token_hex(32) + "\n")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise PermissionError(f"{path} is readable by other users (mode {mode:o}); chmod 600 it")
    key = path.read_text().strip().encode()
    if len(key) < MIN_DEID_SECRET_BYTES:
        raise ValueError(f"{path} holds {len(key)} bytes, fewer than {MIN_DEID_SECRET_BYTES}")
    return key
