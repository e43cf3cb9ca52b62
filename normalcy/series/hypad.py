"""HypAD (Flaborea et al., CVPR-W 2023, "Are we certain it's anomalous?"): a window-reconstruction
autoencoder whose reconstructions live in a hyperbolic space, where their distance to the origin says how
certain the model is; a detectable anomaly is one the model is certain about and still fails to
reconstruct, so reconstruction errors of windows the model is unsure of (complex but regular ones) are
damped, and false alarms drop.

As in the paper and its code (aleflabo/HypAD): a window x (``span`` rows x d metrics, flattened) is
encoded to a latent code and decoded to x̂; both x and x̂ are mapped into the Poincaré ball by one shared
hyperbolic layer h (a linear map followed by the exponential map at the origin); the model is trained to
bring h(x̂) close to h(x) in the Poincaré distance, and the score of a window is

    s = d_P(h(x), h(x̂)) * ||h(x̂)||

the hyperbolic reconstruction error weighted by the certainty of the reconstruction: ||h(x̂)||, which
grows with its hyperbolic distance to the origin (d_P(0, p) = 2 artanh ||p||), is near 0 for a hedged,
uncertain reconstruction and near 1 for a confident one (the code's ``rec_uncertainty`` combination).
``uncertainty=False`` scores d_P(h(x), h(x̂)) alone (its ``rec`` combination): the same model without the
re-weighting, so bench/hypad_uncertainty.py can measure what the certainty does to false alarms.

Kept CPU-small: dense encoder and decoder instead of TadGAN's LSTMs, and neither GAN critic (their adversarial
training takes minutes per series on a GPU). The paper trains on the Poincaré distance (x 10, beside the
critics' terms); here the loss is the Euclidean reconstruction error plus ``hyperbolic_weight`` (100) times
the Poincaré distance: the hyperbolic term dominates as in the paper, and the small Euclidean one keeps the
shared layer from shrinking everything towards the origin. On ASD (bench/hypad_uncertainty.py) weights
1, 10, 100 and 1000 gave event F1 0.30, 0.37, 0.44 and 0.47. A row is scored
by the window that ends at it (causal; the first span - 1 rows of a series, without a full window, score
0); its score is split over the metrics by their share of the window's
squared reconstruction error, each in units of that metric's own error over normal windows (``error_scale_``,
learned on the training windows), so every alarm names its metrics. Raw errors favoured the metrics the
network reconstructs worst when all is normal: summed over a window of 32 rows, a sum of two other metrics
(1.6 times the mean normal error) outweighed a one-row spike elsewhere, and bench/series_explain.py's planted
metric was named first in 17 of 24 anomalies; in units of each metric's own normal error, in 23.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from pydantic import Field
from torch import nn

from normalcy.series.autoencoder import TrainedParams, WindowDetector, batched, training_windows

log = logging.getLogger("normalcy")

_MAX_NORM = 1 - 1e-5  # points of the ball are kept this far inside its boundary (float32)
MIN_ERROR = 1e-12  # a metric's normal window error at least this (a constant metric reconstructs to rounding)


def expmap0(v: torch.Tensor) -> torch.Tensor:
    """The exponential map at the origin of the Poincaré ball (curvature -1): tanh(|v|) v / |v|."""
    norm = v.norm(dim=-1, keepdim=True).clamp_min(1e-15)
    p = torch.tanh(norm) * v / norm
    return p * (_MAX_NORM / p.norm(dim=-1, keepdim=True).clamp_min(_MAX_NORM))


def poincare_distance(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """arcosh(1 + 2 |u - v|^2 / ((1 - |u|^2)(1 - |v|^2))), row by row."""
    sq = ((u - v) ** 2).sum(dim=-1)
    den = (1 - (u * u).sum(dim=-1)).clamp_min(1e-10) * (1 - (v * v).sum(dim=-1)).clamp_min(1e-10)
    return torch.acosh((1 + 2 * sq / den).clamp_min(1 + 1e-7))


class HyperbolicAutoencoder(nn.Module):
    """Dense window autoencoder plus the shared layer into the Poincaré ball."""

    def __init__(self, inputs: int, hidden: int, latent: int, embedding: int) -> None:
        super().__init__()
        self.encode = nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, latent))
        self.decode = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, inputs))
        self.hyperbolic = nn.Linear(inputs, embedding)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x̂, h(x), h(x̂))."""
        rec = self.decode(self.encode(x))
        return rec, expmap0(self.hyperbolic(x)), expmap0(self.hyperbolic(rec))


class HypAD(WindowDetector):
    """Hyperbolic reconstruction error of a row's window, weighted by the model's certainty."""

    name = "hypad"

    class Params(TrainedParams):
        uncertainty: bool = True  # weight the error by the certainty ||h(x̂)|| (False: the plain error)
        span: int | None = Field(None, ge=2, le=1024)  # rows per window; None: input_span (window, input <= 400)
        hidden: int = Field(128, ge=4, le=4096)
        latent: int = Field(20, ge=1, le=1024)  # TadGAN's latent size
        embedding: int = Field(32, ge=2, le=1024)  # dimensions of the Poincaré ball
        hyperbolic_weight: float = Field(100.0, ge=0, le=10_000)  # of the Poincaré term in the training loss

    net_: HyperbolicAutoencoder
    error_scale_: np.ndarray  # (d,) each metric's mean squared reconstruction error over a normal window

    def _build(self) -> None:
        inputs = self.span_ * len(self.columns_)
        self.net_ = HyperbolicAutoencoder(inputs, self.hidden, self.latent, min(self.embedding, inputs)).double()

    def _fit(self, X: np.ndarray, progress: bool) -> None:
        self.span_ = self._span(X.shape[1])
        self._build()

        def loss(x: torch.Tensor) -> torch.Tensor:
            rec, hx, hrec = self.net_(x)
            return ((rec - x) ** 2).mean() + self.hyperbolic_weight * poincare_distance(hx, hrec).mean()

        windows = training_windows(X, self.span_, self.starts).numpy()
        self._train(torch.from_numpy(windows), loss)
        rec = torch.cat([o[0] for o in batched(self.net_, windows)]).numpy()
        self.error_scale_ = np.maximum(self._metric_errors(windows, rec).mean(axis=0), MIN_ERROR)

    def _metric_errors(self, W: np.ndarray, rec: np.ndarray) -> np.ndarray:
        """(m, d) each metric's squared reconstruction error summed over each window W (m, span * d), whose
        reconstructions are ``rec``."""
        return ((np.asarray(W, dtype=np.float64) - rec) ** 2).reshape(len(W), self.span_, -1).sum(axis=1)

    def parts(self, W: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For windows W (m, span * d): the hyperbolic error d_P(h(x), h(x̂)) (m,), the certainty ||h(x̂)||
        (m,) and each metric's share of the squared reconstruction error (m, d), each metric's error in units of
        its normal one (``error_scale_``)."""
        d = len(self.columns_)
        out = batched(self.net_, W)
        rec = torch.cat([o[0] for o in out])
        hx = torch.cat([o[1] for o in out])
        hrec = torch.cat([o[2] for o in out])
        dist = poincare_distance(hx, hrec).numpy()
        certainty = hrec.norm(dim=-1).numpy()
        per_metric = self._metric_errors(W, rec.numpy()) / self.error_scale_
        total = per_metric.sum(axis=1, keepdims=True)
        share = np.divide(per_metric, total, out=np.full_like(per_metric, 1.0 / d), where=total > 0)
        return dist, certainty, share

    def _window_scores(self, W: np.ndarray) -> np.ndarray:
        dist, certainty, share = self.parts(W)
        score = dist * certainty if self.uncertainty else dist
        return score[:, None] * share

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """The base's, for a model saved before ``error_scale_`` was learned too: its metrics are named by their
        raw window errors, as then (a note says so; fitting it again names them in units of their normal error)."""
        if "error_scale" not in state:
            log.info("%s: a model saved without its metrics' normal errors (before normalcy learned them): alarms "
                     "name metrics by their raw reconstruction errors; fit it again for errors in units of each "
                     "metric's normal error", self.name)
            state = dict(state) | {"error_scale": torch.ones(len(self.columns_), dtype=torch.float64)}
        super().load_state_dict(state)

    def _check_state(self) -> None:
        if self.error_scale_.shape != (len(self.columns_),) or not (self.error_scale_ >= MIN_ERROR).all():
            raise ValueError(f"error_scale has shape {self.error_scale_.shape} or values under {MIN_ERROR}, expected "
                             f"{len(self.columns_)} values of at least {MIN_ERROR}")
        # 1: the window of a series of more than 128 metrics (256 numbers a window at most) or --window 1, which
        # fit gives; refusing it here lost every such model at predict, after the fit
        if not 1 <= self.span_ <= 1024:
            raise ValueError(f"span {self.span_} outside 1..1024")
