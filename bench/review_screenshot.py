"""A screenshot of the review page on a real run, for the docs (docs/img/review.png).

    normalcy fit ../shared/data/magnetic_tile/train/good -o /tmp/model
    normalcy predict /tmp/model ../shared/data/magnetic_tile/test -o /tmp/run --no-report
    python bench/review_screenshot.py /tmp/run docs/img/review.png

Starts the server on a port it binds itself (port 0) with a throw-away database, labels the first two images
with the keyboard (n, a), turns the overlay on (o) and saves the page. Needs Debian's
chromium and the playwright package.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

from normalcy.errors import InputError
from normalcy.review.server import ReviewServer, create_app, listen, new_token

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def main(run: Path, out: Path) -> None:
    try:  # imported here: --help, and the message below, without it
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise SystemExit("bench/review_screenshot.py needs the playwright package (pip install playwright) and "
                         "Debian's chromium") from None
    token = new_token()
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(run, token, database=f"sqlite:///{Path(tmp) / 'review.sqlite'}")
        started = threading.Event()
        server = ReviewServer(app, token, listen("127.0.0.1", 0), announce=lambda _url: started.set())
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        started.wait(60)
        port = server.port
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                            args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(f"http://127.0.0.1:{port}/?token={token}")
                page.wait_for_selector("#gallery .card img")
                for key in ("n", "a", "o"):
                    page.keyboard.press(key)
                    time.sleep(1.0)
                page.wait_for_load_state("networkidle")
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out))
                browser.close()
        finally:
            server.stop()
            thread.join()
    print(f"wrote {out}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, metavar="RUN_DIR", help="a run folder (normalcy predict ... -o RUN_DIR)")
    ap.add_argument("out", type=Path, metavar="OUTPUT.png")
    args = ap.parse_args()
    try:
        main(args.run, args.out)
    except InputError as e:  # a missing or unreadable run folder: one line, as the CLI says it
        raise SystemExit(f"error: {e}") from None
