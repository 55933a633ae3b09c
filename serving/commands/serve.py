"""``mmdx serve``: the whole service on one machine (or attached to a Ray cluster).

Starts Ray (loopback, token auth) or attaches to ``--address``, deploys the Serve
application (HTTP ingress and model deployments, :mod:`serving.deployments.app`), and
runs the ingest runtime in this process: the DICOM listener and the job runner, whose
pipeline calls the model deployments by handle with each study's store path.
"""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from serving.pipeline.study_pipeline import StudyPipeline
    from serving.settings import Settings
    from serving.store import StudyStore

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def serve_command(
    address: Annotated[
        str | None,
        typer.Option("--address", help="Attach to this Ray cluster instead of starting one."),
    ] = None,
    num_cpus: Annotated[
        int | None, typer.Option("--num-cpus", min=1, help="CPUs a local Ray may use.")
    ] = None,
) -> None:
    """Run the service: HTTP API and DICOMweb, DICOM listener, study processing.

    HTTP on MMDX_HTTP_HOST:MMDX_HTTP_PORT (127.0.0.1:8000), DICOM on MMDX_DICOM_HOST:
    MMDX_DICOM_PORT (127.0.0.1:11112, AE title MMDX). Models come from models.mri_bundle
    and models.echo_bundle, similar cases from DATA_DIR/case_index. Stops on Ctrl-C or
    SIGTERM. Research software: not for diagnostic use.
    """
    from serving.ray_runtime import start_ray, stop_ray
    from serving.settings import get_settings

    logging.basicConfig(level=logging.INFO, format=_LOG_FORMAT)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    settings = get_settings()
    # Ray reads its auth mode at import: nothing may import ray before start_ray.
    start_ray(settings, address=address, num_cpus=num_cpus)
    from serving.deployments.app import APP_NAME

    try:
        _serve(settings)
    finally:
        stop_ray(attached=address is not None, app_name=APP_NAME)


def _serve(settings: Settings) -> None:
    from ray import serve

    from serving.deployments.app import APP_NAME, build_app
    from serving.runtime import IngestRuntime
    from serving.store import StudyStore

    serve.start(http_options={"host": settings.http_host, "port": settings.http_port})
    serve.run(build_app(settings=settings), name=APP_NAME, route_prefix="/")
    pipeline = remote_pipeline(settings, StudyStore(settings.store_dir))
    runtime = IngestRuntime(settings, process=pipeline.process)
    try:
        runtime.start()
    except OSError as exc:
        typer.echo(f"error: cannot start the DICOM listener: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from exc
    models = pipeline.model_versions()
    typer.echo(
        f"mmdx serving: http://{settings.http_host}:{settings.http_port}/ "
        f"(health: /healthz), DICOM AE {runtime.listener.ae_title} on "
        f"{settings.dicom_host}:{runtime.port}; models: "
        f"{', '.join(f'{name} {version}' for name, version in models.items()) or 'none'}; "
        "stop with Ctrl-C or SIGTERM. Not for diagnostic use."
    )
    try:
        signum = runtime.wait()
    finally:
        runtime.stop()
    typer.echo(f"mmdx stopped ({'no signal' if signum is None else signal.Signals(signum).name})")


def remote_pipeline(settings: Settings, store: StudyStore) -> StudyPipeline:
    """The study pipeline with the deployed models behind handles."""
    from ray import serve

    from serving.deployments.app import APP_NAME, CLASSIFIER_NAMES, SIMILAR_CASES_NAME
    from serving.deployments.remote import RemoteCaseFinder, RemoteClassifier
    from serving.pipeline.study_pipeline import SeriesClassifier, StudyPipeline

    models = settings.models
    classifiers: dict[str, SeriesClassifier] = {
        modality: RemoteClassifier(serve.get_deployment_handle(name, app_name=APP_NAME))
        for modality, name in CLASSIFIER_NAMES.items()
        if (models.mri_bundle if modality == "MR" else models.echo_bundle) is not None
    }
    finder = None
    if (settings.data_dir / "case_index").is_dir():
        finder = RemoteCaseFinder(
            serve.get_deployment_handle(SIMILAR_CASES_NAME, app_name=APP_NAME)
        )
    return StudyPipeline.with_settings(settings, store, classifiers=classifiers, finder=finder)
