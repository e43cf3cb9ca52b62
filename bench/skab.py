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

``--peers conv-ae`` also runs the leaderboard's best, SKAB's Conv-AE, on the same files in the same run: not a
PyPI package (SKAB's code is Keras, GPL-3.0), so it is written again here in torch from SKAB's
``core/Conv_AE.py`` and ``notebooks/Conv_AE.ipynb``: the same layers (stride-2 convolutions 32 and 16 wide,
kernel 7, dropout 0.2, transposed back to one output channel that the loss broadcasts against the 8 inputs),
60-row windows of the StandardScaler'd first 400 rows, Adam at 1e-3, batch 32, up to 100 epochs with early
stopping (patience 5 on the last 10 % of windows), Glorot-uniform weights as Keras's, and its rule: a window is
anomalous when its residual (absolute error, averaged over time, summed over sensors) exceeds 4/3 of the 99.9th
percentile of the training windows' residuals; a row is anomalous when the 59 windows starting at the 59 rows
before it all are.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from normalcy.errors import InputError  # noqa: E402
from normalcy.evaluation.series_metrics import Counts, event_counts, label_events, point_counts  # noqa: E402
from normalcy.series import registry  # noqa: E402
from normalcy.series.events import spans  # noqa: E402
from normalcy.series.io import Series, read_series_folder  # noqa: E402
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


Detect = Callable[[Series, Series], tuple[np.ndarray, list[tuple[int, int]]]]
"""(train, test) -> the test rows' 0/1 decisions and the predicted events (first, last row)."""


def ours(name: str) -> Detect:
    """One of our series detectors, fitted and scored as ``normalcy eval`` does (its events, pruned)."""
    def detect(train: Series, test: Series) -> tuple[np.ndarray, list[tuple[int, int]]]:
        try:
            det = registry.create(name).fit(train, progress=False)
            scored = score_series(det, model_columns(det, test, None))
        except InputError as err:
            print(f"  {name} {test.source.parent.name or test.name}: {err}", file=sys.stderr)
            return np.zeros(len(test)), []
        return scored.decision, [(v.first, v.last) for v in scored.events]
    return detect


def run(name: str, detect: Detect, folders: list[Path]) -> dict[str, float]:
    """Pooled point counts (SKAB's binary metric) and event counts for one method."""
    points, events, rows, seconds = Counts(), Counts(), 0, 0.0
    for folder in folders:
        (train,), (test,) = read_series_folder(folder)
        t0 = time.perf_counter()
        decision, predicted = detect(train, test)
        seconds += time.perf_counter() - t0
        p = point_counts(test.labels, decision)
        e = event_counts(label_events(test.labels), predicted)
        points, events, rows = points + p, events + e, rows + len(test)
        print(f"  {name} {folder.name}: flagged {p.tp + p.fp} of {len(test)} rows, {p.tp} of {p.tp + p.fn} "
              f"anomalous; events {e.tp}/{e.fp}/{e.fn}", file=sys.stderr)
    normal = rows - points.tp - points.fn
    return {"point_f1": round(points.f1, 3), "far": round(100 * points.fp / max(normal, 1), 2),
            "mar": round(100 * points.fn / max(points.fn + points.tp, 1), 2), "event_f1": round(events.f1, 3),
            "events": [events.tp, events.fp, events.fn], "seconds": round(seconds, 1)}


CONV_AE_STEPS = 60  # SKAB's N_STEPS
CONV_AE_Q = 0.999  # SKAB's Q: the quantile of training residuals, times 4/3, is the control limit


def _conv_ae_net(d: int) -> torch.nn.Module:
    from torch import nn

    net = nn.Sequential(
        nn.Conv1d(d, 32, 7, stride=2, padding=3), nn.ReLU(), nn.Dropout(0.2),
        nn.Conv1d(32, 16, 7, stride=2, padding=3), nn.ReLU(),
        nn.ConvTranspose1d(16, 16, 7, stride=2, padding=3, output_padding=1), nn.ReLU(), nn.Dropout(0.2),
        nn.ConvTranspose1d(16, 32, 7, stride=2, padding=3, output_padding=1), nn.ReLU(),
        nn.ConvTranspose1d(32, 1, 7, padding=3))
    for m in net:
        if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return net


def conv_ae_decisions(train: np.ndarray, test: np.ndarray, seed: int = 0) -> np.ndarray:
    """SKAB's Conv-AE pipeline on one file (see the module docstring): (n,) 0/1 decisions of the test rows."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # StandardScaler leaves a constant column at scale 1

    def windows(x: np.ndarray) -> torch.Tensor:
        z = (x - mean) / std
        w = np.lib.stride_tricks.sliding_window_view(z, CONV_AE_STEPS, axis=0)  # (n - 59, d, 60)
        return torch.tensor(np.ascontiguousarray(w), dtype=torch.float32)

    X = windows(train)
    n_val = int(len(X) * 0.1)
    fit, val = X[:len(X) - n_val], X[len(X) - n_val:]  # Keras's validation_split: the last 10 %
    net = _conv_ae_net(X.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    best, waited = np.inf, 0
    for _ in range(100):
        net.train()
        for idx in np.array_split(rng.permutation(len(fit)), max(1, int(np.ceil(len(fit) / 32)))):
            opt.zero_grad()
            loss = ((net(fit[idx]) - fit[idx]) ** 2).mean()  # (b, 1, 60) broadcast against (b, d, 60)
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            v = float(((net(val) - val) ** 2).mean()) if len(val) else 0.0
        if v < best:
            best, waited = v, 0
        else:
            waited += 1
            if waited >= 5:
                break

    def residuals(W: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return (W - net(W)).abs().mean(dim=2).sum(dim=1).numpy()

    ucl = np.quantile(residuals(X), CONV_AE_Q) * 4 / 3
    anomalous = residuals(windows(test)) > ucl
    out = np.zeros(len(test), dtype=int)
    n = len(anomalous)
    for i in range(CONV_AE_STEPS - 1, n - CONV_AE_STEPS + 1):  # as SKAB's loop, its range and slice
        if np.all(anomalous[i - CONV_AE_STEPS + 1:i]):
            out[i] = 1
    return out


def conv_ae(train: Series, test: Series) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """SKAB's Conv-AE as a ``Detect``: its decisions, and their runs as events."""
    decision = conv_ae_decisions(np.asarray(train.values, float), np.asarray(test.values, float))
    return decision, spans(decision)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="SKAB's data folder, or any folder of its semicolon-separated files")
    ap.add_argument("--detectors", default="auto,autoencoder,hypad,knn,pca")
    ap.add_argument("--peers", default="", help="conv-ae: SKAB's Conv-AE (the leaderboard's best) in the same run")
    args = ap.parse_args()
    peers = [p for p in args.peers.split(",") if p]
    if set(peers) - {"conv-ae"}:
        sys.exit(f"--peers: {', '.join(sorted(set(peers) - {'conv-ae'}))} unknown; known: conv-ae")
    unknown = [n for n in args.detectors.split(",") if n not in registry.DETECTORS]
    if unknown:  # each file's fit failed alike and counted as detecting nothing: a row of zeros, not an error
        sys.exit(f"--detectors: {unknown[0]} unknown; known: {', '.join(sorted(registry.DETECTORS))}")
    with tempfile.TemporaryDirectory(prefix="normalcy-skab-") as tmp:
        folders = skab_folders(args.data, Path(tmp))
        if not folders:
            sys.exit(f"{args.data}: no SKAB file (a semicolon-separated csv with an anomaly column) found")
        results = {name: run(name, ours(name), folders) for name in args.detectors.split(",")}
        peer_results = {"Conv-AE (SKAB's, in torch)": run("conv-ae", conv_ae, folders)} if peers else {}
    print(f"SKAB, {len(folders)} files: fitted on each file's first {TRAIN_ROWS} rows, the whole file scored\n")
    print("| method | F1 | FAR, % | MAR, % | event F1 (tp/fp/fn) | seconds |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        tp, fp, fn = r["events"]
        print(f"| ours: {name} | {r['point_f1']:.2f} | {r['far']:.2f} | {r['mar']:.2f} | {r['event_f1']:.2f} "
              f"({tp}/{fp}/{fn}) | {r['seconds']:.1f} |")
    for name, r in peer_results.items():
        tp, fp, fn = r["events"]
        print(f"| peer, this run: {name} | {r['point_f1']:.2f} | {r['far']:.2f} | {r['mar']:.2f} | "
              f"{r['event_f1']:.2f} ({tp}/{fp}/{fn}) | {r['seconds']:.1f} |")
    for name, f1, far, mar in LEADERBOARD:
        print(f"| SKAB leaderboard (published, all 34 files): {name} | {f1:.2f} | {far:.2f} | {mar:.2f} | | |")
    print(json.dumps({"files": len(folders), **results, **{"conv-ae": r for r in peer_results.values()}}))


if __name__ == "__main__":
    main()
