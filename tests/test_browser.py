"""End to end: the review page in a real headless browser (Debian's chromium driven by Playwright).

The real server (normalcy.review.server) runs in a thread on a socket bound to port 0, on a small run
directory whose embeddings form two clusters, so a label visibly changes the order.
A screenshot of the page is saved to artifacts/review.png for people to look at.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import shutil
from pathlib import Path
from typing import Iterator

import pytest

SKIP_BROWSER = "needs Debian's chromium and the playwright package (.ci/run installs both)"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 10_000


def _chromium() -> str | None:
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # the test is skipped below
    sync_playwright = None

CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(sync_playwright is None or CHROMIUM is None, reason=SKIP_BROWSER)

try:
    from normalcy.review.server import new_token
except ImportError as err:  # noqa: F841  (reported in the skip reason)
    SERVER_MISSING: str | None = f"normalcy.review.server is not importable: {err}"
else:
    SERVER_MISSING = None

from conftest import LiveServer  # noqa: E402  (tests/ is on sys.path)
from review_fixtures import make_run  # noqa: E402


@pytest.fixture
def served(tmp_path: Path) -> Iterator[LiveServer]:
    if SERVER_MISSING:
        pytest.skip(SERVER_MISSING)
    run = make_run(tmp_path, n=12)
    with LiveServer(run, new_token(), f"sqlite:///{tmp_path / 'review.sqlite'}") as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator["Browser"]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: "Browser") -> Iterator["Page"]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda err: errors.append(str(err)))
    try:
        yield pg
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def card_ids(page: "Page") -> list[str]:
    return page.eval_on_selector_all("#gallery .card", "els => els.map(e => e.dataset.id)")


def selected_id(page: "Page") -> str | None:
    return page.evaluate("""() => {
        const card = document.querySelector('#gallery .card[aria-selected="true"]');
        return card ? card.dataset.id : null;
    }""")


def api(page: "Page", path: str) -> dict:
    """A GET through the page itself, so it uses the page's cookie like the page does."""
    return page.evaluate("p => fetch(p).then(r => r.json())", path)


def test_review_page_labels_with_the_keyboard_and_reranks(served: LiveServer, page: "Page",
                                                          browser: "Browser", tmp_path: Path) -> None:
    page.goto(served.page_url)
    page.wait_for_selector("#gallery .card")
    assert "token=" not in page.url, "the token should leave the address bar once the cookie is set"
    expect(page.locator("#counts")).to_have_text("0 / 12 labelled")
    before = card_ids(page)
    assert len(before) == 12
    top = before[0]
    assert selected_id(page) == top
    assert page.locator(f'.card[data-id="{top}"]').get_attribute("data-rank") == "1"
    top_name = page.locator(f'.card[data-id="{top}"] .name').inner_text()

    # "n" labels the selected (top) item normal; its cluster sinks in the new order.
    page.keyboard.press("n")
    expect(page.locator("#toast")).to_contain_text(f"labelled {top_name} normal")
    expect(page.locator("#toast")).to_contain_text(re.compile(r"re-ranked in [\d.]+ ms"))
    after = card_ids(page)
    assert sorted(after) == sorted(before)
    assert after != before, "labelling the top item normal should change the order"
    expect(page.locator(f'.card[data-id="{top}"] .label-badge')).to_contain_text("normal")
    # The selection moves to the first unlabelled item of the new order.
    second = selected_id(page)
    assert second is not None and second != top
    assert second == next(i for i in after if i != top)
    expect(page.locator(f'.card[data-id="{second}"]')).to_have_attribute("aria-selected", "true")

    # "a" labels the newly selected item anomalous.
    second_name = page.locator(f'.card[data-id="{second}"] .name').inner_text()
    page.keyboard.press("a")
    expect(page.locator("#toast")).to_contain_text(f"labelled {second_name} anomalous")
    expect(page.locator(f'.card[data-id="{second}"] .label-badge')).to_contain_text("anomalous")
    status = api(page, "/api/status")
    assert status["n_labelled"] == 2
    expect(page.locator("#counts")).to_have_text("2 / 12 labelled")
    items = {str(it["id"]): it for it in api(page, "/api/items?limit=200")["items"]}
    assert items[top]["label"] == "normal" and items[second]["label"] == "anomalous"
    third = selected_id(page)
    assert third not in (top, second) and items[third]["label"] is None

    # "o" switches every thumbnail to its anomaly map (where there is one).
    def srcs() -> dict[str, str]:
        return dict(page.eval_on_selector_all(
            "#gallery .card", "els => els.map(e => [e.dataset.id, e.querySelector('img').getAttribute('src')])"))

    assert srcs() == {i: it["image_url"] for i, it in items.items()}
    page.keyboard.press("o")
    expect(page.locator("#overlay")).to_be_checked()
    overlays = {i: it["overlay_url"] or it["image_url"] for i, it in items.items()}
    assert any(it["overlay_url"] is None for it in items.values())  # the fixture leaves one out
    assert srcs() == overlays
    page.wait_for_function("() => [...document.querySelectorAll('#gallery img')]"
                           ".every(img => img.complete && img.naturalWidth > 0)")

    # Enter opens the detail view of the selected item, Escape closes it.
    page.keyboard.press("Enter")
    detail = page.locator("#detail")
    expect(detail).to_be_visible()
    expect(page.locator("#detail-title")).to_have_text(items[third]["name"])
    assert page.locator("#detail-img").get_attribute("src") == overlays[third]
    page.screenshot(path=str(tmp_path / "review-detail.png"))
    page.keyboard.press("Escape")
    expect(detail).to_be_hidden()

    # "e" downloads the labels as CSV.
    with page.expect_download() as info:
        page.keyboard.press("e")
    text = Path(info.value.path()).read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert info.value.suggested_filename.endswith(".csv")
    assert sorted(r.get("label") for r in rows if r.get("label")) == ["anomalous", "normal"], text

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "review.png"))
    page.screenshot(path=str(tmp_path / "review.png"))

    # Without the cookie the API answers 401 and the page says what to do.
    page.context.clear_cookies()
    page.select_option("#filter-decision", "anomalous")
    expect(page.locator("#auth-error")).to_be_visible()
    expect(page.locator("#auth-error")).to_contain_text(re.compile("open the URL printed by normalcy serve", re.I))
    expect(page.locator("#gallery")).to_be_hidden()

    # And a fresh browser without the token gets the server's explanation instead of the page.
    context = browser.new_context()
    try:
        other = context.new_page()
        response = other.goto(served.base + "/")
        assert response is not None and response.status == 401
        assert re.search(r"normalcy serve", other.content())
    finally:
        context.close()


def test_shortcuts_are_ignored_in_form_controls(served: LiveServer, page: "Page") -> None:
    page.goto(served.page_url)
    page.wait_for_selector("#gallery .card")
    first = selected_id(page)
    page.focus("#filter-decision")  # options all / anomalous / normal
    for key in ("j", "k", "h", "l"):
        page.keyboard.press(key)
    assert selected_id(page) == first
    for key in ("a", "n", "5", "o"):  # the select may jump to a matching option; nothing gets labelled
        page.keyboard.press(key)
    page.wait_for_timeout(300)  # a stray label request would have been sent by now
    assert api(page, "/api/status")["n_labelled"] == 0
    expect(page.locator("#overlay")).not_to_be_checked()
    # Outside the control the same key works.
    page.locator("#gallery").focus()
    page.keyboard.press("o")
    expect(page.locator("#overlay")).to_be_checked()


@contextlib.contextmanager
def opened(run: Path, page: "Page") -> Iterator[None]:
    """The review page of ``run`` open in ``page``, its first cards drawn."""
    if SERVER_MISSING:
        pytest.skip(SERVER_MISSING)
    with LiveServer(run, new_token(), f"sqlite:///{run.parent / 'review.sqlite'}") as served:
        page.goto(served.page_url)
        page.wait_for_selector("#gallery .card")
        yield


def test_more_button_loads_the_next_page(tmp_path: Path, page: "Page") -> None:
    with opened(make_run(tmp_path, n=205), page):
        expect(page.locator("#gallery .card")).to_have_count(200)
        more = page.locator("#more")
        expect(more).to_contain_text("5 more")
        more.click()
        expect(page.locator("#gallery .card")).to_have_count(205)
        expect(more).to_be_hidden()
        ranks = [int(r) for r in page.eval_on_selector_all("#gallery .card", "els => els.map(e => e.dataset.rank)")]
        assert ranks == list(range(1, 206))
        # A label re-fetches everything shown, not just the first page.
        page.locator("#gallery").focus()
        page.keyboard.press("n")
        expect(page.locator("#toast")).to_contain_text("labelled")
        expect(page.locator("#gallery .card")).to_have_count(205)


def test_table_run_shows_rows_without_image_controls(tmp_path: Path, page: "Page") -> None:
    """A table run (no images): cards name rows by the id column (markup shown as text), the overlay control,
    its hint and `o` are gone, labels work, and details list the row's feature values."""
    from test_review_tables import make_table_run

    with opened(make_table_run(tmp_path, n=40), page):
        expect(page.locator("#gallery .card")).to_have_count(40)
        expect(page.locator("#gallery")).to_contain_text("<b>obj")  # the id as text, not bold markup
        assert not page.locator("#overlay").is_visible()
        assert "overlay" not in page.locator(".hints").inner_text()  # innerText: what is shown, not hidden parts
        page.locator("#gallery").focus()
        page.keyboard.press("o")  # nothing to overlay: no error (the page fixture fails on JavaScript errors)
        page.keyboard.press("a")
        expect(page.locator("#toast")).to_contain_text("labelled")
        page.keyboard.press("Enter")
        expect(page.locator("#detail-features")).to_be_visible()
        expect(page.locator("#detail-features")).to_contain_text("flux")
        expect(page.locator("#detail-img")).to_be_hidden()


def test_a_run_replaced_while_the_page_is_open_is_shown_and_not_labelled_blind(served: LiveServer, page: "Page",
                                                                              tmp_path: Path) -> None:
    """Another predict into the served run folder: the page's next label was put on the new run's item of the same
    key, unseen. It is refused (409), and the page lists the new run, where the next label goes."""
    from normalcy.runs.format import finish_run

    page.goto(served.page_url)
    page.wait_for_selector("#gallery .card")
    assert len(card_ids(page)) == 12
    staging = tmp_path / ".run.x.partial"
    shutil.copytree(make_run(tmp_path / "b", n=5), staging)
    finish_run(staging, tmp_path / "run")
    page.keyboard.press("n")
    expect(page.locator("#toast")).to_contain_text("holds another run since this page listed its items")
    expect(page.locator("#gallery .card")).to_have_count(5)
    expect(page.locator("#counts")).to_have_text("0 / 5 labelled")
    page.keyboard.press("n")
    expect(page.locator("#toast")).to_contain_text("labelled img_000.png normal")
    assert api(page, "/api/status")["n_labelled"] == 1


def test_bidi_controls_in_a_file_name_are_shown_not_applied(tmp_path: Path, page: "Page") -> None:
    """A file name with U+202E RIGHT-TO-LEFT OVERRIDE reorders what follows as shown ("x\\u202egnp.exe.png" read
    as another name than the file's): the page shows the control as its code, in the card, title and path."""
    import numpy as np
    from PIL import Image

    from normalcy.runs.format import RunWriter

    images = tmp_path / "images"
    images.mkdir()
    writer = RunWriter(tmp_path / "run", 0.5, (0.0, 1.0), heatmaps=False, report=False, inputs=[images],
                       info={"detector": "patchcore"})
    for i, name in enumerate(["invoice\u202egnp.exe.png", "plain.png"]):
        image = np.full((16, 16, 3), 40 * i, np.uint8)
        Image.fromarray(image).save(images / name, format="PNG")
        writer.add(images / name, image, 1.0 - i / 2, None)
    writer.close([], "bidi")
    with LiveServer(tmp_path / "run", new_token()) as live:
        page.goto(live.page_url)
        page.wait_for_selector("#gallery .card")
        names = page.eval_on_selector_all("#gallery .card .name", "els => els.map(e => e.textContent + e.title)")
        assert names[0].startswith("invoice<U+202E>gnp.exe.png") and "\u202e" not in "".join(names)
        page.keyboard.press("Enter")
        expect(page.locator("#detail-title")).to_have_text("invoice<U+202E>gnp.exe.png")
        assert "\u202e" not in page.locator("#d-path").inner_text()
