"""``notebooks/01_transfer_learning.ipynb`` runs from top to bottom on a tiny configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.notebook_runner import execute_notebook, output_text


@pytest.mark.slow
def test_transfer_learning_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = execute_notebook("01_transfer_learning.ipynb", tmp_path, monkeypatch)
    text = output_text(outputs)
    assert "auc" in text and "95% CI" in text
    assert '"intended_use": "research; not for diagnostic use"' in text
    assert "split type: pooled random" in text
    assert any("image/png" in output.get("data", {}) for output in outputs)
    assert (tmp_path / "bundle").is_dir()  # worked in the test's folder
