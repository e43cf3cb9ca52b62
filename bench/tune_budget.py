"""Benchmark: what `--tune` costs and chooses within its time budget, against a plain fit (issue 26).

    python bench/tune_budget.py [--datasets magnetic_tile hazelnut_toy] [--detectors gaussian patchcore]
                                [--budgets 3 0]

For each data set and detector, one fresh `normalcy eval --json` process each: a plain fit, then `--tune` at
each ``--tune-budget`` (0: no limit). Prints one markdown table: fit seconds and their ratio to the plain fit's,
which trials ran (with their validation AUROC on the held-out normal images with synthetic defects) and which the
budget skipped, what was chosen, and the test figures (read after the choice; no choice reads them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def run(dataset: Path, detector: str, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "normalcy.cli", "eval", str(dataset), "--detector", detector, "--json", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:  # eval's own error line: a CalledProcessError's traceback hid it
        said = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"failed: {' '.join(cmd)}\n{said}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def changed(choice: dict, plain: dict) -> str:
    """The settings ``--tune`` moved from the plain fit's (model's extractor as eval reports it)."""
    tuned = choice.get("tuned") or {}
    shown = {k: f"{v}x{v}" if isinstance(v, int) and k == "image_size" else
             "x".join(map(str, v)) if isinstance(v, list) else v for k, v in plain.items()}
    moved = [f"{k} {v}" for k, v in tuned.items() if str(shown.get(k)) != str(v)]
    return ", ".join(moved) or "nothing"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["magnetic_tile", "hazelnut_toy"])
    ap.add_argument("--detectors", nargs="+", default=["gaussian", "patchcore"])
    ap.add_argument("--budgets", nargs="+", type=float, default=[3.0, 0.0])
    ap.add_argument("--data", type=Path, default=DATA, help="folder holding the data sets")
    args = ap.parse_args()
    print("| data set | detector | budget | fit s | x plain | tried (validation AUROC) | skipped | changed | "
          "image AUROC | pixel AUROC | AUPRO |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.datasets:
        for det in args.detectors:
            plain = run(args.data / name, det, [])
            rows = [("plain", plain)]
            rows += [(f"{b:g}" if b else "none", run(args.data / name, det, ["--tune", "--tune-budget", f"{b:g}"]))
                     for b in args.budgets]
            settings = {"input_norm": plain.get("input_norm"), "backbone": plain.get("backbone"),
                        "image_size": plain.get("image_size"), "pool_grid": plain.get("pool_grid")}
            for budget, m in rows:
                c = m.get("choice") or {}
                tried = ", ".join(f"{k} {v:.3f}" for k, v in (c.get("validation_auroc") or {}).items()) or "-"
                print(f"| {name} | {det} | {budget} | {m['fit_seconds']:.1f} | "
                      f"{m['fit_seconds'] / plain['fit_seconds']:.1f} | {tried} | "
                      f"{', '.join(c.get('skipped') or []) or '-'} | {changed(c, settings) if c else '-'} | "
                      f"{m['image_auroc']:.3f} | {m['pixel_auroc']:.3f} | {m['aupro']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
