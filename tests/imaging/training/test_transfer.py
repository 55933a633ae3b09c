"""Transfer learning: freezing, discriminative parameter groups, backbones from checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from imaging.errors import CheckpointError
from imaging.models.factory import create_model
from imaging.training.objectives import compute_loss
from imaging.training.recipe import TrainingRecipe
from imaging.training.transfer import (
    freeze_backbone,
    initialise_output_bias,
    is_backbone_frozen,
    load_backbone_from_checkpoint,
    parameter_groups,
    unfreeze_backbone,
)


def test_parameter_groups_give_backbone_and_head_their_rates() -> None:
    model = create_model("resnet10_3d_tiny")
    groups = parameter_groups(model, lr_head=1e-3, lr_backbone=1e-5, weight_decay=0.01)
    by_name = {group["name"]: group for group in groups}
    assert {name: group["lr"] for name, group in by_name.items()} == {
        "backbone": 1e-5,
        "backbone_no_decay": 1e-5,
        "head": 1e-3,
        "head_no_decay": 1e-3,
    }
    assert by_name["backbone"]["weight_decay"] == 0.01
    assert by_name["head_no_decay"]["weight_decay"] == 0.0
    # Every parameter in exactly one group; the head is the 32 -> 2 linear layer.
    grouped = [id(p) for group in groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    assert [tuple(p.shape) for p in by_name["head"]["params"]] == [(2, 32)]
    assert [tuple(p.shape) for p in by_name["head_no_decay"]["params"]] == [(2,)]


def test_freeze_and_unfreeze_switch_backbone_gradients_only() -> None:
    model = create_model("resnet10_3d_tiny")
    freeze_backbone(model)
    assert is_backbone_frozen(model)
    assert not model.backbone.training
    assert all(p.requires_grad for p in model.head.parameters())
    model.train()
    unfreeze_backbone(model)
    assert not is_backbone_frozen(model)
    assert model.backbone.training


def _save_training_checkpoint(model: torch.nn.Module, path: Path) -> Path:
    torch.save(
        {"format": "mmdx-training-checkpoint", "model": model.state_dict(), "epoch": 3}, path
    )
    return path


def test_backbone_loads_from_a_checkpoint_with_another_head(tmp_path: Path) -> None:
    torch.manual_seed(1)
    regressor = create_model("resnet10_3d_tiny", task="regression", num_classes=None)
    path = _save_training_checkpoint(regressor, tmp_path / "best.pt")
    torch.manual_seed(2)
    classifier = create_model("resnet10_3d_tiny")
    head_before = {k: v.clone() for k, v in classifier.head.state_dict().items()}
    copied = load_backbone_from_checkpoint(classifier, path)
    assert copied == len(regressor.backbone.state_dict())
    for key, value in regressor.backbone.state_dict().items():
        assert torch.equal(classifier.backbone.state_dict()[key], value), key
    for key, value in classifier.head.state_dict().items():
        assert torch.equal(value, head_before[key])  # the new head is kept


def test_backbone_of_another_shape_is_refused(tmp_path: Path) -> None:
    wider = create_model("resnet10_3d_tiny", block_inplanes=[8, 8, 16, 32])
    path = _save_training_checkpoint(wider, tmp_path / "wider.pt")
    with pytest.raises(CheckpointError, match=r"shape mismatches \(conv1.weight \(8, 1, 7, 7, 7\)"):
        load_backbone_from_checkpoint(create_model("resnet10_3d_tiny"), path)


def test_checkpoint_without_backbone_weights_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "head_only.pt"
    torch.save({"model": {"head.weight": torch.zeros(2, 32)}}, path)
    with pytest.raises(CheckpointError, match=r'holds no "backbone\.\*" weights'):
        load_backbone_from_checkpoint(create_model("resnet10_3d_tiny"), path)


def test_output_bias_starts_at_the_target_mean() -> None:
    model = create_model("r2plus1d_tiny_echo")
    initialise_output_bias(model, {0: 57.5})
    linear = [m for m in model.head.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert linear.bias[0].item() == 57.5


def test_ef_multitask_loss_adds_scaled_l1_and_reduced_ef_bce() -> None:
    recipe = TrainingRecipe(
        name="ef", model="r2plus1d_tiny_echo", modality="US", task="ef_multitask",
        target="ef", epochs=1, regression_loss="l1", target_scale=10.0, reduced_ef_weight=2.0,
    )  # fmt: skip
    outputs = torch.tensor([[50.0, 0.0], [30.0, 0.0]])
    batch = {"target": torch.tensor([40.0, 30.0]), "reduced_ef": torch.tensor([1.0, 1.0])}
    # L1: (|10| / 10 + 0) / 2 = 0.5; BCE of logit 0 = ln 2, weighted 2.
    expected = 0.5 + 2.0 * torch.log(torch.tensor(2.0)).item()
    assert compute_loss(outputs, batch, recipe).item() == pytest.approx(expected)
