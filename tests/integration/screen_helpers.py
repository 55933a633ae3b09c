"""What the Ray screen tests share: the environment of `mmdx screen` and the serial reference.

The screen runs as the real console script inside a loopback-only network namespace
(Ray binds every interface), with a data folder, pseudonym key and short Ray session
folder of its own. Its results are checked against the naive serial loop
(:func:`serving.screening.serial.predict_serially`, i.e. ``mmdx predict`` one study at a
time) run in the test process over the same studies with the same bundles.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from serving.screening.bundles import choose_models
from serving.screening.inputs import discover_studies
from serving.screening.serial import predict_serially
from serving.settings import Settings
from tests.serving.screen_fixtures import SECRET

MMDX = str(Path(sys.executable).with_name("mmdx"))
RAY = str(Path(sys.executable).with_name("ray"))
# Ray, torch and the actors start on a loaded 2-core machine: minutes, not seconds.
SCREEN_TIMEOUT_S = 420


@contextmanager
def screen_env(root: Path, **extra: str) -> Iterator[dict[str, str]]:
    """The environment of `mmdx screen`; its short Ray folder is removed afterwards."""
    import os

    ray_dir = Path(tempfile.mkdtemp(prefix="mmdxray-", dir="/tmp"))  # socket paths < 108 bytes
    try:
        yield {
            **os.environ,
            "MMDX_DATA_DIR": str(root / "data"),
            "MMDX_DEID__SECRET": SECRET,
            "RAY_TMPDIR": str(ray_dir),
            **extra,
        }
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)


def serial_reference(
    input_path: Path, bundles: list[Path], root: Path
) -> dict[str, dict[str, Any]]:
    """Rows of the serial loop over the studies of ``input_path``, by study id."""
    settings = Settings(data_dir=root / "data", deid={"secret": SECRET})
    models = choose_models(bundles, settings)
    discovery = discover_studies(
        input_path,
        sources={modality: model.source for modality, model in models.items()},
        secret=SECRET.encode(),
        workdir=root / "serial-work",
    )
    return {row["study_id"]: row for row in predict_serially(discovery.tasks, models)}


def assert_same_results(rows: list[dict[str, Any]], reference: dict[str, dict[str, Any]]) -> None:
    """Same studies, statuses and stages; probabilities to 1e-6, EF to 1e-4 percent."""
    found = {row["study_id"]: row for row in rows}
    assert len(found) == len(rows), "a study is in the results twice"
    assert set(found) == set(reference)
    for study_id, expected in reference.items():
        row = found[study_id]
        assert (row["status"], row["error_stage"]) == (
            expected["status"],
            expected["error_stage"],
        ), study_id
        assert row["prediction"] == expected["prediction"], study_id
        for column, tolerance in (
            ("probability", 1e-6),
            ("positive_probability", 1e-6),
            ("ef_percent", 1e-4),
        ):
            if expected[column] is None:
                assert row[column] is None, (study_id, column)
            else:
                assert row[column] == pytest.approx(expected[column], abs=tolerance), (
                    study_id,
                    column,
                )
