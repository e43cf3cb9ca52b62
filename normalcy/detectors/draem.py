"""DRAEM (Zavrtanik, Kristan, Skočaj, ICCV 2021): a discriminatively trained reconstruction embedding.

No pretrained backbone: two networks are trained from scratch on the normal images.

* Synthetic anomalies. A binary mask comes from 2-D Perlin noise (random scales
  2^0..2^6 per axis, randomly rotated, thresholded at 0.5); inside it a texture is
  blended into the normal image with opacity beta ~ U(0.1, 1.0):
  ``I_a = I (1 - M) + (1 - beta) I M + beta A M``. Half of the samples get no anomaly.
* Reconstructive sub-network: the paper's encoder-decoder (no skips, 5 levels) learns
  to give back the anomaly-free image from the augmented one, with an L2 + SSIM loss.
* Discriminative sub-network: the paper's U-Net (6 levels, skip connections) gets the
  augmented image and its reconstruction (6 channels) and predicts the anomaly mask
  (2-channel logits), trained with a focal loss (gamma 2).
* Inference: the map is the softmax probability of the anomalous channel; the image
  score is the maximum of that map after a mean filter (21x21 at 256 px in the paper,
  scaled to ``input_size``: 11x11 at 128 px).

Deviations from the paper, for an offline CPU tool:

* Size. The paper trains at 256 px with widths 128 (reconstructive) and 64
  (discriminative) for 700 epochs on a GPU. Here the defaults are ``input_size=128``
  and ``base_width=16``: the reconstructive network has widths 16-32-64-128-128, the
  discriminative one ``base_width // 2`` = 8-16-32-64-64-64 (the paper's 2:1 ratio),
  1.1 M + 0.6 M parameters. That is ~250x less compute per image than the paper's
  networks: a step of 8 images takes ~1.2 s on 2 (shared) cores, so the default budget of
  10 minutes gives ~500 steps. ``base_width=32`` takes ~2.5x longer per step; 256 px with
  the paper's widths would get only a handful of steps in that time.
* Anomaly textures. The paper takes them from the DTD texture data set, which cannot be
  downloaded here. Half of the textures are other training images (randomly rotated,
  flipped, shifted and colour-jittered), half are generated: coloured Perlin noise,
  colour gradients, blurred random noise and stripes. Either then gets three of the
  paper's random colour augmentations (gamma, gain, contrast, invert, solarize,
  posterize, channel shuffle).
* Learning rate 1e-3 rather than 1e-4 (far fewer steps), divided by 5 at 80 % and again
  at 90 % of the run (the paper's schedule), where the run's progress is the larger of
  the fraction of steps and the fraction of the time budget spent.
* Calibration. ~10 % of the training images (at least one) are held out before training;
  their scores set the threshold. With a single image, it is both trained on and held out.

Reproducibility: the same seed gives identical scores when training stops after a fixed
number of steps (``time_budget=None``); with a time budget the number of steps depends on
the machine's speed.
"""

from __future__ import annotations

import math
import time
from typing import Any, Iterator

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import InputError
from ..features import Batch
from ..training import TrainLog, train
from .base import Detector, holdout_count

# -------------------------------------------------------------------- synthetic anomalies


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


# -------------------------------------------------------------------- networks


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


def _block2(cin: int, cmid: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cmid, 3, padding=1), nn.BatchNorm2d(cmid), nn.ReLU(inplace=True),
        nn.Conv2d(cmid, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class Reconstructive(nn.Module):
    """The paper's reconstructive encoder-decoder (no skip connections), widths w, 2w, 4w, 8w, 8w."""

    def __init__(self, width: int, channels: int = 3) -> None:
        super().__init__()
        w = width
        self.enc = nn.ModuleList([_block(channels, w), _block(w, 2 * w), _block(2 * w, 4 * w),
                                  _block(4 * w, 8 * w), _block(8 * w, 8 * w)])
        self.up = nn.ModuleList([_up(8 * w, 8 * w), _up(4 * w, 4 * w), _up(2 * w, 2 * w), _up(w, w)])
        self.dec = nn.ModuleList([_block2(8 * w, 8 * w, 4 * w), _block2(4 * w, 4 * w, 2 * w),
                                  _block2(2 * w, 2 * w, w), _block2(w, w, w)])
        self.out = nn.Conv2d(w, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, blk in enumerate(self.enc):
            x = blk(F.max_pool2d(x, 2) if i else x)
        for up, dec in zip(self.up, self.dec):
            x = dec(up(x))
        return self.out(x)


class Discriminative(nn.Module):
    """The paper's discriminative U-Net, widths w, 2w, 4w, 8w, 8w, 8w with skip connections."""

    def __init__(self, width: int, cin: int = 6, cout: int = 2) -> None:
        super().__init__()
        w = width
        widths = [w, 2 * w, 4 * w, 8 * w, 8 * w, 8 * w]
        self.enc = nn.ModuleList([_block(c_in, c) for c_in, c in zip([cin] + widths[:-1], widths)])
        ups, decs = [], []
        prev = widths[-1]
        for skip in reversed(widths[:-1]):  # 8w, 8w, 4w, 2w, w
            ups.append(_up(prev, skip))
            decs.append(_block2(2 * skip, skip, skip))
            prev = skip
        self.up = nn.ModuleList(ups)
        self.dec = nn.ModuleList(decs)
        self.out = nn.Conv2d(w, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, blk in enumerate(self.enc):
            x = blk(F.max_pool2d(x, 2) if i else x)
            skips.append(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips[:-1])):
            x = dec(torch.cat([up(x), skip], 1))
        return self.out(x)


# -------------------------------------------------------------------- losses


def _gauss_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size, dtype=torch.float32) - size // 2) ** 2) / (2 * sigma * sigma))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of two Bx C x H x W images in [0, 1] (Gaussian 11x11 window, sigma 1.5)."""
    c = a.shape[1]
    k = _gauss_window(window, sigma).to(a)[None, None].expand(c, 1, window, window)
    pad = window // 2

    def filt(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), k, groups=c)

    mu_a, mu_b = filt(a), filt(b)
    saa = filt(a * a) - mu_a * mu_a
    sbb = filt(b * b) - mu_b * mu_b
    sab = filt(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a * mu_a + mu_b * mu_b + c1) * (saa + sbb + c2))
    return s.mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss of B x 2 x H x W logits against a B x H x W {0, 1} mask."""
    logp = F.log_softmax(logits, 1).gather(1, target.long()[:, None])[:, 0]
    return (-(1 - logp.exp()) ** gamma * logp).mean()


# -------------------------------------------------------------------- the detector


class DRAEM(Detector):
    """DRAEM: a reconstructive and a discriminative network trained on synthetic anomalies.

    Works on the images themselves (``batch.inputs``), resized to ``input_size`` (default
    128 px, a multiple of 32; the paper uses 256) so that a few hundred training steps fit in
    the default 10-minute budget on 2 CPU cores. See the module docstring for the design.
    """

    name = "draem"
    uses_features = False

    def __init__(
        self,
        *args: Any,
        steps: int = 5000,
        time_budget: float | None = 600.0,
        input_size: int = 128,
        base_width: int = 16,
        lr: float = 1e-3,
        train_batch_size: int = 8,
        anomaly_prob: float = 0.5,
        holdout: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if int(steps) < 1:
            raise InputError(f"steps must be at least 1, got {steps}")
        if time_budget is not None and not float(time_budget) > 0:
            raise InputError(f"time_budget must be positive seconds, got {time_budget}")
        if int(input_size) < 32 or int(input_size) % 32:
            raise InputError(f"input_size must be a multiple of 32 (the U-Net pools 5 times), got {input_size}")
        if int(base_width) < 2:
            raise InputError(f"base_width must be at least 2, got {base_width}")
        if not 0.0 <= float(holdout) < 1.0:
            raise InputError(f"holdout must be in [0, 1), got {holdout}")
        self.steps = int(steps)
        self.time_budget = None if time_budget is None else float(time_budget)
        self.input_size = int(input_size)
        self.base_width = int(base_width)
        self.lr = float(lr)
        self.train_batch_size = int(train_batch_size)
        self.anomaly_prob = float(anomaly_prob)
        self.holdout = float(holdout)
        self.rec_: Reconstructive | None = None
        self.disc_: Discriminative | None = None

    def params(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "time_budget": self.time_budget,
            "input_size": self.input_size,
            "base_width": self.base_width,
            "lr": self.lr,
            "train_batch_size": self.train_batch_size,
            "anomaly_prob": self.anomaly_prob,
            "holdout": self.holdout,
        }

    @property
    def filter_size(self) -> int:
        """The mean filter for image scores: the paper's 21 px at 256 px, scaled, odd."""
        return max(1, int(21 * self.input_size / 256)) | 1

    # -- networks --------------------------------------------------------------------------
    def _build(self) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.rec_ = Reconstructive(self.base_width)
            self.disc_ = Discriminative(max(1, self.base_width // 2))

    def _prepare(self, inputs: torch.Tensor) -> torch.Tensor:
        """Bx3xSxS float in [0, 1] -> Bx3xinput_size^2 uint8."""
        x = inputs.float()
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=True)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8)

    # -- training ------------------------------------------------------------------------

    def _fit(self, batches: Iterator[Batch]) -> None:
        chunks = [self._prepare(b.inputs) for b in batches if b.inputs is not None]
        images = torch.cat(chunks)
        n = len(images)
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(n)
        n_hold = holdout_count(n, self.holdout)
        hold, keep = order[:n_hold], order[n_hold:]
        self._calib = images[np.sort(hold)] if n_hold else images
        self._train = images[np.sort(keep)]
        self._rng = rng
        self._build()
        assert self.rec_ is not None and self.disc_ is not None
        self.rec_.train()
        self.disc_.train()
        params = list(self.rec_.parameters()) + list(self.disc_.parameters())
        self._opt = torch.optim.Adam(params, lr=self.lr)
        self._start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.train_log_: TrainLog = train(self._train_step, self.steps, self.time_budget,
                                              progress=self._progress, description=f"fit {self.name}")
        del self._opt, self._train, self._rng
        self.rec_.eval()
        self.disc_.eval()

    def _sample(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A training batch: (normal images, augmented images, masks)."""
        rng = self._rng
        idx = rng.integers(len(self._train), size=self.train_batch_size)
        normal = self._train[idx].permute(0, 2, 3, 1).numpy().astype(np.float32) / 255.0
        aug, masks = zip(*(synthesize(im, self._train, rng, self.anomaly_prob) for im in normal))
        def t(a: Any) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(np.stack(a)))
        return (t(normal).permute(0, 3, 1, 2).contiguous(), t(aug).permute(0, 3, 1, 2).contiguous(), t(masks))

    def _lr_at(self, i: int) -> float:
        frac = i / self.steps
        if self.time_budget is not None:
            frac = max(frac, (time.perf_counter() - self._start) / self.time_budget)
        return self.lr * (0.2 if frac >= 0.8 else 1.0) * (0.2 if frac >= 0.9 else 1.0)

    def _train_step(self, i: int) -> float:
        assert self.rec_ is not None and self.disc_ is not None
        normal, aug, mask = self._sample()
        for g in self._opt.param_groups:
            g["lr"] = self._lr_at(i)
        rec = self.rec_(aug)
        logits = self.disc_(torch.cat([aug, rec], 1))
        loss = F.mse_loss(rec, normal) + (1 - ssim(rec, normal)) + focal_loss(logits, mask)
        self._opt.zero_grad(set_to_none=True)
        loss.backward()
        self._opt.step()
        return float(loss.detach())

    # -- scoring ---------------------------------------------------------------------------
    def _score_images(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """uint8 Bx3xSxS at input_size -> (image scores B, maps B x S x S)."""
        if self.rec_ is None or self.disc_ is None:
            raise RuntimeError("DRAEM networks are missing: fit() or load() first")
        self.rec_.eval()
        self.disc_.eval()
        with torch.inference_mode():
            xf = x.float() / 255.0
            rec = self.rec_(xf)
            prob = torch.softmax(self.disc_(torch.cat([xf, rec], 1)), 1)[:, 1:]
            k = self.filter_size
            smooth = F.avg_pool2d(prob, k, stride=1, padding=k // 2, count_include_pad=False)
            scores = smooth.amax(dim=(1, 2, 3))
        return scores.double().numpy(), prob[:, 0].numpy().astype(np.float32)

    def _score_batch(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        assert batch.inputs is not None
        return self._score_images(self._prepare(batch.inputs))

    def _calibration_scores(self) -> tuple[np.ndarray, np.ndarray]:
        calib = self._calib
        del self._calib
        scores, maps = [], []
        for i in range(0, len(calib), self.batch_size):
            s, m = self._score_images(calib[i : i + self.batch_size])
            scores.append(s)
            maps.append(m.ravel())
        return np.concatenate(scores), np.concatenate(maps)

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.rec_ is None or self.disc_ is None:
            raise RuntimeError("DRAEM networks are missing: fit() or load() first")
        out = {f"rec.{k}": v for k, v in self.rec_.state_dict().items()}
        out.update({f"disc.{k}": v for k, v in self.disc_.state_dict().items()})
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._build()
        assert self.rec_ is not None and self.disc_ is not None
        rec = {k[4:]: v for k, v in state.items() if k.startswith("rec.")}
        disc = {k[5:]: v for k, v in state.items() if k.startswith("disc.")}
        self.rec_.load_state_dict(rec, strict=True)
        self.disc_.load_state_dict(disc, strict=True)
        self.rec_.eval()
        self.disc_.eval()
