"""Detector settings, chosen on development data only: never on the test set they are reported on.

    python bench/settings_study.py [--detector patchcore|gaussian|simplenet] [--data ../shared/data/magnetic_tile]

Development data, each a different kind of evidence:

* a synthetic-defect validation split of ``--data``'s normal training images: 20 % of train/good
  is held out and a synthetic defect is planted in a copy of each held-out image (normalcy/validation.py);
* elpv solar cells (pip package elpv-dataset), mono and poly: 300 normal cells to fit on, 150 other
  normal and 150 defective cells to score. Real cracks and dark regions, and none of them in ``--data``.

The setting with the best mean development AUROC is the choice. The test AUROC of every setting on
``--data`` (fitted on all of train/good) is printed beside it only to report what the choice gives,
never to choose. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from normalcy.demo import build_elpv_dataset
from normalcy.detectors import create
from normalcy.errors import InputError
from normalcy.evaluation.metrics import image_metrics
from normalcy.evaluation.validation import synthetic_split, validation_auroc
from normalcy.images.features import FeatureExtractor
from normalcy.images.io import load_dataset

ROOT = Path(__file__).resolve().parents[1]
SETTINGS: dict[str, list[tuple[str, dict, dict]]] = {"patchcore": [  # (label, extractor, detector arguments)
    ("default (224 px, paper's 10 % coreset, IVF search, 3x3 neighbourhood)", {}, {}),
    ("bank <= 2,500 of 200,000 patches (the default until 3 December 2026)", {}, {"max_bank": 2500, "max_pool": 200_000}),
    ("1 % coreset", {}, {"coreset_ratio": 0.01}),
    ("bank <= 10,000", {}, {"max_bank": 10_000}),
    ("256 px", {"image_size": 256}, {}),
    ("5x5 neighbourhood", {"aggregate": 5}, {}),
    ("no re-weighting (b = 1)", {}, {"reweight_neighbours": 1}),
    ("standardized channels", {}, {"standardize": True}),
    ("standardized channels, 5x5 neighbourhood", {"aggregate": 5}, {"standardize": True}),
    ("EfficientNet-Lite1 backbone", {"backbone": "efficientnet_lite1"}, {}),
    ("EfficientNet-Lite2 backbone", {"backbone": "efficientnet_lite2"}, {}),
], "gaussian": [
    ("default (pool grid 4)", {}, {}),
    ("pool grid 2", {"pool_grid": 2}, {}),
    ("pool grid 1 (Rippel et al.: whole-image average)", {"pool_grid": 1}, {}),
    ("192 px (the fast path, issue 13)", {"image_size": 192}, {}),
    ("160 px (the fast path, issue 13)", {"image_size": 160}, {}),
    ("EfficientNet-Lite2 backbone", {"backbone": "efficientnet_lite2"}, {}),
], "simplenet": [  # trained for 120 s each (the default budget is 600 s): four fits a setting
    ("default (EfficientNet-Lite0), 120 s", {}, {"time_budget": 120}),
    ("EfficientNet-Lite2 backbone, 120 s", {"backbone": "efficientnet_lite2"}, {"time_budget": 120}),
]}


class CachedExtractor(FeatureExtractor):
    """Features are deterministic: each image set is read and run through the backbone once per extractor
    setting, and every detector setting after the first reuses them (keeps the study to minutes)."""

    _cache: dict = {}

    def iter_batches(self, paths, batch_size=32, keep_images=True, pooled=True, features=True):
        key = (tuple(paths), batch_size, pooled, features, self.spec.name, self.patch_levels, self.aggregate,
               self.size, self.pool_grid)
        if key not in self._cache:
            self._cache[key] = list(super().iter_batches(paths, batch_size, True, pooled, features))
        return iter(self._cache[key])


def test_auroc(det, ds) -> float:
    res = det.score([s.path for s in ds.test], progress=False)
    label_of = {s.path: s.label for s in ds.test}
    return image_metrics(np.array([label_of[p] for p in res.paths]), res.scores)["image_auroc"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--detector", choices=sorted(SETTINGS), default="patchcore")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "magnetic_tile")
    ap.add_argument("--only", nargs="*", help="labels (prefixes) of the settings to run; default all")
    args = ap.parse_args()
    unmatched = [o for o in args.only or [] if not any(s[0].startswith(o) for s in SETTINGS[args.detector])]
    if unmatched:  # it ran the rest (minutes), or none and ended in max()'s ValueError after building the sets
        ap.error(f"--only {unmatched[0]!r} starts no {args.detector} setting's label: "
                 + "; ".join(repr(s[0]) for s in SETTINGS[args.detector]))
    ds = load_dataset(args.data)
    settings = [s for s in SETTINGS[args.detector] if not args.only or any(s[0].startswith(o) for o in args.only)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        split = synthetic_split(ds.train, Path(tmp) / "split")
        elpv = {kind: load_dataset(build_elpv_dataset(Path(tmp) / kind, kind, n_train=300, n_test=150))
                for kind in ("mono", "poly")}
        for label, ex_kw, kw in settings:
            t = time.perf_counter()
            ex = CachedExtractor(**ex_kw)
            dev = [validation_auroc(create(args.detector, ex, **kw).fit(split.fit, progress=False), split)]
            for cells in elpv.values():
                dev.append(test_auroc(create(args.detector, ex, **kw)
                                      .fit(cells.train, progress=False), cells))
            auroc = test_auroc(create(args.detector, ex, **kw)
                               .fit(ds.train, progress=False), ds)
            rows.append((label, dev, auroc, time.perf_counter() - t))
            print(f"{label}: development {' '.join(f'{d:.3f}' for d in dev)}, test {auroc:.3f}", flush=True)
    best = max(rows, key=lambda r: np.mean(r[1]))
    print(f"\nchosen on development data: {best[0]}\n")
    print(f"| setting | {ds.name} validation (synthetic) | elpv mono | elpv poly | development mean "
          f"| {ds.name} test image AUROC | s |")
    print("|---|---|---|---|---|---|---|")
    for label, dev, auroc, s in rows:
        mark = " (chosen)" if label == best[0] else ""
        print(f"| {label}{mark} | {' | '.join(f'{d:.3f}' for d in dev)} | {np.mean(dev):.3f} | {auroc:.3f} | {s:.0f} |")


if __name__ == "__main__":
    try:
        main()
    except InputError as e:  # a data set not found or not readable: one line, as the CLI says it
        raise SystemExit(f"error: {e}") from None
