"""``auto``: several detectors and windows on one calibrated scale, the set checked per series against
synthetic anomalies injected into its normal training data.

No single detector or window suits every series: a spike is a point far from any normal value, a changed
shape needs a window as long as the shape, a slow drift or a burst of noise shows in a smoothed view. So
``auto`` averages *members*: by default subsequence kNN at windows 1, 8, 16 and 32 rows and at 16 rows of
4-row means (windows x metrics capped at 256 numbers, like an automatic window), and on a series of four
metrics or more Borghesi et al.'s autoencoder on one row (how a machine's metrics move together), and checks
that set on the series itself, without labels:

1. The fitted part of the training data is split again: every candidate (each detector of
   ``candidates`` at each window and at the training data's period, plus the smoothed ones) learns from
   its first part and scores the rest (the validation part, at most 1,000 rows), clean and with
   synthetic anomalies injected one at a time into copies of short stretches of it: spikes, level
   shifts, flat lines (a frozen sensor), frequency changes (the stretch played twice as fast) and noise
   bursts, of random size, position and metric (seeded: a fit is reproducible).
2. A set of members is judged by how often the peak of its combined score over an injected anomaly
   beats the clean validation rows (a rank statistic, 1 when every anomaly outscores every normal row).
   Starting from the default set, one candidate at a time is added or removed while that gains at least
   ``margin``: the default set is the prior (on NAB and ASD it beat every set chosen with a smaller
   margin: a few hundred validation rows cannot show how often a member alarms over a long stream, which
   averaging members is what keeps low), the injections the evidence that overturns it.
3. The members are fitted again on the whole fitted part; model.json's ``choice`` records them, every
   candidate's own detection and each step taken.
4. Where the training data shows a period (its automatic window: a day of 5-minute rows is 288) longer
   than the longest member's window, a *period member* joins, outside the choice (the injected anomalies
   are shorter than a period): kNN on 16 means of period / 16 rows each, a whole period's shape in 16 numbers.
   It sees what no short window can (a daily peak that did not come, a holiday), so it is not averaged
   with the others: a row's score is the windowed members' mean or the period member's own, the higher.
   (On NAB, 70.90 -> 72.26 standard; the max, not a sixth share of the mean, was compared there: 68.9.)

Calibration puts members with different scales on one: a member's raw score s becomes the decades of its
Gaussian tail probability, ``-log10 P(Y >= log(1 + s))`` with Y normal with the mean and spread of
log(1 + s) over held-out normal rows (the last share of the training data and, cross-fitted, the first; log:
distances and errors are skewed), capped at ``CAP_DECADES``.
The row's score is the mean over the windowed members (3: "as improbable as one normal row in a thousand,
on average over the members"), or the period member's, the higher (``combine``); per-metric contributions
split it as each member's own contributions do. This is
Numenta's anomaly likelihood (Ahmad et al. 2017) per member.

Online (``partial_fit``), the members learn the row (kNN: its window joins a FIFO bank) and each member's
calibration follows its recent scores (a running mean and variance over about the last ``memory`` rows),
so the scale follows concept drift as the members do.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import torch
from pydantic import Field, field_validator
from scipy.special import log_ndtr

from normalcy.errors import InputError
from normalcy.files import short_repr
from normalcy.series.autoencoder import MIN_METRICS
from normalcy.series.base import SeriesDetector, SeriesParams
from normalcy.series.members import MEMBERS
from normalcy.series.windows import MAX_WINDOW

log = logging.getLogger("normalcy")

CAP_DECADES = 10.0  # a member says at most "one in 10^10 normal rows": one member cannot outvote the rest
MIN_SPREAD = 0.01  # of log(1 + s): a member whose held-out scores barely vary still has a finite scale
KINDS = ("spike", "level", "flat", "frequency", "noise")
MAX_MEMBERS = 16  # members a loaded model may declare
MAX_SMOOTH = 1024  # rows a member's moving average may span
MIN_VALIDATION = 24  # validation rows under which no choice is made (the default members are kept)
MAX_VALIDATION = 1000  # validation rows at most (a long series: the last 1000 of its fitted part)
CHOICE_BANK = 2000  # windows of a kNN candidate's bank while choosing
PERIOD_POINTS = 16  # the period member's window: the period in 16 means
LONGEST = 32  # the longest default member's window when no window is given
_LN10 = math.log(10.0)


class AutoDetector(SeriesDetector):
    """Members chosen per series with injected synthetic anomalies; calibrated, averaged, learning online."""

    name = "auto"

    class Params(SeriesParams):
        candidates: tuple[str, ...] = Field(("knn", "pca"), min_length=1, max_length=8)
        smooth: int = Field(4, ge=1, le=MAX_SMOOTH)  # rows the smoothed member averages (1: no such member)
        max_members: int = Field(6, ge=1, le=MAX_MEMBERS)
        validation: float = Field(0.3, gt=0, lt=1)  # of the fitted part, to choose on
        injections: int = Field(3, ge=1, le=50)  # per kind of anomaly
        memory: int = Field(8640, ge=10, le=10**7)  # rows the online calibration follows
        choose: bool = True  # False: the default members (the first candidate at each window), no choice
        margin: float = Field(0.05, ge=0, le=1)  # of detection a change of members must gain
        period: bool = True  # a member that sees a whole period (a day) when it is longer than the windows
        bank: int = Field(8000, ge=16, le=1_000_000)  # windows a kNN member keeps (knn's max_bank)
        autoencoder: bool = True  # Borghesi et al.'s autoencoder joins the default members (MIN_METRICS metrics+)

        @field_validator("candidates")
        @classmethod
        def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
            """Names of member detectors: an unknown one was taken, and failed only at fit with a ValueError
            (a crafted model.json's loaded without a word)."""
            unknown = [n for n in v if n not in MEMBERS]
            if unknown:
                raise ValueError(f"{short_repr(unknown[0])} is not a member detector; one of {', '.join(MEMBERS)}")
            return v

    # learned: the members (each with its own learned state) and ``tail``, their calibration (saved as
    # calib_mean, calib_var, calib_count beside the members' tensors, member0.*, member1.*, ...)

    # -- members -----------------------------------------------------------------------------------
    def _member(self, spec: dict[str, Any]) -> SeriesDetector:
        """A member detector from its spec, sharing this detector's columns and standardisation."""
        name = spec.get("detector")
        if name not in MEMBERS:
            raise ValueError(f"member detector {str(name)[:40]!r} is not a registered detector")
        window = spec.get("window")
        if not isinstance(window, int) or isinstance(window, bool) or not 1 <= window <= 4096:
            raise ValueError(f"member window {str(window)[:20]!r} is not a window")
        try:
            det = MEMBERS[name](**dict(spec.get("params") or {}), seed=self.seed)
        except InputError as err:
            raise ValueError(str(err)) from None
        det.columns_, det.window_ = self.columns_, window
        det.mean_, det.scale_ = np.zeros(len(self.columns_)), np.ones(len(self.columns_))
        det.threshold_, det.n_train_ = 1.0, getattr(self, "n_train_", 2)
        det.starts = self.starts
        smooth = spec.get("smooth", 1)
        if not isinstance(smooth, int) or isinstance(smooth, bool) or not 1 <= smooth <= MAX_SMOOTH:
            raise ValueError(f"member smoothing {str(smooth)[:20]!r} is not 1..{MAX_SMOOTH} rows")
        stride = spec.get("stride", 1)
        if not isinstance(stride, int) or isinstance(stride, bool) or not 1 <= stride <= smooth:
            raise ValueError(f"member stride {str(stride)[:20]!r} is not 1..{smooth} rows (its smoothing)")
        return Smoothed(det, smooth, stride) if smooth > 1 else det

    @property
    def members(self) -> list[SeriesDetector]:
        return self._members

    @property
    def context(self) -> int:
        return max(m.context for m in self._members)

    def _windows(self, d: int, longest: int) -> tuple[list[int], int | None]:
        """The default members' windows, 1, w/4, w/2 and w (w: the ``window`` parameter, else LONGEST),
        and the smoothed member's (w/2, None without one); each capped like an automatic window
        (window x metrics <= 256 numbers) and to half the shortest training part (``longest``). No smoothed
        member where its window of means (w/2 + smooth - 1 rows) does not fit the shortest training part: it
        learned an empty bank (NaN, or an IndexError when scoring)."""
        cap = max(1, min(MAX_WINDOW // d, longest))
        w = min(int(self.window or LONGEST), cap)
        windows = sorted({1, max(1, w // 4), max(1, w // 2), w})
        smoothed = max(1, w // 2) if self.smooth > 1 else None
        if smoothed is not None and smoothed + self.smooth - 1 > 2 * longest:
            smoothed = None
        return windows, smoothed

    def _specs(self, d: int, longest: int) -> list[dict[str, Any]]:
        """Every candidate: each detector at the default windows and at the training data's period (the
        base's automatic window, when no window is given), and the first detector on smoothed rows."""
        windows, smoothed = self._windows(d, longest)
        cap = max(1, min(MAX_WINDOW // d, longest))
        windows = sorted(set(windows) | {min(int(self.window_), cap)})
        specs = []
        for name in self.candidates:
            for w in windows:
                if name != "knn" and w * d < 4:  # PCA or a network on fewer than 4 numbers reconstructs them
                    continue
                specs.append({"detector": name, "window": w, "params": self._params(name)})
        if smoothed is not None:
            specs.append({"detector": self.candidates[0], "window": smoothed, "params": self._params(
                self.candidates[0]), "smooth": int(self.smooth)})
        rows = self._row_network(d)
        if rows is not None and rows not in specs:
            specs.append(rows)
        if not specs:
            raise InputError(f"auto: no candidate among {list(self.candidates)} fits windows {windows}")
        return specs

    def _row_network(self, d: int) -> dict[str, Any] | None:
        """Borghesi et al.'s autoencoder on one row of the metrics, a default member where a row has
        MIN_METRICS metrics or more (``autoencoder``): it learns how a machine's metrics move together
        within a step, which windows of a few rows, capped at 256 numbers, see less of. On ASD's 19-metric
        servers it raised every measure (docs/benchmarks.md); a univariate series (NAB) never has it."""
        if not self.autoencoder or d < MIN_METRICS:
            return None
        return {"detector": "autoencoder", "window": 1, "params": {}}

    def _period_spec(self, d: int, longest: int) -> dict[str, Any] | None:
        """The period member: the first candidate detector on PERIOD_POINTS means of about period /
        PERIOD_POINTS rows each (fewer where a whole period does not fit ``longest``, half the shortest
        training part), when the period (the base's automatic window) is longer than the longest default
        window and PERIOD_POINTS x metrics fit MAX_WINDOW numbers. (Called only where the training data
        shows a period, ``_periodic``: the base's fallback window, 125 rows where none shows, is not one.)"""
        windows, _ = self._windows(d, longest)
        period = int(self.window_)
        step = min(-(-period // PERIOD_POINTS), longest // PERIOD_POINTS)
        if not self.period or period <= max(windows) or PERIOD_POINTS * d > MAX_WINDOW or step < 2:
            return None
        first = self.candidates[0]
        return {"detector": first, "window": PERIOD_POINTS, "params": self._params(first), "smooth": step,
                "stride": step}

    def _set_members(self, specs: list[dict[str, Any]]) -> None:
        self._members = [self._member(s) for s in specs]
        self._contexts = [m.context for m in self._members]  # fixed by the specs; a stream reads them every row
        view = np.array([s.get("stride", 1) > 1 for s in specs])  # the period member, combined by max
        self._windowed = np.flatnonzero(~view)  # the windowed members, averaged
        self._mean_w = np.where(view, 0.0, 1.0 / max(1, len(self._windowed)))  # their weights in the mean
        self._period = int(np.flatnonzero(view)[0]) if view.any() else None

    @property
    def _view(self) -> np.ndarray:
        """(M,) bool: True on the period member (the one combined by max)."""
        return np.arange(len(self._mean_w)) == (-1 if self._period is None else self._period)

    def combine(self, dec: np.ndarray) -> np.ndarray:
        """(n,) a row's score from its (n, M) members' decades: the mean over the windowed members (views of
        the same short scale: averaging keeps one member's false alarm from paging), or the period member's
        own where it is higher (a missed daily peak or a holiday shows at that scale alone, and averaged with
        five members that cannot see it, it would never reach an alarm)."""
        if len(dec) == 1:  # a stream's row: ``_weights``'s numbers in a third of the array calls
            return np.array([float((self._row_weights(dec[0]) * dec[0]).sum())])
        return (self._weights(dec) * dec).sum(axis=1)

    def _row_weights(self, dec: np.ndarray) -> np.ndarray:
        """(M,) ``_weights`` of one row's (M,) decades."""
        j = self._period
        # the windowed members' mean as sum / count: np.mean's own arithmetic, without its 5 us of Python
        if j is None or (len(self._windowed) and dec[j] <= dec[self._windowed].sum() / len(self._windowed)):
            return self._mean_w
        w = np.zeros(len(dec))
        w[j] = 1.0
        return w

    def _weights(self, dec: np.ndarray) -> np.ndarray:
        """(n, M) each member's weight in ``combine``: 1 / (windowed members) each, or 1 on the period member
        on rows where it is higher than their mean."""
        w = np.tile(self._mean_w, (len(dec), 1))
        j = self._period
        if j is not None:
            wins = dec[:, j] > (dec[:, self._windowed].mean(axis=1) if len(self._windowed) else -np.inf)
            w[wins] = 0.0
            w[wins, j] = 1.0
        return w

    def _params(self, name: str) -> dict[str, Any]:
        """A member's parameters: kNN banks of ``bank`` windows (five members search them per row)."""
        return {"max_bank": self.bank} if name == "knn" else {}

    # -- raw scores, calibration -------------------------------------------------------------------
    @staticmethod
    def _raw(members: list[SeriesDetector], X: np.ndarray, first: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
        """(n - first, M) raw scores of each member and their (n - first, d) contributions, of rows X[first:]
        (the rows before them their past only)."""
        contribs = [np.asarray(m._score_from(X, first), dtype=np.float64) for m in members]
        return np.stack([c.sum(axis=1) for c in contribs], axis=1), contribs

    def calibrated(self, raw: np.ndarray) -> np.ndarray:
        """(n, M) members' calibrated scores (decades) under the current calibration."""
        return self.tail.decades(raw)

    # -- the protocol ------------------------------------------------------------------------------
    def _fit(self, X: np.ndarray, progress: bool) -> None:
        t0 = time.perf_counter()
        d = X.shape[1]
        ends = np.append(self.starts[1:], len(X))
        shortest = int(min(ends - self.starts))
        self._longest = max(1, shortest // 2)
        specs = self._specs(d, self._longest)
        choice = self._choose(X, specs, ends)
        period = self._period_spec(d, self._longest) if getattr(self, "_periodic", False) else None
        if period is not None:  # outside the choice: the injections are shorter than a period
            choice["members"].append(period)
            choice["_mean"], choice["_var"] = np.append(choice["_mean"], 0.0), np.append(choice["_var"], 1.0)
        self._set_members(choice["members"])
        for m in self._members:
            m._fit(X, progress)
        self.window_ = max(m.window_ for m in self._members)
        self.choice = choice
        self._cache: tuple[np.ndarray, np.ndarray] | None = None
        # the calibration until the held-out rows set it (used when there are none: holdout 0)
        self.tail = RunningTail(choice.pop("_mean"), choice.pop("_var"), choice.pop("_count"), self.memory)
        self._fit_seconds = time.perf_counter() - t0

    def _calibration_scores(self, Z: list[np.ndarray], cuts: list[int]) -> np.ndarray:
        """Calibrate each member on the held-out rows (``_held_out``: the last share and, cross-fitted, the
        first), then score them."""
        held = self._held_out(Z, cuts)
        if held:
            raw = np.concatenate(held)
            self.tail = RunningTail.of(raw, self.memory)
            return self.combine(self.calibrated(raw))
        return super()._calibration_scores(Z, cuts)

    def _held_scores(self, det: SeriesDetector, z: np.ndarray, first: int) -> np.ndarray:
        """Calibration takes each member's raw scores (``det``: this detector or its twin)."""
        return self._raw(det.members, z, first)[0]

    def _fit_twin(self, twin: SeriesDetector, X: np.ndarray) -> None:
        """The same members fitted on X (no choice again: the twin is to score as this detector does); the twin
        is an AutoDetector (``_twin`` makes it of this detector's type)."""
        twin._set_members(self.choice["members"])  # type: ignore[attr-defined, index]  (set by _fit)
        for m in twin._members:
            m._fit(X, False)
        twin.window_, twin.tail = self.window_, self.tail

    def _combine(self, cal: np.ndarray, contribs: list[np.ndarray]) -> np.ndarray:
        """(n, d) contributions: each member's calibrated score times its weight in ``combine``, split as its
        own contributions."""
        n, d = contribs[0].shape
        out = np.zeros((n, d))
        weights = self._weights(cal)
        for j, c in enumerate(contribs):
            total = c.sum(axis=1, keepdims=True)
            share = np.divide(c, total, out=np.full_like(c, 1.0 / d), where=total > 0)
            out += share * (cal[:, j:j + 1] * weights[:, j:j + 1])
        return out

    def _score(self, X: np.ndarray) -> np.ndarray:
        raw, contribs = self._raw(self._members, X)
        return self._combine(self.calibrated(raw), contribs)

    def _last_raw(self, recent: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        contribs = [np.asarray(m._score_last(recent[-c:]), dtype=np.float64)
                    for m, c in zip(self._members, self._contexts)]
        if recent.shape[1] == 1:  # one metric: each member's contribution is its score
            return np.concatenate(contribs), contribs
        return np.array([c.sum() for c in contribs]), contribs

    def _score_last(self, recent: np.ndarray) -> np.ndarray:
        raw, contribs = self._last_raw(recent)
        self._cache = (recent[-1].copy(), raw)  # partial_fit of this row reuses them
        return self._combine(self.calibrated(raw[None]), [c[None] for c in contribs])[0]

    def _partial_fit(self, recent: np.ndarray) -> None:
        cache = getattr(self, "_cache", None)
        if cache is not None and np.array_equal(cache[0], recent[-1]):
            raw = cache[1]
        else:
            raw = self._last_raw(recent)[0]
        self._cache = None
        for m in self._members:
            if m.learns_online:
                m._partial_fit(recent[-m.context:])
        self.tail.update(raw[None])

    def learn_rows(self, Z: np.ndarray, first: int) -> None:
        """The members learn rows Z[first:] (standardised; the rows before them their context) in order:
        what partial_fit does row by row, for a caller that scored them in a batch and follows their
        scores with ``tail.follow``."""
        for m in self._members:
            if m.learns_online:
                learn_block(m, Z, first)

    def metadata(self) -> dict[str, Any]:
        return {"fit_seconds": round(getattr(self, "_fit_seconds", 0.0), 3)}

    def report_info(self) -> dict[str, Any]:
        specs = (self.choice or {}).get("members") or []
        names = [_name(s) + (" (period)" if s.get("stride", 1) > 1 else "") for s in specs]
        return super().report_info() | {"members": ", ".join(names)}

    # -- choosing -----------------------------------------------------------------------------------
    def _choose(self, X: np.ndarray, specs: list[dict[str, Any]], ends: np.ndarray) -> dict[str, Any]:
        """The members (greedy on injected anomalies in the validation part) and the numbers behind them."""
        # the validation part: the last `validation` of the longest training series
        k = int(np.argmax(ends - self.starts))
        a, b = int(self.starts[k]), int(ends[k])
        n_val = min(int(round(self.validation * (b - a))), MAX_VALIDATION)
        fit_end = b - n_val
        default = self._default(specs)
        if not self.choose:
            return self._fallback(X, default, n_val, "no choice asked (choose=False)")
        # a candidate is judged only where its window fits the split (fitted part >= 2 windows)
        specs = [s for s in specs if 2 * s["window"] <= fit_end - a
                 and s["window"] + s.get("smooth", 1) - 1 <= fit_end - a]  # and a window of means fits
        if n_val < MIN_VALIDATION or not self._default(specs):
            log.info("auto: %d validation rows, too few to choose on; members %s", n_val, _names(default))
            return self._fallback(X, default, n_val, "too few rows to choose on")
        fit_rows = np.concatenate([X[:a], X[a:fit_end], X[b:]])
        starts = np.array([s if s <= a else (s - n_val if s >= b else s) for s in self.starts], np.int64)
        candidates = []
        for spec in specs:  # judged with smaller kNN banks: a choice, not the final model, 4x faster
            params = dict(spec["params"], max_bank=min(self.bank, CHOICE_BANK)) if spec["detector"] == "knn" else {}
            m = self._member(dict(spec, params=params))
            m.starts = starts
            m._fit(fit_rows, False)
            candidates.append(m)
        ctx = max(m.context for m in candidates)
        past = max(a, fit_end - ctx + 1)
        clean_raw = self._raw(candidates, X[past:b], fit_end - past)[0]
        tail = RunningTail.of(clean_raw, self.memory)
        clean = tail.decades(clean_raw)  # (n_val, C)
        V = X[a:b]
        peaks = self._injected(candidates, V, fit_end - a, ctx, tail)  # list of (rows, C) arrays
        # start from the default members (the first detector at every window) and move one candidate in
        # or out at a time while that clearly helps: the ensemble is the prior, the injections the evidence
        chosen = [specs.index(s) for s in self._default(specs)]
        best = self._detection(clean, peaks, chosen)
        trail = [[_name(specs[j]) for j in chosen], round(best, 4)]
        for _ in range(2 * len(specs)):
            moves = [chosen + [j] for j in range(len(specs)) if j not in chosen and len(chosen) < self.max_members]
            moves += [[i for i in chosen if i != j] for j in chosen if len(chosen) > 1]
            if not moves:
                break
            value, move = max(((self._detection(clean, peaks, m), m) for m in moves), key=lambda t: t[0])
            if value < best + self.margin:
                break
            chosen, best = move, value
            trail.append([[_name(specs[j]) for j in chosen], round(best, 4)])
        singles = {_name(specs[j]): round(self._detection(clean, peaks, [j]), 4) for j in range(len(specs))}
        return {
            "members": [specs[j] for j in chosen],
            "validation": {"rows": n_val, "injected": len(peaks), "kinds": list(KINDS),
                           "detection": round(best, 4), "steps": trail, "candidates": singles},
            "_mean": tail.mean[chosen], "_var": tail.var[chosen], "_count": tail.count,
        }

    def _default(self, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The default members among specs: the first candidate detector at the default windows and the
        smoothed one (not the period), at most max_members."""
        windows, smoothed = self._windows(len(self.columns_), int(getattr(self, "_longest", LONGEST)))
        wanted = {(w, 1) for w in windows} | ({(smoothed, int(self.smooth))} if smoothed is not None else set())
        first = self.candidates[0]
        rows = self._row_network(len(self.columns_))
        return [s for s in specs if s == rows or (s["detector"] == first and (s["window"], s.get("smooth", 1))
                                                  in wanted)][: self.max_members]

    def _fallback(self, X: np.ndarray, members: list[dict[str, Any]], n_val: int, why: str) -> dict[str, Any]:
        """Members without a choice; their calibration is set on the held-out rows (or stays neutral)."""
        return {"members": members, "validation": {"rows": n_val, "note": why},
                "_mean": np.zeros(len(members)), "_var": np.ones(len(members)), "_count": 0}

    @staticmethod
    def _detection(clean: np.ndarray, peaks: list[np.ndarray], members: list[int]) -> float:
        """How well injected anomalies stand out of the clean validation rows under the members' combined
        score: the mean over anomalies of the fraction of clean rows scoring below the anomaly's peak
        (ties count half): 1 when every anomaly outscores every normal row, 0.5 for a coin."""
        base = np.sort(clean[:, members].mean(axis=1))
        out = []
        for region in peaks:
            top = region[:, members].mean(axis=1).max()
            below = np.searchsorted(base, top, side="left")
            ties = np.searchsorted(base, top, side="right") - below
            out.append((below + 0.5 * ties) / len(base))
        return float(np.mean(out))

    def _injected(self, candidates: list[SeriesDetector], V: np.ndarray, first: int, ctx: int,
                  tail: "RunningTail") -> list[np.ndarray]:
        """Calibrated scores (rows, C) of each candidate over each injected anomaly (and the rows after it
        that still see it), each in its own copy of a stretch of the validation part V (rows first..)."""
        rng = np.random.default_rng(self.seed)
        n, d = V.shape
        span = max(c.context for c in candidates)
        length = int(np.clip((n - first) // 8, 4, 64))
        out = []
        for kind in KINDS:
            for _ in range(self.injections):
                lo = max(first, ctx)
                hi = n - length - 1
                if hi <= lo:
                    break
                at = int(rng.integers(lo, hi))
                col = int(rng.integers(d))
                start, stop = max(0, at - ctx + 1), min(n, at + length + span)
                seg = V[start:stop].copy()
                _inject(seg, kind, at - start, length, col, rng)
                raw = self._raw(candidates, seg, at - start)[0]
                out.append(tail.decades(raw))
        return out

    # -- saving ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {
            "calib_mean": torch.tensor(np.asarray(self.tail.mean, dtype=np.float64)),  # a copy: Ray's are read-only
            "calib_var": torch.tensor(np.asarray(self.tail.var, dtype=np.float64)),
            "calib_count": torch.tensor(int(self.tail.count)),
        }
        for i, m in enumerate(self._members):
            state.update({f"member{i}.{k}": v for k, v in m.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Members rebuilt from model.json's ``choice`` (checked), each loading its own tensors."""
        state = dict(state)
        specs = (self.choice or {}).get("members")
        if not isinstance(specs, list) or not 1 <= len(specs) <= MAX_MEMBERS:
            raise ValueError(f"choice.members must list 1 to {MAX_MEMBERS} members")
        self.starts = np.zeros(1, np.int64)
        for i, spec in enumerate(specs):
            if not isinstance(spec, dict):
                raise ValueError(f"member {i} is not an object")
        self._set_members(specs)
        for i, m in enumerate(self._members):
            prefix = f"member{i}."
            m.load_state_dict({k[len(prefix):]: state.pop(k) for k in list(state) if k.startswith(prefix)})
        M = len(self._members)
        for key in ("calib_mean", "calib_var", "calib_count"):
            if key not in state:
                raise ValueError(f"missing tensor {key!r}")
        mean = state.pop("calib_mean").numpy().astype(np.float64)
        var = state.pop("calib_var").numpy().astype(np.float64)
        count = state.pop("calib_count")
        if mean.shape != (M,) or var.shape != (M,) or count.ndim != 0:
            raise ValueError(f"calibration arrays do not fit {M} member(s)")
        if not (np.isfinite(mean).all() and np.isfinite(var).all() and (var >= 0).all()):
            raise ValueError("calibration is not finite, or a variance is negative")
        if not 0 <= int(count.item()) <= self.memory:
            raise ValueError(f"calibration count {int(count.item())} outside 0..{self.memory}")
        self.tail = RunningTail(mean, var, int(count.item()), self.memory)
        if state:
            raise ValueError(f"unexpected tensor(s) {sorted(state)[:3]}")
        if self.window_ != max(m.window_ for m in self._members):
            raise ValueError(f"window {self.window_} is not the members' longest")
        self._cache = None
        self._trial_score()


class RunningTail:
    """Numenta's anomaly likelihood per column of scores: the mean and variance of log(1 + s) over about
    the last ``memory`` rows (exact while fewer have been seen, then exponentially weighted), and new
    scores as decades of their Gaussian tail probability under them, ``-log10 P(Y >= log(1 + s))``,
    capped at CAP_DECADES. No rows seen yet: every score is 0 decades (nothing to compare with)."""

    def __init__(self, mean: Any, var: Any, count: int, memory: int) -> None:
        self.mean = np.asarray(mean, dtype=np.float64).copy()
        self.var = np.asarray(var, dtype=np.float64).copy()
        self.count, self.memory = int(count), int(memory)

    @classmethod
    def of(cls, raw: np.ndarray, memory: int) -> "RunningTail":
        """The calibration of (n, M) scores, as if they were the last min(n, memory) rows seen."""
        y = np.log1p(np.maximum(np.atleast_2d(raw), 0.0))
        return cls(y.mean(axis=0), y.var(axis=0), min(len(y), memory), memory)

    def decades(self, raw: np.ndarray) -> np.ndarray:
        """(n, M) decades of tail probability of (n, M) scores."""
        if self.count == 0:
            return np.zeros(np.shape(raw))
        z = (np.log1p(np.maximum(raw, 0.0)) - self.mean) / np.sqrt(np.maximum(self.var, MIN_SPREAD**2))
        return np.minimum(-log_ndtr(-z) / _LN10, CAP_DECADES)

    def update(self, raw: np.ndarray) -> None:
        """Follow (n, M) new scores, one row at a time (a running mean and variance with weight
        1 / min(count, memory): Welford's while fewer than ``memory`` rows have been seen)."""
        mean, var, n = self.mean, self.var, self.count
        for y in np.log1p(np.maximum(np.atleast_2d(raw), 0.0)):
            mean, var, n = _follow_one(mean, var, n, y, self.memory)
        self.mean, self.var, self.count = mean, var, n

    def follow(self, raw: np.ndarray) -> np.ndarray:
        """(n, M) decades of each row of (n, M) scores, each under the calibration of the rows before it,
        which then follows it: ``decades`` and ``update`` row by row, in one pass."""
        raw = np.atleast_2d(raw)
        mean, var, n, cap = self.mean, self.var, self.count, self.memory
        if len(raw) == 1 and n:  # a stream's row: the same numbers in fewer array calls (20 -> 6 us)
            y = np.log1p(np.maximum(raw[0], 0.0))
            out = np.minimum(-log_ndtr((mean - y) / np.sqrt(np.maximum(var, MIN_SPREAD**2))) / _LN10, CAP_DECADES)
            self.mean, self.var, self.count = _follow_one(mean, var, n, y, cap)
            return out[None]
        z = np.zeros(raw.shape)
        seen = np.ones(len(raw), dtype=bool)
        for i, y in enumerate(np.log1p(np.maximum(raw, 0.0))):
            if n:
                z[i] = (y - mean) / np.sqrt(np.maximum(var, MIN_SPREAD**2))
            else:
                seen[i] = False
            mean, var, n = _follow_one(mean, var, n, y, cap)
        self.mean, self.var, self.count = mean, var, n
        return np.where(seen[:, None], np.minimum(-log_ndtr(-z) / _LN10, CAP_DECADES), 0.0)


def _follow_one(mean: np.ndarray, var: np.ndarray, n: int, y: np.ndarray, cap: int
                ) -> tuple[np.ndarray, np.ndarray, int]:
    """The running mean and variance after one more row y: Welford's with weight 1 / min(n + 1, cap)."""
    n = min(n + 1, cap)
    delta = y - mean
    return mean + delta / n, (1.0 - 1.0 / n) * (var + delta * delta / n), n


def _name(spec: dict[str, Any]) -> str:
    smooth = spec.get("smooth", 1)
    stride = spec.get("stride", 1)
    return (f"{spec['detector']}/{spec['window']}" + (f"/mean{smooth}" if smooth > 1 else "")
            + (f"/every{stride}" if stride > 1 else ""))


def _names(specs: list[dict[str, Any]]) -> list[str]:
    return [_name(s) for s in specs]


def _inject(seg: np.ndarray, kind: str, at: int, length: int, col: int, rng: np.random.Generator) -> None:
    """One synthetic anomaly into ``seg`` (standardised rows) at rows at..at+length, in column col. Sizes are
    drawn in units of the column's robust scale (1 after standardisation), from subtle to plain."""
    x = seg[:, col]
    stop = min(len(x), at + length)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    if kind == "spike":
        x[at] += sign * rng.uniform(2.0, 6.0)
    elif kind == "level":
        x[at:stop] += sign * rng.uniform(1.0, 3.0)
    elif kind == "flat":
        x[at:stop] = x[at - 1] if at > 0 else x[at]
    elif kind == "frequency":  # the stretch played twice as fast (what follows it, squeezed in)
        src = at + 2 * np.arange(stop - at)
        x[at:stop] = x[np.minimum(src, len(x) - 1)]
    elif kind == "noise":
        x[at:stop] += rng.normal(0.0, rng.uniform(0.5, 2.0), stop - at)
    else:  # pragma: no cover - KINDS lists every kind
        raise ValueError(kind)


def moving_mean(X: np.ndarray, k: int, starts: np.ndarray | None = None) -> np.ndarray:
    """(n, d) mean of the last k rows of each row (fewer at the start of X, or of each series beginning at
    a row of ``starts``): causal, so a smoothed row depends on its past only."""
    out = np.empty_like(X, dtype=np.float64)
    bounds = np.append(np.asarray(starts if starts is not None else [0], dtype=np.int64), len(X))
    for a, b in zip(bounds[:-1], bounds[1:]):
        c = np.cumsum(np.vstack([np.zeros((1, X.shape[1])), X[a:b]]), axis=0)
        t = np.arange(1, b - a + 1)
        lo = np.maximum(0, t - k)
        out[a:b] = (c[t] - c[lo]) / (t - lo)[:, None]
    return out


class Smoothed:
    """A member that sees each row as the mean of the last ``k`` rows: a window of w such rows spans
    w + k - 1 rows with the noise averaged out (a slower change, a drift, a burst of noise that moves
    the mean). With ``stride`` s, the window takes every s-th smoothed row, w of them spanning
    (w - 1) s + k rows: a day's shape in a few numbers. Wraps a detector, forwarding what ``auto`` uses
    of it.

    Only whole means count: the first k - 1 rows of a series have none (a mean of fewer rows is noisier
    than any the member learned, and a period member scored on it raised up to 6 decades, an alarm, at the
    start of every test series), so the member neither learns them nor sees them in a window, and scores
    0 until its first whole mean."""

    def __init__(self, inner: SeriesDetector, k: int, stride: int = 1) -> None:
        self.inner, self.k, self.stride = inner, k, stride
        self.name, self.window_, self.columns_ = inner.name, inner.window_, inner.columns_

    @property
    def starts(self) -> np.ndarray:
        return self.inner.starts

    @starts.setter
    def starts(self, value: np.ndarray) -> None:
        self.inner.starts = value

    @property
    def context(self) -> int:
        return (self.inner.context - 1) * self.stride + self.k

    @property
    def learns_online(self) -> bool:
        return self.inner.learns_online

    def _rows(self, a: int, b: int, r: int) -> np.ndarray:
        """Rows a + r, a + r + s, ... before b that hold a whole mean (k rows of the series starting at a)."""
        idx = np.arange(a + r, b, self.stride)
        return idx[idx >= a + self.k - 1]

    def _phases(self, M: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every s-th whole mean of each series of M, each phase of each series a series of its own, and
        their starts."""
        bounds = np.append(np.asarray(starts, dtype=np.int64), len(M))
        parts = [M[self._rows(a, b, r)] for a, b in zip(bounds[:-1], bounds[1:]) for r in range(self.stride)]
        parts = [p for p in parts if len(p)] or [M[:0]]
        return np.concatenate(parts), np.cumsum([0] + [len(p) for p in parts[:-1]]).astype(np.int64)

    def _fit(self, X: np.ndarray, progress: bool) -> None:
        M = moving_mean(X, self.k, self.inner.starts)
        starts = self.inner.starts
        rows, self.inner.starts = self._phases(M, starts)
        self.inner._fit(rows, progress)
        self.inner.starts = starts

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self._score_from(X, 0)

    def _score_from(self, X: np.ndarray, first: int) -> np.ndarray:
        M = moving_mean(X, self.k)
        out = np.zeros((len(X) - first, X.shape[1]))
        for r in range(min(self.stride, len(X))):
            rows = self._rows(0, len(X), r)
            j = int(np.searchsorted(rows, first))  # this phase's rows from first on are wanted
            if j < len(rows):
                out[rows[j:] - first] = self.inner._score_from(M[rows], j)
        return out

    def _last(self, recent: np.ndarray) -> np.ndarray:
        """The inner detector's recent rows: every stride-th k-row mean ending at the last row of ``recent``
        (moving_mean's numbers, only the ones needed: a stream calls this every row)."""
        ctx = self.context
        if len(recent) < ctx:  # the start of a series: its whole means so far
            rows = np.arange(len(recent) - 1, -1, -self.stride)[::-1]
            return moving_mean(recent, self.k)[rows[rows >= self.k - 1]][-self.inner.context:]
        if getattr(self, "_ends", (0,))[0] != ctx:  # kept: a stream calls this every row
            ends = ctx - self.stride * np.arange(self.inner.context)[::-1]  # one past each needed row
            self._ends = (ctx, ends, ends - self.k, np.zeros((1, recent.shape[1])))
        _, ends, starts, zero = self._ends
        c = np.concatenate((zero, recent[-ctx:])).cumsum(axis=0)
        return (c[ends] - c[starts]) / self.k

    def _score_last(self, recent: np.ndarray) -> np.ndarray:
        rows = self._last(recent)
        return self.inner._score_last(rows) if len(rows) else np.zeros(recent.shape[1])

    def _partial_fit(self, recent: np.ndarray) -> None:
        if len(recent) < (self.context if self.stride > 1 else self.k):  # whole means only, as learn_block
            return
        self.inner._partial_fit(self._last(recent))

    def learn_block(self, Z: np.ndarray, first: int) -> None:
        """Learn rows Z[first:] in order (the rows before them their context), smoothing once."""
        M = moving_mean(Z, self.k)
        if self.stride == 1:
            skip = min(self.k - 1, len(M))  # rows without a whole mean
            learn_block(self.inner, M[skip:], max(0, first - skip))
            return
        span = (self.inner.context - 1) * self.stride
        ends = np.arange(max(first, self.context - 1), len(Z))  # every mean of k rows: a window normal data had
        if not len(ends):  # a stream's first block, shorter than the context: no whole window yet (as _partial_fit)
            return
        if hasattr(self.inner, "learn_windows"):  # all at once, in order
            rows = ends[:, None] - span + self.stride * np.arange(self.inner.context)
            self.inner.learn_windows(M[rows].reshape(len(ends), -1))
            return
        for t in ends:
            self.inner._partial_fit(M[t - span:t + 1:self.stride])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.inner.load_state_dict(state)


def learn_block(member: Any, Z: np.ndarray, first: int) -> None:
    """A member learns rows Z[first:] in order, each with the rows before it as its past."""
    own = getattr(member, "learn_block", None)  # a member that learns a block at once (Smoothed, knn)
    if own is not None:
        own(Z, first)
        return
    ctx = member.context
    for t in range(first, len(Z)):
        member._partial_fit(Z[max(0, t - ctx + 1):t + 1])
