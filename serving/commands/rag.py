"""``mmdx clip-train``: contrastive fine-tuning of the CLIP embedder on an archive."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Literal

import typer

from serving.commands.progress import progress_bar

# Options the RAG commands share, spelled once.
ManifestOption = Annotated[Path, typer.Option("--manifest", help="The archive's manifest.csv.")]
ClipConfigOption = Annotated[
    str, typer.Option("--config", help="CLIP configuration: a name in configs/clip or a file.")
]
IndexUriOption = Annotated[
    str | None,
    typer.Option("--index", help="Case index folder or memory:// [default: DATA_DIR/case_index]."),
]
CheckpointOption = Annotated[
    Path | None, typer.Option("--checkpoint", help="Local open_clip state dict to load.")
]


def clip_train(
    manifest: ManifestOption,
    out: Annotated[Path, typer.Option("--out", help="Folder for the fine-tuned checkpoint.")],
    config: ClipConfigOption = "clip_vit_b32",
    checkpoint: CheckpointOption = None,
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


NOT_FOR_DIAGNOSTIC_USE = "Similar cases for research and education; not for diagnostic use."


def index(
    manifest: ManifestOption,
    index_uri: IndexUriOption = None,
    clip_config: ClipConfigOption = "clip_vit_b32",
    checkpoint: CheckpointOption = None,
    modality: Annotated[
        str | None, typer.Option("--modality", help="Index only MR or US studies.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary only.")] = False,
) -> None:
    """Embed every archive study with its report and upsert it into the similar-case index.

    Identifiers of the manifest (patient id, accession number, UIDs) are replaced by keyed
    pseudonyms under the de-identification key (``deid.secret`` or the installation's key
    file), so only de-identified cases enter. A study that cannot be read is reported and
    the others are indexed; the exit status is then 1.
    """
    from rich.console import Console

    from imaging.errors import FileFailure, ImagingError
    from multimodal_rag.archive_cases import build_archive_cases
    from multimodal_rag.embedding import create_embedder
    from multimodal_rag.index import CaseIndex
    from serving.settings import get_settings, load_deid_secret

    chosen = modality_option(modality)
    settings = get_settings()
    uri = index_uri or str(settings.data_dir / "case_index")
    console = Console(stderr=True)
    failures: list[FileFailure] = []
    try:
        secret = load_deid_secret(settings)
        embedder = create_embedder(clip_config, checkpoint=checkpoint)
        with progress_bar(console, disable=as_json) as progress:
            task = progress.add_task("embedding studies", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            cases = build_archive_cases(
                manifest,
                embedder,
                secret=secret,
                modality=chosen,
                on_case=advance,
                failures=failures,
            )
        case_index = CaseIndex.open(uri, embedding_dim=embedder.embed_dim)
        case_index.upsert(cases)
    except (ImagingError, ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from exc
    summary = {
        "index": uri,
        "config": embedder.config.name,
        "indexed": len(cases),
        "rows": len(case_index),
        "version": case_index.version,
        "failed": [asdict(failure) for failure in failures],
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(
            f"{len(cases)} cases indexed with {embedder.config.name}; {len(failures)} failed; "
            f"{summary['rows']} cases in {uri} (version {summary['version']})"
        )
        for failure in failures:
            typer.echo(f"  failed {failure.path}: {failure.error}: {failure.reason}")
    if failures:
        raise typer.Exit(1)


def search(
    study: Annotated[
        Path | None,
        typer.Option(
            "--study", help="Query study: NIfTI, AVI, DICOM MR series folder or US DICOM file."
        ),
    ] = None,
    text: Annotated[str | None, typer.Option("--text", help="Query text (text to image).")] = None,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="The query study's report: search by image and report."),
    ] = None,
    modality: Annotated[
        str | None, typer.Option("--modality", help="Only cases of this modality (MR or US).")
    ] = None,
    k: Annotated[int, typer.Option("--k", min=1, help="The most hits returned.")] = 10,
    adaptive: Annotated[
        bool,
        typer.Option("--adaptive/--no-adaptive", help="Cut the list at the largest score drop."),
    ] = True,
    index_uri: IndexUriOption = None,
    clip_config: ClipConfigOption = "clip_vit_b32",
    checkpoint: CheckpointOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the hits as JSON.")] = False,
) -> None:
    """Find indexed cases similar to a study (image, plus report if given) or to a text.

    ``--study`` alone searches image to image; with ``--report`` it searches study to
    study, combining image and report similarity. ``--text`` searches images by text.
    Each hit shows its cosine score and why it matched. Not for diagnostic use.
    """
    from imaging.errors import ImagingError
    from multimodal_rag.archive_cases import embed_study, load_study
    from multimodal_rag.embedding import create_embedder
    from multimodal_rag.index import CaseIndex
    from multimodal_rag.retrieval import Mode, Query, search_similar
    from serving.settings import get_settings

    if (study is None) == (text is None):
        typer.echo("error: give exactly one of --study and --text", err=True)
        raise typer.Exit(2)
    if report is not None and study is None:
        typer.echo("error: --report goes with --study", err=True)
        raise typer.Exit(2)
    chosen = modality_option(modality)
    uri = index_uri or str(get_settings().data_dir / "case_index")
    if "://" not in uri and not Path(uri).is_dir():
        typer.echo(f"error: no case index at {uri}; build one with mmdx index", err=True)
        raise typer.Exit(1)
    try:
        embedder = create_embedder(clip_config, checkpoint=checkpoint)
        mode: Mode
        if study is not None:
            image = embed_study(embedder, load_study(study))
            report_text = report.read_text(encoding="utf-8") if report is not None else None
            if report_text is None:
                mode, query = "image_to_image", Query(image_embedding=image)
            else:
                mode = "study_to_study"
                query = Query(
                    image_embedding=image, text_embedding=embedder.embed_texts([report_text])[0]
                )
        else:
            mode, query = (
                "text_to_image",
                Query(text_embedding=embedder.embed_texts([text or ""])[0]),
            )
        case_index = CaseIndex.open(uri, embedding_dim=embedder.embed_dim)
        hits = search_similar(
            query,
            case_index,
            mode=mode,
            k=k,
            filters={"modality": chosen} if chosen else None,
            adaptive=adaptive,
            embed_texts=embedder.embed_texts,
        )
    except (ImagingError, ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from exc
    if as_json:
        payload = {
            "mode": mode,
            "index": uri,
            "notice": NOT_FOR_DIAGNOSTIC_USE,
            "hits": [
                {**asdict(hit), "matched_sentences": list(hit.matched_sentences)} for hit in hits
            ],
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    typer.echo(f"{len(hits)} similar cases ({mode.replace('_', ' ')}), best first:")
    for hit in hits:
        typer.echo(
            f"{hit.rank:3d}. {hit.score:.3f}  {hit.case_id}  {hit.modality} "
            f"label={hit.label or '-'} site={hit.site_id}  why: {hit.why}"
        )
        for sentence in hit.matched_sentences:
            typer.echo(f"       \u201c{sentence}\u201d")
    typer.echo(NOT_FOR_DIAGNOSTIC_USE)


def modality_option(value: str | None) -> Literal["MR", "US"] | None:
    """The --modality value, upper-cased, or exit 2 naming the valid options."""
    if value is None:
        return None
    upper = value.upper()
    if upper == "MR":
        return "MR"
    if upper == "US":
        return "US"
    typer.echo(f'error: --modality must be MR or US, got "{value}"', err=True)
    raise typer.Exit(2)
