"""PatchCore's memory bank on magnetic_tile: bank size, exact against IVF search, speed.

    python bench/patchcore_bank.py [--data ../shared/data/magnetic_tile] [--nprobe 4 8 16]

Fits twice: with the old default cap of 2,500 bank patches, and with the paper's 10 % coreset of all
patches (the default since 3 December 2026; tens of thousands of patches, searched with a faiss IVF
index). The 10 % bank is then scored with several ``nprobe`` values and with exact search on the same
bank, which gives the IVF's recall@1 (same nearest bank patch as exact search, over every patch of
the test images), the mean relative error of its nearest distances, and its AUROC change.
Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import faiss
import numpy as np

from normalcy.detectors import create
from normalcy.errors import InputError
from normalcy.evaluation.evaluate import peak_rss_mb, pixel_inputs
from normalcy.evaluation.metrics import evaluate
from normalcy.images.io import load_dataset

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "magnetic_tile")
    ap.add_argument("--nprobe", nargs="+", type=int, default=[4, 8, 16])
    ap.add_argument("--recall-images", type=int, default=50, help="test images whose patches measure recall")
    args = ap.parse_args()
    ds = load_dataset(args.data)
    paths = [s.path for s in ds.test]
    label_of = {s.path: s.label for s in ds.test}
    print(f"| bank | search | recall@1 | distance error | image AUROC | pixel AUROC | AUPRO | fit s | images/s |")
    print("|---|---|---|---|---|---|---|---|---|")

    def row(det, bank: str, search: str, fit_s: float, recall: str = "", err: str = "") -> None:
        t = time.perf_counter()
        res = det.score(paths, progress=False)
        ips = len(paths) / (time.perf_counter() - t)
        m = evaluate(np.array([label_of[p] for p in res.paths]), res.scores, *pixel_inputs(ds.test, res))
        print(f"| {bank} | {search} | {recall} | {err} | {m['image_auroc']:.3f} | {m['pixel_auroc']:.3f} | "
              f"{m['aupro']:.3f} | {fit_s:.1f} | {ips:.1f} |", flush=True)

    t = time.perf_counter()
    old = create("patchcore", max_bank=2500, max_pool=200_000).fit(ds.train, progress=False)
    row(old, f"{len(old.bank_):,} (old cap)", "exact", time.perf_counter() - t)
    del old
    t = time.perf_counter()
    det = create("patchcore").fit(ds.train, progress=False)
    fit_s = time.perf_counter() - t
    bank = f"{len(det.bank_):,} (10 %)"
    # Patches of some test images, as the detector sees them, for recall against exact search.
    some = paths[:: max(1, len(paths) // args.recall_images)]
    feats = [b.features.patches for b in det.extractor.iter_batches(some, keep_images=False, pooled=False)]
    q = np.concatenate([f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]).numpy() for f in feats])
    q = np.ascontiguousarray((q - det.shift_) * det.scale_)
    exact = faiss.IndexFlatL2(det.bank_.shape[1])
    exact.add(det.bank_)
    d_exact, i_exact = exact.search(q, 1)
    for nprobe in args.nprobe:
        det.nprobe, det._index = nprobe, None
        d, i = det._search(q)
        recall = float((i[:, 0] == i_exact[:, 0]).mean())
        err = float(np.mean(d[:, 0] / np.sqrt(np.maximum(d_exact[:, 0], 1e-12)) - 1))
        row(det, bank, f"IVF, {len(det.cells_)} cells, nprobe {nprobe}", fit_s, f"{recall:.3f}", f"{err:.4f}")
    det.cells_, det._index = det.cells_[:0], None  # the same bank, searched exactly
    row(det, bank, "exact", fit_s, "1.000", "0.0000")  # as the IVF rows show them
    print(f"\npeak RSS {peak_rss_mb():.0f} MB; recall over {len(q):,} test patches", flush=True)


if __name__ == "__main__":
    try:
        main()
    except InputError as e:  # a data set not found or not readable: one line, as the CLI says it
        raise SystemExit(f"error: {e}") from None
