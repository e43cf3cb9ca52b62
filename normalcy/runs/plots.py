"""The report's score histogram and ROC curve, as inline SVG.

matplotlib and scikit-learn are imported inside :func:`score_plots`, so importing
this module (and normalcy.runs.report) stays cheap and picks no matplotlib backend.
"""

from __future__ import annotations

import io
import math
import re
import sys
import warnings
from typing import Any, Sequence

import numpy as np

from normalcy.errors import shortened

NORMAL_COLOR = "#2e7d32"
ANOMALOUS_COLOR = "#c62828"
# Names from the data (metric columns) are drawn as written: matplotlib reads text between two `$` as TeX,
# so `cost $ USD $` lost its dollars and `$\x$` failed to parse, and the plot was not drawn.
PLAIN_TEXT = {"text.parse_math": False}


def three(f: float) -> str:
    """A finite number to 3 decimals, or to 3 significant digits where those would all be 0 (a threshold of
    1e-06 was read as 0.000)."""
    return f"{f:.3g}" if f != 0 and abs(f) < 0.0005 else f"{f:.3f}"


def _unit(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Values mapped from [lo, hi] to [0, 1] (0.5 for a constant metric: a flat line), halved first so that a
    range near the largest float does not overflow."""
    if hi <= lo:
        return np.full(len(v), 0.5)
    return (v / 2 - lo / 2) / (hi / 2 - lo / 2)


def _bins(s: np.ndarray, lo: float, hi: float, n: int) -> np.ndarray:
    """``n`` histogram bins over [lo, hi]. Scores (and the threshold) a few ULPs apart, as floating-point noise
    leaves nearly identical images, are too close for numpy's ``n`` finite bins ("Too many bins for data
    range"), which cost the run its report and the run with it: they are binned as one value is, with half a
    unit either side (a millionth of the value where that is more)."""
    with np.errstate(over="ignore", invalid="ignore"):  # a range past the largest float: hist then refuses it
        try:
            return np.histogram_bin_edges(s, bins=n, range=(lo, hi) if hi > lo else None)
        except ValueError:
            pad = max(0.5, 1e-6 * max(abs(lo), abs(hi)))
            return np.linspace(lo - pad, hi + pad, n + 1)


def _svg_of(fig: Any, prefix: str, tight: bool = True) -> str:
    """Figure -> inline <svg> markup (XML prolog and DOCTYPE stripped).

    Element ids are prefixed: matplotlib reuses ids like "figure_1" in every SVG,
    and several inline SVGs share one HTML id namespace.
    """
    buf = io.StringIO()
    with warnings.catch_warnings():  # text stays text (svg.fonttype none): the browser draws a CJK metric name
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")  # that matplotlib's font lacks
        fig.savefig(buf, format="svg", bbox_inches="tight" if tight else None)  # tight: one more draw
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
    rc = {"svg.fonttype": "none", "font.size": 10, **PLAIN_TEXT}  # text as text: small, no glyph-id clashes

    with matplotlib.rc_context(rc):
        if s.size:
            fig = Figure(figsize=(6.0, 3.4))
            ax = fig.add_subplot(1, 1, 1)
            lo, hi = float(s.min()), float(s.max())
            if threshold is not None and math.isfinite(threshold):
                lo, hi = min(lo, threshold), max(hi, threshold)
            bins = _bins(s, lo, hi, min(50, max(10, int(np.sqrt(s.size)) * 2)))
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
                           label=f"threshold = {three(threshold)}")
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


# ----------------------------------------------------------------------------------------------- series

SERIES_COLORS = ("#1565c0", "#ef6c00", "#6a1b9a", "#00897b", "#5d4037")
SCORE_COLOR = "#263238"
EVENT_COLOR = "#c62828"
LABEL_COLOR = "#f9a825"
MAX_POINTS = 2000  # per drawn line: a long series is thinned to its bucket minima and maxima, spikes kept


def short_name(name: str, width: int) -> str:
    """A metric's name in at most ``width`` characters for a plot's label, its start and its end kept: names
    cut at their 18th character (``node_cpu_seconds_t``) told apart none of the metrics a system names alike
    (``node_cpu_seconds_total_user``, ``..._system``). A line break or tab is a space (it added lines)."""
    return shortened(re.sub(r"\s", " ", name), width)


def envelope(y: np.ndarray, limit: int = MAX_POINTS) -> np.ndarray:
    """Indices of ``y`` to draw: all when few, else each bucket's minimum and maximum, so a one-row spike
    in a million rows still shows."""
    n = len(y)
    if n <= limit:
        return np.arange(n)
    buckets = limit // 2
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    starts = edges[:-1]
    lo = np.minimum.reduceat(y, starts)
    hi = np.maximum.reduceat(y, starts)
    pos = np.arange(n)
    bucket = np.repeat(np.arange(buckets), np.diff(edges))
    first_lo = np.full(buckets, n)
    first_hi = np.full(buckets, n)
    np.minimum.at(first_lo, bucket[y == lo[bucket]], pos[y == lo[bucket]])
    np.minimum.at(first_hi, bucket[y == hi[bucket]], pos[y == hi[bucket]])
    return np.unique(np.concatenate([first_lo, first_hi]))


def shaded(spans: list[tuple[int, int]], time: np.ndarray, limit: int = MAX_POINTS // 4) -> np.ndarray:
    """The (start, end) times to shade for inclusive (first, last) row spans, merged where they overlap: each
    row is drawn half a row either side and each span at least 1/``limit`` of the series wide, because a span
    from the first row's time to the last's has no width for a one-row event (nothing drawn) and a few rows in
    a million are under a pixel; and 12,000 events are then at most ``limit`` shapes, not 24,000 (5.6 MB of
    SVG in one plot)."""
    n = len(time)
    if not spans or not n:
        return np.zeros((0, 2))
    pos = np.asarray(spans, np.float64).reshape(-1, 2)
    half = max(0.5, n / limit / 2)
    mid = pos.mean(axis=1)
    lo = np.clip(np.minimum(pos[:, 0] - 0.5, mid - half), -0.5, n - 0.5)
    hi = np.clip(np.maximum(pos[:, 1] + 0.5, mid + half), -0.5, n - 0.5)
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], np.maximum.accumulate(hi[order])
    new = np.concatenate(([True], lo[1:] > hi[:-1]))  # a span that starts after every earlier one ended
    ends = np.concatenate((np.flatnonzero(new)[1:] - 1, [len(lo) - 1]))
    rows = np.arange(n, dtype=np.float64)
    t = np.asarray(time, np.float64)
    return np.stack([np.interp(lo[new], rows, t), np.interp(hi[ends], rows, t)], axis=1)


def series_svg(time: np.ndarray, dates: bool, values: np.ndarray, names: list[str], score: np.ndarray,
               threshold: float, events: list[tuple[int, int]], labelled: list[tuple[int, int]],
               prefix: str, note: str | None = None) -> str:
    """One series as an inline SVG: the drawn metrics (each scaled to its own range, one above the other,
    its name and range on the left), then the score with the threshold; events shaded red in both panels,
    labelled anomalies (when the file has labels) as a band under the score. ``events`` and ``labelled``:
    inclusive (first, last) row indices; ``note``: a line added to the legend. Two panels, few ticks: a report
    draws two dozen of these."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    from matplotlib.figure import Figure

    def at(t: np.ndarray) -> np.ndarray:  # times as the x axis draws them
        return (np.asarray(t, np.float64) * 1000).astype("datetime64[ms]") if dates else np.asarray(t)

    x = at(time)
    k = values.shape[1]
    with matplotlib.rc_context({"svg.fonttype": "none", "font.size": 9, **PLAIN_TEXT}):
        fig = Figure(figsize=(10.0, 1.2 + 0.7 * k + 1.2))
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [0.7 * k, 1.2]})
        ticks, labels = [], []
        for j in range(k):
            v = values[:, j]
            lo, hi = float(v.min()), float(v.max())
            base = 1.2 * (k - 1 - j)
            y = base + _unit(v, lo, hi)
            idx = envelope(y)
            top.plot(x[idx], y[idx], color=SERIES_COLORS[j % len(SERIES_COLORS)], linewidth=0.9)
            ticks.append(base + 0.5)
            # on two lines of 16 (18 ran past the figure's left edge): names alike at their start or end differ
            label = short_name(names[j], 32)
            labels.append(f"{label[:16]}\n{label[16:]}\n{lo:.3g}…{hi:.3g}" if len(label) > 16 else
                          f"{label}\n{lo:.3g}…{hi:.3g}")
        top.set_yticks(ticks, labels)
        top.set_ylim(-0.1, 1.2 * k)
        idx = envelope(score)
        bottom.plot(x[idx], score[idx], color=SCORE_COLOR, linewidth=0.9)
        if math.isfinite(threshold):
            bottom.axhline(threshold, color="#111", linestyle="--", linewidth=1.0, label=f"threshold {threshold:.3g}")
        bottom.set_ylabel("score")
        bottom.locator_params(axis="y", nbins=3)
        spans = at(shaded(events, time))
        for a in (top, bottom):
            for start, end in spans:
                a.axvspan(start, end, color=EVENT_COLOR, alpha=0.18, linewidth=0)
            a.spines[["top", "right"]].set_visible(False)
        if labelled:
            for start, end in at(shaded(labelled, time)):
                bottom.axvspan(start, end, ymin=0, ymax=0.06, color=LABEL_COLOR, alpha=0.9, linewidth=0)
            bottom.plot([], [], color=LABEL_COLOR, linewidth=4, label="labelled anomaly")
        if note:
            bottom.plot([], [], " ", label=note)
        if math.isfinite(threshold) or labelled or note:
            bottom.legend(frameon=False, loc="upper left", fontsize=8)
        if not dates:
            bottom.locator_params(axis="x", nbins=6)
        fig.subplots_adjust(left=0.13, right=0.99, top=0.98, bottom=0.5 / fig.get_figheight(), hspace=0.12)
        return _svg_of(fig, prefix, tight=False)


def _rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def event_png(values: np.ndarray, names: list[str], score: np.ndarray, threshold: float, span: tuple[int, int],
              size: tuple[int, int] = (400, 180), note: Sequence[str] = ()) -> np.ndarray:
    """A small picture of the rows around an event (RGB, for the review's cards): the drawn metrics, each
    scaled to its own range in the window, over the score and the threshold; the event shaded. Drawn with
    OpenCV in about a millisecond, so a run with thousands of events gets a picture for each. ``note``: lines
    written in the metrics' panel (where there are none to draw)."""
    import cv2

    width, height = size
    img = np.full((height, width, 3), 255, np.uint8)
    n = len(score)
    pad = 6
    top_h = int(height * 0.55)
    panels = ((pad, top_h - pad), (top_h + pad, height - pad))
    xs = pad + (np.arange(n) * (width - 2 * pad) / max(n - 1, 1))
    a, b = span
    shade = _rgb("#f6d5d5")
    x0, x1 = int(xs[a]) - 1, int(xs[b]) + 1
    for y0, y1 in panels:
        cv2.rectangle(img, (x0, y0), (max(x1, x0 + 2), y1), shade, -1)

    def line(y: np.ndarray, lo: float, hi: float, panel: tuple[int, int], color: str, thick: int = 1) -> None:
        y0, y1 = panel
        frac = _unit(y, lo, hi)
        ys = y1 - np.clip(frac, 0, 1) * (y1 - y0)
        pts = np.stack([xs, ys], axis=1).round().astype(np.int32)
        cv2.polylines(img, [pts], False, _rgb(color), thick, cv2.LINE_AA)

    for j in range(values.shape[1]):
        v = values[:, j]
        line(v, float(v.min()), float(v.max()), panels[0], SERIES_COLORS[j % len(SERIES_COLORS)])
        text = "".join(c if 32 <= ord(c) < 127 else "?" for c in short_name(names[j], 16).replace("…", "~"))
        cv2.putText(img, text, (pad + 2, pad + 12 + 14 * j), cv2.FONT_HERSHEY_SIMPLEX, 0.38,
                    _rgb(SERIES_COLORS[j % len(SERIES_COLORS)]), 1, cv2.LINE_AA)
    for j, text in enumerate(note):
        cv2.putText(img, text, (pad + 2, pad + 16 + 16 * j), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (90, 90, 90), 1,
                    cv2.LINE_AA)
    hi = max(float(score.max()) if n else 0.0, threshold) * 1.05
    line(score, 0.0, hi, panels[1], SCORE_COLOR, 2)
    ty = int(panels[1][1] - (threshold / hi if hi > 0 else 0) * (panels[1][1] - panels[1][0]))
    for x in range(pad, width - pad, 8):
        cv2.line(img, (x, ty), (min(x + 4, width - pad), ty), (17, 17, 17), 1)
    cv2.putText(img, "score", (pad + 2, panels[1][0] + 10), cv2.FONT_HERSHEY_SIMPLEX, 0.36, _rgb(SCORE_COLOR),
                1, cv2.LINE_AA)
    return img


def note_png(lines: list[str], size: tuple[int, int] = (400, 180)) -> np.ndarray:
    """A picture of a few lines of text (RGB, the size of :func:`event_png`'s): what the review shows where a
    picture was not drawn, so that the card says why instead of showing nothing (or the last event's)."""
    import cv2

    width, height = size
    img = np.full((height, width, 3), 245, np.uint8)
    cv2.rectangle(img, (0, 0), (width - 1, height - 1), (200, 200, 200), 1)
    top = max(18, (height - 22 * len(lines)) // 2 + 14)
    for i, text in enumerate(lines):
        text = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
        (w, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        cv2.putText(img, text, (max(4, (width - w) // 2), top + 22 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    _rgb(SCORE_COLOR), 1, cv2.LINE_AA)
    return img
