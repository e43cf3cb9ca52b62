"""How PatchCore's memory-bank size trades accuracy for speed on magnetic_tile.

    python bench/patchcore_bank.py [--sizes 1000 2500 8000] [--data ../shared/data/magnetic_tile]

Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from normalcy.data import load_dataset
from normalcy.evaluate import run_eval

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", type=int, default=[1000, 2500, 8000])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "magnetic_tile")
    args = ap.parse_args()
    ds = load_dataset(args.data)
    print("| max_bank | image AUROC | pixel AUROC | AUPRO | fit s | images/s |")
    print("|---|---|---|---|---|---|")
    for n in args.sizes:
        m, _, _ = run_eval(ds, "patchcore", progress=False, detector_kwargs={"max_bank": n}, latency_images=0)
        print(f"| {n} | {m['image_auroc']:.3f} | {m['pixel_auroc']:.3f} | {m['aupro']:.3f} | "
              f"{m['fit_seconds']:.1f} | {m['images_per_second']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
