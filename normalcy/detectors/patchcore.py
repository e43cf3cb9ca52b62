"""PatchCore (Roth et al. 2022): a memory bank of normal patch features.

Fit: every patch feature of the normal images goes into a pool; a greedy
k-center coreset, computed on a random projection, keeps a subset that still
covers the pool (the paper's 10 %). Score: each test patch's distance to its
nearest bank patch (faiss) is its anomaly score; the image score is the largest
patch score, re-weighted as in the paper (eq. 7) by how isolated its nearest
bank patch is.

Where we depart from the paper, for a CPU:

* greedy selection costs (bank size x pool size) distances; past 10^9 of them
  (magnetic_tile's 10 % bank: 48,000 of 485,000 patches, 2.4 x 10^10) the pool is
  split into random chunks and the bank is the union of each chunk's greedy
  picks (a composable coreset), at 1/chunks of the cost;
* a bank larger than ``exact_search_max`` (2,500, the old cap) is searched with a faiss inverted-file
  index (IVF: k-means cells, ``nprobe`` nearest cells visited per query), so that
  tens of thousands of bank patches cost a few ms an image instead of ~25 ms per
  10,000; the cell centres are learned once at fit time and saved, so a loaded
  model searches exactly as the fitted one did;
* a bank whose float32 rows exceed ``max_memory_mb`` (1 GB: 1.7 million patches at 152 dimensions) is kept
  only as faiss IVF-PQ codes (``normalcy.numerics.ann``, shared with ``normalcy.vectors.knn.KNNDetector``): one byte per
  ``pq_dims_per_byte`` = 4 dimensions plus the cell number, 40 bytes a patch instead of 608 at 152 dimensions.
  On magnetic_tile (bench/patchcore_pq.py) that finds the exact nearest bank patch for 67 % of test patches,
  distances 2.9 % off, image AUROC 0.918 against 0.922 exact; KNNDetector's 8 dimensions a byte: 49 %, 5.7 %,
  0.908. The float rows are dropped after fitting; the model keeps the cells, the PQ codebook and the codes as
  plain arrays (no faiss blob to parse from an untrusted model file) and rebuilds the index from them, so
  fitted and loaded models search alike. Eq. 7 needs bank rows (m* and its neighbours): they are decoded
  from their codes, so the re-weighting is eq. 7 on the quantised bank, consistent with the (approximate)
  nearest distances; each patch's neighbours (``bank_knn_``) are found at fit time, from its float row
  against the codes. faiss's precomputed tables are not built (cells x code bytes x 256 floats: 34 MB for
  magnetic_tile's 48,528-patch bank, whose codes take 1.9 MB), at about a third more search time. Held per
  patch while scoring: the code twice (the model's array, for decoding and saving, and faiss's lists), faiss's
  id (8 bytes), ``bank_knn_`` (4 bytes x b) and ``bank_image_`` (8 bytes): 7 MB in all for magnetic_tile
  against 60 MB with IVF-Flat, whose float rows are held twice too.

Memory: the pool is float32 and at most ``max_pool`` patches are kept for the
coreset search (a random subset beyond that), so fitting stays well under 2 GB.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Iterator, Sequence

import faiss
import numpy as np
import torch
from pydantic import Field
from torch import nn

from normalcy.detectors.base import Calibration, Detector, HyperParams
from normalcy.images.features import Batch, Features
from normalcy.numerics.ann import (
    PQ_MIN_ROWS,
    check_ivfpq,
    empty_ivfpq,
    fit_ivfpq,
    ivfpq_index,
    row_by_row,
)


def _self_first(knn: np.ndarray) -> np.ndarray:
    """Each bank patch's neighbours with itself first (eq. 7's neighbourhood holds m* itself, which an
    approximate search may rank second or miss); a neighbour not found repeats the patch."""
    rows = np.arange(len(knn))[:, None]
    others = np.where((knn == rows) | (knn < 0), -1, knn)
    others = np.take_along_axis(others, np.argsort(others < 0, axis=1, kind="stable"), axis=1)
    out = np.hstack([rows, others[:, :-1]])
    return np.where(out < 0, rows, out)


def greedy_coreset(x: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """Indices of k points chosen by greedy k-center selection (farthest point first)."""
    n = x.shape[0]
    if k >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    sq = (x * x).sum(1)
    first = int(torch.randint(n, (1,), generator=g))
    chosen = torch.empty(k, dtype=torch.long)
    chosen[0] = first
    mind = (sq - 2 * x @ x[first] + sq[first]).clamp_min_(0)
    for i in range(1, k):
        j = int(torch.argmax(mind))
        chosen[i] = j
        torch.minimum(mind, (sq - 2 * (x @ x[j]) + sq[j]).clamp_min_(0), out=mind)
    return chosen


def chunked_coreset(x: torch.Tensor, k: int, seed: int = 0, budget: float = 1e9) -> torch.Tensor:
    """Indices of about k points by greedy k-center selection, at most ``budget`` point-to-pick distances.

    Greedy selection costs k x n distances. Beyond the budget the points are split into random chunks,
    k is shared out in proportion, and the union of each chunk's greedy picks is kept (a composable
    coreset, Indyk et al. 2014); each chunk still gets enough picks to cover it. Within the budget it
    is exactly ``greedy_coreset``.
    """
    n = x.shape[0]
    parts = max(1, int(np.ceil(min(k, n) * n / budget)))
    if parts == 1 or k >= n:
        return greedy_coreset(x, k, seed)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    picked = []
    for i, part in enumerate(order.tensor_split(parts)):
        quota = max(1, round(k * len(part) / n))
        picked.append(part[greedy_coreset(x[part], quota, seed + i)])
    return torch.cat(picked).sort().values


class PatchCore(Detector):
    """PatchCore with a greedy coreset and faiss nearest-neighbour search."""

    name = "patchcore"
    uses_pooled = False
    # Chosen on development data (synthetic defects in held-out magnetic_tile training images, elpv cells):
    # 0.944 mean image AUROC against 0.927 on EfficientNet-Lite0 (bench/settings_study.py, docs/benchmarks.md).
    default_backbone = "efficientnet_lite2"

    class Params(HyperParams):
        coreset_ratio: float = Field(0.1, gt=0, le=1)
        max_bank: int = Field(100_000, ge=1, le=100_000_000)
        max_pool: int = Field(1_000_000, ge=1, le=1_000_000_000)
        exact_search_max: int = Field(2_500, ge=1, le=100_000_000, description="banks larger than this are searched by IVF")
        nprobe: int = Field(8, ge=1, le=65_536, description="IVF cells visited per query")
        projection_dim: int = Field(64, ge=1, le=4096)
        reweight_neighbours: int = Field(9, ge=1, le=1000, description="b of eq. 7; 1 turns the re-weighting off")
        calibration_images: int = Field(100, ge=1, le=1_000_000)
        standardize: bool = Field(False, description="z-score each feature channel on the training patches")
        max_memory_mb: float = Field(1024.0, gt=0, le=2**24, description="a bank whose float32 rows exceed this many MB is "
                                     "kept as IVF-PQ codes (about 1/15 of the size, approximate distances)")
        pq_dims_per_byte: int = Field(4, ge=1, le=64, description="IVF-PQ code size: one byte per this many dimensions")

    shift_: np.ndarray  # D: subtracted from every patch feature (0 unless standardize)
    scale_: np.ndarray  # D: then multiplied (1 unless standardize)
    bank_: np.ndarray  # K x D patch features; no rows when the bank is kept as IVF-PQ codes
    bank_image_: np.ndarray  # K: the training image each bank patch came from
    bank_knn_: np.ndarray  # K x b, int32: each bank patch's nearest bank patches (itself first)
    cells_: np.ndarray  # C x D: IVF cell centres; no rows when the bank is searched exactly
    codebook_: np.ndarray  # M x 2^bits x D/M: the PQ centroids of an IVF-PQ bank; empty otherwise
    codes_: np.ndarray  # K x bytes, uint8: each bank patch's cell number and PQ code (faiss sa_encode); empty otherwise
    _index: faiss.Index | None = None

    def _fit(self, batches: Iterator[Batch], held: Sequence[Batch], progress: bool) -> Calibration:
        chunks: list[np.ndarray] = []
        for batch in batches:
            chunks.append(patch_rows(batch.features.patches).numpy())
        train = np.concatenate(chunks)  # images x patches x D, float32
        del chunks
        _, n_patch, d = train.shape
        flat = train.reshape(-1, d)
        self.shift_, self.scale_ = np.zeros(d, np.float32), np.ones(d, np.float32)
        if self.standardize:  # channels of different levels and magnitudes then weigh alike
            self.shift_ = flat.mean(0).astype(np.float32)
            self.scale_ = (1.0 / np.maximum(flat.std(0), 1e-6)).astype(np.float32)
            flat -= self.shift_
            flat *= self.scale_
        rng = np.random.default_rng(self.seed)
        pool = np.arange(flat.shape[0])
        if pool.size > self.max_pool:
            pool = np.sort(rng.choice(pool, size=self.max_pool, replace=False))
        k = int(min(self.max_bank, max(1, round(self.coreset_ratio * flat.shape[0])), pool.size))
        g = torch.Generator().manual_seed(self.seed)
        proj = torch.randn(d, min(self.projection_dim, d), generator=g) / np.sqrt(self.projection_dim)
        projected = torch.from_numpy(flat[pool]) @ proj
        picked = pool[chunked_coreset(projected, k, self.seed).numpy()]
        bank = np.ascontiguousarray(flat[picked])
        self.bank_image_ = (picked // n_patch).astype(np.int64)
        if bank.nbytes > self.max_memory_mb * 2**20 and len(bank) >= PQ_MIN_ROWS:
            self.cells_, self.codebook_, self.codes_ = fit_ivfpq(bank, rng, self.pq_dims_per_byte)
            self.bank_ = np.zeros((0, d), np.float32)  # the codes replace the float rows (not a view: frees them)
        else:
            _, self.codebook_, self.codes_ = empty_ivfpq(d)
            self.bank_ = bank
            self.cells_ = self._ivf_cells(bank)
        self._index = None
        # Each bank patch's nearest bank neighbours, for the paper's image-score re-weighting.
        _, knn = self._search(bank, min(self.reweight_neighbours, len(bank)))
        self.bank_knn_ = _self_first(knn).astype(np.int32)  # K x b of them: half the memory of int64
        del bank
        return self._leave_one_out(train)

    def _build(self) -> None:
        """After loading: the arrays must agree with each other (indices inside the bank)."""
        self._check_codes()
        k = len(self.codes_) or len(self.bank_)
        if self.shift_.shape != (self.bank_.shape[-1],) or self.scale_.shape != self.shift_.shape:
            raise ValueError(f"shift {self.shift_.shape} and scale {self.scale_.shape} do not fit the bank {self.bank_.shape}")
        if self.bank_.ndim != 2 or self.bank_image_.shape != (k,) or self.bank_knn_.ndim != 2 \
                or len(self.bank_knn_) != k or (self.bank_knn_.size and not 0 <= self.bank_knn_.min() <= self.bank_knn_.max() < k):
            raise ValueError(f"bank {self.bank_.shape}, bank_image {self.bank_image_.shape} and bank_knn "
                             f"{self.bank_knn_.shape} do not fit together")
        if self.cells_.ndim != 2 or (len(self.cells_) and self.cells_.shape[1] != self.bank_.shape[1]):
            raise ValueError(f"cells {self.cells_.shape} do not fit the bank {self.bank_.shape}")
        self.bank_ = np.ascontiguousarray(self.bank_, dtype=np.float32)
        self.codebook_ = np.ascontiguousarray(self.codebook_, dtype=np.float32)
        self._index = None

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """As the base's; a model saved before IVF-PQ banks (3 December 2026) has no codes: its bank is float."""
        empty = {"codebook": torch.zeros(0, 0, 0), "codes": torch.zeros(0, 0, dtype=torch.uint8)}
        super().load_state_dict({**empty, **state})

    def _check_codes(self) -> None:
        """An IVF-PQ bank's codes must fit its codebook and cells (``ann.check_ivfpq``), and replace the float rows."""
        if not len(self.codes_) and not self.codebook_.size:
            return
        check_ivfpq(self.cells_, self.codebook_, self.codes_, self.bank_.shape[-1])
        if len(self.bank_):
            raise ValueError(f"an IVF-PQ bank ({len(self.codes_)} codes) has float rows as well {self.bank_.shape}")

    def _ivf_cells(self, bank: np.ndarray) -> np.ndarray:
        """k-means cell centres for an IVF index (about 4 sqrt(K) cells), or none for a bank searched exactly."""
        k, d = bank.shape
        if k <= self.exact_search_max:
            return np.zeros((0, d), np.float32)
        km = faiss.Kmeans(d, int(4 * np.sqrt(k)), niter=10, seed=self.seed, max_points_per_centroid=64,
                          min_points_per_centroid=1)  # few points a cell is by design here: no warning
        km.train(bank)
        return np.ascontiguousarray(km.centroids, dtype=np.float32)

    def _image_scores(self, patches: np.ndarray, dist: np.ndarray, nn: np.ndarray) -> np.ndarray:
        """``image_scores`` on arrays."""
        return image_scores(torch.from_numpy(patches), torch.from_numpy(dist), torch.from_numpy(nn),
                            torch.from_numpy(self.bank_knn_), self._bank_rows).numpy()

    def _bank_rows(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._rows(ids.numpy()))

    def _rows(self, ids: np.ndarray) -> np.ndarray:
        """Bank rows by index (any shape): the float rows, or an IVF-PQ bank's rows decoded from their codes."""
        if not len(self.codes_):
            return self.bank_[ids]
        return self._index.sa_decode(self.codes_[ids.ravel()]).reshape(*ids.shape, -1)

    def _make_index(self) -> faiss.Index:
        """The faiss index of the bank, from the saved arrays alone (so a loaded model searches as the fitted one)."""
        d = self.bank_.shape[1]
        if not len(self.cells_):
            index = faiss.IndexFlatL2(d)
            index.add(self.bank_)
            return index
        if len(self.codes_):  # no precompute_table(): see the module docstring
            return ivfpq_index(self.cells_, self.codebook_, self.codes_, self.nprobe, precompute=False)
        quantizer = faiss.IndexFlatL2(d)
        quantizer.add(self.cells_)
        index = faiss.IndexIVFFlat(quantizer, d, len(self.cells_))
        index.referenced_objects = [quantizer]  # the index uses the quantizer: keep it alive as long
        index.is_trained = True
        index.add(self.bank_)
        index.nprobe = self.nprobe
        return index

    def _search(self, flat: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        if self._index is None:  # built on first use, after fit or load
            self._index = self._make_index()
        queries = np.ascontiguousarray(flat, dtype=np.float32)
        # IVF-PQ: a patch's cells, so its score, must not depend on its batch
        with row_by_row() if len(self.codes_) else nullcontext():
            d2, idx = self._index.search(queries, k)
        dist = np.sqrt(np.maximum(d2, 0))
        dist[idx < 0] = np.inf  # IVF: fewer than k bank patches in the cells visited
        return dist, idx

    def _nearest(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """B x P x D patches -> their nearest bank patch's distance and index (B x P each), by the faiss index."""
        b, n, d = patches.shape
        dist, idx = self._search(patches.reshape(-1, d).numpy())
        return torch.from_numpy(dist[:, 0]).reshape(b, n), torch.from_numpy(idx[:, 0]).reshape(b, n)

    def scoring(self, exported: bool = False) -> "PatchCoreScoring":
        """The scoring as a torch module: ``_score`` runs it with the faiss index; exported, it searches the bank
        exactly in torch (what ``normalcy.scale.export.as_exported`` gives in Python) and runs in float32."""
        if not exported:
            return PatchCoreScoring(self, self._nearest, self._bank_rows)
        search = ExactSearch(self.bank_)
        scoring = PatchCoreScoring(self, search, search.rows).float()
        scoring.bank_knn = scoring.bank_knn.long()  # ONNX's GatherND takes int64 indices only
        return scoring


    def _leave_one_out(self, train: np.ndarray) -> Calibration:
        """Leave-one-image-out scores: a training patch may not match bank patches of its own image."""
        n_img = len(train)
        rng = np.random.default_rng(self.seed + 1)
        chosen = rng.choice(n_img, size=min(n_img, self.calibration_images), replace=False)
        scores, values = self._without_own([train[i] for i in chosen], chosen)

        def held_out(batch: Batch, positions: np.ndarray) -> np.ndarray:
            patches = (patch_rows(batch.features.patches).numpy() - self.shift_) * self.scale_  # as _fit's
            return self._without_own(patches, positions)[0]

        return Calibration(scores, np.concatenate(values), held_out)

    def _without_own(self, patches: Sequence[np.ndarray], images: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Image scores and patch distances of training images (each one's standardised patches, P x D, and its
        number in the bank's ``bank_image_``), each patch matched to bank patches of other images."""
        k = 16
        scores, values = [], []
        for x, i in zip(patches, images):
            found, idx = self._search(x, k)
            dist = np.where(self.bank_image_[idx] == i, np.inf, found)
            best = dist.argmin(1)
            rows = np.arange(len(x))
            pd, pn = dist[rows, best], idx[rows, best]
            # If all k neighbours found came from this image, the farthest of them is a lower bound.
            fallback = np.isinf(pd)
            pd[fallback] = np.where(np.isinf(found), -np.inf, found).max(1)[fallback]
            scores.append(self._image_scores(x[None], pd[None], pn[None])[0])
            values.append(pd)
        return np.asarray(scores), values


def patch_rows(patches: torch.Tensor) -> torch.Tensor:
    """B x D x h x w patch features -> B x hw x D: each image's patches as rows, as the bank holds them."""
    b, d, h, w = patches.shape
    return patches.permute(0, 2, 3, 1).reshape(b, h * w, d)


def image_scores(patches: torch.Tensor, dist: torch.Tensor, nearest: torch.Tensor, bank_knn: torch.Tensor,
                 rows: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Paper eq. 7 after the nearest-neighbour search (patches B x P x D; dist, nearest: each patch's nearest bank
    patch, B x P): s = (1 - softmax of distances to m*'s neighbourhood at m*) * s*; b = 1: s* alone.
    ``rows`` gives bank rows by index."""
    top = dist.argmax(1, keepdim=True)  # B x 1
    s_star = dist.gather(1, top)[:, 0]
    if bank_knn.shape[1] < 2:  # no neighbourhood to weigh against: the plain maximum
        return s_star.double()
    m_test = patches.gather(1, top[:, :, None].expand(-1, 1, patches.shape[-1]))  # B x 1 x D
    support = bank_knn[nearest.gather(1, top)[:, 0]]  # B x b, the first is m* itself
    d = (rows(support) - m_test).norm(dim=-1)
    d = d - d.amax(1, keepdim=True)
    w = 1.0 - d[:, 0].exp() / d.exp().sum(1)
    return (w * s_star).double()


class ExactSearch(nn.Module):
    """Each patch's nearest bank patch by squared distance ||x||^2 + ||y||^2 - 2 x.y in float32 (as faiss computes
    it), in chunks of the bank: the exported graph's search, whose memory the chunk bounds (patches x chunk)."""

    def __init__(self, bank: np.ndarray, chunk: int = 8192) -> None:
        super().__init__()
        y = torch.from_numpy(np.ascontiguousarray(bank, dtype=np.float32))
        # Rows [-2 y, ||y||^2]: one matmul with [x, 1] gives ||y||^2 - 2 x.y, and nothing else of the size of
        # patches x bank is made (||x||^2 is added after the min). -0.5 times the first D columns is the bank,
        # exactly (scaling by powers of two is exact).
        self.register_buffer("bank_aug", torch.cat([-2 * y, (y ** 2).sum(1, keepdim=True)], 1))
        self.chunks = [(i, min(i + chunk, len(y))) for i in range(0, len(y), chunk)]

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        return self.bank_aug[ids, :-1] * -0.5

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        aug = torch.cat([patches, torch.ones_like(patches[:, :, :1])], -1)
        best, nn_idx = None, None
        for i, j in self.chunks:
            v, idx = (aug @ self.bank_aug[i:j].T).min(-1)
            idx = idx + i
            if best is None:
                best, nn_idx = v, idx
            else:  # strictly smaller: on a tie the earlier bank patch wins, as a single argmin would pick it
                closer = v < best
                best, nn_idx = torch.where(closer, v, best), torch.where(closer, idx, nn_idx)
        return (best + (patches ** 2).sum(-1)).clamp_min(0).sqrt(), nn_idx


class PatchCoreScoring(nn.Module):
    """PatchCore's scoring, features -> (image scores [N], patch maps [N, h, w]): standardise the patches, find
    each one's nearest bank patch with ``search`` (the detector's faiss index, or ``ExactSearch``), then eq. 7."""

    def __init__(self, det: PatchCore, search: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                 rows: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.search, self.rows = search, rows
        self.register_buffer("shift", torch.from_numpy(det.shift_))
        self.register_buffer("scale", torch.from_numpy(det.scale_))
        self.register_buffer("bank_knn", torch.from_numpy(det.bank_knn_))

    def forward(self, inputs: torch.Tensor, features: Features) -> tuple[torch.Tensor, torch.Tensor]:
        b, d, h, w = features.patches.shape
        patches = (patch_rows(features.patches) - self.shift) * self.scale
        dist, nn_idx = self.search(patches)
        return image_scores(patches, dist, nn_idx, self.bank_knn, self.rows), dist.reshape(b, h, w)
