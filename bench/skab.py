"""SKAB (Skoltech Anomaly Benchmark: a water-pump test bed, 8 sensors at 1 Hz) scored as its leaderboard scores
outlier detection, beside the leaderboard's published figures.

    python bench/skab.py PATH/TO/SKAB/data [--detectors auto,autoencoder,hypad,knn,pca]

SKAB is not bundled (GPL-3.0; github.com/waico/SKAB): give its ``data`` folder (``valve1/*.csv``,
``valve2/*.csv``, ``other/*.csv``, semicolon-separated) or any folder of such files. Its protocol, as in its
notebooks: each file is one experiment with one anomaly; a detector is fitted on the file's first 400 rows (anomaly
free) and scores the whole file; the ``anomaly`` column is the label (``changepoint`` is not read). Each file becomes
a series folder (``train.csv``, ``test.csv`` with ``label``) in a temporary directory and goes through the same
reading and scoring as ``normalcy eval``. Settings are the defaults; nothing is chosen on the labels.

Prints one table: per detector, point F1, FAR and MAR (false-alarm and missed-alarm rates, %) from confusion counts
pooled over the files, as SKAB's ``chp_score(..., metric="binary")`` pools them, and event F1 (Orion's overlap rule);
then SKAB's published outlier leaderboard. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from normalcy.errors import InputError  # noqa: E402
from normalcy.evaluation.series_metrics import Counts, event_counts, label_events, point_counts  # noqa: E402
from normalcy.series import registry  # noqa: E402
from normalcy.series.io import read_series_folder  # noqa: E402
from normalcy.series.runs import model_columns, score_series  # noqa: E402

TRAIN_ROWS = 400  # SKAB's notebooks: X_train = df[:400]
# SKAB's outlier-detection leaderboard (README of github.com/waico/SKAB, v0.9): F1, FAR %, MAR %
LEADERBOARD = [("Conv-AE", 0.79, 13.69, 17.77), ("MSET", 0.73, 20.82, 20.08), ("LSTM-AE", 0.68, 14.24, 35.56),
               ("T-squared+Q (PCA-based)", 0.67, 13.95, 36.32), ("Vanilla LSTM", 0.64, 15.4, 39.93),
               ("MSCRED", 0.64, 13.56, 41.16), ("LSTM-VAE", 0.56, 9.13, 55.03), ("T-squared", 0.56, 12.14, 52.56),
               ("Vanilla AE", 0.45, 7.56, 66.57), ("Isolation forest", 0.4, 6.86, 72.09)]


def skab_folders(data: Path, out: Path) -> list[Path]:
    """One series folder per SKAB file (train: its first 400 rows; test: all of it, ``anomaly`` as ``label``)."""
    folders = []
    for f in sorted(p for p in data.rglob("*.csv") if "anomaly-free" not in p.parts):
        df = pd.read_csv(f, sep=";")
        df = df.rename(columns={"is_anomaly": "anomaly"})  # some revisions of SKAB's files name it so
        if "anomaly" not in df.columns:
            print(f"  {f}: no anomaly column, left out", file=sys.stderr)
            continue
        df = df.drop(columns=[c for c in ("changepoint", "is_pa") if c in df.columns])
        df = df.rename(columns={"datetime": "timestamp", "anomaly": "label"})
        df["label"] = df["label"].astype(int)
        folder = out / f"{f.parent.name}_{f.stem}"
        folder.mkdir(parents=True)
        df.iloc[:TRAIN_ROWS].drop(columns=["label"]).to_csv(folder / "train.csv", index=False)
        df.to_csv(folder / "test.csv", index=False)
        folders.append(folder)
    return folders


def run(name: str, folders: list[Path]) -> dict[str, float]:
    """Pooled point counts (SKAB's binary metric) and event counts for one detector."""
    points, events, rows, seconds = Counts(), Counts(), 0, 0.0
    for folder in folders:
        (train,), (test,) = read_series_folder(folder)
        t0 = time.perf_counter()
        try:
            det = registry.create(name).fit(train, progress=False)
            scored = score_series(det, model_columns(det, test, None))
        except InputError as err:
            print(f"  {name} {folder.name}: {err}", file=sys.stderr)
            scored = None
        seconds += time.perf_counter() - t0
        decision = np.zeros(len(test)) if scored is None else scored.decision
        p = point_counts(test.labels, decision)
        predicted = [] if scored is None else [(v.first, v.last) for v in scored.events]
        e = event_counts(label_events(test.labels), predicted)
        points, events, rows = points + p, events + e, rows + len(test)
        print(f"  {name} {folder.name}: flagged {p.tp + p.fp} of {len(test)} rows, {p.tp} of {p.tp + p.fn} "
              f"anomalous; events {e.tp}/{e.fp}/{e.fn}", file=sys.stderr)
    normal = rows - points.tp - points.fn
    return {"point_f1": round(points.f1, 3), "far": round(100 * points.fp / max(normal, 1), 2),
            "mar": round(100 * points.fn / max(points.fn + points.tp, 1), 2), "event_f1": round(events.f1, 3),
            "events": [events.tp, events.fp, events.fn], "seconds": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="SKAB's data folder, or any folder of its semicolon-separated files")
    ap.add_argument("--detectors", default="auto,autoencoder,hypad,knn,pca")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="normalcy-skab-") as tmp:
        folders = skab_folders(args.data, Path(tmp))
        if not folders:
            sys.exit(f"{args.data}: no SKAB file (a semicolon-separated csv with an anomaly column) found")
        results = {name: run(name, folders) for name in args.detectors.split(",")}
    print(f"SKAB, {len(folders)} files: fitted on each file's first {TRAIN_ROWS} rows, the whole file scored\n")
    print("| method | F1 | FAR, % | MAR, % | event F1 (tp/fp/fn) | seconds |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        tp, fp, fn = r["events"]
        print(f"| ours: {name} | {r['point_f1']:.2f} | {r['far']:.2f} | {r['mar']:.2f} | {r['event_f1']:.2f} "
              f"({tp}/{fp}/{fn}) | {r['seconds']:.1f} |")
    for name, f1, far, mar in LEADERBOARD:
        print(f"| SKAB leaderboard (published, all 34 files): {name} | {f1:.2f} | {far:.2f} | {mar:.2f} | | |")
    print(json.dumps({"files": len(folders), **results}))


if __name__ == "__main__":
    main()
