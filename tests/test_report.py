"""Tests for normalcy.images.heatmap and normalcy.runs.report: colour mapping, overlays, PNG heatmaps and the HTML report."""

from __future__ import annotations

import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from normalcy.images.heatmap import colorize, colour_range, overlay, side_by_side, write_png
from normalcy.runs.report import ReportImage, write_report


def _image(h: int = 32, w: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _amap(h: int = 32, w: int = 48) -> np.ndarray:
    a = np.zeros((h, w), dtype=np.float32)
    a[h // 4 : h // 2, w // 4 : w // 2] = 1.0
    return a


# --------------------------------------------------------------------------- colorize


def test_colorize_high_is_red_low_is_blue() -> None:
    a = np.array([[0.0, 1.0]], dtype=np.float32)
    out = colorize(a, 0.0, 1.0).astype(int)
    low, high = out[0, 0], out[0, 1]
    assert low[2] > low[0], f"low value should be bluish (RGB), got {low}"
    assert high[0] > high[2], f"high value should be reddish (RGB), got {high}"


def test_colorize_clips_to_range() -> None:
    a = np.array([[-5.0, 0.0, 1.0, 7.0]])
    out = colorize(a, 0.0, 1.0)
    assert np.array_equal(out[0, 0], out[0, 1])
    assert np.array_equal(out[0, 2], out[0, 3])


@pytest.mark.parametrize("vmin,vmax", [(0.5, 0.5), (1.0, 0.0)])
def test_colorize_degenerate_range_does_not_crash(vmin: float, vmax: float) -> None:
    with np.errstate(all="raise"):
        out = colorize(np.array([[0.0, 0.5, 1.0]]), vmin, vmax)
    assert out.shape == (1, 3, 3) and out.dtype == np.uint8


def test_colorize_nan_is_cold_and_infinities_clip() -> None:
    out = colorize(np.array([[np.nan, np.inf, -np.inf, 0.0, 1.0]]), 0.0, 1.0)
    assert out.shape == (1, 5, 3) and out.dtype == np.uint8
    assert np.array_equal(out[0, 0], out[0, 3]) and np.array_equal(out[0, 2], out[0, 3])
    assert np.array_equal(out[0, 1], out[0, 4])


# --------------------------------------------------------------------------- overlay


def test_overlay_colours_only_what_exceeds_the_floor() -> None:
    img = np.full((32, 48, 3), 128, dtype=np.uint8)
    a = np.zeros((32, 48), dtype=np.float32)
    a[:, 24:] = 1.0
    a[:, 36:] = 0.5
    out = overlay(img, a, 0.0, 1.0, alpha=0.5)
    assert out.shape == (32, 48, 3) and out.dtype == np.uint8
    assert np.array_equal(out[16, 5], img[16, 5])  # at the floor: the image untouched
    hot, half = out[16, 30].astype(int), out[16, 40].astype(int)
    assert hot[0] > hot[2] and abs(hot - 128).sum() > abs(half - 128).sum() > 0  # hotter: redder and stronger


def test_overlay_gray_image_and_resized_map() -> None:
    gray = np.full((40, 60), 200, dtype=np.uint8)
    small = np.random.default_rng(1).random((5, 7)).astype(np.float32)
    out = overlay(gray, small, 0.0, 1.0)
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8


def test_overlay_alpha_extremes() -> None:
    img = _image()
    a = _amap()
    assert np.array_equal(overlay(img, a, 0.0, 1.0, alpha=0.0), img)
    full = overlay(img, a, 0.0, 1.0, alpha=1.0)
    top = a >= 1.0
    assert top.any() and np.array_equal(full[top], colorize(a, 0.0, 1.0)[top])  # at vmax: the colour alone


def test_overlay_degenerate_range_still_shows_the_hot_region() -> None:
    img = _image()
    out = overlay(img, _amap(), 0.3, 0.3, alpha=1.0)
    assert out.shape == (32, 48, 3)
    assert np.array_equal(out[10, 15], colorize(np.ones((1, 1)), 0.0, 1.0)[0, 0])  # above vmin: hottest
    assert np.array_equal(out[0, 0], img[0, 0])  # below: the image


def test_a_map_past_the_range_nearly_everywhere_still_shows_where_it_is_worst() -> None:
    """elpv's cracked cells: their maps exceed the normal patches' 99.9th percentile (the range's top) nearly
    everywhere, and the overlay was one flat red. Its colour now runs to the map's own 99th percentile."""
    img = np.full((40, 40, 3), 128, dtype=np.uint8)
    a = np.full((40, 40), 3.0, dtype=np.float32)  # three times the range's top over the whole image
    a[10:20, 10:20] = 6.0  # and twice that where the defect is worst
    assert colour_range(a, 0.0, 1.0) == (0.0, 6.0)
    out = overlay(img, a, 0.0, 1.0, alpha=1.0)
    worst, rest = out[15, 15].astype(int), out[30, 30].astype(int)
    assert np.array_equal(worst, colorize(np.ones((1, 1)), 0.0, 1.0)[0, 0])  # the worst part at full heat
    assert abs(worst - rest).sum() > 100  # and the rest of the part in another colour, not the same red


def test_a_map_within_the_range_keeps_the_shared_scale() -> None:
    a = np.zeros((100, 100), dtype=np.float32)
    a[:1, :] = 5.0  # 1 % of the map past the top: a small defect, drawn on the shared scale
    assert colour_range(a, 0.0, 1.0) == (0.0, 1.0)
    assert colour_range(np.full((4, 4), np.nan), 0.0, 1.0) == (0.0, 1.0)
    assert colour_range(np.full((4, 4), 9.0), 2.0, 2.0) == (2.0, 2.0)  # a degenerate range stays as it is


# --------------------------------------------------------------------------- heatmap PNGs


def test_heatmap_png_is_original_beside_overlay(tmp_path: Path) -> None:
    """A run's heatmaps/NAME.png, as RunWriter writes it: the untouched original left of the overlay."""
    p = tmp_path / "h.png"
    img = _image(32, 48)
    write_png(p, side_by_side(img, overlay(img, _amap(8, 12), 0.0, 1.0)))
    with Image.open(p) as im:
        assert im.format == "PNG"
        assert im.size == (2 * 48, 32)
        arr = np.asarray(im.convert("RGB"))
    assert np.array_equal(arr[:, :48], img)  # left half is the untouched original


# --------------------------------------------------------------------------- write_report


def _top(n: int = 3, with_map: bool = True) -> list[ReportImage]:
    items = []
    for i in range(n):
        items.append(
            ReportImage(
                name=f"img_{i}.png",
                score=float(n - i),
                anomalous=i == 0,
                image=_image(seed=i),
                amap=_amap() * (n - i) if with_map else None,
                label=1 if i == 0 else 0,
            )
        )
    return items


def _count_img(text: str) -> int:
    return len(re.findall(r"<img\b", text))


def test_write_report_full(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.array([0] * 20 + [1] * 10)
    scores = rng.normal(size=30) + 2.0 * labels
    names = [f"s{i}.png" for i in range(30)]
    names[3] = "<b>x</b>"
    top = _top(3)
    top[1].name = "<b>x</b>"
    p = write_report(
        tmp_path / "out" / "report.html",
        title="Solar cells & <friends>",
        scores=scores,
        names=names,
        top=top,
        threshold=1.0,
        labels=labels,
        metrics={"image_auroc": 0.91234, "pixel_aupro": float("nan")},
        skipped=[("broken.jpg", "cannot decode"), ("tiny.png", "too small <8px")],
        info={"detector": "patchcore", "backbone": "efficientnet-lite0", "model dir": "/m"},
    )
    assert p == tmp_path / "out" / "report.html" and p.exists()
    text = p.read_text(encoding="utf-8")

    assert _count_img(text) == 6  # original + overlay per card
    assert text.count("data:image/jpeg;base64,") == 6  # JPEG: PNG made 24 cards a 17 MB page
    assert "Solar cells &amp; &lt;friends&gt;" in text
    assert "<friends>" not in text
    # escaping
    assert "<b>x</b>" not in text
    assert "&lt;b&gt;x&lt;/b&gt;" in text
    # plots: histogram + ROC
    assert text.count("<svg") == 2
    assert 'class="plot roc"' in text and 'class="plot hist"' in text
    assert "AUROC" in text
    # metrics: 3 decimals, NaN as dash
    assert "0.912" in text and "0.91234" not in text
    assert "–" in text
    # info and skipped
    assert "efficientnet-lite0" in text and "model dir" in text
    assert "broken.jpg" in text and "cannot decode" in text
    assert "too small &lt;8px" in text
    # badges
    assert "badge bad" in text and "badge ok" in text
    assert "truth: anomalous" in text


def test_write_report_without_labels_has_no_roc(tmp_path: Path) -> None:
    scores = np.linspace(0, 1, 12)
    p = write_report(
        tmp_path / "r.html",
        title="no labels",
        scores=scores,
        names=[f"n{i}" for i in range(12)],
        top=_top(2),
        threshold=0.5,
    )
    text = p.read_text(encoding="utf-8")
    assert text.count("<svg") == 1  # histogram only
    assert 'class="plot roc"' not in text
    assert _count_img(text) == 4
    assert "Skipped" not in text


def test_write_report_one_class_labels_has_no_roc(tmp_path: Path) -> None:
    p = write_report(
        tmp_path / "r.html",
        title="t",
        scores=np.arange(5.0),
        names=list("abcde"),
        top=[],
        labels=np.zeros(5, dtype=int),
    )
    text = p.read_text(encoding="utf-8")
    assert 'class="plot roc"' not in text
    assert text.count("<svg") == 1


def test_write_report_without_maps_or_threshold(tmp_path: Path) -> None:
    top = _top(2, with_map=False)
    for t in top:
        t.anomalous = None
    p = write_report(
        tmp_path / "r.html",
        title="t",
        scores=np.array([1.0, 1.0, float("nan")]),  # constant + non-finite scores
        names=["a", "b", "c"],
        top=top,
    )
    text = p.read_text(encoding="utf-8")
    assert _count_img(text) == 2  # originals only
    assert "no anomaly map" in text and "no threshold" in text


def test_write_report_degenerate_map_range(tmp_path: Path) -> None:
    top = _top(1)
    top[0].amap = np.zeros((32, 48), dtype=np.float32)  # constant map: auto range is empty
    p = write_report(tmp_path / "r.html", title="t", scores=np.array([0.0]), names=["a"], top=top)
    assert _count_img(p.read_text(encoding="utf-8")) == 2


def test_write_report_rejects_mismatched_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_report(tmp_path / "r.html", title="t", scores=np.zeros(3), names=["a"], top=[])


def test_import_has_no_matplotlib_side_effect() -> None:
    """Importing the module must not pull in matplotlib (or pick a backend)."""
    code = "import sys, normalcy.runs.report; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 0, res.stderr


def test_inline_svg_ids_unique_and_resolvable(tmp_path: Path) -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])
    p = write_report(
        tmp_path / "r.html",
        title="t",
        scores=np.array([0.1, 0.2, 0.6, 0.5, 0.8, 0.9]),
        names=list("abcdef"),
        top=[],
        labels=labels,
        threshold=0.55,
    )
    text = p.read_text(encoding="utf-8")
    ids = re.findall(r' id="([^"]+)"', text)
    assert ids and len(ids) == len(set(ids))
    refs = set(re.findall(r'url\(#([^)]+)\)', text)) | set(re.findall(r'href="#([^"]+)"', text))
    assert refs <= set(ids)


# --------------------------------------------------------------------------- names are text, never markup

HOSTILE = ["<img src=x onerror=alert(1)>.png", 'a&b"c']


class _Page(HTMLParser):
    """The tags, attributes and text of a page as a browser parses them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def assert_names_escaped(text: str, names: list[str]) -> _Page:
    """``text``, a report that shows ``names`` (HOSTILE), shows them as text and made no tag or attribute
    of them; also used by test_series_cli."""
    page = _Page()
    page.feed(text)
    assert all("onerror" not in attrs for _, attrs in page.tags)  # no tag made of a name
    assert "<img src=x" not in text and 'b"c' not in text
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in text and "a&amp;b" in text
    for name in names:
        assert name in page.text  # shown as text, as it is
    return page


def test_hostile_names_are_escaped_in_the_image_report(tmp_path: Path) -> None:
    top = _top(2)
    for item, name in zip(top, HOSTILE):
        item.name = name
    p = write_report(tmp_path / "r.html", title=HOSTILE[1], scores=np.array([2.0, 1.0, 0.5]),
                     names=[*HOSTILE, "ok.png"], top=top, threshold=1.0, skipped=[(HOSTILE[0], HOSTILE[1])],
                     info={HOSTILE[1]: HOSTILE[0]}, metrics={HOSTILE[0]: 0.5})
    page = assert_names_escaped(p.read_text(encoding="utf-8"), HOSTILE)
    alts = {attrs.get("alt") for tag, attrs in page.tags if tag == "img"}
    assert {f"{n} (original)" for n in HOSTILE} | {f"{n} (overlay)" for n in HOSTILE} == alts
    assert {attrs.get("title") for tag, attrs in page.tags if attrs.get("class") == "name"} == set(HOSTILE)


def test_cards_show_names_without_their_shared_folder(tmp_path: Path) -> None:
    """A card is narrow: an absolute path cut at its end hid the file name. The folder every card shares is left
    out of the visible name; the whole path stays the card's title."""
    rng = np.random.default_rng(0)
    names = ["/data/parts/test/crack/007.png", "/data/parts/test/good/012.png"]
    top = [ReportImage(name=n, score=1.0, anomalous=True, image=rng.integers(0, 255, (8, 8, 3), dtype=np.uint8),
                       amap=None) for n in names]
    text = write_report(tmp_path / "r.html", title="t", scores=np.ones(2), names=names, top=top).read_text()
    assert '<div class="name" title="/data/parts/test/crack/007.png">crack/007.png</div>' in text
    assert '<div class="name" title="/data/parts/test/good/012.png">good/012.png</div>' in text


@pytest.mark.skipif(sys.platform == "win32", reason="a backslash separates folders on Windows")
def test_a_backslash_in_a_file_name_is_shown_as_written() -> None:
    """On Linux a backslash is part of a file name: the card of `a\\b.png` said `a/b.png`, a file that is not
    there."""
    from normalcy.runs.report import _shown_names

    assert _shown_names(["/d/test/a\\b.png", "/d/test/c.png"]) == ["a\\b.png", "c.png"]
    assert _shown_names(["/d/test/x\\y\\z.png"]) == ["x\\y\\z.png"]


def test_scores_a_few_ulps_apart_get_their_histogram(tmp_path: Path) -> None:
    """Scores a few ULPs apart: numpy cannot make 10 finite bins of such a range ("Too many bins for data
    range"), and the report failed, and the whole run with it."""
    s = np.array([3.0, np.nextafter(3.0, 4.0), 3.0])
    for threshold in (None, 3.0):
        text = write_report(tmp_path / "r.html", title="t", scores=s, names=list("abc"), top=[],
                            threshold=threshold).read_text()
        assert '<div class="plot hist"><svg' in text


def test_a_histogram_that_cannot_be_drawn_costs_only_the_histogram(tmp_path: Path) -> None:
    """Scores spanning more than the largest float: the plot says why it is not drawn; the rest is written."""
    text = write_report(tmp_path / "r.html", title="t", scores=np.array([-1e308, 1e308, 0.0]), names=list("abc"),
                        top=[], threshold=1.0).read_text()
    assert "not drawn: " in text and "<svg" not in text and "3 images, highest first" in text


def test_the_eval_report_names_the_images_it_skipped(tmp_path: Path) -> None:
    """predict's report lists what it could not read; eval's said only how many it scored, though eval --json
    listed the skipped files: it now names them too."""
    from types import SimpleNamespace

    from normalcy.evaluation.evaluate import write_eval_report

    paths = []
    for k in range(2):
        paths.append(tmp_path / "ds" / "test" / f"{k}.png")
        paths[-1].parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_image(seed=k)).save(paths[-1])
    ds = SimpleNamespace(root=tmp_path / "ds", test=[SimpleNamespace(path=p, label=k) for k, p in enumerate(paths)])
    result = SimpleNamespace(paths=paths, scores=np.array([0.2, 0.9]), decisions=np.array([False, True]),
                             maps=[None, None])
    det = SimpleNamespace(name="gaussian", threshold_=0.5, map_range_=None,
                          extractor=SimpleNamespace(size=(32, 32), spec=SimpleNamespace(name="b"), input_norm="n"))
    metrics = {"detector": "gaussian", "dataset": str(ds.root), "image_auroc": 1.0,
               "skipped": [[str(tmp_path / "ds" / "test" / "cut.png"), "truncated image"]]}
    text = write_eval_report(tmp_path / "eval.html", metrics, det, result, ds).read_text()
    assert "Skipped files (1)" in text and "cut.png</code> — truncated image" in text


def test_an_infinite_score_is_flagged_as_scores_csv_flags_it(tmp_path: Path) -> None:
    """scores.csv decides ``score >= threshold``, so an image scoring inf is anomalous there (and on its card),
    but the report's count and its table of all scores called it normal. NaN stays unflagged in both."""
    text = write_report(tmp_path / "r.html", title="t", scores=np.array([np.inf, 1.0, np.nan, 0.2]),
                        names=list("abcd"), top=[], threshold=0.5).read_text()
    assert '<span class="muted">flagged anomalous</span><b>2</b>' in text
    assert '<td>a</td><td class="num">∞</td><td><span class="badge bad">anomalous</span>' in text
    assert '<td>c</td><td class="num">–</td><td><span class="badge ok">normal</span>' in text


def test_a_tiny_threshold_is_not_shown_as_zero(tmp_path: Path) -> None:
    """A series fitted on a constant metric has a threshold of 1e-06: three decimals showed it, and every score
    near it, as 0.000. Such numbers keep 3 significant digits; the others are shown as before."""
    text = write_report(tmp_path / "r.html", title="t", scores=np.array([3e-6, 2e-7, 0.0, 12.5]),
                        names=list("abcd"), top=[], threshold=1e-6).read_text()
    assert "<b>1e-06</b>" in text and "threshold = 1e-06" in text
    assert ">3e-06</td>" in text and ">2e-07</td>" in text and ">0.000</td>" in text and ">12.500</td>" in text


def test_a_large_run_lists_its_highest_scores_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The table of scores listed every image: 100,000 made a 15 MB page, and as many skipped files as many lines.
    It lists the highest (MAX_SCORE_ROWS) and says where every row is; the counts stay those of the run."""
    import normalcy.runs.report as report

    monkeypatch.setattr(report, "MAX_SCORE_ROWS", 3)
    monkeypatch.setattr(report, "MAX_SKIPPED_ROWS", 2)
    text = write_report(tmp_path / "r.html", title="t", scores=np.arange(10.0), names=[f"n{i}" for i in range(10)],
                        top=[], threshold=5.0, skipped=[(f"bad{i}", "cut") for i in range(5)],
                        scores_file="scores.csv", skipped_file="skipped.csv").read_text()
    assert "<td>n9</td>" in text and "<td>n7</td>" in text and "<td>n6</td>" not in text
    assert "the 3 highest of 10 images (all in scores.csv)" in text and "7 lower scores not listed" in text
    assert '<span class="muted">images scored</span><b>10</b>' in text
    assert '<span class="muted">flagged anomalous</span><b>5</b>' in text
    assert "Skipped files (5)" in text and "bad1" in text and "bad2" not in text and "3 more in skipped.csv" in text


def test_a_run_report_names_scores_csv_for_the_rows_it_leaves_out(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's report points at the run's own files; scores.csv keeps every row."""
    import csv

    import normalcy.runs.report as report
    from normalcy.runs.format import RunWriter

    monkeypatch.setattr(report, "MAX_SCORE_ROWS", 2)
    writer = RunWriter(tmp_path / "run", 0.5, (0.0, 1.0), heatmaps=False, overlays=False, top=1)
    for i in range(4):
        writer.add(tmp_path / f"{i}.png", _image(seed=i), i / 4, None)
    writer.close([], "t")
    text = (tmp_path / "run" / "report.html").read_text()
    assert "the 2 highest of 4 images (all in scores.csv)" in text
    assert len(list(csv.DictReader(open(tmp_path / "run" / "scores.csv")))) == 4


def test_a_report_card_of_a_large_image_draws_its_map_at_the_cards_size(tmp_path: Path) -> None:
    """predict --no-heatmaps --report drew each top candidate's map at the photo's size (48 MB and 0.1 s for a
    4000x3000 one), only to shrink it to the 512-pixel card: the map is drawn at the card's size from its grid."""
    from normalcy.images.features import LazyMap
    from normalcy.runs.format import RunWriter
    from normalcy.runs.report import _gallery_map

    grid = np.random.default_rng(0).random((12, 16)).astype(np.float32)
    lazy = LazyMap(grid, (600, 800))
    writer = RunWriter(tmp_path / "run", 0.5, (0.0, 1.0), heatmaps=False, overlays=False, top=1)
    writer.add(tmp_path / "big.png", _image(600, 800), 0.9, lazy)
    card = writer._best[0][2]
    assert "full" not in vars(lazy) and card.amap.shape == card.image.shape[:2] == (384, 512)
    full = _gallery_map(LazyMap(grid, (600, 800)).full, (384, 512))  # as before: within a colour level (1/255)
    np.testing.assert_allclose(card.amap, full, atol=1 / 255)
    writer.abort()


def test_a_series_report_says_where_the_files_it_does_not_list_are(tmp_path: Path) -> None:
    """A series report lists 200 of the files and series it could not score: with more, it said "Not scored
    (250)" above 200 names and nothing of the other 50. It now says how many more skipped.csv holds."""
    from normalcy.runs.report import write_series_report

    text = write_series_report(tmp_path / "r.html", title="t", files=[], parts=[], top=24,
                               skipped=[(f"f{i}.csv", "empty") for i in range(250)], info={},
                               summary={"n_series": 0}).read_text()
    assert "Not scored (250)" in text and "f199.csv" in text and "f200.csv" not in text
    assert "and 50 more in skipped.csv" in text


def test_a_card_whose_colours_run_past_the_shared_scale_says_so(tmp_path: Path) -> None:
    wide = np.full((20, 20), 4.0, dtype=np.float32)
    top = [ReportImage("wide.png", 9.0, True, _image(20, 20), wide),
           ReportImage("small.png", 2.0, False, _image(20, 20), _amap(20, 20))]
    text = write_report(tmp_path / "r.html", title="t", scores=np.array([9.0, 2.0]), names=["wide.png", "small.png"],
                        top=top, map_range=(0.0, 1.0)).read_text()
    assert text.count("colour to ") == 1 and "colour to 4" in text


def test_a_report_written_over_another_is_never_half_a_page(tmp_path: Path, monkeypatch) -> None:
    """`eval --report r.html` wrote straight into r.html: two evaluations into one file at once interleaved
    their pages, and a write that stopped (a full disk, Ctrl-C) left half a page where a report was. A page is
    written beside the file and renamed into place: the earlier report stays whole, and nothing is left."""
    def report(title: str) -> Path:
        return write_report(tmp_path / "r.html", title=title, scores=np.linspace(0, 1, 12),
                            names=[f"n{i}" for i in range(12)], top=_top(2), threshold=0.5)

    earlier = report("earlier").read_text(encoding="utf-8")
    real = Path.write_text

    def half(self: Path, text: str, *args, **kwargs) -> int:  # the disk fills halfway through the page
        real(self, text[:len(text) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half)
    with pytest.raises(OSError):
        report("later")
    assert (tmp_path / "r.html").read_text(encoding="utf-8") == earlier
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]


def test_a_report_killed_outright_while_written_leaves_nothing_the_next_keeps(tmp_path: Path, monkeypatch) -> None:
    """A process killed outright (SIGKILL, the OOM killer) while it wrote a report left its hidden
    .r.html.*.partial file, a whole page, for ever. The next report into that file deletes it; one being
    written by a live process (locked by it) and a person's files are kept."""
    import time

    from conftest import killed_outright

    def report() -> Path:
        return write_report(tmp_path / "r.html", title="t", scores=np.linspace(0, 1, 12),
                            names=[f"n{i}" for i in range(12)], top=_top(2), threshold=0.5)

    real = Path.write_text

    def write(say) -> None:
        def stuck(self: Path, text: str, *args, **kwargs) -> int:
            real(self, text[:100], *args, **kwargs)
            say("writing")
            time.sleep(60)  # killed here
            return 0

        monkeypatch.setattr(Path, "write_text", stuck)
        report()

    assert killed_outright(write) == ["writing"]
    left = [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert len(left) == 1
    (tmp_path / ".r.html.partial").write_text("a person's")
    report()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".r.html.partial", "r.html"]


def test_a_full_size_card_is_coloured_at_gallery_size_and_looks_the_same(tmp_path: Path, monkeypatch) -> None:
    """A card of a large image was coloured at full size and shrunk after (a 4000x3000 photo: 0.7 s and 70 MB
    more a card): it is shrunk first now, and the picture is the same but for rounding."""
    import cv2

    import normalcy.runs.report as report

    rng = np.random.default_rng(0)
    image = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (1024, 768), interpolation=cv2.INTER_CUBIC)
    grid = rng.random((12, 16)).astype(np.float32)
    grid[4:7, 6:9] += 3.0
    amap = cv2.resize(grid, (1024, 768), interpolation=cv2.INTER_LINEAR)
    before = report._shrink(overlay(image, amap, 0.0, 1.5)).astype(int)  # coloured at full size, then shrunk
    drawn: list[tuple[int, ...]] = []
    pictures: list[np.ndarray] = []

    def recorded(rgb: np.ndarray, a: np.ndarray, lo: float, hi: float) -> np.ndarray:
        drawn.append(rgb.shape)
        pictures.append(overlay(rgb, a, lo, hi))
        return pictures[-1]

    monkeypatch.setattr(report, "overlay", recorded)
    write_report(tmp_path / "r.html", title="t", scores=np.array([2.0]), names=["big.png"],
                 top=[ReportImage("big.png", 2.0, True, image, amap)], map_range=(0.0, 1.5))
    assert drawn == [(384, 512, 3)]
    diff = np.abs(pictures[0].astype(int) - before)
    assert diff.mean() < 0.5 and diff.max() <= 12


def test_a_patch_grid_map_is_enlarged_smoothly_on_a_card() -> None:
    """A map smaller than the card (a patch grid) is left for the overlay to enlarge bilinearly, as it is at
    full size: area averaging enlarged it in blocks."""
    from normalcy.runs.report import gallery_image

    grid = np.random.default_rng(0).random((12, 16)).astype(np.float32)
    item = gallery_image("big.png", 1.0, True, _image(768, 1024), grid)
    assert item.image.shape == (384, 512, 3) and item.amap is not None and item.amap.shape == (12, 16)
