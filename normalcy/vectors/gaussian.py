"""The Gaussian vector detector: Mahalanobis distance to one Ledoit-Wolf Gaussian of the normal rows."""

from __future__ import annotations

import warnings

import numpy as np

from normalcy.numerics.stats import distance, gaussian, inverse, shrunk
from normalcy.vectors.base import (
    ROW_BYTES,
    ColumnScaled,
    TooLarge,
    VectorDetector,
    check_array,
    check_budget,
    check_integer,
)

__all__ = ["MAX_GAUSSIAN_FEATURES", "GaussianDetector"]

MAX_GAUSSIAN_FEATURES = 4096  # d x d covariances and inverses: 128 MB each, minutes of fitting on 2 cores

class GaussianDetector(ColumnScaled, VectorDetector):
    """Mahalanobis distance to one Gaussian of the normal rows, with Ledoit-Wolf shrinkage (few rows, many
    dimensions), computed by the same code as the image detector ``gaussian``. The threshold comes from
    k-fold cross-validated distances: in-sample ones are too small when dimensions are many.

    Past ``max_memory_mb`` of rows (a million 512-d rows), scikit-learn's Ledoit-Wolf would need several
    full-size copies; the same estimate then comes from sums over chunks of rows (:class:`_Moments`),
    and each fold's Gaussian from the sums of all rows minus the fold's.

    A column of values too large (or too small) to square in float64 is first multiplied by a power of two
    (``scale_``, :func:`normalcy.vectors.base.column_scale`), at fit and at scoring; every other column's
    factor is 1, so an ordinary table fits exactly the Gaussian the image detector computes."""

    def __init__(self, fpr: float = 0.01, folds: int = 5, max_memory_mb: float = 1024.0,
                 random_state: int | None = None):
        self.fpr = fpr
        self.folds = folds
        self.max_memory_mb = max_memory_mb
        self.random_state = random_state

    def _check_params(self) -> None:
        """Cross-validation takes at least 2 folds (a float or None crashed inside the fit)."""
        super()._check_params()
        check_integer(self, "folds", 2, 2**31)
        check_budget(self)

    def _check_features(self, d: int) -> None:
        """Past MAX_GAUSSIAN_FEATURES the d x d covariance and its inverse cost more than a table fit
        should (20,000 features: 3.2 GB a matrix, hours of Ledoit-Wolf): refused, saying what to do."""
        if d > MAX_GAUSSIAN_FEATURES:
            raise TooLarge(f"{type(self).__name__} needs a {d} x {d} covariance: at most {MAX_GAUSSIAN_FEATURES} "
                           "features; reduce the dimensions (e.g. PCA) or use knn, iforest or ecod")

    def fit_bytes(self, n: int, d: int) -> float:
        """Working copies of the rows (or of chunks of them past ``max_memory_mb``) and a few d x d matrices."""
        rows = min(n * d * ROW_BYTES, max(self.max_memory_mb * 2**20, 65536 * d * ROW_BYTES))
        return 4.0 * rows + 8.0 * d * d * ROW_BYTES

    def _fit(self, X: np.ndarray) -> np.ndarray:
        X = self._fit_scale(X)
        n = len(X)
        folds = max(2, min(self.folds, n))
        order = np.random.default_rng(self.random_state).permutation(n)
        held_out = np.empty(n)
        if X.nbytes <= self.max_memory_mb * 2**20:
            self.location_, self.precision_ = gaussian(X)
            # A fold of one row (2 rows fitted): scikit-learn's "Only one sample available. You may want to
            # reshape your data array", once per fold, to a user who gave a table, not an array.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Only one sample available")
                for k in range(folds):
                    held = order[k::folds]
                    keep = np.setdiff1d(order, held)
                    held_out[held] = distance(X[held], *gaussian(X[keep]))
            return held_out
        total = _Moments.of(X)
        self.location_, self.precision_ = total.gaussian()
        for k in range(folds):
            held = np.sort(order[k::folds])
            fold = _Moments.of(X, held)
            mean, precision = (total - fold).gaussian()
            for s in range(0, len(held), 65536):
                rows = held[s:s + 65536]
                held_out[rows] = distance(X[rows], mean, precision)
        return held_out

    def _score(self, X: np.ndarray) -> np.ndarray:
        X = self._scaled(X)
        out = distance(X, self.location_, self.precision_)
        huge = ~np.isfinite(out)
        if huge.any():
            # Finite values so large that (x - mean)' P (x - mean) overflows: inf - inf gave NaN, and a row of
            # 1e300s was called normal. The distance scales with its argument: each such row and the mean
            # divided by their largest magnitude give it exactly, times that magnitude (inf where it is).
            s = np.maximum(np.abs(X[huge]).max(1), np.abs(self.location_).max())[:, None]
            with np.errstate(over="ignore"):
                out[huge] = s[:, 0] * distance(X[huge] / s - self.location_ / s, np.zeros_like(self.location_),
                                               self.precision_)
        return out

    _learned = ("location_", "precision_", "scale_")

    def _check_learned(self, d: int) -> None:
        check_array(self, "location_", (d,))
        check_array(self, "precision_", (d, d))
        self._check_scale(d)


class _Moments:
    """Sums over rows that give the Ledoit-Wolf Gaussian of any subset (all rows minus a fold) without
    holding a centred copy: n, sum x, sum x x^T, sum |x|^2, sum |x|^2 x, sum |x|^4 (float64)."""

    def __init__(self, n: int, s1: np.ndarray, s2: np.ndarray, a: float, t1: np.ndarray, t0: float) -> None:
        self.n, self.s1, self.s2, self.a, self.t1, self.t0 = n, s1, s2, a, t1, t0

    @classmethod
    def of(cls, X: np.ndarray, rows: np.ndarray | None = None, chunk: int = 65536) -> "_Moments":
        d = X.shape[1]
        m = cls(0, np.zeros(d), np.zeros((d, d)), 0.0, np.zeros(d), 0.0)
        count = len(X) if rows is None else len(rows)
        for s in range(0, count, chunk):
            x = np.asarray(X[s:s + chunk] if rows is None else X[rows[s:s + chunk]], dtype=np.float64)
            sq = np.einsum("ij,ij->i", x, x)
            m.n += len(x)
            m.s1 += x.sum(0)
            m.s2 += x.T @ x
            m.a += sq.sum()
            m.t1 += sq @ x
            m.t0 += (sq * sq).sum()
        return m

    def __sub__(self, other: "_Moments") -> "_Moments":
        return _Moments(self.n - other.n, self.s1 - other.s1, self.s2 - other.s2, self.a - other.a,
                        self.t1 - other.t1, self.t0 - other.t0)

    def gaussian(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and precision, as ``gaussian`` (scikit-learn's ledoit_wolf) gives them for these rows."""
        n, p = self.n, len(self.s1)
        mu_x = self.s1 / n
        cov = self.s2 / n - np.outer(mu_x, mu_x)  # the centred X^T X / n
        c = mu_x @ mu_x
        b1 = self.s1 @ mu_x
        # sum |x - m|^4 = sum (|x|^2 - 2 x.m + |m|^2)^2, expanded into the sums kept
        beta_ = (self.t0 + 4 * mu_x @ self.s2 @ mu_x + n * c * c - 4 * self.t1 @ mu_x + 2 * c * self.a
                 - 4 * c * b1)
        trace = np.trace(cov)
        mu = trace / p
        delta_ = (cov * cov).sum()
        beta = (beta_ / n - delta_) / (p * n)
        delta = (delta_ - 2.0 * mu * trace + p * mu**2) / p
        beta = min(beta, delta)
        shrinkage = 0.0 if beta == 0 else beta / delta
        return mu_x, inverse(shrunk(cov, shrinkage))

