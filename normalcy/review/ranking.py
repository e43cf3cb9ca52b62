"""Active-learning re-ranking of a review queue from a person's labels.

A person reviews images in priority order and labels some of them (normal / anomalous, with an
optional 0-5 interest score). After each label the whole queue is re-ranked, so this has to be
fast: re-ranking N = 100,000 images with up to ~500 labels stays under 1 s on 2 cores
(``bench/rerank_speed.py`` measures it). Past that size a re-rank scores 100,000 of them (every
labelled one, the detector's top 50,000 and a fixed sample of the rest) and the others follow in
the detector's order, which keeps 1,000,000 objects within the same budget (normalcy.review.space).

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

The work shared by the strategies (checks, the projection, threads) is in
normalcy.review.space; the Gaussian process of ``protege`` is in normalcy.review.gp.
"""

from __future__ import annotations

import math
import numbers
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
from sklearn.ensemble import RandomForestRegressor

from normalcy.review.gp import Protege, expected_improvement, gp_posterior
from normalcy.review.space import (
    _CHUNK,
    MAX_RANK_ROWS,
    MAX_USER_SCORE,
    PROJECT_DIM,
    _check_inputs,
    _column_sums,
    _over_blocks,
    _prepare,
    _scale05,
    _spread,
    _usable_cpus,
    candidate_rows,
)

__all__ = ["DEFAULT_STRATEGY", "LABELS", "MAX_RANK_ROWS", "MAX_USER_SCORE", "PROJECT_DIM", "STRATEGIES", "USER_SCORES",
           "NeighbourScore", "NoRanking", "Protege", "Ranker", "check_label", "expected_improvement", "gp_posterior",
           "make_ranker", "nearest_labelled_distance", "strategies_help", "user_score"]

# The labels a person gives, each with the user score it stands for when no interest is given: the one
# definition the store, the app and the rankers check labels against.
USER_SCORES: dict[str, float] = {"normal": 0.0, "anomalous": 5.0}
LABELS: tuple[str, ...] = tuple(USER_SCORES)


def check_label(label: str | None, interest: int | None) -> None:
    """ValueError unless ``label`` is one of LABELS or None and ``interest`` a whole number 0..5 or None."""
    if label is not None and label not in USER_SCORES:
        raise ValueError(f"unknown label {label!r}; expected one of {sorted(USER_SCORES)} or None")
    if interest is None:
        return
    if isinstance(interest, bool) or not isinstance(interest, numbers.Real):
        raise ValueError(f"interest must be a whole number 0..5, got {interest!r}")
    value = float(interest)
    if not (math.isfinite(value) and value == int(value) and 0 <= value <= MAX_USER_SCORE):
        raise ValueError(f"interest must be a whole number 0..5, got {interest!r}")


def user_score(label: str | None, interest: int | None) -> float | None:
    """interest (0–5) when given, else 5 for 'anomalous', 0 for 'normal', None when unlabelled.

    ValueError for an unknown label or an interest that is not a whole number in 0..5 (``check_label``).
    """
    check_label(label, interest)
    if interest is not None:
        return float(interest)
    return None if label is None else USER_SCORES[label]


@runtime_checkable
class Ranker(Protocol):
    """Something that turns features, anomaly scores and labels into review priorities."""

    name: str

    def rank(self, features: np.ndarray, anomaly: np.ndarray | None, labelled: np.ndarray,
             user: np.ndarray) -> np.ndarray:
        """features N x D float32, anomaly N image scores (any scale, higher = more anomalous),
        labelled: int indices of labelled rows (in labelling order), user: their user scores (0–5,
        same length as labelled). Returns N float64 priorities: higher = show first; NaN for rows a
        re-rank of more than MAX_RANK_ROWS objects did not score (they follow in the detector's order)."""
        ...


# ----------------------------------------------------------------------------- strategies


class NoRanking:
    """The detector's anomaly score as it is; labels are ignored (the baseline)."""

    name: str = "none"
    summary: ClassVar[str] = "the detector's order"

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
    Beyond max_rows objects only ``candidate_rows`` are scored (the rest get NaN); the mean distance
    that scales alpha is then the mean over those rows.
    """

    name: str = "neighbour"
    summary: ClassVar[str] = "Astronomaly"
    min_score: ClassVar[float] = 0.1   # Astronomaly's defaults: f_u runs 0.1 .. 0.95
    max_features: ClassVar[float] = 1 / 3

    def __init__(self, alpha: float = 1.0, n_estimators: int = 50, seed: int = 0,
                 n_jobs: int | None = None, max_rows: int = MAX_RANK_ROWS) -> None:
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        if n_estimators < 1:
            raise ValueError(f"n_estimators must be >= 1, got {n_estimators}")
        if max_rows < 2:
            raise ValueError(f"max_rows must be >= 2, got {max_rows}")
        self.alpha, self.n_estimators, self.seed, self.max_rows = float(alpha), int(n_estimators), int(seed), int(max_rows)
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
        rows = candidate_rows(base, idx, self.max_rows)
        z, sqnorm, lab = ((prep.z, prep.sqnorm, idx) if rows is None
                          else (prep.z[rows], prep.sqnorm[rows], np.searchsorted(rows, idx)))
        forest = RandomForestRegressor(n_estimators=self.n_estimators, max_features=self.max_features,
                                       random_state=self.seed, n_jobs=self.n_jobs)
        forest.fit(z[lab], u)
        user_pred = self._predict(forest, z)
        distance = nearest_labelled_distance(z, sqnorm, lab, self.n_jobs)
        return _spread(self.anom_func(distance, user_pred, base if rows is None else base[rows]), rows, len(base))


# The ranking strategies by name: what the command line offers (its help from each class's summary), the
# app accepts and the review state makes.
STRATEGIES: dict[str, type] = {"none": NoRanking, "neighbour": NeighbourScore, "protege": Protege}
DEFAULT_STRATEGY = "neighbour"


def strategies_help() -> str:
    """The strategies for a help text: "none (the detector's order), neighbour (Astronomaly), ..."."""
    return ", ".join(f"{name} ({cls.summary})" for name, cls in STRATEGIES.items())


def make_ranker(name: str, **kwargs) -> Ranker:
    """A ranker by strategy name (one of STRATEGIES), with its keyword arguments."""
    try:
        cls = STRATEGIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown ranking strategy {name!r}; choose one of: {', '.join(STRATEGIES)}") from None
    return cls(**kwargs)
