"""``notebooks/01_transfer_learning.ipynb`` runs from top to bottom on a tiny configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "01_transfer_learning.ipynb"


@pytest.mark.slow
def test_transfer_learning_notebook_runs() -> None:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parents[1])}},
    )
    client.execute()

    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    text = "".join(output.get("text", "") for output in outputs)
    assert "auc" in text and "95% CI" in text
    assert '"intended_use": "research; not for diagnostic use"' in text
    assert "split type: pooled random" in text
    assert any("image/png" in output.get("data", {}) for output in outputs)
