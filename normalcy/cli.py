"""The command line: fit, predict, eval, demo.

Everything a person reads goes to stderr except the command's own answer
(a table, or with --json exactly one JSON object), so scripts can pipe it.
"""

from __future__ import annotations

import csv
import heapq
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from . import __version__
from .backbones import BACKBONES, BackboneSpec, custom_backbone
from .data import ImageError, InputError, list_files
from .detectors import DETECTORS, NotFittedError, create, load
from .features import FeatureExtractor
from .progress import console, progress_bar
from .report import ReportImage, save_heatmap, write_report

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Learn what normal looks like in pretrained features; find what is not.",
)
out = Console()  # stdout: the command's answer
log = logging.getLogger("normalcy")


def _setup(threads: int | None) -> None:
    if not log.handlers:
        log.addHandler(RichHandler(console=console, show_time=False, show_path=False))
        log.setLevel(logging.INFO)
        log.propagate = False
    logging.captureWarnings(True)
    warnings.simplefilter("always", UserWarning)
    if threads:
        torch.set_num_threads(threads)


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
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


def _extractor(backbone: str, backbone_config: Optional[Path], image_size: int, pool_grid: int = 4,
               precision: str = "auto") -> FeatureExtractor:
    spec: str | BackboneSpec = backbone
    if backbone_config is not None:
        try:
            cfg = json.loads(Path(backbone_config).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise InputError(f"{backbone_config}: cannot read backbone config ({err})") from None
        spec = custom_backbone(**cfg)
    return FeatureExtractor(backbone=spec, image_size=image_size, pool_grid=pool_grid, precision=precision)


DetectorOpt = typer.Option("gaussian", "--detector", "-d", help=f"One of: {', '.join(DETECTORS)}.")
BackboneOpt = typer.Option("efficientnet_lite0", help=f"One of: {', '.join(BACKBONES)}.")
BackboneCfgOpt = typer.Option(
    None, help="JSON file with custom_backbone() arguments: your own module and local weights (see README)."
)
SizeOpt = typer.Option(224, help="Images are resized to this square size before feature extraction.")
ThreadsOpt = typer.Option(None, help="CPU threads for torch (default: all cores).")
PrecisionOpt = typer.Option("auto", help="Backbone arithmetic: auto (bf16 where the CPU has it natively), fp32, bf16.")
StepsOpt = typer.Option(None, help="Trained detectors: training steps (default: the detector's own).")
BudgetOpt = typer.Option(None, help="Trained detectors: stop training after this many seconds.")
FprOpt = typer.Option(0.01, help="Target false-positive rate of the threshold, on normal images.")
SeedOpt = typer.Option(0, help="Random seed (coreset, calibration folds, training).")
GridOpt = typer.Option(4, help="Image-level features are pooled on a g x g grid (1 = whole image, as Rippel et al.).")


@app.command()
@_guarded
def fit(
    train_dir: Path = typer.Argument(..., help="Folder of normal images (e.g. DATASET/train/good)."),
    output: Path = typer.Option(..., "--output", "-o", help="Model directory to write."),
    detector: str = DetectorOpt,
    backbone: str = BackboneOpt,
    backbone_config: Optional[Path] = BackboneCfgOpt,
    image_size: int = SizeOpt,
    pool_grid: int = GridOpt,
    precision: str = PrecisionOpt,
    fpr: float = FprOpt,
    seed: int = SeedOpt,
    steps: Optional[int] = StepsOpt,
    time_budget: Optional[float] = BudgetOpt,
    threads: Optional[int] = ThreadsOpt,
) -> None:
    """Fit a detector on normal images and save it."""
    _setup(threads)
    paths = list_files(train_dir)
    extractor = _extractor(backbone, backbone_config, image_size, pool_grid, precision)
    det = create(detector, extractor, **_detector_kwargs(detector, fpr, seed, steps, time_budget))
    det.fit(paths)
    det.save(output)
    _report_skipped(det.skipped_fit_)
    console.print(
        f"fitted [bold]{detector}[/] on {det.n_train_} images; threshold {det.threshold_:.4g} "
        f"(target FPR {fpr:g}); saved to {output}"
    )


@app.command()
@_guarded
def predict(
    model_dir: Path = typer.Argument(..., help="A model directory written by `normalcy fit`."),
    inputs: list[Path] = typer.Argument(..., help="Images or folders of images."),
    output: Path = typer.Option(Path("results"), "--output", "-o", help="Folder for scores.csv, heatmaps/, report.html."),
    heatmaps: bool = typer.Option(True, help="Write a heatmap PNG per image."),
    report: bool = typer.Option(True, help="Write report.html with the top anomalies."),
    save_maps: bool = typer.Option(False, help="Also write each raw anomaly map as maps/*.npy (float32, original size)."),
    top: int = typer.Option(24, help="Images shown in the report."),
    threads: Optional[int] = ThreadsOpt,
) -> None:
    """Score images: scores.csv (score, decision), heatmaps/*.png, report.html, skipped.csv."""
    _setup(threads)
    det = load(model_dir)
    paths: list[Path] = []
    for p in inputs:
        paths.extend(list_files(p) if p.is_dir() else [p])
    output.mkdir(parents=True, exist_ok=True)
    lo, hi = det.map_range_ or (0.0, 1.0)
    skipped: list[tuple[Path, str]] = []
    rows: list[tuple[str, float, bool]] = []
    best: list[tuple[float, int, ReportImage]] = []
    with progress_bar() as bar, open(output / "scores.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "score", "decision", "threshold"])
        task = bar.add_task("predict", total=len(paths))
        for i, (path, image, score, amap) in enumerate(det.iter_score(paths, skipped)):
            anomalous = score >= det.threshold_  # type: ignore[operator]
            writer.writerow([str(path), f"{score:.6g}", "anomalous" if anomalous else "normal", f"{det.threshold_:.6g}"])
            rows.append((str(path), score, anomalous))
            if heatmaps:
                save_heatmap(output / "heatmaps" / f"{_flat_name(path)}.png", image, amap, lo, hi)
            if save_maps:
                (output / "maps").mkdir(exist_ok=True)
                np.save(output / "maps" / f"{_flat_name(path)}.npy", amap.astype(np.float32))
            if report:
                item = ReportImage(name=str(path), score=score, anomalous=anomalous, image=image, amap=amap)
                (heapq.heappush if len(best) < top else heapq.heappushpop)(best, (score, i, item))
            bar.update(task, completed=len(rows) + len(skipped))
    with open(output / "skipped.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "reason"])
        writer.writerows([str(p), r] for p, r in skipped)
    if report:
        write_report(
            output / "report.html",
            title=f"normalcy predict: {len(rows)} images",
            scores=np.array([r[1] for r in rows]),
            names=[r[0] for r in rows],
            top=[b[2] for b in sorted(best, key=lambda b: -b[0])],
            threshold=det.threshold_,
            map_range=(lo, hi),
            skipped=[(str(p), r) for p, r in skipped],
            info={"model": str(model_dir), "detector": det.name, "backbone": det.extractor.spec.name},
        )
    _report_skipped(skipped)
    n_bad = sum(r[2] for r in rows)
    console.print(f"scored {len(rows)} images: {n_bad} anomalous, {len(rows) - n_bad} normal; results in {output}")
    if not rows:
        _fail("no image could be read")


@app.command("eval")
@_guarded
def eval_(
    dataset: Path = typer.Argument(..., help="A data set in MVTec AD layout (train/good, test/*, ground_truth/*)."),
    detector: str = DetectorOpt,
    backbone: str = BackboneOpt,
    backbone_config: Optional[Path] = BackboneCfgOpt,
    image_size: int = SizeOpt,
    pool_grid: int = GridOpt,
    precision: str = PrecisionOpt,
    fpr: float = FprOpt,
    seed: int = SeedOpt,
    steps: Optional[int] = StepsOpt,
    time_budget: Optional[float] = BudgetOpt,
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object on stdout."),
    report: Optional[Path] = typer.Option(None, help="Also write an HTML report here."),
    threads: Optional[int] = ThreadsOpt,
) -> None:
    """Fit on train/good, score test/, print metrics, speed and memory."""
    _setup(threads)
    from .data import load_dataset
    from .evaluate import run_eval, write_eval_report

    ds = load_dataset(dataset)
    extractor = _extractor(backbone, backbone_config, image_size, pool_grid, precision)
    metrics, det, result = run_eval(ds, detector, extractor, progress=True,
                                    detector_kwargs=_detector_kwargs(detector, fpr, seed, steps, time_budget))
    _report_skipped([(Path(p), r) for p, r in metrics["skipped"]])
    if report is not None:
        write_eval_report(report, metrics, det, result, ds)
        console.print(f"report: {report}")
    if as_json:
        sys.stdout.write(json.dumps(metrics) + "\n")
    else:
        out.print(metrics_table(metrics))


def metrics_table(metrics: dict[str, Any]) -> Table:
    """A two-column table of everything numeric in an eval result."""
    table = Table(title=f"{metrics['detector']} on {metrics['dataset']}")
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
    detector: str = DetectorOpt,
    n_train: int = typer.Option(300, help="Normal cells to fit on."),
    n_test: int = typer.Option(200, help="Held-out normal cells and defective cells to score (each)."),
    threads: Optional[int] = ThreadsOpt,
) -> None:
    """Solar cells (elpv-dataset from PyPI): fit on normal cells, score held-out ones, write a report."""
    _setup(threads)
    from .demo import run_demo

    metrics, report_path = run_demo(output, detector=detector, n_train=n_train, n_test=n_test)
    out.print(metrics_table(metrics))
    out.print(f"HTML report: {report_path}")


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


def _detector_kwargs(detector: str, fpr: float, seed: int, steps: Optional[int],
                     time_budget: Optional[float]) -> dict[str, Any]:
    """Detector arguments from the options fit and eval share; --steps/--time-budget only for detectors that train."""
    import inspect

    given = {k: v for k, v in (("steps", steps), ("time_budget", time_budget)) if v is not None}
    cls = DETECTORS.get(detector)
    if given and cls is not None:
        accepted = inspect.signature(cls.__init__).parameters
        unknown = [k for k in given if k not in accepted]
        if unknown:
            raise InputError(f"detector {detector!r} does not train: --{unknown[0].replace('_', '-')} does not apply")
    return {"fpr": fpr, "seed": seed, **given}


def _report_skipped(skipped: list[tuple[Path, str]]) -> None:
    if skipped:
        console.print(f"[yellow]skipped {len(skipped)} file(s) that are not readable images:[/]")
        for p, r in skipped:
            console.print(f"  {p}: {r}", highlight=False)


def _flat_name(path: Path) -> str:
    """A file name for a heatmap that does not collide across sub-folders."""
    parts = path.with_suffix("").parts[-2:]
    return "__".join(p for p in parts if p not in ("/", ""))


if __name__ == "__main__":
    app()
