"""Subsequence kNN (TSB-AD's Sub-KNN, trained on normal operation): a row is as anomalous as the window
ending at it is far from the windows of normal operation.

Every window of ``window_`` rows (all metrics, flattened, time-major) of the training series goes into a
bank (at most ``max_bank`` windows and MAX_BANK_FLOATS numbers, an even subsample past that). A row's
score is the root-mean-square difference, per time step, between its window and the k-th nearest window
of the bank; the squared differences of that neighbour, summed per metric, split it into per-metric
contributions. faiss finds the k nearest (exact flat L2, float32); their distances are then computed
again exactly (float64), so a window scores the same in a batch and alone in a stream.

Online learning (``partial_fit``) appends each new normal window to the bank until it is full, then
replaces the oldest (a FIFO): memory stays bounded.
"""

from __future__ import annotations

import faiss
import numpy as np
from pydantic import Field

import normalcy.numerics.ann  # noqa: F401  (sets faiss's BLAS threshold the project uses)
from normalcy.series.base import SeriesDetector, SeriesParams
from normalcy.series.windows import causal_windows, flat_windows

MAX_BANK_FLOATS = 2**25  # 128 MB of float32 windows at most
_CHUNK_FLOATS = 2**22  # rows scored at a time: their k neighbours' differences take at most 32 MB


class SubsequenceKNN(SeriesDetector):
    """Distance of each row's window to the k-th nearest window of normal operation."""

    name = "knn"

    class Params(SeriesParams):
        k: int = Field(1, ge=1, le=100)
        max_bank: int = Field(20_000, ge=16, le=1_000_000)

    bank_: np.ndarray  # (m, window_ * d) float32 windows of normal operation
    fifo_: int  # where the next online window goes once the bank is full (its oldest window)

    @property
    def capacity(self) -> int:
        """Windows the bank may hold: max_bank, fewer for wide windows (MAX_BANK_FLOATS)."""
        return max(1, min(self.max_bank, MAX_BANK_FLOATS // (self.window_ * len(self.columns_))))

    def _fit(self, X: np.ndarray, progress: bool) -> None:
        windows = flat_windows(X, self.window_)
        keep = np.linspace(0, len(windows) - 1, min(len(windows), self.capacity)).round().astype(np.int64)
        self.bank_ = np.ascontiguousarray(windows[np.unique(keep)], dtype=np.float32)
        self.fifo_ = 0
        self._spare = 0

    def _contributions(self, W: np.ndarray) -> np.ndarray:
        """(m, d) contributions of windows W (m, window_ * d)."""
        k = min(self.k, len(self.bank_))
        _, idx = faiss.knn(np.ascontiguousarray(W, dtype=np.float32), self.bank_, k)
        diff = W[:, None, :] - self.bank_[idx]  # (m, k, w*d), float64 as W
        sq = np.einsum("mkj,mkj->mk", diff, diff)
        kth = np.argmax(sq, axis=1)  # the k-th nearest: the farthest of the k, exactly
        rows = np.arange(len(W))
        per_metric = (diff[rows, kth] ** 2).reshape(len(W), self.window_, -1).sum(axis=1)
        total = sq[rows, kth]
        norm = np.sqrt(self.window_ * total)  # contributions sum to sqrt(total / window_)
        return np.divide(per_metric, norm[:, None], out=np.zeros_like(per_metric), where=norm[:, None] > 0)

    def _score(self, X: np.ndarray) -> np.ndarray:
        W = causal_windows(X, self.window_)
        step = max(1, _CHUNK_FLOATS // (min(self.k, len(self.bank_)) * W.shape[1]))
        return np.concatenate([self._contributions(W[s:s + step]) for s in range(0, len(W), step)])

    def _score_last(self, recent: np.ndarray) -> np.ndarray:
        return self._contributions(_last_window(recent, self.window_))[0]

    def _partial_fit(self, recent: np.ndarray) -> None:
        if len(recent) < self.window_:  # an edge-padded window is not one normal operation had
            return
        window = np.asarray(recent[-self.window_:], dtype=np.float32).reshape(-1)
        m, cap = len(self.bank_), self.capacity
        if m < cap:
            if getattr(self, "_spare", 0) == 0:  # grow by doubling: O(1) a row, amortised
                store = np.empty((min(cap, max(2 * m, 1024)), self.bank_.shape[1]), np.float32)
                store[:m] = self.bank_
                self._store, self._spare = store, len(store) - m
            self._store[m] = window
            self._spare -= 1
            self.bank_ = self._store[:m + 1]
        else:
            if not self.bank_.flags.writeable:
                self.bank_ = self.bank_.copy()
            self.bank_[self.fifo_] = window
            self.fifo_ = (self.fifo_ + 1) % cap

    def _check_state(self) -> None:
        d = self.window_ * len(self.columns_)
        if self.bank_.ndim != 2 or self.bank_.shape[1] != d or not 1 <= len(self.bank_) <= self.capacity:
            raise ValueError(f"bank of shape {self.bank_.shape} does not fit window {self.window_} x "
                             f"{len(self.columns_)} column(s) and at most {self.capacity} windows")
        self.bank_ = np.ascontiguousarray(self.bank_, dtype=np.float32)
        if not 0 <= self.fifo_ < self.capacity:
            raise ValueError(f"fifo position {self.fifo_} outside the bank's {self.capacity} windows")
        self._spare = 0


def _last_window(recent: np.ndarray, w: int) -> np.ndarray:
    """The window ending at the last row of ``recent`` as one (1, w*d) row, edge-padded when it is short."""
    if len(recent) < w:
        recent = np.concatenate([np.repeat(recent[:1], w - len(recent), axis=0), recent])
    return recent[-w:].reshape(1, -1)
