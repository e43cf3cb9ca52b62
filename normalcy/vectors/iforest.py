"""The IsolationForest vector detector, and the check that makes a loaded forest safe to walk."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.tree import ExtraTreeRegressor
from sklearn.tree._tree import Tree

from normalcy.vectors.base import (
    ColumnScaled,
    VectorDetector,
    check_array,
    check_integer,
    no_shadowed_methods,
    plain,
)

__all__ = ["IForestDetector", "check_tree"]

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


class IForestDetector(ColumnScaled, VectorDetector):
    """scikit-learn's IsolationForest with the shared threshold. Each tree sees at most 256 rows, so the
    training rows' scores are nearly out of sample and serve as calibration scores. The trees hold float32, so
    columns past its range (values near 1e308 became inf) are scaled first (``ColumnScaled``)."""

    scale_limit = 126  # float32's normal numbers lie within 2**+-126

    def __init__(self, fpr: float = 0.01, n_estimators: int = 100, max_samples: int | float | str = "auto",
                 max_features: float = 1.0, n_jobs: int | None = None, random_state: int | None = None):
        self.fpr, self.n_estimators, self.max_samples = fpr, n_estimators, max_samples
        self.max_features, self.n_jobs, self.random_state = max_features, n_jobs, random_state

    def _check_params(self) -> None:
        """A numpy Generator, which the other detectors take as a seed, is refused: IsolationForest takes None, an
        integer or a RandomState, and refused it from inside the fit, naming its own parameter."""
        super()._check_params()
        if isinstance(self.random_state, np.random.Generator):
            raise ValueError("IForestDetector.random_state: expected None, an integer from 0 to 2**32 - 1 or a numpy "
                             "RandomState (scikit-learn's IsolationForest takes no Generator), got a Generator")

    def _fit(self, X: np.ndarray) -> np.ndarray:
        params = {"n_estimators": self.n_estimators, "max_samples": self.max_samples,  # numpy scalars as Python's:
                  "max_features": self.max_features, "n_jobs": self.n_jobs,  # the forest keeps them (plain_params)
                  "random_state": self.random_state}
        self.forest_ = IsolationForest(**{k: plain(v) for k, v in params.items()}).fit(self._fit_scale(X))
        return self._score(X)

    def _score(self, X: np.ndarray) -> np.ndarray:
        # a value past float32's range (1e39 where the column's were near 1) is inf in the forest's float32 copy, the
        # farthest value, as meant: without numpy's "overflow encountered in cast" from inside scikit-learn
        with np.errstate(over="ignore"):
            return -self.forest_.score_samples(self._scaled(X))

    _learned = ("forest_", "scale_")

    def _check_learned(self, d: int) -> None:
        """The forest's trees, the features each is given and the per-node path lengths scoring reads."""
        self._check_scale(d)
        f = self.forest_
        if type(f) is not IsolationForest:
            raise ValueError(f"IForestDetector.forest_: expected an IsolationForest, got {type(f).__name__}")
        no_shadowed_methods(f)
        if check_integer(f, "n_features_in_", 1, 2**31) != d or hasattr(f, "feature_names_in_"):
            raise ValueError(f"IForestDetector.forest_: fitted on other features than the detector's {d}")
        width = check_integer(f, "_max_features", 1, d)  # scoring gives each tree these many columns
        check_integer(f, "_max_samples", 1, 2**31)
        check_integer(f, "verbose", 0, 100)
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
            no_shadowed_methods(est)
            features = check_array(f, f"estimators_features_[{i}]", (width,), "iu", features)
            if len(features) and not 0 <= features.min() <= features.max() < d:
                raise ValueError(f"{where}: uses features outside the {d} columns")
            n = check_tree(est.tree_, width, where)
            check_array(f, f"_decision_path_lengths[{i}]", (n,), "iuf", depths)
            check_array(f, f"_average_path_length_per_tree[{i}]", (n,), value=average)

