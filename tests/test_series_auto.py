"""``auto`` (members chosen on injected anomalies, calibrated and averaged) and ``Stream`` (online scores)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from normalcy.errors import InputError, cli_wording
from normalcy.series.auto import KINDS, RunningTail, Smoothed, _inject, moving_mean
from normalcy.series.registry import create, load
from normalcy.series.stream import Stream


def sine(n: int = 1500, period: int = 40, d: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    return np.sin(2 * np.pi * t / period + np.arange(d)) + 0.05 * rng.standard_normal((n, d))


@pytest.fixture(scope="module")
def fitted():
    return create("auto").fit(sine(), progress=False)


def test_choice_is_recorded_and_members_score(fitted) -> None:
    choice = fitted.choice
    names = [(m["detector"], m["window"], m.get("smooth", 1)) for m in choice["members"]]
    assert 1 <= len(names) <= fitted.max_members
    assert fitted.window_ == max(w for _, w, _ in names)
    v = choice["validation"]
    assert v["injected"] == len(KINDS) * fitted.injections and 0.5 < v["detection"] <= 1
    assert set(v["candidates"]) >= {"knn/1", "knn/8"}  # every candidate judged alone, too
    assert all(not k.startswith("_") for k in choice)  # nothing private left for model.json


def test_spike_and_level_shift_found(fitted) -> None:
    x = sine(2000, seed=1)
    x[700] += 3.0
    x[1400:1460] += 1.5
    out = fitted.score(x)
    assert out.decision[700:705].any() and out.decision[1400:1420].any()
    clean = np.r_[out.decision[100:650], out.decision[800:1350]]
    assert clean.mean() < 0.05
    assert out.contributions.shape == (2000, 1) and np.allclose(out.contributions.sum(axis=1), out.score)


def test_no_choice_keeps_the_default_members() -> None:
    det = create("auto", choose=False).fit(sine(), progress=False)
    names = [(m["detector"], m["window"], m.get("smooth", 1)) for m in det.choice["members"]]
    assert names == [("knn", 1, 1), ("knn", 8, 1), ("knn", 16, 1), ("knn", 32, 1), ("knn", 16, 4), ("knn", 16, 3)]


def test_window_sets_the_longest_member() -> None:
    det = create("auto", window=12, choose=False).fit(sine(), progress=False)
    names = [(m["detector"], m["window"], m.get("smooth", 1)) for m in det.choice["members"]]
    assert names == [("knn", 1, 1), ("knn", 3, 1), ("knn", 6, 1), ("knn", 12, 1), ("knn", 6, 4)]
    assert det.window_ == 12


def test_multivariate_windows_capped() -> None:
    det = create("auto").fit(sine(1200, d=40), progress=False)
    assert all(m["window"] * 40 <= 256 for m in det.choice["members"])
    out = det.score(sine(300, d=40, seed=2))
    assert out.contributions.shape == (300, 40)


def test_save_load_same_scores(fitted, tmp_path: Path) -> None:
    x = sine(600, seed=3)
    fitted.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["detector"] == "auto" and meta["choice"]["members"] == fitted.choice["members"]
    back = load(tmp_path / "m")
    np.testing.assert_allclose(back.score(x).score, fitted.score(x).score, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("members, message", [
    ([{"detector": "auto", "window": 8}], "not a registered detector"),
    ([{"detector": "nope", "window": 8}], "not a registered detector"),
    ([{"detector": "knn", "window": 0}], "not a window"),
    ([{"detector": "knn", "window": 8, "smooth": 10**6}], "smoothing"),
    ([{"detector": "knn", "window": 8, "smooth": 4, "stride": 5}], "stride"),
    ([{"detector": "knn", "window": 8, "params": {"k": -1}}], "knn"),
    ([], "1 to 16 members"),
])
def test_crafted_choice_refused(fitted, tmp_path: Path, members: list, message: str) -> None:
    fitted.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    meta["choice"]["members"] = members
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=message):
        load(tmp_path / "m")


def test_crafted_calibration_refused(fitted, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    fitted.save(tmp_path / "m")
    state = load_file(str(tmp_path / "m" / "model.safetensors"))
    state["calib_var"] = -state["calib_var"] - 1
    save_file(state, str(tmp_path / "m" / "model.safetensors"))
    with pytest.raises(InputError, match="variance"):
        load(tmp_path / "m")


def test_partial_fit_follows_scores(fitted, tmp_path: Path) -> None:
    fitted.save(tmp_path / "m")
    det = load(tmp_path / "m")
    before = det.tail.count
    for row in sine(50, seed=4):
        det.score_one(row)
        det.partial_fit(row)
    assert det.tail.count == min(before + 50, det.memory)


def test_stream_batch_equals_rows(fitted, tmp_path: Path) -> None:
    fitted.save(tmp_path / "m")
    x = sine(700, seed=5)
    x[400] += 4.0
    a = Stream(load(tmp_path / "m"), past=sine(100), learn_every=64)
    b = Stream(load(tmp_path / "m"), past=sine(100), learn_every=64)
    batch = a.run(x)
    rows = np.array([b.update(r) for r in x])
    # the same up to kNN's float32 search, whose rounding differs between a batch and one row: it can
    # swap two neighbours at (almost) the same distance (knn.py)
    np.testing.assert_allclose(rows, batch.reported, rtol=0, atol=1e-3)
    assert batch.alarm[400:405].any() and ((batch.score >= 0) & (batch.score <= 1)).all()


def test_stream_holds_a_missing_value_at_its_last_value(fitted, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """A sensor drops out: the loop goes on, each missing value held at its column's last one (counted, the
    first logged, naming its column), scored as the same rows with those values written in; one by one as in a batch."""
    fitted.save(tmp_path / "m")
    x = sine(300, seed=8)
    gappy = x.copy()
    gappy[[50, 51, 120], 0] = [np.nan, np.inf, np.nan]
    held = x.copy()
    held[[50, 51], 0], held[120, 0] = x[49, 0], x[119, 0]
    with caplog.at_level("WARNING", logger="normalcy"):
        a = Stream(load(tmp_path / "m"), past=sine(100))
        rows = np.array([a.update(r) for r in gappy])
    assert a.filled == 3 and caplog.text.count("held at the column's last value") == 1
    assert f"(row 51, column {a.det.columns_[0]!r})" in caplog.text  # counted from 1; by name, not "column 0"
    b = Stream(load(tmp_path / "m"), past=sine(100)).run(held)
    c = Stream(load(tmp_path / "m"), past=sine(100)).run(gappy)
    np.testing.assert_allclose(rows, b.reported, rtol=0, atol=1e-3)
    np.testing.assert_array_equal(c.score, b.score)


def test_stream_update_takes_one_row() -> None:
    """update() of several rows scored the first and dropped the rest silently; a number is a one-column row."""
    det = create("knn", window=8).fit(sine(), progress=False)
    a, b = Stream(det), Stream(det)
    x = sine(40, seed=3)
    np.testing.assert_array_equal([a.update(float(v)) for v in x[:, 0]], [b.update(r[None]) for r in x])
    with pytest.raises(InputError, match=r"one row of 1 value\(s\) expected, got an array of shape \(2, 1\)"):
        a.update(x[:2])
    with pytest.raises(InputError, match="a row of 2 values; the model has 1 columns"):
        a.update(x[:2, 0])  # two values of a one-column model: two rows, not one
    assert a.t == b.t == 40
    empty = a.run(np.empty((0, 1)))  # a poll with no new rows: InputError "got shape (0, 1)" stopped the loop
    assert empty.score.shape == (0,) and empty.contributions.shape == (0, 1) and a.t == 40


def test_stream_takes_named_rows_by_name() -> None:
    """A DataFrame, a dict or a pandas Series row was taken in its own column order, silently: a DataFrame
    whose columns came in another order than the model's was scored with its metrics swapped."""
    import pandas as pd

    x = sine(200, d=2, seed=4)
    det = create("knn", window=8).fit(pd.DataFrame(sine(d=2), columns=["cpu", "mem"]), progress=False)  # shared: no stream learns
    want = Stream(det, learn=False).run(x).score
    frame = pd.DataFrame({"mem": x[:, 1], "cpu": x[:, 0], "note": 0.0})  # another order, one column more
    np.testing.assert_array_equal(Stream(det, learn=False).run(frame).score, want)
    np.testing.assert_array_equal(Stream(det, learn=False).run({"mem": x[:, 1], "cpu": list(x[:, 0])}).score, want)
    a, b = Stream(det, learn=False), Stream(det, learn=False)
    np.testing.assert_allclose([a.update({"mem": m, "cpu": c}) for c, m in x], [b.update(r) for _, r in frame.iterrows()],
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose([a.last[0]], [Stream(det, learn=False).run(x).score[-1]], atol=1e-12)
    with pytest.raises(InputError, match=r"stream: a row without the model's metric\(s\) \['mem'\]"):
        a.update({"cpu": 1.0})


def test_stream_holds_a_text_value_as_a_missing_one(fitted, tmp_path: Path) -> None:
    """A value that is text (a logger's "error") or None stopped the loop with a ValueError; it is held at its
    column's last value as a missing one is (``watch`` holds such a cell so), and text that is a number read."""
    det = create("knn", window=8).fit(sine(d=2), progress=False)  # streams that learn nothing share it
    x = sine(100, d=2, seed=9)
    rows = x.tolist()
    rows[30][0], rows[31][1], rows[40][0] = "error", None, str(float(x[40, 0]))
    held = x.copy()
    held[30, 0], held[31, 1] = x[29, 0], x[30, 1]
    a = Stream(det, learn=False)
    got = [a.update(r) for r in rows]
    assert a.filled == 2
    np.testing.assert_allclose(got, Stream(det, learn=False).run(held).reported, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(Stream(det, learn=False).run(rows).score, Stream(det, learn=False).run(held).score)
    with pytest.raises(InputError, match=r"stream: '\{\}' \(dict\) is not a number"):
        a.update([{}, 1.0])
    assert a.t == 100  # the refused row left the stream as it was


def test_stream_quiet_period() -> None:
    det = create("knn", window=8).fit(sine(), progress=False)
    x = sine(900, seed=6)
    x[500:520] += 5.0  # a long anomaly: one alarm, the rest of it quiet
    out = Stream(det, quiet=100, learn_every=32).run(x)
    alarms = np.flatnonzero(out.alarm)
    assert len(alarms[(alarms >= 500) & (alarms < 600)]) == 1
    loud = np.flatnonzero(out.score >= 0.3)
    inside = loud[(loud > alarms[alarms >= 500][0]) & (loud < 600)]
    assert len(inside) and (out.reported[inside] < 0.01).all()


def test_stream_learns(fitted, tmp_path: Path) -> None:
    fitted.save(tmp_path / "m")
    x = sine(1200, seed=7) + np.r_[np.zeros(200), np.full(1000, 2.0)][:, None]  # a lasting level shift
    on = Stream(load(tmp_path / "m"), learn=True).run(x)
    off = Stream(load(tmp_path / "m"), learn=False).run(x)
    assert on.score[-300:].mean() < off.score[-300:].mean()  # learned: the new level is normal again


def test_running_tail_is_welford_then_forgets() -> None:
    rng = np.random.default_rng(0)
    s = np.exp(rng.standard_normal((300, 2)))
    t = RunningTail(np.zeros(2), np.ones(2), 0, 1000)
    t.update(s)
    y = np.log1p(s)
    np.testing.assert_allclose(t.mean, y.mean(axis=0))
    np.testing.assert_allclose(t.var, y.var(axis=0))
    f = RunningTail(np.zeros(2), np.ones(2), 0, 1000)
    dec = f.follow(s)
    np.testing.assert_allclose(f.mean, t.mean)
    assert (dec[0] == 0).all() and (dec >= 0).all() and (dec <= 10).all()
    short = RunningTail(np.zeros(1), np.ones(1), 0, 20)
    short.update(np.r_[np.zeros(500), np.full(100, 5.0)][:, None])
    assert abs(short.mean[0] - np.log1p(5.0)) < 0.02  # a short memory has moved to the new level


def test_moving_mean_restarts_per_series() -> None:
    X = np.arange(10.0)[:, None]
    np.testing.assert_allclose(moving_mean(X, 3)[:4, 0], [0, 0.5, 1, 2])
    np.testing.assert_allclose(moving_mean(X, 3, np.array([0, 5]))[5:8, 0], [5, 5.5, 6])


@pytest.mark.parametrize("kind", KINDS)
def test_injections_change_only_their_stretch(kind: str) -> None:
    rng = np.random.default_rng(0)
    seg = sine(200, d=2)
    before = seg.copy()
    _inject(seg, kind, 50, 20, 1, rng)
    changed = np.flatnonzero((seg != before).any(axis=1))
    assert len(changed) and changed.min() >= 50 and changed.max() < 70
    assert (seg[:, 0] == before[:, 0]).all()


def test_too_short_for_a_choice_keeps_defaults(caplog) -> None:
    det = create("auto").fit(sine(90), progress=False)
    assert "note" in det.choice["validation"]
    assert det.score(sine(120, seed=8)).score.shape == (120,)


@pytest.mark.parametrize(("rows", "smooth"), [(20, 64), (40, 30), (300, 1024)])
def test_a_smoothing_longer_than_the_training_part_adds_no_smoothed_member(rows: int, smooth: int) -> None:
    """A smoothed member whose window of means did not fit the training rows learned an empty bank: numpy's
    "Mean of empty slice" at fit, then an IndexError from inside kNN (40 rows, smooth=30)."""
    x = sine(rows + 60, seed=3)
    x[rows + 30] += 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Mean of empty slice", no invalid divide
        det = create("auto", smooth=smooth).fit(x[:rows], progress=False)
        out = det.score(x[rows:])
    assert all(m.get("smooth", 1) in (1, m.get("stride")) for m in det.choice["members"])  # the period's only
    assert np.isfinite(out.score).all() and out.decision[30] == 1


def test_a_replayed_stream_no_longer_than_its_warm_up_is_refused(fitted) -> None:
    """predict --stream of a plain detector calibrates on the stream's first 20 rows, which score 0: a series of
    20 rows scored 0 throughout, a spike of 10 spreads too, and passed as normal without a word. auto brings its
    own calibration and scores it."""
    from normalcy.series.io import Series
    from normalcy.series.runs import replay_series

    x = sine(20, seed=5)
    x[10] += 10
    s = Series("s", np.arange(20.0), x, ("value",), None, [], Path("s.csv"))
    knn = create("knn", window=8).fit(sine(300), progress=False)
    with pytest.raises(InputError, match=r"s\.csv: 20 row\(s\), but a stream of knn \(stream=True\) learns its "
                                         r"calibration on its first 20 rows.*score it without stream=True$"):
        replay_series(knn, s)  # Python's argument
    with pytest.raises(InputError, match=r"knn \(--stream\) learns .*score it without --stream$"), cli_wording():
        replay_series(knn, s)  # the command line's option
    assert replay_series(fitted, s).decision[10] == 1


@pytest.mark.parametrize("network", ["hypad", "autoencoder"])
def test_network_members_fit_save_and_stream(network: str, tmp_path: Path) -> None:
    """A network among the members: its context is known before it is fitted (auto reads the members'
    contexts when it builds them; hypad as a candidate raised AttributeError 'span_' there)."""
    det = create("auto", candidates=(network,), choose=False, period=False,
                 smooth=1).fit(sine(600, d=2), progress=False)
    assert {m["detector"] for m in det.choice["members"]} == {network}
    x = sine(300, d=2, seed=5)
    det.save(tmp_path / "m")
    back = load(tmp_path / "m")
    np.testing.assert_allclose(back.score(x).score, det.score(x).score, rtol=1e-9, atol=1e-9)
    stream = Stream(back)
    assert np.isfinite([stream.update(row) for row in x[:40]]).all()


def test_autoencoder_joins_where_a_row_has_four_metrics() -> None:
    """Borghesi et al.'s autoencoder is a default member of a series of MIN_METRICS metrics or more (how they
    move together within a row), of none with fewer, and ``autoencoder=False`` leaves it out."""
    def networks(d: int, **params) -> list[dict]:
        det = create("auto", choose=False, **params).fit(sine(600, d=d), progress=False)
        return [m for m in det.choice["members"] if m["detector"] == "autoencoder"]

    assert networks(4) == [{"detector": "autoencoder", "window": 1, "params": {}}]
    assert networks(3) == [] and networks(4, autoencoder=False) == []


def test_unknown_candidate_refused() -> None:
    with pytest.raises(InputError):
        create("auto", candidates=()).fit(sine(), progress=False)


def test_period_member_joins_when_the_period_is_longer_than_the_windows(fitted) -> None:
    period = [m for m in fitted.choice["members"] if m.get("stride", 1) > 1]
    assert period == [{"detector": "knn", "window": 16, "params": {"max_bank": fitted.bank}, "smooth": 3,
                       "stride": 3}]  # sine's period, 40 rows: 16 means of 3 rows, 48 rows
    assert fitted.members[-1].context == 48
    assert not any(m.get("stride", 1) > 1 for m in create("auto", period=False).fit(sine(), progress=False)
                   .choice["members"])
    short = create("auto").fit(sine(period=20), progress=False)  # within the 32-row window: no period member
    assert not any(m.get("stride", 1) > 1 for m in short.choice["members"])
    noise = np.random.default_rng(0).standard_normal((1500, 1))  # no period: the 125-row fallback window is not one
    assert not any(m.get("stride", 1) > 1 for m in create("auto").fit(noise, progress=False).choice["members"])


def test_combine_is_the_windowed_mean_or_the_period_member() -> None:
    det = create("auto", choose=False).fit(sine(), progress=False)
    assert det._view.tolist() == [False] * 5 + [True]
    dec = np.array([[1.0, 2, 3, 4, 5, 2], [1, 1, 1, 1, 1, 6], [0, 0, 0, 0, 0, 0]])
    np.testing.assert_allclose(det.combine(dec), [3.0, 6.0, 0.0])


def test_period_member_finds_a_missing_daily_peak() -> None:
    """A daily peak that does not come: every short window has seen a flat stretch, the period member
    has never seen a day without its peak."""
    def days(n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        t = np.arange(n)
        x = np.where(t % 96 < 12, 2.0, 0.0) + 0.05 * rng.standard_normal(n)
        return x[:, None]

    full = days(4320, 0)
    train, x = full[:2400], full[2400:].copy()
    x[960:972] = 0.05 * np.random.default_rng(2).standard_normal((12, 1))  # the 11th day's peak missing
    det = create("auto").fit(train, progress=False)
    assert det._view.any()
    out = Stream(det, past=train).run(x)
    near = range(960, 972 + det.context)  # the rows whose context holds the missing peak
    assert out.alarm[960:1056].any() and out.score[960:1056].max() > 2 * np.delete(out.score, near).max()
    plain = create("auto", period=False).fit(train, progress=False)
    assert not Stream(plain, past=train).run(x).alarm[960:1056].any()


def test_strided_member_batch_equals_rows(fitted) -> None:
    member = fitted.members[-1]
    x = sine(300, seed=9)
    batch = member._score(x)
    rows = np.array([member._score_last(x[max(0, t - member.context + 1):t + 1]) for t in range(member.context,
                                                                                              300)])
    np.testing.assert_allclose(rows, batch[member.context:], rtol=1e-5, atol=1e-5)


def test_smoothed_members_see_whole_means_only_at_the_start_of_a_series(fitted) -> None:
    """A series' first rows: no smoothed member sees a mean of fewer than k rows, which is noisier than any it
    learned (the period member scored the start of normal test series at up to 6 decades, an alarm on every
    series); batch and stream agree from the first row."""
    x = sine(300, seed=9)
    smoothed = [m for m in fitted.members if isinstance(m, Smoothed)]
    assert any(m.stride > 1 for m in smoothed)
    for member in smoothed:
        batch = member._score(x)
        rows = np.array([member._score_last(x[:t + 1][-member.context:]) for t in range(300)])
        np.testing.assert_allclose(rows, batch, rtol=1e-5, atol=1e-5)
        assert not batch[:member.k - 1].any()
    det = create("auto").fit(sine(2500, period=250), progress=False)  # the period member spans 256 rows
    decades = det.calibrated(det._raw(det.members, sine(600, period=250, seed=9))[0])[:, det._view]
    assert decades[:260].max() < decades[260:].max()  # the start no more anomalous than the rest (was 4.1 > 2.1)


def test_a_stream_without_past_learns_before_the_period_members_first_window(fitted, tmp_path: Path) -> None:
    """A stream started without past rows (``watch`` of a fitted model, ``predict --stream``) learns its first block
    before the period member has a whole window (48 rows here; 256 for a 250-row period against blocks of 128):
    that block was a ValueError, "cannot reshape array of size 0", and the watch ended in a traceback. The
    member learns no window there, as row-by-row updates do not."""
    fitted.save(tmp_path)
    x = sine(200, seed=5)
    batch = Stream(load(tmp_path), learn_every=32).run(x).reported
    stream = Stream(load(tmp_path), learn_every=32)
    np.testing.assert_allclose([stream.update(row) for row in x], batch, rtol=1e-9, atol=1e-12)
    assert batch[100:].max() > 0  # scored and calibrated past the warm-up


@pytest.mark.parametrize("first", [0, 1, 5, 47, 48, 100])
def test_members_score_from_skips_the_past_only(fitted, first: int) -> None:
    Z = fitted.standardise(sine(300, seed=4))
    raw, _ = fitted._raw(fitted.members, Z)
    np.testing.assert_allclose(fitted._raw(fitted.members, Z, first)[0], raw[first:], rtol=1e-9, atol=1e-12)


def test_run_names_the_members_and_the_period_member(tmp_path: Path) -> None:
    t = np.arange(1500)
    x = np.where(t % 96 < 12, 2.0, 0.0) + 0.05 * np.random.default_rng(0).standard_normal(1500)
    for name, part in (("train.csv", slice(0, 1200)), ("test.csv", slice(1200, 1500))):
        lines = ["time,value"] + [f"{1_700_000_000 + 300 * i},{x[i]:.4f}" for i in t[part]]
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    r = run_cli("fit", tmp_path / "train.csv", "-o", tmp_path / "m", "--time-column", "time", "-d", "auto")
    assert r.returncode == 0, r.stderr
    r = run_cli("predict", tmp_path / "m", tmp_path / "test.csv", "-o", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["detector"] == "auto" and meta["members"].startswith("knn/1, ")
    assert meta["members"].endswith(" (period)") and "(period)" in (tmp_path / "run" / "report.html").read_text()


def test_an_unknown_candidate_is_refused(tmp_path: Path) -> None:
    """``candidates`` took any name: create("auto", candidates=("bogus",)) failed only at fit, with a ValueError,
    and a model.json crafted to name one loaded without a word. Both are one InputError naming the candidates."""
    with pytest.raises(InputError, match=r"detector auto: candidates: .*'bogus' is not a member detector; one of knn"):
        create("auto", candidates=("bogus",))
    d = create("auto", window=10, choose=False).fit(sine(300), progress=False).save(tmp_path / "m")
    meta = json.loads((d / "model.json").read_text())
    meta["params"]["candidates"] = ["knn", "x" * 100_000]
    (d / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"model\.json: .*candidates: .*'xxx.* is not a member detector") as err:
        load(d)
    assert len(str(err.value)) < 1000


def test_a_member_scoring_no_number_names_the_streams_row() -> None:
    """A streamed row of an ``auto`` model whose member scores NaN stops the stream naming that row: the check read
    the members' raw scores as rows, and named row t + k + 1 for member k."""
    rng = np.random.default_rng(0)
    x = np.sin(np.arange(460) / 10)[:, None] + 0.05 * rng.normal(size=(460, 1))
    det = create("auto").fit(x[:400], progress=False)
    stream = Stream(det)
    for row in x[400:410]:
        stream.update(row)
    last = stream.det._members[-1]
    assert len(stream.det._members) > 1  # the last member's index would have moved the row named
    last._score_last = lambda recent: np.array([np.nan])
    with pytest.raises(InputError, match=r"^auto: the model scores row 11 as nan"):
        stream.update(x[410])
