"""Why zero-shot MuSc stops near 0.83 on magnetic_tile, and whether its settings carry over.

Two tables, both through the `musc` detector's own code (features, mutual scoring, image
score, RsCIN):

1. **Clean-reference ceiling on magnetic_tile.** The same features and scoring rule, but each
   image is compared only with the *normal* test images (the labels pick them: a diagnostic,
   never a way to score). If MuSc's rule stayed far below PatchCore even then, the batch's
   defects are not what holds it back. The 1-nearest-image row shows what a rule without
   the interval average could reach with clean references, and the zero-shot row with the
   same rule shows why MuSc needs the interval: in this batch defects match other defects.
2. **Held-out zero-shot batches** (the settings were chosen on magnetic_tile's test set):
   elpv solar cells (the pip package elpv-dataset), 400 normal + 100 defective cells of
   each type, scored as one unlabeled batch with the default and with the plain maximum
   image score and RsCIN off.

    python bench/musc_ceiling.py          # about 6 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from normalcy.demo import build_elpv_dataset
from normalcy.detectors.musc import MuSc
from normalcy.evaluation.evaluate import run_eval
from normalcy.images.features import FeatureExtractor
from normalcy.images.io import load_dataset

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "magnetic_tile"
ONE_IMAGE = 1e-9  # an interval this small keeps exactly one image: the nearest


def _scores(det: MuSc, per_r: list[torch.Tensor], img: torch.Tensor, normal: np.ndarray, clean: bool) -> dict:
    """Image AUROC-ready scores for both image-score rules, with and without RsCIN."""
    if clean:  # normal images against the other normal ones, each defective one against all normal ones
        refs = [z[normal] for z in per_r]
        patch = torch.empty(per_r[0].shape[:2])
        patch[normal] = det.patch_scores(refs)
        for i in np.flatnonzero(~normal):
            patch[i] = det.patch_scores([z[i:i + 1] for z in per_r], refs)[0]
    else:
        patch = det.patch_scores(per_r)
    out = {}
    for rule in ("max", "max-median"):
        det.image_score = rule
        for k in (1, 8):
            det.rscin_k = k
            out[(rule, k)] = det.image_scores(patch, img)
    return out


def ceiling() -> None:
    ds = load_dataset(DATA)
    det = MuSc(FeatureExtractor())
    per_r, img, paths, _ = det.features([s.path for s in ds.test], progress=False)
    label_of = {s.path: s.label for s in ds.test}
    y = np.array([label_of[p] for p in paths])
    normal = y == 0
    print(f"magnetic_tile test set: {len(y)} images, {int((~normal).sum())} defective\n")
    print("| references of each image | nearest images averaged | max | max, RsCIN | max − median | "
          "max − median, RsCIN (default) |")
    print("|---|---|---:|---:|---:|---:|")
    for refs, interval, clean in (("the whole batch (zero-shot)", 0.3, False),
                                  ("the whole batch (zero-shot)", ONE_IMAGE, False),
                                  ("normal test images only (labels used)", 0.3, True),
                                  ("normal test images only (labels used)", ONE_IMAGE, True)):
        det.interval = interval
        s = _scores(det, per_r, img, normal, clean)
        cells = " | ".join(f"{roc_auc_score(y, s[key]):.3f}"
                           for key in (("max", 1), ("max", 8), ("max-median", 1), ("max-median", 8)))
        print(f"| {refs} | {'30%' if interval > ONE_IMAGE else '1 (the nearest)'} | {cells} |", flush=True)


def held_out() -> None:
    print("\n| batch (unlabeled, scored as one) | images | defective | default: max − median, RsCIN k = 8 | "
          "max, RsCIN off |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for cell in ("mono", "poly"):
            data = build_elpv_dataset(Path(tmp) / cell, cell, n_train=1, n_test=400, n_defective=100)
            ds = load_dataset(data)  # train/good (one cell) is never read: MuSc is zero-shot
            row = []
            for kwargs in ({}, {"image_score": "max", "rscin_k": 1}):
                m, _, _ = run_eval(ds, "musc", FeatureExtractor(), progress=False, detector_kwargs=kwargs)
                row.append(m["image_auroc"])
            n_bad = sum(s.label for s in ds.test)
            print(f"| elpv {cell} cells | {len(ds.test)} | {n_bad} | {row[0]:.3f} | {row[1]:.3f} |", flush=True)


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} not found: this benchmark needs ../shared/data/magnetic_tile")
    ceiling()
    held_out()
    print(f"\nCommand: python {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
