"""NAB (Numenta Anomaly Benchmark) scored by NAB's rules (normalcy.evaluation.nab), beside its scoreboard.

    python bench/nab.py ../shared/data/nab --published NAME [--published-thresholds]
    python bench/nab.py ../shared/data/nab [--detector NAME] [--param KEY=VALUE ...] [--learn all|below|none]
                                           [--convert stream|threshold|likelihood] [--learn-every N]
                                           [--quiet N] [--files N] [--save scores.csv.gz]
                                           [--blend NAME:W | NAME:max]

``--published NAME`` scores NAB's own published raw scores of detector NAME (published/NAME.csv.gz).
The threshold is NAB's sweep optimum over the corpus (the one our detectors get too);
``--published-thresholds`` uses the thresholds NAB published instead (published/thresholds.json: some
came from NAB's older hill-climbing optimiser), which reproduces final_results.json exactly.

``--detector NAME`` (default: the series default) runs a normalcy.series detector online, as NAB
requires, over all 58 files: fitted on the file's probationary period (NAB's first min(15 %, 750)
rows), then each row is scored from the rows before it only. ``--convert`` says how:

- ``stream`` (default): ``normalcy.series.stream.Stream``, what a monitoring loop would run. The
  detector is fitted on the probationary rows (its last ``holdout`` held out to calibrate on), learns
  the held-out rows, then scores every later row from its past, learns it (``--learn all``; ``none``:
  never), and reports the calibrated score in [0, 1] (decades of tail probability / 10), one alarm per
  ``--quiet`` rows: a row reaching 0.3 inside the quiet period after an alarm is reported near 0.
  The detector learns ``--learn-every`` rows at a time (the calibration every row), which the stream
  makes identical to row-by-row updates.

The other two score every row by ``score_one`` and learn it by ``partial_fit`` after the probationary
period (``--learn all``: every row, as NAB's detectors adapt; ``below``: only rows scoring under the
detector's threshold, so that an anomaly is not learned as normal; ``none``: the fitted model only,
scored in one batch, which the protocol makes identical to streaming). A row's score s becomes NAB's
anomaly score:

- ``threshold``: s / (s + threshold_) in [0, 1), 0.5 at the detector's own threshold, so that
  files share one scale;
- ``likelihood``: Numenta's anomaly likelihood (Ahmad et al. 2017, what NAB's HTM detector reports), from
  the past only: the mean of the last 10 values of s / threshold_, as a z-score against the mean and
  spread of those means over the previous 8640 rows (Numenta's defaults), mapped to [0, 1) through the
  Gaussian tail, -log P / (1 - log P) (no saturation at 1 where the tail underflows).

``--blend NAME:W`` mixes the detector's anomaly scores with NAB's published scores of detector NAME,
(1 - W) x ours + W x theirs row by row (``NAME:max``: the higher of the two): a ceiling study of what
an ensemble with another kind of detector could reach, not a detector anyone could run (NAME's scores
exist only for NAB's files).

Both end with one JSON line: {"standard": ..., "reward_low_FP_rate": ..., "reward_low_FN_rate": ...}.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from normalcy.errors import InputError  # noqa: E402
from normalcy.evaluation import nab  # noqa: E402

PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


def published_board(root: Path) -> dict[str, dict[str, float]]:
    path = root / "published" / "final_results.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def nab_scores(score: np.ndarray, threshold: float, convert: str) -> np.ndarray:
    """A detector's non-negative scores as NAB anomaly scores in [0, 1), each from the past only."""
    if convert == "threshold":
        return score / (score + threshold)
    return likelihood(score / threshold)


def _trailing_sum(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    cs = np.r_[0.0, np.cumsum(x)]
    return cs[hi] - cs[lo]


def likelihood(x: np.ndarray, short: int = 10, history: int = 8640, min_std: float = 0.01) -> np.ndarray:
    """Numenta's anomaly likelihood of a score series: the short-term mean as a z-score against the
    previous ``history`` short-term means, through the Gaussian tail, in [0, 1); causal."""
    from scipy.special import log_ndtr

    i = np.arange(len(x))
    lo = np.maximum(0, i + 1 - short)
    mean = _trailing_sum(x, lo, i + 1) / (i + 1 - lo)
    past = np.maximum(0, i - history)
    n = np.maximum(i - past, 1)
    mu = _trailing_sum(mean, past, i) / n
    var = np.maximum(_trailing_sum(mean * mean, past, i) / n - mu * mu, min_std**2)
    tail = -log_ndtr(-(mean - mu) / np.sqrt(var))  # -log P(a normal row's mean >= this one)
    return tail / (1.0 + tail)


def parse_params(pairs: list[str]) -> dict[str, object]:
    """``--param KEY=VALUE`` items as detector parameters (a value that is JSON is read as JSON, else a string)."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def stream_file(det, f: nab.NabFile, *, learn: bool = True, learn_every: int = 128, quiet: int = 100,
                alarm: float = 0.3):
    """A detector fitted on the file's probationary rows, run through ``Stream`` as a monitoring loop runs it:
    it learns the rows it held out to calibrate on, then scores (and learns) every row after the probationary
    period from its past. The StreamScores of those rows."""
    from normalcy.series.stream import Stream

    X, p = f.values.reshape(-1, 1), f.probation
    cut = p - int(round(det.holdout * p))  # where the base's held-out rows begin
    stream = Stream(det, past=X[:cut], learn=learn, learn_every=learn_every, quiet=quiet, alarm=alarm)
    stream.learn(X[cut:p])
    return stream.run(X[p:])


def run_stream(det, f: nab.NabFile, learn: str, learn_every: int, quiet: int) -> np.ndarray:
    """A fitted detector's NAB scores of one file through ``Stream`` (see the module docstring)."""
    out = np.zeros(len(f))
    out[f.probation:] = stream_file(det, f, learn=learn != "none", learn_every=learn_every, quiet=quiet).reported
    return out


def run_detector(corpus: nab.NabCorpus, name: str, params: dict[str, object], learn: str, convert: str,
                 limit: int | None, learn_every: int = 128,
                 quiet: int = 100) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Every file's NAB anomaly scores from one detector run online; and timings."""
    import faiss

    from normalcy.series import registry

    faiss.omp_set_num_threads(1)  # small batches of queries: one thread beats two busy ones

    raw, fit_s, score_s, rows, failed = {}, 0.0, 0.0, 0, []
    names = list(corpus.files)[:limit] if limit else list(corpus.files)
    for i, key in enumerate(names):
        f = corpus.files[key]
        X = f.values.reshape(-1, 1)
        t0 = time.perf_counter()
        det = registry.create(name, **params)
        try:
            det.fit(X[:f.probation], progress=False)
        except InputError as err:  # a file the detector cannot fit (too short): it detects nothing there
            failed.append(f"{key}: {err}")
            raw[key] = np.zeros(len(f))
            continue
        t1 = time.perf_counter()
        if convert == "stream":
            raw[key] = run_stream(det, f, learn, learn_every, quiet)
            t2 = time.perf_counter()
            fit_s, score_s, rows = fit_s + t1 - t0, score_s + t2 - t1, rows + len(f)
            print(f"  [{i + 1:2d}/{len(names)}] {key:60s} window {det.window_:3d}  fit {t1 - t0:5.2f}s  "
                  f"score {t2 - t1:6.2f}s", file=sys.stderr, flush=True)
            continue
        if learn == "none":
            score = det.score(X).score
        else:
            score = np.empty(len(f))
            online = det.learns_online
            for t in range(len(f)):
                score[t] = det.score_one(X[t])
                if online and t >= f.probation and (learn == "all" or score[t] < det.threshold_):
                    det.partial_fit(X[t])
        t2 = time.perf_counter()
        raw[key] = nab_scores(score, det.threshold_, convert)
        fit_s, score_s, rows = fit_s + t1 - t0, score_s + t2 - t1, rows + len(f)
        print(f"  [{i + 1:2d}/{len(names)}] {key:60s} window {det.window_:3d}  fit {t1 - t0:5.2f}s  "
              f"score {t2 - t1:6.2f}s", file=sys.stderr, flush=True)
    for line in failed:
        print(f"  failed (scored as no detection): {line}", file=sys.stderr)
    for key in corpus.files:  # files left out by --files: no detection
        raw.setdefault(key, np.zeros(len(corpus.files[key])))
    return raw, {"fit_s": fit_s, "score_s": score_s, "us_per_row": 1e6 * score_s / max(rows, 1),
                 "files": len(names), "failed": len(failed)}


def blend(raw: dict[str, np.ndarray], root: Path, spec: str, corpus: nab.NabCorpus) -> dict[str, np.ndarray]:
    """``raw`` mixed row by row with NAB's published scores of a detector: spec ``NAME:W`` gives
    (1 - W) x raw + W x theirs, ``NAME:max`` the higher of the two."""
    name, _, how = spec.partition(":")
    how = how or "0.5"
    if how != "max":
        try:
            w = float(how)
        except ValueError:
            w = -1.0
        if not 0 <= w <= 1:
            raise SystemExit(f"--blend {spec}: the weight after ':' must be a number from 0 to 1, or 'max'")
    theirs = nab.read_published(root, name, corpus)
    return {f: np.maximum(s, theirs[f]) if how == "max" else (1 - w) * s + w * theirs[f] for f, s in raw.items()}


def save_scores(path: Path, corpus: nab.NabCorpus, raw: dict[str, np.ndarray]) -> None:
    """NAB's published layout: file, timestamp, anomaly_score."""
    with gzip.open(path, "wt") as out:
        out.write("file,timestamp,anomaly_score\n")
        for key, f in corpus.files.items():
            stamps = np.datetime_as_string(f.time, unit="s")
            for t, s in zip(stamps, raw[key]):
                out.write(f"{key},{str(t).replace('T', ' ')},{s:.6g}\n")


def against(corpus: nab.NabCorpus, raw: dict[str, np.ndarray], threshold: float, root: Path, name: str,
            most: int = 12) -> None:
    """Where the scores gain and lose against a published detector: the standard profile's totals (found and
    missed windows, false alarms) and the files that differ most, each detector at its own best threshold."""
    other = nab.read_published(root, name, corpus)
    ours = nab.file_results(raw, "standard", corpus, threshold)
    theirs = nab.file_results(other, "standard", corpus, nab.score_corpus(other, "standard", corpus)[1])
    print(f"\nFile by file against {name} (standard profile; raw totals, found / missed windows, false alarms):")
    print(f"{'':60s} {'these scores':>24s} {name:>24s}")
    row = "{:60s} {:>24s} {:>24s}"

    def cell(rs: list[nab.FileResult]) -> str:
        total, found, missed, alarms = (sum(getattr(r, a) for r in rs) for a in ("total", "found", "missed",
                                                                                  "false_alarms"))
        return f"{total:7.2f} {found:3d}/{missed:<3d} {alarms:4d}"

    print(row.format(f"all {len(corpus.files)} files", cell(list(ours.values())), cell(list(theirs.values()))))
    order = sorted(corpus.files, key=lambda k: ours[k].total - theirs[k].total)
    for key in order[:most] + order[-most // 2:]:
        print(row.format(key, cell([ours[key]]), cell([theirs[key]])))


def report(title: str, results: dict[str, float], thresholds: dict[str, float], board: dict) -> None:
    print(f"\n{title}")
    print(f"{'profile':20s} {'score':>8s} {'threshold':>10s}")
    for p in PROFILES:
        print(f"{p:20s} {results[p]:8.2f} {thresholds[p]:10.6f}")
    if board:
        print("\nNAB's published scoreboard (final_results.json):")
        print(f"{'detector':18s} " + " ".join(f"{p:>20s}" for p in PROFILES))
        for name, row in sorted(board.items(), key=lambda kv: -kv[1]["standard"]):
            print(f"{name:18s} " + " ".join(f"{row[p]:20.2f}" for p in PROFILES))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, help="the NAB folder (data/, labels/, published/)")
    ap.add_argument("--published", metavar="NAME", help="score NAB's published raw scores of this detector")
    ap.add_argument("--published-thresholds", action="store_true",
                    help="with --published: NAB's published thresholds instead of the sweep optimum")
    ap.add_argument("--detector", metavar="NAME", help="a normalcy.series detector (default: the series default)")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="a detector parameter (JSON value), repeatable")
    ap.add_argument("--learn", choices=("all", "below", "none"), default="all",
                    help="which rows after the probationary period the detector learns online")
    ap.add_argument("--convert", choices=("stream", "threshold", "likelihood"), default="stream",
                    help="how a detector's scores become NAB anomaly scores")
    ap.add_argument("--learn-every", type=int, default=128, help="stream: rows the detector learns at a time")
    ap.add_argument("--quiet", type=int, default=100, help="stream: rows after an alarm without another")
    ap.add_argument("--files", type=int, help="only the first N files (the rest: no detection)")
    ap.add_argument("--save", type=Path, help="write the anomaly scores (NAB's published layout, .csv.gz)")
    ap.add_argument("--blend", metavar="NAME:W", help="mix in NAB's published scores of detector NAME at weight W "
                    "(0-1), or NAME:max for the higher of the two (a ceiling study)")
    ap.add_argument("--against", metavar="NAME", help="also compare file by file with NAB's published detector NAME "
                    "(standard profile, each at its own best threshold)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    corpus = nab.load_corpus(args.root)
    board = published_board(args.root)
    if args.published:
        raw = nab.read_published(args.root, args.published, corpus)
        title = f"NAB's published raw scores of {args.published}"
        timing = {}
    else:
        from normalcy.series import registry

        name = args.detector or registry.DEFAULT_DETECTOR
        params = parse_params(args.param)
        print(f"normalcy.series {name} {params or ''} online on {len(corpus.files)} NAB files "
              f"(learn: {args.learn})", file=sys.stderr)
        raw, timing = run_detector(corpus, name, params, args.learn, args.convert, args.files, args.learn_every,
                                   args.quiet)
        title = f"normalcy.series {name} {params or ''} (online, learn {args.learn}, convert {args.convert})"
        if args.blend:
            raw = blend(raw, args.root, args.blend, corpus)
            title += f", blended with {args.blend}"
        if args.save:
            save_scores(args.save, corpus, raw)
    if args.published and args.published_thresholds:
        published = json.loads((args.root / "published" / "thresholds.json").read_text())[args.published]
        thresholds = {p: published[p]["threshold"] for p in PROFILES}
        results = {p: nab.score_at(raw, p, corpus, thresholds[p]) for p in PROFILES}
        title += ", at NAB's published thresholds"
    else:
        scored = nab.score_all(raw, corpus)
        results = {p: scored[p].score for p in PROFILES}
        thresholds = {p: scored[p].threshold for p in PROFILES}
    report(title, results, thresholds, board)
    if args.against:
        against(corpus, raw, thresholds["standard"], args.root, args.against)
    if timing:
        print(f"\nfit {timing['fit_s']:.1f}s, score {timing['score_s']:.1f}s ({timing['us_per_row']:.0f} us a row), "
              f"{timing['files']} files, {timing['failed']} failed")
    print(f"total {time.perf_counter() - t0:.1f}s")
    print(json.dumps({p: round(results[p], 4) for p in PROFILES}))


if __name__ == "__main__":
    try:
        main()
    except InputError as e:  # a folder not found or not in its layout: one line, as the CLI says it
        raise SystemExit(f"error: {e}") from None
