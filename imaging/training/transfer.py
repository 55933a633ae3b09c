"""Transfer learning on ``backbone``/``head`` models: freezing, learning rates, backbone reuse.

Every model :func:`imaging.models.factory.create_model` returns has a ``backbone`` (the
feature extractor that pretrained weights fill) and a ``head`` (new for each task). The
usual schedule trains the head alone while the backbone is frozen, then everything with
a smaller learning rate for the backbone (discriminative learning rates).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from imaging.errors import CheckpointError

BACKBONE_PREFIX = "backbone."


def _parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    backbone, head = getattr(model, "backbone", None), getattr(model, "head", None)
    if not isinstance(backbone, nn.Module) or not isinstance(head, nn.Module):
        raise TypeError(f"{type(model).__name__} has no `backbone` and `head` modules")
    return backbone, head


def _backbone(model: nn.Module) -> nn.Module:
    return _parts(model)[0]


def freeze_backbone(model: nn.Module) -> None:
    """Stop gradients to the backbone and keep its normalisation statistics fixed.

    BatchNorm layers of a frozen backbone run in eval mode (call again after
    ``model.train()``, as :func:`imaging.training.loop.fit` does each epoch), so the
    frozen epochs change neither its weights nor its running statistics.
    """
    backbone = _backbone(model)
    for parameter in backbone.parameters():
        parameter.requires_grad_(False)
    backbone.eval()


def unfreeze_backbone(model: nn.Module) -> None:
    """Let the backbone train again (gradients on; train mode if the model is training)."""
    backbone = _backbone(model)
    for parameter in backbone.parameters():
        parameter.requires_grad_(True)
    backbone.train(model.training)


def is_backbone_frozen(model: nn.Module) -> bool:
    """True when no backbone parameter takes gradients."""
    return not any(p.requires_grad for p in _backbone(model).parameters())


def parameter_groups(
    model: nn.Module, *, lr_head: float, lr_backbone: float, weight_decay: float
) -> list[dict[str, Any]]:
    """Optimizer parameter groups: backbone at ``lr_backbone``, everything else at ``lr_head``.

    Biases and normalisation weights (1-D parameters) get no weight decay, as is usual
    for AdamW. Each group has a ``name``: ``backbone``, ``backbone_no_decay``, ``head``,
    ``head_no_decay``; empty groups are left out. Frozen parameters stay in their group
    (AdamW skips parameters without gradients), so unfreezing needs no new optimizer.
    """
    backbone_ids = {id(p) for p in _backbone(model).parameters()}
    groups: dict[str, list[nn.Parameter]] = {
        "backbone": [],
        "backbone_no_decay": [],
        "head": [],
        "head_no_decay": [],
    }
    for parameter in model.parameters():
        part = "backbone" if id(parameter) in backbone_ids else "head"
        groups[part if parameter.ndim > 1 else f"{part}_no_decay"].append(parameter)
    return [
        {
            "name": name,
            "params": params,
            "lr": lr_backbone if name.startswith("backbone") else lr_head,
            "weight_decay": 0.0 if name.endswith("no_decay") else weight_decay,
        }
        for name, params in groups.items()
        if params
    ]


def load_backbone_from_checkpoint(model: nn.Module, path: str | Path) -> int:
    """Fill ``model.backbone`` from a training checkpoint's ``backbone.*`` weights.

    The checkpoint's head is ignored (the new task has its own), so a model pretrained on
    age regression gives its backbone to an AD classifier. Returns the tensors copied.

    Raises:
        CheckpointError: Unreadable file, no backbone weights in it, or backbone keys or
            shapes that differ from ``model``'s; the message lists them.
    """
    from imaging.models.checkpoints import copy_state, read_checkpoint

    state = read_checkpoint(Path(path))
    backbone_state = {
        key[len(BACKBONE_PREFIX) :]: value
        for key, value in state.items()
        if key.startswith(BACKBONE_PREFIX)
    }
    if not backbone_state:
        raise CheckpointError(path, f'holds no "{BACKBONE_PREFIX}*" weights')
    return copy_state(_backbone(model), backbone_state, path)


def initialise_output_bias(model: nn.Module, values: dict[int, float]) -> None:
    """Set output biases of the head's last linear layer (``{output index: value}``).

    Regression heads start at the training targets' mean, as EchoNet-Dynamic does for
    EF, so the first epochs learn the variation instead of the offset.

    Raises:
        TypeError: The head has no linear layer with a bias.
    """
    _, head = _parts(model)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear) and m.bias is not None]
    if not linears:
        raise TypeError(f"the head of {type(model).__name__} has no linear layer with a bias")
    with torch.no_grad():
        for index, value in values.items():
            linears[-1].bias[index] = value
