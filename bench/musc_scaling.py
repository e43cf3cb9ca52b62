"""MuSc time and memory against the batch size, and quality with and without extra references.

MuSc compares every image with every other, so its cost grows with the square of the
batch. This measures it on real images (magnetic_tile: test images, then train images to
reach 1,000), each batch size in a fresh process so peak memory is honest:

    python bench/musc_scaling.py                    # 100, 300, 1000 images at 256 px
    python bench/musc_scaling.py --sizes 100 --image-size 224

With --quality it also scores the 725-image test set (no training images: the issue's
setting) and the same test set with the 619 train/good images added as extra unlabeled
references (``score-batch --extra``), and prints image AUROC, pixel AUROC and AUPRO.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "magnetic_tile"


def _one(n: int, image_size: int) -> dict:
    """Score n images as one batch in this process; return time and peak memory."""
    import torch

    from normalcy.detectors import MuSc
    from normalcy.evaluation.evaluate import peak_rss_mb
    from normalcy.images.features import FeatureExtractor
    from normalcy.images.io import list_files

    paths = list_files(DATA / "test") + list_files(DATA / "train" / "good")
    if n > len(paths):
        raise SystemExit(f"only {len(paths)} images available, asked for {n}")
    det = MuSc(FeatureExtractor(image_size=image_size))
    t = time.perf_counter()
    result = det.score(paths[:n], progress=False)
    return {"images": len(result.paths), "image_size": image_size, "seconds": round(time.perf_counter() - t, 1),
            "peak_rss_mb": round(peak_rss_mb(), 0), "threads": torch.get_num_threads()}


def _quality(image_size: int) -> list[dict]:
    import numpy as np

    from normalcy.detectors import MuSc
    from normalcy.evaluation.evaluate import masks_for
    from normalcy.evaluation.metrics import evaluate
    from normalcy.images.features import FeatureExtractor
    from normalcy.images.io import load_dataset

    ds = load_dataset(DATA)
    label_of = {s.path: s.label for s in ds.test}
    rows = []
    for name, refs in (("test only (zero-shot)", []), ("test + train/good as extra references", ds.train)):
        det = MuSc(FeatureExtractor(image_size=image_size)).references(refs, progress=False)
        t = time.perf_counter()
        result = det.score([s.path for s in ds.test], progress=False)
        seconds = time.perf_counter() - t
        labels = np.array([label_of[p] for p in result.paths])
        m = evaluate(labels, result.scores, masks_for(ds.test, result), result.maps)
        rows.append({"batch": name, "image_auroc": m["image_auroc"], "pixel_auroc": m["pixel_auroc"],
                     "aupro": m["aupro"], "seconds": round(seconds, 1)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,300,1000", help="batch sizes, comma-separated")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--quality", action="store_true", help="also measure AUROC with and without references")
    ap.add_argument("--quality-size", type=int, default=224, help="image size for --quality (eval's default)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: one measurement in this process
    args = ap.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} not found: this benchmark needs ../shared/data/magnetic_tile")
    if args.one:
        print(json.dumps(_one(args.one, args.image_size)))
        return
    print(f"CPU cores: {os.cpu_count()}; image size {args.image_size} px; each size in a fresh process\n")
    print("| images | seconds | peak memory (MB) | torch threads |")
    print("|---:|---:|---:|---:|")
    for n in (int(s) for s in args.sizes.split(",")):
        cmd = [sys.executable, __file__, "--one", str(n), "--image-size", str(args.image_size)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:  # the child's own error line: a CalledProcessError's traceback hid it
            said = (out.stderr.strip().splitlines() or ["no output"])[-1]
            raise SystemExit(f"failed ({out.returncode}): {' '.join(cmd)}\n{said}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {r['images']} | {r['seconds']} | {r['peak_rss_mb']:.0f} | {r['threads']} |", flush=True)
    if args.quality:
        print(f"\n{args.quality_size} px:\n")
        print("| batch (magnetic_tile test, 725 images) | image AUROC | pixel AUROC | AUPRO | seconds |")
        print("|---|---:|---:|---:|---:|")
        for r in _quality(args.quality_size):
            print(f"| {r['batch']} | {r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} | {r['aupro']:.3f} | {r['seconds']} |",
                  flush=True)


if __name__ == "__main__":
    main()
