"""Evaluation metrics for anomaly detection and localization.

Image level: AUROC, average precision and the best attainable F1 (with the
threshold that attains it), so a detector can be judged both threshold-free
and at its best operating point.

Pixel level: pooled pixel AUROC and AUPRO, the area under the per-region-overlap
curve of the MVTec AD benchmark (Bergmann et al. 2021, IJCV).  AUPRO weighs every
connected defect equally, so small defects count as much as large ones, which
pixel AUROC does not do.

The pixel metrics pool every pixel of a whole test set (e.g. ~725 images of
~300x300 px, ~65 M pixels), so they are written to keep peak memory well below
2 GB: scores are pooled as float32, and no int64 argsort of all pixels is made.
Maps may come as a lazy sequence that draws each one when read: each map is read once, so
only the masks and the pooled scores are ever held (``normalcy.evaluation.evaluate`` also caps their side).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
)

__all__ = ["image_metrics", "pixel_auroc", "aupro", "pixel_metrics", "evaluate"]

_NAN = float("nan")
# 8-connectivity, as in the official MVTec AD evaluation code.
_STRUCTURE = np.ones((3, 3), dtype=int)
# Distinct thresholds handled per step in aupro; bounds its temporaries (~100 MB).
_CHUNK = 1 << 21


def image_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Image-level AUROC, AP, F1-max and the threshold attaining F1-max.

    labels: 1 = anomalous, 0 = normal; scores: higher = more anomalous.
    Returns NaN for every key if only one class is present, because none of
    these metrics is defined then and an evaluation run should not crash on it.
    """
    y = np.asarray(labels).ravel().astype(bool)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.size}) and scores ({s.size}) differ in length")
    keys = ("image_auroc", "image_ap", "image_f1_max", "f1_threshold")
    if y.size == 0 or y.all() or not y.any():
        return {k: _NAN for k in keys}

    precision, recall, thresholds = precision_recall_curve(y, s)
    # The last (precision=1, recall=0) point has no threshold; drop it.
    p, r = precision[:-1], recall[:-1]
    denom = p + r
    f1 = np.divide(2 * p * r, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.argmax(f1))
    return {
        "image_auroc": float(roc_auc_score(y, s)),
        "image_ap": float(average_precision_score(y, s)),
        "image_f1_max": float(f1[best]),
        "f1_threshold": float(thresholds[best]),
    }


def _pixels(
    masks: Sequence[np.ndarray], maps: Sequence[np.ndarray], regions: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Pool normal (neg) and defect (pos) pixel scores as float32, reading each map once.

    ``maps`` may be a lazy sequence that draws each map when read (``normalcy.detectors.base.Maps``):
    only the masks and the pooled scores are held, never every map at once. With ``regions``, also
    each defect pixel's weight, 1 / the size of its connected region (8-connectivity), and the number
    of regions. A bad pair is named by its index, not left to a cryptic numpy error.
    """
    if len(masks) != len(maps):
        raise ValueError(f"got {len(masks)} masks but {len(maps)} maps")
    ms = [np.asarray(m).astype(bool, copy=False) for m in masks]
    n_pos = sum(int(np.count_nonzero(m)) for m in ms)
    n_all = sum(m.size for m in ms)
    neg = np.empty(n_all - n_pos, dtype=np.float32)
    pos = np.empty(n_pos, dtype=np.float32)
    weight = np.empty(n_pos if regions else 0, dtype=np.float64)
    i_neg = i_pos = n_regions = 0
    for idx, m in enumerate(ms):
        a = np.asarray(maps[idx])
        if m.shape != a.shape:
            raise ValueError(f"mask and map {idx} differ in shape: {m.shape} vs {a.shape}")
        if m.ndim != 2:
            raise ValueError(f"mask and map {idx} must be 2-D (HxW), got shape {m.shape}")
        s = a.astype(np.float32, copy=False)
        if not np.isfinite(s).all():
            raise ValueError(f"map {idx} contains non-finite values")
        sn, sp = s[~m], s[m]
        neg[i_neg : i_neg + sn.size] = sn
        pos[i_pos : i_pos + sp.size] = sp
        if regions and sp.size:
            labeled, n = ndimage.label(m, structure=_STRUCTURE)
            weight[i_pos : i_pos + sp.size] = 1.0 / np.bincount(labeled.ravel())[labeled[m]]
            n_regions += n
        i_neg += sn.size
        i_pos += sp.size
    return neg, pos, weight, n_regions


def _auroc_sorted(neg: np.ndarray, pos: np.ndarray) -> float:
    """Mann-Whitney AUROC of sorted negative and positive scores (ties count one half); exact in int64."""
    if neg.size == 0 or pos.size == 0:
        return _NAN
    below = np.searchsorted(neg, pos, side="left")  # negatives strictly below
    not_above = np.searchsorted(neg, pos, side="right")  # negatives below or tied
    # Sum of (below + 0.5 * ties) = 0.5 * (below + not_above).
    wins2 = int(below.sum(dtype=np.int64)) + int(not_above.sum(dtype=np.int64))
    return wins2 / (2.0 * pos.size * neg.size)


def pixel_auroc(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray]) -> float:
    """AUROC over all pixels of all images pooled (mask True = anomalous pixel).

    Computed exactly as the Mann-Whitney statistic (ties count one half), which
    equals sklearn's roc_auc_score; sklearn itself needs ~2.6 GB extra for
    ~65 M pixels, this needs about one float32 copy of the pixels.
    NaN if there is no anomalous or no normal pixel.
    """
    neg, pos, _, _ = _pixels(masks, maps, regions=False)
    neg.sort()
    pos.sort()  # sorted queries make searchsorted faster
    return _auroc_sorted(neg, pos)


def aupro(
    masks: Sequence[np.ndarray], maps: Sequence[np.ndarray], fpr_limit: float = 0.3
) -> float:
    """Normalized area under the PRO curve up to FPR = fpr_limit (MVTec AD AUPRO).

    PRO(t) is the mean, over all connected ground-truth regions (8-connectivity)
    of all images, of the fraction of the region's pixels scoring >= t; FPR(t) is
    the fraction of all normal pixels scoring >= t.  The curve is exact over every
    distinct threshold, as in the official ``compute_pro``: points (0, 0), then one
    point per distinct score, then (1, 1), integrated with the trapezoidal rule,
    interpolated at exactly fpr_limit, divided by fpr_limit (perfect detector = 1).
    NaN if there is no defect region or no normal pixel.
    """
    return pixel_metrics(masks, maps, fpr_limit)["aupro"]


def pixel_metrics(
    masks: Sequence[np.ndarray], maps: Sequence[np.ndarray], fpr_limit: float = 0.3
) -> dict[str, float]:
    """pixel_auroc and aupro from one pass over the maps and one sort of the normal pixels."""
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    neg, d, w, n_regions = _pixels(masks, maps)
    neg.sort()
    order = np.argsort(d, kind="stable")
    d = d[order]
    out = {"pixel_auroc": _auroc_sorted(neg, d), "aupro": _NAN}
    if n_regions == 0 or neg.size == 0:
        return out
    cw = np.concatenate(([0.0], np.cumsum(w[order])))
    del order, w
    out["aupro"] = _aupro_sorted(neg, d, cw, n_regions, fpr_limit)
    return out


def _aupro_sorted(neg: np.ndarray, d: np.ndarray, cw: np.ndarray, n_regions: int, fpr_limit: float) -> float:
    """AUPRO from sorted normal scores, sorted defect scores and their cumulative region weights.

    FPR only changes at normal-pixel scores, so between two consecutive distinct normal scores
    the curve is a vertical run (zero area) followed by one sloped segment. Only those sloped
    segments are built, and only up to fpr_limit, by searchsorted into the sorted defect scores.
    """
    n_normal = neg.size
    total_w = cw[-1]
    # Only the largest normal scores matter: enough to reach FPR >= fpr_limit.
    k = min(n_normal, math.ceil(fpr_limit * n_normal) + 1)  # +1 guards float rounding
    start = int(np.searchsorted(neg, neg[n_normal - k], side="left"))
    top = neg[start:][::-1]  # descending view, no copy

    # Walk the distinct normal scores in chunks so temporaries stay small even
    # for fpr_limit = 1 (tens of millions of distinct scores).
    area = 0.0
    fpr_before = 0.0
    n_top = top.size
    for s in range(0, n_top, _CHUNK):
        e = min(s + _CHUNK, n_top)
        cur, nxt = top[s:e], top[s + 1 : e + 1]
        ends = np.flatnonzero(cur[: nxt.size] != nxt) + s  # last index of each run
        if e == n_top:
            ends = np.append(ends, n_top - 1)
        if ends.size == 0:
            continue
        fpr = (ends + 1) / n_normal  # fraction of normal pixels with score >= u_j
        u = top[ends]  # distinct normal scores, descending
        # Sloped segment j: (fpr_{j-1}, PRO(score > u_j)) -> (fpr_j, PRO(score >= u_j)).
        y0 = (total_w - cw[np.searchsorted(d, u, side="right")]) / n_regions
        y1 = (total_w - cw[np.searchsorted(d, u, side="left")]) / n_regions
        fpr_prev = np.concatenate(([fpr_before], fpr[:-1]))
        area += _area_up_to(fpr_prev, fpr, y0, y1, fpr_limit)
        fpr_before = float(fpr[-1])
        if fpr_before >= fpr_limit:
            break
    return area / fpr_limit


def _area_up_to(
    x0: np.ndarray, x1: np.ndarray, y0: np.ndarray, y1: np.ndarray, x_max: float
) -> float:
    """Trapezoid area of segments (x0,y0)->(x1,y1) clipped at x_max, interpolating the cut one."""
    x_right = np.minimum(x1, x_max)
    width = np.clip(x_right - x0, 0.0, None)
    frac = np.clip((x_right - x0) / (x1 - x0), 0.0, 1.0)  # x1 > x0 always
    y_right = y0 + (y1 - y0) * frac
    return float(np.sum(0.5 * (y0 + y_right) * width))


def evaluate(
    labels: np.ndarray,
    scores: np.ndarray,
    masks: Sequence[np.ndarray | None] | None = None,
    maps: Sequence[np.ndarray | None] | None = None,
) -> dict[str, float]:
    """All metrics in one dict: image metrics, plus pixel_auroc and aupro.

    Pixel metrics use only images that have both a mask and a map (a normal
    image's mask is all zeros); without masks/maps they are NaN so the keys are
    always present and result tables keep a fixed shape.
    """
    out = image_metrics(labels, scores)
    out["pixel_auroc"] = _NAN
    out["aupro"] = _NAN
    if masks is None or maps is None:
        return out
    if len(masks) != len(maps):
        raise ValueError(f"got {len(masks)} masks but {len(maps)} maps")
    keep = [i for i, m in enumerate(masks) if m is not None]
    if isinstance(maps, (list, tuple)):  # a list may hold None for an image without a map
        keep = [i for i in keep if maps[i] is not None]
    if keep:
        out.update(pixel_metrics([masks[i] for i in keep], _Picked(maps, keep)))  # type: ignore[misc]
    return out


class _Picked(Sequence):
    """Some items of a sequence, read only when asked for (a lazy map sequence stays lazy)."""

    def __init__(self, items: Sequence, index: list[int]) -> None:
        self.items, self.index = items, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> object:  # type: ignore[override]
        return self.items[self.index[k]]
