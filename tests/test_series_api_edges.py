"""The Python API of the series detectors at its edges: in-memory inputs (pandas frames with dates, empty
polls, named rows), ``Stream``'s settings, network spans longer than the data, ``set_params`` then ``clone``,
a model that could not be loaded, and ``api.watch`` of an unfitted detector."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from normalcy import api
from normalcy.errors import InputError, NotFittedError
from normalcy.series.knn import SubsequenceKNN
from normalcy.series.registry import create
from normalcy.series.stream import Stream


def rows(n: int = 200, d: int = 2) -> np.ndarray:
    """d smooth periodic metrics, each its own period: small enough that a fit takes milliseconds."""
    t = np.arange(n)[:, None]
    return np.sin(2 * np.pi * t / (10 + 3 * np.arange(d)))


@pytest.fixture(scope="module")
def knn() -> SubsequenceKNN:
    return SubsequenceKNN(window=5).fit(rows(), progress=False)


def test_stream_run_of_an_empty_list_is_no_rows_not_an_error(knn: SubsequenceKNN) -> None:
    """A poll that found no new rows, given as [] to a model of 2 metrics, was "rows of 2 value(s) expected,
    got shape (1, 0)" though ``run`` documents empty arrays for it."""
    stream = Stream(knn)
    for empty in ([], np.empty(0)):
        out = stream.run(empty)
        assert out.score.shape == (0,) and out.contributions.shape == (0, 2)
    assert stream.t == 0
    assert stream.run(rows(3)).score.shape == (3,)  # the stream goes on


@pytest.mark.parametrize("kw", [{"memory": 0}, {"memory": -1}, {"learn_every": 2.5}])
def test_stream_refuses_a_bad_memory_or_learn_every_when_made(knn: SubsequenceKNN, kw: dict) -> None:
    """memory=0 was a ZeroDivisionError at the first row, a negative one was taken, learn_every=2.5 a TypeError
    at the first row: each is an InputError naming it when the stream is made."""
    name = next(iter(kw))
    with pytest.raises(InputError, match=f"{name}={kw[name]}"):
        Stream(knn, **kw)


def frame_with_dates(n: int = 200) -> pd.DataFrame:
    return pd.DataFrame({"ts": pd.date_range("2024-01-01", periods=n, freq="min"), "a": rows(n, 1)[:, 0]})


def test_a_date_column_is_refused_naming_it_not_scored_as_nanoseconds(knn: SubsequenceKNN) -> None:
    """numpy read a DataFrame's datetime column as nanoseconds since 1970: fitted as a metric, and every later row
    scored far above the threshold (or, at scoring, clipped at 1e6 spreads: all anomalous), without a word."""
    df = frame_with_dates()
    with pytest.raises(InputError, match=r"DataFrame: column\(s\) \['ts'\] hold dates"):
        SubsequenceKNN(window=5).fit(df, progress=False)
    with pytest.raises(InputError, match="dates or durations"):
        SubsequenceKNN(window=5).fit(df["ts"], progress=False)  # a pandas Series of dates
    two = pd.DataFrame({"x0": df["ts"], "x1": rows(200, 1)[:, 0]})  # named as the array model's columns
    with pytest.raises(InputError, match=r"\['x0'\] hold dates"):
        knn.score(two)
    with pytest.raises(InputError, match=r"stream: column\(s\) \['x0'\] hold dates"):
        Stream(knn).run(two)
    durations = pd.DataFrame({"x0": pd.to_timedelta(np.arange(200), unit="s"), "x1": 0.0})
    with pytest.raises(InputError, match="dates or durations"):
        knn.score(durations)
    # the dates as the index, as the message says: fitted on the values alone
    indexed = SubsequenceKNN(window=5).fit(df.set_index("ts"), progress=False)
    assert indexed.columns_ == ("a",)
    plain = SubsequenceKNN(window=5).fit(df[["a"]], progress=False)
    np.testing.assert_array_equal(indexed.score(df.set_index("ts")).score, plain.score(df[["a"]]).score)


def test_api_watch_of_an_unfitted_detector_says_so() -> None:
    """It failed inside with an AttributeError ('columns_'); predict said NotFittedError already."""
    with pytest.raises(NotFittedError, match="not fitted"):
        api.watch(SubsequenceKNN(), io.StringIO("a,b\n1,2\n"), out=io.StringIO())


def test_score_one_takes_a_named_row_by_name() -> None:
    """A pandas Series row in another order than the model's columns was scored in its own order (b as a), a
    wrong score without a word; a dict was refused. Both are taken by name now, as Stream.update takes them."""
    X = rows() + [0.0, 5.0]
    model = SubsequenceKNN(window=5).fit(pd.DataFrame(X, columns=["a", "b"]), progress=False)
    expected = model.score(pd.DataFrame(X[:12], columns=["a", "b"])).score[-1]
    for make in (lambda r: pd.Series({"b": r[1], "a": r[0]}), lambda r: {"b": r[1], "a": r[0], "other": 0.0}):
        model.reset_stream()
        got = [model.score_one(make(r)) for r in X[:12]]
        assert got[-1] == pytest.approx(expected, abs=1e-9)
    model.reset_stream()
    unlabelled = model.score_one(pd.Series(X[0]))  # labelled 0, 1: taken in order, as before
    model.reset_stream()
    assert unlabelled == model.score_one(X[0])
    with pytest.raises(InputError, match=r"without the model's metric\(s\) \['b'\]"):
        model.score_one({"a": 1.0})


def test_score_one_refuses_a_row_labelled_without_a_model_column_as_stream_does() -> None:
    """A pandas row labelled a, c (or a one-row DataFrame) for a model of a, b was taken in its own order, c scored
    as b without a word, while Stream.update refused it; a dict missing b was said to be a stream's ("stream: a row
    without ..."), though no stream was in use. Each is refused now, naming the row."""
    X = rows()
    model = SubsequenceKNN(window=5).fit(pd.DataFrame(X, columns=["a", "b"]), progress=False)
    for row in (pd.Series({"a": 0.5, "c": 0.5}), pd.DataFrame([[0.5, 0.5]], columns=["a", "c"]), {"a": 0.5}):
        for call in (model.score_one, model.partial_fit):
            with pytest.raises(InputError, match=r"^row: a row without the model's metric\(s\) \['b'\]"):
                call(row)
    with pytest.raises(InputError, match=r"^stream: a row without the model's metric\(s\) \['b'\]"):
        Stream(model).update(pd.Series({"a": 0.5, "c": 0.5}))


def test_complex_rows_are_refused_by_a_stream_and_score_one_alike(knn: SubsequenceKNN) -> None:
    """A numpy complex row (or rows) given to Stream.update / run, and a one-row DataFrame with a complex column given
    to score_one, were cut to their real part with only numpy's ComplexWarning, while score_one refused the array."""
    import warnings

    cols = list(knn.columns_)
    for rows_in in (np.array([1 + 2j, 3 + 0j]), np.ones((3, 2), complex), pd.DataFrame({cols[0]: [1j], cols[1]: [2.0]})):
        for call in (Stream(knn).update, Stream(knn).run, knn.score_one):
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # the cast's ComplexWarning would end the test, not pass it
                with pytest.raises(InputError, match=r"^(stream|row): .*hold complex numbers"):
                    call(rows_in)
            knn.reset_stream()


@pytest.mark.parametrize("name, kw, param", [("autoencoder", {"span": 300}, "span"), ("hypad", {"span": 300}, "span"),
                                            ("forecast", {"lags": 300, "history": 10}, "lags")])
def test_a_network_window_longer_than_the_training_rows_is_named(name: str, kw: dict, param: str) -> None:
    """A span (lags) longer than every training series left no training window: a ZeroDivisionError inside
    training. It is an InputError naming the parameter."""
    with pytest.raises(InputError, match=rf"^{param}: windows of 30[01] rows, but the longest training series has "):
        create(name, window=5, steps=1, **kw).fit(rows(), progress=False)


def test_clone_after_set_params_of_a_list() -> None:
    """set_params kept a list where __init__ keeps a tuple, and clone refused the estimator ("the constructor
    either does not set or modifies parameter candidates"); an invalid value is still refused at fit only."""
    auto = create("auto").set_params(candidates=["knn"], window=5)
    twin = clone(auto)
    assert twin.get_params() == auto.get_params() and twin.candidates == ("knn",)
    bad = create("knn").set_params(k=0)  # accepted here, as scikit-learn's set_params checks names only
    with pytest.raises(InputError, match="detector knn: k: "):
        bad.fit(rows(), progress=False)


def test_a_model_that_could_not_be_loaded_is_not_saved_with_pydantics_dump(tmp_path: Path) -> None:
    """A time column named with over 1000 characters (or a model fitted in memory on over MAX_COLUMNS columns) was
    fitted, then ``save`` raised pydantic's multi-line ValidationError: one InputError line naming the folder."""
    name = "time_" + "x" * 1000
    times = pd.date_range("2024-01-01", periods=200, freq="min").astype(str)
    pd.DataFrame({name: times, "v": rows(200, 1)[:, 0]}).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(InputError, match=r"model: not saved, as it could not be loaded: time_column: string should"):
        api.fit(tmp_path / "train.csv", tmp_path / "model", detector="knn", window=5, progress=False, time_column=name)
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("kw", [{"window": True}, {"seed": False}, {"k": True}])
def test_a_flag_given_for_a_number_is_named(kw: dict) -> None:
    """pydantic took True for 1: ``window=True`` fitted a window of one row without a word (seriesapi helper's
    finding); flags where flags belong still pass."""
    with pytest.raises(InputError, match=f"{next(iter(kw))}: a number is wanted here, not a flag"):
        create("knn", **kw).fit(rows(), progress=False)
    assert create("hypad", uncertainty=False).uncertainty is False


def test_an_image_detector_names_a_flag_for_a_number() -> None:
    from normalcy.detectors.registry import create as create_image

    with pytest.raises(InputError, match="batch_size: a number is wanted here, not a flag"):
        create_image("gaussian", batch_size=True)


def test_a_flag_inside_a_tuple_of_numbers_is_named() -> None:
    """``channels=(True, 32, 32)`` was a first width of 1 (True passes ``ge=1``); tuples of numbers and of names
    still pass."""
    from normalcy.detectors.musc import MuSc
    from normalcy.detectors.registry import create as create_image

    with pytest.raises(InputError, match=r"channels: a number is wanted here, not a flag \(got \(True, 32, 32\)\)"):
        create_image("efficientad", channels=(True, 32, 32))
    with pytest.raises(InputError, match="ae_channels: a number is wanted here, not a flag"):
        create_image("efficientad", ae_channels=[16, False])
    with pytest.raises(ValueError, match="radii\n.*a number is wanted here, not a flag"):
        MuSc.Params(radii=(3, True))
    assert create_image("efficientad", channels=(16, 32, 32)).channels == (16, 32, 32)
    assert MuSc.Params(radii=(3, 5), levels=("a", "b")).levels == ("a", "b")


def test_a_flag_for_a_name_is_told_what_names_are_taken() -> None:
    """The check for a flag given for a number fired for every parameter that is no flag: musc's image_score=True
    (a name, "max" or "max-median") and auto's candidates=True (detector names) were told "a number is wanted
    here"; pydantic's own message says what is taken there."""
    from normalcy.detectors.musc import MuSc

    with pytest.raises(InputError, match=r"image_score: input should be 'max' or 'max-median' \(got True\)"):
        MuSc(image_score=True)
    with pytest.raises(InputError, match=r"candidates: input should be a valid tuple \(got True\)"):
        create("auto", candidates=True)
