"""Echo video network: R(2+1)D with a multi-task head (EF in percent, reduced-EF logit).

EchoNet-Dynamic regresses the ejection fraction with torchvision's R(2+1)D-18 and a
one-output linear layer whose bias starts at the mean EF of its training set; here the
head has a second output, the logit of the archive's ``reduced_ef`` label, so one
pass gives both. The backbone is torchvision's ``VideoResNet`` with ``fc`` replaced
by identity: its keys stay torchvision's, which is what Kinetics-400 checkpoints use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from imaging.models.config import ModelConfig
from imaging.models.networks import BackboneHeadModel, create_head, head_linear

if TYPE_CHECKING:
    from torchvision.models.video import VideoResNet

# EchoNet-Dynamic's training-set mean EF (percent), its starting bias for the EF output.
ECHONET_MEAN_EF = 55.6


class EchoMultiTask(BackboneHeadModel):
    """``head(backbone(x))`` on clips ``(B, C, T, H, W)``; C may be 1 (grey) or the stem's 3.

    A grey clip is repeated over the stem's channels, as EchoNet-Dynamic feeds its
    grey videos as RGB, so Kinetics-pretrained stems work unchanged.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, in_channels: int) -> None:
        super().__init__(backbone, head)
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 2)``: column 0 the EF in percent, column 1 the reduced-EF logit."""
        if x.ndim != 5:
            raise ValueError(f'Argument "x" must be (B, C, T, H, W), got shape {tuple(x.shape)}')
        if x.shape[1] == 1 and self.in_channels != 1:
            x = x.expand(-1, self.in_channels, -1, -1, -1)
        elif x.shape[1] != self.in_channels:
            raise ValueError(
                f'Argument "x" must have 1 or {self.in_channels} channels, got {x.shape[1]}'
            )
        result: torch.Tensor = self.head(self.backbone(x))
        return result


def build_r2plus1d_18(config: ModelConfig) -> EchoMultiTask:
    """torchvision ``r2plus1d_18(weights=None)`` (Kinetics-400 layout) with the new head."""
    from torchvision.models.video import r2plus1d_18

    if config.settings:
        raise ValueError(f"{config.name}: r2plus1d_18 takes no settings, got {config.settings}")
    return _with_head(r2plus1d_18(weights=None), config)


def build_video_resnet_r2plus1d(config: ModelConfig) -> EchoMultiTask:
    """A ``VideoResNet`` of R(2+1)D blocks with ``settings["layers"]`` blocks per stage.

    ``layers: [2, 2, 2, 2]`` is R(2+1)D-18; ``[1, 1, 1, 1]`` is the small network the
    tests use (same module names, fewer blocks).
    """
    from torchvision.models.video.resnet import (
        BasicBlock,
        Conv2Plus1D,
        R2Plus1dStem,
        VideoResNet,
    )

    layers = [int(count) for count in config.settings.get("layers", [2, 2, 2, 2])]
    unknown = sorted(set(config.settings) - {"layers"})
    if unknown:
        raise ValueError(f"{config.name}: unknown settings {unknown}; only 'layers' is taken")
    network = VideoResNet(
        block=BasicBlock,
        conv_makers=[Conv2Plus1D] * 4,
        layers=layers,
        stem=R2Plus1dStem,
    )
    return _with_head(network, config)


def _with_head(network: VideoResNet, config: ModelConfig) -> EchoMultiTask:
    if config.input.channels != 3:
        raise ValueError(
            f"{config.name}: input channels must be 3 (R(2+1)D's RGB stem; grey clips are "
            f"repeated over them), got {config.input.channels}"
        )
    final = network.fc
    network.fc = nn.Identity()
    head = create_head(final.in_features, len(config.outputs), config.dropout)
    linear = head_linear(head)
    if config.task in ("ef_multitask", "regression"):
        # Start the EF output at a typical EF so early epochs do not chase the offset.
        with torch.no_grad():
            linear.bias[0] = ECHONET_MEAN_EF
    return EchoMultiTask(network, head, config.input.channels)
