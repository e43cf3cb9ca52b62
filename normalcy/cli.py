"""The command line: fit, predict, eval, demo.

Everything a person reads goes to stderr except the command's own answer
(a table, or with --json exactly one JSON object), so scripts can pipe it.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
import typer
from rich.console import Console
from rich.table import Table

from normalcy.detectors import (
    DETECTORS,
    MuSc,
    Scored,
    Skipped,
    create,
    default_backbone,
    load,
)
from normalcy.errors import ImageError, InputError, NotFittedError
from normalcy.images.backbones import BACKBONES, BackboneSpec, custom_backbone
from normalcy.images.features import FeatureExtractor, native_size, size_for
from normalcy.images.io import input_paths, iter_images, list_files
from normalcy.progress import PlainRichHandler, console, progress_bar, shown
from normalcy.review.ranking import DEFAULT_STRATEGY, strategies_help
from normalcy.runs.format import (
    EMBEDDINGS,
    RunWriter,
    check_output,
    outside_run,
    staged,
)
from normalcy.vectors.tables import (
    DEFAULT_DETECTOR,
    check_tables,
    eval_table,
    fit_table,
    is_table,
    is_vector_model,
    load_vector_model,
    read_table,
    save_vector_model,
    score_table,
    threshold_of,
    write_table_run,
)
from normalcy.version import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Learn what normal looks like in pretrained features; find what is not.",
)
out = Console(emoji=False)  # stdout: the command's answer
log = logging.getLogger("normalcy")


def _setup(threads: int | None) -> None:
    """Log lines and Python warnings (a mask resized, Pillow's decompression-bomb check) go to stderr."""
    handler = PlainRichHandler(console=console, show_time=False, show_path=False)
    for name in ("normalcy", "py.warnings"):  # they still propagate: a host application's logging sees them too
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
    logging.captureWarnings(True)
    warnings.simplefilter("always", UserWarning)
    if threads:
        torch.set_num_threads(threads)


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {shown(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _guarded(fn: Any) -> Any:
    """Turn user-facing errors into one line on stderr and exit code 1, not a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (InputError, NotFittedError, ImageError) as err:
            _fail(str(err))
        except KeyboardInterrupt:
            _fail("interrupted")

    return wrapper


def _extractor(backbone: Optional[str], backbone_config: Optional[Path], image_size: str, pool_grid: int = 4,
               precision: str = "auto", sample: list[Path] | None = None, tile: Optional[int] = None,
               overlap: int = 64, detector: str = "") -> FeatureExtractor:
    """The feature extractor the options describe; ``--image-size auto`` reads the sample's aspect ratio
    (with ``--tile``: the sample's own median size, which the tiles then cover). Without --backbone: the
    detector's own default (``auto``: gaussian's; fit_auto gives each candidate its own)."""
    spec: str | BackboneSpec = backbone or default_backbone(detector)
    if backbone_config is not None:
        try:
            cfg = json.loads(Path(backbone_config).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise InputError(f"{backbone_config}: cannot read backbone config ({err})") from None
        spec = custom_backbone(**cfg)
    size: Any = image_size
    if str(image_size).strip().lower() == "auto":
        size = native_size(sample or []) if tile else size_for(sample or [])
        if size[0] != size[1] or tile:
            why = "the images' own size, in tiles" if tile else "the images' aspect ratio"
            console.print(f"input size {size[0]}x{size[1]} (height x width), from {why}")
    return FeatureExtractor(backbone=spec, image_size=size, pool_grid=pool_grid, precision=precision, tile=tile,
                            overlap=overlap)


DetectorOpt = typer.Option(None, "--detector", "-d",
                           help=f"Images: one of {', '.join(DETECTORS)}, or auto (gaussian or patchcore, whichever "
                                "separates held-out normal training images from the same with synthetic defects "
                                "better); default gaussian. Tables: one of gaussian, knn, iforest, ecod, ensemble; "
                                "default ensemble.")
_OWN_BACKBONES = ", ".join(f"{n} {c.default_backbone}" for n, c in DETECTORS.items() if c.uses_features)
BackboneOpt = typer.Option(None, help=f"One of: {', '.join(BACKBONES)}. Default: the detector's own "
                           f"({_OWN_BACKBONES}; musc efficientnet_lite0).", show_default=False)
BackboneCfgOpt = typer.Option(
    None, help="JSON file with custom_backbone() arguments: your own module and local weights (see README)."
)
SizeOpt = typer.Option("auto", help="Size the images are resized to before feature extraction: auto (the "
                       "images' aspect ratio at about 224x224 pixels), a square such as 224, or HEIGHTxWIDTH "
                       "such as 160x320.")
ThreadsOpt = typer.Option(None, help="CPU threads for torch (default: all cores).")
PrecisionOpt = typer.Option("auto", help="Backbone arithmetic: auto (bf16 where the CPU has it natively), fp32, bf16.")
StepsOpt = typer.Option(None, help="Trained detectors: training steps (default: the detector's own).")
BudgetOpt = typer.Option(None, help="Trained detectors: stop training after this many seconds.")
FprOpt = typer.Option(0.01, help="Target false-positive rate of the threshold, on normal images.")
SeedOpt = typer.Option(0, help="Random seed (coreset, calibration folds, training).")
HeatmapsOpt = typer.Option(True, help="Write a heatmap PNG per image (original | overlay) and overlays/.")
ReportOpt = typer.Option(True, help="Write report.html with the top anomalies.")
SaveMapsOpt = typer.Option(False, help="Also write each raw anomaly map as maps/*.npy (float32, original size).")
TopOpt = typer.Option(24, help="Images shown in the report.")
RunOutOpt = typer.Option(Path("results"), "--output", "-o", help="Run folder: scores.csv, heatmaps/, report.html, ...")
EmbeddingsOpt = typer.Option(None, "--embeddings/--no-embeddings",
                             help="Store image embeddings for review re-ranking (default: when the detector runs the "
                                  "backbone anyway; `normalcy serve` computes missing ones).")
TrustOpt = typer.Option(False, "--trust-model-code", help="Allow a model whose custom backbone runs Python code "
                        "(only for models you made or trust; the code file's recorded hash is checked).")
LabelColumnOpt = typer.Option(None, help="Tables: the column of labels (0 normal, anything else anomaly); fit "
                              "leaves anomalous rows out, eval needs it.")
IdColumnOpt = typer.Option(None, help="Tables: the column that names each row in the results (default: row number).")
TileOpt = typer.Option(None, "--tile", help="Cut each image, at --image-size (auto: its own size), into overlapping "
                       "square tiles of this many pixels (a multiple of 32) and blend their features into one map: "
                       "high-resolution images without shrinking them.")
OverlapOpt = typer.Option(64, "--overlap", help="With --tile: pixels neighbouring tiles share (a multiple of 32).")
GridOpt = typer.Option(4, help="Image-level features are pooled on a g x g grid (1 = whole image, as Rippel et al.).")


@app.command()
@_guarded
def fit(
    train_dir: Path = typer.Argument(..., help="Folder of normal images (e.g. DATASET/train/good), or a table of "
                                      "feature vectors (.csv, .parquet, .npz)."),
    output: Path = typer.Option(..., "--output", "-o", help="Model directory to write."),
    detector: Optional[str] = DetectorOpt,
    backbone: Optional[str] = BackboneOpt,
    backbone_config: Optional[Path] = BackboneCfgOpt,
    image_size: str = SizeOpt,
    tile: Optional[int] = TileOpt,
    overlap: int = OverlapOpt,
    pool_grid: int = GridOpt,
    precision: str = PrecisionOpt,
    fpr: float = FprOpt,
    seed: int = SeedOpt,
    steps: Optional[int] = StepsOpt,
    time_budget: Optional[float] = BudgetOpt,
    label_column: Optional[str] = LabelColumnOpt,
    id_column: Optional[str] = IdColumnOpt,
    threads: Optional[int] = ThreadsOpt,
) -> None:
    """Fit a detector on normal images (or the rows of a table) and save it."""
    _setup(threads)
    if is_table(train_dir):
        _fit_table(train_dir, output, detector or DEFAULT_DETECTOR, fpr, seed, label_column, id_column)
        return
    detector = detector or "gaussian"
    paths = list_files(train_dir)
    extractor = _extractor(backbone, backbone_config, image_size, pool_grid, precision, paths, tile, overlap,
                           detector)
    kwargs = _detector_kwargs(detector, fpr, seed, steps, time_budget)
    if detector == "auto":
        from normalcy.evaluation.validation import fit_auto

        det = fit_auto(paths, extractor, own_backbones=backbone is None and backbone_config is None, **kwargs)
    else:
        det = create(detector, extractor, **kwargs).fit(paths)
    det.save(output)
    _report_skipped(det.skipped_fit_)
    console.print(
        f"fitted [bold]{det.name}[/] on {det.n_train_} images; threshold {det.threshold_:.4g} "
        f"(target FPR {fpr:g}); saved to {shown(output)}", soft_wrap=True
    )


def _fit_table(path: Path, output: Path, detector: str, fpr: float, seed: int, label_column: Optional[str],
               id_column: Optional[str]) -> None:
    table = read_table(path, label_column, id_column)
    if table.ignored:
        console.print(f"not numeric, left out of the features: {shown(', '.join(table.ignored))}", highlight=False,
                      soft_wrap=True)
    with console.status(f"fitting {shown(detector)} on {len(table.X)} rows"):
        det, skipped = fit_table(table, detector, fpr, seed)
    save_vector_model(det, detector, table.columns, output)
    _report_skipped_rows(path, skipped)
    normal = "" if table.labels is None else f" (rows labelled anomalous in {shown(repr(label_column))} left out)"
    console.print(f"fitted [bold]{shown(detector)}[/] on {len(det.calibration_scores_)} rows x {len(table.columns)} "
                  f"columns{normal}; threshold {threshold_of(det):.4g} (target FPR {fpr:g}); saved to {shown(output)}",
                  soft_wrap=True)


def _predict_table(model_dir: Path, inputs: list[Path], output: Path, id_column: Optional[str]) -> None:
    """Score each table with a vector model; a table that cannot be read is named and the others go on.
    The run folder (one per table when there are several) replaces ``output`` once all are written."""
    det, meta = load_vector_model(model_dir)
    check_tables(inputs)
    failed = []
    with staged(output, inputs) as folder:
        for path in inputs:
            target = Path() if len(inputs) == 1 else Path(path.stem)
            try:
                table = read_table(path, id_column=id_column, columns=meta.columns)
            except InputError as err:
                console.print(f"[yellow]skipped:[/] {shown(err)}", highlight=False, soft_wrap=True)
                failed.append(path)
                continue
            scores, mask, skipped = score_table(det, table)
            write_table_run(folder / target, table, scores, mask, meta.threshold, skipped,
                            {"detector": meta.detector, "model": str(Path(model_dir).resolve())})
            _report_skipped_rows(path, skipped)
            n_bad = int((scores[mask] > meta.threshold).sum())
            console.print(f"scored {int(mask.sum())} rows of {shown(path)}: {n_bad} anomalous; results in "
                          f"{shown(output / target)}", soft_wrap=True)
        if len(failed) == len(inputs):
            _fail("no table could be read")


def _report_skipped_rows(path: Path, skipped: list[tuple[str, str]]) -> None:
    if skipped:
        console.print(f"[yellow]skipped {len(skipped)} row(s) of {shown(path)} that cannot be scored:[/]", soft_wrap=True)
        for row, reason in skipped[:20]:
            console.print(f"  {shown(row)}: {shown(reason)}", highlight=False, soft_wrap=True)
        if len(skipped) > 20:
            console.print(f"  ... and {len(skipped) - 20} more (all in skipped.csv of the results)")


@app.command()
@_guarded
def predict(
    model_dir: Path = typer.Argument(..., help="A model directory written by `normalcy fit`, or a model.onnx "
                                     "written by `normalcy export` (scored by onnxruntime)."),
    inputs: list[Path] = typer.Argument(..., help="Images or folders of images; or tables, for a model fitted on a table."),
    output: Path = RunOutOpt,
    heatmaps: bool = HeatmapsOpt,
    report: bool = ReportOpt,
    save_maps: bool = SaveMapsOpt,
    embeddings: Optional[bool] = EmbeddingsOpt,
    top: int = TopOpt,
    trust_model_code: bool = TrustOpt,
    id_column: Optional[str] = IdColumnOpt,
    ray: Optional[str] = typer.Option(None, "--ray", help="Score on Ray: local (start one on this machine) or a "
                                      "cluster's ADDRESS (host:6379). Writes scores.parquet/ and run.json only."),
    threads: Optional[int] = ThreadsOpt,
) -> None:
    """Score images into a run folder: scores.csv, heatmaps/, overlays/, report.html, skipped.csv, embeddings.
    Tables: scores.csv and scores.parquet (id, score, decision, threshold), skipped.csv, run.json."""
    _setup(threads)
    if _is_exported(model_dir) and (ray is not None or embeddings):
        raise InputError(f"{model_dir}: an exported model scores images into scores and maps only: "
                         + ("--ray takes a model folder written by `normalcy fit`" if ray is not None else
                            "it has no embeddings (predict with the model folder for them)"))
    if ray is not None:
        from normalcy.scale.distributed import predict_ray

        for run in predict_ray(model_dir, inputs, output, ray, trust_code=trust_model_code, id_column=id_column):
            console.print(f"scored {run['n_scored']} on Ray ({run['cpus']} CPUs): {run['n_anomalous']} anomalous, "
                          f"{run['n_skipped']} not scored (reason in column skipped); results in "
                          f"{shown(run['output'])}/scores.parquet", soft_wrap=True)
        return
    if is_vector_model(model_dir):
        _predict_table(model_dir, inputs, output, id_column)
        return
    _predict_run(model_dir, inputs, output, heatmaps=heatmaps, report=report, save_maps=save_maps,
                 embeddings=embeddings, top=top, trust_code=trust_model_code)


def _is_exported(model: Path) -> bool:
    """A model.onnx written by `normalcy export` (scored by onnxruntime), not a model folder."""
    return model.suffix.lower() == ".onnx"


def _predict_run(model_dir: Path, inputs: list[Path], output: Path, heatmaps: bool = True, report: bool = True,
                 save_maps: bool = False, embeddings: bool | None = None, top: int = 24,
                 trust_code: bool = False) -> None:
    """Stream every file through the model into a run folder; a file that fails is skipped, named, not fatal.
    A model.onnx (``normalcy export``) is scored by onnxruntime, through ``OnnxScorer``."""
    check_output(output, inputs)
    paths = outside_run(input_paths(inputs), output)
    info = {"model": str(Path(model_dir).resolve())}
    records: Iterator[Scored | Skipped]
    if _is_exported(model_dir):
        from normalcy.scale.export import OnnxScorer

        scorer = OnnxScorer(model_dir)
        threshold, map_range = scorer.threshold, tuple(scorer.meta["map_range"])
        info |= {"detector": scorer.meta["detector"], "backbone": scorer.meta["backbone"], "runtime": "onnxruntime"}
        records = scorer.iter_score(paths)
    else:
        det = load(model_dir, trust_code=trust_code)
        if embeddings is None:  # free where the backbone runs anyway; `serve` computes them later for the others
            embeddings = det.uses_features
        threshold, map_range = det.threshold_, det.map_range_ or (0.0, 1.0)  # type: ignore[assignment]
        info |= {"detector": det.name, "backbone": det.extractor.spec.name}
        records = det.iter_score(paths, embeddings=embeddings)
    skipped: list[tuple[Path, str]] = []
    with RunWriter(output, threshold, map_range, heatmaps=heatmaps, overlays=heatmaps,  # type: ignore[arg-type]
                   report=report, save_maps=save_maps, top=top, info=info, inputs=inputs) as writer:
        with progress_bar() as bar:
            task = bar.add_task("predict", total=len(paths))
            for rec in records:
                if isinstance(rec, Skipped):
                    skipped.append((rec.path, rec.reason))
                else:
                    _add_safely(writer, skipped, rec.path, rec.image, rec.score, rec.map, rec.anomalous,
                                rec.embedding)
                bar.update(task, completed=len(writer.rows) + len(skipped))
        _finish_run(writer, skipped, f"normalcy predict: {len(writer.rows)} images")


def _add_safely(writer: RunWriter, skipped: list[tuple[Path, str]], path: Path, *args: Any) -> None:
    """Write one image's results; if that fails (a disk error, an odd name), the run goes on without it."""
    try:
        writer.add(path, *args)
    except (OSError, ValueError) as err:
        skipped.append((path, f"could not write its results: {err}"))


@app.command("score-batch")
@_guarded
def score_batch(
    inputs: list[Path] = typer.Argument(..., help="Images or folders of unlabeled images, scored as one batch."),
    output: Path = RunOutOpt,
    extra: Optional[list[Path]] = typer.Option(None, help="Extra unlabeled images or folders to compare against "
                                                          "(not scored; they need not be normal). Repeatable."),
    backbone: Optional[str] = BackboneOpt,
    backbone_config: Optional[Path] = BackboneCfgOpt,
    image_size: str = SizeOpt,
    tile: Optional[int] = TileOpt,
    overlap: int = OverlapOpt,
    precision: str = PrecisionOpt,
    heatmaps: bool = HeatmapsOpt,
    report: bool = ReportOpt,
    save_maps: bool = SaveMapsOpt,
    top: int = TopOpt,
    image_score: str = typer.Option("max-median", help="Image score: max-median (a patch far above the rest of its "
                                    "image) or max (the highest patch); see docs/benchmarks.md for when each wins."),
    rscin_k: int = typer.Option(8, help="RsCIN: re-score each image over its k most similar images of the batch "
                                "(1 turns it off)."),
    threads: Optional[int] = ThreadsOpt,
) -> None:
    """Zero-shot (MuSc): score a folder of unlabeled images against each other, no training images needed."""
    _setup(threads)
    check_output(output, inputs)  # before the minutes of scoring, not after
    paths = outside_run(input_paths(inputs), output)
    det = MuSc(_extractor(backbone, backbone_config, image_size, precision=precision, sample=paths, tile=tile,
                          overlap=overlap),
               image_score=image_score, rscin_k=rscin_k)
    det.references(input_paths(extra) if extra else [])
    _report_skipped(det.skipped_refs_)
    result = det.score(paths, embeddings=True)  # images are read again below: a big batch need not fit in memory
    assert result.embeddings is not None
    skipped = list(result.skipped)
    row_of = {p: i for i, p in enumerate(result.paths)}
    with RunWriter(output, result.threshold, det.map_range_ or (0.0, 1.0), heatmaps=heatmaps, overlays=heatmaps,
                   report=report, save_maps=save_maps, top=top, inputs=inputs,
                   info={"detector": det.name, "model": "zero-shot", "backbone": det.extractor.spec.name}) as writer:
        with progress_bar() as bar:
            task = bar.add_task("writing", total=len(result.paths))
            for path, image in iter_images(result.paths, skipped):  # a file gone since scoring is skipped, named
                i = row_of[path]
                _add_safely(writer, skipped, path, image, float(result.scores[i]), result.maps[i],
                            bool(result.decisions[i]), result.embeddings[i])
                bar.advance(task)
        _finish_run(writer, skipped, f"normalcy score-batch (MuSc, zero-shot): {len(writer.rows)} images")


def _finish_run(writer: RunWriter, skipped: list[tuple[Path, str]], title: str) -> None:
    """Put a run with at least one scored image in place of the earlier one; a run of none is an error that
    leaves the earlier run as it was."""
    _report_skipped(skipped)
    if not writer.rows:
        writer.abort()
        _fail("no image could be read")
    writer.close(skipped, title)
    n_bad = sum(r[2] for r in writer.rows)
    n = len(writer.rows)
    console.print(f"scored {n} images: {n_bad} anomalous, {n - n_bad} normal; results in {shown(writer.output)}",
                  soft_wrap=True)


@app.command()
@_guarded
def serve(
    target: Path = typer.Argument(..., help="A run folder (from predict or score-batch), or a model directory."),
    images: list[Path] = typer.Argument(None, help="With a model: the images or folders to score first."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="With a model: the run folder to write (default: review-run)."),
    database: Optional[str] = typer.Option(None, help="Database URL for labels (default: sqlite in the run folder); "
                                                      "e.g. postgresql://user:password@host/db for a team."),
    strategy: str = typer.Option(DEFAULT_STRATEGY, help=f"Re-ranking after each label: {strategies_help()}."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on. Anything but 127.0.0.1 exposes the page to the network."),
    port: int = typer.Option(8765, help="Port to listen on."),
    open_browser: bool = typer.Option(False, "--open", help="Open the page in the default browser."),
    trust_model_code: bool = TrustOpt,
    threads: Optional[int] = ThreadsOpt,
) -> None:
    """Review in the browser: a gallery by rank, label with the keyboard, the ranking learns (active learning)."""
    _setup(threads)
    from normalcy.review.server import serve as run_server

    run_dir = target
    if (target / "model.json").is_file():
        if not images:
            raise InputError(f"{target} is a model: give the images to score too (normalcy serve MODEL IMAGES...)")
        run_dir = output or Path("review-run")
        if is_vector_model(target):
            if len(images) != 1:
                raise InputError(f"{target} is a vector model: give one table to score and review")
            _predict_table(target, list(images), run_dir, None)
        else:
            _predict_run(target, list(images), run_dir, trust_code=trust_model_code)
    elif not (target / "scores.csv").is_file():
        raise InputError(f"{target}: neither a run folder (no scores.csv) nor a model directory (no model.json)")
    elif images:
        raise InputError(f"{target} is a run folder: it already holds its scores; give images only with a model")
    from normalcy.runs.format import read_run_json
    from normalcy.vectors.tables import VECTOR_KIND

    # A table run's embeddings are its features (written by predict); one without them ranks by score.
    table_run = read_run_json(run_dir).get("kind") == VECTOR_KIND
    if strategy != "none" and not (run_dir / EMBEDDINGS).is_file() and not table_run:
        _embed_run(run_dir)
    # serve() prints the URL itself, once the server accepts connections.
    run_server(run_dir, host=host, port=port, database=database, strategy=strategy, open_browser=open_browser)


def _embed_run(run_dir: Path) -> None:
    """Re-ranking learns from image embeddings; a run scored without them (EfficientAD, DRAEM) gets them now,
    from the run's built-in backbone (a custom one is never imported from a run folder: the default is used)."""
    from normalcy.runs.format import add_embeddings, read_run_json

    name = read_run_json(run_dir).get("backbone")
    backbone = name if name in BACKBONES else "efficientnet_lite0"
    console.print(f"{shown(run_dir)} has no image embeddings: computing them for re-ranking with {backbone}",
                  soft_wrap=True)
    add_embeddings(run_dir, FeatureExtractor(backbone=backbone))


@app.command("eval")
@_guarded
def eval_(
    dataset: Path = typer.Argument(..., help="A data set in MVTec AD layout (train/good, test/*, ground_truth/*), "
                                   "or a table of feature vectors with --label-column."),
    detector: Optional[str] = DetectorOpt,
    backbone: Optional[str] = BackboneOpt,
    backbone_config: Optional[Path] = BackboneCfgOpt,
    image_size: str = SizeOpt,
    tile: Optional[int] = TileOpt,
    overlap: int = OverlapOpt,
    pool_grid: int = GridOpt,
    precision: str = PrecisionOpt,
    fpr: float = FprOpt,
    seed: int = SeedOpt,
    steps: Optional[int] = StepsOpt,
    time_budget: Optional[float] = BudgetOpt,
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object on stdout."),
    report: Optional[Path] = typer.Option(None, help="Also write an HTML report here."),
    label_column: Optional[str] = LabelColumnOpt,
    test: Optional[Path] = typer.Option(None, help="Tables: score this labelled table (default: a stratified 30 % "
                                        "of DATASET's rows, the rest's normal rows fitted on)."),
    threads: Optional[int] = ThreadsOpt,
) -> None:
    """Fit on train/good, score test/, print metrics, speed and memory. A table: fit on normal rows, score
    labelled ones (ADBench's semi-supervised protocol)."""
    _setup(threads)
    if is_table(dataset):
        if label_column is None:
            raise InputError(f"{dataset}: eval on a table needs --label-column (0 normal, 1 anomaly)")
        test_table = read_table(test, label_column) if test is not None else None
        metrics = eval_table(read_table(dataset, label_column), detector or DEFAULT_DETECTOR, fpr, seed, test_table)
        _report_skipped_rows(dataset, [(str(i), str(r)) for i, r in metrics["skipped"]])
    else:
        metrics = _eval_images(dataset, detector or "gaussian", backbone, backbone_config, image_size, pool_grid,
                               precision, fpr, seed, steps, time_budget, report, tile, overlap)
    if as_json:
        sys.stdout.write(json.dumps(metrics) + "\n")
    else:
        out.print(metrics_table(metrics))


def _eval_images(dataset: Path, detector: str, backbone: Optional[str], backbone_config: Optional[Path],
                 image_size: str, pool_grid: int, precision: str, fpr: float, seed: int, steps: Optional[int],
                 time_budget: Optional[float], report: Optional[Path], tile: Optional[int] = None,
                 overlap: int = 64) -> dict[str, Any]:
    from normalcy.evaluation.evaluate import run_eval, write_eval_report
    from normalcy.images.io import load_dataset

    ds = load_dataset(dataset)
    extractor = _extractor(backbone, backbone_config, image_size, pool_grid, precision, ds.train, tile, overlap,
                           detector)
    metrics, det, result = run_eval(ds, detector, extractor, progress=True,
                                    own_backbones=backbone is None and backbone_config is None,
                                    detector_kwargs=_detector_kwargs(detector, fpr, seed, steps, time_budget))
    _report_skipped([(Path(p), r) for p, r in metrics["skipped"]])
    if report is not None:
        write_eval_report(report, metrics, det, result, ds)
        console.print(f"report: {shown(report)}", soft_wrap=True)
    return metrics


def metrics_table(metrics: dict[str, Any]) -> Table:
    """A two-column table of everything numeric in an eval result."""
    table = Table(title=f"{shown(metrics['detector'])} on {shown(metrics['dataset'])}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        if k in ("skipped", "detector", "dataset"):
            continue
        table.add_row(k, "–" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v)))
    return table


@app.command()
@_guarded
def demo(
    output: Path = typer.Option(Path("normalcy-demo"), "--output", "-o", help="Folder for the model and the report."),
    detector: Optional[str] = DetectorOpt,
    n_train: int = typer.Option(300, help="Normal cells to fit on."),
    n_test: int = typer.Option(200, help="Held-out normal cells and defective cells to score (each)."),
    threads: Optional[int] = ThreadsOpt,
) -> None:
    """Solar cells (elpv-dataset from PyPI): fit on normal cells, score held-out ones, write a report."""
    _setup(threads)
    from normalcy.demo import run_demo

    metrics, report_path = run_demo(output, detector=detector or "gaussian", n_train=n_train, n_test=n_test)
    out.print(metrics_table(metrics))
    out.print(f"HTML report: {shown(report_path)}", soft_wrap=True)


@app.command("export")
@_guarded
def export_(
    model_dir: Path = typer.Argument(..., help="A model directory written by `normalcy fit`."),
    output: Path = typer.Option(..., "--output", "-o", help="The ONNX file to write."),
    precision: str = typer.Option("fp32", help="fp32, or int8: the backbone quantised (static, activation ranges "
                                  "from --calibration); the threshold stays the fp32 model's."),
    calibration: Optional[Path] = typer.Option(None, help="int8: a folder of normal images to calibrate on "
                                               "(e.g. the training folder)."),
    trust_model_code: bool = TrustOpt,
    threads: Optional[int] = ThreadsOpt,
) -> None:
    """Export a model's scoring graph to ONNX: resized uint8 RGB pixels in, image scores and maps out, threshold
    and input size in the metadata (run it with onnxruntime; Python: normalcy.scale.export.OnnxScorer)."""
    _setup(threads)
    from normalcy.scale.export import export_onnx

    if is_vector_model(model_dir):
        raise InputError(f"{model_dir} is a vector model (tables): only image models are exported to ONNX")
    if precision == "int8" and calibration is None:
        raise InputError("--precision int8 needs --calibration DIR: normal images, such as the training folder")
    det = load(model_dir, trust_code=trust_model_code)
    calib = list_files(calibration) if calibration is not None else None
    path = export_onnx(det, output, precision=precision, calibration_paths=calib)
    h, w = det.extractor.size
    console.print(f"exported {det.name} ({shown(precision)}) to {shown(path)}: input 'pixels' uint8 N x {h} x {w} x 3 RGB "
                  f"(resized), outputs image_scores, maps; threshold {det.threshold_:.4g}", soft_wrap=True)


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


def _detector_kwargs(detector: str, fpr: float, seed: int, steps: Optional[int],
                     time_budget: Optional[float]) -> dict[str, Any]:
    """Detector arguments from the options fit and eval share; --steps/--time-budget only for detectors that train."""
    given = {k: v for k, v in (("steps", steps), ("time_budget", time_budget)) if v is not None}
    if given and detector == "auto":
        raise InputError("--detector auto chooses between detectors that do not train: --steps and "
                         "--time-budget do not apply")
    cls = DETECTORS.get(detector)
    if given and cls is not None:
        unknown = [k for k in given if k not in cls.Params.model_fields]
        if unknown:
            raise InputError(f"detector {detector!r} does not train: --{unknown[0].replace('_', '-')} does not apply")
    return {"fpr": fpr, "seed": seed, **given}


def _report_skipped(skipped: list[tuple[Path, str]]) -> None:
    if skipped:
        console.print(f"[yellow]skipped {len(skipped)} file(s) that are not readable images:[/]")
        for p, r in skipped:
            console.print(f"  {shown(p)}: {shown(r)}", highlight=False, soft_wrap=True)


if __name__ == "__main__":
    app()
