"""Detector settings, chosen on normal training images only (synthetic-defect validation).

    python bench/settings_study.py [--detector patchcore|gaussian] [--data ../shared/data/magnetic_tile]

Holds out 20 % of train/good, plants a synthetic defect in a copy of each held-out image
(normalcy/validation.py), fits the detector with each setting on the other 80 % and measures the
image AUROC of held-out normal against defective copies. The setting with the best validation
AUROC is the choice; the test AUROC of every setting (fitted on all of train/good) is printed
beside it only to report what the choice gives, never to choose. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from normalcy.data import load_dataset
from normalcy.detectors import create
from normalcy.features import FeatureExtractor
from normalcy.metrics import image_metrics
from normalcy.validation import synthetic_split, validation_auroc

ROOT = Path(__file__).resolve().parents[1]
SETTINGS: dict[str, list[tuple[str, dict, dict]]] = {"patchcore": [  # (label, extractor, detector arguments)
    ("default (224 px, bank <= 2,500, 3x3 neighbourhood)", {}, {}),
    ("bank <= 10,000", {}, {"max_bank": 10_000}),
    ("1 % coreset, no cap", {}, {"coreset_ratio": 0.01, "max_bank": 1_000_000}),
    ("256 px", {"image_size": 256}, {}),
    ("320 px", {"image_size": 320}, {}),
    ("5x5 neighbourhood", {"aggregate": 5}, {}),
    ("no re-weighting (b = 1)", {}, {"reweight_neighbours": 1}),
], "gaussian": [
    ("default (pool grid 4)", {}, {}),
    ("pool grid 2", {"pool_grid": 2}, {}),
    ("pool grid 1 (Rippel et al.: whole-image average)", {"pool_grid": 1}, {}),
]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--detector", choices=sorted(SETTINGS), default="patchcore")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "magnetic_tile")
    args = ap.parse_args()
    ds = load_dataset(args.data)
    test = [s.path for s in ds.test]
    label_of = {s.path: s.label for s in ds.test}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        split = synthetic_split(ds.train, Path(tmp))
        for label, ex_kw, pc_kw in SETTINGS[args.detector]:
            ex = FeatureExtractor(**ex_kw)
            t = time.perf_counter()
            val = validation_auroc(create(args.detector, ex, **pc_kw).fit(split.fit, progress=False), split)
            det = create(args.detector, ex, **pc_kw).fit(ds.train, progress=False)
            fit_s = time.perf_counter() - t
            res = det.score(test, progress=False)
            auroc = image_metrics(np.array([label_of[p] for p in res.paths]), res.scores)["image_auroc"]
            rows.append((label, val, auroc, fit_s))
            print(f"{label}: validation {val:.3f}, test {auroc:.3f}", flush=True)
    best = max(rows, key=lambda r: r[1])
    print(f"\nchosen on validation: {best[0]}\n")
    print("| setting | validation AUROC (synthetic defects) | test image AUROC | fit + validation s |")
    print("|---|---|---|---|")
    for label, val, auroc, s in rows:
        mark = " (chosen)" if label == best[0] else ""
        print(f"| {label}{mark} | {val:.3f} | {auroc:.3f} | {s:.0f} |")


if __name__ == "__main__":
    main()
