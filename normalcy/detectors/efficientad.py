"""EfficientAD (Batzner, Heckler, König, WACV 2024), slimmed for 2 CPU cores.

The method, as in the paper (section 3):

* a patch description network (PDN) *teacher* reproduces pretrained features;
* a *student* PDN with 2C outputs learns, on normal images only, to predict the
  teacher (first C channels) and the autoencoder (last C channels). Its
  student-teacher loss is the paper's hard-feature loss (only squared errors at
  or above their 0.999 quantile count) plus the penalty term: the mean squared
  student output on "pretraining" images, so the student does not learn to
  imitate the teacher off the normal domain;
* an *autoencoder* (AE) predicts the teacher output from a colour-augmented image
  through a 1x1 bottleneck (logical anomalies); loss L_AE = mean (T - A)^2, and the
  student's second half learns the AE's output, L_STAE = mean (A - S_AE)^2 (the AE
  output is detached there, so the AE learns from the teacher alone);
* maps: map_ST = mean over channels of (T - S_ST)^2, map_AE = mean over channels
  of (A - S_AE)^2, each normalised so that its q_a = 0.9 quantile on held-out
  normal images maps to 0 and its q_b = 0.995 quantile to 0.1; the combined map
  is 0.5 * norm_ST + 0.5 * norm_AE and the image score its maximum;
* teacher outputs are normalised per channel with their mean and std on the
  training images, as in the paper.

How this differs from the paper, and why:

* **Teacher.** The paper distils a PDN from WideResNet-101 features on ImageNet.
  We have neither offline, so the teacher is distilled from our own backbone's
  patch features (``self.extractor``, stride 8, e.g. 152 channels for
  EfficientNet-Lite0), projected on their top ``out_channels`` principal
  components (PCA of up to 64 training images' patch features) and standardised
  per component. The distillation images are, half and half: the training images
  (their first pass unchanged, then random resized crops with scale 0.5-1, random
  horizontal/vertical flips and colour jitter: brightness, contrast and
  saturation each x U(0.7, 1.3)), and synthetic images generated with torch from
  the seed (see ``synthetic_images``: multi-octave value noise, oriented
  sinusoidal stripes and colour fields with random rectangles, each colour-mixed by
  a random 3x3 matrix plus pixel noise). Targets are computed once per pool entry
  (``pool_size`` entries, filled during the first distillation steps) so later
  steps cost only the tiny teacher.
* **Penalty images.** The paper's penalty uses ImageNet images; we use freshly
  generated synthetic images (the same generator), which are unlike the normal
  training images.
* **PDN-tiny instead of PDN-S.** PDN-S (128/256/256/384 channels, 4x4 kernels)
  costs about 18 GMAC per 256 px image: a few images/s on 2 CPU cores, slower than
  our whole backbone (EfficientNet-Lite0, about 0.4 GMAC). Measured on 2 shared
  cores, even a literal slimming (conv-ReLU-pool-conv-ReLU-pool-conv-ReLU-conv,
  32/64/64/64 channels, stride 4) costs 1.1 GMAC and 20-30 ms per image, most of it
  memory traffic at full resolution. PDN-tiny keeps the layer pattern but makes
  the first conv stride 2 and pools once more, so its output has stride 8 (the
  stride of the backbone features it learns), 32x32 at 256 px:

      conv 4x4/2 3->c1, ReLU, avg-pool 2, conv 4x4 c1->c2 (pad 2), ReLU, avg-pool 2,
      conv 3x3 c2->c3, ReLU, conv 3x3 c3->C          (receptive field 54 px)

  With the defaults (c = 16/32/32, C = 32) the teacher costs 63 MMAC, the student
  (2C outputs) 72 MMAC. The paper's last conv is 4x4; ours is 3x3 (cheaper,
  centred).
* **Autoencoder.** The paper's: six stride-2 convs (32..64 channels) to a 1x1 latent
  of 64, eight upsample + 4x4 conv stages with dropout 0.2, and a 3x3 conv to 384
  channels. Ours: five 4x4 stride-2 convs (16/16/32/32/32), a conv with the
  remaining spatial size as kernel to a 1x1 latent of ``latent`` (32), then four
  bilinear upsample + 3x3 conv + ReLU + dropout 0.2 stages doubling up to the PDN
  grid, and a 3x3 conv to C: about 60 MMAC.
* **Optimisation.** The paper trains 70 000 steps of batch 1 with Adam at 1e-4.
  We train under a time budget (default 600 s in all: ``teacher_share`` of it for
  distillation, the rest for student + AE), with batches of ``train_batch`` images
  (plus ``penalty_batch`` penalty images) and Adam at ``lr`` (weight decay 1e-5),
  divided by 10 for the last 5 % of the steps or of the time, as the paper does.
* **Held-out images.** The paper computes the map quantiles on validation images;
  we hold out ``holdout`` (10 %, at least one) of the training images, never trained
  on, and use them for the quantiles and for the threshold. With a single training
  image it is used for both.

Ctrl-C: all phases run through ``normalcy.training.train``. An interrupt during
distillation keeps the teacher as trained so far and runs a short student phase
(at most 50 steps and 30 s; a second Ctrl-C stops that too, even before its first
step, leaving an untrained student); an interrupt during the student phase keeps
what was trained. Either way the model is then calibrated on the held-out images
and can be saved. Only an interrupt before the first distillation step aborts fit.

Scoring never runs the backbone (``uses_features = False``): the resized image goes
through the three small networks only.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import InputError
from ..features import Batch
from ..training import TrainLog, train
from .base import Detector, holdout_count

log = logging.getLogger("normalcy")

_MEAN, _STD = 0.45, 0.25  # fixed input normalisation of the small networks


def pdn_tiny(out_channels: int, channels: Sequence[int] = (16, 32, 32)) -> nn.Sequential:
    """PDN-tiny: the PDN layer pattern with few channels and stride-8 output (S/8 for S % 8 == 0)."""
    c1, c2, c3 = (int(c) for c in channels)
    return nn.Sequential(
        nn.Conv2d(3, c1, 4, stride=2, padding=1), nn.ReLU(inplace=True), nn.AvgPool2d(2, 2),
        nn.Conv2d(c1, c2, 4, padding=2), nn.ReLU(inplace=True), nn.AvgPool2d(2, 2),
        nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c3, out_channels, 3, padding=1),
    )


class AutoEncoder(nn.Module):
    """Image -> 1x1 latent -> out_channels x grid x grid (the paper's AE, slimmed)."""

    def __init__(self, input_size: int, out_channels: int, channels: Sequence[int] = (16, 32),
                 latent: int = 32) -> None:
        super().__init__()
        a, b = (int(c) for c in channels)
        last = max(1, input_size // 32)
        self.encoder = nn.Sequential(
            nn.Conv2d(3, a, 4, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(a, a, 4, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(a, b, 4, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(b, b, 4, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(b, b, 4, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(b, latent, last),
        )
        grid = input_size // 8
        self.sizes = [max(1, grid // 8), max(1, grid // 4), max(1, grid // 2), grid]
        self.decoder = nn.ModuleList(
            [nn.Conv2d(latent if i == 0 else b, b, 3, padding=1) for i in range(len(self.sizes))])
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Conv2d(b, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        for size, conv in zip(self.sizes, self.decoder):
            z = F.interpolate(z, size=(size, size), mode="bilinear", align_corners=False)
            z = self.dropout(F.relu(conv(z), inplace=True))
        return self.head(z)


def count_macs(net: nn.Module, input_size: int) -> int:
    """Multiply-accumulates of the convolutions for one input_size x input_size image."""
    total = 0

    def hook(mod: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
        total += out[0].numel() * k

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.inference_mode():
            net.eval()(torch.zeros(1, 3, input_size, input_size))
    finally:
        for h in handles:
            h.remove()
    return total


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


def _jitter(x: torch.Tensor, g: torch.Generator, lo: float, hi: float, one: bool) -> torch.Tensor:
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


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
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
    return _jitter(torch.cat(out), g, 0.7, 1.3, one=False)


class EfficientAD(Detector):
    """EfficientAD with a PDN-tiny teacher distilled from the backbone's patch features."""

    name = "efficientad"
    uses_pooled = False
    uses_features = False

    def __init__(
        self,
        *args: Any,
        steps: int = 3000,
        teacher_steps: int = 2000,
        time_budget: float | None = 600.0,
        teacher_share: float = 0.4,
        input_size: int = 256,
        channels: Sequence[int] = (16, 32, 32),
        out_channels: int = 32,
        ae_channels: Sequence[int] = (16, 32),
        latent: int = 32,
        train_batch: int = 8,
        penalty_batch: int = 2,
        lr: float = 1e-3,
        pool_size: int = 1000,
        holdout: float = 0.1,
        q_a: float = 0.9,
        q_b: float = 0.995,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if int(input_size) < 32 or int(input_size) % 32:
            raise InputError(f"input_size must be a multiple of 32 (at least 32), got {input_size}")
        if int(steps) < 1 or int(teacher_steps) < 1:
            raise InputError("steps and teacher_steps must be at least 1")
        if time_budget is not None and time_budget <= 0:
            raise InputError(f"time_budget must be positive, got {time_budget}")
        self.steps = int(steps)
        self.teacher_steps = int(teacher_steps)
        self.time_budget = None if time_budget is None else float(time_budget)
        self.teacher_share = float(teacher_share)
        self.input_size = int(input_size)
        self.channels = [int(c) for c in channels]
        self.out_channels = int(out_channels)
        self.ae_channels = [int(c) for c in ae_channels]
        self.latent = int(latent)
        self.train_batch = int(train_batch)
        self.penalty_batch = int(penalty_batch)
        self.lr = float(lr)
        self.pool_size = int(pool_size)
        self.holdout = float(holdout)
        self.q_a = float(q_a)
        self.q_b = float(q_b)
        self._build()

    def params(self) -> dict[str, Any]:
        return {
            "steps": self.steps, "teacher_steps": self.teacher_steps, "time_budget": self.time_budget,
            "teacher_share": self.teacher_share, "input_size": self.input_size, "channels": self.channels,
            "out_channels": self.out_channels, "ae_channels": self.ae_channels, "latent": self.latent,
            "train_batch": self.train_batch, "penalty_batch": self.penalty_batch, "lr": self.lr,
            "pool_size": self.pool_size, "holdout": self.holdout, "q_a": self.q_a, "q_b": self.q_b,
        }

    def _build(self) -> None:
        torch.manual_seed(self.seed)
        c = self.out_channels
        self.teacher = pdn_tiny(c, self.channels)
        self.student = pdn_tiny(2 * c, self.channels)
        self.ae = AutoEncoder(self.input_size, c, self.ae_channels, self.latent)
        self.t_mean_ = torch.zeros(1, c, 1, 1)
        self.t_std_ = torch.ones(1, c, 1, 1)
        self.quantiles_ = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64)

    # -- helpers -------------------------------------------------------------------------
    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return x

    @staticmethod
    def _norm(x: torch.Tensor) -> torch.Tensor:
        return (x - _MEAN) / _STD

    def _raw_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: resized images in [0, 1] -> (map_ST, map_AE), B x h x w."""
        c = self.out_channels
        x = self._norm(x).contiguous(memory_format=torch.channels_last)
        t = (self.teacher(x) - self.t_mean_) / self.t_std_
        s = self.student(x)
        a = self.ae(x)
        return (t - s[:, :c]).pow_(2).mean(1), (a - s[:, c:]).pow_(2).mean(1)

    def _combine(self, st: torch.Tensor, ae: torch.Tensor) -> torch.Tensor:
        qa_st, qb_st, qa_ae, qb_ae = (float(v) for v in self.quantiles_)
        n_st = 0.1 * (st - qa_st) / max(qb_st - qa_st, 1e-12)
        n_ae = 0.1 * (ae - qa_ae) / max(qb_ae - qa_ae, 1e-12)
        return 0.5 * n_st + 0.5 * n_ae

    def _eval_mode(self) -> None:
        for net in (self.teacher, self.student, self.ae):
            net.eval()
            for p in net.parameters():
                p.requires_grad_(False)
            net.to(memory_format=torch.channels_last)

    # -- fit --------------------------------------------------------------------------------

    def _fit(self, batches: Iterator[Batch]) -> None:
        chunks = []
        for batch in batches:
            assert batch.inputs is not None
            chunks.append(self._resize(batch.inputs))
        images = torch.cat(chunks)
        del chunks
        n = images.shape[0]
        g = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(n, generator=g)
        n_hold = holdout_count(n, self.holdout)
        held = images[order[:n_hold]] if n_hold else images
        train_x = (images[order[n_hold:]] * 255).round_().to(torch.uint8)  # compact: many images fit
        del images
        self._build()
        for net in (self.teacher, self.student, self.ae):
            net.train()
            for p in net.parameters():
                p.requires_grad_(True)

        start = time.perf_counter()
        budget = self.time_budget
        t_budget = None if budget is None else budget * self.teacher_share
        self.teacher_log_ = self._distil(train_x, g, t_budget)
        self._teacher_stats(train_x)
        if self.teacher_log_.interrupted:
            log.warning("distillation interrupted: a short student phase follows (Ctrl-C again to skip it)")
            s_steps, s_budget = min(self.steps, 50), 30.0
        else:
            s_steps = self.steps
            s_budget = None if budget is None else max(1.0, budget - (time.perf_counter() - start))
        try:
            log_ = self._train_student(train_x, g, s_steps, s_budget)
        except KeyboardInterrupt:
            if not self.teacher_log_.interrupted:
                raise
            log.warning("student phase skipped: the student is untrained")
            log_ = TrainLog(steps=0, seconds=0.0, losses=[], interrupted=True, stopped_by="interrupt")
        if self.teacher_log_.interrupted:
            log_.interrupted, log_.stopped_by = True, "interrupt"
        self.train_log_ = log_
        self._eval_mode()
        self._calibrate(held)

    def _projection(self, train_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """PCA of training patch features: (mean D, D x C components, C std of the projections)."""
        feats = []
        for i in range(0, min(64, len(train_x)), self.batch_size):
            x = train_x[i : i + self.batch_size].float() / 255
            p = self.extractor(x, pooled=False).patches.float()
            feats.append(p.permute(0, 2, 3, 1).reshape(-1, p.shape[1]))
        f = torch.cat(feats).double()
        mean = f.mean(0)
        cov = (f - mean).T @ (f - mean) / max(1, f.shape[0] - 1)
        vals, vecs = torch.linalg.eigh(cov)
        k = min(self.out_channels, f.shape[1])
        comp = vecs[:, -k:].flip(1)
        if k < self.out_channels:  # fewer feature dims than teacher channels: repeat components
            comp = comp.repeat(1, math.ceil(self.out_channels / k))[:, : self.out_channels]
        # Fix the sign of each component (eigh's is arbitrary) so results are reproducible.
        comp = comp * torch.sign(comp[comp.abs().argmax(0), torch.arange(comp.shape[1])])
        std = ((f - mean) @ comp).std(0).clamp_min(1e-6)
        return mean.float(), comp.float(), std.float()

    def _targets(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        with torch.inference_mode():
            p = self.extractor(x, pooled=False).patches.float()
            t = torch.einsum("bdhw,dc->bchw", p - self._pmean.view(1, -1, 1, 1), self._pcomp)
            t = t / self._pstd.view(1, -1, 1, 1)
            if t.shape[-2:] != grid:
                t = F.interpolate(t, size=grid, mode="bilinear", align_corners=False)
        return t.clone()

    def _distil(self, train_x: torch.Tensor, g: torch.Generator, budget: float | None) -> TrainLog:
        self._pmean, self._pcomp, self._pstd = self._projection(train_x)
        n = len(train_x)
        s = self.input_size
        grid = (s // 8, s // 8)
        bs = max(2, self.train_batch)
        cap = max(bs, self.pool_size)
        pool_img = torch.empty(cap, 3, s, s, dtype=torch.uint8)
        pool_tgt = torch.empty(cap, self.out_channels, *grid, dtype=torch.float16)
        filled = 0
        perm = torch.randperm(n, generator=g)
        opt = torch.optim.Adam(self.teacher.parameters(), lr=self.lr, weight_decay=1e-5)
        t0 = time.perf_counter()

        def step(i: int) -> float:
            nonlocal filled
            _decay(opt, self.lr, i, self.teacher_steps, t0, budget)
            if filled < cap:  # grow the pool: new images, their targets from the backbone
                k = min(bs, cap - filled)
                idx = torch.arange(filled, filled + k)
                parts = []
                for j in idx.tolist():
                    if j % 2 == 0:
                        m = j // 2
                        im = train_x[perm[m % n]].unsqueeze(0).float() / 255
                        parts.append(im if m < n else _augment(im, g))
                    else:
                        parts.append(synthetic_images(1, s, g))
                x = torch.cat(parts)
                t = self._targets(x, grid)
                pool_img[filled : filled + k] = (x * 255).round_().to(torch.uint8)
                pool_tgt[filled : filled + k] = t.half()
                filled += k
                if k < bs:  # top the batch up from what the pool holds
                    extra = torch.randint(filled, (bs - k,), generator=g)
                    x = torch.cat([x, pool_img[extra].float() / 255])
                    t = torch.cat([t, pool_tgt[extra].float()])
            else:
                pick = torch.randint(filled, (bs,), generator=g)
                x, t = pool_img[pick].float() / 255, pool_tgt[pick].float()
            loss = F.mse_loss(self.teacher(self._norm(x)), t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return float(loss.detach())

        return train(step, self.teacher_steps, budget, self._progress, "efficientad: distil teacher")

    @torch.no_grad()
    def _teacher_stats(self, train_x: torch.Tensor) -> None:
        self.teacher.eval()
        outs = [self.teacher(self._norm(train_x[i : i + 16].float() / 255)) for i in range(0, len(train_x), 16)]
        t = torch.cat(outs).double()
        self.t_mean_ = t.mean((0, 2, 3)).view(1, -1, 1, 1).float()
        self.t_std_ = t.std((0, 2, 3)).clamp_min(1e-6).view(1, -1, 1, 1).float()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def _train_student(self, train_x: torch.Tensor, g: torch.Generator, steps: int,
                       budget: float | None) -> TrainLog:
        c = self.out_channels
        n = len(train_x)
        bs = self.train_batch
        params = list(self.student.parameters()) + list(self.ae.parameters())
        opt = torch.optim.Adam(params, lr=self.lr, weight_decay=1e-5)
        self.student.train()
        self.ae.train()
        t0 = time.perf_counter()

        def teacher(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return (self.teacher(self._norm(x)) - self.t_mean_) / self.t_std_

        def step(i: int) -> float:
            _decay(opt, self.lr, i, steps, t0, budget)
            idx = torch.randint(n, (min(bs, max(1, n)),), generator=g)
            x = train_x[idx].float() / 255
            b = len(x)
            xa = _jitter(x, g, 0.8, 1.2, one=True)
            p = synthetic_images(self.penalty_batch, self.input_size, g)
            # One forward per network (fewer, larger convolutions): images, augmented images, penalty images.
            t, ta = teacher(torch.cat([x, xa])).split(b)
            s_all = self.student(self._norm(torch.cat([x, xa, p])))
            d_st = (t - s_all[:b, :c]).pow(2)
            d_hard = torch.quantile(d_st.detach().flatten(), 0.999)
            l_hard = d_st[d_st >= d_hard].mean()
            l_pen = s_all[2 * b :, :c].pow(2).mean() if len(p) else x.new_zeros(())
            a = self.ae(self._norm(xa))
            l_ae = (ta - a).pow(2).mean()
            l_stae = (a.detach() - s_all[b : 2 * b, c:]).pow(2).mean()
            loss = l_hard + l_pen + l_ae + l_stae
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return float(loss.detach())

        return train(step, steps, budget, self._progress, "efficientad: student + autoencoder")

    @torch.inference_mode()
    def _calibrate(self, held: torch.Tensor) -> None:
        sts, aes = [], []
        for i in range(0, len(held), self.batch_size):
            st, ae = self._raw_maps(held[i : i + self.batch_size])
            sts.append(st)
            aes.append(ae)
        st, ae = torch.cat(sts), torch.cat(aes)
        qs = np.quantile(st.double().numpy(), [self.q_a, self.q_b])
        qe = np.quantile(ae.double().numpy(), [self.q_a, self.q_b])
        self.quantiles_ = torch.tensor([qs[0], qs[1], qe[0], qe[1]], dtype=torch.float64)
        m = self._combine(st, ae)
        self._calib = (m.amax((1, 2)).double().numpy(), m.flatten().double().numpy())

    def _calibration_scores(self) -> tuple[np.ndarray, np.ndarray]:
        scores, values = self._calib
        del self._calib
        return scores, values

    # -- score ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def _score_batch(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        assert batch.inputs is not None
        st, ae = self._raw_maps(self._resize(batch.inputs))
        m = self._combine(st, ae).float()
        return m.amax((1, 2)).double().numpy(), m.numpy()

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for prefix, net in (("teacher", self.teacher), ("student", self.student), ("ae", self.ae)):
            for k, v in net.state_dict().items():
                state[f"{prefix}.{k}"] = v.contiguous()
        state["teacher_mean"] = self.t_mean_
        state["teacher_std"] = self.t_std_
        state["quantiles"] = self.quantiles_
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._build()
        for prefix, net in (("teacher", self.teacher), ("student", self.student), ("ae", self.ae)):
            sub = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
            net.load_state_dict(sub)
        self.t_mean_ = state["teacher_mean"].float()
        self.t_std_ = state["teacher_std"].float()
        self.quantiles_ = state["quantiles"].double()
        self._eval_mode()


def _decay(opt: torch.optim.Optimizer, lr: float, i: int, steps: int, t0: float, budget: float | None) -> None:
    """The paper's schedule: lr / 10 for the last 5 % (of the steps, or of the time budget)."""
    late = i >= 0.95 * steps or (budget is not None and time.perf_counter() - t0 >= 0.95 * budget)
    for group in opt.param_groups:
        group["lr"] = lr * 0.1 if late else lr
