"""Online scoring for a monitoring loop: each row scored from the past, learned, calibrated to [0, 1], and
one alarm per incident.

A fitted detector scores a row from the rows before it; ``Stream`` adds what a loop over live data needs
and what NAB (the Numenta Anomaly Benchmark) asks of a streaming detector:

* learning: normal behaviour drifts, so the detector learns the rows it sees (every row: an unsupervised
  stream has no labels to leave anomalies out). The score's calibration follows every row at once; the
  detector itself (``partial_fit``, the costly part) learns ``learn_every`` rows at a time, each in order
  with its own past. So a row is scored by the model that has learned every row up to the last multiple
  of ``learn_every`` before it, whether rows come one by one (``update``) or in a batch (``run``, much
  faster, the same numbers);
* calibration: an anomaly score in [0, 1] that means the same on every series: the decades of tail
  probability of the detector's score under its recent scores (Numenta's anomaly likelihood; for
  ``auto``, per member, combined by ``AutoDetector.combine``), divided by ``CAP_DECADES`` (10): 0.3 means
  "as improbable as one normal row in a thousand";
* missing values: a sensor drops out, and a monitoring loop must not stop for it. A NaN or infinite value
  is held at its column's last value (the training median before any row): the offline reader interpolates
  it, which reads the next value, a row the stream has not seen, so a replay of a file (``predict --stream``)
  holds it here too; ``filled`` counts them and the first is logged;
* warm-up: a plain detector's calibration is learned from the stream's own rows, so its first
  MIN_CALIBRATION rows score 0 (a mean and spread of a handful of rows would page on the stream's second
  row); ``auto``'s is set on held-out training rows and needs none;
* one alarm per incident: a row alarms when its score reaches ``alarm`` and no alarm was raised in the
  ``quiet`` rows before it; rows at or above ``alarm`` inside a quiet period are reported near 0
  (``reported``), since NAB counts only the first detection in a window and charges every other one,
  and an operator wants one page per incident.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from normalcy.errors import InputError, shortened
from normalcy.series.auto import CAP_DECADES, AutoDetector, RunningTail, learn_block
from normalcy.series.base import (MAX_Z, MIN_CALIBRATION, SeriesDetector, StreamState, by_name,
                                  refuse_non_finite, refuse_non_measurements)
from normalcy.vectors.tables import cell_number

log = logging.getLogger("normalcy")

QUIET_FACTOR = 1e-3  # a repeated alarm inside a quiet period is reported at this fraction of its score
HELD = "held at their column's last value"  # what a stream does with missing values: watch and replay say it so


@dataclass
class StreamScores:
    """Scores of the rows given to ``Stream.run``, one per row."""

    score: np.ndarray  # (n,) calibrated anomaly score in [0, 1]
    reported: np.ndarray  # (n,) the score, repeated alarms inside a quiet period brought near 0
    alarm: np.ndarray  # (n,) int8: 1 where an alarm is raised
    contributions: np.ndarray  # (n, d) each metric's share of the score (they sum to it): what drove an alarm


class Stream:
    """A fitted detector run online: ``update(row)`` or ``run(rows)``; see the module docstring.

    ``past``: rows that came before the first one given (the end of the training data), the context of
    the first scores. A plain detector's scores are calibrated here from the rows it sees (0 for the
    first MIN_CALIBRATION); ``auto`` brings its own calibration, set on held-out training rows.
    ``resume``: a model saved by a watch (``detector.stream_state``) goes on where that watch stopped (its
    recent rows, its calibration) unless ``past`` is given."""

    def __init__(self, detector: SeriesDetector, past: np.ndarray | None = None, *, learn: bool = True,
                 learn_every: int = 128, alarm: float = 0.3, quiet: int = 100, memory: int = 8640,
                 resume: bool = True) -> None:
        detector._check_fitted()
        # a whole learn_every and memory >= 1 too: learn_every=2.5 was a TypeError and memory=0 a ZeroDivisionError
        # at the first row (a negative memory was taken)
        if (not isinstance(learn_every, (int, np.integer)) or learn_every < 1 or quiet < 0 or memory < 1
                or not 0 < alarm <= 1):
            raise InputError("stream: a whole learn_every >= 1, quiet >= 0, memory >= 1 and 0 < alarm <= 1 are "
                             f"required (got learn_every={learn_every!r}, quiet={quiet!r}, memory={memory!r}, "
                             f"alarm={alarm!r})")
        self.det, self.learning, self.every, self.alarm_level, self.quiet = detector, learn, learn_every, alarm, quiet
        self.auto = isinstance(detector, AutoDetector)
        self.tail = detector.tail if self.auto else RunningTail(np.zeros(1), np.ones(1), 0, memory)
        self.ctx = detector.context
        self.d = len(detector.columns_)
        self._buf, self._n = np.empty((self.ctx + self.every + 1, self.d)), 0  # the rows, with room to grow
        self.rows = np.empty((0, self.d))  # standardised: the context of the oldest unlearned row, and after
        self.pending = 0  # rows not yet learned by the detector: the last `pending` of self.rows
        self.early = 0  # rows of the current block of learn_every that ``flush`` learned before its end
        self.last_alarm: int | None = None
        self.t = 0  # rows seen
        self.filled = 0  # missing or non-finite values held at their column's last value
        self.last_raw = np.array(detector.mean_, dtype=np.float64)  # the last row's values (the training median)
        self.last_contributions: np.ndarray | None = None  # update's: each metric's share, on an alarm
        if past is not None and len(past):
            Z = self._standardised(past)
            if self.ctx > 1:
                self.rows = Z[-(self.ctx - 1):]
        elif resume and detector.stream_state is not None:
            self._resume(detector.stream_state, memory)

    def _resume(self, saved: StreamState, memory: int) -> None:
        """Go on where the stream that saved the model stopped (``state``)."""
        self.rows = saved.rows[max(0, len(saved.rows) - self.ctx + 1):] if self.ctx > 1 else saved.rows[:0]
        self.last_raw = saved.last_raw.copy()
        self.t, self.last_alarm, self.early = saved.t, saved.last_alarm, saved.early % self.every
        if not self.auto and saved.calib is not None:
            mean, var, count = saved.calib
            self.tail = RunningTail(mean, var, min(count, memory), memory)

    def state(self) -> StreamState:
        """Where this stream stands, for ``detector.stream_state`` before the model is saved (the rows not yet
        learned are learned first: ``flush``)."""
        self.flush()
        calib = None if self.auto else (self.tail.mean.copy(), self.tail.var.copy(), self.tail.count)
        return StreamState(self.rows.copy(), self.last_raw.copy(), self.t, self.last_alarm, self.early, calib)

    @property
    def rows(self) -> np.ndarray:
        """The rows kept (a view): the context of the oldest unlearned row, and the rows after it."""
        return self._buf[:self._n]

    @rows.setter
    def rows(self, value: np.ndarray) -> None:
        value = np.array(value, dtype=np.float64).reshape(-1, self.d)  # a copy: it may be a view of the buffer
        if len(value) > len(self._buf):
            self._buf = np.empty((2 * len(value), self.d))
        self._buf[:len(value)], self._n = value, len(value)

    def _append(self, z: np.ndarray) -> None:
        """One more row, in place (a stream's row: no copy of the rows before it)."""
        if self._n == len(self._buf):
            self._buf = np.concatenate([self._buf, np.empty_like(self._buf)])
        self._buf[self._n] = z
        self._n += 1

    def _raw_last(self, recent: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """(M,) raw scores of the last row of ``recent`` (at most ctx rows), and the members' (d,)
        contributions."""
        if self.auto:
            raw, contribs = self.det._last_raw(recent)
        else:
            c = np.asarray(self.det._score_last(recent), dtype=np.float64)
            raw, contribs = np.array([float(c.sum())]), [c]
        refuse_non_finite(self.det.name, raw.sum(keepdims=True), self.t)  # one row: (M,) are members
        return raw, contribs

    def _raw(self, Z: np.ndarray, first: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """(n - first, M) raw scores of rows Z[first:] (each from the rows before it in Z), and the members'
        (n - first, d) contributions."""
        if self.auto:
            raw, contribs = self.det._raw(self.det.members, Z, first)
        else:
            c = np.asarray(self.det._score_from(Z, first), dtype=np.float64)
            raw, contribs = c.sum(axis=1)[:, None], [c]
        refuse_non_finite(self.det.name, raw.sum(axis=1), self.t)
        return raw, contribs

    def _calibrated(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n,) scores in [0, 1] of (n, M) raw ones, the calibration following each row (when learning), and
        the (n, M) decades they come from."""
        seen = self.tail.count
        # a plain detector's calibration has nothing but the stream's own scores, so it follows them even when
        # the detector learns nothing (else it would never leave its warm-up: every score 0)
        dec = self.tail.follow(raw) if self.learning or not self.auto else self.tail.decades(raw)
        if not self.auto:  # a plain detector's calibration starts from the stream's own rows: none before
            dec = dec * (seen + np.arange(len(dec)) >= MIN_CALIBRATION)[:, None]  # it has seen a few (warm-up)
        return np.minimum((self.det.combine(dec) if self.auto else dec[:, 0]) / CAP_DECADES, 1.0), dec

    def _shares(self, score: np.ndarray, dec: np.ndarray, contribs: list[np.ndarray]) -> np.ndarray:
        """(n, d) the scores split over the metrics as the members' contributions split them (``auto``: each
        member weighted as ``combine`` weighs it)."""
        parts = self.det._combine(dec, contribs) if self.auto else contribs[0]
        total = parts.sum(axis=1, keepdims=True)
        share = np.divide(parts, total, out=np.full_like(parts, 1.0 / parts.shape[1]), where=total > 0)
        return share * score[:, None]

    def _learn(self) -> None:
        """The detector learns the pending rows, in order, each with its own past."""
        first = len(self.rows) - self.pending
        if self.learning:
            if self.auto:
                self.det.learn_rows(self.rows, first)
            elif self.det.learns_online:
                learn_block(self.det, self.rows, first)
        self.pending = self.early = 0
        self.rows = self.rows[max(0, len(self.rows) - self.ctx + 1):] if self.ctx > 1 else self.rows[:0]

    def held(self, A: np.ndarray) -> np.ndarray:
        """Rows with each missing or non-finite value replaced by its column's last value (a copy if any): the one
        rule of ``update``, ``run`` and a file's replay (``runs.replay_series``), which then agree row by row."""
        bad = ~np.isfinite(A)
        if bad.any():
            A = np.array(A, dtype=np.float64)
            if not self.filled:
                i, j = np.argwhere(bad)[0]
                # the column by name: "column 0" of a model of 1,000 metrics (or of a watch's header) named none;
                # the row from 1, as the reader's notes and a spreadsheet number data rows (it said row 0 for row 1)
                log.warning("stream: a missing, non-finite or text value (row %d, column %r) is held at the column's last "
                            "value, as every later one will be (Stream.filled counts them)", self.t + int(i) + 1,
                            shortened(str(self.det.columns_[int(j)])))
            self.filled += int(bad.sum())
            prev = self.last_raw
            for i in np.flatnonzero(bad.any(axis=1)):
                if i:
                    prev = A[i - 1]
                A[i, bad[i]] = prev[bad[i]]
        if len(A):
            self.last_raw = np.array(A[-1], dtype=np.float64)
        return A

    def _standardised(self, values: np.ndarray) -> np.ndarray:
        """Rows as the detector sees them: missing values held (``held``), then standardised."""
        return self.det.standardise(self.held(_matrix(values, self.det.columns_)))

    def _report(self, score: float) -> tuple[float, int]:
        """(reported score, alarm) of the current row (self.t), the quiet period applied."""
        if score < self.alarm_level:
            return score, 0
        if self.last_alarm is not None and self.t - self.last_alarm <= self.quiet:
            return score * QUIET_FACTOR, 0
        self.last_alarm = self.t
        return score, 1

    def flush(self) -> None:
        """Learn the rows scored but not yet learned (the detector learns ``learn_every`` at a time): before
        the detector is saved, so that it has learned every row the stream saw. The next block still ends where
        it would have (``early``), so that a stream resumed from the saved model learns as this one would."""
        if self.pending:
            early = self.early + self.pending
            self._learn()
            self.early = early

    def learn(self, values: np.ndarray) -> None:
        """Learn rows as normal without scoring them: rows the calibration has already seen (``auto``'s
        held-out training rows), which the detector itself has not learned yet."""
        Z = self._standardised(values)
        self.rows = np.vstack([self.rows, Z])
        self.pending += len(Z)
        self._learn()

    def update(self, x: np.ndarray) -> float:
        """Score one row (d values, in the model's column order), then learn it; its reported score.
        (``self.last``: its score, reported score and alarm; ``self.last_contributions``: on a row that
        raises an alarm, the (d,) share of each metric in its score, as ``run`` splits it; else None.)"""
        a = _numbers(x, self.det.columns_)
        z = (a - self.det.mean_) / self.det.scale_ if a.shape == (self.d,) else None
        if z is not None and np.abs(z).max() <= MAX_Z:  # the common row (finite, in range) in one check
            self.last_raw = a.copy()
        else:  # the rules of held and _row, one at a time
            z = self.det._row(self.held(self.det.row_values(a)[None])[0])
        self._append(z)
        raw, contribs = self._raw_last(self._buf[max(0, self._n - self.ctx):self._n])
        scores, dec = self._calibrated(raw[None])
        score = float(scores[0])
        reported, alarm = self._report(score)
        self.last_contributions = self._shares(scores, dec, [c[None] for c in contribs])[0] if alarm else None
        self.t += 1
        self.pending += 1
        if self.early + self.pending == self.every:
            self._learn()
        self.last = (score, reported, alarm)
        return reported

    def run(self, values: np.ndarray) -> StreamScores:
        """Score rows in order, learning as row-by-row updates would (the same numbers), in batches. No rows
        (a poll that found none new) score to empty arrays, not an error that would stop the loop."""
        if not len(_matrix(values, self.det.columns_)):
            return StreamScores(np.zeros(0), np.zeros(0), np.zeros(0, np.int8), np.zeros((0, self.d)))
        return self.run_standardised(self._standardised(values))

    def run_standardised(self, Z: np.ndarray) -> StreamScores:
        """``run`` of rows already standardised (``detector.standardise``, finite): a replay that needs them too
        standardises once, and a value clipped is said once, naming its file (it was said again as "array")."""
        n = len(Z)
        score, reported, alarm = np.zeros(n), np.zeros(n), np.zeros(n, np.int8)
        contributions = np.zeros((n, self.d))
        i = 0
        while i < n:
            take = min(n - i, self.every - self.early - self.pending)
            first = len(self.rows)
            self.rows = np.vstack([self.rows, Z[i:i + take]])
            lo = max(0, first - self.ctx + 1)
            raw, contribs = self._raw(self.rows[lo:], first - lo)
            score[i:i + take], dec = self._calibrated(raw)
            contributions[i:i + take] = self._shares(score[i:i + take], dec, contribs)
            for j in range(i, i + take):
                reported[j], alarm[j] = self._report(float(score[j]))
                self.t += 1
            self.pending += take
            if self.early + self.pending == self.every:
                self._learn()
            i += take
        return StreamScores(score, reported, alarm, contributions)


def _matrix(values: Any, columns: Sequence[str]) -> np.ndarray:
    """(n, d) rows (``_numbers``) from (n, d), (d,) or, for one column, (n,) values."""
    d = len(columns)
    a = _numbers(values, columns)
    if a.ndim == 1:  # no rows at all (a poll that found none, as []) is (0, d), not one row of no values
        a = a.reshape(0, d) if not len(a) else a[:, None] if d == 1 else a[None]
    if a.ndim != 2 or a.shape[1] != d:
        raise InputError(f"stream: rows of {d} value(s) expected, got shape {a.shape}")
    return a


def _numbers(values: Any, columns: Sequence[str]) -> np.ndarray:
    """Rows or a row as float64: a DataFrame's, a dict's or a pandas Series' model columns taken by name (as
    ``standardise`` takes a DataFrame's: they were taken in their own order, silently, wrong where it differs),
    an array's in order. A cell that is text or None is NaN, held as a missing value is (a loop stopped on it)."""
    if hasattr(values, "keys"):
        values = by_name(values, columns)
    refuse_non_measurements(values, "stream", "stream: ")  # a complex array was cut to its real part, a warning
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        pass
    try:
        cells = np.asarray(values, dtype=object)
    except ValueError as err:  # rows of different lengths
        raise InputError(f"stream: rows of {len(columns)} value(s) expected ({str(err)[:100]})") from None
    return np.vectorize(_cell, otypes=[np.float64])(cells) if cells.size else cells.astype(np.float64)


def _cell(v: Any) -> float:
    """One value as a number: text read as a file's cell is (``cell_number``: NaN where it is no number)."""
    if v is None:
        return np.nan
    if isinstance(v, str):
        return cell_number(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        raise InputError(f"stream: {str(v)[:40]!r} ({type(v).__name__}) is not a number") from None
