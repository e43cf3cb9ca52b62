"""Sliding windows of a series and the length of its period.

A subsequence detector sees a series as windows of ``w`` consecutive rows. Windows are views of the
series' own memory wherever its layout allows it: a window of a C-contiguous (n, d) array is w*d
consecutive numbers, so ``flat_windows`` is a strided view, never a copy of n*w*d numbers.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided
from scipy.signal import argrelextrema

MIN_WINDOW, MAX_WINDOW = 8, 256  # an automatic window is clipped to these
PERIOD_FALLBACK = 125  # TSB-AD's length when the autocorrelation shows no period
_MAX_LAG = 400  # TSB-AD's find_length: lags 3..400 of the first 20,000 rows
_MAX_ROWS = 20_000


def _acf(x: np.ndarray, nlags: int) -> np.ndarray:
    """Autocorrelation at lags 0..nlags, by FFT (statsmodels' acf(fft=True) without statsmodels)."""
    x = x - x.mean()
    n = len(x)
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(x, size)
    ac = np.fft.irfft(f * np.conj(f), size)[: nlags + 1] / n
    return ac / ac[0]


def column_period(x: np.ndarray) -> int | None:
    """The lag of the highest local maximum of x's autocorrelation past lag 3 (TSB-AD's find_length), or
    None when there is none in 3..300 (no period, or a constant column)."""
    x = np.asarray(x, dtype=np.float64)[:_MAX_ROWS]
    if len(x) < 16 or np.ptp(x) == 0:
        return None
    # scaled by a power of two, which is exact: the same lags for ordinary values, and values near 1e300 (or
    # 1e-300) no longer overflow (underflow) in the squares, which gave NaN, a RuntimeWarning and no period
    x = np.ldexp(x, -int(np.frexp(np.abs(x).max())[1]))
    base = 3
    ac = _acf(x, min(_MAX_LAG, len(x) - 1))[base:]
    peaks = argrelextrema(ac, np.greater)[0]
    if not len(peaks):
        return None
    lag = int(peaks[np.argmax(ac[peaks])])
    return lag + base if 3 <= lag <= 300 else None


def find_period(x: np.ndarray, fallback: int | None = PERIOD_FALLBACK) -> int | None:
    """The window length a series suggests: TSB-AD's find_length per column, the median over the columns that
    show a period (``fallback`` when none does). Not clipped: callers clip to [MIN_WINDOW, MAX_WINDOW]."""
    x = np.asarray(x, dtype=np.float64)
    cols = x.reshape(len(x), -1).T
    found = [p for p in (column_period(c) for c in cols) if p is not None]
    return int(np.median(found)) if found else fallback


def flat_windows(X: np.ndarray, w: int) -> np.ndarray:
    """The n-w+1 windows of X (n, d) as rows of w*d numbers, time-major (row t: X[t], X[t+1], ...,
    X[t+w-1] one after the other). A read-only view of X when X is C-contiguous, else of a contiguous copy."""
    X = np.ascontiguousarray(X)
    n, d = X.shape
    if n < w:
        return np.empty((0, w * d), X.dtype)
    item = X.itemsize
    return as_strided(X, shape=(n - w + 1, w * d), strides=(d * item, item), writeable=False)


def causal_windows(X: np.ndarray, w: int) -> np.ndarray:
    """One window per row of X (n, d), ending at that row: row t sees rows t-w+1..t, the first w-1 rows
    on X's first row repeated (edge padding), so every row is scored from its past alone. (n, w*d) view."""
    X = np.asarray(X)
    padded = np.concatenate([np.repeat(X[:1], w - 1, axis=0), X]) if w > 1 else X
    return flat_windows(padded, w)


def inside(starts: np.ndarray, n: int, w: int) -> np.ndarray:
    """Indices of the windows of ``flat_windows(X, w)`` (X: n rows, several series one after another, each
    beginning at a row of ``starts``) that lie inside one series: a window across two never happened."""
    first = np.arange(max(0, n - w + 1))
    ends = np.append(np.asarray(starts, dtype=np.int64)[1:], n)  # one past each series' last row
    series_end = ends[np.searchsorted(ends, first, side="right")]
    return first[first + w <= series_end]
