"""The self-contained HTML report: top anomalies, score plots, skipped files, all scores.

Quality engineers would rather look than read, so the report turns scores and
anomaly maps into pictures. It is a single file (images as base64 JPEG, plots as
inline SVG) so it can be mailed or archived without a folder of assets next to it.
Jinja2 renders it from normalcy/runs/templates/ (layout.html: the page, its CSS, the summary and info;
images.html and series.html: the two reports' bodies; macros.html: cards, badges, colour bar, tables) with
autoescape on: this module hands the templates plain data, numbers already formatted by ``_fmt``, and
marks as Markup only what it built itself (SVG plots, JPEG data URIs). The drawing of maps is in
normalcy.images.heatmap (re-exported here), the plots in normalcy.runs.plots, whose
lazy matplotlib import keeps importing this module cheap and free of side effects.
"""

from __future__ import annotations

import base64
import io
import math
import os
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path, PurePath
from typing import Any, Sequence

import cv2
import jinja2
import numpy as np
from markupsafe import Markup
from PIL import Image

from normalcy.errors import InputError, option
from normalcy.files import check_writable, file_in_the_way, hold, release, remove_if_stale
from normalcy.images.heatmap import _to_rgb_u8, colorize, colour_range, overlay
from normalcy.images.io import printable
from normalcy.runs.plots import score_plots, three

__all__ = [
    "colorize",
    "overlay",
    "ReportImage",
    "gallery_image",
    "check_report_file",
    "write_report",
    "write_series_report",
]

# Longest side of gallery images in the HTML report; keeps the file mailable.
_GALLERY_MAX_SIDE = 512
MAX_SCORE_ROWS = 5000  # rows of an image report's table of scores (100,000 images made a 15 MB page)
MAX_SKIPPED_ROWS = 200  # skipped files a report lists


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


def gallery_image(name: str, score: float, anomalous: bool | None, image: np.ndarray, amap: Any,
                  label: int | None = None) -> ReportImage:
    """A ReportImage already at gallery size, its map shrunk alike: a run that keeps its top images
    for the report then holds small pictures, whatever the size of the images. ``amap``: an array, None, or a
    map not drawn yet (a LazyMap, with ``grid`` and ``at``): drawn at the card's size from its patch grid, as
    eval's pixel metrics draw theirs (``maps_at``); drawn at full size and shrunk, each of predict --no-heatmaps'
    top 24 4000x3000 photos cost a 48 MB map and 0.1 s for a 512-pixel card."""
    rgb = _shrink(_to_rgb_u8(image))
    grid = getattr(amap, "grid", None)
    if grid is not None:  # a grid larger than the card (rare) is drawn in full and averaged, as before
        amap = amap.at(rgb.shape[:2]) if grid.shape[0] * grid.shape[1] <= rgb.shape[0] * rgb.shape[1] else amap.full
    if amap is not None:
        amap = _gallery_map(amap, rgb.shape[:2])
    return ReportImage(name=name, score=score, anomalous=anomalous, image=rgb, amap=amap, label=label)


def _gallery_map(amap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A map for a gallery picture of ``size`` (H, W): one with more pixels is shrunk by area averaging, as
    the picture is; a smaller one (a patch grid) is left for :func:`overlay` to enlarge bilinearly, as it
    would at full size (area averaging enlarges it in blocks)."""
    a = np.asarray(amap)
    h, w = size
    # another shape: overlay says what is wrong with it
    if a.ndim in (2, 3) and a.shape[:2] != (h, w) and a.shape[0] * a.shape[1] > h * w:
        return cv2.resize(a.astype(np.float32, copy=False), (w, h), interpolation=cv2.INTER_AREA)
    return a


@lru_cache(maxsize=None)
def _env() -> jinja2.Environment:
    """The templates of normalcy/runs/templates. Autoescape is on, so every value is escaped but a
    ``Markup`` (the SVG plots and JPEG data URIs, made so here and nowhere else); a missing value is an
    error (StrictUndefined); every printed value goes through :func:`_printable`."""
    return jinja2.Environment(loader=jinja2.PackageLoader("normalcy.runs", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, finalize=_printable, trim_blocks=True,
                              lstrip_blocks=True, keep_trailing_newline=True)


def _printable(value: Any) -> Any:
    """A value as the page shows it: a byte of a non-UTF-8 file name shows as U+FFFD instead of failing to
    encode; Markup passes as it is (autoescape then escapes the rest)."""
    return value if isinstance(value, Markup) else printable(str(value))


def _fmt(value: Any) -> str:
    """Floats to 3 decimals (3 significant digits where those would all be 0), NaN/None as an en dash;
    everything else as str."""
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
    return three(f)


def _jpeg_data_uri(rgb: np.ndarray) -> str:
    """A gallery picture as a data URI. JPEG at quality 90 without chroma subsampling (no colour bleeding at a
    heatmap's edges): PNG made hazelnut_toy's 24 cards a 17 MB page, and photos (most inputs are JPEGs
    already) 5-7 times the bytes for no difference one can see at a card's size."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90, subsampling=0)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


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
        a = np.asarray(item.amap)  # in its own float type: a float64 copy and its finite values were 3 maps' memory
        if not np.issubdtype(a.dtype, np.floating):
            a = a.astype(np.float64)
        finite = np.isfinite(a)
        if finite.any():
            lo = min(lo, float(np.min(a, where=finite, initial=np.inf)))
            hi = max(hi, float(np.max(a, where=finite, initial=-np.inf)))
    if not math.isfinite(lo):
        return None
    return lo, hi


@dataclass
class _Card:
    """What the card of one gallery image shows."""

    name: str
    shown: str  # the name below the card: the part that tells the images apart (the whole name is its title)
    score: str
    anomalous: bool | None
    truth: str | None
    original: Markup  # JPEG data URI
    overlay: Markup | None  # JPEG data URI, None without a map
    scale: str | None = None  # "colour to X" where the overlay's colour runs past the shared scale


def _colorbar(vmin: float, vmax: float) -> dict[str, Any]:
    """The legend of the maps (a CSS gradient in the page, no extra image) sampled from the same colormap."""
    stops = colorize(np.linspace(0.0, 1.0, 11)[None, :], 0.0, 1.0)[0]
    return {"vmin": _fmt(vmin), "vmax": _fmt(vmax), "stops": stops.tolist()}


def _truth(label: int | None) -> str | None:
    return None if label is None else "anomalous" if int(label) == 1 else "normal"


def _shown_names(names: Sequence[str]) -> list[str]:
    """Names below the cards without the folder they all share: a card is a few centimetres wide, and an
    absolute path cut at its end ("/work/data/hazelnut/test/colo...") hid the file name, the part that
    differs. One image keeps its file name. Split as this system splits paths: on Linux a backslash is part of
    a file name (``a\\b.png`` was shown as ``a/b.png``)."""
    parts = [PurePath(n).parts for n in names]
    if not parts:
        return []
    common = 0
    while all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
        common += 1
    return ["/".join(p[common:]) or n for p, n in zip(parts, names)]


def _card(item: ReportImage, rng: tuple[float, float] | None, shown: str) -> _Card:
    """The card of one image, drawn at gallery size: a full-size image was coloured whole and only then shrunk
    (a 4000x3000 photo: 0.7 s and 70 MB more a card); one already at gallery size is drawn as it is."""
    small = gallery_image(item.name, item.score, item.anomalous, item.image, item.amap, item.label)
    heat, scale = None, None
    if small.amap is not None and rng is not None:
        heat = Markup(_jpeg_data_uri(overlay(small.image, small.amap, rng[0], rng[1])))
        top = colour_range(small.amap, rng[0], rng[1])[1]
        scale = f"colour to {_fmt(top)}" if top > rng[1] else None  # its map runs past the shared scale
    return _Card(name=item.name, shown=shown, score=_fmt(item.score), anomalous=item.anomalous,
                 truth=_truth(item.label), original=Markup(_jpeg_data_uri(small.image)), overlay=heat, scale=scale)


def _write_page(path: Path, template: str, title: str, **context: Any) -> Path:
    """``template`` (images.html or series.html, in templates/layout.html) rendered with ``context`` and
    written to ``path``. The context holds plain data; Markup only for the SVG plots and JPEG data URIs."""
    page = _env().get_template(template).render(title=title, generated=datetime.now().strftime("%Y-%m-%d %H:%M"),
                                                **context)
    path.parent.mkdir(parents=True, exist_ok=True)
    # written beside it and renamed into place: two `eval --report` into one file at once interleaved their
    # pages (one's end after the other's), and a full disk or Ctrl-C left half a page where a report was
    stale = re.compile(re.escape(f".{path.name}.") + r"[0-9a-f]{8}\.partial")
    try:
        entries = list(os.scandir(path.parent))
    except OSError:  # a folder that cannot be listed: nothing to tidy; writing says what matters
        entries = []
    for e in entries:  # what a process killed outright while it wrote this page left
        if stale.fullmatch(e.name) and e.is_file(follow_symlinks=False):
            remove_if_stale(path.parent / e.name)  # another's, being written, is held: kept
    staging = path.parent / f".{path.name}.{secrets.token_hex(4)}.partial"
    try:
        staging.touch()
        hold(staging)
        staging.write_text(page, encoding="utf-8")
        os.replace(staging, path)
    finally:
        release(staging)
        if os.path.lexists(staging):
            os.unlink(staging)
    return path


def check_report_file(path: Path) -> None:
    """Refuse, before an evaluation's minutes of work, a report that could not be written after it: a folder,
    or a place that cannot be written (the error came as a traceback once the metrics were computed)."""
    path = Path(os.path.abspath(path))
    if path.is_dir():
        raise InputError(f"{path}: a folder; {option('report')} names the HTML file to write (e.g. "
                         f"{path / 'report.html'})")
    blocked = file_in_the_way(path)
    if blocked is not None:
        raise InputError(f"{path}: cannot write the report there ({blocked} is a file)")
    existing = path if path.exists() else next(p for p in path.parents if p.exists())  # its folders are made later
    if existing != path:
        check_writable(existing, path, "the report")
        return
    try:  # tried, not asked (os.access says yes to root on /proc): nothing is changed
        if path.is_file():  # not a pipe, which would wait for its reader here
            open(path, "ab").close()
    except OSError as err:
        raise InputError(f"{path}: cannot write the report there ({err.strerror or err})") from None


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
    scores_file: str | None = None,
    skipped_file: str | None = None,
) -> Path:
    """Write one self-contained HTML report and return its path.

    Sections: title + info, summary, metrics, gallery of `top` (original | overlay),
    score histogram (with threshold), ROC (only when `labels` has both classes),
    skipped files, and a collapsible table of the scores. `map_range` fixes the
    heatmap colour scale; by default it spans the maps in `top`, so all cards share
    one scale. The scores table flags `score >= threshold`; the gallery shows
    the caller's own decisions (`ReportImage.anomalous`). The table lists the
    MAX_SCORE_ROWS highest scores and the page MAX_SKIPPED_ROWS skipped files, so that
    a run of 100,000 images stays a page a browser opens; `scores_file` and
    `skipped_file` name where the rest is (a run's scores.csv and skipped.csv).
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

    hist_svg, roc_svg, auroc, not_drawn = None, None, None, None
    try:
        hist_svg, roc_svg, auroc = score_plots(s, y, thr)
    except (ValueError, OverflowError) as err:  # a plot that cannot be drawn never costs the run
        not_drawn = str(err)[:200]
    rng = map_range if map_range is not None else _auto_map_range(top)

    stats: list[tuple[str, Any]] = [("images scored", s.size)]
    if thr is not None:
        # the run's one rule (numerics.stats.decide): an infinite score is flagged there, so it is here (NaN is not)
        stats.append(("flagged anomalous", int(np.sum(s >= thr))))
        stats.append(("threshold", _fmt(thr)))
    if auroc is not None:
        stats.append(("AUROC", _fmt(auroc)))
    if skipped:
        stats.append(("skipped", len(skipped)))
    rows = []
    if s.size:  # the highest scores first (collapsed in the page: findable, but not in the way)
        order = np.argsort(-np.nan_to_num(s, nan=-np.inf), kind="stable")[:MAX_SCORE_ROWS]
        for rank, i in enumerate(order.tolist(), 1):
            rows.append({"rank": rank, "name": names[i], "score": _fmt(s[i]),
                         "decision": thr is not None and bool(s[i] >= thr),
                         "truth": None if y is None else _truth(y[i])})
    return _write_page(
        path, "images.html", title, stats=stats, info=list((info or {}).items()),
        metrics=[(k, _fmt(v)) for k, v in (metrics or {}).items()],
        cards=[_card(item, rng, shown) for item, shown in zip(top, _shown_names([t.name for t in top]))],
        colorbar=_colorbar(*rng) if rng is not None and any(t.amap is not None for t in top) else None,
        hist=Markup(hist_svg) if hist_svg else None, roc=Markup(roc_svg) if roc_svg else None,
        not_drawn=not_drawn, n_nonfinite=int(np.sum(~np.isfinite(s))), skipped=list(skipped or [])[:MAX_SKIPPED_ROWS],
        n_skipped=len(skipped or []), skipped_file=skipped_file, rows=rows, n_rows=s.size, scores_file=scores_file,
        decisions=thr is not None, truths=y is not None)


# --------------------------------------------------------------------------------------------- series report

MAX_SERIES_ROWS = 5000  # rows of the all-series table
MAX_EVENT_ROWS = 20  # events listed under each drawn series


def _runs(labels: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (first, last) indices of the runs of non-zero labels."""
    y = np.asarray(labels) != 0
    edges = np.diff(np.concatenate(([0], y.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), (np.flatnonzero(edges == -1) - 1).tolist()))


def _drawn_as_dates(file: Any, time: np.ndarray) -> bool:
    """Whether a series' times are drawn as dates: times written as dates (years 1-9999), or epoch seconds
    written as numbers that a plot can draw as dates (years 1973-9999; other numbers are drawn as they are).
    Dates were drawn as dates from 1973 only: a series of the 1950s had an axis of epoch seconds (-6.5, 1e8)."""
    from normalcy.series.io import time_of

    if file.time_column is None or not len(time):
        return False
    lo, hi = float(time.min()), float(time.max())
    return -6.2e10 < lo <= hi < 2.5e11 and (lo > 1e8 or time_of(file.times[0])[0] == "date")


def _zoned(texts: Sequence[str]) -> bool:
    """Whether times as written carry a zone other than UTC: the plot draws times in UTC, so its axis reads
    09:00 hours off a table of events that says 09:00+09:00, unless it says so. Up to 101 times spread over
    the file are asked, not the first alone (a London file starts at +00:00 in winter and goes to +01:00), and
    an offset of hours alone (+01) is one."""
    from normalcy.series.io import offset_of

    picks = [*texts[::max(1, len(texts) // 100)], texts[-1]] if len(texts) else []
    return any(offset_of(t) not in (None, 0.0) for t in picks)


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
    stats = [(k, v) for k, v in (("series", summary.get("n_series")), ("rows scored", summary.get("n_rows")),
                                 ("anomalous rows", summary.get("n_anomalous")), ("events", summary.get("n_events")),
                                 ("skipped", len(skipped) or None)) if v is not None]
    notes = list(dict.fromkeys(n for p in parts for n in p.series.notes))  # a file's own notes: once, not a series each
    shown = []
    for rank, k in enumerate(ranked[:max(0, top)]):
        p = parts[k]
        s, sc = p.series, p.scored
        times = files[p.file].times
        dates = _drawn_as_dates(files[p.file], s.time)
        idx = [s.columns.index(c) for c in sc.top if c in s.columns]
        svg, error = None, None
        try:
            svg = Markup(series_svg(s.time, bool(dates), s.values[:, idx], [s.columns[j] for j in idx], sc.score,
                                    sc.threshold, [(e.first, e.last) for e in sc.events],
                                    _runs(s.labels) if s.labels is not None else [], f"s{rank}",
                                    note="times in UTC" if dates and _zoned(times) else None))
        except (ValueError, OverflowError) as err:  # a plot that cannot be drawn never costs the run
            error = str(err)[:200]
        events = []
        if sc.events:
            rep = np.empty(len(s), np.int64)
            rep[s.row_of] = s.file_rows
            events = [{"start": times[rep[e.first]], "end": times[rep[e.last]], "rows": e.last - e.first + 1,
                       "peak": _fmt(e.peak_score), "metrics": ", ".join(e.metrics)}
                      for e in sorted(sc.events, key=lambda e: -e.peak_score)[:MAX_EVENT_ROWS]]
        shown.append({"name": p.name, "rows": len(s), "n_events": len(sc.events), "pruned": sc.pruned,
                      "anomalous": int(sc.decision.sum()), "threshold": _fmt(sc.threshold), "detector": sc.detector,
                      "window": sc.window, "svg": svg, "error": error, "events": events,
                      "more_events": max(0, len(sc.events) - MAX_EVENT_ROWS)})
    rows = [{"rank": rank, "name": parts[k].name, "rows": len(parts[k].series), "events": len(parts[k].scored.events),
             "anomalous": int(parts[k].scored.decision.sum()), "peak": _fmt(peak(parts[k])),
             "threshold": _fmt(parts[k].scored.threshold)}
            for rank, k in enumerate(ranked[:MAX_SERIES_ROWS], 1)]
    return _write_page(path, "series.html", title, stats=stats, info=list(info.items()), notes=notes[:50],
                       n_notes=len(notes), shown=shown, n_series=len(parts), n_skipped=len(skipped),
                       skipped=skipped[:MAX_SKIPPED_ROWS], rows=rows, more_rows=max(0, len(parts) - MAX_SERIES_ROWS))
