"""Gaussian AD (Rippel, Mertens, Merhof 2020): a multivariate Gaussian per feature level.

Each level's features, averaged over the image (or over a coarse grid, see
features.py), are modelled by one Gaussian with Ledoit-Wolf shrinkage
covariance (few normal images, many dimensions). The image score is the sum
over levels of the Mahalanobis distance.

Position-aware cells (ours, for logical anomalies: a part missing, extra, moved):
the patch features are also averaged over a finer grid, ``cells`` cells along the
shorter side (8x8 for a square image, 8x16 for a 1:2 one, at most 8x32: ``MAX_CELL_RATIO``), and each cell gets its
own Gaussian, as PaDiM (Defard et al. 2021) does per patch but on coarser cells so
that a few dozen images suffice. The cell term is the largest cell distance: one
part out of place moves one cell, which an average over many would dilute. The
image score is the sum of the two terms, each standardised by the mean and std of
its cross-validated scores on the training images. On the dev proxies
(bench/dev_proxies.py, built from normal training images only) this raised the
mean image AUROC of four proxies from 0.942 to 0.962; see docs/benchmarks.md.

For maps, all patch features of the normal images share one Gaussian (position
independent, so images need not be aligned): a patch's Mahalanobis distance to it.
With cells, each cell's own distance (its position-aware Gaussian) is added, spread
over the cell's patches: both in units of their spread on normal images (``map_scale_``:
mean and std of the training patches' distances and of the cross-validated cell
distances), summed as the image score's terms are. The shared Gaussian alone is blind
to a defect made of normal texture in the wrong place, a brightness change over a
region (magnetic_tile's "uneven": AUPRO 0.40) or a crack whose patches look like
normal edges (0.63); the cells see more of them (0.64 and 0.72), at no extra cost, since
the image score computes them already. magnetic_tile, pixel AUROC / AUPRO: 0.763 / 0.731
before, 0.836 / 0.762 with the cells (docs/benchmarks.md, "Maps").
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from sklearn.covariance import ledoit_wolf_shrinkage
from torch import nn

from normalcy.detectors.base import Calibration, Detector, HyperParams
from normalcy.images.features import Batch, Features
from normalcy.numerics.stats import distance_to, gaussian, gaussians, inverse, mahalanobis, shrunk


MAX_CELL_RATIO = 4
"""Cells along the longer side at most this many times ``cells``: a 4000x200 image (input 64x992) had 8 x 124 cells,
each with its own Gaussian (a 217 MB model, minutes to fit 8 images); past 1:4 the cells grow longer instead."""


class GaussianAD(Detector):
    """Rippel et al.'s Gaussian AD, plus a patch-level Gaussian for localization."""

    name = "gaussian"
    min_images = 5  # 5-fold cross-validation needs a few images per fold to estimate a covariance

    class Params(HyperParams):
        patch_samples: int = Field(200_000, ge=1000, le=10_000_000, description="patches kept to estimate the shrinkage")
        folds: int = Field(5, ge=2, le=50, description="cross-validation folds for the threshold")
        cells: int = Field(8, ge=0, le=32, description="position-aware Gaussians on a grid of this many cells "
                                                       "along the shorter side, at most 4 times as many along "
                                                       "the longer (0: none)")

    level_mean_: dict[str, np.ndarray]
    level_precision_: dict[str, np.ndarray]
    cell_mean_: np.ndarray  # G x D, one row per cell (row-major over the grid)
    cell_precision_: np.ndarray  # G x D x D
    scale_: np.ndarray  # mean and std of the cross-validated pooled and cell scores: the image score's units
    patch_mean_: np.ndarray
    patch_precision_: np.ndarray
    map_scale_: np.ndarray  # mean and std of normal patch distances, then of cross-validated cell distances
    cell_ratio: int | None = MAX_CELL_RATIO  # None: a model saved before the bound, whose cells are not bounded

    def _fit(self, batches: Iterator[Batch], held: Sequence[Batch], progress: bool) -> Calibration:
        self.cell_ratio = MAX_CELL_RATIO  # a model loaded from before the bound, fitted again, is bounded
        rng = np.random.default_rng(self.seed)
        pooled: dict[str, list[np.ndarray]] = {lv: [] for lv in self.extractor.pooled_levels}
        cells: list[np.ndarray] = []
        n = 0
        total = None
        outer = None
        sample: list[np.ndarray] = []
        where: list[np.ndarray] = []  # (image, patch index on the grid) of each sampled patch
        for batch in batches:
            f = batch.features
            pooled_b, cells_b = self._arrays(f)
            for lv, v in pooled_b.items():
                pooled[lv].append(v)
            cells.append(cells_b)
            p = f.patches.permute(0, 2, 3, 1).reshape(-1, f.patches.shape[1]).double()
            total = p.sum(0) if total is None else total + p.sum(0)
            outer = p.T @ p if outer is None else outer + p.T @ p
            n += p.shape[0]
            per_image = max(1, self.patch_samples // 1000)
            grid = f.patches.shape[2] * f.patches.shape[3]
            for i in range(f.patches.shape[0]):
                idx = rng.choice(grid, size=min(per_image, grid), replace=False)
                sample.append(p[idx + i * grid].float().numpy())
                where.append(np.stack([np.full(len(idx), len(where)), idx], axis=1))
            patch_grid = f.patches.shape[2:]
        pooled_x = {lv: np.concatenate(v) for lv, v in pooled.items()}
        self.level_mean_, self.level_precision_ = {}, {}
        for lv, x in pooled_x.items():
            self.level_mean_[lv], self.level_precision_[lv] = gaussian(x)
        cells_x = np.concatenate(cells)
        self.cell_mean_, self.cell_precision_ = gaussians(cells_x)
        # Patch Gaussian from exact sums; shrinkage estimated on a random sample of patches.
        mean = (total / n).numpy()
        cov = (outer / n).numpy() - np.outer(mean, mean)
        patch_sample = np.concatenate(sample)
        shrink = ledoit_wolf_shrinkage(patch_sample - mean, assume_centered=True)
        self.patch_mean_ = mean
        self.patch_precision_ = inverse(shrunk(cov, shrink))
        patch = mahalanobis(torch.from_numpy(patch_sample).double(), torch.from_numpy(self.patch_mean_),
                            torch.from_numpy(self.patch_precision_)).numpy()
        n_img = len(cells_x)
        order = np.random.default_rng(self.seed).permutation(n_img)
        folds = max(2, min(self.folds, n_img))
        pooled_cv, cell_cv = self._cross_validated(pooled_x, cells_x, [order[k::folds] for k in range(folds)])
        cells_cv = self._cell_term(cell_cv)
        self.scale_ = np.array([pooled_cv.mean(), pooled_cv.std() + 1e-12,
                                cells_cv.mean() if self.cells else 0.0, cells_cv.std() + 1e-12 if self.cells else 1.0])
        self.map_scale_ = np.array([patch.mean(), patch.std() + 1e-12, cell_cv.mean() if self.cells else 0.0,
                                    cell_cv.std() + 1e-12 if self.cells else 1.0])
        # the colour range from the maps of normal images: each sampled patch's value, its cell's held-out distance
        # included (the patch term is in-sample, as before)
        at = np.concatenate(where)
        values = (patch - self.map_scale_[0]) / self.map_scale_[1]
        if self.cells:
            spread = spread_cells(torch.from_numpy((cell_cv - self.map_scale_[2]) / self.map_scale_[3]),
                                  self._grid(*patch_grid), patch_grid).reshape(len(cell_cv), -1).numpy()
            values = values + spread[at[:, 0], at[:, 1]]

        def held_out(batch: Batch, positions: np.ndarray) -> np.ndarray:
            # the images left out in as few parts as a fold's share allows: one fit, not five, for 16 of hundreds
            images = np.unique(positions)
            parts = np.array_split(images, -(-len(images) * folds // n_img))
            pooled_q, cell_q = self._cross_validated(pooled_x, cells_x, parts,
                                                     (positions, *self._arrays(batch.features)))
            return self._combined(pooled_q, self._cell_term(cell_q))

        return Calibration(self._combined(pooled_cv, cells_cv), values, held_out)

    def _build(self) -> None:
        """After loading: one Gaussian per pooled level, each precision square and as wide as its mean."""
        levels = set(self.extractor.pooled_levels)
        for what, d in (("level_mean", self.level_mean_), ("level_precision", self.level_precision_)):
            if set(d) != levels:
                raise ValueError(f"tensors '{what}.*' are for levels {sorted(d)}, the extractor pools {sorted(levels)}")
        pairs = [(f"level_precision.{lv}", self.level_mean_[lv], self.level_precision_[lv]) for lv in sorted(levels)]
        for name, mean, prec in [*pairs, ("patch_precision", self.patch_mean_, self.patch_precision_)]:
            if mean.ndim != 1 or prec.shape != (len(mean), len(mean)):
                raise ValueError(f"tensor '{name}' has shape {tuple(prec.shape)}, expected "
                                 f"({len(mean)}, {len(mean)}) to match its mean")
        g, d = self.cell_mean_.shape if self.cell_mean_.ndim == 2 else (-1, -1)
        self.cell_ratio = MAX_CELL_RATIO
        if self.cells and g != np.prod(self._grid(*self._patch_grid())):
            self.cell_ratio = None  # saved before cells were bounded (a very wide input): read as it was fitted
            if g != np.prod(self._grid(*self._patch_grid())):
                self.cell_ratio = MAX_CELL_RATIO  # neither way: the error below names the shapes
        if g != (self.cells and int(np.prod(self._grid(*self._patch_grid())))) or d not in (0, len(self.patch_mean_)) \
                or self.cell_precision_.shape != (g, d, d):
            raise ValueError(f"tensors 'cell_mean', 'cell_precision' have shapes {tuple(self.cell_mean_.shape)}, "
                             f"{tuple(self.cell_precision_.shape)}: they do not fit {self.cells} cells of "
                             f"{len(self.patch_mean_)} features")
        for name, v in (("scale", self.scale_), ("map_scale", self.map_scale_)):
            if v.shape != (4,) or not (v[[1, 3]] > 0).all():
                raise ValueError(f"tensor '{name}' has shape {tuple(v.shape)} or a spread <= 0, expected 4 numbers")

    def _patch_grid(self) -> tuple[int, int]:
        """The patch grid of this extractor's input size (the stride rounds up, as convolutions do)."""
        h, w = self.extractor.size
        s = self.extractor.patch_stride
        return -(-h // s), -(-w // s)

    def _grid(self, h: int, w: int) -> tuple[int, int]:
        """Cells along each side for an h x w patch grid: ``cells`` along the shorter, in proportion along the
        longer (square cells) up to ``MAX_CELL_RATIO`` times ``cells`` (longer cells past 1:4), never more than
        there are patches."""
        short = min(h, w)
        cap = self.cells * self.cell_ratio if self.cell_ratio else max(h, w)
        return (max(1, min(h, cap, round(self.cells * h / short))), max(1, min(w, cap, round(self.cells * w / short))))

    def _arrays(self, f: Features) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """A batch's pooled features (level -> B x C) and cell features (B x G x D), in float64: what is fitted."""
        return ({lv: v.numpy().astype(np.float64) for lv, v in f.pooled.items()},
                self._cells(f.patches).numpy().astype(np.float64))

    def _cells(self, patches: torch.Tensor) -> torch.Tensor:
        """B x D x h x w patch features -> B x G x D, averaged over each cell."""
        b, d, h, w = patches.shape
        if not self.cells:
            return patches.new_zeros(b, 0, d)
        return F.adaptive_avg_pool2d(patches.float(), self._grid(h, w)).flatten(2).transpose(1, 2)

    def _cell_term(self, cell_distances: np.ndarray) -> np.ndarray:
        """N x G cell distances -> the image score's cell term: the largest (zeros without cells)."""
        return cell_distances.max(axis=1) if self.cells else np.zeros(len(cell_distances))

    def _combined(self, pooled: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """The image score of cross-validated pooled and cell scores (``combined``)."""
        return combined(pooled, cells, tuple(float(v) for v in self.scale_), bool(self.cells))

    def scoring(self, exported: bool = False) -> "GaussianScoring":
        """The scoring as a torch module: ``_score`` runs it, ONNX export traces it. Exported, every distance is
        float32 (the detector computes the image terms in float64): onnxruntime's float64 MatMul reads the
        precision matrices at a fraction of MLAS's float32 speed (7.6 of 11.4 ms a batch-1 call at 160 px);
        scores stay within the parity bar (tests/test_export.py)."""
        scoring = GaussianScoring(self)
        return scoring.float() if exported else scoring


    def _cross_validated(self, pooled: dict[str, np.ndarray], cells: np.ndarray, parts: Sequence[np.ndarray],
                         queries: tuple[np.ndarray, dict[str, np.ndarray], np.ndarray] | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
        """Cross-validated pooled scores (N) and cell distances (N x G) of the training images (rows of ``pooled``
        and ``cells``): each part of them left out in turn, and its images scored by Gaussians fitted on the
        others. ``queries``: (positions, pooled, cells) of other features of some of the images (fp32 ones, for a
        bf16 model's fp32 threshold), scored instead, each by the Gaussians fitted without its image."""
        n = len(cells)
        positions, pooled_q, cells_q = queries or (np.arange(n), pooled, cells)
        scores, cell_scores = np.zeros(len(positions)), np.zeros((len(positions), cells.shape[1]))
        for part in parts:
            keep = np.setdiff1d(np.arange(n), part)
            rows = part if queries is None else np.flatnonzero(np.isin(positions, part))
            # level_distances' sum
            scores[rows] = sum(distance_to(pooled[lv][keep], pooled_q[lv][rows]) for lv in pooled)
            if cells.shape[1]:
                means, precisions = gaussians(cells[keep])
                cell_scores[rows] = cell_distances(torch.from_numpy(cells_q[rows]), torch.from_numpy(means),
                                                   torch.from_numpy(precisions)).numpy()
        return scores, cell_scores


def cell_distances(x: torch.Tensor, means: torch.Tensor, precisions: torch.Tensor) -> torch.Tensor:
    """N x G: each cell's Mahalanobis distance to its own Gaussian (x: N x G x D). The image's cell term is
    the largest."""
    return mahalanobis(x.transpose(0, 1), means[:, None], precisions).transpose(0, 1)


def spread_cells(cells: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """N x h x w: N x G cell values (row-major over ``grid``) spread bilinearly over an h x w patch grid."""
    return F.interpolate(cells.reshape(-1, 1, *grid).float(), size=tuple(int(v) for v in size), mode="bilinear",
                         align_corners=False)[:, 0]


def level_distances(pooled: Sequence[torch.Tensor], means: Sequence[torch.Tensor],
                    precisions: Sequence[torch.Tensor]) -> torch.Tensor:
    """The pooled term: the sum over levels of each level's Mahalanobis distance."""
    return sum((mahalanobis(x, m, p) for x, m, p in zip(pooled, means, precisions)), torch.zeros(()))


def combined(pooled: torch.Tensor | np.ndarray, cells: torch.Tensor | np.ndarray, scale: tuple[float, ...],
             with_cells: bool) -> torch.Tensor | np.ndarray:
    """The image score: each term in units of its cross-validated spread on normal images (``scale``: mean and
    std of the pooled, then of the cell scores), summed."""
    m_p, s_p, m_c, s_c = scale
    return (pooled - m_p) / s_p + ((cells - m_c) / s_c if with_cells else 0.0)


class GaussianScoring(nn.Module):
    """GaussianAD's scoring, features -> (image scores [N], patch maps [N, h, w]). The image terms run in their
    buffers' dtype (float64; float32 once ``.float()``), the maps in float32."""

    def __init__(self, det: GaussianAD) -> None:
        super().__init__()
        self.levels = list(det.extractor.pooled_levels)
        self.cells: Callable[[torch.Tensor], torch.Tensor] | None = det._cells if det.cells else None
        self.scale = tuple(float(v) for v in det.scale_)  # plain floats: constants in a traced graph
        for i, lv in enumerate(self.levels):
            self.register_buffer(f"mean{i}", torch.from_numpy(det.level_mean_[lv]).double())
            self.register_buffer(f"prec{i}", torch.from_numpy(det.level_precision_[lv]).double())
        self.register_buffer("cell_mean", torch.from_numpy(det.cell_mean_).double())
        self.register_buffer("cell_prec", torch.from_numpy(det.cell_precision_).double())
        self.register_buffer("patch_mean", torch.from_numpy(det.patch_mean_).float())
        self.register_buffer("patch_prec", torch.from_numpy(det.patch_precision_).float())
        self.map_scale = tuple(float(v) for v in det.map_scale_)
        self.grid = det._grid

    def forward(self, inputs: torch.Tensor, features: Features) -> tuple[torch.Tensor, torch.Tensor]:
        means = [getattr(self, f"mean{i}") for i in range(len(self.levels))]
        pooled = level_distances([features.pooled[lv].to(m.dtype) for lv, m in zip(self.levels, means)], means,
                                 [getattr(self, f"prec{i}") for i in range(len(self.levels))])
        p = features.patches
        b, d, h, w = p.shape
        m_p, s_p, m_c, s_c = self.map_scale
        maps = (mahalanobis(p.permute(0, 2, 3, 1).reshape(-1, d).to(self.patch_mean.dtype), self.patch_mean,
                            self.patch_prec).reshape(b, h, w) - m_p) / s_p
        cells = pooled  # unused without cells
        if self.cells is not None:
            per_cell = cell_distances(self.cells(p).to(self.cell_mean.dtype), self.cell_mean, self.cell_prec)
            cells = per_cell.amax(1)
            maps = maps + spread_cells((per_cell - m_c) / s_c, self.grid(h, w), (h, w))
        return combined(pooled, cells, self.scale, self.cells is not None), maps
