"""The one protocol every detector follows, and the model directory format.

A detector is fitted on normal images only and scores images into an image
score and an anomaly map at the original resolution. Subclasses implement
three small methods on features (never on files):

* ``_fit(batches)`` learns from an iterator of feature batches;
* ``_score(features)`` returns image scores and patch-grid maps for a batch;
* ``_calibration_scores()`` returns image scores of normal training images
  that the model did not see (cross-validation or leave-one-out), so the
  threshold is set from normal data alone.

Learned state lives in attributes ending in ``_`` and is saved as safetensors;
the rest (backbone, image size, threshold, ...) as JSON. Loading never unpickles.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Sequence

import numpy as np
import torch
from safetensors.torch import save_file

from .. import __version__
from ..backbones import custom_backbone
from ..data import InputError
from ..features import Batch, FeatureExtractor, Features, upsample_map
from ..modelfile import FORMAT_VERSION, MODEL_JSON, MODEL_TENSORS, one_line, read_model
from ..progress import progress_bar

log = logging.getLogger("normalcy")


@dataclass
class Result:
    """What scoring a set of images gives back."""

    paths: list[Path]
    scores: np.ndarray  # image scores, one per readable image
    maps: list[np.ndarray]  # anomaly maps, HxW float32 at each image's original size
    decisions: np.ndarray  # bool, score >= threshold
    threshold: float
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    images: list[np.ndarray] | None = None  # the images themselves, when asked for
    embeddings: np.ndarray | None = None  # N x E image embeddings (FeatureExtractor.embed), when asked for


class NotFittedError(RuntimeError):
    """A detector was used before fit() or load()."""


class Detector:
    """Base class: fit on normal images, score images, save and load."""

    name: ClassVar[str] = "base"
    uses_pooled: ClassVar[bool] = True  # False: the backbone stops after the patch levels
    uses_features: ClassVar[bool] = True  # False: no backbone at all, the detector sees batch.inputs
    needs_images: ClassVar[bool] = False  # True: fit() batches keep the original images

    def __init__(
        self,
        extractor: FeatureExtractor | None = None,
        fpr: float = 0.01,
        batch_size: int = 8,
        seed: int = 0,
    ) -> None:
        if not 0.0 < fpr < 1.0:
            raise InputError(f"fpr must be between 0 and 1, got {fpr}")
        self.extractor = extractor or FeatureExtractor()
        self.fpr = float(fpr)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.threshold_: float | None = None
        self.map_range_: tuple[float, float] | None = None
        self.n_train_: int = 0
        self._progress = True

    # -- what subclasses implement ---------------------------------------------------
    def params(self) -> dict[str, Any]:
        """Hyper-parameters saved with the model (JSON-serialisable)."""
        return {}

    def _fit(self, batches: Iterator[Batch]) -> None:
        raise NotImplementedError

    def _score(self, features: Features) -> tuple[np.ndarray, np.ndarray]:
        """-> (image scores B, patch maps B x h x w)."""
        raise NotImplementedError

    def _score_batch(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """Detectors that work on images (batch.inputs) rather than features override this."""
        assert batch.features is not None
        return self._score(batch.features)

    def _calibration_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """Image scores and patch-map values of held-out normal training images."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    # -- the shared workflow --------------------------------------------------------------
    def fit(self, paths: Sequence[Path], progress: bool = True) -> "Detector":
        """Learn normal from images; set the threshold at the target false-positive rate."""
        paths = list(paths)
        if not paths:
            raise InputError("no training images given")
        self._progress = progress  # trained detectors' loops show their bar when fit() shows one
        torch.manual_seed(self.seed)
        skipped: list[tuple[Path, str]] = []
        counted = _Counter()
        batches = self.extractor.iter_batches(paths, skipped, self.batch_size, keep_images=self.needs_images,
                                              pooled=self.uses_pooled, features=self.uses_features)
        with progress_bar(progress) as bar:
            task = bar.add_task(f"fit {self.name}: features", total=len(paths))
            # Read the first batch before _fit, which need not cope with no images at all.
            first = next(batches, None)
            if first is None:
                raise InputError(f"none of the {len(paths)} training files could be read as an image")
            self._fit(counted.wrap(itertools.chain([first], batches), lambda n: bar.advance(task, n)))
        self.n_train_ = counted.n
        self.skipped_fit_ = skipped
        calib, calib_maps = self._calibration_scores()
        self.threshold_ = float(np.quantile(calib, 1.0 - self.fpr))
        lo, hi = np.quantile(calib_maps, [0.5, 1.0]) if calib_maps.size else (0.0, 1.0)
        # The colour scale of heatmaps: normal patches sit at the bottom, the
        # highest normal patch is where colours turn hot.
        self.map_range_ = (float(lo), float(max(hi * 1.5, lo + 1e-6)))
        return self

    def iter_score(
        self, paths: Sequence[Path], skipped: list[tuple[Path, str]], batch_size: int | None = None,
        embeddings: list[np.ndarray] | None = None,
    ) -> Iterator[tuple[Path, np.ndarray, float, np.ndarray]]:
        """Stream (path, image, score, map at original size) so huge folders fit in memory.

        With an ``embeddings`` list, each yielded image's embedding is appended to it
        first (this runs the whole backbone, also for detectors that need less of it).
        """
        self._check_fitted()
        embed = embeddings is not None
        for batch in self.extractor.iter_batches(list(paths), skipped, batch_size or self.batch_size,
                                                   pooled=self.uses_pooled or embed,
                                                   features=self.uses_features or embed):
            s, pm = self._score_batch(batch)
            for k, (path, im, si, m) in enumerate(zip(batch.paths, batch.images, s, pm)):
                if embed:
                    embeddings.append(batch.features.embedding[k].numpy())  # type: ignore[union-attr]
                yield path, im, float(si), upsample_map(m, im.shape[:2])

    def score(
        self,
        paths: Sequence[Path],
        progress: bool = True,
        keep_images: bool = False,
        batch_size: int | None = None,
    ) -> Result:
        """Image scores, anomaly maps at original size and decisions for readable images."""
        self._check_fitted()
        paths = list(paths)
        skipped: list[tuple[Path, str]] = []
        out_paths: list[Path] = []
        scores: list[float] = []
        maps: list[np.ndarray] = []
        images: list[np.ndarray] = []
        with progress_bar(progress) as bar:
            task = bar.add_task(f"score {self.name}", total=len(paths))
            for path, im, s, m in self.iter_score(paths, skipped, batch_size):
                out_paths.append(path)
                scores.append(s)
                maps.append(m)
                if keep_images:
                    images.append(im)
                bar.update(task, completed=len(out_paths) + len(skipped))
        sc = np.asarray(scores, dtype=np.float64)
        return Result(
            paths=out_paths,
            scores=sc,
            maps=maps,
            decisions=sc >= self.threshold_,
            threshold=float(self.threshold_),  # type: ignore[arg-type]
            skipped=skipped,
            images=images if keep_images else None,
        )

    def _check_fitted(self) -> None:
        if self.threshold_ is None:
            raise NotFittedError(f"this {self.name} detector is not fitted: call fit() or load a model")

    # -- model directory ----------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write model.safetensors and model.json into ``directory``."""
        self._check_fitted()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(tensors, str(d / "model.safetensors"))
        meta = {
            "format_version": FORMAT_VERSION,
            "normalcy_version": __version__,
            "detector": self.name,
            "params": self.params(),
            "extractor": self.extractor.config,
            "fpr": self.fpr,
            "threshold": self.threshold_,
            "map_range": list(self.map_range_ or (0.0, 1.0)),
            "n_train": self.n_train_,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        log_ = getattr(self, "train_log_", None)
        if log_ is not None:  # trained detectors: how training went, for the record
            meta["training"] = {"steps": log_.steps, "seconds": round(log_.seconds, 2),
                                "final_loss": log_.losses[-1] if log_.losses else None,
                                "stopped_by": log_.stopped_by}
        (d / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
        return d


def holdout_count(n: int, fraction: float) -> int:
    """How many of n training images trained detectors keep out of training to calibrate on:
    ``fraction`` of them, at least one, and none when there is only one image."""
    return min(max(1, round(fraction * n)), n - 1) if n > 1 else 0


class _Counter:
    """Counts images flowing through a batch iterator and reports progress."""

    def __init__(self) -> None:
        self.n = 0

    def wrap(self, batches: Iterable[Batch], advance: Any) -> Iterator[Batch]:
        for b in batches:
            self.n += len(b.paths)
            advance(len(b.paths))
            yield b


def load(directory: str | Path, trust_code: bool = False) -> Detector:
    """Load a model directory written by ``Detector.save``; every problem is one InputError line.

    A model is data: one whose backbone is custom Python code is refused unless
    ``trust_code`` (see ``normalcy.modelfile``), so loading a stranger's model runs nothing.
    """
    from . import DETECTORS

    d = Path(directory)
    meta, tensors = read_model(d, trust_code=trust_code)
    meta_path, state_path = d / MODEL_JSON, d / MODEL_TENSORS
    cls = DETECTORS.get(meta.detector)
    if cls is None:
        raise InputError(f"{meta_path}: unknown detector {meta.detector!r}; this normalcy has {sorted(DETECTORS)}")
    ex = meta.extractor
    try:
        backbone: Any = ex.backbone
        if ex.backbone_extras is not None:  # a custom backbone: rebuilt from its (trusted, hashed) code
            backbone = custom_backbone(**ex.backbone_extras.model_dump())
        extractor = FeatureExtractor(backbone=backbone, **ex.model_dump(exclude={"backbone", "backbone_extras"}))
        det = cls(extractor=extractor, fpr=meta.fpr, batch_size=meta.batch_size, seed=meta.seed, **meta.params)
    except InputError as err:
        raise InputError(f"{meta_path}: {err}") from None
    except (TypeError, ValueError, KeyError, RuntimeError, AssertionError) as err:
        raise InputError(f"{meta_path}: does not describe a {meta.detector} model: {one_line(err)}") from None
    try:
        det.load_state_dict(tensors)
    except InputError as err:
        raise InputError(f"{state_path}: {err}") from None
    except KeyError as err:
        raise InputError(f"{state_path}: does not fit a {meta.detector} model: missing tensor {err}") from None
    except (ValueError, RuntimeError, AssertionError, TypeError, IndexError) as err:
        raise InputError(f"{state_path}: does not fit a {meta.detector} model: {one_line(err)}") from None
    det.threshold_ = meta.threshold
    det.map_range_ = (meta.map_range[0], meta.map_range[1])
    det.n_train_ = meta.n_train
    return det
