"""``mmdx rag-eval``: retrieval and fusion figures of the similar-case index, with CIs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from serving.commands.rag import IndexUriOption, modality_option


def rag_eval(
    index_uri: IndexUriOption = None,
    predictions: Annotated[
        list[Path] | None,
        typer.Option(
            "--predictions",
            help="predictions.csv of `mmdx evaluate --split leave-sites-out` (repeat per "
            "modality): adds the classifier-feature baseline and the fusion comparison.",
        ),
    ] = None,
    modality: Annotated[
        str | None, typer.Option("--modality", help="Only MR or only US cases.")
    ] = None,
    k: Annotated[int, typer.Option("--k", min=1, help="Cut-off of the metrics.")] = 10,
    resamples: Annotated[
        int, typer.Option("--resamples", min=100, help="Bootstrap resamples over patients.")
    ] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the random baseline.")] = 0,
    out: Annotated[
        Path | None, typer.Option("--out", help="Also write the JSON summary to this file.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON summary only.")] = False,
) -> None:
    """Same-label retrieval of the indexed cases against random and classifier baselines.

    Per modality: precision@k, recall@k and mAP@k of image-to-image retrieval (each
    query's own patient left out), image-to-report median rank, with 95% bootstrap CIs
    over patients; with --predictions, also the classifier-feature baseline and
    classifier-only vs retrieval-only vs fused AUC and ECE, site by site (the evidence
    of a case only from other sites' cases). Figures on synthetic data are engineering
    figures; not for diagnostic use.
    """
    from imaging.evaluation.report import DISCLAIMER
    from multimodal_rag.index import CaseIndex
    from multimodal_rag.index_evaluation import (
        EVALUATION_COLUMNS,
        evaluate_index_table,
        read_classifier_probabilities,
    )
    from serving.settings import get_settings, load_deid_secret

    chosen = modality_option(modality)
    settings = get_settings()
    uri = index_uri or str(settings.data_dir / "case_index")
    if "://" not in uri and not Path(uri).is_dir():
        typer.echo(f"error: no case index at {uri}; build one with mmdx index", err=True)
        raise typer.Exit(1)
    try:
        probabilities: dict[str, float] = {}
        if predictions:
            secret = load_deid_secret(settings)
            for path in predictions:
                probabilities.update(read_classifier_probabilities(path, secret))
        table = CaseIndex.open(uri).scan(EVALUATION_COLUMNS)
        results = evaluate_index_table(
            table,
            modalities=(chosen,) if chosen else ("MR", "US"),
            probabilities=probabilities,
            k=k,
            n_resamples=resamples,
            seed=seed,
        )
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from exc
    summary = {
        "index": uri,
        "split": "leave one patient out (retrieval); leave sites out (fusion)",
        "confidence": "95% percentile bootstrap over patients",
        "disclaimer": DISCLAIMER,
        "modalities": results,
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=2) + "\n")
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    for name, result in results.items():
        _print_modality(name, result)
    typer.echo(f"95% CIs: bootstrap over patients. {DISCLAIMER}")


def _print_modality(name: str, result: dict[str, Any]) -> None:
    labels = ", ".join(f"{label} {n}" for label, n in result["label_counts"].items())
    typer.echo(
        f"{name}: {result['n_cases']} cases, {result['n_patients']} patients, "
        f"{len(result['sites'])} sites ({labels})"
    )
    k = result["k"]
    arms = [("image embedding", "image_to_image"), ("random", "random")]
    if "classifier_features" in result:
        arms.append(("classifier output", "classifier_features"))
    if "image_to_image_other_sites" in result:
        arms += [
            ("image, other sites", "image_to_image_other_sites"),
            ("random, other sites", "random_other_sites"),
        ]
    for title, key in arms:
        metrics = result[key]
        typer.echo(
            f"  {title:18s} P@{k} {_ci(metrics['precision_at_k'])}  "
            f"R@{k} {_ci(metrics['recall_at_k'])}  mAP@{k} {_ci(metrics['map_at_k'])}"
        )
    rank = result["image_to_report"]
    typer.echo(
        f"  image->report median rank {_ci(rank['median_rank'], digits=1)} "
        f"(random {rank['random_expected_median_rank']:.1f} of {rank['candidates_median']})"
    )
    fusion = result.get("fusion_leave_sites_out")
    if fusion:
        for method, metrics in fusion["metrics"].items():
            typer.echo(
                f"  {method:10s} AUC {_ci(metrics['auc'])}  ECE {_ci(metrics['ece'])}"
                "  (leave sites out)"
            )
        typer.echo(f"  fused - classifier AUC {_ci(fusion['auc_gain_fused_minus_classifier'])}")


def _ci(metric: dict[str, Any], digits: int = 3) -> str:
    if metric["value"] is None:
        return "undefined"
    if metric["low"] is None:
        return f"{metric['value']:.{digits}f}"
    return f"{metric['value']:.{digits}f} ({metric['low']:.{digits}f}-{metric['high']:.{digits}f})"
