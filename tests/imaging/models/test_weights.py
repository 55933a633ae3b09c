"""Pretrained weights: MedicalNet and Kinetics layouts load, bad files raise CheckpointError."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from imaging.errors import CheckpointError
from imaging.models.factory import create_model
from imaging.models.networks import head_linear
from imaging.models.weights import WeightsRegistry, load_pretrained

# (layer, planes, inplanes) of MedicalNet's resnet10: one BasicBlock per layer.
_MEDICALNET_RESNET10_LAYERS = ((1, 64, 64), (2, 128, 64), (3, 256, 128), (4, 512, 256))


def _batch_norm(prefix: str, channels: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.weight": torch.rand(channels, generator=generator),
        f"{prefix}.bias": torch.randn(channels, generator=generator),
        f"{prefix}.running_mean": torch.randn(channels, generator=generator),
        f"{prefix}.running_var": torch.rand(channels, generator=generator) + 0.5,
        f"{prefix}.num_batches_tracked": torch.tensor(7),
    }


def medicalnet_resnet10_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict as MedicalNet's train.py saves resnet10 (DataParallel, with conv_seg)."""
    generator = torch.Generator().manual_seed(seed)
    state = {"conv1.weight": torch.randn(64, 1, 7, 7, 7, generator=generator)}
    state |= _batch_norm("bn1", 64, generator)
    for layer, planes, inplanes in _MEDICALNET_RESNET10_LAYERS:
        block = f"layer{layer}.0"
        state[f"{block}.conv1.weight"] = torch.randn(planes, inplanes, 3, 3, 3, generator=generator)
        state |= _batch_norm(f"{block}.bn1", planes, generator)
        state[f"{block}.conv2.weight"] = torch.randn(planes, planes, 3, 3, 3, generator=generator)
        state |= _batch_norm(f"{block}.bn2", planes, generator)
        if planes != inplanes:
            state[f"{block}.downsample.0.weight"] = torch.randn(
                planes, inplanes, 1, 1, 1, generator=generator
            )
            state |= _batch_norm(f"{block}.downsample.1", planes, generator)
    state["conv_seg.0.weight"] = torch.randn(512, 32, 2, 2, 2, generator=generator)
    state["conv_seg.0.bias"] = torch.randn(32, generator=generator)
    state |= _batch_norm("conv_seg.1", 32, generator)
    state["conv_seg.3.weight"] = torch.randn(32, 32, 3, 3, 3, generator=generator)
    state |= _batch_norm("conv_seg.4", 32, generator)
    state["conv_seg.6.weight"] = torch.randn(2, 32, 1, 1, 1, generator=generator)
    return {f"module.{key}": value for key, value in state.items()}


def _save_medicalnet(path: Path, state: dict[str, torch.Tensor]) -> Path:
    torch.save({"ecpoch": 200, "state_dict": state}, path)
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def medicalnet_state() -> dict[str, torch.Tensor]:
    return medicalnet_resnet10_state()


@pytest.fixture(scope="module")
def medicalnet_file(
    tmp_path_factory: pytest.TempPathFactory, medicalnet_state: dict[str, torch.Tensor]
) -> Path:
    folder = tmp_path_factory.mktemp("medicalnet")
    return _save_medicalnet(folder / "resnet_10_23dataset.pth", medicalnet_state)


def _registry(tmp_path: Path, checkpoint: Path, sha256: str | None, architecture: str) -> Path:
    digest = "null" if sha256 is None else f'"{sha256}"'
    registry = tmp_path / "weights.yaml"
    registry.write_text(
        f"root: {checkpoint.parent}\n"
        "weights:\n"
        "  medicalnet_resnet10:\n"
        f"    path: {checkpoint.name}\n"
        f"    sha256: {digest}\n"
        f"    architecture: {architecture}\n"
        "    format: medicalnet\n"
        "    input: {channels: 1}\n"
    )
    return registry


def test_medicalnet_checkpoint_fills_resnet10_backbone(
    medicalnet_file: Path, medicalnet_state: dict[str, torch.Tensor]
) -> None:
    torch.manual_seed(0)
    fresh_head = create_model("resnet10_3d").head.state_dict()
    torch.manual_seed(0)
    model = create_model("resnet10_3d", pretrained=medicalnet_file)
    backbone = model.backbone.state_dict()
    for key in (
        "conv1.weight",
        "bn1.running_var",
        "layer3.0.downsample.0.weight",
        "layer4.0.bn2.bias",
    ):
        torch.testing.assert_close(backbone[key], medicalnet_state[f"module.{key}"])
    assert all(
        torch.equal(value, fresh_head[key]) for key, value in model.head.state_dict().items()
    )


def test_load_pretrained_reports_dropped_decoder(medicalnet_file: Path) -> None:
    model = create_model("resnet10_3d")
    loaded = load_pretrained(model, medicalnet_file)
    assert loaded.format == "medicalnet"
    assert loaded.tensors == 72
    assert "conv_seg.6.weight" in loaded.dropped
    assert not loaded.head_loaded


def test_checkpoint_without_batchnorm_counters_loads(
    tmp_path: Path, medicalnet_state: dict[str, torch.Tensor]
) -> None:
    old = {k: v for k, v in medicalnet_state.items() if not k.endswith("num_batches_tracked")}
    path = _save_medicalnet(tmp_path / "old.pth", old)
    model = create_model("resnet10_3d", pretrained=path)
    torch.testing.assert_close(
        model.get_parameter("backbone.conv1.weight"), old["module.conv1.weight"]
    )


def test_registry_key_loads_after_sha256_check(tmp_path: Path, medicalnet_file: Path) -> None:
    registry_file = _registry(tmp_path, medicalnet_file, _sha256(medicalnet_file), "resnet10_3d")
    registry = WeightsRegistry.load(registry_file)
    assert registry.keys() == ["medicalnet_resnet10"]
    model = create_model("resnet10_3d", pretrained="medicalnet_resnet10", registry=registry)
    assert model.get_parameter("backbone.conv1.weight").abs().sum() > 0


def test_wrong_sha256_names_file_expected_and_actual(tmp_path: Path, medicalnet_file: Path) -> None:
    wrong = "0" * 64
    registry = WeightsRegistry.load(_registry(tmp_path, medicalnet_file, wrong, "resnet10_3d"))
    with pytest.raises(CheckpointError) as caught:
        create_model("resnet10_3d", pretrained="medicalnet_resnet10", registry=registry)
    message = str(caught.value)
    assert str(medicalnet_file) in message
    assert f"expected {wrong}" in message
    assert f"actual {_sha256(medicalnet_file)}" in message


def test_unpinned_registry_entry_refuses_to_load(tmp_path: Path, medicalnet_file: Path) -> None:
    registry = WeightsRegistry.load(_registry(tmp_path, medicalnet_file, None, "resnet10_3d"))
    with pytest.raises(CheckpointError, match="no sha256 in the registry"):
        create_model("resnet10_3d", pretrained="medicalnet_resnet10", registry=registry)


def test_registry_entry_for_another_architecture_raises(
    tmp_path: Path, medicalnet_file: Path
) -> None:
    registry_file = _registry(tmp_path, medicalnet_file, _sha256(medicalnet_file), "resnet10_3d")
    registry = WeightsRegistry.load(registry_file)
    with pytest.raises(CheckpointError, match='for "resnet10_3d", not "resnet18_3d"'):
        create_model("resnet18_3d", pretrained="medicalnet_resnet10", registry=registry)


def test_unknown_key_lists_known_keys() -> None:
    with pytest.raises(CheckpointError, match="kinetics400_r2plus1d_18"):
        create_model("resnet10_3d_tiny", pretrained="no_such_weights")


def test_repository_registry_points_at_placed_files() -> None:
    registry = WeightsRegistry.load()
    assert registry.entry("kinetics400_r2plus1d_18").sha256 == "91a641e6"
    with pytest.raises(CheckpointError, match="not found; place the file here"):
        registry.verified_path("kinetics400_r2plus1d_18")


def test_corrupted_checkpoint_raises(tmp_path: Path, medicalnet_file: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint" * 64)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(medicalnet_file.read_bytes()[:100_000])
    for path in (garbage, truncated):
        with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint") as caught:
            create_model("resnet10_3d", pretrained=path)
        assert caught.value.source == str(path)


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "extra": Path("x")}, path)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        create_model("resnet10_3d_tiny", pretrained=path)


def test_wrong_shapes_are_listed(tmp_path: Path, medicalnet_state: dict[str, torch.Tensor]) -> None:
    state = dict(medicalnet_state)
    state["module.conv1.weight"] = torch.zeros(64, 2, 7, 7, 7)
    state["module.layer1.0.bn1.weight"] = torch.zeros(32)
    path = _save_medicalnet(tmp_path / "shapes.pth", state)
    with pytest.raises(CheckpointError) as caught:
        create_model("resnet10_3d", pretrained=path)
    message = str(caught.value)
    assert "2 shape mismatches" in message
    assert "conv1.weight (64, 2, 7, 7, 7) != model (64, 1, 7, 7, 7)" in message
    assert "layer1.0.bn1.weight (32,) != model (64,)" in message


def test_missing_and_unexpected_keys_are_listed(
    tmp_path: Path, medicalnet_state: dict[str, torch.Tensor]
) -> None:
    state = dict(medicalnet_state)
    del state["module.layer4.0.conv2.weight"]
    del state["module.bn1.running_mean"]
    state["module.fc.weight"] = torch.zeros(2, 512)
    path = _save_medicalnet(tmp_path / "keys.pth", state)
    with pytest.raises(CheckpointError) as caught:
        create_model("resnet10_3d", pretrained=path)
    message = str(caught.value)
    assert "2 missing keys (bn1.running_mean, layer4.0.conv2.weight)" in message
    assert "1 unexpected keys (fc.weight)" in message


def test_medicalnet_resnet10_does_not_fit_resnet18(medicalnet_file: Path) -> None:
    with pytest.raises(CheckpointError, match=r"missing keys \(layer1.1.conv1.weight"):
        create_model("resnet18_3d", pretrained=medicalnet_file)


def test_kinetics_checkpoint_fills_echo_backbone(tmp_path: Path) -> None:
    from torchvision.models.video import r2plus1d_18

    torch.manual_seed(1)
    kinetics = r2plus1d_18(weights=None).state_dict()
    assert kinetics["fc.weight"].shape == (400, 512)
    path = tmp_path / "r2plus1d_18-kinetics.pth"
    torch.save(kinetics, path)
    model = create_model("r2plus1d_18_echo", pretrained=path)
    backbone = model.backbone.state_dict()
    for key in ("stem.0.weight", "stem.1.running_mean", "layer4.1.conv2.0.3.weight"):
        torch.testing.assert_close(backbone[key], kinetics[key])
    assert head_linear(model.head).weight.shape == (2, 512)


def test_kinetics_r2plus1d_18_does_not_fit_one_block_network(tmp_path: Path) -> None:
    from torchvision.models.video import r2plus1d_18

    path = tmp_path / "kinetics.pth"
    torch.save(r2plus1d_18(weights=None).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"unexpected keys \(layer1.1.conv1.0.0.weight"):
        create_model("r2plus1d_tiny_echo", pretrained=path)


def test_mmdx_state_restores_backbone_and_optionally_head(tmp_path: Path) -> None:
    torch.manual_seed(2)
    trained = create_model("resnet10_3d_tiny")
    path = tmp_path / "model.pt"
    torch.save({"model": trained.state_dict(), "epoch": 3}, path)
    transfer = create_model("resnet10_3d_tiny", pretrained=path)
    conv1 = "backbone.conv1.weight"
    torch.testing.assert_close(transfer.get_parameter(conv1), trained.get_parameter(conv1))
    assert not torch.equal(
        transfer.get_parameter("head.weight"), trained.get_parameter("head.weight")
    )
    restored = create_model("resnet10_3d_tiny")
    loaded = load_pretrained(restored, path, include_head=True)
    assert loaded.format == "mmdx" and loaded.head_loaded
    torch.testing.assert_close(
        restored.get_parameter("head.weight"), trained.get_parameter("head.weight")
    )
