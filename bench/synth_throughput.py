"""Sample-archive throughput: the parallel generator against a one-process baseline.

Baseline: ``workers=1`` (render and write every study in the calling process).
Candidate: ``workers=0`` (one worker process per core). Both generate the same
archive (same seed, same bytes), in the same run. Usage:

    python -m bench.synth_throughput [--mri N] [--echo N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from imaging.synthetic.archive import ArchiveSpec, generate_archive
from imaging.synthetic.brain import load_head_template


def _time_archive(out: Path, mri: int, echo: int, workers: int) -> float:
    # Each arm pays for building the brain template, as a fresh `mmdx synth` does.
    load_head_template.cache_clear()
    started = time.perf_counter()
    generate_archive(ArchiveSpec(out_dir=out, mri_studies=mri, echo_studies=echo, workers=workers))
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    """Print studies per second for baseline and candidate, and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mri", type=int, default=30)
    parser.add_argument("--echo", type=int, default=30)
    args = parser.parse_args(argv)
    studies = args.mri + args.echo
    with tempfile.TemporaryDirectory() as scratch:
        baseline = _time_archive(Path(scratch, "serial"), args.mri, args.echo, workers=1)
        candidate = _time_archive(Path(scratch, "parallel"), args.mri, args.echo, workers=0)
    print(f"synth {args.mri} MRI + {args.echo} echo studies (engineering figures)")
    print(f"  baseline  workers=1: {baseline:7.1f} s  {studies / baseline:6.2f} studies/s")
    print(f"  candidate workers=0: {candidate:7.1f} s  {studies / candidate:6.2f} studies/s")
    print(f"  speed-up (baseline time / candidate time): {baseline / candidate:.2f}x")


if __name__ == "__main__":
    main()
