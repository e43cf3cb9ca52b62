"""SimpleNet (Liu et al., CVPR 2023): a discriminator on noise-perturbed adapted features.

Frozen pretrained patch features (our shared extractor) go through a feature
adaptor, one linear layer, which moves them into a space suited to the task.
An anomaly-feature generator adds Gaussian noise to adapted normal features;
a small MLP discriminator learns to tell the two apart with the paper's
truncated L1 loss. At inference the discriminator's output, negated, is the
patch score; the image score is the highest patch score.

Departures from the paper, and why:
* features are standardised per channel on the training set before the adaptor,
  so the noise scale means the same for any backbone (the paper tunes sigma to
  its WideResNet features);
* each step trains on a random mini-batch of patches drawn from all training
  images rather than on whole images, which uses a CPU's time better.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from pydantic import Field
from torch import nn

from normalcy.detectors.base import Detector, LearningRate, Steps, TrainedParams, Width
from normalcy.detectors.training import Trained, train
from normalcy.images.features import Batch, Features


class _Discriminator(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2),
                                  nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(-1)


class SimpleNet(Trained, Detector):
    """Feature adaptor + Gaussian-noise anomaly generator + MLP discriminator."""

    name = "simplenet"
    experimental = ("its patch scores do not know where in the image a patch is, and it trains on a CPU budget; "
                    "it trails gaussian on textures photographed in a fixed pose")
    uses_pooled = False

    class Params(TrainedParams):
        steps: Steps = 3000
        batch_patches: int = Field(2048, ge=1, le=1_048_576)
        hidden: Width = 1024
        noise_std: float = Field(0.5, gt=0, le=100)
        lr_adaptor: LearningRate = 1e-4
        lr_discriminator: LearningRate = 2e-4
        margin: float = Field(0.5, gt=0, le=100)
        holdout: float = Field(0.1, gt=0, lt=1, description="fraction of training images kept to calibrate on")

    mean_: torch.Tensor  # per-channel standardisation of the features
    std_: torch.Tensor
    adaptor_: nn.Linear
    discriminator_: _Discriminator

    def _build(self) -> None:
        dim = self.mean_.shape[0]
        self.adaptor_ = nn.Linear(dim, dim)
        self.discriminator_ = _Discriminator(dim, self.hidden)

    def _fit(self, batches: Iterator[Batch], held: Sequence[Batch], progress: bool) -> None:
        feats = []
        for batch in batches:
            p = batch.features.patches  # type: ignore[union-attr]
            feats.append(p.permute(0, 2, 3, 1).reshape(-1, p.shape[1]).float())
        train_x = torch.cat(feats)  # patches x D
        self.mean_ = train_x.mean(0)
        self.std_ = train_x.std(0).clamp_min(1e-6)
        train_x = (train_x - self.mean_) / self.std_
        self._build()
        opt_a = torch.optim.Adam(self.adaptor_.parameters(), lr=self.lr_adaptor)
        opt_d = torch.optim.Adam(self.discriminator_.parameters(), lr=self.lr_discriminator, weight_decay=1e-5)
        self.adaptor_.train()
        self.discriminator_.train()

        def step(_i: int) -> float:
            idx = torch.randint(len(train_x), (self.batch_patches,))
            q = self.adaptor_(train_x[idx])
            noise = torch.randn(q.shape) * self.noise_std
            d_true = self.discriminator_(q)
            d_fake = self.discriminator_(q + noise)
            # truncated L1: normal above +margin, synthetic anomalies below -margin
            loss = (torch.relu(self.margin - d_true) + torch.relu(self.margin + d_fake)).mean()
            opt_a.zero_grad()
            opt_d.zero_grad()
            loss.backward()
            opt_a.step()
            opt_d.step()
            return float(loss.detach())

        self.train_log_ = train(step, self.steps, self.time_budget, progress, "train simplenet")
        self.adaptor_.eval()
        self.discriminator_.eval()

    def scoring(self, exported: bool = False) -> "SimpleNetScoring":
        """The scoring as a torch module: ``_score`` runs it, ONNX export traces it."""
        return SimpleNetScoring(self)



class SimpleNetScoring(nn.Module):
    """SimpleNet's scoring, features -> (image scores [N], patch maps [N, h, w]): the negated discriminator
    output of the standardised, adapted patch features; the image score is the highest."""

    def __init__(self, det: SimpleNet) -> None:
        super().__init__()
        self.adaptor, self.discriminator = det.adaptor_, det.discriminator_
        self.register_buffer("mean", det.mean_)
        self.register_buffer("std", det.std_)

    def forward(self, inputs: torch.Tensor, features: Features) -> tuple[torch.Tensor, torch.Tensor]:
        p = features.patches
        b, d, h, w = p.shape
        z = (p.permute(0, 2, 3, 1).reshape(-1, d).float() - self.mean) / self.std
        s = (-self.discriminator(self.adaptor(z))).reshape(b, h * w)
        return s.amax(1), s.reshape(b, h, w)
