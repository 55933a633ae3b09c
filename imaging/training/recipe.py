"""Training recipes: one YAML file per run under ``configs/training/``.

A recipe says which model to train on which target of the sample archive, how the
images are preprocessed, how the data are split, and every optimisation setting. It is
data only (:func:`load_recipe` validates it); :func:`imaging.training.run.train_from_recipe`
turns it into a run. Relative paths in a recipe (``output_dir``, ``cache_dir``,
``backbone_checkpoint``) are relative to the working directory, as a command line's are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from imaging.config_files import REPOSITORY_CONFIGS, load_yaml_model
from imaging.transforms.pipelines import EchoPreprocessing, MRIPreprocessing

RECIPES_DIR = REPOSITORY_CONFIGS / "training"

Task = Literal["classification", "regression", "ef_multitask"]
Target = Literal["label", "sex", "age", "ef"]

# Which targets each task can learn, and which are modality-specific.
TASK_TARGETS: dict[str, tuple[str, ...]] = {
    "classification": ("label", "sex"),
    "regression": ("age", "ef"),
    "ef_multitask": ("ef",),
}
MODALITY_TARGETS: dict[str, tuple[str, ...]] = {
    "MR": ("label", "sex", "age"),
    "US": ("label", "sex", "age", "ef"),
}
# Validation metrics each task reports; the monitored one must be among them.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("val_loss", "val_auc", "val_accuracy", "val_balanced_accuracy"),
    "regression": ("val_loss", "val_mae", "val_rmse"),
    "ef_multitask": ("val_loss", "val_mae", "val_rmse", "val_auc"),
}
DEFAULT_MONITOR = {"classification": "val_auc", "regression": "val_mae", "ef_multitask": "val_mae"}
HIGHER_IS_BETTER = frozenset({"val_auc", "val_accuracy", "val_balanced_accuracy"})


class SplitSettings(BaseModel):
    """The patient-level split used when the caller passes none (pooled random)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    val_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    seed: int = 0
    stratify_by: str | None = "label"
    # Fraction of the training patients whose labels are used: fine-tuning "with fewer
    # labelled subjects". The same seed and fraction give the same subset in every recipe.
    train_fraction: float = Field(default=1.0, gt=0.0, le=1.0)


class TrainingRecipe(BaseModel):
    """One training run. See ``configs/training/*.yaml`` for documented examples."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    # What to train.
    model: str = Field(min_length=1)
    model_overrides: dict[str, Any] = Field(default_factory=dict)
    pretrained: str | None = None
    backbone_checkpoint: Path | None = None
    modality: Literal["MR", "US"]
    task: Task
    target: Target
    class_names: tuple[str, ...] | None = None
    # Data.
    mri: MRIPreprocessing = MRIPreprocessing()
    echo: EchoPreprocessing = EchoPreprocessing()
    split: SplitSettings = SplitSettings()
    cache: Literal["memory", "disk", "none"] = "memory"
    cache_dir: Path = Path("runs/cache")
    num_workers: int = Field(default=0, ge=0)
    # Optimisation.
    epochs: int = Field(ge=1)
    batch_size: int = Field(default=4, ge=1)
    lr_head: float = Field(default=1e-3, gt=0.0)
    lr_backbone: float = Field(default=1e-4, ge=0.0)
    weight_decay: float = Field(default=1e-4, ge=0.0)
    freeze_backbone_epochs: int = Field(default=0, ge=0)
    regression_loss: Literal["mse", "l1"] = "mse"
    target_scale: float = Field(default=1.0, gt=0.0)
    reduced_ef_weight: float = Field(default=1.0, ge=0.0)
    early_stopping_patience: int | None = Field(default=None, ge=1)
    monitor: str | None = None
    seed: int = 0
    amp: bool = True
    cpu_bf16: bool = False
    channels_last: bool = True
    output_dir: Path = Path("runs")

    @model_validator(mode="after")
    def _consistent(self) -> TrainingRecipe:
        if self.target not in TASK_TARGETS[self.task]:
            raise ValueError(
                f'target "{self.target}" does not fit task "{self.task}"; '
                f"valid: {list(TASK_TARGETS[self.task])}"
            )
        if self.target not in MODALITY_TARGETS[self.modality]:
            raise ValueError(f'target "{self.target}" is not recorded for modality {self.modality}')
        other = "echo" if self.modality == "MR" else "mri"
        if other in self.model_fields_set:
            raise ValueError(f'section "{other}" does not apply to modality {self.modality}')
        if self.monitor is not None and self.monitor not in TASK_METRICS[self.task]:
            raise ValueError(
                f'monitor "{self.monitor}" is not reported for task "{self.task}"; '
                f"valid: {list(TASK_METRICS[self.task])}"
            )
        if self.task == "classification" and self.class_names is None:
            raise ValueError('task "classification" needs "class_names" (index order)')
        if self.task != "classification" and self.class_names is not None:
            raise ValueError(f'task "{self.task}" takes no "class_names"')
        return self

    @property
    def monitored_metric(self) -> str:
        """The validation metric early stopping and ``best.pt`` follow."""
        return self.monitor or DEFAULT_MONITOR[self.task]

    def to_json_dict(self) -> dict[str, Any]:
        """Every effective value as JSON types, without the other modality's section
        (which validation refuses), so ``model_validate`` reads it back."""
        other_modality = "echo" if self.modality == "MR" else "mri"
        return self.model_dump(mode="json", exclude={other_modality})

    @property
    def run_dir(self) -> Path:
        """``output_dir / name``: where checkpoints and logs go by default."""
        return self.output_dir / self.name


def load_recipe(path_or_name: str | Path) -> TrainingRecipe:
    """Read a recipe file, or ``configs/training/<name>.yaml`` when given a bare name.

    Raises:
        FileNotFoundError: No such file or recipe name.
        ValueError: Not YAML or not a valid recipe; the message names the file and field.
    """
    path = Path(path_or_name)
    if path.suffix not in {".yaml", ".yml"} and not path.exists():
        path = RECIPES_DIR / f"{path_or_name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no training recipe {path_or_name!r}; known: {names}")
    return load_yaml_model(path, TrainingRecipe, what="training recipe")
