"""Training recipes: the shipped ones load and fit their models; bad ones name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from imaging.models.factory import apply_overrides, list_models, load_model_config
from imaging.training.recipe import RECIPES_DIR, TrainingRecipe, load_recipe
from imaging.training.run import check_model_fits_recipe

SHIPPED = (
    "echo_ef",
    "echo_ef_cpu",
    "echo_ef_tiny",
    "mri_ad_finetune",
    "mri_ad_scratch",
    "mri_ad_tiny",
    "mri_age_pretrain",
)
MINIMAL = """\
name: bad
model: resnet10_3d_tiny
modality: MR
task: classification
target: label
class_names: [CN, AD]
epochs: 2
"""


def test_every_shipped_recipe_loads_and_fits_its_model() -> None:
    assert sorted(path.stem for path in RECIPES_DIR.glob("*.yaml")) == list(SHIPPED)
    for name in SHIPPED:
        recipe = load_recipe(name)
        assert recipe.name == name
        assert recipe.model in list_models()
        config = apply_overrides(load_model_config(recipe.model), dict(recipe.model_overrides))
        check_model_fits_recipe(config, recipe)  # raises on a mismatch


def test_recipe_values_and_defaults() -> None:
    finetune = load_recipe(RECIPES_DIR / "mri_ad_finetune.yaml")
    assert finetune.backbone_checkpoint == Path("runs/mri_age_pretrain/best.pt")
    assert (finetune.lr_head, finetune.lr_backbone, finetune.freeze_backbone_epochs) == (
        1e-3,
        1e-4,
        2,
    )
    assert finetune.mri.spatial_size == (48, 48, 48)
    assert finetune.split.train_fraction == 0.5
    assert finetune.monitored_metric == "val_auc"
    assert load_recipe("mri_age_pretrain").monitored_metric == "val_mae"
    assert load_recipe("echo_ef_tiny").echo.clip_length == 16


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ("epoch: 3\n", "epoch"),  # a misspelt field is refused, not ignored
        ("batch_size: 0\n", "batch_size"),
        ("cache: ram\n", "cache"),
        ("monitor: val_mae\n", "monitor"),  # not reported for classification
        ("echo:\n  clip_length: 8\n", "echo"),  # the other modality's section
        ("mri:\n  spacing: [1.0, 1.0]\n", "mri.spacing"),
    ],
)
def test_bad_recipe_is_refused_naming_the_field(tmp_path: Path, extra: str, named: str) -> None:
    path = _write(tmp_path, MINIMAL + extra)
    with pytest.raises(ValueError, match="invalid training recipe") as caught:
        load_recipe(path)
    assert named in str(caught.value)
    assert str(path) in str(caught.value)


def test_target_must_fit_task_and_modality() -> None:
    base = {"name": "x", "model": "m", "epochs": 1}
    with pytest.raises(ValueError, match='target "age" does not fit task "classification"'):
        TrainingRecipe.model_validate(
            {**base, "modality": "MR", "task": "classification", "target": "age",
             "class_names": ["a", "b"]}
        )  # fmt: skip
    with pytest.raises(ValueError, match='target "ef" is not recorded for modality MR'):
        TrainingRecipe.model_validate(
            {**base, "modality": "MR", "task": "regression", "target": "ef"}
        )
    with pytest.raises(ValueError, match='needs "class_names"'):
        TrainingRecipe.model_validate(
            {**base, "modality": "MR", "task": "classification", "target": "label"}
        )


def test_unknown_recipe_name_lists_the_known_ones() -> None:
    with pytest.raises(FileNotFoundError, match="mri_ad_tiny"):
        load_recipe("no_such_recipe")


def test_model_that_does_not_fit_the_recipe_is_refused() -> None:
    recipe = load_recipe("mri_age_pretrain").model_copy(update={"model_overrides": {}})
    with pytest.raises(ValueError, match=r"task classification \(recipe regression\)"):
        check_model_fits_recipe(load_model_config(recipe.model), recipe)
