"""The logical-anomaly synthesis of normalcy/images/logical.py (--tune's split, dev proxies): shapes, where it
changes, seeds; and the surface defects of normalcy/images/synthetic.py."""

from __future__ import annotations

import numpy as np
import pytest

from normalcy.images import logical

LOGICAL, extra_part, logical_anomaly = logical.LOGICAL, logical.extra_part, logical.logical_anomaly
missing_part, part_box, wrong_arrangement = logical.missing_part, logical.part_box, logical.wrong_arrangement


def _image(dtype: type = np.uint8) -> np.ndarray:
    """A grey image with two distinct bright parts, so boxes have content."""
    im = np.full((64, 96, 3), 60, np.uint8)
    im[8:24, 10:30] = (200, 40, 40)
    im[40:56, 60:90] = (40, 200, 40)
    im[..., 2] += np.arange(96, dtype=np.uint8)[None, :]  # a gradient, so every box differs
    return im if dtype == np.uint8 else im.astype(np.float32) / 255.0


@pytest.mark.parametrize("kind", sorted(LOGICAL))
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_shape_dtype_and_where(kind: str, dtype: type) -> None:
    image = _image(dtype)
    out, mask, got = logical_anomaly(image, np.random.default_rng(0), kind)
    assert got == kind
    assert out.shape == image.shape and out.dtype == image.dtype
    assert mask.shape == image.shape[:2] and mask.dtype == np.float32 and set(np.unique(mask)) <= {0.0, 1.0}
    assert mask.any()
    assert np.array_equal(out[mask == 0], image[mask == 0])  # nothing changes outside the mask
    assert not np.array_equal(out[mask > 0], image[mask > 0])  # and something changes inside it


@pytest.mark.parametrize("kind", sorted(LOGICAL))
def test_same_seed_same_anomaly(kind: str) -> None:
    a = logical_anomaly(_image(), np.random.default_rng(3), kind)
    b = logical_anomaly(_image(), np.random.default_rng(3), kind)
    c = logical_anomaly(_image(), np.random.default_rng(4), kind)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_given_boxes_are_where_it_changes() -> None:
    image = _image()
    rng = np.random.default_rng(0)
    out, mask = missing_part(image, rng, box=(8, 10, 16, 20))
    assert mask[8:24, 10:30].all() and mask.sum() == 16 * 20
    assert out[12:20, 14:26, 0].max() < 200  # the red part is gone from the middle of its box
    out, mask = extra_part(image, rng, box=(8, 10, 16, 20), to=(40, 10, 16, 20))
    assert mask[40:56, 10:30].all() and mask.sum() == 16 * 20
    assert np.array_equal(out[44:52, 14:26], image[12:20, 14:26])  # the copy's inside is exact
    out, mask = wrong_arrangement(image, rng, box=(8, 10, 16, 20), to=(40, 60, 16, 20))
    assert mask.sum() == 2 * 16 * 20
    assert np.array_equal(out[12:20, 14:26], image[44:52, 64:76])
    assert np.array_equal(out[44:52, 64:76], image[12:20, 14:26])


def test_part_box_prefers_content() -> None:
    """Of candidate boxes, the one with edges wins over plain background."""
    image = np.zeros((100, 100, 3), np.uint8)
    image[70:90, 70:90] = 255
    box = part_box(image, np.random.default_rng(0), 0.2, 0.3, tries=64)
    y, x, h, w = box
    assert y + h > 70 and x + w > 70  # it touches the only part there is


@pytest.mark.parametrize("kind", ["thin_crack", "brightness_change"])
def test_surface_defects_change_only_where_their_mask_says(kind: str) -> None:
    from normalcy.images import synthetic

    rng = np.random.default_rng(0)
    image = rng.uniform(0.3, 0.7, size=(128, 96, 3)).astype(np.float32)
    out, mask = getattr(synthetic, kind)(image, np.random.default_rng(1))
    assert out.shape == image.shape and out.dtype == np.float32 and mask.shape == (128, 96)
    assert 0 < mask.mean() < 0.2 and 0.0 <= out.min() and out.max() <= 1.0
    changed = np.abs(out - image).max(-1) > 0.05
    assert changed.any() and mask[changed].mean() > 0.5  # what changed clearly lies mostly inside the mask
    again, _ = getattr(synthetic, kind)(image, np.random.default_rng(1))
    assert np.array_equal(out, again)  # seeded
