"""The kNN vector detector: mean distance to the k nearest normal rows, exact or compressed (faiss IVF-PQ)."""

from __future__ import annotations

import faiss
import numpy as np

from normalcy.numerics.ann import (
    check_ivfpq,
    empty_ivfpq,
    fit_ivfpq,
    ivfpq_index,
    row_by_row,
)
from normalcy.vectors.base import (
    ROW_BYTES,
    VectorDetector,
    check_array,
    check_budget,
    check_integer,
    column_scale,
    scaled,
)

__all__ = ["KNNDetector"]

class KNNDetector(VectorDetector):
    """Mean Euclidean distance to the k nearest normal rows, on features standardised by the training rows so
    that no column dominates by its units. A training row's calibration score leaves the row itself out.

    Search is exact (faiss flat) while the standardised rows fit in ``max_memory_mb``; above it they are
    compressed with faiss IVF-PQ (product quantisation, ``pq_dims_per_byte`` dimensions a byte: 32x smaller
    than float32 at 8) and searched in ``nprobe`` of ``4 sqrt(n)`` cells, with approximate distances. The index
    is kept as plain arrays (``cells_``, ``codebook_``, ``codes_``; see :mod:`normalcy.numerics.ann`), so the estimator
    saves with the rest and a saved model holds nothing for faiss to parse. Calibration scores come from at
    most ``max_calibration`` training rows (a quantile needs no more)."""

    def __init__(self, fpr: float = 0.01, n_neighbors: int = 5, max_memory_mb: float = 1024.0, nprobe: int = 8,
                 pq_dims_per_byte: int = 8, max_calibration: int = 20_000, random_state: int | None = None):
        self.fpr, self.n_neighbors, self.max_memory_mb, self.nprobe = fpr, n_neighbors, max_memory_mb, nprobe
        self.pq_dims_per_byte, self.max_calibration, self.random_state = pq_dims_per_byte, max_calibration, random_state

    def _check_params(self) -> None:
        """The integers a search and the calibration sample take, each at least 1."""
        super()._check_params()
        for name in ("n_neighbors", "nprobe", "pq_dims_per_byte", "max_calibration"):
            check_integer(self, name, 1, 2**31)
        check_budget(self)

    def fit_bytes(self, n: int, d: int) -> float:
        """The standardised rows (float32) and faiss' copy of them, and the float64 copy that exact distances
        are recomputed from; compressed past ``max_memory_mb``: the rows, a training sample and the codes."""
        rows32 = n * d * 4.0
        if rows32 <= self.max_memory_mb * 2**20:
            return 4.0 * rows32 + 2.0 * 4096 * (self.n_neighbors + 1) * d * ROW_BYTES
        return rows32 + min(n, 100_000) * d * 4.0 + n * max(1, d // self.pq_dims_per_byte)

    def _fit(self, X: np.ndarray) -> np.ndarray:
        # mean and spread of columns too large to square (1e308) from a copy scaled by powers of two (exact)
        factor = column_scale(X)
        Xs = scaled(X, factor)
        mean = Xs.mean(0)
        var = sum(((Xs[s:s + 65536] - mean) ** 2).sum(0) for s in range(0, len(X), 65536)) / len(X)
        std = np.sqrt(var) / factor  # in chunks: a million rows need no second full-size copy
        self.mean_ = mean / factor
        # a column that never varied keeps its units (scale 1): its "spread" is rounding of the mean (1.4e-17 for
        # a column of 0.1, 0 for one of 0), which counted a later change of it as 1e16 units for some constants
        constant = X.max(0) == X.min(0)
        self.scale_ = np.where((std > 0) & ~constant, std, 1.0)
        Z = self._standardised(X)
        self.n_neighbors_ = int(min(self.n_neighbors, len(X) - 1))  # a Python int: faiss refuses an np.int64
        rng = np.random.default_rng(self.random_state)
        if Z.nbytes <= self.max_memory_mb * 2**20:
            self.train_ = Z
            self.cells_, self.codebook_, self.codes_ = empty_ivfpq(Z.shape[1])
        else:
            self.train_ = np.zeros((0, Z.shape[1]), dtype=np.float32)
            self.cells_, self.codebook_, self.codes_ = fit_ivfpq(Z, rng, int(self.pq_dims_per_byte))
        self._faiss = None
        calib = np.arange(len(Z))
        if len(Z) > self.max_calibration:
            calib = self.calibration_rows_ = np.sort(rng.choice(len(Z), self.max_calibration, replace=False))
        k = self.n_neighbors_
        dist, idx = self._search(Z[calib], k + 1)
        # Drop each row itself from its neighbours (or the farthest, if duplicates crowded it out).
        own = idx == calib[:, None]
        own[~own.any(1), -1] = True
        keep = ~own
        if self.train_.shape[0]:
            return self._mean_distance(Z[calib], idx[keep].reshape(len(calib), k))
        return np.sqrt(np.maximum(dist[keep].reshape(len(calib), k), 0)).mean(1)

    def _score(self, X: np.ndarray) -> np.ndarray:
        Z = self._standardised(X)
        dist, idx = self._search(Z, self.n_neighbors_)
        if self.train_.shape[0]:
            return self._mean_distance(Z, idx)
        return np.sqrt(np.maximum(dist, 0)).mean(1)

    def _standardised(self, X: np.ndarray) -> np.ndarray:
        Z = np.empty(X.shape, dtype=np.float32)
        with np.errstate(over="ignore"):  # a value past float32's range is inf: the farthest row, no warning
            for s in range(0, len(X), 65536):
                Z[s:s + 65536] = (X[s:s + 65536] - self.mean_) / self.scale_
        return Z

    def _search(self, Z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.train_.shape[0]:  # a flat index is a copy of the rows: built per call, nothing to save
            index = faiss.IndexFlatL2(Z.shape[1])
            index.add(self.train_)
            return index.search(Z, k)
        if getattr(self, "_faiss", None) is None:  # rebuilt from the arrays alone (ann.py), checked first
            check_ivfpq(self.cells_, self.codebook_, self.codes_, self.train_.shape[1])
            self._faiss = ivfpq_index(self.cells_, self.codebook_, self.codes_, int(self.nprobe), precompute=True)
        # nprobe is read here, at each search (set_params after fit takes effect), so it is checked here too: 0 or
        # -1 was faiss' "'cur_nprobe > 0' failed" or "OverflowError in method 'IndexIVFInterface_nprobe_set'"
        self._faiss.nprobe = check_integer(self, "nprobe", 1, 2**31)
        # Row by row, a row scores the same in any batch and on any number of threads (one process or Ray
        # workers), at some speed (bench/scale_vectors.py).
        with row_by_row():
            dist, idx = self._faiss.search(Z, k)
        # Cells too small to hold k rows: a missing neighbour counts as the farthest one found.
        missing = idx < 0
        if missing.any():
            found = np.where(missing, -np.inf, dist).max(1, keepdims=True)
            dist = np.where(missing, found, dist)
        return dist, idx

    def _mean_distance(self, Z: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Distances recomputed in float64 for the neighbours faiss found: exact, and the same for a row
        whichever batch it comes in."""
        out = np.empty(len(Z))
        train = self.train_.astype(np.float64)
        for start in range(0, len(Z), 4096):
            z = Z[start:start + 4096].astype(np.float64)
            d = train[idx[start:start + 4096]] - z[:, None, :]
            out[start:start + 4096] = np.sqrt((d * d).sum(-1)).mean(1)
        return out

    # (_faiss: the search index built from the arrays on first use; never saved, see __setstate__)
    _learned = ("mean_", "scale_", "n_neighbors_", "train_", "cells_", "codebook_", "codes_", "_faiss")

    def _check_learned(self, d: int) -> None:
        check_array(self, "mean_", (d,))
        if (check_array(self, "scale_", (d,)) <= 0).any():
            raise ValueError("KNNDetector.scale_: must be positive")
        rows = len(check_array(self, "train_", (None, d), np.float32))
        cells = check_array(self, "cells_", (None, d), np.float32)
        codebook = check_array(self, "codebook_", (None, None, None), np.float32)
        codes = check_array(self, "codes_", (None, None), np.uint8)
        if not rows:  # compressed: the IVF-PQ arrays must make an index of d-dimensional rows
            check_ivfpq(cells, codebook, codes, d)
            rows = len(codes)
        check_integer(self, "n_neighbors_", 1, rows)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_faiss", None)  # rebuilt from the arrays on first use
        return state

    def __setstate__(self, state: dict) -> None:
        state.pop("_faiss", None)  # never saved: a file that holds one holds no faiss index
        if "index_" in state:  # saved before 3 December 2026 (evening), with a faiss serialisation no longer read
            if np.asarray(state["index_"]).size:
                raise ValueError("this KNNDetector holds a faiss serialisation (saved by an earlier normalcy), "
                                 "which is no longer parsed: fit it again")
            del state["index_"]
            state.update(zip(("cells_", "codebook_", "codes_"), empty_ivfpq(np.asarray(state["train_"]).shape[1])))
        super().__setstate__(state)

