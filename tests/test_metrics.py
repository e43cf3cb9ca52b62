"""Tests for normalcy.evaluation.metrics: hand-computed cases plus a brute-force AUPRO reference."""

from __future__ import annotations

import math
from bisect import bisect

import cv2
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from normalcy.evaluation.metrics import aupro, evaluate, image_metrics, pixel_auroc

# ---------------------------------------------------------------- helpers


def _two_region_case(split_normals: bool = False):
    """Two 2-px regions, R1 scored (1, 1), R2 scored (0.8, 0.1); 10 normal pixels.

    Normal scores: one 0.9, one 0.5, eight 0.0.  By hand the PRO curve is
    (0,0) (0,.5) (.1,.5) (.1,.75) (.2,.75) (.2,1) (1,1):
    R1 is found at FPR 0, R2 is half found at FPR 0.1 and fully at FPR 0.2.
    """
    if not split_normals:
        mask = np.zeros((2, 7), dtype=bool)
        mask[0, 0:2] = True
        mask[1, 5:7] = True
        amap = np.zeros((2, 7))
        amap[0, 0:2] = 1.0
        amap[1, 5] = 0.8
        amap[1, 6] = 0.1
        amap[0, 3] = 0.9  # normal
        amap[1, 2] = 0.5  # normal
        return [mask], [amap]
    # Same pixel multiset, but normals partly moved into an image with an empty mask.
    mask1 = np.zeros((2, 3), dtype=bool)
    mask1[0, 0:2] = True
    map1 = np.zeros((2, 3))
    map1[0, 0:2] = 1.0  # R1, plus normals (0,2),(1,0),(1,1),(1,2) at 0.0
    mask2 = np.zeros((1, 4), dtype=bool)
    mask2[0, 2:4] = True
    map2 = np.array([[0.9, 0.0, 0.8, 0.1]])  # R2 plus normals 0.9, 0.0
    mask3 = np.zeros((2, 2), dtype=bool)  # normal image: only normal pixels
    map3 = np.array([[0.5, 0.0], [0.0, 0.0]])
    return [mask1, mask2, mask3], [map1, map2, map3]


def _label8(mask: np.ndarray) -> tuple[int, np.ndarray]:
    n, lab = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return n - 1, lab


def _reference_aupro(masks, maps, fpr_limit):
    """Slow, literal AUPRO: loop over every distinct score as threshold.

    Mirrors the official MVTec ``compute_pro`` + ``trapezoid_area``: points
    (0,0), one (FPR, PRO) per distinct threshold, (1,1); trapezoids up to
    fpr_limit, interpolating there; divided by fpr_limit.
    """
    regions = []  # (image index, bool mask of region)
    for i, m in enumerate(masks):
        n, lab = _label8(m)
        regions += [(i, lab == k) for k in range(1, n + 1)]
    normals = np.concatenate([a[~m] for m, a in zip(masks, maps)])
    thresholds = sorted({float(v) for a in maps for v in np.ravel(a)}, reverse=True)
    xs, ys = [0.0], [0.0]
    for t in thresholds:
        xs.append(float(np.mean(normals >= t)))
        ys.append(float(np.mean([np.mean(maps[i][r] >= t) for i, r in regions])))
    xs.append(1.0)
    ys.append(1.0)
    x, y = np.array(xs), np.array(ys)
    correction = 0.0
    if fpr_limit not in x:
        ins = bisect(xs, fpr_limit)
        y_int = y[ins - 1] + (y[ins] - y[ins - 1]) * (fpr_limit - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_int + y[ins - 1]) * (fpr_limit - x[ins - 1])
    keep = x <= fpr_limit
    x, y = x[keep], y[keep]
    area = np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction
    return float(area / fpr_limit)


# ---------------------------------------------------------------- aupro, by hand


def test_aupro_perfect_detector_is_one():
    mask = np.zeros((6, 6), dtype=bool)
    mask[1:3, 1:3] = True
    mask[4, 4:6] = True
    amap = np.where(mask, 0.9, 0.1) + np.arange(36).reshape(6, 6) * 1e-4
    for limit in (0.01, 0.3, 1.0):
        assert aupro([mask], [amap], fpr_limit=limit) == pytest.approx(1.0)


def test_aupro_all_scores_equal():
    # One threshold: curve (0,0) -> (1,1), so normalized area = fpr_limit / 2.
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, 0] = True
    mask[2:4, 2:4] = True
    amap = np.full((4, 4), 0.5)
    assert aupro([mask], [amap]) == pytest.approx(0.15)
    assert aupro([mask], [amap], fpr_limit=1.0) == pytest.approx(0.5)
    assert aupro([mask], [amap], fpr_limit=0.1) == pytest.approx(0.05)


def test_aupro_one_region_found_other_half_found():
    masks, maps = _two_region_case()
    # Area up to 0.3: 0.1*0.5 + 0.1*0.75 + 0.1*1 = 0.225 -> /0.3
    assert aupro(masks, maps) == pytest.approx(0.75)
    assert aupro(masks, maps, fpr_limit=0.1) == pytest.approx(0.5)
    assert aupro(masks, maps, fpr_limit=0.2) == pytest.approx(0.125 / 0.2)
    # 0.15 lies in the middle of a flat step: 0.05 + 0.05*0.75 = 0.0875
    assert aupro(masks, maps, fpr_limit=0.15) == pytest.approx(0.0875 / 0.15)
    # Full curve: 0.225 + 0.7*1
    assert aupro(masks, maps, fpr_limit=1.0) == pytest.approx(0.925)


def test_aupro_empty_mask_images_only_add_normal_pixels():
    masks, maps = _two_region_case(split_normals=True)
    assert aupro(masks, maps) == pytest.approx(0.75)
    assert aupro(masks, maps, fpr_limit=0.15) == pytest.approx(0.0875 / 0.15)


def test_aupro_interpolates_sloped_segment_at_limit():
    # R1 (2 px) scored 1.0; R2 (2 px) scored 0.5, tied with 4 of the 8 normals.
    # Curve: (0,0) (0,.5) (.5,1) (1,1).  At FPR 0.3: y = .5 + .5*.6 = .8.
    mask = np.zeros((3, 4), dtype=bool)
    mask[0, 0:2] = True
    mask[2, 2:4] = True
    amap = np.full((3, 4), np.nan)
    amap[0, 0:2] = 1.0
    amap[2, 2:4] = 0.5
    # The other 8 pixels are normal: 4 at 0.5 and 4 at 0.0 -> FPR 0.5 at t=0.5.
    normal_scores = [0.5, 0.5, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0]
    amap[~mask] = normal_scores
    assert aupro([mask], [amap]) == pytest.approx(0.5 * (0.5 + 0.8) * 0.3 / 0.3)
    assert aupro([mask], [amap]) == pytest.approx(0.65)
    assert aupro([mask], [amap], fpr_limit=0.5) == pytest.approx(0.75)
    assert aupro([mask], [amap], fpr_limit=1.0) == pytest.approx(0.875)
    assert aupro([mask], [amap], fpr_limit=0.1) == pytest.approx(0.5 * (0.5 + 0.6) * 0.1 / 0.1)


def test_aupro_uses_8_connectivity():
    # Pixels (0,0),(0,1),(1,2) are one region with 8-connectivity (two with 4).
    mask = np.zeros((3, 3), dtype=bool)
    mask[0, 0] = mask[0, 1] = mask[1, 2] = True
    amap = np.full((3, 3), 0.5)
    amap[mask] = 0.0
    amap[1, 2] = 1.0
    # One region of 3 px, 1/3 found at FPR 0, rest at FPR 1 -> area 1/3.
    # (With 4-connectivity it would be 0.5.)
    assert aupro([mask], [amap], fpr_limit=1.0) == pytest.approx(1 / 3)


def test_aupro_nan_without_regions_and_bad_input():
    masks = [np.zeros((3, 3), dtype=bool)] * 2
    maps = [np.random.default_rng(0).random((3, 3)) for _ in range(2)]
    assert math.isnan(aupro(masks, maps))
    with pytest.raises(ValueError, match="1"):
        aupro([np.zeros((3, 3), bool), np.zeros((3, 4), bool)], [np.zeros((3, 3)), np.zeros((3, 3))])
    with pytest.raises(ValueError):
        aupro(masks, maps, fpr_limit=0.0)
    with pytest.raises(ValueError):
        aupro(masks, maps, fpr_limit=1.5)


@pytest.mark.parametrize("seed", range(12))
def test_aupro_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n_img = int(rng.integers(1, 5))
    masks, maps = [], []
    for _ in range(n_img):
        h, w = int(rng.integers(3, 9)), int(rng.integers(3, 9))
        m = rng.random((h, w)) < rng.uniform(0.0, 0.4)
        # Scores on a coarse grid to create many ties, slightly higher on defects.
        a = np.round(rng.random((h, w)) + 0.3 * m, int(rng.integers(1, 3)))
        masks.append(m)
        maps.append(a)
    if not any(m.any() for m in masks):
        masks[0][0, 0] = True
    for limit in (0.05, 0.3, 0.77, 1.0):
        expected = _reference_aupro(masks, maps, limit)
        assert aupro(masks, maps, fpr_limit=limit) == pytest.approx(expected, rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------- pixel_auroc


def test_pixel_auroc_by_hand():
    # Anomalous pixel 0.9 vs normals 0.1, 0.5, 0.9: wins 1 + 1 + 0.5 tie -> 2.5/3.
    mask = np.array([[True, False], [False, False]])
    amap = np.array([[0.9, 0.1], [0.5, 0.9]])
    assert pixel_auroc([mask], [amap]) == pytest.approx(2.5 / 3)


def test_pixel_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(3)
    masks = [rng.random((5, 7)) < 0.3 for _ in range(4)]
    maps = [np.round(rng.random((5, 7)) + 0.2 * m, 1) for m in masks]
    y = np.concatenate([m.ravel() for m in masks])
    s = np.concatenate([a.ravel() for a in maps])
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(y, s), rel=1e-12)


def test_pixel_auroc_nan_and_shape_errors():
    amap = np.zeros((2, 2))
    assert math.isnan(pixel_auroc([np.zeros((2, 2), bool)], [amap]))
    assert math.isnan(pixel_auroc([np.ones((2, 2), bool)], [amap]))
    with pytest.raises(ValueError, match="index 2|2"):
        pixel_auroc([np.zeros((2, 2), bool)] * 3, [amap, amap, np.zeros((2, 3))])
    with pytest.raises(ValueError):
        pixel_auroc([np.zeros((2, 2), bool)], [amap, amap])


# ---------------------------------------------------------------- image metrics


def test_image_metrics_by_hand():
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    r = image_metrics(labels, scores)
    # AUROC: 0.35 beats 0.1 only, 0.8 beats both -> 3/4.
    assert r["image_auroc"] == pytest.approx(0.75)
    # AP: ranks 0.8 (P=1, R=.5), 0.35 (P=2/3, R=1) -> .5*1 + .5*2/3.
    assert r["image_ap"] == pytest.approx(0.5 + 1 / 3)
    # F1 at t=0.8: 2/3; t=0.4: .5; t=0.35: 0.8; t=0.1: 2/3.
    assert r["image_f1_max"] == pytest.approx(0.8)
    assert r["f1_threshold"] == pytest.approx(0.35)


def test_image_metrics_perfect():
    r = image_metrics(np.array([0, 1, 0, 1]), np.array([0.2, 0.9, 0.1, 0.7]))
    assert r == pytest.approx({"image_auroc": 1.0, "image_ap": 1.0, "image_f1_max": 1.0, "f1_threshold": 0.7})


def test_image_metrics_single_class_is_nan():
    for labels in (np.zeros(4, int), np.ones(4, int)):
        r = image_metrics(labels, np.array([0.1, 0.2, 0.3, 0.4]))
        assert set(r) == {"image_auroc", "image_ap", "image_f1_max", "f1_threshold"}
        assert all(math.isnan(v) for v in r.values())


# ---------------------------------------------------------------- evaluate


def test_evaluate_without_and_with_pixel_data():
    labels = np.array([0, 1, 1])
    scores = np.array([0.1, 0.9, 0.8])
    r = evaluate(labels, scores)
    assert r["image_auroc"] == pytest.approx(1.0)
    assert math.isnan(r["pixel_auroc"]) and math.isnan(r["aupro"])

    masks_ab, maps_ab = _two_region_case(split_normals=True)
    # Third image lacks a map and must be skipped.
    masks = masks_ab + [np.ones((2, 2), bool)]
    maps = maps_ab + [None]
    r = evaluate(np.array([1, 1, 0, 1]), np.array([0.9, 0.8, 0.1, 0.7]), masks, maps)
    assert r["aupro"] == pytest.approx(0.75)
    assert r["pixel_auroc"] == pytest.approx(pixel_auroc(masks_ab, maps_ab))
    assert r["image_auroc"] == pytest.approx(1.0)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7])
def test_aupro_chunked_walk_matches_brute_force(monkeypatch, chunk):
    import normalcy.evaluation.metrics as metrics

    monkeypatch.setattr(metrics, "_CHUNK", chunk)
    rng = np.random.default_rng(100 + chunk)
    masks = [rng.random((6, 6)) < 0.25 for _ in range(3)]
    maps = [np.round(rng.random((6, 6)) + 0.3 * m, 1) for m in masks]
    for limit in (0.05, 0.3, 1.0):
        assert aupro(masks, maps, fpr_limit=limit) == pytest.approx(
            _reference_aupro(masks, maps, limit), rel=1e-9, abs=1e-12
        )
