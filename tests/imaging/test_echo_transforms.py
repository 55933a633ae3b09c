"""Echo transforms and the preset, on loops built in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from imaging.transforms.echo import (
    ApplySectorMask,
    ApplySectorMaskd,
    RandSampleClip,
    RandSampleClipd,
    SampleClip,
    SampleClipd,
    ToGrayscale,
    ToGrayscaled,
    apply_sector_mask,
    clip_start_count,
    create_echo_preset,
    sample_clip,
    to_grayscale,
)

T, H, W = 64, 60, 100
# The sector's box: 40 rows x 80 columns, so the preset resizes it to 56 x 112 and pads
# 28 rows above and below.
BOX_ROWS, BOX_COLUMNS = slice(12, 52), slice(10, 90)


def numbered_loop(frames: int = T) -> tuple[np.ndarray, np.ndarray]:
    """A colour loop whose sector shows grey level t in frame t, with bright text outside."""
    cine = np.full((frames, H, W, 3), 200, dtype=np.uint8)
    cine[:, BOX_ROWS, BOX_COLUMNS] = np.arange(frames, dtype=np.uint8)[:, None, None, None]
    mask = np.zeros((H, W), dtype=bool)
    mask[BOX_ROWS, BOX_COLUMNS] = True
    return cine, mask


def test_sector_mask_zeroes_outside_and_keeps_inside() -> None:
    cine, mask = numbered_loop(4)

    grey = apply_sector_mask(cine[..., 0], mask)
    colour = ApplySectorMask(channel_last=True)(cine, mask)
    tensor = apply_sector_mask(torch.as_tensor(cine[..., 0]), torch.as_tensor(mask))

    assert grey.dtype == np.uint8 and grey.shape == (4, H, W)
    assert grey[:, ~mask].max() == 0 and np.array_equal(grey[:, mask], cine[..., 0][:, mask])
    assert np.array_equal(colour[..., 1], grey)
    assert isinstance(tensor, torch.Tensor) and np.array_equal(tensor.numpy(), grey)
    out = ApplySectorMaskd("cine", mask_key="mask")({"cine": cine[..., 0], "mask": mask})
    assert np.array_equal(out["cine"], grey)


def test_sector_mask_errors() -> None:
    cine, mask = numbered_loop(2)
    with pytest.raises(ValueError, match=r'"mask" has shape \(60, 100\); the image\'s'):
        apply_sector_mask(cine, mask)  # channel-last without channel_last=True
    with pytest.raises(ValueError, match="keeps no pixel"):
        apply_sector_mask(cine[..., 0], np.zeros_like(mask))


def test_grayscale_is_bt601_luma() -> None:
    pixels = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [90, 90, 90]], dtype=np.uint8)

    integer = to_grayscale(pixels)
    floating = ToGrayscale(channel_dim=0)(pixels.T.astype(np.float64))

    # (77 R + 150 G + 29 B + 128) >> 8, as the synthetic generator computes grey.
    assert integer.dtype == np.uint8 and integer[:, 0].tolist() == [77, 149, 29, 90]
    assert floating.dtype == np.float32 and floating.shape == (1, 4)
    assert floating[0] == pytest.approx([76.245, 149.685, 29.07, 90.0], abs=1e-3)
    out = ToGrayscaled("cine")({"cine": torch.as_tensor(pixels)})
    assert isinstance(out["cine"], torch.Tensor) and out["cine"][:, 0].tolist() == [77, 149, 29, 90]
    with pytest.raises(ValueError, match="1 or 3 channels"):
        to_grayscale(np.zeros((4, 2), dtype=np.uint8))


def test_clip_is_every_period_th_frame_from_start() -> None:
    frames = np.arange(100)

    clip = sample_clip(frames, start=5)

    assert clip.tolist() == [5 + 2 * k for k in range(32)]
    assert SampleClip(clip_length=4, period=3, start=1)(frames).tolist() == [1, 4, 7, 10]


def test_short_loop_is_zero_padded_as_echonet_does() -> None:
    frames = torch.arange(1, 41)  # 40 frames: fewer than 32 * 2

    # EchoNet pads to 64 frames, so the start is one of 64 - 62 = 2 frames.
    assert clip_start_count(40, clip_length=32, period=2) == 2
    clip = sample_clip(frames, start=1)
    assert isinstance(clip, torch.Tensor)
    assert clip.tolist() == [2 + 2 * k for k in range(20)] + [0] * 12
    repeated = sample_clip(frames, start=1, padding="repeat")
    assert repeated.tolist()[19:23] == [40, 2, 4, 6]
    with pytest.raises(ValueError, match=r'"start" must lie in \[0, 2\)'):
        sample_clip(frames, start=2)


def test_clip_along_the_time_axis_of_a_channel_first_loop() -> None:
    loop = np.broadcast_to(np.arange(70)[None, :, None, None], (1, 70, 3, 3))

    clip = SampleClipd("cine", clip_length=8, period=2, start=3, time_dim=1)({"cine": loop})

    assert clip["cine"].shape == (1, 8, 3, 3)
    assert clip["cine"][0, :, 1, 1].tolist() == [3, 5, 7, 9, 11, 13, 15, 17]


def test_random_start_is_uniform_over_echonet_starts() -> None:
    sampler = RandSampleClip(clip_length=32, period=2)
    sampler.set_random_state(seed=0)
    frames = np.arange(70)  # 70 - 62 = 8 possible starts

    starts = []
    for _ in range(400):
        clip = sampler(frames)
        starts.append(int(clip[0]))
        assert clip.tolist() == [clip[0] + 2 * k for k in range(32)]

    counts = np.bincount(starts, minlength=8)
    assert len(counts) == 8 and counts.min() > 25


def test_random_dictionary_sampler_shares_one_start() -> None:
    sampler = RandSampleClipd(["cine", "labels"], clip_length=4, period=2)
    sampler.set_random_state(seed=1)
    frames = np.arange(50)

    out = sampler({"cine": frames, "labels": frames + 1000})

    assert out["labels"].tolist() == (out["cine"] + 1000).tolist()
    assert 0 <= out["cine"][0] < clip_start_count(50, clip_length=4, period=2)


def test_preset_shapes_and_values() -> None:
    cine, mask = numbered_loop()

    out = create_echo_preset(mean=0.0, std=1.0)({"cine": cine, "sector_mask": mask})["cine"]

    assert type(out) is torch.Tensor and out.dtype == torch.float32
    assert out.shape == (1, 32, 112, 112)
    # Frame k of the clip is loop frame 2k; the sector fills rows 28-83 at full width.
    assert out[0, :, 28:84, :].amin(dim=(1, 2)).tolist() == [2.0 * k for k in range(32)]
    assert out[0, :, 28:84, :].amax(dim=(1, 2)).tolist() == [2.0 * k for k in range(32)]
    assert out[0, :, :28].abs().max() == 0 and out[0, :, 84:].abs().max() == 0
    scaled = create_echo_preset(mean=10.0, std=2.0)({"cine": cine, "sector_mask": mask})["cine"]
    assert scaled[0, :, 56, 56].tolist() == [(2.0 * k - 10.0) / 2.0 for k in range(32)]


def test_preset_normalises_each_loop_by_default() -> None:
    cine, mask = numbered_loop()
    frames = np.zeros((T, 112, 112))
    frames[:, 28:84] = np.arange(T)[:, None, None]

    out = create_echo_preset()({"cine": cine, "sector_mask": mask})["cine"]

    # Mean and standard deviation of the whole preprocessed loop, before the clip is taken.
    expected = (frames[::2] - frames.mean()) / frames.std()
    assert out[0].numpy() == pytest.approx(expected, abs=1e-4)


def test_preset_pads_a_short_loop_with_the_mean_grey() -> None:
    cine, mask = numbered_loop(40)

    out = create_echo_preset(mean=5.0, std=1.0)({"cine": cine, "sector_mask": mask})["cine"]

    # EchoNet pads after normalising: padded frames are 0, the mean grey.
    assert out[0, 20:].abs().max() == 0
    assert out[0, 19, 56, 56] == 38.0 - 5.0


def test_training_preset_draws_start_and_shift() -> None:
    cine, mask = numbered_loop(80)  # 80 - 62 = 18 possible starts
    preset = create_echo_preset(mean=0.0, std=1.0, train=True)
    preset.set_random_state(seed=3)

    starts, tops = set(), set()
    for _ in range(20):
        out = preset({"cine": cine, "sector_mask": mask})["cine"]
        assert out.shape == (1, 32, 112, 112)
        start = int(out[0, 0, 56, 56])
        # The centre stays in the sector under a shift of at most 12 pixels.
        assert out[0, :, 56, 56].tolist() == [start + 2.0 * k for k in range(32)]
        starts.add(start)
        tops.add(int(torch.nonzero(out[0, 31, :, 56])[0]))
    assert starts <= set(range(18)) and len(starts) > 5
    assert tops <= set(range(28 - 12, 28 + 13)) and len(tops) > 5


def test_preset_arguments_and_empty_sector() -> None:
    cine, mask = numbered_loop(4)
    with pytest.raises(ValueError, match='"mean" and "std" must be given together'):
        create_echo_preset(mean=30.0)
    with pytest.raises(RuntimeError) as caught:  # MONAI's Compose wraps a transform's error
        create_echo_preset()({"cine": cine, "sector_mask": np.zeros_like(mask)})
    assert "keeps no pixel" in str(caught.value.__cause__)


def test_repository_echo_preset_config_equals_the_function_defaults(tmp_path: Path) -> None:
    from imaging.transforms.echo import EchoPresetConfig, load_echo_preset_config

    assert load_echo_preset_config() == EchoPresetConfig()
    bad = tmp_path / "preprocessing.yaml"
    bad.write_text("echo:\n  spatial_size: 112\n  periode: 2\n")
    expected = r"preprocessing\.yaml section 'echo': invalid echo preset"
    with pytest.raises(ValueError, match=expected):
        load_echo_preset_config(bad)
