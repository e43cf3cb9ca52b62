"""Dev proxies for the kinds of data nobody tuned for, built from what we have (issue 11).

    python bench/dev_proxies.py                     # every proxy and detector, about 12 minutes on 2 cores
    python bench/dev_proxies.py --proxies elpv --detectors gaussian
    python bench/dev_proxies.py --detectors patchcore@efficientnet_lite0 patchcore   # NAME@BACKBONE: another backbone
    python bench/dev_proxies.py --detectors gaussian patchcore --input-norms own imagenet auto
    python bench/dev_proxies.py --detectors gaussian patchcore --tune    # also each with --tune (NAME/tune)

Without @BACKBONE a detector runs on its own default backbone (patchcore: EfficientNet-Lite2 since 3 December
2026; tables before that date ran it on Lite0), and auto gives each candidate its own, as ``normalcy eval``
does. ``--input-norms`` runs each detector with each input normalisation (``auto``: chosen by the detector's
own synthetic-defect validation, as ``--input-norm auto``); the columns are then NAME/NORM. ``--tune``
adds a column NAME/tune per detector: its settings chosen as ``normalcy eval --tune`` chooses them.

The synthetic proxies are built from NORMAL training images only: train/good is split into a part to fit
on and a held-out part (20 %), and each held-out image is scored as it is and once as a logical-anomaly
copy (normalcy/images/logical.py: a part missing, duplicated, moved, or two parts swapped; the kinds take turns).
No test image of any data set is read. elpv is the one real proxy: fit on normal mono cells (defect
probability 0), score held-out normal cells against surely defective ones (probability 1), at the cells'
native 300x300. Everything here is validation data: settings may be chosen on it.

Prints two markdown tables of image AUROC (per proxy, and per anomaly kind), then EfficientAD's
student-teacher and autoencoder maps scored on their own on each synthetic proxy.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

from normalcy.demo import build_elpv_dataset
from normalcy.detectors import EfficientAD, default_backbone
from normalcy.evaluation.evaluate import run_eval
from normalcy.evaluation.validation import TUNABLE
from normalcy.images.logical import LOGICAL, logical_anomaly
from normalcy.evaluation.metrics import image_metrics
from normalcy.images.backbones import INPUT_NORMS
from normalcy.images.features import FeatureExtractor, size_for
from normalcy.images.io import Dataset, load_dataset, read_image

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DETECTORS = ("gaussian", "patchcore", "efficientad", "auto")


def _link(paths: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for p in paths:
        (folder / p.name).symlink_to(p.resolve())


def logical_proxy(train: list[Path], target: Path, seed: int = 0, fraction: float = 0.2,
                  min_anomalous: int = 60) -> Path:
    """MVTec layout under ``target``: 80 % of ``train`` to fit on; the rest as test/good and as
    logical-anomaly copies in test/<kind> (masks in ground_truth/<kind>): one copy per held-out image,
    the kinds taking turns, or up to one of each kind where that gives fewer than ``min_anomalous``."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train))
    n_held = max(4, round(fraction * len(train)))
    held = [train[i] for i in sorted(order[:n_held])]
    _link([train[i] for i in sorted(order[n_held:])], target / "train" / "good")
    _link(held, target / "test" / "good")
    kinds = sorted(LOGICAL)
    copies = min(len(kinds), -(-min_anomalous // len(held)))
    for k, (p, c) in enumerate((p, c) for p in held for c in range(copies)):
        kind = kinds[k % len(kinds)]
        out, mask, _ = logical_anomaly(read_image(p), rng, kind)
        for folder, arr, name in ((target / "test" / kind, out, f"{p.stem}_{c}.png"),
                                  (target / "ground_truth" / kind, (mask * 255).astype(np.uint8), f"{p.stem}_{c}_mask.png")):
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / name), cv2.cvtColor(arr, cv2.COLOR_RGB2BGR) if arr.ndim == 3 else arr)
    return target


def train_images(name: str) -> list[Path]:
    """The normal training images of ../shared/data/NAME; where absent, said in one line (not a traceback)."""
    folder = DATA / name / "train" / "good"
    if not folder.is_dir():
        raise SystemExit(f"{folder} not found: the {name}-logical proxy is built from ../shared/data/{name}")
    return sorted(folder.iterdir())


def elpv_logical(target: Path) -> Path:
    """elpv normal cells with logical-anomaly copies: the cells are aligned, their busbars are parts."""
    cells = build_elpv_dataset(target.parent / "elpv_cells", n_train=200, n_test=0, n_defective=0)
    return logical_proxy(sorted((cells / "train" / "good").iterdir()), target)


PROXIES: dict[str, tuple[Callable[[Path], Path], Callable[[list[Path]], Any]]] = {
    # name: (build the data set under a folder, its input size from the training paths)
    "magnetic_tile-logical": (lambda t: logical_proxy(train_images("magnetic_tile"), t), lambda p: size_for(p)),
    "hazelnut_toy-logical": (lambda t: logical_proxy(train_images("hazelnut_toy"), t), lambda p: size_for(p)),
    "elpv-logical": (elpv_logical, lambda p: 300),
    "elpv": (lambda t: build_elpv_dataset(t, n_train=200, n_test=100), lambda p: 300),
}


def kind_aurocs(ds: Dataset, paths: list[Path], scores: np.ndarray) -> dict[str, float]:
    """Image AUROC of the held-out normal images against each anomaly kind (test/<kind>) alone."""
    kind_of = {s.path: s.path.parent.name for s in ds.test}
    kinds = np.array([kind_of[p] for p in paths])
    out = {}
    for kind in sorted(set(kinds) - {"good"}):
        keep = (kinds == "good") | (kinds == kind)
        out[kind] = image_metrics((kinds[keep] == kind).astype(int), scores[keep])["image_auroc"]
    return out


@torch.inference_mode()
def efficientad_branches(det: EfficientAD, ds: Dataset) -> dict[str, float]:
    """Image AUROC (max of each normalised map) of EfficientAD's student-teacher map, its autoencoder map,
    and their mean (what it scores with) on the test set of ``ds``."""
    labels, found = [], {"student-teacher": [], "autoencoder": [], "combined": []}
    label_of = {s.path: s.label for s in ds.test}
    for batch in det.extractor.iter_batches([s.path for s in ds.test], det.batch_size, keep_images=False,
                                            pooled=False, features=False):
        if batch.inputs is None:
            continue
        st, ae = det.scoring().branches(batch.inputs)
        found["student-teacher"].append(st.amax((1, 2)))
        found["autoencoder"].append(ae.amax((1, 2)))
        found["combined"].append((0.5 * st + 0.5 * ae).amax((1, 2)))
        labels += [label_of[p] for p in batch.paths]
    y = np.array(labels)
    return {k: image_metrics(y, torch.cat(v).double().numpy())["image_auroc"] for k, v in found.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxies", nargs="+", default=list(PROXIES), choices=list(PROXIES))
    ap.add_argument("--detectors", nargs="+", default=list(DETECTORS),
                    help=f"of {', '.join(DETECTORS)}; NAME@BACKBONE runs it on another backbone")
    ap.add_argument("--time-budget", type=float, default=60.0, help="EfficientAD's training budget, seconds")
    ap.add_argument("--input-norms", nargs="+", default=["own"], choices=[*INPUT_NORMS, "auto"],
                    help="run each detector with each input normalisation (auto: chosen on its own validation)")
    ap.add_argument("--tune", action="store_true", help="also run each detector with its settings tuned (--tune)")
    args = ap.parse_args()
    for spec in args.detectors:
        if spec.split("@")[0] not in DETECTORS:
            ap.error(f"unknown detector {spec!r}: choose from {', '.join(DETECTORS)} "
                     "(NAME@BACKBONE for another backbone)")
    totals: dict[str, dict[str, float]] = {}
    kinds: dict[tuple[str, str], dict[str, float]] = {}
    branches: dict[str, dict[str, float]] = {}
    sizes: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="normalcy-proxies-") as tmp:
        for name in args.proxies:
            build, sizing = PROXIES[name]
            ds = load_dataset(build(Path(tmp) / name))
            size = sizing(ds.train)
            ex = FeatureExtractor(image_size=size)
            sizes[name] = "x".join(str(v) for v in ex.size)
            n_bad = sum(s.label for s in ds.test)
            print(f"{name}: {len(ds.train)} train, {len(ds.test) - n_bad} normal + {n_bad} anomalous test, "
                  f"input {sizes[name]}", flush=True)
            runs = [(d, n, False) for d in args.detectors for n in args.input_norms]
            runs += [(d, "own", True) for d in args.detectors] if args.tune else []
            for spec, norm, tune in runs:
                det_name, _, backbone = spec.partition("@")
                kw = {"time_budget": args.time_budget} if det_name == "efficientad" else {}
                norms = INPUT_NORMS if norm == "auto" else (norm,)
                # Without @BACKBONE: the detector's own default backbone (auto: each candidate's), as in eval.
                base = ex.with_backbone(backbone or default_backbone(det_name))
                metrics, det, result = run_eval(ds, det_name, base if norm == "auto" else base.with_input_norm(norm),
                                                progress=False, detector_kwargs=kw, latency_images=0,
                                                own_backbones=not backbone, input_norms=norms,
                                                tune=TUNABLE if tune else ())
                if tune:
                    spec = f"{spec}/tune"
                elif len(args.input_norms) > 1 or args.tune:
                    spec = f"{spec}/{norm}"
                totals.setdefault(name, {})[spec] = metrics["image_auroc"]
                chose = getattr(det, "choice", None) or {}
                shown = metrics["detector"] + (f" on {backbone}" if backbone else "") + \
                    (f", input norm {det.extractor.input_norm}" if len(args.input_norms) > 1 else "") + \
                    (f", tuned {chose['tuned']}" if chose.get("tuned") else "") + \
                    (f" (validation {', '.join(f'{k} {v:.3f}' for k, v in chose['validation_auroc'].items())})"
                     if chose else "")
                if name.endswith("-logical"):
                    for kind, v in kind_aurocs(ds, result.paths, result.scores).items():
                        kinds.setdefault((name, kind), {})[spec] = v
                    if det_name == "efficientad":
                        branches[name] = efficientad_branches(det, ds)
                print(f"  {shown}: image AUROC {metrics['image_auroc']:.3f} (fit {metrics['fit_seconds']:.0f} s)",
                      flush=True)
    cols = list(next(iter(totals.values()))) if totals else []
    print("\n| proxy | input | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for name, row in totals.items():
        print(f"| {name} | {sizes[name]} | " + " | ".join(f"{row[c]:.3f}" for c in cols) + " |")
    if kinds:
        print("\n| proxy | anomaly kind | " + " | ".join(cols) + " |")
        print("|---|---|" + "---|" * len(cols))
        for (name, kind), row in kinds.items():
            print(f"| {name} | {kind} | " + " | ".join(f"{row[c]:.3f}" for c in cols) + " |")
    if branches:
        print("\n| proxy | EfficientAD student-teacher map | autoencoder map | combined |")
        print("|---|---|---|---|")
        for name, row in branches.items():
            print(f"| {name} | {row['student-teacher']:.3f} | {row['autoencoder']:.3f} | {row['combined']:.3f} |")


if __name__ == "__main__":
    main()
