"""One feature extraction, shared by every detector.

An image is resized to the input size (224 x 224 by default; any height x width,
or one with the training images' aspect ratio, ``size_for``), run through a
pretrained backbone once, and turned into two things:

* patch features: the stride-8 and stride-16 levels, each averaged over a 3x3
  neighbourhood (PatchCore's local aggregation), upsampled to the finer grid
  and concatenated, so every patch sees a little context at two scales;
* pooled features: every level averaged over a coarse g x g grid of the
  image, for image-level Gaussians. Rippel et al. average over the whole image
  (g = 1); a small grid keeps where things are, which matters for parts that
  are photographed in the same pose (magnetic_tile: image AUROC 0.915 with
  g = 1, 0.984 with g = 4; see docs/changelog.md). Deep levels with many
  channels get a smaller grid so no level has more than ``pool_max_dim`` values.

Tiling (``tile``, ``overlap``): a large input (say a 1600x800 photo at its own size) is cut into
overlapping square tiles, each tile runs through the backbone on its own (memory bounded by the
tile, not the image), and each level's feature maps are blended back into one map of the whole
image before anything else happens: where tiles overlap they cross-fade, each cell weighted by its
squared distance from its tile's inner borders, so the tiles' zero padding fades out and every
detector sees one feature map without seams (the jump across a tile border is no larger than
anywhere else; tests/test_tiling.py).
"""

from __future__ import annotations

import copy
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from normalcy.errors import ImageError, InputError, option, setting
from normalcy.images.backbones import (
    Backbone,
    BackboneSpec,
    get_backbone_spec,
    norm_tensors,
    standardised,
    with_input_norm,
)
from normalcy.images.io import image_size, in_context, iter_images

logger = logging.getLogger("normalcy")


@dataclass
class Features:
    """Features of a batch of images."""

    patches: torch.Tensor  # B x D x h x w
    pooled: dict[str, torch.Tensor]  # level -> B x C
    embedding: torch.Tensor | None = None  # B x E image embedding for re-ranking (see FeatureExtractor.embed)


@dataclass
class Batch:
    """A batch of images that were read, with their features."""

    paths: list[Path]
    images: list[np.ndarray]  # original images, HxWx3 uint8
    features: Features | None  # None when the detector works on images alone
    inputs: torch.Tensor | None = None  # the resized Bx3xSxS batch in [0, 1]
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # files of this chunk that were not images


MIN_SIZE, MAX_SIZE = 32, 4096


def parse_size(size: int | str | Sequence[int]) -> tuple[int, int]:
    """224, "224", [160, 320], "160x320" or "160,320" (height, width) -> (height, width), each in 32..4096."""
    try:
        if isinstance(size, str):
            parts = [int(p) for p in size.lower().replace(",", "x").split("x")]
        elif isinstance(size, (int, np.integer)):
            parts = [int(size)]
        else:
            parts = [int(p) for p in size]
    except (TypeError, ValueError):
        raise InputError(f"image size must be a number or HEIGHTxWIDTH, not {size!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise InputError(f"image size must be one or two numbers (height, width), not {size!r}")
    for p in parts:
        if not MIN_SIZE <= p <= MAX_SIZE:
            bound = f"at least {MIN_SIZE}" if p < MIN_SIZE else f"at most {MAX_SIZE}"
            raise InputError(f"image size must be {bound} (got {p})")
    return parts[0], parts[1]


def _header_sizes(paths: Sequence[Path], sample: int = 64) -> list[tuple[Path, int, int]]:
    """(path, width, height) of up to ``sample`` files spread over ``paths``, from their headers only."""
    sizes = []
    for p in list(paths)[:: max(1, len(paths) // sample)][:sample]:
        try:
            w, h = image_size(p)  # a FIFO is refused, not waited on
        except ImageError:
            continue  # an unreadable file is named later, when it is read for real
        if w and h:
            sizes.append((p, w, h))
    return sizes


def _side(x: float, multiple: int) -> int:
    return int(min(MAX_SIZE, max(MIN_SIZE, round(x / multiple) * multiple)))


def size_for(paths: Sequence[Path], area: int = 224 * 224, multiple: int = 32, say: bool = True) -> tuple[int, int]:
    """An input size with the images' median aspect ratio and about ``area`` pixels (so speed stays
    that of a 224 px square), each side a multiple of ``multiple``; read from file headers only.

    Past the ratio at which the short side is at its least (``MIN_SIZE``; 1:49 at 224 x 224) the long side
    is kept to ``area / MIN_SIZE``: it grew on with the ratio (1x300 images gave a 32x3872 input, 2x5000 ones
    32x4096, two and a half times the area and its time), the images squeezed along it; said (``say``) naming
    such files."""
    sizes = _header_sizes(paths)
    ratio = float(np.median([w / h for _, w, h in sizes])) if sizes else 1.0
    most = area / MIN_SIZE**2
    kept = min(max(ratio, 1 / most), most)
    size = _side(np.sqrt(area / kept), multiple), _side(np.sqrt(area * kept), multiple)
    if kept != ratio and say:
        odd = [f"{p.name} {w}x{h}" for p, w, h in sizes if not 1 / most <= w / h <= most]
        logger.warning("images of an aspect ratio past 1:%d (%d of the %d looked at: %s%s): input size %dx%d (height x "
                       "width), about %d pixels as for any image, so each is squeezed along its long side; give "
                       "%s or %s to choose another", round(most), len(odd), len(sizes),
                       ", ".join(odd[:3]), ", ..." if len(odd) > 3 else "", *size, area,
                       option("image_size", "HEIGHTxWIDTH"), option("tile"))
    return size


def native_size(paths: Sequence[Path], multiple: int = 32) -> tuple[int, int]:
    """The images' own median (height, width), each a multiple of ``multiple``: the input size for tiling."""
    sizes = _header_sizes(paths)
    if not sizes:
        return 224, 224
    return (_side(float(np.median([h for _, _, h in sizes])), multiple),
            _side(float(np.median([w for _, w, _ in sizes])), multiple))


def bf16_supported() -> bool:
    """True where the CPU has native bfloat16 matrix units (AVX512-BF16 / AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str) -> str:
    """'auto' -> 'bf16' where the CPU runs it natively (about 1.4x faster end to end, the same
    image AUROC on magnetic_tile), else 'fp32'. Asking for bf16 without support falls back to fp32."""
    if precision not in ("auto", "fp32", "bf16"):
        raise InputError(f"precision must be auto, fp32 or bf16, not {precision!r}")
    if precision == "fp32":
        return "fp32"
    if not bf16_supported():
        if precision == "bf16":
            logging.getLogger("normalcy").warning("this CPU has no native bfloat16: using fp32")
        return "fp32"
    return "bf16"


class MapCache:
    """Backbone maps of image files, by extractor (``FeatureExtractor.map_key``: its network object, size,
    precision, tiling), and the files' resized images, by size: ``--tune`` tries pooling grids on the maps of the
    setting it has chosen so far instead of running the network again, its final fit takes the maps of the images
    the trials fitted on, and no trial decodes an image another has. Holds at most ``budget`` bytes; ``keep``
    drops every extractor's maps but one."""

    def __init__(self, budget: int = 2**30) -> None:
        self.budget, self.bytes = budget, 0
        self.network: dict[tuple, tuple[float, int]] = {}  # seconds in the network and images, by extractor
        self.inputs: dict[tuple[str, tuple[int, int]], tuple[tuple[int, int], np.ndarray]] = {}  # resized images
        self.read = (0.0, 0)  # seconds decoding and resizing files, and files
        self.unreadable: dict[str, str] = {}  # files that are not images, and why: read (and warned about) once
        self.maps: dict[tuple, dict[tuple[str, tuple[str, ...]], dict[str, torch.Tensor]]] = {}

    def inputs_of(self, paths: Sequence[Path], size: tuple[int, int]) -> dict[Path, tuple[tuple[int, int], np.ndarray]]:
        """The (original size, resized image) held of each of ``paths`` at ``size``."""
        found = {p: self.inputs.get((str(p), size)) for p in paths}
        return {p: v for p, v in found.items() if v is not None}

    def put_inputs(self, read: Sequence[tuple[Path, np.ndarray, np.ndarray]], size: tuple[int, int]) -> None:
        """Hold resized images (path, image, resized) within the budget: the next trial need not decode them."""
        for p, im, small in read:
            if self.bytes + small.nbytes > self.budget:
                return
            self.inputs[(str(p), size)] = (im.shape[:2], small)
            self.bytes += small.nbytes

    def parts(self, key: tuple, levels: tuple[str, ...], paths: Sequence[Path]) -> list[dict[str, torch.Tensor] | None]:
        """Each file's maps, None where not held."""
        held = self.maps.get(key, {})
        return [held.get((str(p), levels)) for p in paths]

    def spent(self, key: tuple, images: int, seconds: float) -> None:
        """Count the time the network of ``key``'s extractor took on ``images`` files (``--tune`` budgets its
        trials by it, and by ``read_for``)."""
        s, n = self.network.get(key, (0.0, 0))
        self.network[key] = (s + seconds, n + images)

    def read_for(self, images: int, seconds: float) -> None:
        """Count the time decoding and resizing ``images`` files took."""
        self.read = (self.read[0] + seconds, self.read[1] + images)

    def network_seconds(self) -> float:
        """Seconds the networks have run for this cache so far."""
        return sum(s for s, _ in self.network.values())

    def rate(self, key: tuple) -> float | None:
        """Seconds a file in the network of ``key``'s extractor, as measured; None before it ran."""
        s, n = self.network.get(key, (0.0, 0))
        return s / n if n else None

    def put(self, key: tuple, levels: tuple[str, ...], paths: Sequence[Path], maps: dict[str, torch.Tensor]) -> None:
        size = sum(m[0].numel() * m.element_size() for m in maps.values())
        held = self.maps.setdefault(key, {})
        for i, p in enumerate(paths):
            if self.bytes + size > self.budget:
                return
            held[(str(p), levels)] = {lv: m[i].clone() for lv, m in maps.items()}
            self.bytes += size

    def keep(self, key: tuple) -> None:
        """Drop the maps of every extractor but the one of ``key``."""
        for other in [k for k in self.maps if k != key]:
            held = self.maps.pop(other)
            self.bytes -= sum(m.numel() * m.element_size() for per in held.values() for m in per.values())

    @contextmanager
    def attached(self, extractor: "FeatureExtractor") -> Iterator[None]:
        """``extractor`` (and every extractor made from it by ``replace``) reads and fills this cache meanwhile."""
        extractor.cache = self
        try:
            yield
        finally:
            extractor.cache = None


_SAME_NETWORK = {"image_size", "aggregate", "pool_grid", "pool_max_dim", "precision", "tile", "overlap", "input_norm"}
"""Options ``FeatureExtractor.replace`` can change without another backbone network (the input normalisation is
the extractor's ``norm``, handed to the network on each call)."""


class FeatureExtractor:
    """Pretrained backbone -> patch and pooled features.

    ``backbone`` is a built-in name (see ``normalcy.images.backbones.BACKBONES``) or a
    ``BackboneSpec`` for your own network.
    """

    readers = 2
    """Threads that decode and resize the files of a batch."""

    def __init__(
        self,
        backbone: str | BackboneSpec = "efficientnet_lite0",
        image_size: int | Sequence[int] = 224,
        patch_levels: Sequence[str] | None = None,
        pooled_levels: Sequence[str] | None = None,
        aggregate: int = 3,
        pool_grid: int = 4,
        pool_max_dim: int = 2048,
        precision: str = "auto",
        tile: int | None = None,
        overlap: int = 64,
        tile_batch: int = 16,
        input_norm: str = "own",
        network: Backbone | None = None,
    ) -> None:
        """``network``: a ``Backbone`` of this backbone at these levels to run on instead of a new one (``replace``
        shares it: building one costs 0.2 s, and its traces more)."""
        self.input_norm = input_norm
        self.spec = with_input_norm(get_backbone_spec(backbone), input_norm)
        self.size = parse_size(image_size)  # (height, width) the network sees
        self.patch_levels = tuple(patch_levels or self.spec.patch_levels)
        self.pooled_levels = tuple(pooled_levels or self.spec.pooled_levels or self.spec.levels)
        self.aggregate = int(aggregate)
        order = list(self.spec.levels)
        levels = sorted(set(self.patch_levels) | set(self.pooled_levels), key=order.index)
        self.backbone = network if network is not None else Backbone(self.spec, tuple(levels))
        self.norm = norm_tensors(self.spec)  # the input's mean and std: the network is shared across them
        self.patch_stride = min(self.spec.strides[lv] for lv in self.patch_levels)
        self.pool_grid = int(pool_grid)
        if not 1 <= self.pool_grid <= 32:  # as a saved model's; found only at saving, after the whole fit
            raise InputError(f"pool grid must be between 1 and 32 (got {pool_grid})")
        self.pool_max_dim = int(pool_max_dim)
        self._grids: dict[str, int] = {}
        self.precision = resolve_precision(precision)
        self.tile, self.overlap = check_tiling(tile, overlap, self.size, max(self.spec.strides.values()))
        self.tile_batch = int(tile_batch)
        self.cache: MapCache | None = None  # set by --tune while trials share backbone maps (not saved)

    @property
    def image_size(self) -> int | list[int]:
        """The input size as saved: one number for a square, else [height, width]."""
        h, w = self.size
        return h if h == w else [h, w]

    @property
    def config(self) -> dict:
        """What a saved model needs to rebuild this extractor."""
        return {
            "backbone": self.spec.name,
            "backbone_extras": self.spec.extras,
            "image_size": self.image_size,
            "patch_levels": list(self.patch_levels),
            "pooled_levels": list(self.pooled_levels),
            "aggregate": self.aggregate,
            "pool_grid": self.pool_grid,
            "pool_max_dim": self.pool_max_dim,
            "precision": self.precision,
            "tile": self.tile,
            "overlap": self.overlap,
            "input_norm": self.input_norm,
        }

    def replace(self, **changes: Any) -> "FeatureExtractor":
        """This extractor with some options changed (any of ``config``'s keys), the others kept; a new
        backbone comes with its own levels. What ``--detector auto`` and ``--tune`` try."""
        cfg = {k: v for k, v in self.config.items() if k not in ("backbone", "backbone_extras")}
        cfg["backbone"] = self.spec if self.spec.extras else self.spec.name  # a custom spec passes through
        if "backbone" in changes:
            del cfg["patch_levels"], cfg["pooled_levels"]
        if all(cfg.get(k) == v for k, v in changes.items()):
            return self
        same = set(changes) <= _SAME_NETWORK  # the same network and levels: share it, and its traces (0.7 s each)
        new = FeatureExtractor(**{**cfg, **changes, "tile_batch": self.tile_batch},
                               network=self.backbone if same else None)
        new.cache = self.cache
        return new

    def with_backbone(self, backbone: str) -> "FeatureExtractor":
        """This extractor's options on another built-in backbone, at that backbone's own levels: for
        detectors that default to different backbones (``--detector auto``)."""
        return self if backbone == self.spec.name else self.replace(backbone=backbone)

    def with_input_norm(self, input_norm: str) -> "FeatureExtractor":
        """This extractor with another input normalisation (``--input-norm auto`` tries each)."""
        return self.replace(input_norm=input_norm)

    def in_fp32(self) -> "FeatureExtractor":
        """This extractor with the backbone run in fp32, the same network otherwise: what an ONNX export runs
        (ONNX has no bf16 convolution), so what sets a bf16 model's threshold for its export."""
        ext = copy.copy(self)
        ext.precision = "fp32"
        return ext

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """HxWx3 uint8 images of any size -> Bx3xhxw float tensor in [0, 1] at this extractor's size."""
        return _to_tensor([self._resize(im) for im in images])

    def _resize(self, image: np.ndarray) -> np.ndarray:
        return resize_image(image, self.size)

    def level_maps(self, x: torch.Tensor, levels: Sequence[str]) -> dict[str, torch.Tensor]:
        """Raw float32 backbone maps of the given levels, in this extractor's precision (tiled if asked)."""
        if self.spec.contrast is not None:  # input norm "standard": the whole image's statistics, not a tile's
            x = standardised(x, self.spec.contrast)
        if self.tile and (x.shape[2] > self.tile or x.shape[3] > self.tile):
            return self._tiled_maps(x, levels)
        return self._maps(x, levels)

    def _maps(self, x: torch.Tensor, levels: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.backbone(x, levels, torch.bfloat16 if self.precision == "bf16" else torch.float32, self.norm)

    def _tiled_maps(self, x: torch.Tensor, levels: Sequence[str]) -> dict[str, torch.Tensor]:
        """Each level's map of the whole input, blended from overlapping tiles run ``tile_batch`` at a time."""
        b, _, h, w = x.shape
        ys, xs = tile_starts(h, self.tile, self.overlap), tile_starts(w, self.tile, self.overlap)
        th, tw = min(self.tile, h), min(self.tile, w)
        tiles = torch.stack([x[:, :, y : y + th, x0 : x0 + tw] for y in ys for x0 in xs], 1).flatten(0, 1)
        parts: dict[str, list[torch.Tensor]] = {lv: [] for lv in levels}
        # Exported (traced for ONNX), all tiles go in one pass: a loop over the batch would fix its size.
        for chunk in [tiles] if torch.compiler.is_compiling() else tiles.split(self.tile_batch):
            for lv, m in self._maps(chunk, levels).items():
                parts[lv].append(m)  # float32 already (Backbone.forward)
        out = {}
        for lv in levels:
            s = self.spec.strides[lv]
            maps = torch.cat(parts[lv]).unflatten(0, (b, len(ys), len(xs)))  # B x ty x tx x C x th/s x tw/s
            total = maps.new_zeros(b, maps.shape[3], h // s, w // s)
            weight = maps.new_zeros(h // s, w // s)
            wy, wx = _seam_weights(ys, th, h, s), _seam_weights(xs, tw, w, s)
            for i, y in enumerate(ys):
                for j, x0 in enumerate(xs):
                    cells = (slice(y // s, (y + th) // s), slice(x0 // s, (x0 + tw) // s))
                    wt = wy[i][:, None] * wx[j][None]
                    total[(..., *cells)] += maps[:, i, j] * wt
                    weight[cells] += wt
            out[lv] = total / weight
        return out

    def __call__(self, x: torch.Tensor, pooled: bool = True) -> Features:
        """Features of a preprocessed batch; ``pooled=False`` skips the deeper levels only pooling needs."""
        return self.features(self.level_maps(x, self._levels(pooled)), pooled)

    def _levels(self, pooled: bool) -> tuple[str, ...]:
        return tuple(self.backbone.levels if pooled else self.patch_levels)

    @property
    def map_key(self) -> tuple:
        """What the backbone maps of a file depend on: the network (shared by ``replace`` where it is the same),
        the input normalisation, the input size, the precision and the tiling."""
        return (self.backbone, self.input_norm, self.size, self.precision, self.tile, self.overlap)

    def _features_of(self, paths: list[Path], x: torch.Tensor, pooled: bool) -> Features:
        """Features of a batch of files: from ``cache`` where it holds their backbone maps, the others computed."""
        if self.cache is None:
            return self(x, pooled=pooled)
        levels = self._levels(pooled)
        parts = self.cache.parts(self.map_key, levels, paths)
        missing = [i for i, m in enumerate(parts) if m is None]
        if missing:
            t = time.perf_counter()
            maps = self.level_maps(x if len(missing) == len(paths) else x[missing], levels)
            self.cache.spent(self.map_key, len(missing), time.perf_counter() - t)
            self.cache.put(self.map_key, levels, [paths[i] for i in missing], maps)
            if len(missing) == len(paths):
                return self.features(maps, pooled)
            for j, i in enumerate(missing):  # some held (the final fit after --tune's trials): the rest computed
                parts[i] = {lv: m[j] for lv, m in maps.items()}
        return self.features({lv: torch.stack([m[lv] for m in parts]) for lv in levels}, pooled)  # type: ignore

    def features(self, maps: dict[str, torch.Tensor], pooled: bool = True) -> Features:
        """Patch, pooled and embedding features from the backbone's level maps."""
        grid = None
        parts = []
        for lv in self.patch_levels:
            f = maps[lv]
            if self.aggregate > 1:
                f = F.avg_pool2d(f, self.aggregate, stride=1, padding=self.aggregate // 2, count_include_pad=False)
            if grid is None:
                grid = f.shape[-2:]
            elif f.shape[-2:] != grid:
                f = F.interpolate(f, size=grid, mode="bilinear", align_corners=False)
            parts.append(f)
        pools = {lv: self._pool(lv, maps[lv]) for lv in self.pooled_levels} if pooled else {}
        return Features(patches=torch.cat(parts, dim=1), pooled=pools, embedding=self.embed(maps) if pooled else None)

    @staticmethod
    def embed(maps: dict[str, torch.Tensor]) -> torch.Tensor:
        """B x E image embedding: each level averaged over the whole image and L2-normalised, concatenated.

        Compact (a few hundred numbers per image, so 100,000 images fit in memory) and
        independent of the pooling grid; what review re-ranking learns a person's interest from.
        """
        parts = [F.normalize(m.float().mean((2, 3)), dim=1) for m in maps.values()]
        return torch.cat(parts, 1) / len(parts) ** 0.5

    def _pool(self, level: str, f: torch.Tensor) -> torch.Tensor:
        g = self._grids.get(level)
        if g is None:
            g = max(1, self.pool_grid)
            while g > 1 and f.shape[1] * g * g > self.pool_max_dim:
                g -= 1
            self._grids[level] = g
        return F.adaptive_avg_pool2d(f, g).flatten(1)

    def iter_batches(
        self,
        paths: Sequence[Path],
        batch_size: int = 32,
        keep_images: bool = True,
        pooled: bool = True,
        features: bool = True,
    ) -> Iterator[Batch]:
        """Read, preprocess and extract in batches; each batch names its own unreadable files.

        The files of a batch are decoded and resized by ``readers`` threads at once (decoding and
        resizing release the GIL), then the backbone runs on all cores. Reading is not overlapped with
        the backbone: a reader thread running beside the backbone's threads stalls them (on 2 cores,
        magnetic_tile: 66-74 images/s overlapped against 82-91 in turn; bench/read_overlap.py).
        A chunk in which no file was readable comes back as a batch with no images.
        """
        paths = list(paths)
        chunks = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
        if keep_images:
            chunks = [part for chunk in chunks for part in _within_pixels(chunk, MAX_KEPT_PIXELS)]
        workers = min(self.readers, batch_size, len(paths))
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            # one file at a time: no thread to start (batch-1 latency); threads note files for this run (in_context)
            read_all = (lambda f, xs: pool.map(in_context(f), xs)) if workers > 1 else map
            for chunk in chunks:
                got, skipped = self._read_chunk(chunk, read_all, None if keep_images else self.cache)
                if not got:
                    yield Batch(paths=[], images=[], features=None, inputs=None, skipped=skipped)
                    continue
                x = _to_tensor([small for _, _, small in got])
                feats = self._features_of([p for p, _, _ in got], x, pooled) if features else None
                images = [im if keep_images else np.empty((*im.shape[:2], 0), np.uint8) for _, im, _ in got]
                yield Batch(paths=[p for p, _, _ in got], images=images, features=feats, inputs=x, skipped=skipped)
                del got, images, x, feats  # before the next chunk is read: two chunks' originals were held at once

    def _read_chunk(self, chunk: list[Path], read_all: Callable, cache: "MapCache | None"
                    ) -> tuple[list[tuple[Path, np.ndarray, np.ndarray]], list[tuple[Path, str]]]:
        """(path, image, resized image) of each readable file of a chunk, in order, and the unreadable ones. With a
        cache (``--tune``'s trials, where the images are not kept), the resized images it holds are not read again
        and the image is an empty array of the original's size, and a file it knows to be unreadable is skipped
        without reading it (or warning about it) again."""
        held = cache.inputs_of(chunk, self.size) if cache is not None else {}
        known = cache.unreadable if cache is not None else {}
        todo = [p for p in chunk if p not in held and str(p) not in known]
        t = time.perf_counter()
        results = dict(zip(todo, read_all(self._read_one, todo)))
        if cache is not None:
            cache.read_for(len(todo), time.perf_counter() - t)
        got: list[tuple[Path, np.ndarray, np.ndarray]] = []
        skipped: list[tuple[Path, str]] = []
        for p in chunk:
            if p in held:
                shape, small = held[p]
                got.append((p, np.empty((*shape, 0), np.uint8), small))
                continue
            if str(p) in known:  # named once (iter_images warned), skipped again without another warning
                skipped.append((p, known[str(p)]))
                continue
            read, bad = results[p]
            got += read
            skipped += bad
            if cache is not None:
                cache.put_inputs(read, self.size)
                known.update((str(q), why) for q, why in bad)
        return got, skipped

    def _read_one(self, path: Path) -> tuple[list[tuple[Path, np.ndarray, np.ndarray]], list[tuple[Path, str]]]:
        """([(path, image, resized image)], []) for an image; ([], [(path, reason)]) for a file that is not one."""
        skipped: list[tuple[Path, str]] = []
        return [(p, im, self._resize(im)) for p, im in iter_images([path], skipped)], skipped


def check_tiling(tile: int | None, overlap: int, size: tuple[int, int], stride: int) -> tuple[int | None, int]:
    """Validated (tile, overlap): both multiples of the backbone's coarsest stride, as must be the input size,
    so that every tile's feature cells line up with the whole image's."""
    if not tile:
        return None, int(overlap)
    tile, overlap = int(tile), int(overlap)
    if tile < MIN_SIZE or tile % stride:
        raise InputError(f"tile size must be a multiple of {stride} and at least {MIN_SIZE} (got {tile})")
    if overlap < 0 or overlap % stride or overlap >= tile:
        # --overlap is 64 unless given: `--tile 64` alone was refused for an overlap the user never set
        hint = (f"; {option('overlap')} is 64 unless given: with {setting('tile', tile)} give e.g. "
                f"{setting('overlap', tile // 2 // stride * stride)}")
        raise InputError(f"tile overlap must be a multiple of {stride} below the tile size {tile} (got {overlap}"
                         f"{hint if overlap >= tile else ''})")
    if any(side % stride for side in size):
        raise InputError(f"with tiling the input size must be a multiple of {stride} on each side "
                         f"(got {size[0]}x{size[1]}); set {option('image_size')}, e.g. "
                         f"{-(-size[0] // stride) * stride}x{-(-size[1] // stride) * stride}")
    return tile, overlap


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where tiles start along a side: every ``tile - overlap`` pixels, the last one flush with the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    return starts + [length - tile]


def _seam_weights(starts: list[int], tile: int, length: int, stride: int) -> list[torch.Tensor]:
    """Per tile, the weight of each of its feature cells along one side: the squared distance to the nearest
    border the tile shares with another tile (a border on the image's edge costs nothing: the whole image
    has it too). Overlapping tiles cross-fade, and cells next to a tile's zero padding count least."""
    n = tile // stride
    centre = torch.arange(n, dtype=torch.float32) + 0.5
    far = torch.full((n,), float(n))
    return [torch.minimum(centre if st > 0 else far, n - centre if st + tile < length else far).square()
            for st in starts]


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An HxWx3 uint8 image at (height, width), by area averaging: how every image reaches the backbone
    (one function, so exported models' runners resize exactly as fitting did)."""
    h, w = size
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)


def _to_tensor(resized: Sequence[np.ndarray]) -> torch.Tensor:
    """Same-size HxWx3 uint8 images -> a Bx3xHxW float tensor in [0, 1]."""
    return torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).float().div_(255.0)


def upsample_map(patch_map: np.ndarray, size: tuple[int, int], sigma: float = 0.5) -> np.ndarray:
    """Patch-grid scores -> a smooth map at the original image size (H, W).

    The Gaussian smoothing of the papers (sigma = 4 px at 224-256 px input) is done on
    the patch grid (sigma in patches), which is the same up to interpolation and far cheaper
    than blurring the full-resolution map.
    """
    h, w = size
    m = patch_map.astype(np.float32)
    if sigma > 0:
        m = cv2.GaussianBlur(m, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REPLICATE)
    return cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)


@dataclass
class LazyMap:
    """A patch-grid map and the image size (H, W) it is drawn at, drawn (:func:`upsample_map`) on the first read
    of ``full`` only: a run that writes no picture, map file or report card of an image never draws its map
    (144 MB and a second of a 6000x6000 photo's)."""

    grid: np.ndarray
    size: tuple[int, int]

    @cached_property
    def full(self) -> np.ndarray:
        """HxW float32 at the image's size."""
        return upsample_map(self.grid, self.size)

    def at(self, size: tuple[int, int]) -> np.ndarray:
        """The map drawn at another size (H, W) from the grid: a report card's, without the full-size one."""
        return upsample_map(self.grid, size)


# The original pixels a batch may hold for its overlays (``keep_images``, as predict reads them): about 400 MB of
# RGB. 32 photos of 64 megapixels were read at once and kept for their overlays, about 11 GB.
MAX_KEPT_PIXELS = 2**27


def _within_pixels(chunk: list[Path], budget: int) -> list[list[Path]]:
    """``chunk`` cut, in order, into runs whose images (sizes from their headers, 57 us a JPEG against 0.8 ms to
    read it) hold at most ``budget`` pixels, or a single image: batches of ordinary images stay as they were, so
    their scores do not change. A file whose header cannot be read counts 0 (its read names the problem)."""
    if len(chunk) < 2:
        return [chunk]
    out: list[list[Path]] = [[]]
    total = 0
    for p in chunk:
        try:
            w, h = image_size(p)
            n = w * h
        except (ImageError, OSError, ValueError):
            n = 0
        if out[-1] and total + n > budget:
            out.append([])
            total = 0
        out[-1].append(p)
        total += n
    return out
