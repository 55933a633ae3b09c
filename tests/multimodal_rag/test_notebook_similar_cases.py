"""``notebooks/02_similar_cases.ipynb`` runs from top to bottom on a small archive."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.notebook_runner import execute_notebook, output_text


@pytest.mark.slow
def test_similar_cases_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = execute_notebook("02_similar_cases.ipynb", tmp_path, monkeypatch)
    text = output_text(outputs)
    assert "24 cases indexed" in text and "0 failed" in text
    # Five ranked hits for each of the image and text searches, scores non-increasing.
    for block in ("image to image", "text to image"):
        section = text.split(block, 1)[1]
        scores = [float(s) for s in re.findall(r"^ ?\d\. (-?\d\.\d{3})", section, re.M)[:5]]
        assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    assert "image embedding P@5" in text and "random          P@5" in text
    assert "AI-generated draft" in text and "[case " in text
    assert "not for diagnostic use" in text.lower()
    assert any("image/png" in output.get("data", {}) for output in outputs)
    assert (tmp_path / "case_index").is_dir()
