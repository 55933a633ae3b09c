"""Settings: environment over YAML over defaults, validated at the boundary."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from serving.settings import Settings, get_settings


@pytest.fixture
def yaml_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    config = tmp_path / "settings.yaml"
    config.write_text("http_port: 8100\ndata_dir: /srv/mmdx\nsynth:\n  workers: 3\n")
    monkeypatch.setenv("MMDX_CONFIG", str(config))
    for name in ("MMDX_HTTP_PORT", "MMDX_DATA_DIR", "MMDX_SYNTH__WORKERS"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield config
    get_settings.cache_clear()


def test_repository_defaults_match_the_design() -> None:
    settings = Settings()
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8000)
    assert (settings.dicom_port, settings.dicom_ae_title) == (11112, "MMDX")


def test_yaml_overrides_defaults(yaml_config: Path) -> None:
    settings = get_settings()
    assert settings.http_port == 8100
    assert settings.data_dir == Path("/srv/mmdx")
    assert settings.synth.workers == 3
    assert settings.dicom_port == 11112  # untouched by the file


def test_environment_overrides_yaml(yaml_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMDX_HTTP_PORT", "9001")
    monkeypatch.setenv("MMDX_SYNTH__WORKERS", "1")
    settings = Settings()
    assert settings.http_port == 9001
    assert settings.synth.workers == 1
    assert settings.data_dir == Path("/srv/mmdx")


def test_invalid_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMDX_HTTP_PORT", "70000")
    with pytest.raises(ValidationError, match="http_port"):
        Settings()


def test_unknown_yaml_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("htp_port: 8100\n")
    monkeypatch.setenv("MMDX_CONFIG", str(config))
    with pytest.raises(ValidationError, match="htp_port"):
        Settings()
