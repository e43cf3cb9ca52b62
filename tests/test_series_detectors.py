"""The series protocol (base.py), the subsequence detectors (knn, pca), their model files, and events."""

from __future__ import annotations

import json
import logging
import os
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from normalcy.errors import InputError, NotFittedError
from normalcy.numerics.stats import threshold_at
from normalcy.series import pca
from normalcy.series.base import SeriesDetector, flag_block, standardiser
from normalcy.series.dynamic import dynamic_epsilon
from normalcy.series.events import events, local_events, prune, prune_windows, pruned, spans
from normalcy.series.io import Series, read_series_folder
from normalcy.series.knn import SubsequenceKNN
from normalcy.series.registry import DETECTORS, create, is_series_model, load
from normalcy.series.runs import score_series
from normalcy.series.windows import causal_windows, find_period, flat_windows

SUBSEQUENCE = ["knn", "pca"]


def sine(n: int = 3000, period: int = 40, d: int = 1, seed: int = 0) -> np.ndarray:
    """d noisy sines of one period, each with its own phase and level."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    return np.sin(2 * np.pi * t / period + np.arange(d)) + 3 * np.arange(d) + 0.05 * rng.standard_normal((n, d))


def series(values: np.ndarray, name: str = "s", columns: tuple[str, ...] | None = None) -> Series:
    values = values.reshape(len(values), -1)
    cols = columns or tuple(f"m{j}" for j in range(values.shape[1]))
    return Series(name, np.arange(len(values), dtype=np.float64), values, cols, None, [], Path(f"{name}.csv"))


# ---------------------------------------------------------------------------------------------- windows


def test_windows_are_views_and_causal() -> None:
    X = np.arange(12.0).reshape(6, 2)
    W = flat_windows(X, 3)
    assert W.shape == (4, 6) and np.shares_memory(W, X)
    np.testing.assert_array_equal(W[1], [2, 3, 4, 5, 6, 7])
    C = causal_windows(X, 3)
    assert C.shape == (6, 6)
    np.testing.assert_array_equal(C[0], [0, 1, 0, 1, 0, 1])  # row 0 on its own value repeated
    np.testing.assert_array_equal(C[5], W[3])


def test_find_period() -> None:
    assert abs(find_period(sine(4000, period=50)) - 50) <= 1
    assert abs(find_period(sine(4000, period=24, d=3)) - 24) <= 1
    assert find_period(np.random.default_rng(0).standard_normal(2000)) > 0


@pytest.mark.parametrize("unit", [1e300, 1e-300, 1e-310])
def test_find_period_in_any_unit(unit: float) -> None:
    """Values near 1e300 overflowed in the autocorrelation's squares (1e-300 underflowed): NaN, a RuntimeWarning
    on stderr, and no period, so eval's VUS window (TSB-AD's find_length on the raw test values) fell back to
    125 rows on a series of period 50."""
    from normalcy.evaluation.series_metrics import vus_window

    x = 2 + sine(2000, period=50)[:, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert find_period(x * unit) == find_period(x) == vus_window(x * unit) == 50


def test_standardiser_keeps_constant_columns() -> None:
    X = np.column_stack([np.arange(100.0), np.full(100, 7.0), np.r_[np.zeros(90), np.ones(10)]])
    centre, scale = standardiser(X)
    assert centre[1] == 7 and scale[1] == 1  # a constant column: scale 1, its change still counts
    assert scale[2] == pytest.approx(X[:, 2].std())  # IQR 0 but not constant: the std
    assert scale[0] == pytest.approx(np.subtract(*np.quantile(X[:, 0], [0.75, 0.25])) / 1.349)


@pytest.mark.parametrize("unit", [1e-12, 1e-300])
def test_a_column_of_small_units_is_not_taken_for_constant(unit: float) -> None:
    """A spread under 1e-12 in absolute terms (a capacitance in farads, values near 1e-300) made the column
    constant at scale 1: every row scored 0 and a spike to twice the normal level was never flagged."""
    X = 1 + 0.01 * sine(800)
    test = X[600:].copy()
    test[100] = 2
    _, scale = standardiser(X * unit)
    assert scale[0] == pytest.approx(standardiser(X)[1][0] * unit)
    det = create("knn", window=10).fit(X[:600] * unit, progress=False)
    np.testing.assert_array_equal(det.score(test * unit).decision,
                                  create("knn", window=10).fit(X[:600], progress=False).score(test).decision)
    assert det.score(test * unit).decision[100] == 1
    assert standardiser(np.full((10, 1), unit))[1][0] == 1 and standardiser(np.zeros((10, 1)))[1][0] == 1


# --------------------------------------------------------------------------------------------- protocol


def test_registry_and_params() -> None:
    assert set(SUBSEQUENCE) <= set(DETECTORS)
    det = create("knn", k=3, window=20, fpr=0.05)
    assert (det.k, det.window, det.fpr, det.holdout) == (3, 20, 0.05, 0.2)
    with pytest.raises(InputError, match="unknown series detector 'nope'"):
        create("nope")
    with pytest.raises(InputError, match=r"detector knn: k: input should be greater than or equal to 1 \(got 0\)"):
        create("knn", k=0)
    with pytest.raises(InputError, match="detector pca: neighbours: extra inputs are not permitted"):
        create("pca", neighbours=3)
    with pytest.raises(NotFittedError):
        create("knn").score(np.zeros(100))


@pytest.mark.parametrize("data", ["data.csv", [[1.0, "a"]], {"value": [1.0, 2.0]}])
def test_scoring_what_is_not_numbers_says_what_is_taken(data: object) -> None:
    """``score("data.csv")`` was numpy's bare "could not convert string to float" (a dict: a TypeError), where
    ``fit`` of the same said what it takes."""
    det = create("knn", window=10).fit(sine(300), progress=False)
    with pytest.raises(InputError, match=r"expected a Series, a DataFrame or an \(n,\) or \(n, d\) array of numbers"):
        det.score(data)


def test_fit_with_labels_as_scikit_learn_is_called_is_refused() -> None:
    """``fit(X, y)`` took y for ``progress``: the labels were ignored without a word (a trained detector's
    progress bar: "The truth value of an array ... is ambiguous")."""
    with pytest.raises(TypeError, match="positional argument"):
        create("knn").fit(sine(400), np.zeros(400))


def test_repr_names_the_parameters_set() -> None:
    """The repr was Python's ``<normalcy.series.knn.SubsequenceKNN object at 0x...>``, naming no parameter."""
    assert repr(create("knn")) == "SubsequenceKNN()"
    assert repr(create("knn", k=3, window=20, fpr=0.05)) == "SubsequenceKNN(fpr=0.05, window=20, k=3)"
    assert all(repr(create(name)).endswith("()") for name in DETECTORS)


def test_unfitted_is_scikit_learns_not_fitted() -> None:
    """``except sklearn.exceptions.NotFittedError``, what the vector detectors (scikit-learn estimators) raise,
    missed an unfitted series detector's error."""
    from sklearn.exceptions import NotFittedError as SklearnNotFitted

    with pytest.raises(SklearnNotFitted, match="knn series detector is not fitted"):
        create("knn").score(np.zeros(100))


@pytest.mark.parametrize(("name", "value", "message"), [
    ("k", 0, "k: input should be greater than or equal to 1"),  # ZeroDivisionError inside the fit
    ("window", 0, "window: input should be greater than or equal to 1"),  # IndexError
    ("fpr", 2, "fpr must be a number between 0 and 1, both excluded"),  # pydantic's multi-line dump, after the first fit
    ("event_gap", None, "event_gap: input should be a valid integer"),
])
def test_parameters_set_after_construction_are_checked_at_fit(name: str, value: object, message: str) -> None:
    """A parameter is an attribute (``det.k``), and one set after construction was used unchecked."""
    det = create("knn")
    setattr(det, name, value)
    with pytest.raises(InputError, match=f"detector knn: {message}"):
        det.fit(sine(400), progress=False)


@pytest.mark.parametrize("name", list(DETECTORS))
def test_get_params_set_params_and_clone(name: str) -> None:
    """A series detector had no ``get_params``: ``sklearn.base.clone`` refused it, and a grid search could not
    take it. The parameters are ``Params``' fields; clone gives an unfitted copy with the same ones (a tuple
    such as auto's ``candidates`` too: pydantic rebuilt it, which clone refused as a modified parameter)."""
    from sklearn.base import clone

    det = create(name, fpr=0.05, window=12, **({"candidates": ("knn",)} if name == "auto" else {}))
    params = det.get_params()
    assert set(params) == set(DETECTORS[name].Params.model_fields) and params["fpr"] == 0.05
    copy_ = clone(det)
    assert type(copy_) is type(det) and copy_.get_params() == params
    assert det.set_params(fpr=0.2, window=8) is det and (det.fpr, det.window) == (0.2, 8)


def test_fpr_changed_after_fit_is_not_saved_beside_the_old_threshold(tmp_path: Path) -> None:
    """``set_params(fpr=0.2)`` after fit, then ``save``: model.json's params named fpr 0.2 beside the threshold
    set at 0.01 (the model loaded and decided at 0.01). Refused, naming both; forecast's dynamic threshold does
    not use fpr, so it saves."""
    det = create("knn", window=10).fit(sine(400, period=20), progress=False)
    det.set_params(fpr=0.2)
    with pytest.raises(InputError, match=r"detector knn: fpr is 0.2, but its threshold was set at fpr 0.01"):
        det.save(tmp_path / "m")
    det.set_params(fpr=0.01)
    loaded = load(det.save(tmp_path / "m"))
    loaded.fpr = 0.05
    with pytest.raises(InputError, match=r"fpr is 0.05, but its threshold was set at fpr 0.01"):
        loaded.save(tmp_path / "m2")


def test_set_params_refuses_an_unknown_name_naming_the_valid_ones() -> None:
    det = create("knn")
    with pytest.raises(ValueError, match=r"Invalid parameter 'kk' for estimator SubsequenceKNN\(\)\. Valid .*'k'"):
        det.set_params(kk=3)
    with pytest.raises(ValueError, match="window is not an estimator with parameters of its own; set it as a whole"):
        det.set_params(window__size=3)  # scikit-learn's: "'NoneType' object has no attribute 'set_params'"


@pytest.mark.parametrize("name", SUBSEQUENCE)
def test_learned_attributes_appear_at_fit_and_load_only(name: str, tmp_path: Path) -> None:
    """``threshold_`` (None) and ``flags_`` existed before fit, so ``check_is_fitted`` (which also failed for want
    of scikit-learn's tags) and ``hasattr(det, "threshold_")`` took an unfitted detector for a fitted one."""
    from sklearn.exceptions import NotFittedError as SklearnNotFitted
    from sklearn.utils.validation import check_is_fitted

    det = create(name, window=10)
    assert not [k for k in vars(det) if k.endswith("_")]
    with pytest.raises(SklearnNotFitted):
        check_is_fitted(det)
    det.fit(sine(600, period=20), progress=False)
    check_is_fitted(det)
    loaded = load(det.save(tmp_path / "m"))
    check_is_fitted(loaded)
    for key in ("threshold_", "flags_", "columns_", "window_", "mean_", "scale_", "n_train_"):
        assert np.array_equal(getattr(loaded, key), getattr(det, key)), key
    assert np.array_equal(clone_score(loaded), clone_score(det))


def clone_score(det: SeriesDetector) -> np.ndarray:
    """Scores of a deep copy, which must score as the original."""
    import copy

    return copy.deepcopy(det).score(sine(300, period=20, seed=1)).score


def test_a_failed_refit_leaves_an_unfitted_detector_not_a_mix_of_two() -> None:
    """A second fit refused midway (training series whose columns differ) kept the first fit's threshold and
    standardisation beside the second's columns: scoring then failed with numpy's "operands could not be
    broadcast together". The learned state is dropped as a fit begins, so it is plainly unfitted."""
    det = create("knn", window=10).fit(sine(600, period=20), progress=False)
    a, b = series(sine(600, period=20, d=2), "a", ("m0", "m1")), series(sine(600, period=20, d=2), "b", ("m0", "m2"))
    with pytest.raises(InputError, match="differ from the first training series"):
        det.fit([a, b], progress=False)
    with pytest.raises(NotFittedError):
        det.score(a)
    with pytest.raises(NotFittedError):
        det.score_one([0.0, 0.0])


@pytest.mark.parametrize(("name", "param", "value"), [
    ("knn", "k", 0),  # IndexError inside scoring
    ("knn", "k", "x"),  # TypeError: '<' not supported between instances of 'int' and 'str'
    ("forecast", "history", 0),  # IndexError
])
def test_a_parameter_set_after_fit_is_checked_at_scoring_and_save(name: str, param: str, value: object,
                                                                   tmp_path: Path) -> None:
    """``set_params`` (or an attribute) after fit was used unchecked by scoring, and ``save`` failed with
    pydantic's multi-line ValidationError dump: both are now the one-line error ``fit`` gives."""
    det = create(name, window=10, **({"steps": 3} if name == "forecast" else {})).fit(sine(600, period=20),
                                                                                       progress=False)
    det.set_params(**{param: value})
    for use in (lambda: det.score(sine(100, period=20)), lambda: det.score_one([0.0]),
                lambda: det.save(tmp_path / "m")):
        with pytest.raises(InputError, match=f"detector {name}: {param}: "):
            use()


def test_a_parameter_set_after_construction_is_converted_as_at_construction() -> None:
    """``det.fpr = "0.1"``: a TypeError inside the fit ('float' - 'str'); ``create("knn", fpr="0.1")`` takes it."""
    det = create("knn")
    det.fpr = "0.1"
    det.fit(sine(400), progress=False)
    assert det.fpr == 0.1 and det.threshold_ == create("knn", fpr=0.1).fit(sine(400), progress=False).threshold_


@pytest.mark.parametrize("name", SUBSEQUENCE)
def test_spike_found_and_named(name: str) -> None:
    X = sine(3000, d=3)
    det = create(name, window=40).fit(series(X[:2000]), progress=False)
    test = X[2000:].copy()
    test[500:505, 1] += 4  # a spike in metric m1
    r = det.score(series(test))
    assert r.score.shape == (1000,) and r.contributions.shape == (1000, 3) and r.decision.dtype == np.int8
    assert (r.contributions >= 0).all()
    np.testing.assert_allclose(r.contributions.sum(axis=1), r.score)
    np.testing.assert_array_equal(r.decision, r.score >= det.threshold_)
    # the first rows (a partial window) are not flagged for their short past; few normal rows are
    assert r.decision[500:505].all() and r.decision[:40].sum() <= 4 and r.decision[:450].mean() < 0.15
    (ev,) = [e for e in events(np.arange(1000.0), r.score, r.decision, r.contributions, ("m0", "m1", "m2"),
                               gap=det.window_) if e.first <= 502 <= e.last]
    assert ev.metrics[0] == "m1" and 500 <= ev.peak_time <= 545


@pytest.mark.parametrize("name", SUBSEQUENCE)
def test_threshold_at_the_target_false_alarm_rate(name: str) -> None:
    X = sine(6000, d=2, seed=1)
    det = create(name, window=40, fpr=0.05).fit(X[:4000], progress=False)
    flagged = det.score(X[4000:]).decision.mean()  # fresh normal rows: about fpr of them flagged
    assert 0.005 < flagged < 0.15


@pytest.mark.parametrize("name", SUBSEQUENCE)
def test_scores_are_causal(name: str) -> None:
    X = sine(1500, d=2)
    det = create(name, window=30).fit(X[:1000], progress=False)
    whole = det.score(X[1000:]).contributions
    part = det.score(X[1000:1200]).contributions
    np.testing.assert_allclose(part, whole[:200], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", [*SUBSEQUENCE, "forecast"])
@pytest.mark.parametrize("first", [0, 7, 29, 30, 45])
def test_score_from_skips_the_past_only(name: str, first: int) -> None:
    """A stream scores each batch after rows that are past only; skipping them (kNN's partial windows
    cost a search each: NAB's 58 files took 62 s with them, 27 s without) changes no score."""
    X = sine(1300, d=2)
    det = create(name, window=30).fit(X[:1000], progress=False)
    Z = det.standardise(X[1000:])
    np.testing.assert_allclose(det._score_from(Z, first), det._score(Z)[first:], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("window", "d"), [(1, 1), (16, 1), (32, 1), (10, 3)])
def test_knn_one_candidate_scores_as_the_choice_among_candidates(window: int, d: int) -> None:
    """Offline, k = 1 measures its one candidate without the (rows, candidates, window) differences, sort and
    gather the choice among several takes (half of a score's time past faiss's search): the contributions are
    bit for bit those of that choice, here given each neighbour twice (the first of equals is the k-th)."""
    X = sine(3000, d=d)
    X[2500:2510, 0] += 3
    det = create("knn", window=window).fit(X[:2000], progress=False)
    Q = flat_windows(det.standardise(X[2000:]), window) - det.centre_
    near = np.random.default_rng(0).integers(0, len(det.bank_), (len(Q), 1))
    one = det._contributions(Q, near)
    np.testing.assert_array_equal(one, det._contributions(Q, np.repeat(near, 2, axis=1)))
    assert one.shape == (len(Q), d) and (one[0] > 0).all()


@pytest.mark.parametrize("name", SUBSEQUENCE)
def test_score_one_matches_score(name: str) -> None:
    X = sine(2500, d=2)
    X[2200:2210, 0] += 3
    det = create(name, window=30).fit(X[:1500], progress=False)
    batch = det.score(X[1500:])
    stream = np.array([det.score_one(x) for x in X[1500:]])
    np.testing.assert_allclose(stream, batch.score, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(det.last_contributions, batch.contributions[-1], rtol=1e-5, atol=1e-9)
    det.reset_stream()  # a new stream starts from its own first row, as score() does
    np.testing.assert_allclose([det.score_one(x) for x in X[2000:2100]], det.score(X[2000:2100]).score,
                               rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("k", [1, 3])
def test_knn_of_one_number_windows_streams_as_it_scores_offline(k: int) -> None:
    """Windows of one number (a univariate series, window 1: auto's shortest member) lie so close together that
    float32's |q|^2 - 2qb + |b|^2, which faiss (offline) and the stream's product round differently, picked
    other neighbours: a streamed row scored up to 9x its offline score (43 of 1,000 rows apart). They are
    searched exactly now: the same neighbour, the same score, and the true nearest one."""
    X = np.sin(np.arange(3000) / 10)[:, None] + 0.1 * np.random.default_rng(0).standard_normal((3000, 1))
    det = create("knn", window=1, k=k).fit(X[:2000], progress=False)
    for learned in (0, 300):  # and after learning rows online (a bank that changed)
        for x in X[2000:2000 + learned]:
            det.partial_fit(x)
        det.reset_stream()
        offline = det.score(X[2300:]).score
        stream = np.array([det.score_one(x) for x in X[2300:]])
        np.testing.assert_allclose(stream, offline, rtol=1e-12, atol=0)
        Z, bank = det.standardise(X[2300:])[:, 0] - det.centre_[0], det.bank_[:, 0].astype(np.float64)
        exact = np.sort(np.abs(Z[:, None] - bank[None]), axis=1)[:, k - 1]
        np.testing.assert_allclose(offline, exact, rtol=1e-12, atol=0)


def test_a_plain_detectors_stream_warms_up_before_it_alarms() -> None:
    """A plain detector's stream calibrates on its own rows: the first MIN_CALIBRATION score 0 (on the second
    row, a spread of one row would make any change an alarm), then scores follow; batch and row agree."""
    from normalcy.series.base import MIN_CALIBRATION
    from normalcy.series.stream import Stream

    X = sine(1700)
    out = Stream(create("knn", window=16).fit(X[:1500], progress=False)).run(X[1500:])
    assert (out.score[:MIN_CALIBRATION] == 0).all() and out.score[MIN_CALIBRATION:].max() > 0
    row = Stream(create("knn", window=16).fit(X[:1500], progress=False))
    np.testing.assert_allclose([row.update(x) for x in X[1500:]], out.reported, atol=1e-3)


def test_a_replayed_streams_warm_up_is_said(caplog: pytest.LogCaptureFixture) -> None:
    """predict --stream of a plain detector scored its first MIN_CALIBRATION rows 0 (the stream's calibration
    warm-up) without a word; they are now said as rows not judged (``say_blind``), and auto has none."""
    from normalcy.series.base import MIN_CALIBRATION
    from normalcy.series.runs import replay_series, say_blind

    X = sine(1700)
    scored = replay_series(create("knn", window=16).fit(series(X[:1500]), progress=False), series(X[1500:]))
    assert scored.blind == MIN_CALIBRATION and not scored.score[:MIN_CALIBRATION].any()
    with caplog.at_level(logging.INFO, logger="normalcy"):
        assert say_blind([("s.csv", scored)]) == MIN_CALIBRATION
    assert (f"s.csv: the first {MIN_CALIBRATION} row(s) score 0, not judged: a stream of knn learns its score "
            f"calibration on its first {MIN_CALIBRATION} rows") in caplog.text


def test_a_replayed_value_out_of_range_is_said_once_naming_its_file(caplog: pytest.LogCaptureFixture) -> None:
    """predict --stream of a series with a value of 1e300 said it was clipped twice: naming the file, then
    again as "array" (the stream standardised the rows a second time); once now, the scores as before."""
    from normalcy.series.runs import replay_series
    from normalcy.series.stream import Stream

    X = sine(600)
    det = create("knn", window=16).fit(series(X[:500]), progress=False)
    test = X[500:].copy()
    test[50] = 1e300
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        scored = replay_series(det, series(test))
    assert caplog.text.count("spreads from the training median") == 1 and "s.csv: 1 value(s)" in caplog.text
    np.testing.assert_array_equal(scored.score, Stream(det, resume=False).run(test).score)


@pytest.mark.parametrize("block", [7, 128, 5000])
def test_knn_learns_a_block_as_row_by_row(block: int) -> None:
    """A stream's knn learns 128 rows at once (``learn_block``): the bank, grown to its online capacity and
    then replaced oldest first, is the one row-by-row ``partial_fit`` leaves, a block longer than the bank
    included."""
    from normalcy.series.auto import learn_block

    X = sine(5100)
    a, b = (create("knn", window=16, online_floats=2**11).fit(X[:100], progress=False) for _ in range(2))
    Z = a.standardise(X[100:])
    for t in range(len(Z)):
        a._partial_fit(Z[max(0, t - 15):t + 1])
    for s in range(0, len(Z), block):
        lo = max(0, s - 15)
        learn_block(b, Z[lo:s + block], s - lo)
    assert len(a.bank_) == a.online_capacity == 128 and a.fifo_ == b.fifo_
    np.testing.assert_array_equal(a.bank_, b.bank_)


@pytest.mark.parametrize("k", [1, 3])
def test_knn_short_windows_norms_from_one_table(k: int) -> None:
    """A series' first window_ - 1 rows (shorter windows) are compared with the bank's last rows, whose squared
    norms come from one table per bank, not summed again for each row (as many numbers as the row's product:
    1.3 ms a row for a 512-row window on a bank of 9,089); the scores are as before, and the table follows the
    bank as it learns."""
    X = sine(700, d=2)
    det = create("knn", window=24, k=k).fit(X[:400], progress=False)
    bank = det.bank_.astype(np.float64)
    for t in (1, 5, 23):
        L = 2 * t
        np.testing.assert_allclose(det._tail_norms(L), np.einsum("ij,ij->i", bank[:, -L:], bank[:, -L:]), rtol=1e-6)
    table = det._tails
    assert table is not None and table.shape == (24, len(bank))
    det.reset_stream()
    one = [det.score_one(x) for x in X[400:430]]
    assert det._tails is table
    np.testing.assert_allclose(one, det.score(X[400:430]).score, rtol=1e-9, atol=1e-12)
    for x in X[430:460]:
        det.partial_fit(x)  # whole windows learned: the bank and its table change
    assert det._tails is None
    det.reset_stream()
    np.testing.assert_allclose([det.score_one(x) for x in X[460:480]], det.score(X[460:480]).score, rtol=1e-9,
                               atol=1e-12)


@pytest.mark.parametrize(("window", "d"), [(24, 2), (1, 1)])
def test_knn_scoring_a_series_offline_keeps_no_bank_sized_copies(window: int, d: int) -> None:
    """The transposed bank and the short windows' norm table serve a series' first rows (and windows of one
    number their float64 copy); a fitted model scoring whole series offline lets them go after (a bank of 128 MB
    would otherwise hold about 3 x that)."""
    X = sine(700, d=d)
    det = create("knn", window=window).fit(X[:400], progress=False)
    first = det.score(X[400:]).score
    assert det._bank_t is None and det._tails is None and det._last64 is None
    np.testing.assert_array_equal(det.score(X[400:]).score, first)


@pytest.mark.parametrize("k", [1, 3])
def test_a_streams_pruned_search_finds_the_same_neighbours(monkeypatch: pytest.MonkeyPatch, k: int) -> None:
    """A stream's row searches the windows whose projected distance does not rule them out; the scores are
    those of the full search, learning included, on a series with a shape and on pure noise (where the
    bound prunes little and the full product is taken)."""
    import normalcy.series.knn as knn_module

    shaped = sine(6000, period=50, seed=2)
    shaped[5000:5020] += 2.0
    noise = np.random.default_rng(3).standard_normal((6000, 1))
    for X in (shaped, noise):
        runs, tried = [], []
        for floats in (0, 10**12):  # pruned (any bank), full product
            monkeypatch.setattr(knn_module, "PRUNE_FLOATS", floats)
            det = create("knn", window=50, k=k, max_bank=3000).fit(X[:3000], progress=False)
            pruned = det._pruned
            det._pruned = lambda q: tried.append(pruned(q)) or tried[-1]
            out = []
            for x in X[3000:]:
                out.append(det.score_one(x))
                det.partial_fit(x)
            runs.append(np.array(out))
        np.testing.assert_allclose(runs[0], runs[1], rtol=1e-5, atol=1e-9)  # float32 near-ties, as a batch
        found = [t for t in tried if t is not None]
        if X is shaped:  # the bound kept a small share of the bank for most rows
            assert len(found) > 0.9 * len(tried) and np.median([len(t) for t in found]) < 300


def test_default_window_from_the_period() -> None:
    det = create("pca").fit(sine(3000, period=60), progress=False)
    assert abs(det.window_ - 60) <= 1
    det = create("pca").fit(np.random.default_rng(0).standard_normal(3000), progress=False)
    assert 8 <= det.window_ <= 256
    det = create("pca").fit(sine(3000, period=120, d=4), progress=False)  # at most 256 numbers a window
    assert det.window_ == 64


def test_labelled_training_rows_are_named(caplog: pytest.LogCaptureFixture) -> None:
    """A training file with rows labelled anomalous is fitted whole (a window cannot skip rows): said, not silent."""
    s = series(sine(600))
    s.labels = np.zeros(600, np.int8)
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        create("knn", window=10).fit(s, progress=False)
    assert not caplog.records
    s.labels[100:140] = 1
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        create("knn", window=10).fit(s, progress=False)
    assert "s.csv: 40 row(s) labelled anomalous are learned as normal" in caplog.text


@pytest.mark.parametrize("name", ["knn", "auto"])
def test_fewer_rows_than_a_series_file_needs_are_refused_at_fit(name: str) -> None:
    """An array of 2 to 15 rows was fitted where a file of them is refused: auto learned empty banks ("Mean of
    empty slice") and scored every later row 0 (threshold 1e-6), a 10-spread spike too; knn's threshold rested on
    no held-out row at all."""
    x = np.random.default_rng(0).normal(size=(16, 2))
    for n in (2, 4, 15):
        with pytest.raises(InputError, match=f"array: {n} row\\(s\\); a series needs at least 16"):
            create(name).fit(x[:n], progress=False)
    with pytest.raises(InputError, match=r"s\.csv: 5 row\(s\)"):
        create(name).fit([series(sine(100, d=2)), series(x[:5])], progress=False)
    assert create(name).fit(x, progress=False).score(x + 10).decision.all()


def test_bad_inputs() -> None:
    det = create("knn", window=50)
    with pytest.raises(InputError, match=r"array: 79 rows to fit on, fewer than 2 x the window \(50\)"):
        det.fit(np.zeros(99) + np.arange(99), progress=False)
    det = create("knn", window=10).fit(series(sine(600, d=2)), progress=False)
    with pytest.raises(InputError, match=r"x\.csv: columns do not match the model's: missing \['m1'\]"):
        det.score(series(sine(100, d=1), "x"))
    with pytest.raises(InputError, match="array: 3 columns, the model has 2"):
        det.score(sine(100, d=3))
    with pytest.raises(InputError, match="NaN or infinite"):
        det.score_one(np.array([np.nan, 1.0]))
    with pytest.raises(InputError, match=r"s\.csv: columns \['m0'\] differ from the first training series"):
        create("knn", window=10).fit([series(sine(600, d=2)), series(sine(600, d=1))], progress=False)
    # columns are matched by name, whatever their order in the file
    swapped = series(sine(300, d=2)[:, ::-1], columns=("m1", "m0"))
    np.testing.assert_allclose(det.score(swapped).score, det.score(sine(300, d=2)).score)


def test_score_one_takes_one_row_only() -> None:
    """Two rows of a one-column model were flattened into one row of two values and scored without a word."""
    det = create("knn", window=10).fit(sine(600), progress=False)
    scores = []
    for row in (0.5, np.array([0.5]), np.array([[0.5]])):  # a number, d values, a (1, d) array: the same row
        det.reset_stream()
        scores.append(det.score_one(row))
    assert scores[0] == scores[1] == scores[2]
    with pytest.raises(InputError, match=r"one row of 1 value\(s\) expected, got an array of shape \(2, 1\)"):
        det.score_one(np.array([[0.5], [0.6]]))
    two = create("knn", window=10).fit(sine(600, d=2), progress=False)
    with pytest.raises(InputError, match=r"shape \(2, 1\)"):
        two.score_one(np.array([[0.5], [0.6]]))
    with pytest.raises(InputError, match=r"shape \(2, 1\)"):
        two.partial_fit(np.array([[0.5], [0.6]]))


@pytest.mark.parametrize("name", DETECTORS)
def test_values_near_the_largest_float_are_the_most_anomalous_not_nan(name: str, caplog: pytest.LogCaptureFixture,
                                                                     recwarn: pytest.WarningsRecorder) -> None:
    """A value of 1e300 in a metric whose normal spread is 1 used to overflow float32 searches and networks:
    every score NaN and nothing flagged. Values past 1e6 spreads are counted as 1e6, with a warning naming the
    series; they score finite and are flagged, in a batch, a run and a stream."""
    from normalcy.series.stream import Stream

    X = sine(1200, d=2, period=16, seed=4)
    extra = {"steps": 40} if name in ("autoencoder", "hypad", "forecast") else {}
    det = create(name, window=16, **extra).fit(series(X[:800]), progress=False)
    T = X[800:].copy()
    T[200, 0], T[250, 1] = 1e300, -1e250
    with caplog.at_level("WARNING", logger="normalcy"):
        run = score_series(det, series(T, "spiky"), past=X[:800])
    assert "spiky.csv: 2 value(s) more than 1e+06 spreads" in caplog.text
    assert caplog.text.count("spiky.csv: 2 value(s)") == 1  # a run standardises once
    for score, decision in ((det.score(T).score, det.score(T).decision), (run.score, run.decision)):
        assert np.isfinite(score).all() and decision[200] == 1 and decision[250] == 1
    assert np.isfinite(Stream(det, past=X[:800]).run(T).score).all()
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_a_score_that_is_not_a_number_is_an_error_not_a_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """NaN is never >= the threshold: a damaged model's NaN score would let every row pass unseen."""
    det = create("knn", window=10).fit(sine(600), progress=False)
    broken = lambda Z: np.where(np.arange(len(Z))[:, None] == 7, np.nan, 0.0)  # noqa: E731
    monkeypatch.setattr(det, "_score", broken)
    with pytest.raises(InputError, match=r"knn: the model scores row 8 as nan \(not a number\)"):
        det.score(sine(100))


def test_a_training_column_past_the_float_range_is_refused(recwarn: pytest.WarningsRecorder) -> None:
    X = sine(600, d=2)
    X[:, 1] = 1e308
    X[::7, 1] = -1e308
    with pytest.raises(InputError, match=r"big\.csv: column\(s\) \['m1'\] span more than a 64-bit float holds"):
        create("knn", window=10).fit(series(X, "big"), progress=False)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_a_flat_normal_series_does_not_flag_everything() -> None:
    """Held-out rows that all score 0 (a series that repeats exactly) must not put the threshold at 0."""
    X = np.tile(np.r_[np.zeros(10), np.ones(10)], 50)
    det = create("knn", window=20).fit(X, progress=False)
    assert det.threshold_ > 0 and det.score(X).decision.sum() == 0
    spiked = X.copy()
    spiked[500] = 5
    assert det.score(spiked).decision[500] == 1


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_a_constant_training_series_flags_its_change_only(name: str, tmp_path: Path) -> None:
    """A sensor that held one value all through training: every held-out row scores the same (auto: 0.301
    decades, not 0), and a threshold at that tie flagged every test row, the normal ones too (forecast: its
    dynamic threshold equal to every error; pca: the arbitrary components of no variance reconstructed the
    change exactly, so it was never flagged)."""
    det = create(name, window=8).fit(np.zeros(600), progress=False)
    test = np.zeros(900)
    test[400:450] = 0.5
    decision = det.score(test).decision
    assert decision[:400].sum() == 0 and decision[400:450].mean() > 0.5
    assert decision[500:].sum() == 0
    det.save(tmp_path / "m")
    np.testing.assert_array_equal(load(tmp_path / "m").score(test).decision, decision)


@pytest.mark.parametrize("name", ["knn", "pca", "auto"])
def test_a_still_last_share_of_training_does_not_set_the_threshold_alone(name: str) -> None:
    """Training whose last 30 % holds still (a sensor parked at one value) after varying: held out alone, that
    share put the threshold at its own flat scores and every varying normal row after was flagged. Cross-fitted
    (the first share scored by a twin fitted on the rest) the threshold holds near its rate."""
    rng = np.random.default_rng(0)

    def wave(n: int) -> np.ndarray:
        return np.where((np.arange(n) // 50) % 2 == 0, 1.0, -1.0) + 0.05 * rng.standard_normal(n)

    train = wave(2000)
    train[1400:] = 1.0
    test = wave(3000)
    assert create(name, window=16, cross_fit=False).fit(train, progress=False).score(test).decision.mean() > 0.9
    assert create(name, window=16).fit(train, progress=False).score(test).decision.mean() < 0.03


def test_threshold_at_steps_over_a_tie() -> None:
    """The (1 - fpr) quantile, or just above it when tied scores there would flag more than fpr."""
    spread = np.arange(1000.0)
    assert threshold_at(spread, 0.01) == np.quantile(spread, 0.99)
    tied = np.r_[np.zeros(10), np.full(990, 2.0)]
    t = threshold_at(tied, 0.01)
    assert 2.0 < t < 2.0 + 1e-5 and (tied >= t).sum() == 0


def test_several_training_series() -> None:
    det = create("knn", window=20).fit([series(sine(800, seed=1)), series(sine(900, seed=2))], progress=False)
    assert det.n_train_ == 1700 and len(det.bank_) == (640 - 19) + (720 - 19)


# ------------------------------------------------------------------------------------------ online learning


def test_knn_learns_online_with_a_bounded_bank() -> None:
    X = sine(1000, period=20)
    det = create("knn", window=20, max_bank=700).fit(X, progress=False)
    m = len(det.bank_)
    new = 2 * sine(600, period=20, seed=3)  # a louder normal: anomalous until learned
    before = np.array([det.score_one(x) for x in new[:300]])
    det.reset_stream()
    for x in new[:300]:
        det.score_one(x)
        det.partial_fit(x)  # the row just scored: learned once, not streamed twice
    assert len(det.bank_) == 700 and det.fifo_ == 300 - 19 - (700 - m)
    after = np.array([det.score_one(x) for x in new[300:]])
    assert after[50:].mean() < 0.5 * before[50:].mean()
    for x in new:  # rows not scored first join the stream, then are learned; the bank stays bounded
        det.partial_fit(x)
    assert len(det.bank_) == 700 and 0 <= det.fifo_ < 700
    # a saved model keeps the bank and its FIFO position
    assert isinstance(det, SubsequenceKNN)


def test_online_learning_grows_the_bank_to_its_budget_only() -> None:
    """A stream searches the whole bank for each row: online learning grows it to ``online_floats`` numbers
    (here 2^12 / 32 = 128 windows), and a bank fitted larger keeps its size, its oldest window replaced."""
    X = sine(3000, period=32)
    small = create("knn", window=32, online_floats=2**12).fit(X[:120], progress=False)
    large = create("knn", window=32, online_floats=2**12).fit(X[:1000], progress=False)
    assert len(small.bank_) < 128 < len(large.bank_)  # the fit is not bounded by it
    fitted = len(large.bank_)
    for x in X[1000:1600]:
        small.partial_fit(x)
        large.partial_fit(x)
    assert len(small.bank_) == small.online_capacity == 128
    assert len(large.bank_) == fitted and large.fifo_ == (600 - 31) % fitted


def test_pca_does_not_learn_online() -> None:
    det = create("pca", window=20).fit(sine(500), progress=False)
    assert not det.learns_online
    with pytest.raises(InputError, match="pca does not learn online"):
        det.partial_fit(np.zeros(1))


def test_pca_holds_a_bounded_number_of_training_windows(monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """A long window on a wide series held every training window, twice (50 metrics x window 500, 5,000 rows:
    1.9 GB, 100 s): past MAX_FIT_FLOATS numbers an even subsample of windows is fitted, with a note."""
    monkeypatch.setattr(pca, "MAX_FIT_FLOATS", 64 * 4 * 100)  # 100 windows of 64 rows x 4 metrics
    X = sine(3000, d=4)
    tracemalloc.start()
    try:
        with caplog.at_level(logging.INFO, logger="normalcy"):
            det = create("pca", window=64, holdout=0.05, cross_fit=False).fit(X, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "even subsample of 100 of 2787 training windows" in caplog.text
    assert peak < 4e6, peak  # 2.3 MB; every window, then its centred copy: 12 MB
    spike = X[:400].copy()
    spike[300, 2] += 5
    assert det.score(spike).decision[300] == 1


def test_knn_fits_a_wide_bank_a_chunk_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """kNN's fit made two float64 copies of every bank window (the mean, then the centred windows) before the
    float32 bank: 4x the bank's memory more (--window 4000: 8,388 windows, 980 MB). A chunk at a time now, the
    same bank and centre bit for bit."""
    from normalcy.series import knn

    X = sine(3000, d=4)
    whole = create("knn", window=64, holdout=0.05, cross_fit=False).fit(X, progress=False)
    monkeypatch.setattr(knn, "_CHUNK_FLOATS", 64 * 4 * 50)  # 50 windows of 64 rows x 4 metrics a chunk
    tracemalloc.start()
    try:
        det = create("knn", window=64, holdout=0.05, cross_fit=False).fit(X, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert det.bank_.shape == (2787, 256)
    np.testing.assert_array_equal(det.centre_, whole.centre_)
    np.testing.assert_array_equal(det.bank_, whole.bank_)
    assert det.threshold_ == whole.threshold_
    assert peak < 2 * det.bank_.nbytes, (peak, det.bank_.nbytes)  # 1.1x; the float64 copies: 5x


def test_a_small_search_runs_faiss_on_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """faiss's OpenMP threads took 20-30 ms to start and join on 2 busy cores for a search of 10 held-out rows
    (most of a 50-row series' fit in a set of 10,000): a small search runs on one thread, the same scores."""
    import faiss

    from normalcy.series import knn

    threads: list[int] = []
    search = faiss.knn
    monkeypatch.setattr(faiss, "knn", lambda *a: threads.append(faiss.omp_get_max_threads()) or search(*a))
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(2)
    try:
        X = sine(200)
        det = create("knn", window=8).fit(X[:100], progress=False)
        small = det.score(X[100:]).score
        monkeypatch.setattr(knn, "ONE_THREAD_WORK", 0)  # every search on the threads set
        np.testing.assert_array_equal(det.score(X[100:]).score, small)
        assert set(threads[:-1]) == {1} and threads[-1] == 2 and faiss.omp_get_max_threads() == 2
    finally:
        faiss.omp_set_num_threads(before)


def test_fit_seeds_torchs_cpu_generator_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.manual_seed also seeded the GPU generators (left changed for the caller: fork_rng(devices=[]) does
    not restore them) and formatted the call stack for each lazy seeding, 6 ms a fit on busy cores; and each save
    evaluated every type hint of the class again. The same model, without either."""
    import typing

    X = sine(300)
    first = create("knn", window=8).fit(X, progress=False)
    learned = first.learned()
    seeded: list[int] = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", seeded.append)
    hints: list[object] = []
    monkeypatch.setattr(typing, "get_type_hints", lambda *a, **k: hints.append(a) or {})
    det = create("knn", window=8).fit(X, progress=False)
    assert det.learned() == learned and not hints
    assert not seeded and det.threshold_ == first.threshold_
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    create("forecast", window=8, steps=3).fit(X, progress=False)
    np.testing.assert_array_equal(torch.rand(3), expected)  # the caller's generator as it was


# -------------------------------------------------------------------------------------------- model files


@pytest.mark.parametrize("name", SUBSEQUENCE)
def test_save_and_load(tmp_path: Path, name: str) -> None:
    X = sine(2000, d=2)
    det = create(name, window=25).fit(series(X[:1500]), progress=False)
    det.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["kind"] == "series" and meta["detector"] == name and meta["columns"] == ["m0", "m1"]
    assert is_series_model(tmp_path / "m")
    back = load(tmp_path / "m")
    assert type(back) is type(det) and back.window_ == 25 and back.threshold_ == det.threshold_
    a, b = det.score(X[1500:]), back.score(X[1500:])
    np.testing.assert_array_equal(a.score, b.score)
    np.testing.assert_array_equal(a.contributions, b.contributions)


def test_online_learning_survives_save(tmp_path: Path) -> None:
    det = create("knn", window=10, max_bank=100).fit(sine(300, period=10), progress=False)
    for x in sine(200, period=10, seed=4):
        det.partial_fit(x)
    det.save(tmp_path / "m")
    back = load(tmp_path / "m")
    assert back.fifo_ == det.fifo_ and np.array_equal(back.bank_, det.bank_)
    for x in sine(20, period=10, seed=5):  # a loaded bank learns on, once its stream holds a whole window
        back.partial_fit(x)
    assert back.fifo_ == (det.fifo_ + 11) % 100


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("model") / "knn"
    create("knn", window=10).fit(series(sine(400, d=2)), progress=False).save(d)
    return d


def tampered(saved: Path, tmp_path: Path, **changes: object) -> Path:
    d = tmp_path / "t"
    d.mkdir()
    meta = json.loads((saved / "model.json").read_text())
    meta.update(changes)
    text = json.dumps(meta).replace('"__nan__"', "NaN")
    (d / "model.json").write_text(text)
    (d / "model.safetensors").write_bytes((saved / "model.safetensors").read_bytes())
    return d


@pytest.mark.parametrize("changes, message", [
    ({"window": 10**9}, r"window: input should be less than or equal to 4096"),
    ({"mean": [0.0]}, r"mean \(1\) and scale \(2\) must have one value per column \(2\)"),
    ({"scale": [1.0, -1.0]}, "scale: every value must be positive"),
    ({"threshold": "__nan__"}, r"threshold: input should be a finite number"),
    ({"detector": "sklearn.pickle"}, "unknown series detector 'sklearn.pickle'"),
    ({"window": 12}, r"model\.safetensors: not the state of a fitted knn \(bank of shape \(\d+, 20\) does not fit window 12"),
    ({"params": {"k": -1}}, r"model\.json: detector knn: k: input should be greater than or equal to 1"),
    ({"format_version": 7}, "series model format version 7 is not supported"),
    ({"columns": ["a", "a"]}, "columns: names repeat"),
    ({"flags": ["m0"]}, "flags: names repeat or are also model columns"),
    ({"flags": [1]}, r"flags\.0: input should be a valid string"),
    ({"extra": 1}, "extra: unknown key"),
])
def test_crafted_model_json(saved: Path, tmp_path: Path, changes: dict, message: str) -> None:
    d = tampered(saved, tmp_path, **changes)
    with pytest.raises(InputError, match=message) as err:
        load(d)
    assert "\n" not in str(err.value) and str(d) in str(err.value)


@pytest.mark.parametrize("changes", [{"format_version": "x" * 100_000}, {"params": {"k": "x" * 100_000}},
                                     {"detector": "x" * 100_000}, {"kind": "x" * 100_000}])
def test_a_very_long_string_in_model_json_is_not_echoed_whole(saved: Path, tmp_path: Path, changes: dict) -> None:
    """A crafted 100 kB value was repeated whole in the one-line error; it is cut to a few dozen characters."""
    with pytest.raises(InputError, match="xxx") as err:
        load(tampered(saved, tmp_path, **changes))
    assert len(str(err.value)) < 1000 and "model.json" in str(err.value), str(err.value)[:300]


def test_crafted_tensors(saved: Path, tmp_path: Path) -> None:
    d = tampered(saved, tmp_path)
    state = load_file(str(d / "model.safetensors"))
    state["bank"] = state["bank"][:, :7].contiguous()
    save_file(state, str(d / "model.safetensors"))
    with pytest.raises(InputError, match=r"model\.safetensors: not the state of a fitted knn \(bank of shape"):
        load(d)
    state = load_file(str(saved / "model.safetensors"))
    state["fifo"] = torch.tensor(10**6)
    save_file(state, str(d / "model.safetensors"))
    with pytest.raises(InputError, match="fifo position 1000000 outside"):
        load(d)
    state["fifo"] = torch.tensor(0)
    state["bank"][0, 0] = float("nan")
    save_file(state, str(d / "model.safetensors"))
    with pytest.raises(InputError, match="tensor 'bank' has 1 NaN or infinite value"):
        load(d)
    del state["centre"]
    state["bank"][0, 0] = 0
    save_file(state, str(d / "model.safetensors"))
    with pytest.raises(InputError, match="missing tensor 'centre'"):
        load(d)


def test_model_json_as_fifo_or_link_out(saved: Path, tmp_path: Path) -> None:
    d = tmp_path / "fifo"
    d.mkdir()
    os.mkfifo(d / "model.json")
    with pytest.raises(InputError, match=r"model\.json: not a regular file"):
        load(d)
    assert not is_series_model(d)
    link = tmp_path / "link"
    link.mkdir()
    (link / "model.json").symlink_to(saved / "model.json")
    with pytest.raises(InputError, match="a symbolic link to a file outside the model folder"):
        load(link)
    with pytest.raises(InputError, match="not a normalcy model"):
        load(tmp_path / "nothing")


# -------------------------------------------------------------------------------------------------- events


def test_spans_merge_rule() -> None:
    d = np.array([0, 1, 1, 0, 1, 0, 0, 0, 1, 1, 0])
    assert spans(d) == [(1, 2), (4, 4), (8, 9)]  # consecutive rows merge; a 1-row dip splits without a gap
    assert spans(d, gap=2) == [(1, 4), (8, 9)]  # 1 row between: fewer than 2, merged; 3 rows: not
    assert spans(d, gap=4) == [(1, 9)]
    assert spans(np.zeros(5)) == []


def test_prune_keeps_the_events_that_stand_out() -> None:
    scores = np.full(100, 1.0)
    found = [(10, 11), (30, 30), (50, 52), (70, 70)]
    for (a, b), peak in zip(found, (2.0, 2.1, 9.0, 2.05)):
        scores[a:b + 1] = peak
    scores[80] = 1.95  # the highest score outside the events, just under the noise's peaks
    assert prune(scores, found, 0.13) == [2]  # 9 -> 2.1 is a step; 2.1 -> 2.05 -> 2.0 -> 1.95 (outside) are not
    scores[80] = 1.0  # every event stands out of the normal scores: all kept
    assert prune(scores, found, 0.13) == [0, 1, 2, 3]
    assert prune(scores, found, 0.0) == [0, 1, 2, 3] and prune(scores, [], 0.13) == []
    flat = np.where(np.arange(100) % 10 == 0, 2.0, 1.9)  # nothing stands out of the staircase
    assert prune(flat, [(0, 0), (10, 10)], 0.13) == []


def test_pruning_looks_locally_where_the_whole_series_would_drop_every_event() -> None:
    """Seven incidents of alike height over the first two thirds of a long series and, in its last third, noise
    crossings whose peaks fall in small steps from just under the incidents to the normal scores: against the
    whole series every peak is one step of a smooth staircase and Hundman's rule keeps nothing; within Orion's
    windows (a third of the series) each incident stands above its neighbourhood."""
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.0, 1.0, 40_000)
    found = []
    for k in range(7):  # incidents at 10.0, 9.7, ..., 8.2: each step under 13 %
        a = 2_000 + 4_000 * k
        scores[a:a + 50] = 10.0 - 0.3 * k
        found.append((a, a + 49))
    for i in range(17):  # 8.0, 7.04, ..., 1.03: steps of 12 %
        scores[30_000 + 500 * i] = 8.0 * 0.88 ** i
        found.append((30_000 + 500 * i, 30_000 + 500 * i))
    assert prune(scores, found, 0.13) == []  # the whole series: nothing kept
    kept = prune_windows(scores, found, 0.13)
    assert set(range(7)) <= set(kept)
    decisions = (scores > 1.0).astype(np.int8)
    spans_kept, dec = pruned(scores, decisions, found, 0.13)  # and then the local threshold (local_events)
    assert spans_kept and set(spans_kept) <= {found[i] for i in kept}
    assert dec.sum() == sum(b - a + 1 for a, b in spans_kept)
    # where the whole series keeps something, that is what is kept (the global rule first)
    scores[2_000:2_050] = 40.0
    assert prune(scores, found, 0.13) == [0]
    assert pruned(scores, decisions, found, 0.13)[0] == [found[0]]


def test_local_events_keep_what_stands_out_of_its_neighbourhood() -> None:
    """A test series runs above the threshold set on training data (1.0 here), so every stretch of it crosses
    it; Orion keeps only what rises above its own neighbourhood (Hundman's epsilon within windows of a third of
    the series): the spike, not the stretches of the raised level."""
    n = 3_000
    scores = 1.5 + 0.1 * np.random.default_rng(0).standard_normal(n)
    scores[2_400:2_420] += 4.0
    stretches = [(k, k + 5) for k in range(1_000, 2_200, 200)]  # crossings of 1.0
    found = stretches + [(2_400, 2_419)]
    assert [found[i] for i in local_events(scores, found)] == [(2_400, 2_419)]
    assert local_events(scores, []) == []
    decisions = (scores >= 1.0).astype(np.int8)
    kept, dec = pruned(scores, decisions, found, 0.13)
    assert kept == [(2_400, 2_419)] and dec.sum() == 20
    assert pruned(scores, decisions, found, 0.0)[0] == found  # --prune 0: every event


def test_local_events_keep_many_alike_incidents() -> None:
    """Sixteen alike spikes, six in every window: most are kept (Hundman's criterion prefers few sequences,
    so not every one); where no threshold passes the guardrails at all, none is dropped."""
    rng = np.random.default_rng(1)
    scores = 0.3 + 0.05 * rng.standard_normal(2_160)
    found = []
    for k in range(16):
        a = 120 * (k + 1)
        scores[a:a + 6] += 1.5
        found.append((a, a + 5))
    assert len(local_events(scores, found)) >= 8
    # where no z leaves any score above it (the incidents raise sigma above their own height), relaxed says
    # nothing against the window's events; telemanom's guarded rule puts epsilon at 12 sigma
    flat = np.tile([0.0, 0.0, 0.0, 1.0], 50)
    assert dynamic_epsilon(flat, 2, relaxed=True) == -np.inf and dynamic_epsilon(flat, 2) > flat.max()


def test_offline_events_pruned_and_decisions_agree() -> None:
    """A long normal stretch crosses a 1 % threshold many times; pruning keeps the planted anomaly."""
    X = sine(9000)
    X[7000:7050, 0] += 2.0
    det = create("knn", window=30).fit(X[:3000], progress=False)
    test = series(X[3000:], columns=det.columns_)
    kept = score_series(det, test)
    det.prune = 0.0
    every = score_series(det, test)
    assert len(every.events) > len(kept.events) >= 1
    assert any(e.first <= 4000 <= e.last for e in kept.events)  # the planted anomaly (row 7000 of X)
    inside = np.zeros(len(test), bool)
    for e in kept.events:
        inside[e.first:e.last + 1] = True
    assert not kept.decision[~inside].any() and (kept.decision == every.decision)[inside].all()


def test_events_peak_and_top_metrics() -> None:
    time = 1000.0 + 60 * np.arange(8)
    scores = np.array([0, 2, 5, 3, 0, 0, 4, 0], float)
    contrib = np.zeros((8, 4))
    contrib[1:4] = [[0.5, 1.5, 0, 0], [1, 3, 1, 0], [0, 3, 0, 0]]
    contrib[6] = [0, 0, 0, 4]
    first, second = events(time, scores, scores > 0, contrib, ("a", "b", "c", "d"), gap=2)
    assert (first.start, first.end, first.peak_time, first.peak_score) == (1060, 1180, 1120, 5)
    assert first.metrics == ["b", "a", "c"] and (first.first, first.last) == (1, 3)
    assert second.metrics == ["d"] and second.start == second.end == 1360  # metrics that contributed nothing left out
    (merged,) = events(time, scores, scores > 0, contrib, ("a", "b", "c", "d"), gap=3)
    assert merged.metrics == ["b", "d", "a"] and merged.last == 6


def test_an_events_metrics_are_those_of_its_anomalous_rows() -> None:
    """A merged event holds rows under the threshold between its anomalous ones: their normal noise, spread over
    every metric, outweighed a weak anomaly's own metric and the event named another one first."""
    n = 60
    scores = np.full(n, 0.9)
    contrib = np.tile([0.3, 0.2, 0.2, 0.2], (n, 1)) * 0.9  # normal rows: noise, cpu a little louder
    for row in (5, 50):  # two anomalous rows, in mem
        scores[row] = 1.5
        contrib[row] = [0.1, 1.2, 0.1, 0.1]
    (e,) = events(np.arange(n, dtype=float), scores, scores >= 1.0, contrib, ("cpu", "mem", "disk", "net"), gap=100)
    assert (e.first, e.last) == (5, 50) and e.metrics[0] == "mem"
    from normalcy.series.runs import event_features  # the review's re-ranking: the same shares

    share = event_features([e], scores, contrib, np.zeros((n, 4)), 1.0, n, scores >= 1.0)[0, :4]
    assert share.argmax() == 1 and share[1] >= 0.75  # 1.2 of 1.5 (of every row: under a fifth)


def test_event_gap_merges_an_incident_and_is_saved(tmp_path: Path) -> None:
    """Anomalous rows fewer than event_gap rows apart (default 100, Orion's merge) are one event in a run; 0 leaves
    the window alone; the setting travels with the model."""
    from normalcy.series.runs import score_series

    x = sine(1200)
    test = sine(900, seed=1)
    test[300:304, 0] += 6.0
    test[400:404, 0] += 6.0  # 100 rows later: one incident at the default gap, two at the window's
    kept = {}
    for gap in (100, 0):
        det = create("knn", window=20, event_gap=gap).fit(series(x), progress=False)
        assert det.gap_ == max(20, gap)
        det.save(tmp_path / str(gap))
        loaded = load(tmp_path / str(gap))
        assert loaded.gap_ == det.gap_
        kept[gap] = [(e.first, e.last) for e in score_series(loaded, series(test)).events]
    (merged,) = [e for e in kept[100] if e[0] <= 404 and e[1] >= 300]
    assert merged[0] <= 303 and merged[1] >= 400
    assert len([e for e in kept[0] if e[0] <= 404 and e[1] >= 300]) == 2
    with pytest.raises(InputError, match="event_gap"):
        create("knn", event_gap=-1)


# ------------------------------------------------------------------------------------------------ real data


def test_asd_server_incidents_found(shared_data: Path) -> None:
    """ASD omi-2: fitted on train.csv, the labelled incidents of test.csv score above normal rows."""
    (train,), (test,) = read_series_folder(shared_data / "asd" / "omi-2")
    from sklearn.metrics import roc_auc_score

    for name in SUBSEQUENCE:
        det = create(name, window=4).fit(train, progress=False)
        r = det.score(test)
        assert roc_auc_score(test.labels, r.score) > 0.8, name
        caught = r.decision[test.labels == 1].mean()
        assert caught > 20 * r.decision[test.labels == 0].mean(), name


def test_protocol_subclass_minimal() -> None:
    """A detector written against the protocol: two hooks, the rest is the base's."""

    class Level(SeriesDetector):
        name = "level"

        def _fit(self, X: np.ndarray, progress: bool) -> None:
            pass

        def _score(self, X: np.ndarray) -> np.ndarray:
            return np.abs(X)

    det = Level(window=1).fit(sine(400), progress=False)
    assert det.context == 1 and det.score_one(np.array([100.0])) == det.score(np.array([100.0])).score[0]


def test_windows_inside_one_series() -> None:
    from normalcy.series.windows import inside

    np.testing.assert_array_equal(inside(np.array([0, 5]), 12, 3), [0, 1, 2, 5, 6, 7, 8, 9])
    np.testing.assert_array_equal(inside(np.array([0]), 4, 3), [0, 1])
    assert inside(np.array([0, 2]), 4, 3).size == 0


# ---------------------------------------------------------------------------------------------- glitches


def test_a_one_row_glitch_in_training_does_not_blind_the_threshold(caplog: pytest.LogCaptureFixture,
                                                                  tmp_path: Path) -> None:
    """SKAB's valve2_0: one logged row far off in one sensor (of 400 training rows) reached every held-out window
    that held it, the threshold rose to those windows and the real anomaly was flagged on 8 of 394 rows. Mended
    for fitting, with a warning naming the file, row and column, it no longer does."""
    rng = np.random.default_rng(0)
    train = rng.standard_normal((400, 4))
    train[350, 1] = 500.0
    test = rng.standard_normal((600, 4))
    test[300:400, 2] += 8.0
    blind = create("knn", window=10, mend_glitches=False).fit(series(train), progress=False).score(test).decision
    assert blind[300:400].mean() < 0.2
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        det = create("knn", window=10).fit(series(train), progress=False)
    assert "s.csv: 1 one-row glitch(es)" in caplog.text and "row 351, column 'm1'" in caplog.text
    assert "fit with mend_glitches=False to learn them" in caplog.text  # Python's argument, not the CLI's flag
    decision = det.score(test).decision
    assert decision[300:400].mean() > 0.8 and decision[:300].mean() < 0.05
    det.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    (glitch,) = meta["training"]["mended_glitches"]
    assert glitch["series"] == "s.csv" and glitch["row"] == 351 and glitch["column"] == "m1" and glitch["steps"] > 100
    np.testing.assert_array_equal(load(tmp_path / "m").score(test).decision, decision)


def test_what_is_not_a_glitch() -> None:
    """Only a rare one-row departure of a varying sensor in a multivariate series is mended: a spike in a single
    column (NAB's training rows have spikes that recur as normal ones), a column that spikes often, a flag set
    once, a level shift and a row where most columns jump together are left as they are."""
    from normalcy.series.glitches import glitches

    rng = np.random.default_rng(1)
    X = rng.standard_normal((1000, 4))
    X[500, 0] = 300.0
    assert [(r, c) for r, c, _ in glitches(X)] == [(500, 0)]
    assert glitches(X[:, :1]) == []  # univariate
    spiky = X.copy()
    spiky[[100, 300, 700], 1] = 300.0
    assert [(r, c) for r, c, _ in glitches(spiky)] == [(500, 0)]
    flag = X.copy()
    flag[:, 2] = 0.0
    flag[800, 2] = 1.0
    assert [(r, c) for r, c, _ in glitches(flag)] == [(500, 0)]
    shift = X.copy()
    shift[600:, 3] += 300.0
    assert [(r, c) for r, c, _ in glitches(shift)] == [(500, 0)]
    together = X.copy()
    together[200, :3] = 300.0
    assert [(r, c) for r, c, _ in glitches(together)] == [(500, 0)]


# ---------------------------------------------------------------------------------------------- command columns


def test_flag_block_rule() -> None:
    """A block of 0/1 columns (at least 90 % of the columns, two or more of them switching) beside a measured one
    is left out; one 0/1 column among metrics (a health flag), a machine's states beside its signals (Genesis:
    13 beside 5), idle metrics (zeros) beside one switching column, a two-valued column that is not 0/1 (ASD's
    0.5/1) and all-0/1 data stay."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((200, 1))
    flags = (rng.random((200, 13)) < 0.1).astype(float)
    assert flag_block(np.c_[z, flags[:, :9]]).tolist() == [False] + [True] * 9
    # with commands never sent in training (zeros) in the block
    assert flag_block(np.c_[z, flags[:, :2], np.zeros((200, 7))]).tolist() == [False] + [True] * 9
    assert not flag_block(np.c_[z, flags[:, :8]]).any()  # under 90 %
    assert not flag_block(np.c_[rng.standard_normal((200, 5)), flags]).any()  # Genesis: states beside signals
    assert not flag_block(np.c_[rng.standard_normal((200, 4)), flags[:, :1]]).any()
    assert not flag_block(np.c_[z, np.where(flags > 0, 1.0, 0.5)]).any()
    assert not flag_block(flags).any()
    assert not flag_block(np.c_[z, np.zeros((200, 9)), flags[:, :1]]).any()  # idle metrics, one switching


def test_the_flag_warning_names_score_flags_as_each_caller_writes_it(caplog: pytest.LogCaptureFixture) -> None:
    """The warning of a flag block left out said "score_flags=True (--score-flags)" to Python and the command line
    alike: each is told its own spelling alone."""
    from normalcy.errors import cli_wording
    from normalcy.series.base import _without_flags

    rng = np.random.default_rng(0)
    v = np.c_[rng.standard_normal((200, 1)), (rng.random((200, 9)) < 0.1).astype(float)]
    parts = [("s.csv", v, tuple(f"c{j}" for j in range(10)))]
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        _without_flags(parts)
        with cli_wording():
            _without_flags(parts)
    python, cli = (r.getMessage() for r in caplog.records)
    assert python.endswith("the measured columns; score_flags=True scores them too"), python
    assert cli.endswith("the measured columns; --score-flags scores them too"), cli


def test_command_columns_are_left_out_of_the_model(tmp_path: Path) -> None:
    """Telemetry with one-hot command columns (SMAP's layout): the model scores the telemetry alone, so a
    command held on raises nothing while the telemetry's shift is found; score_flags keeps them, and a rare
    command held on then alarms. A saved model keeps the flags and scores a file (or an array) that has them."""
    cols = ("value",) + tuple(f"cmd{j}" for j in range(10))

    def make(n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        cmds = np.zeros((n, 10))
        for c in range(3):
            cmds[rng.integers(0, n, 12), c] = 1.0
        return np.c_[sine(n, period=50, seed=seed)[:, 0], cmds]

    train, test = make(2000, 0), make(3000, 1)
    test[1000:1100, 0] += 3.0
    test[2000:2010, 1] = 1.0  # a command rare in training (12 rows in 2,000: each 13 spreads) held on
    det = create("knn", window=16).fit(series(train, columns=cols), progress=False)
    assert det.columns_ == ("value",) and det.flags_ == cols[1:]
    res = det.score(series(test, columns=cols))
    assert res.decision[1000:1100].mean() > 0.5 and res.decision[1990:2040].sum() == 0
    det.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "model.json").read_text())["flags"] == list(cols[1:])
    loaded = load(tmp_path / "m")
    assert loaded.flags_ == cols[1:]
    np.testing.assert_array_equal(loaded.score(series(test, columns=cols)).score, res.score)
    from_array = create("knn", window=16).fit(train, progress=False)  # an array: its flags by position
    assert from_array.columns_ == ("x0",)
    np.testing.assert_array_equal(from_array.score(test).score, res.score)
    both = create("knn", window=16, score_flags=True).fit(series(train, columns=cols), progress=False)
    assert both.columns_ == cols and both.flags_ == ()
    assert both.score(series(test, columns=cols)).decision[2000:2016].any()


def test_fit_and_score_a_dataframe_a_list_and_a_pandas_series() -> None:
    """fit() took a DataFrame's column names for series (AttributeError: 'str' object has no attribute
    'labels'), and a list or a pandas Series likewise; score() read a DataFrame by position, so reordered
    columns were scored as each other."""
    pd = pytest.importorskip("pandas")
    X = sine(600, d=2)
    frame = pd.DataFrame(X, columns=["a", "b"])
    on_frame = create("knn", window=10).fit(frame, progress=False)
    on_array = create("knn", window=10).fit(X, progress=False)
    assert on_frame.columns_ == ("a", "b")
    np.testing.assert_array_equal(on_frame.score(frame[["b", "a"]]).score, on_array.score(X).score)
    np.testing.assert_array_equal(on_array.score(frame).score, on_array.score(X).score)  # an array's model: in order
    with pytest.raises(InputError, match=r"DataFrame: columns do not match the model's: missing \['a'\]"):
        on_frame.score(frame.rename(columns={"a": "z"}))
    assert create("knn", window=10).fit(X.tolist(), progress=False).columns_ == ("x0", "x1")
    assert create("knn", window=10).fit(frame["a"], progress=False).columns_ == ("value",)
    assert create("knn", window=10).fit([frame, frame], progress=False).n_train_ == 1200
    with pytest.raises(InputError, match="DataFrame: every column must hold numbers"):
        create("knn", window=10).fit(frame.assign(c="x"), progress=False)
    with pytest.raises(InputError, match="DataFrame: NaN or infinite values"):
        create("knn", window=10).fit(frame.mask(frame > 0.99), progress=False)


def test_a_second_fit_keeps_nothing_of_the_first() -> None:
    """A detector object fitted twice: the first fit's time column and auto's choice are not carried into the
    second (they would be saved in its model.json and read by predict)."""
    rng = np.random.default_rng(0)
    det = create("auto", fpr=0.01)
    det.fit(rng.normal(size=(400, 2)), progress=False)
    first = det.choice
    det.time_column = "timestamp"  # as fit_series sets it for a file's time column
    det.fit(np.sin(np.arange(400) / 5)[:, None] + 0.01 * rng.normal(size=(400, 1)), progress=False)
    assert det.time_column is None and det.choice is not None and det.choice is not first


def test_a_frame_without_rows_and_a_row_of_text_are_said_as_such() -> None:
    """A DataFrame of no rows was "every column must hold numbers (... got shape (0, 2))", blaming its numbers;
    ``score_one`` of a row holding text was numpy's bare ValueError."""
    pd = pytest.importorskip("pandas")
    det = create("knn", window=10).fit(pd.DataFrame(sine(300, d=2), columns=["a", "b"]), progress=False)
    with pytest.raises(InputError, match=r"^DataFrame: no rows to score or fit on$"):
        det.score(pd.DataFrame({"a": [], "b": []}))
    with pytest.raises(InputError, match=r"a row of 2 number\(s\) expected \(could not convert string to float: 'x'\)"):
        det.score_one(np.array(["x", 1.0], dtype=object))
