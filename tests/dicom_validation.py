"""Runs dicom3tools' dciodvfy, the reference IOD validator, on files we write."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def dciodvfy_errors(path: Path) -> list[str]:
    """Return dciodvfy's ``Error`` lines for ``path`` (empty when the object is valid).

    Warnings are not errors: dciodvfy warns about optional attributes and
    retired forms that the standard allows.
    """
    if shutil.which("dciodvfy") is None:
        pytest.fail("dciodvfy is missing: run scripts/install-system-deps.sh (Debian dicom3tools)")
    completed = subprocess.run(
        ["dciodvfy", "-new", str(path)], capture_output=True, text=True, timeout=120
    )
    output = completed.stdout + completed.stderr
    return [line for line in output.splitlines() if line.startswith("Error")]
