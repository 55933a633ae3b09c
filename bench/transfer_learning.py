"""Transfer learning on the sample archive: brain-age pretraining -> AD vs CN, against scratch.

Leave-sites-out on a synthetic MRI archive (one fold per site), three arms on the same folds:

1. ``mri_age_pretrain``: brain age from every training patient of the fold (never its
   test site), the "large" proxy task;
2. ``mri_ad_finetune``: AD vs CN on half the training patients (the labelled subset),
   starting from the backbone of step 1's best checkpoint of the same fold;
3. ``mri_ad_scratch``: the same labelled subset, model and epochs from random weights.

Wiring: the fine-tune recipe names one ``backbone_checkpoint``
(``runs/mri_age_pretrain/best.pt``), which would hand every fold a backbone that may have
seen its test site. ``cross_validate(..., backbone_runs=...)`` replaces it per fold with
that fold's pretraining checkpoint; the benchmark checks the record of every fold, and
that fine-tune and scratch trained on the same studies.

Printed: AUC and balanced accuracy (pooled out-of-fold, 95% bootstrap CIs over patients)
for both arms and their difference (transfer - scratch) with a paired bootstrap over
patients. Usage:

    python -m bench.transfer_learning [--quick] [--archive DIR] [--work DIR] [--mri N]

``--quick`` (about 2 minutes): 48 studies, 3 epochs per arm, 200 resamples.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from imaging.evaluation.metrics import MetricCI
    from imaging.training.recipe import TrainingRecipe

BANNER = "engineering figures on synthetic data; not for diagnostic use"
SPLIT = "leave-sites-out"
QUICK_EPOCHS = 3
METRICS = ("auc", "balanced_accuracy")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options both experiment benchmarks take."""
    parser.add_argument("--archive", type=Path, help="Existing sample archive (manifest.csv).")
    parser.add_argument("--work", type=Path, help="Keep runs here (resumable); default: temp.")
    parser.add_argument("--mri", type=int, default=200, help="MRI studies to generate.")
    parser.add_argument("--sites", type=int, default=4, help="Sites to generate.")
    parser.add_argument("--seed", type=int, default=0, help="Archive seed.")
    parser.add_argument("--resamples", type=int, default=1000, help="Bootstrap resamples.")
    parser.add_argument("--epochs", type=int, help="Override every recipe's epochs.")
    parser.add_argument("--quick", action="store_true", help="Two-minute smoke run.")


def prepare_archive(args: argparse.Namespace, work: Path) -> Path:
    """The manifest of ``--archive``, or of a freshly generated MRI-only archive."""
    if args.archive is not None:
        return Path(args.archive) / "manifest.csv"
    from imaging.synthetic.archive import ArchiveSpec, generate_archive

    out = work / "archive"
    if not (out / "manifest.csv").is_file():
        started = time.perf_counter()
        studies = 48 if args.quick else args.mri
        generate_archive(
            ArchiveSpec(
                out_dir=out, mri_studies=studies, echo_studies=0, sites=args.sites, seed=args.seed
            )
        )
        print(
            f"archive: {studies} MRI studies over {args.sites} sites, seed {args.seed} "
            f"({time.perf_counter() - started:.0f} s)"
        )
    return out / "manifest.csv"


def bench_recipe(
    name: str, work: Path, *, quick: bool, epochs: int | None = None
) -> TrainingRecipe:
    """A recipe from ``configs/training`` with a shared disk cache (and short runs if quick).

    Every arm decodes each volume once: the cache folder is keyed by the preprocessing.
    ``epochs`` overrides the recipe's; ``quick`` sets 3 epochs without early stopping.
    """
    from imaging.training.recipe import load_recipe

    recipe = load_recipe(name)
    changes: dict[str, Any] = {"cache": "disk", "cache_dir": work / "cache"}
    if epochs is not None:
        changes["epochs"] = epochs
    if quick:
        changes |= {
            "epochs": QUICK_EPOCHS,
            "freeze_backbone_epochs": min(recipe.freeze_backbone_epochs, 1),
            "early_stopping_patience": None,
        }
    return recipe.model_copy(update=changes)


def run_arm(label: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one cross-validation, printing how long it took."""
    started = time.perf_counter()
    summary = run()
    folds = len(summary["folds"])
    seconds = time.perf_counter() - started
    print(f"  {label}: {folds} fold{'' if folds == 1 else 's'} in {seconds:.0f} s")
    return summary


def read_scores(out_dir: Path) -> dict[str, tuple[str, int, float]]:
    """``predictions.csv`` of a cross-validation: study -> (patient, label, score)."""
    with (out_dir / "predictions.csv").open(newline="") as handle:
        return {
            row["study_instance_uid"]: (
                row["patient_id"],
                int(float(row["target"])),
                float(row["score"]),
            )
            for row in csv.DictReader(handle)
        }


def paired_differences(
    a: dict[str, tuple[str, int, float]],
    b: dict[str, tuple[str, int, float]],
    *,
    n_resamples: int,
    studies: list[str] | None = None,
) -> dict[str, MetricCI]:
    """AUC and balanced accuracy of scores ``a`` minus those of ``b`` on the same studies.

    Both come from the same resamples of patients (a paired bootstrap), so the interval
    reflects the difference between the models, not the difference between test sets.
    """
    from imaging.evaluation.metrics import binary_scores, bootstrap_ci

    keys = sorted(studies if studies is not None else a.keys() & b.keys())
    patients = np.array([a[key][0] for key in keys])
    y = np.array([a[key][1] for key in keys])
    if any(b[key][1] != a[key][1] for key in keys):
        raise ValueError("the two runs disagree on the labels of the same studies")
    score_a = np.array([a[key][2] for key in keys])
    score_b = np.array([b[key][2] for key in keys])

    def difference(name: str) -> Callable[..., float]:
        def compute(yy: np.ndarray, pa: np.ndarray, pb: np.ndarray) -> float:
            return float(
                binary_scores(yy, pa, threshold=0.5)[name]
                - binary_scores(yy, pb, threshold=0.5)[name]
            )

        return compute

    return {
        name: bootstrap_ci(
            difference(name), y, score_a, score_b, groups=patients, n_resamples=n_resamples
        )
        for name in METRICS
    }


def format_ci(metric: dict[str, Any], *, signed: bool = False) -> str:
    """``value (95% CI low to high)`` of a ``MetricCI.to_dict()``, or ``undefined``."""
    if metric["value"] is None:
        return "undefined"
    sign = "+" if signed else ""
    text = f"{metric['value']:{sign}.3f}"
    if metric["low"] is None:
        return text
    level = f"{metric['confidence']:.0%}"
    return f"{text} ({level} CI {metric['low']:{sign}.3f} to {metric['high']:{sign}.3f})"


def check_wiring(pretrain: Path, finetune: Path, scratch: Path, names: list[str]) -> None:
    """Raise unless each fine-tune fold started from its own fold's pretraining checkpoint
    and fine-tune and scratch trained and validated on identical studies."""
    from imaging.training.crossval import FOLD_FILE, fold_dir

    for name in names:
        record = json.loads((fold_dir(finetune, name) / FOLD_FILE).read_text())
        expected = fold_dir(pretrain, name) / "best.pt"
        if Path(record["backbone_checkpoint"]) != expected:
            raise RuntimeError(f"{name}: fine-tune started from {record['backbone_checkpoint']}")
        tuned = json.loads((fold_dir(finetune, name) / "split.json").read_text())
        baseline = json.loads((fold_dir(scratch, name) / "split.json").read_text())
        if any(tuned[part] != baseline[part] for part in ("train", "val", "test")):
            raise RuntimeError(f"{name}: fine-tune and scratch used different studies")
        pretrained = json.loads((fold_dir(pretrain, name) / "split.json").read_text())
        if set(pretrained["train"]) & set(tuned["test"]):
            raise RuntimeError(f"{name}: the pretraining saw a test study")


def main(argv: list[str] | None = None) -> None:
    """Run the three arms leave-sites-out and print transfer against scratch."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    from imaging.training.crossval import cross_validate

    print(f"transfer learning, {SPLIT}: {BANNER}")
    with tempfile.TemporaryDirectory() as scratch_dir:
        work = Path(args.work) if args.work is not None else Path(scratch_dir)
        work.mkdir(parents=True, exist_ok=True)
        manifest = prepare_archive(args, work)
        resamples = 200 if args.quick else args.resamples
        runs = {arm: work / arm for arm in ("pretrain", "finetune", "scratch")}

        def evaluate(arm: str, recipe_name: str, **kwargs: Any) -> dict[str, Any]:
            recipe = bench_recipe(recipe_name, work, quick=args.quick, epochs=args.epochs)
            return cross_validate(
                recipe,
                manifest=manifest,
                split_kind=SPLIT,
                out_dir=runs[arm],
                progress=False,
                n_resamples=resamples,
                **kwargs,
            )

        pretrain = run_arm(
            "pretrain (brain age, all training patients)",
            partial(evaluate, "pretrain", "mri_age_pretrain"),
        )
        # Each fold's backbone comes from the same fold's pretraining run, not from the
        # recipe's single backbone_checkpoint (which may have seen that fold's test site).
        finetune = run_arm(
            "fine-tune (AD vs CN, labelled subset)",
            partial(evaluate, "finetune", "mri_ad_finetune", backbone_runs=runs["pretrain"]),
        )
        scratch = run_arm(
            "scratch (AD vs CN, labelled subset)", partial(evaluate, "scratch", "mri_ad_scratch")
        )
        names = [fold["fold"] for fold in finetune["folds"]]
        check_wiring(runs["pretrain"], runs["finetune"], runs["scratch"], names)
        print(
            "  wiring checked: each fold fine-tunes its own pretraining checkpoint; "
            "fine-tune and scratch share splits and labelled subsets"
        )

        age = pretrain["summaries"]["age"]["pooled"]["metrics"]
        print(f"\nproxy task, brain age MAE (years): {format_ci(age['mae'])}")
        labelled = [fold["train_studies"] for fold in finetune["folds"]]
        print(f"AD vs CN, labelled training studies per fold: {labelled}")
        for arm, summary in (("transfer", finetune), ("scratch", scratch)):
            pooled = summary["summaries"]["label"]["pooled"]
            print(
                f"  {arm:9s} AUC {format_ci(pooled['metrics']['auc'])}, balanced accuracy "
                f"{format_ci(pooled['metrics']['balanced_accuracy'])}, "
                f"{pooled['n_patients']} test patients"
            )
        gains = paired_differences(
            read_scores(runs["finetune"]), read_scores(runs["scratch"]), n_resamples=resamples
        )
        auc, accuracy = (format_ci(gains[m].to_dict(), signed=True) for m in METRICS)
        print(f"  transfer - scratch: AUC {auc}, balanced accuracy {accuracy}")
        print("  (paired bootstrap over patients: both arms on the same resampled patients)")
        print(f"\n{BANNER}")


if __name__ == "__main__":
    main()
