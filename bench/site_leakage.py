"""Site leakage: the same AD-vs-CN recipe under pooled random splits and leave-sites-out.

Sites differ in scanner, protocol and case mix (a memory clinic sees more Alzheimer's), so
a model can learn the site as a shortcut to the label. A pooled random split tests on
sites it trained on and rewards the shortcut; leave-sites-out tests each site with a
model that never saw it. The difference is the optimism that site leakage causes.

Arms on one archive, one recipe (patients never leak in either):

- ``pooled random``: the recipe's single patient-level split (20% of patients tested);
- ``leave-sites-out``: one fold per site, every patient tested once;
- ``patient-level k-fold`` with k = the number of sites: pooled like the first, but every
  patient tested once with as much training data per fold as leave-sites-out, so the
  paired comparison with leave-sites-out isolates the site effect.

Printed: AUC and balanced accuracy with 95% bootstrap CIs over patients per arm, and the
optimism (pooled - leave-sites-out) on the same studies with a paired bootstrap. Usage:

    python -m bench.site_leakage [--quick] [--archive DIR] [--work DIR] [--recipe NAME]

``--quick`` (about 2 minutes): 48 studies, 3 epochs, 200 resamples. Shares its archive
options and helpers with :mod:`bench.transfer_learning`.
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from bench.transfer_learning import (
    BANNER,
    METRICS,
    add_common_arguments,
    bench_recipe,
    format_ci,
    paired_differences,
    prepare_archive,
    read_scores,
    run_arm,
)

ARMS = ("pooled random", "leave-sites-out", "patient-level k-fold")


def main(argv: list[str] | None = None) -> None:
    """Evaluate the recipe under each split kind and print the optimism of pooled splits."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    add_common_arguments(parser)
    parser.add_argument("--recipe", default="mri_ad_tiny", help="An AD-vs-CN recipe name.")
    args = parser.parse_args(argv)
    from imaging.training.crossval import cross_validate
    from imaging.training.data import read_manifest

    print(f"site leakage, recipe {args.recipe}: {BANNER}")
    with tempfile.TemporaryDirectory() as scratch_dir:
        work = Path(args.work) if args.work is not None else Path(scratch_dir)
        work.mkdir(parents=True, exist_ok=True)
        manifest = prepare_archive(args, work)
        resamples = 200 if args.quick else args.resamples
        recipe = bench_recipe(args.recipe, work, quick=args.quick, epochs=args.epochs)
        sites = len({row["site_id"] for row in read_manifest(manifest, recipe.modality)})
        runs = {arm: work / arm.replace(" ", "-") for arm in ARMS}

        def evaluate(arm: str) -> dict[str, Any]:
            return cross_validate(
                recipe,
                manifest=manifest,
                split_kind=arm,
                k=sites,
                out_dir=runs[arm],
                progress=False,
                n_resamples=resamples,
            )

        summaries = {}
        for arm in ARMS:
            summaries[arm] = run_arm(arm, partial(evaluate, arm))
        print()
        for arm, summary in summaries.items():
            pooled = summary["summaries"]["label"]["pooled"]
            metrics = pooled["metrics"]
            print(
                f"  {arm:21s} AUC {format_ci(metrics['auc'])}, balanced accuracy "
                f"{format_ci(metrics['balanced_accuracy'])}, {pooled['n_patients']} test patients"
            )
        headline = {arm: summaries[arm]["summaries"]["label"]["pooled"]["metrics"] for arm in ARMS}
        gaps = [
            _difference(headline["pooled random"][m], headline["leave-sites-out"][m])
            for m in METRICS
        ]
        print(
            f"  optimism, pooled random - leave-sites-out (headline figures): AUC {gaps[0]}, "
            f"balanced accuracy {gaps[1]}"
        )
        scores = {arm: read_scores(runs[arm]) for arm in ARMS}
        lso = scores["leave-sites-out"]
        # Every study is tested once under leave-sites-out, so each pooled arm's test
        # studies have a leave-sites-out prediction to pair with.
        for arm in ("pooled random", "patient-level k-fold"):
            optimism = paired_differences(scores[arm], lso, n_resamples=resamples)
            auc, accuracy = (format_ci(optimism[m].to_dict(), signed=True) for m in METRICS)
            print(
                f"  paired, {arm} - leave-sites-out on its {len(scores[arm])} test studies: "
                f"AUC {auc}, balanced accuracy {accuracy}"
            )
        print("  (paired bootstrap over patients: both arms on the same resampled patients)")
        print(f"\n{BANNER}")


def _difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    if a["value"] is None or b["value"] is None:
        return "undefined"
    return f"{a['value'] - b['value']:+.3f}"


if __name__ == "__main__":
    main()
