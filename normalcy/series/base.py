"""The one protocol every time-series detector follows.

A series detector learns normal behaviour from the rows of normal operation (n rows x d metrics) and
scores each row of a series with one non-negative contribution per metric; the row's score is their
sum, so every alarm can name the metrics that raised it. A subclass writes:

* ``Params``, its hyper-parameters (a subclass of ``SeriesParams``, which declares the common ones:
  ``fpr``, ``window``, ``holdout``, ``seed``). The base validates them and sets each as an attribute
  of the same name (``det.k``); nothing is declared twice;
* ``_fit(X, progress)``: learn from X (n, d), the standardised normal rows: several training series one
  after another, each beginning at a row of ``self.starts`` (``windows.inside`` picks the windows that
  do not straddle two);
* ``_score(X) -> (n, d)``: non-negative per-metric contributions. Causal: row t may use rows
  max(0, t - context + 1)..t only (``context``: ``window_`` unless the detector says more), so that a
  row scores the same in a whole series and in a stream. The first rows have a shorter past: a detector
  scores them on what exists (the subsequence detectors: the partial window) or on edge-padded input
  (X[0] repeated);

and may write ``_score_last(recent)`` (the last row's contributions, faster than ``_score`` for
streaming), ``_partial_fit(recent)`` (learn one more normal row online, bounded memory),
``_check_state()`` (raise ValueError when loaded arrays do not fit each other), ``_build()`` (create
networks after loading) and ``metadata()`` (extra model.json entries).

The learned state is the attributes annotated on the subclass whose names end in ``_`` (numpy arrays,
tensors, torch modules, numbers): they are saved in model.safetensors beside a model.json that holds
what the base learned (columns, window, threshold, standardisation). Loading (``registry.load``) reads
both as untrusted data through ``normalcy.files`` and never unpickles.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

import numpy as np
import torch
from pydantic import Field, FiniteFloat, ValidationError, model_validator
from safetensors.torch import save_file
from torch import nn

from normalcy.detectors.base import (
    HyperParams,
    ParamsEstimator,
    as_given,
    param_repr,
    validation_message,
)
from normalcy.detectors.modelfile import MODEL_TENSORS, Seed, check_tensors
from normalcy.errors import InputError, NotFittedError, fpr_out_of_range, option, setting, shortened
from normalcy.files import MODEL_JSON, Strict, describe, write_model_files
from normalcy.numerics.stats import check_fpr_unchanged, decide, threshold_at
from normalcy.series.glitches import mended
from normalcy.series.io import MIN_ROWS, Series
from normalcy.series.windows import MAX_WINDOW, MIN_WINDOW, PERIOD_FALLBACK, find_period
from normalcy.vectors.base import complex_values
from normalcy.vectors.tables import MAX_COLUMNS
from normalcy.version import __version__

log = logging.getLogger("normalcy")

SERIES_KIND = "series"
FORMAT_VERSION = 1
LONGEST_WINDOW = 4096  # a window a user may ask for (an automatic one is at most MAX_WINDOW)
MIN_THRESHOLD = 1e-6  # held-out normal rows that all score 0 (an exactly periodic series): a score under this
# is rounding, not an anomaly, so the threshold never sits at 0, where every row would be anomalous
MAX_MENDED = 20  # glitches model.json lists (the warning counts them all)
INTERVAL_KEY = "interval_s"  # model.json's ``training`` entry of the training rows' median time step
ZONED_KEY = "zoned_times"  # model.json's ``training`` entry: whether the training dates carried a zone
MIN_CALIBRATION = 20  # held-out rows under which the threshold is unreliable (a warning)
MAX_Z = 1e6  # spreads from the training median a standardised value is clipped to: one that far is as anomalous
# as any further one, and past it float32 searches and networks overflow (a value of 1e308 scored NaN, not anomalous)


class SeriesParams(HyperParams):
    """The parameters every series detector takes; a detector's ``Params`` subclasses this."""

    fpr: float = Field(0.01, gt=0, lt=1)  # target false-alarm rate per row on held-out normal rows
    window: int | None = Field(None, ge=1, le=LONGEST_WINDOW)  # None: the training data's period
    holdout: float = Field(0.2, ge=0, le=0.5)  # last part of each training series kept to set the threshold
    # the first part of the same size is held out too, scored by a copy fitted on the rest: a threshold set on
    # the last part alone is only as representative as that part (one that holds still flagged everything later)
    cross_fit: bool = True
    # anomalous rows fewer than this many rows apart (or than the window) are one event: Orion's pipelines pad
    # each detected interval by 50 rows either side, which merges the same; 0: the window alone
    event_gap: int = Field(100, ge=0, le=10**7)
    # offline runs keep an event only if its peak stands out of the lower ones by this fraction (Hundman et
    # al.'s pruning, their 0.13; events.pruned: over the whole series, or within windows as Orion prunes where
    # that would keep none) and reaches its neighbourhood's dynamic threshold (events.local_events, as Orion);
    # 0: every event. A stream's alarms are not pruned. (forecast prunes inside its scores with it, as the
    # paper does.)
    prune: float = Field(0.13, ge=0, lt=1)
    # a one-row glitch in a multivariate training series (one sensor far off for one row, rare in its column) is
    # mended for fitting, so that it does not raise the threshold: normalcy.series.glitches
    mend_glitches: bool = True
    # a block of columns that hold only 0 and 1 beside measured ones (spacecraft telemetry's one-hot commands,
    # on/off flags) is left out of the model, as telemanom models the telemetry alone: ``flag_block``
    score_flags: bool = False
    seed: Seed = 0


@dataclass
class SeriesScores:
    """What scoring a series gives back: one row per input row, in the series' order."""

    score: np.ndarray  # (n,) float64, the sum of the contributions
    contributions: np.ndarray  # (n, d) float64, non-negative, one column per metric
    decision: np.ndarray  # (n,) int8: 1 where score >= threshold
    threshold: float


Data = Series | Sequence[Series] | np.ndarray


class SeriesDetector(ParamsEstimator):
    """Base class: fit on normal rows, score rows (a whole series or one at a time), save and load."""

    name: ClassVar[str] = "base"
    Params: ClassVar[type[SeriesParams]] = SeriesParams
    _learned: ClassVar[dict[str, Any]]  # ``learned()``, worked out once a class

    # what the base learns (saved in model.json)
    columns_: tuple[str, ...]
    window_: int
    threshold_: float  # the learned attributes are set by fit or load only (``check_is_fitted``)
    mean_: np.ndarray  # (d,) the training median of each column
    scale_: np.ndarray  # (d,) its spread (IQR / 1.349, or the std when the IQR is 0; 1 for a constant column)
    n_train_: int
    flags_: tuple[str, ...]  # the training data's columns left out of the model (``flag_block``)

    def __init__(self, **params: Any) -> None:
        self._keep_valid(params)
        self.starts = np.zeros(1, np.int64)  # during fit: the first row of each training series in _fit's X
        self.choice: dict[str, Any] | None = None  # --detector auto: what was chosen and why, for model.json
        self.time_column: str | None = None  # the training file's time column, which predict then reads by default
        self.interval_s: float | None = None  # the training rows' median time step (None: no time column)
        self.zoned: bool | None = None  # whether the training dates carried a zone (None: no dates, or mixed)
        self._stream: _Ring | None = None
        self.stream_state: StreamState | None = None  # where the watch that saved this model stopped (``Stream``)

    @property
    def gap_(self) -> int:
        """Rows between two anomalous rows under which they belong to one event."""
        return max(int(self.window_), int(self.event_gap))

    # -- what subclasses implement ---------------------------------------------------------
    def _fit(self, X: np.ndarray, progress: bool) -> None:
        """Learn normal from X (n, d), standardised training rows."""
        raise NotImplementedError

    def _score(self, X: np.ndarray) -> np.ndarray:
        """(n, d) non-negative per-metric contributions of the standardised rows X (n, d); causal."""
        raise NotImplementedError

    def _score_from(self, X: np.ndarray, first: int) -> np.ndarray:
        """``_score(X)[first:]``: the rows before ``first`` are past only (a stream's context), so a detector
        may skip them; this one scores from ``context - 1`` rows before ``first``, causal scores being the same."""
        lo = max(0, first - self.context + 1)
        return self._score(X[lo:])[first - lo:]

    def _score_last(self, recent: np.ndarray) -> np.ndarray:
        """(d,) contributions of the last row of ``recent`` (at most ``context`` rows, newest last)."""
        return self._score(recent)[-1]

    def _partial_fit(self, recent: np.ndarray) -> None:
        """Learn the last row of ``recent`` (at most ``context`` standardised rows, newest last) as normal."""
        raise InputError(f"detector {self.name} does not learn online (partial_fit); fit it again instead")

    def _check_state(self) -> None:
        """Raise ValueError when loaded learned arrays do not fit each other or the columns."""

    def _build(self) -> None:
        """Create networks from parameters and loaded arrays, before their weights are loaded."""

    def metadata(self) -> dict[str, Any]:
        """Entries this detector adds to model.json's ``training`` (how training went)."""
        return {}

    def report_info(self) -> dict[str, Any]:
        """What a run's report and run.json say about this model (read by people who never open model.json)."""
        return {"detector": self.name, "window": self.window_}

    @property
    def context(self) -> int:
        """Rows a score depends on (the row and those before it): the stream keeps this many."""
        return self.window_

    @property
    def blind(self) -> int:
        """Rows at the start of a series that score 0 for want of a past (a network never shown a partial window
        cannot judge one); 0 where the first rows are scored on what exists (partial or edge-padded windows)."""
        return 0

    def check_scorable(self, n: int, where: str) -> None:
        """Refuse ``n`` rows (with their past, if any) of which none could be scored (``blind``): they would all
        score 0 and pass as normal without a word, whatever they hold."""
        if n <= self.blind:
            raise InputError(f"{where}: {n} row(s), but {self.name} scores a row only after {self.blind} rows of "
                             f"its past (window {self.window_}): no row could be scored; give at least "
                             f"{self.blind + 1} rows, or fit with a smaller {option('window')}")

    @property
    def event_pruning(self) -> float:
        """The fraction by which offline runs prune this detector's events (``prune``); 0 where its scores are
        pruned already (forecast)."""
        return float(self.prune)

    @property
    def learns_online(self) -> bool:
        """Whether partial_fit works for this detector."""
        return type(self)._partial_fit is not SeriesDetector._partial_fit

    # -- parameters --------------------------------------------------------------------------
    def __repr__(self) -> str:
        """The class and the parameters that differ from their defaults, as scikit-learn shows an estimator
        (``SubsequenceKNN(k=3, window=20)``; Python's default named no parameter)."""
        return param_repr(self, type(self).Params)

    def params(self) -> dict[str, Any]:
        """Hyper-parameters as saved with the model (JSON-serialisable)."""
        values = {k: getattr(self, k) for k in type(self).Params.model_fields}
        return type(self).Params(**values).model_dump(mode="json")

    def set_params(self, **params: Any) -> "SeriesDetector":
        """scikit-learn's, then the values kept as ``__init__`` keeps them where they are valid (an invalid one is
        left for ``fit`` to refuse, naming it). Why: ``set_params(candidates=["knn"])`` kept the list that
        ``__init__`` makes a tuple of, and ``clone`` then failed: "the constructor either does not set or modifies
        parameter candidates"."""
        super().set_params(**params)
        try:
            self._check_params()
        except InputError:
            pass
        return self

    def _check_params(self) -> None:
        """Validate the parameters again by ``__init__``'s rules and keep them as validated. Why: one set as an
        attribute after construction (``det.k = 0``, ``det.fpr = "0.1"``) was used unchecked: a fit failed inside
        with a ZeroDivisionError, an IndexError or a TypeError, or after its first part with pydantic's dump."""
        self._keep_valid({k: getattr(self, k) for k in type(self).Params.model_fields})

    def _keep_valid(self, given: dict[str, Any]) -> None:
        """Set the parameters as ``Params`` validates ``given`` (defaults for those left out; each the very object
        given where validation kept it, see ``as_given``); one InputError line when one is invalid."""
        problem = fpr_out_of_range(given.get("fpr"))
        if problem:
            raise InputError(f"detector {self.name}: {problem}")
        try:
            validated = type(self).Params(**given)
        except ValidationError as err:
            raise InputError(validation_message(f"detector {self.name}", err)) from None
        for key, value in as_given(given, validated):
            setattr(self, key, value)

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, data: Data, *, progress: bool = True) -> "SeriesDetector":
        """Learn normal from the first (1 - holdout) of each training series, in time order, and set the
        threshold at the (1 - fpr) quantile of the scores of the held-out rest and (``cross_fit``) of the
        first share of the same size, scored by a twin fitted on the rows after it. ``progress`` is a keyword:
        ``fit(X, y)``, as scikit-learn is called, took y for it, silently (labels ignored) or "The truth value of
        an array ... is ambiguous"; it is now Python's TypeError naming the positional arguments."""
        self._check_params()
        parts = _parts(data)
        for name, v, _ in parts:  # as a file's reader: on fewer, auto's members learned empty banks, scoring 0
            if len(v) < MIN_ROWS:
                raise InputError(f"{name}: {len(v)} row(s); a series needs at least {MIN_ROWS} to fit on")
        self._forget()
        self._stream = None  # the earlier model's rows
        self.choice = self.time_column = None  # of an earlier fit: this one's are set by it (and by its caller)
        self.interval_s = median_step(data)  # predict compares a test series' with it (windows count rows)
        self.zoned = training_zoned(data)  # predict and watch compare a test series' with it
        self.stream_state = None  # a stream of the earlier model's: not this one's
        self.flags_ = ()
        if not self.score_flags:
            parts, self.flags_ = _without_flags(parts)
        self.mended_: list[dict[str, Any]] = []
        if self.mend_glitches:
            for k, (name, v, cols) in enumerate(parts):
                v, found = mended(v, cols, name)
                parts[k] = (name, v, cols)
                self.mended_ += found
        self.columns_ = parts[0][2]
        for name, _, cols in parts[1:]:
            if cols != self.columns_:
                raise InputError(f"{name}: columns {list(cols)[:10]} differ from the first training series' "
                                 f"{list(self.columns_)[:10]}")
        cuts = [len(v) - int(round(self.holdout * len(v))) for _, v, _ in parts]
        fit_rows = np.concatenate([v[:c] for (_, v, _), c in zip(parts, cuts)])
        self.mean_, self.scale_ = standardiser(fit_rows)
        bad = [c for c, m, sc in zip(self.columns_, self.mean_, self.scale_) if not np.isfinite([m, sc]).all()]
        if bad:
            raise InputError(f"{parts[0][0]}: column(s) {bad[:10]} span more than a 64-bit float holds (values near "
                             "1e308): rescale them")
        Z = [_clipped((v - self.mean_) / self.scale_, name) for name, v, _ in parts]
        self.window_ = self._window([z[:c] for z, c in zip(Z, cuts)], [p[0] for p in parts])
        for (name, v, _), c in zip(parts, cuts):
            if c < 2 * self.window_:
                raise InputError(f"{name}: {c} rows to fit on, fewer than 2 x the window ({self.window_}); "
                                 f"give a longer series or a smaller {option('window')}")
        self.n_train_ = int(sum(len(v) for _, v, _ in parts))
        self.starts = np.cumsum([0] + cuts[:-1])  # where each training series begins in _fit's X
        with torch.random.fork_rng(devices=[]):  # seeded here, once; the caller's RNG is left alone
            _seed(self.seed)
            self._fit(np.concatenate([z[:c] for z, c in zip(Z, cuts)]), progress)
            scores = self._calibration_scores(Z, cuts)
        self._set_threshold(scores)
        return self

    def _first_parts(self, Z: list[np.ndarray], cuts: list[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(the first held-out share of each training series, the rest of it) where both are long enough to
        cross-fit: the share longer than the context, the rest at least two windows. Empty without cross_fit."""
        if not self.cross_fit:
            return [], []
        pairs = [(z[:len(z) - c], z[len(z) - c:]) for z, c in zip(Z, cuts)]
        pairs = [(a, b) for a, b in pairs if len(a) > self.context and len(b) >= 2 * self.window_]
        return [a for a, _ in pairs], [b for _, b in pairs]

    def _twin(self, parts: list[np.ndarray]) -> "SeriesDetector":
        """A copy of this detector, the same settings and standardisation, fitted on other rows (``parts``)."""
        twin = type(self)(**self.params())
        for key in ("columns_", "mean_", "scale_", "window_", "n_train_", "_periodic"):
            if hasattr(self, key):
                setattr(twin, key, getattr(self, key))
        twin.starts = np.cumsum([0] + [len(p) for p in parts[:-1]])
        with torch.random.fork_rng(devices=[]):  # seeded on its own: the same twin whenever it is made
            _seed(self.seed + 1)
            self._fit_twin(twin, np.concatenate(parts))
        return twin

    def _fit_twin(self, twin: "SeriesDetector", X: np.ndarray) -> None:
        """Fit ``twin`` (see ``_twin``) on X, as this detector was fitted."""
        twin._fit(X, False)

    def _held_scores(self, det: "SeriesDetector", z: np.ndarray, first: int) -> np.ndarray:
        """What calibration takes of rows z[first:] scored by ``det`` (this detector or its twin): their scores."""
        return det._score_from(z, first).sum(axis=1)

    def _held_out(self, Z: list[np.ndarray], cuts: list[int]) -> list[np.ndarray]:
        """``_held_scores`` of the held-out rows: the last share of each training series, each row on its real
        past (the end of the fitted part before it), and (``cross_fit``) the first share, by a twin fitted on
        the rest. Empty without held-out rows (holdout 0)."""
        held = []
        for z, c in zip(Z, cuts):
            if c < len(z):
                start = max(0, c - self.context + 1)
                held.append(self._held_scores(self, z[start:], c - start))
        first, rest = self._first_parts(Z, cuts)
        if held and first:
            twin = self._twin(rest)
            held += [self._held_scores(twin, a, self.context - 1) for a in first]
        return held

    def _window(self, fit_parts: list[np.ndarray], names: list[str]) -> int:
        """The window: the parameter, or the period of the longest training part clipped to
        [MIN_WINDOW, MAX_WINDOW], to MAX_WINDOW numbers (window x metrics) and to half the shortest part.

        The cap on numbers is for multivariate series: ASD's 19 metrics have a daily period past 256 rows,
        and windows of 256 x 19 numbers took 20x longer to score than windows of 13 rows and found less
        (knn's mean AP over the 12 servers: 0.09 at 256 rows, 0.14 at 53, 0.18 at 16, 0.22 at 4)."""
        self._periodic = False  # the training data shows a period (not the fallback length): auto's period member
        if self.window is not None:
            return int(self.window)
        longest = max(fit_parts, key=len)
        found = find_period(longest, fallback=None)
        self._periodic = found is not None
        period = int(np.clip(found or PERIOD_FALLBACK, MIN_WINDOW, MAX_WINDOW))
        period = min(period, max(1, MAX_WINDOW // longest.shape[1]))
        shortest = min(len(p) for p in fit_parts)
        if period > shortest // 2:  # below MIN_WINDOW too: a short series gets a short window, not a refusal
            log.info("%s: window %d clipped to %d, half the shortest training part", names[0], period, shortest // 2)
            period = max(1, shortest // 2)
        return period

    def _calibration_scores(self, Z: list[np.ndarray], cuts: list[int]) -> np.ndarray:
        """Scores of the held-out rows (``_held_out``)."""
        held = self._held_out(Z, cuts)
        if held:
            return np.concatenate(held)
        log.warning("%s: no rows held out (holdout 0): the threshold is set on training rows and is optimistic",
                    self.name)
        return np.concatenate([self._score(z).sum(axis=1) for z in Z])

    def _set_threshold(self, scores: np.ndarray) -> None:
        if scores.size == 0 or not np.isfinite(scores).all():
            raise InputError(f"{self.name}: scores of the held-out normal rows are not finite numbers")
        if scores.size < MIN_CALIBRATION:
            log.warning("%s: the threshold rests on %d held-out normal row(s); %d or more make it reliable",
                        self.name, scores.size, MIN_CALIBRATION)
        self.threshold_ = max(threshold_at(scores, self.fpr), MIN_THRESHOLD)
        self._threshold_fpr: float | None = float(self.fpr)  # what save compares fpr with (check_fpr_unchanged)

    # -- scoring -----------------------------------------------------------------------------
    def standardise(self, data: Series | np.ndarray) -> np.ndarray:
        """The rows of a series (its columns put in the model's order) or an (n, d) array, standardised. A
        DataFrame's columns are matched by name, as a series' are, unless the model was fitted on an array
        (columns x0, x1, ... or value), which takes them in order."""
        self._check_fitted()
        frame = _frame_series(data)
        if frame is not None:
            data = frame if set(self.columns_) <= set(frame.columns) or not _array_named(self.columns_) else frame.values
        if isinstance(data, Series):
            where, values = str(data.source), self.model_values(data)
        else:
            where, values = "array", _matrix(_numbers(data, "a Series, a DataFrame"), "array")
            if self.flags_ and values.shape[1] == len(self.columns_) + len(self.flags_):
                values = values[:, _array_positions(self.columns_)]  # an array as fitted: its flags left out
            if values.shape[1] != len(self.columns_):
                raise InputError(f"array: {values.shape[1]} columns, the model has {len(self.columns_)}")
        if not np.isfinite(values).all():
            raise InputError(f"{where}: NaN or infinite values (read series with normalcy.series.io, which "
                             "interpolates them)")
        return _clipped((values - self.mean_) / self.scale_, where)

    def model_values(self, data: Series) -> np.ndarray:
        """A series' raw values with its columns in the model's order (its 0/1 flags, if there, left out at fit
        and here); an InputError naming the series where the columns do not match."""
        given = [c for c in data.columns if c not in self.flags_]
        if set(given) != set(self.columns_):
            missing = [c for c in self.columns_ if c not in given]
            extra = [c for c in given if c not in self.columns_]
            raise InputError(f"{data.source}: columns do not match the model's: "
                             + (f"missing {missing[:10]}" if missing else f"not in the model {extra[:10]}"))
        return data.values[:, [data.columns.index(c) for c in self.columns_]]

    def score(self, data: Series | np.ndarray) -> SeriesScores:
        """Scores, per-metric contributions and decisions of every row of a series (causal: each row from
        its past), the first window_-1 rows on edge-padded input (or, ``blind``, scored 0). A series of which
        no row could be scored is refused (``check_scorable``)."""
        Z = self.standardise(data)
        self.check_scorable(len(Z), str(data.source) if isinstance(data, Series) else "array")
        return self.score_standardised(Z)

    def score_standardised(self, Z: np.ndarray) -> SeriesScores:
        """``score`` of rows already standardised (``standardise``): a run that needs them too standardises once."""
        contrib = np.asarray(self._score(Z), dtype=np.float64)
        score = contrib.sum(axis=1)
        refuse_non_finite(self.name, score)
        return SeriesScores(score, contrib, decide(score, self.threshold_).astype(np.int8), float(self.threshold_))

    # -- streaming ------------------------------------------------------------------------------
    def score_one(self, x: np.ndarray) -> float:
        """Score one new row (d values, in the model's column order) from the rows given before it:
        the same score ``score`` gives that row in the whole series. Memory: ``context`` rows."""
        ring = self._ring()
        ring.push(self._row(x))
        contrib = np.asarray(self._score_last(ring.recent()), dtype=np.float64)
        refuse_non_finite(self.name, contrib.sum(keepdims=True))
        ring.pending = True
        self.last_contributions = contrib
        return float(contrib.sum())

    def partial_fit(self, x: np.ndarray) -> None:
        """Learn one more normal row online (where the detector can). The row just given to ``score_one``
        is learned without being counted twice in the stream; any other row joins the stream first."""
        if not self.learns_online:
            self._partial_fit(np.empty((0, 0)))  # raises: this detector does not learn online
        ring = self._ring()
        z = self._row(x)
        if not (ring.pending and np.array_equal(ring.last(), z)):
            ring.push(z)
        ring.pending = False
        self._partial_fit(ring.recent())

    def reset_stream(self) -> None:
        """Forget the rows streamed so far (a new series starts)."""
        self._stream = None

    def _ring(self) -> "_Ring":
        if self._stream is None:
            self._check_fitted()
            self._stream = _Ring(self.context, len(self.columns_))
        return self._stream

    def row_values(self, x: Any) -> np.ndarray:
        """One row's (d,) raw values: d numbers, a (1, d) array, or a number for a one-column model. Anything
        else is refused, not flattened: two rows of a one-column model would otherwise be scored as one row. A named
        row (a dict, or a pandas Series or one-row DataFrame labelled by name) is taken by name, as ``Stream.update``
        takes it: a pandas Series' own order was taken silently (b, a scored as a, b) and a dict was refused; one
        labelled a, c for a model of a, b was scored as a, b. A row labelled 0, 1, ... (positions) is taken in order."""
        if hasattr(x, "keys") and (isinstance(x, dict) or _labelled(list(x.keys()), self.columns_)):
            x = by_name(x, self.columns_, "row")
        # an array's or a DataFrame's (it has dtypes, no dtype: its complex column was cut to the real part); Python's
        # complex numbers fail float() below
        complex_ = complex_values(x) if hasattr(x, "dtype") or _is_frame(x) else ""
        if complex_:
            raise InputError(f"row: {complex_}")
        try:
            row = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as err:  # text in the row: numpy's bare ValueError
            raise InputError(f"a row of {len(self.columns_)} number(s) expected ({str(err)[:100]}); a Stream holds a "
                             "value that is no number at its column's last value") from None
        if (row.ndim == 0 and len(self.columns_) == 1) or (row.ndim == 2 and row.shape[0] == 1):
            row = row.reshape(-1)
        if row.ndim != 1:
            raise InputError(f"one row of {len(self.columns_)} value(s) expected, got an array of shape {row.shape}: "
                             "score several rows with score() (a stream: Stream.run())")
        if row.shape[0] != len(self.columns_):
            left = (f" (its 0/1 columns {list(self.flags_)[:5]} were left out at fit: give the others, "
                    f"{list(self.columns_)[:5]}, in that order)") if self.flags_ else ""
            raise InputError(f"a row of {row.shape[0]} values; the model has {len(self.columns_)} columns{left}")
        return row

    def _row(self, x: Any) -> np.ndarray:
        """One row (``row_values``) standardised, clipped as ``standardise`` clips; NaN or inf is refused."""
        row = self.row_values(x)
        z = (row - self.mean_) / self.scale_
        if np.abs(z).max() <= MAX_Z:  # the common case in one check (NaN fails it): a stream's row has 100 us
            return z
        if not np.isfinite(row).all():
            raise InputError("a row with NaN or infinite values cannot be scored")
        return _clipped(z, "a streamed row")

    def _check_fitted(self) -> None:
        """NotFittedError before fit or load; an InputError naming a parameter set after fit out of range, as
        ``fit`` checks them: one set so (``det.k = 0``, ``set_params(history=0)``) was used unchecked, an
        IndexError or TypeError inside scoring, and ``save`` failed with pydantic's multi-line dump. (A stream
        checks them when it starts, not at each row: the check takes 0.1 ms.)"""
        if getattr(self, "threshold_", None) is None:  # set by fit or load only
            raise NotFittedError(f"this {self.name} series detector is not fitted: call fit() or load a model")
        self._check_params()

    # -- learned state ---------------------------------------------------------------------------
    @classmethod
    def learned(cls) -> dict[str, Any]:
        """The detector's own learned attributes (annotated, ending in ``_``) and their declared types (worked
        out once a class: typing.get_type_hints evaluates every annotation, 2.7 ms a save or load)."""
        if "_learned" not in cls.__dict__:
            own = typing.get_type_hints(SeriesDetector)
            cls._learned = {k: t for k, t in typing.get_type_hints(cls).items()
                            if k.endswith("_") and not k.startswith("_") and k not in own}
        return dict(cls._learned)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The learned attributes as named tensors (a module's parameters under ``name.``)."""
        state: dict[str, torch.Tensor] = {}
        for attr in self.learned():
            value = getattr(self, attr)
            if isinstance(value, nn.Module):
                state.update({f"{attr[:-1]}.{k}": v for k, v in value.state_dict().items()})
            else:
                # a copy (np.array): arrays from Ray's object store are read-only
                state[attr[:-1]] = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.array(value))
        return {k: v.detach().contiguous().cpu() for k, v in state.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Set the learned attributes from named tensors (names and shapes checked), build the networks and
        score a trial series; raises ValueError naming what does not fit."""
        state = dict(state)
        modules = []
        for attr, kind in self.learned().items():
            key = attr[:-1]
            if isinstance(kind, type) and issubclass(kind, nn.Module):
                modules.append(attr)
                continue
            if key not in state:
                raise ValueError(f"missing tensor {key!r}")
            t = state.pop(key)
            if kind in (int, float):
                if t.ndim != 0:
                    raise ValueError(f"tensor {key!r} has shape {tuple(t.shape)}, expected a number")
                setattr(self, attr, kind(t.item()))
            else:
                setattr(self, attr, t.numpy() if kind is np.ndarray else t)
        self._check_state()
        self._check_network_shapes(modules, state)
        self._build()
        for attr in modules:
            prefix = attr[:-1] + "."
            sub = {k[len(prefix):]: state.pop(k) for k in list(state) if k.startswith(prefix)}
            try:
                getattr(self, attr).load_state_dict(sub, strict=True)
            except RuntimeError as err:
                raise ValueError(f"tensors '{prefix}*' do not fit the network: "
                                 f"{' '.join(str(err).split())[:300]}") from None
            getattr(self, attr).eval()
        if state:
            raise ValueError(f"unexpected tensor(s) {sorted(state)[:3]}")
        self._trial_score()

    def _check_network_shapes(self, modules: list[str], state: dict[str, torch.Tensor]) -> None:
        """Raise ValueError unless the file's tensors of each network are those of the network that model.json's
        parameters and columns describe, comparing shapes on torch's meta device (no memory). Why: ``_build``
        allocated the network before its tensors were compared, so a model.json of a few hundred bytes (span 512,
        40 columns, max_hidden 16384) beside a tiny safetensors file made load allocate 8 GB of weights."""
        if not modules:
            return
        with torch.device("meta"):
            self._build()
        for attr in modules:
            prefix = attr[:-1] + "."
            want = {prefix + k: tuple(t.shape) for k, t in getattr(self, attr).state_dict().items()}
            got = {k: tuple(t.shape) for k, t in state.items() if k.startswith(prefix)}
            for key in sorted(want.keys() | got.keys()):
                if want.get(key) != got.get(key):
                    raise ValueError(f"tensors '{prefix}*' do not fit the network model.json describes: tensor "
                                     f"{key!r} has shape {got.get(key, 'none (missing)')}, expected "
                                     f"{want.get(key, 'none (unexpected)')}")

    def _trial_score(self) -> None:
        """Score a flat series: state that does not fit fails at load, not mid-run. Its rows: two windows, or the
        context and one more row where that is fewer. Why: a network's window (span) is its own, and model.json's
        window of 4096 rows and 100,000 columns beside a 13 MB autoencoder (span 1) made load allocate 6 GB."""
        shape = (min(2 * self.window_, self.context + 1), len(self.columns_))
        out = np.asarray(self._score(np.zeros(shape)))
        if out.shape != shape:
            raise ValueError(f"a trial score gave shape {out.shape}, expected {shape}")
        if not np.isfinite(out).all() or (out < 0).any():
            raise ValueError("a trial score is not finite and non-negative")

    def save(self, directory: str | Path) -> Path:
        """Write model.json and model.safetensors into ``directory``."""
        self._check_fitted()
        check_fpr_unchanged(self.name, self.fpr, getattr(self, "_threshold_fpr", None))
        d = Path(directory)
        training = self.metadata()
        if getattr(self, "mended_", None):  # the training rows fitted on were not all as given: say which
            training = training | {"mended_glitches": self.mended_[:MAX_MENDED]}
        if getattr(self, "interval_s", None) is not None:
            training = training | {INTERVAL_KEY: self.interval_s}
        if getattr(self, "zoned", None) is not None:
            training = training | {ZONED_KEY: self.zoned}
        try:  # as load reads it: what would not load is not saved
            meta = SeriesModelMeta.model_validate_json(json.dumps({
                "kind": SERIES_KIND, "format_version": FORMAT_VERSION, "normalcy_version": __version__,
                "detector": self.name, "params": self.params(), "columns": list(self.columns_),
                "window": self.window_, "threshold": self.threshold_, "mean": self.mean_.tolist(),
                "scale": self.scale_.tolist(), "n_train": self.n_train_,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "training": training or None, "choice": self.choice,
                "time_column": self.time_column, "flags": list(self.flags_),
                "stream": self.stream_state.meta() if self.stream_state else None,
            }))
        except ValidationError as err:  # a model fitted in memory on over MAX_COLUMNS columns: pydantic's dump
            raise InputError(f"{d}: not saved, as it could not be loaded: {describe(err)}") from None
        stream = self.stream_state.tensors() if self.stream_state else {}
        state = self.state_dict() | stream
        kept = None if self.stream_state else {"stream"}  # none: model.json as before, which older normalcy reads
        text = meta.model_dump_json(indent=2, exclude=kept) + "\n"
        return write_model_files(d, {MODEL_TENSORS: lambda p: save_file(state, str(p)),
                                     MODEL_JSON: lambda p: p.write_text(text)})

    @classmethod
    def from_saved(cls, meta: "SeriesModelMeta", state: dict[str, torch.Tensor], source: Path) -> "SeriesDetector":
        """The detector a checked model.json and its tensors describe (``registry.load`` calls this)."""
        try:
            det = cls(**meta.params)
        except InputError as err:
            raise InputError(f"{source / MODEL_JSON}: {err}") from None
        det.columns_, det.window_, det.threshold_ = tuple(meta.columns), meta.window, meta.threshold
        det._threshold_fpr = det.fpr  # model.json's, which its threshold was set at
        det.mean_, det.scale_ = np.asarray(meta.mean), np.asarray(meta.scale)
        det.n_train_, det.choice, det.time_column = meta.n_train, meta.choice, meta.time_column
        det.interval_s = saved_interval(meta.training, source)
        det.zoned = saved_zoned(meta.training, source)
        det.flags_ = tuple(meta.flags)
        check_tensors(state, None, source=str(source / MODEL_TENSORS))
        stream = {k: state.pop(k) for k in list(state) if k.startswith(STREAM_PREFIX)}
        try:
            with torch.random.fork_rng(devices=[]):
                det.load_state_dict(state)
        except (ValueError, TypeError, IndexError, RuntimeError) as err:
            raise InputError(f"{source / MODEL_TENSORS}: not the state of a fitted {cls.name} "
                             f"({' '.join(str(err).split())[:300]})") from None
        det.stream_state = StreamState.read(meta.stream, stream, det, source)
        return det


STREAM_PREFIX = "stream."


class StreamMeta(Strict):
    """model.json's ``stream``: the numbers of ``StreamState`` (its arrays are the tensors ``stream.*``)."""

    t: int = Field(ge=0, le=10**15)
    last_alarm: int | None = Field(None, ge=0)
    early: int = Field(0, ge=0, le=10**9)
    calib_count: int | None = Field(None, ge=0, le=10**9)  # None: the detector's own calibration (auto)

    @model_validator(mode="after")
    def _order(self) -> "StreamMeta":
        if self.last_alarm is not None and self.last_alarm >= self.t:
            raise ValueError(f"last_alarm ({self.last_alarm}) must be before t ({self.t})")
        return self


@dataclass
class StreamState:
    """Where a stream over the model stopped (``Stream.state``), saved with the model so that a watch started
    from it goes on as one that never stopped: without it the recent rows (the next rows' context) and a plain
    detector's calibration were lost, its first 20 rows scoring 0 and an anomaly right after the restart missed."""

    rows: np.ndarray  # (k, d) standardised, k < context: the context of the next row
    last_raw: np.ndarray  # (d,) the last row's values, at which a missing value of the next row is held
    t: int  # rows seen
    last_alarm: int | None  # the row of the last alarm (the quiet period goes on)
    early: int  # rows of the current learning block that the save learned early (``Stream.flush``)
    calib: tuple[np.ndarray, np.ndarray, int] | None  # a plain detector's calibration (mean, var, count)

    def meta(self) -> dict[str, Any]:
        return {"t": self.t, "last_alarm": self.last_alarm, "early": self.early,
                "calib_count": None if self.calib is None else self.calib[2]}

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"rows": self.rows, "last_raw": self.last_raw}
        if self.calib is not None:
            out |= {"calib_mean": self.calib[0], "calib_var": self.calib[1]}
        return {STREAM_PREFIX + k: torch.from_numpy(np.array(v, dtype=np.float64)) for k, v in out.items()}

    @classmethod
    def read(cls, meta: StreamMeta | None, tensors: dict[str, torch.Tensor], det: "SeriesDetector",
             source: Path) -> "StreamState | None":
        """The saved state, checked against the model (a model saved before there was one has none)."""
        where = str(source / MODEL_TENSORS)
        if meta is None:
            if tensors:
                raise InputError(f"{where}: tensor {min(tensors)!r} of a stream, but {source / MODEL_JSON} "
                                 "has no stream")
            return None
        d, plain = len(det.columns_), not hasattr(det, "tail")  # auto's calibration is its own (``tail``)
        expected: dict[str, tuple[tuple[int | None, ...], str]] = {
            STREAM_PREFIX + "rows": ((None, d), "float"), STREAM_PREFIX + "last_raw": ((d,), "float")}
        if meta.calib_count is not None:
            expected |= {STREAM_PREFIX + "calib_mean": ((1,), "float"), STREAM_PREFIX + "calib_var": ((1,), "float")}
        check_tensors(tensors, expected, source=where)
        a = {k.removeprefix(STREAM_PREFIX): t.double().numpy() for k, t in tensors.items()}
        if len(a["rows"]) >= max(det.context, 1) or np.abs(a["rows"]).max(initial=0.0) > MAX_Z:
            raise InputError(f"{where}: tensor 'stream.rows' has {len(a['rows'])} rows, expected fewer than the "
                             f"context ({det.context}), standardised (within {MAX_Z:.0e})")
        if (meta.calib_count is None) == plain:
            need = "given for a plain detector" if plain else "absent for auto (its calibration is its own)"
            raise InputError(f"{source / MODEL_JSON}: stream.calib_count must be {need}")
        if meta.calib_count is not None and a["calib_var"][0] < 0:
            raise InputError(f"{where}: tensor 'stream.calib_var' is negative")
        calib = None if meta.calib_count is None else (a["calib_mean"], a["calib_var"], meta.calib_count)
        return cls(a["rows"], a["last_raw"], meta.t, meta.last_alarm, meta.early, calib)


class SeriesModelMeta(Strict):
    """``model.json`` of a series model: every field bounded, checked against the others."""

    kind: Literal["series"]
    format_version: Literal[1]
    normalcy_version: str = Field(max_length=100)
    detector: str = Field(max_length=100)
    params: dict[str, Any]
    columns: list[str] = Field(min_length=1, max_length=MAX_COLUMNS)
    window: int = Field(ge=1, le=LONGEST_WINDOW)
    threshold: FiniteFloat = Field(ge=0)
    mean: list[FiniteFloat]
    scale: list[FiniteFloat]
    n_train: int = Field(ge=2, le=10**12)
    created: str = Field(max_length=100)
    training: dict[str, Any] | None = None
    choice: dict[str, Any] | None = None
    time_column: str | None = Field(None, max_length=1000)  # None: row numbers, or a column found by name
    flags: list[str] = Field(default_factory=list, max_length=MAX_COLUMNS)  # columns left out (``flag_block``)
    stream: StreamMeta | None = None  # where the watch that saved it stopped; None: fitted, or saved before

    @model_validator(mode="after")
    def _shapes(self) -> "SeriesModelMeta":
        d = len(self.columns)
        if len(self.mean) != d or len(self.scale) != d:
            raise ValueError(f"mean ({len(self.mean)}) and scale ({len(self.scale)}) must have one value per "
                             f"column ({d})")
        if any(s <= 0 for s in self.scale):
            raise ValueError("scale: every value must be positive")
        if len(set(self.columns)) != d:
            raise ValueError("columns: names repeat")
        if len(set(self.flags)) != len(self.flags) or set(self.flags) & set(self.columns):
            raise ValueError("flags: names repeat or are also model columns")
        return self


def median_step(data: Any) -> float | None:
    """The median time step (seconds, or the time column's units) of training series with a time column, over
    the steps of every one; None for arrays, frames and series without one. Kept with the model because windows
    count rows: a model of 1-minute rows scoring 5-minute rows sees every pattern five times faster."""
    series = [data] if isinstance(data, Series) else list(data) if isinstance(data, (list, tuple)) else []
    steps = [np.diff(np.asarray(s.time, np.float64)) for s in series
             if isinstance(s, Series) and s.time_column is not None and len(s.time) > 1]
    if not steps:
        return None
    step = float(np.median(np.concatenate(steps)))
    return step if math.isfinite(step) and step > 0 else None


def saved_interval(training: dict[str, Any] | None, source: Path) -> float | None:
    """model.json's ``training`` interval (None in models saved before it was kept, or fitted without a time
    column); one that is no positive finite number is an InputError naming the file."""
    value = (training or {}).get(INTERVAL_KEY)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InputError(f"{source / MODEL_JSON}: training.{INTERVAL_KEY} must be a positive number of seconds, "
                         f"not {str(value)[:40]!r}")
    return float(value)


def training_zoned(data: Any) -> bool | None:
    """Whether the training series' dates carried a zone, when all say the same (None: no dates, arrays, or some
    with a zone and some without)."""
    series = [data] if isinstance(data, Series) else list(data) if isinstance(data, (list, tuple)) else []
    kinds = {getattr(s, "zoned", None) for s in series}
    return kinds.pop() if len(kinds) == 1 else None


def saved_zoned(training: dict[str, Any] | None, source: Path) -> bool | None:
    """model.json's ``training`` entry of zoned dates (None in models saved before it was kept, or without dates);
    one that is no true or false is an InputError naming the file."""
    value = (training or {}).get(ZONED_KEY)
    if value is not None and not isinstance(value, bool):
        raise InputError(f"{source / MODEL_JSON}: training.{ZONED_KEY} must be true or false, not {str(value)[:40]!r}")
    return value


def refuse_non_finite(name: str, score: np.ndarray, first: int = 0) -> None:
    """InputError naming the first of these rows' scores (rows first + 1, ...) that is NaN or infinite: NaN is
    never >= a threshold, so such a row would pass unseen, and in a stream it turned the calibration NaN, every
    later row scoring NaN without a word. A loaded model's trial score sees only a flat series: weights that
    overflow on other rows (a crafted file) show here."""
    if not np.isfinite(score).all():
        row = int(np.flatnonzero(~np.isfinite(score))[0])
        raise InputError(f"{name}: the model scores row {first + row + 1} as {score[row]} (not a number): its "
                         "learned state is damaged; fit it again")


def _seed(seed: int) -> None:
    """Seed torch's CPU generator, the one series detectors draw from (they run on the CPU). torch.manual_seed
    seeded the CUDA, XPU and MTIA generators too, which ``fork_rng(devices=[])`` does not restore (the caller's
    GPU RNG changed), and each formatted the call stack for a lazy call: 6 ms a fit on 2 busy cores, a tenth of
    a 50-row series' fit."""
    torch.random.default_generator.manual_seed(int(seed))


def _clipped(Z: np.ndarray, where: str) -> np.ndarray:
    """Standardised values clipped to +-MAX_Z spreads (in place), with a warning naming where they came from."""
    with np.errstate(over="ignore"):
        far = np.abs(Z) > MAX_Z  # an overflow to inf is caught here too
    if far.any():
        log.warning("%s: %d value(s) more than %.0e spreads from the training median, counted as %.0e (the most "
                    "anomalous a value can be)", where, int(far.sum()), MAX_Z, MAX_Z)
        np.clip(Z, -MAX_Z, MAX_Z, out=Z)
    return Z


def standardiser(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column centre (median) and scale (IQR / 1.349, the std where the IQR is 0, 1 for a constant
    column): robust to the spikes normal operation has, and a constant column keeps the scale of its units,
    so a deviation from it in test still counts. A column is constant where its spread is rounding (under
    1e-12 of its centre), relative to its own magnitude: an absolute floor of 1e-12 made a column of small
    units (1e-12 F, 1e-300) constant, and nothing in it was ever flagged."""
    with np.errstate(over="ignore", invalid="ignore"):  # values near 1e308 give inf, which fit refuses
        center = np.median(X, axis=0)
        q1, q3 = np.quantile(X, [0.25, 0.75], axis=0)
        scale = (q3 - q1) / 1.349
        std = X.std(axis=0)
    floor = np.maximum(1e-12 * np.abs(center), np.finfo(np.float64).tiny)  # under it: rounding, or subnormal
    scale = np.where(scale > floor, scale, std)
    scale = np.where(scale > floor, scale, 1.0)
    return center, scale


class _Ring:
    """The last ``size`` rows of a stream, contiguous (a slice of a buffer twice as long, shifted back when
    full): O(d) a row, amortised, and no allocation per row."""

    def __init__(self, size: int, d: int) -> None:
        self.size = size
        self.buf = np.empty((2 * size, d))
        self.end = 0
        self.pending = False  # the last row was scored and not yet learned

    def push(self, row: np.ndarray) -> None:
        if self.end == len(self.buf):
            keep = self.size - 1
            self.buf[:keep] = self.buf[self.end - keep:self.end]
            self.end = keep
        self.buf[self.end] = row
        self.end += 1

    def recent(self) -> np.ndarray:
        return self.buf[max(0, self.end - self.size):self.end]

    def last(self) -> np.ndarray:
        return self.buf[self.end - 1]


def _matrix(values: Any, name: str) -> np.ndarray:
    """An (n, d) float64 array from an (n,) or (n, d) one."""
    a = np.asarray(values, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim == 2 and a.shape[0] == 0:
        raise InputError(f"{name}: no rows to score or fit on")
    if a.ndim != 2 or 0 in a.shape:
        raise InputError(f"{name}: expected an (n,) or (n, d) array of numbers, got shape {a.shape}")
    return a


MIN_FLAGS = 2  # 0/1 columns that switch in a block (one on/off column beside the metrics is scored as a metric)
FLAG_SHARE = 0.9  # of the columns a block is at least: telemanom's layout, one telemetry value per file


def flag_block(X: np.ndarray) -> np.ndarray:
    """(d,) bool: the columns of training rows X (n, d) left out of a model, those holding only 0 and 1, where
    they are at least FLAG_SHARE of the columns and not all of them, and at least MIN_FLAGS of them switch
    (columns of zeros alone, a server's idle metrics, are no block; in a block they are commands never sent in
    training). A machine's state sensors beside its measured signals (Genesis, a pick-and-place demonstrator in
    TSB-AD: 13 on/off states beside 5 drive signals) are no block either: each state is a metric.

    Why: spacecraft telemetry comes with one-hot command columns (SMAP: 1 telemetry value and 24 commands;
    MSL: 1 and 54). Scored as metrics they fill every window (capped at MAX_WINDOW numbers, the telemetry keeps
    10 rows of 25 columns), and a command rare in training counts as many spreads each time it is sent: on
    SMAP's channel E-9 (TSB-AD's copy, fitted on its first 2,075 rows) ``auto`` raised 6 false events with
    them and 2 without; telemanom, the data's own detector, models the telemetry alone. A block so large is
    what such a layout looks like; one 0/1 column among measured ones (a server's health flag) stays a metric."""
    flags = ((X == 0) | (X == 1)).all(axis=0)
    switched = int((flags & (X != X[:1]).any(axis=0)).sum())  # 0/1 columns that vary: not zeros alone
    n = int(flags.sum())
    if switched < MIN_FLAGS or n < FLAG_SHARE * X.shape[1] or n == X.shape[1]:
        return np.zeros(X.shape[1], bool)
    return flags


def _without_flags(parts: list[tuple[str, np.ndarray, tuple[str, ...]]]
                   ) -> tuple[list[tuple[str, np.ndarray, tuple[str, ...]]], tuple[str, ...]]:
    """The training parts without their ``flag_block`` columns, and those columns' names (a warning names
    them). Parts whose columns differ are returned as they are (fit refuses them)."""
    cols = parts[0][2]
    if any(c != cols for _, _, c in parts[1:]):
        return parts, ()
    flags = flag_block(np.concatenate([v for _, v, _ in parts]))
    if not flags.any():
        return parts, ()
    names = tuple(c for c, f in zip(cols, flags) if f)
    log.warning("%s: %d column(s) hold only 0 and 1 beside %d measured one(s) (commands or on/off flags: %s): "
                "they are left out of the model, which scores the measured columns; %s scores them too",
                parts[0][0], len(names), len(cols) - len(names),
                ", ".join(names[:10]) + (" ..." if len(names) > 10 else ""), setting("score_flags", True))
    keep = ~flags
    return [(name, v[:, keep], tuple(c for c, k in zip(cols, keep) if k)) for name, v, _ in parts], names


def _array_named(columns: Sequence[str]) -> bool:
    """Whether these are the columns ``_parts`` names for an array: value, or x0, x1, ..."""
    return tuple(columns) == ("value",) or all(c[:1] == "x" and c[1:].isdigit() for c in columns)


def _is_frame(data: Any) -> bool:
    """A pandas DataFrame (or anything shaped like one: named columns, to_numpy), without importing pandas."""
    return hasattr(data, "columns") and hasattr(data, "to_numpy")


def _labelled(keys: list[Any], columns: Sequence[str]) -> bool:
    """Whether a pandas row's labels name its values (any label that is no position 0, 1, ..., or every model
    column among them), rather than number them (``df.iloc[i]`` of an unnamed frame: taken in order)."""
    return not all(isinstance(k, numbers.Integral) for k in keys) or {str(k) for k in keys} >= set(columns)


def by_name(values: Any, columns: Sequence[str], where: str = "stream") -> Any:
    """The model's columns of a named row (dict, pandas Series) or rows (DataFrame), in the model's order;
    other names are left out. A model fitted on an array (x0, x1, ...) takes unnamed ones in order. ``where``
    starts an error: score_one's row was said to be a stream's."""
    names = {str(k): k for k in values.keys()}
    missing = [c for c in columns if c not in names]
    if not missing:
        keys = [names[c] for c in columns]
        if _is_frame(values):
            return values[keys]
        cols = [values[k] for k in keys]
        if not any(np.ndim(c) for c in cols):  # one row
            return cols
        if len({len(c) for c in cols}) != 1:  # a dict of columns: its rows
            raise InputError(f"{where}: the columns {list(columns)[:10]} hold different numbers of rows")
        return list(zip(*cols))
    if _array_named(columns):
        return list(values.values()) if isinstance(values, dict) else values
    raise InputError(f"{where}: a row without the model's metric(s) {missing[:10]} (it has {list(names)[:10]})")


def refuse_dates(data: Any, where: str) -> None:
    """InputError naming the columns of dates or durations in a DataFrame, or an array or pandas Series of them.
    Why: numpy reads them as nanoseconds since 1970 without a word, so a DataFrame's time column was fitted and
    scored as a metric, every later row far above the training ones (all anomalous)."""
    frame = _is_frame(data)
    dtypes = zip(data.columns, getattr(data, "dtypes", ())) if frame else [("values", getattr(data, "dtype", None))]
    dates = [str(c) for c, t in dtypes if getattr(t, "kind", "") in ("m", "M")]
    if dates:
        what = f"column(s) {dates[:5]} hold" if frame else "its values are"
        raise InputError(f"{where}: {what} dates or durations, not measurements: make a time column the index "
                         "(df.set_index(...)) or drop it")


def refuse_non_measurements(data: Any, where: str, prefix: str = "") -> None:
    """``refuse_dates``, then complex values (numpy keeps their real part with only a ComplexWarning), the two
    kinds of values a float64 cast takes without a word; ``prefix`` starts the complex values' message."""
    refuse_dates(data, where)
    complex_ = complex_values(data)
    if complex_:
        raise InputError(f"{prefix}{complex_}")


def _numbers(data: Any, kinds: str = "a Series, a list of them, a DataFrame") -> np.ndarray:
    """Anything numpy reads as numbers (a list, a pandas Series) as a float64 array; an InputError otherwise,
    saying what is taken (``kinds``, then an array): at scoring, a file name or text was numpy's bare ValueError."""
    refuse_non_measurements(data, "array", "array: ")
    try:
        return np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"expected {kinds} or an (n,) or (n, d) array of numbers, "
                         f"got {type(data).__name__} ({str(err)[:100]})") from None


def _frame_series(data: Any) -> Series | None:
    """A pandas DataFrame as a Series (its columns by name, rows in order), None for anything else: fit took
    its column names for series and failed with an AttributeError."""
    if not _is_frame(data):
        return None
    refuse_non_measurements(data, "DataFrame")
    try:
        raw = data.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as err:
        raise InputError(f"DataFrame: every column must hold numbers ({str(err)[:100]}): drop the others, or "
                         "read the file with normalcy.series.io") from None
    values = _matrix(raw, "DataFrame")  # outside the try: no rows was "every column must hold numbers"
    if not np.isfinite(values).all():
        raise InputError("DataFrame: NaN or infinite values (drop or fill them first)")
    columns = tuple(str(c) for c in data.columns)
    if len(set(columns)) != len(columns):
        raise InputError(f"DataFrame: column names repeat ({list(columns)[:10]})")
    return Series("DataFrame", np.arange(len(values), dtype=np.float64), values, columns, None, [], Path("DataFrame"))


def _array_positions(columns: Sequence[str]) -> list[int]:
    """Where the columns of a model fitted on an array (named x0, x1, ...) lie in such an array."""
    if not all(c[:1] == "x" and c[1:].isdigit() for c in columns):
        raise InputError(f"array: the model was fitted on named columns ({list(columns)[:5]}): give its columns only")
    return [int(c[1:]) for c in columns]


def _refuse_arrays_as_series(data: Any) -> None:
    """InputError for a list of arrays (or pandas Series) that are several series, not rows: of different lengths,
    of two dimensions, or longer than the list. Why: numpy read them as the rows of one series, so two series
    of 500 values were "array: 2 row(s); a series needs at least 16", and twenty a series of 500 columns. A list
    of arrays that can be rows (a list of (d,) rows, more of them than d) is read as before, and so is a list of
    numpy numbers (``list(array)``: their shape is (), they are the values of one series)."""
    if not isinstance(data, (list, tuple)) or not all(hasattr(a, "shape") and np.ndim(a) for a in data):
        return
    shapes = [tuple(np.shape(a)) for a in data]
    if len(set(shapes)) == 1 and len(shapes[0]) == 1 and len(data) >= shapes[0][0]:
        return
    raise InputError(f"a list of {len(data)} arrays is not read as {len(data)} series: fit takes one series as an "
                     "(n,) or (n, d) array (n rows of d columns), or several as a list of normalcy Series or pandas "
                     "DataFrames, one per series: [pandas.DataFrame(a) for a in arrays]")


def _parts(data: Data) -> list[tuple[str, np.ndarray, tuple[str, ...]]]:
    """Training input as (name, values, columns) per series: a Series, a list of them (or of DataFrames), a
    DataFrame, or anything numpy reads as an (n,) or (n, d) array (a list of numbers, a pandas Series)."""
    if _is_frame(data):
        data = _frame_series(data)
    elif isinstance(data, (list, tuple)) and data and all(isinstance(s, Series) or _is_frame(s) for s in data):
        data = [s if isinstance(s, Series) else _frame_series(s) for s in data]
    elif not isinstance(data, Series) and not (isinstance(data, (list, tuple)) and not data):
        _refuse_arrays_as_series(data)
        data = _numbers(data)
    if isinstance(data, np.ndarray):
        a = _matrix(data, "array")
        if not np.isfinite(a).all():
            raise InputError("array: NaN or infinite values")
        cols = ("value",) if a.shape[1] == 1 else tuple(f"x{j}" for j in range(a.shape[1]))
        return [("array", a, cols)]
    series = [data] if isinstance(data, Series) else list(data)
    if not series:
        raise InputError("no training series given")
    for s in series:  # a series is fitted whole: a window cannot skip rows, so labelled ones are learned too
        if s.labels is not None and s.labels.any():
            log.warning("%s: %d row(s) labelled anomalous are learned as normal (a training series is fitted "
                        "whole); fit on normal operation only", s.source, int(s.labels.sum()))
    return [(str(s.source) if s.name == s.source.stem else f"{s.source} [{shortened(s.name)}]", s.values,
             tuple(s.columns))
            for s in series]
