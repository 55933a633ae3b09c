"""The training loop: ``fit`` a ``backbone``/``head`` model as a recipe says.

Per epoch: reseed, freeze or unfreeze the backbone, train (AdamW with discriminative
learning rates; mixed precision and channels-last on CUDA), validate, write ``last.pt``
(and ``best.pt`` when the monitored metric improved), log to TensorBoard, stop early
when the metric has not improved for ``early_stopping_patience`` epochs.

Reproducibility and resuming: every random draw of epoch ``e`` (shuffling, dropout,
augmentation) comes from generators reseeded from ``(recipe.seed, e)`` at the start of
the epoch, so an epoch's result depends only on the weights and optimizer state it
starts from, which ``last.pt`` holds. Resuming after epoch ``e`` therefore gives the
same weights as an uninterrupted run (same device, ``num_workers=0`` or a fixed count),
without storing generator states.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imaging.training.objectives import compute_loss, is_improvement, validation_metrics
from imaging.training.predictions import predict_dataset
from imaging.training.recipe import HIGHER_IS_BETTER, TrainingRecipe
from imaging.training.transfer import freeze_backbone, parameter_groups, unfreeze_backbone

CHECKPOINT_FORMAT = "mmdx-training-checkpoint"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
TENSORBOARD_DIR = "tensorboard"


@dataclass(frozen=True)
class EpochResult:
    """One finished epoch: training loss, validation metrics, learning rates, time."""

    epoch: int
    train_loss: float
    metrics: dict[str, float]
    monitored: float
    improved: bool
    backbone_frozen: bool
    lr_head: float
    lr_backbone: float
    seconds: float


@dataclass(frozen=True)
class FitResult:
    """What a run left: checkpoints, the best value of the monitored metric, the history."""

    out_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path
    monitor: str
    best_metric: float | None
    best_epoch: int | None
    epochs_completed: int
    stopped_early: bool
    history: list[EpochResult] = field(default_factory=list)


@dataclass
class _RunState:
    epoch: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    epochs_without_improvement: int = 0
    stopped_early: bool = False
    history: list[EpochResult] = field(default_factory=list)


def fit(
    model: nn.Module,
    train_loader: Iterable[Mapping[str, Any]],
    val_loader: Iterable[Mapping[str, Any]] | None,
    recipe: TrainingRecipe,
    *,
    out_dir: str | Path,
    on_epoch: Callable[[EpochResult], None] | None = None,
    resume: bool = True,
    progress: bool = True,
    device: torch.device | str | None = None,
) -> FitResult:
    """Train ``model`` for ``recipe.epochs`` epochs (fewer if it stops early).

    Args:
        model: Has ``backbone`` and ``head``; moved to ``device``.
        train_loader: Batches with ``image`` and ``target`` (and ``reduced_ef``).
        val_loader: Validation batches; None monitors the training loss instead.
        recipe: Task, optimisation and schedule settings.
        out_dir: Where ``last.pt``, ``best.pt`` and ``tensorboard/`` go.
        on_epoch: Called after each epoch with its result.
        resume: Continue from ``out_dir/last.pt`` when it exists (to ``recipe.epochs`` in
            all); False starts afresh and overwrites it.
        progress: Show a rich progress bar with the loss and the validation metric.
        device: Default CUDA when available, else CPU.

    Raises:
        ValueError: ``last.pt`` belongs to another model or is not a training checkpoint.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    channels_last = recipe.channels_last and device.type == "cuda"
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)
    autocast_dtype = _autocast_dtype(recipe, device)
    optimizer = torch.optim.AdamW(
        parameter_groups(
            model,
            lr_head=recipe.lr_head,
            lr_backbone=recipe.lr_backbone,
            weight_decay=recipe.weight_decay,
        )
    )
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    monitor = recipe.monitored_metric if val_loader is not None else "train_loss"
    higher_is_better = monitor in HIGHER_IS_BETTER
    state = _RunState()
    last_path, best_path = out / LAST_CHECKPOINT, out / BEST_CHECKPOINT
    if resume and last_path.is_file():
        state = _restore(last_path, model, optimizer, scaler, recipe, device)

    def result() -> FitResult:
        return FitResult(
            out_dir=out,
            last_checkpoint=last_path,
            best_checkpoint=best_path,
            monitor=monitor,
            best_metric=state.best_metric,
            best_epoch=state.best_epoch,
            epochs_completed=state.epoch,
            stopped_early=state.stopped_early,
            history=list(state.history),
        )

    if state.stopped_early or state.epoch >= recipe.epochs:
        return result()

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
    from torch.utils.tensorboard import SummaryWriter

    # purge_step drops events an interrupted run logged after its last checkpoint.
    writer = SummaryWriter(str(out / TENSORBOARD_DIR), purge_step=state.epoch + 1)
    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        "{task.fields[status]}",
        disable=not progress,
    )
    steps = _length(train_loader)
    task = bar.add_task(
        recipe.name, total=steps * (recipe.epochs - state.epoch) if steps else None, status=""
    )
    try:
        with bar:
            for epoch in range(state.epoch + 1, recipe.epochs + 1):
                started = time.perf_counter()
                seed_epoch(recipe.seed, epoch, train_loader)
                frozen = epoch <= recipe.freeze_backbone_epochs
                model.train()
                # After train(), so that a frozen backbone's BatchNorm statistics stay fixed.
                (freeze_backbone if frozen else unfreeze_backbone)(model)

                def advance(loss: float, epoch: int = epoch) -> None:
                    status = f"epoch {epoch}/{recipe.epochs} loss {loss:.4f}"
                    bar.update(task, advance=1, status=status + _last_metric(state, monitor))

                train_loss = _train_epoch(
                    model, train_loader, optimizer, scaler, recipe, device,
                    autocast_dtype, channels_last, advance,
                )  # fmt: skip
                metrics: dict[str, float] = {}
                if val_loader is not None:
                    predictions = predict_dataset(
                        model, val_loader, device=device, autocast_dtype=autocast_dtype,
                        channels_last=channels_last,
                    )  # fmt: skip
                    metrics = validation_metrics(predictions, recipe)
                value = train_loss if val_loader is None else metrics.get(monitor, math.nan)
                improved = is_improvement(
                    value, state.best_metric, higher_is_better=higher_is_better
                )
                if improved:
                    state.best_metric, state.best_epoch = value, epoch
                    state.epochs_without_improvement = 0
                else:
                    state.epochs_without_improvement += 1
                patience = recipe.early_stopping_patience
                state.stopped_early = (
                    patience is not None
                    and state.epochs_without_improvement >= patience
                    and epoch < recipe.epochs
                )
                lrs = {group["name"]: float(group["lr"]) for group in optimizer.param_groups}
                epoch_result = EpochResult(
                    epoch=epoch,
                    train_loss=train_loss,
                    metrics=metrics,
                    monitored=value,
                    improved=improved,
                    backbone_frozen=frozen,
                    lr_head=lrs.get("head", recipe.lr_head),
                    lr_backbone=lrs.get("backbone", recipe.lr_backbone),
                    seconds=time.perf_counter() - started,
                )
                state.epoch = epoch
                state.history.append(epoch_result)
                checkpoint = _checkpoint(model, optimizer, scaler, recipe, state, monitor)
                if improved:
                    _save_atomic(checkpoint, best_path)
                _save_atomic(checkpoint, last_path)
                _log(writer, epoch_result)
                if on_epoch is not None:
                    on_epoch(epoch_result)
                if state.stopped_early:
                    break
    finally:
        writer.close()
    return result()


def seed_epoch(seed: int, epoch: int, loader: object) -> None:
    """Reseed Python, NumPy, torch and the loader's dataset transforms for ``epoch``."""
    from monai.data.utils import set_rnd

    derived = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    random.seed(derived)
    np.random.seed(derived)
    torch.manual_seed(derived)
    dataset = getattr(loader, "dataset", None)
    if dataset is not None:
        set_rnd(dataset, derived)


def _autocast_dtype(recipe: TrainingRecipe, device: torch.device) -> torch.dtype | None:
    if device.type == "cuda" and recipe.amp:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and recipe.cpu_bf16:
        return torch.bfloat16
    return None


def _train_epoch(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    recipe: TrainingRecipe,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    channels_last: bool,
    advance: Callable[[float], None],
) -> float:
    """One pass over ``loader``; returns the mean loss per item."""
    total, count = 0.0, 0
    for batch in loader:
        image = batch["image"].to(device, non_blocking=True)
        if channels_last and image.ndim == 5:
            image = image.contiguous(memory_format=torch.channels_last_3d)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            outputs = model(image)
        loss = compute_loss(outputs, batch, recipe)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total += float(loss.detach()) * len(image)
        count += len(image)
        advance(total / count)
    return total / count if count else math.nan


def _last_metric(state: _RunState, monitor: str) -> str:
    if not state.history:
        return ""
    return f" | {monitor} {state.history[-1].monitored:.4f}"


def _length(loader: object) -> int:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return 0


def _log(writer: Any, result: EpochResult) -> None:
    writer.add_scalar("train/loss", result.train_loss, result.epoch)
    for name, value in result.metrics.items():
        writer.add_scalar(f"val/{name.removeprefix('val_')}", value, result.epoch)
    writer.add_scalar("lr/head", result.lr_head, result.epoch)
    writer.add_scalar("lr/backbone", result.lr_backbone, result.epoch)
    writer.add_scalar("backbone_frozen", float(result.backbone_frozen), result.epoch)
    writer.flush()


def _checkpoint(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    recipe: TrainingRecipe,
    state: _RunState,
    monitor: str,
) -> dict[str, Any]:
    """Everything a resume needs, in types ``torch.load(weights_only=True)`` accepts."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model_name": recipe.model,
        "recipe": recipe.model_dump(mode="json"),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": state.epoch,
        "monitor": monitor,
        "best_metric": state.best_metric,
        "best_epoch": state.best_epoch,
        "epochs_without_improvement": state.epochs_without_improvement,
        "stopped_early": state.stopped_early,
        "history": [asdict(result) for result in state.history],
    }


def _save_atomic(checkpoint: dict[str, Any], path: Path) -> None:
    """Write to a temporary file, then rename: a crash never leaves half a checkpoint."""
    partial = path.with_name(path.name + ".partial")
    torch.save(checkpoint, partial)
    os.replace(partial, path)


def _restore(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    recipe: TrainingRecipe,
    device: torch.device,
) -> _RunState:
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a training checkpoint; remove it or pass resume=False")
    if checkpoint["model_name"] != recipe.model:
        raise ValueError(
            f"{path}: holds model {checkpoint['model_name']!r}, the recipe trains "
            f"{recipe.model!r}; use another output directory or resume=False"
        )
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scaler.load_state_dict(checkpoint["scaler"])
    return _RunState(
        epoch=int(checkpoint["epoch"]),
        best_metric=checkpoint["best_metric"],
        best_epoch=checkpoint["best_epoch"],
        epochs_without_improvement=int(checkpoint["epochs_without_improvement"]),
        stopped_early=bool(checkpoint["stopped_early"]),
        history=[EpochResult(**entry) for entry in checkpoint["history"]],
    )
