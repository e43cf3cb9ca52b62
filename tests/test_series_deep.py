"""The neural series detectors: the autoencoder of Borghesi et al., HypAD, and the forecasting-residual
detector of Hundman et al. (small networks, few steps: each test trains in about a second)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from normalcy.errors import InputError
from normalcy.series.autoencoder import Autoencoder
from normalcy.series.dynamic import Z_GRID, Z_MAX, dynamic_epsilon, dynamic_epsilons
from normalcy.series.events import top_metrics
from normalcy.series.forecast import Forecast
from normalcy.series.hypad import expmap0, poincare_distance
from normalcy.series.io import Series, read_series_folder
from normalcy.series.registry import DETECTORS, create, load
from normalcy.series.stream import Stream

FAST = {  # few training steps: the tests check behaviour, not the best model
    "autoencoder": {"steps": 200},
    "hypad": {"steps": 200},
    "forecast": {"steps": 200, "history": 300},
}
FEWER = {"steps": 30}  # for tests of plumbing (determinism, files, shapes)
NAMES = list(FAST)


def sine(n: int, period: int = 40, d: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    return np.sin(2 * np.pi * t / period + np.arange(d)) + 3 * np.arange(d) + 0.05 * rng.standard_normal((n, d))


def series(values: np.ndarray) -> Series:
    values = values.reshape(len(values), -1)
    cols = tuple(f"m{j}" for j in range(values.shape[1]))
    return Series("s", np.arange(len(values), dtype=np.float64), values, cols, None, [], Path("s.csv"))


def make(name: str, **params: object):
    return create(name, **{**FAST[name], **params})


def test_registered() -> None:
    assert {"autoencoder", "hypad", "forecast"} <= set(DETECTORS)
    with pytest.raises(InputError, match="detector hypad: uncertainty"):
        create("hypad", uncertainty="maybe")


@pytest.mark.parametrize("name", NAMES)
def test_spike_found_and_named(name: str) -> None:
    X = sine(3000, d=4)
    det = make(name, window=40).fit(series(X[:2000]), progress=False)
    test = X[2000:].copy()
    test[600:606, 2] += 4  # a spike in m2
    r = det.score(series(test))
    assert r.contributions.shape == (1000, 4) and (r.contributions >= 0).all()
    np.testing.assert_allclose(r.contributions.sum(axis=1), r.score)
    np.testing.assert_array_equal(r.decision, r.score >= det.threshold_)
    assert r.decision[600:606].any(), name
    assert r.decision[:550].mean() < 0.05, name  # the first rows included
    peak = 600 + int(np.argmax(r.score[600:650]))
    named = list(np.argsort(-r.contributions[peak]))
    assert named[0] == 2, (name, r.contributions[peak])  # the alarm names m2


@pytest.mark.parametrize("name", NAMES)
def test_level_shift_univariate(name: str) -> None:
    X = sine(3000, period=25, seed=1)[:, 0]
    det = make(name).fit(X[:2000], progress=False)
    test = X[2000:].copy()
    test[700:] += 1.5
    r = det.score(test)
    assert r.decision[700:760].any(), name
    assert r.score[700:760].max() > 2 * r.score[100:650].max(), name


@pytest.mark.parametrize("name", NAMES)
def test_causal_and_stream_equals_batch(name: str) -> None:
    X = sine(2600, d=2, seed=2)
    X[2300:2305, 1] -= 3
    det = make(name, window=30, **FEWER).fit(X[:1800], progress=False)
    whole = det.score(X[1800:])
    part = det.score(X[1800:2000])
    np.testing.assert_allclose(part.contributions, whole.contributions[:200], rtol=1e-9, atol=1e-12)
    stream = np.array([det.score_one(x) for x in X[1800:]])
    np.testing.assert_allclose(stream, whole.score, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(det.last_contributions, whole.contributions[-1], rtol=1e-9, atol=1e-12)


def test_autoencoder_row_network_streams_as_it_scores() -> None:
    """On 4 metrics or more the autoencoder sees one row (the paper's setting); a stream's row goes through
    its weights as numpy arrays, not torch, and must score as the batch does."""
    X = sine(1400, d=5, seed=4)
    X[1300, 2] += 4
    det = create("autoencoder", **FEWER).fit(X[:1000], progress=False)
    assert det.span_ == 1
    whole = det.score(X[1000:])
    stream = np.array([det.score_one(x) for x in X[1000:]])
    np.testing.assert_allclose(stream, whole.score, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(det.last_contributions, whole.contributions[-1], rtol=1e-9, atol=1e-12)
    assert stream[300] > 5 * np.median(stream)  # the planted jump stands out


def correlated(n: int, rng: np.random.Generator, offset: int = 0) -> np.ndarray:
    """Six metrics of scales 1 to 100 and their own periods; m2 follows m1, m5 is m0 + m1, m3 is noise alone
    (the worst reconstructed when all is normal)."""
    t = np.arange(offset, offset + n)[:, None]
    X = np.sin(2 * np.pi * t / (20 + 13 * np.arange(6)) + np.arange(6)) + 0.1 * rng.standard_normal((n, 6))
    X[:, 2] = 0.8 * X[:, 1] + 0.2 * X[:, 2]
    X[:, 3] = rng.standard_normal(n)
    X[:, 5] = X[:, 0] + X[:, 1] + 0.05 * rng.standard_normal(n)
    return X * 10.0 ** (np.arange(6) % 3)


@pytest.mark.parametrize("name, params, seed", [("autoencoder", {"steps": 200}, 3),
                                                ("hypad", {"steps": 60, "window": 16, "hidden": 32}, 2)])
def test_the_metric_that_deviated_is_named(name: str, params: dict, seed: int, tmp_path: Path) -> None:
    """A one-row jump planted in each of six correlated metrics in turn is named first by the explanation (the
    contributions of the rows whose window holds it); both named it in 2 of 6. The autoencoder split its score
    by raw squared errors, which its one-row network smears over the metrics it reconstructs a deviation with;
    HypAD by raw window errors, where the noise metric's normal error outweighed a jump elsewhere. The
    autoencoder's score is still the sum of the squared errors, and a saved model explains the same."""
    rng = np.random.default_rng(seed)
    train = correlated(1000, rng)
    det = create(name, seed=seed, **params).fit(train, progress=False)
    test = correlated(420, rng, offset=1000)
    planted = 60 * np.arange(1, 7)
    test[planted, np.arange(6)] += 4 * train.std(axis=0)
    r = det.score(test)
    first = [top_metrics(r.contributions[a:a + det.context].sum(axis=0), det.columns_)[0] for a in planted]
    assert sum(f == f"x{j}" for j, f in enumerate(first)) >= 5, first
    if name == "autoencoder":
        Z = det.standardise(test)
        rec = det.net_(torch.from_numpy(Z))[0].detach().numpy()
        np.testing.assert_allclose(r.score, ((Z - rec) ** 2).sum(axis=1), rtol=1e-12)  # the score is unchanged
    det.save(tmp_path / "m")
    np.testing.assert_allclose(load(tmp_path / "m").score(test).contributions, r.contributions, rtol=1e-12)


def test_hypad_saved_before_metric_errors_loads_and_explains_as_then(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A HypAD model saved before ``error_scale_`` was learned loads, with a note, and names metrics by their raw
    window errors as it did; a damaged ``error_scale`` is refused at load, naming the file."""
    X = sine(700, d=3, seed=5)
    det = make("hypad", window=10, **FEWER).fit(X[:500], progress=False)
    det.save(tmp_path / "m")
    state = load_file(tmp_path / "m" / "model.safetensors")
    assert state["error_scale"].shape == (3,)
    save_file({k: v for k, v in state.items() if k != "error_scale"}, tmp_path / "m" / "model.safetensors")
    with caplog.at_level("INFO", logger="normalcy"):
        old = load(tmp_path / "m")
    assert "a model saved without its metrics' normal errors" in caplog.text
    det.error_scale_ = np.ones(3)
    np.testing.assert_allclose(old.score(X[500:]).contributions, det.score(X[500:]).contributions, rtol=1e-12)
    save_file(state | {"error_scale": torch.zeros(3, dtype=torch.float64)}, tmp_path / "m" / "model.safetensors")
    with pytest.raises(InputError, match=r"model.safetensors: not the state of a fitted hypad \(error_scale"):
        load(tmp_path / "m")


@pytest.mark.parametrize("name", NAMES)
def test_fit_is_deterministic_and_saved_model_scores_the_same(name: str, tmp_path: Path) -> None:
    X = sine(2000, d=2, seed=3)
    det = make(name, window=25, **FEWER).fit(series(X[:1500]), progress=False)
    again = make(name, window=25, **FEWER).fit(series(X[:1500]), progress=False)
    a = det.score(X[1500:])
    np.testing.assert_array_equal(a.score, again.score(X[1500:]).score)  # same seed, same model
    det.save(tmp_path / "m")
    back = load(tmp_path / "m")
    assert type(back) is type(det) and back.threshold_ == det.threshold_ and back.window_ == det.window_
    b = back.score(X[1500:])
    np.testing.assert_array_equal(a.score, b.score)
    np.testing.assert_array_equal(a.contributions, b.contributions)
    np.testing.assert_allclose([back.score_one(x) for x in X[1500:1600]], b.score[:100], rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("name", NAMES)
def test_a_test_series_shorter_than_the_window_is_refused_not_scored_0(name: str) -> None:
    """A network scores a row only from a whole window of its past: a test series shorter than that scored 0 in
    every row, a 10-spread spike too, and passed as normal without a word (predict: 0 anomalous)."""
    from normalcy.series.runs import score_series

    X = sine(800, seed=2)
    det = make(name, window=30, **FEWER).fit(series(X[:600]), progress=False)
    short = X[600:620].copy()  # 20 rows: a window of 30 (the forecast's 30 lags) never fits
    short[-1] += 10
    with pytest.raises(InputError, match=r"s\.csv: .* row\(s\), but .* no row could be scored"):
        score_series(det, series(short))
    with pytest.raises(InputError, match="array: .* no row could be scored; give at least"):
        det.score(short.ravel())
    assert det.score(X[600:601 + det.blind].ravel()).score[-1] > 0  # one whole window: its last row is scored
    scored = score_series(det, series(short), past=X[:600])  # the end of training as its past: scored
    assert scored.score[-1] > det.threshold_


@pytest.mark.parametrize("name", NAMES)
def test_the_first_rows_that_score_0_unjudged_are_said(name: str, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """The first rows of a series, before a whole window of their past exists, score 0 whatever they hold: they
    passed as normal without a word. predict says how many (INFO, and run.json's ``unjudged_rows``); scores
    are unchanged, and a series scored after its past (eval's test after train) has none."""
    import json

    from normalcy import api
    from normalcy.series.runs import score_series

    X = sine(800, seed=2)
    det = make(name, window=30, **FEWER).fit(series(X[:600]), progress=False)
    test = tmp_path / "test.csv"
    np.savetxt(test, np.c_[np.arange(200), X[600:]], delimiter=",", header="t,m0", comments="")
    with caplog.at_level("INFO", logger="normalcy"):
        api.predict(det, test, tmp_path / "run", report=False, progress=False)
    assert f"test.csv: the first {det.blind} row(s) score 0, not judged: {name} scores a row only after " in caplog.text
    assert json.loads((tmp_path / "run" / "run.json").read_text())["unjudged_rows"] == det.blind
    assert score_series(det, series(X[600:])).blind == det.blind
    assert score_series(det, series(X[600:]), past=X[:600]).blind == 0


@pytest.mark.parametrize("name", ["autoencoder", "hypad"])
def test_a_long_series_is_scored_a_batch_of_windows_at_a_time(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scoring handed every window of a series to the network at once and kept all it gave back (the
    reconstructions, the hidden units): 5 GB for a million rows. A batch at a time now, the same numbers."""
    from normalcy.series.autoencoder import _SCORE_BATCH
    from normalcy.series.windows import flat_windows

    X = sine(600, seed=2)
    det = make(name, window=10, **FEWER).fit(series(X), progress=False)
    long = sine(2 * _SCORE_BATCH + 100, seed=3)
    whole = det._window_scores(flat_windows(det.standardise(long), det.span_))  # all windows at once
    sizes: list[int] = []
    inner = det._window_scores
    monkeypatch.setattr(det, "_window_scores", lambda W: sizes.append(len(W)) or inner(W))
    contrib = det.score(long.ravel()).contributions
    assert max(sizes) == _SCORE_BATCH and sum(sizes) == len(whole)
    np.testing.assert_array_equal(contrib[det.span_ - 1:], whole)
    assert not contrib[:det.span_ - 1].any()


@pytest.mark.parametrize("name", NAMES)
def test_a_window_of_one_row_saves_and_loads(name: str, tmp_path: Path) -> None:
    """A series of more than 128 metrics gets a window of 1 row (256 numbers a window at most), as --window 1
    does: hypad fitted and saved it, then refused its own model at load ("span 1 outside 2..1024"), so predict
    lost the fit."""
    X = sine(200, d=130, seed=4)
    det = make(name, **FEWER).fit(series(X[:150]), progress=False)
    assert det.window_ == 1
    det.save(tmp_path / "m")
    np.testing.assert_array_equal(load(tmp_path / "m").score(X[150:]).score, det.score(X[150:]).score)


def test_crafted_tensors_refused(tmp_path: Path) -> None:
    det = make("forecast", window=10, **FEWER).fit(sine(600), progress=False)
    det.save(tmp_path / "m")
    state = load_file(tmp_path / "m" / "model.safetensors")
    for key, value, message in [
        ("lags", torch.tensor(5000), "lags 5000"),
        ("history", torch.full((10,), float("nan")), "tensor 'history' has 10 NaN"),
        ("history", torch.ones(400, dtype=torch.float64), r"history of shape \(400,\) is not at most 300"),
        ("net.net.0.weight", torch.zeros(3, 3), "do not fit the network"),
    ]:
        bad = dict(state, **{key: value})
        save_file(bad, tmp_path / "m" / "model.safetensors")
        with pytest.raises(InputError, match=message):
            load(tmp_path / "m")



@pytest.fixture(scope="module")
def saved_autoencoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An autoencoder of one column (span 10: its window) saved, for the crafted-file tests to copy and edit."""
    folder = tmp_path_factory.mktemp("ae") / "m"
    make("autoencoder", window=10, **FEWER).fit(sine(300), progress=False).save(folder)
    return folder


def crafted(saved: Path, to: Path, params: dict | None = None, window: int | None = None,
            tensors: dict | None = None) -> Path:
    """A copy of a saved model with model.json's params (and window) or some tensors replaced."""
    to.mkdir()
    meta = json.loads((saved / "model.json").read_text())
    meta["params"].update(params or {})
    meta["window"] = window or meta["window"]
    (to / "model.json").write_text(json.dumps(meta))
    save_file(dict(load_file(saved / "model.safetensors"), **(tensors or {})), to / "model.safetensors")
    return to


def test_a_network_model_json_describes_is_checked_before_it_is_built(saved_autoencoder: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The network was built from model.json's parameters before the file's tensors were compared with it: a
    model.json of a few hundred bytes (span 512 of 40 columns, max_hidden 16384) beside a tiny safetensors file
    made load allocate 8 GB. Its shapes are now compared on torch's meta device (no memory) first."""
    built = []
    build = Autoencoder._build
    monkeypatch.setattr(Autoencoder, "_build",
                        lambda det: (build(det), built.append(det.net_.decode.weight.device.type)))
    folder = crafted(saved_autoencoder, tmp_path / "m", params={"hidden": 64, "max_hidden": 16384})
    with pytest.raises(InputError, match=r"m/model.safetensors: not the state of a fitted autoencoder \(tensors "
                                         r"'net\.\*' do not fit the network model.json describes: tensor "
                                         r"'net.decode.weight' has shape \(10, 100\), expected \(10, 640\)\)"):
        load(folder)
    assert built == ["meta"]  # never built for real
    built.clear()
    load(saved_autoencoder)  # a model as saved: built on the meta device, then for real
    assert built == ["meta", "cpu"]


def test_the_trial_score_at_load_takes_the_rows_the_model_needs(saved_autoencoder: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Load scored two of model.json's windows of zeros, whatever the network's own span: a window of 4096 rows
    and 100,000 columns beside a 13 MB autoencoder of span 1 made load allocate 6 GB. It scores the context and
    one more row where that is fewer, and the model scores as before."""
    folder = crafted(saved_autoencoder, tmp_path / "m", params={"window": 4096}, window=4096)
    shapes = []
    score = Autoencoder._score
    monkeypatch.setattr(Autoencoder, "_score", lambda det, X: (shapes.append(X.shape), score(det, X))[1])
    det = load(folder)
    assert shapes == [(11, 1)]  # span 10 and one row (it was (8192, 1))
    X = sine(100, seed=1)
    np.testing.assert_array_equal(det.score(X).score, load(saved_autoencoder).score(X).score)


@pytest.mark.filterwarnings("ignore:(overflow|invalid value):RuntimeWarning")  # numpy's, of the crafted weights
def test_scores_that_are_no_number_stop_a_stream_in_one_line(saved_autoencoder: Path, tmp_path: Path) -> None:
    """Weights that overflow on any row but the trial score's flat one (a crafted file) score NaN: score() refused
    them, but score_one returned NaN without a word, and a Stream's calibration turned NaN, no row ever an alarm
    again. Both now refuse the row as score() does."""
    state = load_file(saved_autoencoder / "model.safetensors")
    decode = torch.full_like(state["net.decode.weight"], 1e200)
    decode[:, ::2] = -1e200  # inf - inf: NaN
    folder = crafted(saved_autoencoder, tmp_path / "m", tensors={
        "net.encode.0.weight": torch.full_like(state["net.encode.0.weight"], 1e200),
        "net.encode.0.bias": torch.zeros_like(state["net.encode.0.bias"]), "net.decode.weight": decode})
    det = load(folder)  # the trial's rows of zeros score 0
    X = sine(40, seed=1)
    message = r"autoencoder: the model scores row \d+ as (nan|inf) \(not a number\): its learned state is damaged"
    with pytest.raises(InputError, match=message):
        det.score(X)
    with pytest.raises(InputError, match=message):
        for row in X:
            det.score_one(row)
    with pytest.raises(InputError, match=message):
        Stream(load(folder)).run(X)
    with pytest.raises(InputError, match=message):
        stream = Stream(load(folder))
        for row in X:
            stream.update(row)


# ------------------------------------------------------------------------------------------ autoencoder


def test_autoencoder_input_is_one_row_of_many_metrics() -> None:
    many = make("autoencoder", window=20, **FEWER).fit(sine(800, d=5), progress=False)
    one = make("autoencoder", window=20, **FEWER).fit(sine(800, d=1), progress=False)
    assert many.span_ == 1 and many.context == 1  # the paper: the metrics of one time step
    assert one.span_ == 20  # a single value cannot be reconstructed from the others: its window
    assert many.net_.encode[0].out_features == 50  # hidden layer 10x the input (overcomplete, L1-sparse)


# ------------------------------------------------------------------------------------------------ HypAD


def test_poincare_geometry() -> None:
    v = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1e-3, 0.0]], dtype=torch.float64)
    p = expmap0(v)
    assert torch.allclose(p.norm(dim=1), torch.tensor([np.tanh(5.0), 0.0, np.tanh(1e-3)], dtype=torch.float64))
    origin = torch.zeros_like(p)
    # the distance to the origin is 2 artanh |p| = 2 |v|: the further out, the more certain
    assert torch.allclose(poincare_distance(origin[2:], p[2:]), torch.tensor([2e-3], dtype=torch.float64))
    assert poincare_distance(p[:1], p[:1]).item() < 1e-3


def test_hypad_score_is_error_times_certainty() -> None:
    X = sine(2000, d=2, seed=5)
    det = make("hypad", window=20, **FEWER).fit(X[:1500], progress=False)
    W = np.lib.stride_tricks.sliding_window_view(X[1500:] - det.mean_, (20, 2))[:, 0] / det.scale_
    dist, certainty, share = det.parts(W.reshape(len(W), -1))
    assert ((certainty > 0) & (certainty < 1)).all() and np.allclose(share.sum(axis=1), 1)
    r = det.score(X[1500:])
    np.testing.assert_allclose(r.score[19:], dist * certainty, rtol=1e-9)
    assert (r.score[:19] == 0).all()  # no full window yet
    det.uncertainty = False  # the same model, unweighted
    np.testing.assert_allclose(det.score(X[1500:]).score[19:], dist, rtol=1e-9)


# --------------------------------------------------------------------------------------------- forecast


def telemanom_epsilon(h: np.ndarray, error_buffer: int) -> float:
    """The paper's threshold search written plainly, one z at a time, as telemanom's errors.py does it."""
    mu, sd = h.mean(), h.std()
    best, eps_best = -np.inf, mu + Z_MAX * sd
    for z in Z_GRID:
        eps = mu + z * sd
        i_anom = np.flatnonzero(h >= eps)
        buffer = np.arange(1, error_buffer)
        i_anom = np.concatenate([i_anom] + [i_anom + b for b in buffer] + [i_anom - b for b in buffer])
        i_anom = np.unique(i_anom[(i_anom >= 0) & (i_anom < len(h))])
        if not len(i_anom):
            continue
        groups = np.split(i_anom, np.flatnonzero(np.diff(i_anom) > 1) + 1)
        e_seq = [g for g in groups if g[0] != g[-1]]
        below = h[h < eps]
        score = ((mu - below.mean()) / mu + (sd - below.std()) / sd) / (len(e_seq) ** 2 + len(i_anom))
        if score >= best and len(e_seq) <= 5 and len(i_anom) < 0.5 * len(h):
            best, eps_best = score, eps
    return eps_best


@pytest.mark.parametrize("buffer", [1, 2, 15])
def test_dynamic_threshold_is_the_papers(buffer: int) -> None:
    det = Forecast(prune=0, buffer=buffer)
    rng = np.random.default_rng(buffer)
    for k in range(30):
        h = np.abs(rng.standard_normal(300)) + (rng.random(300) < 0.01) * rng.random() * 8
        if k % 3 == 0:
            h[100:110] += 3
        eps, _ = det._epsilon(h)
        assert eps == pytest.approx(telemanom_epsilon(h, buffer), rel=1e-9)


def test_dynamic_threshold_of_many_windows_at_once() -> None:
    """Every window's epsilon in one call (full windows, and the shorter ones at a series' start) is the paper's
    of that window alone, and the one-window form's to the bit."""
    rng = np.random.default_rng(5)
    h = np.abs(rng.standard_normal(400)) + (rng.random(400) < 0.03) * 6
    h[200:230] += 3
    for pad in (0, 1, 9):
        full = np.lib.stride_tricks.sliding_window_view(h, 150)
        got = dynamic_epsilons(full, pad)
        assert [dynamic_epsilon(w, pad) for w in full] == got.tolist()
        assert got[::10] == pytest.approx([telemanom_epsilon(w, pad + 1) for w in full[::10]], rel=1e-9)
        sizes = np.arange(1, 151)
        short = dynamic_epsilons(np.broadcast_to(h[:150], (150, 150)), pad, sizes=sizes)
        assert [dynamic_epsilon(h[:k], pad) for k in sizes] == short.tolist()


def test_forecast_thresholds_rows_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A series' dynamic thresholds are found a block of rows at a time: one at a time, a sort and some forty
    array calls over 2,000 errors each, took 0.3-0.5 ms a row, most of a forecast's score."""
    import normalcy.series.forecast as forecast

    det = make("forecast", window=10, history=100, steps=10).fit(sine(300, seed=3), progress=False)
    calls: list[int] = []
    batch = forecast.dynamic_epsilons
    monkeypatch.setattr(forecast, "dynamic_epsilons", lambda W, *a, **k: calls.append(len(W)) or batch(W, *a, **k))
    X = sine(500, seed=4)
    X[300:303] += 3
    r = det.score(X)
    assert sum(calls) == len(X) - det.lags_ and len(calls) <= 4
    assert r.decision[300:310].any()


def test_pruning() -> None:
    det = Forecast(prune=0.13, buffer=1)
    h = np.ones(200)
    h[50:55] = 5.0  # a clear sequence
    h[199] = 4.9  # a second one, 2 % under the first: the drop to the largest normal error (1) is the big one
    eps, survives = det._epsilon(h)
    assert eps < 4.9 and survives
    h[199] = 1.05  # just above a threshold that sits at the normal errors' level
    assert det._survives(h, 1.02) is False
    assert det._survives(h[:56], 1.02) is True  # the 5.0 sequence itself stands out


def test_forecast_threshold_is_one_or_the_quantile() -> None:
    X = sine(1500, seed=6)
    dyn = make("forecast", **FEWER).fit(X, progress=False)
    assert dyn.threshold_ == 1.0 and len(dyn.history_) == 300
    static = make("forecast", dynamic=False, **FEWER).fit(X, progress=False)
    assert static.threshold_ != 1.0
    r = static.score(X)
    assert (r.score[: static.lags_] == 0).all()  # no forecast without lags rows of past


def test_forecast_stream_forecasts_each_row_once() -> None:
    """A streamed row is forecast alone (its context's errors are kept from the rows before) and a stream's batch
    thresholds only its own rows: score_one re-forecast its whole context (1-2 ms a row on NAB), and Stream.run
    computed a dynamic threshold for each of its 2,000-odd context rows, for every 128 rows. Scores unchanged."""
    from normalcy.series.stream import Stream

    X = sine(1500, seed=7)
    X[1300:1303] += 3
    det = make("forecast", window=20, **FEWER).fit(X[:900], progress=False)
    whole = det.score(X[900:])
    forecast: list[int] = []
    det.net_.register_forward_hook(lambda m, i, o: forecast.append(len(i[0])))
    stream = np.array([det.score_one(x) for x in X[900:]])
    np.testing.assert_allclose(stream, whole.score, rtol=1e-9, atol=1e-12)
    assert len(forecast) == 600 - det.lags_ and set(forecast) == {1}
    det.reset_stream()
    thresholds: list[int] = []
    epsilons = det._epsilons
    det._epsilons = lambda h, ends: thresholds.append(len(ends)) or epsilons(h, ends)  # type: ignore[method-assign]
    Stream(det, past=X[:900], learn_every=50).run(X[900:1100])
    assert sum(thresholds) == 200
    det._epsilons = epsilons  # type: ignore[method-assign]
    det.reset_stream()
    [det.score_one(x) for x in X[900:1000]]
    det.set_params(seed=1).fit(X[:900], progress=False)  # another network: what it forecast is not kept
    Z = det.standardise(X[900:1001])  # as a Stream given them as its past asks for the last row's score
    np.testing.assert_allclose(det._score_last(Z), det.score(X[900:1001]).contributions[-1], rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------------------------ real data


def test_asd_server_incidents(shared_data: Path) -> None:
    """ASD omi-2 (19 metrics): fitted on train.csv, test.csv's labelled incidents outscore normal rows."""
    from sklearn.metrics import roc_auc_score

    (train,), (test,) = read_series_folder(shared_data / "asd" / "omi-2")
    det = create("autoencoder", steps=500).fit(train, progress=False)
    r = det.score(test)
    assert roc_auc_score(test.labels, r.score) > 0.8
    assert r.decision[test.labels == 1].mean() > 10 * r.decision[test.labels == 0].mean()


def test_a_stream_holding_less_than_its_context_keeps_every_row() -> None:
    """A stream that learns every 40 rows keeps its last context - 1 rows for the next block; where it held fewer
    (forecast's context here is 50 + 10 rows), the cut's start went negative and wrapped, so rows 40-79 were
    forecast without most of their past and scored up to 0.41 off the offline score (found by the seriesapi helper)."""
    import copy

    from normalcy.series.stream import Stream

    det = create("forecast", window=10, steps=20, history=50, hidden=8).fit(sine(400, d=2, seed=0), progress=False)
    test = sine(200, period=25, d=2, seed=1)
    stream, raws = Stream(copy.deepcopy(det), learn_every=40), []
    raw = stream._raw
    stream._raw = lambda Z, first: (lambda r: (raws.append(r[0][:, 0]), r)[1])(raw(Z, first))
    stream.run(test)
    np.testing.assert_allclose(np.concatenate(raws), det.score(test).score, rtol=1e-9, atol=1e-12)
