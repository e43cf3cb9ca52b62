"""Many short series: one model each, fitted and scored in one process and on a local Ray (issue 25).

    python bench/series_scale.py [--series 10000] [--rows 128] [--detector knn] [--window 16] [--workdir DIR]

Writes N short series (a sine of its own phase and period, noise, a spike in every tenth series) as one
long Parquet file with a series column, then runs what a user runs, twice: ``normalcy fit FILE
--series-column id`` (one model per series, saved as a set) and ``normalcy predict MODEL FILE`` (one run
folder: scores, events, the report), in this process and with ``--ray local`` (one series a task, every
CPU). Checks that both runs hold the same scores and events and prints one table: seconds to fit and to
predict, series and rows per second. Ray's times include starting Ray and its workers; both include
reading the file (once per command) and writing the model folders and the run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from normalcy.errors import InputError


def write_series(path: Path, n_series: int, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    phase = rng.uniform(0, 2 * np.pi, n_series)
    period = rng.integers(8, 32, n_series)
    values = np.sin(2 * np.pi * t[None, :] / period[:, None] + phase[:, None]) + 0.05 * rng.normal(size=(n_series, rows))
    spiky = np.arange(n_series) % 10 == 0
    values[spiky, int(rows * 0.8)] += 4.0
    pq.write_table(pa.table({
        "time": np.tile(1_700_000_000 + 60 * t, n_series),
        "id": np.repeat(np.array([f"series-{k:05d}" for k in range(n_series)]), rows),
        "value": values.reshape(-1),
    }), path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series", type=int, default=10_000)
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--detector", default="knn")
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    try:  # checked first: the one-process row took its time, then the Ray row ended in a traceback
        import ray  # noqa: F401
    except ImportError:
        raise SystemExit("bench/series_scale.py times a local Ray too: "
                         "pip install 'normalcy[ray]' (with -c constraints.txt)") from None
    from normalcy import api

    work = args.workdir or Path(tempfile.mkdtemp(prefix="normalcy-series-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "series.parquet"
    write_series(data, args.series, args.rows)
    results = []
    for mode, ray in (("one process", None), ("ray local", "local")):
        t0 = time.perf_counter()
        model = api.fit(data, work / f"model-{ray or 'here'}", args.detector, series_column="id", window=args.window,
                        ray=ray, progress=False)
        t1 = time.perf_counter()
        run = api.predict(work / f"model-{ray or 'here'}", [data], work / f"run-{ray or 'here'}", ray=ray,
                          progress=False)
        t2 = time.perf_counter()
        results.append((mode, len(model), t1 - t0, t2 - t1, run))
    here, there = (work / "run-here", work / "run-local")
    for name in ("scores.csv", "events.csv"):
        same = (here / name).read_bytes() == (there / name).read_bytes()
        print(f"{name}: {'the same' if same else 'DIFFERENT'} in one process and on Ray")
    cpus = results[1][4].cpus
    print(f"\n{args.series} series x {args.rows} rows, detector {args.detector}, window {args.window}, "
          f"{os.cpu_count()} CPUs here (Ray: {cpus})\n")
    print(f"| mode | fitted | fit s | predict s | total s | series/s | rows/s | events |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for mode, fitted, fit_s, pred_s, run in results:
        total = fit_s + pred_s
        print(f"| {mode} | {fitted} | {fit_s:.1f} | {pred_s:.1f} | {total:.1f} | {args.series / total:.3g} | "
              f"{args.series * args.rows / total:.0f} | {run.n_events} |")


if __name__ == "__main__":
    try:
        main()
    except InputError as e:  # an unknown detector, a bad parameter: one line, as the CLI says it
        raise SystemExit(f"error: {e}") from None
