"""The ``mmdx`` Serve application: the HTTP ingress and the model deployments.

``build_app`` is the ``import_path`` of ``configs/serve/mmdx.yaml``, so ``serve build`` /
``serve deploy`` and ``mmdx serve`` deploy the same graph. Replicas read their settings
from the environment (``MMDX_*``, set through the config's ``runtime_env`` on a cluster)
and ``configs/settings.yaml``, as every other part of mmdx does.

Topology (deployment names are what the job runner looks up by handle):

- ``Ingress``: the FastAPI app (JSON API, DICOMweb, web page, health), built on its
  replica; it reads case detail from the case index itself (LanceDB, read-only);
- ``MRIClassifier`` / ``EchoClassifier``: one per configured bundle, batched;
- ``SimilarCases``: embedder and case index, batched, when an index exists.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

from fastapi import FastAPI
from ray import serve
from ray.serve import Application
from ray.serve.deployment import Deployment

from serving.deployments.models import ClassifierDeployment, SimilarCasesDeployment
from serving.settings import Settings, get_settings

APP_NAME = "mmdx"
CLASSIFIER_NAMES = {"MR": "MRIClassifier", "US": "EchoClassifier"}
SIMILAR_CASES_NAME = "SimilarCases"


def build_http_app() -> FastAPI:
    """The ingress replica's FastAPI app, over the settings' store, catalog and index."""
    from serving.api.app import create_app
    from serving.api.context import ServiceContext
    from serving.deployments.remote import RemoteCaseSearch
    from serving.web.case_lookup import open_case_lookup

    settings = get_settings()
    case_search = None
    if (settings.data_dir / "case_index").is_dir():
        handle = serve.get_deployment_handle(SIMILAR_CASES_NAME, app_name=APP_NAME)
        case_search = RemoteCaseSearch(handle)
    context = ServiceContext.from_settings(
        settings, case_search=case_search, cases=open_case_lookup(settings)
    )
    return create_app(context)


@serve.deployment(name="Ingress")
@serve.ingress(build_http_app)
class Ingress:
    """HTTP entry point. The model deployments are bound here so that Serve deploys them
    with the application; the app and the job runner reach them by name."""

    def __init__(self, **model_deployments: Any) -> None:
        self._model_deployments = model_deployments


def build_app(args: dict[str, Any] | None = None, settings: Settings | None = None) -> Application:
    """Bind the application the settings describe (``args`` is unused; settings rule)."""
    settings = settings or get_settings()
    serve_settings = settings.serve
    batching = {
        "max_batch_size": serve_settings.max_batch_size,
        "batch_wait_timeout_s": serve_settings.batch_wait_timeout_s,
    }
    runtime_env = {"env_vars": replica_environment(settings)}
    actor_options = {
        "num_cpus": serve_settings.num_cpus_per_replica,
        "num_gpus": serve_settings.num_gpus_per_model,
        "runtime_env": runtime_env,
    }
    models = settings.models
    bound: dict[str, Any] = {}
    for modality, bundle in (("MR", models.mri_bundle), ("US", models.echo_bundle)):
        if bundle is not None:
            name = CLASSIFIER_NAMES[modality]
            bound[name] = (
                _deployment(ClassifierDeployment)
                .options(
                    name=name,
                    ray_actor_options=actor_options,
                    max_ongoing_requests=serve_settings.max_ongoing_requests,
                )
                .bind(str(bundle.resolve()), batching=batching)
            )
    index_dir = settings.data_dir / "case_index"
    if index_dir.is_dir():
        bound[SIMILAR_CASES_NAME] = (
            _deployment(SimilarCasesDeployment)
            .options(
                ray_actor_options=actor_options,
                max_ongoing_requests=serve_settings.max_ongoing_requests,
            )
            .bind(
                models.clip_config,
                str(index_dir.resolve()),
                clip_checkpoint=str(models.clip_checkpoint) if models.clip_checkpoint else None,
                k=models.similar_cases,
                batching=batching,
            )
        )
    return (
        _deployment(Ingress)
        .options(
            ray_actor_options={
                "num_cpus": serve_settings.num_cpus_per_replica,
                "runtime_env": runtime_env,
            },
            max_ongoing_requests=serve_settings.max_ongoing_requests,
            max_queued_requests=serve_settings.max_queued_requests,
            # Serve's own 503 (behind serving.api.admission's) tells clients when to retry too.
            backpressure_config={"retry_after_s": serve_settings.admission.retry_after_s},
        )
        .bind(**bound)
    )


def replica_environment(settings: Settings) -> dict[str, str]:
    """The ``MMDX_*`` variables every replica gets, so that it sees the driver's settings.

    Replicas start from the raylet's environment, which on an existing cluster is not
    this process's, and from another working folder: the data folder and the settings
    file go as absolute paths. Secrets (``*SECRET*``) stay out: no replica needs them,
    and a runtime environment is readable by whoever may read the cluster's state.
    """
    environment = {
        name: value
        for name, value in os.environ.items()
        if name.startswith("MMDX_") and "SECRET" not in name
    }
    environment["MMDX_DATA_DIR"] = str(settings.data_dir.resolve())
    if "MMDX_CONFIG" in environment:
        environment["MMDX_CONFIG"] = str(Path(environment["MMDX_CONFIG"]).resolve())
    return environment


def _deployment(decorated: object) -> Deployment:
    """A ``@serve.deployment`` class as what it is at run time (its stubs say a class)."""
    return cast(Deployment, decorated)
