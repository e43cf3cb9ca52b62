"""Gaussian AD (Rippel, Mertens, Merhof 2020): a multivariate Gaussian per feature level.

Each level's features, averaged over the image (or over a coarse grid, see
features.py), are modelled by one Gaussian with Ledoit-Wolf shrinkage
covariance (few normal images, many dimensions). The image score is the sum
over levels of the Mahalanobis distance.

For maps, all patch features of the normal images share one Gaussian (position
independent, so images need not be aligned); a patch's Mahalanobis distance to
it is its anomaly score.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from pydantic import Field
from sklearn.covariance import ledoit_wolf, ledoit_wolf_shrinkage

from ..features import Batch
from .base import Calibration, Detector, HyperParams


def _inverse(cov: np.ndarray) -> np.ndarray:
    # Shrinkage makes the covariance positive definite, so a plain inverse is safe.
    try:
        return np.linalg.inv(cov)
    except np.linalg.LinAlgError:
        return np.linalg.pinv(cov, hermitian=True)


def mahalanobis(x: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """Row-wise Mahalanobis distance of x (N x D)."""
    d = x - mean
    return ((d @ precision) * d).sum(-1).clamp_min(0).sqrt()


class GaussianAD(Detector):
    """Rippel et al.'s Gaussian AD, plus a patch-level Gaussian for localization."""

    name = "gaussian"
    min_images = 5  # 5-fold cross-validation needs a few images per fold to estimate a covariance

    class Params(HyperParams):
        patch_samples: int = Field(200_000, ge=1000, description="patches kept to estimate the shrinkage")
        folds: int = Field(5, ge=2, le=50, description="cross-validation folds for the threshold")

    patch_samples: int
    folds: int
    level_mean_: dict[str, np.ndarray]
    level_precision_: dict[str, np.ndarray]
    patch_mean_: np.ndarray
    patch_precision_: np.ndarray

    def _fit(self, batches: Iterator[Batch], held: Sequence[Batch]) -> Calibration:
        rng = np.random.default_rng(self.seed)
        pooled: dict[str, list[np.ndarray]] = {lv: [] for lv in self.extractor.pooled_levels}
        n = 0
        total = None
        outer = None
        sample: list[np.ndarray] = []
        for batch in batches:
            f = batch.features
            for lv, v in f.pooled.items():
                pooled[lv].append(v.numpy().astype(np.float64))
            p = f.patches.permute(0, 2, 3, 1).reshape(-1, f.patches.shape[1]).double()
            total = p.sum(0) if total is None else total + p.sum(0)
            outer = p.T @ p if outer is None else outer + p.T @ p
            n += p.shape[0]
            per_image = max(1, self.patch_samples // 1000)
            grid = f.patches.shape[2] * f.patches.shape[3]
            for i in range(f.patches.shape[0]):
                idx = rng.choice(grid, size=min(per_image, grid), replace=False) + i * grid
                sample.append(p[idx].float().numpy())
        pooled_x = {lv: np.concatenate(v) for lv, v in pooled.items()}
        self.level_mean_, self.level_precision_ = {}, {}
        for lv, x in pooled_x.items():
            self.level_mean_[lv], self.level_precision_[lv] = _gaussian(x)
        # Patch Gaussian from exact sums; shrinkage estimated on a random sample of patches.
        mean = (total / n).numpy()
        cov = (outer / n).numpy() - np.outer(mean, mean)
        patch_sample = np.concatenate(sample)
        shrink = ledoit_wolf_shrinkage(patch_sample - mean, assume_centered=True)
        mu = np.trace(cov) / cov.shape[0]
        cov = (1 - shrink) * cov + shrink * mu * np.eye(cov.shape[0])
        self.patch_mean_ = mean
        self.patch_precision_ = _inverse(cov)
        patch = mahalanobis(torch.from_numpy(patch_sample).double(), torch.from_numpy(self.patch_mean_),
                            torch.from_numpy(self.patch_precision_)).numpy()
        return Calibration(self._cross_validated(pooled_x), patch)

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

    def _image_scores(self, pooled: dict[str, np.ndarray | torch.Tensor],
                      means: dict[str, np.ndarray], precisions: dict[str, np.ndarray]) -> np.ndarray:
        total = 0.0
        for lv in self.extractor.pooled_levels:
            x = torch.as_tensor(pooled[lv], dtype=torch.float64)
            total = total + mahalanobis(x, torch.from_numpy(means[lv]), torch.from_numpy(precisions[lv]))
        return np.asarray(total, dtype=np.float64)

    def _score(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        features = batch.features
        scores = self._image_scores(features.pooled, self.level_mean_, self.level_precision_)
        p = features.patches
        b, d, h, w = p.shape
        flat = p.permute(0, 2, 3, 1).reshape(-1, d)
        maps = mahalanobis(flat, torch.from_numpy(self.patch_mean_).float(),
                           torch.from_numpy(self.patch_precision_).float())
        return scores, maps.reshape(b, h, w).numpy()

    def _cross_validated(self, pooled: dict[str, np.ndarray]) -> np.ndarray:
        """K-fold cross-validated image scores of the training images: each scored by Gaussians fitted without it."""
        n = len(next(iter(pooled.values())))
        folds = max(2, min(self.folds, n))
        order = np.random.default_rng(self.seed).permutation(n)
        scores = np.zeros(n)
        for k in range(folds):
            held = order[k::folds]
            keep = np.setdiff1d(order, held)
            means, precs = {}, {}
            for lv, x in pooled.items():
                means[lv], precs[lv] = _gaussian(x[keep])
            scores[held] = self._image_scores({lv: x[held] for lv, x in pooled.items()}, means, precs)
        return scores


def _gaussian(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and precision (inverse Ledoit-Wolf covariance) of the rows of x."""
    cov, _ = ledoit_wolf(x)
    return x.mean(0), _inverse(cov)
