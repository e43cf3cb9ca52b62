"""Subsequence PCA (TSB-AD's Sub-PCA, trained on normal operation): a row is as anomalous as the window
ending at it is far from the subspace that normal windows span.

The windows of ``window_`` rows (all metrics, flattened, time-major) of the training series are centred
and their principal components kept up to ``variance`` of their variance. A row's score is the
root-mean-square, per time step, of its window's reconstruction error; the squared errors summed per
metric split it into per-metric contributions. Scoring is two small matrix products a window, so one row
of a stream costs microseconds.

The first ``window_ - 1`` rows of a series have a shorter past: their partial window is fitted, by least
squares, with the components' same stretch (edge padding would invent a flat start that normal operation
never had, and flag the start of every series).
"""

from __future__ import annotations

import logging
import math

import numpy as np
from pydantic import Field
from scipy.linalg import eigh
from sklearn.utils.extmath import randomized_svd
from threadpoolctl import threadpool_limits

from normalcy.series.base import SeriesDetector, SeriesParams
from normalcy.series.windows import flat_windows, inside

EXACT_DIMS = 1024  # windows up to this many numbers: an exact eigendecomposition; wider: randomized SVD
# numbers of the training windows a fit holds at most (256 MB): past it, an even subsample of fewer windows. A long
# window on a wide series (50 metrics x 500 rows, 16,000 rows) held every window, 1.9 GB, and took 100 s. The
# default max_windows of windows of up to EXACT_DIMS numbers (NAB's, ASD's) never reach it.
MAX_FIT_FLOATS = 2**25
_CHUNK_FLOATS = 2**22

log = logging.getLogger("normalcy")


class SubsequencePCA(SeriesDetector):
    """Reconstruction error of each row's window from the principal components of normal windows."""

    name = "pca"

    class Params(SeriesParams):
        variance: float = Field(0.9, gt=0, lt=1)  # of the windows' variance the kept components explain
        max_components: int = Field(64, ge=1, le=256)  # bounds a partial window's solve
        max_windows: int = Field(20_000, ge=16, le=1_000_000)  # an even subsample past this

    centre_: np.ndarray  # (window_ * d,) the mean normal window
    components_: np.ndarray  # (k, window_ * d) orthonormal rows (k = 0: normal windows do not vary)

    def _fit(self, X: np.ndarray, progress: bool) -> None:
        windows = flat_windows(X, self.window_)
        ok = inside(self.starts, len(X), self.window_)
        most = min(self.max_windows, max(16, MAX_FIT_FLOATS // windows.shape[1]))
        if len(ok) > most and most < self.max_windows:
            log.info("pca: fitted on an even subsample of %d of %d training windows (%d numbers a window; a fit "
                     "holds at most %d numbers)", most, len(ok), windows.shape[1], MAX_FIT_FLOATS)
        keep = ok[np.unique(np.linspace(0, len(ok) - 1, min(len(ok), most)).round().astype(np.int64))]
        W = windows[keep]  # a copy (fancy indexing), centred in place: one copy of the windows, not two
        self.centre_ = W.mean(axis=0)
        W -= self.centre_
        total = float(np.einsum("ij,ij->", W, W))
        if W.shape[1] <= EXACT_DIMS:
            D = W.shape[1]  # only the leading components, on one thread: on 2 busy cores, 8x faster than all
            with threadpool_limits(1):  # of them on two (0.03 against 0.24 s at 256 numbers a window)
                values, vectors = eigh(W.T @ W, subset_by_index=[max(0, D - self.max_components), D - 1])
            values, vectors = values[::-1], vectors[:, ::-1].T
        else:
            _, s, vectors = randomized_svd(W, min(self.max_components, *W.shape), random_state=self.seed)
            values = s**2
        explained = np.cumsum(np.clip(values, 0, None)) / max(total, 1e-300)
        k = int(np.searchsorted(explained, self.variance) + 1)
        # only directions normal windows vary along: where they barely vary at all (a constant sensor), the
        # eigenvectors of a zero matrix are arbitrary, and keeping them reconstructed any window exactly
        varying = int((values > 1e-12 * total).sum()) if total > 1e-300 else 0
        k = min(k, varying)
        self.components_ = np.ascontiguousarray(vectors[:min(k, self.max_components, len(vectors))])
        self._gram_cache = None

    def _errors(self, R: np.ndarray) -> np.ndarray:
        """(m, d) contributions from reconstruction errors R (m, L) of (partial) windows of L numbers."""
        steps = R.shape[1] // len(self.columns_)
        per_metric = (R * R).reshape(len(R), steps, -1).sum(axis=1)
        norm = np.sqrt(steps * per_metric.sum(axis=1, keepdims=True))  # contributions sum to the RMS error
        return np.divide(per_metric, norm, out=np.zeros_like(per_metric), where=norm > 0)

    def _full(self, W: np.ndarray) -> np.ndarray:
        Q = W - self.centre_
        return self._errors(Q - (Q @ self.components_.T) @ self.components_)

    def _partial(self, rows: np.ndarray) -> np.ndarray:
        """(d,) contributions of a window of fewer than window_ rows: the least-squares fit of the components'
        last stretch (their Gram matrix for that stretch, with a small ridge, since it may be singular)."""
        L = rows.size
        q = rows.reshape(-1) - self.centre_[-L:]
        P = self.components_[:, -L:]
        coef = np.linalg.solve(self._gram(L) + 1e-9 * np.eye(len(P)), P @ q)
        return self._errors((q - coef @ P)[None])[0]

    def _gram(self, L: int) -> np.ndarray:
        """P_L P_L^T for the components' last L numbers. Partial windows come one row longer at a time (the
        start of a series, of a stream), so the last one is kept and grown by a row: O(k^2 d) a row, k^2
        memory, and the same numbers in a batch and in a stream."""
        last_L, gram = getattr(self, "_gram_cache", None) or (0, None)
        d = len(self.columns_)
        if gram is not None and L == last_L + d:
            block = self.components_[:, self.components_.shape[1] - L:self.components_.shape[1] - last_L]
            gram = gram + block @ block.T
        elif gram is None or L != last_L:
            P = self.components_[:, -L:]
            gram = P @ P.T
        self._gram_cache = (L, gram)
        return gram

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self._score_from(X, 0)

    def _score_from(self, X: np.ndarray, first: int) -> np.ndarray:
        head = [self._partial(X[:t + 1]) for t in range(first, min(len(X), self.window_ - 1))]
        W = flat_windows(X[max(0, first - self.window_ + 1):], self.window_)  # whole windows ending at first on
        step = max(1, _CHUNK_FLOATS // max(1, W.shape[1]))
        return np.concatenate([np.reshape(head, (len(head), X.shape[1]))]
                              + [self._full(W[s:s + step]) for s in range(0, len(W), step)])

    def _score_last(self, recent: np.ndarray) -> np.ndarray:
        if len(recent) < self.window_:
            return self._partial(recent)
        if len(self.columns_) == 1:  # a stream's univariate row, in few array calls: the RMS error a step
            q = recent[-self.window_:].reshape(-1) - self.centre_
            r = q - (self.components_ @ q) @ self.components_
            return np.array([math.sqrt(float(r @ r) / len(r))])
        return self._full(recent[-self.window_:].reshape(1, -1))[0]

    def _check_state(self) -> None:
        d = self.window_ * len(self.columns_)
        if self.centre_.shape != (d,):
            raise ValueError(f"centre of shape {self.centre_.shape}, expected ({d},)")
        c = self.components_
        if c.ndim != 2 or c.shape[1] != d or len(c) > min(d, self.max_components):
            raise ValueError(f"components of shape {c.shape} do not fit windows of {d} numbers and at most "
                             f"{self.max_components} components")
        self.centre_, self.components_ = self.centre_.astype(np.float64), c.astype(np.float64)
        self._gram_cache = None
