"""Kinetics-400 video checkpoints (torchvision's ``VideoResNet`` layout) onto the echo backbone.

torchvision's ``r2plus1d_18`` state dict has ``stem.*``, ``layer1..4.*`` and the
400-class ``fc.*``. The echo backbone is the same ``VideoResNet`` with ``fc`` replaced
by identity, so the stem and the layers keep their names and only ``fc`` is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from imaging.models.checkpoints import StateDict, strip_prefix

if TYPE_CHECKING:
    import torch

CLASSIFIER_PREFIX = "fc."


def remap_kinetics(state: Mapping[str, torch.Tensor]) -> tuple[StateDict, list[str]]:
    """``VideoResNet`` backbone keys from a Kinetics state dict, and the keys dropped."""
    stripped = strip_prefix(state, "module.")
    dropped = sorted(key for key in stripped if key.startswith(CLASSIFIER_PREFIX))
    backbone = {key: value for key, value in stripped.items() if key not in dropped}
    return backbone, dropped
