"""Subsequence PCA (TSB-AD's Sub-PCA, trained on normal operation): a row is as anomalous as the window
ending at it is far from the subspace that normal windows span.

The windows of ``window_`` rows (all metrics, flattened, time-major) of the training series are centred
and their principal components kept up to ``variance`` of their variance. A row's score is the
root-mean-square, per time step, of its window's reconstruction error; the squared errors summed per
metric split it into per-metric contributions. Scoring is two small matrix products a window, so one row
of a stream costs microseconds.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field
from sklearn.utils.extmath import randomized_svd

from normalcy.series.base import SeriesDetector, SeriesParams
from normalcy.series.windows import causal_windows, flat_windows

EXACT_DIMS = 1024  # windows up to this many numbers: an exact eigendecomposition; wider: randomized SVD
_CHUNK_FLOATS = 2**22


class SubsequencePCA(SeriesDetector):
    """Reconstruction error of each row's window from the principal components of normal windows."""

    name = "pca"

    class Params(SeriesParams):
        variance: float = Field(0.9, gt=0, lt=1)  # of the windows' variance the kept components explain
        max_components: int = Field(64, ge=1, le=1024)
        max_windows: int = Field(20_000, ge=16, le=1_000_000)  # an even subsample past this

    centre_: np.ndarray  # (window_ * d,) the mean normal window
    components_: np.ndarray  # (k, window_ * d) orthonormal rows

    def _fit(self, X: np.ndarray, progress: bool) -> None:
        windows = flat_windows(X, self.window_)
        keep = np.unique(np.linspace(0, len(windows) - 1, min(len(windows), self.max_windows)).round().astype(np.int64))
        W = windows[keep]
        self.centre_ = W.mean(axis=0)
        W = W - self.centre_
        total = float(np.einsum("ij,ij->", W, W))
        if W.shape[1] <= EXACT_DIMS:
            values, vectors = np.linalg.eigh(W.T @ W)
            values, vectors = values[::-1], vectors[:, ::-1].T
        else:
            _, s, vectors = randomized_svd(W, min(self.max_components, *W.shape), random_state=self.seed)
            values = s**2
        explained = np.cumsum(np.clip(values, 0, None)) / max(total, 1e-300)
        k = int(np.searchsorted(explained, self.variance) + 1)
        self.components_ = np.ascontiguousarray(vectors[:min(k, self.max_components, len(vectors))])

    def _errors(self, W: np.ndarray) -> np.ndarray:
        """(m, d) contributions of windows W (m, window_ * d)."""
        Q = W - self.centre_
        R = Q - (Q @ self.components_.T) @ self.components_
        per_metric = (R * R).reshape(len(W), self.window_, -1).sum(axis=1)
        norm = np.sqrt(self.window_ * per_metric.sum(axis=1, keepdims=True))  # contributions sum to RMS error
        return np.divide(per_metric, norm, out=np.zeros_like(per_metric), where=norm > 0)

    def _score(self, X: np.ndarray) -> np.ndarray:
        W = causal_windows(X, self.window_)
        step = max(1, _CHUNK_FLOATS // W.shape[1])
        return np.concatenate([self._errors(W[s:s + step]) for s in range(0, len(W), step)])

    def _score_last(self, recent: np.ndarray) -> np.ndarray:
        if len(recent) < self.window_:
            recent = np.concatenate([np.repeat(recent[:1], self.window_ - len(recent), axis=0), recent])
        return self._errors(recent[-self.window_:].reshape(1, -1))[0]

    def _check_state(self) -> None:
        d = self.window_ * len(self.columns_)
        if self.centre_.shape != (d,):
            raise ValueError(f"centre of shape {self.centre_.shape}, expected ({d},)")
        c = self.components_
        if c.ndim != 2 or c.shape[1] != d or not 1 <= len(c) <= min(d, self.max_components):
            raise ValueError(f"components of shape {c.shape} do not fit windows of {d} numbers and at most "
                             f"{self.max_components} components")
        self.centre_, self.components_ = self.centre_.astype(np.float64), c.astype(np.float64)
