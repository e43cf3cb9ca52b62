"""MuSc (Li et al., ICLR 2024): zero-shot scoring of an unlabeled batch by mutual scoring.

No training images. Every image of the batch is scored against all the others:
a normal patch finds a close match in most other images, a defective one does
not, because defects are rare and differ from image to image.

* LNAMD: patch features averaged over r x r neighbourhoods for several r
  (3 and 5 here), so defects of different sizes stand out at some degree.
* Mutual scoring: for a patch of image i and each other image j, the distance
  to its nearest patch in j; the patch score is the mean of the smallest
  ``interval`` fraction of those per-image distances (so a few images that
  share a similar defect do not hide it). Averaged over the degrees r.
* Image score: the largest patch score minus the image's median patch score,
  so a tile whose texture is unusual all over is not mistaken for a defect
  (the paper takes the plain maximum; ``image_score="max"``).
* RsCIN: the image score is re-scored over a kNN graph of image features
  (faiss): each image takes the similarity-weighted mean score of its nearest
  images, which smooths out one-off errors.

Our CNN's stride-16 level stands in for the paper's ViT layers (``levels``; adding
the stride-8 level, or r = 1, lowered image AUROC on magnetic_tile, see
docs/changelog.md), on the stride-16 grid to keep the N^2 P^2 comparisons affordable
on a CPU. The nearest-patch step is an exact blocked matrix product (the same BLAS
kernel faiss's flat index runs), chunked over image blocks so memory stays bounded
whatever the batch size; faiss builds the RsCIN image graph.
``references`` takes optional extra unlabeled images: every batch is also matched against
them, but they are never scored, and they need not be normal.
The settings (max - median, RsCIN) were chosen on magnetic_tile; on batches with local, rarer
defects the plain maximum without RsCIN is better (``image_score="max", rscin_k=1``; numbers in
docs/benchmarks.md, from bench/musc_ceiling.py).
Decisions: with no normal set to calibrate on, an image is flagged when its score
is an outlier of the batch (above median + ``mad_factor`` x MAD).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Sequence

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, ValidationError, field_validator

from normalcy.detectors.base import HyperParams, Maps, Result, _items, validation_message
from normalcy.detectors.modelfile import BatchSize
from normalcy.errors import InputError
from normalcy.images.features import FeatureExtractor
from normalcy.progress import progress_bar

log = logging.getLogger("normalcy")
# Fewer images than this can never be flagged: each one's distance from the median is the MAD itself (two images),
# or the MAD is 0 (one image, with references)
MIN_TO_FLAG = 3


class MuSc:
    """Zero-shot mutual scoring of a batch. Not a fitted detector: there is no model to save,
    and ``references`` only adds optional extra unlabeled images."""

    name = "musc"

    class Params(HyperParams):
        radii: tuple[Annotated[int, Field(ge=1, le=31)], ...] = (3, 5)
        levels: Optional[tuple[str, ...]] = None
        interval: float = Field(0.3, gt=0, le=1)
        rscin_k: int = Field(8, ge=1, le=10_000, description="1 turns RsCIN off")
        chunk: int = Field(32, ge=1, le=10_000)
        mad_factor: float = Field(3.0, gt=0, le=1000)
        image_score: Literal["max", "max-median"] = "max-median"
        batch_size: BatchSize = 8

        @field_validator("radii")
        @classmethod
        def _odd_positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
            if not v or min(v) < 1:
                raise ValueError("radii must be positive neighbourhood sizes")
            return v

    def __init__(self, extractor: FeatureExtractor | None = None, **params: Any) -> None:
        try:
            p = self.Params(**params)
        except ValidationError as err:
            raise InputError(validation_message("musc", err)) from None
        self.extractor = extractor or FeatureExtractor()
        self.radii, self.interval, self.rscin_k = p.radii, p.interval, p.rscin_k
        self.chunk, self.mad_factor, self.image_score, self.batch_size = p.chunk, p.mad_factor, p.image_score, p.batch_size
        self.levels = tuple(p.levels or self.extractor.patch_levels[-1:])  # default: the stride-16 level
        unknown = [lv for lv in self.levels if lv not in self.extractor.backbone.levels]
        if unknown:
            raise InputError(f"unknown level(s) {unknown}; this backbone has {list(self.extractor.backbone.levels)}")
        # learned attributes (``refs_``, ``skipped_refs_`` by references; ``threshold_``, ``map_range_`` by score)
        # appear when learned, as scikit-learn's contract and the other detectors have them: set here, ``hasattr``
        # took a MuSc that had scored nothing for one that had

    def _refs(self) -> list[torch.Tensor]:
        """Per degree r: R x P x D extra reference patches (fp16); none before ``references``."""
        return getattr(self, "refs_", [])

    def references(self, paths: Sequence[Path] | str | Path, progress: bool = True) -> "MuSc":
        """Extra unlabeled images that join every batch as references: their patches are matched
        against but never scored (they need not be normal)."""
        for learned in ("refs_", "skipped_refs_"):  # a call that fails leaves none, not the earlier ones
            self.__dict__.pop(learned, None)
        skipped: list[tuple[Path, str]] = []
        refs: list[torch.Tensor] = []
        if paths:
            per_r, _, _, _ = self._batch_features(_items(paths), skipped, progress, "musc: references")
            refs = [f.half() for f in per_r]
        self.refs_, self.skipped_refs_ = refs, skipped
        return self

    # -- features ------------------------------------------------------------------
    def _levels(self, x: torch.Tensor, embed: bool = False
                ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None]:
        """Per-degree patch features (B x P x D, L2-normalised), image features (B x C) for RsCIN,
        and with ``embed`` the extractor's image embeddings (B x E, for review re-ranking)."""
        ex = self.extractor
        every = ex.level_maps(x, ex.backbone.levels if embed else self.levels)
        maps = {lv: every[lv] for lv in self.levels}
        deep = maps[self.levels[-1]]
        grid = self._grid(x.shape[-2], x.shape[-1])
        feats = []
        for r in self.radii:
            parts = []
            for f in maps.values():
                if r > 1:
                    f = F.avg_pool2d(f, r, stride=1, padding=r // 2, count_include_pad=False)
                if f.shape[-2:] != grid:
                    f = F.adaptive_avg_pool2d(f, grid) if f.shape[-1] > grid[1] else F.interpolate(
                        f, size=grid, mode="bilinear", align_corners=False)
                parts.append(F.normalize(f, dim=1))  # each level weighs the same
            z = torch.cat(parts, 1)
            feats.append(F.normalize(z.flatten(2).transpose(1, 2), dim=-1))
        image = F.normalize(deep.mean((2, 3)), dim=-1)
        return feats, image, ex.embed(every) if embed else None

    def _grid(self, height: int, width: int) -> tuple[int, int]:
        """The patch grid MuSc compares on: the coarser patch level's (stride 16), whatever the levels;
        sides rounded up, as the strided convolutions do."""
        stride = self.extractor.spec.strides[self.extractor.patch_levels[-1]]
        return -(-height // stride), -(-width // stride)

    # -- mutual scoring ----------------------------------------------------------------
    def mutual_scores(self, z: torch.Tensor, chunk: int | None = None, refs: torch.Tensor | None = None) -> torch.Tensor:
        """N x P x D normalised patch features -> N x P patch scores, chunked over images.

        Each image is compared with every other image of the batch and with the R extra
        reference images (``refs``, R x P x D); the distances of a patch to its nearest patch
        in each of those N - 1 + R images are sorted and the smallest ``interval`` of them averaged.
        Memory is O(chunk^2 P^2) for the similarity block plus O(chunk P (N + R)) for the distances.
        """
        n, p, d = z.shape
        pool = z if refs is None or not len(refs) else torch.cat([z, refs.to(z.dtype)])
        m = len(pool)
        c = max(1, chunk or self.chunk)
        keep = max(1, int(round(self.interval * (m - 1))))
        out = torch.empty(n, p)
        flat = pool.reshape(m * p, d)
        for i0 in range(0, n, c):
            ci = min(c, n - i0)
            qi = z[i0:i0 + ci].reshape(-1, d)  # (ci*P) x D
            nearest = torch.empty(ci * p, m)
            for j0 in range(0, m, c):
                cj = min(c, m - j0)
                sim = qi @ flat[j0 * p:(j0 + cj) * p].T  # (ci*P) x (cj*P)
                nearest[:, j0:j0 + cj] = sim.reshape(ci * p, cj, p).amax(-1)
            dist = (2 - 2 * nearest).clamp_min_(0).sqrt_().reshape(ci, p, m)
            for k in range(ci):  # an image is not compared with itself
                dist[k, :, i0 + k] = float("inf")
            out[i0:i0 + ci] = dist.topk(keep, dim=-1, largest=False).values.mean(-1)
        return out

    def patch_scores(self, per_r: Sequence[torch.Tensor], refs: Sequence[torch.Tensor] | None = None,
                     progress: bool = False) -> torch.Tensor:
        """Per-degree N x P x D features (and optional per-degree reference features) -> N x P
        patch scores: the mutual score of each degree r, averaged over the degrees."""
        n, p = per_r[0].shape[:2]
        patch = torch.zeros(n, p)
        with progress_bar(progress) as bar:
            task = bar.add_task("musc: mutual scoring", total=len(per_r))
            for k, z in enumerate(per_r):
                patch += self.mutual_scores(z, refs=refs[k] if refs else None) / len(per_r)
                bar.advance(task)
        return patch

    def image_scores(self, patch: torch.Tensor, image_feats: torch.Tensor) -> np.ndarray:
        """N x P patch scores -> N image scores, re-scored over the batch's image graph (RsCIN).

        With ``max-median`` an image's own typical patch is its baseline: a tile with an
        unusual texture all over is not a defect; a patch far above the rest of its image is.
        """
        flat = patch.numpy().astype(np.float64)
        raw = flat.max(1) - (np.median(flat, 1) if self.image_score == "max-median" else 0.0)
        return self.rescore(raw, image_feats.numpy())

    def features(self, paths: Sequence[Path] | str | Path, progress: bool = True
                 ) -> tuple[list[torch.Tensor], torch.Tensor, list[Path], list[tuple[Path, str]]]:
        """Per-degree patch features, RsCIN image features, the paths read and the files skipped:
        what ``score`` compares, for callers that score subsets of one batch (bench/musc_ceiling.py)."""
        skipped: list[tuple[Path, str]] = []
        per_r, img_feats, seen, _ = self._batch_features(_items(paths), skipped, progress, "musc: features")
        return per_r, img_feats, [p for p, _, _ in seen], skipped

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

    def _batch_features(self, paths: list[Path], skipped: list[tuple[Path, str]], progress: bool, what: str,
                        keep_images: bool = False, embeddings: bool = False, batch_size: int | None = None
                        ) -> tuple[list[torch.Tensor], torch.Tensor, list[Any], torch.Tensor | None]:
        """Per-degree patch features, RsCIN image features, (path, shape, image) per image, embeddings."""
        per_r: list[list[torch.Tensor]] = [[] for _ in self.radii]
        img_feats, embs, seen = [], [], []
        with progress_bar(progress) as bar:
            task = bar.add_task(what, total=len(paths))
            for batch in self.extractor.iter_batches(paths, batch_size or self.batch_size,
                                                     keep_images=True, features=False):
                skipped.extend(batch.skipped)
                if not batch.paths:
                    bar.update(task, completed=len(seen) + len(skipped))
                    continue
                feats, image, emb = self._levels(batch.inputs, embeddings)  # type: ignore[arg-type]
                for lst, f in zip(per_r, feats):
                    lst.append(f)
                img_feats.append(image)
                if emb is not None:
                    embs.append(emb)
                seen.extend((p, im.shape[:2], im if keep_images else None) for p, im in zip(batch.paths, batch.images))
                bar.update(task, completed=len(seen) + len(skipped))
        if not seen:
            return [], torch.empty(0), [], None
        return [torch.cat(lst) for lst in per_r], torch.cat(img_feats), seen, torch.cat(embs) if embs else None

    def score(self, paths: Sequence[Path] | str | Path, progress: bool = True, keep_images: bool = False,
              batch_size: int | None = None, embeddings: bool = False) -> Result:
        """Score the images as one unlabeled batch: each against all the others (and the references)."""
        skipped: list[tuple[Path, str]] = []
        per_r, img_feats, seen, embs = self._batch_features(_items(paths), skipped, progress, "musc: features",
                                                            keep_images, embeddings, batch_size)
        n = len(seen)
        refs = self._refs()
        if n + (len(refs[0]) if refs else 0) < 2 or n == 0:
            raise InputError(f"MuSc scores images against each other: it needs at least 2 readable images, got {n}")
        patch = self.patch_scores(per_r, refs or None, progress)
        maps_grid = patch.reshape(n, *self._grid(*self.extractor.size)).numpy()
        scores = self.image_scores(patch, img_feats)
        med = float(np.median(scores))
        mad = float(np.median(np.abs(scores - med))) or 1e-12
        self.threshold_ = med + self.mad_factor * 1.4826 * mad
        if n < MIN_TO_FLAG:  # "0 anomalous" was said of a batch where nothing could be
            log.warning("musc: %d image(s) scored: an image is flagged when its score stands out of the batch's "
                        "(above the median + %g x MAD), which %d images never do, so none is flagged; score %d or "
                        "more together, or rank them by score", n, self.mad_factor, n, MIN_TO_FLAG)
        self.map_range_ = (float(np.quantile(maps_grid, 0.5)), float(maps_grid.max()))
        # held at the patch grid and drawn when read: a list of every image's full-size map held a batch of
        # 6000x6000 photos' maps at once (144 MB each); eval still shrinks each from its full size (``shrink``)
        maps = Maps(list(maps_grid), [shape for _, shape, _ in seen], shrink=True)
        return Result(paths=[p for p, _, _ in seen], scores=scores, maps=maps, decisions=scores >= self.threshold_,
                      threshold=self.threshold_, skipped=skipped,
                      images=[im for _, _, im in seen] if keep_images else None,
                      embeddings=embs.numpy() if embs is not None else None)
