"""``notebooks/03_retrospective_screening.ipynb`` runs from top to bottom on a tiny archive.

The notebook starts a local Ray, which binds every interface: the whole execution runs in
a subprocess inside a loopback-only network namespace, and whatever Ray leaves there is
stopped by PID before the namespace goes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.integration.netns import NetworkNamespace, netns  # noqa: F401  (fixture)
from tests.integration.service_fixtures import stop_leftovers
from tests.notebook_runner import output_text

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = "03_retrospective_screening.ipynb"
# Executes the notebook with the tests' runner and writes its outputs as JSON.
RUNNER = """
import json, sys
from pathlib import Path
import pytest
from tests.notebook_runner import execute_notebook
with pytest.MonkeyPatch.context() as patch:
    outputs = execute_notebook(sys.argv[1], Path(sys.argv[2]), patch)
Path(sys.argv[3]).write_text(json.dumps(outputs))
"""


@pytest.mark.integration
@pytest.mark.slow
def test_screening_notebook_runs(tmp_path: Path, netns: NetworkNamespace) -> None:  # noqa: F811
    work, written = tmp_path / "work", tmp_path / "outputs.json"
    work.mkdir()
    ray_dir = Path(tempfile.mkdtemp(prefix="mmdxray-", dir="/tmp"))  # short: socket paths
    env = {**os.environ, "RAY_TMPDIR": str(ray_dir), "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(
            netns.command([sys.executable, "-c", RUNNER, NOTEBOOK, str(work), str(written)]),
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        stop_leftovers(netns)
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-4000:]
    text = output_text(json.loads(written.read_text()))

    # 16 studies, the broken echo object failed at decode with its reason, the rest done.
    assert "16 studies in" in text
    assert re.search(r"^15 done, 1 failed in \d+ s$", text, re.M)
    assert re.search(r"failed at decode: \w+Error: .+", text)
    assert "16 rows, 16 studies" in text
    # The report: both tasks with an AUC and its CI, the failure, throughput, the file.
    assert re.search(
        r"^MR mri_ad_demo: \d+ studies.*AUC (\d\.\d{3} \(95% CI|undefined)", text, re.M
    )
    assert re.search(r"^US echo_ef_demo: \d+ studies.*AUC", text, re.M)
    assert "EF MAE" in text and "limits of agreement" in text
    assert "physician-hours at 7 min per report" in text
    assert "not for diagnostic use" in text.lower()
    report = work / "screen" / "report.html"
    assert report.is_file() and "data:image/png;base64," in report.read_text()
    assert json.loads((work / "screen" / "summary.json").read_text())["counts"]["failed"] == 1
    # The rerun resumed: nothing screened twice.
    assert "second run: 0 done, 16 already recorded; 15 done and 1 failed in the results" in text
