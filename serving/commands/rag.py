"""``mmdx clip-train``: contrastive fine-tuning of the CLIP embedder on an archive."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from serving.commands.progress import progress_bar


def clip_train(
    manifest: Annotated[Path, typer.Option("--manifest", help="The archive's manifest.csv.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the fine-tuned checkpoint.")],
    config: Annotated[
        str, typer.Option("--config", help="CLIP configuration: a name in configs/clip or a file.")
    ] = "clip_vit_b32",
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", help="Start from this local open_clip state dict."),
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Passes over the pairs.")] = 5,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="AdamW learning rate.")] = 1e-4,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=2, help="Pairs per contrastive batch.")
    ] = 16,
    held_out: Annotated[
        float, typer.Option("--held-out", min=0.0, max=0.9, help="Share of patients held out.")
    ] = 0.25,
    unlocked_groups: Annotated[
        int,
        typer.Option(
            "--unlocked-groups",
            min=-1,
            help="Trainable image-tower groups from the output (-1: the whole tower).",
        ),
    ] = 2,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the split and batch order.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary only.")] = False,
) -> None:
    """Fine-tune the CLIP embedder on the archive's image-report pairs (InfoNCE).

    Prints image-to-report retrieval (recall@1/5/10, median rank) before and after, on
    the training pairs and on held-out patients, and writes OUT/clip_finetuned.pt with
    OUT/clip_finetuned.json (sha256, metrics), loadable with the same --config.
    Nothing is downloaded; without --checkpoint or configured weights the model starts
    from random initialisation. Synthetic-data figures are engineering figures only.
    """
    from rich.console import Console

    from imaging.errors import ImagingError
    from multimodal_rag.clip_training import fine_tune_clip, load_clip_pairs
    from multimodal_rag.embedding import create_embedder

    console = Console(stderr=True)
    try:
        embedder = create_embedder(config, checkpoint=checkpoint)
        with progress_bar(console, disable=as_json) as progress:
            task = progress.add_task("reading studies", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            pairs = load_clip_pairs(embedder, manifest, progress=advance)
        if not as_json:
            console.print(f"{len(pairs)} image-report pairs; {embedder.provenance.describe()}")
        result = fine_tune_clip(
            embedder,
            pairs,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
            out_dir=out,
            held_out_fraction=held_out,
            unlocked_vision_groups=None if unlocked_groups < 0 else unlocked_groups,
        )
    except (ImagingError, ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from exc
    summary = {"config": embedder.config.name, **result.to_dict()}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(
        f"{embedder.config.name}: {result.n_train} training / {result.n_held_out} held-out pairs, "
        f"{epochs} epochs in {result.seconds:.1f} s; losses "
        + ", ".join(f"{loss:.3f}" for loss in result.epoch_losses)
    )
    for split in result.before:
        before, after = result.before[split], result.after[split]
        typer.echo(
            f"  {split:9s} image->report  R@1 {before.recall_at_1:.3f} -> {after.recall_at_1:.3f}"
            f"  R@5 {before.recall_at_5:.3f} -> {after.recall_at_5:.3f}"
            f"  R@10 {before.recall_at_10:.3f} -> {after.recall_at_10:.3f}"
            f"  median rank {before.median_rank:g} -> {after.median_rank:g}  (n={after.n})"
        )
    typer.echo(f"checkpoint {result.checkpoint} sha256 {result.sha256}")
