"""The Numenta Anomaly Benchmark (NAB) scored by NAB's own rules, in numpy.

NAB (Lavin & Ahmad 2015; numenta/NAB v1.x, MIT) rewards early detection of labelled anomaly windows
and penalises false alarms, on 58 streaming files. Its scorer (``nab/sweeper.py``, ``optimizer.py``,
``runner.normalize``) is reproduced here rule by rule, so that our numbers sit beside its published
scoreboard:

* windows: ``labels/combined_windows.json``, inclusive (first row, last row) per anomaly;
* probation: the first ``min(floor(0.15 n), 0.15 * 5000)`` rows of a file are not scored at all (NAB's
  ``Sweeper._getProbationaryLength``: 15 %, at most 750 rows);
* a detection is a row whose anomaly score is ``>= threshold``;
* inside a window only the earliest detection counts: ``A_TP * S(-(last - i + 1) / width) / S(-1)``
  with the scaled sigmoid ``S(x) = 2 / (1 + exp(5 x)) - 1`` (1 at the window's first row, less later);
  a window without detections costs ``-A_FN``;
* a detection outside every window costs ``A_FP * S((i - e) / (w - 1))``, with ``e`` and ``w`` the last
  row and width of the window before it (``S(x) = -1`` for x > 3), or ``-A_FP`` when no window precedes
  it; so an alarm just after a window costs little, one far from any window costs the full weight;
* one threshold per detector and profile for the whole corpus, the one with the highest total (NAB's
  sweep: every distinct score is a candidate; ties go to the higher threshold, as NAB's stable sort);
* normalised ``100 * (S - S_null) / (S_perfect - S_null)``: S_null is the score of detecting nothing
  (``-A_FN`` per scorable window), S_perfect ``A_TP`` per labelled window.

NAB's published ``thresholds.json`` holds thresholds from two optimisers: this sweep (ARTime) and the
hill climb of NAB's first releases (``optimizer.twiddle``: numenta, random). ``score_at`` with those
thresholds reproduces NAB's ``final_results.json`` to 1e-9 for all six published detectors; the sweep's
optimum equals it within 0.1 except for ``random``, where the hill climb stopped at a local optimum
(sweep 17.66 vs published 16.83, standard profile).

The sweep is exact and vectorised: rows sorted by score once, every threshold's total read off a
cumulative sum (a window's contribution changes only when its earliest detection moves earlier).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from normalcy.errors import InputError

__all__ = [
    "PROFILES",
    "NabCorpus",
    "NabFile",
    "NabResult",
    "Sweep",
    "load_corpus",
    "probation_rows",
    "read_published",
    "scaled_sigmoid",
    "score_all",
    "score_at",
    "score_corpus",
    "sweep",
]

PROBATION_PERCENT = 0.15
PROBATION_CAP = 5000  # NAB: the probationary period is at most 15 % of 5000 rows
NO_DETECTION = 1.1  # NAB's first threshold: above every anomaly score in [0, 1]
# NAB's config/profiles.json (used when a corpus has no published/profiles.json).
PROFILES: dict[str, dict[str, float]] = {
    "standard": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11, "tnWeight": 1.0},
    "reward_low_FP_rate": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.22, "tnWeight": 1.0},
    "reward_low_FN_rate": {"tpWeight": 1.0, "fnWeight": 2.0, "fpWeight": 0.11, "tnWeight": 1.0},
}


def scaled_sigmoid(x: np.ndarray | float) -> np.ndarray:
    """NAB's weight of a relative position: 2 * sigmoid(-5 x) - 1, and -1 beyond x = 3."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > 3.0, -1.0, 2.0 / (1.0 + np.exp(np.clip(5.0 * x, -700, 700))) - 1.0)


MAX_TP = float(scaled_sigmoid(-1.0))  # a detection at a window's first row: weight A_TP exactly


def probation_rows(n: int) -> int:
    """Rows at the start of an n-row file whose detections NAB ignores."""
    return int(min(math.floor(PROBATION_PERCENT * n), PROBATION_PERCENT * PROBATION_CAP))


@dataclass
class NabFile:
    """One NAB file: its rows, its windows as row ranges, and each row's unweighted sweep value."""

    name: str  # "category/file.csv", the key of the labels file
    time: np.ndarray  # datetime64[s] (n,)
    values: np.ndarray  # float64 (n,)
    windows: np.ndarray  # int64 (k, 2): first and last row of each window (inclusive), sorted, disjoint
    probation: int
    in_window: np.ndarray = field(init=False)  # int64 (n,): the window of each row, -1 outside
    tp_value: np.ndarray = field(init=False)  # (n,) S(position) / S(-1) inside a window (0 outside)
    fp_value: np.ndarray = field(init=False)  # (n,) S(distance past the last window) outside (0 inside)

    def __post_init__(self) -> None:
        n = len(self.time)
        rows = np.arange(n)
        self.in_window = np.full(n, -1, dtype=np.int64)
        self.tp_value = np.zeros(n)
        self.fp_value = np.full(n, -1.0)  # no window before: the full false-positive weight
        for k, (a, b) in enumerate(self.windows):
            width = b - a + 1
            self.in_window[a:b + 1] = k
            self.tp_value[a:b + 1] = scaled_sigmoid(-(b - rows[a:b + 1] + 1) / width) / MAX_TP
            stop = self.windows[k + 1][0] if k + 1 < len(self.windows) else n
            # NAB divides by width - 1 (a one-row window would divide by zero there; here it counts as 1)
            self.fp_value[b + 1:stop] = scaled_sigmoid((rows[b + 1:stop] - b) / max(width - 1, 1))
        self.fp_value[self.in_window >= 0] = 0.0

    @property
    def labels(self) -> np.ndarray:
        """int8 (n,): 1 inside a window."""
        return (self.in_window >= 0).astype(np.int8)

    def __len__(self) -> int:
        return len(self.time)


@dataclass
class NabCorpus:
    """The labelled NAB files (the keys of combined_windows.json, in its order) and the profiles."""

    root: Path
    files: dict[str, NabFile]
    profiles: dict[str, dict[str, float]]

    @property
    def n_windows(self) -> int:
        """Every labelled window: the perfect detector's number of true positives."""
        return sum(len(f.windows) for f in self.files.values())


@dataclass
class NabResult:
    """One detector on one profile."""

    profile: str
    score: float  # normalised: 0 = detect nothing, 100 = every window at its first row, no false alarm
    raw: float  # the corpus total (what NAB's thresholds.json lists as "score")
    threshold: float
    null: float
    perfect: float


def _times(strings: np.ndarray, where: str) -> np.ndarray:
    try:
        return np.asarray(strings, dtype="datetime64[us]").astype("datetime64[s]")
    except ValueError as err:
        raise InputError(f"{where}: timestamps NAB's way (YYYY-MM-DD HH:MM:SS) expected: {err}") from None


def _read_csv(path: Path, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    import pyarrow.csv as pacsv

    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={"timestamp": "string", "file": "string"}, include_columns=list(columns)))
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"{path}: not a NAB CSV with columns {list(columns)} ({str(err).splitlines()[0]})") from None
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in columns}


def _window_rows(time: np.ndarray, limits: list, where: str) -> np.ndarray:
    """Windows (start, end timestamps) as inclusive row ranges, NAB's way: from the first row stamped
    ``start`` to the first row stamped ``end`` (NAB files repeat and reorder a few timestamps at clock
    changes, so rows are found by equality, not by order); a limit no row carries: the first row at or
    after ``start``, the last at or before ``end``."""
    rows = []
    for pair in limits:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise InputError(f"{where}: a window is [start, end], not {str(pair)[:60]}")
        lo, hi = _times(np.array([str(p) for p in pair]), where)
        a, b = np.flatnonzero(time == lo), np.flatnonzero(time == hi)
        a = a[:1] if len(a) else np.flatnonzero(time >= lo)[:1]
        b = b[:1] if len(b) else np.flatnonzero(time <= hi)[-1:]
        if not (len(a) and len(b)) or a[0] > b[0]:
            raise InputError(f"{where}: window {pair} holds no row")
        rows.append((int(a[0]), int(b[0])))
    out = np.array(sorted(rows), dtype=np.int64).reshape(-1, 2)
    if len(out) > 1 and (out[1:, 0] <= out[:-1, 1]).any():
        raise InputError(f"{where}: windows overlap")
    return out


def load_corpus(root: str | Path, windows_file: str = "labels/combined_windows.json") -> NabCorpus:
    """NAB's corpus under ``root`` (data/, labels/, and published/profiles.json when present)."""
    root = Path(root)
    labels_path = root / windows_file
    if not labels_path.is_file():
        raise InputError(f"{root}: not a NAB folder (no {windows_file})")
    try:
        windows = json.loads(labels_path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{labels_path}: not JSON ({err})") from None
    if not isinstance(windows, dict) or not windows:
        raise InputError(f"{labels_path}: expected {{file: [[start, end], ...]}}")
    files = {}
    for name, limits in windows.items():
        path = root / "data" / name
        cols = _read_csv(path, ("timestamp", "value"))
        time = _times(cols["timestamp"], str(path))
        files[name] = NabFile(name, time, cols["value"].astype(np.float64),
                              _window_rows(time, limits, f"{labels_path} [{name}]"), probation_rows(len(time)))
    profiles = PROFILES
    if (root / "published" / "profiles.json").is_file():
        raw = json.loads((root / "published" / "profiles.json").read_text())
        profiles = {k: {w: float(x) for w, x in v["CostMatrix"].items()} for k, v in raw.items()}
    return NabCorpus(root, files, profiles)


def read_published(root: str | Path, name: str, corpus: NabCorpus | None = None) -> dict[str, np.ndarray]:
    """NAB's published raw anomaly scores of detector ``name`` (published/NAME.csv.gz), by file; checked
    row by row against the corpus' timestamps when a corpus is given."""
    path = Path(root) / "published" / f"{name}.csv.gz"
    if not path.is_file():
        have = sorted(p.name[:-7] for p in path.parent.glob("*.csv.gz"))
        raise InputError(f"{path}: no published scores for {name!r}; there are {', '.join(have)}")
    cols = _read_csv(path, ("file", "timestamp", "anomaly_score"))
    names, first, inverse = np.unique(cols["file"], return_index=True, return_inverse=True)
    out = {}
    for k in np.argsort(first):  # in file order
        rows = np.flatnonzero(inverse == k)
        out[str(names[k])] = cols["anomaly_score"][rows].astype(np.float64)
        if corpus is not None and str(names[k]) in corpus.files:
            f = corpus.files[str(names[k])]
            if len(rows) != len(f) or (_times(cols["timestamp"][rows], str(path)) != f.time).any():
                raise InputError(f"{path}: the rows of {names[k]} are not the data file's rows")
    return out


@dataclass
class Sweep:
    """Every candidate threshold of one detector on one profile and the corpus total it gives."""

    thresholds: np.ndarray  # descending; the first detects nothing
    totals: np.ndarray
    null: float
    perfect: float

    def best(self) -> tuple[float, float]:
        """(threshold, total) with the highest total; ties to the higher threshold, as NAB."""
        k = int(np.argmax(self.totals))
        return float(self.thresholds[k]), float(self.totals[k])

    def normalise(self, total: float) -> float:
        """100 * (total - null) / (perfect - null)."""
        return 100.0 * (total - self.null) / (self.perfect - self.null)


class _Stacked:
    """The scorable rows of every file with a detector's scores, sorted by score once for all profiles."""

    def __init__(self, raw_scores: dict[str, np.ndarray], corpus: NabCorpus) -> None:
        missing = [n for n in corpus.files if n not in raw_scores]
        if missing:
            raise InputError(f"scores missing for {len(missing)} NAB file(s), e.g. {missing[0]}")
        scores, tp, fp, group = [], [], [], []
        offset = 0
        for name, f in corpus.files.items():
            s = np.asarray(raw_scores[name], dtype=np.float64).reshape(-1)
            if len(s) != len(f):
                raise InputError(f"{name}: {len(s)} scores for {len(f)} rows")
            if not np.isfinite(s).all():
                raise InputError(f"{name}: scores are not all finite numbers")
            p = f.probation
            scores.append(s[p:])
            tp.append(f.tp_value[p:])
            fp.append(f.fp_value[p:])
            g = f.in_window[p:]
            group.append(np.where(g >= 0, g + offset, -1))
            offset += len(f.windows)
        s, g = np.concatenate(scores), np.concatenate(group)
        self.tp, self.fp = np.concatenate(tp), np.concatenate(fp)
        self.order = np.argsort(-s, kind="stable")
        self.sorted = s[self.order]
        g_sorted = g[self.order]
        self.in_window = g_sorted >= 0
        # window rows in score order, grouped by window (stable: score order kept inside a group)
        pos = np.flatnonzero(self.in_window)
        self.win_pos = pos[np.argsort(g_sorted[pos], kind="stable")]
        gg = g_sorted[self.win_pos]
        # the earliest row detected so far in each window, as the threshold falls: a running minimum of
        # the row index per group, exact in integers (group * big - row, running maximum)
        big = len(s) + 1
        key = gg * big - self.order[self.win_pos]
        self.earliest = gg * big - np.maximum.accumulate(key)
        self.group_start = np.r_[True, gg[1:] != gg[:-1]]
        self.n_groups = int(self.group_start.sum())
        ends = np.flatnonzero(np.r_[self.sorted[1:] != self.sorted[:-1], True])
        self.ends = ends  # the last sorted row of each distinct score

    def totals(self, weights: dict[str, float]) -> np.ndarray:
        """The corpus total after each sorted row is detected (in sorted order), plus nothing detected."""
        tp_w, fp_w, fn_w = weights["tpWeight"], weights["fpWeight"], weights["fnWeight"]
        delta = np.where(self.in_window, 0.0, self.fp[self.order] * fp_w)
        best = self.tp[self.earliest] * tp_w  # a window's value: its earliest detection's weight
        prev = np.r_[0.0, best[:-1]]
        prev[self.group_start] = -fn_w  # before any detection a window costs A_FN
        delta[self.win_pos] = best - prev
        return -fn_w * self.n_groups + np.cumsum(delta)


def _sweep(stack: _Stacked, weights: dict[str, float], corpus: NabCorpus) -> Sweep:
    base = -weights["fnWeight"] * stack.n_groups
    totals = stack.totals(weights)
    top = stack.sorted[0] if len(stack.sorted) else 0.0
    start = NO_DETECTION if top < NO_DETECTION else float(np.nextafter(top, np.inf))
    return Sweep(np.r_[start, stack.sorted[stack.ends]], np.r_[base, totals[stack.ends]], base,
                 corpus.n_windows * weights["tpWeight"])


def _weights(profile: str, corpus: NabCorpus) -> dict[str, float]:
    if profile not in corpus.profiles:
        raise InputError(f"unknown NAB profile {profile!r}; choose from {', '.join(corpus.profiles)}")
    return corpus.profiles[profile]


def sweep(raw_scores: dict[str, np.ndarray], profile: str, corpus: NabCorpus) -> Sweep:
    """Every threshold's corpus total for one profile (NAB's Sweeper over the whole corpus)."""
    return _sweep(_Stacked(raw_scores, corpus), _weights(profile, corpus), corpus)


def score_corpus(raw_scores: dict[str, np.ndarray], profile: str, corpus: NabCorpus) -> tuple[float, float]:
    """NAB's normalised score of a detector's raw anomaly scores (by file) on one profile, at the threshold
    NAB's optimiser picks, and that threshold."""
    s = sweep(raw_scores, profile, corpus)
    threshold, total = s.best()
    return s.normalise(total), threshold


def score_at(raw_scores: dict[str, np.ndarray], profile: str, corpus: NabCorpus, threshold: float) -> float:
    """The normalised score at a given threshold (rows scoring >= threshold are detections), as NAB's
    scoring step with a threshold from its thresholds file."""
    stack = _Stacked(raw_scores, corpus)
    s = _sweep(stack, _weights(profile, corpus), corpus)
    detected = int(np.searchsorted(-stack.sorted, -threshold, side="right"))  # rows scoring >= threshold
    if detected == 0:
        return s.normalise(s.null)
    k = int(np.searchsorted(stack.ends, detected - 1))  # the distinct score the last of them has
    return s.normalise(float(s.totals[k + 1]))


def score_all(raw_scores: dict[str, np.ndarray], corpus: NabCorpus) -> dict[str, NabResult]:
    """Every profile of the corpus, the rows sorted once."""
    stack = _Stacked(raw_scores, corpus)
    out = {}
    for profile in corpus.profiles:
        s = _sweep(stack, _weights(profile, corpus), corpus)
        threshold, total = s.best()
        out[profile] = NabResult(profile, s.normalise(total), total, threshold, s.null, s.perfect)
    return out


@dataclass
class FileResult:
    """One file's share of a corpus total at a threshold: what NAB's scorer adds up."""

    total: float  # the file's raw score: rewards of found windows, A_FN per missed one, false positives' costs
    found: int  # windows with a detection
    missed: int
    false_alarms: int  # rows detected outside every window after the probationary period
    false_cost: float  # their summed (negative) weight


def file_results(raw_scores: dict[str, np.ndarray], profile: str, corpus: NabCorpus,
                 threshold: float) -> dict[str, FileResult]:
    """Each file's share of the corpus total at ``threshold`` (rows scoring >= it are detections): where a
    detector gains and loses, file by file. The shares add up to the total that ``score_at`` normalises."""
    w = _weights(profile, corpus)
    out = {}
    for name, f in corpus.files.items():
        det = np.asarray(raw_scores[name], dtype=np.float64) >= threshold
        det[:f.probation] = False
        outside = det & (f.in_window < 0)
        cost = float(f.fp_value[outside].sum() * w["fpWeight"])
        found, reward = 0, 0.0
        for k in range(len(f.windows)):
            rows = np.flatnonzero(det & (f.in_window == k))
            if len(rows):
                found += 1
                reward += float(f.tp_value[rows[0]] * w["tpWeight"])
        missed = len(f.windows) - found
        out[name] = FileResult(reward - missed * w["fnWeight"] + cost, found, missed, int(outside.sum()), cost)
    return out
