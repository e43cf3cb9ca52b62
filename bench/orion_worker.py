"""One Orion pipeline on one series, run under Orion's own virtualenv by bench/nab_categories.py (--orion-venv).

    ORION_VENV/bin/python bench/orion_worker.py PIPELINE FILE.csv [--fit-rows N] [--dataset NAME]

FILE.csv has NAB's columns (timestamp as a date, value). The pipeline is fitted on the first N rows (0: the
whole signal, Orion's own benchmark protocol) and detects on the whole signal, with the hyperparameters Orion's
benchmark gives that pipeline on that data set where Orion ships them (``PIPELINE_DATASET.json`` beside the
pipeline, e.g. aer_realtweets.json: the aggregation interval and how the errors combine). The last line printed
is one JSON object: {"events": [[first_epoch_s, last_epoch_s], ...], "fit_s": ..., "detect_s": ...,
"settings": FILE or null}. Imports Orion, pandas and numpy only (normalcy is not installed in that venv);
nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up chatter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pipeline")
    ap.add_argument("csv")
    ap.add_argument("--fit-rows", type=int, default=0, help="fit on the first N rows (0: the whole signal)")
    ap.add_argument("--dataset", default="", help="the data set's name (NAB's category), for Orion's own settings")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)

    from pathlib import Path

    try:
        import orion
    except ImportError:  # run with our python, not the venv's: said, not a traceback
        raise SystemExit("bench/orion_worker.py needs orion-ml: run it with the python of the virtualenv that "
                         "holds it (see bench/nab_categories.py, --orion-venv)") from None
    import pandas as pd
    from orion import Orion

    tuned = Path(orion.__file__).parent / "pipelines" / "verified" / args.pipeline / \
        f"{args.pipeline}_{args.dataset.lower()}.json"
    hyperparameters = json.loads(tuned.read_text()) if args.dataset and tuned.is_file() else None

    df = pd.read_csv(args.csv)
    df = pd.DataFrame({"timestamp": pd.to_datetime(df["timestamp"]).astype("int64") // 10**9,
                       "value": df["value"].astype(float)})
    t0 = time.perf_counter()
    model = Orion(args.pipeline, hyperparameters)
    model.fit(df.iloc[:args.fit_rows] if args.fit_rows else df)
    t1 = time.perf_counter()
    found = model.detect(df)
    t2 = time.perf_counter()
    events = [[int(a), int(b)] for a, b in zip(found["start"], found["end"])] if len(found) else []
    print(json.dumps({"events": events, "fit_s": round(t1 - t0, 2), "detect_s": round(t2 - t1, 2),
                      "settings": tuned.name if hyperparameters else None}))


if __name__ == "__main__":
    main()
