"""`mmdx screen` on a local Ray, killed with SIGKILL after its first batch, then run again.

The rerun skips what the killed run recorded and screens the rest; the final results
hold every study once, equal to the serial loop (``mmdx predict`` one study at a time),
and with --labels the report's AUC of each modality equals ``mmdx evaluate --bundle`` on
the same studies.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from serving.screening.evaluate import evaluate_bundle
from serving.screening.results_store import ResultsStore
from serving.settings import Settings
from tests.integration.netns import NetworkNamespace, netns  # noqa: F401  (fixture)
from tests.integration.screen_helpers import (
    MMDX,
    SCREEN_TIMEOUT_S,
    assert_same_results,
    screen_env,
    serial_reference,
)
from tests.integration.service_fixtures import start_in, stop_leftovers
from tests.serving.pipeline_fixtures import make_echo_bundle, make_mri_bundle
from tests.serving.screen_fixtures import SECRET, write_screen_archive

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def done_rows(store: ResultsStore) -> int:
    """Studies screened successfully in the parts written so far."""
    return sum(
        pq.read_table(part, columns=["status"]).column("status").to_pylist().count("done")
        for part in store.parts()
    )


def test_a_killed_screen_resumes_to_the_uninterrupted_results(
    netns: NetworkNamespace,  # noqa: F811
    tmp_path: Path,
) -> None:
    archive = write_screen_archive(tmp_path / "archive", mr=6, us=6)
    bundles = [make_mri_bundle(tmp_path / "mri").path, make_echo_bundle(tmp_path / "echo").path]
    total = len(archive.rows)
    out = tmp_path / "screen"
    store = ResultsStore(out)
    models = [arg for bundle in bundles for arg in ("--model", str(bundle))]
    argv = [MMDX, "screen", str(archive.manifest), "--out", str(out), *models, "--batch-size", "2"]
    with screen_env(tmp_path) as env:
        process = start_in(netns, argv, tmp_path / "killed.log", env)
        try:
            deadline = time.monotonic() + SCREEN_TIMEOUT_S
            while done_rows(store) == 0:
                assert process.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no batch was written"
                time.sleep(0.1)
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
            stop_leftovers(netns)  # the local Ray the killed screen started, by PID
        recorded = len(store.recorded())
        assert 0 < recorded < total, f"kill came too late: {recorded} of {total} recorded"

        rerun = subprocess.run(
            netns.command([*argv, "--labels", str(archive.manifest), "--json"]),
            env=env, capture_output=True, text=True, timeout=SCREEN_TIMEOUT_S,
        )  # fmt: skip
        stop_leftovers(netns)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads(rerun.stdout)
    assert summary["skipped"] == recorded
    assert summary["done"] + summary["failed"] == total - recorded
    assert (summary["total_done"], summary["total_failed"]) == (12, 2)

    # No study twice, not even in the raw parts, and the serial loop's numbers.
    raw = [
        study_id
        for part in store.parts()
        for study_id in pq.read_table(part)["study_id"].to_pylist()
    ]
    assert sorted(raw) == sorted(set(raw)) and len(raw) == total
    reference = serial_reference(archive.manifest, bundles, tmp_path / "serial")
    assert_same_results(store.read().to_pylist(), reference)

    screened = json.loads((out / "summary.json").read_text())
    aucs = {task["modality"]: task["auc"]["value"] for task in screened["tasks"]}
    settings = Settings(data_dir=tmp_path / "data", deid={"secret": SECRET})
    for bundle, modality in zip(bundles, ("MR", "US"), strict=True):
        evaluated = evaluate_bundle(
            bundle, archive.manifest, tmp_path / modality, settings=settings
        )
        assert aucs[modality] == pytest.approx(evaluated["metrics"]["auc"]["value"], abs=1e-6)
