"""The model factory: every configuration builds, with a backbone and a head."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from imaging.models.config import ModelConfig
from imaging.models.factory import create_model, list_models, load_model_config
from imaging.models.networks import head_linear

# name -> (backbone parameters, head output features), counted from the architectures:
# ResNet-10/18/50 match MedicalNet's published sizes (14.36M, 32.99M, 46.21M with buffers).
EXPECTED = {
    "densenet121_3d": (11_242_624, 2),
    "resnet10_3d": (14_355_520, 2),
    "resnet18_3d": (32_986_176, 2),
    "resnet50_3d": (46_155_072, 2),
    "r2plus1d_18_echo": (31_300_125, 2),
    "resnet10_3d_tiny": (57_700, 2),
    "r2plus1d_tiny_echo": (12_487_005, 2),
}


def test_list_models_names_every_configuration() -> None:
    assert list_models() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_configuration_builds_with_backbone_and_head(name: str) -> None:
    model = create_model(name)
    parameters, outputs = EXPECTED[name]
    assert sum(int(p.numel()) for p in model.backbone.parameters()) == parameters
    assert head_linear(model.head).out_features == outputs
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    head_ids = {id(p) for p in model.head.parameters()}
    assert backbone_ids.isdisjoint(head_ids)
    assert backbone_ids | head_ids == {id(p) for p in model.parameters()}


def test_resnet_follows_medicalnet_layout() -> None:
    resnet10 = load_model_config("resnet10_3d")
    resnet18 = load_model_config("resnet18_3d")
    assert resnet10.settings["shortcut_type"] == "B"
    assert resnet18.settings["shortcut_type"] == "A"
    assert resnet10.settings["conv1_t_stride"] == 2
    model = create_model("resnet10_3d")
    assert model.get_parameter("backbone.conv1.weight").shape == (64, 1, 7, 7, 7)
    shortcut = model.get_submodule("backbone.layer2.0.downsample.0")
    assert isinstance(shortcut, nn.Conv3d) and shortcut.bias is None


def test_tiny_mri_classifier_gives_logits_per_class() -> None:
    model = create_model("resnet10_3d_tiny").eval()
    with torch.inference_mode():
        logits = model(torch.rand(2, 1, 32, 32, 32))
    assert logits.shape == (2, 2)
    assert torch.isfinite(logits).all()


def test_tiny_echo_network_gives_ef_and_logit_for_grey_and_rgb_clips() -> None:
    torch.manual_seed(0)
    model = create_model("r2plus1d_tiny_echo").eval()
    grey = torch.rand(1, 1, 8, 32, 32)
    with torch.inference_mode():
        from_grey = model(grey)
        from_rgb = model(grey.expand(-1, 3, -1, -1, -1))
    assert from_grey.shape == (1, 2)
    torch.testing.assert_close(from_grey, from_rgb)
    assert head_linear(model.head).bias[0].item() == pytest.approx(55.6)
    assert load_model_config("r2plus1d_tiny_echo").outputs == ("ef_percent", "reduced_ef_logit")


def test_echo_network_rejects_two_channel_clips() -> None:
    model = create_model("r2plus1d_tiny_echo")
    with pytest.raises(ValueError, match="1 or 3 channels, got 2"):
        model(torch.rand(1, 2, 8, 32, 32))


def test_overrides_change_head_and_settings() -> None:
    model = create_model("resnet10_3d_tiny", num_classes=3, dropout=0.2)
    assert head_linear(model.head).out_features == 3
    assert isinstance(model.get_submodule("head.0"), nn.Dropout)
    wider = create_model("resnet10_3d_tiny", block_inplanes=[8, 8, 8, 8])
    assert wider.get_parameter("backbone.conv1.weight").shape[0] == 8


def test_unknown_model_and_unknown_setting_are_named() -> None:
    with pytest.raises(ValueError, match=r'Unknown model "resnet11_3d".*resnet10_3d'):
        create_model("resnet11_3d")
    with pytest.raises(ValueError, match="resnet10_3d_tiny: settings do not fit"):
        create_model("resnet10_3d_tiny", no_such_argument=1)


def test_classification_config_needs_num_classes() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        ModelConfig.model_validate(
            {
                "name": "x",
                "modality": "MR",
                "architecture": "monai_resnet",
                "task": "classification",
                "input": {"channels": 1, "spatial_size": [8, 8, 8]},
            }
        )


def test_importing_models_package_loads_no_torch() -> None:
    code = (
        "import sys, imaging.models, imaging.models.factory, imaging.models.weights;"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
