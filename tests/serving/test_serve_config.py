"""configs/serve/mmdx.yaml: a Serve config ``serve deploy`` accepts, for the graph build_app binds.

The application graph is built the way ``serve build`` and ``serve deploy`` build it
(Ray's ``build_app``), without starting Ray.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ray._common.utils import import_attr
from ray.serve._private.build_app import build_app as build_serve_app
from ray.serve.deployment import Deployment
from ray.serve.schema import ServeDeploySchema

from imaging.config_files import REPOSITORY_CONFIGS
from serving.deployments import app as mmdx_app
from serving.settings import ModelSettings, Settings

CONFIG = REPOSITORY_CONFIGS / "serve" / "mmdx.yaml"
MODEL_DEPLOYMENTS = ["MRIClassifier", "EchoClassifier", "SimilarCases"]


@pytest.fixture(autouse=True)
def _settings_from_files_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded default: configs/settings.yaml, no MMDX_* overrides from the caller."""
    import os

    for name in [n for n in os.environ if n.startswith("MMDX_")]:
        monkeypatch.delenv(name)


def load_config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    return loaded


def deployments_in_config() -> dict[str, dict[str, Any]]:
    (application,) = load_config()["applications"]
    return {entry["name"]: entry for entry in application["deployments"]}


def built_deployments(tmp_path: Path) -> dict[str, Deployment]:
    """What build_app binds with both bundles and a case index configured."""
    (tmp_path / "case_index").mkdir()
    settings = Settings(
        data_dir=tmp_path,
        models=ModelSettings(mri_bundle=tmp_path / "mri_ad", echo_bundle=tmp_path / "echo_ef"),
    )
    built = build_serve_app(mmdx_app.build_app(settings=settings), name=mmdx_app.APP_NAME)
    assert built.ingress_deployment_name == "Ingress"
    return {deployment.name: deployment for deployment in built.deployments}


def actor_options(deployment: Deployment) -> dict[str, Any]:
    return dict(deployment.ray_actor_options or {})


def entry_resources(deployment: Deployment) -> dict[str, Any]:
    """The actor options but the runtime environment: the resources a replica asks for."""
    return {k: v for k, v in actor_options(deployment).items() if k != "runtime_env"}


def test_config_validates_against_serve_deploy_schema() -> None:
    schema = ServeDeploySchema.model_validate(load_config())

    assert schema.http_options.host == "127.0.0.1"
    assert schema.http_options.port == 8000
    (application,) = schema.applications
    assert application.name == mmdx_app.APP_NAME
    assert application.route_prefix == "/"
    assert sorted(application.runtime_env["env_vars"]) == [
        "MMDX_DATA_DIR",
        "MMDX_MODELS__CLIP_CONFIG",
        "MMDX_MODELS__ECHO_BUNDLE",
        "MMDX_MODELS__MRI_BUNDLE",
    ]
    # Every value is absolute or a name: a relative path would depend on a worker's cwd.
    for name, value in application.runtime_env["env_vars"].items():
        assert name == "MMDX_MODELS__CLIP_CONFIG" or Path(value).is_absolute(), name


def test_import_path_resolves_to_the_app_builder() -> None:
    (application,) = load_config()["applications"]

    assert application["import_path"] == "serving.deployments.app:build_app"
    assert import_attr(application["import_path"]) is mmdx_app.build_app


def test_deployment_names_are_those_build_app_binds(tmp_path: Path) -> None:
    built = built_deployments(tmp_path)

    assert sorted(deployments_in_config()) == sorted([*MODEL_DEPLOYMENTS, "Ingress"])
    assert sorted(built) == sorted(deployments_in_config())
    assert sorted(mmdx_app.CLASSIFIER_NAMES.values()) == ["EchoClassifier", "MRIClassifier"]
    assert mmdx_app.SIMILAR_CASES_NAME == "SimilarCases"


def test_options_equal_build_apps_under_the_default_settings(tmp_path: Path) -> None:
    built = built_deployments(tmp_path)

    for name, entry in deployments_in_config().items():
        deployment = built[name]
        assert entry["num_replicas"] == deployment.num_replicas == 1, name
        assert entry["max_ongoing_requests"] == deployment.max_ongoing_requests == 16, name
        assert entry["max_queued_requests"] == deployment.max_queued_requests, name
        # The code adds the replicas' runtime_env; this file gives it once, per application.
        assert entry["ray_actor_options"] == entry_resources(deployment), name
    assert built["Ingress"].max_queued_requests == 64
    assert entry_resources(built["MRIClassifier"]) == {"num_cpus": 0.5, "num_gpus": 0.0}


def test_replicas_get_the_applications_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under `serve deploy`, build_app runs with the file's env_vars and passes them on."""
    (application,) = load_config()["applications"]
    env_vars = application["runtime_env"]["env_vars"]
    for name, value in env_vars.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "case_index").mkdir()
    settings = Settings(data_dir=tmp_path)  # the file's data folder does not exist here
    built = build_serve_app(mmdx_app.build_app(settings=settings), name=mmdx_app.APP_NAME)

    for deployment in built.deployments:
        replica_env = actor_options(deployment)["runtime_env"]["env_vars"]
        assert replica_env == {**env_vars, "MMDX_DATA_DIR": str(tmp_path)}, deployment.name


def test_user_config_batching_matches_the_settings_and_reaches_reconfigure(
    tmp_path: Path,
) -> None:
    built = built_deployments(tmp_path)
    serve_settings = Settings().serve
    entries = deployments_in_config()

    for name in MODEL_DEPLOYMENTS:
        assert entries[name]["user_config"] == {
            "max_batch_size": serve_settings.max_batch_size,
            "batch_wait_timeout_s": serve_settings.batch_wait_timeout_s,
        }
        # Serve refuses a user_config for a deployment without reconfigure().
        assert callable(getattr(built[name].func_or_class, "reconfigure", None)), name
    assert "user_config" not in entries["Ingress"]
