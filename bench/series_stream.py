"""Streaming cost per row: each series detector fitted on the probationary rows of NAB files, then fed the
rest one row at a time, as a monitoring loop feeds it (issue 25: <= 100 us a row for the subsequence
detectors).

    python bench/series_stream.py ../shared/data/nab [--files 4] [--rows 2000] [--detectors knn,pca,auto]

``--rows 0``: every row after each file's probationary period (a learning kNN's bank grows to 20,000
windows on NAB's long files, and its cost with it); ``--files 0``: every file.

Two ways per detector, both one row per call:

- ``score_one``: the fitted model scores the row from its past (nothing learned);
- ``Stream.update``: ``normalcy.series.stream.Stream`` scores the row, calibrates it to [0, 1] and learns
  it (the detector itself every ``learn_every`` = 128 rows, as bench/nab.py runs it).

Files: the first ``--files`` of NAB's corpus in its order with at least probation + ``--rows`` rows; one
thread for torch and faiss (what each series gets when many run side by side). Prints one table of
microseconds per row (median and slowest over files) and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from normalcy.errors import InputError  # noqa: E402
from normalcy.evaluation import nab  # noqa: E402
from normalcy.series import registry  # noqa: E402
from normalcy.series.stream import Stream  # noqa: E402


def per_row_us(name: str, f: nab.NabFile, rows: int) -> tuple[float, float]:
    """(score_one, Stream.update) microseconds a row on one file."""
    X, p = f.values.reshape(-1, 1), f.probation
    det = registry.create(name).fit(X[:p], progress=False)
    live = X[p:p + rows] if rows else X[p:]
    det.reset_stream()
    for row in X[max(0, p - det.context):p]:  # the past the first live row needs
        det.score_one(row)
    start = time.perf_counter()
    for row in live:
        det.score_one(row)
    one = (time.perf_counter() - start) / len(live) * 1e6
    stream = Stream(registry.create(name).fit(X[:p], progress=False), past=X[:p])
    start = time.perf_counter()
    for row in live:
        stream.update(row)
    upd = (time.perf_counter() - start) / len(live) * 1e6
    return one, upd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path, help="the NAB folder (data/, labels/)")
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--rows", type=int, default=2000, help="live rows timed per file (0: all)")
    ap.add_argument("--detectors", default=",".join(registry.DETECTORS))
    args = ap.parse_args()
    import faiss
    import torch

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    corpus = nab.load_corpus(args.root)
    files = [f for f in corpus.files.values() if len(f.values) >= f.probation + args.rows]
    files = files[:args.files] if args.files else files
    out = {}
    shown = ", ".join(f.name for f in files) if len(files) <= 4 else f"{files[0].name}, ..."
    print(f"{len(files)} NAB files ({shown}), {args.rows or 'all'} live rows each\n")
    print("| detector | score_one us/row (median / slowest file) | Stream.update us/row, learning (median / slowest) "
          "| slowest file | files over 100 us (update) |")
    print("|---|---|---|---|---|")
    for name in args.detectors.split(","):
        got = []
        for f in files:
            got.append(per_row_us(name, f, args.rows))
            print(f"  {name} {f.name}: score_one {got[-1][0]:.0f} us, update {got[-1][1]:.0f} us", file=sys.stderr)
        got = np.array(got)
        one, upd = np.median(got, axis=0)
        worst = int(got[:, 1].argmax())
        out[name] = {"score_one_us": round(float(one), 1), "update_us": round(float(upd), 1),
                     "score_one_us_max": round(float(got[:, 0].max()), 1),
                     "update_us_max": round(float(got[worst, 1]), 1), "slowest": files[worst].name,
                     "files_over_100us": int((got[:, 1] > 100).sum())}
        print(f"| {name} | {one:.0f} / {got[:, 0].max():.0f} | {upd:.0f} / {got[worst, 1]:.0f} | "
              f"{files[worst].name} | {int((got[:, 1] > 100).sum())} of {len(files)} |", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        main()
    except InputError as e:  # a folder not found or not in its layout: one line, as the CLI says it
        raise SystemExit(f"error: {e}") from None
