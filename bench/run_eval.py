"""Benchmark: `normalcy eval --json` for each data set and detector, one fresh process each.

    python bench/run_eval.py                       # magnetic_tile and hazelnut_toy, gaussian and patchcore
    python bench/run_eval.py --datasets hazelnut_toy --detectors gaussian

Prints a markdown table (paste it into docs/benchmarks.md) and writes the raw JSON lines
to bench/results.jsonl. A fresh process per run keeps the peak-memory numbers honest.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
COLUMNS = [
    ("detector", "detector", "{}"),
    ("dataset", "data set", "{}"),
    ("n_train", "train", "{}"),
    ("n_test", "test", "{}"),
    ("image_auroc", "image AUROC", "{:.3f}"),
    ("image_ap", "image AP", "{:.3f}"),
    ("image_f1_max", "F1-max", "{:.3f}"),
    ("pixel_auroc", "pixel AUROC", "{:.3f}"),
    ("aupro", "AUPRO@30%", "{:.3f}"),
    ("test_fpr_at_threshold", "test FPR @thr", "{:.3f}"),
    ("test_tpr_at_threshold", "test TPR @thr", "{:.3f}"),
    ("fit_seconds", "fit s", "{:.1f}"),
    ("images_per_second", "images/s", "{:.1f}"),
    ("latency_ms_batch1", "latency ms (bs 1)", "{:.1f}"),
    ("fit_peak_rss_mb", "fit peak RSS MB", "{:.0f}"),
    ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
]


def run(dataset: Path, detector: str, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "normalcy.cli", "eval", str(dataset), "--detector", detector, "--json", *extra]
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if len(lines) != 1:
        raise SystemExit(f"expected exactly one JSON line on stdout, got {len(lines)}")
    return json.loads(lines[0])


def table(rows: list[dict]) -> str:
    head = "| " + " | ".join(c[1] for c in COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = []
    for r in rows:
        cells = []
        for key, _, fmt in COLUMNS:
            v = r.get(key)
            cells.append("–" if v is None else fmt.format(v))
        body.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *body])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["magnetic_tile", "hazelnut_toy"])
    ap.add_argument("--detectors", nargs="+", default=["gaussian", "patchcore"])
    ap.add_argument("--data", type=Path, default=DATA, help="folder holding the data sets")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results.jsonl")
    ap.add_argument("extra", nargs="*", help="extra arguments for `normalcy eval` (after --)")
    args = ap.parse_args()
    rows = []
    for name in args.datasets:
        if not (args.data / name).is_dir():
            print(f"skipping {name}: {args.data / name} not found", file=sys.stderr)
            continue
        for det in args.detectors:
            rows.append(run(args.data / name, det, args.extra))
    if not rows:  # every data set skipped: an empty table and exit 0 looked like a run
        raise SystemExit(f"no data set to run: none of {', '.join(args.datasets)} under {args.data} (pass --data DIR)")
    with open(args.out, "a") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
