"""Similar-case index: LanceDB ANN and FAISS HNSW against exact search, same data, same run.

Data: ``--n`` normalised 512-d float32 vectors from a Gaussian mixture with ``--centres``
centres (unit vectors) and isotropic noise, clustered like real embeddings (uniform random
vectors are a degenerate case where no approximate index reaches useful recall). Half the
rows are ``modality = 'MR'``, the filter of the filtered runs. Queries are new draws from
the same mixture.

Arms, each query one call, one thread, after one warm-up query:

- exact: FAISS flat inner-product search (the ground truth); filtered, a flat search over
  the matching rows;
- lance: :class:`multimodal_rag.index.CaseIndex` with its ANN index (embedded LanceDB on
  disk under a temporary directory), filters as a Lance prefilter;
- faiss-hnsw: :class:`multimodal_rag.index.FaissServingIndex` (HNSW, M=32) built from the
  same Lance table, filters as a row mask and id selector.

Figures: recall@10 against exact, p50 and p99 latency, queries per second, build time, and
ratios against exact search. Goal: recall@10 >= 0.95 at p50 <= 10 ms.

Usage:

    python -m bench.vector_index [--n 1000000] [--queries 200] [--centres 4000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

DIM = 512
K = 10
GOAL_RECALL = 0.95
GOAL_P50_MS = 10.0
MR_FILTER = {"modality": "MR"}


@dataclass(frozen=True)
class ArmResult:
    """One arm's figures, with or without the filter."""

    arm: str
    filtered: bool
    recall_at_10: float
    p50_ms: float
    p99_ms: float
    qps: float
    build_s: float


def clustered_vectors(
    n: int, centres: np.ndarray, noise: float, rng: np.random.Generator
) -> np.ndarray:
    """``n`` unit vectors: a random centre plus Gaussian noise of ``noise`` per dimension."""
    out = np.empty((n, centres.shape[1]), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        picks = rng.integers(0, len(centres), stop - start)
        block = (
            centres[picks]
            + rng.standard_normal((stop - start, centres.shape[1]), np.float32) * noise
        )
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def _timed(
    search: Callable[[np.ndarray], list[str]], queries: np.ndarray
) -> tuple[list[list[str]], np.ndarray]:
    search(queries[0])  # warm-up: caches, lazily loaded index files
    results, seconds = [], []
    for query in queries:
        start = time.perf_counter()
        results.append(search(query))
        seconds.append(time.perf_counter() - start)
    return results, np.asarray(seconds)


def _result(
    arm: str,
    filtered: bool,
    found: list[list[str]],
    truth: list[list[str]],
    seconds: np.ndarray,
    build_s: float,
) -> ArmResult:
    recall = float(
        np.mean([len(set(f[:K]) & set(t[:K])) / K for f, t in zip(found, truth, strict=True)])
    )
    return ArmResult(
        arm=arm,
        filtered=filtered,
        recall_at_10=recall,
        p50_ms=float(np.percentile(seconds, 50) * 1e3),
        p99_ms=float(np.percentile(seconds, 99) * 1e3),
        qps=float(len(seconds) / seconds.sum()),
        build_s=build_s,
    )


def run(
    n: int, queries: int, centres: int, noise: float, seed: int, workdir: Path
) -> list[ArmResult]:
    """Generate the data, build every arm and measure it; returns one result per arm and filter."""
    import faiss
    import lancedb
    import pyarrow as pa

    from multimodal_rag.index import CaseIndex, FaissServingIndex, HnswParams

    rng = np.random.default_rng(seed)
    centre_vectors = rng.standard_normal((centres, DIM), np.float32)
    centre_vectors /= np.linalg.norm(centre_vectors, axis=1, keepdims=True)
    start = time.perf_counter()
    vectors = clustered_vectors(n, centre_vectors, noise, rng)
    query_vectors = clustered_vectors(queries, centre_vectors, noise, rng)
    modality = np.where(rng.random(n) < 0.5, "MR", "US")
    case_ids = np.char.add("c", np.arange(n).astype(str))
    elapsed = time.perf_counter() - start
    print(f"data: {n} x {DIM} vectors, {centres} centres, noise {noise}: {elapsed:.1f} s")

    # Exact search: FAISS flat inner product, the ground truth.
    start = time.perf_counter()
    flat = faiss.IndexFlatIP(DIM)
    flat.add(vectors)
    mr_rows = np.flatnonzero(modality == "MR")
    flat_mr = faiss.IndexFlatIP(DIM)
    flat_mr.add(vectors[mr_rows])
    exact_build = time.perf_counter() - start

    def exact(query: np.ndarray) -> list[str]:
        return [case_ids[i] for i in flat.search(query[None, :], K)[1][0]]

    def exact_mr(query: np.ndarray) -> list[str]:
        return [case_ids[mr_rows[i]] for i in flat_mr.search(query[None, :], K)[1][0]]

    truth, exact_s = _timed(exact, query_vectors)
    truth_mr, exact_mr_s = _timed(exact_mr, query_vectors)
    results = [
        _result("exact", False, truth, truth, exact_s, exact_build),
        _result("exact", True, truth_mr, truth_mr, exact_mr_s, exact_build),
    ]

    # LanceDB: the case index's table and ANN index (the filterable columns and one
    # embedding; reports and thumbnails would only add I/O that no arm reads).
    uri = workdir / "case_index"
    table = pa.table(
        {
            "case_id": pa.array(case_ids),
            "patient_pseudonym": pa.array(case_ids),
            "modality": pa.array(modality),
            "label": pa.array(np.where(rng.random(n) < 0.3, "disease", "normal")),
            "site_id": pa.array(np.char.add("S", rng.integers(0, 8, n).astype(str))),
            "study_year": pa.array(rng.integers(2015, 2025, n).astype(np.int32)),
            "image_embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
        }
    )
    lancedb.connect(str(uri)).create_table("cases", table)
    del table
    index = CaseIndex.open(uri, embedding_dim=DIM, ann_threshold=1)
    start = time.perf_counter()
    index.build_ann_index(columns=("image_embedding",))
    lance_build = time.perf_counter() - start
    print(f"lance {index.ann.index_type} build: {lance_build:.1f} s")
    for filtered, ground in ((False, truth), (True, truth_mr)):
        where = MR_FILTER if filtered else None

        def lance(query: np.ndarray, w: dict[str, str] | None = where) -> list[str]:
            return index.search_ids(query, k=K, where=w)

        found, seconds = _timed(lance, query_vectors)
        results.append(_result("lance", filtered, found, ground, seconds, lance_build))

    # FAISS HNSW (M=32) built from the Lance table: the serving fallback.
    start = time.perf_counter()
    serving = FaissServingIndex.build(index, params=HnswParams(m=32))
    faiss_build = time.perf_counter() - start
    print(f"faiss hnsw build: {faiss_build:.1f} s")
    for filtered, ground in ((False, truth), (True, truth_mr)):
        where = MR_FILTER if filtered else None

        def hnsw(query: np.ndarray, w: dict[str, str] | None = where) -> list[str]:
            return [case_id for case_id, _ in serving.search_ids(query, k=K, where=w)]

        found, seconds = _timed(hnsw, query_vectors)
        results.append(_result("faiss-hnsw", filtered, found, ground, seconds, faiss_build))
    return results


def report(results: Sequence[ArmResult]) -> None:
    """Print every arm's figures and its ratios against exact search."""
    exact = {r.filtered: r for r in results if r.arm == "exact"}
    print(f"\n{'arm':<11}{'filter':<8}{'recall@10':>10}{'p50 ms':>9}{'p99 ms':>9}{'QPS':>9}"
          f"{'build s':>9}{'p50 vs exact':>14}{'goal':>6}")  # fmt: skip
    for r in results:
        speedup = exact[r.filtered].p50_ms / r.p50_ms
        goal = r.recall_at_10 >= GOAL_RECALL and r.p50_ms <= GOAL_P50_MS
        print(
            f"{r.arm:<11}{'MR' if r.filtered else '-':<8}{r.recall_at_10:>10.3f}"
            f"{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}{r.qps:>9.0f}{r.build_s:>9.1f}"
            f"{speedup:>13.1f}x{'yes' if goal else 'no':>6}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors in the index")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--centres", type=int, default=4000, help="Gaussian mixture centres")
    parser.add_argument("--noise", type=float, default=0.035, help="noise per dimension")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    print(f"vector index bench on {os.cpu_count()} CPU cores")
    with tempfile.TemporaryDirectory(prefix="mmdx-vector-bench-") as workdir:
        results = run(args.n, args.queries, args.centres, args.noise, args.seed, Path(workdir))
    report(results)
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
