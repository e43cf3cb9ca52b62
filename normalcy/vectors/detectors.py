"""Anomaly detectors on feature vectors (embeddings, catalogue columns) with scikit-learn's API.

Each detector is a small scikit-learn estimator: ``fit(X)`` on normal rows only, then
``score_samples`` (higher = more normal, scikit-learn's convention), ``decision_function``
(``score_samples - offset_``; negative = anomaly), ``predict`` (-1 anomaly, 1 normal) and
``anomaly_score`` (``-score_samples``, higher = more anomalous, normalcy's convention).

All share one threshold rule: ``offset_`` is set so that a fraction ``fpr`` of normal rows is
flagged, measured on scores the detector did not fit on where it has them (cross-validated for
the Gaussian, leave-one-out for kNN and ECOD; IsolationForest's trees each see a small
subsample, so its training scores are used as they are). These out-of-sample scores are kept as
``calibration_scores_`` (of the training rows ``calibration_rows_``); the ensemble normalises each member by them.

Rows with NaN or inf are never scored silently: ``fit`` and the scoring methods raise a
ValueError that names them, and ``finite_rows`` lets a caller skip and report them instead.

A loaded detector is untrusted data until ``check_state`` has passed: it checks every learned
attribute's type, dtype, shape and range (and every tree's nodes) against ``n_features_in_``, because
scikit-learn and faiss index with them unchecked, and a crafted file would crash or hang scoring.
"""

from __future__ import annotations

import faiss
import numpy as np
import psutil
import torch
from scipy.stats import skew
from sklearn.base import BaseEstimator, OutlierMixin, clone
from sklearn.ensemble import IsolationForest
from sklearn.tree import ExtraTreeRegressor
from sklearn.tree._tree import Tree
from sklearn.utils.validation import check_is_fitted, validate_data

from normalcy.detectors.gaussian import _gaussian, _inverse, mahalanobis
from normalcy.numerics.ann import (
    check_ivfpq,
    empty_ivfpq,
    fit_ivfpq,
    ivfpq_index,
    row_by_row,
)

__all__ = ["GaussianDetector", "KNNDetector", "IForestDetector", "ECODDetector", "EnsembleDetector",
           "TooLarge", "finite_rows"]

MAX_GAUSSIAN_FEATURES = 4096  # d x d covariances and inverses: 128 MB each, minutes of fitting on 2 cores
ROW_BYTES = 8  # float64


class TooLarge(ValueError):
    """A fit refused before it starts: too many features for the detector, or more memory than is free."""


def finite_rows(X: np.ndarray) -> tuple[np.ndarray, str]:
    """A mask of the rows without NaN or inf, and a message naming the others ("" when all are finite)."""
    X = np.asarray(X, dtype=np.float64)
    mask = np.isfinite(X).all(axis=1) if X.ndim == 2 else np.isfinite(X)
    bad = np.flatnonzero(~mask)
    if not len(bad):
        return mask, ""
    shown = ", ".join(str(i) for i in bad[:10])
    more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
    return mask, f"{len(bad)} of {len(mask)} rows contain NaN or inf: rows {shown}{more} (counting from 0)"


def _array(owner: object, name: str, shape: tuple[int | None, ...], dtype: str | type = np.float64,
           value: object | None = None) -> np.ndarray:
    """``owner.name`` (or ``value``), checked to be an ndarray of ``shape`` (None: any length) and ``dtype``
    (a numpy type, or dtype kinds: "iu" any integer), with finite values if float."""
    a = getattr(owner, name, None) if value is None else value
    where = f"{type(owner).__name__}.{name}"
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{where}: expected an array, got {type(a).__name__}")
    if (a.dtype.kind not in dtype or a.dtype.itemsize > 8) if isinstance(dtype, str) else a.dtype != dtype:
        raise ValueError(f"{where}: dtype {a.dtype} is not what a fitted detector holds")
    if a.ndim != len(shape) or any(s is not None and s != g for s, g in zip(shape, a.shape)):
        want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{where}: shape {a.shape}, expected {want}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError(f"{where}: holds NaN or infinite values")
    return a


def _integer(owner: object, name: str, low: int, high: int) -> int:
    """``owner.name``, checked to be an integer in [low, high] (a float, a bool or a string is not)."""
    v = getattr(owner, name, None)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not low <= v <= high:
        raise ValueError(f"{type(owner).__name__}.{name}: expected an integer from {low} to {high}, got {v!r}")
    return int(v)


def _number(owner: object, name: str, low: float = -np.inf, high: float = np.inf) -> float:
    """``owner.name``, checked to be a finite real number in (low, high)."""
    v = getattr(owner, name, None)
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not (
            np.isfinite(v) and low < v < high):
        raise ValueError(f"{type(owner).__name__}.{name}: expected a finite number in ({low}, {high}), got {v!r}")
    return float(v)


def _no_shadowed_methods(obj: object) -> None:
    """Refuse an instance attribute that hides a method of its class (``score_samples = 3``)."""
    hidden = [k for k in vars(obj) if callable(getattr(type(obj), k, None))]
    if hidden:
        raise ValueError(f"{type(obj).__name__}: attribute {hidden[0]!r} hides a method")


def check_tree(tree: object, n_features: int, where: str) -> int:
    """Raise ValueError unless ``tree`` is a scikit-learn ``Tree`` that ``apply`` can walk safely; returns
    its node count. Its traversal follows child indices without bounds checks (one out of range reads
    past the node array; one pointing back loops forever): children must be both -1 (a leaf) or both
    after their parent and within the tree (after the parent also rules out cycles: scikit-learn adds
    children after their parent), split features within the ``n_features`` columns the tree is given,
    thresholds finite."""
    if type(tree) is not Tree:
        raise ValueError(f"{where}: expected a scikit-learn Tree, got {type(tree).__name__}")
    n = int(tree.node_count)
    left, right, feature = tree.children_left, tree.children_right, tree.feature
    if n < 1 or len(left) != n:
        raise ValueError(f"{where}: a tree of {n} nodes")
    node = np.arange(n)
    leaf = left == -1
    inner = ~leaf
    bad = (leaf != (right == -1)) | (inner & ((left <= node) | (left >= n) | (right <= node) | (right >= n)))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{where}: node {i} has children {int(left[i])} and {int(right[i])}, not -1 or "
                         f"nodes after it of the {n}")
    bad = inner & ((feature < 0) | (feature >= n_features) | ~np.isfinite(tree.threshold))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{where}: node {i} splits feature {int(feature[i])} at {float(tree.threshold[i])}, "
                         f"expected a feature below {n_features} and a finite threshold")
    return n


class _VectorDetector(OutlierMixin, BaseEstimator):
    """What every detector here shares: input checks, the normal-only threshold, the score conventions.

    A subclass implements ``_fit(X) -> calibration anomaly scores`` and ``_score(X) -> anomaly scores``.
    """

    fpr: float

    def fit(self, X, y=None):
        """Fit on normal rows only (y is ignored, as for every scikit-learn outlier detector)."""
        if not 0.0 < self.fpr < 1.0:
            raise ValueError(f"fpr must be in (0, 1), got {self.fpr!r}")
        X = self._checked(X, reset=True)
        self.check_size(*X.shape)
        self.calibration_rows_ = np.arange(len(X))  # which training rows the calibration scores are of
        self.calibration_scores_ = np.asarray(self._fit(X), dtype=np.float64)
        # The fraction fpr of normal scores lies above the threshold, so offset_ = -threshold.
        self.offset_ = -float(np.quantile(self.calibration_scores_, 1.0 - self.fpr))
        return self

    def anomaly_score(self, X) -> np.ndarray:
        """Higher = more anomalous (normalcy's convention)."""
        check_is_fitted(self)
        return np.asarray(self._score(self._checked(X, reset=False)), dtype=np.float64)

    def score_samples(self, X) -> np.ndarray:
        """Higher = more normal (scikit-learn's convention)."""
        return -self.anomaly_score(X)

    def decision_function(self, X) -> np.ndarray:
        """Negative for rows flagged at the target FPR."""
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        """-1 for anomalies, 1 for normal rows."""
        return np.where(self.decision_function(X) < 0, -1, 1)

    def check_size(self, n: int, d: int) -> None:
        """Raise TooLarge, before any work, when fitting n rows of d features would exceed what the detector
        handles or the memory now free (the rows themselves not counted: they are in memory already)."""
        self._check_features(d)
        need, free = self.fit_bytes(n, d), psutil.virtual_memory().available
        if need > free:
            raise TooLarge(f"fitting {type(self).__name__} on {n} rows x {d} features needs about "
                           f"{need / 2**20:,.0f} MB of memory, {free / 2**20:,.0f} MB is free; use fewer rows "
                           "or features (e.g. PCA)")

    def _check_features(self, d: int) -> None:
        """Raise TooLarge past the features the detector handles (none of its own limit by default)."""

    def fit_bytes(self, n: int, d: int) -> float:
        """Peak memory of a fit beyond the rows, an upper estimate: a few working copies of the rows."""
        return 4.0 * n * d * ROW_BYTES

    def _checked(self, X, reset: bool) -> np.ndarray:
        X = validate_data(self, X, reset=reset, dtype=np.float64, ensure_all_finite=False,
                          ensure_min_samples=2 if reset else 1)
        mask, message = finite_rows(X)
        if message:
            raise ValueError(f"{type(self).__name__}: {message}; drop them or fill them in first")
        return X

    def _fit(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _score(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    _learned: tuple[str, ...] = ()  # a subclass's own fitted attributes, checked by its _check_learned

    def check_state(self) -> None:
        """Raise ValueError unless the fitted state is one this class's ``fit`` could have made: every
        attribute known, each of the right type, dtype, shape and range. Run it on a loaded detector
        before scoring anything with it (``tables.load_vector_model`` does)."""
        known = {*self._get_param_names(), "n_features_in_", "feature_names_in_", "calibration_rows_",
                 "calibration_scores_", "offset_", *self._learned}
        unknown = sorted(set(vars(self)) - known)
        if unknown:
            raise ValueError(f"{type(self).__name__}: unexpected attribute {unknown[0]!r}")
        _no_shadowed_methods(self)
        _number(self, "fpr", 0.0, 1.0)
        d = _integer(self, "n_features_in_", 1, 2**31)
        if hasattr(self, "feature_names_in_"):
            names = _array(self, "feature_names_in_", (d,), "O")
            if not all(isinstance(v, str) for v in names):
                raise ValueError(f"{type(self).__name__}.feature_names_in_: expected column names")
        n = len(_array(self, "calibration_scores_", (None,)))
        _array(self, "calibration_rows_", (n,), "iu")
        _number(self, "offset_")
        self._check_learned(d)

    def _check_learned(self, d: int) -> None:
        """Check the subclass's own fitted attributes (``_learned``) for ``d`` features."""
        raise NotImplementedError


class GaussianDetector(_VectorDetector):
    """Mahalanobis distance to one Gaussian of the normal rows, with Ledoit-Wolf shrinkage (few rows, many
    dimensions), computed by the same code as the image detector ``gaussian``. The threshold comes from
    k-fold cross-validated distances: in-sample ones are too small when dimensions are many.

    Past ``max_memory_mb`` of rows (a million 512-d rows), scikit-learn's Ledoit-Wolf would need several
    full-size copies; the same estimate then comes from sums over chunks of rows (:class:`_Moments`),
    and each fold's Gaussian from the sums of all rows minus the fold's."""

    def __init__(self, fpr: float = 0.01, folds: int = 5, max_memory_mb: float = 1024.0,
                 random_state: int | None = None):
        self.fpr = fpr
        self.folds = folds
        self.max_memory_mb = max_memory_mb
        self.random_state = random_state

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
        n = len(X)
        folds = max(2, min(self.folds, n))
        order = np.random.default_rng(self.random_state).permutation(n)
        held_out = np.empty(n)
        if X.nbytes <= self.max_memory_mb * 2**20:
            self.location_, self.precision_ = _gaussian(X)
            for k in range(folds):
                held = order[k::folds]
                keep = np.setdiff1d(order, held)
                held_out[held] = _distance(X[held], *_gaussian(X[keep]))
            return held_out
        total = _Moments.of(X)
        self.location_, self.precision_ = total.gaussian()
        for k in range(folds):
            held = np.sort(order[k::folds])
            fold = _Moments.of(X, held)
            mean, precision = (total - fold).gaussian()
            for s in range(0, len(held), 65536):
                rows = held[s:s + 65536]
                held_out[rows] = _distance(X[rows], mean, precision)
        return held_out

    def _score(self, X: np.ndarray) -> np.ndarray:
        return _distance(X, self.location_, self.precision_)

    _learned = ("location_", "precision_")

    def _check_learned(self, d: int) -> None:
        _array(self, "location_", (d,))
        _array(self, "precision_", (d, d))


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
        """Mean and precision, as ``_gaussian`` (scikit-learn's ledoit_wolf) gives them for these rows."""
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
        shrunk = (1.0 - shrinkage) * cov
        shrunk.flat[:: p + 1] += shrinkage * mu
        return mu_x, _inverse(shrunk)


def _distance(X: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    return mahalanobis(torch.from_numpy(X), torch.from_numpy(mean), torch.from_numpy(precision)).numpy()


class KNNDetector(_VectorDetector):
    """Mean Euclidean distance to the k nearest normal rows, on features standardised by the training rows so
    that no column dominates by its units. A training row's calibration score leaves the row itself out.

    Search is exact (faiss flat) while the standardised rows fit in ``max_memory_mb``; above it they are
    compressed with faiss IVF-PQ (product quantisation, ``pq_dims_per_byte`` dimensions a byte: 32x smaller
    than float32 at 8) and searched in ``nprobe`` of ``4 sqrt(n)`` cells, with approximate distances. The index
    is kept as plain arrays (``cells_``, ``codebook_``, ``codes_``; see :mod:`normalcy.numerics.ann`), so the estimator
    saves with the rest and a saved model holds nothing for faiss to parse. Calibration scores come from at
    most ``max_calibration`` training rows (a quantile needs no more)."""

    def __init__(self, fpr: float = 0.01, n_neighbors: int = 5, max_memory_mb: float = 1024.0, nprobe: int = 8,
                 pq_dims_per_byte: int = 8, max_calibration: int = 20_000, random_state: int | None = None):
        self.fpr = fpr
        self.n_neighbors = n_neighbors
        self.max_memory_mb = max_memory_mb
        self.nprobe = nprobe
        self.pq_dims_per_byte = pq_dims_per_byte
        self.max_calibration = max_calibration
        self.random_state = random_state

    def fit_bytes(self, n: int, d: int) -> float:
        """The standardised rows (float32) and faiss' copy of them, and the float64 copy that exact distances
        are recomputed from; compressed past ``max_memory_mb``: the rows, a training sample and the codes."""
        rows32 = n * d * 4.0
        if rows32 <= self.max_memory_mb * 2**20:
            return 4.0 * rows32 + 2.0 * 4096 * (self.n_neighbors + 1) * d * ROW_BYTES
        return rows32 + min(n, 100_000) * d * 4.0 + n * max(1, d // self.pq_dims_per_byte)

    def _fit(self, X: np.ndarray) -> np.ndarray:
        if self.n_neighbors < 1:
            raise ValueError(f"n_neighbors must be at least 1, got {self.n_neighbors}")
        self.mean_ = X.mean(0)
        var = sum(((X[s:s + 65536] - self.mean_) ** 2).sum(0) for s in range(0, len(X), 65536)) / len(X)
        std = np.sqrt(var)  # in chunks: a million rows need no second full-size copy
        self.scale_ = np.where(std > 0, std, 1.0)
        Z = self._standardised(X)
        self.n_neighbors_ = min(self.n_neighbors, len(X) - 1)
        rng = np.random.default_rng(self.random_state)
        if Z.nbytes <= self.max_memory_mb * 2**20:
            self.train_ = Z
            self.cells_, self.codebook_, self.codes_ = empty_ivfpq(Z.shape[1])
        else:
            self.train_ = np.zeros((0, Z.shape[1]), dtype=np.float32)
            self.cells_, self.codebook_, self.codes_ = fit_ivfpq(Z, rng, self.pq_dims_per_byte)
        self._faiss = None
        calib = np.arange(len(Z))
        if len(Z) > self.max_calibration:
            calib = self.calibration_rows_ = np.sort(rng.choice(len(Z), self.max_calibration, replace=False))
        k = self.n_neighbors_
        dist, idx = self._search(Z[calib], k + 1)
        # Drop each row itself from its neighbours (or the farthest, if duplicates crowded it out).
        own = idx == calib[:, None]
        own[~own.any(1), -1] = True
        keep = ~own
        if self.train_.shape[0]:
            return self._mean_distance(Z[calib], idx[keep].reshape(len(calib), k))
        return np.sqrt(np.maximum(dist[keep].reshape(len(calib), k), 0)).mean(1)

    def _score(self, X: np.ndarray) -> np.ndarray:
        Z = self._standardised(X)
        dist, idx = self._search(Z, self.n_neighbors_)
        if self.train_.shape[0]:
            return self._mean_distance(Z, idx)
        return np.sqrt(np.maximum(dist, 0)).mean(1)

    def _standardised(self, X: np.ndarray) -> np.ndarray:
        Z = np.empty(X.shape, dtype=np.float32)
        for s in range(0, len(X), 65536):
            Z[s:s + 65536] = (X[s:s + 65536] - self.mean_) / self.scale_
        return Z

    def _search(self, Z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.train_.shape[0]:  # a flat index is a copy of the rows: built per call, nothing to save
            index = faiss.IndexFlatL2(Z.shape[1])
            index.add(self.train_)
            return index.search(Z, k)
        if getattr(self, "_faiss", None) is None:  # rebuilt from the arrays alone (ann.py), checked first
            check_ivfpq(self.cells_, self.codebook_, self.codes_, self.train_.shape[1])
            self._faiss = ivfpq_index(self.cells_, self.codebook_, self.codes_, self.nprobe, precompute=True)
        self._faiss.nprobe = self.nprobe
        # Row by row, a row scores the same in any batch and on any number of threads (one process or Ray
        # workers), at some speed (bench/scale_vectors.py).
        with row_by_row():
            dist, idx = self._faiss.search(Z, k)
        # Cells too small to hold k rows: a missing neighbour counts as the farthest one found.
        missing = idx < 0
        if missing.any():
            found = np.where(missing, -np.inf, dist).max(1, keepdims=True)
            dist = np.where(missing, found, dist)
        return dist, idx

    def _mean_distance(self, Z: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Distances recomputed in float64 for the neighbours faiss found: exact, and the same for a row
        whichever batch it comes in."""
        out = np.empty(len(Z))
        train = self.train_.astype(np.float64)
        for start in range(0, len(Z), 4096):
            z = Z[start:start + 4096].astype(np.float64)
            d = train[idx[start:start + 4096]] - z[:, None, :]
            out[start:start + 4096] = np.sqrt((d * d).sum(-1)).mean(1)
        return out

    # (_faiss: the search index built from the arrays on first use; never saved, see __setstate__)
    _learned = ("mean_", "scale_", "n_neighbors_", "train_", "cells_", "codebook_", "codes_", "_faiss")

    def _check_learned(self, d: int) -> None:
        _array(self, "mean_", (d,))
        if (_array(self, "scale_", (d,)) <= 0).any():
            raise ValueError("KNNDetector.scale_: must be positive")
        rows = len(_array(self, "train_", (None, d), np.float32))
        cells = _array(self, "cells_", (None, d), np.float32)
        codebook = _array(self, "codebook_", (None, None, None), np.float32)
        codes = _array(self, "codes_", (None, None), np.uint8)
        if not rows:  # compressed: the IVF-PQ arrays must make an index of d-dimensional rows
            check_ivfpq(cells, codebook, codes, d)
            rows = len(codes)
        _integer(self, "n_neighbors_", 1, rows)
        _integer(self, "nprobe", 1, 2**31)

    def index_nbytes(self) -> int:
        """Bytes kept for search: the standardised rows, or the IVF-PQ arrays."""
        check_is_fitted(self)
        return sum(a.nbytes for a in (self.train_, self.cells_, self.codebook_, self.codes_))

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_faiss", None)  # rebuilt from the arrays on first use
        return state

    def __setstate__(self, state: dict) -> None:
        state.pop("_faiss", None)  # never saved: a file that holds one holds no faiss index
        if "index_" in state:  # saved before 3 December 2026 (evening), with a faiss serialisation no longer read
            if np.asarray(state["index_"]).size:
                raise ValueError("this KNNDetector holds a faiss serialisation (saved by an earlier normalcy), "
                                 "which is no longer parsed: fit it again")
            del state["index_"]
            state.update(zip(("cells_", "codebook_", "codes_"), empty_ivfpq(np.asarray(state["train_"]).shape[1])))
        super().__setstate__(state)


class IForestDetector(_VectorDetector):
    """scikit-learn's IsolationForest with the shared threshold. Each tree sees at most 256 rows, so the
    training rows' scores are nearly out of sample and serve as calibration scores."""

    def __init__(self, fpr: float = 0.01, n_estimators: int = 100, max_samples: int | float | str = "auto",
                 max_features: float = 1.0, n_jobs: int | None = None, random_state: int | None = None):
        self.fpr = fpr
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.max_features = max_features
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _fit(self, X: np.ndarray) -> np.ndarray:
        self.forest_ = IsolationForest(n_estimators=self.n_estimators, max_samples=self.max_samples,
                                       max_features=self.max_features, n_jobs=self.n_jobs,
                                       random_state=self.random_state).fit(X)
        return self._score(X)

    def _score(self, X: np.ndarray) -> np.ndarray:
        return -self.forest_.score_samples(X)

    _learned = ("forest_",)

    def _check_learned(self, d: int) -> None:
        """The forest's trees, the features each is given and the per-node path lengths scoring reads."""
        f = self.forest_
        if type(f) is not IsolationForest:
            raise ValueError(f"IForestDetector.forest_: expected an IsolationForest, got {type(f).__name__}")
        _no_shadowed_methods(f)
        if _integer(f, "n_features_in_", 1, 2**31) != d or hasattr(f, "feature_names_in_"):
            raise ValueError(f"IForestDetector.forest_: fitted on other features than the detector's {d}")
        width = _integer(f, "_max_features", 1, d)  # scoring gives each tree these many columns
        _integer(f, "_max_samples", 1, 2**31)
        _integer(f, "verbose", 0, 100)
        trees = f.estimators_
        parts = (f.estimators_features_, f._decision_path_lengths, f._average_path_length_per_tree)
        if not isinstance(trees, list) or not trees or any(not isinstance(p, (list, tuple)) or len(p) != len(trees)
                                                           for p in parts):
            raise ValueError("IForestDetector.forest_: estimators_ and their features and path lengths must be "
                             "sequences of one length")
        for i, (est, features, depths, average) in enumerate(zip(trees, *parts)):
            where = f"IForestDetector.forest_.estimators_[{i}]"
            if type(est) is not ExtraTreeRegressor:
                raise ValueError(f"{where}: expected an ExtraTreeRegressor, got {type(est).__name__}")
            _no_shadowed_methods(est)
            features = _array(f, f"estimators_features_[{i}]", (width,), "iu", features)
            if len(features) and not 0 <= features.min() <= features.max() < d:
                raise ValueError(f"{where}: uses features outside the {d} columns")
            n = check_tree(est.tree_, width, where)
            _array(f, f"_decision_path_lengths[{i}]", (n,), "iuf", depths)
            _array(f, f"_average_path_length_per_tree[{i}]", (n,), value=average)


class ECODDetector(_VectorDetector):
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
        with np.errstate(invalid="ignore", divide="ignore"):
            self.skewness_ = np.nan_to_num(skew(X, axis=0))
        return self._tails(X, 0)

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self._tails(X, 1)

    _learned = ("sorted_", "skewness_")

    def _check_learned(self, d: int) -> None:
        if (np.diff(_array(self, "sorted_", (d, None)), axis=1) < 0).any() or not self.sorted_.shape[1]:
            raise ValueError("ECODDetector.sorted_: each feature's training values must be sorted, and not empty")
        _array(self, "skewness_", (d,))

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


class EnsembleDetector(_VectorDetector):
    """The mean of its members' anomaly scores, each first put in units of its own calibration scores
    (minus their mean, over their standard deviation), so that no member dominates by its scale.

    ``members`` defaults to a Gaussian (global correlations between features) and kNN (local, multimodal
    structure): they fail in different places, and both are quick."""

    def __init__(self, members: list | None = None, fpr: float = 0.01, random_state: int | None = None):
        self.members = members
        self.fpr = fpr
        self.random_state = random_state

    def _members(self) -> list:
        members = self.members if self.members is not None else [GaussianDetector(), KNNDetector()]
        if not members:
            raise ValueError("EnsembleDetector needs at least one member")
        return members

    def _check_features(self, d: int) -> None:
        """Each member's limit, named as the ensemble's (the memory check counts all members' fits)."""
        for member in self._members():
            try:
                member._check_features(d)
            except TooLarge as err:
                raise TooLarge(f"{type(self).__name__}'s member {err}") from None

    def fit_bytes(self, n: int, d: int) -> float:
        """Members fit one after the other, each keeping what it learned: the sum bounds the peak."""
        return float(sum(m.fit_bytes(n, d) for m in self._members()))

    def _fit(self, X: np.ndarray) -> np.ndarray:
        members = self._members()
        self.members_ = []
        for member in members:
            member = clone(member)
            if "random_state" in member.get_params() and self.random_state is not None:
                member.set_params(random_state=self.random_state)
            self.members_.append(member.fit(X))
        self.center_ = np.array([m.calibration_scores_.mean() for m in self.members_])
        self.spread_ = np.maximum([m.calibration_scores_.std() for m in self.members_], 1e-12)
        # The training rows every member has an out-of-sample score for (kNN samples a large training set).
        common = self.members_[0].calibration_rows_
        for m in self.members_[1:]:
            common = np.intersect1d(common, m.calibration_rows_)
        self.calibration_rows_ = common
        return self._combined(np.stack([m.calibration_scores_[np.searchsorted(m.calibration_rows_, common)]
                                        for m in self.members_]))

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self._combined(np.stack([m.anomaly_score(X) for m in self.members_]))

    _learned = ("members_", "center_", "spread_")

    def _check_learned(self, d: int) -> None:
        """Each member is checked as a detector of its own (an ensemble of ensembles is not one fit makes)."""
        members = self.members_
        if not isinstance(members, list) or not members:
            raise ValueError("EnsembleDetector.members_: expected a list of fitted detectors")
        for m in members:
            if not isinstance(m, _VectorDetector) or isinstance(m, EnsembleDetector):
                raise ValueError(f"EnsembleDetector.members_: {type(m).__name__} is not a member detector")
            m.check_state()
            if m.n_features_in_ != d:
                raise ValueError(f"EnsembleDetector.members_: a {type(m).__name__} of {m.n_features_in_} features")
        _array(self, "center_", (len(members),))
        if (_array(self, "spread_", (len(members),)) <= 0).any():
            raise ValueError("EnsembleDetector.spread_: must be positive")

    def _combined(self, scores: np.ndarray) -> np.ndarray:
        return ((scores - self.center_[:, None]) / self.spread_[:, None]).mean(0)
