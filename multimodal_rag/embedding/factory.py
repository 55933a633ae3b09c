"""``create_embedder``: an open_clip model from a configuration and local weights only.

Nothing is downloaded. The Hugging Face hub is put in offline mode before open_clip is
used (a missing file then fails at once instead of hanging in retries), pretrained tags
are never resolved, and a checkpoint is a local file whose SHA-256 is checked when one
is recorded (in the configuration, or in the ``.json`` written beside a fine-tuned one).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imaging.errors import CheckpointError
from multimodal_rag.embedding.config import DEFAULT_CLIP_CONFIG, ClipConfig, load_clip_config

if TYPE_CHECKING:
    import torch

    from multimodal_rag.embedding.embedder import Embedder


def create_embedder(
    name: str | Path = DEFAULT_CLIP_CONFIG,
    *,
    checkpoint: Path | None = None,
    device: str | torch.device | None = None,
) -> Embedder:
    """Build the embedder of configuration ``name`` (``configs/clip/NAME.yaml`` or a file).

    Args:
        name: Configuration name or YAML path.
        checkpoint: A local open_clip state dict (e.g. from ``fine_tune_clip``) that overrides
            the configuration's own weights. Its ``.json`` sidecar, when present, must name
            this configuration and carry the file's sha256, which is verified.
        device: Torch device; the CPU by default.

    Returns:
        An :class:`Embedder` in eval mode; ``provenance`` says ``random_init`` when no
        weights were loaded (the initialisation is seeded, so it is reproducible).

    Raises:
        ValueError: Unknown or invalid configuration.
        CheckpointError: A checkpoint is missing, has no recorded or a wrong sha256, was
            written for another configuration, or does not fit the architecture.
    """
    import torch

    from multimodal_rag.embedding.embedder import Embedder, EmbedderProvenance

    _force_hub_offline()
    config = load_clip_config(name)
    target = torch.device(device or "cpu")
    weights, expected_sha = _resolve_weights(config, checkpoint)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.init_seed)
        model, tokenizer, context_length = _build(config)
    sha = None
    if weights is not None:
        sha = _verify(weights, expected_sha)
        _load_weights(model, weights)
    model = model.to(target).eval()
    provenance = EmbedderProvenance(
        config=config.name,
        source=config.source,
        weights="random_init" if weights is None else "checkpoint",
        checkpoint=None if weights is None else str(weights),
        sha256=sha,
        init_seed=config.init_seed if weights is None else None,
    )
    return Embedder(
        model, tokenizer, config, provenance, context_length=context_length, device=target
    )


def _force_hub_offline() -> None:
    """Make huggingface_hub refuse network access, even if it was imported before."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # it reads the variable once, at import
        constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]


def _resolve_weights(config: ClipConfig, checkpoint: Path | None) -> tuple[Path | None, str | None]:
    """The weights file to load (or None) and the sha256 it must have (or None: unchecked)."""
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise CheckpointError(path, "no such checkpoint file")
        sidecar = path.with_suffix(".json")
        if not sidecar.is_file():
            return path, None
        record = json.loads(sidecar.read_text())
        if record.get("config") != config.name:
            raise CheckpointError(
                path,
                f"written for CLIP configuration {record.get('config')!r}, not {config.name!r}",
            )
        return path, str(record.get("sha256") or "") or None
    if config.checkpoint is None:
        return None, None
    if not config.checkpoint.is_file():
        raise CheckpointError(config.checkpoint, f"configuration {config.name}: no such file")
    if config.sha256 is None:
        raise CheckpointError(
            config.checkpoint,
            f"configuration {config.name} records no sha256; add the file's `sha256sum`",
        )
    return config.checkpoint, config.sha256


def _verify(path: Path, expected: str | None) -> str:
    """The file's SHA-256, after checking it against ``expected`` when one is recorded."""
    from imaging.models.checkpoints import sha256_of, verify_sha256

    if expected is not None:
        verify_sha256(path, expected)
    return sha256_of(path)


def _build(config: ClipConfig) -> tuple[Any, Any, int]:
    """Randomly initialised model, its tokenizer and text context length."""
    import open_clip

    if config.local_dir is not None:
        if not config.local_dir.is_dir():
            raise CheckpointError(config.local_dir, f"configuration {config.name}: no such folder")
        reference = f"local-dir:{config.local_dir}"
        try:
            # The structure only: weights come from the verified ``checkpoint``.
            model = open_clip.create_model(
                reference, load_weights=False, pretrained_image=False, pretrained_text=False
            )
            tokenizer = open_clip.get_tokenizer(reference)
        except (ImportError, OSError, RuntimeError, ValueError) as exc:
            raise CheckpointError(
                config.local_dir, f"cannot load the open_clip export: {exc}"
            ) from exc
        return model, tokenizer, int(getattr(tokenizer, "context_length", 77))
    if config.architecture is not None:
        model_cfg = open_clip.get_model_config(config.architecture)
        if model_cfg is None:
            raise ValueError(
                f"configuration {config.name}: open_clip has no architecture "
                f"{config.architecture!r}; see open_clip.list_models()"
            )
    else:
        model_cfg = json.loads(json.dumps(config.model_cfg))  # a private copy
    text_cfg = model_cfg["text_cfg"]
    if "hf_model_name" in text_cfg or "timm_model_name" in model_cfg["vision_cfg"]:
        # Towers from timm/transformers would fetch their own pretrained weights.
        model_cfg["vision_cfg"]["timm_model_pretrained"] = False
        text_cfg["hf_model_pretrained"] = False
    custom_text = bool(model_cfg.pop("custom_text", False)) or "hf_model_name" in text_cfg
    model_class = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
    model = model_class(**model_cfg)
    context_length = int(text_cfg.get("context_length", 77))
    if config.architecture is not None:
        tokenizer = open_clip.get_tokenizer(config.architecture, context_length=context_length)
    elif "hf_tokenizer_name" in text_cfg:
        tokenizer = open_clip.HFTokenizer(
            text_cfg["hf_tokenizer_name"], context_length=context_length
        )
    else:
        tokenizer = open_clip.SimpleTokenizer(context_length=context_length)
    return model, tokenizer, context_length


def _load_weights(model: Any, path: Path) -> None:
    """Load an open_clip state dict strictly: every key and shape must fit."""
    import open_clip

    try:
        open_clip.load_checkpoint(model, str(path), strict=True, weights_only=True)
    except (RuntimeError, KeyError, ValueError, OSError) as exc:
        raise CheckpointError(path, f"does not fit the architecture: {exc}") from exc
