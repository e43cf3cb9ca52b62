"""ONNX export parity and speed (issue 13): PyTorch fp32 against the exported graph in fp32 and int8.

    python bench/export_parity.py [--data ../shared/data/magnetic_tile] [--detectors gaussian patchcore]
    python bench/export_parity.py --data ../shared/data/hazelnut_toy --detectors simplenet draem efficientad
    python bench/export_parity.py --precision bf16    # a model fitted as `normalcy fit` does by default

For each detector: fit on train/good with the backbone in fp32 (``--precision bf16``: in bf16), export fp32 and
int8 (calibrated on 64 of the training images), score test/ with each. Reported against PyTorch as the graph
computes, ``as_exported(det)``: the backbone in fp32, PatchCore's bank searched exactly, the graph's threshold
(a bf16 model's ``threshold_fp32_``). The model as fitted, where it differs (its IVF search of a large bank, its
bf16 backbone at its own threshold), is reported on its own row. Each row: the largest score difference
(absolute, and relative to the score), the decisions that agree (each at its own threshold), image AUROC,
images/s of the scoring alone (resized images already in memory, batches of 8, on ``--time-images`` images,
best of 3 passes) and end to end (read, resize, score, every test image, one pass), and
the batch-1 latency: the median time to score one image file on its own (read, resize, score, map), over
``--latency-images`` images after 5 warm-up calls (``normalcy.evaluation.evaluate.latency_ms``).
Trained detectors train for ``--train-steps`` steps only: enough for parity, not for their best AUROC.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from normalcy.detectors import DETECTORS, create
from normalcy.detectors.base import Detector
from normalcy.errors import InputError
from normalcy.evaluation.evaluate import latency_ms
from normalcy.evaluation.metrics import image_metrics
from normalcy.images.features import FeatureExtractor, _to_tensor, resize_image
from normalcy.images.io import load_dataset, read_image
from normalcy.scale.export import OnnxScorer, as_exported, export_onnx

ROOT = Path(__file__).resolve().parents[1]
BATCH = 8


def note(msg: str) -> None:
    """Progress on stderr, with the peak memory so far."""
    print(f"{time.strftime('%X')} {msg} (peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GB)",
          file=sys.stderr, flush=True)


def best_speed(run: Callable[[list[np.ndarray]], object], images: list[np.ndarray], passes: int = 3) -> float:
    """Images/s of run() over resized images in memory, in batches; the best of a few passes (other work on the
    machine only ever slows a pass down)."""
    run(images[:BATCH])  # warm-up
    best = 0.0
    for _ in range(passes):
        t = time.perf_counter()
        for i in range(0, len(images), BATCH):
            run(images[i:i + BATCH])
        best = max(best, len(images) / (time.perf_counter() - t))
    return best


def torch_scoring(det: Detector) -> Callable[[list[np.ndarray]], object]:
    """Features + the detector's scoring module (what its _score runs) on resized images: the PyTorch
    counterpart of the graph, which traces the same module."""
    scoring = det.scoring()  # type: ignore[attr-defined]

    def run(chunk: list[np.ndarray]) -> object:
        x = _to_tensor(chunk)
        feats = det.extractor(x, pooled=det.uses_pooled) if det.uses_features else None
        with torch.inference_mode():
            return scoring(x, feats)

    return run


def row(name: str, scores: np.ndarray, decisions: np.ndarray, ref_scores: np.ndarray, ref_decisions: np.ndarray,
        labels: np.ndarray, graph_ips: float, e2e_ips: float, batch1_ms: float) -> dict:
    diff = np.abs(scores - ref_scores)
    return {"variant": name, "max_abs": float(diff.max()), "max_rel": float((diff / np.abs(ref_scores)).max()),
            "max_rel1": float((diff / np.maximum(np.abs(ref_scores), 1.0)).max()),
            "agree": f"{int((decisions == ref_decisions).sum())}/{len(decisions)}",
            "auroc": image_metrics(labels, scores)["image_auroc"], "graph": graph_ips, "e2e": e2e_ips,
            "batch1": batch1_ms}


def bench(name: str, data: Path, time_images: int, latency_images: int, train_steps: int, image_size: int | None,
          fit_precision: str, out: Path) -> list[dict]:
    ds = load_dataset(data)
    paths = [s.path for s in ds.test]
    labels = np.array([s.label for s in ds.test])
    fields = DETECTORS[name].Params.model_fields
    kwargs = {k: v for k, v in (("steps", train_steps), ("teacher_steps", train_steps), ("time_budget", None))
              if k in fields}
    ext = FeatureExtractor(precision=fit_precision, **({"image_size": image_size} if image_size else {}))
    det = create(name, ext, **kwargs).fit(ds.train, progress=False)
    note(f"{name}: fitted")
    exported = as_exported(det)
    ivf = bool(len(getattr(det, "cells_", [])))
    resized = [resize_image(read_image(p), det.extractor.size) for p in paths[:time_images]]

    def batch1(score_one: Callable[[Path], object]) -> float:
        return latency_ms(score_one, paths, latency_images, warm=5)

    t = time.perf_counter()
    ref = exported.score(paths, progress=False)
    e2e = len(paths) / (time.perf_counter() - t)
    note(f"{name}: scored by PyTorch")
    rows = [row("PyTorch fp32" + (", exact search" if ivf else ""), ref.scores, ref.decisions,
                ref.scores, ref.decisions, labels, best_speed(torch_scoring(exported), resized), e2e,
                batch1(lambda p: exported.score([p], batch_size=1, progress=False)))]
    if ivf or det.extractor.precision != "fp32":  # the model as fitted: IVF search, bf16 at its own threshold
        t = time.perf_counter()
        own = det.score(paths, progress=False)
        e2e = len(paths) / (time.perf_counter() - t)
        rows.append(row(f"PyTorch {det.extractor.precision}, the model"
                        + (f", IVF ({len(det.bank_)} bank, {len(det.cells_)} cells)" if ivf else ""), own.scores,
                        own.decisions, ref.scores, ref.decisions, labels, best_speed(torch_scoring(det), resized), e2e,
                        batch1(lambda p: det.score([p], batch_size=1, progress=False))))
    for precision in ("fp32", "int8"):
        t = time.perf_counter()
        path = export_onnx(det, out / f"{name}-{precision}.onnx", precision, calibration_paths=ds.train)
        export_s = time.perf_counter() - t
        note(f"{name}: exported {precision}")
        scorer = OnnxScorer(path)
        t = time.perf_counter()
        got = scorer.score(paths, batch_size=BATCH)
        e2e = len(paths) / (time.perf_counter() - t)
        assert [p for p in got.paths] == list(ref.paths)
        rows.append(row(f"ONNX {precision} (export {export_s:.0f} s, {path.stat().st_size / 2**20:.0f} MB)",
                        got.scores, got.decisions, ref.scores, ref.decisions, labels,
                        best_speed(lambda chunk: scorer.run(np.stack(chunk)), resized), e2e,
                        batch1(lambda p: scorer.score([p], batch_size=1))))
    for r in rows:
        r["detector"] = name
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "magnetic_tile")
    ap.add_argument("--detectors", nargs="+", default=["gaussian", "patchcore"])
    ap.add_argument("--time-images", type=int, default=32, help="resized images in memory for the scoring speed")
    ap.add_argument("--latency-images", type=int, default=50, help="images scored one at a time for the latency")
    ap.add_argument("--image-size", type=int, default=None, help="the input size (default: the extractor's, 224)")
    ap.add_argument("--train-steps", type=int, default=200, help="trained detectors: training steps")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="the backbone's at fit")
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.detectors:
            rows += bench(name, args.data, args.time_images, args.latency_images, args.train_steps, args.image_size,
                          args.precision, Path(tmp))
    print(f"\n{args.data.name}, {len(rows) and rows[0]['agree'].split('/')[1]} test images, "
          f"{torch.get_num_threads()} threads, input {args.image_size or 'default'}, fitted in {args.precision}\n")
    print("| detector | variant | max abs diff | max rel diff | max rel diff, floor 1 | decisions agree | "
          "image AUROC | scoring images/s | end to end images/s | batch-1 latency ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['detector']} | {r['variant']} | {r['max_abs']:.2g} | {r['max_rel']:.2g} | {r['max_rel1']:.2g} | "
              f"{r['agree']} | {r['auroc']:.4f} | {r['graph']:.1f} | {r['e2e']:.1f} | {r['batch1']:.1f} |")


if __name__ == "__main__":
    try:
        main()
    except InputError as e:  # a data set not found or not readable: one line, as the CLI says it
        raise SystemExit(f"error: {e}") from None
