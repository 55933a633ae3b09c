"""Model configurations: one YAML file per model under ``configs/models/``.

A configuration names the architecture, its settings and the input the network
expects (the network data format a bundle's metadata repeats). It is data only;
:func:`imaging.models.factory.create_model` turns it into a network.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Architecture = Literal[
    "monai_densenet121",
    "monai_resnet",
    "r2plus1d_18",
    "video_resnet_r2plus1d",
]
Task = Literal["classification", "ef_multitask", "regression"]

# What each task's output columns mean, so callers need not guess from the shape.
EF_MULTITASK_OUTPUTS = ("ef_percent", "reduced_ef_logit")


class InputSpec(BaseModel):
    """The tensor a network takes: shape, sampling, intensity scale and normalisation.

    MR volumes are ``(channels, *spatial_size)`` at ``spacing`` mm; echo clips are
    ``(channels, frames, *spatial_size)`` with every ``period``-th frame of the loop.
    ``mean``/``std`` are per channel and apply after scaling to ``value_range``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: int = Field(ge=1)
    spatial_size: tuple[int, ...]
    spacing: tuple[float, ...] | None = None
    frames: int | None = Field(default=None, ge=1)
    period: int | None = Field(default=None, ge=1)
    value_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


class ModelConfig(BaseModel):
    """One model: what it is for, how it is built, and what it takes in.

    ``settings`` go to the architecture's builder unchanged (MONAI's and torchvision's
    argument names); the factory rejects settings a builder does not know.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    modality: Literal["MR", "US"]
    architecture: Architecture
    task: Task
    num_classes: int | None = Field(default=None, ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    settings: dict[str, Any] = Field(default_factory=dict)
    input: InputSpec

    @model_validator(mode="after")
    def _outputs_fit_task(self) -> ModelConfig:
        if self.task == "classification" and self.num_classes is None:
            raise ValueError('task "classification" needs "num_classes"')
        if self.task != "classification" and self.num_classes is not None:
            raise ValueError(f'task "{self.task}" has fixed outputs; drop "num_classes"')
        return self

    @property
    def outputs(self) -> tuple[str, ...]:
        """Names of the output columns, in order."""
        if self.task == "ef_multitask":
            return EF_MULTITASK_OUTPUTS
        if self.task == "regression":
            return ("value",)
        return tuple(f"logit_{index}" for index in range(self.num_classes or 0))
