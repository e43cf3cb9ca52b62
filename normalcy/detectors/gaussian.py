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

from typing import Any, Iterator

import numpy as np
import torch
from sklearn.covariance import ledoit_wolf, ledoit_wolf_shrinkage

from ..features import Batch, Features
from .base import Detector


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

    def __init__(self, *args: Any, patch_samples: int = 200_000, folds: int = 5, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.patch_samples = int(patch_samples)
        self.folds = int(folds)

    def params(self) -> dict[str, Any]:
        return {"patch_samples": self.patch_samples, "folds": self.folds}

    def _fit(self, batches: Iterator[Batch]) -> None:
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
        self.pooled_ = {lv: np.concatenate(v) for lv, v in pooled.items()}
        self.level_mean_: dict[str, np.ndarray] = {}
        self.level_precision_: dict[str, np.ndarray] = {}
        for lv, x in self.pooled_.items():
            cov, _ = ledoit_wolf(x)
            self.level_mean_[lv] = x.mean(0)
            self.level_precision_[lv] = _inverse(cov)
        # Patch Gaussian from exact sums; shrinkage estimated on a random sample of patches.
        mean = (total / n).numpy()
        cov = (outer / n).numpy() - np.outer(mean, mean)
        self._patch_sample = np.concatenate(sample)
        shrink = ledoit_wolf_shrinkage(self._patch_sample - mean, assume_centered=True)
        mu = np.trace(cov) / cov.shape[0]
        cov = (1 - shrink) * cov + shrink * mu * np.eye(cov.shape[0])
        self.patch_mean_ = mean
        self.patch_precision_ = _inverse(cov)

    def _image_scores(self, pooled: dict[str, np.ndarray | torch.Tensor],
                      means: dict[str, np.ndarray], precisions: dict[str, np.ndarray]) -> np.ndarray:
        total = 0.0
        for lv in self.extractor.pooled_levels:
            x = torch.as_tensor(pooled[lv], dtype=torch.float64)
            total = total + mahalanobis(x, torch.from_numpy(means[lv]), torch.from_numpy(precisions[lv]))
        return np.asarray(total, dtype=np.float64)

    def _score(self, features: Features) -> tuple[np.ndarray, np.ndarray]:
        scores = self._image_scores(features.pooled, self.level_mean_, self.level_precision_)
        p = features.patches
        b, d, h, w = p.shape
        flat = p.permute(0, 2, 3, 1).reshape(-1, d)
        maps = mahalanobis(flat, torch.from_numpy(self.patch_mean_).float(),
                           torch.from_numpy(self.patch_precision_).float())
        return scores, maps.reshape(b, h, w).numpy()

    def _calibration_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """K-fold cross-validated image scores of the training images."""
        n = len(next(iter(self.pooled_.values())))
        folds = max(2, min(self.folds, n))
        order = np.random.default_rng(self.seed).permutation(n)
        scores = np.zeros(n)
        for k in range(folds):
            held = order[k::folds]
            keep = np.setdiff1d(order, held)
            means, precs = {}, {}
            for lv, x in self.pooled_.items():
                cov, _ = ledoit_wolf(x[keep])
                means[lv] = x[keep].mean(0)
                precs[lv] = _inverse(cov)
            scores[held] = self._image_scores({lv: x[held] for lv, x in self.pooled_.items()}, means, precs)
        patch = mahalanobis(torch.from_numpy(self._patch_sample).double(), torch.from_numpy(self.patch_mean_),
                            torch.from_numpy(self.patch_precision_)).numpy()
        del self._patch_sample
        return scores, patch

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"patch_mean": self.patch_mean_, "patch_precision": self.patch_precision_}
        for lv in self.level_mean_:
            state[f"level.{lv}.mean"] = self.level_mean_[lv]
            state[f"level.{lv}.precision"] = self.level_precision_[lv]
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.patch_mean_ = state["patch_mean"].numpy()
        self.patch_precision_ = state["patch_precision"].numpy()
        self.level_mean_ = {lv: state[f"level.{lv}.mean"].numpy() for lv in self.extractor.pooled_levels}
        self.level_precision_ = {lv: state[f"level.{lv}.precision"].numpy() for lv in self.extractor.pooled_levels}
