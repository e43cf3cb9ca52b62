"""The application layer: what the command line, ``normalcy serve``, Ray and Python users all call.

    fit(train, output=None, detector=None, **settings)   images (a folder or paths), a table or a series -> a model
    evaluate(dataset, detector=None, **settings)         a labelled data set of any kind -> its metrics (a dict)
    predict(model, inputs, output, ...)                  a run folder (images, tables, series, or on Ray) -> RunSummary
    score_batch(inputs, output, ...)                     a zero-shot (MuSc) run folder -> RunSummary
    load(path)                                           an image, vector or series model folder, a .onnx

What is a series and what a table: normalcy.series.runs.is_series_input (one rule).

``settings`` are the fields of :class:`ExtractorOptions` (how images become features) and
:class:`DetectorOptions` (the detector's own); each option is declared there once and the command line
builds its options from them. Errors a user can fix are :class:`normalcy.errors.InputError`, one line each.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import math
import numbers
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from normalcy.detectors import (
    DETECTORS,
    Detector,
    MuSc,
    Scored,
    Skipped,
    default_backbone,
)
from normalcy.detectors import load as load_image_model
from normalcy.detectors.base import Maps, report_info
from normalcy.errors import InputError, fpr_out_of_range, on_command_line, option, reasons, setting, shortened
from normalcy.files import MODEL_JSON, check_writable, no_model_json, read_json, reading, resolved, save_model
from normalcy.evaluation.validation import TUNABLE, TUNE_BUDGET
from normalcy.images.backbones import INPUT_NORMS, BackboneSpec, custom_backbone
from normalcy.images.features import FeatureExtractor, native_size, size_for
from normalcy.images.io import input_paths, is_dataset, iter_images, list_files, read_notes
from normalcy.progress import LONG_SERIES, progress_bar
from normalcy.runs.format import (
    IMAGES,
    SERIES,
    VECTORS,
    RunWriter,
    SeriesRunPart,
    check_output,
    disk_full,
    is_disk_full,
    outside_run,
    staged,
    table_targets,
    write_series_run,
    write_table_run,
)
from normalcy.series import registry as series_registry
from normalcy.series.base import SeriesDetector
from normalcy.series.io import unpack_hint
from normalcy.series.runs import (
    SeriesFile,
    SeriesSet,
    detector_params,
    fit_each,
    fit_series,
    in_folder,
    is_series_input,
    is_series_model,
    iter_series_files,
    load_series_model,
    model_columns,
    replay_series,
    said_once,
    sampling_note,
    zone_of_model_note,
    say_blind,
    score_series,
    time_hint,
)
from normalcy.vectors.base import VectorDetector
from normalcy.vectors.registry import VECTOR_DETECTORS
from normalcy.vectors.tables import (
    DEFAULT_DETECTOR,
    VectorModelMeta,
    eval_table,
    fit_table,
    is_table,
    is_vector_model,
    load_vector_model,
    read_table,
    rename_hint,
    rows_fitted,
    save_vector_model,
    score_table,
    table_inputs,
    threshold_of,
)

logger = logging.getLogger("normalcy")
PathLike = str | Path
SERIES_TOP = 12  # series drawn in a series run's report: each plot takes a fraction of a second
# The most images or series a report draws (--top): each image card is held in memory until the report is
# written (about 1.8 MB at gallery size), so --top 10**12 on a large run held every image (100,000: 180 GB).
MAX_TOP = 1000


@dataclass(frozen=True)
class ExtractorOptions:
    """How images become features: the options fit, eval and score-batch share."""

    backbone: Optional[str] = None  # None: the detector's own default
    backbone_config: Optional[Path] = None  # JSON of custom_backbone() arguments
    image_size: str = "auto"  # auto, a square such as 224, or HEIGHTxWIDTH
    tile: Optional[int] = None
    overlap: int = 64
    pool_grid: int = 4
    precision: str = "auto"
    input_norm: Optional[str] = None  # own (None: own, or chosen by --detector auto), imagenet, standard, or auto (on
    # held-out normal images with synthetic defects)
    tune: bool = False  # choose the settings below that were left at their defaults, as auto chooses a detector
    tune_budget: Optional[float] = None  # --tune may take this many plain fits (0: no limit; None: TUNE_BUDGET)

    def check_images_only(self, kind: str) -> None:
        """InputError naming the first option given that only images have (``kind``: series, tables): a series
        fitted with ``--tune`` would otherwise quietly ignore it."""
        for f in fields(self):
            if getattr(self, f.name) != f.default:
                raise InputError(f"{option(f.name)} applies to images only, not to {kind}")

    @property
    def input_norms(self) -> tuple[str, ...]:
        """The input normalisations to try: each for auto (the backbone's own first), else the one given."""
        return INPUT_NORMS if self.input_norm == "auto" else (self.input_norm or "own",)

    @property
    def auto_norm(self) -> bool:
        """No input normalisation given: ``--detector auto`` tries ``gaussian`` with each (validation.fit_detector)."""
        return self.input_norm is None

    @property
    def tuned(self) -> tuple[str, ...]:
        """What ``--tune`` chooses: the input normalisation and pooling grid, and the backbone and input size
        unless given (the user's choice stands)."""
        if not self.tune:
            if self.tune_budget is not None:
                raise InputError(f"{option('tune_budget')} is the time {option('tune')} may take: add {option('tune')}")
            return ()
        given = {"backbone": not self.own_backbones, "image_size": not self.auto_size}
        return tuple(s for s in TUNABLE if not given.get(s, False))

    @property
    def budget(self) -> float:
        """``--tune``'s time budget in plain fits. A negative, NaN or infinite one is an InputError: each read as
        "no limit" (as 0 is) and was recorded in model.json as given, or as null."""
        if self.tune_budget is None:
            return TUNE_BUDGET
        budget = float(self.tune_budget)
        if not math.isfinite(budget) or budget < 0:
            raise InputError(f"{option('tune_budget')} must be a number of plain fits, at least 0 (0: no limit), got {budget:g}")
        return budget

    @property
    def auto_size(self) -> bool:
        """``--image-size auto``: the size is read from the images (``extractor``), not given."""
        return str(self.image_size).strip().lower() == "auto"

    @property
    def own_backbones(self) -> bool:
        """No backbone chosen: each detector (and each candidate of ``auto``) uses its own."""
        return self.backbone is None and self.backbone_config is None

    def extractor(self, sample: Sequence[Path] = (), detector: str = "") -> FeatureExtractor:
        """The feature extractor; ``image_size`` auto reads the sample's aspect ratio (with ``tile``: the
        sample's own median size, which the tiles then cover)."""
        spec: str | BackboneSpec = self.backbone or default_backbone(detector)
        if self.backbone_config is not None:
            spec = backbone_from_config(Path(self.backbone_config))
        size: Any = self.image_size
        if self.auto_size:
            size = native_size(list(sample)) if self.tile else size_for(list(sample))
            if size[0] != size[1] or self.tile:
                why = "the images' own size, in tiles" if self.tile else "the images' aspect ratio"
                logger.info("input size %dx%d (height x width), from %s", size[0], size[1], why)
        return FeatureExtractor(backbone=spec, image_size=size, pool_grid=self.pool_grid, precision=self.precision,
                                tile=self.tile, overlap=self.overlap,
                                input_norm=self.input_norms[0])  # auto: the own one until chosen


def backbone_from_config(path: Path) -> BackboneSpec:
    """``--backbone-config``: custom_backbone()'s arguments from a JSON file. A key misspelt, one missing or
    a value of the wrong type came out as a Python traceback; each is now one line naming the file."""
    try:
        cfg = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: cannot read backbone config ({err})") from None
    if not isinstance(cfg, dict):
        raise InputError(f"{path}: expected a JSON object of custom_backbone() arguments, got {type(cfg).__name__}")
    params = inspect.signature(custom_backbone).parameters
    unknown = sorted(set(cfg) - set(params))
    missing = [name for name, p in params.items() if p.default is p.empty and name not in cfg]
    if unknown or missing:
        said = [f"unknown key(s) {unknown}"] * bool(unknown) + [f"missing key(s) {missing}"] * bool(missing)
        raise InputError(f"{path}: {'; '.join(said)}; custom_backbone() takes {list(params)}")
    try:  # builds nothing yet (the network is made at first use), so these errors are the arguments' own
        return custom_backbone(**cfg)
    except (TypeError, ValueError, AttributeError) as err:
        raise InputError(f"{path}: a custom_backbone() argument has the wrong type ({err})") from None


@dataclass(frozen=True)
class DetectorOptions:
    """Which detector and its shared settings: the options fit and eval share."""

    detector: Optional[str] = None  # None: gaussian for images, ensemble for tables, the series default
    fpr: float = 0.01
    seed: int = 0
    steps: Optional[int] = None  # detectors that train only
    time_budget: Optional[float] = None  # detectors that train only
    window: Optional[int] = None  # series only: rows per window (None: the training data's period)
    event_gap: Optional[int] = None  # series only: rows under which anomalous rows are one event (None: 100)
    prune: Optional[float] = None  # series only: Hundman et al.'s event pruning fraction (None: 0.13; 0: none)
    keep_glitches: bool = False  # series only: learn one-row glitches of the training data as they are
    score_flags: bool = False  # series only: score a block of 0/1 columns (commands, flags) as metrics too

    def __post_init__(self) -> None:
        """--fpr nan was "fpr: input should be less than 1 (got NaN)" (NaN fails every comparison): a range it
        is in is said for every value outside (nan, inf, 2), before any data is read. Text is the detector's
        to convert or refuse."""
        problem = fpr_out_of_range(self.fpr, option("fpr"))
        if problem:
            raise InputError(problem)

    def name(self, table: bool = False, series: bool = False) -> str:
        if series:
            return self.detector or series_registry.DEFAULT_DETECTOR
        return self.detector or (DEFAULT_DETECTOR if table else "gaussian")

    def series_kwargs(self) -> dict[str, Any]:
        """The series detector's parameters (an option that does not apply to it is an InputError)."""
        return detector_params(self.name(series=True), self.fpr, self.seed, self.window, self.steps,
                               self.time_budget, self.event_gap, self.prune, self.keep_glitches,
                               self.score_flags)

    def check_not_series(self) -> None:
        for name, value in (("window", self.window), ("event_gap", self.event_gap), ("prune", self.prune),
                            ("keep_glitches", self.keep_glitches or None), ("score_flags", self.score_flags or None)):
            if value is not None:
                raise InputError(f"{option(name)} applies to series only (a file with a time column, or "
                                 f"{setting('series', True)})")

    def check_table(self) -> None:
        """The options a table's detector takes: none of them trains, so --steps and --time-budget are an
        InputError (they were ignored without a word), as are the series' own."""
        self.check_not_series()
        for name, value in (("steps", self.steps), ("time_budget", self.time_budget)):
            if value is not None:
                raise InputError(f"{option(name)} applies to detectors that train; a table's detectors "
                                 f"({', '.join(VECTOR_DETECTORS)}) do not")

    def kwargs(self) -> dict[str, Any]:
        """The image detector's arguments; steps and time_budget only for detectors that train."""
        self.check_not_series()
        detector = self.name()
        given = {k: v for k, v in (("steps", self.steps), ("time_budget", self.time_budget)) if v is not None}
        if given and detector == "auto":
            raise InputError(f"{option('detector')} auto chooses between detectors that do not train: "
                             f"{option('steps')} and {option('time_budget')} do not apply")
        cls = DETECTORS.get(detector)
        if given and cls is not None:
            unknown = [k for k in given if k not in cls.Params.model_fields]
            if unknown:
                raise InputError(f"detector {detector!r} does not train: {option(unknown[0])} "
                                 "does not apply")
        return {"fpr": self.fpr, "seed": self.seed, **given}


def options(settings: dict[str, Any], detector: Optional[str] = None) -> tuple[ExtractorOptions, DetectorOptions]:
    """Split keyword settings into the two option groups; an unknown one is a TypeError, as for any function."""
    names = {f.name for f in fields(ExtractorOptions)}, {f.name for f in fields(DetectorOptions)}
    unknown = set(settings) - names[0] - names[1]
    if unknown:
        raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    return (ExtractorOptions(**{k: v for k, v in settings.items() if k in names[0]}),
            DetectorOptions(detector=detector, **{k: v for k, v in settings.items() if k in names[1]}))


@dataclass
class VectorModel:
    """A fitted detector of feature vectors with its feature columns: a table's model, shaped as an image
    detector is for callers (name, threshold_, n_train_, skipped_fit_, save)."""

    estimator: Any
    name: str
    columns: list[str]
    skipped_fit_: list[tuple[str, str]] = field(default_factory=list)  # rows that could not be used
    ignored: list[str] = field(default_factory=list)  # non-numeric columns left out of the features

    @property
    def threshold_(self) -> float:
        return threshold_of(self.estimator)

    @property
    def n_train_(self) -> int:
        """The rows fitted (not the calibration scores: kNN's are of a sample of at most 20,000 rows)."""
        return rows_fitted(self.estimator)

    @property
    def n_calibration_(self) -> int:
        """The out-of-sample scores of training rows that the threshold is a quantile of."""
        return len(self.estimator.calibration_scores_)

    def save(self, directory: PathLike) -> Path:
        save_vector_model(self.estimator, self.name, self.columns, directory)
        return Path(directory)

    @classmethod
    def of(cls, estimator: Any, meta: VectorModelMeta) -> "VectorModel":
        return cls(estimator, meta.detector, list(meta.columns))


@dataclass
class RunSummary:
    """What a run folder holds, in numbers; ``runs`` has one summary per table when several were scored."""

    output: Path
    kind: str  # images, vectors or series
    n_scored: int  # images, or rows (of tables, of series)
    n_anomalous: int
    skipped: list[tuple[str, str]]  # (path or row id, reason); for several tables also a table that failed;
    # for series: the files and series that could not be scored
    source: Optional[Path] = None  # the table a vectors run scored
    cpus: Optional[int] = None  # on Ray: the CPUs it used
    runs: list["RunSummary"] = field(default_factory=list)
    n_series: Optional[int] = None  # a series run: series scored
    n_events: Optional[int] = None  # a series run: events found
    n_pruned: int = 0  # a series run: events that crossed the threshold and were pruned as noise
    notes: list[str] = field(default_factory=list)  # a series run: what io.py repaired before scoring
    warned: list[str] = field(default_factory=list)  # notes already logged as warnings (not said twice)


@read_notes()  # a note on files read (float values clipped, frames) once a kind, not a file
def fit(train: PathLike | Sequence[PathLike], output: Optional[PathLike] = None, detector: Optional[str] = None, *,
        label_column: Optional[str] = None, id_column: Optional[str] = None, time_column: Optional[str] = None,
        series_column: Optional[str] = None, series: Optional[bool] = None, ray: Optional[str] = None,
        progress: bool = True, **settings: Any) -> Detector | VectorModel | SeriesDetector | SeriesSet:
    """Fit a detector on normal images (a folder or a list of paths), on the rows of a table (.csv, .parquet,
    .npz; with ``label_column`` the rows labelled anomalous are left out) or on a series (a file with a time
    column, a series folder DIR/train.csv; ``series_column`` or a folder of series folders: one model per
    series, on Ray with ``ray``); saved to ``output`` when given. ``series``: True (False) reads ``train`` as
    a series (a table) whatever its columns. ``settings``: the fields of ExtractorOptions and
    DetectorOptions (fpr, seed, window, backbone, image_size, ...)."""
    ex, det_opts = options(settings, detector)
    _check_columns(label_column=label_column, id_column=id_column, time_column=time_column,
                   series_column=series_column)
    if output is not None:
        output = _path(output, "output", "a model folder's path (a str or pathlib.Path)")
    if isinstance(train, os.PathLike):
        train = Path(train)
    elif not isinstance(train, str):
        train = _paths(train, "fit")
    as_series = isinstance(train, (str, Path)) and is_series_input(Path(train), time_column, series_column, series)
    if output is not None:  # an image folder's files are all read: a model inside it would be too
        given = [Path(train)] if isinstance(train, (str, Path)) else train
        _check_model_output(Path(output), [] if as_series else given)
    if as_series:
        ex.check_images_only("series")
        _not_applying("a series (every training row is fitted on)", label_column=label_column, id_column=id_column)
        fit_many: Any = functools.partial(fit_each, progress=progress)
        if ray is not None:
            from normalcy.scale.distributed import fit_series_ray, ray_ready

            ray_ready(ray)  # before the series are read: no Ray (or no answer) was said only after reading them all
            fit_many = functools.partial(fit_series_ray, address=ray, progress=progress)
        model: Any = fit_series(Path(train), det_opts.name(series=True), det_opts.series_kwargs(), time_column,
                                series_column, fit_many=fit_many, progress=progress)
        _save(model, output)
        return model
    if ray is not None:
        raise InputError(f"{option('ray')} on fit: for many series ({option('series_column')}, or a folder of series "
                         "folders); "
                         "images and tables are fitted in one process")
    if series:
        raise InputError(f"{setting('series', True)} needs one .csv or .parquet file or a series folder, not a list "
                         f"of {len(train)} path(s)")  # a Python list was shown as its repr
    hint = (unpack_hint(Path(train)) or rename_hint(Path(train))) if isinstance(train, (str, Path)) else ""
    if hint and Path(train).is_file():  # a .tsv was "not a folder"
        raise InputError(f"{train}: fit reads a folder of images, a .csv, .parquet or .npz file or a series folder"
                         f"{hint}")
    if isinstance(train, (str, Path)) and is_table(Path(train)):
        det_opts.check_table()
        ex.check_images_only("tables")
        model = _fit_table(Path(train), det_opts, label_column, id_column)
    else:
        _not_applying("images (every training image is fitted on)", label_column=label_column, id_column=id_column)
        if isinstance(train, (str, Path)):
            _not_a_model(Path(train), "fit reads normal images, a table or a series")
        if isinstance(train, (str, Path)) and Path(train).is_dir() and is_dataset(Path(train)):
            # its test defects and ground-truth masks were fitted on as normal images, without a word
            raise InputError(f"{train} is a data set in MVTec AD layout: fit on its normal images, "
                             f"{Path(train) / 'train' / 'good'}, or evaluate it with normalcy eval")
        # a folder among the paths is its images, as in predict (it was taken for one unreadable image)
        paths = list_files(Path(train)) if isinstance(train, (str, Path)) else input_paths(train)
        name = det_opts.name()
        extractor = ex.extractor(paths, name)
        from normalcy.evaluation.validation import fit_detector

        model = fit_detector(name, paths, extractor, norms=ex.input_norms, auto_norm=ex.auto_norm,
                             own_backbones=ex.own_backbones, tune=ex.tuned, tune_budget=ex.budget, progress=progress,
                             **det_opts.kwargs())
    _save(model, output)
    return model


IN_MEMORY = ("; data in memory is fitted by a detector itself: normalcy.vectors.EnsembleDetector().fit(X) for "
             "rows of features, normalcy.series.registry.create('auto').fit(X) for a series")


def _paths(inputs: PathLike | Sequence[PathLike], what: str) -> list[Path]:
    """One path or a sequence of them, as paths. A single path is not iterated (a str gave one "file" per
    character), and an array or DataFrame is an InputError saying what takes one (iterating a DataFrame gives
    its column names, which were read as image files)."""
    if isinstance(inputs, (str, os.PathLike)):
        return [Path(inputs)]
    try:  # None or a number was Python's "'int' object is not iterable"
        items = None if hasattr(inputs, "shape") else list(inputs)
    except TypeError:
        items = None
    if items is None or not all(isinstance(p, (str, os.PathLike)) for p in items):
        raise InputError(f"{what} takes a path or a list of paths (files or folders), got {type(inputs).__name__}"
                         + IN_MEMORY)
    return [Path(p) for p in items]


def _path(value: Any, argument: str, what: str = "a path (a str or pathlib.Path)", data: bool = False) -> Path:
    """``value`` as a Path; for anything else (None, a number, an array, a DataFrame) a TypeError naming
    ``argument`` and saying what it takes (``what``): pathlib's "expected str, bytes or os.PathLike object, not
    int" named no argument. ``data``: an array or DataFrame is told where data in memory goes."""
    if isinstance(value, (str, os.PathLike)):
        return Path(value)
    hint = IN_MEMORY if data and hasattr(value, "shape") else ""
    raise TypeError(f"{argument} must be {what}, got {type(value).__name__}{hint}")


def _check_columns(**columns: Any) -> None:
    """TypeError naming a column argument that is no column name: a number was an AttributeError from deep
    inside reading the file ("'int' object has no attribute 'strip'")."""
    for argument, value in columns.items():
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{argument} must be a column name (a str) or None, got {type(value).__name__}")


def _check_model_output(output: Path, inputs: Sequence[Path]) -> None:
    """Before a fit (minutes, perhaps): refuse a model folder that cannot be one, rather than after it."""
    out = resolved(output)
    if output.exists() and not output.is_dir():
        raise InputError(f"{output}: not a folder (a model is a folder of files): choose another {option('output')}")
    for given in inputs:
        if given.is_dir() and (out == given.resolve() or given.resolve() in out.parents):
            raise InputError(f"{output}: inside the training folder {given}, where its files would be read as "
                             f"training images next time: choose another {option('output')}")
    if not output.exists():
        try:  # the folder can be made (a missing parent is made too): try it now, make it when saving
            output.mkdir(parents=True)
            output.rmdir()
        except OSError as err:
            raise InputError(f"{output}: cannot be created ({err.strerror or err})") from None
    else:
        check_writable(output, output, "a model")
        _check_not_theirs(output)


def _check_not_theirs(output: Path) -> None:
    """Refuse a folder holding a file a save would replace that is not a normalcy model's: fit -o a Hugging
    Face model's folder replaced its model.safetensors. Other files in the folder are never touched."""
    from normalcy.detectors.modelfile import MODEL_TENSORS
    from normalcy.vectors.tables import MODEL_FILE

    with reading(output):  # not in the moment another fit's save has removed model.json, beside its tensors
        names = [n for n in (MODEL_JSON, MODEL_TENSORS, MODEL_FILE) if os.path.lexists(output / n)]
        if not names:
            return
        ours = _holds_model(output)
    if not ours:
        raise InputError(f"{output}: holds a {names[0]} that is not a normalcy model's, which saving would "
                         f"replace: choose another {option('output')}")


def _holds_model(folder: Path) -> bool:
    """Whether ``folder`` holds a normalcy model's model.json (one naming ``normalcy_version``)."""
    try:
        return os.path.lexists(folder / MODEL_JSON) and "normalcy_version" in read_json(folder / MODEL_JSON)
    except InputError:
        return False


def _not_a_model(data: Path, reads: str) -> None:
    """InputError for a model folder given as the data to fit or evaluate: its files were read as images,
    "gaussian needs at least 5 normal training images, got 2", or it was "training folder not found"."""
    if data.is_dir() and _holds_model(data):
        raise InputError(f"{data}: is a model folder (written by fit), not data: {reads}; a model is what predict "
                         "takes")


def _save(model: Any, output: Optional[PathLike]) -> None:
    if output is not None:
        save_model(model, output)


def _fit_table(path: Path, opts: DetectorOptions, label_column: Optional[str], id_column: Optional[str]) -> VectorModel:
    table = read_table(path, label_column, id_column)
    estimator, skipped = fit_table(table, opts.name(table=True), opts.fpr, opts.seed)
    return VectorModel(estimator, opts.name(table=True), table.columns, skipped, table.ignored)


@read_notes()
def evaluate(dataset: PathLike, detector: Optional[str] = None, *, label_column: Optional[str] = None,
             test: Optional[PathLike] = None, time_column: Optional[str] = None, report: Optional[PathLike] = None,
             stream: bool = False, progress: bool = True, **settings: Any) -> dict[str, Any]:
    """Fit on the normal part of a labelled data set, score the rest and measure: an MVTec AD folder (fit on
    train/good, score test/, masks in ground_truth/), a table with ``label_column`` (fit on its normal rows,
    score a stratified 30 %, or the labelled table ``test``), or a series folder DIR/train.csv + DIR/test.csv or
    a folder of them (pooled). The metrics as ``normalcy eval --json`` prints them; their "skipped" lists what
    could not be used. ``report``: an HTML report of an image evaluation. ``stream``: series replayed as a
    monitoring loop runs them (:func:`predict`). ``settings`` as for ``fit``."""
    ex, det = options(settings, detector)
    _check_columns(label_column=label_column, time_column=time_column)
    dataset = _path(dataset, "dataset", "the path of a data set, a folder or a table (a str or pathlib.Path)",
                    data=True)
    test = None if test is None else _path(test, "test", "a labelled table's path (a str or pathlib.Path)")
    report = None if report is None else _path(report, "report", "an HTML file's path (a str or pathlib.Path)")
    if report is not None and (is_table(dataset) or dataset.is_dir() and is_series_input(dataset)):
        printed = "printed, all of them with --json" if on_command_line() else "what evaluate returns"
        instead = (f"a table's evaluation has no HTML report: its metrics are {printed}"
                   if is_table(dataset) else "for series, `normalcy predict` writes report.html")
        raise InputError(f"{report}: {option('report')} is the report of an image evaluation; this one would not be "
                         f"written ({instead})")  # it was ignored without a word
    if dataset.is_dir() and is_series_input(dataset):
        from normalcy.evaluation.evaluate import eval_series

        ex.check_images_only("series")
        _not_applying("series folders (each is scored on its own test.csv)", test=test)
        return eval_series(dataset, det.name(series=True), det.series_kwargs(), time_column,
                           label_column=label_column or "label", stream=stream, progress=progress)
    if stream:
        raise InputError(f"{dataset}: {setting('stream', True)} replays series; this is not a series folder "
                         "(DIR/train.csv, DIR/test.csv) or a folder of them")
    if time_column is not None:
        raise InputError(f"{dataset}: {option('time_column')}: eval takes series as series folders (DIR/train.csv, "
                         "DIR/test.csv with a label column) or a folder of them")
    hint = unpack_hint(dataset) or rename_hint(dataset)
    if hint and dataset.is_file():  # a .tsv was "--label-column does not apply to an image data set"
        raise InputError(f"{dataset}: eval reads an image data set, a .csv, .parquet or .npz table or a series "
                         f"folder{hint}")
    if is_table(dataset):
        if label_column is None:
            raise InputError(f"{dataset}: eval on a table needs {option('label_column')} (0 normal, 1 anomaly)")
        train_table = read_table(dataset, label_column)
        # the test table's columns by name, as predict reads them (by position, reordered columns were scored)
        test_table = read_table(Path(test), label_column, columns=train_table.columns) if test is not None else None
        det.check_table()
        ex.check_images_only("tables")
        return eval_table(train_table, det.name(table=True), det.fpr, det.seed, test_table)
    if test is not None:
        raise InputError(f"{dataset}: {option('test')} names the labelled table to score; an image data set is "
                         "scored on its own test/ folder")
    _not_applying("an image data set (test/good is normal, the other folders of test/ defective)",
                  label_column=label_column)
    from normalcy.evaluation.evaluate import run_eval, write_eval_report
    from normalcy.images.io import load_dataset
    from normalcy.runs.report import check_report_file

    if report is not None:
        check_report_file(Path(report))
    _not_a_model(dataset, "eval reads a labelled data set (MVTec AD layout, a table, series folders)")
    _check_not_untrained_series(dataset)
    ds = load_dataset(dataset)
    name = det.name()
    metrics, model, result = run_eval(ds, name, ex.extractor(ds.train, name), progress=progress,
                                      own_backbones=ex.own_backbones, detector_kwargs=det.kwargs(),
                                      input_norms=ex.input_norms, auto_norm=ex.auto_norm, tune=ex.tuned,
                                      tune_budget=ex.budget)
    if report is not None:
        try:
            write_eval_report(Path(report), metrics, model, result, ds)
        except OSError as err:  # a full disk, a folder made read-only meanwhile
            raise InputError(f"{report}: cannot write the report ({err.strerror or err})") from None
    return metrics


def _check_not_untrained_series(dataset: Path) -> None:
    """A series folder whose train file is misnamed (TRAIN.csv), or a folder of them, is named as that: it was
    read as an image data set, "training folder not found: DIR/train/good (expected MVTec AD layout ...)"."""
    if not dataset.is_dir() or (dataset / "train").is_dir() or (dataset / "test").is_dir():  # meant as images
        return
    from normalcy.series.io import untrained_folders, untrained_why

    why = untrained_why(dataset)
    if why is None:
        try:
            inner = untrained_folders(dataset)
        except OSError:
            return
        if not inner:
            return
        why = f"{dataset}: none of its {len(inner)} series folder(s) can be fitted: {inner[0][1]}"
    raise InputError(why)


def is_exported(model: PathLike) -> bool:
    """A model.onnx written by `normalcy export` (scored by onnxruntime), not a model folder."""
    return Path(model).suffix.lower() == ".onnx"


def load(path: PathLike, trust_code: bool = False) -> Any:
    """A saved model: an image model folder (a Detector), a vector model folder (a VectorModel), a series
    model folder (a SeriesDetector, or a SeriesSet of one per series) or a model.onnx from ``normalcy
    export`` (an OnnxScorer). ``trust_code``: allow a custom backbone's code."""
    path = _path(path, "path", "a model folder's or a .onnx file's path (a str or pathlib.Path)")
    if is_exported(path):
        from normalcy.scale.export import OnnxScorer

        return OnnxScorer(path)
    if is_series_model(path):
        return load_series_model(path)
    if is_vector_model(path):
        return VectorModel.of(*load_vector_model(path))
    return load_image_model(path, trust_code=trust_code)


@read_notes()
def export(model_dir: PathLike, output: PathLike, precision: str = "fp32", calibration: Optional[PathLike] = None,
           trust_code: bool = False) -> tuple[Any, Path]:
    """An image model's scoring graph written to an ONNX file (normalcy.scale.export): the loaded model and the
    file. Tables and series have no graph to export; an output that is a folder is refused before any work."""
    from normalcy.scale.export import check_output_file, export_onnx

    model_dir = _path(model_dir, "model_dir", "a model folder's path (a str or pathlib.Path)")
    output = _path(output, "output", "an ONNX file's path (a str or pathlib.Path)")
    if calibration is not None:
        calibration = _path(calibration, "calibration", "a folder's path (a str or pathlib.Path)")
    for kind, found in (("a vector model (tables)", is_vector_model), ("a series model", is_series_model)):
        if found(model_dir):
            raise InputError(f"{model_dir} is {kind}: only image models are exported to ONNX")
    check_output_file(output)
    if precision == "int8" and calibration is None:
        raise InputError(f"{setting('precision', 'int8')} needs {option('calibration', 'DIR')}: normal images, such as "
                         "the training folder")
    if precision == "fp32" and calibration is not None:  # it was listed, then ignored without a word
        raise InputError(f"{option('calibration')} applies to {setting('precision', 'int8')}: an fp32 graph is not "
                         "calibrated")
    try:
        calib = list_files(calibration) if calibration is not None else None
    except InputError as err:  # "folder not found: X" did not say which folder it wanted
        raise InputError(f"{option('calibration')}: {err}") from None
    det = load_image_model(model_dir, trust_code=trust_code)
    return det, export_onnx(det, output, precision=precision, calibration_paths=calib)


def watch(model: PathLike | Any, source: Optional[PathLike | Any] = None, *, out: Optional[Any] = None,
          time_column: Optional[str] = None, series_column: Optional[str] = None, learn: bool = True,
          alarms_only: bool = False, follow: bool = False, idle: Optional[float] = None,
          save: Optional[PathLike] = None) -> Any:
    """Run a series model online over CSV rows as they arrive (normalcy.series.watch): ``source`` a file
    or an open text stream (None or "-": stdin; ``follow``: read on as it grows, until ``idle`` seconds pass
    without a line), one CSV line out per row (``alarms_only``: per alarm) to ``out`` (default stdout);
    ``save``: a folder the model is written to at the end, having learned every row (the folder is checked
    before the first row is read). Its WatchSummary."""
    import sys

    from normalcy.series.watch import watch as run_watch

    if idle is not None and not follow:  # stdin without --follow waited for its end past any idle time
        raise InputError(f"{option('idle')} applies with {setting('follow', True)}; without it, watch reads its input "
                         "to the end")
    model_dir = getattr(model, "directory", None)  # a set reads its models from there when they are first used
    if isinstance(model, SeriesDetector):
        model._check_fitted()  # an unfitted one failed inside with an AttributeError ('columns_'), as predict's did
    if out is not None and not hasattr(out, "write"):  # a path was "argument 1 must have a "write" method"
        raise TypeError(f"out must be an open text stream (sys.stdout, a file opened for writing), got "
                        f"{type(out).__name__}")
    _check_columns(time_column=time_column, series_column=series_column)
    if not isinstance(model, (SeriesDetector, SeriesSet)):
        model_dir = _path(model, "model", "a series model's folder (a str or pathlib.Path) or a fitted series "
                          "detector")
        if not is_series_model(model_dir):
            meta = model_dir / MODEL_JSON
            if not meta.is_file():
                if model_dir.is_file() and os.path.lexists(model_dir.parent / MODEL_JSON):  # model/model.json
                    raise no_model_json(model_dir)
                raise InputError(f"{model}: not a series model: no model.json in it (a model folder is written by "
                                 "`normalcy fit`)")
            read_json(meta)  # one that cannot be read says why
            raise InputError(f"{model}: not a series model (watch runs a model fitted on a series)")
        model = load_series_model(model_dir)
    if save is not None:
        save = _path(save, "save", "a folder's path (a str or pathlib.Path)")
        if not learn:
            raise InputError(f"{save}: with {setting('learn', False)} the model learns nothing, so there is nothing "
                             "to save")
        if model_dir is not None and save.resolve() == Path(model_dir).resolve():
            raise InputError(f"{save}: is the model being watched; give another folder (the fitted model stays as "
                             "it was)")
        if save.exists() and (not save.is_dir() or (any(save.iterdir()) and not is_series_model(save))):
            raise InputError(f"{save}: exists and is not a series model folder, so not replaced: choose a new or "
                             "empty folder")
        _check_model_output(save, [])  # a folder that cannot be written: said now, not when the watch ends
    kw = dict(time_column=time_column, series_column=series_column, learn=learn, alarms_only=alarms_only,
              follow=follow, idle=idle, save=save)
    if hasattr(source, "readline"):  # an open text stream
        return _watched(run_watch(model, source, out or sys.stdout, source_name=str(getattr(source, "name", "input")),
                                  **kw), out)
    if source is None or str(source) == "-":
        return _watched(run_watch(model, sys.stdin, out or sys.stdout, source_name="stdin", **kw), out)
    path = _path(source, "source", "a CSV file's path (a str or pathlib.Path), an open text stream, or None or "
                 "\"-\" for stdin")
    if not path.exists():  # a named pipe or /dev/fd/N (`<(tail -f log)`) is read as a file is
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; watch reads a CSV file, a named pipe or - (stdin)")
    if path.suffix.lower() in (".parquet", ".pq"):
        raise InputError(f"{path}: watch reads CSV lines as they arrive; a Parquet file is scored whole by "
                         f"`normalcy predict` ({setting('stream', True)} to replay it as a stream)")
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        return _watched(run_watch(model, f, out or sys.stdout, source_name=str(path), **kw), out)


def _watched(summary: Any, out: Optional[Any]) -> Any:
    """A watch's summary; where it wrote to stdout and its reader closed it (a pipe into `head`), stdout now
    writes to nowhere, so what is left in its buffer is dropped at exit rather than failing there."""
    if summary.closed and out is None:
        import sys

        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass
    return summary


@read_notes()
def predict(model: PathLike | Any, inputs: PathLike | Sequence[PathLike], output: PathLike = "results", *,
            heatmaps: Optional[bool] = None, report: Optional[bool] = None, save_maps: bool = False,
            embeddings: Optional[bool] = None, top: Optional[int] = None,
            trust_code: bool = False, id_column: Optional[str] = None, time_column: Optional[str] = None,
            series_column: Optional[str] = None, ray: Optional[str] = None, stream: bool = False,
            progress: bool = True) -> RunSummary:
    """Score images, tables or series with a model (a path, or what :func:`fit`/:func:`load` returned) into
    the run folder ``output`` (see normalcy.runs.format). ``ray``: local or a cluster's ADDRESS, for a model
    folder. ``heatmaps`` (images) and ``report`` (images, series): None is on; given to a model whose run has
    none (tables; heatmaps for series) it is an InputError, not ignored. ``top``: images (default 24) or series
    (default SERIES_TOP) drawn in the report. A file or row
    (for series: a file or a series) that cannot be scored is listed in skipped.csv; a run of none is an
    InputError. ``stream``: each series replayed as a monitoring loop runs it (``series.runs.replay_series``:
    scores from the past only, every row learned, calibrated to [0, 1]; in this process)."""
    _check_top(top)  # before anything else: the command line had a second check of its own for that
    _check_columns(id_column=id_column, time_column=time_column, series_column=series_column)
    paths_in = _paths(inputs, "predict")
    output = _path(output, "output", "a run folder's path (a str or pathlib.Path)")
    if isinstance(model, (str, os.PathLike)):  # a run replaces its folder whole: the model in it went with it
        if not os.path.lexists(model):  # first: a missing folder was told "--stream applies to series models"
            raise no_model_json(Path(model))
        out, folder = resolved(output), resolved(model)
        if folder == out or out in folder.parents:
            raise InputError(f"{output}: holds the model {model}, and a run replaces its run folder: "
                             f"choose another {option('output')}")
    if stream and ray is not None:
        raise InputError(f"{option('stream')} replays each series in this process; it does not run on Ray")
    if ray is not None and not isinstance(model, (str, Path)):
        raise InputError("on Ray, give the model's folder (the workers load it from its files)")
    if top is not None and report is False:
        raise InputError(f"{option('top')} counts what the report shows, and the report is off")
    series_model = isinstance(model, (SeriesDetector, SeriesSet)) or (
        isinstance(model, (str, Path)) and is_series_model(Path(model)))
    if series_model:
        _not_applying("a series model (its run draws series, not images)", heatmaps=heatmaps, save_maps=save_maps,
                      id_column=id_column)
        _own_embeddings("a series model", embeddings, "events")
    elif ray is not None:
        _not_applying("a run on Ray of images or a table (scores, skipped.csv and run.json only)",
                      heatmaps=heatmaps, report=report, save_maps=save_maps)
    if ray is not None:  # once, before any input is read: no Ray, or none answering, was said after reading it
        from normalcy.scale.distributed import ray_ready

        ray_ready(ray, data=not series_model)
    if isinstance(model, (str, Path)) and is_series_model(Path(model)):
        info = {"model": str(Path(model).resolve())}
        return _predict_series(load_series_model(Path(model)), paths_in, output, time_column, series_column, info,
                               report=report is not False, top=SERIES_TOP if top is None else top, ray=ray,
                               model_dir=Path(model), stream=stream, progress=progress)
    if isinstance(model, (SeriesDetector, SeriesSet)):
        if isinstance(model, SeriesDetector):
            model._check_fitted()  # an unfitted one failed inside with an AttributeError ('window_')
        return _predict_series(model, paths_in, output, time_column, series_column, {"model": "in memory"},
                               report=report is not False, top=SERIES_TOP if top is None else top, stream=stream,
                               progress=progress)
    if time_column is not None or series_column is not None or stream:
        raise InputError(f"{option('time_column')}, {option('series_column')} and {option('stream')} apply to series "
                         "models (fitted on a series)")
    if isinstance(model, (str, Path)):
        model = Path(model)
        if is_exported(model) and (ray is not None or embeddings):
            raise InputError(f"{model}: an exported model scores images into scores and maps only: "
                             + (f"{option('ray')} takes a model folder written by `normalcy fit`" if ray is not None
                                else "it has no embeddings (predict with the model folder for them)"))
        if ray is not None:
            return _predict_ray(model, paths_in, output, ray, trust_code, id_column)
        info = {"model": str(model.resolve())}
        model = load(model, trust_code=trust_code)
    else:
        info = {"model": "in memory"}
        _check_model(model)
    if isinstance(model, VectorModel):
        _not_applying("a table's model (its run has no maps and no report)", heatmaps=heatmaps, report=report,
                      save_maps=save_maps, top=top)
        _own_embeddings("a table's model", embeddings, "rows")
        return _predict_tables(model, paths_in, output, id_column, info)
    _not_applying("an image model", id_column=id_column)
    return _predict_images(model, paths_in, output, info, heatmaps=heatmaps is not False,
                           report=report is not False, save_maps=save_maps, embeddings=embeddings,
                           top=24 if top is None else top, progress=progress)


def _check_top(top: Optional[int]) -> None:
    """InputError for a ``top`` outside 0..MAX_TOP, before any work: a negative one emptied the gallery, a huge one
    held every image of the run in memory for the report."""
    if top is not None and (isinstance(top, bool) or not isinstance(top, numbers.Integral)):
        raise TypeError(f"top must be a whole number of images or series, got {type(top).__name__}")
    if top is not None and not 0 <= top <= MAX_TOP:
        raise InputError(f"{option('top')} must be between 0 and {MAX_TOP} (got {top:g})")


def _not_applying(kind: str, **given: Any) -> None:
    """InputError naming the first option given that ``kind`` has no use for: each was ignored without a word
    (``--label-column`` on images: the anomalous images the user meant to leave out were fitted on)."""
    for name, value in given.items():
        if value not in (None, False):
            raise InputError(f"{option(name)} does not apply to {kind}")


def _own_embeddings(kind: str, embeddings: Optional[bool], scored: str) -> None:
    """InputError for ``--no-embeddings`` where a run always holds the features of what it scored (``scored``:
    rows, events) as its embeddings (tables, series): it was ignored without a word."""
    if embeddings is False:
        raise InputError(f"{setting('embeddings', False)} does not apply to {kind}: its run's embeddings are its "
                         f"{scored}' features, always written (what serve re-ranks by)")


def _check_model(model: Any) -> None:
    """NotFittedError for an unfitted image detector, InputError for what predict does not take (a bare vector
    detector: it has no columns to read a table by), before any work: both failed inside, with an AttributeError
    or a TypeError about None."""
    if isinstance(model, Detector):
        model._check_fitted()
    elif isinstance(model, VectorDetector):
        raise InputError(f"a bare {type(model).__name__} scores arrays itself (.predict(X), .anomaly_score(X)); "
                         "predict takes a table's model: normalcy.fit('table.csv') or normalcy.load(folder)")
    elif not isinstance(model, VectorModel) and not hasattr(model, "iter_score"):  # an OnnxScorer has it
        raise InputError(f"predict takes a model folder or what normalcy.fit or normalcy.load returned, "
                         f"not a {type(model).__name__}")


def _predict_ray(model: Path, inputs: list[Path], output: Path, address: str, trust_code: bool,
                 id_column: Optional[str]) -> RunSummary:
    from normalcy.scale.distributed import predict_ray

    got = predict_ray(model, inputs, output, address, trust_code=trust_code, id_column=id_column)
    runs = [RunSummary(Path(r["output"]), r["kind"], r["n_scored"], r["n_anomalous"], r["skipped"], cpus=r["cpus"])
            for r in got]
    failed = got[0].get("failed", [])
    if len(runs) == 1 and not failed:  # one input (a folder of one table too): its run folder is the output
        return runs[0]
    return RunSummary(output, VECTORS, sum(r.n_scored for r in runs), sum(r.n_anomalous for r in runs), failed,
                      cpus=runs[0].cpus, runs=runs)


def _predict_tables(model: VectorModel, inputs: list[Path], output: Path, id_column: Optional[str],
                    info: dict[str, Any]) -> RunSummary:
    """Score each table; a table that cannot be read is skipped, named, and the others go on. The run folder
    (one per table when there are several) replaces ``output`` once all are written."""
    inputs = table_inputs(inputs)
    runs: list[RunSummary] = []
    failed: list[tuple[str, str]] = []
    with staged(output, inputs) as folder:
        for path, target in table_targets(inputs):
            try:
                table = read_table(path, id_column=id_column, columns=model.columns)
            except InputError as err:
                failed.append((str(path), str(err)))
                continue
            scores, mask, skipped = score_table(model.estimator, table)
            write_table_run(folder / target, table, scores, mask, model.threshold_, skipped,
                            {"detector": model.name, **info})
            n_bad = int((scores[mask] >= model.threshold_).sum())
            runs.append(RunSummary(output / target, VECTORS, int(mask.sum()), n_bad, skipped, source=path))
        if not runs:
            raise InputError(f"no table could be read{reasons(failed)}")
    if len(inputs) == 1:
        return runs[0]
    return RunSummary(output, VECTORS, sum(r.n_scored for r in runs), sum(r.n_anomalous for r in runs), failed,
                      runs=runs)


def _predict_series(model: SeriesDetector | SeriesSet, inputs: list[Path], output: Path, time_column: Optional[str],
                    series_column: Optional[str], info: dict[str, Any], *, report: bool, top: int,
                    ray: Optional[str] = None, model_dir: Optional[Path] = None, stream: bool = False,
                    progress: bool = True) -> RunSummary:
    """Score each series of each input (a file, a series folder's test file, those of a folder of series
    folders) into one run folder; a file or series that cannot be scored is named in skipped.csv and the
    others go on. A set scores each series with its own model (by series id, or series folder name)."""
    if isinstance(model, SeriesSet):
        series_column = series_column or model.series_column
        info |= {"detector": model.name, "models": len(model), "series_column": series_column}
    else:
        info |= model.report_info()
    if stream:
        info["mode"] = "stream"
    time_column = time_column or model.time_column
    check_output(output, inputs)
    files: list[SeriesFile] = []
    failed: list[tuple[str, str]] = []
    jobs: list[tuple[int, Any, str]] = []  # (file index, series, where: for skipped.csv)
    results: list[Any] = []  # a ScoredSeries, or why not, for each job
    keep = ((*model.columns_, *model.flags_), "the model" + time_hint(time_column)  # flags: left out as fit said
            ) if isinstance(model, SeriesDetector) else None
    sampled: list[tuple[str, str]] = []  # (kind, line): series whose times differ from their model's training rows
    read = list(iter_series_files(inputs, time_column, series_column, keep))
    n_series = sum(len(item.series) for item in read if not isinstance(item, tuple))

    def scoped_jobs(repeats: Any = None) -> Iterator[tuple[int, Any, str, SeriesDetector] | None]:
        """Each series in its model's columns (file index, series, where: for skipped.csv, and its model), None
        for one that cannot be: made as they are scored, so that a set's model is read once and let go
        (``SeriesSet.get``). ``repeats``: told each series' id as it begins (``said_once``)."""
        for item in read:
            if isinstance(item, tuple):
                failed.append(item)
                continue
            files.append(item)
            failed.extend(item.failed)
            for s in item.series:
                where = str(item.path) if series_column is None else f"{item.path} [{series_column}={s.name}]"
                if repeats is not None:
                    repeats.series = s.name
                try:
                    det = model.get(s.name, keep=False) if isinstance(model, SeriesSet) else model
                    scoped = _scoped(model, det, s, item.time_column)
                except InputError as err:
                    failed.append((where, str(err)))
                    yield None
                    continue
                kinds = _sampling(det, scoped, series_column)
                in_folder(scoped)
                if kinds:  # as in_folder names them
                    sampled.extend(zip(kinds, scoped.notes[-len(kinds):]))
                yield len(files) - 1, scoped, where, det

    if ray is not None:
        from normalcy.scale.distributed import score_series_ray

        assert model_dir is not None  # refused in predict
        jobs.extend(job[:3] for job in scoped_jobs() if job is not None)
        _say_sampled(sampled)
        results, cpus, used = score_series_ray(model_dir, model, [s for _, s, _ in jobs], ray, progress)
        info |= {"ray": used, "cpus": cpus}
    else:
        rows = sum(len(s) for item in read if not isinstance(item, tuple) for s in item.series)
        # the series of a long file: what scoring them logs ("a value 1e6 spreads out") named only the file, and
        # was said again for each series
        once = said_once() if series_column is not None else contextlib.nullcontext()
        with once as repeats, progress_bar(progress and (n_series > 1 or rows >= LONG_SERIES)) as bar:
            for job in bar.track(scoped_jobs(repeats), total=n_series, description="predict"):
                if job is not None:
                    jobs.append(job[:3])
                    results.append(_score_one(job[3], job[1], stream))
        _say_sampled(sampled)
    unjudged = say_blind([(where, res) for (_, _, where), res in zip(jobs, results) if not isinstance(res, str)])
    if unjudged:  # rows at the start of a series that scored 0 for want of a past: said, and counted in run.json
        info["unjudged_rows"] = unjudged
    parts = []
    for (fi, s, where), res in zip(jobs, results):
        if isinstance(res, str):
            failed.append((where, res))
        else:
            drawn = s if res.held is None else replace(s, values=res.held)  # a replay draws what it scored
            parts.append(SeriesRunPart(s.name, fi, drawn, res))
    if not parts:
        raise InputError(f"no series could be scored{reasons(failed, named=True)}")
    _name_parts(parts, files)
    with staged(output, inputs) as folder:
        meta = write_series_run(folder, files, parts, failed, info, report=report, top=top,
                                title=f"normalcy predict: {len(parts)} series")
    return RunSummary(output, SERIES, meta["n_rows"], meta["n_anomalous"], failed, n_series=len(parts),
                      n_events=meta["n_events"], n_pruned=meta["n_pruned"], notes=meta["notes"], cpus=info.get("cpus"),
                      warned=[line for _, line in sampled[:5]])


def _say_sampled(sampled: list[tuple[str, str]]) -> None:
    """The notes of series whose times differ from their model's training rows (``_sampling``: (kind, line)), as
    warnings: said among the repairs too, but these change what the scores mean. Past five, each kind is counted
    under its own words: a zone's lines were counted as series sampled at another interval."""
    for _, line in sampled[:5]:
        logger.warning("%s", line)
    more = [kind for kind, _ in sampled[5:]]
    for kind in dict.fromkeys(more):
        logger.warning("... and %d more series %s (run.json's notes)", more.count(kind), kind)


def _scoped(model: SeriesDetector | SeriesSet, det: SeriesDetector, s: Any, time_column: Optional[str]) -> Any:
    """The series with the columns of ``det``, its model (``model_columns``: a column the model lacks is left out
    with a note); an InputError says why it cannot be scored."""
    if isinstance(model, SeriesSet) and model.key_of(s.name) != s.name:
        s.notes.append(f"{s.source.name}: series {shortened(s.name)!r} scored by the model of series "
                       f"{shortened(model.key_of(s.name))!r} "
                       f"({model.alias(s.name)})")
    return model_columns(det, s, time_column)


ZONE_KIND = "whose times have a zone where their training rows' had none, or the other way round"
INTERVAL_KIND = "sampled at another interval than their training rows"


def _sampling(det: SeriesDetector, s: Any, series_column: Optional[str]) -> list[str]:
    """The kind (ZONE_KIND, INTERVAL_KIND) of each line saying that a series' times differ from its model's
    training rows': dates with a zone against dates without (``zone_of_model_note``), sampled at another interval
    (``sampling_note``); the lines are noted last among its notes. Its scores are as they were."""
    where = s.source.name if series_column is None else f"{s.source.name} [{series_column}={shortened(s.name)}]"
    found = [(kind, n) for kind, n in ((ZONE_KIND, zone_of_model_note(det, s, where)),
                                       (INTERVAL_KIND, sampling_note(det, s, where))) if n is not None]
    s.notes.extend(n for _, n in found)
    return [kind for kind, _ in found]


def _score_one(det: SeriesDetector, s: Any, stream: bool = False) -> Any:
    """A ScoredSeries (``stream``: replayed), or the reason (one line) why the series cannot be scored."""
    try:
        return (replay_series if stream else score_series)(det, s)
    except InputError as err:
        return str(err)


def _name_parts(parts: list[SeriesRunPart], files: list[SeriesFile]) -> None:
    """Each series' name in the run: its own (its id, folder or file stem) where that is unique, else the
    file it came from (and its id)."""
    count: dict[str, int] = {}
    for p in parts:
        count[p.name] = count.get(p.name, 0) + 1
    for p in parts:
        if count[p.name] > 1:
            f = files[p.file]
            p.name = str(f.path) if len(f.series) == 1 else f"{f.path} [{p.name}]"


def _predict_images(model: Any, inputs: list[Path], output: Path, info: dict[str, Any], *, heatmaps: bool,
                    report: bool, save_maps: bool, embeddings: Optional[bool], top: int, progress: bool) -> RunSummary:
    """Stream every file through the model into a run folder; a file that fails is skipped, named, not fatal.
    A model.onnx (``normalcy export``) is scored by onnxruntime, through ``OnnxScorer``."""
    check_output(output, inputs)
    paths = outside_run(input_paths(inputs), output)
    records: Iterator[Scored | Skipped]
    if isinstance(model, Detector):
        if embeddings is None:  # free where the backbone runs anyway; `serve` computes them later for the others
            embeddings = model.uses_features
        threshold, map_range = model.threshold_, model.map_range_ or (0.0, 1.0)
        info |= report_info(model)
        records = model.iter_score(paths, embeddings=embeddings)
    else:  # OnnxScorer
        threshold, map_range = model.threshold, tuple(model.meta["map_range"])
        info |= {"detector": model.meta["detector"], "backbone": model.meta["backbone"], "runtime": "onnxruntime"}
        records = model.iter_score(paths)
    skipped: list[tuple[Path, str]] = []
    with RunWriter(output, threshold, map_range, heatmaps=heatmaps, overlays=heatmaps,  # type: ignore[arg-type]
                   report=report, save_maps=save_maps, top=top, info=info, inputs=inputs) as writer:
        with progress_bar(progress) as bar:
            task = bar.add_task("predict", total=len(paths))
            for rec in records:
                if isinstance(rec, Skipped):
                    skipped.append((rec.path, rec.reason))
                else:
                    _add_safely(writer, skipped, rec.path, rec.image, rec.score, rec.lazy_map, rec.embedding)
                bar.update(task, completed=len(writer.rows) + len(skipped))
                del rec  # its image and full-size map (where drawn), before the next is scored
        return _finish_run(writer, skipped, f"normalcy predict: {len(writer.rows)} images")


@read_notes()
def score_batch(inputs: PathLike | Sequence[PathLike], output: PathLike = "results", *,
                extra: PathLike | Sequence[PathLike] = (),
                heatmaps: bool = True, report: bool = True, save_maps: bool = False, top: int = 24,
                image_score: str = "max-median", rscin_k: int = 8, progress: bool = True,
                **settings: Any) -> RunSummary:
    """Zero-shot (MuSc): score unlabeled images against each other (and against ``extra`` images, not
    scored) into the run folder ``output``. ``settings``: the fields of ExtractorOptions."""
    _check_top(top)
    ex, _ = options(settings)
    if len(ex.input_norms) > 1 or ex.tune:
        raise InputError(f"{setting('input_norm', 'auto')} and {option('tune')} choose on normal training images; "
                         "score-batch has none "
                         "(zero-shot): give the settings")
    inputs = _paths(inputs, "score_batch")
    output = _path(output, "output", "a run folder's path (a str or pathlib.Path)")
    check_output(output, inputs)  # before the minutes of scoring, not after
    paths = outside_run(input_paths(inputs), output)
    det = MuSc(ex.extractor(paths), image_score=image_score, rscin_k=rscin_k)
    det.references(input_paths(_paths(extra, "score_batch's extra")) if extra else [])
    for path, reason in det.skipped_refs_:
        logger.warning("extra image %s skipped: %s", path, reason)
    result = det.score(paths, progress=progress, embeddings=True)  # images are read again below
    assert result.embeddings is not None and isinstance(result.maps, Maps)
    skipped = list(result.skipped)
    row_of = {p: i for i, p in enumerate(result.paths)}
    with RunWriter(output, result.threshold, det.map_range_ or (0.0, 1.0), heatmaps=heatmaps, overlays=heatmaps,
                   report=report, save_maps=save_maps, top=top, inputs=inputs,
                   info={"detector": det.name, "model": "zero-shot", "backbone": det.extractor.spec.name}) as writer:
        with progress_bar(progress) as bar:
            task = bar.add_task("writing", total=len(result.paths))
            for path, image in iter_images(result.paths, skipped):  # a file gone since scoring is skipped, named
                i = row_of[path]
                _add_safely(writer, skipped, path, image, float(result.scores[i]), result.maps.lazy(i),
                            result.embeddings[i])
                bar.advance(task)
        return _finish_run(writer, skipped, f"normalcy score-batch (MuSc, zero-shot): {len(writer.rows)} images")


def _add_safely(writer: RunWriter, skipped: list[tuple[Path, str]], path: Path, image: Any, score: float, amap: Any,
                embedding: Any) -> None:
    """Write one image's results; if that fails (a disk error, an odd name), the run goes on without it."""
    try:
        writer.add(path, image, score, amap, embedding=embedding)
    except (OSError, ValueError) as err:
        if is_disk_full(err):  # not this image's problem: every image after it would be "skipped" too
            raise disk_full(writer.output, err) from None
        skipped.append((path, f"could not write its results: {err}"))


def _finish_run(writer: RunWriter, skipped: list[tuple[Path, str]], title: str) -> RunSummary:
    """Put a run with at least one scored image in place of the earlier one; a run of none is an error that
    leaves the earlier run as it was."""
    if not writer.rows:
        writer.abort()
        raise InputError(f"no image could be read{reasons(skipped, named=True)}")
    writer.close(skipped, title)
    return RunSummary(writer.output, IMAGES, len(writer.rows), sum(r[2] for r in writer.rows),
                      [(str(p), r) for p, r in skipped])
