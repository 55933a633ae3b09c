"""Starting (or attaching to) Ray for the service, with token authentication on.

Ray's internal processes (GCS, raylet, dashboard agent) bind every interface whatever node
address is given, so loopback binding alone does not keep strangers out: the embedded
default turns Ray's token authentication on (``RAY_AUTH_MODE=token``) with a random token
kept in ``{data_dir}/secrets/ray_token`` (mode 0600), and every Ray process this one
starts inherits it. Attaching to an existing cluster (``--address``) uses whatever token
the environment or ``~/.ray/auth_token`` provides, as Ray does.
"""

from __future__ import annotations

import os
from pathlib import Path

from serving.settings import Settings, ensure_secret_file

RAY_NAMESPACE = "mmdx"


def ray_token_path(settings: Settings) -> Path:
    """Where the embedded default keeps its Ray token."""
    return settings.data_dir / "secrets" / "ray_token"


def start_ray(
    settings: Settings, *, address: str | None = None, num_cpus: int | None = None
) -> None:
    """Start a local Ray on loopback with token auth, or attach to ``address``.

    Args:
        settings: The service settings (data directory for the token).
        address: An existing cluster (``"auto"``, ``"ray://..."``, ``"HOST:PORT"``).
        num_cpus: CPUs the local Ray may use (default: all).
    """
    if address is None:
        # Before `import ray`: Ray reads its auth mode into a cached config at import.
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(ensure_secret_file(ray_token_path(settings)))
    import ray

    if ray.is_initialized():
        return
    if address is None:
        ray.init(
            # "local": always a new cluster, never one that /tmp/ray/ray_current_cluster
            # names (a stale file there made a fresh start wait on a dead GCS).
            address="local",
            namespace=RAY_NAMESPACE,
            _node_ip_address="127.0.0.1",
            dashboard_host="127.0.0.1",
            include_dashboard=True,
            num_cpus=num_cpus,
            log_to_driver=False,
        )
    else:
        ray.init(address=address, namespace=RAY_NAMESPACE, log_to_driver=False)


def stop_ray(*, attached: bool, app_name: str) -> None:
    """Undo what this process did: on a cluster it attached to, delete only its Serve
    application (other applications and the cluster stay); on its own local Ray, shut
    Serve and Ray down."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        return
    try:
        if attached:
            serve.delete(app_name)
        else:
            serve.shutdown()
    finally:
        ray.shutdown()
