"""MRI classifiers: MONAI's 3D DenseNet121 and ResNet split into ``backbone`` and ``head``.

Every network the factory returns has these two parts so training can freeze the
backbone or give it its own learning rate, and pretrained weights fill the backbone
while the head starts fresh. The backbone keeps MONAI's module names (a MONAI ResNet's
``conv1``, ``layer1.0.conv1``...), which is what makes MedicalNet checkpoints map onto
it key for key.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from imaging.models.config import ModelConfig


class BackboneHeadModel(nn.Module):
    """``head(backbone(x))``: a feature extractor and the layer that maps features to outputs."""

    backbone: nn.Module
    head: nn.Module

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``(B, outputs)`` for an input batch ``x``."""
        result: torch.Tensor = self.head(self.backbone(x))
        return result


def create_head(in_features: int, out_features: int, dropout: float) -> nn.Module:
    """A linear layer, after dropout when ``dropout`` > 0."""
    linear = nn.Linear(in_features, out_features)
    if dropout == 0.0:
        return linear
    return nn.Sequential(nn.Dropout(dropout), linear)


def head_linear(head: nn.Module) -> nn.Linear:
    """The linear layer of a head made by :func:`create_head`."""
    linear = head if isinstance(head, nn.Linear) else list(head.children())[-1]
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"the head ends in a {type(linear).__name__}, not Linear")
    return linear


def build_monai_resnet(config: ModelConfig) -> BackboneHeadModel:
    """MONAI ``ResNet`` without its ``fc`` as backbone, a new linear head.

    ``settings`` take ``monai.networks.nets.ResNet``'s arguments (``block``, ``layers``,
    ``block_inplanes``, ``conv1_t_stride``, ``shortcut_type``, ``bias_downsample``...);
    ``spatial_dims``, ``n_input_channels`` and ``feed_forward`` are set here.
    """
    from monai.networks.nets import ResNet

    settings: dict[str, Any] = dict(config.settings)
    backbone = ResNet(
        spatial_dims=3,
        n_input_channels=config.input.channels,
        feed_forward=False,
        **settings,
    )
    expansion = 4 if settings.get("block") == "bottleneck" else 1
    widen = float(settings.get("widen_factor", 1.0))
    in_features = int(list(settings["block_inplanes"])[-1] * widen) * expansion
    head = create_head(in_features, _outputs(config), config.dropout)
    return BackboneHeadModel(backbone, head)


def build_monai_densenet121(config: ModelConfig) -> BackboneHeadModel:
    """MONAI ``DenseNet121`` whose final linear layer becomes the head.

    The backbone keeps ``features`` and ``class_layers`` (ReLU, pooling, flatten) with the
    last ``out`` layer replaced by identity, so its keys stay MONAI's.
    """
    from monai.networks.nets import DenseNet121

    backbone = DenseNet121(
        spatial_dims=3,
        in_channels=config.input.channels,
        out_channels=_outputs(config),
        **config.settings,
    )
    final = backbone.get_submodule("class_layers.out")
    if not isinstance(final, nn.Linear):
        raise TypeError(f"DenseNet121's last layer is a {type(final).__name__}, not Linear")
    backbone.class_layers.out = nn.Identity()
    head = create_head(final.in_features, _outputs(config), config.dropout)
    return BackboneHeadModel(backbone, head)


def _outputs(config: ModelConfig) -> int:
    if config.task == "classification":
        return int(config.num_classes or 0)
    return len(config.outputs)
