"""Heat maps: shapes, range, that they follow the input, overlays written, model untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from imaging.explain import (
    explain,
    find_target_layer,
    key_frames,
    key_slices,
    occlusion_map,
    save_overlays,
)
from imaging.models.factory import create_model
from imaging.models.networks import BackboneHeadModel

SIZE = 16


class _Octant(nn.Module):
    """Keeps the first octant of a feature map: the head sees nothing else."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = SIZE // 2
        return x[..., :half, :half, :half]


def _blob_detector(*, first_octant_only: bool = False) -> BackboneHeadModel:
    """Class 1 logit = mean local brightness (of the first octant only, if asked)."""
    conv = nn.Conv3d(1, 2, kernel_size=3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0 / 27)
    parts: list[nn.Module] = [nn.Sequential(conv, nn.ReLU())]
    if first_octant_only:
        parts.append(_Octant())
    backbone = nn.Sequential(*parts, nn.AdaptiveAvgPool3d(1), nn.Flatten())
    head = nn.Linear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
        head.bias.zero_()
    return BackboneHeadModel(backbone, head).eval()


def _volume_with_blobs(*centres: tuple[int, int, int]) -> torch.Tensor:
    x = torch.zeros(1, 1, SIZE, SIZE, SIZE)
    for cx, cy, cz in centres:
        x[0, 0, cx - 1 : cx + 2, cy - 1 : cy + 2, cz - 1 : cz + 2] = 1.0
    return x


@pytest.mark.parametrize("centre", [(3, 4, 5), (12, 11, 10)])
def test_gradcam_lights_the_blob_that_raises_the_output(centre: tuple[int, int, int]) -> None:
    model = _blob_detector()
    result = explain(model, _volume_with_blobs(centre), modality="MR", target_index=1)

    assert result.target_layer == "backbone.0"
    assert result.heatmap.shape == (SIZE, SIZE, SIZE)
    assert result.heatmap.dtype == np.float32
    assert result.heatmap.min() >= 0.0 and result.heatmap.max() == pytest.approx(1.0)
    assert np.abs(np.subtract(result.peak, centre)).max() <= 1
    far_corner = tuple(SIZE - 1 - c if c < SIZE // 2 else 0 for c in centre)
    assert result.heatmap[far_corner] < 0.05


def test_occlusion_lights_only_what_the_model_sees() -> None:
    model = _blob_detector(first_octant_only=True)
    seen, unseen = (4, 4, 4), (12, 12, 12)
    heat = occlusion_map(model, _volume_with_blobs(seen, unseen), target_index=1, mask_size=4)

    assert heat.shape == (SIZE, SIZE, SIZE)
    assert heat.min() >= 0.0 and heat.max() == pytest.approx(1.0)
    assert heat[seen] > 0.5
    assert heat[unseen] == 0.0
    assert heat[SIZE // 2 :, SIZE // 2 :, SIZE // 2 :].max() == 0.0


def test_a_map_of_an_input_that_raises_nothing_is_all_zero() -> None:
    model = _blob_detector()
    result = explain(model, torch.zeros(1, 1, SIZE, SIZE, SIZE), modality="MR", target_index=1)
    assert not result.heatmap.any()


def test_tiny_mri_network_map_covers_the_input_and_leaves_the_model_as_it_was() -> None:
    torch.manual_seed(0)
    model = create_model("resnet10_3d_tiny")
    model.train()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    x = torch.rand(1, 1, 48, 48, 48)

    # Called from inside inference mode, as a caller that just predicted would.
    with torch.inference_mode():
        result = explain(model, x, modality="MR", target_index=1, target_name="AD")

    assert result.target_layer == "backbone.layer4"
    assert result.heatmap.shape == (48, 48, 48) and result.image.shape == (48, 48, 48)
    assert result.heatmap.max() == pytest.approx(1.0) and result.heatmap.min() >= 0.0
    assert model.training
    assert not any(module._forward_hooks or module._backward_hooks for module in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_small_inputs_take_an_earlier_block_with_spatial_extent() -> None:
    model = create_model("resnet10_3d_tiny").eval()
    # At 32^3 layer4 pools to one voxel (a flat map); layer3 still has 2^3.
    assert find_target_layer(model, torch.rand(1, 1, 32, 32, 32)) == "backbone.layer3"


def test_echo_map_is_per_frame_and_overlays_are_key_frames(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("r2plus1d_tiny_echo").eval()
    result = explain(
        model, torch.randn(1, 1, 8, 32, 32), modality="US", target_index=1, target_name="reduced_ef"
    )

    assert result.heatmap.shape == (8, 32, 32)
    files = save_overlays(result, tmp_path, prefix="echo")
    frames = key_frames(result.heatmap)
    assert [path.name for path in files] == [f"echo_frame{frame:03d}.png" for frame in frames]
    assert {0, 7} <= set(frames)
    assert all(path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for path in files)


def test_mri_overlays_are_three_planes_through_the_peak(tmp_path: Path) -> None:
    model = _blob_detector()
    result = explain(model, _volume_with_blobs((3, 4, 5)), modality="MR", target_index=1)

    files = save_overlays(result, tmp_path, prefix="case")
    assert sorted(path.name for path in files) == [
        "case_axial.png",
        "case_coronal.png",
        "case_sagittal.png",
    ]
    assert all(path.stat().st_size > 1000 for path in files)
    assert key_slices(result.heatmap) == dict(
        zip(("sagittal", "coronal", "axial"), result.peak, strict=True)
    )


def test_key_frames_include_the_hottest_frame() -> None:
    heat = np.zeros((9, 4, 4), dtype=np.float32)
    heat[3] = 1.0
    assert key_frames(heat, count=3) == [0, 3, 4, 8]


def test_unknown_method_and_batches_are_refused() -> None:
    model = _blob_detector()
    with pytest.raises(ValueError, match="method"):
        explain(model, _volume_with_blobs((4, 4, 4)), modality="MR", target_index=1, method="lime")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(1, C, \*spatial\)"):
        explain(model, torch.zeros(2, 1, SIZE, SIZE, SIZE), modality="MR", target_index=1)
