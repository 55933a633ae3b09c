"""A hospital on loopback for the service tests: Orthanc as the PACS and `mmdx serve`.

Both run inside one network namespace holding only ``lo`` (:mod:`tests.integration.netns`),
since Orthanc and Ray bind every interface. Orthanc gets its own configuration in a
temporary folder: private DICOM and HTTP ports, no remote access, the DICOMweb plugin, mmdx
as a DICOM modality and a Lua script that sends each stable study's image series to mmdx
(never an SR series, so a result coming back is not routed again). `mmdx serve` runs the
real console script with tiny random-init models, a small case index and its result SRs
sent by C-STORE to Orthanc.

The test process stays outside the namespace: dcmtk tools run through
:meth:`NetworkNamespace.command`, Python clients (requests, dicomweb-client, pynetdicom) through
:class:`NamespaceThread`, a worker thread that joined the namespace. Every process started
here is stopped by PID, then whatever else is left in the namespace (Ray's processes), and
the namespace is deleted.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from tests.integration.netns import NetworkNamespace, loopback_namespace, only_loopback
from tests.integration.netns import unavailable_reason as netns_unavailable

T = TypeVar("T")

MMDX = Path(sys.executable).with_name("mmdx")
ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
ORTHANC_AE = "ORTHANC"
MMDX_AE = "MMDX"
ROLES = ("radiologist", "researcher", "admin")
DEID_SECRET = "service-round-trip-secret-0123456789"
# Ray, the Serve deployments and torch start on a loaded 2-core machine: minutes.
SERVE_READY_TIMEOUT_S = 480.0
ORTHANC_READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 60.0
# dcmtk (and Orthanc, built on it) leave Nagle's algorithm on unless told.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
_CLONE_NEWNET = 0x40000000
_NETNS_DIR = Path("/var/run/netns")

# Sends every non-SR series of a stable study to mmdx, once: the SR mmdx sends back makes
# the study change (and turn stable again), and must not go back to mmdx.
ROUTING_LUA = """\
forwarded = {}
function OnStableStudy(studyId, tags, metadata)
  local series = ParseJson(RestApiGet('/studies/' .. studyId .. '/series'))
  for _, one in pairs(series) do
    if one['MainDicomTags']['Modality'] ~= 'SR' and not forwarded[one['ID']] then
      forwarded[one['ID']] = true
      local instances = ParseJson(RestApiGet('/series/' .. one['ID'] .. '/instances'))
      for _, instance in pairs(instances) do
        SendToModality(instance['ID'], 'mmdx')
      end
    end
  end
end
"""


def unavailable_reason() -> str | None:
    """Why the hospital cannot be set up here (no namespace, Orthanc or dcmtk), or ``None``."""
    reason = netns_unavailable()
    if reason is not None:
        return f"no network namespace: {reason}"
    for path in (ORTHANC, DICOMWEB_PLUGIN):
        if not path.exists():
            return f"{path} is missing: install the orthanc and orthanc-dicomweb packages"
    for tool in ("storescu", "echoscu", "findscu", "dsrdump", "ss"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (dcmtk, iproute2)"
    return None


class NamespaceThread:
    """One worker thread inside a network namespace, running the calls given to it.

    A network namespace belongs to each thread: joined by this worker alone (setns(2)),
    the sockets it opens live in the namespace while pytest's own thread stays outside.
    Everything that opens a connection must therefore run through :meth:`run`.
    """

    def __init__(self, namespace: NetworkNamespace) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="netns", initializer=_join, initargs=(namespace,)
        )
        if not self.run(only_loopback):
            self.close()
            raise RuntimeError(f"the worker thread did not join namespace {namespace.name}")

    def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)`` called in the namespace; its result or exception."""
        return self._executor.submit(function, *args, **kwargs).result()

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def _join(namespace: NetworkNamespace) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    descriptor = os.open(_NETNS_DIR / namespace.name, os.O_RDONLY)
    try:
        if libc.setns(descriptor, _CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns({namespace.name}): {os.strerror(error)}")
    finally:
        os.close(descriptor)


# Between Ray's worker ports (10002-19999) and Linux's ephemeral range (32768-60999):
# Ray's processes bind ports from those as they start, and one of them once took the
# port chosen for the HTTP proxy between this check and the proxy's own bind.
_SERVER_PORTS = (20000, 32000)


def free_port() -> int:
    """A loopback port free now, outside the ranges Ray and the kernel hand out (call it
    in the namespace, through :class:`NamespaceThread`)."""
    for _ in range(200):
        port = random.randint(*_SERVER_PORTS)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {_SERVER_PORTS}")


def wait_for(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str,
    *,
    interval_s: float = 0.2,
    diagnosis: Callable[[], str] = lambda: "",
) -> None:
    """Poll ``condition`` until true; fail the test after ``timeout_s`` saying ``what``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}\n{diagnosis()}")
        time.sleep(interval_s)


def tail(path: Path, characters: int = 4000) -> str:
    """The end of a log file (empty when there is none)."""
    return path.read_text(errors="replace")[-characters:] if path.exists() else ""


def start_in(
    namespace: NetworkNamespace, argv: Sequence[str], log: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """``argv`` started in the namespace (``ip netns exec`` execs: same PID), logging to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            namespace.command(argv), stdout=out, stderr=subprocess.STDOUT, env=env
        )


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM by PID, then SIGKILL if it has not ended after ``timeout_s``."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)


def stop_leftovers(namespace: NetworkNamespace, timeout_s: float = 10.0) -> list[int]:
    """Stop, by PID, every process still in the namespace (Ray's); return their PIDs.

    Only processes started by this module live there: the namespace is its own.
    """

    def pids() -> list[int]:
        listed = subprocess.run(
            ["ip", "netns", "pids", namespace.name], capture_output=True, text=True, timeout=10
        )
        return [int(pid) for pid in listed.stdout.split()]

    found = pids()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids():
            with suppress(ProcessLookupError):  # ended meanwhile
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout_s
        while pids() and time.monotonic() < deadline:
            time.sleep(0.1)
    return found


@dataclass(frozen=True)
class Orthanc:
    """A running Orthanc: its DICOM and HTTP ports on the namespace's loopback."""

    dicom_port: int
    http_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"


@contextmanager
def running_orthanc(
    namespace: NetworkNamespace, worker: NamespaceThread, folder: Path, *, mmdx_port: int
) -> Iterator[Orthanc]:
    """Orthanc on free ports of the namespace, routing stable studies to ``mmdx_port``."""
    folder.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = worker.run(free_port), worker.run(free_port)
    (folder / "route.lua").write_text(ROUTING_LUA)
    config = {
        "Name": "mmdx-test-pacs",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "DicomAet": ORTHANC_AE,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,  # on loopback inside the namespace only
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "DicomModalities": {"mmdx": [MMDX_AE, "127.0.0.1", mmdx_port]},
        "LuaScripts": [str(folder / "route.lua")],
        "StableAge": 3,
        "SaveJobs": False,
    }
    (folder / "orthanc.json").write_text(json.dumps(config, indent=2))
    log = folder / "orthanc.log"
    process = start_in(namespace, [str(ORTHANC), str(folder / "orthanc.json")], log, DCMTK_ENV)
    orthanc = Orthanc(dicom_port, http_port)

    def answers() -> bool:
        try:
            return requests.get(f"{orthanc.url}/system", timeout=5.0).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(
            lambda: process.poll() is not None or worker.run(answers),
            ORTHANC_READY_TIMEOUT_S,
            "Orthanc to answer",
            diagnosis=lambda: tail(log),
        )
        if process.poll() is not None:
            pytest.fail(f"Orthanc exited with {process.returncode}:\n{tail(log)}")
        yield orthanc
    finally:
        stop_process(process)


@dataclass
class MmdxService:
    """A running `mmdx serve`: its ports, data folder, log and a token per role."""

    http_port: int
    dicom_port: int
    data_dir: Path
    log: Path
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def auth(self, role: str) -> dict[str, str]:
        """The Authorization header of the user named after ``role``."""
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def output(self) -> str:
        return tail(self.log, 1_000_000)


def prepare_installation(root: Path) -> dict[str, str]:
    """Tiny bundles and a case index under ``root``; the ``MMDX_*`` variables naming them."""
    from multimodal_rag.embedding.config import load_clip_config
    from tests.serving.pipeline_fixtures import make_case_index, make_echo_bundle, make_mri_bundle

    data_dir = root / "data"
    data_dir.mkdir(parents=True)
    make_mri_bundle(root / "models" / "mri")
    make_echo_bundle(root / "models" / "echo")
    model_cfg = load_clip_config("clip_tiny").model_cfg
    if model_cfg is None:
        pytest.fail("configs/clip/clip_tiny.yaml no longer gives model_cfg")
    embed_dim = int(model_cfg["embed_dim"])
    make_case_index(str(data_dir / "case_index"), embed_dim)
    return {
        "MMDX_DATA_DIR": str(data_dir),
        "MMDX_MODELS__MRI_BUNDLE": str(root / "models" / "mri"),
        "MMDX_MODELS__ECHO_BUNDLE": str(root / "models" / "echo"),
        "MMDX_MODELS__CLIP_CONFIG": "clip_tiny",
        "MMDX_DEID__SECRET": DEID_SECRET,
    }


def add_user(env: dict[str, str], name: str, role: str) -> str:
    """`mmdx users add NAME --role ROLE`; the token it prints (alone on stdout)."""
    added = subprocess.run(
        [str(MMDX), "users", "add", name, "--role", role],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if added.returncode != 0:
        pytest.fail(f"mmdx users add {name} failed: {added.stderr}")
    return added.stdout.strip()


@contextmanager
def running_mmdx(
    namespace: NetworkNamespace,
    root: Path,
    installation: dict[str, str],
    *,
    http_port: int,
    dicom_port: int,
    orthanc: Orthanc,
    ray_dir: Path,
) -> Iterator[MmdxService]:
    """`mmdx serve` in the namespace, sending SRs to ``orthanc``; stopped on exit.

    Ray keeps its session files in ``ray_dir`` (``RAY_TMPDIR``); the caller removes it
    once Ray's last processes are gone (they write there until they exit).
    """
    env = {
        **DCMTK_ENV,
        **installation,
        "MMDX_HTTP_PORT": str(http_port),
        "MMDX_DICOM_PORT": str(dicom_port),
        "MMDX_DICOM_AE_TITLE": MMDX_AE,
        "MMDX_LISTENER__STABLE_AFTER_S": "2",
        "MMDX_DESTINATION__KIND": "cstore",
        "MMDX_DESTINATION__HOST": "127.0.0.1",
        "MMDX_DESTINATION__PORT": str(orthanc.dicom_port),
        "MMDX_DESTINATION__AE_TITLE": ORTHANC_AE,
        "RAY_TMPDIR": str(ray_dir),
    }
    service = MmdxService(
        http_port, dicom_port, Path(installation["MMDX_DATA_DIR"]), root / "serve.log"
    )
    service.tokens = {role: add_user(env, role, role) for role in ROLES}
    process = start_in(namespace, [str(MMDX), "serve"], service.log, env)
    try:
        wait_for(
            lambda: process.poll() is not None or "mmdx serving:" in service.output(),
            SERVE_READY_TIMEOUT_S,
            "mmdx serve to start",
            interval_s=1.0,
            diagnosis=lambda: tail(service.log),
        )
        if process.poll() is not None:
            pytest.fail(f"mmdx serve exited with {process.returncode}:\n{tail(service.log)}")
        yield service
    finally:
        stop_process(process)


@dataclass
class Hospital:
    """The namespace, its client thread, the PACS and the service."""

    namespace: NetworkNamespace
    worker: NamespaceThread
    orthanc: Orthanc
    mmdx: MmdxService

    def command(self, *argv: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        """A command (a dcmtk tool, ``ss``) run in the namespace, with TCP_NODELAY=1."""
        return subprocess.run(
            self.namespace.command(argv), env=DCMTK_ENV, capture_output=True, text=True,
            timeout=timeout_s,
        )  # fmt: skip

    def push(self, files: Sequence[Path], *, ae_title: str, port: int) -> dict[str, str]:
        """Send ``files`` to ``ae_title`` at ``port`` with storescu; the outcome per file.

        Fails the test unless every file was stored.
        """
        from tests.integration.test_listener_restart import store_outcomes

        sent = self.command(
            "storescu", "-v", "-aec", ae_title, "127.0.0.1", str(port), *map(str, files)
        )
        outcomes = store_outcomes(sent.stderr)
        if list(outcomes.values()) != ["Success"] * len(files):
            pytest.fail(f"storescu to {ae_title} did not store every file:\n{sent.stderr[-3000:]}")
        return outcomes

    def http(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One HTTP request from inside the namespace (``requests.request`` arguments)."""
        kwargs.setdefault("timeout", 60.0)
        return self.worker.run(requests.request, method, url, **kwargs)


@contextmanager
def running_hospital(root: Path) -> Iterator[Hospital]:
    """Namespace, Orthanc and `mmdx serve`, torn down in reverse order (namespace deleted)."""
    with ExitStack() as stack:
        namespace = stack.enter_context(loopback_namespace("mmdxsvc"))
        ray_dir = Path(tempfile.mkdtemp(prefix="mmdxray-", dir="/tmp"))  # short: socket paths
        stack.callback(shutil.rmtree, ray_dir, ignore_errors=True)  # after Ray's last process
        # Registered before anything starts in the namespace, so it runs last but one.
        stack.callback(stop_leftovers, namespace)
        worker = NamespaceThread(namespace)
        stack.callback(worker.close)
        installation = prepare_installation(root)
        http_port, dicom_port = worker.run(free_port), worker.run(free_port)
        orthanc = stack.enter_context(
            running_orthanc(namespace, worker, root / "orthanc", mmdx_port=dicom_port)
        )
        mmdx = stack.enter_context(
            running_mmdx(
                namespace, root, installation, http_port=http_port, dicom_port=dicom_port,
                orthanc=orthanc, ray_dir=ray_dir,
            )
        )  # fmt: skip
        yield Hospital(namespace, worker, orthanc, mmdx)
