"""The ensemble vector detector: its members' scores, each in units of its own calibration scores, averaged."""

from __future__ import annotations

import numpy as np
from sklearn.base import clone

from normalcy.vectors.base import TooLarge, VectorDetector, check_array
from normalcy.vectors.gaussian import GaussianDetector
from normalcy.vectors.knn import KNNDetector

__all__ = ["EnsembleDetector"]

class EnsembleDetector(VectorDetector):
    """The mean of its members' anomaly scores, each first put in units of its own calibration scores
    (minus their mean, over their standard deviation), so that no member dominates by its scale.

    ``members`` defaults to a Gaussian (global correlations between features) and kNN (local, multimodal
    structure): they fail in different places, and both are quick."""

    def __init__(self, members: list | None = None, fpr: float = 0.01, random_state: int | None = None):
        self.members = members
        self.fpr = fpr
        self.random_state = random_state

    def _members(self) -> list:
        return self.members if self.members is not None else [GaussianDetector(), KNNDetector()]

    def _check_params(self) -> None:
        """Members are detectors of this module, none an ensemble (``check_state`` refuses one on load: an
        ensemble of ensembles saved without a word could not be loaded again), each with valid parameters."""
        super()._check_params()
        members = self._members()
        if not isinstance(members, (list, tuple)) or not members:
            raise ValueError("EnsembleDetector.members: expected a non-empty list of detectors, e.g. "
                             "[GaussianDetector(), KNNDetector()]")
        for m in members:
            if not isinstance(m, VectorDetector) or isinstance(m, EnsembleDetector):
                raise ValueError(f"EnsembleDetector.members: {m!r} is not a GaussianDetector, KNNDetector, "
                                 "IForestDetector or ECODDetector")
            self._seeded(m)._check_params()

    def _seeded(self, member: VectorDetector) -> VectorDetector:
        """An unfitted copy of a member with the ensemble's ``random_state``, where it has one and takes one."""
        member = clone(member)
        if "random_state" in member.get_params() and self.random_state is not None:
            member.set_params(random_state=self.random_state)
        return member

    def set_params(self, **params):
        """scikit-learn's, with a clear error for ``members__0__n_neighbors``: ``members`` is a list, not an
        estimator, and such a name failed with "'NoneType' (or 'list') object has no attribute 'set_params'"."""
        nested = [k for k in params if k.startswith("members__")]
        if nested:
            raise ValueError(f"EnsembleDetector: cannot set {nested[0]!r}: members is a list; give the whole list, "
                             "e.g. set_params(members=[GaussianDetector(), KNNDetector(n_neighbors=3)])")
        return super().set_params(**params)

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
            self.members_.append(self._seeded(member).fit(X))
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
            if not isinstance(m, VectorDetector) or isinstance(m, EnsembleDetector):
                raise ValueError(f"EnsembleDetector.members_: {type(m).__name__} is not a member detector")
            m.check_state()
            if m.n_features_in_ != d:
                raise ValueError(f"EnsembleDetector.members_: a {type(m).__name__} of {m.n_features_in_} features")
        check_array(self, "center_", (len(members),))
        if (check_array(self, "spread_", (len(members),)) <= 0).any():
            raise ValueError("EnsembleDetector.spread_: must be positive")

    def _combined(self, scores: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):  # a member's score of 1e300 over a small spread is inf: the farthest row
            return ((scores - self.center_[:, None]) / self.spread_[:, None]).mean(0)
