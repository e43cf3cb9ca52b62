"""kNN over its memory budget: faiss IVF-PQ against the exact index (issue 12).

    python bench/knn_pq.py                 # ADBench CV_by_ResNet18 (512-d): recall@1 and AUROC, exact vs IVF-PQ
    python bench/knn_pq.py --big 1000000   # plus N synthetic 512-d rows: fit, score speed, memory, one process

Part 1 forces IVF-PQ on each embedding set (``max_memory_mb`` below its size) and compares it with exact
search on the same semi-supervised split (seed 1; normalcy.vectors.tables.semi_supervised_split): recall@1 is the share
of test rows whose nearest training row is the exact one; AUROC of each; the index sizes.
Part 2 fits ``KNNDetector()`` with its default budget (1 GB) on N clustered 512-d rows (2 GB as float32, so
IVF-PQ), scores 100,000 more, and reports time and peak memory (ru_maxrss).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from normalcy.vectors import KNNDetector
from normalcy.vectors.tables import semi_supervised_split

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "adbench" / "CV_by_ResNet18"


def index_nbytes(det: KNNDetector) -> int:
    """Bytes a fitted KNNDetector keeps for search: the standardised rows, or the IVF-PQ arrays."""
    return sum(a.nbytes for a in (det.train_, det.cells_, det.codebook_, det.codes_))


def compare(path: Path, dims_per_byte: int, seed: int = 1) -> dict:
    d = np.load(path)
    train, X_test, y_test = semi_supervised_split(d["X"].astype(np.float64), d["y"].astype(int), seed)
    exact = KNNDetector(random_state=seed).fit(train)
    t = time.perf_counter()
    pq = KNNDetector(max_memory_mb=train.nbytes / 2**20 / 16, pq_dims_per_byte=dims_per_byte,
                     random_state=seed).fit(train)
    fit_s = time.perf_counter() - t
    Z = exact._standardised(X_test)
    nn_exact = exact._search(Z, 1)[1][:, 0]
    nn_pq = pq._search(Z, 1)[1][:, 0]
    return {"set": path.stem, "rows": len(train), "recall@1": float((nn_exact == nn_pq).mean()),
            "auroc exact": roc_auc_score(y_test, exact.anomaly_score(X_test)),
            "auroc ivf-pq": roc_auc_score(y_test, pq.anomaly_score(X_test)),
            "exact MB": exact.train_.nbytes / 2**20, "ivf-pq MB": index_nbytes(pq) / 2**20, "pq fit s": fit_s}


def big(n: int, d: int = 512, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(64, d)).astype(np.float32) * 3

    def rows(m: int) -> np.ndarray:
        out = np.empty((m, d), dtype=np.float32)
        for s in range(0, m, 100_000):
            k = min(100_000, m - s)
            out[s:s + k] = centres[rng.integers(0, 64, k)] + rng.normal(size=(k, d)).astype(np.float32)
        return out

    X, Q = rows(n), rows(100_000)
    t = time.perf_counter()
    det = KNNDetector(random_state=seed).fit(X)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    det.anomaly_score(Q)
    score_s = time.perf_counter() - t
    mode = "IVF-PQ" if det.codes_.size else "exact"
    print(f"\n{n:,} rows x {d} (float32 {X.nbytes / 2**30:.1f} GB): {mode}, index {index_nbytes(det) / 2**20:.0f} MB; "
          f"fit {fit_s:.1f} s; scoring {len(Q) / score_s:,.0f} rows/s; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB (the rows themselves included)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--dims-per-byte", type=int, default=8, help="PQ code size (KNNDetector's pq_dims_per_byte)")
    ap.add_argument("--big", type=int, default=0, help="also fit and score this many synthetic 512-d rows")
    args = ap.parse_args()
    files = sorted(args.data.glob("*.npz"))
    if not files:  # an empty table's rows[0]: an IndexError
        raise SystemExit(f"no .npz files in {args.data} (ADBench's CV_by_ResNet18 embedding sets)")
    rows = [compare(p, args.dims_per_byte) for p in files]
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
    mean = {k: np.mean([r[k] for r in rows]) for k in ("recall@1", "auroc exact", "auroc ivf-pq")}
    print(f"| mean | | {mean['recall@1']:.3f} | {mean['auroc exact']:.3f} | {mean['auroc ivf-pq']:.3f} | | | |")
    if args.big:
        big(args.big)


if __name__ == "__main__":
    main()
