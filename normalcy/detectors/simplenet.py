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

from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from ..features import Batch, Features
from ..training import train
from .base import Detector, holdout_count


class _Discriminator(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2),
                                  nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(-1)


class SimpleNet(Detector):
    """Feature adaptor + Gaussian-noise anomaly generator + MLP discriminator."""

    name = "simplenet"
    uses_pooled = False

    def __init__(
        self,
        *args: Any,
        steps: int = 3000,
        time_budget: float | None = 600.0,
        batch_patches: int = 2048,
        hidden: int = 1024,
        noise_std: float = 0.5,
        lr_adaptor: float = 1e-4,
        lr_discriminator: float = 2e-4,
        margin: float = 0.5,
        holdout: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.steps = int(steps)
        self.time_budget = time_budget
        self.batch_patches = int(batch_patches)
        self.hidden = int(hidden)
        self.noise_std = float(noise_std)
        self.lr_adaptor = float(lr_adaptor)
        self.lr_discriminator = float(lr_discriminator)
        self.margin = float(margin)
        self.holdout = float(holdout)

    def params(self) -> dict[str, Any]:
        return {
            "steps": self.steps, "time_budget": self.time_budget, "batch_patches": self.batch_patches,
            "hidden": self.hidden, "noise_std": self.noise_std, "lr_adaptor": self.lr_adaptor,
            "lr_discriminator": self.lr_discriminator, "margin": self.margin, "holdout": self.holdout,
        }

    def _build(self, dim: int) -> None:
        self.adaptor_ = nn.Linear(dim, dim)
        self.discriminator_ = _Discriminator(dim, self.hidden)


    def _fit(self, batches: Iterator[Batch]) -> None:
        feats = []
        for batch in batches:
            p = batch.features.patches  # type: ignore[union-attr]
            feats.append(p.permute(0, 2, 3, 1).reshape(p.shape[0], -1, p.shape[1]).float())
        x = torch.cat(feats)  # images x patches x D
        n_img, _, dim = x.shape
        g = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        order = torch.randperm(n_img, generator=g)
        n_hold = holdout_count(n_img, self.holdout)
        self._held = x[order[:n_hold]]
        train_x = x[order[n_hold:]].reshape(-1, dim)
        self.mean_ = train_x.mean(0)
        self.std_ = train_x.std(0).clamp_min(1e-6)
        train_x = (train_x - self.mean_) / self.std_
        self._build(dim)
        opt_a = torch.optim.Adam(self.adaptor_.parameters(), lr=self.lr_adaptor)
        opt_d = torch.optim.Adam(self.discriminator_.parameters(), lr=self.lr_discriminator, weight_decay=1e-5)
        self.adaptor_.train()
        self.discriminator_.train()

        def step(_i: int) -> float:
            idx = torch.randint(len(train_x), (self.batch_patches,), generator=g)
            q = self.adaptor_(train_x[idx])
            noise = torch.randn(q.shape, generator=g) * self.noise_std
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

        self.train_log_ = train(step, self.steps, self.time_budget, self._progress, "train simplenet")
        self.adaptor_.eval()
        self.discriminator_.eval()

    @torch.inference_mode()
    def _patch_scores(self, patches: torch.Tensor) -> torch.Tensor:
        """B x P x D features -> B x P anomaly scores (high = anomalous)."""
        b, p, d = patches.shape
        z = (patches.reshape(-1, d) - self.mean_) / self.std_
        return (-self.discriminator_(self.adaptor_(z))).reshape(b, p)

    def _score(self, features: Features) -> tuple[np.ndarray, np.ndarray]:
        p = features.patches
        b, d, h, w = p.shape
        s = self._patch_scores(p.permute(0, 2, 3, 1).reshape(b, h * w, d).float())
        return s.max(1).values.double().numpy(), s.reshape(b, h, w).numpy()

    def _calibration_scores(self) -> tuple[np.ndarray, np.ndarray]:
        held, self._held = self._held, None
        if held is None or len(held) == 0:  # a single training image: nothing held out
            return np.zeros(1), np.zeros(1)
        s = self._patch_scores(held)
        return s.max(1).values.double().numpy(), s.reshape(-1).numpy()

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"mean": self.mean_, "std": self.std_}
        state.update({f"adaptor.{k}": v for k, v in self.adaptor_.state_dict().items()})
        state.update({f"discriminator.{k}": v for k, v in self.discriminator_.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.mean_, self.std_ = state["mean"], state["std"]
        self._build(self.mean_.shape[0])
        self.adaptor_.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("adaptor.")})
        self.discriminator_.load_state_dict(
            {k[14:]: v for k, v in state.items() if k.startswith("discriminator.")})
        self.adaptor_.eval()
        self.discriminator_.eval()
