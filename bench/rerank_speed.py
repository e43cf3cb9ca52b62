"""How long one re-rank takes after a label (normalcy.ranking), for the review UI's < 1 s budget.

    python bench/rerank_speed.py [--quick] [--runs 3]

For N in (10,000, 100,000) objects, D in (256, 1,280) feature dimensions, 10 / 100 / 500 labels
and the `neighbour` and `protege` strategies, times ``rank()``: the median of ``--runs`` calls
after one warm-up call (the warm-up also fills the per-array projection cache, whose one-off cost
is reported separately, as the first call on a new features array). Features are seeded random
clusters (float32); the person likes two of the twelve clusters (user score 4-5) and not the
others (0-1). Prints markdown tables plus the thread and CPU counts it ran with. ``--quick`` runs
N = 10,000 only, with 10 and 500 labels.

The budget is stated for 2 cores: on a bigger machine pin it, e.g. ``taskset -c 0,1``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

from normalcy import ranking


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def thread_info() -> str:
    from threadpoolctl import threadpool_info

    try:
        import torch

        torch_threads = str(torch.get_num_threads())
    except ImportError:
        torch_threads = "n/a (torch not installed)"

    blas = sorted({f"{i['internal_api']}={i['num_threads']}" for i in threadpool_info()})
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return (f"CPU: {cpu_model()}; os.cpu_count()={os.cpu_count()}, usable CPUs={usable}; "
            f"torch threads={torch_threads}; BLAS/OpenMP thread pools: {', '.join(blas)}")


def make_data(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features (12 Gaussian clusters, float32), anomaly scores and each row's cluster."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, (12, d)).astype(np.float32) * 2.0
    cluster = rng.integers(0, 12, n)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x += centres[cluster]
    anomaly = np.linalg.norm(centres[cluster], axis=1) + rng.random(n)
    return x, anomaly, cluster


def labels(rng: np.random.Generator, cluster: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    idx = rng.choice(len(cluster), k, replace=False)
    liked = np.isin(cluster[idx], (0, 1))
    user = np.where(liked, rng.integers(4, 6, k), rng.integers(0, 2, k)).astype(np.float64)
    return idx, user


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="N = 10,000 only, 10 and 500 labels")
    ap.add_argument("--runs", type=int, default=3, help="timed calls per cell (median reported)")
    args = ap.parse_args()
    sizes = (10_000,) if args.quick else (10_000, 100_000)
    dims = (256, 1280)
    counts = (10, 500) if args.quick else (10, 100, 500)
    strategies = ("neighbour", "protege")

    print(thread_info())
    print(f"load average before: {os.getloadavg()[0]:.2f}\n")
    rows, cold = [], []
    for n in sizes:
        for d in dims:
            x, anomaly, cluster = make_data(n, d)
            rng = np.random.default_rng(1)
            for k in counts:
                idx, user = labels(rng, cluster, k)
                for name in strategies:
                    ranker = ranking.make_ranker(name)
                    t = time.perf_counter()
                    priority = ranker.rank(x, anomaly, idx, user)  # warm-up
                    first = time.perf_counter() - t
                    if not cold or cold[-1][:2] != (n, d):
                        cold.append((n, d, name, first))
                    times = []
                    for _ in range(args.runs):
                        t = time.perf_counter()
                        priority = ranker.rank(x, anomaly, idx, user)
                        times.append(time.perf_counter() - t)
                    assert priority.shape == (n,) and np.isfinite(priority).all()
                    rows.append((name, n, d, k, statistics.median(times)))
                    print(f"  {name:9s} N={n:>7,} D={d:>5} labels={k:>3}: {rows[-1][-1]:.3f} s", flush=True)
            del x
    print(f"\nload average after: {os.getloadavg()[0]:.2f}\n")
    print("| strategy | N | D | labels | median seconds |")
    print("|---|---:|---:|---:|---:|")
    for name, n, d, k, sec in sorted(rows, key=lambda r: (r[0] != "neighbour", r[1], r[2], r[3])):
        print(f"| {name} | {n:,} | {d:,} | {k} | {sec:.3f} |")
    print("\nFirst rank() on a new features array (includes the one-off projection to 64 dims, cached):\n")
    print("| N | D | strategy of that call | seconds |")
    print("|---:|---:|---|---:|")
    for n, d, name, sec in cold:
        print(f"| {n:,} | {d:,} | {name} | {sec:.3f} |")
    worst = max(rows, key=lambda r: r[-1])
    print(f"\nslowest: {worst[0]} N={worst[1]:,} D={worst[2]} labels={worst[3]}: {worst[4]:.3f} s "
          f"({'within' if worst[4] < 1.0 else 'OVER'} the 1 s budget)")


if __name__ == "__main__":
    main()
