"""Which patch model gives maps that show the defect? The default gaussian's against the alternatives (issue 26).

    python bench/map_models.py [../shared/data/magnetic_tile] [--backbone efficientnet_lite0] [--quick]
                               [--patch-levels s8,s16,s32] [--with-cells [--with-shared]]

Every variant scores the same patch features (the default extractor: stride-8 and stride-16 levels, 3x3
aggregation, 224 x 224) of the data set's train/good and test images, and each patch's score becomes a map
exactly as a run draws it (``upsample_map``: sigma 0.5 patches, bilinear to the image). Printed: pixel AUROC,
AUPRO@30 % over the whole test set and per defect folder, and the milliseconds per image the patch model
itself takes on top of the backbone (2 threads; features and the map drawing excluded).

The variants:

- ``shared gaussian``: the default gaussian's maps until 5 December 2026, one Gaussian for every patch
  (Mahalanobis distance);
- ``shared gaussian + cells``: the default gaussian's maps since then, the patch distance plus its
  position-aware cell's distance, each in units of its spread on normal images, drawn by the detector's own
  run (``GaussianAD.score``; its ms per image is not the patch model's alone, so not shown);
- ``local gaussians K``: k-means into K clusters of 200,000 sampled training patches, one Ledoit-Wolf Gaussian
  per cluster; a patch's score is the smallest negative log-likelihood (squared Mahalanobis distance plus log
  determinant and log prior) among its 4 nearest cluster centres' Gaussians (``nearest centre only``: the
  nearest centre's Gaussian alone, a quarter of the work);
- ``diagonal gaussians K``: the same with diagonal covariances (variances shrunk towards 5 % of the pooled
  variance), every cluster scored (two matrix products, the cheapest to run or export);
- ``nearest of N random patches``: PatchCore's score (distance to the nearest normal patch, exact) with a random
  bank of N training patches;
- ``nearest of all patches``: every training patch in a faiss IVF index (cells, nprobe): PatchCore's map with
  nothing dropped.

``--with-cells``: each variant also with the default gaussian's cell term added (its map less its patch term),
the variant's score first put in units of its spread on 50,000 of the sampled training patches, as the default
puts its own patch term. ``--with-shared`` (with ``--with-cells``): also the variant beside the shared Gaussian's
patch term, both in their units, plus the cells (three terms: does a finer model add to the default's or only
replace it?).

This reads the test masks: it is a study of what maps could reach on the development set, not a way to choose
a setting (no default is taken from it).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import faiss
import numpy as np
import torch
from sklearn.covariance import ledoit_wolf

from normalcy.errors import InputError
from normalcy.evaluation.evaluate import maps_at, masks_for, metric_size
from normalcy.evaluation.metrics import pixel_metrics
from normalcy.images.backbones import INPUT_NORMS
from normalcy.images.features import FeatureExtractor, upsample_map
from normalcy.images.io import load_dataset
from normalcy.numerics.stats import distance, inverse
from normalcy.detectors.base import Maps, Result
from normalcy.detectors.gaussian import GaussianAD


def features(ex: FeatureExtractor, paths: list[Path]) -> tuple[np.ndarray, list[Path], list[tuple[int, int]]]:
    """N x h x w x D patch features (float32), the paths read, their (H, W)."""
    out, got, sizes = [], [], []
    for b in ex.iter_batches(paths, 16, keep_images=True, pooled=False):
        out.append(b.features.patches.permute(0, 2, 3, 1).numpy())
        got += b.paths
        sizes += [im.shape[:2] for im in b.images]
    return np.concatenate(out), got, sizes


def timed(fn, queries: np.ndarray, n_images: int) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    out = fn(queries)
    return out, (time.perf_counter() - t) / n_images * 1000


def default_maps(ex: FeatureExtractor, paths: list[Path]):
    """The default detector's own patch Gaussian, fitted by GaussianAD itself (one shared Gaussian)."""
    det = GaussianAD(ex).fit(paths, progress=False)
    mean, prec = det.patch_mean_.astype(np.float32), det.patch_precision_.astype(np.float32)
    return lambda q: distance(q, mean, prec)


def _clusters(sample: np.ndarray, k: int) -> tuple[faiss.Kmeans, np.ndarray]:
    km = faiss.Kmeans(sample.shape[1], k, niter=20, seed=0, max_points_per_centroid=512)
    km.train(sample)
    return km, km.index.search(sample, 1)[1][:, 0]


def local_gaussians(sample: np.ndarray, k: int, candidates: int = 4):
    km, assign = _clusters(sample, k)
    means, chol, const = [], [], []
    for c in range(k):
        x = sample[assign == c].astype(np.float64)
        cov, _ = ledoit_wolf(x)
        means.append(x.mean(0))
        chol.append(np.linalg.cholesky(inverse(cov)))
        const.append(np.linalg.slogdet(cov)[1] - 2 * np.log(len(x) / len(sample)))
    means, chol, const = np.float32(means), np.float32(chol), np.float32(const)

    def score(q: np.ndarray) -> np.ndarray:
        near = km.index.search(q, candidates)[1]
        out = np.full(len(q), np.inf, np.float32)
        for slot in range(candidates):
            for c in np.unique(near[:, slot]):
                rows = np.flatnonzero(near[:, slot] == c)
                nll = (((q[rows] - means[c]) @ chol[c]) ** 2).sum(1) + const[c]
                out[rows] = np.minimum(out[rows], nll)
        return out
    return score


def diagonal_gaussians(sample: np.ndarray, k: int):
    _, assign = _clusters(sample, k)
    pooled = sample.var(0)
    means = np.stack([sample[assign == c].mean(0) for c in range(k)])
    count = np.bincount(assign, minlength=k)[:, None]
    var = (count * np.stack([sample[assign == c].var(0) for c in range(k)]) + 10 * 0.05 * pooled) / (count + 10)
    prior = count[:, 0] / len(sample)
    w = torch.from_numpy(1 / var).float()
    mw = torch.from_numpy(means).float() * w
    const = ((torch.from_numpy(means).float() ** 2 * w).sum(1)
             + torch.from_numpy(np.log(var).sum(1) - 2 * np.log(prior)).float())
    return lambda q: torch.cat([(x.pow(2) @ w.T - 2 * x @ mw.T + const).min(1).values
                                for x in torch.from_numpy(q).split(8 * 784)]).numpy()


def nearest(bank: np.ndarray, cells: int = 0, nprobe: int = 1, seed: int = 0):
    d = bank.shape[1]
    if cells:
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, cells)
        rng = np.random.default_rng(seed)
        index.train(bank[rng.choice(len(bank), min(len(bank), 100_000), replace=False)])
        index.nprobe = nprobe
    else:
        index = faiss.IndexFlatL2(d)
    index.add(bank)
    return lambda q: np.sqrt(np.maximum(np.concatenate([index.search(q[i:i + 8 * 784], 1)[0][:, 0]
                                                        for i in range(0, len(q), 8 * 784)]), 0))


def pixel_cells(masks: list, maps: list[np.ndarray], kind: np.ndarray, kinds: list[str], normal: str) -> str:
    """Table cells: pixel AUROC and AUPRO over all images, then AUPRO of each kind's images with the normal ones."""
    total = pixel_metrics(masks, maps)
    per = []
    for k in kinds:
        sel = np.flatnonzero((kind == k) | (kind == normal))
        per.append(pixel_metrics([masks[i] for i in sel], [maps[i] for i in sel])["aupro"])
    return f"{total['pixel_auroc']:.3f} | {total['aupro']:.3f} | " + " | ".join(f"{v:.3f}" for v in per)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared/data/magnetic_tile"))
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--patch-levels", default=None, help="the backbone levels in the patch features, e.g. s8,s16,s32 "
                    "(default: the backbone's own, s8,s16)")
    ap.add_argument("--quick", action="store_true", help="the cheap variants only (no 48,000 exact, no all patches)")
    ap.add_argument("--with-cells", action="store_true", help="each variant also plus the default's cell term")
    ap.add_argument("--with-shared", action="store_true", help="with --with-cells: each variant also beside the "
                    "shared gaussian's patch term, plus the cells")
    ap.add_argument("--input-norm", default="own", choices=INPUT_NORMS, help="how pixels enter the backbone")
    args = ap.parse_args()
    torch.set_num_threads(2)
    faiss.omp_set_num_threads(2)
    ds = load_dataset(args.dataset)
    ex = FeatureExtractor(backbone=args.backbone, input_norm=args.input_norm,
                          patch_levels=args.patch_levels.split(",") if args.patch_levels else None)
    train, _, _ = features(ex, list(ds.train))
    test, paths, sizes = features(ex, [s.path for s in ds.test])
    n, h, w, d = test.shape
    train, queries = np.ascontiguousarray(train.reshape(-1, d)), np.ascontiguousarray(test.reshape(-1, d))
    msizes = [metric_size(s) for s in sizes]
    stub = Result(paths=paths, scores=np.zeros(n), maps=Maps([np.zeros((1, 1))] * n, sizes),
                  decisions=np.zeros(n, bool), threshold=0.0)
    masks = masks_for(ds.test, stub, msizes)
    kind = np.array([p.parent.name for p in paths])
    defects = sorted(set(kind) - {"good"})
    rng = np.random.default_rng(0)
    sample = train[rng.choice(len(train), min(len(train), 200_000), replace=False)]
    variants = {
        "shared gaussian (the default until 5 December)": lambda: default_maps(ex, list(ds.train)),
        "local gaussians 64": lambda: local_gaussians(sample, 64),
        "local gaussians 256": lambda: local_gaussians(sample, 256),
        "local gaussians 256, nearest centre only": lambda: local_gaussians(sample, 256, 1),
        "diagonal gaussians 256": lambda: diagonal_gaussians(sample, 256),
        "diagonal gaussians 1024": lambda: diagonal_gaussians(sample, 1024),
        "nearest of 4,096 random patches": lambda: nearest(train[rng.choice(len(train), 4096, replace=False)]),
        "nearest of 16,384 random patches": lambda: nearest(train[rng.choice(len(train), 16384, replace=False)]),
    }
    if not args.quick:
        variants |= {
            "nearest of 48,000 random patches": lambda: nearest(train[rng.choice(len(train), 48000, replace=False)]),
            f"nearest of all {len(train):,} patches (IVF 1024, nprobe 1)": lambda: nearest(train, 1024, 1),
            f"nearest of all {len(train):,} patches (IVF 2048, nprobe 4)": lambda: nearest(train, 2048, 4),
        }
    print(f"{ds.name}: {len(ds.train)} train, {n} test images, {d} features a patch, {h}x{w} patches, backbone "
          f"{args.backbone}, patch levels {','.join(ex.patch_levels)}, input norm {args.input_norm}\n")
    print("| patch model | pixel AUROC | AUPRO@30% | " + " | ".join(f"AUPRO {k}" for k in defects)
          + " | fit s | ms per image |")
    print("|---|---|---|" + "---|" * len(defects) + "---|---|")
    def row(name: str, maps: list[np.ndarray], fit_s: float, ms: str) -> None:
        print(f"| {name} | {pixel_cells(masks, maps, kind, defects, 'good')} | {fit_s:.1f} | {ms} |", flush=True)

    t = time.perf_counter()
    det = GaussianAD(ex).fit(list(ds.train), progress=False)
    fit_s = time.perf_counter() - t
    own = det.score(paths, progress=False).maps
    row("shared gaussian + cells (default since 5 December)", list(maps_at(own, msizes)), fit_s, "-")
    if args.with_cells:  # the default's cell term: its map less its patch term (in the same units)
        mean, prec = det.patch_mean_.astype(np.float32), det.patch_precision_.astype(np.float32)
        patch = (distance(queries, mean, prec) - det.map_scale_[0]) / det.map_scale_[1]
        cells = np.stack(own.grids) - patch.reshape(n, h, w)
    for name, make in variants.items():
        t = time.perf_counter()
        fn = make()
        fit_s = time.perf_counter() - t
        scores, ms = timed(fn, queries, n)
        grids = scores.reshape(n, h, w)
        row(name, [upsample_map(g, s, 0.5 * h / 28) for g, s in zip(grids, msizes)],  # the same blur in pixels
            fit_s, f"{ms:.2f}")
        if args.with_cells:
            ref = fn(sample[:50_000])
            z = (grids - ref.mean()) / ref.std() + cells
            row(f"{name} + cells", [upsample_map(g, s, 0.5 * h / 28) for g, s in zip(z, msizes)], fit_s, "-")
            if args.with_shared:
                z = z + patch.reshape(n, h, w)
                row(f"{name} + shared + cells", [upsample_map(g, s, 0.5 * h / 28) for g, s in zip(z, msizes)],
                    fit_s, "-")


if __name__ == "__main__":
    try:
        main()
    except InputError as e:  # a data set not found or not readable: one line, as the CLI says it
        raise SystemExit(f"error: {e}") from None
