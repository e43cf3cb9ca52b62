"""Subsequence kNN (TSB-AD's Sub-KNN, trained on normal operation): a row is as anomalous as the window
ending at it is far from the windows of normal operation.

Every window of ``window_`` rows (all metrics, flattened, time-major) of the training series goes into a
bank (at most ``max_bank`` windows and MAX_BANK_FLOATS numbers, an even subsample past that). A row's
score is the root-mean-square difference, per time step, between its window and the k-th nearest window
of the bank; the squared differences of that neighbour, summed per metric, split it into per-metric
contributions. faiss finds the k nearest (exact flat L2, float32); their distances are then computed
again exactly (float64), so a window scores the same in a batch and alone in a stream. Windows of one number
(a univariate series, window 1) are searched exactly in float64 instead (``_one_number``).

A stream's single window is searched without reading the whole bank where it can be: the bank's windows
are also kept projected on their first PRUNE_DIMS principal axes, and a projected distance is a lower bound
of the true one (the axes are orthonormal). The few windows whose bound beats the nearest window's true
distance are measured in full: the same neighbours as the full product, from about a tenth of the memory
on a series with a shape (NAB's machine_temperature with a bank of up to 20,000 windows of 125 rows, as a
model fitted on a long training series has: a stream's learning update 310-340 -> 86-117 us a row). On
noise the bound prunes little, and the full vector-matrix product is taken (faiss takes 5x longer for one
query): there the cost grows with the bank (window x bank numbers a row).

The first ``window_ - 1`` rows of a series have a shorter past: they are compared over the rows that
exist, with the same stretch at the end of each bank window (edge padding would invent a flat start that
normal operation never had, and flag the start of every series).

Online learning (``partial_fit``) appends each new normal window to the bank until it holds
``online_floats`` numbers (or ``max_bank`` windows, or the fitted bank's size if that is larger), then
replaces the oldest (a FIFO): memory stays bounded, and so does a stream's search. The default, 2^18
numbers (1 MB), is what one row's full search reads in about 40 us on one core, so that a learning
stream's row stays under 100 us: with 211-row windows it keeps the last 1,242 windows (4.3 days of
5-minute rows). Unbounded (up to ``max_bank``), NAB's Twitter_volume_KO (15,000 rows) learned a bank of
15,000 windows and took 360-470 us a row; at 2^19 numbers 119 us.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import ContextManager

import faiss
import numpy as np
from pydantic import Field

import normalcy.numerics.ann  # noqa: F401  (sets faiss's BLAS threshold the project uses)
from normalcy.numerics import threads
from normalcy.series.base import SeriesDetector, SeriesParams
from normalcy.series.windows import flat_windows, inside

MAX_BANK_FLOATS = 2**25  # 128 MB of float32 windows at most
_BLOCK_FLOATS = 2**18  # a one-row product's block of the bank: 1 MB, on one BLAS thread
_CHUNK_FLOATS = 2**22  # rows scored at a time: their k neighbours' differences take at most 32 MB
PRUNE_DIMS = 8  # principal axes of the bank a stream's search bounds distances on
PRUNE_FROM = 48  # numbers a window must have for that search (a shorter one: the full product is as cheap)
PRUNE_FLOATS = 2**18  # numbers the bank must hold for it (a smaller bank's full product takes under 30 us)
_PRUNE_SHARE = 8  # the search measures at most 1/8 of the bank in full, else it takes the full product
_PRUNE_PAUSE = 32  # rows a stream searches in full after the bound failed to prune
ONE_THREAD_WORK = 2**24  # products a search makes under which faiss runs on one thread (``_threads_for``)


class SubsequenceKNN(SeriesDetector):
    """Distance of each row's window to the k-th nearest window of normal operation."""

    name = "knn"

    class Params(SeriesParams):
        k: int = Field(1, ge=1, le=100)
        max_bank: int = Field(20_000, ge=16, le=1_000_000)
        online_floats: int = Field(2**18, ge=2**10, le=MAX_BANK_FLOATS)  # numbers online learning grows the bank to

    bank_: np.ndarray  # (m, window_ * d) float32 windows of normal operation, less centre_
    centre_: np.ndarray  # (window_ * d,) float64, the mean training window: distances in float32 lose less
    fifo_: int  # where the next online window goes once the bank is full (its oldest window)

    @property
    def capacity(self) -> int:
        """Windows the bank may hold: max_bank, fewer for wide windows (MAX_BANK_FLOATS)."""
        return max(1, min(self.max_bank, MAX_BANK_FLOATS // (self.window_ * len(self.columns_))))

    @property
    def online_capacity(self) -> int:
        """Windows online learning grows the bank to: ``online_floats`` numbers, at most ``capacity``."""
        return max(1, min(self.capacity, self.online_floats // (self.window_ * len(self.columns_))))

    def _fit(self, X: np.ndarray, progress: bool) -> None:
        windows = flat_windows(X, self.window_)
        ok = inside(self.starts, len(X), self.window_)
        keep = ok[np.unique(np.linspace(0, len(ok) - 1, min(len(ok), self.capacity)).round().astype(np.int64))]
        step = max(1, _CHUNK_FLOATS // windows.shape[1])
        if len(keep) <= step:
            self.centre_ = windows[keep].mean(axis=0)
            self.bank_ = np.ascontiguousarray(windows[keep] - self.centre_, dtype=np.float32)
        else:  # a chunk of windows at a time: the float64 copies of them all, two at once, took 4x the bank's memory
            total = np.add.reduce(windows[keep[:step]], axis=0)  # (8,388 windows of 4,000 rows: 980 MB at fit)
            for s in range(step, len(keep), step):  # the same sums, in the same order, as mean(axis=0)'s
                total = np.add.reduce(np.concatenate([total[None], windows[keep[s:s + step]]]), axis=0)
            self.centre_ = total / len(keep)
            self.bank_ = np.empty((len(keep), windows.shape[1]), np.float32)
            for s in range(0, len(keep), step):
                self.bank_[s:s + step] = windows[keep[s:s + step]] - self.centre_
        self.fifo_ = 0
        self._ready()

    def _ready(self) -> None:
        """Derived arrays for one-row search (after fit, load or a change of the bank)."""
        self._norms = np.einsum("ij,ij->i", self.bank_, self.bank_)
        self._bank_t: np.ndarray | None = None  # the bank transposed, made when a stream first needs it
        self._tails: np.ndarray | None = None  # ``_tail_norms``' table, made when a short window first needs it
        self._last64: np.ndarray | None = None  # the bank's last numbers in float64 (``_one_number``), likewise
        self._store: np.ndarray | None = None  # room for online windows (partial_fit), made when first needed
        self._axes: np.ndarray | None = None  # (PRUNE_DIMS, L) principal axes of the bank (and the bank's bound
        self._skip = 0  # terms), made when a stream first needs them; rows to search in full before bounding

    @property
    def _candidates(self) -> int:
        """Neighbours found in float32, then measured again exactly: the k nearest. Float32's rounding, which
        differs between a batch and a single row, can only swap neighbours whose squared distances differ by
        about 1e-7 of the windows' squared length (windows of one number, where that is a score's size, are
        searched exactly: ``_one_number``)."""
        return min(self.k, len(self.bank_))

    def _contributions(self, Q: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """(m, d) contributions of centred windows Q (m, L), float64, L the last numbers of a window, from
        candidate neighbours idx (m, c): the exact k-th nearest's squared differences per metric, scaled to
        sum to the root-mean-square difference per time step."""
        L = Q.shape[1]
        if idx.shape[1] == 1:  # one candidate (k = 1, the default): no (m, c, L) differences to sort and gather,
            diff = Q - self.bank_[idx[:, 0], -L:]  # which took half of an offline score's time past faiss's search
            sq = np.einsum("mj,mj->m", diff, diff)
        else:
            diffs = Q[:, None, :] - self.bank_[idx][..., -L:]  # (m, c, L) float64
            sqs = np.einsum("mcj,mcj->mc", diffs, diffs)
            rows = np.arange(len(Q))
            kth = np.argsort(sqs, axis=1, kind="stable")[:, min(self.k, sqs.shape[1]) - 1]
            diff, sq = diffs[rows, kth], sqs[rows, kth]
        steps = L // len(self.columns_)
        per_metric = (diff ** 2).reshape(len(Q), steps, -1).sum(axis=1)
        norm = np.sqrt(steps * sq)
        return np.divide(per_metric, norm[:, None], out=np.zeros_like(per_metric), where=norm[:, None] > 0)

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self._score_from(X, 0)

    def _score_from(self, X: np.ndarray, first: int) -> np.ndarray:
        w = self.window_
        held = self._bank_t, self._tails, self._last64
        head = [self._one(X[:t + 1], self._transposed()) for t in range(first, min(len(X), w - 1))]
        release = first == 0 and held[0] is None and self._store is None  # made for these rows only: a fitted model
        if release:  # scoring a whole series holds no more bank-sized arrays after
            self._bank_t, self._tails = None, held[1]
        W = flat_windows(X[max(0, first - w + 1):], w)  # the whole windows ending at first or later
        step = max(1, _CHUNK_FLOATS // (self._candidates * max(1, W.shape[1])))
        out = [np.reshape(head, (len(head), X.shape[1]))]
        for s in range(0, len(W), step):
            Q = W[s:s + step] - self.centre_
            if Q.shape[1] == 1:
                idx = self._one_number(Q[:, 0])
            else:
                with _threads_for(Q.size * len(self.bank_)):
                    _, idx = faiss.knn(np.ascontiguousarray(Q, dtype=np.float32), self.bank_, self._candidates)
            out.append(self._contributions(Q, idx))
        if release:
            self._last64 = held[2]
        return np.concatenate(out)

    def _transposed(self) -> np.ndarray:
        """The bank transposed, contiguous (made once): a short window's products read its last rows, which in
        ``bank_.T``, a strided view, took twice as long (a series' first rows, offline and in Stream.run)."""
        if self._bank_t is None:
            self._bank_t = np.ascontiguousarray(self.bank_.T)
        return self._bank_t

    def _score_last(self, recent: np.ndarray) -> np.ndarray:
        self._transposed()
        rows = recent[-self.window_:]
        L, bank = rows.size, self.bank_
        if self.k == 1 and L == bank.shape[1] and bank.size <= _BLOCK_FLOATS and not (
                L >= PRUNE_FROM and bank.size >= PRUNE_FLOATS):  # a stream's common row: what _one would do
            return self._nearest(rows.reshape(-1) - self.centre_, self._bank_t)
        whole = L == bank.shape[1] >= PRUNE_FROM and bank.size >= PRUNE_FLOATS
        keep = self._pruned(rows.reshape(-1) - self.centre_) if whole else None
        return self._one(rows, self._bank_t, keep)

    def _project(self) -> None:
        """The bank's first PRUNE_DIMS principal axes (from at most 2,048 of its windows), and the bank's
        bound terms: (PRUNE_DIMS + 1, m), -2 x the windows projected on the axes and their squared norms, so
        that one vector-matrix product gives every bound. Any orthonormal axes bound distances from below, so
        they need not follow the bank's drift."""
        sample = self.bank_[np.unique(np.linspace(0, len(self.bank_) - 1, 2048).round().astype(np.int64))]
        _, _, vt = np.linalg.svd(sample.astype(np.float64) - sample.mean(axis=0), full_matrices=False)
        self._axes = np.ascontiguousarray(vt[:PRUNE_DIMS], dtype=np.float32)
        m, r = len(self.bank_), len(self._axes)
        self._bstore = np.empty((r + 1, m if self._store is None else self._store.shape[0]), np.float32)
        self._bstore[:, :m] = self._terms(self.bank_)
        self._bounds, self._pmax, self._skip = self._bstore[:, :m], float(self._bstore[r, :m].max()), 0

    def _terms(self, windows: np.ndarray) -> np.ndarray:
        """(PRUNE_DIMS + 1, n) bound terms of n windows: -2 x their projections, and their squared norms."""
        out = np.empty((len(self._axes) + 1, len(windows)), np.float32)
        np.matmul(self._axes, windows.T, out=out[:-1])
        out[-1] = np.einsum("ij,ij->j", out[:-1], out[:-1])
        out[:-1] *= -2
        return out

    def _pruned(self, q: np.ndarray) -> np.ndarray | None:
        """Indices of the bank's windows that may be among the candidates nearest to the centred window q
        (all of them are among these), or None where the bound prunes too little to pay; then the bound is
        not tried again for _PRUNE_PAUSE rows (a noisy stretch)."""
        if self._skip:
            self._skip -= 1
            return None
        if self._axes is None:
            self._project()
        m, c = len(self.bank_), self._candidates
        pq = np.append(self._axes @ q.astype(np.float32), np.float32(1))
        lb = pq @ self._bounds  # the projected squared distance, less pq's squared norm
        first = np.array([lb.argmin()]) if c == 1 else np.argpartition(lb, c - 1)[:c]
        diff = q - self.bank_[first]
        pn = float(pq[:-1] @ pq[:-1])
        bound = float(np.sort(np.einsum("cj,cj->c", diff, diff))[-1])
        # float32 rounding of the bounds: a margin of 1e-5 of the squared lengths, far above it
        keep = np.flatnonzero(lb <= bound - pn + 1e-5 * (bound + pn + self._pmax))
        if len(keep) <= max(c, m // _PRUNE_SHARE):
            return keep
        self._skip = _PRUNE_PAUSE
        return None

    def _one(self, rows: np.ndarray, bank_t: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
        """(d,) contributions of the window ending at the last of ``rows`` (at most window_ rows, fewer at
        the start of a series), its neighbours found with ``bank_t`` (the bank transposed, or a view), or
        among the bank's windows ``keep`` only (a whole window, which ``_pruned`` found them for)."""
        L = rows.size
        q = rows.reshape(-1) - self.centre_[-L:]
        if keep is None and self._candidates == 1 and bank_t.shape[1] * L <= _BLOCK_FLOATS:
            return self._nearest(q, bank_t)
        if L == 1:  # the one-number search, as offline
            idx = self._one_number(q)[0]
        else:
            if keep is not None:
                d2 = self.bank_[keep] @ q.astype(np.float32)
                d2 *= -2
                d2 += self._norms[keep]
            else:
                part = bank_t[-L:]
                d2 = _products(q.astype(np.float32), part)
                d2 *= -2
                d2 += self._norms if L == bank_t.shape[0] else self._tail_norms(L)
            if self._candidates == 1:
                idx = np.array([d2.argmin()])
            else:  # a few argmins beat a partition of the whole bank
                idx = np.empty(self._candidates, np.int64)
                for i in range(len(idx)):
                    idx[i] = d2.argmin()
                    d2[idx[i]] = np.inf
            if keep is not None:
                idx = keep[idx]
        # as _contributions for one row, without its batch indexing (a stream's row has 100 us)
        diff = q - self.bank_[idx, -L:]
        sq = np.einsum("cj,cj->c", diff, diff)
        j = np.argsort(sq, kind="stable")[min(self.k, len(sq)) - 1]
        steps = L // len(self.columns_)
        per_metric = (diff[j] * diff[j]).reshape(steps, -1).sum(axis=0)
        return per_metric / np.sqrt(steps * sq[j]) if sq[j] > 0 else np.zeros_like(per_metric)

    def _nearest(self, q: np.ndarray, bank_t: np.ndarray) -> np.ndarray:
        """``_one`` for the common case of a stream's row, k = 1 and a bank within one product's block: the
        same neighbour and numbers in a third of the array calls (a call costs about a microsecond, and a
        small bank's search takes a few: ``auto`` makes five such searches a row)."""
        L = len(q)
        if L == 1:  # the one-number search, as offline
            i = int(self._one_number(q)[0, 0])
        else:
            d2 = q.astype(np.float32) @ bank_t[-L:]
            d2 *= -2
            d2 += self._norms if L == bank_t.shape[0] else self._tail_norms(L)
            i = int(d2.argmin())
        diff = q - self.bank_[i, -L:]
        d = len(self.columns_)
        if d == 1:  # the root-mean-square difference per time step, all of it the one metric's
            return np.array([math.sqrt(float(diff @ diff) / L)])
        per_metric = (diff * diff).reshape(-1, d).sum(axis=0)
        total = float(per_metric.sum())
        return per_metric / math.sqrt(L // d * total) if total > 0 else np.zeros(d)

    def _one_number(self, q: np.ndarray) -> np.ndarray:
        """(n, candidates) indices of the bank's windows nearest to windows of one number (centred, q (n,)), found
        exactly, offline and in a stream alike (the first of equally near ones). Why: such windows (a univariate
        series, window 1: auto's shortest member) lie so close together that float32's |q|^2 - 2qb + |b|^2,
        which faiss (offline) and a stream's product round differently, picked other neighbours: a streamed row
        scored up to 9x its offline score, and neither was the nearest."""
        if self._last64 is None:
            self._last64 = self.bank_[:, -1].astype(np.float64)
        last, c = self._last64, self._candidates
        out = np.empty((len(q), c), np.int64)
        step = max(1, _CHUNK_FLOATS // len(last))
        for s in range(0, len(q), step):
            d = last[None] - q[s:s + step, None]
            np.abs(d, out=d)
            out[s:s + step] = d.argmin(axis=1)[:, None] if c == 1 else np.argpartition(d, c - 1, axis=1)[:, :c]
        return out

    def _tail_norms(self, L: int) -> np.ndarray:
        """(m,) squared norms of the last L numbers of the bank's windows, against which a window at the start
        of a series (its rows that exist) is compared: from a table of every length, made once per bank (sums
        in float64, kept in float32), where each such row summed its L x m squares again, as many numbers as
        its product reads (a stream's first 511 rows on a bank of 9,089 windows of 512 rows: 1.3 ms a row)."""
        if self._tails is None:
            m, d = len(self.bank_), len(self.columns_)
            tails = np.empty((self.window_, m), np.float32)  # row k: the last k + 1 time steps
            for s in range(0, m, 4096):
                part = self.bank_[s:s + 4096].astype(np.float64).reshape(-1, self.window_, d)
                tails[:, s:s + 4096] = np.cumsum(np.einsum("mwd,mwd->wm", part, part)[::-1], axis=0)
            self._tails = tails
        return self._tails[L // len(self.columns_) - 1]

    def _partial_fit(self, recent: np.ndarray) -> None:
        if len(recent) < self.window_:  # an edge-padded window is not one normal operation had
            return
        window = (recent[-self.window_:].reshape(-1) - self.centre_).astype(np.float32)
        m, cap = len(self.bank_), self.online_capacity
        if self._store is None or (m < cap and m == len(self._store)):
            self._grow(max(m, min(cap, max(2 * m, 1024))))  # doubling: O(1) a row, amortised
        if m < cap:
            i, m = m, m + 1
        else:  # full: a bank fitted larger than the online capacity keeps its size
            i, self.fifo_ = self.fifo_, (self.fifo_ + 1) % m
        self._store[i], self._tstore[:, i], self._nstore[i] = window, window, window @ window
        self.bank_, self._bank_t, self._norms = self._store[:m], self._tstore[:, :m], self._nstore[:m]
        self._tails = self._last64 = None
        if self._axes is not None:
            self._bstore[:, i] = self._terms(window[None])[:, 0]
            self._bounds = self._bstore[:, :m]
            self._pmax = max(self._pmax, float(self._bstore[-1, i]))  # a bound on the norms, old ones included

    def learn_block(self, Z: np.ndarray, first: int) -> None:
        """Learn rows Z[first:] in order, each with the rows before it as its past: ``_partial_fit`` row by
        row, the windows written in one go (a stream learns 128 rows at a time)."""
        w = self.window_
        start = max(first, w - 1)  # rows whose whole window is in Z (partial_fit skips the others)
        if start < len(Z):
            self.learn_windows(flat_windows(Z[start - w + 1:], w))

    def learn_windows(self, windows: np.ndarray) -> None:
        """Learn whole (n, window_ * d) windows in order: the bank after them is the one n ``_partial_fit``
        calls leave (it grows to ``online_capacity``, then each replaces the oldest window)."""
        W = (np.asarray(windows, dtype=np.float64) - self.centre_).astype(np.float32)
        m, cap = len(self.bank_), self.online_capacity
        if self._store is None or (m < cap and len(self._store) < min(cap, m + len(W))):
            self._grow(max(m, min(cap, max(2 * m, 1024, m + len(W)))))
        add = min(len(W), max(0, cap - m))  # windows that grow the bank, then each replaces the oldest
        m0, m = m, m + add
        rest = len(W) - add
        pos = np.concatenate([np.arange(m0, m), (self.fifo_ + np.arange(rest)) % m]) if len(W) else np.zeros(0, int)
        if rest:
            self.fifo_ = int((self.fifo_ + rest) % m)
        last = len(pos) - 1 - np.unique(pos[::-1], return_index=True)[1]  # a place written twice keeps the later
        idx, W = pos[last], W[last]
        if not len(idx):
            return
        self._store[idx], self._tstore[:, idx] = W, W.T
        self._nstore[idx] = np.einsum("ij,ij->i", W, W)
        self.bank_, self._bank_t, self._norms = self._store[:m], self._tstore[:, :m], self._nstore[:m]
        self._tails = self._last64 = None
        if self._axes is not None:
            terms = self._terms(W)
            self._bstore[:, idx] = terms
            self._bounds = self._bstore[:, :m]
            self._pmax = max(self._pmax, float(terms[-1].max()))

    def _grow(self, rows: int) -> None:
        """Room for ``rows`` windows (the bank, its transpose and norms), the current ones copied in."""
        m = len(self.bank_)
        self._store = np.empty((rows, self.bank_.shape[1]), np.float32)
        self._tstore = np.empty((self.bank_.shape[1], rows), np.float32)
        self._nstore = np.empty(rows, np.float32)
        self._store[:m], self._tstore[:, :m], self._nstore[:m] = self.bank_, self.bank_.T, self._norms
        if self._axes is not None:
            self._bstore = np.empty((len(self._axes) + 1, rows), np.float32)
            self._bstore[:, :m] = self._bounds

    def _check_state(self) -> None:
        d = self.window_ * len(self.columns_)
        if self.bank_.ndim != 2 or self.bank_.shape[1] != d or not 1 <= len(self.bank_) <= self.capacity:
            raise ValueError(f"bank of shape {self.bank_.shape} does not fit window {self.window_} x "
                             f"{len(self.columns_)} column(s) and at most {self.capacity} windows")
        if self.centre_.shape != (d,):
            raise ValueError(f"centre of shape {self.centre_.shape}, expected ({d},)")
        if not 0 <= self.fifo_ < len(self.bank_):
            raise ValueError(f"fifo position {self.fifo_} outside the bank's {len(self.bank_)} windows")
        self.bank_ = np.ascontiguousarray(self.bank_, dtype=np.float32)
        self._ready()


def _threads_for(work: int) -> ContextManager[None]:
    """faiss on one thread for a search of under ONE_THREAD_WORK products (queries x bank x numbers a window):
    on 2 busy cores its OpenMP threads took 20-30 ms to start and join for the 10 held-out rows of a 50-row
    series (a 10,000-series set: 28 of its 45 ms a series), where one thread searches in 10 us."""
    if work >= ONE_THREAD_WORK:
        return nullcontext()
    return threads(faiss.omp_get_max_threads, faiss.omp_set_num_threads, 1)


def _products(q: np.ndarray, bank_t: np.ndarray) -> np.ndarray:
    """q @ bank_t, in blocks of columns under OpenBLAS's threading threshold: on 2 busy cores its two-thread
    vector-matrix product of a 125 x 6,276 bank took 3-5 ms against 0.1 ms on one thread."""
    out = np.empty(bank_t.shape[1], np.float32)
    step = max(1, _BLOCK_FLOATS // len(q))
    for s in range(0, len(out), step):
        np.matmul(q, bank_t[:, s:s + step], out=out[s:s + step])
    return out
