"""``make demo``: the service end to end on this machine, on loopback. Not for diagnostic use.

Each step is skipped when what it makes is already there, so a second run starts the
service within a minute:

1. the synthetic sample archive (``mmdx synth``; 24 MR + 24 echo studies, 4 sites);
2. two small models (``mmdx train`` with the ``mri_ad_tiny`` and ``echo_ef_tiny``
   recipes, then :func:`imaging.training.export.bundle_from_run`) as bundles in
   ``DATA/models/``;
3. the similar-case index (``mmdx index`` with the CLIP configuration the service uses);
4. a radiologist user whose token is kept in ``DATA/demo-token`` (mode 0600);
5. ``mmdx serve`` in the background, configured through ``MMDX_*`` variables;
6. a few archive studies pushed with dcmtk ``storescu`` (``TCP_NODELAY=1``), their
   results polled from ``/api/studies/{uid}/result`` and printed as a table.

The service then runs until Ctrl-C, or the script stops it and exits at once with
``--no-wait`` or ``MMDX_DEMO_EXIT=1``. Usage::

    python scripts/demo.py [--archive data/demo-archive] [--studies 2] [--no-wait]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[1]
MMDX = str(Path(sys.executable).with_name("mmdx"))
RECIPES = {"mri_ad": "mri_ad_tiny", "echo_ef": "echo_ef_tiny"}
DEMO_USER = "demo-radiologist"
STABLE_AFTER_S = 3.0  # the demo's studies arrive in one burst; no need to wait 10 s
START_TIMEOUT_S = 600.0  # Ray, four replicas and their models on a 2-core machine
RESULT_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 90.0
READY_MARK = "mmdx serving:"
DISCLAIMER = "Synthetic data, machine-generated results: not for diagnostic use."


def step(message: str) -> None:
    """Say what the demo does now."""
    print(f"[demo] {message}", flush=True)


def run_mmdx(*argv: str, capture: bool = False) -> str:
    """Run an ``mmdx`` command with this process's environment; its stdout if captured.

    Raises:
        SystemExit: The command failed (its own message is already on the console).
    """
    pipe = subprocess.PIPE if capture else None
    result = subprocess.run([MMDX, *argv], stdout=pipe, stderr=pipe, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(
            f"[demo] mmdx {argv[0]} failed with exit status {result.returncode}"
            + (f": {result.stderr.strip()}" if capture else "")
        )
    return result.stdout or ""


def port_or_free(port: int) -> int:
    """``port`` if nothing listens on it on loopback, else a free one."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            return port
        except OSError:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])


# Preparation: archive, models, index, user ---------------------------------------------


def ensure_archive(archive: Path) -> Path:
    """The archive's manifest, generating the archive first when there is none."""
    manifest = archive / "manifest.csv"
    if manifest.is_file():
        step(f"sample archive: {archive} (exists)")
    else:
        step(f"sample archive: generating 24 MR + 24 echo studies into {archive}")
        run_mmdx("synth", "--out", str(archive), "--mri", "24", "--echo", "24",
                 "--sites", "4", "--seed", "7")  # fmt: skip
    return manifest


def ensure_bundle(recipe: str, manifest: Path, data_dir: Path, name: str) -> Path:
    """A model bundle trained with ``recipe`` on the archive, in ``DATA/models/<name>``."""
    from imaging.training.export import bundle_from_run

    bundle = data_dir / "models" / name
    if (bundle / "configs" / "metadata.json").is_file():
        step(f"model {name}: {bundle} (exists)")
        return bundle
    shutil.rmtree(bundle, ignore_errors=True)  # a bundle without its model card is broken
    run_dir = data_dir / "demo-runs" / recipe
    step(f"model {name}: training {recipe} (a few epochs on this CPU) into {run_dir}")
    run_mmdx("train", recipe, "--manifest", str(manifest), "--out", str(run_dir))
    staging = bundle.with_name(f".{name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    bundle_from_run(run_dir, staging, manifest=manifest, version="0.1.0-demo")
    staging.rename(bundle)  # whole or absent: a rerun never meets half a bundle
    step(f"model {name}: bundle in {bundle}")
    return bundle


def ensure_index(manifest: Path, data_dir: Path, clip_config: str) -> None:
    """The similar-case index in ``DATA/case_index``, embedded with ``clip_config``."""
    index_dir, marker = data_dir / "case_index", data_dir / "case_index.clip-config"
    if index_dir.is_dir():
        built_with = marker.read_text().strip() if marker.is_file() else clip_config
        if built_with != clip_config:
            raise SystemExit(
                f"[demo] {index_dir} was built with {built_with}, the service is set to "
                f"{clip_config}: remove {index_dir} or set MMDX_MODELS__CLIP_CONFIG={built_with}"
            )
        step(f"case index: {index_dir} (exists, {clip_config})")
        return
    step(f"case index: embedding the archive's de-identified cases with {clip_config}")
    run_mmdx("index", "--manifest", str(manifest), "--config", clip_config)
    marker.write_text(clip_config + "\n")


def ensure_token(token_file: Path) -> str:
    """A valid radiologist token, from ``token_file`` or a user added now (then kept)."""
    from serving.auth import UserDirectory
    from serving.catalog import Catalog
    from serving.settings import get_settings

    catalog = Catalog.open(get_settings().resolved_catalog_url)
    try:
        users = UserDirectory(catalog)
        if token_file.is_file():
            token = token_file.read_text().strip()
            if users.authenticate(token) is not None:
                step(f"user: token in {token_file} (exists)")
                return token
        taken = {user.name for user in users.list_users()}
    finally:
        catalog.close()
    name = next(n for n in (DEMO_USER, *(f"{DEMO_USER}-{i}" for i in range(2, 1000)))
                if n not in taken)  # fmt: skip
    token = run_mmdx("users", "add", name, "--role", "radiologist", capture=True).strip()
    descriptor = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(token + "\n")
    os.chmod(token_file, 0o600)  # an older file may have had a wider mode
    step(f"user: {name} (radiologist), token in {token_file} (mode 600)")
    return token


# The service -------------------------------------------------------------------------


class Service:
    """``mmdx serve`` as a child in its own session, its output copied to a log file.

    Its own session keeps a terminal's Ctrl-C away from it: the demo sends exactly one
    SIGTERM, which ``mmdx serve`` answers by stopping cleanly.
    """

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.ready_line: str | None = None
        self._ready = threading.Event()
        self._process = subprocess.Popen(
            [MMDX, "serve"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, env=dict(os.environ),
        )  # fmt: skip
        self._reader = threading.Thread(target=self._copy_output, daemon=True)
        self._reader.start()

    def _copy_output(self) -> None:
        output = self._process.stdout
        if output is None:  # not reached: Popen was given stdout=PIPE
            return
        with self.log_path.open("w") as log:
            for line in output:
                log.write(line)
                log.flush()
                if READY_MARK in line and self.ready_line is None:
                    self.ready_line = line.strip()
                    self._ready.set()
        self._ready.set()  # the process ended: stop waiting

    @property
    def running(self) -> bool:
        """Whether ``mmdx serve`` is alive."""
        return self._process.poll() is None

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the service says it serves.

        Raises:
            SystemExit: It exited or did not get ready in time (the log's tail is shown).
        """
        self._ready.wait(timeout_s)
        if self.ready_line is None:
            self.stop()
            tail = "".join(self.log_path.read_text().splitlines(keepends=True)[-25:])
            raise SystemExit(f"[demo] mmdx serve did not start; end of {self.log_path}:\n{tail}")

    def stop(self) -> None:
        """SIGTERM, then wait; its whole session is killed only if it does not stop."""
        if self.running:
            step("stopping mmdx serve")
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                step(f"mmdx serve did not stop within {STOP_TIMEOUT_S:.0f} s; killing it")
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(30)
        self._reader.join(10)


@contextmanager
def running_service(log_path: Path) -> Iterator[Service]:
    """Start ``mmdx serve``, wait until it serves, stop it on the way out."""
    service = Service(log_path)
    try:
        service.wait_ready(START_TIMEOUT_S)
        yield service
    finally:
        service.stop()


# Studies in, results out -------------------------------------------------------------


def pick_studies(manifest: Path, per_modality: int) -> list[dict[str, str]]:
    """The first ``per_modality`` MR and echo studies, each from another site if possible."""
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    chosen: list[dict[str, str]] = []
    for modality in ("MR", "US"):
        candidates = [row for row in rows if row["modality"] == modality]
        by_site: dict[str, dict[str, str]] = {}
        for row in candidates:
            by_site.setdefault(row["site_id"], row)
        picked = list(by_site.values())[:per_modality]
        picked += [row for row in candidates if row not in picked][: per_modality - len(picked)]
        chosen.extend(picked)
    return chosen


def push_studies(archive: Path, studies: list[dict[str, str]], port: int, ae_title: str) -> None:
    """Send the studies' DICOM folders to the listener over one ``storescu`` association."""
    folders = [str(archive / row["dicom_path"]) for row in studies]
    step(f"sending {len(folders)} studies with storescu to {ae_title} on 127.0.0.1:{port}")
    command = ["storescu", "-nh", "-xy", "+sd", "+r", "-aec", ae_title, "127.0.0.1",
               str(port), *folders]  # fmt: skip
    result = subprocess.run(
        command, env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"[demo] storescu failed: {result.stderr[-2000:]}")


def api_get(url: str, token: str) -> tuple[int, Any]:
    """GET a JSON route with the bearer token, straight to loopback (no proxy)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with opener.open(request, timeout=30) as reply:
            return int(reply.status), json.load(reply)
    except urllib.error.HTTPError as error:
        body = error.read()
        return error.code, json.loads(body) if body else None


def wait_for_results(
    base_url: str, token: str, uids: list[str], service: Service
) -> dict[str, dict[str, Any]]:
    """Poll each study's result until all are done or failed (bounded)."""
    step(f"waiting for results (studies are processed {STABLE_AFTER_S:.0f} s after arriving)")
    outcomes: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    while len(outcomes) < len(uids):
        if time.monotonic() > deadline:
            raise SystemExit(f"[demo] no result within {RESULT_TIMEOUT_S:.0f} s")
        if not service.running:
            raise SystemExit(f"[demo] mmdx serve exited; see {service.log_path}")
        for uid in uids:
            if uid in outcomes:
                continue
            status, body = api_get(f"{base_url}/api/studies/{uid}/result", token)
            if status == 200:
                outcomes[uid] = body
            elif status == 404 and "failed" in str(body):
                _, study = api_get(f"{base_url}/api/studies/{uid}", token)
                jobs = study.get("jobs", []) if isinstance(study, dict) else []
                outcomes[uid] = {"failed": jobs[-1]["reason"] if jobs else "unknown"}
            elif status not in (202, 404):
                raise SystemExit(f"[demo] HTTP {status} from the API: {body}")
        time.sleep(1.0)
    return outcomes


def result_rows(studies: list[dict[str, str]], outcomes: Mapping[str, Any]) -> list[list[str]]:
    """One table row per classified series (or per failed study)."""
    rows = []
    for study in studies:
        uid = study["study_instance_uid"]
        short = f"...{uid[-10:]}"
        outcome = outcomes[uid]
        if "failed" in outcome:
            rows.append([short, study["modality"], "failed", "", "", str(outcome["failed"]), ""])
            continue
        for result in outcome["payload"]["results"]:
            prediction = result["prediction"]
            ef = prediction.get("ef_percent")
            similar = ", ".join(
                f"...{case['case_id'][-8:]} ({case['label']}, {case['score']:.2f})"
                for case in result["similar_cases"][:2]
            )
            rows.append([
                short, result["modality"], prediction["label"],
                f"{prediction['probability']:.2f}", "" if ef is None else f"{ef:.1f}",
                similar or "-", result["sr"]["sop_instance_uid"],
            ])  # fmt: skip
    return rows


def print_table(rows: list[list[str]]) -> None:
    """Rows under a header, columns padded."""
    header = ["study", "modality", "prediction", "p", "EF %", "top similar cases", "SR SOP UID"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


# Putting it together -----------------------------------------------------------------


def configure(data_dir: Path, bundles: Mapping[str, Path], clip_config: str) -> tuple[int, int]:
    """Point every ``mmdx`` command this process starts at the demo's installation.

    Returns:
        The HTTP and DICOM ports (the defaults unless taken or set in the environment).
    """
    from serving.settings import get_settings

    os.environ.update({
        "MMDX_DATA_DIR": str(data_dir),
        "MMDX_MODELS__MRI_BUNDLE": str(bundles["mri_ad"]),
        "MMDX_MODELS__ECHO_BUNDLE": str(bundles["echo_ef"]),
        "MMDX_MODELS__CLIP_CONFIG": clip_config,
        "MMDX_LISTENER__STABLE_AFTER_S": os.environ.get(
            "MMDX_LISTENER__STABLE_AFTER_S", str(STABLE_AFTER_S)
        ),
    })  # fmt: skip
    get_settings.cache_clear()
    settings = get_settings()
    http_port, dicom_port = port_or_free(settings.http_port), port_or_free(settings.dicom_port)
    os.environ["MMDX_HTTP_PORT"], os.environ["MMDX_DICOM_PORT"] = str(http_port), str(dicom_port)
    get_settings.cache_clear()
    return http_port, dicom_port


def wait_for_ctrl_c(service: Service) -> None:
    """Block until Ctrl-C or SIGTERM, or until the service exits by itself."""
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda _signum, _frame: stop.set())
    while not stop.wait(1.0) and service.running:
        pass


def main(argv: list[str] | None = None) -> None:
    """Prepare, serve, push studies, print results; serve on until Ctrl-C unless told not to."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", type=Path, default=REPOSITORY / "data" / "demo-archive")
    parser.add_argument("--studies", type=int, default=2, help="Studies sent per modality.")
    parser.add_argument("--no-wait", action="store_true", help="Exit after the results.")
    args = parser.parse_args(argv)
    no_wait = args.no_wait or os.environ.get("MMDX_DEMO_EXIT", "") not in ("", "0")
    started = time.monotonic()
    if shutil.which("storescu") is None:
        raise SystemExit("[demo] dcmtk's storescu is missing: run `make sysdeps`")

    from serving.settings import get_settings

    data_dir = get_settings().data_dir.resolve()  # MMDX_DATA_DIR, else configs/settings.yaml
    data_dir.mkdir(parents=True, exist_ok=True)
    clip_config = get_settings().models.clip_config  # the embedder the service will load
    archive = args.archive.resolve()
    os.environ["MMDX_DATA_DIR"] = str(data_dir)  # absolute: index, users and serve share it
    get_settings.cache_clear()
    manifest = ensure_archive(archive)
    bundles = {name: ensure_bundle(r, manifest, data_dir, name) for name, r in RECIPES.items()}
    ensure_index(manifest, data_dir, clip_config)
    http_port, dicom_port = configure(data_dir, bundles, clip_config)
    token_file = data_dir / "demo-token"
    token = ensure_token(token_file)
    settings = get_settings()

    step(f"starting mmdx serve (log: {data_dir / 'demo-serve.log'})")
    with running_service(data_dir / "demo-serve.log") as service:
        step(f"ready after {time.monotonic() - started:.0f} s: {service.ready_line}")
        studies = pick_studies(manifest, args.studies)
        push_studies(archive, studies, dicom_port, settings.dicom_ae_title)
        base_url = f"http://127.0.0.1:{http_port}"
        outcomes = wait_for_results(
            base_url, token, [row["study_instance_uid"] for row in studies], service
        )
        print(f"\nResults ({time.monotonic() - started:.0f} s since the demo started):")
        print_table(result_rows(studies, outcomes))
        example = studies[0]["study_instance_uid"]
        print(
            f"\nOpen {base_url}/ui/ in a browser and sign in with the demo radiologist's token"
            f" ({token_file}): the worklist, each study with its heat map and similar cases."
            f"\nThe JSON API takes the same token,"
            f' e.g.:\n  curl -H "Authorization: Bearer $(cat {token_file})" {base_url}/api/studies'
            f'\n  curl -H "Authorization: Bearer $(cat {token_file})" '
            f"{base_url}/api/studies/{example}/result"
            f"\nDICOMweb (QIDO/WADO/STOW) under {base_url}/dicom-web with the same header; DICOM "
            f"C-STORE to AE {settings.dicom_ae_title} on 127.0.0.1:{dicom_port}."
            f"\n{DISCLAIMER}\n"
        )
        if no_wait:
            return
        step("serving until Ctrl-C")
        wait_for_ctrl_c(service)


if __name__ == "__main__":
    main()
