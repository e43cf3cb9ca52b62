"""The command line: fit, predict, watch, score-batch, serve, eval, demo, export.

It parses options, calls the Python API (normalcy.api) and prints. Everything a person reads goes to
stderr except the command's own answer (a table, or with --json exactly one JSON object), so scripts
can pipe it. Each option is declared once below, as an Annotated type the commands share.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import json
import logging
import os
import sys
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Optional

import torch
import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from normalcy.api import (
    MAX_TOP,
    DetectorOptions,
    ExtractorOptions,
    RunSummary,
)
from normalcy.api import evaluate as api_evaluate
from normalcy.api import export as api_export
from normalcy.api import fit as api_fit
from normalcy.api import predict as api_predict
from normalcy.api import score_batch as api_score_batch
from normalcy.api import watch as api_watch
from normalcy.detectors import DETECTORS, MuSc
from normalcy.detectors.registry import default_backbone
from normalcy.errors import WHERE_CHARS, ImageError, InputError, NotFittedError, cli_wording, shortened
from normalcy.images.backbones import BACKBONES
from normalcy.images.features import FeatureExtractor
from normalcy.images.io import skips_listed
from normalcy.progress import PlainRichHandler, console, shown
from normalcy.review.ranking import DEFAULT_STRATEGY, strategies_help
from normalcy.runs.format import EMBEDDINGS, SERIES, VECTORS, add_embeddings, read_run_json
from normalcy.series import registry as series_registry
from normalcy.series.runs import SeriesSet, is_series_input, is_series_model
from normalcy.series.stream import HELD
from normalcy.vectors.registry import DEFAULT_DETECTOR as DEFAULT_VECTOR_DETECTOR
from normalcy.vectors.registry import VECTOR_DETECTORS
from normalcy.vectors.tables import (
    is_table,
    is_vector_model,
)
from normalcy.version import __version__

try:
    from typer._click.exceptions import BadParameter, UsageError  # typer 0.2x carries its own copy of click
except ImportError:  # pragma: no cover - older typer runs on click itself
    from click.exceptions import BadParameter, UsageError


class _Commands(TyperGroup):
    """normalcy's commands, whose usage errors (an unknown option, a missing argument, text for a number) are
    one line as normalcy's own errors are, with click's exit code 2: typer drew them in a box that a narrow
    terminal or a log file garbles."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        with _usage_errors():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        with _usage_errors(ctx):  # a command's own options are parsed here
            return super().invoke(ctx)


class _Command(TyperCommand):
    """A command that refuses an empty value (`-o ""`, `-o "$UNSET"`): typer read it as the path `.`, so that
    predict scored the current folder and fit wrote its model there, and as no detector (the default)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        given, _, _ = self.make_parser(ctx).parse_args(args=list(args))
        rest = super().parse_args(ctx, args)  # --help first
        for param in self.get_params(ctx):
            value = given.get(param.name)
            if value == "" or (isinstance(value, (list, tuple)) and "" in value):
                raise BadParameter("empty", ctx=ctx, param=param)
        return rest


@contextlib.contextmanager
def _usage_errors(group: Any = None) -> Iterator[None]:
    """A usage error as `error: MESSAGE` and the help to read, on stderr; exit code 2."""
    try:
        yield
    except UsageError as err:
        if type(err).__name__ == "NoArgsIsHelpError":  # `normalcy` alone: the help, printed by click
            raise
        console.print(f"[bold red]error:[/] {shown(err.format_message())}", highlight=False, soft_wrap=True)
        if err.ctx is not None:
            command = err.ctx.command_path
        elif group is not None:  # click leaves out the context of some (`fit DIR -o` with no value)
            command = " ".join(filter(None, (group.command_path, group.invoked_subcommand)))
        else:
            command = None
        if command:
            console.print(f"Try '{shown(command)} --help' for help.", highlight=False, soft_wrap=True)
        raise typer.Exit(err.exit_code) from None


app = typer.Typer(
    cls=_Commands,
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,  # click's plain help: rich's boxes cut option names short below about 100 columns
    help="Learn what normal looks like in pretrained features; find what is not.",
)
out = Console(emoji=False)  # stdout: the command's answer
log = logging.getLogger("normalcy")


def _setup(threads: int | None) -> None:
    """Log lines and Python warnings (a mask resized, Pillow's decompression-bomb check) go to stderr."""
    # torch raised a RuntimeError on -2 and quietly ignored 0; 20000 ended the run in libgomp's "Thread creation
    # failed" once work began (onnxruntime's pool too), having started thousands of threads on the way
    _in_range("--threads", threads, 1, MAX_THREADS)
    handler = PlainRichHandler(console=console, show_time=False, show_path=False)
    for name in ("normalcy", "py.warnings"):  # they still propagate: a host application's logging sees them too
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
    logging.captureWarnings(True)
    warnings.showwarning = _show_warning
    warnings.simplefilter("always", UserWarning)
    if threads:
        torch.set_num_threads(threads)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
                  line: str | None = None) -> None:
    """A Python warning as one line for a user: its message (a library's with its kind), not the source file,
    line number and source line that Python's format adds (a mask resized showed `return masks_for(...)`)."""
    ours = category.__module__.startswith("normalcy")
    logging.getLogger("py.warnings").warning("%s", message if ours else f"{category.__name__}: {message}")


def _in_range(option: str, value: float | None, low: float, high: float | None = None) -> None:
    """An InputError naming the option where a number given is out of its range: checked before any work, so
    that a fit is not lost to it (and a negative --top does not quietly empty the report)."""
    if value is None or (value >= low and (high is None or value <= high)):
        return
    bound = f"at least {low:g}" if high is None else f"between {low:g} and {high:g}"
    raise InputError(f"{option} must be {bound} (got {value:g})")


MAX_THREADS = 4 * (os.cpu_count() or 1)  # more only oversubscribes the cores
INTERRUPTED = 130  # 128 + SIGINT: what shells expect, and typer's own code for a Ctrl-C outside a command


def _fail(message: str, code: int = 1) -> None:
    console.print(f"[bold red]error:[/] {shown(message)}", highlight=False, soft_wrap=True)
    export = sys.modules.get("normalcy.scale.export")
    if export is not None and export.abandoned_runs():  # pragma: no cover - tested in a subprocess
        # a graph's node given up on still runs: a normal exit waited for it (minutes) and then aborted
        # ("terminate called without an active exception"), so the process ends here, its error said
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise typer.Exit(code)


def _guarded(fn: Any) -> Any:
    """Turn user-facing errors into one line on stderr and exit code 1 (Ctrl-C: 130), not a traceback."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with skips_listed(), cli_wording():  # each command lists the files it skipped; names --options
                return fn(*args, **kwargs)
        except (InputError, NotFittedError, ImageError) as err:
            _fail(str(err))
        except KeyboardInterrupt:
            _fail("interrupted", INTERRUPTED)
        except OSError as err:  # a path given with a name over the file system's limit: pathlib's exists() raises
            if err.errno != errno.ENAMETOOLONG:
                raise
            _fail(f"{err.filename or ''}: {err.strerror} (a file or folder name has at most 255 bytes on most file "
                  "systems)")

    return wrapper


# ------------------------------------------------------------------------------------- options, each once
_OWN_BACKBONES = ", ".join(f"{n} {c.default_backbone}" for n, c in DETECTORS.items() if c.uses_features)
_EXPERIMENTAL = ", ".join(n for n, c in DETECTORS.items() if c.experimental)


def _image_detectors(auto_norms: str = "") -> str:
    """--detector's choices for images; ``auto_norms``: what auto also tries, where --input-norm is an option."""
    return (f"one of {', '.join(DETECTORS)}, or auto (gaussian or patchcore, whichever separates held-out normal "
            f"training images from the same with synthetic defects better{auto_norms}); default gaussian. "
            f"Experimental (far behind on real defects, see README): {_EXPERIMENTAL}.")


def _detector_option(text: str) -> Any:
    """-d/--detector with the choices of the command that takes it (demo takes image detectors only)."""
    return Annotated[Optional[str], typer.Option("--detector", "-d", help=text)]


DetectorArg = _detector_option(
    "Images: " + _image_detectors("; unless --input-norm is given, gaussian with ImageNet's and with the standard "
                                  "normalisation too")
    + f" Tables: one of {', '.join(VECTOR_DETECTORS)}; default {DEFAULT_VECTOR_DETECTOR}. "
    f"Series: one of {', '.join(series_registry.DETECTORS)}; default {series_registry.DEFAULT_DETECTOR}.")
DemoDetectorArg = _detector_option("Image detectors only: " + _image_detectors())
BackboneArg = Annotated[Optional[str], typer.Option(
    help=f"One of: {', '.join(BACKBONES)}. Default: the detector's own ({_OWN_BACKBONES}).", show_default=False)]
BatchBackboneArg = Annotated[Optional[str], typer.Option(  # score-batch: MuSc's own only
    help=f"One of: {', '.join(BACKBONES)}. Default: {default_backbone(MuSc.name)}.", show_default=False)]
BackboneCfgArg = Annotated[Optional[Path], typer.Option(
    help="JSON file with custom_backbone() arguments: your own module and local weights (see README).")]
SizeArg = Annotated[str, typer.Option(
    help="Size the images are resized to before feature extraction: auto (the images' aspect ratio at about "
    "224x224 pixels), a square such as 224, or HEIGHTxWIDTH such as 160x320.")]
TileArg = Annotated[Optional[int], typer.Option(
    "--tile", help="Cut each image, at --image-size (auto: its own size), into overlapping square tiles of this "
    "many pixels (a multiple of 32) and blend their features into one map: high-resolution images without "
    "shrinking them (0: no tiling, as without the option).")]
OverlapArg = Annotated[int, typer.Option("--overlap", help="With --tile: pixels neighbouring tiles share (a "
                                         "multiple of 32).")]
GridArg = Annotated[int, typer.Option(help="Image-level features are pooled on a g x g grid (1 = whole image, as "
                                      "Rippel et al.).")]
PrecisionArg = Annotated[str, typer.Option(help="Backbone arithmetic: auto (bf16 where the CPU has it natively), "
                                           "fp32, bf16.")]
FprArg = Annotated[float, typer.Option(
    help="Target false-positive rate of the threshold, on normal training data (images, table rows or series).")]
SeedArg = Annotated[int, typer.Option(help="Random seed (coreset, calibration folds, training).")]
StepsArg = Annotated[Optional[int], typer.Option(help="Trained detectors: training steps (default: the detector's "
                                                 "own; efficientad: its student's, after its teacher's distillation "
                                                 "of up to 2000 steps or 40 % of the time budget).")]
BudgetArg = Annotated[Optional[float], typer.Option(help="Trained detectors: stop training after this many seconds.")]
_INPUT_NORMS = ("How pixels enter the backbone: own (the mean/std its weights were trained with; the default), "
                "imagenet (ImageNet's), standard (each image first brought to one mean and contrast: dim, grey or "
                "unevenly lit images)")
InputNormArg = Annotated[Optional[str], typer.Option(
    help=f"{_INPUT_NORMS}, or auto: each on held-out normal training images with synthetic defects, the best kept "
    "(fit, eval). Not given, --detector auto tries gaussian with each.", show_default=False)]
BatchInputNormArg = Annotated[Optional[str], typer.Option(  # score-batch: no training images to choose on
    help=f"{_INPUT_NORMS}.", show_default=False)]
TuneArg = Annotated[bool, typer.Option(
    "--tune", help="Choose the input normalisation, pooling grid and, unless given, the backbone and input size, "
    "on held-out normal training images with synthetic defects (one setting at a time; costs several fits; "
    "the choice goes into model.json).")]
TuneBudgetArg = Annotated[Optional[float], typer.Option(
    help="--tune's time budget, in plain fits (default 3): a trial that would overrun it is skipped (0: no "
    "limit; the settings come in order: input normalisation, backbone, input size, pooling grid).",
    show_default=False)]
ThreadsArg = Annotated[Optional[int], typer.Option(
    help="CPU threads for torch and an exported model's onnxruntime (default: all cores; at most 4 per core).")]
HeatmapsArg = Annotated[bool, typer.Option(help="Write a heatmap PNG per image (original | overlay) and overlays/.")]
ReportArg = Annotated[bool, typer.Option(help="Write report.html with the top anomalies.")]
# predict's: not given (None) is on where the run has them; given to a model whose run has none, an error
PredictHeatmapsArg = Annotated[Optional[bool], typer.Option(
    "--heatmaps/--no-heatmaps", help="Images: write a heatmap PNG per image (original | overlay) and overlays/ "
    "(default: on).", show_default=False)]
PredictReportArg = Annotated[Optional[bool], typer.Option(
    "--report/--no-report", help="Images and series: write report.html with the top anomalies (default: on).",
    show_default=False)]
SaveMapsArg = Annotated[bool, typer.Option(help="Also write each raw anomaly map as maps/*.npy (float32, original "
                                           "size).")]
TopArg = Annotated[Optional[int], typer.Option(help="Images (default 24) or series (default 12) shown in the "
                                               f"report (0: none; at most {MAX_TOP}).", show_default=False)]
RunOutArg = Annotated[Path, typer.Option("--output", "-o", help="Run folder: scores.csv, scores.parquet, "
                                         "skipped.csv, heatmaps/, report.html, ...")]
EmbeddingsArg = Annotated[Optional[bool], typer.Option(
    "--embeddings/--no-embeddings", help="Store image embeddings for review re-ranking (default: when the "
    "detector runs the backbone anyway; `normalcy serve` computes missing ones).")]
TrustArg = Annotated[bool, typer.Option("--trust-model-code", help="Allow a model whose custom backbone runs Python "
                                        "code (only for models you made or trust; the code file's recorded hash "
                                        "is checked).")]
LabelColumnArg = Annotated[Optional[str], typer.Option(help="Tables: the column of labels (0 normal, anything else "
                                                       "anomaly); fit leaves anomalous rows out, eval needs it. "
                                                       "Series folders (eval): test.csv's label column (default: "
                                                       "label).")]
IdColumnArg = Annotated[Optional[str], typer.Option(help="Tables: the column that names each row in the results "
                                                    "(default: row number).")]
WindowArg = Annotated[Optional[int], typer.Option(help="Series: rows per window (default: the period of the "
                                                  "training data, 8 to 256).")]
EventGapArg = Annotated[Optional[int], typer.Option(help="Series: anomalous rows fewer than this many rows apart "
                                                   "(or than the window) are one event (default: 100, as "
                                                   "Orion's 50 rows of padding either side merge).")]
PruneArg = Annotated[Optional[float], typer.Option(help="Series, offline runs: keep an event only if its peak "
                                                  "stands out of the lower ones by this fraction (Hundman et al.'s "
                                                  "pruning; default 0.13) and reaches its neighbourhood's dynamic "
                                                  "threshold (as Orion); 0: keep every event.")]
KeepGlitchesArg = Annotated[bool, typer.Option("--keep-glitches", help="Series: learn a one-row glitch of one "
                                                "sensor in multivariate training data as it is (default: mended "
                                                "for fitting, with a warning, so that it cannot raise the "
                                                "threshold).")]
ScoreFlagsArg = Annotated[bool, typer.Option("--score-flags", help="Series: score a block of columns that hold "
                                             "only 0 and 1 (one-hot commands: 90 % of the columns or more, "
                                             "two or more switching) as metrics too (default: left out, with a "
                                             "warning naming them; the measured columns are scored).")]
TimeColumnArg = Annotated[Optional[str], typer.Option(help="Series: the time column (epoch seconds, ISO 8601 dates "
                                                      "or row numbers); default: a column named timestamp, time, "
                                                      "date or datetime. Giving it makes the file a series.")]
StreamArg = Annotated[bool, typer.Option("--stream", help="Series: replay each series as a monitoring loop runs "
                                         "it: every row scored from its past, then learned; scores calibrated to "
                                         "[0, 1], anomalous from 0.3, events not pruned. For series that drift "
                                         "after the training rows; a long anomaly is learned as it goes on.")]
SeriesColumnArg = Annotated[Optional[str], typer.Option(help="Series: the column naming the series of a long file "
                                                        "with many; fit gives each its own model.")]
SeriesFlagArg = Annotated[Optional[bool], typer.Option(
    "--series/--table", help="Read a .csv or .parquet file as a series (--series) or a table (--table). Default: "
    "a series when it has a column named timestamp, time, date or datetime (or --time-column, --series-column).",
    show_default=False)]
RayArg = Annotated[Optional[str], typer.Option("--ray", help="Run on Ray: local (start one on this machine) or a "
                                               "cluster's ADDRESS (host:6379).")]


# The option of each field of the option groups (normalcy.api's dataclasses, where the defaults live).
GROUP_OPTIONS: dict[str, Any] = {
    "backbone": BackboneArg, "backbone_config": BackboneCfgArg, "image_size": SizeArg, "tile": TileArg,
    "overlap": OverlapArg, "pool_grid": GridArg, "precision": PrecisionArg, "input_norm": InputNormArg,
    "tune": TuneArg, "tune_budget": TuneBudgetArg,
    "detector": DetectorArg, "fpr": FprArg, "seed": SeedArg, "steps": StepsArg, "time_budget": BudgetArg,
    "window": WindowArg, "event_gap": EventGapArg, "prune": PruneArg, "keep_glitches": KeepGlitchesArg,
    "score_flags": ScoreFlagsArg,
}


def _grouped(without: tuple[str, ...] = (), options: dict[str, Any] | None = None,
             **groups: type) -> Callable[[Any], Any]:
    """Give a command the options of each option group, declared once (GROUP_OPTIONS and the dataclass's
    defaults), and pass them to it as one object: ``@_grouped(ex=ExtractorOptions)`` adds --backbone,
    --image-size, ... and calls the command with ``ex=ExtractorOptions(...)``. ``without``: fields left out;
    ``options``: a field's option in place of GROUP_OPTIONS' where the command takes fewer of its choices (its
    --help listed what it then refused)."""
    declared = {**GROUP_OPTIONS, **(options or {})}

    def decorate(fn: Any) -> Any:
        sig = inspect.signature(fn, eval_str=True)  # typer reads the Annotated options from the signature
        chosen = {key: [f for f in fields(cls) if f.name not in without] for key, cls in groups.items()}
        added = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                   annotation=declared[f.name]) for group in chosen.values() for f in group]
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in sig.parameters.values() if p.name not in groups]

        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            for key, cls in groups.items():
                kwargs[key] = cls(**{f.name: kwargs.pop(f.name) for f in chosen[key]})
            return fn(**kwargs)

        wrapper.__signature__ = sig.replace(parameters=own + added)  # type: ignore[attr-defined]
        return wrapper

    return decorate


@app.command(
    cls=_Command, short_help="Fit a detector on normal images (the rows of a table, or a series) and save it.")
@_guarded
@_grouped(ex=ExtractorOptions, det=DetectorOptions)
def fit(
    train_dir: Path = typer.Argument(..., help="Folder of normal images (e.g. DATASET/train/good), a table of "
                                      "feature vectors (.csv, .parquet, .npz), or a series (a .csv or .parquet "
                                      "file with a time column, a series folder DIR/train.csv, a folder of them)."),
    output: Path = typer.Option(..., "--output", "-o", help="Model directory to write."),
    ex: ExtractorOptions = ExtractorOptions(),
    det: DetectorOptions = DetectorOptions(),
    label_column: LabelColumnArg = None,
    id_column: IdColumnArg = None,
    time_column: TimeColumnArg = None,
    series_column: SeriesColumnArg = None,
    series: SeriesFlagArg = None,
    ray: RayArg = None,
    threads: ThreadsArg = None,
) -> None:
    """Fit a detector on normal images (the rows of a table, or a series) and save it."""
    _setup(threads)
    settings = {**vars(ex), **vars(det)}
    detector = settings.pop("detector")
    if is_series_input(train_dir, time_column, series_column, series):
        with console.status(f"fitting {shown(det.name(series=True))} on the series of {shown(train_dir)}"):
            model: Any = api_fit(train_dir, output, detector, time_column=time_column, series_column=series_column,
                            series=True, ray=ray, label_column=label_column, id_column=id_column, **settings)
        _report_series_fit(model, output, det.fpr)
        return
    if ray is not None:
        raise InputError("--ray on fit: for many series (--series-column, or a folder of series folders)")
    if series is False and not is_table(train_dir):
        raise InputError(f"{train_dir}: --table needs a .csv, .parquet or .npz file")
    basis = ""  # what the threshold was set on, where it is not every row fitted
    if is_table(train_dir):
        with console.status(f"fitting {shown(det.name(table=True))} on the rows of {shown(train_dir)}"):
            model = api_fit(train_dir, output, detector, label_column=label_column, id_column=id_column,
                            series=series, **settings)
        if model.ignored:  # the first 20: 5,000 text columns were one line of every name
            more = f" and {len(model.ignored) - 20} more" if len(model.ignored) > 20 else ""
            console.print(f"not numeric, left out of the features: {shown(', '.join(model.ignored[:20]))}{more}",
                          highlight=False, soft_wrap=True)
        _report_skipped_rows(train_dir, model.skipped_fit_)
        what = f"{model.n_train_} rows x {len(model.columns)} columns" + (
            "" if label_column is None else f" (rows labelled anomalous in {shown(repr(label_column))} left out)")
        if model.n_calibration_ != model.n_train_:  # kNN's threshold rests on a sample of the rows
            basis = f", set on the out-of-sample scores of {model.n_calibration_} of the rows"
    else:
        model = api_fit(train_dir, output, detector, label_column=label_column, id_column=id_column, series=series,
                        **settings)
        _report_skipped(model.skipped_fit_)
        what = f"{model.n_train_} images"
    console.print(f"fitted [bold]{shown(model.name)}[/] on {what}; threshold {model.threshold_:.4g} "
                  f"(target FPR {det.fpr:g}{basis}); saved to {shown(output)}", soft_wrap=True)


def _report_series_fit(model: Any, output: Path, fpr: float) -> None:
    """What fitting a series (or one model per series) gave, on stderr."""
    if isinstance(model, SeriesSet):
        for key, reason in model.failed[:20]:
            console.print(f"[yellow]not fitted:[/] {shown(shortened(key, WHERE_CHARS))}: {shown(reason)}",
                          highlight=False, soft_wrap=True)
        if len(model.failed) > 20:
            console.print(f"  ... and {len(model.failed) - 20} more series not fitted")
        by = f"column {shown(repr(model.series_column))}" if model.series_column else "series folder"
        console.print(f"fitted [bold]{shown(model.name)}[/] on {len(model)} series, one model each (by {by}; "
                      f"{model.n_train_} rows); target FPR {fpr:g}; saved to {shown(output)}", soft_wrap=True)
        return
    console.print(f"fitted [bold]{shown(model.name)}[/] on {model.n_train_} rows x {len(model.columns_)} "
                  f"column(s), window {model.window_}; threshold {model.threshold_:.4g} (target FPR {fpr:g}); "
                  f"saved to {shown(output)}", soft_wrap=True)


def _report_skipped_rows(path: Path, skipped: list[tuple[str, str]]) -> None:
    if skipped:
        console.print(f"[yellow]skipped {len(skipped)} row(s) of {shown(path)} that cannot be scored:[/]", soft_wrap=True)
        for row, reason in skipped[:20]:
            console.print(f"  {shown(row)}: {shown(reason)}", highlight=False, soft_wrap=True)
        if len(skipped) > 20:
            console.print(f"  ... and {len(skipped) - 20} more (all in skipped.csv of the results)")


def _report_run(run: RunSummary) -> None:
    """What a run holds, on stderr: per table, or the images and what was skipped."""
    if run.kind == SERIES:
        for where, reason in run.skipped[:20]:
            said = shortened(where, WHERE_CHARS)  # skipped.csv names the series whole
            text = said + reason[len(where):] if reason.startswith(where) else f"{said}: {reason}"
            console.print(f"[yellow]not scored:[/] {shown(text)}", highlight=False, soft_wrap=True)
        if len(run.skipped) > 20:
            console.print(f"  ... and {len(run.skipped) - 20} more (all in skipped.csv of the results)")
        notes = [n for n in run.notes if n not in run.warned]  # a warning already said is not said again
        for note in notes[:10]:
            console.print(f"repaired: {shown(note)}", highlight=False, soft_wrap=True)
        if len(notes) > 10:
            console.print(f"  ... and {len(notes) - 10} more repairs (run.json, report.html)")
        ray = f" on Ray ({run.cpus} CPUs)" if run.cpus is not None else ""
        pruned = (f" ({run.n_pruned} more crossed the threshold and were pruned as noise: their peaks do not stand "
                  "out of the others or of their neighbourhood; fit with --prune 0 to keep them)"
                  ) if run.n_pruned else ""
        console.print(f"scored {run.n_scored} rows of {run.n_series} series{ray}: {run.n_anomalous} anomalous, in "
                      f"{run.n_events} event(s){pruned}; results in {shown(run.output)}", soft_wrap=True)
    elif run.cpus is not None:
        for part in run.runs or [run]:
            console.print(f"scored {part.n_scored} on Ray ({part.cpus} CPUs): {part.n_anomalous} anomalous, "
                          f"{len(part.skipped)} not scored (reasons in skipped.csv); results in "
                          f"{shown(part.output)}", soft_wrap=True)
    elif run.kind == VECTORS:
        for path, reason in run.skipped if run.runs else []:  # several tables: one that could not be read
            console.print(f"[yellow]skipped:[/] {shown(reason)}", highlight=False, soft_wrap=True)
        for part in run.runs or [run]:
            _report_skipped_rows(part.source or Path(), part.skipped)
            console.print(f"scored {part.n_scored} rows of {shown(part.source)}: {part.n_anomalous} anomalous; "
                          f"results in {shown(part.output)}", soft_wrap=True)
    else:
        _report_skipped([(Path(p), r) for p, r in run.skipped])
        console.print(f"scored {run.n_scored} images: {run.n_anomalous} anomalous, {run.n_scored - run.n_anomalous} "
                      f"normal; results in {shown(run.output)}", soft_wrap=True)


@app.command(
    cls=_Command, short_help="Score images, tables or series into a run folder (scores, events, report).")
@_guarded
def predict(
    model_dir: Path = typer.Argument(..., help="A model directory written by `normalcy fit`, or a model.onnx "
                                     "written by `normalcy export` (scored by onnxruntime)."),
    inputs: list[Path] = typer.Argument(..., help="Images or folders of images; tables, for a model fitted on a "
                                        "table; series files or series folders (their test.csv), for a series model."),
    output: RunOutArg = Path("results"),
    heatmaps: PredictHeatmapsArg = None,
    report: PredictReportArg = None,
    save_maps: SaveMapsArg = False,
    embeddings: EmbeddingsArg = None,
    top: TopArg = None,
    trust_model_code: TrustArg = False,
    id_column: IdColumnArg = None,
    time_column: TimeColumnArg = None,
    series_column: SeriesColumnArg = None,
    stream: StreamArg = False,
    ray: Optional[str] = typer.Option(None, "--ray", help="Score on Ray: local (start one on this machine) or a "
                                      "cluster's ADDRESS (host:6379). Images and tables: scores, skipped.csv and "
                                      "run.json only; series: one series a task, the whole run folder."),
    threads: ThreadsArg = None,
) -> None:
    """Score images, tables or series into a run folder: scores.csv and scores.parquet (id, score, decision
    1/0, threshold; overlay for images; series for several series), skipped.csv, run.json; for images
    heatmaps/, overlays/, report.html, embeddings; for series events.csv, events/, report.html."""
    _setup(threads)
    _report_run(api_predict(model_dir, inputs, output, heatmaps=heatmaps, report=report, save_maps=save_maps,
                            embeddings=embeddings, top=top, trust_code=trust_model_code, id_column=id_column,
                            time_column=time_column, series_column=series_column, ray=ray, stream=stream))


@app.command(
    cls=_Command, short_help="Monitor live: score series rows as they arrive, one CSV line out per row.")
@_guarded
def watch(
    model_dir: Path = typer.Argument(..., help="A series model directory written by `normalcy fit`."),
    source: str = typer.Argument("-", help="A CSV file of rows (a header first), or - for stdin."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Read on as the file grows (as tail -f), until "
                                "Ctrl-C or --idle."),
    idle: Optional[float] = typer.Option(None, help="With --follow: stop after this many seconds without a new "
                                         "line (default: never)."),
    alarms_only: bool = typer.Option(False, "--alarms-only", help="Write only the rows that raise an alarm."),
    learn: bool = typer.Option(True, "--learn/--no-learn", help="Learn each row as normal once scored (the "
                               "model in memory follows drift; the saved model is not changed)."),
    save: Optional[Path] = typer.Option(None, help="At the end (of the input, --idle or Ctrl-C), write the model, "
                                        "having learned every row, to this new folder: a later watch goes on "
                                        "from there."),
    time_column: TimeColumnArg = None,
    series_column: SeriesColumnArg = None,
    threads: ThreadsArg = None,
) -> None:
    """Monitor live: score series rows as they arrive, each from its past, one CSV line out per row (time,
    score in [0, 1], alarm 1/0, the metrics that drove an alarm)."""
    _setup(threads)
    _in_range("--idle", idle, 0)
    s = api_watch(model_dir, source, time_column=time_column, series_column=series_column, learn=learn,
                  alarms_only=alarms_only, follow=follow, idle=idle, save=save)
    problems = "; ".join(f"{n} line(s): {kind}" for kind, n in s.problems.items())
    console.print(f"watched {s.rows} rows of {s.series} series: {s.alarms} alarm(s); {s.skipped} line(s) skipped, "
                  f"{s.held} value(s) {HELD}" + (f" ({problems})" if problems else ""),
                  highlight=False, soft_wrap=True)
    if s.closed:
        console.print("stopped: the output was closed by its reader", highlight=False, soft_wrap=True)
    if save is not None:
        console.print(f"saved the model, having learned them, to {shown(save)}", highlight=False, soft_wrap=True)


@app.command("score-batch", cls=_Command, short_help="Zero-shot (MuSc): score a folder of unlabeled images "
             "against each other, no training images needed.")
@_guarded
@_grouped(without=("pool_grid", "tune", "tune_budget"), options={"input_norm": BatchInputNormArg,
                                                                  "backbone": BatchBackboneArg}, ex=ExtractorOptions)
def score_batch(
    inputs: list[Path] = typer.Argument(..., help="Images or folders of unlabeled images, scored as one batch."),
    output: RunOutArg = Path("results"),
    extra: Optional[list[Path]] = typer.Option(None, help="Extra unlabeled images or folders to compare against "
                                                          "(not scored; they need not be normal). Repeatable."),
    ex: ExtractorOptions = ExtractorOptions(),
    heatmaps: HeatmapsArg = True,
    report: ReportArg = True,
    save_maps: SaveMapsArg = False,
    top: int = typer.Option(24, help=f"Images shown in the report (0: none; at most {MAX_TOP})."),
    image_score: str = typer.Option("max-median", help="Image score: max-median (a patch far above the rest of its "
                                    "image) or max (the highest patch); see docs/benchmarks.md for when each wins."),
    rscin_k: int = typer.Option(8, help="RsCIN: re-score each image over its k most similar images of the batch "
                                "(1 turns it off)."),
    threads: ThreadsArg = None,
) -> None:
    """Zero-shot (MuSc): score a folder of unlabeled images against each other, no training images needed."""
    _setup(threads)
    _report_run(api_score_batch(inputs, output, extra=extra or [], heatmaps=heatmaps, report=report,
                                save_maps=save_maps, top=top, image_score=image_score, rscin_k=rscin_k, **vars(ex)))


@app.command(
    cls=_Command, short_help="Review in the browser: a gallery by rank; your labels re-rank it.")
@_guarded
def serve(
    target: Path = typer.Argument(..., help="A run folder (from predict or score-batch, on Ray too), or a model directory."),
    images: list[Path] = typer.Argument(None, help="With a model: the images (or the one table) to score first."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="With a model: the run folder to write (default: review-run)."),
    database: Optional[str] = typer.Option(None, help="Database URL for labels (default: sqlite in the run folder); "
                                                      "e.g. postgresql://user:password@host/db for a team."),
    strategy: str = typer.Option(DEFAULT_STRATEGY, help=f"Re-ranking after each label: {strategies_help()}."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on. Anything but 127.0.0.1 exposes the page to the network."),
    port: int = typer.Option(8765, help="Port to listen on (0: any free one)."),
    open_browser: bool = typer.Option(False, "--open", help="Open the page in the default browser."),
    trust_model_code: TrustArg = False,
    threads: ThreadsArg = None,
) -> None:
    """Review in the browser: a gallery by rank, label with the keyboard, the ranking learns (active learning)."""
    _setup(threads)
    _in_range("--port", port, 0, 65535)
    from normalcy.review.server import serve as run_server

    run_dir = target
    if not target.exists():  # said as "neither a run folder (no scores.csv) nor a model directory"
        link = f" (a symbolic link to {os.readlink(target)}, which is not there)" if target.is_symlink() else ""
        raise InputError(f"{target}: not found{link}")
    if (target / "model.json").is_file():
        if not images:  # a table's or a series' model was asked for images
            what = ("a vector model: give the table to score too (normalcy serve MODEL TABLE)"
                    if is_vector_model(target) else
                    "a series model: give the series to score too (normalcy serve MODEL SERIES...)"
                    if is_series_model(target) else
                    "a model: give the images to score too (normalcy serve MODEL IMAGES...)")
            raise InputError(f"{target} is {what}")
        if is_vector_model(target) and len(images) != 1:
            raise InputError(f"{target} is a vector model: give one table to score and review")
        # a series model's run reviews its events (their features are written by predict)
        run_dir = output or Path("review-run")
        _report_run(api_predict(target, list(images), run_dir, trust_code=trust_model_code))
    elif not (target / "scores.csv").is_file():
        # predict of several tables writes a run for each in a folder of its own: that folder is no run
        runs = sorted(p.parent.name for p in target.glob("*/scores.csv")) if target.is_dir() else []
        if runs:
            raise InputError(f"{target} holds run folders, not a run: serve one of them ({', '.join(runs[:3])}"
                             f"{', ...' if len(runs) > 3 else ''})")
        raise InputError(f"{target}: neither a run folder (no scores.csv) nor a model directory (no model.json)")
    elif images:
        raise InputError(f"{target} is a run folder: it already holds its scores; give images only with a model")
    # A table run's embeddings are its features, a series run's its events' (written by predict); one without
    # them ranks by score.
    table_run = read_run_json(run_dir).get("kind") in (VECTORS, SERIES)
    if strategy != "none" and not (run_dir / EMBEDDINGS).is_file() and not table_run:
        _embed_run(run_dir)
    # serve() prints the URL itself, once the server accepts connections.
    run_server(run_dir, host=host, port=port, database=database, strategy=strategy, open_browser=open_browser)


def _embed_run(run_dir: Path) -> None:
    """Re-ranking learns from image embeddings; a run scored without them (EfficientAD, DRAEM, a run on Ray)
    gets them now, from the run's built-in backbone (a custom one is never imported from a run folder: the
    default is used)."""
    from normalcy.files import check_writable

    try:  # before the work (minutes at 100,000 images): its end was a traceback, "Read-only file system"
        check_writable(run_dir, run_dir, EMBEDDINGS)
    except InputError as err:
        log.warning("%s: it has no image embeddings, so it is ranked by anomaly score only (copy the run folder to a "
                    "writable place to re-rank by labels)", err)
        return
    name = read_run_json(run_dir).get("backbone")
    backbone = name if name in BACKBONES else "efficientnet_lite0"
    console.print(f"{shown(run_dir)} has no image embeddings: computing them for re-ranking with {backbone}",
                  soft_wrap=True)
    try:
        add_embeddings(run_dir, FeatureExtractor(backbone=backbone))
    except InputError as err:  # the images moved away since predict: stopped serve, though scores need none
        log.warning("%s: reviewed by anomaly score only, without pictures", err)


@app.command(
    "eval", cls=_Command, short_help="Fit on training data, score labelled test data, print metrics, speed and memory.")
@_guarded
@_grouped(ex=ExtractorOptions, det=DetectorOptions)
def eval_(
    dataset: Path = typer.Argument(..., help="A data set in MVTec AD layout (train/good, test/*, ground_truth/*), "
                                   "a table of feature vectors with --label-column, or a series folder "
                                   "(train.csv, test.csv with a label column) or a folder of them (pooled)."),
    ex: ExtractorOptions = ExtractorOptions(),
    det: DetectorOptions = DetectorOptions(),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object on stdout."),
    report: Optional[Path] = typer.Option(None, help="Image data sets: also write an HTML report here."),
    label_column: LabelColumnArg = None,
    test: Optional[Path] = typer.Option(None, help="Tables: score this labelled table (default: a stratified 30 % "
                                        "of DATASET's rows, the rest's normal rows fitted on)."),
    time_column: TimeColumnArg = None,
    stream: StreamArg = False,
    threads: ThreadsArg = None,
) -> None:
    """Fit on train/good, score test/, print metrics, speed and memory. A table: fit on normal rows, score
    labelled ones (ADBench's semi-supervised protocol). Series folders: fit on each train.csv, score its
    test.csv, pool event and point F1, AUC-PR, VUS-PR."""
    _setup(threads)
    settings = {**vars(ex), **vars(det)}
    detector = settings.pop("detector")
    kw = dict(label_column=label_column, test=test, time_column=time_column, report=report, stream=stream,
              **settings)
    if dataset.is_dir() and is_series_input(dataset):
        with console.status(f"evaluating {shown(det.name(series=True))} on the series of {shown(dataset)}"):
            metrics = api_evaluate(dataset, detector, **kw)
        for name, reason in metrics["skipped"]:
            console.print(f"[yellow]skipped:[/] {shown(name)}: {shown(reason)}", highlight=False, soft_wrap=True)
        if metrics["skipped"]:  # the pooled figures are the evaluated folders' only: said, not left to n_series
            console.print(f"[yellow]pooled over {metrics['n_series']} of {metrics['n_folders']} series folders: "
                          f"{len(metrics['skipped'])} skipped (named above)[/]", highlight=False, soft_wrap=True)
        for note in metrics["notes"][:10]:
            console.print(f"repaired: {shown(note)}", highlight=False, soft_wrap=True)
        if len(metrics["notes"]) > 10:
            console.print(f"  ... and {len(metrics['notes']) - 10} more repairs (the JSON's notes)")
    elif is_table(dataset):  # (with --time-column, api_evaluate refuses it)
        metrics = api_evaluate(dataset, detector, **kw)
        _report_skipped_rows(dataset, [(str(i), str(r)) for i, r in metrics["skipped"]])
    else:
        metrics = api_evaluate(dataset, detector, **kw)
        _report_skipped([(Path(p), r) for p, r in metrics["skipped"]])
        if report is not None:
            console.print(f"report: {shown(report)}", soft_wrap=True)
    if as_json:
        sys.stdout.write(json.dumps(metrics) + "\n")
    else:
        out.print(metrics_table(metrics))


def metrics_table(metrics: dict[str, Any]) -> Table:
    """A two-column table of everything numeric in an eval result."""
    table = Table(title=f"{shown(metrics['detector'])} on {shown(metrics['dataset'])}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        if k in ("skipped", "detector", "dataset") or isinstance(v, (list, dict)):
            continue
        table.add_row(k, "–" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v)))
    return table


@app.command(
    cls=_Command, short_help="Solar cells (elpv-dataset from PyPI): fit on normal cells, score held-out ones, "
    "write a report.")
@_guarded
def demo(
    output: Path = typer.Option(Path("normalcy-demo"), "--output", "-o", help="Folder for the model and the report."),
    detector: DemoDetectorArg = None,
    n_train: int = typer.Option(300, help="Normal cells to fit on."),
    n_test: int = typer.Option(200, help="Held-out normal cells and defective cells to score (each)."),
    threads: ThreadsArg = None,
) -> None:
    """Solar cells (elpv-dataset from PyPI): fit on normal cells, score held-out ones, write a report."""
    _setup(threads)
    _in_range("--n-train", n_train, 1)
    _in_range("--n-test", n_test, 1)
    from normalcy.demo import run_demo

    metrics, report_path = run_demo(output, detector=detector or "gaussian", n_train=n_train, n_test=n_test)
    out.print(metrics_table(metrics))
    out.print(f"HTML report: {shown(report_path)}", soft_wrap=True)


@app.command(
    "export", cls=_Command, short_help="Export an image model's scoring graph to ONNX (run it with onnxruntime).")
@_guarded
def export_(
    model_dir: Path = typer.Argument(..., help="A model directory written by `normalcy fit`."),
    output: Path = typer.Option(..., "--output", "-o", help="The ONNX file to write."),
    precision: str = typer.Option("fp32", help="fp32, or int8: the backbone quantised (static, activation ranges "
                                  "from --calibration); the threshold stays the fp32 graph's."),
    calibration: Optional[Path] = typer.Option(None, help="int8: a folder of normal images to calibrate on "
                                               "(e.g. the training folder)."),
    trust_model_code: TrustArg = False,
    threads: ThreadsArg = None,
) -> None:
    """Export a model's scoring graph to ONNX: resized uint8 RGB pixels in, image scores and maps out, threshold
    and input size in the metadata (run it with onnxruntime; Python: normalcy.scale.export.OnnxScorer)."""
    from normalcy.scale.export import graph_threshold

    _setup(threads)
    det, path = api_export(model_dir, output, precision=precision, calibration=calibration,
                           trust_code=trust_model_code)
    h, w = det.extractor.size
    console.print(f"exported {det.name} ({shown(precision)}) to {shown(path)}: input 'pixels' uint8 N x {h} x {w} x 3 RGB "
                  f"(resized), outputs image_scores, maps; threshold {graph_threshold(det):.4g}", soft_wrap=True)


@app.command(cls=_Command)
def version() -> None:
    """Print the version."""
    out.print(__version__)


def _print_version(given: bool) -> None:
    if given:
        out.print(__version__)
        raise typer.Exit()


@app.callback()
def _main(
    version_: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                  help="Print the version and exit."),
) -> None:
    """`normalcy --version` as most tools take it (it was an unknown option; `normalcy version` stays)."""


def _report_skipped(skipped: list[tuple[Path, str]]) -> None:
    """The files skipped, the first 20 (10,000 unreadable files were 10,000 lines), as rows are."""
    if skipped:
        console.print(f"[yellow]skipped {len(skipped)} file(s) that are not readable images:[/]")
        for p, r in skipped[:20]:
            console.print(f"  {shown(p)}: {shown(r)}", highlight=False, soft_wrap=True)
        if len(skipped) > 20:
            console.print(f"  ... and {len(skipped) - 20} more (all in a run's skipped.csv, and in eval --json)")


if __name__ == "__main__":
    app()
