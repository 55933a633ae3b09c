"""``make fuzz``: mutate the seeds for a while, round-robin over the targets, keep findings.

    python -m tests.fuzz.run --seconds 300 --out fuzz-findings [--target NAME] [--seed S]

Each finding (crash, hang, heap peak over the limit) is written to OUT/TARGET/ID.bin with
a .txt beside it; copy the .bin into tests/fuzz/regressions/TARGET/ once fixed, and the
test suite replays it from then on. Exit status 1 when anything was found.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

from tests.fuzz.harness import build_targets, check, mutate, warm_up
from tests.fuzz.seeds import fuzz_seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=Path("fuzz-findings"))
    parser.add_argument("--target", action="append", help="Only these targets (repeatable).")
    parser.add_argument("--seed", type=int, default=None, help="Random seed (default: time).")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # pydicom warns on every odd value; that is the point
    seed = args.seed if args.seed is not None else time.time_ns()
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as folder:
        seeds, slices = fuzz_seeds(Path(folder))
        targets = build_targets(seeds, slices)
        warm_up(targets)
        names = args.target or sorted(targets)
        verdicts: dict[str, Counter[str]] = {name: Counter() for name in names}
        findings = 0
        deadline = time.monotonic() + args.seconds
        started = time.monotonic()
        while time.monotonic() < deadline:
            for name in names:
                target = targets[name]
                data = mutate(rng.choice(target.seeds), rng)
                outcome = check(target, data)
                verdicts[name][outcome.verdict] += 1
                if outcome.is_finding:
                    findings += 1
                    _keep(args.out / name, data, outcome.verdict, outcome.detail)
    elapsed = time.monotonic() - started
    runs = sum(sum(counter.values()) for counter in verdicts.values())
    print(
        json.dumps(
            {
                "seed": seed,
                "seconds": round(elapsed, 1),
                "runs": runs,
                "runs_per_s": round(runs / elapsed, 1) if elapsed else None,
                "verdicts": {name: dict(counter) for name, counter in verdicts.items()},
                "findings": findings,
                "findings_dir": str(args.out) if findings else None,
            },
            indent=2,
        )
    )
    return 1 if findings else 0


def _keep(folder: Path, data: bytes, verdict: str, detail: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(data).hexdigest()[:16]
    (folder / f"{name}.bin").write_bytes(data)
    (folder / f"{name}.txt").write_text(f"{verdict}\n{detail}\n")


if __name__ == "__main__":
    raise SystemExit(main())
