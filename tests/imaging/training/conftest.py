"""A tiny sample archive shared by the training tests (generated once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from imaging.synthetic.archive import ArchiveSpec, generate_archive


@pytest.fixture(scope="session")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight MR studies (both labels) and two echo studies over two sites."""
    out = tmp_path_factory.mktemp("training-archive")
    generate_archive(ArchiveSpec(out_dir=out, mri_studies=8, echo_studies=2, sites=2, seed=5))
    return out
