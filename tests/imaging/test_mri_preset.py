"""The MRI preset on in-memory MetaTensors with known affines: orientation, spacing, shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from imaging.transforms.mri import (
    MRIPresetConfig,
    create_mri_preset,
    load_mri_preset_config,
)

SHAPE = (60, 70, 40)  # voxels along the input's axes
SPACING = (1.0, 1.25, 1.5)
# LPS-oriented storage: index axis 0 runs to patient left (-x in RAS), axis 1 to
# posterior (-y), axis 2 to superior (+z). The origin puts the head off-centre.
LPS_AFFINE = np.array(
    [
        [-SPACING[0], 0.0, 0.0, 35.0],
        [0.0, -SPACING[1], 0.0, 52.0],
        [0.0, 0.0, SPACING[2], -18.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
HEAD_CENTRE = np.array([8.0, 6.0, 14.0])  # RAS mm
HOLE_CENTRE = np.array([20.0, -4.0, 20.0])  # RAS mm: a dark "ventricle" right of centre


def world_grid(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """RAS coordinates of every voxel centre, shape ``(*shape, 3)``."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return index @ affine[:3, :3].T + affine[:3, 3]


def phantom(scale: float = 1.0, seed: int = 0) -> MetaTensor:
    """An ellipsoidal head (value 100) with a dark sphere, in air with faint noise."""
    world = world_grid(LPS_AFFINE, SHAPE)
    head = (((world - HEAD_CENTRE) / np.array([22.0, 28.0, 20.0])) ** 2).sum(-1) <= 1.0
    hole = np.linalg.norm(world - HOLE_CENTRE, axis=-1) <= 5.0
    rng = np.random.default_rng(seed)
    values = np.abs(rng.normal(0.0, 1.5, SHAPE)) + 100.0 * head - 90.0 * (head & hole)
    tensor = torch.as_tensor(scale * values[None], dtype=torch.float32)
    return MetaTensor(tensor, affine=torch.as_tensor(LPS_AFFINE))


def centroid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return world_grid(affine, mask.shape)[mask].mean(axis=0)


def test_lps_input_ends_up_ras_at_the_configured_spacing_and_exact_shape() -> None:
    preset = create_mri_preset(spacing=(2.0, 2.0, 2.0), spatial_size=(40, 44, 36))
    image = phantom()

    out = preset({"image": image})["image"]

    assert isinstance(out, MetaTensor)
    assert tuple(out.shape) == (1, 40, 44, 36) and out.dtype == torch.float32
    affine = out.affine.numpy()
    np.testing.assert_allclose(affine[:3, :3], np.diag([2.0, 2.0, 2.0]), atol=1e-6)
    values = out[0].numpy()
    assert values.min() == 0.0 and values.max() == 1.0
    # The head and the hole stay where they are in the world: a flip that the affine
    # does not account for would move the hole's centroid by about 24 mm in x.
    head_in = centroid(image[0].numpy() > 50.0, LPS_AFFINE)
    head_out = centroid(values > 0.5, affine)
    np.testing.assert_allclose(head_out, head_in, atol=1.0)
    inside = world_grid(affine, values.shape)
    near_hole = np.linalg.norm(inside - HOLE_CENTRE, axis=-1) <= 8.0
    dark = near_hole & (values < 0.4)
    np.testing.assert_allclose(centroid(dark, affine), HOLE_CENTRE, atol=1.0)
    # The crop follows the head: air beyond the margin is gone, so the padded border is 0.
    assert values[0].max() == 0.0 and values[-1].max() == 0.0


def test_scanner_units_do_not_matter() -> None:
    preset = create_mri_preset(spatial_size=(32, 32, 32))
    a = preset({"image": phantom(scale=1.0)})["image"]
    b = preset({"image": phantom(scale=37.5)})["image"]
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


def test_skull_stripped_and_blank_inputs_keep_the_exact_shape() -> None:
    preset = create_mri_preset(spacing=(3.0, 3.0, 3.0), spatial_size=(24, 20, 16))
    stripped = phantom()
    stripped[stripped < 50.0] = 0.0  # air zeroed, as stripping tools leave it
    out = preset({"image": stripped})["image"]
    assert tuple(out.shape) == (1, 24, 20, 16)
    assert float(out.max()) == 1.0
    blank = MetaTensor(torch.zeros(1, 10, 12, 8), affine=torch.as_tensor(LPS_AFFINE))
    with pytest.warns(Warning, match="Divide by zero"):
        out = preset({"image": blank})["image"]
    assert tuple(out.shape) == (1, 24, 20, 16) and float(out.abs().max()) == 0.0


def test_training_preset_is_random_but_seedable_and_keeps_the_shape() -> None:
    preset = create_mri_preset(spatial_size=(32, 32, 32), train=True)
    image = phantom()
    runs = []
    for seed in (1, 1, 2):
        preset.set_random_state(seed=seed)
        runs.append(preset({"image": image.clone()})["image"])
    assert all(tuple(run.shape) == (1, 32, 32, 32) for run in runs)
    torch.testing.assert_close(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])
    assert len(preset.transforms) == len(create_mri_preset(train=False).transforms) + 3


def test_repository_config_matches_the_function_defaults(tmp_path: Path) -> None:
    config = load_mri_preset_config()
    assert config == MRIPresetConfig()
    assert (config.spacing, config.spatial_size) == ((2.0, 2.0, 2.0), (96, 96, 96))
    assert config.intensity.upper_percentile == 99.5
    preset = config.create_preset(keys=("t1",))
    out = preset({"t1": phantom()})["t1"]
    assert tuple(out.shape) == (1, 96, 96, 96)

    bad = tmp_path / "preprocessing.yaml"
    bad.write_text("mri:\n  intensity:\n    lower_percentile: 99\n    upper_percentile: 1\n")
    with pytest.raises(ValueError, match=r"lower_percentile 99\.0 must be below upper_percentile"):
        load_mri_preset_config(bad)
    bad.write_text("echo:\n  clip_length: 32\n")
    with pytest.raises(ValueError, match="no 'mri' section"):
        load_mri_preset_config(bad)


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match='Argument "spacing" must be three positive numbers'):
        create_mri_preset(spacing=(2.0, 0.0, 2.0))
    with pytest.raises(ValueError, match='Argument "spatial_size"'):
        create_mri_preset(spatial_size=(96, 96))
    with pytest.raises(ValueError, match='Argument "keys"'):
        create_mri_preset(keys=())
