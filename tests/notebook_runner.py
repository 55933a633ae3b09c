"""Runs a notebook of ``notebooks/`` from top to bottom for the notebook tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute_notebook(
    name: str, work_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> list[dict[str, Any]]:
    """Execute ``notebooks/NAME`` with its files in ``work_dir``; return every output.

    The kernel inherits ``NOTEBOOK_WORK_DIR``, which the notebooks use instead of a
    temporary folder of their own, so a test leaves nothing behind.
    """
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("NOTEBOOK_WORK_DIR", str(work_dir))
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS.parent)}},
    )
    client.execute()
    return [output for cell in notebook.cells for output in cell.get("outputs", [])]


def output_text(outputs: list[dict[str, Any]]) -> str:
    """The printed text of the outputs, joined."""
    return "".join(output.get("text", "") for output in outputs)
