"""``mmdx serve --address`` attaches to a Ray cluster started by someone else, and leaves it up.

A head node is started with ``ray start`` (token authentication on, loopback) in a network
namespace holding only ``lo``; ``mmdx serve --address`` deploys onto it, answers
``/healthz`` through Serve's proxy, and on SIGTERM deletes only its own application.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.integration.netns import NetworkNamespace, netns  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 300


def test_serve_attaches_to_an_existing_cluster_and_leaves_it_running(
    netns: NetworkNamespace,  # noqa: F811
    tmp_path: Path,
) -> None:
    ray_dir = tempfile.mkdtemp(prefix="mmdx-ray-")
    token = tmp_path / "ray_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        # Ray's socket paths must stay under 108 bytes: a short folder of its own.
        "RAY_TMPDIR": ray_dir,
        "MMDX_DATA_DIR": str(tmp_path / "data"),
        "MMDX_HTTP_PORT": "18321",
        "MMDX_DICOM_PORT": "11321",
    }
    ray = str(BIN / "ray")
    head = [ray, "start", "--head", "--node-ip-address=127.0.0.1", "--port=6391",
            "--num-cpus=2", "--dashboard-host=127.0.0.1", "--disable-usage-stats"]  # fmt: skip
    log = tmp_path / "serve.log"
    serve = None
    try:
        started = subprocess.run(
            netns.command(head), env=env, capture_output=True, text=True, timeout=120
        )
        assert started.returncode == 0, started.stderr[-3000:]
        with log.open("w") as out:
            serve = subprocess.Popen(
                netns.command([str(BIN / "mmdx"), "serve", "--address", "127.0.0.1:6391"]),
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while "mmdx serving:" not in log.read_text() and time.monotonic() < deadline:
            assert serve.poll() is None, log.read_text()[-3000:]
            time.sleep(1)
        assert "mmdx serving:" in log.read_text(), log.read_text()[-3000:]
        health = subprocess.run(
            netns.command(["curl", "-s", "-m", "10", "http://127.0.0.1:18321/healthz"]),
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert health.stdout == '{"status":"ok"}'

        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=120) == 0
        serve = None
        assert "Deleting app ['mmdx']" in log.read_text()
        # The cluster is still up (and still wants its token).
        status = subprocess.run(
            netns.command([ray, "status", "--address", "127.0.0.1:6391"]),
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert status.returncode == 0, status.stderr[-2000:]
    finally:
        if serve is not None:
            serve.kill()
            serve.wait(timeout=30)
        subprocess.run(
            netns.command([ray, "stop", "--force"]), env=env, capture_output=True, timeout=120
        )
        shutil.rmtree(ray_dir, ignore_errors=True)
