"""Choosing settings from normal images alone: a validation split with synthetic defects.

Test labels must never choose a detector or its settings: on a user's line there are
none, and numbers tuned on a test set do not carry over to data nobody tuned for. What
we do have is normal images. So a fraction of them is held out of fitting; each of those
is scored once as it is and once with a synthetic defect (DRAEM's Perlin-noise masks
filled with another training image or a generated texture, ``normalcy.images.synthetic``), and
the image AUROC between the two says how well a candidate separates normal from "not
like the rest". ``--detector auto`` fits each candidate this way and keeps the best.

The proxy is only as good as synthetic defects are like real ones: local texture and
colour changes are well represented; missing parts or a wrong arrangement are not.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from normalcy.errors import InputError
from normalcy.images.features import FeatureExtractor
from normalcy.images.io import iter_images
from normalcy.images.synthetic import synthesize

log = logging.getLogger("normalcy")

CANDIDATES = ("gaussian", "patchcore")  # fast enough to fit twice; trained detectors are not


@dataclass
class Split:
    """Training images to fit on, and the held-out normal ones with and without synthetic defects."""

    fit: list[Path]
    normal: list[Path]
    defective: list[Path]


def synthetic_split(paths: Sequence[Path], folder: Path, fraction: float = 0.2, seed: int = 0,
                    size: int = 256, min_area: float = 0.005) -> Split:
    """Hold out ``fraction`` of the readable images (at least 4, at most 100) and write each to ``folder``
    at ``size`` x ``size``, once as it is and once with a synthetic defect covering at least ``min_area``."""
    paths = list(paths)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(paths))
    n_val = int(min(100, max(4, round(fraction * len(paths)))))
    if len(paths) - n_val < 5:
        raise InputError(f"choosing a detector needs at least {n_val + 5} training images, got {len(paths)}")
    held, fit = [paths[i] for i in sorted(order[:n_val])], [paths[i] for i in sorted(order[n_val:])]
    skipped: list[tuple[Path, str]] = []
    images = [cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for _, im in iter_images(held, skipped)]
    if len(images) < 2:
        raise InputError("choosing a detector: fewer than 2 of the held-out training images could be read")
    pool = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    folder.mkdir(parents=True, exist_ok=True)
    normal, defective = [], []
    for k, im in enumerate(images):
        x = im.astype(np.float32) / 255.0
        for _ in range(20):  # a Perlin mask can come out empty or tiny: draw again
            aug, mask = synthesize(x, pool, rng, anomaly_prob=1.0)
            if mask.mean() >= min_area:
                break
        for name, arr, out in ((f"normal_{k:03d}.png", x, normal), (f"defect_{k:03d}.png", aug, defective)):
            Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype(np.uint8)).save(folder / name)
            out.append(folder / name)
    return Split(fit=fit, normal=normal, defective=defective)


def validation_auroc(detector: Any, split: Split) -> float:
    """Image AUROC of a detector fitted on ``split.fit``: held-out normal images against the same with defects."""
    res = detector.score(split.normal + split.defective, progress=False)
    defective = set(split.defective)
    labels = np.array([p in defective for p in res.paths], dtype=int)
    return float(roc_auc_score(labels, res.scores))


def choose_detector(paths: Sequence[Path], extractor: FeatureExtractor, candidates: Sequence[str] = CANDIDATES,
                    own_backbones: bool = False, norms: Sequence[str] = ("own",),
                    **kwargs: Any) -> tuple[str, dict[str, float]]:
    """The candidate with the best synthetic-defect validation AUROC on held-out normal images, and every AUROC.
    ``own_backbones``: each candidate runs on its own default backbone (``extractor``'s other options kept).
    With several input normalisations (``norms``) each candidate is tried with each, keyed ``name/norm``."""
    from normalcy.detectors import create

    found: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="normalcy-validation-") as tmp:
        split = synthetic_split(paths, Path(tmp), seed=int(kwargs.get("seed", 0)))
        for key, name, ex in _trials(extractor, candidates, norms, own_backbones):
            det = create(name, ex, **kwargs).fit(split.fit, progress=False)
            found[key] = validation_auroc(det, split)
            log.info("auto: %s reaches %.3f image AUROC on %d held-out normal images with synthetic defects",
                     key, found[key], len(split.normal))
    best = max(found, key=lambda k: found[k])  # the first of equals: the default normalisation, listed first
    return best, found


def fit_auto(paths: Sequence[Path], extractor: FeatureExtractor | None = None, progress: bool = True,
             own_backbones: bool = False, candidates: Sequence[str] = CANDIDATES, norms: Sequence[str] = ("own",),
             **kwargs: Any) -> Any:
    """``--detector auto`` and/or ``--input-norm auto``: choose among ``candidates`` (and input normalisations
    ``norms``) on synthetic-defect validation, then fit the choice on all images. The choice and every trial's
    validation AUROC are kept on the model (``choice``). Without an extractor, or with ``own_backbones``, each
    candidate runs on its own default backbone."""
    from normalcy.detectors import create

    own_backbones = own_backbones or extractor is None
    extractor = extractor or FeatureExtractor()
    key, found = choose_detector(paths, extractor, candidates, own_backbones=own_backbones, norms=norms, **kwargs)
    log.info("auto: chose %s (%s)", key, ", ".join(f"{k} {v:.3f}" for k, v in found.items()))
    name, _, norm = key.partition("/")
    ex = _extractor_for(name, extractor, own_backbones).with_input_norm(norm or norms[0])
    det = create(name, ex, **kwargs).fit(paths, progress=progress)
    det.choice = {"validation_auroc": found, "chosen": name, "input_norm": ex.input_norm}
    return det


def fit_detector(name: str, paths: Sequence[Path], extractor: FeatureExtractor, *, norms: Sequence[str] = ("own",),
                 own_backbones: bool = False, progress: bool = True, **kwargs: Any) -> Any:
    """Fit detector ``name`` on normal images, or, when there is a choice to make (``auto``, or several input
    normalisations), make it on synthetic-defect validation first (``fit_auto``). What fit and eval both call."""
    from normalcy.detectors import create

    if name != "auto" and len(norms) == 1:
        return create(name, extractor, **kwargs).fit(paths, progress=progress)
    return fit_auto(paths, extractor, progress=progress, own_backbones=own_backbones, norms=norms,
                    candidates=CANDIDATES if name == "auto" else (name,), **kwargs)


def _trials(extractor: FeatureExtractor, candidates: Sequence[str], norms: Sequence[str],
            own_backbones: bool) -> list[tuple[str, str, FeatureExtractor]]:
    """(key, detector, extractor) of each trial: every candidate with every input normalisation."""
    return [(name if len(norms) == 1 else f"{name}/{norm}", name,
             _extractor_for(name, extractor, own_backbones).with_input_norm(norm))
            for name in candidates for norm in norms]


def _extractor_for(name: str, extractor: FeatureExtractor, own_backbone: bool) -> FeatureExtractor:
    from normalcy.detectors import default_backbone

    return extractor.with_backbone(default_backbone(name)) if own_backbone else extractor
