"""Export a training run as a model bundle (training side of :mod:`imaging.bundle`).

Kept apart from :mod:`imaging.bundle` so that loading a bundle for inference never
imports training code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imaging.bundle import save_bundle
from imaging.model_card import DEFAULT_TRAINING_DATA
from imaging.models.factory import apply_overrides, build_model, load_model_config
from imaging.models.weights import load_pretrained
from imaging.training.data import resolve_preprocessing
from imaging.training.recipe import TrainingRecipe


def bundle_from_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    checkpoint: str = "best.pt",
    manifest: str | Path | None = None,
    metrics_summary: Mapping[str, Any] | None = None,
    temperature: float | None = None,
    version: str = "0.1.0",
) -> Path:
    """Turn a :func:`imaging.training.run.train_from_recipe` run into a bundle.

    The run folder's ``recipe.json`` names the model and preprocessing, ``checkpoint``
    holds the weights, and ``split.json`` with the archive's ``manifest`` (optional)
    give the training data's sites and counts.

    Raises:
        FileNotFoundError: The run has no ``recipe.json``.
        CheckpointError: The checkpoint is missing or does not fit the model.
    """
    run = Path(run_dir)
    recipe = TrainingRecipe.model_validate_json((run / "recipe.json").read_text())
    config = apply_overrides(load_model_config(recipe.model), dict(recipe.model_overrides))
    model = build_model(config)
    load_pretrained(model, run / checkpoint, format="mmdx", include_head=True)
    return save_bundle(
        model,
        config,
        out_dir,
        preprocessing=resolve_preprocessing(recipe, config.input),
        class_names=recipe.class_names,
        metrics_summary=metrics_summary,
        training_data=describe_training_data(run, manifest),
        temperature=temperature,
        version=version,
        name=recipe.name,
        description=recipe.description,
    )


def describe_training_data(run_dir: str | Path, manifest: str | Path | None) -> dict[str, Any]:
    """The training data of a run: its split's training studies, their sites and patients."""
    split_file = Path(run_dir) / "split.json"
    if not split_file.is_file():
        return dict(DEFAULT_TRAINING_DATA)
    split = json.loads(split_file.read_text())
    train = set(split.get("train", []))
    described: dict[str, Any] = {
        **DEFAULT_TRAINING_DATA,
        "split": {"name": split.get("name"), "kind": split.get("kind")},
        "n_studies": len(train),
        "n_validation_studies": len(split.get("val", [])),
    }
    if manifest is not None:
        import csv

        with Path(manifest).open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if row["study_instance_uid"] in train]
        described["sites"] = sorted({row["site_id"] for row in rows})
        described["n_patients"] = len({row["patient_id"] for row in rows})
        described["manifest"] = str(manifest)
    return described
