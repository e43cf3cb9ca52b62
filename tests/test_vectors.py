"""Detectors on feature vectors: scikit-learn's estimator checks, and what the detectors promise."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from sklearn.utils.estimator_checks import check_estimator

from normalcy.numerics.stats import gaussian, mahalanobis
from normalcy.vectors import (
    ECODDetector,
    EnsembleDetector,
    GaussianDetector,
    IForestDetector,
    KNNDetector,
)
from normalcy.vectors.base import finite_rows

# Settings that keep scikit-learn's ~45 checks per detector quick; behaviour is the same as the defaults'.
FAST = {
    "gaussian": lambda **kw: GaussianDetector(folds=2, **kw),
    "knn": lambda **kw: KNNDetector(**kw),
    "iforest": lambda **kw: IForestDetector(n_estimators=20, **kw),
    "ecod": lambda **kw: ECODDetector(**kw),
    "ensemble": lambda **kw: EnsembleDetector([GaussianDetector(folds=2), KNNDetector()], **kw),
}

_IN_SAMPLE = ("kNN finds each training row as its own nearest neighbour, so predicting on the training rows "
              "themselves flags almost none of them; the threshold uses leave-one-out scores instead")
EXPECTED_FAILURES = {
    "knn": {"check_outliers_train": _IN_SAMPLE, "check_outliers_fit_predict": _IN_SAMPLE},
    "ensemble": {"check_outliers_train": _IN_SAMPLE, "check_outliers_fit_predict": _IN_SAMPLE},
}


@pytest.mark.parametrize("name", FAST)
def test_sklearn_estimator_checks(name):
    check_estimator(FAST[name](), expected_failed_checks=EXPECTED_FAILURES.get(name, {}), on_skip=None)


def _normal(n: int, d: int = 6, seed: int = 0) -> np.ndarray:
    """Correlated Gaussian rows with columns on different scales."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(99).normal(size=(d, d))
    return rng.normal(size=(n, d)) @ mix * np.arange(1, d + 1) + 10.0


@pytest.mark.parametrize("name", FAST)
def test_planted_outliers_rank_on_top(name):
    rng = np.random.default_rng(1)
    X = _normal(400)
    planted = _normal(10, seed=2)
    scale = X.std(0)
    for row in planted:  # pushed far out along three columns
        cols = rng.choice(X.shape[1], 3, replace=False)
        row[cols] += 8 * scale[cols] * rng.choice([-1, 1], 3)
    det = FAST[name](random_state=0) if name in ("gaussian", "iforest", "ensemble") else FAST[name]()
    det.fit(X)
    fresh = _normal(200, seed=3)
    scores = det.anomaly_score(np.vstack([fresh, planted]))
    assert roc_auc_score(np.r_[np.zeros(200), np.ones(10)], scores) > 0.99
    assert (det.predict(planted) == -1).mean() >= 0.7  # at 1% FPR; ECOD's tails saturate past the data


@pytest.mark.parametrize("name", FAST)
def test_threshold_gives_the_target_fpr_on_fresh_normal_rows(name):
    X = _normal(3000)
    det = FAST[name](fpr=0.05).fit(X)
    flagged = (det.predict(_normal(20000, seed=5)) == -1).mean()
    assert 0.03 < flagged < 0.075, flagged


def test_conventions_agree():
    X = _normal(300)
    det = GaussianDetector().fit(X)
    Y = _normal(50, seed=1)
    np.testing.assert_allclose(det.anomaly_score(Y), -det.score_samples(Y))
    np.testing.assert_allclose(det.decision_function(Y), det.score_samples(Y) - det.offset_)
    assert set(det.predict(Y)) <= {-1, 1}
    assert np.mean(det.calibration_scores_ > -det.offset_) == pytest.approx(det.fpr, abs=0.005)


def test_finite_rows_names_the_bad_rows():
    X = np.ones((20, 3))
    X[3, 1] = np.nan
    X[17, 0] = np.inf
    mask, message = finite_rows(X)
    assert mask.sum() == 18 and not mask[3] and not mask[17]
    assert "rows 3, 17" in message and "2 of 20" in message
    assert finite_rows(np.ones((4, 2))) == (pytest.approx(np.ones(4, bool)), "")
    X = np.zeros((30, 2))
    X[:12, 0] = np.nan
    assert "rows 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 2 more" in finite_rows(X)[1]


@pytest.mark.parametrize("name", FAST)
def test_nan_rows_are_named_in_fit_and_score(name):
    X = _normal(100)
    bad = X.copy()
    bad[[4, 9]] = [np.nan, *X[4, 1:]], [*X[9, :-1], -np.inf]
    with pytest.raises(ValueError, match=r"rows 4, 9 \(counting from 0\)"):
        FAST[name]().fit(bad)
    det = FAST[name]().fit(X)
    for method in (det.anomaly_score, det.score_samples, det.decision_function, det.predict):
        with pytest.raises(ValueError, match=r"rows 4, 9"):
            method(bad)


def test_fitted_state():
    X = _normal(200)
    for det in (GaussianDetector(), KNNDetector(), IForestDetector(), ECODDetector(), EnsembleDetector()):
        det.fit(X)
        assert det.n_features_in_ == X.shape[1]
        assert det.calibration_scores_.shape == (200,)
        assert np.isfinite(det.offset_)
    gauss = GaussianDetector().fit(X)
    assert gauss.location_.shape == (6,) and gauss.precision_.shape == (6, 6)
    knn = KNNDetector(n_neighbors=7).fit(X)
    assert knn.n_neighbors_ == 7 and knn.train_.shape == (200, 6) and knn.train_.dtype == np.float32
    np.testing.assert_allclose(knn.train_.std(0), 1.0, rtol=1e-4)
    assert KNNDetector(n_neighbors=50).fit(X[:10]).n_neighbors_ == 9
    ens = EnsembleDetector().fit(X)
    assert [type(m).__name__ for m in ens.members_] == ["GaussianDetector", "KNNDetector"]
    assert ens.center_.shape == ens.spread_.shape == (2,)
    with pytest.raises(ValueError, match="fpr"):
        ECODDetector(fpr=1.5).fit(X)


@pytest.mark.parametrize("name", ["knn", "ecod"])
def test_duplicated_normal_rows_are_not_flagged(name):
    """995 identical normal rows (a table of repeated readings) tie at the threshold's quantile; a threshold on
    that tie flagged every such row. It steps above the tie (``threshold_at``), and a far row is still flagged."""
    X = np.r_[np.tile([1.0, 2.0, 3.0], (995, 1)), np.random.default_rng(0).normal(size=(5, 3))]
    det = FAST[name]().fit(X)
    assert (det.predict(np.tile([1.0, 2.0, 3.0], (10, 1))) == 1).all()
    assert det.predict(np.array([[9.0, 9.0, 9.0]]))[0] == -1


@pytest.mark.parametrize("name, rows", [
    *((name, np.tile([1.0, 2.0, 3.0], (50, 1))) for name in ("gaussian", "knn", "ecod", "ensemble")),
    *((name, np.tile([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], (25, 1))) for name in ("gaussian", "knn", "ensemble"))])
def test_rows_that_never_vary_flag_every_other_row(name, rows):
    """Training rows that are all one row (zero variance) or two points on a line (a singular covariance
    Ledoit-Wolf does not shrink): the Gaussian's pseudo-inverse gave every direction the rows never moved in
    zero weight, so a row off them scored 0 and nothing was flagged. Rows seen are normal, others anomalies
    (ECOD looks at each column alone: (1, 0, 0) is no anomaly to it when both 0 and 1 were seen)."""
    det = FAST[name]().fit(rows)
    assert (det.predict(rows[:2]) == 1).all()
    assert (det.predict(np.array([[1.0, 0.0, 0.0], [5.0, 2.0, 3.0], [0.0, 0.0, 2.0]])) == -1).all()


@pytest.mark.parametrize("name", FAST)
def test_a_score_at_the_threshold_is_an_anomaly(name):
    """normalcy's one decision rule, score >= threshold, at its boundary: a row scoring exactly the threshold
    is flagged, and with it every row above it, no row below."""
    det = FAST[name]().fit(_normal(300))
    Y = _normal(50, seed=3)
    scores = det.anomaly_score(Y)
    k = int(np.argsort(scores)[25])
    det.offset_ = -scores[k]  # the threshold is -offset_
    flagged = det.predict(Y) == -1
    assert flagged[k] and det.decision_function(Y)[k] == 0
    np.testing.assert_array_equal(flagged, scores >= scores[k])
    assert flagged.sum() == (scores >= scores[k]).sum() == 25


def test_gaussian_is_the_image_detectors_gaussian():
    """One implementation of the Ledoit-Wolf Gaussian and its distance, shared with normalcy.detectors.gaussian."""
    X = _normal(150)
    det = GaussianDetector().fit(X)
    mean, precision = gaussian(X)
    np.testing.assert_allclose(det.location_, mean)
    np.testing.assert_allclose(det.precision_, precision)
    Y = _normal(20, seed=1)
    expected = mahalanobis(torch.from_numpy(Y), torch.from_numpy(mean), torch.from_numpy(precision)).numpy()
    np.testing.assert_allclose(det.anomaly_score(Y), expected)


def test_calibration_scores_leave_the_row_out():
    """kNN's and ECOD's calibration score of a training row is the score it gets from a fit without it."""
    rng = np.random.default_rng(0)
    X = rng.exponential(size=(80, 4))  # skewed the same way with or without one row
    for make in (KNNDetector, ECODDetector):
        full = make().fit(X)
        others = make().fit(X[1:])
        if make is KNNDetector:  # the same standardisation, so that only the neighbours differ
            others.mean_, others.scale_ = full.mean_, full.scale_
            others.train_ = full.train_[1:]
        assert full.calibration_scores_[0] == pytest.approx(others.anomaly_score(X[:1])[0])


def test_deterministic_with_random_state():
    X = _normal(300)
    Y = _normal(50, seed=1)
    for make in (GaussianDetector, FAST["iforest"], EnsembleDetector):
        a = make(random_state=3).fit(X)
        b = make(random_state=3).fit(X)
        np.testing.assert_array_equal(a.anomaly_score(Y), b.anomaly_score(Y))
        assert a.offset_ == b.offset_
    a = FAST["iforest"](random_state=3).fit(X).anomaly_score(Y)
    assert not np.array_equal(a, FAST["iforest"](random_state=4).fit(X).anomaly_score(Y))


def test_subsets_score_like_the_whole():
    """A row's score does not depend on what else is in the batch (faiss's batched search included)."""
    X = _normal(500)
    Y = _normal(300, seed=1)
    for det in (KNNDetector().fit(X), ECODDetector().fit(X)):
        whole = det.anomaly_score(Y)
        parts = np.concatenate([det.anomaly_score(Y[i:i + 7]) for i in range(0, 300, 7)])
        np.testing.assert_array_equal(whole, parts)


def test_knn_over_its_memory_budget_compresses_with_ivf_pq():
    """Past max_memory_mb the rows are kept only as IVF-PQ codes: far smaller, scores close to exact ones,
    the same planted outliers on top, and the estimator still saves and loads (its index is plain arrays)."""
    import pickle

    from scipy.stats import spearmanr

    X = np.vstack([_normal(6000, d=32, seed=s) for s in range(2)])
    fresh, planted = _normal(300, d=32, seed=5), _normal(10, d=32, seed=6) * 1.5
    exact = KNNDetector(random_state=0).fit(X)
    small = KNNDetector(max_memory_mb=0.5, random_state=0).fit(X)
    assert exact.codes_.size == 0 and small.train_.shape[0] == 0
    assert 0 < small.codes_.nbytes + small.codebook_.nbytes + small.cells_.nbytes < exact.train_.nbytes / 4
    rows = np.vstack([fresh, planted])
    a, b = exact.anomaly_score(rows), small.anomaly_score(rows)
    assert spearmanr(a, b).statistic > 0.9
    labels = np.r_[np.zeros(300), np.ones(10)]
    assert roc_auc_score(labels, b) > roc_auc_score(labels, a) - 0.02
    again = pickle.loads(pickle.dumps(small))  # what skops and sklearn's clone see: no faiss object inside
    np.testing.assert_array_equal(again.anomaly_score(rows), b)
    bad = pickle.loads(pickle.dumps(small))
    bad.codes_ = bad.codes_.copy()
    bad.codes_[0, :2] = 255  # a cell number past the cells: refused before faiss reads it
    with pytest.raises(ValueError, match="PQ codes name cell"):
        bad.anomaly_score(rows)


def test_knn_saved_with_a_faiss_serialisation_is_refused_or_upgraded():
    """Models saved before the index became arrays: an exact one loads as it was, a faiss blob is refused."""
    det = KNNDetector().fit(_normal(200, d=4))
    old = {k: v for k, v in det.__getstate__().items() if k not in ("cells_", "codebook_", "codes_")}
    upgraded = KNNDetector.__new__(KNNDetector)
    upgraded.__setstate__({**old, "index_": np.zeros(0, np.uint8)})
    np.testing.assert_array_equal(upgraded.anomaly_score(_normal(20, d=4, seed=3)),
                                  det.anomaly_score(_normal(20, d=4, seed=3)))
    with pytest.raises(ValueError, match="faiss serialisation"):
        KNNDetector.__new__(KNNDetector).__setstate__({**old, "index_": np.ones(10, np.uint8)})


def test_knn_calibrates_on_a_sample_of_a_large_training_set():
    X = _normal(3000, d=4)
    det = KNNDetector(max_calibration=500, random_state=0).fit(X)
    assert det.calibration_scores_.shape == (500,)
    fresh = det.predict(_normal(4000, d=4, seed=9))
    assert abs((fresh == -1).mean() - det.fpr) < 0.01


def test_ensemble_with_a_sampled_knn_calibrates_on_the_rows_both_scored():
    X = _normal(600, d=4)
    det = EnsembleDetector([GaussianDetector(folds=2), KNNDetector(max_calibration=100)], random_state=0).fit(X)
    knn = det.members_[1]
    np.testing.assert_array_equal(det.calibration_rows_, knn.calibration_rows_)
    assert det.calibration_scores_.shape == (100,) and det.members_[0].calibration_scores_.shape == (600,)


def test_gaussian_past_its_memory_budget_is_the_same_estimate_from_chunked_sums():
    """A million rows do not fit scikit-learn's Ledoit-Wolf copies; the chunked sums give the same Gaussian
    (and each fold's, as all rows minus the fold), whether rows are many or dimensions are."""
    for X in (_normal(3000, d=20), _normal(60, d=40)):
        exact = GaussianDetector(random_state=0).fit(X)
        chunked = GaussianDetector(random_state=0, max_memory_mb=X.nbytes / 2**20 / 2).fit(X)
        np.testing.assert_allclose(chunked.calibration_scores_, exact.calibration_scores_, rtol=1e-9)
        np.testing.assert_allclose(chunked.precision_, exact.precision_, rtol=1e-8, atol=1e-12)
        fresh = _normal(50, d=X.shape[1], seed=7)
        np.testing.assert_allclose(chunked.anomaly_score(fresh), exact.anomaly_score(fresh), rtol=1e-9)


def test_ivf_pq_scores_a_row_the_same_in_any_batch():
    """What `predict --ray` relies on: a row's score does not depend on the rows scored with it."""
    X = _normal(12000, d=32)
    det = KNNDetector(max_memory_mb=0.5, random_state=0).fit(X)
    rows = _normal(2000, d=32, seed=4)
    whole = det.anomaly_score(rows)
    np.testing.assert_array_equal(np.concatenate([det.anomaly_score(rows[s:s + 300]) for s in range(0, 2000, 300)]),
                                  whole)


def test_nprobe_set_after_fit_is_checked_where_it_is_read():
    """nprobe is read at each search, so set_params(nprobe=0) after fit takes effect there, and was faiss'
    "'cur_nprobe > 0' failed" (-1: an OverflowError from faiss' SWIG layer)."""
    det = KNNDetector(max_memory_mb=0.05, random_state=0).fit(_normal(3000, d=16))
    assert det.train_.shape[0] == 0  # compressed: searched with nprobe
    for bad in (0, -1, None):
        with pytest.raises(ValueError, match=rf"KNNDetector\.nprobe: expected an integer from 1 .* got {bad}"):
            det.set_params(nprobe=bad).anomaly_score(_normal(3, d=16))
    assert det.set_params(nprobe=2).anomaly_score(_normal(3, d=16)).shape == (3,)


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("name", ["gaussian", "knn", "ecod", "iforest", "ensemble"])
def test_finite_values_near_float64s_limit_fit(name):
    """A column of finite values near 1e308 overflowed the covariance (gaussian: "Input contains infinity"),
    kNN's spread (a NaN threshold), ECOD's skewness (an overflow warning, skewness 0) and IsolationForest's
    float32 (inf, with an overflow warning): such a column is
    scaled by a power of two first, and outliers in it and in an ordinary column still rank on top."""
    rng = np.random.default_rng(0)
    X = _normal(300, d=3)
    X[:, 1] = 1e308 * np.clip(0.5 + 0.05 * rng.normal(size=300), 0.3, 0.7)
    # seeded: unseeded, 20 trees fall under iforest's bar on about 1 fit in 10 (4 of seeds 0-39)
    det = (FAST[name](random_state=0) if name in ("gaussian", "iforest", "ensemble") else FAST[name]()).fit(X)
    assert np.isfinite(det.calibration_scores_).all() and np.isfinite(det.offset_)
    fresh, planted = _normal(100, d=3, seed=3), _normal(6, d=3, seed=4)
    fresh[:, 1] = 1e308 * np.clip(0.5 + 0.05 * rng.normal(size=100), 0.3, 0.7)
    planted[:, 1] = 0.5e308
    planted[:3, 1] = 1.2e308  # 14 standard deviations off
    planted[3:, 0] += 40 * X[:, 0].std()
    scores = det.anomaly_score(np.vstack([fresh, planted]))
    assert np.isfinite(scores).all()
    # iforest (20 trees here) ranks these planted rows less sharply on any scale: its bar is lower, not its input
    assert roc_auc_score(np.r_[np.zeros(100), np.ones(6)], scores) > (0.9 if name == "iforest" else 0.95)
    det.check_state()


@pytest.mark.parametrize("name", ["gaussian", "knn", "ensemble"])
def test_a_row_of_huge_finite_values_is_flagged_never_nan(name):
    """A model fitted on ordinary rows, shown a row of 1e300s: the Gaussian's quadratic form overflowed, inf - inf
    gave a NaN score, and NaN >= threshold is false, so the row was called normal (the ensemble's too). (ECOD's
    score saturates at each column's last rank by design; a row far out in two of four columns can stay under.)"""
    det = FAST[name]().fit(_normal(200, d=4))
    rows = np.array([[1e300] * 4, [-1e308, 1e308, 1e308, -1e308], [1e200, 0.0, 0.0, 0.0]])
    scores = det.anomaly_score(rows)
    assert not np.isnan(scores).any() and (det.predict(rows) == -1).all()
    if name == "gaussian":  # exact where finite: the distance scales with the row's offset from the mean
        np.testing.assert_allclose(scores[2], 1e160 * det.anomaly_score(np.array([[1e40, 0.0, 0.0, 0.0]]))[0],
                                   rtol=1e-9)


def test_a_dataframe_is_scored_without_a_warning_from_torch():
    """A DataFrame's values reach the Gaussian read-only (pandas' copy-on-write): torch warned at length that the
    array "is not writable ... undefined behavior". Run in a fresh interpreter: torch warns once a process."""
    code = ("import numpy as np, pandas as pd; from normalcy.vectors import GaussianDetector; "
            "df = pd.DataFrame(np.random.default_rng(0).normal(size=(50, 3)), columns=list('abc')); "
            "GaussianDetector().fit(df).predict(df)")
    r = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0 and "not writable" not in r.stderr, r.stderr


@pytest.mark.parametrize("name", ["gaussian", "knn", "iforest", "ecod", "ensemble"])
def test_tiny_or_constant_tables_fit_without_a_library_warning(name):
    """Two rows (the fewest a fit takes) gave scikit-learn's "Only one sample available. You may want to reshape
    your data array" once per cross-validation fold, and a column of 0.1 on every row scipy's "Precision loss
    occurred in moment calculation due to catastrophic cancellation": words about arrays and moments that the
    user of a table can do nothing with. The fits are unchanged; they are quiet."""
    from normalcy.vectors.registry import VECTOR_DETECTORS

    rng = np.random.default_rng(0)
    for X in (rng.normal(size=(2, 3)), np.c_[rng.normal(size=(50, 2)), np.full(50, 0.1)]):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            det = VECTOR_DETECTORS[name]().fit(X)
            det.anomaly_score(X)


def test_a_value_past_float32_is_scored_by_the_forest_without_a_warning():
    """A row holding 1e39 where the column's values were near 1 printed numpy's "overflow encountered in cast"
    from inside scikit-learn (the forest holds float32); the score is the same, without the warning."""
    X = _normal(100)
    det = IForestDetector(random_state=0).fit(X)
    row = X[:1].copy()
    row[0, 0] = 1e39
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        score = det.anomaly_score(row)
    assert np.isfinite(score).all()


def test_ordinary_columns_are_not_rescaled():
    """The scaling is for columns beyond 2**+-128 only: an ordinary table fits bit for bit as before."""
    X = _normal(200)
    det = GaussianDetector().fit(X)
    assert (det.scale_ == 1.0).all()
    X[:, 2] *= 1e300
    scale = GaussianDetector().fit(X).scale_
    assert (np.delete(scale, 2) == 1.0).all() and np.frexp(scale[2])[0] == 0.5  # a power of two
    assert 0.5 <= np.abs(X[:, 2] * scale[2]).max() < 1.0


@pytest.mark.parametrize("make,words", [
    (lambda: GaussianDetector(fpr=None), r"GaussianDetector\.fpr: expected a finite number in \(0\.0, 1\.0\), got None"),
    (lambda: ECODDetector(fpr="0.1"), r"ECODDetector\.fpr: .* got '0\.1'"),
    (lambda: IForestDetector(fpr=2), r"IForestDetector\.fpr must be .* \(got 2\)"),
    (lambda: GaussianDetector(folds=2.5), r"GaussianDetector\.folds: expected an integer from 2"),
    (lambda: KNNDetector(n_neighbors=None), r"KNNDetector\.n_neighbors: expected an integer from 1"),
    (lambda: KNNDetector(n_neighbors=0), r"KNNDetector\.n_neighbors: expected an integer from 1 .* got 0"),
    (lambda: KNNDetector(nprobe=0), r"KNNDetector\.nprobe"),
    (lambda: KNNDetector(max_calibration=0), r"KNNDetector\.max_calibration"),
    (lambda: EnsembleDetector(members=[]), r"EnsembleDetector\.members: expected a non-empty list"),
    (lambda: EnsembleDetector(members=["knn"]), r"EnsembleDetector\.members: 'knn' is not a GaussianDetector"),
    (lambda: EnsembleDetector(members=[EnsembleDetector()]), r"EnsembleDetector\(\) is not a GaussianDetector"),
    (lambda: EnsembleDetector(members=[KNNDetector(n_neighbors=-1)]), r"KNNDetector\.n_neighbors"),
    (lambda: GaussianDetector(max_memory_mb=None), r"GaussianDetector\.max_memory_mb: expected a positive number"),
    (lambda: KNNDetector(max_memory_mb=0), r"KNNDetector\.max_memory_mb: .* got 0"),
    (lambda: KNNDetector(max_memory_mb=float("nan")), r"KNNDetector\.max_memory_mb: .* got nan"),
    (lambda: GaussianDetector(random_state="a"), r"GaussianDetector\.random_state: expected None or a seed"),
    (lambda: KNNDetector(random_state=-1), r"KNNDetector\.random_state: .* got -1"),
    (lambda: EnsembleDetector(random_state=1.5), r"EnsembleDetector\.random_state: .* got 1\.5"),
    # IsolationForest refused a Generator from inside the fit (the others take one), also as the ensemble's seed
    (lambda: IForestDetector(random_state=np.random.default_rng(0)), r"IForestDetector\.random_state: .*no Generator"),
    (lambda: EnsembleDetector([IForestDetector(n_estimators=5)], random_state=np.random.default_rng(0)),
     r"IForestDetector\.random_state: .*no Generator"),
])
def test_bad_parameters_are_named_at_fit(make, words):
    """A TypeError or IndexError from deep inside the fit, or worse a fit that saved a model load then refused
    (an ensemble of ensembles, nprobe 0), or a budget of 0 or NaN that silently compressed every table: each
    parameter is checked at fit as check_state checks it on load."""
    with pytest.raises(ValueError, match=words):
        make().fit(_normal(40))


def test_a_members_parameter_is_not_set_by_a_nested_name():
    """``set_params(members__0__n_neighbors=3)``, as for a pipeline's steps, failed with "'NoneType' object has no
    attribute 'set_params'" ('list' with members given): members is a list, set as a whole."""
    for det in (EnsembleDetector(), EnsembleDetector([KNNDetector()])):
        with pytest.raises(ValueError, match=r"cannot set 'members__0__n_neighbors': members is a list; give the whole"):
            det.set_params(members__0__n_neighbors=3)
    det = EnsembleDetector().set_params(members=[KNNDetector(n_neighbors=3)], fpr=0.05)
    assert (det.members[0].n_neighbors, det.fpr) == (3, 0.05)


def test_every_kind_of_seed_and_an_unlimited_budget_still_fit():
    X = _normal(40)
    for seed in (None, 0, 2**32 - 1, np.random.RandomState(0), np.random.default_rng(0)):
        assert len(GaussianDetector(random_state=seed).fit(X).predict(X)) == 40
    assert KNNDetector(max_memory_mb=float("inf")).fit(X).train_.shape == X.shape


def test_knn_a_constant_column_counts_the_same_whatever_value_it_holds():
    """A training column that never varied had the rounding of its mean for a spread: 1.4e-17 for a column of
    0.1 (0 for one of 0.0, scale 1), so a test row that changed it by 0.5 scored 1e16 units where a column of 0
    gave 0.5. Both keep their units now."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    scores = []
    for c in (0.0, 0.1, 0.3):
        Xc = np.column_stack([X, np.full(len(X), c)])
        det = KNNDetector(n_neighbors=5, random_state=0).fit(Xc)
        test = np.column_stack([X[:5] + 0.1, np.full(5, c + 0.5)])
        scores.append(det.decision_function(test))
    np.testing.assert_allclose(scores[1], scores[0], rtol=1e-6)
    np.testing.assert_allclose(scores[2], scores[0], rtol=1e-6)
    assert np.all(scores[0] < 10)


@pytest.mark.parametrize("cls", [GaussianDetector, KNNDetector, EnsembleDetector])
def test_a_sparse_dataframe_is_refused_with_what_to_do(cls) -> None:
    """A pandas DataFrame of sparse columns was scikit-learn's "fill value must be 0 when converting to COO matrix"
    (NaN fill) or "use '.toarray()'" (0 fill), which a DataFrame has not: one TypeError names the sparse columns
    and how to densify them (not densified here: it may not fit in memory dense). Densified, it fits as dense."""
    pd = pytest.importorskip("pandas")
    X = np.random.default_rng(0).normal(size=(30, 3))
    X[X < 0.3] = 0.0
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    seeded = {"random_state": 0} if "random_state" in cls._get_param_names() else {}
    for fill in (0.0, np.nan):
        sparse = df.astype(pd.SparseDtype("float64", fill))
        with pytest.raises(TypeError, match=rf"{cls.__name__}: DataFrame column\(s\) 'a', 'b', 'c' are sparse .*"
                                            r"X\.astype\(float\)"):
            cls().fit(sparse)
        fitted = cls(**seeded).fit(sparse.astype(float))
        np.testing.assert_array_equal(fitted.calibration_scores_, cls(**seeded).fit(df).calibration_scores_)
        with pytest.raises(TypeError, match="are sparse"):
            fitted.anomaly_score(sparse)


@pytest.mark.parametrize("cls", [GaussianDetector, KNNDetector, EnsembleDetector])
def test_a_dataframe_column_of_categories_text_or_dates_is_named(cls) -> None:
    """A categorical (or text, or datetime) column of a DataFrame was scikit-learn's "could not convert string to
    float: 'x'" (dates: numpy's DTypePromotionError), naming no column: one ValueError names it and what to do.
    Categories that are numbers, and booleans, are fitted as before."""
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": np.arange(10.0), "b": np.arange(10.0) % 3})
    with pytest.raises(ValueError, match=r"DataFrame column 'kind' is categorical \('x', 'y'\): encode it"):
        cls().fit(df.assign(kind=pd.Categorical(["x", "y"] * 5)))
    with pytest.raises(ValueError, match=r"column 'when' holds datetime64\[ns\]: .*column 'who' holds text \('w'\)"):
        cls().fit(df.assign(when=pd.date_range("2020-01-01", periods=10).astype("datetime64[ns]"), who="w"))
    rng = np.random.default_rng(0)
    kind, flag = rng.integers(1, 4, 10).astype(float), rng.integers(0, 2, 10).astype(bool)
    df = pd.DataFrame({"a": rng.normal(size=10), "b": rng.normal(size=10)})
    seeded = {"random_state": 0} if "random_state" in cls._get_param_names() else {}
    fitted = cls(**seeded).fit(df.assign(kind=pd.Categorical(kind), flag=flag))
    plain = cls(**seeded).fit(df.assign(kind=kind, flag=flag.astype(float)))
    np.testing.assert_array_equal(fitted.calibration_scores_, plain.calibration_scores_)
    with pytest.raises(ValueError, match=f"{cls.__name__}: DataFrame column 'kind' is categorical"):
        fitted.anomaly_score(df.assign(kind=pd.Categorical(["x", "y"] * 5), flag=flag))
