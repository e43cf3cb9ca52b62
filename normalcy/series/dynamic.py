"""Hundman et al.'s nonparametric dynamic threshold (KDD 2018, NASA's telemanom), shared by ``forecast`` (over
each row's recent errors) and offline events (``events.local_events``: over windows of the scored series, as
Orion's find_anomalies applies it).

Over a run of scores h: epsilon = mu + z sigma with z in 2.5, 3, ..., 12 chosen to maximise
(delta mu / mu + delta sigma / sigma) / (|e_a| + |E_seq|^2) (delta: how much mean and deviation drop when the
scores at or above epsilon are removed; e_a those scores widened by ``pad`` rows either side, E_seq the
contiguous sequences they form), kept only when at most 5 sequences and under half the scores are above it
(telemanom's guardrails; otherwise z = 12).
"""

from __future__ import annotations

import numpy as np

from normalcy.numerics.stats import TIE_STEP
from normalcy.series.base import MIN_THRESHOLD

Z_GRID = np.arange(2.5, 12.01, 0.5)  # telemanom's z values
Z_MAX = 12.0  # epsilon when no z passes the guardrails
MAX_SEQUENCES = 5  # telemanom: a threshold that leaves more sequences above it is not chosen


def sequences(h: np.ndarray, eps: np.ndarray, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """For each epsilon (ascending): how many errors the rows at or above it cover once each is widened
    by ``pad`` either side (telemanom's |e_a| after its buffer), and how many groups of more than one
    row they form (|E_seq|). Works on the errors above the lowest epsilon only, usually a few."""
    n = len(h)
    pos = np.flatnonzero(h >= eps[0])  # ascending positions
    if not len(pos):
        return np.zeros(len(eps), np.int64), np.zeros(len(eps), np.int64)
    sel = h[pos][None, :] >= eps[:, None]  # (z, K)
    far = np.iinfo(np.int64).max // 4
    prev = np.maximum.accumulate(np.where(sel, pos, -far), axis=1)
    prev = np.concatenate([np.full((len(eps), 1), -far), prev[:, :-1]], axis=1)  # the selected one before
    nxt = np.minimum.accumulate(np.where(sel, pos, far)[:, ::-1], axis=1)[:, ::-1]
    nxt = np.concatenate([nxt[:, 1:], np.full((len(eps), 1), far)], axis=1)  # the selected one after
    first = sel & (pos - prev > 2 * pad + 1)  # starts a group: its widened span does not touch the last one
    last = sel & (nxt - pos > 2 * pad + 1)
    lo, hi = np.maximum(pos - pad, 0), np.minimum(pos + pad, n - 1)
    covered = (np.where(last, hi + 1, 0) - np.where(first, lo, 0)).sum(axis=1)
    groups = first.sum(axis=1) - (first & last & (lo == hi)).sum(axis=1)
    return covered, groups


def dynamic_epsilon(h: np.ndarray, pad: int, relaxed: bool = False) -> float:
    """epsilon of the scores h (module docstring). Every z at once: the means and deviations below each
    epsilon from prefix sums of the sorted scores, the sequences from the few scores above the lowest one.
    Where no z passes the guardrails: mu + 12 sigma; ``relaxed``: the best z that leaves some score above
    it, and -inf where none does (many alike incidents raise sigma above their own height: the scores say
    nothing against any of them)."""
    mu, sigma, n = float(h.mean()), float(h.std()), len(h)
    if sigma <= 1e-12 * max(mu, 1e-300):  # every error alike (a constant series): one equal to them is not
        return max(mu * (1 + TIE_STEP), MIN_THRESHOLD)  # an anomaly, nor one of rounding's size
    eps = np.maximum(mu + Z_GRID * sigma, MIN_THRESHOLD)  # (z,)
    s = np.sort(h) - mu
    c1, c2 = np.r_[0.0, np.cumsum(s)], np.r_[0.0, np.cumsum(s * s)]
    n_below = np.searchsorted(s, eps - mu, side="left")  # errors under epsilon
    n_anom, n_seq = sequences(h, eps, pad)
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = c1[n_below] / n_below  # mean below, minus mu
        std_below = np.sqrt(np.maximum(c2[n_below] / n_below - shift * shift, 0.0))
        goodness = (-shift / mu + (sigma - std_below) / sigma) / (n_anom + n_seq**2)
    valid = (n_below < n) & (n_seq <= MAX_SEQUENCES) & (n_anom < 0.5 * n)
    if relaxed and not valid.any():
        valid = n_below < n
        if not valid.any():
            return -np.inf
    if valid.any():
        g = np.where(valid, goodness, -np.inf)
        epsilon = float(eps[np.flatnonzero(g == g.max())[-1]])  # ties: the larger z, as telemanom's '>='
    else:
        epsilon = max(mu + Z_MAX * sigma, MIN_THRESHOLD)
    return epsilon
