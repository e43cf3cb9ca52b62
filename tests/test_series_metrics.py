"""Series metrics: event F1 (Orion's overlap rule, pooled counts), point F1, AUC-PR, VUS-PR (tsb-ad).

Expected values below were worked out by hand; the comments show the working.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from normalcy.evaluation.series_metrics import (
    Counts,
    auc_pr,
    evaluate_series,
    event_counts,
    label_events,
    point_counts,
    pool,
    undefined,
    vus_pr,
    vus_window,
)


def test_label_events_runs_inclusive() -> None:
    #            0  1  2  3  4  5  6  7
    labels = [0, 1, 1, 0, 0, 1, 0, 1]
    assert label_events(labels) == [(1, 2), (5, 5), (7, 7)]
    assert label_events([1, 1, 1]) == [(0, 2)]
    assert label_events(np.zeros(5)) == []


def test_one_shared_row_overlaps_adjacent_does_not() -> None:
    # (10..20) and (20..25) share row 20: found, and the prediction is not a false positive.
    assert event_counts([(10, 20)], [(20, 25)]) == Counts(tp=1, fp=0, fn=0)
    # (21..25) starts right after 20: Orion's padded intervals (10,21) and (21,26) give a product of 0,
    # not < 0, so no overlap: one miss and one false alarm.
    assert event_counts([(10, 20)], [(21, 25)]) == Counts(tp=0, fp=1, fn=1)
    # A one-row prediction inside a long event.
    assert event_counts([(10, 20)], [(15, 15)]) == Counts(tp=1, fp=0, fn=0)


def test_overlap_counts_by_hand() -> None:
    expected = [(10, 20), (50, 60), (100, 110)]
    observed = [(5, 12), (15, 18), (30, 40), (58, 70), (200, 210)]
    # (10,20) is hit by (5,12) and (15,18): one tp, neither prediction is a false alarm.
    # (50,60) is hit by (58,70): tp.  (100,110) is hit by nothing: fn.
    # (30,40) and (200,210) overlap nothing: 2 fp.
    c = event_counts(expected, observed)
    assert c == Counts(tp=2, fp=2, fn=1)
    assert c.precision == pytest.approx(2 / 4)
    assert c.recall == pytest.approx(2 / 3)
    assert c.f1 == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))  # 4/7 = 2PR/(P+R) with P=1/2, R=2/3
    assert c.f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


def test_one_prediction_over_two_events_finds_both() -> None:
    assert event_counts([(0, 5), (10, 15)], [(3, 12)]) == Counts(tp=2, fp=0, fn=0)


def test_no_overlap_and_empty_sides() -> None:
    assert event_counts([(0, 5)], [(6, 9), (20, 30)]) == Counts(tp=0, fp=2, fn=1)
    assert event_counts([], [(1, 2)]) == Counts(tp=0, fp=1, fn=0)
    assert event_counts([(1, 2)], []) == Counts(tp=0, fp=0, fn=1)
    assert event_counts([(1, 2)], []).f1 == 0.0
    assert math.isnan(event_counts([], []).f1)


def test_event_counts_agree_with_shared_rows_on_random_cases() -> None:
    """An independent statement of the rule: two inclusive intervals overlap iff they share a row."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        def draw(k: int) -> list[tuple[int, int]]:
            starts = rng.integers(0, 100, size=k)
            return [(int(s), int(s + rng.integers(0, 8))) for s in starts]
        exp, obs = draw(int(rng.integers(0, 5))), draw(int(rng.integers(0, 6)))
        rows = lambda iv: set(range(iv[0], iv[1] + 1))  # noqa: E731
        tp = sum(any(rows(e) & rows(o) for o in obs) for e in exp)
        fp = sum(not any(rows(e) & rows(o) for e in exp) for o in obs)
        assert event_counts(exp, obs) == Counts(tp=tp, fp=fp, fn=len(exp) - tp)


def test_pooled_counts_not_mean_of_f1() -> None:
    # Series A: labelled events (10,20), (50,60); predictions (12,14), (30,31), (40,41)
    #   -> tp 1, fp 2, fn 1.
    # Series B: labelled (5,8); predictions (0,1) -> tp 0, fp 1, fn 1.
    la = np.zeros(80, dtype=np.int8)
    la[10:21] = 1
    la[50:61] = 1
    da = np.zeros(80, dtype=np.int8)
    da[12:15] = 1
    da[30:32] = 1
    da[40:42] = 1
    lb = np.zeros(20, dtype=np.int8)
    lb[5:9] = 1
    db = np.zeros(20, dtype=np.int8)
    db[0:2] = 1
    a = evaluate_series(la, da.astype(float), da, name="a")
    b = evaluate_series(lb, db.astype(float), db, name="b")
    assert a.events == Counts(1, 2, 1)
    assert b.events == Counts(0, 1, 1)
    pooled = pool([a, b])
    assert pooled.events == Counts(1, 3, 2)
    # Pooled: 2*1 / (2*1 + 3 + 2) = 2/7, not the mean of 2/5 and 0.
    assert pooled.event_f1 == pytest.approx(2 / 7)
    # Points, A: labelled rows 22, predicted 7, of which 3 inside (12..14) -> tp 3, fp 4, fn 19.
    #         B: labelled 4, predicted 2, none inside -> tp 0, fp 2, fn 4.
    assert a.points == Counts(3, 4, 19)
    assert b.points == Counts(0, 2, 4)
    assert pooled.point_f1 == pytest.approx(2 * 3 / (2 * 3 + 6 + 23))
    assert math.isnan(pooled.vus_pr)  # no window given: VUS-PR skipped


def test_predicted_events_override_decision_runs() -> None:
    # Decisions 1 at rows 2 and 4 are two runs; a detector that merged them into (2,4) raised one event.
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 0])
    decisions = np.array([0, 0, 1, 0, 1, 0, 0, 0, 0, 0])
    assert evaluate_series(labels, decisions.astype(float), decisions).events == Counts(0, 2, 1)
    merged = evaluate_series(labels, decisions.astype(float), decisions, predicted=[(2, 4)])
    assert merged.events == Counts(0, 1, 1)


def test_point_counts_and_f1_by_hand() -> None:
    labels = np.array([0, 1, 1, 1, 0, 0])
    decisions = np.array([1, 1, 0, 0, 0, 1])
    c = point_counts(labels, decisions)
    assert c == Counts(tp=1, fp=2, fn=2)
    assert c.f1 == pytest.approx(1 / 3)  # P = 1/3, R = 1/3
    with pytest.raises(ValueError, match="differ in length"):
        point_counts(labels, decisions[:-1])


def test_auc_pr_by_hand() -> None:
    # Ranked by score: anomaly (P=1, R=1/2), normal, anomaly (P=2/3, R=1), normal.
    # AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    assert auc_pr(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1])) == pytest.approx(5 / 6)
    assert math.isnan(auc_pr(np.zeros(4), np.arange(4.0)))


def _planted(n: int = 2000) -> np.ndarray:
    labels = np.zeros(n, dtype=np.int8)
    labels[400:430] = 1
    labels[1200:1260] = 1
    return labels


def test_vus_pr_perfect_and_random() -> None:
    pytest.importorskip("TSB_AD")
    labels = _planted()
    assert vus_pr(labels, labels.astype(float), window=50) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    random = rng.random(labels.size)
    v = vus_pr(labels, random, window=50)
    # 90 of 2000 rows labelled (4.5 %); the 50-row buffers add weight around them, so a random score
    # sits near the (buffered) positive rate, far below the perfect score.
    assert 0.0 < v < 0.2
    # A score that is high inside the events but noisy: between the two.
    noisy = random * 0.5 + labels * 0.6
    assert v < vus_pr(labels, noisy, window=50) <= 1.0
    assert math.isnan(vus_pr(np.zeros(100), random[:100], window=10))


def _first_column(path, column: str) -> np.ndarray:
    with path.open() as f:
        return np.array([float(r[column]) for r in csv.DictReader(f)]).reshape(-1, 1)


def test_vus_window_is_tsb_ads(shared_data) -> None:
    """vus_window computes TSB-AD's find_length_rank without statsmodels: the same window as TSB-AD's."""
    pytest.importorskip("statsmodels")
    slidingWindows = pytest.importorskip("TSB_AD.utils.slidingWindows")
    t = np.arange(3000)
    series = [
        np.sin(2 * np.pi * t / 63.0).reshape(-1, 1),  # a clear period
        np.ones((500, 1)),  # constant: TSB-AD's fallback, 125
        np.random.default_rng(0).random((800, 1)),  # noise
        _first_column(shared_data / "asd" / "omi-1" / "test.csv", "m0"),
        _first_column(shared_data / "nab" / "data" / "realTweets" / "Twitter_volume_AAPL.csv", "value"),
        _first_column(shared_data / "nab" / "data" / "artificialWithAnomaly" / "art_daily_jumpsup.csv", "value"),
    ]
    import warnings

    for x in series:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = int(slidingWindows.find_length_rank(x, rank=1))
        assert vus_window(x) == expected


def test_vus_pr_on_real_series(shared_data) -> None:
    """ASD omi-1: its own labels as the score give VUS-PR 1 at TSB-AD's window; shifted labels give less."""
    pytest.importorskip("TSB_AD")
    path = shared_data / "asd" / "omi-1" / "test.csv"
    with path.open() as f:
        rows = list(csv.DictReader(f))
    labels = np.array([int(r["label"]) for r in rows], dtype=np.int8)
    values = np.array([[float(r["m0"]), float(r["m1"])] for r in rows])
    window = vus_window(values)
    assert 3 <= window <= 303
    ev = evaluate_series(labels, labels.astype(float), labels, window=window, name="omi-1")
    assert ev.vus_pr == pytest.approx(1.0)
    assert ev.auc_pr == pytest.approx(1.0)
    assert ev.events.f1 == 1.0 and ev.points.f1 == 1.0
    shifted = np.roll(labels, 3 * window)
    worse = evaluate_series(labels, shifted.astype(float), shifted, window=window)
    assert worse.vus_pr < 0.9


def test_what_is_undefined_is_said() -> None:
    """Labels all 0 or all 1 gave NaN (null) AUC-PR and recall without a word."""
    scores = np.linspace(0, 1, 10)
    none = evaluate_series(np.zeros(10), scores, np.zeros(10), name="none")
    every = evaluate_series(np.ones(10), scores, np.zeros(10), name="every")
    said = undefined([none, every], pool([none, every]))
    assert said == [
        "none: no test row is labelled 1: its AUC-PR and VUS-PR are undefined (null, left out of the averages), and "
        "each of its alarms is a false positive",
        "every: every test row is labelled 1: its AUC-PR and VUS-PR are undefined (null, left out of the averages)",
        "AUC-PR and VUS-PR are undefined (null): no series has both normal and anomalous rows",
        "event precision is undefined (null): no event was predicted",
        "point precision is undefined (null): no row was predicted anomalous",
    ]
    assert undefined([none], pool([none]))[-2:] == ["point recall is undefined (null): no row is labelled 1",
                                                    "point F1 is undefined (null): nothing labelled 1 and nothing "
                                                    "predicted"]
    both = evaluate_series(np.array([0, 1] * 5), scores, np.array([0, 1] * 5), name="both")
    assert undefined([both], pool([both])) == []
