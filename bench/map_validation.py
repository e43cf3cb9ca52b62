"""Which patch model gives the best maps, judged on normal training images only (issue 26)?

    python bench/map_validation.py [../shared/data/magnetic_tile] [--kinds perlin,crack,brightness] [--seed 0]

bench/map_models.py compares patch models on the test masks: it says what maps could reach, and may not choose.
This script ranks the same models without any test image, so that a default can be chosen on it: 20 % of
train/good (at most 100 images) is held out; the models learn from the rest; each held-out image is scored as it
is and once with a synthetic defect whose mask is known (the kinds take turns: DRAEM's Perlin-noise textures,
thin cracks, soft brightness changes; normalcy.images.synthetic), all at 256 x 256. Printed: pixel AUROC and
AUPRO@30 % over the held-out pairs, and per kind. The models (see bench/map_models.py):

- ``shared gaussian + cells``: the default gaussian's maps, drawn by the detector itself;
- ``diagonal gaussians K + cells``, ``local gaussians K + cells``: the patch term replaced by K clusters'
  Gaussians, the default's cell term kept (``--with-cells`` of bench/map_models.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import faiss
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from map_models import diagonal_gaussians, features, local_gaussians, pixel_cells  # noqa: E402  (bench scripts import by name)

from normalcy.detectors.gaussian import GaussianAD  # noqa: E402
from normalcy.errors import InputError  # noqa: E402
from normalcy.images.features import FeatureExtractor, upsample_map  # noqa: E402
from normalcy.evaluation.validation import synthetic_split  # noqa: E402
from normalcy.images.io import load_dataset  # noqa: E402
from normalcy.numerics.stats import distance  # noqa: E402

SIDE = 256


def held_out_pairs(paths: list[Path], folder: Path, kinds: list[str], seed: int
                   ) -> tuple[list[Path], list[Path], list[np.ndarray], list[str]]:
    """(fit paths, held-out files: normal then defective, their masks, each file's kind), from the validation
    split ``--detector auto`` and ``--tune`` use (normalcy.evaluation.validation.synthetic_split)."""
    defect_masks: list[np.ndarray] = []
    split = synthetic_split(paths, folder, seed=seed, size=SIDE, kinds=kinds, masks=defect_masks)
    normal = [np.zeros((SIDE, SIDE), bool)] * len(split.normal)
    kind_of = ["normal"] * len(split.normal) + [kinds[k % len(kinds)] for k in range(len(split.defective))]
    return split.fit, split.normal + split.defective, normal + defect_masks, kind_of


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared/data/magnetic_tile"))
    ap.add_argument("--kinds", default="perlin,crack,brightness", help="synthetic defect kinds, in turn")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    faiss.omp_set_num_threads(2)
    ds = load_dataset(args.dataset)
    kinds = args.kinds.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        fit, files, masks, kind_of = held_out_pairs(list(ds.train), Path(tmp), kinds, args.seed)
        ex = FeatureExtractor()
        det = GaussianAD(ex).fit(fit, progress=False)
        own = det.score(files, progress=False).maps
        grids = np.stack(own.grids)
        train, _, _ = features(ex, fit)
        test, _, _ = features(ex, files)
    n, h, w, d = test.shape
    train, queries = np.ascontiguousarray(train.reshape(-1, d)), np.ascontiguousarray(test.reshape(-1, d))
    mean, prec = det.patch_mean_.astype(np.float32), det.patch_precision_.astype(np.float32)
    cells = grids - ((distance(queries, mean, prec) - det.map_scale_[0]) / det.map_scale_[1]).reshape(n, h, w)
    rng = np.random.default_rng(0)
    sample = train[rng.choice(len(train), min(len(train), 200_000), replace=False)]
    kind_of = np.array(kind_of)
    present = [k for k in kinds if (kind_of == k).any()]
    print(f"{ds.name}: {len(fit)} images fitted on, {int((kind_of == 'normal').sum())} held out (each also with a "
          f"synthetic defect: {', '.join(present)}), {d} features a patch, {h}x{w} patches\n")
    print("| patch model | pixel AUROC | AUPRO@30% | " + " | ".join(f"AUPRO {k}" for k in present) + " |")
    print("|---|---|---|" + "---|" * len(present))

    def row(name: str, g: np.ndarray) -> None:
        maps = [upsample_map(x, (SIDE, SIDE)) for x in g]
        print(f"| {name} | {pixel_cells(masks, maps, kind_of, present, 'normal')} |", flush=True)

    row("shared gaussian + cells (the default)", grids)
    for name, make in (("diagonal gaussians 256", lambda: diagonal_gaussians(sample, 256)),
                       ("diagonal gaussians 1024", lambda: diagonal_gaussians(sample, 1024)),
                       ("local gaussians 256", lambda: local_gaussians(sample, 256)),
                       ("local gaussians 256, nearest centre only", lambda: local_gaussians(sample, 256, 1))):
        fn = make()
        ref = fn(sample[:50_000])
        z = (fn(queries).reshape(n, h, w) - ref.mean()) / ref.std()
        row(f"{name} + cells", z + cells)


if __name__ == "__main__":
    try:
        main()
    except InputError as e:  # a data set not found or not readable: one line, as the CLI says it
        raise SystemExit(f"error: {e}") from None
