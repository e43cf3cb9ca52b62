"""Does active learning put more interesting images in front of a reviewer? A scripted-labeller simulation.

    python bench/review_simulation.py [--runs gaussian,musc] [--target crack,uneven] [--budget 100]

What it measures: a person reviews magnetic_tile's test set (725 images, 392 defective) one image
at a time, always the unlabelled image with the highest current priority. A scripted labeller
answers from the ground truth (the image's folder), the ranker (``normalcy.review.ranking``) re-ranks the
whole queue with every label so far, and this repeats ``--budget`` times. The table counts the
interesting images among the first 50 and 100 reviewed, for each run x scenario x strategy:

- runs: ``gaussian`` (fitted on train/good, then ``normalcy predict`` on test/) and ``musc``
  (zero-shot ``normalcy score-batch`` on test/); both give anomaly scores and embeddings.
- scenarios: ``defects``, every defect is interesting (label "anomalous", user score 5; good
  images "normal", 0); ``only <class>``, one defect class is interesting (interest 5) and every
  other image, defective or not, gets interest 0 -- Astronomaly's setting, where anomalies are
  not all interesting.
- strategies: ``none`` (anomaly-score order: no active learning), ``neighbour``, ``protege``.

Why: re-ranking is only worth its cost if it finds more of what the person wants within the few
dozen images they will actually look at. Also reported: the median and max time of one re-rank
(the calls made after a label). Everything is seeded (rankers use seed 0; ties go to the lower
row), so a rerun on the same runs gives the same counts. Runs are built once under ``--work``
and reused (a run dir with scores.csv and embeddings.safetensors is not rebuilt).
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from normalcy.review.ranking import make_ranker, user_score
from normalcy.runs.format import read_embeddings

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "magnetic_tile"  # ../shared/data
STRATEGIES = ("none", "neighbour", "protege")
CHECKPOINTS = (50, 100)


def cli(*args: str | Path) -> None:
    """Run ``normalcy`` in a subprocess (no heatmaps or report: only scores and embeddings are needed)."""
    cmd = [sys.executable, "-m", "normalcy.cli", *map(str, args)]
    print("$", shlex.join(cmd), file=sys.stderr, flush=True)
    if subprocess.run(cmd, check=False).returncode != 0:  # its error is above, on stderr: no traceback after it
        raise SystemExit(f"failed: {shlex.join(cmd)}")


def build_run(name: str, data: Path, work: Path) -> Path:
    """The run dir for ``name`` ('gaussian' or 'musc'), built unless it is already there."""
    run = work / name / "run"
    if (run / "scores.csv").is_file() and (run / "embeddings.safetensors").is_file():
        print(f"reusing {run}", file=sys.stderr)
        return run
    quiet = ["--no-heatmaps", "--no-report"]
    if name == "gaussian":
        model = work / name / "model"
        cli("fit", data / "train" / "good", "-o", model, "--detector", "gaussian")
        cli("predict", model, data / "test", "-o", run, *quiet)
    elif name == "musc":
        cli("score-batch", data / "test", "-o", run, *quiet)
    else:
        raise SystemExit(f"unknown run {name!r}; choose from gaussian, musc")
    return run


def load_run(run: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(embeddings N x E, anomaly scores N, ground-truth class of each row = its parent folder)."""
    with open(run / "scores.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    features = read_embeddings(run)
    if features is None or len(features) != len(rows):
        raise SystemExit(f"{run}: embeddings missing or not row-aligned with scores.csv")
    return features, np.array([float(r["score"]) for r in rows]), [Path(r["path"]).parent.name for r in rows]


def scenario_scores(classes: list[str], target: str | None) -> np.ndarray:
    """The labeller's user score per image: 'defects' (target None) or only ``target`` is interesting."""
    scores = []
    for c in classes:
        label = "normal" if c == "good" else "anomalous"
        interest = None if target is None else (5 if c == target else 0)
        scores.append(user_score(label, interest))
    return np.array(scores, dtype=np.float64)


def simulate(ranker, features: np.ndarray, anomaly: np.ndarray, truth: np.ndarray,
             budget: int) -> tuple[list[int], list[float]]:
    """Review ``budget`` images: show the top unlabelled one, label it from ``truth``, re-rank.

    Returns the rows in review order and the seconds of each re-rank made after a label.
    """
    labelled: list[int] = []
    seconds: list[float] = []
    priority = ranker.rank(features, anomaly, np.zeros(0, np.int64), np.zeros(0))  # cold start
    for _ in range(min(budget, len(truth))):
        masked = np.where(np.isin(np.arange(len(truth)), labelled), -np.inf, priority)
        labelled.append(int(np.argmax(masked)))                                  # ties: lower row
        if len(labelled) == budget:
            break
        idx = np.array(labelled, np.int64)
        t = time.perf_counter()
        priority = ranker.rank(features, anomaly, idx, truth[idx])
        seconds.append(time.perf_counter() - t)
    return labelled, seconds


def machine_facts() -> str:
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return (f"os.cpu_count()={os.cpu_count()}, usable CPUs={usable}, torch threads={torch.get_num_threads()}, "
            f"load average {os.getloadavg()[0]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="magnetic_tile in MVTec layout")
    ap.add_argument("--work", type=Path, default=Path("bench/.work/review_sim"), help="where runs are built/reused")
    ap.add_argument("--runs", default="gaussian,musc", help="comma-separated: gaussian, musc")
    ap.add_argument("--target", default="crack,uneven", help="comma-separated defect classes for the one-class scenario")
    ap.add_argument("--budget", type=int, default=100, help="images reviewed per simulation")
    args = ap.parse_args()
    started = time.perf_counter()
    if not (args.data / "train" / "good").is_dir() or not (args.data / "test").is_dir():
        raise SystemExit(f"magnetic_tile not found at {args.data} (need train/good and test/); pass --data DIR")
    targets = [t for t in args.target.split(",") if t]
    missing = [t for t in targets if not (args.data / "test" / t).is_dir()]
    if missing:
        raise SystemExit(f"no test/{missing[0]} in {args.data}")

    runs = {name: build_run(name, args.data, args.work) for name in args.runs.split(",") if name}
    built = time.perf_counter() - started
    checkpoints = [k for k in CHECKPOINTS if k <= args.budget] or [args.budget]
    lines = ["| run | scenario | strategy | " + " | ".join(f"interesting in first {k}" for k in checkpoints)
             + " | available | re-rank median ms | re-rank max ms |",
             "|---|---|---|" + "---:|" * (len(checkpoints) + 3)]
    for run_name, run in runs.items():
        features, anomaly, classes = load_run(run)
        for target in [None, *targets]:
            truth = scenario_scores(classes, target)
            interesting = truth >= 5
            scenario = "defects" if target is None else f"only {target}"
            for strategy in STRATEGIES:
                order, seconds = simulate(make_ranker(strategy), features, anomaly, truth, args.budget)
                found = [int(interesting[order[:k]].sum()) for k in checkpoints]
                ms = [1000 * s for s in seconds] or [0.0]
                lines.append(f"| {run_name} | {scenario} | {strategy} | " + " | ".join(map(str, found))
                             + f" | {int(interesting.sum())} of {len(truth)} | {statistics.median(ms):.1f}"
                             + f" | {max(ms):.1f} |")
                print(lines[-1], file=sys.stderr, flush=True)

    print("\n".join(lines))
    print(f"\nCommand: `python {shlex.join(sys.argv)}`")
    print(f"Machine: {machine_facts()}")
    print(f"Time: {time.perf_counter() - started:.0f} s in all, of which {built:.0f} s building runs")


if __name__ == "__main__":
    main()
