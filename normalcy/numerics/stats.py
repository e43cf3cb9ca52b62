"""Shared statistics: Ledoit-Wolf Gaussians, Mahalanobis distances and the threshold at a false-positive rate.

The image detector ``gaussian`` and the vector detector ``gaussian`` both model normal features by one
Gaussian with Ledoit-Wolf shrinkage (few samples, many dimensions) and score by the Mahalanobis distance
to it; this module is the one place that arithmetic lives, so both give the same figures.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.covariance import ledoit_wolf

__all__ = ["decide", "inverse", "gaussian", "gaussians", "shrunk", "mahalanobis", "distance", "distance_to", "threshold_at"]

TIE_STEP = 1e-6  # relative: how far above a tie of normal scores the threshold is put


def threshold_at(scores: np.ndarray, fpr: float) -> float:
    """The threshold that flags about ``fpr`` of these normal scores (score >= threshold: anomalous), the
    (1 - fpr) quantile, moved just above it where ties make the quantile flag more than fpr of them.

    Why: normal data is often flat (a sensor that holds its value, duplicated rows), so many normal scores
    are exactly equal; a threshold equal to them flagged every such row (a constant training series made
    every test row anomalous). Above the tie none of those rows is flagged, which errs on the side of the
    target rate."""
    scores = np.asarray(scores, dtype=np.float64)
    q = float(np.quantile(scores, 1.0 - fpr))
    if np.mean(scores >= q) > fpr + 1.0 / scores.size:
        q += TIE_STEP * max(1.0, abs(q))
    return q


def check_fpr_unchanged(name: str, fpr: float, fitted: float | None) -> None:
    """InputError where ``fpr`` was changed after fit (``set_params(fpr=...)``, ``det.fpr = ...``): the threshold
    is the one set at the ``fitted`` fpr, and a model saved (or exported) so would name one fpr beside the other's
    threshold, a file that disagrees with itself. ``fitted`` None: nothing to compare (the fpr is not used)."""
    from normalcy.errors import InputError

    if fitted is not None and float(fpr) != float(fitted):
        raise InputError(f"detector {name}: fpr is {float(fpr):g}, but its threshold was set at fpr {float(fitted):g} "
                         f"when it was fitted: fit it again for fpr {float(fpr):g}, or set fpr back to "
                         f"{float(fitted):g} (saved as it is, the model would name one fpr and hold the other's "
                         "threshold)")


def decide(scores: np.ndarray, threshold: float | np.ndarray) -> np.ndarray:
    """The one decision rule of every run: anomalous when the score reaches the threshold (here, beside
    ``threshold_at``, so that detectors and tables need not import the run folder's writer)."""
    return np.asarray(scores, np.float64) >= threshold


def inverse(cov: np.ndarray) -> np.ndarray:
    """Precision of a covariance. Shrinkage makes it positive definite, so a plain inverse is safe; a singular
    one (rows that never vary, all duplicates; rows on a line, where Ledoit-Wolf shrinks nothing) gets the tiny
    ridge ``gaussians`` gives a cell that never varies. Why not the pseudo-inverse: it gave every direction the
    rows never moved in zero weight, so a row off them scored 0 and was never flagged."""
    try:
        return np.linalg.inv(cov)
    except np.linalg.LinAlgError:
        ridge = 1e-9 * max(float(np.trace(cov)) / len(cov), 0.0) + 1e-12
        return np.linalg.inv(cov + ridge * np.eye(len(cov)))


def gaussian(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and precision (inverse Ledoit-Wolf covariance, as scikit-learn computes it) of the rows of x; with
    fewer rows than dimensions through the Gram matrix (``_low_rank``), the same to rounding."""
    lr = _low_rank(x)
    if lr is None:
        cov, _ = ledoit_wolf(x)
        return x.mean(0), inverse(cov)
    mean, xc, a, b, chol = lr
    w = np.linalg.solve(chol, xc)  # n x D: L^-1 Xc
    precision = -(b / a**2) * (w.T @ w)
    precision.flat[:: x.shape[1] + 1] += 1.0 / a
    return mean, precision


def gaussians(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One Gaussian per group of x (N x G x D; the image detector's cells): means G x D and precisions
    G x D x D. Ledoit-Wolf as ``gaussian`` computes it, for all groups at once (a loop over the cells of an
    image grid costs seconds per fit), plus a tiny ridge that keeps a group that never varies invertible."""
    n, g, d = x.shape
    if g == 0:
        return np.zeros((0, d)), np.zeros((0, d, d))
    t = torch.from_numpy(x).double().transpose(0, 1)  # G x N x D
    mean = t.mean(1, keepdim=True)
    c = t - mean
    cov = c.transpose(1, 2) @ c / n  # G x D x D, the empirical covariance
    mu = cov.diagonal(dim1=1, dim2=2).sum(1) / d
    eye = torch.eye(d, dtype=cov.dtype)
    delta = ((cov - mu.view(-1, 1, 1) * eye) ** 2).sum((1, 2))  # |S - mu I|^2
    beta = (((c**2).sum(2) ** 2).sum(1) / n - (cov**2).sum((1, 2))) / (d * n)
    delta = delta / d
    beta = torch.minimum(beta, delta)
    shrink = torch.where(delta > 0, beta / delta.clamp_min(1e-300), torch.zeros_like(delta)).view(-1, 1, 1)
    cov = (1 - shrink) * cov + shrink * mu.view(-1, 1, 1) * eye
    # A cell that never varies (a blank corner) has no covariance at all: the ridge keeps it invertible.
    cov = cov + (1e-9 * float(mu.max()) + 1e-12) * eye
    return mean[:, 0].numpy(), np.stack([inverse(c) for c in cov.numpy()])


def shrunk(cov: np.ndarray, shrinkage: float) -> np.ndarray:
    """Ledoit-Wolf's shrunk covariance: ``(1 - s) cov + s mu I`` with mu the mean variance, for a shrinkage
    s estimated elsewhere (from a sample, or from running sums)."""
    p = cov.shape[0]
    mu = np.trace(cov) / p
    out = (1.0 - shrinkage) * cov
    out.flat[:: p + 1] += shrinkage * mu
    return out


def mahalanobis(x: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """Row-wise Mahalanobis distance of x (N x D); torch so that ONNX export traces the same code."""
    d = x - mean
    return ((d @ precision) * d).sum(-1).clamp_min(0).sqrt()


def distance(x: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """``mahalanobis`` on numpy arrays (dtype kept). A read-only array (a pandas DataFrame's values, a memory
    map) is copied first: torch warns of one at length ("not writable ... undefined behavior"), though nothing
    here writes to it."""
    x, mean, precision = (a if a.flags.writeable else a.copy() for a in (x, mean, precision))
    return mahalanobis(torch.from_numpy(x), torch.from_numpy(mean), torch.from_numpy(precision)).numpy()


def distance_to(train: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``distance(x, *gaussian(train))``: the Mahalanobis distance of each row of x to the Ledoit-Wolf Gaussian of
    the rows of ``train``, without its D x D precision when there are fewer rows than dimensions (``_low_rank``;
    cross-validation, where nothing else needs the precision)."""
    lr = _low_rank(train)
    if lr is None:
        return distance(x, *gaussian(train))
    mean, xc, a, b, chol = lr
    y = x - mean
    w = np.linalg.solve(chol, xc @ y.T)  # n x N: L^-1 Xc y, so |w|^2 = y'Xc' M^-1 Xc y
    d2 = (y**2).sum(1) / a - (b / a**2) * (w**2).sum(0)
    return np.sqrt(np.maximum(d2, 0.0))


def _low_rank(train: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float, np.ndarray] | None:
    """With n rows < D dimensions, Ledoit-Wolf's covariance is a I + b Xc'Xc (Xc: the centred rows), and Woodbury's
    identity inverts it in the n x n Gram matrix: O(n^2 D) instead of O(D^3) (0.02 s instead of 0.3-0.6 s for
    400 x 2048). Returns (mean, Xc, a, b, L) with L L' = I + (b / a) Xc Xc', the shrinkage computed as scikit-learn's
    ``ledoit_wolf_shrinkage`` computes it; None where n >= D or nothing is shrunk (then the plain path)."""
    n, d = train.shape
    if n >= d or n < 2:
        return None
    mean = train.mean(0)
    xc = train - mean
    gram = xc @ xc.T
    trace = float(np.trace(gram)) / n  # the trace of the empirical covariance
    mu = trace / d
    delta_ = float((gram**2).sum()) / n**2  # |S|_F^2 = |Xc Xc'|_F^2 / n^2
    beta = (float(((xc**2).sum(1) ** 2).sum()) / n - delta_) / (d * n)
    delta = (delta_ - 2.0 * mu * trace + d * mu**2) / d
    shrinkage = 0.0 if beta == 0 else min(beta, delta) / delta
    a, b = shrinkage * mu, (1.0 - shrinkage) / n
    if a <= 1e-12 * max(mu, 1e-300):  # nothing shrunk: singular, so the pseudo-inverse of the plain path
        return None
    return mean, xc, a, b, np.linalg.cholesky(np.eye(n) + (b / a) * gram)
