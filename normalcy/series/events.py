"""Anomalous events: runs of anomalous rows merged into what a person would call one incident.

An operator wants "the disk of server 3 misbehaved from 10:02 to 10:40", not forty flagged rows. Rows whose
decision is 1 and that follow each other form one event; events separated by fewer than ``gap`` rows merge
(a score that dips under the threshold for a moment does not split an incident). Each event names the
metrics that drove it: the top columns by contributions summed over its anomalous rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from normalcy.series.dynamic import dynamic_epsilon

TOP_METRICS = 3
# Orion's pipelines (AER, LSTM-DT) prune within windows a third of the series long, moved by a tenth of a window,
# and keep an event that survives in any of them: against the whole of a long series, the peaks of many
# incidents form a smooth staircase and every one of them was pruned
PRUNE_WINDOW = 0.33
PRUNE_STEP = 0.1
PADDING = 50  # Orion's anomaly_padding: rows each score above the local threshold is widened by, either side;
# at most a 20th of the window (telemanom's error buffer): 50 rows either side of one row would cover half of a
# short series' window, which Hundman's guardrail refuses, and nothing there could ever be kept


@dataclass
class Event:
    """One anomalous event; times as in the series (epoch seconds, or row numbers)."""

    start: float
    end: float
    peak_time: float
    peak_score: float
    metrics: list[str]  # up to TOP_METRICS columns, largest summed contribution first
    first: int  # row index of the first row (in the scored series)
    last: int  # row index of the last row, inclusive


def spans(decisions: np.ndarray, gap: int = 0) -> list[tuple[int, int]]:
    """(first, last) row indices of the runs of decision-1 rows, runs fewer than ``gap`` rows apart merged."""
    flagged = np.flatnonzero(np.asarray(decisions) != 0)
    if not flagged.size:
        return []
    # a new span starts where the rows between two flagged rows number at least gap (and at least 1)
    breaks = np.flatnonzero(np.diff(flagged) - 1 >= max(gap, 1))
    starts = np.concatenate([[flagged[0]], flagged[breaks + 1]])
    ends = np.concatenate([flagged[breaks], [flagged[-1]]])
    return [(int(a), int(b)) for a, b in zip(starts, ends)]


def prune(scores: np.ndarray, found: Sequence[tuple[int, int]], fraction: float) -> list[int]:
    """The indices of the events (first, last row) that survive Hundman et al.'s pruning (KDD 2018, the NASA
    telemetry paper; Orion's find_anomalies does the same). Sort the events' peaks from the highest down and
    append the highest score outside every event; an event is kept when some step down at or below it, from
    one peak to the next lower one, is at least ``fraction`` of the higher: noise that crosses the threshold
    in a long series forms a smooth staircase of peaks with the normal scores, a real anomaly stands above
    it. Label-free, but relative to the series scored: an offline rule, not a stream's."""
    if not found or fraction <= 0:
        return list(range(len(found)))
    scores = np.asarray(scores, dtype=np.float64)
    peaks = np.array([scores[a:b + 1].max() for a, b in found])
    outside = np.ones(len(scores), bool)
    for a, b in found:
        outside[a:b + 1] = False
    order = np.argsort(-peaks, kind="stable")
    steps = np.append(peaks[order], scores[outside].max() if outside.any() else 0.0)
    drop = (steps[:-1] - steps[1:]) / np.maximum(steps[:-1], 1e-12)
    big = np.flatnonzero(drop >= fraction)
    return sorted(int(i) for i in order[:big[-1] + 1]) if big.size else []


def orion_windows(n: int) -> list[tuple[int, int]]:
    """(start, end) of Orion's windows over n rows: PRUNE_WINDOW of the series long, PRUNE_STEP of a window
    apart, the last one reaching the end."""
    size = int(np.ceil(n * PRUNE_WINDOW))
    step = max(1, int(np.ceil(size * PRUNE_STEP)))
    out = [(0, min(size, n))]
    while out[-1][1] < n:
        start = out[-1][0] + step
        out.append((start, min(start + size, n)))
    return out


def prune_windows(scores: np.ndarray, found: Sequence[tuple[int, int]], fraction: float) -> list[int]:
    """``prune`` as Orion applies it: within ``orion_windows`` (events clipped to each window, the highest
    score outside them taken in the window); an event is kept when it survives in some window. A long series
    (a server's month of metrics) has many incidents whose peaks, all together, rise in steps too small to keep
    any; a third of it at a time has few."""
    if not found or fraction <= 0 or len(scores) == 0:
        return list(range(len(found)))
    scores = np.asarray(scores)
    kept: set[int] = set()
    for start, end in orion_windows(len(scores)):
        inside = [i for i, (a, b) in enumerate(found) if a < end and b >= start]
        if inside:
            local = [(max(found[i][0], start) - start, min(found[i][1], end - 1) - start) for i in inside]
            kept.update(inside[j] for j in prune(scores[start:end], local, fraction))
    return sorted(kept)


def local_events(scores: np.ndarray, found: Sequence[tuple[int, int]]) -> list[int]:
    """The indices of the events whose peak reaches the local dynamic threshold (Hundman et al.'s epsilon,
    ``dynamic.dynamic_epsilon``) of some window holding it (``orion_windows``): Orion's find_anomalies keeps
    only what stands out of its own neighbourhood.
    A threshold set on training data is crossed everywhere once a test series drifts above it; what is still
    anomalous then is what rises above the rest of the series around it."""
    n = len(scores)
    if not found or n == 0:
        return []
    scores = np.asarray(scores, dtype=np.float64)
    windows = orion_windows(n)
    pad = min(PADDING, (windows[0][1] - windows[0][0]) // 20)
    above = np.zeros(n, bool)
    for start, end in windows:
        window = scores[start:end]
        # relaxed: where no threshold passes Hundman's guardrails (more than five sequences at every z: many
        # incidents in one window), the best one that leaves something above it; none: keep the window's events
        above[start:end] |= window >= dynamic_epsilon(window, pad, relaxed=True)
    return [i for i, (a, b) in enumerate(found) if above[a:b + 1].any()]


def pruned(scores: np.ndarray, decisions: np.ndarray, found: Sequence[tuple[int, int]],
           fraction: float) -> tuple[list[tuple[int, int]], np.ndarray]:
    """The events (first, last row) that ``prune`` keeps and the decisions that go with them: 1 only inside a
    kept event, where they were 1. Where the whole series would keep none, ``prune_windows`` decides: a series
    with many alike incidents lost them all (event F1 0 on a synthetic 28,000-row server series whose events
    AUC-PR ranks at 0.88), while on short series with one anomaly the whole-series rule drops more noise.
    Then, as Orion's find_anomalies, a kept event must also reach the local dynamic threshold somewhere
    (``local_events``). ``fraction`` 0: every event, unpruned."""
    kept = [found[i] for i in (prune(scores, found, fraction) or prune_windows(scores, found, fraction))]
    if fraction > 0:  # the same offline rule: relative to the series scored (``--prune 0`` keeps every event)
        kept = [kept[i] for i in local_events(scores, kept)]
    if len(kept) == len(found):
        return list(found), np.asarray(decisions)
    out = np.zeros_like(np.asarray(decisions))
    for a, b in kept:
        out[a:b + 1] = np.asarray(decisions)[a:b + 1]
    return kept, out


def top_metrics(total: np.ndarray, columns: Sequence[str]) -> list[str]:
    """The TOP_METRICS columns with the largest (d,) contributions ``total``, largest first, none that added
    nothing: the metrics an event or an alarm names."""
    order = np.argsort(-total, kind="stable")[:TOP_METRICS]
    return [str(columns[j]) for j in order if total[j] > 0]


def events(time: np.ndarray, scores: np.ndarray, decisions: np.ndarray, contributions: np.ndarray | None,
           columns: Sequence[str], gap: int = 0) -> list[Event]:
    """The events of a scored series (``gap``: a detector's ``gap_`` by convention). An event's metrics are
    those of its anomalous rows: the rows under the threshold between them (a merged event may hold a hundred)
    add every metric's normal noise, which outweighed a weak anomaly's own metric (an autoencoder's event of 3
    anomalous rows in 66, a frequency change in m3, named m1 first)."""
    time, scores = np.asarray(time), np.asarray(scores, dtype=np.float64)
    flagged = np.asarray(decisions) != 0
    out = []
    for a, b in spans(decisions, gap):
        peak = a + int(np.argmax(scores[a:b + 1]))
        metrics: list[str] = []
        if contributions is not None:
            rows = np.asarray(contributions[a:b + 1], dtype=np.float64)[flagged[a:b + 1]]
            metrics = top_metrics(rows.sum(axis=0), columns)
        out.append(Event(float(time[a]), float(time[b]), float(time[peak]), float(scores[peak]), metrics, a, b))
    return out
