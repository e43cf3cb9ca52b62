"""The autoencoder of Borghesi et al. (AAAI 2019, "Anomaly detection using autoencoders in high
performance computing systems"): learn the normal correlations of a machine's metrics, flag the rows the
network cannot reconstruct, and say which metrics it failed on.

As in the paper, the input is the d metrics of one time step, the network is dense with one hidden layer
*larger* than its input (``hidden`` times the input, ReLU) kept sparse by an L1 penalty on its activations,
it is trained on normal operation only (mean squared error, Adam), and the reconstruction error of each
metric is kept: a row's score is the sum of its per-metric squared errors, and every alarm names its metrics.

One time step says nothing about a univariate series (a value cannot be reconstructed from the others),
so ``span`` rows are given to the network instead when the series has fewer than ``MIN_METRICS`` metrics:
``span=None`` means 1 row for 4 or more metrics (the paper's setting), the detector's window otherwise
(at most 100 rows and 400 numbers, ``input_span``).
The score is then the squared error of the newest row of the span (the row being scored).

A row's score is split over its metrics by reconstruction-based contribution (``explained``): the share of
a metric is how much of the error a deviation of that metric alone accounts for, not its own squared error.
A network trained on correlated metrics reconstructs a deviation of one of them by moving the others too, so
the squared errors smear it over them: on bench/series_explain.py's planted anomalies (8 metrics, 3 seeds)
the first metric named was the planted one in 9 of 24, and is now in 18 (the score is unchanged).

What the neural series detectors (this one, HypAD, the forecaster) share lives here too: ``TrainedParams``
(the training budget), ``NeuralDetector`` (a network trained in float32, scored in float64 so that a row
scores the same in a batch and in a stream), ``WindowDetector`` (a network scoring the window ending at
each row) and ``train_network``, the small, bounded, deterministic training loop: a fixed number of Adam steps on seeded mini-batches (at most MAX_EPOCHS
passes over the data), stopped early only by a wall-clock budget (with a warning, since results then
depend on the machine's speed).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, ContextManager

import numpy as np
import torch
from pydantic import Field
from torch import nn

from normalcy.detectors.base import LearningRate, Seconds
from normalcy.errors import InputError
from normalcy.numerics import threads
from normalcy.series.base import SeriesDetector, SeriesParams
from normalcy.series.windows import flat_windows, inside

log = logging.getLogger("normalcy")

MIN_METRICS = 4  # fewer metrics than this: the network sees a window of rows, not one row
MAX_TRAIN_WINDOWS = 20_000  # training windows at most (an even subsample past that): bounded memory and time
_SCORE_BATCH = 8192  # windows scored per forward pass
MAX_EPOCHS = 100  # passes over the training windows at most, whatever ``steps`` says
MAX_SPAN = 100  # rows a network sees at most by default (TadGAN's window)
MAX_INPUTS = 400  # and numbers (rows x metrics): ASD's 19 metrics get 21 rows, a univariate series 100
MAX_EXPLAINED = 50  # metrics up to which the autoencoder splits a score by ``explained`` (d x d x hidden numbers a
# row: 0.02-0.04 ms for ASD's 19 metrics, 0.16 ms for 50, on a busy 2-core machine); past it, by the squared errors
_EXPLAIN_NUMBERS = 1 << 22  # of the local Jacobians ``explained`` holds at once (32 MB)


def input_span(window: int, d: int) -> int:
    """Rows a window network sees by default: the detector's window, cut so the input stays CPU-small."""
    return max(1, min(window, MAX_SPAN, max(8, MAX_INPUTS // d)))


def one_thread() -> ContextManager[None]:
    """Run torch on one thread, then restore the caller's setting. These networks are tiny: a second
    thread only adds synchronisation, and on a busy 2-core machine it made a training step 60x slower
    (67 ms instead of 1 ms)."""
    return threads(torch.get_num_threads, torch.set_num_threads, 1)


def train_network(
    net: nn.Module,
    inputs: torch.Tensor,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    steps: int,
    batch: int,
    lr: float,
    budget_s: float,
    what: str,
) -> dict[str, float]:
    """Train ``net`` for ``steps`` Adam steps on mini-batches of ``inputs`` (rows drawn by the caller's
    seeded torch RNG); ``loss_fn(batch_rows)`` returns the loss. Stops early at ``budget_s`` seconds with a
    warning. Returns how training went (steps, seconds, first and last mean loss) for model.json."""
    with one_thread():
        return _train(net, inputs, loss_fn, steps=steps, batch=batch, lr=lr, budget_s=budget_s, what=what)


def _train(net: nn.Module, inputs: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor], *, steps: int,
           batch: int, lr: float, budget_s: float, what: str) -> dict[str, float]:
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    n = len(inputs)
    batch = min(batch, n)
    steps = min(steps, max(1, -(-MAX_EPOCHS * n // batch)))  # a short series is not learned by heart
    start, done, first, last = time.perf_counter(), 0, float("nan"), float("nan")
    recent: list[float] = []
    for step in range(steps):
        idx = torch.randint(0, n, (batch,))
        loss = loss_fn(inputs[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        recent.append(float(loss.detach()))
        if step == 49 or steps < 50 and step == steps - 1:
            first = float(np.mean(recent))
        if len(recent) > 50:
            recent.pop(0)
        done = step + 1
        if time.perf_counter() - start > budget_s:
            if done < steps:
                log.warning("%s: training stopped at its %.0f s budget after %d of %d steps (results now depend "
                            "on this machine's speed; raise budget_s or lower steps)", what, budget_s, done, steps)
            break
    last = float(np.mean(recent)) if recent else last
    net.eval()
    return {"steps": done, "seconds": round(time.perf_counter() - start, 3), "first_loss": first, "last_loss": last}


def training_windows(X: np.ndarray, span: int, starts: np.ndarray, param: str = "span") -> torch.Tensor:
    """The windows of ``span`` rows of X (n, d) that lie inside one training series (``starts``: where
    each begins), as float32 rows (span * d, time-major), at most MAX_TRAIN_WINDOWS (evenly spaced). None is an
    InputError naming ``param``, the parameter that set the span: a span longer than every series was a
    ZeroDivisionError inside training."""
    ok = inside(starts, len(X), span)
    if not len(ok):
        longest = int(np.diff(np.append(starts, len(X))).max())
        raise InputError(f"{param}: windows of {span} rows, but the longest training series has {longest} rows to "
                         f"fit on: give a smaller {param} or a longer series")
    keep = ok[np.unique(np.linspace(0, len(ok) - 1, min(len(ok), MAX_TRAIN_WINDOWS)).round().astype(np.int64))]
    return torch.from_numpy(np.ascontiguousarray(flat_windows(X, span)[keep], dtype=np.float32))


def batched(net: Callable[[torch.Tensor], torch.Tensor], W: np.ndarray) -> list[torch.Tensor]:
    """``net`` (float64) on the rows of W in batches, without gradients."""
    out = []
    with torch.no_grad(), one_thread():
        for s in range(0, len(W), _SCORE_BATCH):
            out.append(net(torch.from_numpy(np.array(W[s:s + _SCORE_BATCH], dtype=np.float64))))  # a copy: W may be a view
    return out


def window_scores(score: Callable[[np.ndarray], np.ndarray], X: np.ndarray, span: int) -> np.ndarray:
    """(n, d) contributions of the rows of X, each from the window of ``span`` rows ending at it
    (``score``: windows (m, span * d) -> (m, d)). The first span - 1 rows have no full window and score 0:
    a network that was never shown a partial or edge-padded window cannot judge one (edge padding flagged
    the start of every series)."""
    n, d = X.shape
    out = np.zeros((n, d))
    W = flat_windows(X, span)
    # a batch at a time: what ``score`` holds of every window at once (reconstructions, hidden units) took 5 GB
    # for a million rows; each batch is the one ``batched`` ran alone, so the numbers are the same
    for s in range(0, len(W), _SCORE_BATCH):
        out[span - 1 + s:span - 1 + s + _SCORE_BATCH] = score(W[s:s + _SCORE_BATCH])
    return out


class TrainedParams(SeriesParams):
    """The training budget of the neural series detectors, declared once."""

    steps: int = Field(1000, ge=1, le=1_000_000)  # Adam steps (and at most MAX_EPOCHS passes over the data)
    batch: int = Field(64, ge=1, le=65536)
    lr: LearningRate = 1e-3
    budget_s: Seconds = 10.0  # training stops here (with a warning) whatever ``steps`` says


class NeuralDetector(SeriesDetector):
    """A series detector around one network, ``net_``: trained in float32 by ``train_network``, scored in
    float64 so that a row scores the same in a batch and alone in a stream."""

    Params = TrainedParams
    net_: nn.Module

    def _train(self, rows: torch.Tensor, loss: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Train ``net_`` on ``rows`` (``loss`` of a batch of them, calling ``self.net_``)."""
        self.net_.float()
        self._training = train_network(self.net_, rows, loss, steps=self.steps, batch=self.batch, lr=self.lr,
                                       budget_s=self.budget_s, what=self.name)
        self.net_.double()

    def metadata(self) -> dict:
        return dict(getattr(self, "_training", {}))


class WindowDetector(NeuralDetector):
    """A network that scores the window of ``span_`` rows ending at each row (``_window_scores``)."""

    span_: int

    @property
    def context(self) -> int:
        """The span, known from the settings before the network is fitted (``auto`` reads its members'
        contexts when it builds them)."""
        return self.span_ if hasattr(self, "span_") else self._span(len(self.columns_))

    def _span(self, d: int) -> int:
        """Rows the network sees: the ``span`` parameter, else the window (``input_span``)."""
        return int(self.span) if self.span is not None else input_span(self.window_, d)

    @property
    def blind(self) -> int:
        """The first span - 1 rows of a series have no whole window and score 0 (``window_scores``)."""
        return self.span_ - 1

    def _window_scores(self, W: np.ndarray) -> np.ndarray:
        """(m, d) contributions of the windows W (m, span_ * d)."""
        raise NotImplementedError

    def _score(self, X: np.ndarray) -> np.ndarray:
        return window_scores(self._window_scores, X, self.span_)

    def _score_last(self, recent: np.ndarray) -> np.ndarray:
        return window_scores(self._window_scores, recent[-self.span_:], self.span_)[-1]


class SparseAutoencoder(nn.Module):
    """Input -> ReLU hidden layer ``hidden`` times wider -> linear reconstruction (Borghesi et al.)."""

    def __init__(self, inputs: int, hidden: int) -> None:
        super().__init__()
        self.encode = nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU())
        self.decode = nn.Linear(hidden, inputs)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encode(x)
        return self.decode(h), h


def explained(diff: np.ndarray, active: np.ndarray, w_in: np.ndarray, w_out: np.ndarray) -> np.ndarray:
    """(m, d) contributions of rows whose newest-row reconstruction errors are ``diff`` (m, d): their squared
    errors' sum (the score, unchanged) split over the metrics by reconstruction-based contribution (Alcala and
    Qin, Automatica 2009). With J the network's Jacobian of the newest row's reconstruction with respect to its
    input there (w_out diag(active) w_in^T: ``active`` (m, hidden) the ReLU units that fire, ``w_in`` and
    ``w_out`` (d, hidden) the newest row's input and output weights), a deviation a of metric k alone leaves
    the error a (I - J) e_k, and metric k's share is the error it accounts for at the best a:
    ((I - J)^T r)_k^2 / ||(I - J) e_k||^2. Why: a network that learned how correlated metrics move together
    reconstructs one metric's deviation by moving the others, so the per-metric squared errors smear it over
    them, and a correlated metric was named first. One metric, or more than MAX_EXPLAINED (the Jacobians
    cost d x d x hidden a row): split by the squared errors."""
    sq = diff * diff
    m, d = diff.shape
    if d == 1 or d > MAX_EXPLAINED:
        return sq
    total = sq.sum(axis=1)
    pairs = (w_out[:, None, :] * w_in[None, :, :]).reshape(d * d, -1).T  # column i * d + k: w_out[i] * w_in[k]
    out = sq.copy()
    step = max(1, _EXPLAIN_NUMBERS // (d * d))
    for s in range(0, m, step):
        flat = np.asarray(active[s:s + step], dtype=np.float64) @ pairs  # J, row by row
        flat[:, ::d + 1] -= 1.0  # J - I
        gap = flat.reshape(-1, d, d)  # [n, i, k]
        along = np.einsum("nik,ni->nk", gap, diff[s:s + step]) ** 2  # ((I - J)^T r)_k^2
        reach = np.einsum("nik,nik->nk", gap, gap)  # ||(I - J) e_k||^2
        rbc = np.divide(along, reach, out=np.zeros_like(reach), where=reach > 1e-12)
        norm = rbc.sum(axis=1)
        ok = (norm > 0) & (total[s:s + step] > 0)
        out[s:s + step][ok] = total[s:s + step][ok, None] * (rbc[ok] / norm[ok, None])
    return out


class Autoencoder(WindowDetector):
    """Per-metric reconstruction error of a sparse, overcomplete dense autoencoder of normal rows."""

    name = "autoencoder"

    class Params(TrainedParams):
        span: int | None = Field(None, ge=1, le=512)  # rows the network sees; None: 1 for >= 4 metrics, else
        # the window (input_span: at most 100 rows and 400 numbers)
        hidden: int = Field(10, ge=1, le=64)  # hidden units per input (the paper: 10x the input)
        max_hidden: int = Field(512, ge=8, le=16384)  # and at most this many
        l1: float = Field(1e-5, ge=0, le=1)  # L1 penalty on the hidden activations (sparsity)

    net_: SparseAutoencoder

    def _span(self, d: int) -> int:
        """One row for MIN_METRICS metrics or more (the paper's setting), else as a window detector."""
        return 1 if self.span is None and d >= MIN_METRICS else super()._span(d)

    def _units(self) -> int:
        inputs = self.span_ * len(self.columns_)
        return min(self.hidden * inputs, self.max_hidden)

    def _build(self) -> None:
        self.net_ = SparseAutoencoder(self.span_ * len(self.columns_), self._units()).double()

    def _fit(self, X: np.ndarray, progress: bool) -> None:
        self.span_ = self._span(X.shape[1])
        self._build()

        def loss(x: torch.Tensor) -> torch.Tensor:
            rec, h = self.net_(x)
            return ((rec - x) ** 2).mean() + self.l1 * h.abs().sum(dim=1).mean()

        self._train(training_windows(X, self.span_, self.starts), loss)

    def _weights(self) -> tuple[np.ndarray, ...]:
        """The network's weights as numpy arrays (w1, b1, w2, b2, transposed: x @ w1 + b1), views made once per
        network."""
        weights = getattr(self, "_numpy", None)
        if weights is None or weights[0] is not self.net_:
            enc, dec = self.net_.encode[0], self.net_.decode
            weights = (self.net_, *(t.detach().numpy().T for t in (enc.weight, enc.bias, dec.weight, dec.bias)))
            self._numpy = weights
        return weights[1:]

    def _explained(self, diff: np.ndarray, active: np.ndarray) -> np.ndarray:
        """``explained`` with this network's newest-row weights."""
        w1, _, w2, _ = self._weights()
        d = len(self.columns_)
        return explained(diff, active, w1[-d:], w2[:, -d:].T)

    def _window_scores(self, W: np.ndarray) -> np.ndarray:
        """(m, d) contributions of the newest row of each window: its squared errors, split by ``explained``."""
        d = len(self.columns_)
        out = batched(self.net_, W)
        rec = torch.cat([r for r, _ in out]).numpy()
        active = torch.cat([h for _, h in out]).numpy() > 0
        return self._explained(W[:, -d:] - rec[:, -d:], active)

    def _score_last(self, recent: np.ndarray) -> np.ndarray:
        """The last row's contributions with the network's weights as numpy arrays: a stream's row in 6 us
        instead of 45 through torch (the same float64 arithmetic, to rounding)."""
        if len(recent) < self.span_:
            return np.zeros(len(self.columns_))
        w1, b1, w2, b2 = self._weights()
        d = len(self.columns_)
        x = recent[-self.span_:].reshape(-1)
        hidden = x @ w1 + b1
        diff = x[-d:] - (np.maximum(hidden, 0.0) @ w2[:, -d:] + b2[-d:])
        return self._explained(diff[None], hidden[None] > 0)[0]

    def _check_state(self) -> None:
        if not 1 <= self.span_ <= 512:
            raise ValueError(f"span {self.span_} outside 1..512")
