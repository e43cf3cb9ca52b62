"""NAB's scorer: its window and sigmoid rules on hand-worked cases, the vectorised sweep against a
row-by-row reference, and NAB's published final scores reproduced from its published raw scores."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from normalcy.errors import InputError
from normalcy.evaluation import nab

STANDARD = nab.PROFILES["standard"]
PUBLISHED = ("ARTime", "numenta", "relativeEntropy", "windowedGaussian", "random", "null")


def _file(name: str, n: int, windows: list[tuple[int, int]], probation: int = 0) -> nab.NabFile:
    time = np.datetime64("2020-01-01T00:00:00") + np.arange(n) * np.timedelta64(300, "s")
    return nab.NabFile(name, time, np.zeros(n), np.array(windows, dtype=np.int64).reshape(-1, 2), probation)


def _corpus(*files: nab.NabFile) -> nab.NabCorpus:
    return nab.NabCorpus(Path("."), {f.name: f for f in files}, dict(nab.PROFILES))


def _total(corpus: nab.NabCorpus, detections: dict[str, list[int]], profile: str = "standard") -> float:
    """The raw corpus total when exactly the given rows are detections (score 1, others 0)."""
    raw = {}
    for name, f in corpus.files.items():
        raw[name] = np.zeros(len(f))
        raw[name][detections.get(name, [])] = 1.0
    s = nab.sweep(raw, profile, corpus)
    normalised = nab.score_at(raw, profile, corpus, 0.5)
    return normalised * (s.perfect - s.null) / 100.0 + s.null


def S(x: float) -> float:
    return -1.0 if x > 3 else 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


def test_scaled_sigmoid_and_probation() -> None:
    assert nab.scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert nab.scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert nab.scaled_sigmoid(0.0) == 0.0
    assert nab.scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert nab.scaled_sigmoid(3.5) == -1.0
    assert nab.probation_rows(1000) == 150
    assert nab.probation_rows(4032) == 604
    assert nab.probation_rows(22695) == 750  # NAB caps it at 15 % of 5000 rows


def test_window_and_sigmoid_rules() -> None:
    """One window at rows 10..19 of a 60-row file, no probation: each rule by hand."""
    c = _corpus(_file("a.csv", 60, [(10, 19)]))
    fp = STANDARD["fpWeight"]
    assert _total(c, {}) == pytest.approx(-1.0)  # a missed window costs A_FN
    assert _total(c, {"a.csv": [10]}) == pytest.approx(1.0)  # at the first row: A_TP exactly
    assert _total(c, {"a.csv": [10, 12, 15, 19]}) == pytest.approx(1.0)  # only the first detection counts
    assert _total(c, {"a.csv": [15]}) == pytest.approx(S(-5 / 10) / S(-1))  # later: less
    assert _total(c, {"a.csv": [19]}) == pytest.approx(S(-1 / 10) / S(-1))
    assert _total(c, {"a.csv": [5]}) == pytest.approx(-1.0 - fp)  # no window before: the full A_FP
    assert _total(c, {"a.csv": [22]}) == pytest.approx(-1.0 + fp * S(3 / 9))  # just after: a small cost
    assert _total(c, {"a.csv": [59]}) == pytest.approx(-1.0 - fp)  # far after (> 3 widths): the full cost
    assert _total(c, {"a.csv": [10, 22, 30]}) == pytest.approx(1.0 + fp * (S(3 / 9) + S(11 / 9)))
    low_fn = _total(c, {"a.csv": [5]}, "reward_low_FN_rate")
    assert low_fn == pytest.approx(-2.0 - fp)


def test_probation_and_normalisation() -> None:
    """Detections in the probationary rows are ignored; a window wholly inside it is not scored, but
    still counts in the perfect score (NAB counts every labelled window there)."""
    c = _corpus(_file("a.csv", 60, [(2, 4), (10, 19)], probation=12))
    assert _total(c, {"a.csv": [3, 10, 11]}) == pytest.approx(-1.0)  # the second window: rows 12..19 scored
    assert _total(c, {"a.csv": [12]}) == pytest.approx(S(-8 / 10) / S(-1))  # its width is still 10
    raw = {"a.csv": np.zeros(60)}
    raw["a.csv"][12] = 1.0
    s = nab.sweep(raw, "standard", c)
    assert (s.null, s.perfect) == (-1.0, 2.0)
    score, threshold = nab.score_corpus(raw, "standard", c)
    assert threshold == 1.0
    assert score == pytest.approx(100 * (S(-0.8) / S(-1) + 1) / 3)


def _reference_totals(corpus: nab.NabCorpus, raw: dict[str, np.ndarray], w: dict[str, float],
                      thresholds: np.ndarray) -> np.ndarray:
    """NAB's rules row by row, for each threshold: the slow way the sweep must agree with."""
    out = []
    for t in thresholds:
        total = 0.0
        for name, f in corpus.files.items():
            det = raw[name] >= t
            for a, b in f.windows:
                if b < f.probation:
                    continue
                hits = [i for i in range(max(a, f.probation), b + 1) if det[i]]
                total += w["tpWeight"] * S(-(b - hits[0] + 1) / (b - a + 1)) / S(-1) if hits else -w["fnWeight"]
            for i in range(f.probation, len(f)):
                if det[i] and f.in_window[i] < 0:
                    before = [b for a, b in f.windows if b < i]
                    total += w["fpWeight"] * (S((i - before[-1]) / (f.windows[len(before) - 1][1]
                                                                   - f.windows[len(before) - 1][0]))
                                              if before else -1.0)
        out.append(total)
    return np.array(out)


def test_sweep_equals_row_by_row_reference() -> None:
    rng = np.random.default_rng(0)
    c = _corpus(_file("a.csv", 120, [(30, 39), (70, 84)], probation=18),
                _file("b.csv", 80, [(5, 9), (40, 47)], probation=12),
                _file("c.csv", 50, [], probation=7))
    raw = {n: rng.integers(0, 12, len(f)) / 11.0 for n, f in c.files.items()}  # many ties
    for profile, w in nab.PROFILES.items():
        s = nab.sweep(raw, profile, c)
        assert np.all(np.diff(s.thresholds) < 0)
        np.testing.assert_allclose(s.totals, _reference_totals(c, raw, w, s.thresholds), atol=1e-12)
        threshold, total = s.best()
        assert total == s.totals.max()
        assert threshold == s.thresholds[np.flatnonzero(s.totals == total)[0]]  # ties: the higher one
        score, t = nab.score_corpus(raw, profile, c)
        assert (t, score) == (threshold, s.normalise(total))
        for k in (0, 3, len(s.thresholds) - 1):
            assert nab.score_at(raw, profile, c, s.thresholds[k]) == pytest.approx(s.normalise(s.totals[k]))


def test_bad_scores() -> None:
    c = _corpus(_file("a.csv", 30, [(10, 12)]))
    with pytest.raises(InputError, match="missing"):
        nab.score_corpus({}, "standard", c)
    with pytest.raises(InputError, match="a.csv: 29 scores for 30 rows"):
        nab.score_corpus({"a.csv": np.zeros(29)}, "standard", c)
    with pytest.raises(InputError, match="not all finite"):
        nab.score_corpus({"a.csv": np.full(30, np.nan)}, "standard", c)
    with pytest.raises(InputError, match="unknown NAB profile"):
        nab.score_corpus({"a.csv": np.zeros(30)}, "strict", c)


def test_windows_by_first_equal_timestamp() -> None:
    """NAB files repeat timestamps at clock changes: a window starts at the first row carrying its start."""
    t = np.array(["2014-03-09 01:55:00", "2014-03-09 03:00:00", "2014-03-09 03:00:00", "2014-03-09 03:05:00",
                  "2014-03-09 03:10:00"], dtype="datetime64[s]")
    rows = nab._window_rows(t, [["2014-03-09 03:00:00.000000", "2014-03-09 03:05:00.000000"]], "x")
    assert rows.tolist() == [[1, 3]]
    with pytest.raises(InputError, match="holds no row"):
        nab._window_rows(t, [["2015-01-01 00:00:00", "2015-01-02 00:00:00"]], "x")


@pytest.fixture(scope="module")
def corpus(shared_data: Path) -> nab.NabCorpus:
    return nab.load_corpus(shared_data / "nab")


def test_corpus(corpus: nab.NabCorpus) -> None:
    assert len(corpus.files) == 58 and corpus.n_windows == 116
    assert sum(len(f) for f in corpus.files.values()) == 365_558
    assert corpus.profiles["reward_low_FN_rate"]["fnWeight"] == 2.0


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_final_scores(corpus: nab.NabCorpus, name: str) -> None:
    """NAB's final_results.json from its published raw scores: at the thresholds NAB published, every
    detector and profile within 0.1 (in fact 1e-9); with our sweep optimiser within 0.1 as well, except
    ``random``, whose published thresholds came from NAB's older hill-climbing optimiser: the exhaustive
    sweep finds a better threshold there, so it may only be higher."""
    final = json.loads((corpus.root / "published" / "final_results.json").read_text())[name]
    thresholds = json.loads((corpus.root / "published" / "thresholds.json").read_text())[name]
    raw = nab.read_published(corpus.root, name, corpus)
    results = nab.score_all(raw, corpus)
    assert set(results) == set(final) == set(nab.PROFILES)
    for profile, published in final.items():
        at_published = nab.score_at(raw, profile, corpus, thresholds[profile]["threshold"])
        assert at_published == pytest.approx(published, abs=0.1)
        assert results[profile].score >= at_published - 1e-9  # the sweep is the optimum
        if name != "random":
            assert results[profile].score == pytest.approx(published, abs=0.1)


def test_file_results_add_up_to_nab_final_score(corpus: nab.NabCorpus) -> None:
    """The per-file shares (bench/nab.py --against) are NAB's own total: summed and normalised at the threshold
    NAB published, they give its final score for ARTime on every profile."""
    final = json.loads((corpus.root / "published" / "final_results.json").read_text())["ARTime"]
    thresholds = json.loads((corpus.root / "published" / "thresholds.json").read_text())["ARTime"]
    raw = nab.read_published(corpus.root, "ARTime", corpus)
    for profile in nab.PROFILES:
        per = nab.file_results(raw, profile, corpus, thresholds[profile]["threshold"])
        s = nab.sweep(raw, profile, corpus)
        assert s.normalise(sum(r.total for r in per.values())) == pytest.approx(final[profile], abs=1e-6)
        assert sum(r.found + r.missed for r in per.values()) == corpus.n_windows


def test_blend_mixes_ours_with_a_published_detector(corpus: nab.NabCorpus) -> None:
    """bench/nab.py --blend NAME:W (the ceiling study in docs/benchmarks.md): (1 - W) x ours + W x theirs row by
    row, NAME:max the higher; a weight outside 0-1 is refused in one line."""
    from conftest import bench_module

    bench = bench_module("nab")
    art = nab.read_published(corpus.root, "ARTime", corpus)
    rnd = nab.read_published(corpus.root, "random", corpus)
    f = next(iter(art))
    np.testing.assert_allclose(bench.blend(rnd, corpus.root, "ARTime:1", corpus)[f], art[f])
    np.testing.assert_allclose(bench.blend(rnd, corpus.root, "ARTime:0.25", corpus)[f], 0.75 * rnd[f] + 0.25 * art[f])
    np.testing.assert_allclose(bench.blend(rnd, corpus.root, "ARTime:max", corpus)[f], np.maximum(rnd[f], art[f]))
    with pytest.raises(SystemExit, match="from 0 to 1"):
        bench.blend(rnd, corpus.root, "ARTime:1.5", corpus)
