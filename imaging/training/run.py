"""One training run from a recipe: manifest -> split -> datasets -> model -> ``fit``.

This is what ``mmdx train CONFIG`` calls. The run directory receives, next to the
checkpoints and logs, ``recipe.json`` and ``split.json`` (the studies in each part), so
a run can be traced back to its settings and data.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from imaging.training.data import (
    create_dataset,
    create_loader,
    read_manifest,
    resolve_preprocessing,
    training_records,
)
from imaging.training.loop import EpochResult, FitResult, fit
from imaging.training.recipe import TrainingRecipe, load_recipe
from imaging.training.transfer import initialise_output_bias, load_backbone_from_checkpoint

if TYPE_CHECKING:
    from torch import nn

    from imaging.evaluation.splits import Split
    from imaging.models.config import ModelConfig


@dataclass(frozen=True)
class PreparedRun:
    """A run ready to ``fit``: the model, its loaders and where it writes."""

    recipe: TrainingRecipe
    model_config: ModelConfig
    model: nn.Module
    train_loader: Any
    val_loader: Any | None
    out_dir: Path
    split: Split


def default_split(rows: Sequence[Mapping[str, str]], recipe: TrainingRecipe) -> Split:
    """The recipe's patient-level pooled random split of ``rows``."""
    from imaging.evaluation.splits import pooled_random_split

    settings = recipe.split
    return pooled_random_split(
        rows,
        test_fraction=settings.test_fraction,
        val_fraction=settings.val_fraction,
        seed=settings.seed,
        stratify_by=settings.stratify_by,
    )


def labelled_subset(
    rows: Sequence[Mapping[str, str]], indices: Sequence[int], fraction: float, seed: int
) -> list[int]:
    """A seeded ``fraction`` of the patients among ``indices`` (at least one), all their rows.

    Fine-tuning and training from scratch with the same fraction and seed use the same
    labelled subjects.
    """
    if fraction >= 1.0:
        return list(indices)
    patients = sorted({rows[i]["patient_id"] for i in indices})
    keep_count = max(1, round(fraction * len(patients)))
    order = np.random.default_rng(seed).permutation(len(patients))
    kept = {patients[j] for j in order[:keep_count]}
    return [i for i in indices if rows[i]["patient_id"] in kept]


def check_model_fits_recipe(config: ModelConfig, recipe: TrainingRecipe) -> None:
    """Raise ValueError when the model's modality, task or classes differ from the recipe's."""
    problems = []
    if config.modality != recipe.modality:
        problems.append(f"modality {config.modality} (recipe {recipe.modality})")
    if config.task != recipe.task:
        problems.append(f"task {config.task} (recipe {recipe.task})")
    if recipe.class_names is not None and config.num_classes != len(recipe.class_names):
        problems.append(f"{config.num_classes} classes (recipe {list(recipe.class_names)})")
    if problems:
        raise ValueError(
            f'model "{recipe.model}" does not fit recipe "{recipe.name}": '
            + ", ".join(problems)
            + '; set "model_overrides" (e.g. task, num_classes) or choose another model'
        )


def prepare_run(
    recipe: TrainingRecipe | str | Path,
    *,
    manifest: str | Path,
    split: Split | None = None,
    out_dir: str | Path | None = None,
) -> PreparedRun:
    """Everything :func:`train_from_recipe` builds before training starts.

    Args:
        recipe: A recipe, its file, or a name under ``configs/training``.
        manifest: The archive's ``manifest.csv``; image paths are relative to its folder.
        split: Indices into the manifest's rows of the recipe's modality (file order);
            default :func:`default_split`. Its test part is never used here.
        out_dir: Default ``recipe.run_dir``.

    Raises:
        ValueError: Model and recipe disagree, the manifest lacks a target, or the split
            leaves no training record.
        CheckpointError: ``pretrained`` or ``backbone_checkpoint`` cannot be loaded.
    """
    from imaging.models.factory import apply_overrides, create_model, load_model_config

    if not isinstance(recipe, TrainingRecipe):
        recipe = load_recipe(recipe)
    manifest = Path(manifest)
    config = apply_overrides(load_model_config(recipe.model), dict(recipe.model_overrides))
    check_model_fits_recipe(config, recipe)
    rows = read_manifest(manifest, recipe.modality)
    split = split if split is not None else default_split(rows, recipe)
    train_indices = labelled_subset(
        rows, split.train, recipe.split.train_fraction, recipe.split.seed
    )
    if not train_indices:
        raise ValueError(f"split {split.name!r} leaves no {recipe.modality} study to train on")
    train_records = training_records([rows[i] for i in train_indices], manifest.parent, recipe)
    val_records = training_records([rows[i] for i in split.val], manifest.parent, recipe)

    out = Path(out_dir) if out_dir is not None else recipe.run_dir
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "recipe.json", recipe.to_json_dict())
    _write_json(
        out / "split.json",
        {
            "name": split.name,
            "kind": split.kind,
            "train": [rows[i]["study_instance_uid"] for i in train_indices],
            "val": [rows[i]["study_instance_uid"] for i in split.val],
            "test": [rows[i]["study_instance_uid"] for i in split.test],
        },
    )

    torch.manual_seed(recipe.seed)  # the head's (and a scratch model's) initial weights
    model = create_model(recipe.model, pretrained=recipe.pretrained, **recipe.model_overrides)
    if recipe.backbone_checkpoint is not None:
        load_backbone_from_checkpoint(model, recipe.backbone_checkpoint)
    if recipe.task != "classification":
        mean = float(np.mean([record["target"] for record in train_records]))
        initialise_output_bias(model, {0: mean})

    preprocessing = resolve_preprocessing(recipe, config.input)
    datasets = {
        part: create_dataset(
            records,
            preprocessing,
            train=part == "train",
            cache=recipe.cache,
            cache_dir=recipe.cache_dir,
            num_workers=recipe.num_workers,
        )
        for part, records in (("train", train_records), ("val", val_records))
        if records
    }
    loaders = {
        part: create_loader(
            dataset,
            batch_size=recipe.batch_size,
            shuffle=part == "train",
            num_workers=recipe.num_workers,
        )
        for part, dataset in datasets.items()
    }
    return PreparedRun(
        recipe=recipe,
        model_config=config,
        model=model,
        train_loader=loaders["train"],
        val_loader=loaders.get("val"),
        out_dir=out,
        split=split,
    )


def train_from_recipe(
    recipe: TrainingRecipe | str | Path,
    *,
    manifest: str | Path,
    split: Split | None = None,
    out_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    on_epoch: Callable[[EpochResult], None] | None = None,
    device: torch.device | str | None = None,
) -> FitResult:
    """Prepare the run (:func:`prepare_run`) and ``fit`` it; see both for the arguments."""
    run = prepare_run(recipe, manifest=manifest, split=split, out_dir=out_dir)
    return fit(
        run.model,
        run.train_loader,
        run.val_loader,
        run.recipe,
        out_dir=run.out_dir,
        on_epoch=on_epoch,
        resume=resume,
        progress=progress,
        device=device,
    )


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
