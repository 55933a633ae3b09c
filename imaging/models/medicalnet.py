"""MedicalNet (Med3D, Chen et al. 2019) checkpoints onto MONAI's 3D ResNet.

MedicalNet's ``models/resnet.py`` names its modules as MONAI's ``ResNet`` does
(``conv1``, ``bn1``, ``layerN.M.conv1``/``bn1``/``conv2``/``bn2``[/``conv3``/``bn3``],
``layerN.0.downsample.0``/``.1``), so remapping is: drop the ``module.`` prefix that
``nn.DataParallel`` added when the checkpoints were saved, and drop the segmentation
decoder ``conv_seg.*``. The architectures must agree for the tensors to fit: MedicalNet's
ResNet-10/50 use shortcut B (a 1x1 convolution without bias), ResNet-18/34 shortcut A
(zero padding, no parameters), and its first convolution is 7x7x7 with stride 2 on one
channel. MedicalNet's layers 3 and 4 are dilated with stride 1 where MONAI's have stride
2; that changes the feature map size, not any tensor, so the weights load unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from imaging.models.checkpoints import StateDict, strip_prefix

if TYPE_CHECKING:
    import torch

# The segmentation decoder MedicalNet trained on its 23 data sets; a classifier has no use for it.
DECODER_PREFIX = "conv_seg."
DATA_PARALLEL_PREFIX = "module."


def remap_medicalnet(state: Mapping[str, torch.Tensor]) -> tuple[StateDict, list[str]]:
    """MONAI ``ResNet`` backbone keys from a MedicalNet state dict, and the keys dropped.

    Keys other than the decoder's are kept as they are, so a foreign key (say an
    ``fc.weight``) reaches the key check and is reported there rather than ignored.
    """
    stripped = strip_prefix(state, DATA_PARALLEL_PREFIX)
    dropped = sorted(key for key in stripped if key.startswith(DECODER_PREFIX))
    backbone = {key: value for key, value in stripped.items() if key not in dropped}
    return backbone, dropped
