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
  the base class holds out ``holdout`` (10 %, at least one) of the training images,
  never trained on, and we use them for the quantiles and for the threshold.

Ctrl-C: all phases run through ``normalcy.detectors.training.train``. An interrupt during
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
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from normalcy.detectors.base import Detector, HyperParams, InputSize, LearningRate, Seconds, Steps, Width
from normalcy.detectors.modelfile import BatchSize
from normalcy.detectors.networks import AutoEncoder, pdn_tiny
from normalcy.detectors.training import Trained, TrainLog, step_decay, train
from normalcy.errors import option
from normalcy.images.features import Batch, Features
from normalcy.images.synthetic import augment, jitter, synthetic_images

log = logging.getLogger("normalcy")

_MEAN, _STD = 0.45, 0.25  # fixed input normalisation of the small networks


class EfficientAD(Trained, Detector):
    """EfficientAD with a PDN-tiny teacher distilled from the backbone's patch features."""

    name = "efficientad"
    experimental = ("its teacher is distilled from EfficientNet-Lite0 and its student trains at most a few "
                    "thousand steps on a CPU (the paper: 70,000); it trails gaussian on real defects")
    uses_pooled = False
    uses_features = False

    class Params(HyperParams):
        steps: Steps = 3000
        teacher_steps: Steps = 2000
        time_budget: Optional[Seconds] = Field(600.0, description="seconds for both phases; None: steps alone")
        teacher_share: float = Field(0.4, gt=0, lt=1)
        input_size: InputSize = 256
        channels: tuple[Width, Width, Width] = (16, 32, 32)
        out_channels: Width = 32
        ae_channels: tuple[Width, Width] = (16, 32)
        latent: Width = 32
        train_batch: BatchSize = 8
        penalty_batch: int = Field(2, ge=0, le=1024)
        lr: LearningRate = 1e-3
        pool_size: int = Field(1000, ge=1, le=1_000_000)
        holdout: float = Field(0.1, gt=0, lt=1, description="fraction of training images kept to calibrate on")
        q_a: float = Field(0.9, gt=0, lt=1)
        q_b: float = Field(0.995, gt=0, lt=1)

        @field_validator("channels", "ae_channels")
        @classmethod
        def _positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
            if min(v) < 1:
                raise ValueError("channel counts must be at least 1")
            return v

    teacher_: nn.Sequential
    student_: nn.Sequential
    ae_: AutoEncoder
    t_mean_: torch.Tensor  # teacher output mean and std per channel, on the training images
    t_std_: torch.Tensor
    quantiles_: torch.Tensor  # q_a and q_b quantiles of map_ST and map_AE on held-out images

    def _build(self) -> None:
        c = self.out_channels
        self.teacher_ = pdn_tiny(c, self.channels)
        self.student_ = pdn_tiny(2 * c, self.channels)
        self.ae_ = AutoEncoder(self.input_size, c, self.ae_channels, self.latent)
        for net in (self.teacher_, self.student_, self.ae_):
            net.to(memory_format=torch.channels_last)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """As the base's, and the teacher's statistics one per channel: a single number (or a row) broadcast over
        every channel scored without a word; a standard deviation <= 0 turned the teacher's features around."""
        super().load_state_dict(state)
        c = self.out_channels
        for name, t in (("t_mean", self.t_mean_), ("t_std", self.t_std_)):
            if tuple(t.shape) != (1, c, 1, 1):
                raise ValueError(f"tensor '{name}' has shape {tuple(t.shape)}, expected (1, {c}, 1, 1)")
        if not (self.t_std_ > 0).all():
            raise ValueError("tensor 't_std' has a standard deviation <= 0")

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
        t = (self.teacher_(x) - self.t_mean_) / self.t_std_
        s = self.student_(x)
        a = self.ae_(x)
        return (t - s[:, :c]).pow_(2).mean(1), (a - s[:, c:]).pow_(2).mean(1)

    def _eval_mode(self) -> None:
        for net in (self.teacher_, self.student_, self.ae_):
            net.eval()
            for p in net.parameters():
                p.requires_grad_(False)
            net.to(memory_format=torch.channels_last)

    # -- fit --------------------------------------------------------------------------------

    def _fit(self, batches: Iterator[Batch], held: Sequence[Batch], progress: bool) -> None:
        # uint8 keeps many training images in memory
        train_x = torch.cat([(self._resize(b.inputs) * 255).round_().to(torch.uint8) for b in batches])
        g = torch.Generator().manual_seed(self.seed)
        self._build()
        for net in (self.teacher_, self.student_, self.ae_):
            net.train()
            for p in net.parameters():
                p.requires_grad_(True)

        start = time.perf_counter()
        budget = self.time_budget
        t_budget = None if budget is None else budget * self.teacher_share
        # `--steps 20` fitted for 4 minutes without a word: the steps are the student's, the teacher's come first
        log.info("efficientad: its teacher distils first, for up to %d steps (teacher_steps)%s; then the student "
                 "trains for %d steps (%s)%s", self.teacher_steps,
                 "" if t_budget is None else f" or {t_budget:.0f} s ({self.teacher_share:g} of the time budget)",
                 self.steps, option("steps"), "" if budget is None else " or the time left")
        self.teacher_log_ = self._distil(train_x, g, t_budget, progress)
        self._teacher_stats(train_x)
        if self.teacher_log_.interrupted:
            log.warning("distillation interrupted: a short student phase follows (Ctrl-C again to skip it)")
            s_steps, s_budget = min(self.steps, 50), 30.0
        else:
            s_steps = self.steps
            s_budget = None if budget is None else max(1.0, budget - (time.perf_counter() - start))
        try:
            log_ = self._train_student(train_x, g, s_steps, s_budget, progress)
        except KeyboardInterrupt:
            if not self.teacher_log_.interrupted:
                raise
            log.warning("student phase skipped: the student is untrained")
            log_ = TrainLog(steps=0, seconds=0.0, losses=[], interrupted=True, stopped_by="interrupt")
        if self.teacher_log_.interrupted:
            log_.interrupted, log_.stopped_by = True, "interrupt"
        self.train_log_ = log_
        self._eval_mode()
        if not held:  # no held-out image was readable: normalise on training images (the base warns)
            held = [Batch(paths=[], images=[], features=None, inputs=train_x[:64].float() / 255)]
        self._normalisation(held)

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

    def _distil(self, train_x: torch.Tensor, g: torch.Generator, budget: float | None, progress: bool) -> TrainLog:
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
        opt = torch.optim.Adam(self.teacher_.parameters(), lr=self.lr, weight_decay=1e-5)

        def step(i: int) -> float:
            nonlocal filled
            if filled < cap:  # grow the pool: new images, their targets from the backbone
                k = min(bs, cap - filled)
                idx = torch.arange(filled, filled + k)
                parts = []
                for j in idx.tolist():
                    if j % 2 == 0:
                        m = j // 2
                        im = train_x[perm[m % n]].unsqueeze(0).float() / 255
                        parts.append(im if m < n else augment(im, g))
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
            loss = F.mse_loss(self.teacher_(self._norm(x)), t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return float(loss.detach())

        return train(step, self.teacher_steps, budget, progress, "efficientad: distil teacher",
                     schedule=step_decay(opt, self.lr, [(0.95, 0.1)]))  # the paper: lr / 10 for the last 5 %

    @torch.no_grad()
    def _teacher_stats(self, train_x: torch.Tensor) -> None:
        self.teacher_.eval()
        outs = [self.teacher_(self._norm(train_x[i : i + 16].float() / 255)) for i in range(0, len(train_x), 16)]
        t = torch.cat(outs).double()
        self.t_mean_ = t.mean((0, 2, 3)).view(1, -1, 1, 1).float()
        self.t_std_ = t.std((0, 2, 3)).clamp_min(1e-6).view(1, -1, 1, 1).float()
        for p in self.teacher_.parameters():
            p.requires_grad_(False)

    def _train_student(self, train_x: torch.Tensor, g: torch.Generator, steps: int,
                       budget: float | None, progress: bool) -> TrainLog:
        c = self.out_channels
        n = len(train_x)
        bs = self.train_batch
        params = list(self.student_.parameters()) + list(self.ae_.parameters())
        opt = torch.optim.Adam(params, lr=self.lr, weight_decay=1e-5)
        self.student_.train()
        self.ae_.train()

        def teacher(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return (self.teacher_(self._norm(x)) - self.t_mean_) / self.t_std_

        def step(i: int) -> float:
            idx = torch.randint(n, (min(bs, max(1, n)),), generator=g)
            x = train_x[idx].float() / 255
            b = len(x)
            xa = jitter(x, g, 0.8, 1.2, one=True)
            p = synthetic_images(self.penalty_batch, self.input_size, g)
            # One forward per network (fewer, larger convolutions): images, augmented images, penalty images.
            t, ta = teacher(torch.cat([x, xa])).split(b)
            s_all = self.student_(self._norm(torch.cat([x, xa, p])))
            d_st = (t - s_all[:b, :c]).pow(2)
            d_hard = torch.quantile(d_st.detach().flatten(), 0.999)
            l_hard = d_st[d_st >= d_hard].mean()
            l_pen = s_all[2 * b :, :c].pow(2).mean() if len(p) else x.new_zeros(())
            a = self.ae_(self._norm(xa))
            l_ae = (ta - a).pow(2).mean()
            l_stae = (a.detach() - s_all[b : 2 * b, c:]).pow(2).mean()
            loss = l_hard + l_pen + l_ae + l_stae
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return float(loss.detach())

        return train(step, steps, budget, progress, "efficientad: student + autoencoder",
                     schedule=step_decay(opt, self.lr, [(0.95, 0.1)]))

    @torch.inference_mode()
    def _normalisation(self, held: Sequence[Batch]) -> None:
        """The paper's map normalisation: q_a and q_b quantiles of each map on unseen normal images."""
        maps = [self._raw_maps(self._resize(b.inputs)) for b in held]
        st, ae = torch.cat([m[0] for m in maps]), torch.cat([m[1] for m in maps])
        qs = np.quantile(st.double().numpy(), [self.q_a, self.q_b])
        qe = np.quantile(ae.double().numpy(), [self.q_a, self.q_b])
        self.quantiles_ = torch.tensor([qs[0], qs[1], qe[0], qe[1]], dtype=torch.float64)

    # -- score ----------------------------------------------------------------------------------
    def scoring(self, exported: bool = False) -> "EfficientADScoring":
        """The scoring as a torch module: ``_score`` runs it, ONNX export traces it."""
        return EfficientADScoring(self)


class EfficientADScoring(nn.Module):
    """EfficientAD's scoring, images -> (image scores [N], maps [N, h, w]): the mean of the student-teacher and
    autoencoder maps, each normalised by its quantiles on held-out images; the image score is its maximum."""

    def __init__(self, det: EfficientAD) -> None:
        super().__init__()
        self.nets = nn.ModuleList([det.teacher_, det.student_, det.ae_])  # their weights: the graph's
        self.raw_maps, self.resize = det._raw_maps, det._resize
        qa_st, qb_st, qa_ae, qb_ae = (float(v) for v in det.quantiles_)  # plain floats: constants when traced
        self.low, self.spread = (qa_st, qa_ae), (max(qb_st - qa_st, 1e-12), max(qb_ae - qa_ae, 1e-12))

    def branches(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        st, ae = self.raw_maps(self.resize(inputs))
        return 0.1 * (st - self.low[0]) / self.spread[0], 0.1 * (ae - self.low[1]) / self.spread[1]

    def forward(self, inputs: torch.Tensor, features: Features | None) -> tuple[torch.Tensor, torch.Tensor]:
        st, ae = self.branches(inputs)
        m = (0.5 * st + 0.5 * ae).float()
        return m.amax((1, 2)), m
