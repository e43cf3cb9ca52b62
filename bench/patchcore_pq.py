"""PatchCore's bank past a RAM budget: faiss IVF-PQ against IVF-Flat and exact search (issue 12).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 python bench/patchcore_pq.py [--budget-mb 8] [--dims-per-byte 4 8]

Fits PatchCore on magnetic_tile with the same seed, so the same coreset: once with the default budget (1 GB:
the 10 % bank, 48,528 x 152 float32 = 28 MB, is searched by IVF-Flat) and once for each ``--dims-per-byte``
(PatchCore's ``pq_dims_per_byte``) with ``--budget-mb`` below the bank's size, which keeps it as IVF-PQ codes
only. The default model's bank is then also searched exactly.
Recall@1: the share of the patches of ``--recall-images`` test images whose nearest bank patch is the exact
one; distance error: the mean relative difference of the nearest distance from the exact one. Index MB: the
faiss index (serialised), which scoring holds besides the model's arrays (model file MB). Fit and score
seconds include the backbone. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from normalcy.detectors import PatchCore, create
from normalcy.detectors.modelfile import MODEL_TENSORS
from normalcy.errors import InputError
from normalcy.evaluation.evaluate import pixel_inputs
from normalcy.evaluation.metrics import evaluate
from normalcy.images.io import load_dataset

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "magnetic_tile"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--budget-mb", type=float, default=8.0, help="PatchCore's max_memory_mb for the IVF-PQ fits")
    ap.add_argument("--dims-per-byte", type=int, nargs="+", default=[4, 8], help="an IVF-PQ fit for each")
    ap.add_argument("--recall-images", type=int, default=50, help="test images whose patches measure recall")
    args = ap.parse_args()
    ds = load_dataset(args.data)
    paths = [s.path for s in ds.test]
    labels = np.array([s.label for s in ds.test])

    def fit(**params: float) -> tuple[PatchCore, float]:
        t = time.perf_counter()
        det = create("patchcore", **params).fit(ds.train, progress=False)
        return det, time.perf_counter() - t  # type: ignore[return-value]

    default, default_s = fit()

    # Patches of some test images as the detectors see them, and their exact nearest bank patches.
    step = max(1, len(paths) // args.recall_images)
    feats = [b.features.patches for b in default.extractor.iter_batches(paths[::step], keep_images=False, pooled=False)]
    q = np.concatenate([f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]).numpy() for f in feats])
    q = np.ascontiguousarray((q - default.shift_) * default.scale_)
    flat = faiss.IndexFlatL2(default.bank_.shape[1])
    flat.add(default.bank_)
    d_exact, i_exact = flat.search(q, 1)
    d_exact = np.sqrt(np.maximum(d_exact[:, 0], 1e-12))

    print("| search | bank patches | bank as float32 MB | faiss index MB | model file MB | recall@1 | distance error "
          "| image AUROC | pixel AUROC | AUPRO | fit s | score s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")

    def row(det: PatchCore, search: str, fit_s: float) -> None:
        d, i = det._search(q)
        recall = float((i[:, 0] == i_exact[:, 0]).mean())
        err = float(np.mean(np.abs(d[:, 0] / d_exact - 1)))
        t = time.perf_counter()
        res = det.score(paths, progress=False)
        score_s = time.perf_counter() - t
        m = evaluate(labels, res.scores, *pixel_inputs(ds.test, res))
        with tempfile.TemporaryDirectory() as tmp:
            model_mb = (det.save(tmp) / MODEL_TENSORS).stat().st_size / 2**20
        k = len(det.codes_) or len(det.bank_)
        print(f"| {search} | {k:,} | {k * det.shift_.size * 4 / 2**20:.1f} | "
              f"{faiss.serialize_index(det._index).nbytes / 2**20:.1f} | {model_mb:.1f} | {recall:.3f} | {err:.4f} | "
              f"{m['image_auroc']:.3f} | {m['pixel_auroc']:.3f} | {m['aupro']:.3f} | {fit_s:.1f} | {score_s:.1f} |",
              flush=True)

    c = len(default.cells_)
    row(default, (f"IVF-Flat, {c} cells, nprobe {default.nprobe}" if c else "exact") + " (default budget)", default_s)
    for dims in args.dims_per_byte:
        pq, pq_s = fit(max_memory_mb=args.budget_mb, pq_dims_per_byte=dims)
        if not len(pq.codes_) or not np.array_equal(pq.bank_image_, default.bank_image_):
            raise SystemExit(f"--budget-mb {args.budget_mb} did not give an IVF-PQ bank of the same coreset")
        m, ksub, _ = pq.codebook_.shape
        row(pq, f"IVF-PQ, {len(pq.cells_)} cells, {m} x {ksub.bit_length() - 1} bits, nprobe {pq.nprobe} "
                f"(budget {args.budget_mb:g} MB)", pq_s)
        del pq
    default.cells_, default._index = default.cells_[:0], None  # the same bank, searched exactly
    row(default, "exact (same bank)", default_s)
    print(f"\nrecall over {len(q):,} patches of {len(paths[::step]):,} test images", flush=True)


if __name__ == "__main__":
    try:
        main()
    except InputError as e:  # a data set not found or not readable: one line, as the CLI says it
        raise SystemExit(f"error: {e}") from None
