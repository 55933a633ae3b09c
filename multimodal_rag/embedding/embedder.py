"""The CLIP embedder: one vector per study (volume or cine loop) and per report.

A study's images (slices in three planes, or sampled frames) are embedded one by one,
L2-normalised, averaged and normalised again, so a study is the direction its images
agree on. Reports longer than the text tower's context are cut into sentence windows
that are pooled the same way, rather than truncated (findings come late in a report).
Every output is float32 with unit L2 norm, so a dot product is a cosine similarity.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from multimodal_rag.embedding import images
from multimodal_rag.embedding.config import ClipConfig

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass(frozen=True)
class EmbedderProvenance:
    """Where an embedder's weights came from; ``weights`` is ``random_init`` or ``checkpoint``."""

    config: str
    source: str
    weights: str
    checkpoint: str | None
    sha256: str | None
    init_seed: int | None

    def describe(self) -> str:
        """One line for logs and model cards."""
        if self.weights == "random_init":
            return f"{self.config} ({self.source}): random initialisation, seed {self.init_seed}"
        return f"{self.config} ({self.source}): weights {self.checkpoint} sha256 {self.sha256}"


def pool_features(features: torch.Tensor, groups: Sequence[int]) -> torch.Tensor:
    """Unit-norm mean of L2-normalised rows, per consecutive group of ``groups[i]`` rows.

    Differentiable, so fine-tuning pools exactly as inference does.
    """
    normalised = F.normalize(features, dim=-1)
    pooled = torch.stack([part.mean(dim=0) for part in normalised.split(list(groups))])
    return F.normalize(pooled, dim=-1)


class Embedder:
    """An open_clip model in eval mode with its tokenizer, preprocessing and provenance.

    Built by :func:`multimodal_rag.embedding.create_embedder`; not thread-safe for
    concurrent fine-tuning and embedding.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        config: ClipConfig,
        provenance: EmbedderProvenance,
        *,
        context_length: int,
        device: torch.device,
    ) -> None:
        # open_clip's CLIP, CustomTextCLIP or CoCa: typed loosely, as open_clip is untyped.
        self.model: Any = model.eval()
        self.tokenizer = tokenizer
        self.config = config
        self.provenance = provenance
        self.context_length = context_length
        self.device = device
        self.embed_dim = int(_embed_dim(model))

    # --- model inputs (public so that fine-tuning trains on exactly these) ----------------

    def volume_images(self, volume: Any) -> torch.Tensor:
        """The ``(3 * K, 3, S, S)`` model input of a ``(1, X, Y, Z)`` volume, K slices a plane."""
        sampling = self.config.sampling
        slices = images.volume_slices(
            volume,
            slices_per_plane=sampling.slices_per_plane,
            slice_spread=sampling.slice_spread,
        )
        return images.to_model_input(slices, self.config.preprocess)

    def cine_images(
        self, frames: np.ndarray, sector_mask: np.ndarray | None = None
    ) -> torch.Tensor:
        """The ``(N, 3, S, S)`` model input of a ``(T, H, W, C)`` uint8 cine loop."""
        chosen = images.cine_frames(
            frames, count=self.config.sampling.frames, sector_mask=sector_mask
        )
        return images.to_model_input(chosen, self.config.preprocess)

    def text_windows(self, text: str) -> list[str]:
        """The report cut at sentence ends into pieces that fit the text context."""
        sentences = [part.strip() for part in _SENTENCE_END.split(text) if part.strip()]
        budget = self.context_length - 2  # start and end tokens
        windows: list[str] = []
        current: list[str] = []
        for sentence in sentences:
            candidate = " ".join([*current, sentence])
            if current and _token_count(self.tokenizer, candidate) > budget:
                windows.append(" ".join(current))
                current = [sentence]
            else:
                current.append(sentence)
        if current:
            windows.append(" ".join(current))
        return windows or [""]

    # --- embeddings ----------------------------------------------------------------------

    def embed_volume(self, volume: Any) -> np.ndarray:
        """The ``(d,)`` unit-norm embedding of a ``(1, X, Y, Z)`` volume (RAS)."""
        return self.embed_image_groups([self.volume_images(volume)])[0]

    def embed_cine(self, frames: np.ndarray, sector_mask: np.ndarray | None = None) -> np.ndarray:
        """The ``(d,)`` unit-norm embedding of a ``(T, H, W, C)`` uint8 cine loop."""
        return self.embed_image_groups([self.cine_images(frames, sector_mask)])[0]

    def embed_image_groups(self, groups: Sequence[torch.Tensor]) -> np.ndarray:
        """``(len(groups), d)`` pooled embeddings, one per ``(n_i, 3, S, S)`` group of images.

        Images of several studies go through the model together, ``batch_size`` at a time.
        """
        if not groups:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        stacked = torch.cat(list(groups))
        with torch.inference_mode():
            features = torch.cat(
                [
                    self.model.encode_image(part.to(self.device)).float()
                    for part in stacked.split(self.config.batch_size)
                ]
            )
            pooled = pool_features(features, [len(group) for group in groups])
        return pooled.cpu().numpy().astype(np.float32)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), d)`` unit-norm embeddings of reports or queries."""
        if isinstance(texts, str):
            raise ValueError('Argument "texts" must be a list of strings, not one string')
        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        with torch.inference_mode():
            pooled = self.encode_texts(texts)
        return pooled.cpu().numpy().astype(np.float32)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Pooled, normalised text features as a tensor (with gradients when enabled)."""
        windows = [self.text_windows(text) for text in texts]
        flat = [window for pieces in windows for window in pieces]
        features = torch.cat(
            [
                self.model.encode_text(
                    self.tokenizer(flat[i : i + self.config.batch_size]).to(self.device)
                ).float()
                for i in range(0, len(flat), self.config.batch_size)
            ]
        )
        return pool_features(features, [len(pieces) for pieces in windows])

    def thumbnail_png(
        self, study: Any, *, size: int = 128, sector_mask: np.ndarray | None = None
    ) -> bytes:
        """A small PNG of the central axial slice of a volume or the middle frame of a loop."""
        return images.thumbnail_png(study, size=size, sector_mask=sector_mask)


def _embed_dim(model: nn.Module) -> int:
    """The joint embedding width, read from the text projection or the logit-free forward."""
    projection = getattr(model, "text_projection", None)
    if isinstance(projection, torch.Tensor):
        return int(projection.shape[-1])
    if isinstance(projection, nn.Linear):
        return int(projection.out_features)
    visual_dim = getattr(getattr(model, "visual", None), "output_dim", None)
    if visual_dim is None:
        raise ValueError("cannot tell the embedding width of the model")
    return int(visual_dim)


def _token_count(tokenizer: Any, text: str) -> int:
    """Tokens of ``text`` without start/end tokens, for open_clip's simple and HF tokenizers."""
    if hasattr(tokenizer, "encode"):
        return len(tokenizer.encode(text))
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is not None and hasattr(inner, "encode"):
        return len(inner.encode(text, add_special_tokens=False))
    return 2 * len(text.split())  # a generous guess: BPE splits words into about 1-2 tokens
