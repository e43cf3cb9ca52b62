"""Forecasting residuals with a nonparametric dynamic threshold (Hundman et al., KDD 2018, "Detecting
spacecraft anomalies using LSTMs and nonparametric dynamic thresholding"; NASA's telemanom): the classic
baseline of the series detectors.

1. A network trained on normal operation predicts each row from the ``lags`` rows before it. The paper
   uses an LSTM; this is a one-hidden-layer MLP on the flattened lags (``hidden=0``: linear): it trains in
   about a second on 2 cores where an LSTM over the same lags takes minutes, which matters when every NAB
   file and every server gets its own model, and on these short one-step horizons a dense forecaster
   predicts about as well (the LSTM's long memory is not what the residuals need).
2. The absolute residuals, per metric, are smoothed with an exponentially weighted moving average (span
   ``smoothing``; truncated after ``3 * smoothing`` rows so that a row's score depends on a bounded past,
   and one row scores the same in a series and in a stream). A row's error is the sum over metrics.
3. The paper's threshold: over the last ``history`` smoothed errors (the paper: 2100), epsilon = mu + z sigma
   with z in 2.5, 3, ..., 12 chosen to maximise (delta mu / mu + delta sigma / sigma) / (|e_a| + |E_seq|^2)
   (delta: how much mean and deviation drop when the errors at or above epsilon are removed; e_a those errors
   widened by ``buffer`` rows either side, E_seq the contiguous sequences they form), kept only when at most
   5 sequences and under half the errors are above it (telemanom's guardrails; otherwise z = 12). Then
   pruning: the maxima of the sequences and the largest error outside them, sorted, must drop by at least
   ``prune`` (the paper's p = 0.13) somewhere at or below a sequence for it to stay anomalous. The buffer
   shapes the threshold and the sequences; a row is flagged by its own error only (telemanom also flags
   the buffer rows around it).

normalcy decides ``score >= threshold_``, so the dynamic threshold becomes a normalisation: a row's score
is its smoothed error divided by its epsilon (per-metric contributions: each metric's smoothed error over
the same epsilon), a row whose sequence was pruned scores 1 - prune (just under the bar), and
``threshold_ = 1``: a row is anomalous exactly when the paper's rule says so. The threshold adapts to each
series as it goes, which is the paper's point, so it is not calibrated at ``fpr`` on held-out rows; the
base still scores the held-out rows and logs the false-alarm rate they would give. ``dynamic=False``
scores the smoothed error itself, with the threshold at the held-out (1 - fpr) quantile like the other
detectors.

The history starts with the last ``history`` smoothed errors of the training rows (kept with the model), so
the first rows of a series already have a threshold; rows with fewer than ``lags`` rows of past cannot be
forecast and score 0.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import Field
from torch import nn

from normalcy.series.autoencoder import NeuralDetector, TrainedParams, batched, input_span, training_windows
from normalcy.series.dynamic import dynamic_epsilon, dynamic_epsilons
from normalcy.series.events import prune, spans
from normalcy.series.windows import flat_windows

log = logging.getLogger("normalcy")

def _widen(hit: np.ndarray, pad: int) -> np.ndarray:
    """(z, H) masks with every True widened by ``pad`` positions either side (telemanom's error buffer)."""
    if pad <= 0:
        return hit
    c = np.pad(np.cumsum(hit, axis=1), ((0, 0), (1, 0)))
    i = np.arange(hit.shape[1])
    return (c[:, np.minimum(i + pad, hit.shape[1] - 1) + 1] - c[:, np.maximum(i - pad, 0)]) > 0


class Forecaster(nn.Module):
    """lags x d inputs -> d next values (an MLP, or linear with hidden=0)."""

    def __init__(self, inputs: int, outputs: int, hidden: int) -> None:
        super().__init__()
        if hidden:
            self.net: nn.Module = nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, outputs))
        else:
            self.net = nn.Linear(inputs, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Forecast(NeuralDetector):
    """Smoothed forecasting residuals over Hundman et al.'s nonparametric dynamic threshold."""

    name = "forecast"

    class Params(TrainedParams):
        lags: int | None = Field(None, ge=1, le=1024)  # past rows a forecast uses; None: the window (input <= 400)
        hidden: int = Field(64, ge=0, le=4096)  # 0: a linear forecaster
        smoothing: int | None = Field(None, ge=1, le=10_000)  # EWMA span; None: half the lags
        history: int = Field(2000, ge=10, le=100_000)  # smoothed errors the threshold is chosen on
        dynamic: bool = True  # the paper's threshold (threshold_ = 1); False: held-out quantile at fpr
        buffer: int | None = Field(None, ge=1, le=100_000)  # telemanom's error_buffer; None: history / 20

    net_: Forecaster
    lags_: int
    span_: int
    history_: np.ndarray  # (<= history,) the last smoothed errors of the training rows

    @property
    def event_pruning(self) -> float:
        """0: its scores carry the paper's pruning already (``prune``, the base's parameter, read here), and
        pruning the events again dropped true ones (ASD event F1 0.336 -> 0.179)."""
        return 0.0

    @property
    def blind(self) -> int:
        """Rows with fewer than ``lags`` rows of past cannot be forecast and score 0."""
        return self.lags_

    @property
    def taps(self) -> int:
        """Errors one smoothed error averages: the EWMA truncated at 3 spans."""
        return 3 * self.span_ + 1

    @property
    def context(self) -> int:
        """A score needs ``history`` smoothed errors, each of ``taps`` errors, each of ``lags`` + 1 rows."""
        return self.history + self.taps + self.lags_ - 1

    def _build(self) -> None:
        d = len(self.columns_)
        self.net_ = Forecaster(self.lags_ * d, d, self.hidden).double()
        self._last: tuple | None = None  # ``_smoothed_last``'s rows and errors (of the network it replaces)

    def _fit(self, X: np.ndarray, progress: bool) -> None:
        d = X.shape[1]
        self.lags_ = int(self.lags) if self.lags is not None else input_span(self.window_, d)
        self.span_ = int(self.smoothing) if self.smoothing is not None else max(1, self.lags_ // 2)
        self._build()
        split = self.lags_ * d

        def loss(x: torch.Tensor) -> torch.Tensor:
            return ((self.net_(x[:, :split]) - x[:, split:]) ** 2).mean()

        self._train(training_windows(X, self.lags_ + 1, self.starts, "lags"), loss)  # the lags and the row they predict
        ends = np.append(self.starts[1:], len(X))
        last = X[self.starts[-1]:ends[-1]]  # the history continues from the last training series
        smoothed = self._smoothed(last).sum(axis=1)
        self.history_ = smoothed[np.isfinite(smoothed)][-self.history:]

    # -- errors ---------------------------------------------------------------------------------------
    def _smoothed(self, X: np.ndarray) -> np.ndarray:
        """(n, d) smoothed absolute forecasting errors of the rows of X; NaN for the first ``lags`` rows."""
        return self._smooth(self._errors(X))

    def _errors(self, X: np.ndarray) -> np.ndarray:
        """(n, d) absolute forecasting errors of the rows of X; NaN for the first ``lags`` rows."""
        n, d = X.shape
        L = self.lags_
        out = np.full((n, d), np.nan)
        if n <= L:
            return out
        W = flat_windows(X, L)[:-1]  # the lags before rows L..n-1
        pred = torch.cat(batched(self.net_, W)).numpy()
        out[L:] = np.abs(X[L:] - pred)
        return out

    def _weights(self) -> np.ndarray:
        """The EWMA's weights of an error and the ``taps`` - 1 before it, newest first."""
        a = 2.0 / (self.span_ + 1)
        return (1 - a) ** np.arange(self.taps)

    def _smooth(self, errors: np.ndarray, upto: int | None = None) -> np.ndarray:
        """(n, d) smoothed ``errors`` (``_errors``'s, NaN for the first ``lags`` rows); of the first ``upto``
        forecast rows only (NaN after them) where given."""
        n, d = errors.shape
        L = self.lags_
        out = np.full((n, d), np.nan)
        if n <= L:
            return out
        err = errors[L:] if upto is None else errors[L:L + upto]
        weights = self._weights()
        m = len(err)
        norm = np.convolve(np.ones(m), weights)[:m]  # the weights of the errors that exist (pandas' adjust=True)
        for j in range(d):
            out[L:L + m, j] = np.convolve(err[:, j], weights)[:m] / norm
        return out

    def _smoothed_last(self, recent: np.ndarray) -> np.ndarray:
        """``_smoothed(recent)``, from the last call's where ``recent`` is that call's rows, maybe less some of its
        first, and one more row (a stream): only the new row is forecast and smoothed, and the first rows, whose
        smoothing lost errors before them. Why: a stream re-forecast its whole context (2,000 rows and more) for
        every row, 1-2 ms a row; the network is fixed after fit, so a row's error never changes."""
        L, n = self.lags_, len(recent)
        cache = getattr(self, "_last", None)
        if cache is not None and cache[0] is self.net_ and cache[1] == (L, self.span_) and n >= 2:
            rows, errors, smoothed = cache[2:]
            s = len(rows) - (n - 1)  # rows of the last call that are no longer in recent
            if s >= 0 and np.array_equal(recent[:-1], rows[s:]):
                errors = np.concatenate([errors[s:], self._errors(recent[-L - 1:])[-1:]])
                smoothed = np.concatenate([smoothed[s:], np.full((1, recent.shape[1]), np.nan)])
                smoothed[:L] = np.nan
                q = n - 1 - L  # the new row's error, among the errors of recent
                if q >= 0:
                    taps = min(q + 1, self.taps)
                    w = self._weights()
                    norm = np.convolve(np.ones(taps), w[:taps])[taps - 1]
                    for j in range(recent.shape[1]):
                        smoothed[-1, j] = np.convolve(errors[n - taps:, j], w[:taps])[taps - 1] / norm
                if s and n > L:  # rows whose smoothing now starts later: as _smooth smooths them
                    first = min(self.taps - 1, n - 1 - L)
                    smoothed[L:L + first] = self._smooth(errors, first)[L:L + first]
                self._last = (self.net_, (L, self.span_), np.array(recent), errors, smoothed)
                return smoothed
        errors = self._errors(recent)
        smoothed = self._smooth(errors)
        self._last = (self.net_, (L, self.span_), np.array(recent), errors, smoothed)
        return smoothed

    # -- the dynamic threshold ---------------------------------------------------------------------------
    @property
    def pad(self) -> int:
        """Rows each error at or above epsilon is widened by, either side (telemanom's error_buffer - 1)."""
        return (int(self.buffer) if self.buffer is not None else max(1, self.history // 20)) - 1

    def _epsilon(self, h: np.ndarray) -> tuple[float, bool]:
        """epsilon of a history of smoothed errors (its last value the row being scored), and whether that
        row's sequence survives pruning (``dynamic.dynamic_epsilon``)."""
        epsilon = dynamic_epsilon(h, self.pad)
        if h[-1] < epsilon or self.prune == 0:
            return epsilon, True
        return epsilon, self._survives(h, epsilon)

    def _survives(self, h: np.ndarray, epsilon: float) -> bool:
        """Pruning (telemanom's prune_anoms): the maxima of the sequences (errors at or above epsilon,
        widened by the buffer) sorted down and followed by the largest error outside them; a sequence stays
        when some drop of at least ``prune`` lies at or below it (``events.prune``, the rule offline runs
        apply to events). Whether the last row's sequence stays."""
        found = spans(_widen(h[None, :] >= epsilon, self.pad)[0])
        return len(found) - 1 in prune(h, found, self.prune)

    def _normalise(self, smoothed: np.ndarray, hist: np.ndarray, first: int) -> np.ndarray:
        """Contributions of rows ``first``.. of ``smoothed`` (n, d) given ``hist``: the training history
        followed by the total smoothed errors of every forecast row (row i of smoothed is hist[offset + i])."""
        n, d = smoothed.shape
        out = np.zeros((n, d))
        rows = np.arange(max(first, self.lags_), n)
        if not len(rows):
            return out
        total = smoothed[rows].sum(axis=1)
        epsilon = self._epsilons(hist, len(self.history_) - self.lags_ + rows)
        ratio = total / epsilon
        out[rows] = smoothed[rows] / epsilon[:, None]
        for j in np.flatnonzero((total >= epsilon) & (ratio > 0)) if self.prune else []:
            k = len(self.history_) - self.lags_ + rows[j]
            if not self._survives(hist[max(0, k - self.history + 1):k + 1], epsilon[j]):
                out[rows[j]] *= (1 - self.prune) / ratio[j]
        return out

    def _epsilons(self, hist: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """epsilon of each row whose error is hist[k], k in ``ends`` (consecutive): over the ``history`` errors
        up to it, fewer at the start (``dynamic.dynamic_epsilons``, in blocks of about 2^17 numbers, which
        stay in cache)."""
        out = np.empty(len(ends))
        H, step = self.history, max(1, 2**17 // self.history)
        grow = int(np.searchsorted(ends, H - 1))  # rows with fewer than ``history`` errors before them
        for s in range(0, grow, step):
            k = ends[s:min(s + step, grow)]
            W = np.broadcast_to(hist[:k[-1] + 1], (len(k), k[-1] + 1))
            out[s:s + len(k)] = dynamic_epsilons(W, self.pad, sizes=k + 1)
        windows = sliding_window_view(hist, H) if len(hist) >= H else None
        for s in range(grow, len(ends), step):
            k = ends[s:s + step]
            out[s:s + len(k)] = dynamic_epsilons(windows[k[0] - H + 1:k[-1] - H + 2], self.pad)
        return out

    def _contributions(self, X: np.ndarray, first: int, smoothed: np.ndarray | None = None) -> np.ndarray:
        smoothed = self._smoothed(X) if smoothed is None else smoothed
        if not self.dynamic:
            return np.nan_to_num(smoothed, nan=0.0)[first:]
        total = smoothed.sum(axis=1)
        hist = np.concatenate([self.history_, total[np.isfinite(total)]])
        return self._normalise(smoothed, hist, first)[first:]

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self._contributions(X, 0)

    def _score_from(self, X: np.ndarray, first: int) -> np.ndarray:
        """Rows from ``first`` only: the rows before are context, whose own thresholds (one dynamic_epsilon over
        ``history`` errors each) a stream's batch computed and threw away, 2,250 for every 128 rows scored."""
        lo = max(0, first - self.context + 1)
        return self._contributions(X[lo:], first - lo)

    def _score_last(self, recent: np.ndarray) -> np.ndarray:
        return self._contributions(recent, len(recent) - 1, self._smoothed_last(recent))[-1]

    def _first_parts(self, Z: list[np.ndarray], cuts: list[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """No twin for the dynamic threshold: the held-out rows only report the rate it gives there."""
        return ([], []) if self.dynamic else super()._first_parts(Z, cuts)

    def _set_threshold(self, scores: np.ndarray) -> None:
        if not self.dynamic:
            super()._set_threshold(scores)
            return
        super()._set_threshold(scores)  # checks the held-out scores
        log.info("%s: the dynamic threshold flags %.4f of the held-out normal rows (fpr %.4f is not used)",
                 self.name, float((scores >= 1.0).mean()), self.fpr)
        self.threshold_ = 1.0
        self._threshold_fpr = None  # not set at fpr: changing it changes nothing

    def _check_state(self) -> None:
        if not 1 <= self.lags_ <= 1024 or not 1 <= self.span_ <= 10_000:
            raise ValueError(f"lags {self.lags_} or smoothing span {self.span_} out of range")
        h = np.asarray(self.history_, dtype=np.float64)
        if h.ndim != 1 or len(h) > self.history or not np.isfinite(h).all() or (h < 0).any():
            raise ValueError(f"history of shape {h.shape} is not at most {self.history} non-negative numbers")
        self.history_ = h
