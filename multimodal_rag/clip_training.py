"""Contrastive fine-tuning of the CLIP embedder on image-report pairs of an archive.

Each pair is one study's precomputed model input (its slices or frames, exactly what
:class:`~multimodal_rag.embedding.embedder.Embedder` embeds) and its report. The loss is
CLIP's symmetric InfoNCE over a batch, with open_clip's learnable temperature
(``logit_scale``); study and report embeddings are pooled as at inference. By default
only the image tower's last block and projection train (CPU cost, and little data).

Image-to-report retrieval (recall@1/5/10, median rank) is measured before and after on
the training pairs and on held-out patients. A report identical to the true one scores
the same and counts as a hit: the rank is 1 + the number of reports scoring higher.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from multimodal_rag.embedding.embedder import Embedder

CHECKPOINT_NAME = "clip_finetuned.pt"
# open_clip's training clamps the logit scale at 100 (temperature 0.01).
_MAX_LOGIT_SCALE = math.log(100.0)


@dataclass(frozen=True)
class ClipPair:
    """One study's model input ``(n, 3, S, S)``, its report, patient and modality."""

    images: torch.Tensor
    report_text: str
    patient_id: str
    modality: str


@dataclass(frozen=True)
class RetrievalMetrics:
    """Image-to-report retrieval among ``n`` pairs (each study ranks all ``n`` reports)."""

    n: int
    recall_at_1: float
    recall_at_5: float
    recall_at_10: float
    median_rank: float


@dataclass(frozen=True)
class ClipTrainResult:
    """What fine-tuning did: metrics before/after per split, losses, the checkpoint."""

    checkpoint: Path
    sha256: str
    before: dict[str, RetrievalMetrics]
    after: dict[str, RetrievalMetrics]
    epoch_losses: list[float]
    n_train: int
    n_held_out: int
    seconds: float
    trainable_parameters: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary."""
        summary = asdict(self)
        summary["checkpoint"] = str(self.checkpoint)
        return summary


def retrieval_metrics(
    image_embeddings: np.ndarray, text_embeddings: np.ndarray
) -> RetrievalMetrics:
    """Recall@k and median rank of each row's own report among all rows' reports.

    Raises:
        ValueError: The two arrays differ in shape or are empty.
    """
    if image_embeddings.shape != text_embeddings.shape or len(image_embeddings) == 0:
        raise ValueError(
            "image and text embeddings must be non-empty and of one shape, got "
            f"{image_embeddings.shape} and {text_embeddings.shape}"
        )
    scores = image_embeddings @ text_embeddings.T
    own = np.diag(scores)[:, None]
    # A tolerance keeps identical reports (equal embeddings) from ranking below each other.
    ranks = 1 + (scores > own + 1e-6).sum(axis=1)
    return RetrievalMetrics(
        n=len(ranks),
        recall_at_1=float(np.mean(ranks <= 1)),
        recall_at_5=float(np.mean(ranks <= 5)),
        recall_at_10=float(np.mean(ranks <= 10)),
        median_rank=float(np.median(ranks)),
    )


def split_by_patient(
    pairs: Sequence[ClipPair], *, held_out_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Indices of training and held-out pairs; a patient's studies stay on one side.

    Patients are ordered by a seeded hash of their id, so the split does not depend on
    the manifest's order. With ``held_out_fraction`` 0 every pair trains.
    """
    if not 0.0 <= held_out_fraction < 1.0:
        raise ValueError(f'Argument "held_out_fraction" must be in [0, 1), got {held_out_fraction}')
    patients = sorted(
        {pair.patient_id for pair in pairs},
        key=lambda pid: hashlib.sha256(f"{seed}:{pid}".encode()).hexdigest(),
    )
    n_held = round(held_out_fraction * len(patients))
    held = set(patients[:n_held])
    train = [i for i, pair in enumerate(pairs) if pair.patient_id not in held]
    test = [i for i, pair in enumerate(pairs) if pair.patient_id in held]
    return train, test


def load_clip_pairs(
    embedder: Embedder,
    manifest: Path,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> list[ClipPair]:
    """Model inputs and reports of every archive study with a NIfTI volume or a video.

    Paths in the manifest are relative to its folder. Rows with neither, or without a
    report, are skipped; a listed file that cannot be read raises.

    Raises:
        FileNotFoundError: No manifest, or a listed report is missing.
        ImagingError: A listed volume or video cannot be read.
    """
    from imaging.readers.echonet import load_echonet_video
    from imaging.readers.nifti import load_nifti_volume

    manifest = Path(manifest)
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    root = manifest.parent
    pairs: list[ClipPair] = []
    for number, row in enumerate(rows, start=1):
        report = (row.get("report_path") or "").strip()
        nifti, video = (row.get("nifti_path") or "").strip(), (row.get("video_path") or "").strip()
        if not report or not (nifti or video):
            continue
        text = (root / report).read_text(encoding="utf-8")
        if nifti:
            images = embedder.volume_images(load_nifti_volume(root / nifti))
        else:
            cine = load_echonet_video(root / video)
            images = embedder.cine_images(np.asarray(cine.frames), np.asarray(cine.sector_mask))
        pairs.append(ClipPair(images, text, row.get("patient_id", ""), row.get("modality", "")))
        if progress is not None:
            progress(number, len(rows))
    return pairs


def fine_tune_clip(
    embedder: Embedder,
    pairs: Sequence[ClipPair],
    *,
    epochs: int,
    lr: float = 1e-4,
    batch_size: int = 16,
    seed: int = 0,
    out_dir: Path,
    held_out_fraction: float = 0.25,
    unlocked_vision_groups: int | None = 2,
    weight_decay: float = 0.01,
) -> ClipTrainResult:
    """Fine-tune ``embedder``'s model in place on image-report pairs; save and measure it.

    Args:
        embedder: The model to adapt (left in eval mode, with the fine-tuned weights).
        pairs: Studies with their reports (see :func:`load_clip_pairs`).
        epochs: Passes over the training pairs.
        lr: AdamW learning rate.
        batch_size: Pairs per contrastive batch (the negatives of each pair).
        seed: Seeds the patient split and the batch order.
        out_dir: Receives ``clip_finetuned.pt`` (an open_clip state dict) and
            ``clip_finetuned.json`` (configuration, sha256, metrics), which
            ``create_embedder(config, checkpoint=...)`` loads and verifies.
        held_out_fraction: Share of patients kept out of training for the metrics.
        unlocked_vision_groups: Trainable image-tower groups counted from the output (open_clip's
            ``lock_image_tower``); ``None`` trains the whole image tower.
        weight_decay: AdamW weight decay.

    Raises:
        ValueError: Fewer than two training pairs, or invalid arguments.
    """
    import torch

    from imaging.models.checkpoints import sha256_of

    if epochs < 1 or batch_size < 2 or lr <= 0:
        raise ValueError(
            f"epochs must be >= 1, batch_size >= 2 and lr > 0; got {epochs}, {batch_size}, {lr}"
        )
    started = time.perf_counter()
    train, held = split_by_patient(pairs, held_out_fraction=held_out_fraction, seed=seed)
    if len(train) < 2:
        raise ValueError(f"need at least two training pairs, got {len(train)}")
    splits = {"train": train, **({"held_out": held} if held else {})}
    before = {name: _measure(embedder, pairs, idx) for name, idx in splits.items()}

    model = embedder.model
    _freeze_vision(model, unlocked_vision_groups)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    model.train()
    try:
        for _ in range(epochs):
            order = [train[i] for i in torch.randperm(len(train), generator=generator).tolist()]
            epoch_loss, batches = 0.0, 0
            for start in range(0, len(order), batch_size):
                batch = [pairs[i] for i in order[start : start + batch_size]]
                if len(batch) < 2:  # one pair has no negative to contrast with
                    continue
                loss = _contrastive_loss(embedder, batch)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(0.0, _MAX_LOGIT_SCALE)
                epoch_loss, batches = epoch_loss + loss.item(), batches + 1
            losses.append(epoch_loss / max(batches, 1))
    finally:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        model.eval()

    after = {name: _measure(embedder, pairs, idx) for name, idx in splits.items()}
    checkpoint = _save(embedder, Path(out_dir))
    sha = sha256_of(checkpoint)
    result = ClipTrainResult(
        checkpoint=checkpoint,
        sha256=sha,
        before=before,
        after=after,
        epoch_losses=losses,
        n_train=len(train),
        n_held_out=len(held),
        seconds=round(time.perf_counter() - started, 2),
        trainable_parameters=sum(p.numel() for p in trainable),
        notes=[f"base weights: {embedder.provenance.describe()}"],
    )
    sidecar = checkpoint.with_suffix(".json")
    record = {"config": embedder.config.name, **result.to_dict()}
    sidecar.write_text(json.dumps(record, indent=2) + "\n")
    return result


def _contrastive_loss(embedder: Embedder, batch: Sequence[ClipPair]) -> torch.Tensor:
    """CLIP's symmetric cross-entropy over the batch's study-report similarity matrix."""
    import torch
    import torch.nn.functional as F

    from multimodal_rag.embedding.embedder import pool_features

    model = embedder.model
    images = torch.cat([pair.images for pair in batch]).to(embedder.device)
    image_features = pool_features(
        model.encode_image(images).float(), [len(pair.images) for pair in batch]
    )
    text_features = embedder.encode_texts([pair.report_text for pair in batch])
    logits = model.logit_scale.exp() * image_features @ text_features.T
    target = torch.arange(len(batch), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def _measure(embedder: Embedder, pairs: Sequence[ClipPair], indices: list[int]) -> RetrievalMetrics:
    """Retrieval metrics of the pairs at ``indices`` under the embedder's current weights."""
    chosen = [pairs[i] for i in indices]
    image = embedder.embed_image_groups([pair.images for pair in chosen])
    text = embedder.embed_texts([pair.report_text for pair in chosen])
    return retrieval_metrics(image, text)


def _freeze_vision(model: Any, unlocked_groups: int | None) -> None:
    """Freeze the image tower except its last ``unlocked_groups`` groups (None: none frozen)."""
    if unlocked_groups is None:
        return
    visual = model.visual
    try:
        visual.lock(unlocked_groups=unlocked_groups, freeze_bn_stats=False)
    except AssertionError:
        # open_clip's ModifiedResNet locks all or nothing: keep its attention pool
        # (which holds the projection) trainable.
        visual.lock(unlocked_groups=0, freeze_bn_stats=False)
        if unlocked_groups > 0:
            visual.attnpool.requires_grad_(True)


def _save(embedder: Embedder, out_dir: Path) -> Path:
    """Write the state dict atomically (temporary file, then rename)."""
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / CHECKPOINT_NAME
    partial = path.with_suffix(".pt.partial")
    state = {key: value.detach().cpu() for key, value in embedder.model.state_dict().items()}
    torch.save({"state_dict": state}, partial)
    partial.replace(path)
    return path
