"""``mmdx backup`` and ``mmdx restore``: the data directory to one verified archive and back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def backup(
    out: Annotated[Path, typer.Argument(metavar="ARCHIVE", help="The .tar.gz file to write.")],
    include_secrets: Annotated[
        bool,
        typer.Option(
            "--include-secrets",
            help="Also archive secrets/ (the de-identification key); keep such a backup apart.",
        ),
    ] = False,
) -> None:
    """Back up the data directory (catalog snapshot, store, case index, models, results).

    Safe while the service runs: a SQLite catalog is copied through SQLite's backup API.
    A PostgreSQL catalog is not copied (use pg_dump); its row counts are recorded.
    """
    from serving.backup import BackupError, create_backup, manifest_summary
    from serving.settings import get_settings

    settings = get_settings()
    try:
        manifest = create_backup(
            settings.data_dir, settings.resolved_catalog_url, out, include_secrets=include_secrets
        )
    except (BackupError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps({"archive": str(out), **manifest_summary(manifest)}, indent=2))
    if manifest.catalog == "external":
        typer.echo("note: the catalog is not in the archive; back it up with pg_dump.", err=True)


def restore(
    archive: Annotated[Path, typer.Argument(metavar="ARCHIVE", help="A file from mmdx backup.")],
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Empty folder to restore into; default the settings'."),
    ] = None,
) -> None:
    """Restore a backup into an empty data directory and verify every file and count."""
    import tarfile

    from serving.backup import BackupError, manifest_summary, restore_backup
    from serving.settings import get_settings

    target = data_dir if data_dir is not None else get_settings().data_dir
    try:
        manifest = restore_backup(archive, target)
    except (BackupError, OSError, EOFError, tarfile.TarError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps({"restored_to": str(target), **manifest_summary(manifest)}, indent=2))
    typer.echo("verified: every file's checksum, every catalog table and the case index.", err=True)
