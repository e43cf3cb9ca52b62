"""The one protocol every detector follows.

A detector is fitted on normal images only and scores images into an image
score and an anomaly map at the original resolution. ``fit`` and ``score`` take
image files, or the images themselves (an N x H x W x 3 uint8 array, or a list of
H x W x 3 uint8 arrays). A subclass writes two hooks:

* ``_fit(batches, held, progress)`` learns from an iterator of batches of normal training
  images (features, or the resized images for detectors without a backbone). It may return
  a ``Calibration``: image scores and patch-map values of normal images the model
  did not learn from (cross-validation, leave-one-out). Otherwise the base has held
  out a ``holdout`` fraction of the training images (``held``) and scores them.
  ``progress``: whether a training loop shows its own progress bar;
* ``_score(batch)`` returns image scores and patch-grid maps for a batch.

and may declare:

* ``Params``, the hyper-parameters: a pydantic model, the one declaration of each
  parameter. The base validates them and sets each as an attribute of the same name
  (``det.steps``), so a subclass declares no class annotation for them;
* ``holdout``, the fraction of training images kept out of ``_fit`` to calibrate on
  (0 by default: the detector calibrates itself); a ``holdout`` field of ``Params`` sets it;
* ``metadata()``, extra entries for model.json (trained detectors: how training went);
* ``_build()``, to create networks after loading.

Everything else is the base's, written once: seeding, the hold-out split, the
threshold at the target false-positive rate (an image is anomalous when its score
is at or above it), the heatmap colour range, decisions, and the learned state:
the attributes annotated on the class with names ending in ``_`` (arrays, tensors,
dicts of them, torch modules), saved as safetensors beside a model.json built and
validated by ``modelfile.ModelMeta``. Loading never unpickles.

A model whose backbone runs in bf16 gets a second threshold, ``threshold_fp32_``, for its scores with the
backbone in fp32, which is what its ONNX export computes: the base scores a sample of the calibration images
again with fp32 features, as unseen (the held-out images; or through the ``held_out`` of the ``Calibration``
that ``_fit`` returned: the model of the other folds, the bank without the image's own patches).
"""

from __future__ import annotations

import inspect
import itertools
import json
import logging
import time
import types
import typing
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar, Iterable, Iterator, Literal, Optional, Sequence

import numpy as np
import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from safetensors.torch import save_file
from sklearn.base import BaseEstimator
from torch import nn

from normalcy.detectors.modelfile import (
    FORMAT_VERSION,
    MODEL_TENSORS,
    BatchSize,
    ModelMeta,
    Seed,
)
from normalcy.errors import InputError, NotFittedError, fpr_out_of_range, option
from normalcy.files import MODEL_JSON, short_repr, write_model_files
from normalcy.images.features import MIN_SIZE, Batch, FeatureExtractor, Features, LazyMap, upsample_map
from normalcy.images.io import input_paths
from normalcy.numerics.stats import check_fpr_unchanged, threshold_at
from normalcy.progress import progress_bar
from normalcy.version import __version__

log = logging.getLogger("normalcy")
# The note that a threshold rests on few images (a log record's msg: --detector auto and --tune drop it for their
# trials, whose thresholds no one uses).
FEW_CALIBRATION = "%s: the threshold rests on %d held-out normal image(s); 20 or more make it reliable"

Images = str | Path | Sequence[str | Path] | Sequence[np.ndarray] | np.ndarray
"""What ``fit`` and ``score`` take: image files (one path: a folder's images, or one file), or images as uint8
arrays (N x H x W x 3, or a list of H x W x 3)."""


class Maps(Sequence[np.ndarray]):
    """Anomaly maps of scored images, held at the patch grid and drawn at full size only when read.

    ``maps[i]`` is image i's map at the image's original size, as a list of full-size maps would give,
    but nothing more than the patch grids is held: a test set of 1600x800 images would otherwise hold
    5 MB of map per image. ``at(i, size)`` draws a map at another size (pixel metrics at a capped side).
    ``shrink``: pixel metrics take each map at its image's size, shrunk by area averaging
    (``evaluation.evaluate.maps_at``), as they did when MuSc gave full-size maps, so its metrics stay as they were.
    """

    def __init__(self, grids: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]], shrink: bool = False) -> None:
        if len(grids) != len(sizes):
            raise ValueError(f"{len(grids)} patch maps for {len(sizes)} image sizes")
        self.grids = list(grids)
        self.sizes = [(int(h), int(w)) for h, w in sizes]
        self.shrink = shrink

    def __len__(self) -> int:
        return len(self.grids)

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        return self.at(i, self.sizes[i])

    def at(self, i: int, size: tuple[int, int]) -> np.ndarray:
        """Map i drawn at size (height, width)."""
        return upsample_map(self.grids[i], size)

    def lazy(self, i: int) -> LazyMap:
        """Map i at its image's size, not drawn yet."""
        return LazyMap(self.grids[i], self.sizes[i])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or len(other) != len(self):
            return False
        return all(np.array_equal(a, b) for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Maps({len(self)} maps)"


@dataclass
class Result:
    """What scoring a set of images gives back."""

    paths: list[Path]
    scores: np.ndarray  # image scores, one per readable image
    maps: Sequence[np.ndarray]  # anomaly maps, HxW float32 at each image's original size (Maps: drawn when read)
    decisions: np.ndarray  # bool, score >= threshold
    threshold: float
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    images: list[np.ndarray] | None = None  # the images themselves, when asked for
    embeddings: np.ndarray | None = None  # N x E image embeddings (FeatureExtractor.embed), when asked for


@dataclass
class Scored:
    """One scored image, as ``iter_score`` yields it."""

    path: Path
    image: np.ndarray  # HxWx3 uint8, original size
    score: float
    grid: np.ndarray  # the patch-grid map the detector gave
    anomalous: bool
    embedding: np.ndarray | None = None

    @cached_property
    def lazy_map(self) -> LazyMap:
        """The map at the image's original size, not drawn yet (``RunWriter.add`` draws it where it is used)."""
        return LazyMap(self.grid, self.image.shape[:2])

    @property
    def map(self) -> np.ndarray:
        """HxW float32 at the image's original size, drawn on first use."""
        return self.lazy_map.full


@dataclass
class Skipped:
    """A file that could not be scored, and why."""

    path: Path
    reason: str


def collect(records: Iterable[Scored | Skipped], threshold: float, keep_images: bool = False) -> Result:
    """The Result of streamed records (``iter_score``); decoded images are dropped as they come unless kept,
    so a big folder fits in memory."""
    done: list[Scored] = []
    skipped: list[tuple[Path, str]] = []
    sizes: list[tuple[int, int]] = []
    for rec in records:
        if isinstance(rec, Skipped):
            skipped.append((rec.path, rec.reason))
            continue
        sizes.append(rec.image.shape[:2])
        if not keep_images:  # an empty image, not a view, so the decoded pixels are freed
            rec = Scored(rec.path, np.empty((0, 0, 3), np.uint8), rec.score, rec.grid, rec.anomalous)
        done.append(rec)
    sc = np.asarray([r.score for r in done], dtype=np.float64)
    return Result(paths=[r.path for r in done], scores=sc, maps=Maps([r.grid for r in done], sizes),
                  decisions=sc >= threshold, threshold=float(threshold), skipped=skipped,
                  images=[r.image for r in done] if keep_images else None)


@dataclass
class Calibration:
    """Scores of normal images the model did not learn from: they set the threshold and colour range."""

    scores: np.ndarray  # one image score per image
    map_values: np.ndarray  # patch-map values of those images (any shape)
    # (batch of training images, their positions in the training stream) -> image scores of each by a model that
    # did not learn it, as ``scores`` were made: with other features (fp32) for a bf16 model's fp32 threshold
    held_out: Callable[[Batch, np.ndarray], np.ndarray] | None = None


class HyperParams(BaseModel):
    """Base of each detector's hyper-parameters: typos and out-of-range values are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_flag_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        """pydantic takes True for 1 (``window=True`` was a window of one row, ``seed=True`` seed 1): a flag given
        where a number belongs is a mistake, named. Where no number belongs (``image_score``'s names, ``levels``,
        ``candidates``), pydantic's own message says what does."""
        kind = cls.model_fields[info.field_name].annotation
        if _flag_for_a_number(value, kind):
            raise PydanticCustomError("flag_for_number", "a number is wanted here, not a flag")
        return value


def _flag_for_a_number(value: Any, kind: Any) -> bool:
    """Whether ``value`` is a flag where a number belongs, or holds one where its tuple's item is a number
    (``channels=(True, 32, 32)`` was a first width of 1)."""
    if isinstance(value, bool):
        return bool not in (kind, *typing.get_args(kind)) and _takes_a_number(kind)
    if isinstance(value, (tuple, list)):
        return any(_flag_for_a_number(item, item_kind) for item, item_kind in zip(value, _item_kinds(kind)))
    return False


def _item_kinds(kind: Any) -> Iterable[Any]:
    """The types of a tuple field's items in order (``tuple[int, ...]``: int without end); none for another
    type. Optional and Annotated tuples are looked into."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is tuple:
        return itertools.repeat(args[0]) if len(args) == 2 and args[1] is Ellipsis else args
    if origin is Annotated:
        return _item_kinds(args[0])
    if origin is typing.Union or origin is types.UnionType:
        return next((kinds for kinds in map(_item_kinds, args) if kinds), ())
    return ()


def _takes_a_number(kind: Any) -> bool:
    """Whether a field's type is a number (int, float), perhaps Optional, in a union or Annotated with limits."""
    if kind in (int, float):
        return True
    origin = typing.get_origin(kind)
    return (origin is typing.Union or origin is types.UnionType or origin is Annotated) and any(
        _takes_a_number(k) for k in typing.get_args(kind))


def _multiple_of_32(v: int) -> int:
    if v % 32:
        raise ValueError("must be a multiple of 32 (the networks halve the image 5 times)")
    return v


InputSize = Annotated[int, Field(ge=32, le=1024), AfterValidator(_multiple_of_32)]
"""The square input size of a trained detector's own networks."""

# Quantiles of the normal (held-out) patches' map values where overlay colours begin and reach full heat. On
# magnetic_tile: 15.5 and 28.3 (the old range, median to 1.5x the highest normal patch, was 11.3 to 64.3, so
# defects showed dark blue under a tint over every part).
MAP_RANGE = (0.9, 0.999)
# pixels of backbone input a batch holds at most: a 4096 x 4096 input takes about 2.3 GB of activations, so
# such images go one at a time (8 images of 1024 x 1024 and anything smaller keep the batch size)
BATCH_PIXELS = 8 * 1024 * 1024
# Images whose scores a bf16 fit takes again with fp32 features, for the threshold of its fp32 export
# (``Detector._fp32_threshold``): at most this many, a quarter of the images and BATCH_PIXELS of input.
FP32_SAMPLE = 16
PROBE_IMAGES = 4  # training images scored to see that scores vary, where one held-out image cannot show it


def batch_for(size: tuple[int, int], batch_size: int) -> int:
    """How many inputs of ``size`` (height, width) go to a batch: at most ``batch_size`` and BATCH_PIXELS of
    input, at least one (memory, not speed: the PyTorch path and an exported graph alike)."""
    return max(1, min(batch_size, BATCH_PIXELS // (size[0] * size[1])))


# Upper bounds of the parameters several detectors share: generous, so that only a typo or a tampered
# model.json (steps 10**12) meets them, never a real setting.
Steps = Annotated[int, Field(ge=1, le=10_000_000)]
Seconds = Annotated[float, Field(gt=0, le=30 * 86400, allow_inf_nan=False)]  # a training budget: at most 30 days
LearningRate = Annotated[float, Field(gt=0, le=10)]
Width = Annotated[int, Field(ge=1, le=4096)]  # channels, hidden units


class TrainedParams(HyperParams):
    """Base of a trained detector's hyper-parameters: the wall-clock training budget they share (``--time-budget``;
    each declares its own ``steps``)."""

    time_budget: Optional[Seconds] = Field(600.0, description="seconds; None: steps alone")


def param_repr(det: Any, params: type[HyperParams], defaults: dict[str, Any] | None = None) -> str:
    """``Class(name=value, ...)`` for the parameters of ``params`` (and of ``defaults``: more names and their
    defaults) whose values differ from their defaults, as scikit-learn shows an estimator."""
    fields = {k: f.get_default(call_default_factory=True) for k, f in params.model_fields.items()} | (defaults or {})
    shown = [f"{k}={getattr(det, k)!r}" for k, d in fields.items() if hasattr(det, k) and getattr(det, k) != d]
    return f"{type(det).__name__}({', '.join(shown)})"


def validation_message(where: str, err: ValidationError) -> str:
    """One line from a pydantic error: 'where: field: problem (got value)'."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "value"
    got = first.get("input")
    shown = "" if isinstance(got, dict) else f" (got {short_repr(got)})"
    more = f" [and {err.error_count() - 1} more]" if err.error_count() > 1 else ""
    return f"{where}: {loc}: {first['msg'].lower()}{shown}{more}"


def as_given(given: dict[str, Any], validated: HyperParams) -> Iterator[tuple[str, Any]]:
    """The validated parameters, each the very object given where validation left it as it was (same type and
    value). Why: scikit-learn's ``clone`` refuses a constructor that replaces a parameter, and pydantic rebuilds
    every tuple (``candidates``, ``channels``): "Cannot clone object ..., as the constructor either does not set
    or modifies parameter"."""
    for key, value in validated:
        same = key in given and type(given[key]) is type(value) and given[key] == value
        yield key, given[key] if same else value


def features_of(extractor: FeatureExtractor) -> dict[str, Any]:
    """What the features an extractor gives are (its config but the precision: bf16 and fp32 give the same
    features, to rounding, and an export scores with fp32): a fitted model's learned state is of them."""
    return {k: v for k, v in extractor.config.items() if k != "precision"}


class ParamsEstimator(BaseEstimator):
    """What makes an image or series detector a scikit-learn estimator: ``get_params``, ``set_params`` and so
    ``sklearn.base.clone`` (an unfitted copy), and ``check_is_fitted`` (learned attributes, ending in ``_``,
    appear at fit or load only). The parameters are ``__init__``'s named ones, read from its signature as
    scikit-learn reads them, and the fields of ``Params``, which its ``**params`` takes: each declared once.
    As with scikit-learn, ``set_params`` checks names, and ``fit`` checks values."""

    Params: ClassVar[type[HyperParams]]

    @classmethod
    def _get_param_names(cls) -> list[str]:
        return sorted({*super()._get_param_names(), *cls.Params.model_fields})

    def set_params(self, **params: Any) -> Any:
        """Set parameters by name, as scikit-learn's; a name of a parameter's own (``extractor__tile``) is refused
        naming it (none is an estimator: scikit-learn's said "'FeatureExtractor' object has no attribute
        'set_params'")."""
        for key in params:
            name, nested, _ = key.partition("__")
            if nested and name in self._get_param_names():
                raise ValueError(f"{type(self).__name__}.set_params: {key!r}: {name} is not an estimator with "
                                 f"parameters of its own; set it as a whole ({name}=...)")
        return super().set_params(**params)

    def __sklearn_is_fitted__(self) -> bool:
        """Fitted or loaded: ``threshold_`` is set at the end of a fit, and by load (``check_is_fitted`` asks this)."""
        return getattr(self, "threshold_", None) is not None

    def _forget(self) -> None:
        """Drop every learned attribute (ending in ``_``), as a fit begins: a fit that then fails leaves an unfitted
        detector, not the earlier fit's threshold beside this one's columns or arrays."""
        for key in [k for k in vars(self) if k.endswith("_") and not k.startswith("_")]:
            delattr(self, key)


class _Common(HyperParams):
    """What every detector takes: the target false-positive rate, the batch size, the seed."""

    fpr: float = Field(gt=0, lt=1)
    batch_size: BatchSize
    seed: Seed


TrainColour = Literal["grey", "colour", "mixed", "unknown"]  # the training images' kind (``train_colour_``)

# Attributes the base owns and saves in model.json rather than as tensors.
_BASE_LEARNED = {"threshold_", "threshold_fp32_", "map_range_", "n_train_", "skipped_fit_", "features_",
                 "train_colour_"}


class Detector(ParamsEstimator):
    """Base class: fit on normal images, score images, save and load."""

    name: ClassVar[str] = "base"
    Params: ClassVar[type[HyperParams]] = HyperParams  # the detector's hyper-parameters
    min_images: ClassVar[int] = 2  # fewer readable training images is an error
    uses_pooled: ClassVar[bool] = True  # False: the backbone stops after the patch levels
    uses_features: ClassVar[bool] = True  # False: no backbone at all, the detector sees batch.inputs
    default_backbone: ClassVar[str] = "efficientnet_lite0"  # without an extractor (CLI: without --backbone)
    holdout: float = 0.0  # fraction of training images kept out of _fit to calibrate on (0: _fit calibrates)
    # Why a detector is experimental (far behind gaussian/patchcore on the development sets; left out of
    # auto), said once when it is fitted; "" for the detectors worth choosing. Figures: README, Detectors.
    experimental: ClassVar[str] = ""

    threshold_: float  # the learned attributes are set by fit or load only (``check_is_fitted``)
    # a bf16 model's threshold for its scores with the backbone in fp32 (what its ONNX export computes); None for
    # a model whose backbone runs in fp32 or not at all, and for models saved before it was recorded
    threshold_fp32_: float | None
    map_range_: tuple[float, float] | None
    n_train_: int
    # whether the training images were all "grey" (R = G = B), all "colour", "mixed"; "unknown" for models saved
    # before it was recorded: scoring says when images are not of that kind (``_say_colour_mismatch``)
    train_colour_: TrainColour

    def __init__(self, extractor: FeatureExtractor | None = None, fpr: float = 0.01, batch_size: int = 8,
                 seed: int = 0, **params: Any) -> None:
        self._keep_valid({"fpr": fpr, "batch_size": batch_size, "seed": seed}, params)
        self.extractor = extractor or FeatureExtractor(backbone=self.default_backbone)
        if self.extractor.tile and not self.uses_features:
            raise InputError(f"detector {self.name} works on the resized image, not on backbone features: tiling "
                             f"({option('tile')}) is for gaussian, patchcore, simplenet and musc")
        # the learned attributes (threshold_, map_range_, ...) appear at fit or load only: check_is_fitted
        self.choice: dict[str, Any] | None = None  # --detector auto: what was chosen, for model.json

    # -- what subclasses implement ---------------------------------------------------
    def _fit(self, batches: Iterator[Batch], held: Sequence[Batch], progress: bool) -> Calibration | None:
        """Learn from the training batches. ``held``: the held-out batches (empty when ``holdout`` is 0),
        for detectors that normalise on unseen normal images; the base scores them afterwards.
        ``progress``: show a training loop's own bar (fit() shows one)."""
        raise NotImplementedError

    def scoring(self, exported: bool = False) -> nn.Module:
        """The scoring as a torch module, (batch inputs, features) -> (image scores B, patch maps B x h x w):
        ``_score`` runs it, and ONNX export traces it after the backbone (``exported``: the graph's variant)."""
        raise NotImplementedError

    @torch.inference_mode()
    def _score(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """-> (image scores B, patch maps B x h x w), by the detector's scoring module."""
        scores, maps = self.scoring()(batch.inputs, batch.features)
        return scores.double().numpy(), maps.numpy()

    def _build(self) -> None:
        """Create the detector's networks from its parameters and loaded arrays (trained detectors)."""

    def metadata(self) -> dict[str, Any]:
        """Entries this detector adds to model.json (``ModelMeta``'s optional fields, e.g. ``training``)."""
        return {}

    # -- parameters ----------------------------------------------------------------------
    def __repr__(self) -> str:
        """The class and the parameters that differ from their defaults (``PatchCore(fpr=0.05,
        coreset_ratio=0.2)``; Python's default named no parameter). The feature extractor is not shown."""
        common = inspect.signature(Detector.__init__).parameters  # their defaults, as declared there
        return param_repr(self, type(self).Params, {k: common[k].default for k in _Common.model_fields})

    def params(self) -> dict[str, Any]:
        """Hyper-parameters, as saved with the model (JSON-serialisable)."""
        values = {k: getattr(self, k) for k in type(self).Params.model_fields}
        return type(self).Params(**values).model_dump(mode="json")

    def _check_params(self) -> None:
        """Validate the parameters again by ``__init__``'s rules and keep them as validated. Why: one set as an
        attribute after construction (``det.fpr = 5``) was used unchecked: a fit failed at its end with numpy's
        "Quantiles must be in the range [0, 1]", or inside with a TypeError."""
        self._keep_valid({k: getattr(self, k) for k in _Common.model_fields},
                         {k: getattr(self, k) for k in type(self).Params.model_fields})

    def _keep_valid(self, common: dict[str, Any], params: dict[str, Any]) -> None:
        """Set the common parameters (fpr, batch_size, seed) and the detector's own as ``_Common`` and ``Params``
        validate them (each the very object given where validation kept it, see ``as_given``); one InputError
        line when one is invalid."""
        problem = fpr_out_of_range(common.get("fpr"))
        if problem:
            raise InputError(f"detector {self.name}: {problem}")
        try:
            checked = [*as_given(common, _Common(**common)), *as_given(params, type(self).Params(**params))]
        except ValidationError as err:
            raise InputError(validation_message(f"detector {self.name}", err)) from None
        for key, value in checked:
            setattr(self, key, value)

    # -- the shared workflow --------------------------------------------------------------
    def _batches(self, items: Sequence[Any], batch_size: int | None = None, embed: bool = False,
                 keep_images: bool = False) -> Iterator[Batch]:
        """Batches of image files, or of images given as arrays (named ``array[i]``)."""
        size, pooled, features = batch_size or self.batch_size, self.uses_pooled or embed, self.uses_features or embed
        if (features or pooled) and not self.extractor.tile:  # large inputs: fewer at a time (memory, not speed)
            size = batch_for(self.extractor.size, size)
        if not (len(items) and isinstance(items[0], np.ndarray)):
            yield from self.extractor.iter_batches(list(items), size, keep_images=keep_images, pooled=pooled,
                                                   features=features)
            return
        for start in range(0, len(items), size):
            images = [_image(im, start + k) for k, im in enumerate(items[start:start + size])]
            x = self.extractor.preprocess(images)
            yield Batch(paths=[Path(f"array[{start + k}]") for k in range(len(images))],
                        images=images if keep_images else [np.empty((*im.shape[:2], 0), np.uint8) for im in images],
                        features=self.extractor(x, pooled=pooled) if features else None, inputs=x)

    def fit(self, images: Images, *, progress: bool = True, fp32_threshold: bool = True) -> "Detector":
        """Learn normal from images (files or arrays); set the threshold at the target false-positive rate.
        The options are keywords: ``fit(X, y)``, as scikit-learn is called, took y for ``progress`` ("The truth
        value of an array ... is ambiguous"); it is now Python's TypeError naming the positional arguments.
        ``fp32_threshold``: with a bf16 backbone, set ``threshold_fp32_`` too (False: a trial whose threshold
        no one uses, as ``--detector auto``'s and ``--tune``'s)."""
        self._check_params()
        self.choice = None  # an earlier fit's (auto, --tune): its caller sets this fit's
        paths = _items(images)
        if len(paths) < self.min_images:
            raise InputError(f"{self.name} needs at least {self.min_images} normal training images, got {len(paths)}")
        if self.experimental:
            log.warning("%s is experimental: %s (README, Detectors)", self.name, self.experimental)
        order = np.random.default_rng(self.seed).permutation(len(paths))
        n_hold = holdout_count(len(paths), self.holdout)
        held = [paths[i] for i in sorted(order[:n_hold])]
        train = [paths[i] for i in sorted(order[n_hold:])]
        self._forget()
        self.skipped_fit_ = []
        counted = _Counter(self.name, self.skipped_fit_, least=lambda n: self._check_count(n, len(paths)))
        # a bf16 backbone: a sample of the calibration images is scored again with fp32 features (threshold_fp32_)
        measure = fp32_threshold and self.extractor.precision == "bf16" and self.uses_features
        sample: list[tuple[int, Batch]] = []  # (position, one image's batch): that sample
        with torch.random.fork_rng(devices=[]):  # seeded here, once; the caller's RNG is left alone
            torch.manual_seed(self.seed)
            with progress_bar(progress) as bar:
                task = bar.add_task(f"fit {self.name}: features", total=len(paths))
                advance = lambda n: bar.advance(task, n)  # noqa: E731
                held_batches = list(counted.wrap(self._batches(held), advance, count=False))
                n_held = sum(len(b.paths) for b in held_batches)
                stream = counted.wrap(self._batches(train), advance)
                if measure and not held:  # _fit calibrates itself on its training images: the sample is of them
                    stream = self._sampled(stream, len(train), sample)
                try:
                    calib = self._fit(stream, held_batches, progress)
                except (ValueError, RuntimeError, IndexError, np.linalg.LinAlgError):
                    self._check_count(counted.n + n_held, len(paths))  # too few images explains it
                    raise
                self._check_count(counted.n + n_held, len(paths))
                if calib is None:
                    calib = self._calibration(held_batches)
                    if calib is None:  # nothing held out could be read: the training images must do
                        log.warning("%s: no held-out image was readable; calibrating on training images, "
                                    "so the threshold is optimistic", self.name)
                        calib = self._calibration(self._batches(train))
                    elif measure:  # the held-out images, which the model scores as unseen
                        calib.held_out = lambda batch, _: self._score(batch)[0]
                        rows = [(b, k) for b in held_batches for k in range(len(b.paths))]
                        sample = [(i, _row(*rows[i])) for i in sorted(self._fp32_sample(len(rows)))]
        self.n_train_ = counted.n + n_held  # readable training images, held-out ones included
        self.train_colour_ = "grey" if counted.grey == counted.seen else "colour" if not counted.grey else "mixed"
        self.features_ = features_of(self.extractor)
        self._set_threshold(calib)  # type: ignore[arg-type]
        if len(calib.scores) == 1:  # type: ignore[union-attr]
            self._say_if_scores_do_not_vary(train)
        self.threshold_fp32_ = self._fp32_threshold(calib, sample)  # type: ignore[arg-type]
        return self

    def _say_if_scores_do_not_vary(self, train: Sequence[Any]) -> None:
        """One held-out score (a trained detector on fewer than 15 images) cannot show that scores do not vary,
        so ``_set_threshold``'s check could not run: an under-trained DRAEM then gave every image the threshold's
        score and flagged them all without a word. A few training images, scored too, show it: a warning."""
        probe = self._calibration(self._batches(list(train[:PROBE_IMAGES])))
        if probe is None:
            return
        if _all_equal(np.append(probe.scores, self.threshold_)):
            log.warning("%s: the held-out image and %d training image(s) all score %.4g, the threshold, so every "
                        "image scoring it is flagged: %s", self.name, probe.scores.size, self.threshold_,
                        self._why_scores_do_not_vary())

    def _fp32_sample(self, n: int) -> set[int]:
        """Positions among n images whose scores a bf16 fit takes again with fp32 features, at random: one
        backbone call's worth (``FP32_SAMPLE``, at most a batch's pixels), and no more than a quarter of them (on
        28 images, all of them took 1.1 s and 300 MB more of a 1.7 s fit)."""
        h, w = self.extractor.size
        m = min(FP32_SAMPLE, max(1, n // 4), max(1, BATCH_PIXELS // (h * w)))
        return set(np.random.default_rng(self.seed + 2).choice(n, size=min(m, n), replace=False).tolist())

    def _sampled(self, batches: Iterator[Batch], n: int, into: list[tuple[int, Batch]]) -> Iterator[Batch]:
        """The batches as they come; the images at ``_fp32_sample(n)``'s positions among them are kept in
        ``into`` (position, the image's inputs and features)."""
        picks, seen = self._fp32_sample(n), 0
        for batch in batches:
            into += [(seen + k, _row(batch, k)) for k in range(len(batch.paths)) if seen + k in picks]
            seen += len(batch.paths)
            yield batch

    def _fp32_threshold(self, calib: Calibration, sample: Sequence[tuple[int, Batch]]) -> float | None:
        """The threshold for this bf16 model's scores with the backbone in fp32, which its ONNX export computes
        (ONNX has no bf16 convolution): the calibration scores moved by the median change of a sample's scores
        when their features are computed in fp32, each image scored as unseen, as for calibration (by the model
        that learned it, an image moves three times as much). The change is a shift more than noise (magnetic_tile,
        gaussian: +0.14 on held-out training images, spread 0.14, +0.17 on the normal test images, where scores
        spread 1.9), which 16 images measure at 6 % of the fit; a second cross-fit on fp32 features of every image
        would double it. None when there is nothing to measure (no sample, no ``held_out``)."""
        if not sample or calib.held_out is None:
            return None
        positions = np.array([pos for pos, _ in sample])
        bf16 = _joined([b for _, b in sample])
        fp32 = Batch(bf16.paths, bf16.images, self.extractor.in_fp32()(bf16.inputs, pooled=self.uses_pooled),
                     bf16.inputs)
        # both in one call: a detector that refits its held-out models (cross-validation) fits them once
        scores = np.asarray(calib.held_out(_joined([bf16, fp32]), np.concatenate([positions, positions])))
        change = float(np.median(scores[len(positions):] - scores[:len(positions)]))
        return threshold_at(calib.scores + change, self.fpr) if np.isfinite(change) else None

    def _check_count(self, n: int, given: int) -> None:
        if n == 0:
            raise InputError(f"none of the {given} training files could be read as an image")
        if n < self.min_images:
            raise InputError(f"{self.name} needs at least {self.min_images} readable normal training images, got {n}")

    def _calibration(self, batches: Iterable[Batch]) -> Calibration | None:
        """Scores of images the model did not learn from, by the detector's own ``_score``."""
        scores, values = [], []
        for batch in batches:
            if batch.paths:
                s, m = self._score(batch)
                scores.append(np.asarray(s, dtype=np.float64))
                values.append(np.asarray(m, dtype=np.float64).ravel())
        if not scores:
            return None
        return Calibration(np.concatenate(scores), np.concatenate(values))

    def _why_scores_do_not_vary(self) -> str:
        """What a calibration whose every score is the same says about the fit (``_set_threshold``'s error)."""
        return "they do not vary (identical or blank images?)"

    def _set_threshold(self, calib: Calibration) -> None:
        scores = np.asarray(calib.scores, dtype=np.float64)
        if scores.size == 0 or not np.isfinite(scores).all():
            raise InputError(f"{self.name}: scores of the normal training images are not finite numbers; "
                             "the images may be blank or identical")
        if scores.size > 1 and _all_equal(scores):
            raise InputError(f"{self.name}: the normal training images all score the same ({scores[0]:.4g}): "
                             f"{self._why_scores_do_not_vary()}, so nothing sets a threshold")
        if scores.size < 20:
            log.warning(FEW_CALIBRATION, self.name, scores.size)
        self.threshold_ = threshold_at(scores, self.fpr)
        self._threshold_fpr = float(self.fpr)  # what save and export compare fpr with (check_fpr_unchanged)
        values = np.asarray(calib.map_values, dtype=np.float64).ravel()
        values = values[np.isfinite(values)]
        lo, hi = np.quantile(values, MAP_RANGE) if values.size else (0.0, 1.0)
        # The colour scale of heatmaps: most normal patches stay uncoloured (overlay draws nothing at or below
        # lo), and what exceeds all but the rarest normal patches is at full heat.
        self.map_range_ = (float(lo), float(max(hi, lo + 1e-6)))

    @property
    def score_batch_size(self) -> int:
        """Images per scoring batch: ``batch_size`` raised to 32 for inputs of up to 224x224 pixels, fewer for
        larger inputs in proportion (the backbone runs an image 1.2-1.4x faster in batches of 32 than of 8 on 2
        cores: magnetic_tile at 160 px, 147 against 182-208 images/s). Tiled models keep ``batch_size`` (their
        tiles are batched), and so do detectors with networks of their own (DRAEM's U-Nets would hold gigabytes)."""
        if self.extractor.tile or not self.uses_features:
            return self.batch_size
        h, w = self.extractor.size
        return max(self.batch_size, min(32, 32 * 224 * 224 // (h * w)))

    def iter_score(self, images: Images, batch_size: int | None = None,
                   embeddings: bool = False, keep_images: bool = True) -> Iterator[Scored | Skipped]:
        """Stream a record per file, in order: Scored (``map`` at original size) or Skipped.

        Huge folders fit in memory this way. ``embeddings`` adds each image's embedding for
        review re-ranking; detectors that do not use the backbone then run it as well. Without
        ``keep_images`` a record's image is an empty array of the image's size.
        """
        self._check_fitted()
        fitted = getattr(self, "train_colour_", "unknown")
        odd: list[Path] = []  # images not of the training images' kind (grey or colour)
        n = 0
        for batch in self._batches(_items(images), batch_size or self.score_batch_size, embed=embeddings,
                                   keep_images=keep_images):
            for path, reason in batch.skipped:
                yield Skipped(path, reason)
            if not batch.paths:
                continue
            n += len(batch.paths)
            if fitted in ("grey", "colour") and batch.inputs is not None:
                grey = grey_images(batch.inputs).tolist()
                odd += [p for p, g in zip(batch.paths, grey) if g != (fitted == "grey")]
            s, pm = self._score(batch)
            embs = batch.features.embedding if embeddings and batch.features is not None else None
            for k, (path, im) in enumerate(zip(batch.paths, batch.images)):
                score = float(s[k])
                yield Scored(path, im, score, np.array(pm[k], dtype=np.float32), score >= self.threshold_,
                             None if embs is None else embs[k].numpy())
            del batch, im, s, pm, embs  # before the next batch is read (its images with this one's were held)
        if odd:
            self._say_colour_mismatch(odd, n)

    def _say_colour_mismatch(self, odd: Sequence[Path], n: int) -> None:
        """A model fitted on grey images scored colour ones (or the other way round) without a word: either is
        usually the wrong camera or folder. Said once per scoring run; the scores are what they were."""
        fitted = self.train_colour_
        kind = "colour" if fitted == "grey" else "grey"
        log.warning("%s: %d of %d images are %s; the model was fitted on %s images (the first: %s): the wrong "
                    "camera or folder?", self.name, len(odd), n, kind, fitted, odd[0])

    def score(self, images: Images, progress: bool = True, keep_images: bool = False,
              batch_size: int | None = None) -> Result:
        """Image scores, anomaly maps at original size (drawn when read) and decisions for readable images
        (files or arrays; arrays come back named ``array[i]``)."""
        self._check_fitted()
        paths = _items(images)
        with progress_bar(progress) as bar:
            task = bar.add_task(f"score {self.name}", total=len(paths))

            def counted() -> Iterator[Scored | Skipped]:
                for n, rec in enumerate(self.iter_score(paths, batch_size, keep_images=keep_images), 1):
                    yield rec
                    bar.update(task, completed=n)

            return collect(counted(), float(self.threshold_), keep_images)  # type: ignore[arg-type]

    def _check_fitted(self) -> None:
        """NotFittedError before fit or load; an InputError naming a parameter set after fit out of range, as
        ``fit`` checks them: one set so (``det.batch_size = 0``) was used unchecked by scoring, and ``save``
        failed with pydantic's multi-line dump."""
        if getattr(self, "threshold_", None) is None:  # set by fit or load only
            raise NotFittedError(f"this {self.name} detector is not fitted: call fit() or load a model")
        self._check_params()
        fitted, now = getattr(self, "features_", None), features_of(self.extractor)
        if fitted is not None and fitted != now:  # set_params(extractor=...) after fit: scored silently, or crashed
            changed = ", ".join(f"{k} {now[k]!r} (fitted: {fitted[k]!r})" for k in fitted if fitted[k] != now.get(k))
            raise InputError(f"detector {self.name}: its extractor is not the one it was fitted with: {changed}; "
                             "set that one back, or fit again")

    # -- learned state ----------------------------------------------------------------
    @classmethod
    def learned(cls) -> dict[str, Any]:
        """The learned attributes (annotated, ending in ``_``) and their declared types."""
        hints = typing.get_type_hints(cls)
        return {k: t for k, t in hints.items() if k.endswith("_") and not k.startswith("_") and k not in _BASE_LEARNED}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every learned attribute as named tensors: a module's parameters under ``name.``, a dict's entries too."""
        state: dict[str, torch.Tensor] = {}
        for attr in self.learned():
            key, value = attr[:-1], getattr(self, attr)
            if isinstance(value, nn.Module):
                state.update({f"{key}.{k}": v for k, v in value.state_dict().items()})
            elif isinstance(value, dict):
                state.update({f"{key}.{k}": _tensor(v) for k, v in value.items()})
            else:
                state[key] = _tensor(value)
        return {k: v.detach().contiguous().cpu() for k, v in state.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Set learned attributes from named tensors, checking names and shapes; then one trial score.

        Raises ValueError naming the tensor when something does not fit.
        """
        state = dict(state)
        modules = []
        with torch.random.fork_rng(devices=[]):
            for attr, kind in self.learned().items():
                key = attr[:-1]
                if _is_module(kind):
                    modules.append((attr, key))
                elif typing.get_origin(kind) is dict:
                    sub = {k[len(key) + 1 :]: state.pop(k) for k in list(state) if k.startswith(key + ".")}
                    if not sub:
                        raise ValueError(f"missing tensor(s) '{key}.*'")
                    setattr(self, attr, {k: _like(kind, v) for k, v in sub.items()})
                else:
                    if key not in state:
                        raise ValueError(f"missing tensor '{key}' (a model saved by an older normalcy may lack it: "
                                         "fit it again)")
                    setattr(self, attr, _like(kind, state.pop(key)))
            self._build()
        for attr, key in modules:
            sub = {k[len(key) + 1 :]: state.pop(k) for k in list(state) if k.startswith(key + ".")}
            net: nn.Module = getattr(self, attr)
            try:
                net.load_state_dict(sub, strict=True)
            except RuntimeError as err:  # torch lists every missing, unexpected or mis-shaped tensor
                detail = " ".join(str(err).split("\n", 1)[-1].split())
                raise ValueError(f"tensors '{key}.*' do not fit the network: {detail[:300]}") from None
            net.eval()
        if state:
            raise ValueError(f"unexpected tensor(s) {sorted(state)[:3]}")
        self._trial_score()

    def _trial_score(self) -> None:
        """Score one grey image: shapes that do not fit each other fail here, at load, not mid-run."""
        h, w = self.extractor.size
        x = torch.full((1, 3, h, w), 0.5)
        grey = np.full((h, w, 3), 128, np.uint8)
        feats = self.extractor(x, pooled=self.uses_pooled) if self.uses_features else None
        s, m = self._score(Batch(paths=[Path("trial")], images=[grey], features=feats, inputs=x))
        if np.shape(s) != (1,) or np.ndim(m) != 3 or len(m) != 1:
            raise ValueError(f"a trial score gave shapes {np.shape(s)} and {np.shape(m)}")
        if not (np.isfinite(s).all() and np.isfinite(m).all()):
            raise ValueError("a trial score is not finite")

    # -- model directory ----------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write model.safetensors and model.json into ``directory``."""
        self._check_fitted()
        check_fpr_unchanged(self.name, self.fpr, getattr(self, "_threshold_fpr", None))
        d = Path(directory)
        meta = ModelMeta.model_validate_json(json.dumps({  # as load() reads it: one that would not load is not saved
            "format_version": FORMAT_VERSION,
            "normalcy_version": __version__,
            "detector": self.name,
            "params": self.params(),
            "extractor": self.extractor.config,
            "fpr": self.fpr,
            "threshold": self.threshold_,
            "threshold_fp32": self.threshold_fp32_,
            "map_range": list(self.map_range_ or (0.0, 1.0)),
            "n_train": self.n_train_,
            "train_colour": getattr(self, "train_colour_", "unknown"),
            "seed": self.seed,
            "batch_size": self.batch_size,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "choice": self.choice,
            **self.metadata(),
        }))
        unset = {k for k in ("training", "choice", "threshold_fp32") if getattr(meta, k) is None}
        text = meta.model_dump_json(indent=2, exclude=unset) + "\n"
        state = self.state_dict()
        return write_model_files(d, {MODEL_TENSORS: lambda p: save_file(state, str(p)),
                                     MODEL_JSON: lambda p: p.write_text(text)})


def _row(batch: Batch, k: int) -> Batch:
    """Image k of a batch as a batch of its own: path, inputs and features, copied (a view would keep the whole
    batch); its decoded image is not kept."""
    f = batch.features
    return Batch([batch.paths[k]], [np.empty((0, 0, 3), np.uint8)],
                 None if f is None else Features(f.patches[k:k + 1].clone(),
                                                 {lv: v[k:k + 1].clone() for lv, v in f.pooled.items()}),
                 None if batch.inputs is None else batch.inputs[k:k + 1].clone())


def _joined(batches: Sequence[Batch]) -> Batch:
    """Batches with features (and inputs) as one."""
    fs = [b.features for b in batches]
    return Batch([p for b in batches for p in b.paths], [im for b in batches for im in b.images],
                 Features(torch.cat([f.patches for f in fs]), {lv: torch.cat([f.pooled[lv] for f in fs])
                                                               for lv in fs[0].pooled}),
                 torch.cat([b.inputs for b in batches]))


def _is_module(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, nn.Module)


def _tensor(value: Any) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))


def _like(kind: Any, value: torch.Tensor) -> Any:
    """A loaded tensor as the declared type: numpy for ``np.ndarray`` (or dict of them), else torch."""
    inner = typing.get_args(kind)[-1] if typing.get_origin(kind) is dict else kind
    return value.numpy() if inner is np.ndarray else value


def _items(images: Images | str | Path) -> list[Any]:
    """``fit``/``score`` input as a list: paths, or H x W x 3 arrays (an N x H x W x 3 array split), each array
    checked (``_image``). One path
    (a str or Path) is one input, a folder's images or one file: a str was read one character per file, a Path
    was a TypeError."""
    if isinstance(images, (str, Path)):
        return input_paths([Path(images)])
    if isinstance(images, np.ndarray) and images.ndim != 4:
        raise InputError(f"expected images as an N x H x W x 3 uint8 array, got shape {images.shape}")
    items = list(images)
    for i, im in enumerate(items):  # now: inside a fit, a complex or float array was "none of the N training
        if isinstance(im, np.ndarray):  # files could be read as an image", its reason lost
            _image(im, i)
    return items


def _image(im: np.ndarray, i: int) -> np.ndarray:
    """An image given as an array, checked: H x W x 3 uint8 (what reading a file gives)."""
    if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3 or 0 in im.shape:
        raise InputError(f"image {i}: expected an H x W x 3 uint8 array, got {im.dtype} of shape {im.shape}")
    return im


SAME_SCORES = 1e-6  # scores this close, relative to their size (at least 1), are one value (``_all_equal``)


def _all_equal(scores: np.ndarray) -> bool:
    """Whether scores are one value, to a millionth of their size: an under-trained network's nearly constant
    output differs in the 7th digit, and passed a check for a billionth, then flagged nothing or everything. Real
    fits are far apart: one DRAEM step on hazelnut_toy spread its 3 held-out scores by 2.7e-5, three by 1.4e-4."""
    return bool(np.ptp(scores) <= SAME_SCORES * max(1.0, float(np.abs(scores).max())))


def holdout_count(n: int, fraction: float) -> int:
    """How many of n training images are kept out of fitting to calibrate on:
    ``fraction`` of them, at least one, and none when there is only one image or no fraction."""
    if fraction <= 0 or n < 2:
        return 0
    return min(max(1, round(fraction * n)), n - 1)


DARK = 32 / 255
GREY_LEVELS = 4 / 255  # an image whose channels differ by no more everywhere is grey (a colour JPEG of a grey scene)


def grey_images(inputs: torch.Tensor) -> torch.Tensor:
    """Which images of a resized B x 3 x H x W batch are grey (R = G = B, within GREY_LEVELS): R - G and G - B in
    one subtraction of views (no copy of the batch), 1-2 % of the backbone's time on the batch."""
    return (inputs[:, :2] - inputs[:, 1:]).abs_().flatten(1).amax(1) <= GREY_LEVELS
"""A training image whose brightest pixel (0..1, as the backbone gets it) is below this is named as nearly black:
a 16-bit file holding 12 bits or fewer (as industrial cameras write them) reads at 16 of 255 at most."""


class _Counter:
    """Counts images flowing through a batch iterator, collects skipped files, reports progress.

    It also notices a training set whose images are all identical (blank), or too few readable images
    (``least``, called with the count of every stream's): the stream ends in an InputError then, before any
    detector does arithmetic on data with no variation (scikit-learn's "Only one sample available" warnings,
    one per fold, came before the too-few-images error).
    """

    def __init__(self, name: str, skipped: list[tuple[Path, str]],
                 least: Callable[[int], None] | None = None) -> None:
        self.name = name
        self.least = least
        self.n = 0  # images of the training stream
        self.seen = 0  # images of every stream (held-out ones too)
        self.skipped = skipped
        self.first: torch.Tensor | None = None
        self.varied = False
        self.tiny: list[str] = []  # training images below MIN_SIZE on a side: "name WxH"
        self.dark: list[str] = []  # training images whose brightest pixel is below DARK: their names
        self.grey = 0  # images of every stream whose channels are equal (grey_images)

    def wrap(self, batches: Iterable[Batch], advance: Any, count: bool = True) -> Iterator[Batch]:
        for b in batches:
            self.skipped.extend(b.skipped)
            advance(len(b.paths) + len(b.skipped))
            if not b.paths:
                continue
            self.n += len(b.paths) if count else 0
            self.seen += len(b.paths)
            self.tiny += [f"{p.name} {im.shape[1]}x{im.shape[0]}" for p, im in zip(b.paths, b.images)
                          if min(im.shape[:2]) < MIN_SIZE]
            if b.inputs is not None:
                self.dark += [p.name for p, v in zip(b.paths, b.inputs.flatten(1).amax(1).tolist()) if v < DARK]
                self.grey += int(grey_images(b.inputs).sum())
            if not self.varied and b.inputs is not None:
                self.first = b.inputs[0] if self.first is None else self.first
                self.varied = any(not torch.equal(x, self.first) for x in b.inputs)
            yield b
        if count and self.least is not None:
            self.least(self.seen)
        if count and self.seen > 1 and not self.varied:
            raise InputError(f"{self.name}: all {self.seen} training images are identical (blank?), so they "
                             "do not vary: nothing shows what normal looks like")
        if count and self.tiny:  # learned as normal all the same, but a thumbnail or an icon is rarely meant
            log.warning("%s: %d training image(s) are under %d px on a side (%s%s): enlarged to the model's input "
                        "they show little of a part; are they thumbnails?", self.name, len(self.tiny), MIN_SIZE,
                        ", ".join(self.tiny[:3]), ", ..." if len(self.tiny) > 3 else "")
        if count and self.dark:  # a camera's 10 or 12 bits in a 16-bit file were learned as black, without a word
            log.warning("%s: %d training image(s) are nearly black, their brightest pixel under %d of 255 (%s%s): "
                        "a blank frame (a capture that failed) is learned as normal; and 16-bit files read 0..65535 "
                        "as 0..255, so 10 or 12-bit values (0..4095) stored in 16 bits come out so: scale such files "
                        "to the full 16-bit range", self.name, len(self.dark),
                        round(DARK * 255), ", ".join(self.dark[:3]), ", ..." if len(self.dark) > 3 else "")


def own_input_size(model: Any) -> int | None:
    """The input_size of a model that scores with networks of its own, None for one that scores features. DRAEM
    and EfficientAD score the image at input_size without the backbone, its normalisation or its pooling: reports
    naming them ("224x224 px, own normalisation") described what they never see."""
    side = getattr(model, "input_size", None)
    return side if not getattr(model, "uses_features", True) and isinstance(side, int) else None


def report_info(model: Any) -> dict[str, str]:
    """What a report says about an image model (a Detector or MuSc): detector, backbone, input, and what ``auto``
    or ``--tune`` chose on which validation numbers (a report is read by people who never open model.json)."""
    h, w = model.extractor.size
    info = {"detector": model.name, "backbone": model.extractor.spec.name,
            "input": f"{h}x{w} px, {model.extractor.input_norm} normalisation"}
    side = own_input_size(model)
    if side is not None:
        info["backbone"] += " (not run when scoring)"
        info["input"] = f"{h}x{w} px, then {side}x{side} px for its own networks (input_size)"
    choice = getattr(model, "choice", None)
    if isinstance(choice, dict):
        info["chosen on normal images"] = choice_line(choice)
    return info


def choice_line(choice: dict[str, Any]) -> str:
    """model.json's ``choice`` in one line: the detector, the tuned settings, every trial's validation AUROC. The
    choice may come from a file: any value is shown as text, nothing in it is trusted to be a number."""
    def num(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)[:40]

    tuned = choice.get("tuned") if isinstance(choice.get("tuned"), dict) else {}
    aurocs = choice.get("validation_auroc") if isinstance(choice.get("validation_auroc"), dict) else {}
    settings = ", ".join(f"{str(k)[:40]} {str(v)[:40]}" for k, v in list(tuned.items())[:8]) or \
        f"input_norm {str(choice.get('input_norm'))[:40]}"
    trials = ", ".join(f"{str(k)[:40]} {num(v)}" for k, v in list(aurocs.items())[:16])
    return f"{str(choice.get('chosen'))[:40]}: {settings} (validation AUROC {trials or '-'})"
