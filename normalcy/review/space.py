"""The space the review rankers work in, and the checks and threads they share.

Features with more than ``PROJECT_DIM`` (64) dimensions are projected once onto their top-64
principal components (of a seeded sample of 8,192 rows), followed by a fixed random rotation of
those 64 axes (see ``_build``: it leaves distances alone and lets an axis-aligned forest learn
from a few labels). Euclidean distances, the forest and the GP all work in that space: it keeps
most of the variance of CNN embeddings and cuts the cost of every step ~20x at D = 1,280.
The projection (and a NaN check) is cached per features array, in a small module-level cache
keyed on the array's shape, dtype, column sums and a hash of sampled rows, so the first re-rank
of a new array pays ~0.4-0.8 s at 100,000 x 1,280 and later ones do not. Column sums are
recomputed every call (one pass, ~40 ms at 100,000 x 1,280), so a changed array is noticed; a
caller that keeps one array for long (the review server) projects it once with :func:`project` and
passes that, so each re-rank reads 64 numbers per object instead of hundreds.

Past ``MAX_RANK_ROWS`` (100,000) objects a re-rank scores a working set of that size
(:func:`candidate_rows`: the labelled rows, the top half by the detector's order and a fixed sample
of the rest) and leaves the others NaN, to follow in the detector's order: the strategies' cost
grows with N: without it (``max_rows=10**7``) one re-rank of 1,000,000 x 512 took 2.3-3.9 s
(neighbour) and 0.3-9 s (protege) with 10-500 labels on the 2-core development machine while other
work ran, against the 1 s budget; with it, 0.13-0.96 s (``bench/rerank_speed.py --million``).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from scipy.linalg import eigh

MAX_USER_SCORE = 5.0
PROJECT_DIM = 64
MAX_RANK_ROWS = 100_000  # rows one re-rank scores; beyond them, the detector's order (candidate_rows)
_CHUNK = 4096  # rows per block: a block of kernel values (4096 x 500 float32, 8 MB) stays in cache


@dataclass(frozen=True)
class _Prepared:
    """Per-features-array work done once: the (projected) float32 features and derived values."""

    z: np.ndarray        # N x d float32, C-contiguous (d = min(D, PROJECT_DIM))
    sqnorm: np.ndarray   # N float32: |z|^2, for blocked distances
    centre: np.ndarray   # N float64: distance from the mean, the cold-start order without scores


_CACHE: OrderedDict[tuple, _Prepared] = OrderedDict()
_CACHE_SIZE = 4
_CACHE_LOCK = threading.Lock()


def _check_features(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"features must be a 2-D N x D array with N, D >= 1, got shape {x.shape}")
    if x.dtype.kind not in "fiu":
        raise ValueError(f"features must be numeric, got dtype {x.dtype}")
    return x


def _column_sums(x: np.ndarray) -> np.ndarray:
    """Column sums, which also reject NaN / inf in one pass (they propagate into the sums)."""
    colsum = x.sum(axis=0, dtype=np.float32 if x.dtype == np.float32 else np.float64)
    if not np.isfinite(colsum).all():
        bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
        if bad.size:  # (a finite float32 column may overflow its float32 sum: then nothing is bad)
            raise ValueError(f"features contain NaN or infinite values in {bad.size} row(s), "
                             f"first at row {int(bad[0])}")
    return colsum


def _prepare(x: np.ndarray) -> _Prepared:
    """Validate (finite) and project features, through the module cache."""
    colsum = _column_sums(x)
    rows = np.unique(np.linspace(0, x.shape[0] - 1, min(x.shape[0], 256)).astype(np.int64))
    digest = hashlib.blake2b(np.ascontiguousarray(x[rows]).tobytes(), digest_size=16)
    digest.update(colsum.tobytes())
    key = (x.shape, x.dtype.str, digest.hexdigest())
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        prep = _build(x)
        _CACHE[key] = prep
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
        return prep


def project(features: np.ndarray) -> np.ndarray:
    """The features as the rankers see them (at most PROJECT_DIM columns, float32): ranking these gives
    the same priorities as ranking the originals, which a caller may then drop (2 GB at 1,000,000 x 512)."""
    x = _check_features(features)
    _column_sums(x)  # NaN / inf named here, once
    return _build(x).z


def candidate_rows(base: np.ndarray, labelled: np.ndarray, max_rows: int) -> np.ndarray | None:
    """The rows a re-rank scores when there are more than ``max_rows`` (sorted), else None (all of them).

    Every labelled row; the top half of ``max_rows`` by ``base`` (the detector's order), which holds the
    whole top of a ``neighbour`` queue, since its priority never exceeds the scaled anomaly score;
    and a fixed seeded sample of the rest, where ``protege`` can still find what the detector ranks low.
    The set changes only with the labels, so the order does not jump between re-ranks.
    """
    n = base.shape[0]
    if n <= max_rows:
        return None
    top = max_rows // 2
    chosen = np.zeros(n, bool)
    chosen[np.argpartition(-base, top - 1)[:top]] = True
    rest = np.flatnonzero(~chosen)
    chosen[np.random.default_rng(0).choice(rest, max_rows - top, replace=False)] = True
    chosen[labelled] = True
    return np.flatnonzero(chosen)


def _spread(values: np.ndarray, rows: np.ndarray | None, n: int) -> np.ndarray:
    """Priorities of the scored rows placed among n, NaN for rows not scored (see candidate_rows)."""
    if rows is None:
        return values
    out = np.full(n, np.nan)
    out[rows] = values
    return out


def _build(x: np.ndarray) -> _Prepared:
    n, d = x.shape
    if d <= PROJECT_DIM:
        z = np.array(x, dtype=np.float32, order="C")  # a copy: the caller may change x later
    else:
        # PCA of a seeded row sample: top-64 eigenvectors of its covariance (exact, deterministic).
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(n, size=min(n, 8192), replace=False))
        block = x[sample].astype(np.float32)
        mean = block.mean(axis=0, dtype=np.float64)
        block -= mean.astype(np.float32)
        cov = (block.T @ block).astype(np.float64)
        with _single_threaded_blas():
            _, vecs = eigh(cov, subset_by_index=(d - PROJECT_DIM, d - 1))
        # Then a fixed random rotation of those 64 axes (distances unchanged). PCA packs the
        # difference between groups of objects into one or two axes; a random forest, which
        # splits on single axes, fitted on a handful of labels then splits on the many
        # within-group noise axes instead. Rotated, every axis carries some of that difference.
        # (Two clusters, 3 + 3 labels, a 16-dim structure in 300 dims: the liked cluster's AUC
        # against the disliked one was 0.00-0.01 without the rotation, 0.975-1.0 with it.)
        rotation, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((PROJECT_DIM, PROJECT_DIM)))
        w = np.ascontiguousarray(vecs @ rotation, dtype=np.float32)       # D x 64
        shift = (mean @ w).astype(np.float32)
        z = np.empty((n, PROJECT_DIM), np.float32)

        def work(a: int, b: int) -> None:
            rows = x[a:b] if x.dtype == np.float32 else x[a:b].astype(np.float32)
            np.subtract(rows @ w, shift, out=z[a:b])

        _over_blocks(n, 4 * _CHUNK, work, _usable_cpus())
    sqnorm = np.einsum("ij,ij->i", z, z)
    centred = z - z.mean(axis=0, dtype=np.float64).astype(np.float32)
    centre = np.sqrt(np.einsum("ij,ij->i", centred, centred)).astype(np.float64)
    return _Prepared(z=z, sqnorm=sqnorm, centre=centre)


def _check_inputs(features: np.ndarray, anomaly: np.ndarray | None, labelled: np.ndarray,
                  user: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """Shapes, ranges and finiteness; returns (features, anomaly f64, labelled i64, user f64).

    A row labelled twice keeps its last (most recent) score; the order of labelling is kept.
    """
    x = _check_features(features)
    n = x.shape[0]
    a = None
    if anomaly is not None:
        a = np.asarray(anomaly, dtype=np.float64)
        if a.shape != (n,):
            raise ValueError(f"anomaly must have shape ({n},) to match features {x.shape}, got {a.shape}")
        if not np.isfinite(a).all():
            first = int(np.flatnonzero(~np.isfinite(a))[0])
            raise ValueError(f"anomaly contains NaN or infinite values at row {first}")
    idx = np.asarray(labelled)
    if idx.size == 0:
        idx = np.zeros(0, np.int64)
    if idx.ndim != 1:
        raise ValueError(f"labelled must be a 1-D array of row indices, got shape {idx.shape}")
    if idx.dtype.kind not in "iu":
        raise ValueError(f"labelled must hold integer row indices, got dtype {idx.dtype}")
    idx = idx.astype(np.int64)
    u = np.asarray(user, dtype=np.float64)
    if u.size == 0:
        u = np.zeros(0)
    if u.ndim != 1:
        raise ValueError(f"user must be a 1-D array of scores, got shape {u.shape}")
    if u.shape != idx.shape:
        raise ValueError(f"user has {u.size} scores but labelled has {idx.size} indices")
    if idx.size:
        if idx.min() < 0 or idx.max() >= n:
            bad = idx[(idx < 0) | (idx >= n)][0]
            raise ValueError(f"labelled index {int(bad)} out of range for {n} rows")
        if not np.isfinite(u).all() or u.min() < 0 or u.max() > MAX_USER_SCORE:
            bad = u[~(np.isfinite(u) & (u >= 0) & (u <= MAX_USER_SCORE))][0]
            raise ValueError(f"user scores must be in 0..{MAX_USER_SCORE:g}, got {bad!r}")
        _, last_rev = np.unique(idx[::-1], return_index=True)
        keep = np.sort(idx.size - 1 - last_rev)
        idx, u = idx[keep], u[keep]
    return x, a, idx, u


def _scale05(scores: np.ndarray) -> np.ndarray:
    """Min-max onto 0..5, like Astronomaly's ScoreConverter (higher stays higher)."""
    lo, hi = float(scores.min()), float(scores.max())
    if hi - lo <= 0:
        return np.full(scores.shape, MAX_USER_SCORE)
    return MAX_USER_SCORE * (scores - lo) / (hi - lo)


_BLAS_LOCK = threading.Lock()
_BLAS_DEPTH = 0
_BLAS_LIMITER = None


@contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """Run BLAS/LAPACK on one thread while inside (process-wide; nests and is thread-safe).

    For small matrices (the GP fit's <= 500 x 500, the PCA's eigh) OpenBLAS's threads cost more
    than they save: on a busy 2-core machine a 128 x 128 Cholesky took 13 ms instead of 0.1 ms.
    The first entrant sets the limit and the last one out restores it, so concurrent re-ranks
    (a web server's threads) cannot leave BLAS stuck at one thread.
    """
    global _BLAS_DEPTH, _BLAS_LIMITER
    from threadpoolctl import ThreadpoolController

    with _BLAS_LOCK:
        if _BLAS_DEPTH == 0:
            _BLAS_LIMITER = ThreadpoolController().limit(limits=1, user_api="blas")
        _BLAS_DEPTH += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_DEPTH -= 1
            if _BLAS_DEPTH == 0 and _BLAS_LIMITER is not None:
                _BLAS_LIMITER.restore_original_limits()
                _BLAS_LIMITER = None


def _usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _over_blocks(n: int, block: int, work, n_jobs: int) -> None:
    """Run ``work(start, stop)`` over row blocks in ``n_jobs`` threads, BLAS single-threaded.

    Threads over independent blocks rather than multithreaded BLAS: every block's numbers are the
    same whatever the thread count (deterministic), numpy's element-wise passes run in parallel
    too (they release the GIL), and it degrades gracefully on a busy machine, where OpenBLAS's
    synchronised threads made these loops ~2x slower than one thread.
    """
    starts = range(0, n, block)
    with _single_threaded_blas():
        if n_jobs > 1 and len(starts) > 1:
            with ThreadPoolExecutor(min(n_jobs, len(starts))) as pool:
                for _ in pool.map(lambda a: work(a, min(a + block, n)), starts):
                    pass
        else:
            for a in starts:
                work(a, min(a + block, n))
