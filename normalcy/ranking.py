"""Active-learning re-ranking of a review queue from a person's labels.

A person reviews images in priority order and labels some of them (normal / anomalous, with an
optional 0-5 interest score). After each label the whole queue is re-ranked, so this has to be
fast: re-ranking N = 100,000 images with up to ~500 labels stays under 1 s on 2 cores
(``bench/rerank_speed.py`` measures it).

Strategies (``STRATEGIES``, ``make_ranker``):

``none`` (`NoRanking`)
    The detector's anomaly score; labels are ignored.

``neighbour`` (`NeighbourScore`)
    Astronomaly's NeighbourScore (Lochner & Bassett 2021, Astronomy and Computing 36, 100481;
    ``astronomaly/anomaly_detection/human_loop_learning.py`` in github.com/MichelleLochner/astronomaly,
    classes ``ScoreConverter`` and ``NeighbourScore``, methods ``anom_func`` / ``train_regression``
    / ``compute_nearest_neighbour``). The anomaly score is rescaled to 0-5 (``ScoreConverter``), a
    random-forest regression predicts the user score ``u`` of every object from its features, and
    the two are blended by each object's distance ``d`` to its nearest labelled object::

        f_u   = 0.1 + 0.85 * u / 5
        final = anomaly * tanh(exp(alpha * d / mean(d)) - 1 + arctanh(f_u))

    Close to a label (d ~ 0) the factor is ``f_u``, so what the person called boring sinks; far
    from every label it tends to 1 and the anomaly score rules. Astronomaly queries a k-d tree once
    per object in a Python loop; here the nearest-labelled distances are one blocked matrix product
    (``|x|^2 - 2 x.l + |l|^2``, float32, minimum over the labelled set; faiss's IndexFlatL2 did
    the same search in about twice the time here: 0.41 s against 0.19 s for 100,000 x 500 x 64),
    and the forest's trees are evaluated in parallel threads with a fixed summation order (so
    results do not depend on the thread count or timing). Differences from Astronomaly, for
    speed: 50 trees instead of 100, a third of the features tried per split instead of all.

``protege`` (`Protege`)
    The Protege variant (Astronomaly's ``anomaly_detection/protege.py``, class ``GaussianProcess``,
    whose EI follows Walmsley et al. and modAL's ``max_EI``): a Gaussian-process regression of the
    user score on the features
    (Matern nu=1.5 times a constant, plus a WhiteKernel; targets standardised like sklearn's
    ``normalize_y``), then expected improvement over the best user score seen so far::

        EI = (mu - best - xi) * Phi(z) + sd * phi(z),   z = (mu - best - xi) / sd

    (Astronomaly's default trade-off is xi = 0.5; ours is 0.01, a little more exploitative.)

    Cold start (no labels): the anomaly score, or, without one, the distance from the feature mean
    (a deterministic ordering that starts with the most unusual, hence diverse, objects).
    Speed: kernel hyper-parameters are fitted with sklearn's ``GaussianProcessRegressor`` on at
    most ``fit_max`` of the most recent labels; the posterior then uses the ``max_train`` most
    recent labels and is evaluated for all N objects with our own blocked float32 code (sklearn's
    ``predict(return_std=True)`` takes ~8 s for 100,000 objects and 500 labels: it builds the
    kernel with ``cdist`` and solves in float64). ``tests/test_ranking.py`` checks it against sklearn.

Features with more than ``PROJECT_DIM`` (64) dimensions are projected once onto their top-64
principal components (of a seeded sample of 8,192 rows), followed by a fixed random rotation of
those 64 axes (see ``_build``: it leaves distances alone and lets an axis-aligned forest learn
from a few labels). Euclidean distances, the forest and the GP all work in that space: it keeps
most of the variance of CNN embeddings and cuts the cost of every step ~20x at D = 1,280.
The projection (and a NaN check) is cached per features array, in a small module-level cache
keyed on the array's shape, dtype, column sums and a hash of sampled rows, so the first re-rank
of a new array pays ~0.4-0.8 s at 100,000 x 1,280 and later ones do not. Column sums are
recomputed every call (one pass, ~40 ms at 100,000 x 1,280), so a changed array is noticed.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
import threading
import warnings
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar, Iterator, Protocol, runtime_checkable

import numpy as np
from scipy.linalg import cho_solve, cholesky, eigh
from scipy.spatial.distance import cdist
from scipy.special import ndtr
from sklearn.ensemble import RandomForestRegressor

USER_SCORES: dict[str, float] = {"normal": 0.0, "anomalous": 5.0}
MAX_USER_SCORE = 5.0
PROJECT_DIM = 64
_CHUNK = 4096  # rows per block: a block of kernel values (4096 x 500 float32, 8 MB) stays in cache


def user_score(label: str | None, interest: int | None) -> float | None:
    """interest (0–5) when given, else 5 for 'anomalous', 0 for 'normal', None when unlabelled.

    ValueError for an unknown label or an interest that is not a whole number in 0..5.
    """
    if label is not None and label not in USER_SCORES:
        raise ValueError(f"unknown label {label!r}; expected one of {sorted(USER_SCORES)} or None")
    if interest is not None:
        if isinstance(interest, bool) or not isinstance(interest, numbers.Real):
            raise ValueError(f"interest must be a whole number 0..5, got {interest!r}")
        value = float(interest)
        if not (math.isfinite(value) and value == int(value) and 0 <= value <= MAX_USER_SCORE):
            raise ValueError(f"interest must be a whole number 0..5, got {interest!r}")
        return value
    if label is None:
        return None
    return USER_SCORES[label]


@runtime_checkable
class Ranker(Protocol):
    """Something that turns features, anomaly scores and labels into review priorities."""

    name: str

    def rank(self, features: np.ndarray, anomaly: np.ndarray | None, labelled: np.ndarray,
             user: np.ndarray) -> np.ndarray:
        """features N x D float32, anomaly N image scores (any scale, higher = more anomalous),
        labelled: int indices of labelled rows (in labelling order), user: their user scores (0–5,
        same length as labelled). Returns N float64 priorities: higher = show first."""
        ...


# ----------------------------------------------------------------------------- input checks


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


# ----------------------------------------------------------------------------- strategies


class NoRanking:
    """The detector's anomaly score as it is; labels are ignored (the baseline)."""

    name: str = "none"

    def rank(self, features: np.ndarray, anomaly: np.ndarray | None, labelled: np.ndarray,
             user: np.ndarray) -> np.ndarray:
        x, a, _, _ = _check_inputs(features, anomaly, labelled, user)
        if a is None:
            return _prepare(x).centre.copy()
        _column_sums(x)  # the same NaN check as the other strategies, without the projection
        return a.copy()


def nearest_labelled_distance(z: np.ndarray, sqnorm: np.ndarray, idx: np.ndarray,
                              n_jobs: int = 1) -> np.ndarray:
    """Euclidean distance of every row of z to its nearest row among z[idx], float64.

    Vectorised replacement for Astronomaly's per-object k-d tree loop: blocks of
    ``|x|^2 - 2 x.l + |l|^2`` (one float32 GEMM each) reduced with a row minimum. Labelled rows
    get exactly 0 (float32 cancellation would otherwise leave ~1e-3).
    """
    lab = np.ascontiguousarray(z[idx].T)
    lab_sq = sqnorm[idx]
    out = np.empty(z.shape[0], np.float32)

    def work(a: int, b: int) -> None:
        g = z[a:b] @ lab
        g *= -2.0
        g += lab_sq
        out[a:b] = g.min(axis=1)

    _over_blocks(z.shape[0], _CHUNK, work, n_jobs)
    out += sqnorm
    np.maximum(out, 0.0, out=out)
    dist = np.sqrt(out, dtype=np.float64)
    dist[idx] = 0.0
    return dist


class NeighbourScore:
    """Astronomaly's NeighbourScore: anomaly score blended with a random-forest user-score model.

    alpha: how fast trust in the predicted user score fades with distance from the labels
    (Astronomaly's tuning parameter; smaller trusts the labels further out). The forest uses
    a third of the features per split (``max_features``) to keep a 500-label refit ~0.1 s.
    """

    name: str = "neighbour"
    min_score: ClassVar[float] = 0.1   # Astronomaly's defaults: f_u runs 0.1 .. 0.95
    max_features: ClassVar[float] = 1 / 3

    def __init__(self, alpha: float = 1.0, n_estimators: int = 50, seed: int = 0,
                 n_jobs: int | None = None) -> None:
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        if n_estimators < 1:
            raise ValueError(f"n_estimators must be >= 1, got {n_estimators}")
        self.alpha = float(alpha)
        self.n_estimators = int(n_estimators)
        self.seed = int(seed)
        self.n_jobs = _usable_cpus() if n_jobs is None else max(1, int(n_jobs))

    def anom_func(self, distance: np.ndarray, user_pred: np.ndarray, anomaly05: np.ndarray) -> np.ndarray:
        """Astronomaly's blend: dominated by the predicted user score near labels, by the anomaly far away."""
        f_u = self.min_score + 0.85 * (user_pred / MAX_USER_SCORE)
        mean = float(distance.mean())
        scale = self.alpha / mean if mean > 0 else 0.0
        return anomaly05 * np.tanh(np.exp(distance * scale) - 1.0 + np.arctanh(f_u))

    def _predict(self, forest: RandomForestRegressor, z: np.ndarray) -> np.ndarray:
        """Mean of the trees' predictions: threads over fixed groups, summed in a fixed order."""
        trees = forest.estimators_
        groups = [trees[i:i + 5] for i in range(0, len(trees), 5)]

        def part(group: list) -> np.ndarray:
            acc = np.zeros(z.shape[0], np.float64)
            for tree in group:
                acc += tree.predict(z, check_input=False)
            return acc

        if self.n_jobs > 1 and len(groups) > 1:
            with ThreadPoolExecutor(min(self.n_jobs, len(groups))) as pool:
                parts = list(pool.map(part, groups))
        else:
            parts = [part(g) for g in groups]
        total = parts[0]
        for p in parts[1:]:
            total += p
        return total / len(trees)

    def rank(self, features: np.ndarray, anomaly: np.ndarray | None, labelled: np.ndarray,
             user: np.ndarray) -> np.ndarray:
        x, a, idx, u = _check_inputs(features, anomaly, labelled, user)
        prep = _prepare(x)
        base = _scale05(a if a is not None else prep.centre)
        if idx.size == 0:
            return base
        forest = RandomForestRegressor(n_estimators=self.n_estimators, max_features=self.max_features,
                                       random_state=self.seed, n_jobs=self.n_jobs)
        forest.fit(prep.z[idx], u)
        user_pred = self._predict(forest, prep.z)
        distance = nearest_labelled_distance(prep.z, prep.sqnorm, idx, self.n_jobs)
        return self.anom_func(distance, user_pred, base)


def _matern15(d: np.ndarray, length_scale: float) -> np.ndarray:
    r = d * (math.sqrt(3.0) / length_scale)
    return (1.0 + r) * np.exp(-r)


def gp_posterior(z: np.ndarray, sqnorm: np.ndarray, train: np.ndarray, y: np.ndarray,
                 constant: float, length_scale: float, noise: float,
                 jitter: float = 1e-10, n_jobs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and std of ``constant * Matern(length_scale, nu=1.5) + WhiteKernel(noise)``
    at every row of z, given targets y at rows ``train``; float64 results.

    Same numbers as sklearn's ``GaussianProcessRegressor(kernel, optimizer=None, alpha=jitter)``
    ``.predict(z, return_std=True)`` (std includes the white noise), but blocked and in float32
    for the N x n_train kernel and the ``k K^-1 k`` reduction (one GEMM per block): ~10x faster.
    """
    xt = z[train].astype(np.float64)
    k = constant * _matern15(cdist(xt, xt), length_scale)
    k[np.diag_indices_from(k)] += noise + jitter
    with _single_threaded_blas():
        chol = cholesky(k, lower=True)
        # Fold the constant into the weights: mean = (c m) alpha, reduction = c^2 m K^-1 m.
        alpha = (constant * cho_solve((chol, True), y)).astype(np.float32)
        k_inv = (constant ** 2 * cho_solve((chol, True), np.eye(len(train)))).astype(np.float32)
    # One GEMM gives r^2 = 3 |z - t|^2 / l^2 directly: [-2 s z, 1, s^2 |z|^2] . [s t, s^2 |t|^2, 1].
    s = np.float32(math.sqrt(3.0) / length_scale)
    xt = z[train] * s
    right = np.ascontiguousarray(
        np.hstack([xt, np.einsum("ij,ij->i", xt, xt)[:, None], np.ones((len(train), 1), np.float32)]).T)
    n, d = z.shape
    mean = np.empty(n, np.float32)
    reduction = np.empty(n, np.float32)

    def work(a: int, b: int) -> None:
        left = np.empty((b - a, d + 2), np.float32)
        np.multiply(z[a:b], -2.0 * s, out=left[:, :d])
        left[:, d] = 1.0
        np.multiply(sqnorm[a:b], s * s, out=left[:, d + 1])
        r = left @ right                       # r^2, r = sqrt(3) * distance / length_scale
        np.maximum(r, 0.0, out=r)
        np.sqrt(r, out=r)
        e = np.negative(r)
        np.exp(e, out=e)
        r += 1.0
        r *= e                                 # r is now the Matern block k(z, train) / constant
        mean[a:b] = r @ alpha
        reduction[a:b] = np.einsum("ij,ij->i", r @ k_inv, r)

    _over_blocks(n, _CHUNK, work, n_jobs)
    var = (constant + noise) - reduction.astype(np.float64)
    np.maximum(var, 1e-12, out=var)
    return mean.astype(np.float64), np.sqrt(var)


def _lbfgs(obj_func, initial_theta: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, float]:
    """sklearn's default optimiser (L-BFGS-B on the log marginal likelihood), capped at 50
    iterations: with noisy labels it otherwise wanders for hundreds (~1 s) for no useful gain."""
    from scipy.optimize import minimize

    res = minimize(obj_func, initial_theta, method="L-BFGS-B", jac=True, bounds=bounds,
                   options={"maxiter": 50})
    return res.x, float(res.fun)


def expected_improvement(mean: np.ndarray, std: np.ndarray, best: float, xi: float) -> np.ndarray:
    """EI of exceeding ``best + xi`` (Walmsley et al. 2022 / modAL's max_EI); >= 0."""
    gain = mean - best - xi
    z = gain / std
    ei = gain * ndtr(z) + std * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return np.maximum(ei, 0.0)


TIE_SHARE = 1e-6


class Protege:
    """Gaussian-process user-score regression with expected-improvement acquisition.

    xi: EI's exploration margin (user-score units, 0..5). max_train: the posterior uses at
    most this many labels, the most recent; fit_max: kernel hyper-parameters are fitted on at
    most this many (the most recent), which bounds the optimiser's cost. Far from every label
    EI is (nearly) flat, so a 1e-6 relative tie-break by the anomaly score (or distance from
    the mean) orders exact ties.
    """

    name: str = "protege"

    def __init__(self, xi: float = 0.01, seed: int = 0, max_train: int = 500, fit_max: int = 128,
                 n_jobs: int | None = None) -> None:
        if xi < 0:
            raise ValueError(f"xi must be >= 0, got {xi}")
        if max_train < 1 or fit_max < 1:
            raise ValueError(f"max_train and fit_max must be >= 1, got {max_train}, {fit_max}")
        self.xi = float(xi)
        self.seed = int(seed)
        self.max_train = int(max_train)
        self.fit_max = int(fit_max)
        self.n_jobs = _usable_cpus() if n_jobs is None else max(1, int(n_jobs))

    def fit_kernel(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
        """(constant, length_scale, noise) maximising sklearn's log marginal likelihood on (x, y)."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        pairs = cdist(x, x)[np.triu_indices(len(x), 1)]
        pairs = pairs[pairs > 0]
        ell = float(np.median(pairs)) if pairs.size else 1.0
        kernel = (ConstantKernel(1.0, (1e-2, 1e2))
                  * Matern(ell, (ell * 1e-2, ell * 1e2), nu=1.5)
                  + WhiteKernel(0.1, (1e-3, 1e1)))
        gp = GaussianProcessRegressor(kernel, optimizer=_lbfgs, normalize_y=False,
                                      n_restarts_optimizer=0, random_state=self.seed)
        with warnings.catch_warnings(), _single_threaded_blas():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(x, y)
        p = gp.kernel_.get_params()
        return float(p["k1__k1__constant_value"]), float(p["k1__k2__length_scale"]), float(p["k2__noise_level"])

    def rank(self, features: np.ndarray, anomaly: np.ndarray | None, labelled: np.ndarray,
             user: np.ndarray) -> np.ndarray:
        x, a, idx, u = _check_inputs(features, anomaly, labelled, user)
        prep = _prepare(x)
        base = a if a is not None else prep.centre
        if idx.size == 0:
            return base.copy()
        best = float(u.max())
        train, y = idx[-self.max_train:], u[-self.max_train:]
        y_mean, y_std = float(y.mean()), float(y.std())
        y_std = y_std if y_std > 0 else 1.0              # as sklearn's normalize_y
        yn = (y - y_mean) / y_std
        fit = slice(-self.fit_max, None)
        constant, length_scale, noise = self.fit_kernel(prep.z[train[fit]].astype(np.float64), yn[fit])
        mean, std = gp_posterior(prep.z, prep.sqnorm, train, yn, constant, length_scale, noise,
                                 n_jobs=self.n_jobs)
        ei = expected_improvement(y_mean + y_std * mean, y_std * std, best, self.xi)
        # EI explores where it is unsure; only exact ties fall back to the anomaly order. (A 1% share
        # of the anomaly score made it follow the detector whenever the first labels agreed, and it
        # then never found a defect class the detector ranks low: docs/benchmarks.md.)
        return ei + TIE_SHARE * max(float(ei.max()), 1e-12) * _scale05(base) / MAX_USER_SCORE


STRATEGIES: dict[str, type] = {"none": NoRanking, "neighbour": NeighbourScore, "protege": Protege}


def make_ranker(name: str, **kwargs) -> Ranker:
    """A ranker by strategy name ('none', 'neighbour', 'protege'), with its keyword arguments."""
    try:
        cls = STRATEGIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown ranking strategy {name!r}; choose one of: {', '.join(STRATEGIES)}") from None
    return cls(**kwargs)
