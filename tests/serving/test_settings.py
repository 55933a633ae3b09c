"""Settings: environment over YAML over defaults, validated at the boundary."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from serving.settings import Settings, get_settings, load_deid_secret


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


def test_deid_secret_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMDX_DEID__SECRET", "an-environment-secret-123")
    settings = Settings(data_dir=tmp_path)
    assert load_deid_secret(settings) == b"an-environment-secret-123"
    assert "an-environment-secret" not in repr(settings)
    assert not (tmp_path / "secrets").exists()


def test_deid_key_file_is_created_once_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MMDX_DEID__SECRET", raising=False)
    settings = Settings(data_dir=tmp_path)
    assert settings.deid.retain_longitudinal_temporal is True
    first = load_deid_secret(settings)
    key_file = tmp_path / "secrets" / "deid.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(first) == 64
    assert load_deid_secret(settings) == first
    assert load_deid_secret(Settings(data_dir=tmp_path / "other")) != first


def test_deid_key_file_readable_by_others_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MMDX_DEID__SECRET", raising=False)
    settings = Settings(data_dir=tmp_path)
    load_deid_secret(settings)
    (tmp_path / "secrets" / "deid.key").chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        load_deid_secret(settings)


def test_short_deid_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMDX_DEID__SECRET", "short")
    with pytest.raises(ValidationError, match=r"deid\.secret"):
        Settings()
