"""Scoring throughput of several detectors in the same run, at the same image size.

    python bench/throughput.py [--data ../shared/data/magnetic_tile] [--size 256] \
        [--detectors patchcore efficientad] [--train-budget 60]

Fits each detector (trained ones with a short budget: throughput does not depend on how
long a network was trained), then scores the whole test set twice and reports the faster
pass, end to end (read, features, score, map at original size). Prints a markdown table, and the
multiply-accumulates of EfficientAD's PDN-tiny (the point of it: far below the backbone's ~400 MMAC at 256 px).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from normalcy.detectors import DETECTORS, create
from normalcy.detectors.networks import pdn_tiny
from normalcy.errors import InputError
from normalcy.images.features import FeatureExtractor
from normalcy.images.io import load_dataset

ROOT = Path(__file__).resolve().parents[1]


def count_macs(net: nn.Module, input_size: int) -> int:
    """Multiply-accumulates of the convolutions for one input_size x input_size image."""
    total = 0

    def hook(mod: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
        total += out[0].numel() * k

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.inference_mode():
            net.eval()(torch.zeros(1, 3, input_size, input_size))
    finally:
        for h in handles:
            h.remove()
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "magnetic_tile")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--detectors", nargs="+", default=["patchcore", "efficientad"])
    ap.add_argument("--train-budget", type=float, default=60.0)
    args = ap.parse_args()
    ds = load_dataset(args.data)
    paths = [s.path for s in ds.test]
    rows = []
    for name in args.detectors:
        kwargs = {}
        if "time_budget" in DETECTORS[name].Params.model_fields:
            kwargs["time_budget"] = args.train_budget
        det = create(name, FeatureExtractor(image_size=args.size), **kwargs).fit(ds.train, progress=False)
        best = 0.0
        for _ in range(2):
            t = time.perf_counter()
            det.score(paths, progress=False)
            best = max(best, len(paths) / (time.perf_counter() - t))
        rows.append((name, best))
    base = rows[0][1]
    print(f"| detector | images/s at {args.size} px | vs {rows[0][0]} |")
    print("|---|---|---|")
    for name, ips in rows:
        print(f"| {name} | {ips:.1f} | {ips / base:.2f}x |")
    print(f"PDN-tiny: {count_macs(pdn_tiny(32), args.size) / 1e6:.0f} MMAC per {args.size} px image")


if __name__ == "__main__":
    try:
        main()
    except InputError as e:  # a data set not found or not readable: one line, as the CLI says it
        raise SystemExit(f"error: {e}") from None
