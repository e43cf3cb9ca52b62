"""The self-contained HTML report: top anomalies, score plots, skipped files, all scores.

Quality engineers would rather look than read, so the report turns scores and
anomaly maps into pictures. It is a single file (images as base64 PNG, plots as
inline SVG) so it can be mailed or archived without a folder of assets next to it.
The page, its CSS and its cards are files in normalcy/runs/templates/; the drawing of
maps is in normalcy.images.heatmap (re-exported here), the plots in normalcy.runs.plots, whose
lazy matplotlib import keeps importing this module cheap and free of side effects.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import Any, Sequence

import cv2
import numpy as np
from PIL import Image

from normalcy.images.heatmap import _to_rgb_u8, colorize, overlay
from normalcy.images.io import printable
from normalcy.runs.plots import score_plots

__all__ = [
    "colorize",
    "overlay",
    "ReportImage",
    "gallery_image",
    "write_report",
    "write_series_report",
]

# Longest side of gallery images in the HTML report; keeps the file mailable.
_GALLERY_MAX_SIDE = 512


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


def gallery_image(name: str, score: float, anomalous: bool | None, image: np.ndarray, amap: np.ndarray | None,
                  label: int | None = None) -> ReportImage:
    """A ReportImage already at gallery size, its map shrunk alike: a run that keeps its top images
    for the report then holds small pictures, whatever the size of the images."""
    rgb = _shrink(_to_rgb_u8(image))
    if amap is not None and rgb.shape[:2] != np.shape(image)[:2]:
        amap = cv2.resize(np.asarray(amap, np.float32), (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_AREA)
    return ReportImage(name=name, score=score, anomalous=anomalous, image=rgb, amap=amap, label=label)


@lru_cache(maxsize=None)
def _template(name: str) -> Template:
    """A file of normalcy/runs/templates; values are HTML-escaped by the caller before substitution."""
    return Template((files("normalcy.runs") / "templates" / name).read_text(encoding="utf-8"))


def _esc(value: Any) -> str:
    """HTML-escaped text; a byte of a non-UTF-8 file name shows as U+FFFD instead of failing to encode."""
    return html.escape(printable(str(value)), quote=True)


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
    return _template("colorbar.html").substitute(vmin=_esc(_fmt(vmin)), vmax=_esc(_fmt(vmax)),
                                                 gradient=grad).rstrip("\n")


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
    alt = _esc(item.name)
    if item.amap is not None and rng is not None:
        ov = overlay(rgb, item.amap, rng[0], rng[1])
        heat = f'<img src="{_png_data_uri(_shrink(ov))}" alt="{alt} (overlay)" title="anomaly overlay">'
    else:
        heat = '<div class="nomap">no anomaly map</div>'
    return _template("card.html").substitute(
        flag=" flag" if item.anomalous else "", original=_png_data_uri(_shrink(rgb)), alt=alt, heat=heat,
        score=_esc(_fmt(item.score)), badge=_badge(item.anomalous), truth=_truth(item.label)).rstrip("\n")


def _write_page(path: Path, title: str, body: list[str]) -> Path:
    """The report page (templates/report.html and its CSS) around ``body``, written to ``path``."""
    page = _template("report.html").substitute(
        title=_esc(title), css=_template("report.css").template,
        generated=_esc(datetime.now().strftime("%Y-%m-%d %H:%M")), body="\n".join(body))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


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

    hist_svg, roc_svg, auroc = score_plots(s, y, thr)
    rng = map_range if map_range is not None else _auto_map_range(top)

    out: list[str] = []
    # --- summary + info
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

    return _write_page(path, title, out)


# --------------------------------------------------------------------------------------------- series report

MAX_SERIES_ROWS = 5000  # rows of the all-series table
MAX_EVENT_ROWS = 20  # events listed under each drawn series


def _runs(labels: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (first, last) indices of the runs of non-zero labels."""
    y = np.asarray(labels) != 0
    edges = np.diff(np.concatenate(([0], y.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), (np.flatnonzero(edges == -1) - 1).tolist()))


def write_series_report(path: Path, *, title: str, files: Sequence[Any], parts: Sequence[Any], top: int,
                        skipped: list[tuple[str, str]], info: dict[str, Any], summary: dict[str, Any]) -> Path:
    """The report of a series run: a summary, what io.py repaired, the ``top`` series with the highest peaks
    (relative to their thresholds) drawn (top metrics, score, threshold, events shaded, labelled anomalies
    when the file has labels) with their events, skipped files and series, and a table of every series.
    ``parts``: normalcy.runs.format.SeriesRunPart."""
    from normalcy.runs.plots import series_svg

    path = Path(path)

    def peak(p: Any) -> float:
        return float(p.scored.score.max()) / max(p.scored.threshold, 1e-12) if len(p.scored.score) else 0.0

    ranked = sorted(range(len(parts)), key=lambda k: -peak(parts[k]))
    out: list[str] = ['<div class="summary">']
    for k, v in (("series", summary.get("n_series")), ("rows scored", summary.get("n_rows")),
                 ("anomalous rows", summary.get("n_anomalous")), ("events", summary.get("n_events")),
                 ("skipped", len(skipped) or None)):
        if v is not None:
            out.append(f'<div class="stat"><span class="muted">{_esc(k)}</span><b>{_esc(v)}</b></div>')
    out.append("</div>")
    if info:
        out.append('<table class="info">')
        out.extend(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in info.items())
        out.append("</table>")
    notes = [n for p in parts for n in p.series.notes]
    if notes:
        out.append(f"<h2>Repaired before scoring ({len(notes)})</h2><ul class=\"skipped\">")
        out.extend(f"<li>{_esc(n)}</li>" for n in notes[:50])
        out.append("</ul>" + (f'<p class="muted">and {len(notes) - 50} more in run.json</p>' if len(notes) > 50 else ""))
    shown = ranked[:max(0, top)]
    if shown:
        out.append(f"<h2>Series with the highest scores ({len(shown)} of {len(parts)})</h2>")
    for rank, k in enumerate(shown):
        p = parts[k]
        s, sc = p.series, p.scored
        times = files[p.file].times
        # epoch seconds a plot can draw as dates (years 1973-9999); other numbers as they are
        dates = files[p.file].time_column is not None and len(s.time) and 1e8 < float(s.time.min()) <= float(
            s.time.max()) < 2.5e11
        idx = [s.columns.index(c) for c in sc.top if c in s.columns]
        try:
            svg = series_svg(s.time, bool(dates), s.values[:, idx], [s.columns[j] for j in idx], sc.score,
                             sc.threshold, [(e.first, e.last) for e in sc.events],
                             _runs(s.labels) if s.labels is not None else [], f"s{rank}")
        except (ValueError, OverflowError) as err:  # a plot that cannot be drawn never costs the run
            svg = f'<p class="muted">not drawn: {_esc(str(err)[:200])}</p>'
        pruned = f"{sc.pruned} pruned as noise · " if sc.pruned else ""
        out.append(f'<h3>{_esc(p.name)}</h3><p class="muted">{len(s)} rows · {len(sc.events)} event(s) · {pruned}'
                   f'{int(sc.decision.sum())} anomalous row(s) · threshold {_esc(_fmt(sc.threshold))} · '
                   f'{_esc(sc.detector)}, window {sc.window}</p><div class="plot series">{svg}</div>')
        if sc.events:
            rep = np.empty(len(s), np.int64)
            rep[s.row_of] = s.file_rows
            out.append('<table class="all"><tr><th>start</th><th>end</th><th>rows</th><th>peak score</th>'
                       "<th>metrics</th></tr>")
            for e in sorted(sc.events, key=lambda e: -e.peak_score)[:MAX_EVENT_ROWS]:
                out.append(f"<tr><td>{_esc(times[rep[e.first]])}</td><td>{_esc(times[rep[e.last]])}</td>"
                           f'<td class="num">{e.last - e.first + 1}</td><td class="num">{_esc(_fmt(e.peak_score))}'
                           f"</td><td>{_esc(', '.join(e.metrics))}</td></tr>")
            out.append("</table>")
            if len(sc.events) > MAX_EVENT_ROWS:
                out.append(f'<p class="muted">{len(sc.events) - MAX_EVENT_ROWS} more in events.csv</p>')
    if skipped:
        out.append(f"<h2>Not scored ({len(skipped)})</h2><ul class=\"skipped\">")
        out.extend(f"<li><code>{_esc(n)}</code> — {_esc(r)}</li>" for n, r in skipped[:200])
        out.append("</ul>")
    if parts:
        out.append(f"<h2>All series</h2><details><summary>{len(parts)} series, highest peak first</summary>")
        out.append('<table class="all"><tr><th>#</th><th>series</th><th>rows</th><th>events</th>'
                   "<th>anomalous rows</th><th>peak / threshold</th><th>threshold</th></tr>")
        for rank, k in enumerate(ranked[:MAX_SERIES_ROWS], 1):
            p = parts[k]
            out.append(f'<tr><td class="num">{rank}</td><td>{_esc(p.name)}</td><td class="num">{len(p.series)}</td>'
                       f'<td class="num">{len(p.scored.events)}</td><td class="num">{int(p.scored.decision.sum())}</td>'
                       f'<td class="num">{_esc(_fmt(peak(p)))}</td><td class="num">{_esc(_fmt(p.scored.threshold))}</td></tr>')
        out.append("</table></details>")
        if len(parts) > MAX_SERIES_ROWS:
            out.append(f'<p class="muted">{len(parts) - MAX_SERIES_ROWS} more series in scores.csv</p>')
    return _write_page(path, title, out)
