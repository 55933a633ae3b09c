"""``mmdx listen``: the DICOM listener and the ingest behind it, in the foreground.

An ingest node: C-ECHO, C-STORE and C-FIND on the configured AE title, host and port,
instances stored durably and catalogued, stable studies queued as jobs for a processing
node. Stops cleanly on SIGTERM or Ctrl-C. Registered by the CLI as ``app.command()(listen)``.
"""

from __future__ import annotations

import logging
import signal

import typer

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def listen() -> None:
    """Receive DICOM instances (C-STORE) and answer C-ECHO and C-FIND until SIGTERM or Ctrl-C.

    The AE title, host, port, allowed calling AE titles and data folder come from the
    settings (MMDX_DICOM_PORT, MMDX_DATA_DIR, ... or configs/settings.yaml).
    """
    from serving.runtime import IngestRuntime
    from serving.settings import get_settings

    logging.basicConfig(level=logging.INFO, format=_LOG_FORMAT)
    # pynetdicom logs every request at INFO: thousands of lines a minute under load.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    settings = get_settings()
    runtime = IngestRuntime(settings)
    try:
        runtime.start()
    except OSError as exc:
        typer.echo(
            f"error: cannot listen on {settings.dicom_host}:{settings.dicom_port}: "
            f"{exc.strerror or exc}",
            err=True,
        )
        raise typer.Exit(1) from exc
    typer.echo(
        f"mmdx listening: AE title {runtime.listener.ae_title} on "
        f"{settings.dicom_host}:{runtime.port}, store {settings.store_dir}; "
        "stop with Ctrl-C or SIGTERM"
    )
    try:
        signum = runtime.wait()
    finally:
        runtime.stop()
    stopped_by = "no signal" if signum is None else signal.Signals(signum).name
    typer.echo(f"mmdx listener stopped ({stopped_by})")
