"""The small networks the trained detectors learn, and DRAEM's losses.

* DRAEM (Zavrtanik et al. 2021): the reconstructive encoder-decoder and the discriminative
  U-Net, an SSIM and a focal loss;
* EfficientAD (Batzner et al. 2024): PDN-tiny (teacher and student) and the autoencoder.

Each module's detector file (detectors/draem.py, detectors/efficientad.py) says how and why
these differ from the papers.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# -------------------------------------------------------------------- DRAEM


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



# -------------------------------------------------------------------- EfficientAD


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
