"""What ``normalcy watch`` costs a row: CSV lines parsed, scored online by ``Stream``, learned and written
out, as a monitoring pipe runs it (``normalcy watch MODEL -``), against ``Stream.update`` on the same rows
already parsed (bench/series_stream.py's figure).

    python bench/series_watch.py [--rows 50000] [--metrics 2] [--detectors knn,auto]

Data: a noisy sine (period 126 rows) of ``--metrics`` metrics, the first 3,000 rows fitted on, then ``--rows``
more watched. One thread for torch and faiss. Prints one table and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from normalcy.errors import InputError  # noqa: E402
from normalcy.series import registry  # noqa: E402
from normalcy.series.stream import Stream  # noqa: E402
from normalcy.series.watch import watch  # noqa: E402

FIT_ROWS = 3000


def series(n: int, d: int, seed: int = 0) -> np.ndarray:
    t = np.arange(n)[:, None]
    return np.sin(t / 20 + np.arange(d)) + 0.1 * np.random.default_rng(seed).standard_normal((n, d))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--metrics", type=int, default=2)
    ap.add_argument("--detectors", default="knn,auto")
    args = ap.parse_args()
    import faiss
    import torch

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    X = series(FIT_ROWS + args.rows, args.metrics)
    live = X[FIT_ROWS:]
    names = [f"m{j}" for j in range(args.metrics)]
    text = "timestamp," + ",".join(names) + "\n" + "".join(
        f"{60 * i}," + ",".join(f"{v:.6f}" for v in row) + "\n" for i, row in enumerate(live))
    print(f"{args.rows} rows of {args.metrics} metric(s) watched, {FIT_ROWS} fitted on\n")
    print("| detector | watch: us a row (parse, score, learn, write) | Stream.update: us a row | alarms |")
    print("|---|---|---|---|")
    out = {}
    for name in args.detectors.split(","):
        det = registry.create(name).fit(X[:FIT_ROWS], progress=False)
        det.columns_ = tuple(names)
        start = time.perf_counter()
        summary = watch(det, io.StringIO(text), io.StringIO())
        per_row = (time.perf_counter() - start) / args.rows * 1e6
        det = registry.create(name).fit(X[:FIT_ROWS], progress=False)
        stream = Stream(det)
        start = time.perf_counter()
        for row in live:
            stream.update(row)
        upd = (time.perf_counter() - start) / args.rows * 1e6
        out[name] = {"watch_us": round(per_row, 1), "update_us": round(upd, 1), "alarms": summary.alarms}
        print(f"| {name} | {per_row:.0f} | {upd:.0f} | {summary.alarms} |", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        main()
    except InputError as e:  # an unknown detector, a bad parameter: one line, as the CLI says it
        raise SystemExit(f"error: {e}") from None
