"""The CLIP embedder: shapes, norms, determinism, planes and frames used, texts, offline."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from imaging.errors import CheckpointError
from multimodal_rag.embedding import Embedder, create_embedder, list_clip_configs, load_clip_config
from multimodal_rag.embedding.config import CLIP_CONFIGS

# The tiny configuration samples 2 slices per plane over 30% of each axis and 4 frames.
SHAPE = (24, 28, 20)  # slices at x 8, 15; y 9, 18; z 7, 12


@pytest.fixture(scope="module")
def tiny() -> Embedder:
    return create_embedder("clip_tiny")


def two_level_volume(seed: int = 0, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """Voxels of 1 or 2: the intensity window (percentiles of non-zero voxels) is always 1..2,
    so zeroing a block changes only the slices that pass through it."""
    rng = np.random.default_rng(seed)
    return rng.choice([1.0, 2.0], size=(1, *shape)).astype(np.float32)


def as_meta(array: np.ndarray, affine: np.ndarray | None = None) -> MetaTensor:
    return MetaTensor(
        torch.from_numpy(array.copy()),
        affine=torch.from_numpy(np.eye(4) if affine is None else affine),
    )


def record_images(embedder: Embedder, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patch the image tower to record how many images each forward call receives."""
    seen: list[int] = []
    original: Callable[..., Any] = embedder.model.encode_image

    def counting(images: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        seen.append(len(images))
        return original(images, **kwargs)

    monkeypatch.setattr(embedder.model, "encode_image", counting)
    return seen


def test_configs_are_listed_and_tiny_is_a_64_d_model(tiny: Embedder) -> None:
    assert {"clip_tiny", "clip_vit_b32", "clip_rn50", "biomedclip"} <= set(list_clip_configs())
    assert load_clip_config("clip_vit_b32").architecture == "ViT-B-32"
    assert tiny.embed_dim == 64
    assert tiny.provenance.weights == "random_init"
    assert "random initialisation" in tiny.provenance.describe()


def test_volume_embedding_is_unit_norm_float32(tiny: Embedder) -> None:
    vector = tiny.embed_volume(as_meta(two_level_volume()))
    assert vector.shape == (64,)
    assert vector.dtype == np.float32
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_embeddings_are_deterministic_across_instances(tiny: Embedder) -> None:
    volume = as_meta(two_level_volume())
    again = create_embedder("clip_tiny")
    np.testing.assert_array_equal(tiny.embed_volume(volume), tiny.embed_volume(volume))
    np.testing.assert_allclose(again.embed_volume(volume), tiny.embed_volume(volume), atol=1e-6)
    np.testing.assert_allclose(
        again.embed_texts(["normal study"]), tiny.embed_texts(["normal study"]), atol=1e-6
    )


def test_different_volumes_give_different_embeddings(tiny: Embedder) -> None:
    first = tiny.embed_volume(as_meta(two_level_volume(0)))
    other = np.zeros((1, *SHAPE), dtype=np.float32)
    other[:, 4:20, 6:22, 4:16] = 2.0
    other[:, 8:16, 10:18, 7:13] = 1.0
    second = tiny.embed_volume(as_meta(other))
    assert float(first @ second) < 0.99


def test_volume_uses_two_slices_in_each_of_three_planes(
    tiny: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = record_images(tiny, monkeypatch)
    tiny.embed_volume(as_meta(two_level_volume()))
    assert sum(seen) == 6
    base = two_level_volume()
    reference = tiny.volume_images(as_meta(base))
    # A block in a corner column meets only the slices of one plane (or none).
    blocks = {
        "axial": (slice(0, 4), slice(0, 4), slice(None)),
        "coronal": (slice(0, 4), slice(None), slice(0, 3)),
        "sagittal": (slice(None), slice(0, 4), slice(0, 3)),
        "none": (slice(0, 4), slice(0, 4), slice(0, 3)),
    }
    expected = {"axial": [0, 1], "coronal": [2, 3], "sagittal": [4, 5], "none": []}
    vector = tiny.embed_volume(as_meta(base))
    for plane, block in blocks.items():
        changed = base.copy()
        changed[(0, *block)] = 0.0
        inputs = tiny.volume_images(as_meta(changed))
        differing = [i for i in range(6) if not torch.equal(inputs[i], reference[i])]
        assert differing == expected[plane], plane
        moved = not np.allclose(tiny.embed_volume(as_meta(changed)), vector, atol=1e-6)
        assert moved == (plane != "none"), plane


def test_volume_is_reoriented_to_ras(tiny: Embedder) -> None:
    ras = two_level_volume()
    flipped = ras[:, ::-1].copy()  # stored right-to-left, as an LAS affine says
    las = np.diag([-1.0, 1.0, 1.0, 1.0])
    las[0, 3] = SHAPE[0] - 1
    np.testing.assert_allclose(
        tiny.embed_volume(as_meta(flipped, las)), tiny.embed_volume(as_meta(ras)), atol=1e-6
    )


def test_volume_of_wrong_shape_is_refused(tiny: Embedder) -> None:
    with pytest.raises(ValueError, match=r"\(1, X, Y, Z\)"):
        tiny.embed_volume(as_meta(np.ones((2, 4, 4, 4), dtype=np.float32)))


def cine(seed: int = 0, frames: int = 10) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(frames, 24, 32, 3), dtype=np.uint8)


def test_cine_uses_evenly_spaced_frames_only(
    tiny: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = cine()
    vector = tiny.embed_cine(loop)
    assert vector.shape == (64,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    seen = record_images(tiny, monkeypatch)
    tiny.embed_cine(loop)
    assert seen == [4]
    # 4 of 10 frames: 0, 3, 6, 9.
    skipped, sampled = loop.copy(), loop.copy()
    skipped[5] = 0
    sampled[6] = 0
    np.testing.assert_array_equal(tiny.embed_cine(skipped), vector)
    assert not np.allclose(tiny.embed_cine(sampled), vector, atol=1e-6)


def test_cine_ignores_pixels_outside_the_sector_mask(tiny: Embedder) -> None:
    loop = cine()
    mask = np.zeros(loop.shape[1:3], dtype=bool)
    mask[4:20, 6:26] = True
    outside = loop.copy()
    outside[:, :4] = 255
    np.testing.assert_array_equal(tiny.embed_cine(outside, mask), tiny.embed_cine(loop, mask))
    assert not np.allclose(tiny.embed_cine(outside), tiny.embed_cine(loop), atol=1e-6)


def test_cine_must_be_uint8_frames(tiny: Embedder) -> None:
    with pytest.raises(ValueError, match="uint8"):
        tiny.embed_cine(np.zeros((4, 8, 8, 3), dtype=np.float32))


REPORT = (
    "EXAMINATION: MRI brain, 3D T1-weighted volumetric sequence. CLINICAL HISTORY: Cognitive "
    "complaints; assess for neurodegenerative change. COMPARISON: None available. FINDINGS: The "
    "lateral ventricles are slightly prominent (Evans index 0.29). The hippocampi are of normal "
    "volume for age. Mild global cortical atrophy with opening of the sulci. IMPRESSION: {last}"
)


def test_text_embeddings_are_unit_rows_and_distinguish_texts(tiny: Embedder) -> None:
    texts = [
        "normal left ventricular function",
        "severe hippocampal atrophy",
        "normal left ventricular function",
    ]
    vectors = tiny.embed_texts(texts)
    assert vectors.shape == (3, 64)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-6)
    assert float(vectors[0] @ vectors[1]) < 0.99
    assert tiny.embed_texts([]).shape == (0, 64)
    with pytest.raises(ValueError, match="list of strings"):
        tiny.embed_texts("one string")


def test_long_report_is_windowed_not_truncated(tiny: Embedder) -> None:
    normal = REPORT.format(last="Age-appropriate volume loss.")
    windows = tiny.text_windows(normal)
    assert len(windows) > 1
    assert all(len(tiny.tokenizer.encode(w)) <= tiny.context_length - 2 for w in windows)
    assert " ".join(windows) == normal
    # The impression is beyond the first 32 tokens, yet changes the embedding.
    atrophy = REPORT.format(last="Disproportionate medial temporal atrophy.")
    first, second = tiny.embed_texts([normal, atrophy])
    assert not np.allclose(first, second, atol=1e-6)


def test_thumbnail_is_a_small_grey_png(tiny: Embedder) -> None:
    for study, size in ((as_meta(two_level_volume()), 64), (cine(), 48)):
        data = tiny.thumbnail_png(study, size=size)
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        picture = Image.open(io.BytesIO(data))
        assert picture.mode == "L"
        assert max(picture.size) == size


def test_creation_forces_hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    create_embedder("clip_tiny")
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True


def test_missing_checkpoint_and_unknown_config_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        create_embedder("clip_tiny", checkpoint=tmp_path / "absent.pt")
    with pytest.raises(ValueError, match="clip_tiny"):
        create_embedder("no_such_clip")


def write_config(tmp_path: Path, **extra: str) -> Path:
    text = (Path(__file__).parents[2] / "configs" / "clip" / "clip_tiny.yaml").read_text()
    lines = [f"{key}: {value}" for key, value in extra.items()]
    path = tmp_path / "tiny_with_weights.yaml"
    path.write_text(
        text.replace("name: clip_tiny", "name: tiny_with_weights") + "\n".join(lines) + "\n"
    )
    return path


def test_configured_checkpoint_needs_a_matching_sha256(tiny: Embedder, tmp_path: Path) -> None:
    from imaging.models.checkpoints import sha256_of

    weights = tmp_path / "weights.pt"
    torch.save({"state_dict": tiny.model.state_dict()}, weights)
    with pytest.raises(CheckpointError, match="records no sha256"):
        create_embedder(write_config(tmp_path, checkpoint="weights.pt", sha256="null"))
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        create_embedder(
            write_config(tmp_path, checkpoint="weights.pt", sha256="'" + "0" * 64 + "'")
        )
    loaded = create_embedder(
        write_config(tmp_path, checkpoint="weights.pt", sha256=f"'{sha256_of(weights)}'")
    )
    assert loaded.provenance.weights == "checkpoint"
    assert loaded.provenance.sha256 == sha256_of(weights)


def test_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    state = {"state_dict": {"visual.proj": torch.zeros(3, 3)}}
    path = tmp_path / "other.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="does not fit the architecture"):
        create_embedder("clip_tiny", checkpoint=path)


def test_biomedclip_refuses_until_its_export_is_placed() -> None:
    with pytest.raises(CheckpointError, match="biomedclip: no such file"):
        create_embedder("biomedclip")


def test_open_clip_export_folder_loads_with_its_verified_weights(
    tiny: Embedder, tmp_path: Path
) -> None:
    """The BiomedCLIP route (``local_dir``) with the tiny model exported the same way."""
    import yaml

    from imaging.models.checkpoints import sha256_of

    export = tmp_path / "export"
    export.mkdir()
    model_cfg = load_clip_config("clip_tiny").model_cfg
    (export / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    torch.save({"state_dict": tiny.model.state_dict()}, export / "open_clip_pytorch_model.bin")
    config = yaml.safe_load((CLIP_CONFIGS / "clip_tiny.yaml").read_text())
    del config["model_cfg"]
    config |= {
        "name": "exported",
        "local_dir": "export",
        "checkpoint": "export/open_clip_pytorch_model.bin",
        "sha256": sha256_of(export / "open_clip_pytorch_model.bin"),
    }
    (tmp_path / "exported.yaml").write_text(yaml.safe_dump(config))
    loaded = create_embedder(tmp_path / "exported.yaml")
    assert loaded.provenance.source.startswith("local-dir:")
    volume = as_meta(two_level_volume())
    np.testing.assert_allclose(loaded.embed_volume(volume), tiny.embed_volume(volume), atol=1e-6)
    np.testing.assert_allclose(
        loaded.embed_texts(["normal study"]), tiny.embed_texts(["normal study"]), atol=1e-6
    )
