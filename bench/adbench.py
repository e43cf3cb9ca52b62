"""normalcy.vectors detectors against PyOD's own detectors on ADBench (Han et al. 2022), normal-only training.

    nice -n 19 python bench/adbench.py [--data ../shared/data/adbench] [--seeds 1] [--only NAME]
                                       [--json results.json] > table.md

Every .npz under Classical/ and CV_by_ResNet18/ (X, y; y = 1 anomaly). The split is ADBench's
DataGenerator with no labelled anomalies and the anomaly contamination removed from the training
part (its "semi-supervised" setting with contam_ratio 0), per seed:

- a data set with more than 10,000 rows is subsampled to 10,000 (ADBench draws at random; we
  draw stratified, so that a set with few anomalies, such as smtp, keeps some);
- a stratified 70/30 train/test split (scikit-learn's train_test_split, shuffle, stratify=y);
- the anomalies are dropped from the training part: every method fits on normal rows only and
  scores the whole test part (30% of the normals and 30% of the anomalies);
- min-max scaling fitted on those normal training rows (ADBench fits it on the training part).

Unlike ADBench, small sets (< 1,000 rows) are not padded with duplicated rows: duplicates would land
on both sides of the split. Every method sees the same split; AUROC and AP come from scikit-learn,
time is one fit plus one score of the test part, in this process, interleaved per data set so that
the shared machine's load falls on all methods alike. Prints markdown: averages first, then AUROC,
AP and seconds per data set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler

from normalcy.vectors import (
    ECODDetector,
    EnsembleDetector,
    GaussianDetector,
    IForestDetector,
    KNNDetector,
)
from normalcy.vectors.tables import semi_supervised_split

GROUPS = ("Classical", "CV_by_ResNet18")
MAX_ROWS = 10_000


def methods(seed: int) -> dict[str, Callable[[], object]]:
    """name -> a fresh detector. Ours score with ``anomaly_score``, PyOD's with ``decision_function``
    (both: higher = more anomalous). PyOD's settings are its defaults."""
    try:
        from pyod.models.ecod import ECOD
        from pyod.models.iforest import IForest
        from pyod.models.knn import KNN
        from pyod.models.lof import LOF
    except ImportError:  # an optional peer: said in one line, not a ModuleNotFoundError traceback
        raise SystemExit("bench/adbench.py compares with PyOD, not installed: "
                         "pip install -c constraints.txt -e \".[bench]\"") from None

    return {
        "gaussian": lambda: GaussianDetector(random_state=seed),
        "knn": lambda: KNNDetector(),
        "iforest": lambda: IForestDetector(random_state=seed),
        "ecod": lambda: ECODDetector(),
        "ensemble": lambda: EnsembleDetector(random_state=seed),
        "pyod IForest": lambda: IForest(random_state=seed),
        "pyod KNN": lambda: KNN(),
        "pyod ECOD": lambda: ECOD(),
        "pyod LOF": lambda: LOF(),
    }


def split(X: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ADBench's split with the training anomalies removed: (normal training rows, test rows, test labels)."""
    if len(y) > MAX_ROWS:
        X, _, y, _ = train_test_split(X, y, train_size=MAX_ROWS, stratify=y, random_state=seed)
    normal, X_test, y_test = semi_supervised_split(X, y, seed)
    scaler = MinMaxScaler().fit(normal)
    return scaler.transform(normal), scaler.transform(X_test), y_test


def anomaly_scores(model, X_train: np.ndarray, X_test: np.ndarray) -> np.ndarray:
    model.fit(X_train)
    return model.anomaly_score(X_test) if hasattr(model, "anomaly_score") else model.decision_function(X_test)


def run(data: Path, seeds: list[int], only: str | None) -> list[dict]:
    files = [f for g in GROUPS for f in sorted((data / g).glob("*.npz"), key=lambda p: _order(p.stem))]
    if only:
        files = [f for f in files if only.lower() in f.stem.lower()]
    if not files:
        sys.exit(f"no .npz files under {data}/{{{','.join(GROUPS)}}}"
                 + (f" whose name contains {only!r}" if only else ""))
    rows = []
    for path in files:
        d = np.load(path, allow_pickle=True)
        X, y = np.asarray(d["X"], dtype=np.float64), np.asarray(d["y"]).astype(int).ravel()
        for seed in seeds:
            X_train, X_test, y_test = split(X, y, seed)
            for name, make in methods(seed).items():
                t = time.perf_counter()
                try:
                    s = anomaly_scores(make(), X_train, X_test)
                    auroc, ap = roc_auc_score(y_test, s), average_precision_score(y_test, s)
                    error = ""
                except Exception as e:  # a failing method is reported, not allowed to stop the run
                    auroc = ap = float("nan")
                    error = f"{type(e).__name__}: {e}"
                rows.append({"data": path.stem, "group": path.parent.name, "seed": seed, "method": name,
                             "n_total": len(y), "n_train": len(X_train), "n_test": len(y_test),
                             "n_test_anomalies": int(y_test.sum()), "dims": X.shape[1], "auroc": auroc, "ap": ap,
                             "seconds": time.perf_counter() - t, "error": error})
                print(f"{path.stem} seed {seed} {name}: AUROC {auroc:.3f} AP {ap:.3f} "
                      f"{rows[-1]['seconds']:.2f} s {error}", file=sys.stderr, flush=True)
    return rows


def _order(stem: str) -> tuple:
    """ADBench's numbering (2_annthyroid before 10_cover), then the name."""
    head = stem.split("_", 1)[0]
    return (int(head), stem) if head.isdigit() else (0, stem)


def tables(rows: list[dict], seeds: list[int]) -> str:
    names = list(dict.fromkeys(r["method"] for r in rows))
    sets = list(dict.fromkeys(r["data"] for r in rows))
    cell = {}
    for r in rows:  # mean over seeds per (data set, method)
        cell.setdefault((r["data"], r["method"]), []).append(r)
    mean = {k: {m: float(np.mean([r[m] for r in v])) for m in ("auroc", "ap", "seconds")} for k, v in cell.items()}
    group = {r["data"]: r["group"] for r in rows}

    out = [f"Seeds: {', '.join(map(str, seeds))}; numbers are means over seeds. "
           f"{len(sets)} data sets.", "",
           "| method | AUROC (all) | AUROC Classical | AUROC CV_by_ResNet18 | AP (all) | mean rank (AUROC) "
           "| total fit+score s |", "|---|---|---|---|---|---|---|"]
    ranks = _ranks(mean, sets, names)
    for m in names:
        au = [mean[(s, m)]["auroc"] for s in sets]
        by = [[mean[(s, m)]["auroc"] for s in sets if group[s] == g] for g in GROUPS]
        by = [f"{np.nanmean(v):.3f}" if v else "-" for v in by]
        out.append(f"| {m} | {np.nanmean(au):.3f} | {by[0]} | {by[1]} | "
                   f"{np.nanmean([mean[(s, m)]['ap'] for s in sets]):.3f} | {np.mean(ranks[m]):.2f} | "
                   f"{sum(mean[(s, m)]['seconds'] for s in sets):.1f} |")
    failed = [r for r in rows if r["error"]]
    if failed:
        out += ["", "Failed runs (left out of the means): " +
                "; ".join(f"{r['method']} on {r['data']} (seed {r['seed']}): {r['error']}" for r in failed)]
    first = {s: next(r for r in rows if r["data"] == s) for s in sets}
    for metric, title, fmt in (("auroc", "AUROC", "{:.3f}"), ("ap", "AP", "{:.3f}"), ("seconds", "fit+score s", "{:.2f}")):
        out += ["", f"{title} per data set:", "",
                "| data set | rows | train (normal) | test (anomalies) | dims | " + " | ".join(names) + " |",
                "|---|---|---|---|---|" + "---|" * len(names)]
        for s in sets:
            f = first[s]
            vals = [fmt.format(mean[(s, m)][metric]) for m in names]
            if metric != "seconds":  # the best per row in bold
                best = np.nanmax([mean[(s, m)][metric] for m in names])
                vals = [f"**{v}**" if fmt.format(best) == v else v for v in vals]
            out.append(f"| {s} | {f['n_total']} | {f['n_train']} | {f['n_test']} ({f['n_test_anomalies']}) | "
                       f"{f['dims']} | " + " | ".join(vals) + " |")
    return "\n".join(out)


def _ranks(mean: dict, sets: list[str], names: list[str]) -> dict[str, list[float]]:
    """Per data set, each method's AUROC rank (1 = best; ties share the mean rank)."""
    from scipy.stats import rankdata

    ranks: dict[str, list[float]] = {m: [] for m in names}
    for s in sets:
        r = rankdata([-np.nan_to_num(mean[(s, m)]["auroc"], nan=-1.0) for m in names])
        for m, v in zip(names, r):
            ranks[m].append(float(v))
    return ranks


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=root.parent / "shared" / "data" / "adbench")
    p.add_argument("--seeds", type=int, default=1, help="seeds 1..N, each a different split")
    p.add_argument("--only", help="only data sets whose name contains this")
    p.add_argument("--json", type=Path, help="also write every run's numbers here")
    a = p.parse_args()
    seeds = list(range(1, a.seeds + 1))
    t = time.perf_counter()
    rows = run(a.data, seeds, a.only)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    print(tables(rows, seeds))
    print(f"\nThreads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {os.cpu_count()} CPUs; "
          f"whole run {time.perf_counter() - t:.0f} s.")


if __name__ == "__main__":
    main()
