"""`mmdx screen --address` on a Ray cluster of a head and a worker node started with `ray start`.

Both nodes run on loopback in a namespace holding only ``lo``, with token authentication,
one CPU each, so the decode tasks spread over both. The screen of a DICOM folder (a
corrupt study and a non-DICOM file in it) records every study, equal to the serial loop,
and its results name the nodes that decoded them: both. Every Ray process is stopped by
PID afterwards (the namespace holds only this test's processes).
"""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import pytest

from serving.screening.results_store import ResultsStore
from tests.integration.netns import NetworkNamespace, netns  # noqa: F401  (fixture)
from tests.integration.screen_helpers import (
    MMDX,
    RAY,
    SCREEN_TIMEOUT_S,
    assert_same_results,
    screen_env,
    serial_reference,
)
from tests.integration.service_fixtures import stop_leftovers
from tests.serving.pipeline_fixtures import make_echo_bundle, make_mri_bundle
from tests.serving.screen_fixtures import write_screen_archive

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PORT = 6393
NODE_START_TIMEOUT_S = 180


def test_screen_runs_across_a_head_and_a_worker_node(
    netns: NetworkNamespace,  # noqa: F811
    tmp_path: Path,
) -> None:
    archive = write_screen_archive(tmp_path / "archive", mr=5, us=5)
    bundles = [make_mri_bundle(tmp_path / "mri").path, make_echo_bundle(tmp_path / "echo").path]
    token = tmp_path / "ray_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    out = tmp_path / "screen"
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    with screen_env(tmp_path, **auth) as env:
        try:
            for role in (
                ["--head", f"--port={PORT}", "--include-dashboard=false"],
                [f"--address=127.0.0.1:{PORT}"],
            ):
                started = subprocess.run(
                    netns.command([RAY, "start", *role, "--node-ip-address=127.0.0.1",
                                   "--num-cpus=1", "--disable-usage-stats"]),
                    env=env, capture_output=True, text=True, timeout=NODE_START_TIMEOUT_S,
                )  # fmt: skip
                assert started.returncode == 0, started.stderr[-3000:]
            models = [arg for bundle in bundles for arg in ("--model", str(bundle))]
            screened = subprocess.run(
                netns.command([MMDX, "screen", str(archive.dicom), "--out", str(out), *models,
                               "--address", f"127.0.0.1:{PORT}", "--batch-size", "2", "--json"]),
                env=env, capture_output=True, text=True, timeout=SCREEN_TIMEOUT_S,
            )  # fmt: skip
            assert screened.returncode == 0, screened.stderr[-3000:]
            # The screen attached: the cluster is still up after it.
            status = subprocess.run(
                netns.command([RAY, "status", "--address", f"127.0.0.1:{PORT}"]),
                env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert status.returncode == 0, status.stderr[-2000:]
        finally:
            stop_leftovers(netns)
    summary = json.loads(screened.stdout)
    assert summary["run_info"]["ray_address"] == f"127.0.0.1:{PORT}"
    assert (summary["total_done"], summary["total_failed"]) == (10, 3)
    rows = ResultsStore(out).read().to_pylist()
    assert_same_results(rows, serial_reference(archive.dicom, bundles, tmp_path / "serial"))
    decoded_on = {row["decode_node"] for row in rows if row["decode_node"] is not None}
    assert len(decoded_on) == 2, f"decode tasks ran on {decoded_on}"
    assert {row["infer_node"] for row in rows if row["status"] == "done"} <= decoded_on
