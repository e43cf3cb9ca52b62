"""Scoring at high resolution (1600x800): speed, peak memory and where the time goes.

    python bench/highres.py [--source ../shared/data/hazelnut_toy] [--width 1600 --height 800] \
        [--variants 4] [--detectors gaussian patchcore] [--format png]
    python bench/highres.py --native --source ../shared/data/magnetic_tile   # the source as it is (issue 13's profile)
    python bench/highres.py --native --source ../shared/data/magnetic_tile --image-size 160   # the fast path
    python bench/highres.py --image-size 800x1600 --tile 256 --overlap 64   # 1600x800 scored at full size, in tiles

Builds, in a temporary folder that is deleted afterwards, an MVTec-layout data set whose images
and masks are the source's resized to WIDTH x HEIGHT; ``--variants`` adds flipped copies (flips of
image and mask alike) so the test set is large enough to time. Then, for each detector at the
default ``--image-size auto``, each in its own process so that peak memory is its own:

* fit: ``normalcy fit``;
* score: ``Detector.score`` over the test images (the faster of two passes);
* predict: ``normalcy predict MODEL TEST -o RUN`` end to end (heatmap and overlay PNGs, report);
* eval: ``normalcy eval DATA --json`` (its own images/s and peak RSS: fit, score, masks, pixel metrics);
* stages: each stage of scoring timed on its own, one after the other, in ms per image.

``--native`` skips the resizing and measures the source data set as it is. ``--image-size``, ``--tile`` and
``--overlap`` are passed to ``normalcy fit`` and ``normalcy eval``.

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FLIPS = [None, 1, 0, -1]  # cv2.flip codes: as is, left-right, up-down, both


STAGES = ("read", "resize", "backbone", "detector", "upsample", "png", "metrics")
HEADER = ("| detector | input size | score img/s | predict img/s (loop / with start-up) | eval img/s | "
          "batch-1 latency ms | image AUROC | peak RSS MB (score / predict / eval) | ms per image: read | resize | "
          "backbone | detector | map upsample | PNG writing | masks + pixel metrics |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def make_dataset(source: Path, out: Path, size: tuple[int, int], variants: int, fmt: str) -> Path:
    """The source set in MVTec layout at size (width, height), with flipped copies; masks alike."""
    from normalcy.images.io import load_dataset

    ds = load_dataset(source)
    w, h = size
    flips = FLIPS[:variants]

    def put(src: Path, dst: Path, flag: int, interp: int) -> None:
        im = cv2.imread(str(src), flag)
        dst.parent.mkdir(parents=True, exist_ok=True)
        for k, code in enumerate(flips):
            big = cv2.resize(im, (w, h), interpolation=interp)
            big = big if code is None else cv2.flip(big, code)
            name = dst.with_name(f"{dst.stem}_v{k}{dst.suffix}")
            cv2.imwrite(str(name), big, [cv2.IMWRITE_PNG_COMPRESSION, 3] if dst.suffix == ".png" else [])

    for p in ds.train:
        put(p, out / "train" / "good" / f"{p.stem}.{fmt}", cv2.IMREAD_COLOR, cv2.INTER_CUBIC)
    for s in ds.test:
        put(s.path, out / "test" / s.defect / f"{s.path.stem}.{fmt}", cv2.IMREAD_COLOR, cv2.INTER_CUBIC)
        if s.mask_path is not None:
            put(s.mask_path, out / "ground_truth" / s.defect / f"{s.path.stem}.png", cv2.IMREAD_GRAYSCALE,
                cv2.INTER_NEAREST)
    # put() names masks <stem>_v<k>.png, the images <stem>_v<k>.<fmt>: load_dataset pairs them by stem.
    return out


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Run a command in its own process: (wall seconds, peak RSS MB, stdout)."""
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    stdout = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return wall, usage.ru_maxrss / 1024.0, stdout


def child_score(model: Path, data: Path) -> None:
    """Detector.score over the test images, the faster of two passes; prints JSON."""
    from normalcy.detectors import load
    from normalcy.images.io import load_dataset

    det = load(model)
    paths = [s.path for s in load_dataset(data).test]
    best = 0.0
    for _ in range(2):
        t = time.perf_counter()
        res = det.score(paths, progress=False)
        best = max(best, len(res.paths) / (time.perf_counter() - t))
    print(json.dumps({"images_per_second": best}))


def child_stages(model: Path, data: Path) -> None:
    """Each stage of scoring on its own, one after the other (no overlap), ms per image; prints JSON."""
    import torch

    from normalcy.detectors import load
    from normalcy.evaluation.evaluate import pixel_inputs
    from normalcy.evaluation.metrics import evaluate
    from normalcy.images.features import upsample_map
    from normalcy.images.io import load_dataset, read_image
    from normalcy.runs.format import RunWriter

    det = load(model)
    ex = det.extractor
    ds = load_dataset(data)
    paths = [s.path for s in ds.test]
    n, bs = len(paths), det.score_batch_size
    t = dict.fromkeys(STAGES, 0.0)
    from normalcy.images.backbones import Backbone

    warm = ex.preprocess([read_image(p) for p in paths[:bs]])  # the backbone's trace is made before timing starts
    for _ in range(Backbone.trace_after):
        ex(warm, pooled=det.uses_pooled) if det.uses_features else None
    with tempfile.TemporaryDirectory() as tmp:
        writer = RunWriter(Path(tmp), det.threshold_, det.map_range_, report=False, inputs=[data / "test"])
        for i in range(0, n, bs):
            chunk = paths[i : i + bs]
            t0 = time.perf_counter()
            images = [read_image(p) for p in chunk]
            t1 = time.perf_counter()
            x = ex.preprocess(images)
            t2 = time.perf_counter()
            feats = ex(x, pooled=det.uses_pooled) if det.uses_features else None
            t3 = time.perf_counter()
            with torch.inference_mode():
                s, pm = (t.numpy() for t in det.scoring()(x, feats))
            t4 = time.perf_counter()
            maps = [upsample_map(pm[k], im.shape[:2]) for k, im in enumerate(images)]
            t5 = time.perf_counter()
            for p, im, sc, m in zip(chunk, images, s, maps):
                writer.add(p, im, float(sc), m)
            t6 = time.perf_counter()
            for key, a, b in (("read", t0, t1), ("resize", t1, t2), ("backbone", t2, t3), ("detector", t3, t4),
                              ("upsample", t4, t5), ("png", t5, t6)):
                t[key] += b - a
        writer.close([], "stages")
    res = det.score(paths, progress=False)
    t0 = time.perf_counter()
    label_of = {s.path: s.label for s in ds.test}
    evaluate(np.array([label_of[p] for p in res.paths]), res.scores, *pixel_inputs(ds.test, res))
    t["metrics"] = time.perf_counter() - t0
    print(json.dumps({k: 1000.0 * v / n for k, v in t.items()}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", type=Path, default=DATA / "hazelnut_toy")
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--height", type=int, default=800)
    ap.add_argument("--variants", type=int, default=4, choices=range(1, 5), help="flipped copies of each image")
    ap.add_argument("--format", default="png", choices=["png", "jpg"])
    ap.add_argument("--detectors", nargs="+", default=["gaussian", "patchcore"])
    ap.add_argument("--workdir", type=Path, help="build the data set here and keep it (default: a temporary folder)")
    ap.add_argument("--native", action="store_true", help="measure --source as it is, not resized")
    ap.add_argument("--image-size", default="auto", help="normalcy's --image-size (default auto)")
    ap.add_argument("--tile", type=int, help="normalcy's --tile: score in overlapping tiles of this size")
    ap.add_argument("--overlap", type=int, default=64, help="normalcy's --overlap, with --tile")
    ap.add_argument("--child", nargs=3, metavar=("KIND", "MODEL", "DATA"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, model, data = args.child
        (child_score if kind == "score" else child_stages)(Path(model), Path(data))
        return
    if not args.source.is_dir():  # said here: normalcy's own error came as a traceback after the set-up
        ap.error(f"--source {args.source}: no such folder (a data set in MVTec layout: train/good, test/)")

    me = [sys.executable, str(Path(__file__).resolve()), "--child"]
    cli = [sys.executable, "-m", "normalcy.cli"]
    options = ["--image-size", args.image_size] + (["--tile", str(args.tile), "--overlap", str(args.overlap)]
                                                   if args.tile else [])
    with tempfile.TemporaryDirectory(prefix="normalcy-highres-") as tmp:
        work = args.workdir or Path(tmp)
        data = args.source if args.native else work / "data"
        if not args.native and not (work / "made").is_file():  # a kept work folder is built once
            make_dataset(args.source, data, (args.width, args.height), args.variants, args.format)
            (work / "made").touch()
        from normalcy.images.io import load_dataset

        ds = load_dataset(data)
        n_train, n_test = len(ds.train), len(ds.test)
        what = "as they are" if args.native else f"of {args.width}x{args.height} ({args.format})"
        print(f"data: {n_train} train, {n_test} test images {what}", file=sys.stderr)
        for name in args.detectors:
            model, run = work / f"model-{name}", work / f"run-{name}"
            timed([*cli, "fit", str(data / "train" / "good"), "-o", str(model), "--detector", name, *options])
            extractor = json.loads((model / "model.json").read_text())["extractor"]
            size = extractor["image_size"] if not extractor.get("tile") else \
                f"{extractor['image_size']} in {extractor['tile']} px tiles, {extractor['overlap']} overlap"
            _, score_rss, out = timed([*me, "score", str(model), str(data)])
            score_ips = json.loads(out)["images_per_second"]
            wall, predict_rss, _ = timed([*cli, "predict", str(model), str(data / "test"), "-o", str(run)])
            loop = json.loads((run / "run.json").read_text())["seconds"]
            _, eval_rss, out = timed([*cli, "eval", str(data), "--detector", name, "--json", *options])
            ev = json.loads(out)
            _, _, out = timed([*me, "stages", str(model), str(data)])
            st = json.loads(out)
            if name == args.detectors[0]:
                print(f"{n_train} train, {n_test} test images {what}, from {args.source.name}\n")
                print(HEADER)
            print(f"| {name} | {size} | {score_ips:.1f} | {n_test / loop:.1f} / {n_test / wall:.1f} | "
                  f"{ev['images_per_second']:.1f} | {ev['latency_ms_batch1']:.1f} | {ev['image_auroc']:.3f} | "
                  f"{score_rss:.0f} / {predict_rss:.0f} / {eval_rss:.0f} | "
                  + " | ".join(f"{st[k]:.1f}" for k in STAGES) + " |", flush=True)


if __name__ == "__main__":
    main()
