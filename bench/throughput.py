"""Scoring throughput of several detectors in the same run, at the same image size.

    python bench/throughput.py [--data ../shared/data/magnetic_tile] [--size 256] \
        [--detectors patchcore efficientad] [--train-budget 60]

Fits each detector (trained ones with a short budget: throughput does not depend on how
long a network was trained), then scores the whole test set twice and reports the faster
pass, end to end (read, features, score, map at original size). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from normalcy.detectors import DETECTORS, create
from normalcy.images.features import FeatureExtractor
from normalcy.images.io import load_dataset

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "magnetic_tile")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--detectors", nargs="+", default=["patchcore", "efficientad"])
    ap.add_argument("--train-budget", type=float, default=60.0)
    args = ap.parse_args()
    ds = load_dataset(args.data)
    paths = [s.path for s in ds.test]
    rows = []
    for name in args.detectors:
        kwargs = {}
        if "time_budget" in DETECTORS[name].Params.model_fields:
            kwargs["time_budget"] = args.train_budget
        det = create(name, FeatureExtractor(image_size=args.size), **kwargs).fit(ds.train, progress=False)
        best = 0.0
        for _ in range(2):
            t = time.perf_counter()
            det.score(paths, progress=False)
            best = max(best, len(paths) / (time.perf_counter() - t))
        rows.append((name, best))
    base = rows[0][1]
    print(f"| detector | images/s at {args.size} px | vs {rows[0][0]} |")
    print("|---|---|---|")
    for name, ips in rows:
        print(f"| {name} | {ips:.1f} | {ips / base:.2f}x |")


if __name__ == "__main__":
    main()
