"""Synthetic images for the trained detectors, which have no defect examples to learn from.

* DRAEM's synthetic anomalies (Zavrtanik et al. 2021): Perlin-noise masks filled with a
  texture (another training image, or a generated one) blended into a normal image.
* EfficientAD's stand-ins for ImageNet (offline there is none): generated images unlike
  any training set, for the teacher's distillation and the student's penalty, and the
  crops, flips and colour jitter of its augmentations.

* Surface defects that Perlin blobs do not look like: a thin crack (a dark or bright jagged line a few pixels
  wide) and a brightness change (a soft region lighter or darker than the rest), for validation.

Logical anomalies (a part removed, added, moved or swapped): normalcy.images.logical.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

# -------------------------------------------------------------------- DRAEM: anomalies


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2-D gradient (Perlin) noise of ``shape`` with ``res`` lattice cells per axis, float32.

    Values lie in [-sqrt(2)/2, sqrt(2)/2]; the image size need not be a multiple of ``res``.
    """
    h, w = int(shape[0]), int(shape[1])
    ry, rx = max(1, int(res[0])), max(1, int(res[1]))
    angles = rng.random((ry + 1, rx + 1)) * 2 * np.pi
    gy, gx = np.sin(angles), np.cos(angles)
    ys = np.arange(h) * (ry / h)
    xs = np.arange(w) * (rx / w)
    iy, ix = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
    fy, fx = (ys - iy)[:, None], (xs - ix)[None, :]

    def corner(a: int, b: int) -> np.ndarray:
        cy, cx = (iy + a)[:, None], (ix + b)[None, :]
        return gy[cy, cx] * (fy - a) + gx[cy, cx] * (fx - b)

    uy, ux = _fade(fy), _fade(fx)
    top = corner(0, 0) * (1 - ux) + corner(0, 1) * ux
    bottom = corner(1, 0) * (1 - ux) + corner(1, 1) * ux
    return (top * (1 - uy) + bottom * uy).astype(np.float32)


def perlin_mask(size: int, rng: np.random.Generator, threshold: float = 0.5,
                min_scale: int = 0, max_scale: int = 6) -> np.ndarray:
    """A binary anomaly mask (size x size float32 in {0, 1}) from rotated, thresholded Perlin noise."""
    sy = 2 ** int(rng.integers(min_scale, max_scale + 1))
    sx = 2 ** int(rng.integers(min_scale, max_scale + 1))
    noise = perlin_noise((size, size), (sy, sx), rng)
    angle = float(rng.uniform(-90, 90))
    rot = cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.0)
    noise = cv2.warpAffine(noise, rot, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return (noise > threshold).astype(np.float32)


def _colour_augment(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Three of the paper's random colour augmentations, on an HxWx3 float image in [0, 1]."""
    ops = rng.choice(7, size=3, replace=False)
    for op in ops:
        if op == 0:  # gamma
            t = np.power(t, rng.uniform(0.5, 2.0))
        elif op == 1:  # per-channel gain
            t = t * rng.uniform(0.5, 1.5, size=3)
        elif op == 2:  # contrast
            m = t.mean()
            t = (t - m) * rng.uniform(0.5, 2.0) + m
        elif op == 3:  # invert
            t = 1.0 - t
        elif op == 4:  # solarize
            thr = rng.uniform(0.3, 0.9)
            t = np.where(t > thr, 1.0 - t, t)
        elif op == 5:  # posterize
            levels = 2 ** int(rng.integers(1, 5))
            t = np.floor(t * levels) / levels
        else:  # channel shuffle
            t = t[..., rng.permutation(3)]
        t = np.clip(t, 0.0, 1.0)
    return t.astype(np.float32)


def generated_texture(size: int, rng: np.random.Generator) -> np.ndarray:
    """A generated texture (size x size x 3 float32 in [0, 1]): Perlin colours, gradient, noise or stripes."""
    kind = int(rng.integers(4))
    c0, c1 = rng.random(3).astype(np.float32), rng.random(3).astype(np.float32)
    if kind == 0:  # coloured Perlin noise, one field per channel
        s = 2 ** int(rng.integers(1, 6))
        t = np.stack([perlin_noise((size, size), (s, s), rng) for _ in range(3)], -1)
        return np.clip(t * rng.uniform(0.7, 1.4) + 0.5, 0, 1).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    a = rng.uniform(0, 2 * np.pi)
    proj = np.cos(a) * xx + np.sin(a) * yy
    if kind == 1:  # linear colour gradient
        u = (proj - proj.min()) / (np.ptp(proj) + 1e-6)
        return (c0 * (1 - u[..., None]) + c1 * u[..., None]).astype(np.float32)
    if kind == 2:  # blurred colour noise
        t = rng.random((size, size, 3)).astype(np.float32)
        sigma = float(rng.uniform(0.5, 3.0))
        t = cv2.GaussianBlur(t, (0, 0), sigma)
        t = (t - t.min()) / (np.ptp(t) + 1e-6)
        return t.astype(np.float32)
    u = 0.5 + 0.5 * np.sin(2 * np.pi * proj * rng.uniform(2, 16))  # stripes
    return (c0 * (1 - u[..., None]) + c1 * u[..., None]).astype(np.float32)


def image_texture(pool: torch.Tensor, rng: np.random.Generator) -> np.ndarray:
    """Another training image (N x 3 x S x S uint8 pool) as a texture: rotated, flipped, shifted, jittered."""
    t = pool[int(rng.integers(len(pool)))].permute(1, 2, 0).numpy().astype(np.float32) / 255.0
    t = np.rot90(t, int(rng.integers(4)))
    if rng.random() < 0.5:
        t = t[:, ::-1]
    s = t.shape[0]
    t = np.roll(t, (int(rng.integers(s)), int(rng.integers(s))), axis=(0, 1))
    t = t[..., rng.permutation(3)] * rng.uniform(0.6, 1.4, size=3) + rng.uniform(-0.2, 0.2)
    return np.ascontiguousarray(np.clip(t, 0, 1), dtype=np.float32)


def add_anomaly(image: np.ndarray, texture: np.ndarray, mask: np.ndarray, beta: float) -> np.ndarray:
    """The paper's blend: I_a = I (1 - M) + (1 - beta) I M + beta A M (HxWx3 image/texture, HxW mask)."""
    m = mask[..., None]
    return (image * (1 - m) + (1 - beta) * image * m + beta * texture * m).astype(np.float32)


def synthesize(image: np.ndarray, pool: torch.Tensor, rng: np.random.Generator,
               anomaly_prob: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(augmented image, mask) for one normal HxWx3 float image in [0, 1]; the mask is HxW in {0, 1}.

    With probability ``1 - anomaly_prob`` (or when the Perlin mask is empty) the image comes back
    unchanged with an empty mask.
    """
    size = image.shape[0]
    if rng.random() >= anomaly_prob:
        return image, np.zeros(image.shape[:2], np.float32)
    mask = perlin_mask(size, rng)
    if not mask.any():
        return image, mask
    tex = image_texture(pool, rng) if rng.random() < 0.5 else generated_texture(size, rng)
    tex = _colour_augment(tex, rng)
    beta = float(rng.uniform(0.1, 1.0))
    return add_anomaly(image, tex, mask, beta), mask



# -------------------------------------------------------------------- surface defects, for validation


def thin_crack(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A crack: a jagged line 1-3 pixels wide (at 256 px) across 15-45 % of the image, darker or brighter than
    what it crosses. (image as float HxWx3 in [0, 1], HxW float32 mask of the line)."""
    h, w = image.shape[:2]
    side = min(h, w)
    n = int(rng.integers(6, 14))
    step = rng.uniform(0.15, 0.45) * side / n
    angle = rng.uniform(0, 2 * np.pi)
    pts = [np.array([rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h])]
    for _ in range(n):
        angle += rng.normal(0, 0.5)
        pts.append(np.clip(pts[-1] + step * np.array([np.cos(angle), np.sin(angle)]), 0, [w - 1, h - 1]))
    mask = np.zeros((h, w), np.float32)
    width = max(1, int(round(rng.uniform(1, 3) * side / 256)))
    cv2.polylines(mask, [np.round(np.array(pts)).astype(np.int32)], False, 1.0, width, cv2.LINE_AA)
    mask = np.clip(cv2.GaussianBlur(mask, (3, 3), 0) * 1.5, 0, 1)
    depth = rng.uniform(0.35, 0.8) * (1 if rng.random() < 0.8 else -1)  # most cracks are dark
    out = image * (1 - depth * mask[..., None]) if depth > 0 else image + (1 - image) * (-depth) * mask[..., None]
    return np.clip(out, 0, 1).astype(np.float32), (mask > 0.1).astype(np.float32)


def brightness_change(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A region 10-30 % of the image across, 15-45 % darker or lighter, its edge soft (a stain, a burn, an
    uneven coat). (image, mask where the change exceeds a quarter of its peak)."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
    ry, rx = rng.uniform(0.05, 0.15, size=2) * min(h, w)
    blob = np.exp(-(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) ** 2)  # flat top, soft edge
    gain = 1 + rng.uniform(0.15, 0.45) * (1 if rng.random() < 0.5 else -1)
    out = image * (1 + (gain - 1) * blob[..., None])
    return np.clip(out, 0, 1).astype(np.float32), (blob > 0.25).astype(np.float32)


# -------------------------------------------------------------------- EfficientAD: images unlike the training set


def _rand(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def synthetic_images(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """n generated images, n x 3 x size x size in [0, 1], unlike any natural training set.

    Each is one of: multi-octave value noise (random low-resolution noise at 2..64 px,
    bilinearly upsampled, random weights per octave); oriented sinusoidal stripes (random
    frequency, angle and phase per channel); a colour field (a random linear gradient with
    2-8 random rectangles of random colours). Each is then mixed by a random 3x3 colour
    matrix, stretched to a random range inside [0, 1] and gets Gaussian pixel noise.
    """
    out = torch.empty(n, 3, size, size)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    for i in range(n):
        kind = int(torch.randint(3, (), generator=g))
        if kind == 0:
            img = torch.zeros(1, 3, size, size)
            for k in range(1, 7):
                res = min(2 ** k, size)
                octave = torch.rand(1, 3, res, res, generator=g)
                img += _rand(g) * F.interpolate(octave, size=(size, size), mode="bilinear", align_corners=False)
            img = img[0]
        elif kind == 1:
            f = torch.rand(3, generator=g) * 30 + 1
            ang = torch.rand(3, generator=g) * math.pi
            ph = torch.rand(3, generator=g) * 2 * math.pi
            img = torch.sin(2 * math.pi * f.view(3, 1, 1) * (xx * torch.cos(ang).view(3, 1, 1)
                                                           + yy * torch.sin(ang).view(3, 1, 1)) + ph.view(3, 1, 1))
        else:
            c0, c1 = torch.rand(3, 1, 1, generator=g), torch.rand(3, 1, 1, generator=g)
            ang = _rand(g, 0, 2 * math.pi)
            t = (xx * math.cos(ang) + yy * math.sin(ang)).clamp(0, 1)
            img = c0 + (c1 - c0) * t
            for _ in range(int(torch.randint(2, 9, (), generator=g))):
                y0, x0 = (int(v) for v in torch.randint(size, (2,), generator=g))
                h, w = (int(v) for v in torch.randint(max(2, size // 16), max(3, size // 2), (2,), generator=g))
                img[:, y0 : y0 + h, x0 : x0 + w] = torch.rand(3, 1, 1, generator=g)
        mix = torch.randn(3, 3, generator=g) + torch.eye(3) * _rand(g, 0, 2)
        img = torch.einsum("ij,jhw->ihw", mix, img)
        lo, hi = img.amin(), img.amax()
        a = _rand(g, 0.0, 0.4)
        b = _rand(g, 0.6, 1.0)
        img = a + (b - a) * (img - lo) / (hi - lo + 1e-6)
        img = img + torch.randn(img.shape, generator=g) * _rand(g, 0.0, 0.05)
        out[i] = img.clamp_(0, 1)
    return out


def _grey(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def jitter(x: torch.Tensor, g: torch.Generator, lo: float, hi: float, one: bool) -> torch.Tensor:
    """Brightness, contrast and saturation jitter per image (factors U(lo, hi)); one=True: one of
    the three at random (the paper's AE augmentation)."""
    out = []
    for im in x.split(1):
        kinds = [int(torch.randint(3, (), generator=g))] if one else [0, 1, 2]
        for k in kinds:
            f = _rand(g, lo, hi)
            if k == 0:
                im = im * f
            elif k == 1:
                im = (im - _grey(im).mean()) * f + _grey(im).mean()
            else:
                gr = _grey(im)
                im = (im - gr) * f + gr
        out.append(im.clamp(0, 1))
    return torch.cat(out)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random resized crop (scale 0.5-1), flips and colour jitter of a batch of images."""
    size = x.shape[-1]
    out = []
    for im in x.split(1):
        side = int(size * math.sqrt(_rand(g, 0.5, 1.0)))
        y0, x0 = (int(v) for v in torch.randint(size - side + 1, (2,), generator=g))
        im = F.interpolate(im[..., y0 : y0 + side, x0 : x0 + side], size=(size, size), mode="bilinear",
                           align_corners=False)
        if _rand(g) < 0.5:
            im = im.flip(-1)
        if _rand(g) < 0.5:
            im = im.flip(-2)
        out.append(im)
    return jitter(torch.cat(out), g, 0.7, 1.3, one=False)
