"""What storing review embeddings costs `predict`, per detector.

    python bench/predict_embeddings.py [--data ../shared/data/magnetic_tile] [--detectors efficientad draem gaussian]

`predict` stores image embeddings (for review re-ranking) by default only for detectors that run
the backbone anyway; EfficientAD and DRAEM never do, and `serve` computes missing embeddings later.
This fits each detector (trained ones with a short budget: speed does not depend on training time),
then streams the test set through `iter_score` with and without embeddings, the faster of two passes
each, end to end (read, score, map at original size). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from normalcy.detectors import DETECTORS, create
from normalcy.errors import InputError
from normalcy.images.features import FeatureExtractor
from normalcy.images.io import load_dataset

ROOT = Path(__file__).resolve().parents[1]


def images_per_second(det, paths: list[Path], embeddings: bool) -> float:
    best = 0.0
    for _ in range(2):
        t = time.perf_counter()
        n = sum(1 for _ in det.iter_score(paths, embeddings=embeddings))
        best = max(best, n / (time.perf_counter() - t))
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "magnetic_tile")
    ap.add_argument("--detectors", nargs="+", default=["efficientad", "draem", "gaussian"])
    ap.add_argument("--train-budget", type=float, default=30.0)
    args = ap.parse_args()
    ds = load_dataset(args.data)
    paths = [s.path for s in ds.test]
    print("| detector | images/s without embeddings | with embeddings | default in predict |")
    print("|---|---|---|---|")
    for name in args.detectors:
        kwargs = {"time_budget": args.train_budget} if "time_budget" in DETECTORS[name].Params.model_fields else {}
        det = create(name, FeatureExtractor(), **kwargs).fit(ds.train, progress=False)
        off, on = images_per_second(det, paths, False), images_per_second(det, paths, True)
        default = "with" if det.uses_features else "without"
        print(f"| {name} | {off:.1f} | {on:.1f} | {default} |", flush=True)


if __name__ == "__main__":
    try:
        main()
    except InputError as e:  # a data set not found or not readable: one line, as the CLI says it
        raise SystemExit(f"error: {e}") from None
