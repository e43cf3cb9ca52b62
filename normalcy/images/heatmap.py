"""Anomaly maps as pictures: the heatmap PNGs and overlays of a run folder, and the report's gallery.

An image scored by `normalcy predict` goes through :class:`normalcy.runs.format.RunWriter`, which
calls :func:`overlay`, :func:`side_by_side` and :func:`write_png` here.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

__all__ = ["colorize", "colour_range", "overlay", "pictures_bgr", "side_by_side", "write_bgr", "write_bgrs",
           "write_png"]

# Turbo: perceptually smoother than JET, still reads as "blue = fine, red = bad".
_COLORMAP = cv2.COLORMAP_TURBO
# zlib level 1, the Up filter only and Huffman coding without matching: a run writes two PNGs per image, and
# of the settings in bench/png_encoders.py this is the fastest that still compresses (17-25 % faster than
# run-length matching, 3.5x faster than adaptive filters at level 3, files 3-8 % larger than run-length's;
# storing without compression is 8x faster but 2-3.5x larger).
_PNG_FAST = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP,
             cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]


def _to_rgb_u8(image: np.ndarray) -> np.ndarray:
    """Bring HxW gray / HxWx1 / HxWx3 / HxWx4 images of any dtype to HxWx3 uint8 RGB.

    Callers hand us whatever their loader produced; failing on a gray image or a
    float image in [0, 1] would be pointless pedantry in a visualization helper.
    """
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.stack([img, img, img], axis=-1)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxW or HxWx3 image, got shape {np.shape(image)}")
    img = img[..., :3]
    if img.dtype != np.uint8:
        if img.dtype == np.bool_:
            img = img.astype(np.uint8) * 255
        elif np.issubdtype(img.dtype, np.floating) and img.size and np.nanmax(img) <= 1.0:
            img = np.clip(np.nan_to_num(img) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        else:
            img = np.clip(np.nan_to_num(img.astype(np.float64)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


def colorize(amap: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Map a float HxW anomaly map to HxWx3 uint8 RGB (Turbo), clipped to [vmin, vmax].

    A fixed (vmin, vmax) rather than per-image normalization is what makes two
    heatmaps comparable: a clean part stays blue instead of being stretched to red.
    If vmax <= vmin the range is degenerate; values above vmin are shown as hot and
    the rest as cold, instead of dividing by zero. NaN counts as cold.
    Float32 throughout: a 1600x800 map is drawn for every image a run writes.
    """
    a = np.asarray(amap, dtype=np.float32)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"expected an HxW anomaly map, got shape {np.shape(amap)}")
    vmin, vmax = float(vmin), float(vmax)
    span = vmax - vmin
    if not math.isfinite(span) or span <= 0.0:
        u8 = (a > vmin).astype(np.uint8) * np.uint8(255)  # NaN compares False: cold
    else:
        with np.errstate(invalid="ignore", over="ignore"):
            norm = (a - np.float32(vmin)) * np.float32(255.0 / span)
        np.fmax(norm, 0.0, out=norm)  # fmax drops NaN: NaN -> coldest; -inf clips to 0
        np.minimum(norm, 255.0, out=norm)  # +inf clips to 255
        norm += 0.5
        u8 = norm.astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(u8, _COLORMAP), cv2.COLOR_BGR2RGB)  # OpenCV gives BGR


# The share of an image's map that may lie past the colour range's top before the colour runs up to the map's
# own values: a defect spread over the whole part (elpv's cracked solar cells, whose maps exceed the normal
# patches' 99.9th percentile nearly everywhere) was one flat red, hiding where it is worst.
_OWN_TOP_QUANTILE = 0.99
_OWN_TOP_SIDE = 128  # the quantile is read on a map subsampled to about this many pixels a side (maps are smooth)


def colour_range(amap: np.ndarray, vmin: float, vmax: float) -> tuple[float, float]:
    """The colour range that :func:`overlay` draws ``amap`` with: ``(vmin, vmax)``, the detector's fixed range,
    unless more than 1 % of the map lies above ``vmax``; then the top is the map's own 99th percentile, so the
    worst part of a widely anomalous image still stands out. Maps within the fixed range stay comparable."""
    a = np.asarray(amap, dtype=np.float32)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2 and a.size:
        step = max(1, max(a.shape) // _OWN_TOP_SIDE)
        a = a[::step, ::step]
    a = a[np.isfinite(a)]
    if not a.size or not math.isfinite(vmax) or not vmax > vmin:
        return float(vmin), float(vmax)
    top = float(np.quantile(a, _OWN_TOP_QUANTILE))
    return float(vmin), max(float(vmax), top)


def overlay(
    image: np.ndarray, amap: np.ndarray, vmin: float, vmax: float, alpha: float = 0.6
) -> np.ndarray:
    """Blend a colorized anomaly map onto the image; returns HxWx3 uint8 RGB.

    Each pixel's colour weighs by how far its map value lies into [vmin, vmax]: at or below vmin (as
    anomalous as normal parts get) the image shows untouched, at vmax and above the colour covers it at
    weight ``alpha``. So a defect stands out on the part instead of under a tint over the whole image.
    Where more than 1 % of the map lies past ``vmax``, the colour runs up to the map's own 99th percentile
    instead (:func:`colour_range`). Detectors usually produce maps at feature resolution, so a map of a
    different size is resized bilinearly to the image (smooth, no blocky patches).
    """
    return _draw(image, amap, vmin, vmax, alpha, bgr=False, beside=False)


def pictures_bgr(image: np.ndarray, amap: np.ndarray, vmin: float, vmax: float, beside: bool = True) -> np.ndarray:
    """The :func:`overlay` in OpenCV's channel order (BGR), as :func:`write_bgr` writes it; ``beside``: with the
    image on its left, as :func:`side_by_side` (the overlay is then ``[:, W:]``). A run drew the overlay, then the
    picture beside the image, then a BGR copy of each: three more arrays of the photo's size or twice it."""
    return _draw(image, amap, vmin, vmax, 0.6, bgr=True, beside=beside)


def _draw(image: np.ndarray, amap: np.ndarray, vmin: float, vmax: float, alpha: float, bgr: bool,
          beside: bool) -> np.ndarray:
    rgb = _to_rgb_u8(image)
    h, w = rgb.shape[:2]
    a = np.asarray(amap, dtype=np.float32)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"expected an HxW anomaly map, got shape {np.shape(amap)}")
    vmin, vmax = colour_range(a, vmin, vmax)  # on the map as given, as the report's caption reads it
    if a.shape != (h, w):
        a = cv2.resize(a, (w, h), interpolation=cv2.INTER_LINEAR)
    order = slice(None, None, -1) if bgr else slice(None)
    out = np.empty((h, 2 * w if beside else w, 3), np.uint8)
    if beside:
        out[:, :w] = rgb[..., order]
    # In strips of rows: every step is per pixel, and on the whole of a 6000x6000 photo its float temporaries
    # were about 550 MB at once (the map itself is 144 MB).
    step = max(1, _STRIP_PIXELS // max(w, 1))
    for top in range(0, h, step):
        rows = slice(top, top + step)
        out[rows, out.shape[1] - w:] = _blend(rgb[rows], a[rows], vmin, vmax, alpha)[..., order]
    return out


_STRIP_PIXELS = 1 << 18
"""Pixels :func:`overlay` draws at a time."""


def _blend(rgb: np.ndarray, a: np.ndarray, vmin: float, vmax: float, alpha: float) -> np.ndarray:
    """:func:`overlay` of an image and its map of the same size, with the colour range already chosen."""
    heat = colorize(a, vmin, vmax)
    if vmax > vmin:
        weight = np.clip((a - np.float32(vmin)) * np.float32(1.0 / (vmax - vmin)), 0.0, 1.0)
    else:  # a degenerate range: colour where the map exceeds it
        weight = (a > vmin).astype(np.float32)
    weight = np.nan_to_num(weight, nan=0.0) * np.float32(np.clip(alpha, 0.0, 1.0))
    # OpenCV's per-pixel blend: ~4x faster than the same in numpy (predict draws one overlay per image)
    return cv2.blendLinear(heat, rgb, weight, 1.0 - weight)


def side_by_side(image: np.ndarray, over: np.ndarray) -> np.ndarray:
    """Original | overlay, one picture (width 2*W)."""
    return np.concatenate([_to_rgb_u8(image), over], axis=1)


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB image as PNG, fast (see _PNG_FAST): a run writes two full-size PNGs per image. Any path the
    file system takes works (:func:`write_bgr`)."""
    write_bgr(path, cv2.cvtColor(_to_rgb_u8(rgb), cv2.COLOR_RGB2BGR))


def write_bgr(path: Path, bgr: np.ndarray) -> None:
    """:func:`write_png` of an image in OpenCV's channel order (:func:`pictures_bgr`), a view of one too.
    OpenCV writes it straight to the file where it can open the path: encoded in memory first, the whole PNG was
    held at once (260 MB more for a 6000x6000 photo's picture beside its overlay). Where it cannot (a file name
    that is not UTF-8; not ASCII on Windows) or its write fails, the PNG is encoded in memory and written by
    Python, whose error names the problem (a full disk)."""
    name = str(path)
    if name.isascii() or (os.name != "nt" and _utf8(name)):
        try:
            if cv2.imwrite(name, bgr, _PNG_FAST):
                return
        except cv2.error:
            pass
    ok, buf = cv2.imencode(".png", bgr, _PNG_FAST)
    if not ok:
        raise ValueError(f"{path}: could not encode the PNG")
    Path(path).write_bytes(buf)  # the encoded buffer as it is (``tobytes`` copied it)


def write_bgrs(pictures: Sequence[tuple[Path, np.ndarray]]) -> None:
    """:func:`write_bgr` of each (path, picture), the first on a thread of its own meanwhile: OpenCV encodes without
    holding the GIL, and a run's two PNGs an image (the overlay, and the picture beside the image) were encoded one
    after the other on one core, most of `predict`'s time at 224 px (docs/benchmarks.md, "The fast path"), while the
    other core waited. Every write is done before this returns; the first failure in the given order is raised."""
    if len(pictures) < 2:
        for path, picture in pictures:
            write_bgr(path, picture)
        return
    failed: list[BaseException] = []

    def first() -> None:
        try:
            write_bgr(*pictures[0])
        except BaseException as err:  # raised below, in this thread
            failed.append(err)

    helper = threading.Thread(target=first, name="normalcy-png", daemon=True)
    helper.start()
    later: BaseException | None = None
    try:
        for path, picture in pictures[1:]:
            write_bgr(path, picture)
    except BaseException as err:  # after the first write has ended, and only if it did not fail
        later = err
    helper.join()
    if failed:
        raise failed[0]
    if later is not None:
        raise later


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a byte of a non-UTF-8 name, surrogate-escaped
        return False
    return True
