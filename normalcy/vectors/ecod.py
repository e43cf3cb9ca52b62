"""The ECOD vector detector: how far into its empirical tails each value of a row lies."""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import skew

from normalcy.vectors.base import (
    ROW_BYTES,
    VectorDetector,
    check_array,
    column_scale,
    scaled,
)

__all__ = ["ECODDetector"]

class ECODDetector(VectorDetector):
    """ECOD (Li et al. 2022): per dimension, how far into the tail of the normal rows' empirical
    distribution a value lies (-log of the tail probability), summed over dimensions; the score is the
    largest of the left-tail, right-tail and skewness-chosen-tail sums. No parameters to tune.

    The tail probability of a new value counts it as one more sample, (#{x_j <= x} + 1) / (n + 1), so it is
    never 0; for a training row the same formula with the row left out is #{x_j <= x_i} / n, which makes
    the training scores leave-one-out."""

    def __init__(self, fpr: float = 0.01):
        self.fpr = fpr

    def fit_bytes(self, n: int, d: int) -> float:
        """The sorted copy kept, the transposed rows and the left, right and chosen tail arrays with their
        temporaries."""
        return 8.0 * n * d * ROW_BYTES

    def _fit(self, X: np.ndarray) -> np.ndarray:
        self.sorted_ = np.sort(X.T, axis=1)  # one contiguous row per dimension: binary searches stay in cache
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            # skewness cubes values (1e308: inf); scaling keeps it finite. A column that never varies but by
            # rounding (0.1 on every row) made scipy warn of "catastrophic cancellation": only the sign is used
            warnings.filterwarnings("ignore", "Precision loss occurred in moment calculation")
            self.skewness_ = np.nan_to_num(skew(scaled(X, column_scale(X)), axis=0))
        return self._tails(X, 0)

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self._tails(X, 1)

    _learned = ("sorted_", "skewness_")

    def _check_learned(self, d: int) -> None:
        if (np.diff(check_array(self, "sorted_", (d, None)), axis=1) < 0).any() or not self.sorted_.shape[1]:
            raise ValueError("ECODDetector.sorted_: each feature's training values must be sorted, and not empty")
        check_array(self, "skewness_", (d,))

    def _tails(self, X: np.ndarray, extra: int) -> np.ndarray:
        """ECOD scores; ``extra`` = 1 counts X's rows as added samples, 0 as rows already in the sample."""
        n = self.sorted_.shape[1]
        Xt = np.ascontiguousarray(X.T)
        left = np.empty_like(Xt)
        right = np.empty_like(Xt)
        for j, (col, x) in enumerate(zip(self.sorted_, Xt)):
            left[j] = np.searchsorted(col, x, side="right")
            right[j] = n - np.searchsorted(col, x, side="left")
        left = -np.log((left + extra) / (n + extra))
        right = -np.log((right + extra) / (n + extra))
        chosen = np.where(self.skewness_[:, None] < 0, left, right)
        return np.maximum.reduce([left.sum(0), right.sum(0), chosen.sum(0)])

