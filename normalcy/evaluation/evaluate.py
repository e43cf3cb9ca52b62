"""Fit on a data set's normal training images, score its test set, measure everything.

Used by ``normalcy eval`` and the benchmark scripts, so the numbers in
docs/benchmarks.md come from exactly what a user runs.
"""

from __future__ import annotations

import contextlib
import logging
import re
import resource
import stat
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from normalcy.detectors import Detector, MuSc, Result
from normalcy.detectors.base import Maps, own_input_size, report_info
from normalcy.errors import ImageError, InputError, option
from normalcy.evaluation.metrics import evaluate
from normalcy.evaluation.validation import TUNE_BUDGET, fit_detector
from normalcy.images.backbones import sha256_file
from normalcy.images.features import FeatureExtractor
from normalcy.images.io import (Dataset, MaskSizeWarning, MaskTurnedWarning, Sample, iter_images, load_dataset,
                                mask_peak, read_mask)
from normalcy.runs.report import gallery_image, write_report

log = logging.getLogger("normalcy")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


METRIC_SIDE = 512
"""Pixel metrics are computed on maps and masks whose longest side is at most this: a 1600x800 test
set pooled at full size is 1.3 M pixels an image (gigabytes, and a sort of all of them), while maps
come from a patch grid of a few dozen cells a side, so nothing is lost. Smaller images are left as
they are (the data sets in docs/benchmarks.md are all below it)."""


def metric_size(shape: tuple[int, int], side: int = METRIC_SIDE) -> tuple[int, int]:
    """(H, W) scaled so the longest side is at most ``side``, aspect ratio kept."""
    h, w = int(shape[0]), int(shape[1])
    scale = side / max(h, w)
    if scale >= 1:
        return h, w
    return max(1, round(h * scale)), max(1, round(w * scale))


def image_sizes(maps: Sequence[np.ndarray]) -> list[tuple[int, int]]:
    """The original (H, W) of each map, without drawing lazy ones."""
    if isinstance(maps, Maps):
        return list(maps.sizes)
    return [tuple(np.shape(m)[:2]) for m in maps]  # type: ignore[misc]


def maps_at(maps: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]) -> Sequence[np.ndarray]:
    """The maps at the given sizes: lazy ones stay lazy (drawn from the patch grid when read), full-size arrays
    and MuSc's maps (``Maps.shrink``: drawn one at a time) are shrunk by area averaging."""
    if isinstance(maps, Maps) and not maps.shrink:
        return Maps(maps.grids, sizes)
    return [np.asarray(m) if np.shape(m) == tuple(s) else
            cv2.resize(np.asarray(m, np.float32), (s[1], s[0]), interpolation=cv2.INTER_AREA)
            for m, s in zip(maps, sizes)]


def masks_for(samples: Sequence[Sample], result: Result,
              sizes: Sequence[tuple[int, int]] | None = None) -> list[np.ndarray | None]:
    """Ground-truth masks aligned with the scored images, at each image's size or at ``sizes``; None where unknown."""
    by_path = {s.path: s for s in samples}
    shapes = image_sizes(result.maps)
    masks: list[np.ndarray | None] = []
    # said once a kind below, not once a mask: a data set whose masks were all saved at half size gave one line per
    # defective image
    grouped: dict[type[Warning], list[tuple[Path, warnings.WarningMessage]]] = {MaskSizeWarning: [],
                                                                                MaskTurnedWarning: []}
    empty: list[tuple[Path, str]] = []
    full: list[Path] = []
    others: list[warnings.WarningMessage] = []
    for path, shape, size in zip(result.paths, shapes, sizes or shapes):
        s = by_path[path]
        if s.label == 0:
            masks.append(np.zeros(size, bool))
        elif s.mask_path is None:
            masks.append(None)
        else:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    masks.append(read_mask(s.mask_path, shape, size, image=s.path))
                except ImageError as err:  # one bad mask costs its image's pixel metrics, not the evaluation
                    log.warning("%s; its image is left out of the pixel metrics", err)
                    masks.append(None)
                else:
                    if not masks[-1].any():  # a wrong file or a wrong export, likelier than a defect of no pixel
                        empty.append((s.mask_path, _no_defect_why(s.mask_path, size)))
                    elif masks[-1].all():  # likewise: an inverted export (defect black on white), not a whole defect
                        full.append(s.mask_path)
            for w in caught:
                if w.category in grouped:
                    grouped[w.category].append((s.mask_path, w))
                else:
                    others.append(w)
    by_why: dict[str, list[tuple[Path, str]]] = {}  # the same reason but for its numbers (a size, a level)
    for mask_path, why in empty:
        by_why.setdefault(re.sub(r"\d+", "#", why), []).append((mask_path, why))
    for same in by_why.values():
        log.warning("%s: no defect pixel in the mask of a defective image%s; its pixels count as normal in the pixel "
                    "metrics%s", same[0][0], same[0][1], _likewise("likewise", [p for p, _ in same[1:]]))
    if full:
        log.warning("%s: every pixel of the mask of a defective image is defect (a mask saved inverted, defect dark "
                    "on white?); its whole image counts as defective in the pixel metrics%s", full[0],
                    _likewise("likewise", full[1:]))
    for category, said in grouped.items():
        what = "of another size than their image's, resized" if category is MaskSizeWarning else "turned likewise"
        for _, w in said[:1]:
            warnings.warn(f"{w.message}{_likewise(what, [p for p, _ in said[1:]])}", w.category, stacklevel=2)
    for w in others:
        warnings.warn(str(w.message), w.category, stacklevel=2)
    return masks


def _likewise(what: str, more: Sequence[Path]) -> str:
    """" (and 9 more mask(s) WHAT: a.png, b.png, c.png, ...)", naming the first few; "" for none."""
    if not more:
        return ""
    names = ", ".join(p.name for p in more[:3]) + (", ..." if len(more) > 3 else "")
    return f" (and {len(more)} more mask(s) {what}: {names})"


def _no_defect_why(path: Path, size: tuple[int, int]) -> str:
    """Why a mask gave no defect pixel, where it is not all black: its brightest level is under the cut (a mask of
    0 and 100), or its defect is under half a pixel at the size pixel metrics are computed at (``size``)."""
    try:
        peak = mask_peak(path)
    except ImageError:
        return ""
    if peak > 127:
        return f" at the pixel metrics' size {size[1]}x{size[0]} (its defect covers under half a pixel there)"
    if peak > 0:
        return f": its brightest pixel is {peak} of 255, and a defect pixel is one above 127 (or 1 in a 0/1 mask)"
    return ""


def pixel_inputs(samples: Sequence[Sample], result: Result,
                 side: int = METRIC_SIDE) -> tuple[list[np.ndarray | None], Sequence[np.ndarray]]:
    """Masks and maps for the pixel metrics, both with the longest side capped at ``side``."""
    sizes = [metric_size(s, side) for s in image_sizes(result.maps)]
    return masks_for(samples, result, sizes), maps_at(result.maps, sizes)


def decision_rates(labels: np.ndarray, decisions: np.ndarray) -> dict[str, float]:
    """False- and true-positive rates of the stored threshold on labelled test images."""
    neg, pos = labels == 0, labels == 1
    return {
        "test_fpr_at_threshold": float(decisions[neg].mean()) if neg.any() else float("nan"),
        "test_tpr_at_threshold": float(decisions[pos].mean()) if pos.any() else float("nan"),
    }


def _size(path: Path) -> int | None:
    """The size of a non-empty regular file, else None: a FIFO or a link to /dev/zero (size 0, as an empty file's)
    was read to compare, which waited for ever or filled memory before the fit began."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) and st.st_size else None


def _digest(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None


HEAD_BYTES = 1 << 16


def _head(path: Path) -> tuple[int, bytes] | None:
    """A file's size and first ``HEAD_BYTES`` bytes (a regular file's: see :func:`_size`)."""
    size = _size(path)
    if size is None:
        return None
    try:
        with open(path, "rb") as f:
            return size, f.read(HEAD_BYTES)
    except OSError:
        return None


def training_copies(ds: Dataset) -> list[Path]:
    """Test images that are byte for byte training images. A test image fitted on as normal scores low, so
    copies left in train/good moved the metrics without a word. Files are compared by size, then by their first
    64 kB, then whole, each step on the files the last left in both folders: uncompressed images (BMP, TIFF) of
    one camera are all of one size, and every one of them was read whole."""
    train, test = list(ds.train), [s.path for s in ds.test]
    for key in (_size, _head, _digest):
        keys = {p: key(p) for p in (*train, *test)}
        common = {keys[p] for p in train} & {keys[p] for p in test} - {None}
        train, test = [p for p in train if keys[p] in common], [p for p in test if keys[p] in common]
    return test


def warn_training_copies(ds: Dataset) -> None:
    """Name the test images that are also training images (:func:`training_copies`)."""
    copies = training_copies(ds)
    if copies:
        log.warning("%s: %d test image(s) are copies of training images (e.g. %s): fitted on as normal, they are "
                    "not unseen and the metrics are not those of new images", ds.root, len(copies), copies[0])


def warn_one_class(labels: np.ndarray, test_dir: Path) -> None:
    """Say why the image metrics are null when the scored test images are all good or all defective: they
    were printed as null (or NaN) without a word, which reads as a failure of the detector."""
    if labels.size == 0 or 0 < labels.sum() < labels.size:
        return
    missing = "good image (test/good)" if labels.all() else "defective image (test/<defect>)"
    pixel = "" if labels.all() else ", and so are pixel AUROC and AUPRO (no defect pixel)"  # null too, unsaid
    log.warning("%s: no %s was scored: image AUROC, AP and F1 need both kinds and are null%s", test_dir, missing,
                pixel)


def warn_no_masks(labels: np.ndarray, masks: Sequence[np.ndarray | None], test_dir: Path) -> None:
    """Say why the pixel metrics are null when no scored defective image has a mask: load_dataset said it per
    defect folder at INFO, and the null pixel AUROC and AUPRO were left unexplained. A warning where a
    ground_truth/ folder is there (its masks were meant to be read); where there is none, a data set labelled by
    image alone (the demo's elpv cells), it is said at INFO: nothing was lost, and a warning at every eval of such a
    set only taught users to skip warnings."""
    defective = [m for m, label in zip(masks, labels) if label == 1]
    if defective and all(m is None for m in defective):
        level = logging.WARNING if (test_dir.parent / "ground_truth").is_dir() else logging.INFO
        log.log(level, "%s: none of its %d defective image(s) has a mask that could be read (ground_truth/<defect>/"
                "<stem>_mask.png): pixel AUROC and AUPRO are null", test_dir, len(defective))


def latency_ms(score_one: Callable[[Path], object], paths: Sequence[Path], n: int = 20, warm: int = 1) -> float:
    """Median end-to-end ms of ``score_one(path)``, one image on its own (read, features, score, map), over n
    images after ``warm`` untimed calls (with a single image: that image again)."""
    paths = list(paths)
    for p in paths[:warm]:
        score_one(p)
    times = []
    for p in paths[warm: warm + n] or paths[:n]:
        t = time.perf_counter()
        score_one(p)
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1000.0


def run_eval(
    dataset: str | Path | Dataset,
    detector: str = "gaussian",
    extractor: FeatureExtractor | None = None,
    progress: bool = True,
    detector_kwargs: dict[str, Any] | None = None,
    latency_images: int = 20,
    own_backbones: bool = False,
    input_norms: Sequence[str] = ("own",),
    auto_norm: bool = False,
    tune: Sequence[str] = (),
    tune_budget: float = TUNE_BUDGET,
) -> tuple[dict[str, Any], Detector, Result]:
    """Fit, score, measure. Returns (metrics dict, fitted detector, test result). ``own_backbones``: ``auto``'s
    candidates each run on their own default backbone (see validation.fit_auto); ``tune``: the settings
    chosen on synthetic-defect validation before the fit (validation.fit_tuned)."""
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    kwargs = dict(detector_kwargs or {})
    zero_shot = detector == MuSc.name  # scores the test set against itself: train/ is not used at all
    if not zero_shot:
        warn_training_copies(ds)
    t0 = time.perf_counter()
    if zero_shot:
        det: Detector | MuSc = MuSc(extractor, **{k: v for k, v in kwargs.items() if k not in ("fpr", "seed")})
    else:
        det = fit_detector(detector, ds.train, extractor, norms=input_norms, auto_norm=auto_norm,
                           own_backbones=own_backbones,
                           tune=tune, tune_budget=tune_budget, progress=progress, **kwargs)
    fit_seconds = time.perf_counter() - t0
    fit_rss = peak_rss_mb()
    paths = [s.path for s in ds.test]
    t0 = time.perf_counter()
    result = det.score(paths, progress=progress)
    score_seconds = time.perf_counter() - t0
    if not result.paths:  # every metric null and exit code 0: a script took it for a result
        example = "".join(f" (e.g. {p}: {reason})" for p, reason in result.skipped[:1])
        raise InputError(f"{ds.root / 'test'}: none of its {len(paths)} test image(s) could be read{example}")
    label_of = {s.path: s.label for s in ds.test}
    labels = np.array([label_of[p] for p in result.paths], dtype=int)
    warn_one_class(labels, ds.root / "test")
    masks, maps = pixel_inputs(ds.test, result)
    warn_no_masks(labels, masks, ds.root / "test")
    metrics = evaluate(labels, result.scores, masks, maps)
    own = own_input_size(det)  # DRAEM, EfficientAD: no backbone, its normalisation or pooling; their input_size
    out: dict[str, Any] = {
        "detector": detector if detector != "auto" else f"auto: {det.name}",
        "dataset": ds.name,
        "backbone": None if own is not None else det.extractor.spec.name,
        "input_norm": None if zero_shot or own is not None else det.extractor.input_norm,
        "image_size": det.extractor.image_size,
        **({} if own is None else {"input_size": own}),
        "precision": det.extractor.precision,
        "pool_grid": None if own is not None else det.extractor.pool_grid,
        "choice": None if zero_shot else det.choice,  # auto / --input-norm auto / --tune: chosen on what
        "n_train": 0 if zero_shot else det.n_train_,
        "n_test": len(result.paths),
        **{k: _num(v) for k, v in metrics.items()},
        "threshold": det.threshold_,
        "target_fpr": None if zero_shot else det.fpr,
        **{k: _num(v) for k, v in decision_rates(labels, result.decisions).items()},
        "fit_seconds": round(fit_seconds, 3),
        "score_seconds": round(score_seconds, 3),
        "images_per_second": round(len(result.paths) / score_seconds, 2) if score_seconds else None,
        # timed on images that were read: an unreadable one was skipped (and named) once more, and timed
        "latency_ms_batch1": round(latency_ms(lambda p: det.score([p], progress=False, batch_size=1),
                                              result.paths, latency_images), 2)
        if latency_images and not zero_shot and result.paths else None,
        "fit_peak_rss_mb": round(fit_rss, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "skipped": [[str(p), r] for p, r in ([] if zero_shot else det.skipped_fit_) + result.skipped],
    }
    return out, det, result


def _num(v: float) -> float | None:
    """JSON has no NaN: missing metrics become null."""
    return None if v is None or not np.isfinite(v) else round(float(v), 6)


def write_eval_report(path: Path, metrics: dict[str, Any], det: Detector, result: Result, ds: Dataset,
                      top: int = 24) -> Path:
    """An HTML report of an evaluation: top anomalies with ground truth, histogram, ROC."""
    label_of = {s.path: s.label for s in ds.test}
    order = {result.paths[i]: i for i in np.argsort(-result.scores, kind="stable")[:top]}
    # read again: a file moved or changed since it was scored is named and left out of the gallery (it ended the
    # evaluation, its metrics unprinted)
    items = [
        gallery_image(_rel(path, ds.root), float(result.scores[i]), bool(result.decisions[i]), image, result.maps[i],
                      label_of[path])
        for path, image in iter_images(list(order), [], listed=False) for i in [order[path]]
    ]
    return write_report(
        path,
        title=f"normalcy eval: {metrics['detector']} on {metrics['dataset']}",
        scores=result.scores,
        names=[_rel(p, ds.root) for p in result.paths],
        top=items,
        threshold=det.threshold_,
        labels=np.array([label_of[p] for p in result.paths]),
        metrics={k: v for k, v in metrics.items() if isinstance(v, float)},
        map_range=det.map_range_,
        skipped=[(str(p), str(r)) for p, r in metrics.get("skipped", [])],  # as predict's report names them
        info={**report_info(det), "dataset": str(metrics["dataset"])},
    )


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


# ------------------------------------------------------------------------------------------------- series


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN: a metric a data set cannot have (one class only) is null."""
    return None if isinstance(value, float) and not np.isfinite(value) else value


def eval_series(directory: Path, detector: str, params: dict[str, Any], time_column: str | None = None,
                progress: bool = False, label_column: str = "label", stream: bool = False) -> dict[str, Any]:
    """Fit on each series folder's train.csv, score its test.csv (labelled), pool the folders: event
    precision, recall and F1 as Orion counts them (an event is found when a predicted event overlaps it;
    counts summed over the series), point F1 at the detector's threshold, AUC-PR and VUS-PR (averaged
    over the series with both classes; VUS-PR needs tsb-ad, null without it), fit and score seconds.

    Predicted events are the run's (``series.runs.score_series``: decisions merged across gaps shorter
    than the detector's ``gap_``: its window, at least ``event_gap`` rows). When test.csv continues train.csv
    in time (its first timestamp after the last training one, as in ASD), its first rows are scored with the
    end of train.csv as their past, as a monitoring loop would; otherwise on edge padding. A folder that
    cannot be evaluated is named in ``skipped`` and the others go on; what reading repaired (io.py's notes,
    each after its folder's name) is in ``notes``. ``stream``: each test series replayed as a monitoring loop
    runs it (``series.runs.replay_series``), its events those of the stream's alarm level, not pruned."""
    from normalcy.errors import InputError
    from normalcy.evaluation.series_metrics import TSB_AD_INSTALL, evaluate_series, pool, undefined, vus_window
    from normalcy.series import registry
    from normalcy.series.io import SERIES_SUFFIXES, read_series_folder, series_folders, untrained_folders
    from normalcy.series.runs import model_columns, replay_series, say_blind, score_series
    from normalcy.vectors.tables import other_case
    from normalcy.progress import LONG_SERIES, progress_bar

    try:
        import TSB_AD  # noqa: F401
        vus = True
    except ImportError:
        vus = False
    results, windows, notes = [], [], []
    unjudged: list[tuple[str, Any]] = []  # (folder, scored) whose first rows scored 0 for want of a past
    skipped = [[f.name, why] for f, why in untrained_folders(directory)]
    n_folders = len(skipped)
    fit_s = score_s = 0.0
    n_rows = 0
    folders = list(series_folders(directory))
    n_folders += len(folders)

    def read(folder: Path) -> tuple[Any, Any]:
        """The folder's training series and its labelled test series; an InputError naming what is missing."""
        (train,), test = read_series_folder(folder, time_column, label_column)
        if not test:  # a folder or a broken link named test.csv was "no test.csv" beside a test.csv
            odd = next((f.name for f in (folder / f"test{x}" for x in SERIES_SUFFIXES) if f.is_symlink() or f.exists()),
                       None)
            raise InputError(f"{folder}: no test.csv to evaluate on"
                             + (f" ({odd} is not a regular file: a folder or a broken link)" if odd else ""))
        (te,) = test
        if te.labels is None:
            raise InputError(f"{folder}: test file has no label column {label_column!r}"
                             f"{other_case(label_column, te.file_columns)} (1 inside a labelled anomaly; "
                             f"{option('label_column')} names another)")
        return train, te

    # one folder is read before the bar: a long test series gets one too, as predict's does (1e6 rows, minutes);
    # one that cannot be read is read again in the loop, which names it in skipped
    read_first: dict[Path, tuple[Any, Any]] = {}
    if len(folders) == 1:
        with contextlib.suppress(InputError):
            read_first[folders[0]] = read(folders[0])
    long = any(len(te) >= LONG_SERIES for _, te in read_first.values())
    with progress_bar(progress and (len(folders) > 1 or long)) as bar:  # ASD: 12 folders, a minute or more
        for folder in bar.track(folders, description="eval"):
            try:
                train, te = read_first.pop(folder, None) or read(folder)
                t0 = time.perf_counter()
                det = registry.create(detector, **params).fit(train, progress=False)
                t1 = time.perf_counter()
                te = model_columns(det, te, time_column)
                past = model_columns(det, train, time_column).values if te.time[0] > train.time[-1] else None
                try:
                    scored = (replay_series if stream else score_series)(det, te, past)
                finally:  # after the replay, whose note of missing values says they were held, not interpolated
                    notes += [f"{folder.name}/{n}" for n in dict.fromkeys([*train.notes, *te.notes])]
                if scored.blind:
                    unjudged.append((folder.name, scored))
                score_s += time.perf_counter() - t1
                fit_s += t1 - t0
            except InputError as err:
                skipped.append([folder.name, str(err)])
                continue
            n_rows += len(te)
            windows.append(det.window_)
            results.append(evaluate_series(te.labels, scored.score, scored.decision,
                                           predicted=[(e.first, e.last) for e in scored.events],
                                           window=vus_window(te.values) if vus else None, name=folder.name))
    say_blind(unjudged)
    if not results:  # every reason, not the first alone: the others were never said (the run ends here)
        if len(skipped) == 1:
            raise InputError(skipped[0][1])
        why = "; ".join(f"{name}: {reason}" for name, reason in skipped[:5])
        more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        raise InputError(f"{directory}: none of its {len(skipped)} series folders could be evaluated: {why}{more}")
    pooled = pool(results)
    said = undefined(results, pooled)
    for sentence in said:
        log.warning("%s: %s", directory, sentence)
    out = {"detector": detector, "dataset": str(directory), "n_series": pooled.series, "n_folders": n_folders,
           "event_precision": pooled.events.precision, "event_recall": pooled.events.recall,
           "event_f1": pooled.event_f1, "event_tp": pooled.events.tp, "event_fp": pooled.events.fp,
           "event_fn": pooled.events.fn, "point_precision": pooled.points.precision,
           "point_recall": pooled.points.recall, "point_f1": pooled.point_f1, "auc_pr": pooled.auc_pr,
           "vus_pr": pooled.vus_pr if vus else None, "fit_seconds": round(fit_s, 3), "score_seconds": round(score_s, 3),
           "points_per_second": round(n_rows / max(score_s, 1e-9), 1), "n_test_rows": n_rows,
           "window": int(np.median(windows)), "params": params, "mode": "stream" if stream else "offline",
           "per_series": [{"series": r.name, "rows": r.rows, "event_f1": r.events.f1, "point_f1": r.points.f1,
                           "auc_pr": r.auc_pr, "vus_pr": r.vus_pr} for r in results],
           "skipped": skipped, "notes": notes, "undefined": said}
    if not vus:
        out["vus_pr_note"] = f"VUS-PR needs tsb-ad: {TSB_AD_INSTALL}"
    out["per_series"] = [{k: _finite_or_none(v) for k, v in r.items()} for r in out["per_series"]]
    return {k: _finite_or_none(v) for k, v in out.items()}
