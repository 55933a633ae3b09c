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
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
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


class ListenerSettings(BaseModel):
    """The DICOM listener (C-ECHO and C-STORE SCP)."""

    allowed_calling_ae_titles: list[str] = Field(
        default_factory=list,
        description="Calling AE titles accepted; empty accepts any (the listener binds "
        "to loopback by default, so only local peers can reach it).",
    )
    stable_after_s: float = Field(
        default=10.0, gt=0, description="A study is processed once no instance came for this long."
    )
    max_pdu_bytes: int = Field(default=262_144, ge=4096, description="Maximum PDU we receive.")


class StowSettings(BaseModel):
    """STOW-RS request limits."""

    max_request_bytes: int = Field(
        default=2 * 1024**3, ge=1024, description="Largest multipart request body accepted."
    )
    max_instance_bytes: int = Field(
        default=1024**3, ge=1024, description="Largest single DICOM part accepted."
    )


class DestinationSettings(BaseModel):
    """Where result SRs are sent: nowhere, a DICOM peer (C-STORE) or a STOW-RS endpoint."""

    kind: Literal["none", "cstore", "stow"] = "none"
    host: str = "127.0.0.1"
    port: int = Field(default=4242, ge=1, le=65535)
    ae_title: str = Field(default="ORTHANC", min_length=1, max_length=16)
    stow_url: str | None = Field(default=None, description="Base DICOMweb URL for kind=stow.")


class ModelSettings(BaseModel):
    """What the service runs on each study."""

    mri_bundle: Path | None = Field(
        default=None, description="Model bundle for MR studies (AD vs CN); none: not classified."
    )
    echo_bundle: Path | None = Field(
        default=None, description="Model bundle for US studies (EF, reduced EF)."
    )
    clip_config: str = Field(
        default="clip_vit_b32", description="Embedder: a name in configs/clip or a file."
    )
    clip_checkpoint: Path | None = Field(
        default=None, description="Local open_clip state dict (e.g. from mmdx clip-train)."
    )
    similar_cases: int = Field(default=10, ge=1, le=100, description="Most similar cases shown.")
    explain: bool = Field(default=True, description="Compute Grad-CAM heat maps.")


class AdmissionSettings(BaseModel):
    """Load shedding at the HTTP ingress (:mod:`serving.api.admission`), per ingress replica.

    Health checks and the page's static files are never counted nor refused.
    """

    max_concurrent: int = Field(
        default=8, ge=0, description="Requests handled at once; 0 turns admission control off."
    )
    max_waiting: int = Field(default=4, ge=0, description="Requests waiting for a free slot.")
    wait_s: float = Field(
        default=2.0, ge=0, description="Longest wait for a slot before answering 503."
    )
    retry_after_s: int = Field(
        default=1, ge=1, description="Retry-After of a refused request, in whole seconds."
    )


class ServeSettings(BaseModel):
    """Ray Serve topology knobs (configs/serve/*.yaml carries the same for `serve deploy`)."""

    max_batch_size: int = Field(default=8, ge=1, description="Studies per model call.")
    batch_wait_timeout_s: float = Field(
        default=0.05, ge=0, description="How long a batch waits to fill."
    )
    num_gpus_per_model: float = Field(
        default=0.0, ge=0, le=1, description="Fraction of a GPU per model replica."
    )
    num_cpus_per_replica: float = Field(
        default=0.5,
        ge=0,
        description="Logical CPUs Ray reserves per replica; 0.5 lets the four replicas of "
        "the embedded default share a 2-core machine.",
    )
    max_ongoing_requests: int = Field(default=16, ge=1)
    max_queued_requests: int = Field(
        default=64, ge=-1, description="Beyond this the ingress answers 503 (-1: unbounded)."
    )
    admission: AdmissionSettings = AdmissionSettings()

    @model_validator(mode="after")
    def _admission_below_serve_limit(self) -> ServeSettings:
        # Serve's own 503 only comes once a replica holds max_ongoing_requests; ours must
        # answer first and leave a slot for /healthz (see serving.api.admission).
        admission = self.admission
        held = admission.max_concurrent + admission.max_waiting
        if admission.max_concurrent and held >= self.max_ongoing_requests:
            raise ValueError(
                f"admission.max_concurrent + admission.max_waiting ({held}) must be below "
                f"max_ongoing_requests ({self.max_ongoing_requests})"
            )
        return self


class Settings(BaseSettings):
    """Settings of one mmdx installation (the embedded default unless told otherwise)."""

    model_config = SettingsConfigDict(env_prefix="MMDX_", env_nested_delimiter="__", extra="forbid")

    data_dir: Path = Field(default=Path("data"), description="Study store, catalog, index, models.")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=1, le=65535)
    dicom_host: str = "127.0.0.1"
    dicom_port: int = Field(default=11112, ge=1, le=65535)
    dicom_ae_title: str = Field(default="MMDX", min_length=1, max_length=16)
    catalog_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the catalog; default sqlite:///{data_dir}/catalog.sqlite. "
        "PostgreSQL: postgresql+psycopg://user@host/db.",
    )
    synth: SynthSettings = SynthSettings()
    deid: DeidSettings = DeidSettings()
    listener: ListenerSettings = ListenerSettings()
    stow: StowSettings = StowSettings()
    destination: DestinationSettings = DestinationSettings()
    models: ModelSettings = ModelSettings()
    serve: ServeSettings = ServeSettings()

    @property
    def resolved_catalog_url(self) -> str:
        """The catalog URL, defaulting to a SQLite file in the data directory."""
        return self.catalog_url or f"sqlite:///{self.data_dir / 'catalog.sqlite'}"

    @property
    def store_dir(self) -> Path:
        """Where received DICOM instances are kept (one folder per study)."""
        return self.data_dir / "store"

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
    path = ensure_secret_file(settings.data_dir / "secrets" / "deid.key")
    key = path.read_text().strip().encode()
    if len(key) < MIN_DEID_SECRET_BYTES:
        raise ValueError(f"{path} holds {len(key)} bytes, fewer than {MIN_DEID_SECRET_BYTES}")
    return key


def ensure_secret_file(path: Path) -> Path:
    """Create ``path`` once with 32 random bytes (hex), mode 0600; check its mode after.

    Raises:
        PermissionError: The file is readable by other users.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        # O_EXCL: two processes starting at once cannot both create (and differ).
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(descriptor, "w") as secret_file:
            secret_file.write(secrets.token_hex(32) + "\n")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise PermissionError(f"{path} is readable by other users (mode {mode:o}); chmod 600 it")
    return path
