"""Logical anomalies: a part removed, added, moved, or two parts swapped.

Every pixel stays ordinary-looking; only what is where changes, which texture-like Perlin defects
(normalcy.images.synthetic, DRAEM's) never test. Used to validate, never to train: ``--tune``'s held-out
split plants them among its synthetic defects, and the dev proxies (bench/dev_proxies.py) are built from them.
"""

from __future__ import annotations

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # y0, x0, height, width


def _box_mask(shape: tuple[int, ...], *boxes: Box) -> np.ndarray:
    mask = np.zeros(shape[:2], np.float32)
    for y, x, h, w in boxes:
        mask[y : y + h, x : x + w] = 1.0
    return mask


def _random_box(shape: tuple[int, ...], rng: np.random.Generator, min_frac: float, max_frac: float,
                size: tuple[int, int] | None = None) -> Box:
    hh, ww = shape[:2]
    if size is None:
        h = max(1, int(round(hh * rng.uniform(min_frac, max_frac))))
        w = max(1, int(round(ww * rng.uniform(min_frac, max_frac))))
    else:
        h, w = size
    return int(rng.integers(0, hh - h + 1)), int(rng.integers(0, ww - w + 1)), h, w


def part_box(image: np.ndarray, rng: np.random.Generator, min_frac: float = 0.15, max_frac: float = 0.3,
             tries: int = 8, size: tuple[int, int] | None = None) -> Box:
    """A box likely to hold a part, not background: of ``tries`` random boxes, the one with the most
    edge energy (a part has edges; the plain background an object sits on has few)."""
    grey = image.astype(np.float32).mean(-1) if image.ndim == 3 else image.astype(np.float32)
    edges = np.abs(np.diff(grey, axis=0, prepend=grey[:1])) + np.abs(np.diff(grey, axis=1, prepend=grey[:, :1]))
    boxes = [_random_box(image.shape, rng, min_frac, max_frac, size) for _ in range(max(1, tries))]
    return max(boxes, key=lambda b: float(edges[b[0] : b[0] + b[2], b[1] : b[1] + b[3]].mean()))


def _other_box(shape: tuple[int, ...], rng: np.random.Generator, box: Box, tries: int = 50) -> Box:
    """A box of the same size as ``box`` that overlaps it as little as possible (none if it fits)."""
    y, x, h, w = box
    best, best_overlap = box, h * w + 1
    for _ in range(tries):
        b = _random_box(shape, rng, 0, 0, (h, w))
        overlap = max(0, min(y + h, b[0] + h) - max(y, b[0])) * max(0, min(x + w, b[1] + w) - max(x, b[1]))
        if overlap < best_overlap:
            best, best_overlap = b, overlap
            if overlap == 0:
                break
    return best


def _as_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def _like(result: np.ndarray, original: np.ndarray) -> np.ndarray:
    """``result`` (uint8) back in the dtype of ``original`` (uint8, or float in [0, 1])."""
    if original.dtype == np.uint8:
        return result
    return (result.astype(np.float32) / 255.0).astype(original.dtype)


def _fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` with the masked pixels filled in from their surroundings (Telea inpainting), same dtype."""
    im = _as_uint8(image)
    radius = max(3, int(round(0.02 * max(im.shape[:2]))))
    filled = _like(cv2.inpaint(np.ascontiguousarray(im), (mask > 0).astype(np.uint8), radius, cv2.INPAINT_TELEA),
                   image)
    return np.where(_channels(mask, image) > 0, filled, image)


def _channels(mask: np.ndarray, image: np.ndarray) -> np.ndarray:
    return mask.reshape(*mask.shape, *[1] * (image.ndim - 2))


def _paste(out: np.ndarray, patch: np.ndarray, y: int, x: int) -> None:
    """Paste ``patch`` into ``out`` at (y, x), its border faded into what is there, so the paste
    leaves no hard seam (a seam would be a structural defect, the easy kind)."""
    h, w = patch.shape[:2]
    ramp = max(1.0, 0.15 * min(h, w))
    ay = np.clip((np.minimum(np.arange(h), np.arange(h)[::-1]) + 1) / ramp, 0, 1)
    ax = np.clip((np.minimum(np.arange(w), np.arange(w)[::-1]) + 1) / ramp, 0, 1)
    alpha = _channels(np.minimum(ay[:, None], ax[None, :]), patch)
    region = out[y : y + h, x : x + w].astype(np.float32)
    mixed = alpha * patch.astype(np.float32) + (1 - alpha) * region
    out[y : y + h, x : x + w] = mixed.round() if out.dtype == np.uint8 else mixed


def missing_part(image: np.ndarray, rng: np.random.Generator, box: Box | None = None,
                 min_frac: float = 0.15, max_frac: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """A part removed: a box filled in from the pixels around it, as if it had never been there.
    (image of the same shape and dtype, HxW float32 mask of the changed box)."""
    box = box or part_box(image, rng, min_frac, max_frac)
    mask = _box_mask(image.shape, box)
    return _fill(image, mask), mask


def extra_part(image: np.ndarray, rng: np.random.Generator, box: Box | None = None, to: Box | None = None,
               min_frac: float = 0.15, max_frac: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """A part duplicated: a box copied to another place, the original left where it was.
    (image, mask of the box it was copied to)."""
    box = box or part_box(image, rng, min_frac, max_frac)
    to = to or _other_box(image.shape, rng, box)
    y, x, h, w = box
    out = image.copy()
    _paste(out, image[y : y + h, x : x + w], to[0], to[1])
    return out, _box_mask(image.shape, to)


def misplaced_part(image: np.ndarray, rng: np.random.Generator, box: Box | None = None, to: Box | None = None,
                   min_frac: float = 0.15, max_frac: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """A part moved: a box copied to another place and its old place filled in from around it.
    (image, mask of both boxes)."""
    box = box or part_box(image, rng, min_frac, max_frac)
    to = to or _other_box(image.shape, rng, box)
    y, x, h, w = box
    out = _fill(image, _box_mask(image.shape, box))
    _paste(out, image[y : y + h, x : x + w], to[0], to[1])
    return out, _box_mask(image.shape, box, to)


def wrong_arrangement(image: np.ndarray, rng: np.random.Generator, box: Box | None = None, to: Box | None = None,
                      min_frac: float = 0.15, max_frac: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Two parts swapped: two equal boxes exchange their contents, everything else in place.
    (image, mask of both boxes)."""
    box = box or part_box(image, rng, min_frac, max_frac)
    to = to or _other_box(image.shape, rng, box)
    (y, x, h, w), (v, u) = box, to[:2]
    out = image.copy()
    _paste(out, image[v : v + h, u : u + w], y, x)
    _paste(out, image[y : y + h, x : x + w], v, u)
    return out, _box_mask(image.shape, box, to)


LOGICAL = {"missing": missing_part, "extra": extra_part, "misplaced": misplaced_part, "swapped": wrong_arrangement}


def logical_anomaly(image: np.ndarray, rng: np.random.Generator, kind: str | None = None,
                    **kwargs: float) -> tuple[np.ndarray, np.ndarray, str]:
    """One logical anomaly of ``kind`` (one of LOGICAL; random if None): (image, mask, kind)."""
    kind = kind or str(rng.choice(sorted(LOGICAL)))
    out, mask = LOGICAL[kind](image, rng, **kwargs)
    return out, mask, kind

