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
* Calibration. ~10 % of the training images (at least one) are held out before training
  (by the base class); their scores set the threshold.

Reproducibility: the same seed gives identical scores when training stops after a fixed
number of steps (``time_budget=None``); with a time budget the number of steps depends on
the machine's speed.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from normalcy.detectors.base import Detector, InputSize, LearningRate, Steps, TrainedParams
from normalcy.detectors.modelfile import BatchSize
from normalcy.detectors.networks import Discriminative, Reconstructive, focal_loss, ssim
from normalcy.detectors.training import Trained, TrainLog, step_decay, train
from normalcy.images.features import Batch, Features
from normalcy.images.synthetic import synthesize


class DRAEM(Trained, Detector):
    """DRAEM: a reconstructive and a discriminative network trained on synthetic anomalies.

    Works on the images themselves (``batch.inputs``), resized to ``input_size`` (default
    128 px, a multiple of 32; the paper uses 256) so that a few hundred training steps fit in
    the default 10-minute budget on 2 CPU cores. See the module docstring for the design.
    """

    name = "draem"
    experimental = ("it learns from synthetic defects alone, without a pretrained backbone, on a CPU budget far "
                    "below its paper's; it trails gaussian on real defects")
    uses_features = False

    class Params(TrainedParams):
        steps: Steps = 5000
        input_size: InputSize = 128
        base_width: int = Field(16, ge=2, le=512)
        lr: LearningRate = 1e-3
        train_batch_size: BatchSize = 8
        anomaly_prob: float = Field(0.5, ge=0, le=1)
        holdout: float = Field(0.1, gt=0, lt=1, description="fraction of training images kept to calibrate on")

    rec_: Reconstructive
    disc_: Discriminative

    @property
    def filter_size(self) -> int:
        """The mean filter for image scores: the paper's 21 px at 256 px, scaled, odd."""
        return max(1, int(21 * self.input_size / 256)) | 1

    def _build(self) -> None:
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
    def _fit(self, batches: Iterator[Batch], held: Sequence[Batch], progress: bool) -> None:
        images = torch.cat([self._prepare(b.inputs) for b in batches])
        rng = np.random.default_rng(self.seed)
        self._build()
        self.rec_.train()
        self.disc_.train()
        opt = torch.optim.Adam(list(self.rec_.parameters()) + list(self.disc_.parameters()), lr=self.lr)

        def step(_i: int) -> float:
            normal, aug, mask = self._sample(images, rng)
            rec = self.rec_(aug)
            logits = self.disc_(torch.cat([aug, rec], 1))
            loss = F.mse_loss(rec, normal) + (1 - ssim(rec, normal)) + focal_loss(logits, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return float(loss.detach())

        # The paper's schedule: the rate divided by 5 at 80 % of the run and again at 90 %.
        self.train_log_: TrainLog = train(step, self.steps, self.time_budget, progress=progress,
                                          description=f"fit {self.name}",
                                          schedule=step_decay(opt, self.lr, [(0.8, 0.2), (0.9, 0.2)]))
        self.rec_.eval()
        self.disc_.eval()

    def _sample(self, images: torch.Tensor, rng: np.random.Generator
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A training batch: (normal images, augmented images, masks)."""
        idx = rng.integers(len(images), size=self.train_batch_size)
        normal = images[idx].permute(0, 2, 3, 1).numpy().astype(np.float32) / 255.0
        aug, masks = zip(*(synthesize(im, images, rng, self.anomaly_prob) for im in normal))

        def t(a: Any) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(np.stack(a)))

        return (t(normal).permute(0, 3, 1, 2).contiguous(), t(aug).permute(0, 3, 1, 2).contiguous(), t(masks))

    # -- scoring ---------------------------------------------------------------------------
    def scoring(self, exported: bool = False) -> "DraemScoring":
        """The scoring as a torch module: ``_score`` runs it, ONNX export traces it."""
        return DraemScoring(self)



class DraemScoring(nn.Module):
    """DRAEM's scoring, images -> (image scores [N], maps [N, s, s]): the defect probability of the image beside
    its reconstruction is the map; the image score is its maximum after a mean filter."""

    def __init__(self, det: DRAEM) -> None:
        super().__init__()
        self.rec, self.disc = det.rec_, det.disc_
        self.prepare, self.k = det._prepare, det.filter_size

    def forward(self, inputs: torch.Tensor, features: Features | None) -> tuple[torch.Tensor, torch.Tensor]:
        xf = self.prepare(inputs).float() / 255.0
        prob = torch.softmax(self.disc(torch.cat([xf, self.rec(xf)], 1)), 1)[:, 1:]
        smooth = F.avg_pool2d(prob, self.k, stride=1, padding=self.k // 2, count_include_pad=False)
        return smooth.amax(dim=(1, 2, 3)), prob[:, 0]
