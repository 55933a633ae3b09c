"""The screen on Ray Data: prepare studies in parallel CPU tasks, classify in an actor pool.

The dataset is the list of task rows, one block per study so that studies spread over
every CPU of the cluster; :func:`~serving.screening.stages.prepare_row` runs as a task
per study (one CPU each) and :class:`~serving.screening.stages.InferBatch` as a pool of
actors taking ``batch_size`` prepared studies per call (one GPU each when the cluster
has GPUs). The driver consumes finished batches as they come
(:meth:`ray.data.Dataset.iter_batches`), so results are written while later studies are
still being decoded. Ray Data's own progress bars and logs are turned off: the screen
shows its own.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import pandas as pd

    from serving.screening.bundles import ScreenModel
    from serving.screening.inputs import StudyTask
    from serving.settings import Settings

# Logical CPUs an inference actor reserves without a GPU: none, so that on a small
# machine every core decodes and the actor's single torch thread shares them.
CPU_ACTOR_NUM_CPUS = 0.0


@contextmanager
def ray_session(settings: Settings, address: str | None) -> Iterator[str]:
    """Ray for the screen: attach to ``address``, else start a local Ray on loopback.

    A Ray this process started is shut down on exit; an attached cluster is left running.
    Yields the address used (``"local"`` for a cluster of its own).
    """
    from serving.ray_runtime import start_ray

    # Not `import ray` first: Ray reads its auth mode at import, and start_ray sets it.
    imported = sys.modules.get("ray")
    started = imported is None or not imported.is_initialized()
    if started:
        start_ray(settings, address=address)
    import ray

    try:
        yield address or "local"
    finally:
        if started:
            ray.shutdown()


def configure_ray_data() -> None:
    """Ray Data without its progress bars and info logs (the screen prints its own)."""
    from ray.data import DataContext

    logging.getLogger("ray.data").setLevel(logging.ERROR)
    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False


def screen_batches(
    tasks: Sequence[StudyTask],
    models: Mapping[str, ScreenModel],
    *,
    batch_size: int,
    workers: int,
    roots: Sequence[str] = (),
) -> Iterator[list[dict[str, Any]]]:
    """Result rows of ``tasks``, a batch at a time, in the order batches finish.

    Args:
        tasks: Studies to screen (none failed at discovery).
        models: The model of each modality.
        batch_size: Studies per forward pass.
        workers: Inference actors (at most one per GPU when the cluster has GPUs).
        roots: Folder prefixes cut from the paths that errors name.

    Raises:
        ValueError: ``batch_size`` or ``workers`` below 1.
    """
    import ray
    import ray.data

    from serving.screening.stages import InferBatch, prepare_row

    if batch_size < 1:
        raise ValueError(f'Argument "batch_size" must be at least 1, got {batch_size}')
    if workers < 1:
        raise ValueError(f'Argument "workers" must be at least 1, got {workers}')
    if not tasks:
        return
    configure_ray_data()
    gpus = int(ray.cluster_resources().get("GPU", 0))
    items = ray.data.from_items([task.as_row() for task in tasks], override_num_blocks=len(tasks))
    dataset = items.map(
        prepare_row,  # type: ignore[arg-type]  # Ray types rows as dict, a Mapping here
        fn_kwargs={
            "preprocessing": {modality: model.preprocessing for modality, model in models.items()},
            "roots": list(roots),
        },
        num_cpus=1,
    )
    dataset = dataset.map_batches(
        InferBatch,
        fn_constructor_kwargs={"bundles": {m: str(model.path) for m, model in models.items()}},
        batch_size=batch_size,
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=min(workers, gpus) if gpus else workers),
        num_gpus=1 if gpus else 0,
        num_cpus=1 if gpus else CPU_ACTOR_NUM_CPUS,
    )
    for batch in dataset.iter_batches(batch_size=None, batch_format="pandas"):
        frame = cast("pd.DataFrame", batch)
        yield [{str(key): value for key, value in row.items()} for row in frame.to_dict("records")]
