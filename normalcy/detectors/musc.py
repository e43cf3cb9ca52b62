"""MuSc (Li et al., ICLR 2024): zero-shot scoring of an unlabeled batch by mutual scoring.

No training images. Every image of the batch is scored against all the others:
a normal patch finds a close match in most other images, a defective one does
not, because defects are rare and differ from image to image.

* LNAMD: patch features averaged over r x r neighbourhoods for several r
  (1 and 3 here), so defects of different sizes stand out at some degree.
* Mutual scoring: for a patch of image i and each other image j, the distance
  to its nearest patch in j; the patch score is the mean of the smallest
  ``interval`` fraction of those per-image distances (so a few images that
  share a similar defect do not hide it). Averaged over the degrees r.
* RsCIN: the image score (largest patch score) is re-scored over a kNN graph of
  image features (faiss): each image takes the similarity-weighted mean score
  of its nearest images, which smooths out one-off errors.

Our CNN's stride-8 and stride-16 levels stand in for the paper's ViT layers, on
the stride-16 grid to keep the N^2 P^2 comparisons affordable on a CPU. The cost
is chunked over image blocks, so memory stays bounded whatever the batch size.
Decisions: with no normal set to calibrate on, an image is flagged when its score
is an outlier of the batch (above median + ``mad_factor`` x MAD).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from ..features import upsample_map
from ..progress import progress_bar
from .base import Detector, Result


class MuSc(Detector):
    """Zero-shot mutual scoring of a batch; ``fit`` is a no-op."""

    name = "musc"
    uses_pooled = False
    zero_shot = True  # scores a batch against itself: no per-image latency, no training set

    def __init__(self, *args: Any, radii: Sequence[int] = (1, 3), interval: float = 0.3, rscin_k: int = 8,
                 chunk: int = 32, mad_factor: float = 3.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.radii = tuple(int(r) for r in radii)
        self.interval = float(interval)
        self.rscin_k = int(rscin_k)
        self.chunk = int(chunk)
        self.mad_factor = float(mad_factor)
        self.threshold_ = float("nan")  # set per batch
        self.skipped_fit_: list[tuple[Path, str]] = []

    def params(self) -> dict[str, Any]:
        return {"radii": list(self.radii), "interval": self.interval, "rscin_k": self.rscin_k,
                "chunk": self.chunk, "mad_factor": self.mad_factor}

    def fit(self, paths: Sequence[Path] = (), progress: bool = True) -> "MuSc":
        """Nothing to learn: MuSc scores each batch against itself."""
        self.threshold_ = float("nan")
        self.map_range_ = None
        self.skipped_fit_: list[tuple[Path, str]] = []
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass

    # -- features ------------------------------------------------------------------
    def _levels(self, x: torch.Tensor, embed: bool = False
                ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None]:
        """Per-degree patch features (B x P x D, L2-normalised), image features (B x C) for RsCIN,
        and with ``embed`` the extractor's image embeddings (B x E, for review re-ranking)."""
        ex = self.extractor
        every = ex.level_maps(x, ex.backbone.levels if embed else ex.patch_levels)
        maps = {lv: every[lv] for lv in ex.patch_levels}
        deep = maps[ex.patch_levels[-1]]
        grid = deep.shape[-2:]
        feats = []
        for r in self.radii:
            parts = []
            for f in maps.values():
                if r > 1:
                    f = F.avg_pool2d(f, r, stride=1, padding=r // 2, count_include_pad=False)
                if f.shape[-2:] != grid:
                    f = F.adaptive_avg_pool2d(f, grid)
                parts.append(F.normalize(f, dim=1))  # each level weighs the same
            z = torch.cat(parts, 1)
            feats.append(F.normalize(z.flatten(2).transpose(1, 2), dim=-1))
        image = F.normalize(deep.mean((2, 3)), dim=-1)
        return feats, image, ex.embed(every) if embed else None

    # -- mutual scoring ----------------------------------------------------------------
    def mutual_scores(self, z: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """N x P x D normalised patch features -> N x P patch scores, chunked over images."""
        n, p, d = z.shape
        c = max(1, chunk or self.chunk)
        keep = max(1, int(round(self.interval * (n - 1))))
        out = torch.empty(n, p)
        flat = z.reshape(n * p, d)
        for i0 in range(0, n, c):
            qi = z[i0:i0 + c].reshape(-1, d)  # (ci*P) x D
            ci = min(c, n - i0)
            nearest = torch.empty(ci * p, n)
            for j0 in range(0, n, c):
                cj = min(c, n - j0)
                sim = qi @ flat[j0 * p:(j0 + cj) * p].T  # (ci*P) x (cj*P)
                nearest[:, j0:j0 + cj] = sim.reshape(ci * p, cj, p).amax(-1)
            dist = (2 - 2 * nearest).clamp_min_(0).sqrt_().reshape(ci, p, n)
            for k in range(ci):  # an image is not compared with itself
                dist[k, :, i0 + k] = float("inf")
            smallest = dist.topk(keep, dim=-1, largest=False).values
            out[i0:i0 + ci] = smallest.mean(-1)
        return out

    def rescore(self, scores: np.ndarray, image_feats: np.ndarray) -> np.ndarray:
        """RsCIN: similarity-weighted mean of the scores of each image's nearest images (faiss)."""
        n = len(scores)
        k = min(self.rscin_k, n)
        if k <= 1:
            return scores
        index = faiss.IndexFlatIP(image_feats.shape[1])
        x = np.ascontiguousarray(image_feats, dtype=np.float32)
        index.add(x)
        sim, idx = index.search(x, k)  # includes the image itself
        w = np.exp((sim - 1.0) / 0.05)
        return (w * scores[idx]).sum(1) / w.sum(1)

    def score(self, paths: Sequence[Path], progress: bool = True, keep_images: bool = False,
              batch_size: int | None = None, embeddings: bool = False) -> Result:
        """Score the images as one unlabeled batch: each against all the others."""
        paths = list(paths)
        skipped: list[tuple[Path, str]] = []
        out_paths: list[Path] = []
        shapes: list[tuple[int, int]] = []
        images: list[np.ndarray] = []
        per_r: list[list[torch.Tensor]] = [[] for _ in self.radii]
        img_feats = []
        embs: list[torch.Tensor] = []
        with progress_bar(progress) as bar:
            task = bar.add_task("musc: features", total=len(paths))
            for batch in self.extractor.iter_batches(paths, skipped, batch_size or self.batch_size,
                                                     keep_images=True, features=False):
                feats, image, emb = self._levels(batch.inputs, embeddings)  # type: ignore[arg-type]
                if emb is not None:
                    embs.append(emb)
                for lst, f in zip(per_r, feats):
                    lst.append(f)
                img_feats.append(image)
                out_paths.extend(batch.paths)
                shapes.extend(im.shape[:2] for im in batch.images)
                if keep_images:
                    images.extend(batch.images)
                bar.update(task, completed=len(out_paths) + len(skipped))
            n = len(out_paths)
            if n < 2:
                from ..data import InputError

                raise InputError(f"MuSc scores images against each other: it needs at least 2 readable images, got {n}")
            task = bar.add_task("musc: mutual scoring", total=len(self.radii))
            patch = torch.zeros(n, per_r[0][0].shape[1])
            for lst in per_r:
                patch += self.mutual_scores(torch.cat(lst)) / len(self.radii)
                bar.advance(task)
        grid = int(round(np.sqrt(patch.shape[1])))
        maps_grid = patch.reshape(n, grid, -1).numpy()
        raw = maps_grid.reshape(n, -1).max(1).astype(np.float64)
        scores = self.rescore(raw, torch.cat(img_feats).numpy())
        med = float(np.median(scores))
        mad = float(np.median(np.abs(scores - med))) or 1e-12
        self.threshold_ = med + self.mad_factor * 1.4826 * mad
        self.map_range_ = (float(np.quantile(maps_grid, 0.5)), float(maps_grid.max()))
        maps = [upsample_map(m, s) for m, s in zip(maps_grid, shapes)]
        return Result(paths=out_paths, scores=scores, maps=maps, decisions=scores >= self.threshold_,
                      threshold=self.threshold_, skipped=skipped, images=images if keep_images else None,
                      embeddings=torch.cat(embs).numpy() if embs else None)
