"""normalcy.series detectors beside the peers a user would pick, on the same series and splits, in one run.

    nice -n 19 python bench/series_peers.py [--data ../shared/data] [--sets nab,asd] [--peers NAME,...]
                                            [--ours NAME,...] [--limit N] [--no-vus] [--json results.json]

Peers, from their PyPI packages (``pip install -c constraints.txt -e ".[series-bench]"`` and
``pip install --no-deps tsb-ad==1.5``; see pyproject.toml):

- TSB-AD's own detectors (Liu & Paparrizos, NeurIPS 2024), called through ``TSB_AD.model_wrapper`` with
  TSB-AD's tuned settings (``HP_list.Optimal_Uni_algo_HP_dict`` / ``Optimal_Multi_algo_HP_dict``):
  univariate (NAB) Sub-PCA, Sub-KNN, Sub-LOF, IForest, MatrixProfile; multivariate (ASD) PCA, KNN, LOF,
  IForest (TSB-AD's multivariate pool has no matrix profile). They are unsupervised and transductive: they
  fit on the very rows they score, as TSB-AD runs them; their ``decision_function`` on new rows is not
  what TSB-AD evaluates (and does not standardise as its ``fit`` does), so it is not used. Their
  decision is TSB-AD's own rule (its main.py): min-max-scaled score > mean + 3 std.
- Orion (``orion-ml``) does not install here: orion-ml 0.7.0 needs tensorflow<2.15, which pulls
  numpy 1.26, scipy 1.13 and pandas 2.3 over this environment's numpy 2.4 / scipy 1.17 (checked with
  ``pip install -c constraints.txt --dry-run orion-ml``). Its published AER event F1 on NAB is printed as a
  reference row instead.

Ours (``normalcy.series.registry``): ``create(name)``, ``fit(train rows)``, ``score(test rows)``;
their decision is ``score >= threshold_`` (set on held-out normal training rows at ``fpr``), and their
events are those ``predict`` writes (``normalcy.series.events.spans`` with gap = the detector's gap_:
decision runs fewer than max(window_, event_gap) rows apart merge; event_gap 100 by default, as Orion's 50 rows of
padding either side merge), then pruned as ``predict`` prunes them (Hundman et al.'s rule, our ``prune``
parameter, 0.13). The peers' decisions are merged by the same rule (runs fewer than 100 rows apart), so that
events are counted alike, and not pruned: each peer keeps its own decision rule.

Splits:
- NAB (58 files, labels = NAB's combined anomaly windows): ours fit on the first 15 % of each file
  (NAB's probationary period, floor(0.15 n) rows) and score the whole file; the TSB-AD peers fit and
  score the whole file. Metrics cover every row of every file.
- ASD (12 servers): ours fit on train.csv and score test.csv; the TSB-AD peers run on train.csv
  followed by test.csv (so they see the same rows ours learn from) and their test.csv rows are scored.
- TSB-AD-M files (``--sets tsbm --tsbm DIR``: every ``*.csv`` of DIR in TSB-AD's multivariate layout, columns
  then ``Label``, the training length in the name: ``..._tr_2075_1st_5550.csv`` or ``107_SMAP_E-9_2075_5550.csv``;
  its SMD, SMAP and MSL files are the server machines and spacecraft telemetry of issue 25's hidden check): split
  as ASD, the first rows as train, the rest as test.

Metrics (normalcy.evaluation.series_metrics): event F1 as Orion's leaderboard (overlap segment; tp/fp/fn
summed over a data set's series, per NAB category and pooled over all files); point F1 at the method's
own threshold (counts pooled); AUC-PR and VUS-PR (tsb-ad's, window = TSB-AD's find_length_rank of the
series' first column, one window per series for every method) averaged over the series that have
labels. A method that fails on a series counts as detecting nothing there (Orion's convention: all
its events missed) and is listed under "failed". Seconds: fit + score, this process, methods
interleaved per series so that the shared machine's load falls on all alike.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
import traceback
import warnings
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.compute as pc
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from normalcy.evaluation.series_metrics import (  # noqa: E402
    Counts,
    SeriesEval,
    evaluate_series,
    label_events,
    pool,
    vus_window,
)

NAB_CATEGORIES = (
    "artificialNoAnomaly", "artificialWithAnomaly", "realAWSCloudwatch", "realAdExchange",
    "realKnownCause", "realTraffic", "realTweets",
)
SHORT = {
    "artificialNoAnomaly": "ArtNoAnom", "artificialWithAnomaly": "Art", "realAWSCloudwatch": "AWS",
    "realAdExchange": "AdEx", "realKnownCause": "KnownCause", "realTraffic": "Traf", "realTweets": "Tweets",
}
# Orion's published AER event F1 on NAB (the figures issue 25 quotes).
ORION_AER = {
    "artificialWithAnomaly": 0.75, "realAWSCloudwatch": 0.70, "realAdExchange": 0.73,
    "realTraffic": 0.61, "realTweets": 0.61,
}
PROBATION = 0.15


@dataclass
class Case:
    """One series: the rows a detector learns from, the rows it scores, and their labels."""

    dataset: str
    category: str
    name: str
    train: np.ndarray  # (m, d): what ours fit on
    test: np.ndarray  # (n, d): what every method scores
    labels: np.ndarray  # (n,) int8
    history: np.ndarray | None = None  # rows before test that the transductive peers also see (ASD's train)


@dataclass
class Output:
    scores: np.ndarray
    decisions: np.ndarray
    events: list[tuple[int, int]] | None = None  # None: runs of decisions


@dataclass
class Tally:
    """One method on one data set."""

    results: list[SeriesEval] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    seconds: float = 0.0
    failed: list[str] = field(default_factory=list)


Runner = Callable[[Case], Output]


# --------------------------------------------------------------------------- data


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(strings_can_be_null=False))
    return {name: table.column(name) for name in table.column_names}


def load_nab(root: Path) -> list[Case]:
    windows = json.loads((root / "labels" / "combined_windows.json").read_text())
    cases = []
    for category in NAB_CATEGORIES:
        for path in sorted((root / "data" / category).glob("*.csv")):
            cols = _read_csv(path)
            stamps = cols["timestamp"]
            if not str(stamps.type).startswith("timestamp"):
                stamps = pc.strptime(stamps, format="%Y-%m-%d %H:%M:%S", unit="s")
            t = stamps.to_numpy(zero_copy_only=False).astype("datetime64[s]")
            values = cols["value"].to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, 1)
            labels = np.zeros(len(t), dtype=np.int8)
            for start, end in windows[f"{category}/{path.name}"]:
                lo, hi = np.datetime64(start[:19]), np.datetime64(end[:19])
                labels[(t >= lo) & (t <= hi)] = 1
            fit_rows = int(math.floor(PROBATION * len(values)))
            cases.append(Case("nab", category, path.stem, values[:fit_rows], values, labels))
    return cases


def load_tsbm(root: Path) -> list[Case]:
    """TSB-AD-M files: the training length is the name's number after ``_tr_``, else its last but one."""
    cases = []
    for path in sorted(root.glob("*.csv")):
        parts = path.stem.split("_")
        nums = [p for p in parts if p.isdigit()]
        if "tr" in parts[:-1]:
            train_rows = int(parts[parts.index("tr") + 1])
        else:
            train_rows = int(nums[-2]) if len(nums) >= 2 else 0
        cols = _read_csv(path)
        label = next((c for c in cols if c.lower() == "label"), None)
        if label is None or train_rows < 2:
            print(f"{path.name}: no Label column or no training length in the name: left out", file=sys.stderr)
            continue
        X = np.column_stack([cols[c].to_numpy(zero_copy_only=False) for c in cols if c != label]).astype(np.float64)
        y = cols[label].to_numpy(zero_copy_only=False).astype(np.int8)
        dataset = parts[1] if len(parts) > 1 else "tsbm"
        cases.append(Case("tsbm", dataset, path.stem, X[:train_rows], X[train_rows:], y[train_rows:],
                          history=X[:train_rows]))
    return cases


def load_asd(root: Path) -> list[Case]:
    cases = []
    folders = sorted((p for p in root.iterdir() if (p / "test.csv").is_file()),
                     key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else p.name)
    for folder in folders:
        train, test = _read_csv(folder / "train.csv"), _read_csv(folder / "test.csv")
        metrics = [c for c in train if c not in ("timestamp", "label")]

        def stack(cols: dict[str, np.ndarray]) -> np.ndarray:
            return np.column_stack([cols[c].to_numpy(zero_copy_only=False) for c in metrics]).astype(np.float64)

        tr, te = stack(train), stack(test)
        labels = test["label"].to_numpy(zero_copy_only=False).astype(np.int8)
        cases.append(Case("asd", "asd", folder.name, tr, te, labels, history=tr))
    return cases


# --------------------------------------------------------------------------- TSB-AD peers

UNI_PEERS = ("Sub_PCA", "Sub_KNN", "Sub_LOF", "IForest", "MatrixProfile")
MULTI_PEERS = ("PCA", "KNN", "LOF", "IForest")


def tsb_threshold(scores: np.ndarray) -> np.ndarray:
    """TSB-AD's decision (its main.py): min-max scaled score > mean + 3 std."""
    s = np.asarray(scores, dtype=np.float64)
    span = s.max() - s.min()
    s = (s - s.min()) / span if span > 0 else np.zeros_like(s)
    return (s > s.mean() + 3 * s.std()).astype(np.int8)


def tsb_peer(name: str, multivariate: bool) -> Runner:
    from TSB_AD import HP_list, model_wrapper

    params = (HP_list.Optimal_Multi_algo_HP_dict if multivariate else HP_list.Optimal_Uni_algo_HP_dict)[name]
    fn = getattr(model_wrapper, f"run_{name}")
    if name == "MatrixProfile":  # compile stumpy's numba kernels now, not inside the first timed series
        import stumpy

        stumpy.stump(np.random.default_rng(0).random(64), m=8)

    def run(case: Case) -> Output:
        data = case.test if case.history is None else np.concatenate([case.history, case.test])
        # Some TSB-AD models print progress; degenerate windows warn (the NaNs they leave are reported below).
        with redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = fn(data, **params)
        if isinstance(out, str):  # TSB-AD's wrappers return their error as a string
            raise RuntimeError(out)
        scores = np.asarray(out, dtype=np.float64).ravel()[len(data) - len(case.test):]
        if len(scores) != len(case.test):
            raise RuntimeError(f"{name} returned {len(scores)} scores for {len(case.test)} rows")
        if not np.isfinite(scores).all():
            raise RuntimeError(f"{name} returned {int((~np.isfinite(scores)).sum())} NaN or infinite scores")
        decisions = tsb_threshold(scores)
        return Output(scores, decisions, _merged(decisions, PEER_GAP))

    return run


# --------------------------------------------------------------------------- ours


def our_registry():  # -> module | None
    """normalcy.series.registry when it exists (it is being written alongside this script)."""
    try:
        from normalcy.series import registry
    except ImportError:
        return None
    return registry


def our_detector(name: str) -> Runner:
    """Our detector through the protocol of the series design: fit on normal rows, score, events."""
    registry = our_registry()
    assert registry is not None

    def run(case: Case) -> Output:
        det = registry.create(name, seed=0)
        det.fit(case.train, progress=False)
        out = det.score(case.test)
        scores = np.asarray(out.score, dtype=np.float64).ravel()
        decisions = np.asarray(out.decision).ravel().astype(np.int8)
        found = _our_events(det, out)
        if found is not None:  # pruned as predict prunes them (Hundman et al.'s rule, --prune)
            from normalcy.series.events import pruned

            found, decisions = pruned(scores, decisions, found, det.event_pruning)
        return Output(scores, decisions, found)

    return run


PEER_GAP = 100  # rows: our detectors' default event_gap, the peers' decisions merged alike


def _merged(decisions: np.ndarray, gap: int) -> list[tuple[int, int]] | None:
    """Decision runs fewer than ``gap`` rows apart as one event (None without normalcy.series)."""
    try:
        from normalcy.series.events import spans
    except ImportError:
        return None
    return spans(decisions, gap=gap)


def _our_events(det, out) -> list[tuple[int, int]] | None:
    """The events predict writes, as row intervals: decision runs merged across gaps shorter than the
    detector's gap_ (normalcy.series.events' convention); None (runs of decisions) without that module."""
    return _merged(out.decision, int(det.gap_))


# --------------------------------------------------------------------------- run and print


def run_set(cases: list[Case], methods: dict[str, Runner], vus: bool, tracebacks: bool = False) -> dict[str, Tally]:
    tallies = {m: Tally() for m in methods}
    for i, case in enumerate(cases, 1):
        window = vus_window(case.test) if vus else None
        for method, runner in methods.items():
            tally = tallies[method]
            t0 = time.perf_counter()
            try:
                out = runner(case)
                tally.seconds += time.perf_counter() - t0
                result = evaluate_series(case.labels, out.scores, out.decisions, predicted=out.events,
                                         window=window, name=case.name)
            except Exception as err:  # noqa: BLE001 - a failed series counts as nothing found
                tally.seconds += time.perf_counter() - t0
                tally.failed.append(f"{case.name}: {type(err).__name__}: {str(err).splitlines()[0][:160]}")
                if tracebacks:
                    traceback.print_exc(file=sys.stderr)
                truth = case.labels
                result = SeriesEval(case.name, len(truth), Counts(0, 0, len(label_events(truth))),
                                    Counts(0, 0, int((truth != 0).sum())), float("nan"), float("nan"))
            tally.results.append(result)
            tally.categories.append(case.category)
        print(f"[{case.dataset} {i}/{len(cases)}] {case.category}/{case.name}", file=sys.stderr, flush=True)
    return tallies


def _f(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def print_nab(tallies: dict[str, Tally], n_files: int = 58) -> dict:
    cats = [c for c in NAB_CATEGORIES if c != "artificialNoAnomaly"]
    head = ["method", *(SHORT[c] for c in cats), "ArtNoAnom FP", "event F1", "(tp/fp/fn)", "point F1",
            "AUC-PR", "VUS-PR", "s", "failed"]
    print(f"\n## NAB ({n_files} files): event F1 per category, pooled over all files\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    report = {}
    for method, t in tallies.items():
        per = {c: pool([r for r, k in zip(t.results, t.categories) if k == c]) for c in NAB_CATEGORIES}
        allp = pool(t.results)
        row = [method, *(_f(per[c].event_f1) for c in cats), str(per["artificialNoAnomaly"].events.fp),
               _f(allp.event_f1), f"{allp.events.tp}/{allp.events.fp}/{allp.events.fn}", _f(allp.point_f1),
               _f(allp.auc_pr), _f(allp.vus_pr), f"{t.seconds:.1f}", str(len(t.failed))]
        print("| " + " | ".join(row) + " |")
        report[method] = {"pooled": allp.as_dict(), "categories": {c: per[c].as_dict() for c in NAB_CATEGORIES},
                          "seconds": t.seconds, "failed": t.failed}
    row = ["Orion AER (published)", *(_f(ORION_AER.get(c, float("nan"))) for c in cats)] + ["–"] * 8
    print("| " + " | ".join(row) + " |")
    return report


def print_asd(tallies: dict[str, Tally], title: str = "ASD (12 servers, fit on train.csv, scored on test.csv)") -> dict:
    head = ["method", "event F1", "(tp/fp/fn)", "point F1", "AUC-PR", "VUS-PR", "s", "failed"]
    print(f"\n## {title}\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    report = {}
    for method, t in tallies.items():
        p = pool(t.results)
        row = [method, _f(p.event_f1), f"{p.events.tp}/{p.events.fp}/{p.events.fn}", _f(p.point_f1),
               _f(p.auc_pr), _f(p.vus_pr), f"{t.seconds:.1f}", str(len(t.failed))]
        print("| " + " | ".join(row) + " |")
        report[method] = {"pooled": p.as_dict(), "seconds": t.seconds, "failed": t.failed,
                          "series": {r.name: {"event_f1": r.events.f1, "point_f1": r.points.f1,
                                              "auc_pr": r.auc_pr, "vus_pr": r.vus_pr} for r in t.results}}
    return report


def print_failures(name: str, tallies: dict[str, Tally]) -> None:
    for method, t in tallies.items():
        for line in t.failed:
            print(f"- {name} {method} failed on {line}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--sets", default="nab,asd", help="comma-separated: nab, asd, tsbm")
    ap.add_argument("--tsbm", type=Path, default=None, help="folder of TSB-AD-M files (--sets tsbm; default "
                                                             "DATA/tsb-ad-m)")
    ap.add_argument("--peers", default=None, help="TSB-AD detectors to run (default: the five / four above); "
                                                  "'none' for none")
    ap.add_argument("--ours", default=None, help="our detectors (default: every one in the registry); 'none'")
    ap.add_argument("--limit", type=int, default=0, help="first N series of each set (a quick look)")
    ap.add_argument("--no-vus", action="store_true", help="skip VUS-PR (the slowest metric)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--traceback", action="store_true", help="print each failure's traceback to stderr")
    args = ap.parse_args(argv)
    known = (*UNI_PEERS, *MULTI_PEERS)
    unknown = [p for p in (args.peers or "").split(",") if p and p != "none" and p not in known]
    if unknown:  # it was dropped without a word: a misspelt peer ran nothing
        ap.error(f"--peers: unknown TSB-AD detector {unknown[0]!r}: choose from {', '.join(dict.fromkeys(known))}")
    if args.peers != "none" or not args.no_vus:
        try:  # each series' VUS-PR and every peer would fail alike, counted as failures in the tables
            import TSB_AD  # noqa: F401
        except ImportError:
            raise SystemExit("TSB-AD's detectors and VUS-PR need tsb-ad: pip install --no-deps tsb-ad==1.5 "
                             "(see pyproject.toml); or run ours alone with --peers none --no-vus") from None

    registry = our_registry()
    if args.ours == "none":
        ours: list[str] = []
    elif registry is None:
        ours = []
        print("normalcy.series.registry not found: our detectors not run (hook: our_detector)", file=sys.stderr)
    else:
        ours = args.ours.split(",") if args.ours else sorted(registry.DETECTORS)
        unknown_ours = [n for n in ours if n not in registry.DETECTORS]
        if unknown_ours:  # every series failed alike: a row of zeros, its reason below the table
            ap.error(f"--ours: unknown detector {unknown_ours[0]!r}: "
                     f"choose from {', '.join(sorted(registry.DETECTORS))}")

    report: dict = {"orion": "not run: orion-ml 0.7.0 needs tensorflow<2.15, numpy 1.26, scipy 1.13 (checked "
                             "with pip --dry-run); published AER figures shown instead"}
    for name in args.sets.split(","):  # every set's folder checked before the first (long) set runs
        folder = (args.tsbm or args.data / "tsb-ad-m") if name == "tsbm" else args.data / name
        if name in ("nab", "asd", "tsbm") and not folder.is_dir():
            raise SystemExit(f"{folder} not found (--data DIR holds nab/ and asd/; --tsbm DIR the TSB-AD-M files)")
    for name in args.sets.split(","):
        if name == "nab":
            cases, multivariate = load_nab(args.data / "nab"), False
        elif name == "asd":
            cases, multivariate = load_asd(args.data / "asd"), True
        elif name == "tsbm":
            cases, multivariate = load_tsbm(args.tsbm or args.data / "tsb-ad-m"), True
        else:
            raise SystemExit(f"--sets: unknown data set {name!r} (nab, asd, tsbm)")
        if args.limit:
            cases = cases[: args.limit]
        peers = MULTI_PEERS if multivariate else UNI_PEERS
        if args.peers == "none":
            peers = ()
        elif args.peers:
            peers = tuple(p for p in args.peers.split(",") if p in peers)
        methods: dict[str, Runner] = {f"ours: {n}": our_detector(n) for n in ours}
        methods.update({f"TSB-AD {p}": tsb_peer(p, multivariate) for p in peers})
        tallies = run_set(cases, methods, vus=not args.no_vus, tracebacks=args.traceback)
        asd_title = f"ASD ({len(cases)} servers, fit on train.csv, scored on test.csv)"
        report[name] = print_nab(tallies, len(cases)) if name == "nab" else \
            print_asd(tallies, asd_title) if name == "asd" else \
            print_asd(tallies, f"TSB-AD-M files ({len(cases)}: {', '.join(c.name for c in cases[:4])}"
                               f"{' ...' if len(cases) > 4 else ''}), fit on the rows before the name's training "
                               "length's end, scored on the rest")
        print_failures(name, tallies)
    print(f"\nOrion: {report['orion']}.")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
