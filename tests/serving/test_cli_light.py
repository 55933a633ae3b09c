"""Importing the packages and asking for help stays cheap: no torch, no Ray at import."""

from __future__ import annotations

import subprocess
import sys


def _modules_after(code: str) -> set[str]:
    completed = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(completed.stdout.split())


def test_importing_the_packages_loads_no_heavy_library() -> None:
    loaded = _modules_after("import imaging, multimodal_rag, serving, serving.cli")
    assert not loaded & {"torch", "ray", "monai", "open_clip", "lancedb", "nilearn"}


def test_help_lists_synth() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "serving.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "synth" in completed.stdout
