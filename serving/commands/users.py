"""``mmdx users add/list/revoke``: the service's users and their bearer tokens.

Registered by the CLI as ``app.add_typer(users_app, name="users")``. Every command
works on the catalog named by the settings (``catalog_url`` or the data directory).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from serving.auth import UserDirectory

users_app = typer.Typer(
    help="Service users: add (prints the token once), list, revoke.",
    no_args_is_help=True,
    add_completion=False,
)


@contextmanager
def _directory() -> Iterator[UserDirectory]:
    from serving.auth import UserDirectory
    from serving.catalog import Catalog
    from serving.settings import get_settings

    catalog = Catalog.open(get_settings().resolved_catalog_url)
    try:
        yield UserDirectory(catalog)
    finally:
        catalog.close()


@users_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="User name (letters, digits, ._@-).")],
    role: Annotated[str, typer.Option("--role", help="radiologist, researcher or admin.")],
) -> None:
    """Add a user and print their bearer token; it is stored hashed and never shown again."""
    try:
        with _directory() as directory:
            token = directory.add(name, role)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"user {name} added with role {role}.", err=True)
    typer.echo("token (shown once; store it now):", err=True)
    typer.echo(token)


@users_app.command("list")
def list_users(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List users with their role and status (tokens are never shown)."""
    with _directory() as directory:
        users = directory.list_users()
    rows = [
        {
            "name": user.name,
            "role": user.role.value,
            "created_at": user.created_at.isoformat(timespec="seconds"),
            "revoked_at": user.revoked_at.isoformat(timespec="seconds")
            if user.revoked_at
            else None,
        }
        for user in users
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no users; add one with: mmdx users add NAME --role admin")
        return
    width = max(len(row["name"] or "") for row in rows)
    for row in rows:
        status = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
        typer.echo(f"{row['name']:<{width}}  {row['role']:<11}  {row['created_at']}  {status}")


@users_app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="User whose token stops working.")]) -> None:
    """Revoke a user's token for good (the name stays, for the audit trail)."""
    try:
        with _directory() as directory:
            revoked = directory.revoke(name)
    except KeyError:
        typer.echo(f"error: no user named {name!r}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"user {name} {'revoked' if revoked else 'was already revoked'}.")
