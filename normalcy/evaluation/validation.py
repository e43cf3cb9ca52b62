"""Choosing detectors and settings from normal images alone: a validation split with synthetic defects.

Test labels must never choose a detector or its settings: on a user's line there are
none, and numbers tuned on a test set do not carry over to data nobody tuned for. What
we do have is normal images. So a fraction of them is held out of fitting; each of those
is scored once as it is and once with a synthetic defect, the kinds taking turns
(``VALIDATION_DEFECTS``: DRAEM's Perlin blobs, thin cracks, brightness changes, and a part
missing, extra, moved or swapped), and the image AUROC between the two says how well a
candidate separates normal from "not like the rest". ``--detector auto``, ``--input-norm
auto`` and ``--tune`` fit each candidate this way and keep the first (the default) unless
another beats it in 95 % of paired bootstrap resamples of the split (``wins``).

The proxy is only as good as synthetic defects are like real ones: a wrong count of parts
or a wrong colour of a whole part are not among them.
"""

from __future__ import annotations

import logging
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from normalcy.errors import InputError, option
from normalcy.images.backbones import INPUT_NORMS
from normalcy.images.features import FeatureExtractor, MapCache
from normalcy.images.io import iter_images
from normalcy.images.logical import LOGICAL
from normalcy.images.synthetic import brightness_change, synthesize, thin_crack

log = logging.getLogger("normalcy")

CANDIDATES = ("gaussian", "patchcore")  # fast enough to fit twice; trained detectors are not

DEFECTS = {"crack": thin_crack, "brightness": brightness_change, **LOGICAL}
"""Synthetic defects besides DRAEM's Perlin blobs: surface ones and logical ones (a part missing, extra, moved,
swapped), each ``f(image, rng) -> (image, mask)``."""
VALIDATION_DEFECTS = ("perlin", *DEFECTS)
"""The held-out images take these in turn: detectors and settings are judged on defects like real ones of each
kind (DRAEM's blobs alone saturate on some data, every candidate at 1.000)."""
CONFIDENCE = 0.95  # a detector or setting changes only when the other wins in this share of bootstrap resamples

AUTO_NORM_TRIALS = (("gaussian", "imagenet"), ("gaussian", "standard"))
"""``--detector auto`` with no ``--input-norm`` also tries these: the input normalisation alone moved results by up
to 0.08 AUROC either way between data sets (issue 26: ImageNet's took ``gaussian`` from 0.971 to 0.989 on a
high-resolution logical set, and lost 0.016 on magnetic_tile, where each image standardised gains 0.005), so no
fixed one is right; ``gaussian`` trials are the cheapest way to let the data choose (PatchCore's cost a plain fit
each)."""
TUNABLE = ("input_norm", "backbone", "image_size", "pool_grid")
"""What ``--tune`` may choose: each moved some data set's results and not others' (docs/benchmarks.md)."""
TUNE_BACKBONES = ("efficientnet_lite0", "efficientnet_lite2")
TUNE_AREAS = (224, 320)  # input sizes tried: about this many pixels squared, the images' aspect ratio kept
TUNE_GRIDS = (4, 2, 1)
LOW_CONTRAST = 0.15
"""A median image spread (pixels in [0, 1]) under which ``--tune`` tries the ``standard`` normalisation before
ImageNet's: its budget may leave time for one of them, and ``standard`` changes little for a photo (spread about
0.25, what it brings every image to) but triples the contrast of a grey tile (magnetic_tile 0.11, elpv 0.10;
hazelnut_toy 0.24)."""
TUNE_FIT_IMAGES = 1000  # trials fit on at most this many images (fewer favour smaller models: see fit_tuned)
TUNE_BUDGET = 3.0
"""``--tune``'s time budget in plain fits (the issue's figure): trials that would overrun it are skipped."""
BACKBONE_COST = {"efficientnet_lite0": 1.0, "efficientnet_lite1": 1.35, "efficientnet_lite2": 1.64}
"""Network time a pixel, relative to Lite0: the published multiply-adds (0.41, 0.63 and 0.90 billion at 224, 240
and 260 pixels) at one input size. Other backbones count as 1 (``--tune`` does not change a custom one)."""


@dataclass
class Split:
    """Training images to fit on, and the held-out normal ones with and without synthetic defects."""

    fit: list[Path]
    normal: list[Path]
    defective: list[Path]


def synthetic_split(paths: Sequence[Path], folder: Path, fraction: float = 0.2, seed: int = 0,
                    size: int = 256, min_area: float = 0.005, shape: tuple[int, int] | None = None,
                    kinds: Sequence[str] = ("perlin",), masks: list[np.ndarray] | None = None) -> Split:
    """Hold out ``fraction`` of the readable images (at least 4, at most 100) and write each to ``folder``
    at ``size`` x ``size``, once as it is and once with a synthetic defect: the held-out images take the
    ``kinds`` in turn (``perlin``, DRAEM's, covering at least ``min_area``; or one of ``DEFECTS``).
    ``shape`` (height, width): written at that size instead (the defects are still drawn on the square,
    and both images of a pair are resized back the same way, so resampling cannot tell them apart). ``masks``:
    a list that receives each defect's mask (bool, ``size`` x ``size``), in the order of ``defective``."""
    unknown = sorted(set(kinds) - {"perlin", *DEFECTS})
    if unknown or not kinds:
        raise ValueError(f"synthetic defect kinds {unknown or '(none)'}: choose from perlin, {', '.join(DEFECTS)}")
    paths = list(paths)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(paths))
    n_val = int(min(100, max(4, round(fraction * len(paths)))))
    if len(paths) - n_val < 5:
        raise InputError(f"choosing a detector or settings (auto, {option('tune')}) needs at least {n_val + 5} "
                         f"training images, got {len(paths)}")
    held, fit = [paths[i] for i in sorted(order[:n_val])], [paths[i] for i in sorted(order[n_val:])]
    skipped: list[tuple[Path, str]] = []
    images = [cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for _, im in iter_images(held, skipped)]
    if len(images) < 2:
        raise InputError("choosing a detector or settings: fewer than 2 of the held-out training images could be "
                         "read")
    pool = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    folder.mkdir(parents=True, exist_ok=True)
    normal, defective = [], []
    for k, im in enumerate(images):
        x = im.astype(np.float32) / 255.0
        kind = kinds[k % len(kinds)]
        if kind == "perlin":
            for _ in range(20):  # a Perlin mask can come out empty or tiny: draw again
                aug, mask = synthesize(x, pool, rng, anomaly_prob=1.0)
                if mask.mean() >= min_area:
                    break
        else:
            aug, mask = DEFECTS[kind](x, rng)
        if masks is not None:
            masks.append(np.asarray(mask) > 0.5)
        for name, arr, out in ((f"normal_{k:03d}.bmp", x, normal), (f"defect_{k:03d}.bmp", aug, defective)):
            arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
            if shape is not None:
                arr = cv2.resize(arr, shape[::-1], interpolation=cv2.INTER_CUBIC)
            # a temporary file: BMP, as every trial reads it again (magnetic_tile's 200: written in 0.1 s against 1.5
            # for PNG at zlib level 1, and read without inflating)
            Image.fromarray(arr).save(folder / name)
            out.append(folder / name)
    return Split(fit=fit, normal=normal, defective=defective)


def validation_auroc(detector: Any, split: Split) -> float:
    """Image AUROC of a detector fitted on ``split.fit``: held-out normal images against the same with defects."""
    return _auroc(*validation_scores(detector, split))


def _auroc(normal: np.ndarray, defective: np.ndarray) -> float:
    normal, defective = normal[np.isfinite(normal)], defective[np.isfinite(defective)]
    return float(roc_auc_score(np.r_[np.zeros(len(normal)), np.ones(len(defective))], np.r_[normal, defective]))


def validation_scores(detector: Any, split: Split) -> tuple[np.ndarray, np.ndarray]:
    """The scores of the held-out normal images and of their defective copies, in the split's order (an
    image that cannot be read scores NaN: left out of the AUROC, lowest in ``wins``)."""
    res = detector.score(split.normal + split.defective, progress=False)
    score = dict(zip(res.paths, res.scores))
    return tuple(np.array([score.get(p, np.nan) for p in ps], dtype=np.float64)  # type: ignore[return-value]
                 for ps in (split.normal, split.defective))


def wins(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], resamples: int = 1000,
         seed: int = 0) -> float:
    """The share of bootstrap resamples of the held-out split (normal and defective images drawn with
    replacement, the same draw for both) in which scores ``a`` reach a higher AUROC than scores ``b``: a
    paired test, so that a setting is not changed on the noise of a few images."""
    rng = np.random.default_rng(seed)
    n, m = len(a[0]), len(a[1])
    cn = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(resamples)]).astype(float)
    cd = np.stack([np.bincount(rng.integers(0, m, m), minlength=m) for _ in range(resamples)]).astype(float)

    def aurocs(normal: np.ndarray, defective: np.ndarray) -> np.ndarray:
        normal, defective = np.nan_to_num(normal, nan=-np.inf), np.nan_to_num(defective, nan=-np.inf)
        above = (defective[:, None] > normal[None, :]) + 0.5 * (defective[:, None] == normal[None, :])
        return ((cd @ above) * cn).sum(1) / (n * m)

    return float((aurocs(*a) > aurocs(*b)).mean())


def held_out_split(paths: Sequence[Path], folder: Path, seed: int = 0) -> Split:
    """The one validation split of ``auto``, ``--input-norm auto`` and ``--tune``: 20 % of the normal images held
    out at their median aspect ratio (at most 512 pixels a side, so that input sizes can be compared on it), each
    also with one of ``VALIDATION_DEFECTS`` in turn."""
    from normalcy.images.features import native_size

    h, w = native_size(list(paths))
    scale = min(1.0, 512 / max(h, w))
    shape = (max(32, round(h * scale)), max(32, round(w * scale)))
    return synthetic_split(paths, folder, seed=seed, shape=shape, kinds=VALIDATION_DEFECTS)


def choose_detector(paths: Sequence[Path], extractor: FeatureExtractor, candidates: Sequence[str] = CANDIDATES,
                    own_backbones: bool = False, norms: Sequence[str] = ("own",),
                    **kwargs: Any) -> tuple[str, dict[str, float], float]:
    """The chosen candidate on held-out normal images with synthetic defects, every validation AUROC, and the
    share of bootstrap resamples in which the best other candidate beat the first (``_pick``). ``own_backbones``:
    each candidate runs on its own default backbone (``extractor``'s other options kept). With several input
    normalisations (``norms``) each candidate is tried with each, keyed ``name/norm``."""
    return _validated(paths, _trials(extractor, candidates, norms, own_backbones), **kwargs)


def _validated(paths: Sequence[Path], trials: Sequence[tuple[str, str, FeatureExtractor]],
               **kwargs: Any) -> tuple[str, dict[str, float], float]:
    """``_choose`` among ``trials`` on a held-out split of ``paths`` made for it."""
    with tempfile.TemporaryDirectory(prefix="normalcy-validation-") as tmp:
        split = held_out_split(paths, Path(tmp), int(kwargs.get("seed", 0)))
        return _choose(split, split.fit, trials, {}, **kwargs)


def _choose(split: Split, fit: Sequence[Path], trials: Sequence[tuple[str, str, FeatureExtractor]],
            scores: dict[str, Any], times: dict[str, Timing] | None = None,
            **kwargs: Any) -> tuple[str, dict[str, float], float]:
    """Fit every trial, then ``_pick``: the first trial's key unless another wins; (key, AUROCs, share)."""
    found = _fit_trials(split, fit, trials, scores, times, **kwargs)
    key, won = _pick(trials[0][0], [k for k, _, _ in trials[1:]], found, scores, int(kwargs.get("seed", 0)))
    return key, found, won


def _fit_trials(split: Split, fit: Sequence[Path], trials: Sequence[tuple[str, str, FeatureExtractor]],
                scores: dict[str, Any], times: dict[str, Timing] | None = None, **kwargs: Any) -> dict[str, float]:
    """Fit each trial (key, detector, extractor) on ``fit``: the validation AUROC of each key; ``scores`` gets
    each trial's validation scores (normal, defective), ``times`` what each took."""
    from normalcy.detectors import create

    found: dict[str, float] = {}
    for key, name, ex in trials:
        net, read = _spent(ex)
        t = time.perf_counter()
        try:
            with _without_threshold_notes():  # its threshold is unused
                det = create(name, ex, **kwargs).fit(fit, progress=False, fp32_threshold=False)
        except InputError as err:  # it counts the trial's images, not the user's: say which these are
            raise InputError(f"choosing a detector or settings (auto, {option('tune')}): {key} on the {len(fit)} "
                             f"training images left after holding out {len(split.normal)} for validation: {err}") from None
        fitted = time.perf_counter() - t
        scores[key] = validation_scores(det, split)
        found[key] = _auroc(*scores[key])
        took = time.perf_counter() - t
        if times is not None:
            net2, read2 = _spent(ex)
            times[key] = Timing(fitted, took, net2 - net, read2 - read)
        log.info("validation: %s reaches %.3f image AUROC on %d held-out normal images with synthetic defects "
                 "(%.1f s)", key, found[key], len(split.normal), took)
    return found


@contextmanager
def _without_threshold_notes() -> Iterator[None]:
    """A trial's fit without the note that its threshold rests on few images: no one uses a trial's threshold,
    and auto printed the note once per trial (five times before the final fit's own)."""
    from normalcy.detectors.base import FEW_CALIBRATION

    drop = logging.Filter()
    drop.filter = lambda record: record.msg != FEW_CALIBRATION  # type: ignore[method-assign]
    log.addFilter(drop)
    try:
        yield
    finally:
        log.removeFilter(drop)


def _spent(ex: FeatureExtractor) -> tuple[float, float]:
    """Seconds the networks and the reading of files have taken so far for ``ex``'s cache."""
    return (ex.cache.network_seconds(), ex.cache.read[0]) if ex.cache else (0.0, 0.0)


@dataclass
class Timing:
    """What one trial of ``--tune`` took: its fit, the fit and the scoring of the held-out images, and of that the
    seconds in the backbone network and in reading files."""

    fit: float
    total: float
    network: float
    reading: float


def _pick(current: str, others: Sequence[str], found: dict[str, float], scores: dict[str, Any],
          seed: int = 0) -> tuple[str, float]:
    """``current``, unless the best of ``others`` (by validation AUROC) beats it in ``CONFIDENCE`` of paired
    bootstrap resamples of the split (``wins``): with a handful of held-out images one flipped pair moves the
    AUROC by several hundredths, which must not change a detector or a setting. (key, that share)."""
    if not others:
        return current, 0.0
    best = max(others, key=lambda k: found[k])  # the first of equals
    won = wins(scores[best], scores[current], seed=seed)
    return (best if won >= CONFIDENCE else current), won


def fit_auto(paths: Sequence[Path], extractor: FeatureExtractor | None = None, progress: bool = True,
             own_backbones: bool = False, candidates: Sequence[str] = CANDIDATES, norms: Sequence[str] = ("own",),
             extra: Sequence[tuple[str, str]] = (), **kwargs: Any) -> Any:
    """``--detector auto`` and/or ``--input-norm auto``: choose among ``candidates`` (and input normalisations
    ``norms``) on synthetic-defect validation, then fit the choice on all images. The choice and every trial's
    validation AUROC are kept on the model (``choice``). Without an extractor, or with ``own_backbones``, each
    candidate runs on its own default backbone. ``extra``: (detector, normalisation) trials after those, keyed
    ``detector/normalisation``."""
    from normalcy.detectors import create

    own_backbones = own_backbones or extractor is None
    extractor = extractor or FeatureExtractor()
    cache = MapCache()  # no trial decodes a file twice; the final fit takes the chosen trial's maps of its images
    with cache.attached(extractor):
        trials = _trials(extractor, candidates, norms, own_backbones)
        trials += [(f"{name}/{norm}", name, _extractor_for(name, extractor, own_backbones).with_input_norm(norm))
                   for name, norm in extra]
        key, found, won = _validated(paths, trials, **kwargs)
        log.info("auto: chose %s (%s; the best other beat the first in %.0f%% of resamples)", key,
                 ", ".join(f"{k} {v:.3f}" for k, v in found.items()), 100 * won)
        name = key.partition("/")[0]
        ex = dict((k, e) for k, _, e in trials)[key]
        cache.keep(ex.map_key)
        det = create(name, ex, **kwargs).fit(paths, progress=progress)
    ex.cache = None
    det.choice = {"validation_auroc": found, "wins": won, "chosen": name, "input_norm": ex.input_norm}
    return det


def check_detector(name: str) -> None:
    """An image detector that fit, eval and the demo can fit: one ``create`` knows, or ``auto``. create's own
    error listed the others alone, so `--detector atuo` was told of every name but the one meant."""
    from normalcy.detectors import DETECTORS, ZERO_SHOT_MESSAGE, MuSc

    if name == MuSc.name:
        raise InputError(ZERO_SHOT_MESSAGE)
    if name != "auto" and name not in DETECTORS:
        raise InputError(f"unknown detector {name!r}; choose one of {sorted(DETECTORS)} or auto")


def fit_detector(name: str, paths: Sequence[Path], extractor: FeatureExtractor, *, norms: Sequence[str] = ("own",),
                 auto_norm: bool = False, own_backbones: bool = False, progress: bool = True,
                 tune: Sequence[str] = (), tune_budget: float = TUNE_BUDGET, **kwargs: Any) -> Any:
    """Fit detector ``name`` on normal images, or, when there is a choice to make (``auto``, several input
    normalisations, settings to ``tune``), make it on synthetic-defect validation first (``fit_auto``,
    ``fit_tuned``). What fit and eval both call. ``auto_norm`` (no normalisation given): ``auto`` also tries
    ``gaussian`` with the other input normalisations (``AUTO_NORM_TRIALS``)."""
    from normalcy.detectors import create

    check_detector(name)
    if tune:
        return fit_tuned(name, paths, extractor, tune, own_backbones=own_backbones, progress=progress,
                         budget=tune_budget, **kwargs)
    if name != "auto" and len(norms) == 1:
        return create(name, extractor, **kwargs).fit(paths, progress=progress)
    extra = list(AUTO_NORM_TRIALS) if name == "auto" and auto_norm and len(norms) == 1 else []
    return fit_auto(paths, extractor, progress=progress, own_backbones=own_backbones, norms=norms,
                    candidates=CANDIDATES if name == "auto" else (name,), extra=extra, **kwargs)


def _trials(extractor: FeatureExtractor, candidates: Sequence[str], norms: Sequence[str],
            own_backbones: bool) -> list[tuple[str, str, FeatureExtractor]]:
    """(key, detector, extractor) of each trial: every candidate with every input normalisation."""
    return [(name if len(norms) == 1 else f"{name}/{norm}", name,
             _extractor_for(name, extractor, own_backbones).with_input_norm(norm))
            for name in candidates for norm in norms]


def _extractor_for(name: str, extractor: FeatureExtractor, own_backbone: bool) -> FeatureExtractor:
    from normalcy.detectors import default_backbone

    return extractor.with_backbone(default_backbone(name)) if own_backbone else extractor


def image_contrast(paths: Sequence[Path], n: int = 16) -> float:
    """The median spread of the pixels (in [0, 1]) of up to ``n`` of the images, evenly picked; 0.25 (a photo's)
    when none can be read."""
    paths = list(paths)
    picked = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, min(n, len(paths)))] if paths else []
    spreads = [float(im.std()) / 255.0 for _, im in iter_images(picked, [], listed=False)]
    return float(np.median(spreads)) if spreads else 0.25


def tune_candidates(setting: str, ex: FeatureExtractor, detector: str, sample: Sequence[Path]) -> list[Any]:
    """The values ``--tune`` tries for one setting, the extractor's own first; [] where it does not apply
    (a custom backbone keeps its own, tiles keep their size, a detector without pooled features its grid)."""
    from normalcy.detectors import DETECTORS
    from normalcy.images.features import size_for

    if setting not in TUNABLE:
        raise InputError(f"{option('tune')}: {setting!r} is not one of {', '.join(TUNABLE)}")
    if setting == "input_norm":
        values: list[Any] = list(INPUT_NORMS)
        if image_contrast(sample) < LOW_CONTRAST:
            values.sort(key=lambda v: v != "standard")  # stable: own, standard, imagenet
    elif setting == "backbone":
        if ex.spec.extras:
            return []
        values = list(TUNE_BACKBONES)
    elif setting == "image_size":
        if ex.tile:
            return []
        values = [size_for(list(sample), a * a, say=False) for a in TUNE_AREAS] + [(TUNE_AREAS[0], TUNE_AREAS[0])]
    else:  # pool_grid
        if not DETECTORS[detector].uses_pooled:
            return []
        values = list(TUNE_GRIDS)
    current = _current(ex, setting)
    return [current] + [v for i, v in enumerate(values) if v != current and v not in values[:i]]


def fit_tuned(name: str, paths: Sequence[Path], extractor: FeatureExtractor, settings: Sequence[str] = TUNABLE,
              own_backbones: bool = False, progress: bool = True, budget: float = TUNE_BUDGET,
              **kwargs: Any) -> Any:
    """``--tune``: choose the detector (``auto``) and then each of ``settings`` in turn, on held-out normal
    training images with synthetic defects; then fit the result on all images.

    One coordinate pass: each setting's values are tried with the settings before it already chosen, and the
    best of them replaces the current value only if it wins in ``CONFIDENCE`` of paired bootstrap
    resamples of the held-out split (``wins``): with a handful of held-out images one flipped pair moves the
    AUROC by several hundredths. The held-out images take ``VALIDATION_DEFECTS`` in turn: DRAEM's blobs alone
    saturate on some data (every value 1.000) and stand for neither thin cracks nor missing parts.

    ``budget``: all of it may take this many plain fits (estimated from the first trial, ``_Costs``; 0: no
    limit). A trial whose estimate, with the final fit's, would overrun it is skipped, and named in the
    choice (``skipped``); the settings come in ``TUNABLE``'s order, the input normalisation first.

    Trials fit on the split's training part (up to ``TUNE_FIT_IMAGES``): fitted on fewer images than the final
    model, a Gaussian's larger variants (a finer pooling grid, a wider backbone) lose more than the smaller ones
    and would be wrongly dropped (magnetic_tile, 200 images: grid 1 0.988 against grid 4 0.982; 519 images: 0.991
    against 0.989). The split keeps the images' aspect ratio at up to 512 pixels a side, so that input sizes can
    be compared on it. The final fit takes the backbone maps the trials made of the images they share."""
    from normalcy.detectors import create
    from normalcy.progress import progress_bar

    t0 = time.perf_counter()
    seed = int(kwargs.get("seed", 0))
    found: dict[str, float] = {}
    confidence: dict[str, float] = {}
    chosen: dict[str, Any] = {}
    scores: dict[str, Any] = {}
    times: dict[str, Timing] = {}
    skipped: list[str] = []
    cache = MapCache()  # trials that share a network share its maps, and so does the final fit
    with tempfile.TemporaryDirectory(prefix="normalcy-tune-") as tmp, cache.attached(extractor):
        split = held_out_split(paths, Path(tmp), seed)
        fit = split.fit
        if len(fit) > TUNE_FIT_IMAGES:
            picked = np.random.default_rng(seed).choice(len(fit), TUNE_FIT_IMAGES, False)
            fit = [fit[i] for i in sorted(picked)]
        before = 0.0  # what a fit without --tune would have spent choosing (auto's trials)
        if name == "auto":
            name, found, confidence["detector"] = _choose(
                split, fit, _trials(extractor, CANDIDATES, ("own",), own_backbones), scores, times=times, **kwargs)
            extractor = _extractor_for(name, extractor, own_backbones)
            before = time.perf_counter() - t0
        ex = extractor
        plan = [(s, tune_candidates(s, extractor, name, split.fit)) for s in settings]
        with progress_bar(progress) as bar:
            task = bar.add_task(f"tuning {name}", total=sum(max(0, len(v) - 1) for _, v in plan)
                                + (name not in scores))
            if name not in scores:
                found |= _fit_trials(split, fit, [(name, name, ex)], scores, times=times, **kwargs)
                bar.advance(task)
            costs = _Costs(ex, times[name], cache, len(fit), len(split.normal) + len(split.defective), len(paths))
            limit = before + budget * costs.plain() if budget > 0 else float("inf")
            best = name
            for setting, values in plan:
                if len(values) < 2:
                    continue
                trials = []
                for v in values[1:]:
                    trial = (f"{setting}={_shown(v)}", name, ex.replace(**{setting: v}))
                    final = max(costs.final(ex), costs.final(trial[2], tried=True))  # either may be fitted at the end
                    cost, spent = costs.trial(trial[2]), time.perf_counter() - t0
                    log.debug("tune: %s would take about %.1f s, the final fit %.1f s; %.1f of %.1f s spent", trial[0],
                              cost, final, spent, limit)
                    if spent + cost + final > limit:
                        skipped.append(trial[0])
                    else:
                        trials.append(trial)
                        found |= _fit_trials(split, fit, [trial], scores, **kwargs)
                    bar.advance(task)
                if trials:  # every other value over the budget: nothing was decided, so no confidence to report
                    key, confidence[setting] = _pick(best, [k for k, _, _ in trials], found, scores, seed)
                    if key != best:
                        best, ex = key, dict((k, e) for k, _, e in trials)[key]
                cache.keep(ex.map_key)
                chosen[setting] = _shown(_current(ex, setting))
        if skipped:
            log.warning("%s skipped %s: over its time budget of %g plain fits (%s; 0 tries every one)", option("tune"),
                        ", ".join(skipped), budget, option("tune_budget"))
        log.info("tune: chose %s for %s (validation AUROC %s; the best other value beat the one before in: %s)",
                 chosen, name,
                 ", ".join(f"{k} {v:.3f}" for k, v in found.items()),
                 ", ".join(f"{k} {v:.0%}" for k, v in confidence.items()))
        det = create(name, ex, **kwargs).fit(paths, progress=progress)
    ex.cache = None
    det.choice = {"validation_auroc": found, "wins": confidence, "chosen": name, "input_norm": ex.input_norm,
                  "tuned": chosen, "confidence": CONFIDENCE, "seconds": round(time.perf_counter() - t0, 1),
                  "budget": budget, "skipped": skipped}
    return det


@dataclass
class _Costs:
    """``--tune``'s estimates of what a trial and the final fit take, from the first trial: per file, the seconds
    the network took (``MapCache.rate``, scaled by input pixels and the backbone's ``BACKBONE_COST``) and reading
    took, and the rest (the detector's own fitting and scoring) as it was. No network runs for maps the cache
    holds, no file is read again at a size it holds. Estimates, not promises: they decide which trials run."""

    base: FeatureExtractor
    first: Timing
    cache: MapCache
    fit_images: int
    held_images: int
    all_images: int

    def _network(self, ex: FeatureExtractor) -> float:
        """Network seconds a file for ``ex``."""
        rate = self.cache.rate(self.base.map_key) or 0.0
        h, w = ex.size
        h0, w0 = self.base.size
        cost = BACKBONE_COST.get(ex.spec.name, 1.0) / BACKBONE_COST.get(self.base.spec.name, 1.0)
        return rate * (h * w) / (h0 * w0) * cost

    def _reading(self) -> float:
        return self.first.reading / (self.fit_images + self.held_images)

    def _compute(self) -> tuple[float, float]:
        """The detector's own seconds in the first trial: fitting, and scoring the held-out images."""
        share = self.fit_images / (self.fit_images + self.held_images)
        fit = self.first.fit - (self.first.network + self.first.reading) * share
        return fit, self.first.total - self.first.fit - (self.first.network + self.first.reading) * (1 - share)

    def _files(self, ex: FeatureExtractor, images: int, held: int, tried: bool = False) -> float:
        """Network and reading for ``images`` files, ``held`` of them in the cache at ``ex``'s settings (``tried``:
        as they will be once ``ex``'s trial has run)."""
        maps = held if tried or ex.map_key in self.cache.maps else 0
        inputs = held if tried or any(size == ex.size for _, size in self.cache.inputs) else 0
        return self._network(ex) * (images - maps) + self._reading() * (images - inputs)

    def trial(self, ex: FeatureExtractor) -> float:
        images = self.fit_images + self.held_images
        return sum(self._compute()) + self._files(ex, images, images)

    def final(self, ex: FeatureExtractor, tried: bool = False) -> float:
        """The fit of ``ex`` on every image, the images its trials fitted on taken from the cache (``tried``:
        as they will be once ``ex``'s trial has run). The detector's own part grows with the images."""
        fit, _ = self._compute()
        return fit * self.all_images / self.fit_images + self._files(ex, self.all_images, self.fit_images, tried)

    def plain(self) -> float:
        """A fit without ``--tune``: the final fit of the first trial's settings with nothing in the cache, at
        least. The detector's own part is taken as the trial's, on fewer images (PatchCore's coreset grows faster
        than the images, Gaussian AD's slower): with it scaled up as in ``final``, the budget's unit came out 18 %
        above a plain fit of PatchCore on magnetic_tile, and 3 plain fits 3.5 of them."""
        return self._compute()[0] + self._files(self.base, self.all_images, 0)


def _current(ex: FeatureExtractor, setting: str) -> Any:
    return {"input_norm": ex.input_norm, "backbone": ex.spec.name, "image_size": ex.size,
            "pool_grid": ex.pool_grid}[setting]


def _shown(value: Any) -> Any:
    """A setting's value as model.json and the log show it: a size as HEIGHTxWIDTH."""
    return f"{value[0]}x{value[1]}" if isinstance(value, tuple) else value
