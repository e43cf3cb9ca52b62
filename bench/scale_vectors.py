"""A million feature vectors: fit, then score in one process and on a local Ray (issue 12).

    python bench/scale_vectors.py [--rows 1000000] [--dims 512] [--detector knn] [--workdir /tmp/scale]

Writes N clustered rows (64 Gaussian clusters) as one Parquet table, fits a table detector (default knn,
which past its 1 GB budget keeps IVF-PQ codes: its search is the part of scoring that costs; ``--detector
ensemble`` for the tables' default, gaussian + knn) on them, then
scores the same table twice: in this process (``normalcy.vectors.tables.score_table``, what ``normalcy predict``
does) and on a local Ray with every CPU (``normalcy.scale.distributed.predict_ray``, what ``--ray local`` does),
checks that both give the same scores, and prints rows/s for each. Ray's time includes starting its
workers and loading the model in each; the one-process time includes reading the table.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from knn_pq import index_nbytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dims", type=int, default=512)
    ap.add_argument("--detector", default="knn")
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    try:  # checked first: the one-process row took its time, then the Ray row ended in a traceback
        import ray  # noqa: F401
    except ImportError:
        raise SystemExit("bench/scale_vectors.py times a local Ray too: "
                         "pip install 'normalcy[ray]' (with -c constraints.txt)") from None
    work = args.workdir or Path(tempfile.mkdtemp(prefix="normalcy-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    from normalcy.scale.distributed import RESULTS, predict_ray
    from normalcy.vectors.tables import (
        fit_table,
        read_table,
        save_vector_model,
        score_table,
    )

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(64, args.dims)).astype(np.float32) * 3
    X = centres[rng.integers(0, 64, args.rows)]
    X += rng.normal(size=X.shape).astype(np.float32)
    path = work / "vectors.parquet"
    pq.write_table(pa.table({f"f{j}": X[:, j] for j in range(args.dims)}), path)
    del X

    t = time.perf_counter()
    table = read_table(path)
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    det, _ = fit_table(table, args.detector)
    fit_s = time.perf_counter() - t
    save_vector_model(det, args.detector, table.columns, work / "model")
    t = time.perf_counter()
    scores, mask, _ = score_table(det, table)
    one_s = time.perf_counter() - t + read_s  # the same table, read once above
    del table

    shutil.rmtree(work / "ray", ignore_errors=True)
    t = time.perf_counter()
    (run,) = predict_ray(work / "model", [path], work / "ray", "local")
    ray_s = time.perf_counter() - t
    got = pq.read_table(work / "ray" / RESULTS, columns=["score"]).column("score").to_numpy()
    same = bool(np.array_equal(got, scores))
    knn = det if args.detector == "knn" else None
    index = "" if knn is None else f"; knn index {'IVF-PQ' if knn.codes_.size else 'exact'} ({index_nbytes(knn) / 2**20:.0f} MB)"
    print(f"{args.rows:,} rows x {args.dims}, {args.detector}{index}; fit {fit_s:.0f} s (one process); peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; same scores: {same}\n")
    print("| scoring | seconds | rows/s |\n|---|---|---|")
    print(f"| one process (read + score) | {one_s:.0f} | {args.rows / one_s:,.0f} |")
    print(f"| Ray local, {run['cpus']} CPUs (start + read + score + write) | {ray_s:.0f} | {args.rows / ray_s:,.0f} |")
    if args.workdir is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
