"""Event F1 per NAB category beside Orion's published AER figures.

    python bench/nab_categories.py ../shared/data/nab [--detector NAME] [--param KEY=VALUE ...]
                                   [--level 0.3] [--gap ROWS] [--json out.json]

Orion (sintel-dev/Orion) reports event F1 on five NAB categories (artificialWithAnomaly, realAWSCloudwatch,
realAdExchange, realTraffic, realTweets); its AER pipeline's figures are printed beside ours. The counts are
Orion's (``normalcy.evaluation.series_metrics.event_counts``: a labelled event is found when a predicted
event shares a row with it, a predicted event that overlaps none is a false positive, counts summed over a
category's files). Labelled events are NAB's anomaly windows (labels/combined_windows.json).

Ours, two ways, both fitted on each file's probationary rows (NAB's first min(15 %, 750)) only:

- ``stream``: the detector run online as bench/nab.py runs it (``normalcy.series.stream.Stream``: each row
  scored from its past, then learned; the score calibrated to [0, 1]). A row is anomalous when its score
  reaches ``--level`` (the stream's alarm level, 0.3: three decades of tail probability); anomalous rows
  fewer than ``--gap`` rows apart are one event (default: the stream's quiet period, 100 rows).
- ``offline``: what ``normalcy fit`` + ``predict`` give: the fitted model scores the file in one batch,
  no learning, decisions at the detector's own threshold (held-out normal rows at fpr 0.01), events
  merged across gaps shorter than its window (``normalcy.series.events``) and pruned as predict prunes them.

Orion itself, in the same run (``--orion-venv DIR``, a virtualenv holding ``orion-ml``; it cannot share ours:
it needs tensorflow<2.15, numpy 1.26 and scikit-learn<1.6): each pipeline of ``--orion-pipelines`` (default AER)
runs on each file of Orion's five categories through bench/orion_worker.py under that venv's python, with the
hyperparameters Orion's benchmark gives it per category, two ways (``--orion-protocols``): ``whole``, Orion's own
benchmark protocol (fitted on the whole signal, anomalies included, then detecting on it), and ``probation``,
our split (fitted on the probationary rows only). Its detected intervals become row spans and are counted as
ours. Results are kept in ``--orion-cache`` (JSON lines, one per pipeline, protocol and file) so that a long run
can be resumed; a category is reported only when Orion was run on every one of its files (a file it ran on and
could not fit, too short for its windows, counts as nothing found, as for ours). Set up, outside the
repository (nothing is downloaded at run time):

    python3.11 -m venv ../orion-venv && ../orion-venv/bin/pip install orion-ml==0.7.1 "scikit-learn<1.6"

(scikit-learn 1.6 dropped an argument that pyts, which AER's DTW error calls, still passes.)

For context, NAB's published streaming detectors (``--published``, default ARTime and Numenta HTM, the
best two of NAB's scoreboard) under the same event rule: their published raw scores at the threshold NAB
published for them (standard profile), anomalous rows after the probationary period merged across gaps
shorter than ``--gap``.

The protocols differ from Orion's: Orion's pipelines train on the whole signal they then score (the
anomalies included), ours on the probationary rows only; Orion pads each detected interval by 50 rows on
both sides, ours are the anomalous rows themselves. Rows of the probationary period are scored too (our
detectors fitted on them rarely flag them); a window inside it counts as missed if nothing flags it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from normalcy.errors import InputError  # noqa: E402
from normalcy.evaluation import nab  # noqa: E402
from normalcy.evaluation.series_metrics import Counts, event_counts  # noqa: E402
from normalcy.series.events import pruned, spans  # noqa: E402
from nab import parse_params, stream_file  # noqa: E402  (bench/nab.py: scripts import each other by name)

ORION_AER = {  # Orion's published AER event F1 (the figures issue 25 quotes)
    "artificialWithAnomaly": 0.75, "realAWSCloudwatch": 0.70, "realAdExchange": 0.73,
    "realTraffic": 0.61, "realTweets": 0.61,
}
OTHER = ("realKnownCause", "artificialNoAnomaly")  # NAB categories Orion does not report


def run_file(det, f: nab.NabFile, level: float, gap: int, learn_every: int, quiet: int) -> dict[str, list]:
    """Predicted events (first, last row) of one file, both ways."""
    offline = det.score(f.values.reshape(-1, 1))
    found = spans(offline.decision, gap=det.gap_)
    out = {"offline": pruned(offline.score, offline.decision, found, det.event_pruning)[0]}
    score = np.zeros(len(f))
    score[f.probation:] = stream_file(det, f, learn_every=learn_every, quiet=quiet, alarm=level).score
    out["stream"] = spans(score >= level, gap=gap)
    return out


def read_orion_cache(path: Path | None) -> dict[tuple[str, str, str], dict]:
    """Orion results kept by earlier runs (--orion-cache, JSON lines), by (pipeline, protocol, file)."""
    cache = {}
    if path is not None and path.is_file():
        for line in path.read_text().splitlines():
            e = json.loads(line)
            cache[(e["pipeline"], e["protocol"], e["file"])] = e
    return cache


def check_orion_venv(venv: Path) -> None:
    """Refuse, before any file is scored, a --orion-venv whose python is missing or cannot import orion: each
    file's run would fail alike, and every failure counts (and is cached) as Orion finding nothing."""
    import subprocess

    python = venv / "bin" / "python"
    how = f'python3.11 -m venv {venv} && {python.parent / "pip"} install orion-ml==0.7.1 "scikit-learn<1.6"'
    if not python.is_file():
        raise SystemExit(f"--orion-venv {venv}: no {python}; create it with\n    {how}")
    done = subprocess.run([str(python), "-c", "import orion"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"--orion-venv {venv}: its python cannot import orion ({last}); install it with\n"
                         f"    {python.parent / 'pip'} install orion-ml==0.7.1 \"scikit-learn<1.6\"")


def orion_events(venv: Path, pipeline: str, key: str, f: nab.NabFile, root: Path, protocol: str,
                 cache: dict[tuple[str, str, str], dict], cache_file: Path | None, timeout: int,
                 run: bool = True) -> dict | None:
    """One Orion pipeline's result on one NAB file ({"events": [(first, last) rows], "fit_s", "detect_s"}),
    from the cache or from bench/orion_worker.py run under the venv (unless ``run`` is False). Where it failed
    or timed out, no events and the ``error``, as a file our detector cannot fit counts; None where not run."""
    import subprocess

    entry = cache.get((pipeline, protocol, key))
    if entry is None and run:
        cmd = [str(venv / "bin" / "python"), str(ROOT / "bench" / "orion_worker.py"), pipeline,
               str(root / "data" / key), "--dataset", key.split("/")[0],
               "--fit-rows", str(f.probation if protocol == "probation" else 0)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            lines = done.stdout.strip().splitlines()
            entry = json.loads(lines[-1]) if done.returncode == 0 and lines else \
                {"error": (done.stderr.strip().splitlines() or ["no output"])[-1][:300]}
        except subprocess.TimeoutExpired:
            entry = {"error": f"timed out after {timeout} s"}
        entry |= {"pipeline": pipeline, "protocol": protocol, "file": key}
        cache[(pipeline, protocol, key)] = entry
        if cache_file is not None:
            with open(cache_file, "a") as out:
                out.write(json.dumps(entry) + "\n")
    if entry is None:
        return None
    if "error" in entry:  # it ran and could not fit or detect (a file too short for its windows): nothing found
        print(f"  Orion {pipeline} ({protocol}) failed on {key}: {entry['error']}", file=sys.stderr)
        return {"events": [], "fit_s": 0.0, "detect_s": 0.0, "error": entry["error"]}
    epoch = f.time.astype("datetime64[s]").astype(np.int64)
    rows = []
    for a, b in entry["events"]:
        inside = np.flatnonzero((epoch >= a) & (epoch <= b))
        if len(inside):
            rows.append((int(inside[0]), int(inside[-1])))
    return {"events": rows, "fit_s": entry["fit_s"], "detect_s": entry["detect_s"]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, help="the NAB folder (data/, labels/)")
    ap.add_argument("--detector", metavar="NAME", help="a normalcy.series detector (default: the series default)")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="a detector parameter")
    ap.add_argument("--level", type=float, default=0.3, help="stream: the alarm level in [0, 1]")
    ap.add_argument("--gap", type=int, default=100, help="stream: anomalous rows closer than this are one event")
    ap.add_argument("--learn-every", type=int, default=128)
    ap.add_argument("--published", default="ARTime,numenta",
                    help="NAB's published detectors to show under the same event rule ('none': none)")
    ap.add_argument("--json", type=Path, help="write the counts per category")
    ap.add_argument("--orion-venv", type=Path, help="a virtualenv with orion-ml: run Orion's pipelines too")
    ap.add_argument("--orion-pipelines", default="aer", help="Orion pipelines, comma-separated")
    ap.add_argument("--orion-protocols", default="whole,probation", help="whole and/or probation (see above)")
    ap.add_argument("--orion-categories", default=",".join(ORION_AER), help="categories Orion runs on")
    ap.add_argument("--orion-cache", type=Path, help="JSON lines of Orion results, read and appended")
    ap.add_argument("--orion-timeout", type=int, default=3600, help="seconds per Orion run on one file")
    ap.add_argument("--orion-cache-only", action="store_true",
                    help="report Orion from --orion-cache alone: nothing is run, files without a result left out")
    args = ap.parse_args(argv)
    if args.orion_venv and not args.orion_cache_only:
        check_orion_venv(args.orion_venv)

    import faiss

    from normalcy.series import registry

    faiss.omp_set_num_threads(1)
    name = args.detector or registry.DEFAULT_DETECTOR
    params = parse_params(args.param)
    corpus = nab.load_corpus(args.root)
    counts: dict[str, dict[str, Counts]] = {"stream": {}, "offline": {}}
    orion_ways = [(p, q) for p in args.orion_pipelines.split(",") for q in args.orion_protocols.split(",")
                  ] if args.orion_venv else []
    orion_cats = set(args.orion_categories.split(","))
    cache = read_orion_cache(args.orion_cache)
    orion_done: dict[str, dict[str, int]] = {}  # way -> category -> files with a result
    orion_seconds: dict[str, float] = {}
    ours_s = 0.0
    for i, (key, f) in enumerate(corpus.files.items()):
        t_file = time.perf_counter()
        category = key.split("/")[0]
        det = registry.create(name, **params)
        truth = [(int(a), int(b)) for a, b in f.windows]
        try:
            det.fit(f.values[:f.probation].reshape(-1, 1), progress=False)
            found = run_file(det, f, args.level, args.gap, args.learn_every, args.gap)
        except InputError as err:  # too short to fit: nothing found there
            print(f"  {key}: {err}", file=sys.stderr)
            found = {"stream": [], "offline": []}
        for way, events in found.items():
            counts[way][category] = counts[way].get(category, Counts()) + event_counts(truth, events)
        ours_s += time.perf_counter() - t_file
        for pipeline, protocol in orion_ways if category in orion_cats else []:
            way = f"Orion {pipeline} ({protocol})"
            got = orion_events(args.orion_venv, pipeline, key, f, args.root, protocol, cache, args.orion_cache,
                               args.orion_timeout, run=not args.orion_cache_only)
            per = counts.setdefault(way, {})
            per[category] = per.get(category, Counts()) + event_counts(truth, got["events"] if got else [])
            if got:
                done = orion_done.setdefault(way, {})
                done[category] = done.get(category, 0) + 1
                orion_seconds[way] = orion_seconds.get(way, 0.0) + got["fit_s"] + got["detect_s"]
        print(f"  [{i + 1:2d}/{len(corpus.files)}] {key}", file=sys.stderr, flush=True)
    seconds = ours_s  # ours only (Orion's seconds are counted apart)
    n_files = {c: sum(1 for k in corpus.files if k.startswith(c + "/")) for c in ORION_AER}
    for way, per in list(counts.items()):
        if way.startswith("Orion "):  # a category counts only when every file of it has a result
            for c in list(per):
                if orion_done.get(way, {}).get(c, 0) < n_files[c]:
                    print(f"  {way}: {c} left out ({orion_done.get(way, {}).get(c, 0)} of {n_files[c]} files "
                          "have a result)", file=sys.stderr)
                    del per[c]
    published = [] if args.published == "none" else args.published.split(",")
    thresholds = json.loads((args.root / "published" / "thresholds.json").read_text()) if published else {}
    for pub in published:
        raw = nab.read_published(args.root, pub, corpus)
        way = f"NAB's {pub}"
        counts[way] = {}
        for key, f in corpus.files.items():
            flagged = raw[key] >= thresholds[pub]["standard"]["threshold"]
            flagged[:f.probation] = False  # NAB ignores them; a streaming detector is still learning there
            category = key.split("/")[0]
            truth = [(int(a), int(b)) for a, b in f.windows]
            counts[way][category] = counts[way].get(category, Counts()) + event_counts(
                truth, spans(flagged, gap=args.gap))

    cats = list(ORION_AER) + list(OTHER)
    print(f"\n## Event F1 per NAB category: normalcy.series {name} {params or ''} beside Orion's AER\n")
    print("| method | " + " | ".join(cats) + " | Orion's five pooled |")
    print("|---" * (len(cats) + 2) + "|")
    report: dict = {"detector": name, "params": params, "level": args.level, "gap": args.gap,
                    "seconds": round(seconds, 1), "orion_aer": ORION_AER}
    for way in counts:
        per = counts[way]
        pooled = sum((per.get(c, Counts()) for c in ORION_AER), Counts())
        cells = [f"{per[c].f1:.2f} ({per[c].tp}/{per[c].fp}/{per[c].fn})" if c in per else "–" for c in cats]
        label = {"stream": f"ours, stream (level {args.level}, gap {args.gap})", "offline": "ours, offline"}.get(
            way, f"{way}, this run, {orion_seconds.get(way, 0.0):.0f} s" if way.startswith("Orion ") else
            f"{way} (published scores, NAB's threshold, gap {args.gap})")
        whole = all(c in per for c in ORION_AER)  # pooled over the five only when all five were run
        print(f"| {label} | " + " | ".join(cells) + (f" | {pooled.f1:.2f} |" if whole else " | – |"))
        report[way] = {c: {"f1": per[c].f1, "tp": per[c].tp, "fp": per[c].fp, "fn": per[c].fn} for c in per}
    print("| Orion AER (published) | " + " | ".join(f"{ORION_AER[c]:.2f}" if c in ORION_AER else "–" for c in cats)
          + " | – |")
    print("\n(tp/fp/fn) are event counts summed over a category's files; artificialNoAnomaly has no windows, "
          "so its F1 is 0 with any false positive and undefined without.")
    print(f"\n{len(corpus.files)} files in {seconds:.1f}s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=float))
    return report


if __name__ == "__main__":
    try:
        main()
    except InputError as e:  # a folder not found or not in its layout: one line, as the CLI says it
        raise SystemExit(f"error: {e}") from None
