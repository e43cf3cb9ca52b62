"""Metrics for labelled time series: event F1 as Orion reports it, point F1, AUC-PR and VUS-PR.

Two families answer two questions. Event F1 asks "did an alarm overlap each incident, and how many
alarms overlapped none?", the operator's view; it is Orion's ``contextual_f1_score(weighted=False)``
(``orion.evaluation.contextual._overlap_segment``), pooled over a data set's series the way Orion's
leaderboard does (``orion.results.get_f1_scores`` sums tp/fp/fn per data set before dividing). Point
F1 (at the detector's own threshold), AUC-PR (average precision) and VUS-PR (Paparrizos et al., VLDB
2022; TSB-AD's headline metric) judge per-row scores. VUS-PR is called from the ``tsb-ad`` package,
not rewritten, so our numbers are TSB-AD's.

Events are ``(start, end)`` row indices, both inclusive (Orion's convention). Orion pads every
interval to ``(start, end + 1)`` and calls two intervals overlapping when
``(a0 - b1) * (a1 - b0) < 0``; on inclusive integer intervals that is exactly "they share a row".
Orion works on timestamps; on a regular series with integer timestamps sharing a timestamp and
sharing a row are the same thing, so rows are used here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score

__all__ = [
    "Counts",
    "SeriesEval",
    "PooledEval",
    "label_events",
    "event_counts",
    "point_counts",
    "auc_pr",
    "vus_pr",
    "vus_window",
    "evaluate_series",
    "pool",
    "undefined",
]

Interval = tuple[int, int]

_NAN = float("nan")
# TSB-AD's get_metrics defaults: the 'opt' volume with 250 thresholds.
_VUS_VERSION = "opt"
_VUS_THRESHOLDS = 250
TSB_AD_INSTALL = "pip install 'normalcy[series-bench]' and pip install --no-deps tsb-ad==1.5"
"""How to get VUS-PR: tsb-ad is not in the extra (its metadata pins numpy<2 and pulls packages its metrics never
import), so it is installed on its own, without its dependencies (see pyproject.toml)."""
_TSB_AD_MISSING = f"VUS-PR needs the tsb-ad package: {TSB_AD_INSTALL}"


@dataclass(frozen=True)
class Counts:
    """True positives, false positives, false negatives; adding pools them (Orion sums before dividing)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else _NAN

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else _NAN

    @property
    def f1(self) -> float:
        """2PR/(P+R) written as 2tp/(2tp+fp+fn): the same wherever Orion's is defined, and 0 (where
        Orion's pandas division gives NaN) when nothing was found but something was expected or raised;
        NaN only when there was nothing to find and nothing was raised."""
        denom = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denom if denom else _NAN


def label_events(labels: np.ndarray | Sequence[int]) -> list[Interval]:
    """Runs of non-zero rows as inclusive ``(start, end)`` row indices, in order.

    Orion's ``from_list_points_labels`` with its default gap of 1: only consecutive rows merge.
    """
    y = np.asarray(labels).ravel() != 0
    if not y.any():
        return []
    edges = np.diff(np.concatenate(([False], y, [False])).astype(np.int8))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    return [(int(s), int(e)) for s, e in zip(starts, ends)]


def _as_array(events: Iterable[Interval], what: str) -> np.ndarray:
    arr = np.asarray(list(events), dtype=np.int64).reshape(-1, 2)
    if (arr[:, 1] < arr[:, 0]).any():
        raise ValueError(f"{what} events must have start <= end")
    return arr


def event_counts(expected: Iterable[Interval], observed: Iterable[Interval]) -> Counts:
    """Orion's overlap-segment confusion counts for one series.

    A labelled (expected) event is a true positive when at least one predicted (observed) event
    overlaps it, otherwise a false negative; every predicted event that overlaps no labelled event
    is a false positive. One predicted event overlapping two labelled ones makes two true positives,
    and two predicted events on one labelled event make one, as in Orion.
    """
    exp = _as_array(expected, "labelled")
    obs = _as_array(observed, "predicted")
    if len(exp) == 0 or len(obs) == 0:
        return Counts(0, len(obs), len(exp))
    # overlap[i, j]: labelled i and predicted j share a row.
    overlap = (exp[:, None, 0] <= obs[None, :, 1]) & (obs[None, :, 0] <= exp[:, None, 1])
    found = overlap.any(axis=1)
    useful = overlap.any(axis=0)
    return Counts(int(found.sum()), int((~useful).sum()), int((~found).sum()))


def point_counts(labels: np.ndarray, decisions: np.ndarray) -> Counts:
    """Row-level counts of decisions (1 = anomaly) against labels."""
    y = np.asarray(labels).ravel() != 0
    d = np.asarray(decisions).ravel() != 0
    if y.shape != d.shape:
        raise ValueError(f"labels ({y.size}) and decisions ({d.size}) differ in length")
    return Counts(int((y & d).sum()), int((~y & d).sum()), int((y & ~d).sum()))


def auc_pr(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision (scikit-learn's, which TSB-AD's AUC-PR also calls); NaN without both classes."""
    y = np.asarray(labels).ravel() != 0
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.size}) and scores ({s.size}) differ in length")
    if y.all() or not y.any():
        return _NAN
    return float(average_precision_score(y, s))


def vus_pr(labels: np.ndarray, scores: np.ndarray, window: int) -> float:
    """VUS-PR from the tsb-ad package, with the settings of TSB-AD's ``get_metrics``.

    ``window`` is the largest buffer around each labelled event; TSB-AD uses the series' period
    (:func:`vus_window`), the same for every method on a series. NaN without both classes.
    """
    try:
        from TSB_AD.evaluation.basic_metrics import generate_curve
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(_TSB_AD_MISSING) from err
    y = (np.asarray(labels).ravel() != 0).astype(int)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.size}) and scores ({s.size}) differ in length")
    if int(window) < 0:
        raise ValueError(f"VUS window must be >= 0, got {window}")
    if y.all() or not y.any():
        return _NAN
    return float(generate_curve(y, s, int(window), _VUS_VERSION, _VUS_THRESHOLDS)[-1])


def vus_window(values: np.ndarray) -> int:
    """TSB-AD's VUS buffer for a series: ``find_length_rank(first column, rank=1)``, as its benchmark scripts
    do (multivariate series use their first column). Computed by ``normalcy.series.windows.column_period``,
    TSB-AD's find_length without statsmodels (the same window on every NAB and ASD series; a test checks it
    against TSB-AD's own function), so VUS-PR needs tsb-ad alone."""
    from normalcy.series.windows import PERIOD_FALLBACK, column_period

    x = np.asarray(values, dtype=np.float64)
    period = column_period(x.reshape(len(x), -1)[:, 0])
    return PERIOD_FALLBACK if period is None else int(period)


@dataclass(frozen=True)
class SeriesEval:
    """One series' counts and threshold-free scores (NaN where the series has one class only)."""

    name: str
    rows: int
    events: Counts
    points: Counts
    auc_pr: float
    vus_pr: float


@dataclass(frozen=True)
class PooledEval:
    """A data set: event and point counts summed over series (Orion's pooling); AUC-PR and VUS-PR
    averaged over the series that have both classes (TSB-AD's averaging, since scores of different
    series are not on one scale)."""

    series: int
    events: Counts
    points: Counts
    auc_pr: float
    vus_pr: float

    @property
    def event_f1(self) -> float:
        return self.events.f1

    @property
    def point_f1(self) -> float:
        return self.points.f1

    def as_dict(self) -> dict[str, float | int]:
        return {
            "series": self.series,
            "event_f1": self.event_f1, "event_tp": self.events.tp, "event_fp": self.events.fp,
            "event_fn": self.events.fn,
            "point_f1": self.point_f1, "auc_pr": self.auc_pr, "vus_pr": self.vus_pr,
        }


def evaluate_series(
    labels: np.ndarray,
    scores: np.ndarray,
    decisions: np.ndarray,
    *,
    predicted: Iterable[Interval] | None = None,
    window: int | None = None,
    name: str = "",
) -> SeriesEval:
    """Every metric for one series.

    ``predicted``: the detector's events (e.g. ``series.events`` merged across short gaps); default
    the runs of ``decisions``. ``window``: the VUS-PR buffer (:func:`vus_window`); None skips VUS-PR
    (NaN), so evaluation works without tsb-ad.
    """
    y = np.asarray(labels).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    d = np.asarray(decisions).ravel()
    if not (y.shape == s.shape == d.shape):
        raise ValueError(f"{name or 'series'}: labels ({y.size}), scores ({s.size}) and decisions "
                         f"({d.size}) differ in length")
    if not np.isfinite(s).all():
        raise ValueError(f"{name or 'series'}: scores contain NaN or infinity")
    events = label_events(d) if predicted is None else list(predicted)
    return SeriesEval(
        name=name,
        rows=int(y.size),
        events=event_counts(label_events(y), events),
        points=point_counts(y, d),
        auc_pr=auc_pr(y, s),
        vus_pr=_NAN if window is None else vus_pr(y, s, window),
    )


def _mean(values: Iterable[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else _NAN


def pool(results: Sequence[SeriesEval]) -> PooledEval:
    """Pool a data set's series: counts summed, AUC-PR and VUS-PR averaged where defined."""
    return PooledEval(
        series=len(results),
        events=sum((r.events for r in results), Counts()),
        points=sum((r.points for r in results), Counts()),
        auc_pr=_mean(r.auc_pr for r in results),
        vus_pr=_mean(r.vus_pr for r in results),
    )


def undefined(results: Sequence[SeriesEval], pooled: PooledEval) -> list[str]:
    """What cannot be measured and why, one sentence each: a series labelled all 0 or all 1 has no AUC-PR or
    VUS-PR (left out of the averages), and a pooled count with nothing to divide by has no precision, recall or
    F1. They were null in the JSON ("–" in the table) without a word, which reads as a failure of the detector."""
    said = []
    for r in results:
        positives = r.points.tp + r.points.fn
        if positives == 0:
            said.append(f"{r.name}: no test row is labelled 1: its AUC-PR and VUS-PR are undefined (null, left out of "
                        "the averages), and each of its alarms is a false positive")
        elif positives == r.rows:
            said.append(f"{r.name}: every test row is labelled 1: its AUC-PR and VUS-PR are undefined (null, left "
                        "out of the averages)")
    if results and math.isnan(pooled.auc_pr):
        said.append("AUC-PR and VUS-PR are undefined (null): no series has both normal and anomalous rows")
    for kind, counts, what in (("event", pooled.events, "event was predicted"),
                               ("point", pooled.points, "row was predicted anomalous")):
        if math.isnan(counts.precision):
            said.append(f"{kind} precision is undefined (null): no {what}")
        if math.isnan(counts.recall):
            said.append(f"{kind} recall is undefined (null): no row is labelled 1")
        if math.isnan(counts.f1):
            said.append(f"{kind} F1 is undefined (null): nothing labelled 1 and nothing predicted")
    return said
