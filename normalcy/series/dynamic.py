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


def _levels(values: np.ndarray, bounds: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(C,) how many of its window's ascending ``bounds`` (B, z) each candidate value reaches, less one: the
    last z it is at or above (-1: none)."""
    return (values[:, None] >= bounds[rows]).sum(axis=1) - 1


def _from_level(rows: np.ndarray, level: np.ndarray, weights: np.ndarray, B: int) -> np.ndarray:
    """(B, z) sums of ``weights`` over each window's candidates at or above each z (``level`` >= z), added
    from the highest z down."""
    z = len(Z_GRID)
    at = np.bincount(rows * z + np.maximum(level, 0), np.where(level >= 0, weights, 0), minlength=B * z)
    return np.cumsum(at.reshape(B, z)[:, ::-1], axis=1)[:, ::-1]


def _between(rows: np.ndarray, low: np.ndarray, high: np.ndarray, weights: np.ndarray, B: int) -> np.ndarray:
    """(B, z) int64 sums of integer ``weights`` over each window's candidates for the z with low < z <= high."""
    z = len(Z_GRID)
    some = low < high
    r, w = rows[some], weights[some]
    at = np.bincount(np.concatenate([r * (z + 1) + low[some] + 1, r * (z + 1) + high[some] + 1]),
                     np.concatenate([w, -w]).astype(np.float64), minlength=B * (z + 1))
    return np.cumsum(at.reshape(B, z + 1), axis=1)[:, :z].round().astype(np.int64)  # integers: exact


def _reach(key: np.ndarray, level: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray]:
    """(C,) the highest ``level`` among the candidates up to ``s`` positions before each one (``key``: their
    ascending positions), and after it; -1 where there is none. Range maxima from a sparse table: a
    candidate's neighbours are among the few candidates, not the window's rows."""
    C = len(key)
    table = [level]  # table[k][i]: the highest level of candidates i .. i + 2^k - 1
    while 2 ** len(table) <= min(C, s):
        half = 2 ** (len(table) - 1)
        table.append(np.concatenate([np.maximum(table[-1][:-half], table[-1][half:]), table[-1][-half:]]))
    T = np.stack(table)

    def span_max(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # the highest level of candidates a .. b - 1
        width = np.maximum(b - a, 1)
        k = np.floor(np.log2(width)).astype(np.int64)
        top = np.maximum(T[k, np.minimum(a, C - 1)], T[k, np.maximum(b - 2 ** k, 0)])
        return np.where(b > a, top, -1)

    i = np.arange(C)
    before = span_max(np.searchsorted(key, key - s, side="left"), i)
    after = span_max(i + 1, np.searchsorted(key, key + s, side="right"))
    return before, after


def sequences(W: np.ndarray, n: np.ndarray, eps: np.ndarray, pad: int, rows: np.ndarray,
              cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each window (row of W, its first ``n`` values) and epsilon (ascending along axis 1): how many
    errors the errors at or above it cover once each is widened by ``pad`` either side (telemanom's |e_a|
    after its buffer), and how many groups of more than one row they form (|E_seq|). From the candidates
    ``rows``, ``cols`` only (row-major; every error at or above the lowest epsilon, usually a few): an error
    at or above epsilon z starts a group at z when no error within 2 pad + 1 rows before it reaches z
    (``_reach``), and ends one likewise; so each error starts and ends groups over a range of z, summed over
    every z at once."""
    B, m = W.shape
    if not len(rows):
        return np.zeros((B, len(Z_GRID)), np.int64), np.zeros((B, len(Z_GRID)), np.int64)
    level = _levels(W[rows, cols], eps, rows)
    s = 2 * pad + 1
    key = rows * (m + s + 1) + cols  # windows apart by more than s: no group reaches into the next window
    before, after = _reach(key, level, s)
    lo, hi = np.maximum(cols - pad, 0), np.minimum(cols + pad, n[rows] - 1)
    covered = _between(rows, after, level, hi + 1, B) - _between(rows, before, level, lo, B)
    single = lo == hi  # a group of one row (no buffer) is not a sequence
    groups = _between(rows, before, level, np.ones(len(rows)), B) - _between(
        rows[single], np.maximum(before, after)[single], level[single], np.ones(int(single.sum())), B)
    return covered, groups


def dynamic_epsilon(h: np.ndarray, pad: int, relaxed: bool = False) -> float:
    """epsilon of the scores h (module docstring; ``dynamic_epsilons`` of one window)."""
    return float(dynamic_epsilons(np.asarray(h, dtype=np.float64)[None], pad, relaxed=relaxed)[0])


def dynamic_epsilons(W: np.ndarray, pad: int, sizes: np.ndarray | None = None, relaxed: bool = False) -> np.ndarray:
    """(B,) epsilon of each window of scores: row r of W (B, m), its first ``sizes[r]`` values (all m where not
    given). Every z at once: the means and deviations below each epsilon from the sums of the few scores at or
    above it taken from the window's sums, the sequences from those scores (``sequences``), and every window
    at once: a threshold a row over 2,000 errors took 0.5 ms a row one window at a time (a sort and some forty
    array calls), most of a forecast's score. A window's mean and deviation are numpy's of it alone, as
    before. Where no z passes the guardrails: mu + 12 sigma; ``relaxed``: the best z that leaves some score
    above it, and -inf where none does (many alike incidents raise sigma above their own height: the scores
    say nothing against any of them)."""
    B, m = W.shape
    if sizes is None:  # numpy's mean and deviation of each window, to the bit: its sum / n, and its squares'
        n = np.full(B, m, np.int64)
        mu = W.sum(axis=1) / m
        D = W - mu[:, None]
        sq = (D * D).sum(axis=1)
        sigma = np.sqrt(sq / m)
    else:
        n = np.asarray(sizes, dtype=np.int64)
        mu = np.array([W[r, :n[r]].mean() for r in range(B)])
        sigma = np.array([W[r, :n[r]].std() for r in range(B)])
        D = np.where(np.arange(m)[None, :] < n[:, None], W - mu[:, None], 0.0)
        sq = (D * D).sum(axis=1)
    eps = np.maximum(mu[:, None] + Z_GRID * sigma[:, None], MIN_THRESHOLD)  # (B, z)
    thr = eps - mu[:, None]
    cand = D >= thr[:, :1]  # at or above the lowest epsilon (h >= eps: h - mu >= eps - mu, rounding is monotone)
    if sizes is not None:
        cand &= np.arange(m)[None, :] < n[:, None]
    rows, cols = np.divmod(np.flatnonzero(cand), m)
    d = D[rows, cols]
    above = _levels(d, thr, rows)  # errors not under each epsilon (as s < eps - mu, the sorted scores less mu)
    n_above = _from_level(rows, above, np.ones(len(d)), B).round().astype(np.int64)
    s1, s2 = _from_level(rows, above, d, B), _from_level(rows, above, d * d, B)
    n_below = n[:, None] - n_above  # errors under epsilon
    n_anom, n_seq = sequences(W, n, eps, pad, rows, cols)
    mu_, sigma_ = mu[:, None], sigma[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = (D.sum(axis=1)[:, None] - s1) / n_below  # mean below, minus mu
        std_below = np.sqrt(np.maximum((sq[:, None] - s2) / n_below - shift * shift, 0.0))
        goodness = (-shift / mu_ + (sigma_ - std_below) / sigma_) / (n_anom + n_seq**2)
    possible = n_below < n[:, None]
    valid = possible & (n_seq <= MAX_SEQUENCES) & (n_anom < 0.5 * n[:, None])
    if relaxed:
        valid = np.where(valid.any(axis=1)[:, None], valid, possible)
    g = np.where(valid, goodness, -np.inf)
    best = len(Z_GRID) - 1 - np.argmax((g == g.max(axis=1, keepdims=True))[:, ::-1], axis=1)  # ties: the larger z,
    chosen = np.take_along_axis(eps, best[:, None], axis=1)[:, 0]  # as telemanom's '>='
    none = np.maximum(mu + Z_MAX * sigma, MIN_THRESHOLD)
    epsilon = np.where(valid.any(axis=1), chosen, -np.inf if relaxed else none)
    # every error alike (a constant series): one equal to them is not an anomaly, nor one of rounding's size
    alike = sigma <= 1e-12 * np.maximum(mu, 1e-300)
    return np.where(alike, np.maximum(mu * (1 + TIE_STEP), MIN_THRESHOLD), epsilon)
