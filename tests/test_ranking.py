"""Active-learning re-ranking (normalcy.review.ranking): label mapping, cold start, learning.

How fast a re-rank is: bench/rerank_speed.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

from normalcy.review.ranking import (
    DEFAULT_STRATEGY,
    STRATEGIES,
    USER_SCORES,
    NeighbourScore,
    NoRanking,
    Protege,
    Ranker,
    gp_posterior,
    make_ranker,
    nearest_labelled_distance,
    strategies_help,
    user_score,
)

EMPTY = np.zeros(0, np.int64)


def two_clusters(seed: int = 0, n_bg: int = 1500, n_cluster: int = 60, dim: int = 16):
    """A diffuse background of ordinary objects plus two tight clusters far from it and each other.

    Cluster A is what the detector finds most anomalous (scores 4-5) but the person finds boring;
    cluster B scores only 2-3 but is what the person wants. Background scores 0-2.
    Returns features, anomaly, indices of A, indices of B.
    """
    rng = np.random.default_rng(seed)
    bg = rng.normal(0.0, 2.0, (n_bg, dim))
    ca, cb = rng.normal(size=(2, dim))  # cluster centres differ in every dimension, like embeddings
    ca *= 12.0 / np.linalg.norm(ca)
    cb *= 12.0 / np.linalg.norm(cb)
    a = ca + rng.normal(0.0, 0.4, (n_cluster, dim))
    b = cb + rng.normal(0.0, 0.4, (n_cluster, dim))
    features = np.vstack([bg, a, b]).astype(np.float32)
    anomaly = np.concatenate([rng.uniform(0, 2, n_bg), rng.uniform(4, 5, n_cluster), rng.uniform(2, 3, n_cluster)])
    perm = rng.permutation(len(features))            # so cluster membership is not the row order
    inv = np.argsort(perm)
    idx_a = np.sort(inv[n_bg:n_bg + n_cluster])
    idx_b = np.sort(inv[n_bg + n_cluster:])
    return features[perm], anomaly[perm], idx_a, idx_b


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a random pos priority > a random neg priority): 1 = every pos above every neg."""
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


# ----------------------------------------------------------------------------- user scores


def test_user_score_mapping():
    assert USER_SCORES == {"normal": 0.0, "anomalous": 5.0}
    assert user_score("normal", None) == 0.0
    assert user_score("anomalous", None) == 5.0
    assert user_score(None, None) is None
    assert user_score("anomalous", 2) == 2.0          # interest wins over the label's default
    assert user_score("normal", 4) == 4.0
    assert user_score(None, 3) == 3.0
    assert user_score("normal", 0) == 0.0
    assert user_score("anomalous", np.int64(5)) == 5.0


@pytest.mark.parametrize("label, interest, match", [
    ("weird", None, "unknown label"),
    ("Normal", None, "unknown label"),
    ("normal", 6, "0..5"),
    ("normal", -1, "0..5"),
    ("normal", 2.5, "0..5"),
    ("normal", float("nan"), "0..5"),
    ("normal", True, "0..5"),
    ("normal", "3", "0..5"),
])
def test_user_score_errors(label, interest, match):
    with pytest.raises(ValueError, match=match):
        user_score(label, interest)


# ----------------------------------------------------------------------------- interface


def test_make_ranker_and_strategies():
    assert set(STRATEGIES) == {"none", "neighbour", "protege"}
    for name, cls in STRATEGIES.items():
        r = make_ranker(name)
        assert isinstance(r, cls) and r.name == name and isinstance(r, Ranker)
    r = make_ranker("neighbour", alpha=0.5, n_estimators=10, seed=3, n_jobs=1)
    assert (r.alpha, r.n_estimators, r.seed, r.n_jobs) == (0.5, 10, 3, 1)
    assert make_ranker("protege", xi=0.1, max_train=50).max_train == 50
    with pytest.raises(ValueError, match="none, neighbour, protege"):
        make_ranker("astronomaly")
    assert DEFAULT_STRATEGY in STRATEGIES
    assert strategies_help() == "none (the detector's order), neighbour (Astronomaly), protege (GP + EI)"


# ----------------------------------------------------------------------------- cold start


@pytest.mark.parametrize("name", ["none", "neighbour", "protege"])
def test_no_labels_returns_anomaly_order(name):
    x, anomaly, _, _ = two_clusters()
    p = make_ranker(name).rank(x, anomaly, EMPTY, np.zeros(0))
    assert p.shape == (len(x),) and p.dtype == np.float64
    np.testing.assert_array_equal(np.argsort(-p, kind="stable"), np.argsort(-anomaly, kind="stable"))


def test_none_ignores_labels():
    x, anomaly, ia, _ = two_clusters()
    p = NoRanking().rank(x, anomaly, ia[:5], np.zeros(5))
    np.testing.assert_array_equal(p, anomaly)


def test_cold_start_without_anomaly_is_distance_from_mean():
    x, _, ia, ib = two_clusters()
    p = Protege().rank(x, None, EMPTY, np.zeros(0))
    expected = np.linalg.norm(x - x.mean(axis=0), axis=1)
    np.testing.assert_allclose(p, expected, rtol=1e-4)
    assert np.all(np.isfinite(NeighbourScore().rank(x, None, ib[:2], np.full(2, 5.0))))


# ----------------------------------------------------------------------------- learning


@pytest.mark.parametrize("ranker", [NeighbourScore(), Protege()], ids=["neighbour", "protege"])
def test_learns_what_the_person_finds_interesting(ranker):
    x, anomaly, ia, ib = two_clusters()
    # Before any label the detector's favourite, cluster A, is on top.
    cold = ranker.rank(x, anomaly, EMPTY, np.zeros(0))
    assert auc(cold[ib], cold[ia]) < 0.05
    # Three labels each: A is boring (0), B is interesting (5).
    labelled = np.array([ia[0], ib[0], ia[1], ib[1], ia[2], ib[2]])
    user = np.array([0.0, 5.0, 0.0, 5.0, 0.0, 5.0])
    p = ranker.rank(x, anomaly, labelled, user)
    rest_a, rest_b = np.setdiff1d(ia, labelled), np.setdiff1d(ib, labelled)
    assert auc(p[rest_b], p[rest_a]) > 0.95
    # And the interesting cluster now leads the whole queue of unlabelled objects.
    unlabelled = np.setdiff1d(np.arange(len(x)), labelled)
    top = unlabelled[np.argsort(-p[unlabelled], kind="stable")[:20]]
    assert np.isin(top, ib).mean() >= 0.9 if ranker.name == "neighbour" else np.isin(top, ia).sum() == 0


@pytest.mark.parametrize("ranker", [NeighbourScore(), Protege()], ids=["neighbour", "protege"])
@pytest.mark.parametrize("embedded", [False, True], ids=["isotropic", "low-rank"])
def test_learns_through_the_projection_of_wide_features(ranker, embedded):
    """D = 300 > 64: the same learning, in the cached (PCA + rotation) space. Either isotropic
    noise in all 300 dimensions, or (like CNN embeddings) a 16-dim structure embedded in 300."""
    if embedded:
        x, anomaly, ia, ib = two_clusters(dim=16, seed=3)
        rng = np.random.default_rng(3)
        basis, _ = np.linalg.qr(rng.normal(size=(300, 16)))
        x = (x @ basis.T + rng.normal(0, 0.05, (len(x), 300))).astype(np.float32)
    else:
        x, anomaly, ia, ib = two_clusters(dim=300, seed=3)
    labelled = np.concatenate([ia[:5], ib[:5]])
    user = np.concatenate([np.zeros(5), np.full(5, 5.0)])
    p = ranker.rank(x, anomaly, labelled, user)
    rest_a, rest_b = np.setdiff1d(ia, labelled), np.setdiff1d(ib, labelled)
    assert auc(p[rest_b], p[rest_a]) > 0.95


@pytest.mark.parametrize("ranker", [NeighbourScore(), Protege()], ids=["neighbour", "protege"])
def test_labelling_normal_moves_an_item_down(ranker):
    x, anomaly, ia, _ = two_clusters()
    before = ranker.rank(x, anomaly, EMPTY, np.zeros(0))
    item = int(np.argmax(before))
    after = ranker.rank(x, anomaly, np.array([item]), np.array([0.0]))
    rank_before = int((before > before[item]).sum())
    rank_after = int((after > after[item]).sum())
    assert rank_before == 0
    assert rank_after > len(x) // 2


def test_neighbour_formula_matches_astronomaly():
    """Labelled rows get exactly anomaly * f_u (d = 0); far rows tend to the anomaly score."""
    x, anomaly, ia, ib = two_clusters()
    r = NeighbourScore(n_jobs=1)
    labelled = np.array([ia[0], ib[0]])
    p = r.rank(x, anomaly, labelled, np.array([0.0, 5.0]))
    scaled = 5 * (anomaly - anomaly.min()) / (anomaly.max() - anomaly.min())
    # A random forest on two points predicts each one's own score at the point itself, except
    # when a bootstrap sample misses it; the factor lies between f_u(0) = 0.1 and f_u(5) = 0.95.
    assert scaled[ia[0]] * 0.1 <= p[ia[0]] < scaled[ia[0]] * 0.5
    assert p[ib[0]] > scaled[ib[0]] * 0.6
    np.testing.assert_allclose(r.anom_func(np.zeros(1), np.zeros(1), np.ones(1)), 0.1)
    np.testing.assert_allclose(r.anom_func(np.zeros(1), np.full(1, 5.0), np.ones(1)), 0.95)
    far = r.anom_func(np.array([0.0, 10.0]), np.zeros(2), np.ones(2))  # d / mean(d) = 2
    np.testing.assert_allclose(far[1], np.tanh(np.exp(2.0) - 1 + np.arctanh(0.1)))


def test_nearest_labelled_distance_matches_brute_force():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5000, 24)).astype(np.float32) * 3
    idx = rng.choice(5000, 37, replace=False)
    d = nearest_labelled_distance(z, np.einsum("ij,ij->i", z, z), idx)
    ref = np.sqrt(((z[:, None, :].astype(np.float64) - z[idx][None]) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(d, ref, atol=2e-3)
    assert np.all(d[idx] == 0)


def test_gp_posterior_matches_sklearn():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(3000, 16)).astype(np.float32)
    train = rng.choice(3000, 200, replace=False)
    y = rng.normal(size=200)
    mean, std = gp_posterior(z, np.einsum("ij,ij->i", z, z), train, y, 0.8, 3.0, 0.05)
    kernel = ConstantKernel(0.8, "fixed") * Matern(3.0, "fixed", nu=1.5) + WhiteKernel(0.05, "fixed")
    gp = GaussianProcessRegressor(kernel, optimizer=None).fit(z[train].astype(np.float64), y)
    m_ref, s_ref = gp.predict(z.astype(np.float64), return_std=True)
    np.testing.assert_allclose(mean, m_ref, atol=1e-4)
    np.testing.assert_allclose(std, s_ref, atol=5e-4)


def test_duplicate_labels_keep_the_latest():
    x, anomaly, ia, _ = two_clusters()
    r = NeighbourScore(n_jobs=1)
    twice = r.rank(x, anomaly, np.array([ia[0], ia[1], ia[0]]), np.array([5.0, 0.0, 0.0]))
    once = r.rank(x, anomaly, np.array([ia[1], ia[0]]), np.array([0.0, 0.0]))
    np.testing.assert_array_equal(twice, once)


def test_protege_caps_training_set():
    x, anomaly, ia, ib = two_clusters()
    labelled = np.concatenate([ia[:30], ib[:30]])
    user = np.concatenate([np.zeros(30), np.full(30, 5.0)])
    r = Protege(max_train=20, fit_max=10, n_jobs=1)
    p = r.rank(x, anomaly, labelled, user)
    assert p.shape == (len(x),) and np.all(np.isfinite(p)) and np.all(p >= 0)
    # Only the 20 most recent labels count (the same best score either way: they are all 5).
    np.testing.assert_array_equal(p, r.rank(x, anomaly, labelled[-20:], user[-20:]))


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("name", ["none", "neighbour", "protege"])
def test_bad_inputs_raise(name):
    x, anomaly, ia, _ = two_clusters(n_bg=200)
    n = len(x)
    r = make_ranker(name)
    lab, u = ia[:3], np.zeros(3)
    with pytest.raises(ValueError, match="2-D"):
        r.rank(x[0], anomaly, lab, u)
    with pytest.raises(ValueError, match=r"anomaly must have shape"):
        r.rank(x, anomaly[:-1], lab, u)
    with pytest.raises(ValueError, match="anomaly contains NaN"):
        r.rank(x, np.where(np.arange(n) == 7, np.nan, anomaly), lab, u)
    with pytest.raises(ValueError, match="out of range"):
        r.rank(x, anomaly, np.array([0, n]), np.zeros(2))
    with pytest.raises(ValueError, match="out of range"):
        r.rank(x, anomaly, np.array([-1]), np.zeros(1))
    with pytest.raises(ValueError, match="2 scores but labelled has 3"):
        r.rank(x, anomaly, lab, np.zeros(2))
    with pytest.raises(ValueError, match=r"0\.\.5"):
        r.rank(x, anomaly, lab, np.array([0.0, 6.0, 1.0]))
    with pytest.raises(ValueError, match=r"0\.\.5"):
        r.rank(x, anomaly, lab, np.array([0.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match="integer row indices"):
        r.rank(x, anomaly, lab.astype(float), u)
    bad = x.copy()
    bad[11, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite values in 1 row.*row 11"):
        r.rank(bad, anomaly, lab, u)
    bad[11, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        r.rank(bad, None, lab, u)


def test_constructor_validation():
    with pytest.raises(ValueError, match="alpha"):
        NeighbourScore(alpha=0)
    with pytest.raises(ValueError, match="n_estimators"):
        NeighbourScore(n_estimators=0)
    with pytest.raises(ValueError, match="xi"):
        Protege(xi=-1)
    with pytest.raises(ValueError, match="max_train"):
        Protege(max_train=0)


# ----------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", ["neighbour", "protege"])
def test_deterministic_for_a_seed(name):
    x, anomaly, ia, ib = two_clusters()
    labelled = np.array([ia[0], ib[0], ia[5], ib[5]])
    user = np.array([0.0, 4.0, 1.0, 5.0])
    a = make_ranker(name, seed=7).rank(x, anomaly, labelled, user)
    b = make_ranker(name, seed=7).rank(x.copy(), anomaly.copy(), labelled.copy(), user.copy())
    np.testing.assert_array_equal(a, b)
    # Nor does the thread count (fixed summation order over trees and row blocks).
    c = make_ranker(name, seed=7, n_jobs=1).rank(x, anomaly, labelled, user)
    np.testing.assert_array_equal(a, c)


def test_changed_features_are_not_served_from_cache():
    x, anomaly, ia, ib = two_clusters()
    labelled, user = np.array([ia[0], ib[0]]), np.array([0.0, 5.0])
    r = NeighbourScore(n_jobs=1)
    a = r.rank(x, anomaly, labelled, user)
    y = x.copy()
    y[ib[10]] += 100.0  # moves one B object far away: its priority must change
    b = r.rank(y, anomaly, labelled, user)
    assert a[ib[10]] != b[ib[10]]
