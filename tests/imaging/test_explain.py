"""Heat maps: shapes, range, that they follow the input, overlays written, model untouched."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import cast

import numpy as np
import pytest
import torch
from torch import nn

from imaging.bundle import LoadedBundle
from imaging.explain import (
    Explanation,
    explain,
    find_target_layer,
    key_frames,
    key_slices,
    occlusion_map,
    oriented_slice,
    save_overlays,
)
from imaging.models.factory import create_model
from imaging.models.networks import BackboneHeadModel
from imaging.predict import clip_frame_interval_ms
from imaging.transforms.pipelines import EchoPreprocessing, MRIPreprocessing
from imaging.viewer_file import load_viewer, save_viewer

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


def _bright_corner_volume() -> np.ndarray:
    """(X, Y, Z) = (6, 5, 4), bright at the patient's left, anterior, superior corner."""
    volume = np.zeros((6, 5, 4), dtype=np.float32)
    volume[0, 4, 3] = 1.0
    return volume


@pytest.mark.parametrize(
    ("plane", "index", "size", "bright"),
    [
        # (rows, columns) and where the corner lands: left on the left, anterior or superior up.
        ("axial", 3, (5, 6), (0, 0)),
        ("coronal", 4, (4, 6), (0, 0)),
        ("sagittal", 0, (4, 5), (0, 4)),  # posterior on the left, as the PNG overlays
    ],
)
def test_slices_are_in_neurological_orientation(
    plane: str, index: int, size: tuple[int, int], bright: tuple[int, int]
) -> None:
    pixels = oriented_slice(_bright_corner_volume(), plane, index)
    assert pixels.shape == size
    assert [tuple(int(i) for i in p) for p in np.argwhere(pixels == 1.0)] == [bright]


def test_oriented_slice_refuses_unknown_planes_and_indices() -> None:
    with pytest.raises(ValueError, match='"plane"'):
        oriented_slice(_bright_corner_volume(), "oblique", 0)
    with pytest.raises(ValueError, match=r'"index" must be in 0\.\.3'):
        oriented_slice(_bright_corner_volume(), "axial", 4)


def test_mr_viewer_file_keeps_the_windowed_volume_and_heat(tmp_path: Path) -> None:
    image = np.linspace(0.0, 10.0, 6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)
    heat = np.zeros((6, 5, 4), dtype=np.float32)
    heat[2, 1, 3], heat[2, 1, 2] = 1.0, 0.5
    explanation = Explanation("gradcam", heat, image, 1, "AD", "MR", "backbone.layer3")

    path = save_viewer(explanation, tmp_path / "maps", prefix="series")
    assert path == tmp_path / "maps" / "series_viewer.npz"
    viewer = load_viewer(path)

    assert viewer.modality == "MR" and viewer.method == "gradcam" and viewer.target == "AD"
    assert viewer.image.dtype == viewer.heat.dtype == np.uint8
    assert viewer.image.shape == viewer.heat.shape == (6, 5, 4)
    # The overlays' window: 1st percentile -> 0, 99th -> 255.
    assert viewer.image.min() == 0 and viewer.image.max() == 255
    assert viewer.image[0, 0, 0] == 0 and viewer.image[-1, -1, -1] == 255
    assert viewer.heat[2, 1, 3] == 255 and viewer.heat[2, 1, 2] == 128
    assert int(viewer.heat.sum()) == 255 + 128
    assert viewer.peak == (2, 1, 3) and viewer.key_frames == ()
    assert viewer.frame_interval_ms is None


def test_echo_viewer_file_keeps_key_frames_and_frame_interval(tmp_path: Path) -> None:
    heat = np.zeros((9, 4, 4), dtype=np.float32)
    heat[3] = 1.0
    image = np.random.default_rng(0).random((9, 4, 4)).astype(np.float32)
    explanation = Explanation("occlusion", heat, image, 1, "reduced_ef", "US")

    viewer = load_viewer(save_viewer(explanation, tmp_path, frame_interval_ms=66.667))

    assert viewer.modality == "US" and viewer.image.shape == (9, 4, 4)
    assert viewer.key_frames == tuple(key_frames(heat)) == (0, 3, 5, 8)
    assert viewer.frame_interval_ms == pytest.approx(66.667)
    with pytest.raises(ValueError, match='"frame_interval_ms"'):
        save_viewer(explanation, tmp_path, frame_interval_ms=0.0)


def test_load_viewer_refuses_other_files(tmp_path: Path) -> None:
    other = tmp_path / "other.npz"
    np.savez(other, image=np.zeros((2, 2, 2), dtype=np.uint8))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match=r"other\.npz is not a viewer file: no heat"):
        load_viewer(other)
    with pytest.raises(ValueError, match=r"garbage\.npz"):
        load_viewer(garbage)


def test_clip_frame_interval_is_period_frames_at_the_loops_rate() -> None:
    echo = cast(LoadedBundle, SimpleNamespace(preprocessing=EchoPreprocessing(period=2)))
    mri = cast(LoadedBundle, SimpleNamespace(preprocessing=MRIPreprocessing()))
    assert clip_frame_interval_ms(echo, {"frame_rate_hz": 30.0}) == pytest.approx(66.667)
    assert clip_frame_interval_ms(echo, {"frame_rate_hz": 0.0}) is None
    assert clip_frame_interval_ms(echo, {}) is None
    assert clip_frame_interval_ms(mri, {"frame_rate_hz": 30.0}) is None
