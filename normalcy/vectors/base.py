"""What every vector detector shares: the scikit-learn estimator base, the threshold, the input and state checks.

Each detector (``gaussian.py``, ``knn.py``, ``iforest.py``, ``ecod.py``, ``ensemble.py``; by name in
``registry.py``) is a small scikit-learn estimator: ``fit(X)`` on normal rows only, then
``score_samples`` (higher = more normal, scikit-learn's convention), ``decision_function``
(``score_samples - offset_``; negative = anomaly), ``predict`` (-1 anomaly, 1 normal) and
``anomaly_score`` (``-score_samples``, higher = more anomalous, normalcy's convention).

All share one threshold rule: ``offset_`` is set so that a fraction ``fpr`` of normal rows is
flagged, measured on scores the detector did not fit on where it has them (cross-validated for
the Gaussian, leave-one-out for kNN and ECOD; IsolationForest's trees each see a small
subsample, so its training scores are used as they are). These out-of-sample scores are kept as
``calibration_scores_`` (of the training rows ``calibration_rows_``); the ensemble normalises each member by them.
And one decision rule, normalcy's everywhere: a row whose anomaly score reaches the threshold
(``score >= threshold``) is an anomaly.

Rows with NaN or inf are never scored silently: ``fit`` and the scoring methods raise a
ValueError that names them, and ``finite_rows`` lets a caller skip and report them instead.

A loaded detector is untrusted data until ``check_state`` has passed: it checks every learned
attribute's type, dtype, shape and range (and every tree's nodes) against ``n_features_in_``, because
scikit-learn and faiss index with them unchecked, and a crafted file would crash or hang scoring.
"""

from __future__ import annotations

import numpy as np
import psutil
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from normalcy.errors import InputError, fpr_out_of_range
from normalcy.numerics.stats import threshold_at

__all__ = ["ROW_BYTES", "SAFE_EXPONENT", "ColumnScaled", "TooLarge", "VectorDetector", "check_array", "check_budget",
           "check_integer", "check_number", "check_seed", "column_scale", "finite_rows", "no_shadowed_methods",
           "not_numeric_columns", "plain", "plain_params", "scaled", "sparse_columns"]

ROW_BYTES = 8  # float64
# Columns whose largest magnitude lies beyond 2**+-128 (3.4e38, float32's range) are scaled before a fit squares
# them: a covariance's fourth powers of a 1e77 value already overflow float64, and 1e308 squared is inf.
SAFE_EXPONENT = 128


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


def complex_values(data: object) -> str:
    """What to do with complex numbers in an array, a list, a pandas Series or DataFrame, else "". Why: numpy casts
    them to float dropping the imaginary part with only a ComplexWarning (a series was fitted on its real part),
    and scikit-learn said "Complex data not supported" followed by the whole array."""
    dtypes = getattr(data, "dtypes", None)
    if dtypes is not None and hasattr(dtypes, "items"):  # a DataFrame: its columns named
        names = [repr(name) for name, dtype in dtypes.items() if getattr(dtype, "kind", "") == "c"]
        what = f"DataFrame column(s) {', '.join(names[:5])} hold" if names else ""
    else:
        dtype = getattr(data, "dtype", None)
        if dtype is None and isinstance(data, (list, tuple)):
            try:
                dtype = np.asarray(data).dtype
            except (ValueError, TypeError):  # ragged, or not numbers: the caller's own check names it
                dtype = None
        what = f"the values are {dtype}, which hold" if getattr(dtype, "kind", "") == "c" else ""
    if not what:
        return ""
    return (f"{what} complex numbers, and a detector takes real ones: give their real part (.real), their "
            "magnitude (np.abs) or both as columns")


def not_numeric_columns(X: object) -> str:
    """What keeps a pandas DataFrame's columns from being numbers, naming the first few, else "" (not a frame,
    or every column is numbers). scikit-learn said "could not convert string to float: 'x'" for a categorical
    or text column and "The DType <class 'numpy.dtypes.DateTime64DType'> could not be promoted" for dates,
    naming no column; a table file's such columns are left out of the features with a note (``read_table``)."""
    dtypes = getattr(X, "dtypes", None)
    if dtypes is None or not hasattr(dtypes, "items"):
        return ""
    said = []
    for name, dtype in dtypes.items():
        kind = getattr(dtype, "kind", "O")
        categories = getattr(dtype, "categories", None)
        if categories is not None and getattr(categories.dtype, "kind", "O") not in "biuf":
            shown = ", ".join(repr(c) for c in list(categories[:3])) + (", ..." if len(categories) > 3 else "")
            said.append(f"{name!r} is categorical ({shown}): encode it (its .cat.codes, or pandas.get_dummies)")
        elif kind in "mM":
            said.append(f"{name!r} holds {dtype}: turn it into numbers (seconds, say) or drop it")
        elif kind in "OSU" and categories is None:
            try:
                np.asarray(X[name], dtype=np.float64)
            except (ValueError, TypeError):
                text = next((v for v in X[name] if not _is_number(v)), None)
                said.append(f"{name!r} holds text ({str(text)[:40]!r}), not numbers: encode it or drop it")
    if not said:
        return ""
    more = f"; and {len(said) - 5} more such columns" if len(said) > 5 else ""
    return "DataFrame column " + "; column ".join(said[:5]) + more + "; a detector fits columns of numbers"


def sparse_columns(X: object) -> str:
    """What to do with a pandas DataFrame's sparse columns (SparseDtype), naming the first few, else "". Its
    detectors fit dense rows: scikit-learn said "fill value must be 0 when converting to COO matrix" for a NaN-filled
    sparse frame, and for a 0-filled one to call ``.toarray()``, which a DataFrame does not have. Not densified
    here: a sparse frame may be far larger dense than the memory free."""
    dtypes = getattr(X, "dtypes", None)
    if dtypes is None or not hasattr(dtypes, "items"):
        return ""
    sparse = [repr(name) for name, dtype in dtypes.items() if type(dtype).__name__ == "SparseDtype"]
    if not sparse:
        return ""
    shown = ", ".join(sparse[:5]) + (f" and {len(sparse) - 5} more" if len(sparse) > 5 else "")
    return (f"DataFrame column(s) {shown} are sparse (pandas SparseDtype); a detector fits dense rows: densify it "
            "first (X.astype(float))")


def _is_number(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
        return True
    except (ValueError, TypeError):
        return False


def column_scale(X: np.ndarray, chunk: int = 65536, limit: int = SAFE_EXPONENT) -> np.ndarray:
    """Per column, the factor a fit multiplies it by first: 1, or, for a column whose largest magnitude lies
    beyond 2**+-limit (a finite 1e308 in a table), the power of two that brings it into [0.5, 1).

    Why: the Gaussian's covariance and kNN's standard deviation square the values, and such columns overflow
    (inf, then NaN: a crash or a garbage threshold) or underflow to zero. A power of two scales exactly, and
    ordinary columns keep factor 1, so what fitted before fits bit for bit as it did."""
    top = np.zeros(X.shape[1])
    for s in range(0, len(X), chunk):  # no full-size |X|
        top = np.maximum(top, np.abs(X[s:s + chunk]).max(axis=0, initial=0.0))
    _, exponent = np.frexp(top)  # top = m * 2**exponent, 0.5 <= m < 1
    outside = (top > 0) & (np.abs(exponent) > limit)
    return np.where(outside, np.ldexp(1.0, -exponent), 1.0)


def scaled(X: np.ndarray, factor: np.ndarray | None) -> np.ndarray:
    """X times ``column_scale``'s factors: X itself (no copy of a big table) where every factor is 1 or None."""
    return X if factor is None or (factor == 1.0).all() else X * factor


class ColumnScaled:
    """For a detector whose arithmetic overflows on columns of values near 1e308 (a covariance squares them;
    scikit-learn's trees hold float32): such columns are multiplied by a power of two (``scale_``, from
    ``column_scale``) at fit and at scoring, every other column by 1, so an ordinary table fits as before.
    Models saved before ``scale_`` was kept have none: factors 1."""

    scale_limit = SAFE_EXPONENT  # beyond 2**+-scale_limit a column is scaled

    def _fit_scale(self, X: np.ndarray) -> np.ndarray:
        self.scale_ = column_scale(X, limit=self.scale_limit)
        return self._scaled(X)

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        return scaled(X, getattr(self, "scale_", None))

    def _check_scale(self, d: int) -> None:
        if getattr(self, "scale_", None) is not None and (check_array(self, "scale_", (d,)) <= 0).any():
            raise ValueError(f"{type(self).__name__}.scale_: must be positive")


def check_array(owner: object, name: str, shape: tuple[int | None, ...], dtype: str | type = np.float64,
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


def check_integer(owner: object, name: str, low: int, high: int) -> int:
    """``owner.name``, checked to be an integer in [low, high] (a float, a bool or a string is not)."""
    v = getattr(owner, name, None)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not low <= v <= high:
        raise ValueError(f"{type(owner).__name__}.{name}: expected an integer from {low} to {high}, got {v!r}")
    return int(v)


def check_number(owner: object, name: str, low: float = -np.inf, high: float = np.inf) -> float:
    """``owner.name``, checked to be a finite real number in (low, high)."""
    v = getattr(owner, name, None)
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not (
            np.isfinite(v) and low < v < high):
        raise ValueError(f"{type(owner).__name__}.{name}: expected a finite number in ({low}, {high}), got {v!r}")
    return float(v)


def check_seed(owner: object, name: str = "random_state") -> None:
    """``owner.name``, checked to be what scikit-learn takes as a seed: None, an integer from 0 to 2**32 - 1, or a
    numpy RandomState or Generator (a string or -1 was a TypeError or ValueError from numpy, naming nothing)."""
    v = getattr(owner, name, None)
    if v is None or isinstance(v, (np.random.RandomState, np.random.Generator)):
        return
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < 2**32:
        raise ValueError(f"{type(owner).__name__}.{name}: expected None or a seed, an integer from 0 to 2**32 - 1, "
                         f"got {v!r}")


def check_budget(owner: object, name: str = "max_memory_mb") -> None:
    """``owner.name``, a memory budget in MB: a positive number, or inf for none (None or "1" was a TypeError
    from deep inside the fit; 0, a negative number or NaN silently compressed every table)."""
    v = getattr(owner, name, None)
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not v > 0:
        raise ValueError(f"{type(owner).__name__}.{name}: expected a positive number of MB (inf: no budget), got {v!r}")


def plain(value: object) -> object:
    """A numpy scalar as the Python number it equals; anything else as it is (``plain_params`` says why)."""
    return value.item() if isinstance(value, np.generic) else value


def plain_params(det: object) -> None:
    """Set a detector's numpy-scalar parameters (``fpr=np.float32(0.05)``, ``n_neighbors`` from a grid's
    ``np.arange``) to the Python numbers they equal, and its members' (``members``, ``members_``). Why: skops
    saves a numpy scalar as a numpy node, which loading a vector model refuses (only what fit makes is allowed),
    so such a model saved without a word and could never be loaded."""
    det.set_params(**{name: plain(value) for name, value in det.get_params(deep=False).items()
                      if isinstance(value, np.generic)})
    for member in [*(getattr(det, "members", None) or ()), *getattr(det, "members_", ())]:
        plain_params(member)


def no_shadowed_methods(obj: object) -> None:
    """Refuse an instance attribute that hides a method of its class (``score_samples = 3``)."""
    hidden = [k for k in vars(obj) if callable(getattr(type(obj), k, None))]
    if hidden:
        raise ValueError(f"{type(obj).__name__}: attribute {hidden[0]!r} hides a method")


class VectorDetector(OutlierMixin, BaseEstimator):
    """What every detector here shares: input checks, the normal-only threshold, the score conventions.

    A subclass implements ``_fit(X) -> calibration anomaly scores`` and ``_score(X) -> anomaly scores``.
    """

    fpr: float

    def fit(self, X, y=None):
        """Fit on normal rows only (y is ignored, as for every scikit-learn outlier detector)."""
        self._check_params()
        X = self._checked(X, reset=True)
        self.check_size(*X.shape)
        self.n_samples_fit_ = len(X)  # the rows fitted: the calibration scores may be of a sample of them (kNN)
        self.calibration_rows_ = np.arange(len(X))  # which training rows the calibration scores are of
        self.calibration_scores_ = np.asarray(self._fit(X), dtype=np.float64)
        # The fraction fpr of normal scores lies above the threshold, so offset_ = -threshold.
        self.offset_ = -threshold_at(self.calibration_scores_, self.fpr)
        self._threshold_fpr = float(self.fpr)  # what save compares fpr with (check_fpr_unchanged)
        return self

    def anomaly_score(self, X) -> np.ndarray:
        """Higher = more anomalous (normalcy's convention)."""
        check_is_fitted(self)
        return np.asarray(self._score(self._checked(X, reset=False)), dtype=np.float64)

    def score_samples(self, X) -> np.ndarray:
        """Higher = more normal (scikit-learn's convention)."""
        return -self.anomaly_score(X)

    def decision_function(self, X) -> np.ndarray:
        """Zero or negative for rows flagged at the target FPR."""
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        """-1 for anomalies (anomaly score at or above the threshold, normalcy's one rule), 1 for normal rows."""
        return np.where(self.anomaly_score(X) >= -self.offset_, -1, 1)

    def check_size(self, n: int, d: int) -> None:
        """Raise TooLarge, before any work, when fitting n rows of d features would exceed what the detector
        handles or the memory now free (the rows themselves not counted: they are in memory already)."""
        self._check_features(d)
        need, free = self.fit_bytes(n, d), psutil.virtual_memory().available
        if need > free:
            raise TooLarge(f"fitting {type(self).__name__} on {n} rows x {d} features needs about "
                           f"{need / 2**20:,.0f} MB of memory, {free / 2**20:,.0f} MB is free; use fewer rows "
                           "or features (e.g. PCA)")

    def _check_params(self) -> None:
        """Raise ValueError naming a parameter out of range: at fit, before any work, and by ``check_state`` on
        load, one rule for both, so that a model fit accepts is one load accepts (and None or "0.1" is named,
        not a TypeError from deep inside the fit)."""
        problem = fpr_out_of_range(getattr(self, "fpr", None), f"{type(self).__name__}.fpr")
        if problem:
            raise ValueError(problem)
        check_number(self, "fpr", 0.0, 1.0)
        if "random_state" in self._get_param_names():
            check_seed(self)

    def _check_features(self, d: int) -> None:
        """Raise TooLarge past the features the detector handles (none of its own limit by default)."""

    def fit_bytes(self, n: int, d: int) -> float:
        """Peak memory of a fit beyond the rows, an upper estimate: a few working copies of the rows."""
        return 4.0 * n * d * ROW_BYTES

    def _checked(self, X, reset: bool) -> np.ndarray:
        sparse = sparse_columns(X)
        if sparse:
            raise TypeError(f"{type(self).__name__}: {sparse}")
        complex_ = complex_values(X)
        if complex_:
            # scikit-learn's estimator checks look for its own words, "Complex data not supported"
            raise InputError(f"{type(self).__name__}: {complex_} (Complex data not supported)")
        try:
            X = validate_data(self, X, reset=reset, dtype=np.float64, ensure_all_finite=False,
                              ensure_min_samples=2 if reset else 1)
        except (ValueError, TypeError) as err:  # a DataFrame's column of categories, text or dates
            said = not_numeric_columns(X)
            if not said:
                raise
            raise ValueError(f"{type(self).__name__}: {said}") from err
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
        known = {*self._get_param_names(), "n_features_in_", "feature_names_in_", "n_samples_fit_", "calibration_rows_",
                 "calibration_scores_", "offset_", "_threshold_fpr", *self._learned}
        unknown = sorted(set(vars(self)) - known)
        if unknown:
            raise ValueError(f"{type(self).__name__}: unexpected attribute {unknown[0]!r}")
        no_shadowed_methods(self)
        self._check_params()
        fitted_fpr = getattr(self, "_threshold_fpr", 0.5)  # files saved before it was kept have none
        if type(fitted_fpr) is not float or not 0.0 < fitted_fpr < 1.0:
            raise ValueError(f"{type(self).__name__}._threshold_fpr: expected a number between 0 and 1")
        d = check_integer(self, "n_features_in_", 1, 2**31)
        if hasattr(self, "feature_names_in_"):
            names = check_array(self, "feature_names_in_", (d,), "O")
            if not all(isinstance(v, str) for v in names):
                raise ValueError(f"{type(self).__name__}.feature_names_in_: expected column names")
        n = len(check_array(self, "calibration_scores_", (None,)))
        check_array(self, "calibration_rows_", (n,), "iu")
        if hasattr(self, "n_samples_fit_"):  # files saved before it was kept have none
            check_integer(self, "n_samples_fit_", max(n, 1), 2**62)
        check_number(self, "offset_")
        self._check_learned(d)

    def _check_learned(self, d: int) -> None:
        """Check the subclass's own fitted attributes (``_learned``) for ``d`` features."""
        raise NotImplementedError

