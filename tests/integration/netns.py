"""Network namespaces holding only loopback, for servers that bind every interface.

Orthanc and Ray listen on all interfaces with no setting to bind loopback alone. Run
inside a namespace whose only interface is ``lo``, they are reachable from that
namespace and nowhere else. Creating one needs root and iproute2's ``ip``; the
:func:`netns` fixture skips with the reason when either is missing.

A test (or the bench) runs each command of the namespace through
:meth:`NetworkNamespace.command`, and stops the processes it started before the
namespace is deleted.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

_IP_TIMEOUT_S = 30


def unavailable_reason() -> str | None:
    """Why no namespace can be created here, or ``None`` when one can."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    if os.geteuid() != 0:
        return "creating a network namespace needs root"
    return None


def only_loopback() -> bool:
    """Whether this process's network namespace has no interface but ``lo``."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


@dataclass(frozen=True)
class NetworkNamespace:
    """A named network namespace whose only interface is ``lo`` (up)."""

    name: str

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` execs it: same PID)."""
        return ["ip", "netns", "exec", self.name, *argv]


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=_IP_TIMEOUT_S)


@contextmanager
def loopback_namespace(prefix: str = "mmdx") -> Iterator[NetworkNamespace]:
    """Create a namespace holding only ``lo``, yield it, delete it on exit.

    Raises:
        RuntimeError: No namespace can be created here (:func:`unavailable_reason`).
        subprocess.CalledProcessError: ``ip`` refused (no CAP_SYS_ADMIN in a container).
    """
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    name = f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"
    _ip("netns", "add", name)
    try:
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield NetworkNamespace(name)
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=_IP_TIMEOUT_S)


@pytest.fixture
def netns() -> Iterator[NetworkNamespace]:
    """A loopback-only namespace for the test; skipped where none can be created."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"no network namespace: {reason}")
    with loopback_namespace() as namespace:
        yield namespace


def rerun_in_loopback_namespace(
    module: str, argv: Sequence[str], *, prefix: str, ray: bool = False
) -> int | None:
    """Run ``python -m module argv`` again inside a loopback-only namespace (for benches).

    Returns its exit status, or ``None`` when this process already runs in such a
    namespace or none can be created (then the caller runs where it is). With ``ray``,
    Ray gets a short ``RAY_TMPDIR`` of its own (socket paths), and whatever Ray leaves
    running in the namespace is stopped before the namespace and that folder go.
    """
    import sys
    import tempfile

    if only_loopback() or unavailable_reason() is not None:
        return None
    ray_dir = tempfile.mkdtemp(prefix="mmdxray-", dir="/tmp") if ray else None
    env = {**os.environ, "RAY_TMPDIR": ray_dir} if ray_dir else None
    try:
        with loopback_namespace(prefix) as namespace:
            command = namespace.command([sys.executable, "-m", module, *argv])
            try:
                return subprocess.run(command, check=False, env=env).returncode
            finally:
                if ray:
                    from tests.integration.service_fixtures import stop_leftovers

                    stop_leftovers(namespace)
    finally:
        if ray_dir:
            shutil.rmtree(ray_dir, ignore_errors=True)
