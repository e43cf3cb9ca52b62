"""Visual reports: heatmaps, overlays and a self-contained HTML report.

Quality engineers would rather look than read, so everything here turns scores
and anomaly maps into pictures. The HTML report is a single file (images as
base64 PNG, plots as inline SVG) so it can be mailed or archived without a
folder of assets next to it.

matplotlib and scikit-learn are imported lazily inside :func:`write_report`, so
importing this module has no global side effects and stays cheap.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
from PIL import Image

from .heatmap import _to_rgb_u8, colorize, overlay, save_heatmap

__all__ = [
    "colorize",
    "overlay",
    "save_heatmap",
    "ReportImage",
    "write_report",
]

# Longest side of gallery images in the HTML report; keeps the file mailable.
_GALLERY_MAX_SIDE = 512
_NORMAL_COLOR = "#2e7d32"
_ANOMALOUS_COLOR = "#c62828"


# --------------------------------------------------------------------------- report


@dataclass
class ReportImage:
    """One image shown in the report gallery (chosen and sorted by the caller)."""

    name: str
    score: float
    anomalous: bool | None  # the decision at the threshold, None if no threshold
    image: np.ndarray  # HxWx3 uint8 RGB
    amap: np.ndarray | None  # HxW float, None if the detector gives no map
    label: int | None = None  # ground truth when known (1 anomalous / 0 normal)


def _esc(value: Any) -> str:
    """HTML-escaped text; a byte of a non-UTF-8 file name shows as U+FFFD instead of failing to encode."""
    text = str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return html.escape(text, quote=True)


def _fmt(value: Any) -> str:
    """Floats to 3 decimals, NaN/None as an en dash; everything else as str."""
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(f):
        return "–"
    if math.isinf(f):
        return "∞" if f > 0 else "−∞"
    return f"{f:.3f}"


def _png_data_uri(rgb: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _shrink(rgb: np.ndarray, max_side: int = _GALLERY_MAX_SIDE) -> np.ndarray:
    """Downscale for the gallery so a report of 1k-pixel images stays a few MB."""
    h, w = rgb.shape[:2]
    side = max(h, w)
    if side <= max_side:
        return rgb
    s = max_side / side
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _auto_map_range(top: Sequence[ReportImage]) -> tuple[float, float] | None:
    """One shared range for all gallery maps, so colours mean the same on every card."""
    lo, hi = math.inf, -math.inf
    for item in top:
        if item.amap is None:
            continue
        a = np.asarray(item.amap, dtype=np.float64)
        a = a[np.isfinite(a)]
        if a.size:
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
    if not math.isfinite(lo):
        return None
    return lo, hi


def _colorbar_css(vmin: float, vmax: float) -> str:
    """A CSS gradient legend (no extra <img>) sampled from the same colormap."""
    stops = colorize(np.linspace(0.0, 1.0, 11)[None, :], 0.0, 1.0)[0]
    grad = ", ".join(f"rgb({r},{g},{b})" for r, g, b in stops)
    return (
        '<div class="cbar"><span>' + _esc(_fmt(vmin)) + "</span>"
        f'<div class="cbar-grad" style="background: linear-gradient(to right, {grad});"></div>'
        "<span>" + _esc(_fmt(vmax)) + "</span>"
        '<span class="muted">anomaly map colour scale</span></div>'
    )


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


def _plots(
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
                    ax.hist(normal, bins=bins, color=_NORMAL_COLOR, alpha=0.6,
                            label=f"normal (n={normal.size})")
                if anomal.size:
                    ax.hist(anomal, bins=bins, color=_ANOMALOUS_COLOR, alpha=0.6,
                            label=f"anomalous (n={anomal.size})")
            else:
                ax.hist(s, bins=bins, color="#546e7a", alpha=0.85, label=f"all (n={s.size})")
            if threshold is not None and math.isfinite(threshold):
                ax.axvline(threshold, color="#111", linestyle="--", linewidth=1.5,
                           label=f"threshold = {_fmt(threshold)}")
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


def _badge(anomalous: bool | None) -> str:
    if anomalous is None:
        return '<span class="badge none">no threshold</span>'
    if anomalous:
        return '<span class="badge bad">anomalous</span>'
    return '<span class="badge ok">normal</span>'


def _truth(label: int | None) -> str:
    if label is None:
        return ""
    text = "anomalous" if int(label) == 1 else "normal"
    return f'<span class="truth">truth: {_esc(text)}</span>'


def _card(item: ReportImage, rng: tuple[float, float] | None) -> str:
    rgb = _to_rgb_u8(item.image)
    parts = [f'<figure class="card{" flag" if item.anomalous else ""}">', '<div class="pair">']
    alt = _esc(item.name)
    parts.append(f'<img src="{_png_data_uri(_shrink(rgb))}" alt="{alt} (original)" title="original">')
    if item.amap is not None and rng is not None:
        ov = overlay(rgb, item.amap, rng[0], rng[1])
        parts.append(f'<img src="{_png_data_uri(_shrink(ov))}" alt="{alt} (overlay)" title="anomaly overlay">')
    else:
        parts.append('<div class="nomap">no anomaly map</div>')
    parts.append("</div><figcaption>")
    parts.append(f'<div class="name" title="{alt}">{alt}</div>')
    parts.append(f'<div class="meta"><span class="score">score {_esc(_fmt(item.score))}</span>'
                 f"{_badge(item.anomalous)}{_truth(item.label)}</div>")
    parts.append("</figcaption></figure>")
    return "".join(parts)


_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f5f6f8;color:#1d1f23;line-height:1.4}
main{max-width:1400px;margin:0 auto;padding:24px}
h1{margin:0 0 4px;font-size:1.7rem}
h2{margin:32px 0 12px;font-size:1.2rem;border-bottom:2px solid #dfe3e8;padding-bottom:4px}
.muted{color:#6b7280;font-size:.85rem}
.summary{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.stat{background:#fff;border-radius:8px;padding:10px 16px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.stat b{display:block;font-size:1.4rem}
table{border-collapse:collapse;background:#fff;border-radius:8px;overflow:hidden;box-shadow:0 1px 2px rgba(0,0,0,.08)}
th,td{padding:6px 14px;text-align:left;border-bottom:1px solid #eef0f3;vertical-align:top}
th{background:#fafbfc;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:16px}
.card{margin:0;background:#fff;border-radius:10px;padding:10px;box-shadow:0 1px 3px rgba(0,0,0,.1);border-top:4px solid #cfd8dc}
.card.flag{border-top-color:#c62828}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:6px}
.pair img{width:100%;height:auto;display:block;border-radius:4px;background:#000}
.nomap{display:flex;align-items:center;justify-content:center;background:#eceff1;color:#78909c;border-radius:4px;font-size:.85rem;min-height:80px}
figcaption{margin-top:8px}
.name{font-weight:600;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.meta{display:flex;flex-wrap:wrap;gap:8px;align-items:center;margin-top:4px;font-size:.9rem}
.score{font-variant-numeric:tabular-nums}
.badge{padding:1px 8px;border-radius:999px;color:#fff;font-size:.8rem;font-weight:600}
.badge.bad{background:#c62828}.badge.ok{background:#2e7d32}.badge.none{background:#90a4ae}
.truth{color:#455a64;font-size:.85rem}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(360px,1fr));gap:16px;align-items:start}
.plot{background:#fff;border-radius:10px;padding:10px;box-shadow:0 1px 3px rgba(0,0,0,.1)}
.plot svg{width:100%;height:auto;display:block}
.cbar{display:flex;align-items:center;gap:8px;margin:0 0 12px;font-size:.85rem}
.cbar-grad{width:220px;height:12px;border-radius:3px}
ul.skipped li{margin:2px 0}
details{margin-top:8px}
code{background:#eceff1;padding:0 4px;border-radius:3px}
"""


def write_report(
    path: Path,
    *,
    title: str,
    scores: np.ndarray,
    names: list[str],
    top: list[ReportImage],
    threshold: float | None = None,
    labels: np.ndarray | None = None,
    metrics: dict[str, float] | None = None,
    map_range: tuple[float, float] | None = None,
    skipped: list[tuple[str, str]] | None = None,
    info: dict[str, str] | None = None,
) -> Path:
    """Write one self-contained HTML report and return its path.

    Sections: title + info, summary, metrics, gallery of `top` (original | overlay),
    score histogram (with threshold), ROC (only when `labels` has both classes),
    skipped files, and a collapsible table of all scores. `map_range` fixes the
    heatmap colour scale; by default it spans the maps in `top`, so all cards share
    one scale. The all-scores table flags `score >= threshold`; the gallery shows
    the caller's own decisions (`ReportImage.anomalous`).
    """
    path = Path(path)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(names) != s.size:
        raise ValueError(f"{len(names)} names for {s.size} scores")
    y: np.ndarray | None = None
    if labels is not None:
        y = np.asarray(labels).reshape(-1).astype(np.int64)
        if y.size != s.size:
            raise ValueError(f"{y.size} labels for {s.size} scores")
    thr = None if threshold is None else float(threshold)

    hist_svg, roc_svg, auroc = _plots(s, y, thr)
    rng = map_range if map_range is not None else _auto_map_range(top)

    out: list[str] = []
    out.append("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">")
    out.append('<meta name="viewport" content="width=device-width, initial-scale=1">')
    out.append(f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body><main>")

    # --- header + info
    out.append(f"<h1>{_esc(title)}</h1>")
    out.append(f'<div class="muted">generated {_esc(datetime.now().strftime("%Y-%m-%d %H:%M"))}</div>')
    stats = [("images scored", str(s.size))]
    if thr is not None:
        n_flag = int(np.sum(s[np.isfinite(s)] >= thr))
        stats.append(("flagged anomalous", f"{n_flag}"))
        stats.append(("threshold", _fmt(thr)))
    if auroc is not None:
        stats.append(("AUROC", _fmt(auroc)))
    if skipped:
        stats.append(("skipped", str(len(skipped))))
    out.append('<div class="summary">')
    for k, v in stats:
        out.append(f'<div class="stat"><span class="muted">{_esc(k)}</span><b>{_esc(v)}</b></div>')
    out.append("</div>")
    if info:
        out.append('<table class="info">')
        for k, v in info.items():
            out.append(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>")
        out.append("</table>")

    # --- metrics
    if metrics:
        out.append("<h2>Metrics</h2><table class=\"metrics\">")
        for k, v in metrics.items():
            out.append(f'<tr><th>{_esc(k)}</th><td class="num">{_esc(_fmt(v))}</td></tr>')
        out.append("</table>")

    # --- gallery
    if top:
        out.append(f"<h2>Highest scores ({len(top)})</h2>")
        if rng is not None and any(t.amap is not None for t in top):
            out.append(_colorbar_css(rng[0], rng[1]))
        out.append('<div class="grid">')
        out.extend(_card(item, rng) for item in top)
        out.append("</div>")

    # --- plots
    if hist_svg or roc_svg:
        out.append("<h2>Scores</h2><div class=\"plots\">")
        if hist_svg:
            out.append(f'<div class="plot hist">{hist_svg}</div>')
        if roc_svg:
            out.append(f'<div class="plot roc">{roc_svg}</div>')
        out.append("</div>")
    n_bad = int(np.sum(~np.isfinite(s)))
    if n_bad:
        out.append(f'<p class="muted">{n_bad} non-finite score(s) left out of the plots.</p>')

    # --- skipped
    if skipped:
        out.append(f"<h2>Skipped files ({len(skipped)})</h2><ul class=\"skipped\">")
        for name, reason in skipped:
            out.append(f"<li><code>{_esc(name)}</code> — {_esc(reason)}</li>")
        out.append("</ul>")

    # --- all scores, collapsed: findable, but not in the way
    if s.size:
        order = np.argsort(-np.nan_to_num(s, nan=-np.inf), kind="stable")
        out.append(f"<h2>All scores</h2><details><summary>{s.size} images, highest first</summary>")
        head = "<tr><th>#</th><th>name</th><th>score</th>"
        head += "<th>decision</th>" if thr is not None else ""
        head += "<th>truth</th>" if y is not None else ""
        out.append(f'<table class="all">{head}</tr>')
        for rank, i in enumerate(order, 1):
            row = f'<tr><td class="num">{rank}</td><td>{_esc(names[i])}</td><td class="num">{_esc(_fmt(s[i]))}</td>'
            if thr is not None:
                row += f"<td>{_badge(bool(np.isfinite(s[i]) and s[i] >= thr))}</td>"
            if y is not None:
                row += f"<td>{_esc('anomalous' if y[i] == 1 else 'normal')}</td>"
            out.append(row + "</tr>")
        out.append("</table></details>")

    out.append("</main></body></html>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out), encoding="utf-8")
    return path
