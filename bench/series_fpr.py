"""How far a series detector's threshold holds on later normal data: the false-positive rate it reaches against
the one it was set for (``fpr``, 1 % by default), read from normal data alone.

    python bench/series_fpr.py ../shared/data/asd [--detectors auto,knn,pca] [--fit-share 0.6]

Each series folder's ``train.csv`` is normal operation. The detector is fitted on its first ``--fit-share`` (the
threshold set, as a fit sets it, on the last 20 % of that part, held out, and on its first 20 %, cross-fitted),
then scores the rest of ``train.csv``: every
row it flags there is a false positive, and every run of flagged rows (merged as ``predict`` merges events, within
the detector's event gap) a false alarm. No label and no test file is read. Prints one table: per detector, the
realised false-positive rate (median, mean and largest over the series) and the false alarms per 1,000 rows;
ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from normalcy.errors import InputError  # noqa: E402
from normalcy.series import registry  # noqa: E402
from normalcy.series.events import spans  # noqa: E402
from normalcy.series.io import read_series_folder, series_folders  # noqa: E402


def realised(name: str, values: np.ndarray, share: float) -> tuple[float, int, float]:
    """(false-positive rate on the rows after the fitted share, false alarms there, the target rate)."""
    cut = int(share * len(values))
    det = registry.create(name).fit(values[:cut], progress=False)
    flagged = det.score(values).decision[cut:]
    return float(flagged.mean()), len(spans(flagged, det.gap_)), float(det.fpr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, help="a folder of series folders (train.csv: normal operation)")
    ap.add_argument("--detectors", default="auto,knn,pca")
    ap.add_argument("--fit-share", type=float, default=0.6)
    args = ap.parse_args()
    folders = series_folders(args.root)
    trains = {f.name: read_series_folder(f)[0][0] for f in folders}  # (train series, test series): the first train
    out = {}
    print(f"{len(trains)} series, fitted on the first {args.fit_share:.0%} of train.csv, scored on the rest\n")
    print("| detector | target FPR | realised FPR: median / mean / largest | false alarms per 1,000 rows |")
    print("|---|---|---|---|")
    for name in args.detectors.split(","):
        got, alarms, rows, target = [], 0, 0, 0.0
        for series, train in trains.items():
            values = np.asarray(train.values, dtype=np.float64)
            rate, n, target = realised(name, values, args.fit_share)
            got.append(rate)
            alarms += n
            rows += len(values) - int(args.fit_share * len(values))
            print(f"  {name} {series}: {rate:.4f} ({n} alarms)", file=sys.stderr)
        out[name] = {"target": target, "median": float(np.median(got)), "mean": float(np.mean(got)),
                     "max": float(np.max(got)), "alarms_per_1000": 1000 * alarms / rows}
        o = out[name]
        print(f"| {name} | {target:.3f} | {o['median']:.4f} / {o['mean']:.4f} / {o['max']:.4f} | "
              f"{o['alarms_per_1000']:.2f} |", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        main()
    except InputError as e:  # a folder not found or not in its layout: one line, as the CLI says it
        raise SystemExit(f"error: {e}") from None
