"""The report's score histogram and ROC curve, as inline SVG.

matplotlib and scikit-learn are imported inside :func:`score_plots`, so importing
this module (and normalcy.runs.report) stays cheap and picks no matplotlib backend.
"""

from __future__ import annotations

import io
import math
import re
import sys
from typing import Any

import numpy as np

NORMAL_COLOR = "#2e7d32"
ANOMALOUS_COLOR = "#c62828"


def _svg_of(fig: Any, prefix: str) -> str:
    """Figure -> inline <svg> markup (XML prolog and DOCTYPE stripped).

    Element ids are prefixed: matplotlib reuses ids like "figure_1" in every SVG,
    and several inline SVGs share one HTML id namespace.
    """
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    svg = buf.getvalue()
    start = svg.find("<svg")
    svg = svg[start:] if start >= 0 else svg
    # Let CSS size the plot responsively; keep the viewBox for the aspect ratio.
    svg = re.sub(r'(<svg[^>]*?)\s+width="[^"]*"', r"\1", svg, count=1)
    svg = re.sub(r'(<svg[^>]*?)\s+height="[^"]*"', r"\1", svg, count=1)
    svg = svg.replace(' id="', f' id="{prefix}-')
    svg = svg.replace("url(#", f"url(#{prefix}-").replace('href="#', f'href="#{prefix}-')
    return svg


def score_plots(
    scores: np.ndarray, labels: np.ndarray | None, threshold: float | None
) -> tuple[str | None, str | None, float | None]:
    """Return (histogram svg, ROC svg, AUROC). Lazy imports keep module import side-effect free."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        # Don't yank the backend from under an interactive pyplot session; we never
        # use pyplot anyway (Figure objects below), so Agg only matters for safety.
        matplotlib.use("Agg")
    from matplotlib.figure import Figure

    finite = np.isfinite(scores)
    s = scores[finite]
    y = labels[finite] if labels is not None else None

    hist_svg: str | None = None
    roc_svg: str | None = None
    auroc: float | None = None
    rc = {"svg.fonttype": "none", "font.size": 10}  # text as text: small, no glyph-id clashes

    with matplotlib.rc_context(rc):
        if s.size:
            fig = Figure(figsize=(6.0, 3.4))
            ax = fig.add_subplot(1, 1, 1)
            lo, hi = float(s.min()), float(s.max())
            if threshold is not None and math.isfinite(threshold):
                lo, hi = min(lo, threshold), max(hi, threshold)
            bins = np.histogram_bin_edges(s, bins=min(50, max(10, int(np.sqrt(s.size)) * 2)),
                                          range=(lo, hi) if hi > lo else None)
            if y is not None:
                normal, anomal = s[y == 0], s[y == 1]
                if normal.size:
                    ax.hist(normal, bins=bins, color=NORMAL_COLOR, alpha=0.6,
                            label=f"normal (n={normal.size})")
                if anomal.size:
                    ax.hist(anomal, bins=bins, color=ANOMALOUS_COLOR, alpha=0.6,
                            label=f"anomalous (n={anomal.size})")
            else:
                ax.hist(s, bins=bins, color="#546e7a", alpha=0.85, label=f"all (n={s.size})")
            if threshold is not None and math.isfinite(threshold):
                ax.axvline(threshold, color="#111", linestyle="--", linewidth=1.5,
                           label=f"threshold = {threshold:.3f}")
            ax.set_xlabel("anomaly score")
            ax.set_ylabel("images")
            ax.set_title("Score distribution")
            ax.legend(frameon=False)
            ax.spines[["top", "right"]].set_visible(False)
            hist_svg = _svg_of(fig, "hist")

        if y is not None and s.size and np.any(y == 0) and np.any(y == 1):
            from sklearn.metrics import roc_auc_score, roc_curve

            fpr, tpr, _ = roc_curve(y, s)
            auroc = float(roc_auc_score(y, s))
            fig = Figure(figsize=(4.2, 4.0))
            ax = fig.add_subplot(1, 1, 1)
            ax.plot(fpr, tpr, color="#1565c0", linewidth=2, label=f"AUROC = {auroc:.3f}")
            ax.plot([0, 1], [0, 1], color="#9e9e9e", linestyle=":", linewidth=1, label="chance")
            if threshold is not None and math.isfinite(threshold):
                pred = s >= threshold
                tp = float(np.mean(pred[y == 1]))
                fp = float(np.mean(pred[y == 0]))
                ax.plot([fp], [tp], "o", color="#111", label="at threshold")
            ax.set_xlim(-0.01, 1.01)
            ax.set_ylim(-0.01, 1.01)
            ax.set_aspect("equal")
            ax.set_xlabel("false positive rate")
            ax.set_ylabel("true positive rate")
            ax.set_title("ROC")
            ax.legend(loc="lower right", frameon=False)
            ax.spines[["top", "right"]].set_visible(False)
            roc_svg = _svg_of(fig, "roc")
    return hist_svg, roc_svg, auroc
