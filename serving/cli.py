"""The ``mmdx`` command line: one entry point, a subcommand per job.

The commands live in :mod:`serving.commands`, one module per area; each imports its
heavy libraries inside the function, so ``mmdx --help`` answers at once.
"""

from __future__ import annotations

import typer

from serving.commands.archive import synth
from serving.commands.backup import backup, restore
from serving.commands.listen import listen
from serving.commands.models import evaluate, predict, train
from serving.commands.rag import clip_train, index, search
from serving.commands.rag_eval import rag_eval
from serving.commands.screen import screen
from serving.commands.serve import serve_command
from serving.commands.studies import convert, deid
from serving.commands.users import users_app

app = typer.Typer(
    help="mmdx: multimodal imaging diagnostic service (MRI and echo). Not for diagnostic use.",
    no_args_is_help=True,
    add_completion=False,
)
for command in (synth, convert, deid, train, evaluate, predict, listen):
    app.command()(command)
app.command("clip-train")(clip_train)
app.command("index")(index)
app.command("search")(search)
app.command("rag-eval")(rag_eval)
app.command("serve")(serve_command)
app.command("screen")(screen)
app.command("backup")(backup)
app.command("restore")(restore)
app.add_typer(users_app, name="users")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
