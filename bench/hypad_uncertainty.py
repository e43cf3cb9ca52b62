"""What HypAD's hyperbolic uncertainty does to false alarms: the same trained model scored with and
without the re-weighting, on ASD (12 servers) and NAB (58 files).

    python bench/hypad_uncertainty.py ../shared/data [--sets asd,nab] [--files N] [--param KEY=VALUE ...]

Each series gets one HypAD model (``normalcy.series.hypad``), trained once; its windows are then scored
two ways: ``uncertainty``, the paper's d_P(h(x), h(x̂)) * ||h(x̂)||, and ``plain``, d_P(h(x), h(x̂)) alone
(the paper's ablation), so any difference is the re-weighting's, not training noise. Each way gets its own
threshold by the protocol's rule: the (1 - fpr) quantile of the scores of the held-out end of the normal
training rows. ASD: fitted on train.csv, scored on test.csv. NAB: fitted on each file's probationary
period (NAB's first min(15 %, 750) rows), scored on the whole file (batch scoring is the online score:
each row from its past), judged on the rows after the probationary period, labels = NAB's windows.

Reported per data set and way:
- at its own threshold: event F1 (Orion's overlap rule, counts pooled), false-positive events (predicted
  events, decisions merged across gaps under the window, that overlap no labelled event), point recall,
  point FPR (flagged normal rows / normal rows), point F1, mean AUC-PR;
- at the same recall: for point recall 0.25, 0.5 and 0.75, each labelled series thresholded where its
  own recall first reaches the level; the false-positive events and point FPR that costs (series
  without labelled rows left out);
- NAB: the standard profile's normalised score (scores s mapped to s / (s + threshold_), as bench/nab.py).
Ends with one JSON line of the headline numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from normalcy.errors import InputError  # noqa: E402
from normalcy.evaluation.series_metrics import Counts, auc_pr, event_counts, label_events  # noqa: E402
from nab import parse_params  # noqa: E402  (bench/nab.py: scripts import each other by name)
from normalcy.numerics.stats import threshold_at  # noqa: E402
from normalcy.series.base import MIN_THRESHOLD  # noqa: E402
from normalcy.series.events import spans  # noqa: E402
from normalcy.series.hypad import HypAD  # noqa: E402

WAYS = ("uncertainty", "plain")
RECALLS = (0.25, 0.5, 0.75)


@dataclass
class Scored:
    """One series scored both ways: test scores, labels, the thresholds and the event gap."""

    name: str
    labels: np.ndarray
    scores: dict[str, np.ndarray]
    thresholds: dict[str, float]
    gap: int


@dataclass
class Tally:
    """Pooled counts of one way on one data set."""

    events: Counts = field(default_factory=Counts)
    fp_rows: int = 0
    tp_rows: int = 0
    normal_rows: int = 0
    anomalous_rows: int = 0
    aps: list[float] = field(default_factory=list)

    def add(self, labels: np.ndarray, decision: np.ndarray, gap: int) -> None:
        self.events = self.events + event_counts(label_events(labels), spans(decision, gap))
        self.fp_rows += int((decision & (labels == 0)).sum())
        self.tp_rows += int((decision & (labels == 1)).sum())
        self.normal_rows += int((labels == 0).sum())
        self.anomalous_rows += int((labels == 1).sum())

    def row(self) -> dict[str, float]:
        recall = self.tp_rows / max(self.anomalous_rows, 1)
        precision = self.tp_rows / max(self.tp_rows + self.fp_rows, 1)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        aps = [a for a in self.aps if not np.isnan(a)]
        return {"event_f1": round(self.events.f1, 4), "fp_events": self.events.fp, "tp_events": self.events.tp,
                "fn_events": self.events.fn, "point_recall": round(recall, 4),
                "point_fpr": round(self.fp_rows / max(self.normal_rows, 1), 5), "point_f1": round(f1, 4),
                "auc_pr": round(float(np.mean(aps)), 4) if aps else float("nan")}


def both_ways(det: HypAD, X: np.ndarray) -> dict[str, np.ndarray]:
    """Scores of X's rows with and without the uncertainty re-weighting, from one trained model."""
    out = {}
    for way in WAYS:
        det.uncertainty = way == "uncertainty"
        out[way] = det.score(X).score
    det.uncertainty = True
    return out


def fit_and_score(name: str, train: np.ndarray, test: np.ndarray, labels: np.ndarray, judged: slice,
                  params: dict[str, object]) -> tuple[Scored, float]:
    """Fit HypAD on normal ``train`` rows; both ways' held-out thresholds and test scores."""
    t0 = time.perf_counter()
    det = HypAD(**params).fit(train, progress=False)
    seconds = time.perf_counter() - t0
    cut = len(train) - int(round(det.holdout * len(train)))
    held = both_ways(det, train)  # causal: the held-out rows score as the fit's calibration scored them
    held = {w: h[cut:] for w, h in held.items()}
    first, rest = det._first_parts([det.standardise(train)], [cut])
    if first:  # cross-fitted, as the fit: the first share too, by the twin fitted on the rest
        twin = det._twin(rest)
        twin.threshold_ = det.threshold_  # scored only: its threshold is never read
        twin.flags_ = det.flags_  # score() standardises raw rows as the model does: its left-out 0/1 columns too
        early = both_ways(twin, train[:len(first[0])])
        held = {w: np.concatenate([held[w], early[w][det.context - 1:]]) for w in WAYS}
    thresholds = {w: max(threshold_at(held[w], det.fpr), MIN_THRESHOLD) for w in WAYS}
    assert abs(thresholds["uncertainty"] - det.threshold_) <= 1e-9 * max(1.0, det.threshold_), name
    scores = {w: s[judged] for w, s in both_ways(det, test).items()}
    return Scored(name, labels[judged].astype(np.int8), scores, thresholds, det.window_), seconds


def at_recall(s: np.ndarray, labels: np.ndarray, level: float) -> float:
    """The highest threshold whose decisions (score >= it) reach point recall ``level`` on this series."""
    pos = np.sort(s[labels == 1])[::-1]
    return float(pos[max(0, int(np.ceil(level * len(pos))) - 1)])


def summarise(items: list[Scored]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for way in WAYS:
        own = Tally()
        for it in items:
            own.add(it.labels, (it.scores[way] >= it.thresholds[way]).astype(np.int8), it.gap)
            own.aps.append(auc_pr(it.labels, it.scores[way]) if 0 < it.labels.sum() < len(it.labels) else np.nan)
        same = {}
        for level in RECALLS:
            t = Tally()
            for it in items:
                if it.labels.sum():
                    thr = at_recall(it.scores[way], it.labels, level)
                    t.add(it.labels, (it.scores[way] >= thr).astype(np.int8), it.gap)
            r = t.row()
            same[str(level)] = {"fp_events": r["fp_events"], "point_fpr": r["point_fpr"],
                                "point_recall": r["point_recall"], "event_f1": r["event_f1"]}
        out[way] = {"own_threshold": own.row(), "same_recall": same}
    return out


def run_asd(root: Path, params: dict[str, object], limit: int | None) -> tuple[list[Scored], float]:
    from normalcy.series.io import read_series_folder, series_folders

    items, fit_s = [], 0.0
    for folder in series_folders(root)[:limit]:
        (train,), (test,) = read_series_folder(folder)
        it, s = fit_and_score(folder.name, train.values, test.values, test.labels, slice(None), params)
        items.append(it)
        fit_s += s
        print(f"  asd {folder.name:8s} fit {s:5.1f}s", file=sys.stderr, flush=True)
    return items, fit_s


def run_nab(root: Path, params: dict[str, object], limit: int | None) -> tuple[list[Scored], float, dict]:
    from normalcy.evaluation import nab

    corpus = nab.load_corpus(root)
    items, fit_s, raw = [], 0.0, {w: {} for w in WAYS}
    for key in list(corpus.files)[:limit]:
        f = corpus.files[key]
        X = f.values.reshape(-1, 1)
        try:
            it, s = fit_and_score(key, X[:f.probation], X, f.labels, slice(f.probation, None), params)
        except InputError as err:  # too short to fit: detects nothing
            print(f"  nab {key}: {err}", file=sys.stderr)
            continue
        items.append(it)
        fit_s += s
        for w in WAYS:  # NAB judges the whole file (it ignores the probationary rows itself)
            full = np.concatenate([np.zeros(f.probation), it.scores[w]])
            raw[w][key] = full / (full + it.thresholds[w])
    for w in WAYS:
        for key in corpus.files:
            raw[w].setdefault(key, np.zeros(len(corpus.files[key])))
    standard = {w: round(nab.score_corpus(raw[w], "standard", corpus)[0], 2) for w in WAYS}
    return items, fit_s, standard


def print_table(title: str, summary: dict[str, dict]) -> None:
    print(f"\n{title}")
    print(f"{'way':12s} {'event F1':>8s} {'FP ev':>6s} {'TP ev':>6s} {'FN ev':>6s} {'pt recall':>9s} "
          f"{'pt FPR':>8s} {'pt F1':>6s} {'AUC-PR':>7s}   FP events / point FPR at recall "
          + " ".join(str(r) for r in RECALLS))
    for way, s in summary.items():
        o = s["own_threshold"]
        same = "  ".join(f"{v['fp_events']:4d} / {v['point_fpr']:.4f}" for v in s["same_recall"].values())
        print(f"{way:12s} {o['event_f1']:8.3f} {o['fp_events']:6d} {o['tp_events']:6d} {o['fn_events']:6d} "
              f"{o['point_recall']:9.3f} {o['point_fpr']:8.4f} {o['point_f1']:6.3f} {o['auc_pr']:7.3f}   {same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, help="the shared data folder (holding asd/ and nab/)")
    ap.add_argument("--sets", default="asd,nab")
    ap.add_argument("--files", type=int, default=None, help="only the first N series of each set")
    ap.add_argument("--param", action="append", default=[], help="a HypAD parameter, KEY=VALUE")
    args = ap.parse_args()
    unknown = set(args.sets.split(",")) - {"asd", "nab"}
    if unknown:  # it ran nothing and printed {"params": {}}
        ap.error(f"--sets: unknown data set {sorted(unknown)[0]!r} (asd, nab)")
    params = parse_params(args.param)
    result: dict[str, object] = {"params": params}
    if "asd" in args.sets:
        t0 = time.perf_counter()
        items, fit_s = run_asd(args.data / "asd", params, args.files)
        summary = summarise(items)
        print_table(f"ASD, {len(items)} servers (fit {fit_s:.0f} s, all {time.perf_counter() - t0:.0f} s)", summary)
        result["asd"] = summary
    if "nab" in args.sets:
        t0 = time.perf_counter()
        items, fit_s, standard = run_nab(args.data / "nab", params, args.files)
        summary = summarise(items)
        print_table(f"NAB, {len(items)} files (fit {fit_s:.0f} s, all {time.perf_counter() - t0:.0f} s); NAB standard "
                    f"score: uncertainty {standard['uncertainty']}, plain {standard['plain']}", summary)
        result["nab"] = summary
        result["nab_standard"] = standard
    print(json.dumps(result))


if __name__ == "__main__":
    try:
        main()
    except InputError as e:  # a folder not found or not in its layout: one line, as the CLI says it
        raise SystemExit(f"error: {e}") from None
