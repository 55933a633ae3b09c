"""CLIP embeddings of studies (volumes, cine loops) and reports on open_clip.

``create_embedder(name, checkpoint=...)`` builds a model from ``configs/clip/NAME.yaml``
with local weights only. Importing this package does not import torch or open_clip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from multimodal_rag.embedding.config import (
    DEFAULT_CLIP_CONFIG,
    ClipConfig,
    list_clip_configs,
    load_clip_config,
)
from multimodal_rag.embedding.factory import create_embedder

if TYPE_CHECKING:
    from multimodal_rag.embedding.embedder import Embedder, EmbedderProvenance

__all__ = [
    "DEFAULT_CLIP_CONFIG",
    "ClipConfig",
    "Embedder",
    "EmbedderProvenance",
    "create_embedder",
    "list_clip_configs",
    "load_clip_config",
]


def __getattr__(name: str) -> Any:
    # The embedder module imports torch; load it only when it is asked for.
    if name in ("Embedder", "EmbedderProvenance"):
        from multimodal_rag.embedding import embedder

        return getattr(embedder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
