"""The review server: token auth, Host check, no file outside the run's folders, labels that persist and re-rank."""

from __future__ import annotations

import csv
import gc
import http.client
import io
import logging
import os
import re
import shutil
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import pytest
from conftest import LiveServer
from fastapi.testclient import TestClient
from PIL import Image
from review_fixtures import THRESHOLD, db_url, make_run  # noqa: F401  (db_url is a fixture)
from sqlalchemy import update

from normalcy.errors import InputError
from normalcy.review import app as server_app
from normalcy.review import state as review_state
from normalcy.review.guard import MAX_BODY, cookie_name
from normalcy.review.server import (
    ReviewServer,
    create_app,
    listen,
    new_token,
    page_url,
    serve,
)
from normalcy.review.store import Store, items_table

TOKEN = "test-token-" + "x" * 20
PROTECTED = ["/", "/api/items", "/api/items/1/image", "/static/review.js", "/api/labels.csv", "/api/status"]


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path)


def open_client(run: Path, **kw: object) -> TestClient:
    return TestClient(create_app(run, TOKEN, **kw))  # type: ignore[arg-type]


@pytest.fixture
def client(run: Path) -> Iterator[TestClient]:
    with open_client(run) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        yield c


def items(c: TestClient, **params: object) -> dict:
    r = c.get("/api/items", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def point_item_at(c: TestClient, item_id: int, path: Path) -> None:
    """Tamper with the database as an attacker with write access to it would."""
    with c.app.state.review.store.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(update(items_table).where(items_table.c.id == item_id).values(path=str(path)))


def by_name(c: TestClient) -> dict[str, dict]:
    return {it["name"]: it for it in items(c)["items"]}


# --------------------------------------------------------------------------- auth


def test_everything_needs_the_token(run: Path) -> None:
    wrong = [({}, {}, {}), ({"token": "wrong"}, {}, {}), ({}, {"Authorization": "Bearer wrong"}, {}),
             ({}, {"Authorization": f"Basic {TOKEN}"}, {}), ({}, {}, {cookie_name(80): "nope"}),
             ({"token": TOKEN[:-1]}, {"Authorization": "Bearer"}, {cookie_name(80): ""}),
             ({}, {}, {"normalcy_token": TOKEN}), ({}, {}, {cookie_name(8765): TOKEN})]  # another port's cookie
    with open_client(run) as c:
        for path in PROTECTED:
            for params, headers, cookies in wrong:
                c.cookies.clear()
                c.cookies.update(cookies)
                r = c.get(path, params=params, headers=headers)
                assert r.status_code == 401, (path, params, headers, cookies)
                if path.startswith("/api/"):
                    assert r.json()["detail"]
                else:
                    assert r.headers["content-type"].startswith("text/html")
                    assert "normalcy serve" in r.text
        c.cookies.clear()
        assert c.post("/api/items/1/label", json={"label": "normal"}).status_code == 401
        assert c.put("/api/strategy", json={"strategy": "none"}).status_code == 401


def test_token_from_query_cookie_or_bearer(run: Path) -> None:
    with open_client(run) as c:
        r = c.get("/", params={"token": TOKEN})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("normalcy_token_80=") and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace(
            "SameSite=Strict", "SameSite=strict") and "Path=/" in cookie
        assert c.get("/api/items").status_code == 200  # the cookie now does it
        assert c.get("/").status_code == 200
    with open_client(run) as c:
        assert c.get("/api/items", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert c.get("/api/items", params={"token": TOKEN}).status_code == 200
        assert c.get("/api/items").status_code == 401


def test_two_servers_on_one_host_keep_their_cookies(run: Path, tmp_path: Path) -> None:
    """Browsers send a host's cookies to every port: one name for both would log each other out."""
    other = make_run(tmp_path / "other")
    with (LiveServer(run, TOKEN) as a, LiveServer(other, "other-token-" + "y" * 20) as b,
          httpx.Client(timeout=10) as browser):
        assert browser.get(a.page_url).status_code == 200 and browser.get(b.page_url).status_code == 200
        assert {c.name for c in browser.cookies.jar} == {cookie_name(a.port), cookie_name(b.port)}
        for live in (a, b):  # the cookie alone (no token in the URL) still opens each
            assert browser.get(f"{live.base}/api/status").status_code == 200


def test_host_header_is_checked(run: Path) -> None:
    """A DNS-rebinding page reaches 127.0.0.1 under its own name: anything but this server's names is refused."""
    with open_client(run) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        for host in ("127.0.0.1:80", "localhost:80", "LOCALHOST", "[::1]:80", "testserver"):
            assert c.get("/api/status", headers={"Host": host}).status_code == 200, host
        for host in ("evil.example", "evil.example:80", "127.0.0.1:8080", "localhost:x", "127.0.0.1.evil.example",
                     socket.gethostname() + ":80"):
            r = c.get("/api/status", headers={"Host": host})
            assert r.status_code == 400 and "Host" in r.json()["detail"], host
            assert r.headers["x-frame-options"] == "DENY"
        r = c.get("/", headers={"Host": "evil.example"}, params={"token": TOKEN})
        assert r.status_code == 400 and "set-cookie" not in r.headers
    with open_client(run, host="0.0.0.0") as c:  # on the network: this machine's name works too
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        assert c.get("/api/status", headers={"Host": socket.gethostname() + ":80"}).status_code == 200
        assert c.get("/api/status", headers={"Host": "evil.example:80"}).status_code == 400
    with open_client(run, host="192.0.2.7") as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        assert c.get("/api/status", headers={"Host": "192.0.2.7:80"}).status_code == 200


def test_security_headers(client: TestClient) -> None:
    client.cookies.clear()
    for r in (client.get("/api/items"), client.get("/"), client.get("/static/review.js"),
              client.get("/api/items", headers={"Authorization": "Bearer wrong"})):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["x-frame-options"] == "DENY"
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert client.get("/api/items").headers["cache-control"] == "no-store"
    assert client.get("/api/nothing-here").status_code == 404
    for path in ("/docs", "/openapi.json"):
        assert client.get(path).status_code == 404


def test_new_token_and_url() -> None:
    t = new_token()
    assert len(t) >= 32 and t != new_token()
    assert page_url("127.0.0.1", 8765, "abc") == "http://127.0.0.1:8765/?token=abc"
    assert page_url("0.0.0.0", 80, "abc") == "http://127.0.0.1:80/?token=abc"


# --------------------------------------------------------------------------- files


def test_static_files(client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    static = tmp_path / "static"
    static.mkdir()
    for name in ("a.js", "a.css", "a.html", "a.png"):
        (static / name).write_bytes(b"x")
    (tmp_path / "secret.js").write_text("secret")
    (static / "link.js").symlink_to(tmp_path / "secret.js")
    monkeypatch.setattr(server_app, "STATIC_DIR", static)
    types = {"a.js": "text/javascript", "a.css": "text/css", "a.html": "text/html", "a.png": "image/png"}
    for name, media in types.items():
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(media), name
        assert r.headers["x-content-type-options"] == "nosniff"
    for name in ("link.js", "missing.js", "a%20b.js", "...", "a.js%00", "%00", "a%00.js", "a.js%0A"):
        assert client.get(f"/static/{name}").status_code == 404, name


def test_page_has_no_inline_script_or_style() -> None:
    """The CSP allows no inline script or style, so the page must not need any."""
    html = (server_app.STATIC_DIR / "review.html").read_text(encoding="utf-8")
    assert "<style" not in html and not re.search(r"<[^>]*\s(style|on[a-z]+)\s*=", html)
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", html, flags=re.S)
    assert scripts and all(body.strip() == "" for body in scripts)


def test_the_page_sends_only_the_field_a_key_changes() -> None:
    """The page sent its own copy of the other field with each label ({label, interest: item.interest}), so a label
    given on one page put back the interest another page had changed since; it sends the changed field alone (an
    interest on an unlabelled item still brings its default label), which the server keeps the other beside."""
    js = (server_app.STATIC_DIR / "review.js").read_text(encoding="utf-8")
    assert "body = { label: value };" in js
    assert 'item.label ? { interest: value } : { label: value === 0 ? "normal" : "anomalous", interest: value }' in js
    assert "interest: item.interest" not in js and "label: item.label" not in js


def test_traversal_refused(client: TestClient) -> None:
    for path in ("/static/../server.py", "/static/%2e%2e%2fserver.py", "/static/..%2fserver.py",
                 "/static/%2e%2e/server.py", "/api/items/..%2f..%2fetc%2fpasswd/image",
                 "/api/items/1/..%2f..%2f..%2fetc%2fpasswd"):
        r = client.get(path)
        assert r.status_code in (403, 404, 422), path
        assert "def create_app" not in r.text and "root:" not in r.text


def test_a_run_in_an_image_url_that_no_server_writes_is_a_422_naming_it(client: TestClient) -> None:
    """``?run=..%2f..%2fetc%2fpasswd`` was answered 409 "the served link leads to another run folder": it is no
    run folder's name (12 hex digits, as image_url writes it), so it is a 422 saying which parameter."""
    first = items(client)["items"][0]
    assert client.get(first["image_url"]).status_code == 200
    for run in ("..%2f..%2fetc%2fpasswd", "%2fetc%2fpasswd", "a" * 5000, first["image_url"][-12:].upper(), ""):
        for kind in ("image", "overlay"):
            r = client.get(f"/api/items/{first['id']}/{kind}?run={run}")
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "run"], (run, r.text[:200])


def test_an_x_run_version_that_no_server_writes_is_a_422_naming_it(client: TestClient) -> None:
    """An X-Run-Version of ``../../etc/passwd`` was answered 409 "the run folder holds another run since this client
    listed its items": it is no run_version (12 hex digits), so it is a 422 naming the header; nothing is saved."""
    listed = items(client)
    item_id = listed["items"][0]["id"]
    for version in ("../../etc/passwd", "x" * 5000, listed["run_version"].upper()):
        headers = {"X-Run-Version": version}
        for r in (client.get(f"/api/items/{item_id}", headers=headers),
                  client.get(f"/api/items/{item_id}/image", headers=headers),
                  client.post(f"/api/items/{item_id}/label", json={"label": "normal"}, headers=headers)):
            assert r.status_code == 422 and "X-Run-Version" in r.json()["detail"], (version, r.text[:200])
    assert items(client)["n_labelled"] == 0
    r = client.post(f"/api/items/{item_id}/label", json={"label": "normal"},
                    headers={"X-Run-Version": listed["run_version"]})
    assert r.status_code == 200


def test_head_is_answered_as_get_without_a_body(client: TestClient) -> None:
    """A health check's or a proxy's HEAD was 405 Method Not Allowed on every page: it now gets GET's status
    and headers, and no body. OPTIONS stays 405: no other site is let in (no CORS), so nothing asks for it."""
    for path in PROTECTED + ["/api/items/1", "/api/items/1/overlay", "/api/items/99999", "/static/none.js"]:
        got, head = client.get(path), client.head(path)
        assert head.status_code == got.status_code and head.content == b"" and got.content, path
        for key in ("content-type", "content-length", "x-frame-options", "cache-control"):
            assert head.headers.get(key) == got.headers.get(key), (path, key)
    assert client.head("/api/items").status_code == 200
    assert client.head("/api/items", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.head("/api/items/1/label").status_code == 405  # POST only, as GET is
    assert client.options("/api/items").status_code == 405
    assert client.post("/api/items/1/label", json={"label": "normal"}).status_code == 200  # other methods as before


def test_head_over_http_has_no_body(run: Path) -> None:
    """As uvicorn answers a real client: the headers of GET, Content-Length included, and nothing after them."""
    with LiveServer(run, TOKEN) as live:
        conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
        conn.request("HEAD", "/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
        resp = conn.getresponse()
        assert resp.status == 200 and int(resp.headers["content-length"]) > 0 and resp.read() == b""
        conn.request("GET", "/api/status", headers={"Authorization": f"Bearer {TOKEN}"})  # the connection is still good
        assert conn.getresponse().status == 200
        conn.close()


def test_raw_traversal_over_http(run: Path) -> None:
    """httpx tidies dot segments; a raw HTTP request sends them as they are."""
    with LiveServer(run, TOKEN) as live:
        for path in ("/static/..", "/static/../server.py", "/static/%2e%2e%2fserver.py", "/static/..%2f..%2fstore.py",
                     "/api/items/1/../../../../etc/passwd", "/api/items/..%2f..%2fetc%2fpasswd/image",
                     "/static/review.js%00", "/static/%00", "/static/..%00/server.py", "/api/items/%00/image"):
            conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
            conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace")
            conn.close()
            assert resp.status in (400, 403, 404, 422), path
            assert "def create_app" not in body and "root:" not in body


def test_image_and_overlay(client: TestClient, run: Path) -> None:
    listing = items(client)["items"]
    first = next(it for it in listing if it["name"] == "img_000.png")
    r = client.get(first["image_url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == Path(first["path"]).read_bytes()
    r = client.get(first["overlay_url"])
    assert r.status_code == 200 and r.content == (run / "overlays" / "img_000.png").read_bytes()
    last = next(it for it in listing if it["name"] == "img_011.png")
    assert last["overlay_url"] is None
    assert client.get(f"/api/items/{last['id']}/overlay").status_code == 404
    Path(first["path"]).unlink()
    assert client.get(first["image_url"]).status_code == 404


def test_an_animated_gif_is_served_as_the_frame_that_was_scored(client: TestClient, run: Path) -> None:
    """An animated GIF was sent as it is, so the browser played it, though predict scored its first frame only:
    its first frame is served (as PNG), as read_image reads it and the report shows it; a still GIF as it is."""
    first, second = (item["id"] for item in items(client)["items"][:2])
    frames = [Image.new("RGB", (16, 12), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    animated, still = run.parent / "images" / "anim.gif", run.parent / "images" / "still.gif"
    frames[0].save(animated, save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[0].save(still)
    point_item_at(client, first, animated)
    point_item_at(client, second, still)
    r = client.get(f"/api/items/{first}/image")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    shown = Image.open(io.BytesIO(r.content))
    assert getattr(shown, "n_frames", 1) == 1
    np.testing.assert_array_equal(np.asarray(shown.convert("RGB")), server_app.read_image(animated))
    r = client.get(f"/api/items/{second}/image")
    assert r.headers["content-type"] == "image/gif" and r.content == still.read_bytes()


def test_a_multi_frame_image_is_said_to_be_read_in_part_once_per_server(run: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """An animated GIF or a multi-page TIFF logged "only the first is read" at every request for its picture."""
    frames = [Image.new("RGB", (16, 12), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    files = [run.parent / "images" / "anim.gif", run.parent / "images" / "pages.tif"]
    frames[0].save(files[0], save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[0].save(files[1], save_all=True, append_images=frames[1:])
    for server in range(2):
        caplog.clear()
        database = f"sqlite:///{run.parent / f'server{server}.sqlite'}"  # its own: the items pointed afresh
        with open_client(run, database=database) as c, caplog.at_level("WARNING", logger="normalcy"):
            c.headers["Authorization"] = f"Bearer {TOKEN}"
            ids = [item["id"] for item in items(c)["items"][:2]]
            for item_id, path in zip(ids, files):
                point_item_at(c, item_id, path)
            for _ in range(3):
                assert all(c.get(f"/api/items/{item_id}/image").status_code == 200 for item_id in ids)
        said = [r.getMessage() for r in caplog.records if "only the first is read" in r.getMessage()]
        assert sorted(said) == sorted(f"{f}: 2 frames or pages (an animation or a multi-page file): only the first "
                                      "is read" for f in files), server


def swap_in(source: Path, run: Path, tmp_path: Path) -> None:
    """Another predict into ``run``: its complete run put in place by finish_run (review.sqlite moved over)."""
    from normalcy.runs.format import finish_run

    staging = tmp_path / f".run.{len(list(tmp_path.iterdir()))}.partial"
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns("review.sqlite*"))
    finish_run(staging, run)


def test_a_run_replaced_while_served_is_read_again_with_its_labels(run: Path, tmp_path: Path) -> None:
    """Another predict into the served run folder: the page went on listing the old run's items and scores (and
    its overlays were 409 "restart normalcy serve") for as long as the server ran. The next request reads the
    run the folder holds now; the labels given are kept, and come back with their images."""
    other = make_run(tmp_path / "b", n=5)
    first = run.parent / "first"
    shutil.copytree(run, first)
    with open_client(run) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        listed = items(c)
        top = listed["items"][0]
        assert c.post(f"/api/items/{top['id']}/label", json={"label": "anomalous"}).status_code == 200
        swap_in(other, run, tmp_path)
        now = items(c)
        assert now["n_items"] == 5 and now["n_labelled"] == 0 and now["run_version"] != listed["run_version"]
        assert {Path(it["path"]).parent for it in now["items"]} == {tmp_path / "b" / "images"}
        mine = next(it for it in now["items"] if it["overlay_url"])
        r = c.get(mine["overlay_url"])
        assert r.status_code == 200 and r.content == (run / "overlays" / Path(mine["path"]).name).read_bytes()
        # a label given on the list of the run before is refused, not put on this run's item of the key
        stale = c.post(f"/api/items/{mine['id']}/label", json={"label": "normal"},
                       headers={"X-Run-Version": listed["run_version"]})
        assert stale.status_code == 409 and "holds another run" in stale.json()["detail"]
        assert c.post(f"/api/items/{mine['id']}/label", json={"label": "normal"},
                      headers={"X-Run-Version": now["run_version"]}).status_code == 200
        swap_in(first, run, tmp_path)  # the first run scored in again: its label is there
        again = items(c)
        assert again["n_items"] == 12 and again["n_labelled"] == 1
        assert c.get(f"/api/items/{top['id']}").json()["label"] == "anomalous"
    with open_client(run) as c:  # and after a restart, both runs' labels are in the run's review.sqlite
        assert c.app.state.review.store.export_csv().count("\n") == 3  # type: ignore[attr-defined]


def test_a_run_replaced_by_one_without_embeddings_says_labels_no_longer_rerank(
        run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """serve computes a run's missing embeddings at start only: a run without them read while serving ranks by
    score, and the warning says to restart for re-ranking by labels."""
    plain = make_run(tmp_path / "b", n=5, embeddings=False)
    with open_client(run) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        assert items(c)["strategy"] == "neighbour"
        swap_in(plain, run, tmp_path)
        with caplog.at_level("WARNING", logger="normalcy"):
            assert items(c)["strategy"] == "none"
    assert "ranked by anomaly score only; restart normalcy serve" in caplog.text


def test_images_are_served_when_serve_started_in_the_run_folder_and_it_was_replaced(
        run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`cd RUN && normalcy serve .`, then another predict into RUN: the server's working folder was the old run,
    deleted, and every image was a 500 (Path.cwd() raised FileNotFoundError, for absolute paths too)."""
    first = tmp_path / "first"
    shutil.copytree(run, first)
    monkeypatch.chdir(run)
    with open_client(Path(".")) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        swap_in(first, run, tmp_path)
        top = items(c)["items"][0]
        r = c.get(top["image_url"])
        assert r.status_code == 200 and r.content == Path(top["path"]).read_bytes()


def test_a_run_folder_renamed_or_gone_while_served_says_where_the_labels_are(run: Path, tmp_path: Path) -> None:
    """The run folder renamed and another run made at its name (without the review's labels): every label was
    "the review database ... disappeared ... restart normalcy serve", and a restart began an empty review there.
    The answer names where the labels are now; a folder gone (not yet made again) says so, and comes back."""
    with open_client(run) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        top = items(c)["items"][0]
        assert c.post(f"/api/items/{top['id']}/label", json={"label": "anomalous"}).status_code == 200
        moved = run.parent / "run.old"
        os.rename(run, moved)
        r = c.get("/api/items")
        assert r.status_code == 503 and str(moved / "review.sqlite") in r.json()["detail"]
        t0 = time.perf_counter()  # said at once while it stays so (a folder missing is waited for once)
        assert all(c.get("/api/status").status_code == 503 for _ in range(5))
        assert time.perf_counter() - t0 < 1.0
        os.rename(moved, run)  # put back: served as before
        assert items(c)["n_labelled"] == 1
        os.rename(run, moved)
        swap_in(make_run(tmp_path / "b", n=5), run, tmp_path)
        r = c.post(f"/api/items/{top['id']}/label", json={"label": "normal"})
        assert r.status_code == 503 and str(moved / "review.sqlite") in r.json()["detail"]
        assert not (run / "review.sqlite").exists()  # no new, empty review made beside the labels
        for name in ("review.sqlite", "review.sqlite-wal", "review.sqlite-shm"):  # as the answer says
            os.rename(moved / name, run / name)
        now = items(c)
        assert now["n_items"] == 5
        assert c.post(f"/api/items/{now['items'][0]['id']}/label", json={"label": "normal"}).status_code == 200


def test_a_run_folder_gone_is_waited_for_once_not_at_each_request(run: Path, tmp_path: Path) -> None:
    """A folder missing is waited for up to a second (a predict's two renames); while it stays gone, each request
    (a page of thumbnails: hundreds) is answered at once, not after another second's wait."""
    with open_client(run, database=f"sqlite:///{tmp_path / 'labels.sqlite'}") as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        assert items(c)["n_items"] == 12
        os.rename(run, tmp_path / "elsewhere")
        r = c.get("/api/items")
        assert r.status_code == 503 and "the run folder is gone since the review started" in r.json()["detail"]
        t0 = time.perf_counter()
        assert all(c.get("/api/status").status_code == 503 for _ in range(5))
        assert time.perf_counter() - t0 < 1.0
        os.rename(tmp_path / "elsewhere", run)
        assert items(c)["n_items"] == 12


def test_a_run_replaced_by_one_that_cannot_be_read_is_a_503_until_it_changes(run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "broken"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("review.sqlite*"))
    (copy / "scores.csv").unlink()
    (copy / "scores.parquet").unlink(missing_ok=True)
    with open_client(run) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        assert items(c)["n_items"] == 12
        swap_in(copy, run, tmp_path)
        for _ in range(2):
            r = c.get("/api/items")
            assert r.status_code == 503 and "holds another run since the review started" in r.json()["detail"]
        swap_in(make_run(tmp_path / "b", n=5), run, tmp_path)
        assert items(c)["n_items"] == 5


def test_a_served_link_re_pointed_to_another_run_is_followed_each_run_keeping_its_labels(tmp_path: Path) -> None:
    """`normalcy serve latest`, then `ln -sfn runs/NEW latest`: the server went on serving the run the link led to
    at start. Each request follows the link; each run keeps its labels in its own review.sqlite, and a label given
    on the old run's list after the link moved is refused (409), not put on the new run's item of that id."""
    old, new = make_run(tmp_path / "runs" / "a"), make_run(tmp_path / "runs" / "b", n=5)
    latest = tmp_path / "latest"
    latest.symlink_to(old)
    with open_client(latest) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        listed = items(c)
        top = listed["items"][0]
        assert listed["n_items"] == 12
        assert c.post(f"/api/items/{top['id']}/label", json={"label": "anomalous"},
                      headers={"X-Run-Version": listed["run_version"]}).status_code == 200
        repoint(latest, new)
        stale = c.post(f"/api/items/{top['id']}/label", json={"label": "normal"},
                       headers={"X-Run-Version": listed["run_version"]})
        assert stale.status_code == 409 and "holds another run" in stale.json()["detail"]
        now = items(c)
        assert now["n_items"] == 5 and now["n_labelled"] == 0 and now["run_version"] != listed["run_version"]
        assert {Path(it["path"]).parent for it in now["items"]} == {new.parent / "images"}
        shown = now["items"][0]
        r = c.get(shown["image_url"])
        assert r.status_code == 200 and r.content == Path(shown["path"]).read_bytes()
        # the old list's picture of an id is not the new run's item of that id (another image), nor its URL
        old_urls = {it["id"]: (it["image_url"], it["overlay_url"]) for it in listed["items"]}
        assert old_urls[shown["id"]][0] != shown["image_url"]
        for url in old_urls[shown["id"]]:
            assert c.get(url).status_code == 409
        assert c.post(f"/api/items/{shown['id']}/label", json={"label": "normal"},
                      headers={"X-Run-Version": now["run_version"]}).status_code == 200
        repoint(latest, old)  # back: the old run with its own label
        again = items(c)
        assert again["n_items"] == 12 and again["n_labelled"] == 1
        assert c.get(f"/api/items/{top['id']}", headers={"X-Run-Version": again["run_version"]}).json()["label"] == \
            "anomalous"
    for run_dir, label in ((old, "anomalous"), (new, "normal")):  # each label in its own run's database
        with open_client(run_dir) as c:
            csv_text = c.app.state.review.store.export_csv()  # type: ignore[attr-defined]
            assert csv_text.count("\n") == 2 and f",{label}," in csv_text


def test_a_link_re_pointed_many_times_keeps_a_bounded_number_of_stores_open(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Each run folder the served link led to kept its store (its database's connections) open until the server
    stopped: a link re-pointed at each new run grew them without bound. The least recently used past
    MAX_STORES are closed, and one led to again is opened again, with its labels."""
    runs = [make_run(tmp_path / "runs" / str(k), n=2) for k in range(server_app.MAX_STORES + 2)]
    closed: list[Store] = []
    close = Store.close
    monkeypatch.setattr(Store, "close", lambda self: (closed.append(self), close(self))[-1])
    latest = tmp_path / "latest"
    latest.symlink_to(runs[0])
    with open_client(latest) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        first = items(c)
        assert c.post(f"/api/items/{first['items'][0]['id']}/label", json={"label": "anomalous"},
                      headers={"X-Run-Version": first["run_version"]}).status_code == 200
        for run_dir in runs[1:]:
            repoint(latest, run_dir)
            assert items(c)["n_items"] == 2
        stores = c.app.state.stores  # type: ignore[attr-defined]
        assert len(stores) == server_app.MAX_STORES and list(stores)[-1] == runs[-1].resolve()
        assert len(closed) == len(runs) - server_app.MAX_STORES and not set(map(id, closed)) & set(map(id, stores.values()))
        repoint(latest, runs[0])  # back to a closed one: opened again, its label there
        assert items(c)["n_labelled"] == 1
        assert len(stores) == server_app.MAX_STORES


def test_a_client_without_the_run_version_after_the_link_is_re_pointed_gets_a_409_not_another_runs_item(
        tmp_path: Path) -> None:
    """An API client that sends no X-Run-Version: after `ln -sfn runs/NEW latest` its label on an id it listed went
    to the new run's item of that id (another image, in another database), and the item, its picture and overlay
    by id were the new run's. Once the link has led to another run folder, such a request is a 409 saying what
    to send; with the run named (the header, or the image_url's run) it is served as before."""
    old, new = make_run(tmp_path / "runs" / "a", n=3), make_run(tmp_path / "runs" / "b", n=3)
    latest = tmp_path / "latest"
    latest.symlink_to(old)
    with open_client(latest) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        listed = items(c)
        top = listed["items"][0]["id"]
        assert c.get(f"/api/items/{top}").status_code == 200  # unchanged while the link stays
        assert c.post(f"/api/items/{top}/label", json={"label": "normal"}).status_code == 200
        repoint(latest, new)
        now = items(c)
        for r in (c.post(f"/api/items/{top}/label", json={"label": "anomalous"}), c.get(f"/api/items/{top}"),
                  c.get(f"/api/items/{top}/image"), c.get(f"/api/items/{top}/overlay"),
                  c.get(f"/api/items/{top}", headers={"X-Run-Version": listed["run_version"]})):
            assert r.status_code == 409, r.text
            assert "list the items again" in r.json()["detail"] or "X-Run-Version" in r.json()["detail"]
        assert items(c)["n_labelled"] == 0
        shown = now["items"][0]
        assert c.get(shown["image_url"]).status_code == 200
        version = {"X-Run-Version": now["run_version"]}
        assert c.get(f"/api/items/{shown['id']}", headers=version).json()["name"] == shown["name"]
        assert c.post(f"/api/items/{shown['id']}/label", json={"label": "anomalous"}, headers=version).status_code == 200
        repoint(latest, old)
        assert items(c)["n_labelled"] == 1


def repoint(link: Path, target: Path) -> None:
    """`ln -sfn TARGET LINK`: a new link renamed over the old one."""
    tmp = link.with_name(link.name + ".new")
    tmp.symlink_to(target)
    os.replace(tmp, link)


def test_a_served_link_removed_or_led_to_a_folder_without_a_run_is_a_503_naming_it(tmp_path: Path) -> None:
    """The served link removed, or pointed at a folder that holds no run: a 503 saying so (and no review database
    made in that folder), until the link leads to a run again."""
    old = make_run(tmp_path / "runs" / "a")
    latest = tmp_path / "latest"
    latest.symlink_to(old)
    other = tmp_path / "photos"
    other.mkdir()
    with open_client(latest) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        assert items(c)["n_items"] == 12
        repoint(latest, other)
        r = c.get("/api/items")
        assert r.status_code == 503
        assert f"{other} is not a run folder (no scores.csv)" in r.json()["detail"] and str(latest) in r.json()["detail"]
        assert not (other / "review.sqlite").exists()
        latest.unlink()
        r = c.get("/api/items")
        assert r.status_code == 503 and "gone since the review started" in r.json()["detail"]
        assert str(latest) in r.json()["detail"]
        latest.symlink_to(old)
        assert items(c)["n_items"] == 12


def test_a_run_rewritten_while_serve_reads_it_is_one_line(run: Path, tmp_path: Path, monkeypatch) -> None:
    """Another predict putting its run in place while serve read the run at start: the scores of one run beside
    the embeddings of the other (the re-ranking's features, perhaps of other images), served without a word.
    It is read again; a run rewritten at every read is one line saying to start again."""
    import normalcy.review.state as state
    from normalcy.runs.format import finish_run

    other = make_run(tmp_path / "b")
    real = state.read_features

    def meanwhile(run_dir, n):  # scores.csv read; the other predict finishes now
        staging = tmp_path / ".run.1.partial"
        shutil.copytree(other, staging, ignore=shutil.ignore_patterns("review.sqlite*"))
        finish_run(staging, run)
        return real(run_dir, n)

    monkeypatch.setattr(state, "read_features", meanwhile)
    with pytest.raises(InputError, match="the run folder was rewritten while it was read .* start normalcy serve "
                                         "again"):
        create_app(run, TOKEN)
    monkeypatch.setattr(state, "read_features", real)
    with open_client(run) as c:  # started again: served
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        assert items(c)["n_items"] == 12


def test_a_predict_finishing_once_while_serve_starts_is_read_again(run: Path, tmp_path: Path, monkeypatch) -> None:
    """A predict finishing while serve reads the run (seconds at 100,000 images) stopped the start with "start
    normalcy serve again"; the run now in place is read again (the test above: one rewritten at every read stops)."""
    import normalcy.review.state as state

    other = make_run(tmp_path / "b", n=5)
    real = state.read_features
    calls = []

    def once(run_dir, n):
        if not calls:
            swap_in(other, run, tmp_path)
        calls.append(n)
        return real(run_dir, n)

    monkeypatch.setattr(state, "read_features", once)
    with open_client(run) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        assert items(c)["n_items"] == 5 and calls == [12, 5]


@pytest.mark.parametrize("item_id", ["99999999999999999999", str(2**63), "0"])
def test_ids_out_of_range_are_404(client: TestClient, item_id: str) -> None:
    """Every item route answers 404 for an id no item can have, however large (not a 500 from an overflow)."""
    for url in (f"/api/items/{item_id}", f"/api/items/{item_id}/image", f"/api/items/{item_id}/overlay"):
        assert client.get(url).status_code == 404, url
    assert client.post(f"/api/items/{item_id}/label", json={"label": "normal"}).status_code == 404


ITEM_ROUTES = ("/api/items/{}", "/api/items/{}/image", "/api/items/{}/overlay")


def test_item_ids_in_paths_are_plain_decimal_digits_only(client: TestClient) -> None:
    """"+1", "%201" (a space), "1%0a" (a newline), "1.0", "1_0", "-1" and a full-width "１" were read as an int, the
    first five as item 1 (200), and "01", "001" were item 1 still: every route that takes an id answers 422 naming
    item_id, and nothing is labelled."""
    item_id = items(client)["items"][0]["id"]
    for bad in (f"+{item_id}", f"%20{item_id}", f"{item_id}%20", f"{item_id}%0a", f"{item_id}.0", f"{item_id}_0",
                "-1", "-99999999999999999999", "%EF%BC%91", "0x1", "1e0", f"0{item_id}", f"00{item_id}", "00"):
        answers = [client.get(url.format(bad)) for url in ITEM_ROUTES]
        answers.append(client.post(f"/api/items/{bad}/label", json={"label": "normal"}))
        for r in answers:
            assert r.status_code == 422, (bad, r.url, r.status_code)
            (error,) = r.json()["detail"]
            assert error["loc"] == ["path", "item_id"] and "plain decimal digits" in error["msg"], error
    assert items(client)["n_labelled"] == 0
    for url in ITEM_ROUTES:  # the plain id still works
        assert client.get(url.format(item_id)).status_code == 200, url


def test_tampered_paths_refused(client: TestClient, run: Path, tmp_path: Path) -> None:
    review = client.app.state.review  # type: ignore[attr-defined]
    (tmp_path / "secret.png").write_bytes(b"secret")
    (tmp_path / "images" / "link.png").symlink_to(tmp_path / "secret.png")
    (run / "overlays" / "link.png").symlink_to("/etc/passwd")
    ids = [it["id"] for it in items(client)["items"]]
    tampered = {ids[0]: ("/etc/passwd", None), ids[1]: (str(tmp_path / "images" / "link.png"), None),
                ids[2]: (str(tmp_path / "images" / ".." / "secret.png"), None),
                ids[3]: (str(tmp_path / "images" / "img_003.png"), "../secret.png"),
                ids[4]: (str(tmp_path / "images" / "img_004.png"), str(run / "overlays" / "link.png"))}
    with review.store.engine.begin() as conn:
        for item_id, (path, overlay) in tampered.items():
            values = {"path": path} if overlay is None else {"overlay": overlay}
            conn.execute(update(items_table).where(items_table.c.id == item_id).values(**values))
    for item_id, (_, overlay) in tampered.items():
        kind = "image" if overlay is None else "overlay"
        r = client.get(f"/api/items/{item_id}/{kind}")
        assert r.status_code == 403, (item_id, kind, r.status_code)
        assert b"secret" not in r.content and b"root:" not in r.content


def test_symlinked_images_and_extra_roots(tmp_path: Path) -> None:
    """An image that is itself a symlink (git-annex, DVC) is served: predict was given it."""
    run = make_run(tmp_path)
    annex = tmp_path / "annex"
    annex.mkdir()
    img = tmp_path / "images" / "img_000.png"
    (annex / "blob").write_bytes(img.read_bytes())
    img.unlink()
    img.symlink_to(annex / "blob")
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "other.png").write_bytes(b"other")
    with open_client(run, extra_roots=[extra]) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        names = by_name(c)
        assert c.get(names["img_000.png"]["image_url"]).status_code == 200
        item_id = names["img_001.png"]["id"]
        point_item_at(c, item_id, extra / "other.png")
        r = c.get(f"/api/items/{item_id}/image")
        assert r.status_code == 200 and r.content == b"other"


def test_an_image_that_is_a_symlink_loop_is_not_found_and_the_rest_are_served(tmp_path: Path) -> None:
    """One image of the run replaced by a link to itself stopped `serve` with a RuntimeError traceback (every
    listed image was resolved at start); it is now a 404 of its own, and the other images are served."""
    run = make_run(tmp_path, n=3)
    img = tmp_path / "images" / "img_001.png"
    img.unlink()
    img.symlink_to(img)
    with open_client(run) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        names = by_name(c)
        r = c.get(names["img_001.png"]["image_url"])
        assert r.status_code == 404 and "img_001.png" in r.json()["detail"]
        assert c.get(names["img_000.png"]["image_url"]).status_code == 200


# --------------------------------------------------------------------------- items and labels


def test_items_listing(client: TestClient) -> None:
    data = items(client)
    assert (data["total"], data["n_items"], data["n_labelled"], data["strategy"]) == (12, 12, 0, "neighbour")
    assert data["rerank_ms"] is None or data["rerank_ms"] >= 0
    listing = data["items"]
    assert [it["rank"] for it in listing] == list(range(1, 13))
    assert listing[0]["name"] == "img_000.png"  # no labels yet: by anomaly score
    it = listing[0]
    assert set(it) == {"id", "name", "path", "score", "decision", "rank", "priority", "label", "interest",
                       "image_url", "overlay_url"}
    assert it["decision"] == "anomalous" and it["label"] is None and it["interest"] is None
    folder = client.app.state.review.folder  # type: ignore[attr-defined]  # the run folder whose ids these are
    assert it["image_url"] == f"/api/items/{it['id']}/image?run={folder}"
    assert it["overlay_url"] == f"/api/items/{it['id']}/overlay?run={folder}"
    assert client.get(f"/api/items/{it['id']}").json() == it
    assert client.get("/api/items/99999").status_code == 404
    page = items(client, offset=3, limit=4)
    assert page["total"] == 12 and [x["rank"] for x in page["items"]] == [4, 5, 6, 7]


def test_filters(client: TestClient) -> None:
    n_anomalous = sum(1 - i / 12 >= THRESHOLD for i in range(12))
    assert items(client, decision="anomalous")["total"] == n_anomalous
    assert items(client, decision="normal")["total"] == 12 - n_anomalous
    names = by_name(client)
    client.post(f"/api/items/{names['img_001.png']['id']}/label", json={"label": "normal"})
    client.post(f"/api/items/{names['img_002.png']['id']}/label", json={"label": "anomalous", "interest": 5})
    client.post(f"/api/items/{names['img_009.png']['id']}/label", json={"label": None, "interest": 3})
    assert items(client, label="labelled")["total"] == 3
    assert items(client, label="unlabelled")["total"] == 9
    assert [x["name"] for x in items(client, label="normal")["items"]] == ["img_001.png"]
    assert [x["name"] for x in items(client, label="anomalous")["items"]] == ["img_002.png"]
    assert items(client, label="anomalous", decision="normal")["total"] == 0
    assert items(client, label="labelled", decision="normal")["total"] == 1
    for params in ({"label": "maybe"}, {"decision": "x"}, {"offset": -1}, {"limit": 0}, {"limit": "many"}):
        assert client.get("/api/items", params=params).status_code in (400, 422), params


def test_label_and_rerank(client: TestClient) -> None:
    top = items(client)["items"][0]
    r = client.post(f"/api/items/{top['id']}/label", json={"label": "normal", "interest": None})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rerank_ms"] >= 0 and body["item"]["label"] == "normal"
    assert body["item"]["rank"] > top["rank"]  # a normal top item is shown later
    again = client.get(f"/api/items/{top['id']}").json()
    assert again["label"] == "normal" and again["rank"] == body["item"]["rank"]
    status = client.get("/api/status").json()
    rerank_ms = status.pop("rerank_ms")
    assert status == {"n_items": 12, "n_labelled": 1, "strategy": "neighbour", "database": "sqlite"}
    assert rerank_ms >= 0
    # Clearing the label (both null) makes it unlabelled again.
    cleared = client.post(f"/api/items/{top['id']}/label", json={"label": None, "interest": None}).json()["item"]
    assert cleared["label"] is None and items(client)["n_labelled"] == 0


def test_a_utf8_client_name_is_stored_as_written(client: TestClient) -> None:
    """HTTP hands headers to the app as Latin-1: an X-Client of "José" (UTF-8) went into the label log as
    "JosÃ©". A name that is not UTF-8 is kept as Latin-1 reads it."""
    item_id = items(client)["items"][0]["id"]
    for raw, stored in (("José 検査".encode(), "José 検査"), (b"Jos\xe9", "Jos\xe9")):
        r = client.post(f"/api/items/{item_id}/label", json={"label": "normal"}, headers={"X-Client": raw})
        assert r.status_code == 200, r.text
        assert client.app.state.review.store.events()[-1]["client"] == stored  # type: ignore[attr-defined]


def test_bad_label_bodies(client: TestClient) -> None:
    item_id = items(client)["items"][0]["id"]
    for body in ({"label": "bad"}, {"interest": 6}, {"interest": -1}, {"interest": 2.5}, {"interest": "3"},
                 {"label": "normal", "extra": 1}, [], "normal"):
        r = client.post(f"/api/items/{item_id}/label", json=body)
        assert r.status_code == 422, (body, r.status_code)
    r = client.post(f"/api/items/{item_id}/label", content=b"not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert client.post("/api/items/99999/label", json={"label": "normal"}).status_code == 404
    assert items(client)["n_labelled"] == 0


def test_an_empty_label_body_does_not_clear_the_label(client: TestClient) -> None:
    """{} was taken as "clear": an empty body erased a person's label with a 200; it is a 422 saying what to send."""
    item_id = items(client)["items"][0]["id"]
    assert client.post(f"/api/items/{item_id}/label", json={"label": "anomalous", "interest": 4}).status_code == 200
    r = client.post(f"/api/items/{item_id}/label", json={})
    assert r.status_code == 422 and "both null clears the label" in r.json()["detail"][0]["msg"]
    item = client.get(f"/api/items/{item_id}").json()
    assert (item["label"], item["interest"]) == ("anomalous", 4)
    assert client.post(f"/api/items/{item_id}/label", json={"label": None, "interest": None}).status_code == 200
    assert items(client)["n_labelled"] == 0


def test_a_label_body_without_a_field_keeps_its_stored_value(client: TestClient) -> None:
    """{"interest": 2} alone cleared the label, {"label": ...} alone the interest: two pages labelling one item at once
    erased each other's. A field left out keeps its stored value, an explicit null clears it; labels.csv, the item,
    the list and the label log all say the same."""
    item_id = items(client)["items"][0]["id"]
    url = f"/api/items/{item_id}/label"

    def posted(body: dict) -> tuple:
        r = client.post(url, json=body)
        assert r.status_code == 200, r.text
        item = r.json()["item"]
        again = client.get(f"/api/items/{item_id}").json()
        assert (again["label"], again["interest"]) == (item["label"], item["interest"])
        return item["label"], item["interest"]

    assert posted({"label": "anomalous", "interest": 4}) == ("anomalous", 4)
    assert posted({"interest": 2}) == ("anomalous", 2)  # another page's interest: the label stays
    assert posted({"label": "normal"}) == ("normal", 2)  # and this one's label: the interest stays
    row = next(csv.DictReader(io.StringIO(client.get("/api/labels.csv").text)))
    assert (row["label"], row["interest"]) == ("normal", "2")
    events = client.app.state.review.store.events()  # type: ignore[attr-defined]
    assert [(e["label"], e["interest"]) for e in events] == [("anomalous", 4), ("anomalous", 2), ("normal", 2)]
    assert posted({"interest": None}) == ("normal", None)  # an explicit null clears that field only
    assert posted({"label": None}) == (None, None)
    assert items(client)["n_labelled"] == 0 and client.get("/api/labels.csv").text.count("\n") == 1
    assert posted({"interest": 5}) == (None, 5)  # nothing stored: nothing kept
    assert posted({"label": "normal", "interest": None}) == ("normal", None)  # both given: as before, as the page sends


def test_strategy(client: TestClient) -> None:
    for name in ("none", "protege", "neighbour"):
        r = client.put("/api/strategy", json={"strategy": name})
        assert r.status_code == 200 and r.json()["strategy"] == name
        assert items(client)["strategy"] == name
    for body in ({"strategy": "magic"}, {}, {"strategy": None}):
        assert client.put("/api/strategy", json=body).status_code == 422


def test_strategy_changes_at_once_share_their_re_ranks(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """20 strategy changes at once each waited for the re-rank before theirs, then re-ranked alone: 20 full
    re-ranks queued. Those made while a re-rank runs now share the next one; the last change is the one shown."""
    review = client.app.state.review  # type: ignore[attr-defined]
    ranks: list[str] = []
    make = review_state.make_ranker

    class Slow:  # a re-rank of many items, with labels (a random forest): slow enough for the others to arrive
        def __init__(self, name: str) -> None:
            self.name, self.ranker = name, make(name)

        def rank(self, *args: Any) -> Any:
            ranks.append(self.name)
            time.sleep(0.1)
            return self.ranker.rank(*args)

    monkeypatch.setattr(review_state, "make_ranker", Slow)
    names = ["protege", "neighbour"] * 10
    barrier = threading.Barrier(len(names))
    statuses: list[int] = []

    def change(name: str) -> None:
        barrier.wait()
        statuses.append(client.put("/api/strategy", json={"strategy": name}).status_code)

    threads = [threading.Thread(target=change, args=(name,)) for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert statuses == [200] * len(names)
    assert len(ranks) <= 5, ranks
    assert ranks[-1] == review.strategy == items(client)["strategy"]


def test_without_embeddings_or_overlays(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = make_run(tmp_path, n=6, embeddings=False, overlay_column=False)
    with caplog.at_level("WARNING", logger="normalcy"), open_client(run) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        assert "embeddings.safetensors" in caplog.text
        data = items(c)
        assert data["strategy"] == "none" and all(it["overlay_url"] is None for it in data["items"])
        first = data["items"][0]
        assert c.post(f"/api/items/{first['id']}/label", json={"label": "normal"}).status_code == 200
        assert c.put("/api/strategy", json={"strategy": "neighbour"}).status_code == 409


def test_a_run_folder_copied_in_part_is_refused_with_what_is_missing(tmp_path: Path) -> None:
    """A run folder copied in part (a copy stopped, a sync not finished) was served as whole: scores.csv short of
    rows, its last row cut (a score cut to fewer digits read as a score), run.json cut short ("serving without
    it"), or a table run without run.json ("missing column(s) path"). Each is now one line saying what is wrong."""
    run = make_run(tmp_path, n=4)
    whole = (run / "scores.csv").read_bytes()
    meta = (run / "run.json").read_text()

    def refused(words: str) -> None:
        with pytest.raises(InputError) as info:
            create_app(run, TOKEN)
        assert words in str(info.value) and "copied in part" in str(info.value), info.value

    (run / "scores.csv").write_bytes(whole[:whole.rindex(b"\n", 0, len(whole) - 1) + 1])  # the last row lost
    refused(f"{run / 'scores.csv'}: only 3 row(s), where run.json counts 4 (n_images); the run folder is damaged or")
    (run / "scores.csv").write_bytes(whole[:-12])  # the last row cut in the middle
    refused(f"{run / 'scores.csv'}: its last row is cut short (no line end)")
    (run / "scores.csv").write_bytes(whole)
    (run / "run.json").write_text(meta[:len(meta) // 2])
    refused(f"{run / 'run.json'}: cannot read (")
    (run / "run.json").write_text('{"n_images": ' + "9" * 5000 + "}")  # over Python's 4300 digits: was a traceback
    refused(f"{run / 'run.json'}: cannot read (Exceeds the limit (4300 digits)")
    (run / "run.json").write_text(meta)
    with TestClient(create_app(run, TOKEN)):  # whole again: served
        pass
    table = tmp_path / "table_run"
    table.mkdir()
    (table / "scores.csv").write_text("row,score,decision,threshold\n0,0.5,0,0.9\n")
    with pytest.raises(InputError, match="missing column.s. path; and no run.json beside it, which says what kind"):
        create_app(table, TOKEN)


def test_relative_paths_and_bad_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path, n=4)
    text = (run / "scores.csv").read_text().replace(str(tmp_path) + os.sep, "")
    (run / "scores.csv").write_text(text)
    monkeypatch.chdir(tmp_path)
    with open_client(run) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        first = items(c)["items"][0]
        assert first["path"] == str(tmp_path / "images" / "img_000.png")
        assert c.get(first["image_url"]).status_code == 200
    (run / "scores.csv").write_text("path,score,decision\nimages/a.png,high,normal\n")
    with pytest.raises(InputError, match=r"scores\.csv:2: score 'high'"):
        create_app(run, TOKEN)
    (run / "scores.csv").unlink()
    with pytest.raises(InputError, match=r"scores\.csv: not found"):
        create_app(run, TOKEN)
    with pytest.raises(InputError, match="run folder not found"):
        create_app(tmp_path / "nope", TOKEN)


def test_labels_csv(client: TestClient) -> None:
    names = by_name(client)
    client.post(f"/api/items/{names['img_003.png']['id']}/label", json={"label": "anomalous", "interest": 2})
    client.post(f"/api/items/{names['img_007.png']['id']}/label", json={"label": "normal"})
    r = client.get("/api/labels.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert 'attachment; filename="labels.csv"' in r.headers["content-disposition"]
    got = list(csv.DictReader(io.StringIO(r.text)))
    assert [(Path(x["path"]).name, x["label"], x["interest"], x["decision"]) for x in got] == [
        ("img_003.png", "anomalous", "2", "anomalous"), ("img_007.png", "normal", "", "normal")]


def test_labels_survive_a_restart(run: Path, db_url: str) -> None:  # noqa: F811
    database = None if db_url.startswith("sqlite") else db_url
    with open_client(run, database=database) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        names = by_name(c)
        c.post(f"/api/items/{names['img_004.png']['id']}/label", json={"label": "anomalous", "interest": 4})
        c.post(f"/api/items/{names['img_005.png']['id']}/label", json={"label": "normal"})
    with open_client(run, database=database) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        names = by_name(c)
        assert (names["img_004.png"]["label"], names["img_004.png"]["interest"]) == ("anomalous", 4)
        assert names["img_005.png"]["label"] == "normal"
        status = c.get("/api/status").json()
        assert status["n_labelled"] == 2 and status["database"] == ("sqlite" if database is None else "postgresql")
    if database is None:
        assert (run / "review.sqlite").is_file()



def test_servers_on_one_database_rank_with_each_others_labels(run: Path, db_url: str) -> None:  # noqa: F811
    """Two servers of one run on one database (two `normalcy serve --database`): a label saved through one
    re-ranked only that one; the other's order ignored it until a restart. Its next page now re-ranks."""
    with open_client(run, database=db_url) as a, open_client(run, database=db_url) as b:
        for c in (a, b):
            c.headers["Authorization"] = f"Bearer {TOKEN}"
        top = items(b)["items"][0]
        ranked = a.post(f"/api/items/{top['id']}/label", json={"label": "normal"}).json()["item"]
        assert ranked["rank"] > top["rank"] == 1
        seen = {it["id"]: it for it in items(b)["items"]}
        assert (seen[top["id"]]["rank"], seen[top["id"]]["label"]) == (ranked["rank"], "normal")
        assert [it["id"] for it in items(b)["items"]] == [it["id"] for it in items(a)["items"]]
        assert b.get(f"/api/items/{top['id']}").json()["rank"] == ranked["rank"]
        a.post(f"/api/items/{top['id']}/label", json={"label": None})  # cleared: seen too
        assert items(b)["items"][0]["id"] == top["id"]

def test_a_database_option_finds_or_names_the_runs_own_labels(run: Path, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """Labels given in the run's own review.sqlite were out of sight under --database: with the URL of that very
    file (the run keyed by its path there, not as its own), and with another database, without a word."""
    with open_client(run) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        c.post(f"/api/items/{by_name(c)['img_004.png']['id']}/label", json={"label": "anomalous"})
    with open_client(run, database=f"sqlite:///{run}/../run/review.sqlite") as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        assert by_name(c)["img_004.png"]["label"] == "anomalous"
    with caplog.at_level(logging.WARNING, logger="normalcy"), \
            open_client(run, database=f"sqlite:///{tmp_path / 'team.sqlite'}") as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        assert c.get("/api/status").json()["n_labelled"] == 0
    assert f"1 label(s) of this run are in its own database {run / 'review.sqlite'}" in caplog.text
    assert "serve it without --database" in caplog.text


def test_bad_database_url(run: Path) -> None:
    with pytest.raises(InputError, match="unsupported database"):
        create_app(run, TOKEN, database="mongodb://localhost/x")


# --------------------------------------------------------------------------- a real server


def test_fifty_clients_lose_no_label(run: Path, db_url: str) -> None:  # noqa: F811
    """50 browsers labelling at once: every label lands, and the last write wins."""
    database = None if db_url.startswith("sqlite") else db_url
    n_clients, per_client = 50, 4
    with LiveServer(run, TOKEN, database) as live:
        base = live.base
        ids = [it["id"] for it in httpx.get(f"{base}/api/items", params={"token": TOKEN}).json()["items"]]
        statuses: list[int] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(n_clients)

        def work(k: int) -> None:
            try:
                with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}", "X-Client": f"c{k}"},
                                  timeout=30) as c:
                    barrier.wait()
                    for j in range(per_client):
                        body = {"label": ("normal", "anomalous")[(k + j) % 2],
                                "interest": None if j == 0 else (k + j) % 6}
                        statuses.append(c.post(f"/api/items/{ids[(k * 3 + j) % len(ids)]}/label", json=body).status_code)
            except BaseException as err:  # noqa: BLE001
                errors.append(err)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(n_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert statuses == [200] * (n_clients * per_client)
        store = live.app.state.review.store
        assert len(store.events()) == n_clients * per_client
        events = store.events()
        assert {f"c{k}" for k in range(n_clients)} == {e["client"] for e in events}
        assert all(sum(e["client"] == f"c{k}" for e in events) == per_client for k in range(n_clients))
        last = {e["item_id"]: (e["label"], e["interest"]) for e in events}
        served = {it["id"]: (it["label"], it["interest"])
                  for it in httpx.get(f"{base}/api/items", params={"token": TOKEN}).json()["items"]}
        assert {i: served[i] for i in last} == last
        assert {it.id: (it.label, it.interest) for it in store.labelled()} == last


def test_unknown_strategy(run: Path) -> None:
    with pytest.raises(InputError, match="unknown ranking strategy 'best'"):
        create_app(run, TOKEN, strategy="best")


def test_odd_rows_and_formats(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A NaN score drops its row (embeddings stay aligned); a TIFF is sent as PNG; bad embeddings fall back."""
    from PIL import Image
    from safetensors.numpy import load_file, save_file

    run = make_run(tmp_path, n=5)
    tif = tmp_path / "images" / "img_004.tif"
    Image.open(tmp_path / "images" / "img_004.png").save(tif)
    lines = (run / "scores.csv").read_text().splitlines()
    lines[1] = lines[1].replace(",1,1,", ",nan,1,")
    lines[5] = lines[5].replace("img_004.png", "img_004.tif", 1)
    (run / "scores.csv").write_text("\n".join(lines) + "\n")
    emb = load_file(str(run / "embeddings.safetensors"))["embedding"]
    with caplog.at_level("WARNING", logger="normalcy"), open_client(run) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        review = c.app.state.review  # type: ignore[attr-defined]
        assert "not finite" in caplog.text
        assert sorted(by_name(c)) == ["img_001.png", "img_002.png", "img_003.png", "img_004.tif"]
        assert (review.features == emb[1:]).all() and review.strategy == "neighbour"
        r = c.get(by_name(c)["img_004.tif"]["image_url"])
        assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"
    save_file({"embedding": emb[:3]}, str(run / "embeddings.safetensors"))
    with caplog.at_level("WARNING", logger="normalcy"), open_client(run) as c:
        assert c.app.state.review.strategy == "none"  # type: ignore[attr-defined]
        assert "does not match" in caplog.text



def test_an_empty_score_is_left_out_and_all_nan_scores_say_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A scores.csv written by hand: an empty score cell stopped the whole review ("score '' is not a number")
    where a NaN only leaves its row out; and a file whose every score is NaN was "no scored images to review",
    as if it were empty."""
    run = make_run(tmp_path, n=3)
    lines = (run / "scores.csv").read_text().splitlines()
    (run / "scores.csv").write_text("\n".join([lines[0], re.sub(r",[^,]*,1,", ",,1,", lines[1], count=1),
                                               *lines[2:]]) + "\n")
    with caplog.at_level("WARNING", logger="normalcy"), open_client(run) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        assert sorted(by_name(c)) == ["img_001.png", "img_002.png"] and "score is empty" in caplog.text
    (run / "scores.csv").write_text("\n".join([lines[0], *(re.sub(r"(\.png),[^,]*,", r"\1,nan,", x, count=1)
                                                           for x in lines[1:])]) + "\n")
    with pytest.raises(InputError, match=r"no scored images to review \(every score of its 3 row\(s\) is NaN"):
        create_app(run, TOKEN)
    from normalcy.runs.format import read_table_items

    table_run = tmp_path / "table-run"
    table_run.mkdir()
    (table_run / "scores.csv").write_text("row,score,decision\n0,nan,0\n1,,0\n")
    with pytest.raises(InputError, match=r"no scored rows to review \(every score of its 2 row\(s\) is NaN"):
        read_table_items(table_run, "row")


# --------------------------------------------------------------------------- security of the serving


def test_runs_sharing_a_database(run: Path, tmp_path: Path, db_url: str) -> None:  # noqa: F811
    """Two runs of the same images in one database: each keeps its own scores and labels."""
    second = tmp_path / "second"
    shutil.copytree(run, second)
    (second / "review.sqlite").unlink(missing_ok=True)
    text = (second / "scores.csv").read_text()
    (second / "scores.csv").write_text(text.replace(",0.5,", ",0.25,"))  # another model: other scores
    with open_client(run, database=db_url) as a:
        a.headers["Authorization"] = f"Bearer {TOKEN}"
        first_scores = {n: it["score"] for n, it in by_name(a).items()}
        a.post(f"/api/items/{by_name(a)['img_004.png']['id']}/label", json={"label": "anomalous"})
    with open_client(second, database=db_url) as b:
        b.headers["Authorization"] = f"Bearer {TOKEN}"
        names = by_name(b)
        assert len(names) == 12 and names["img_004.png"]["label"] is None
        assert names["img_006.png"]["score"] == 0.25 != first_scores["img_006.png"]
        b.post(f"/api/items/{names['img_005.png']['id']}/label", json={"label": "normal"})
    with open_client(run, database=db_url) as a:  # a restart of the first run finds its own state
        a.headers["Authorization"] = f"Bearer {TOKEN}"
        names = by_name(a)
        assert {n: it["score"] for n, it in names.items()} == first_scores
        assert names["img_004.png"]["label"] == "anomalous" and names["img_005.png"]["label"] is None
        assert a.get("/api/status").json()["n_labelled"] == 1
        rows = list(csv.DictReader(io.StringIO(a.get("/api/labels.csv").text)))
        assert [Path(r["path"]).name for r in rows] == ["img_004.png"]
    store = Store(db_url)
    try:
        assert store.items() == []  # a Store without a run id sees no run's items
    finally:
        store.close()


def test_only_the_runs_folders_are_served(tmp_path: Path) -> None:
    """An image listed from outside the input folders is served, but its neighbours are not."""
    run = make_run(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = elsewhere / "img_000.png"
    shutil.move(str(tmp_path / "images" / "img_000.png"), moved)
    (elsewhere / "secret.png").write_bytes((tmp_path / "images" / "img_001.png").read_bytes())
    text = (run / "scores.csv").read_text()
    (run / "scores.csv").write_text(text.replace(str(tmp_path / "images" / "img_000.png"), str(moved)))
    with open_client(run) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        names = by_name(c)
        assert c.get(names["elsewhere/img_000.png"]["image_url"]).status_code == 200
        item_id = names["elsewhere/img_000.png"]["id"]
        point_item_at(c, item_id, elsewhere / "secret.png")
        assert c.get(f"/api/items/{item_id}/image").status_code == 403


def test_non_finite_json_and_odd_bodies(client: TestClient) -> None:
    item_id = items(client)["items"][0]["id"]
    for raw in (b'{"interest": NaN}', b'{"interest": Infinity}', b'{"label": "normal", "x": -Infinity}',
                b'{"label": NaN}', b'NaN', b'{"label": "normal\\u0000"}'):
        r = client.post(f"/api/items/{item_id}/label", content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, (raw, r.status_code, r.text)
        assert r.json()["detail"]
    r = client.put("/api/strategy", content=b'{"strategy": NaN}', headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert items(client)["n_labelled"] == 0


def test_request_bodies_are_capped(client: TestClient, run: Path) -> None:
    item_id = items(client)["items"][0]["id"]
    url = f"/api/items/{item_id}/label"
    big = b'{"label": "normal", "pad": "' + b"x" * MAX_BODY + b'"}'
    r = client.post(url, content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "bytes" in r.json()["detail"]
    r = client.post(url, content=(big[i:i + 65536] for i in range(0, len(big), 65536)),
                    headers={"Content-Type": "application/json"})  # chunked: no Content-Length
    assert r.status_code == 413
    assert client.post(url, json={"label": "normal"}).status_code == 200
    with LiveServer(run, TOKEN) as live:  # over a real socket: a declared size is refused before the body is sent
        conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
        conn.putrequest("POST", url)
        conn.putheader("Authorization", f"Bearer {TOKEN}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(150_000_000))
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 413
        conn.close()


def test_url_is_announced_only_once_the_server_accepts(run: Path) -> None:
    """listen() binds without listening: a URL announced too early would meet a refused connection."""
    statuses: list[int] = []
    app = create_app(run, TOKEN)

    def announce(url: str) -> None:
        statuses.append(httpx.get(url, timeout=10).status_code)
        served.stop()

    served = ReviewServer(app, TOKEN, listen("127.0.0.1", 0), announce=announce)
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive() and statuses == [200]
    assert served.url == f"http://127.0.0.1:{served.port}/?token={TOKEN}"


def test_serve_model_images_scores_them_and_serves_the_run(tmp_path: Path, synthetic_root: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`normalcy serve MODEL IMAGES`: the images are scored into a run folder, and that run is served,
    every image listed with its decision (anomalous when its score reaches the model's threshold)."""
    from typer.testing import CliRunner

    import normalcy.review.server
    from normalcy.cli import app
    from normalcy.detectors import create
    from normalcy.images.features import FeatureExtractor
    from normalcy.images.io import list_files

    model = tmp_path / "model"
    det = create("patchcore", FeatureExtractor(image_size=64)).fit(list_files(synthetic_root / "train" / "good"),
                                                                    progress=False)
    det.save(model)
    served: list[dict] = []

    def serve_live(run_dir: Path, **_options: object) -> None:  # what serve() does, on a free port, then stop
        with LiveServer(Path(run_dir), TOKEN) as live:
            served.extend(httpx.get(f"{live.base}/api/items", params={"token": TOKEN}).json()["items"])

    monkeypatch.setattr(normalcy.review.server, "serve", serve_live)
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["serve", str(model), str(synthetic_root / "test"), "-o", str(run)])
    assert r.exit_code == 0, r.output
    assert (run / "scores.csv").is_file()
    test_images = {str(p.resolve()) for p in (synthetic_root / "test").rglob("*.png")}
    assert {str(Path(it["path"]).resolve()) for it in served} == test_images
    assert all(it["decision"] == ("anomalous" if it["score"] >= det.threshold_ else "normal") for it in served)
    assert {it["decision"] for it in served} == {"anomalous", "normal"}


def test_serve_of_a_run_on_a_read_only_file_system_computes_no_embeddings_it_cannot_keep(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A run without embeddings (EfficientAD, DRAEM) on a read-only mount: serve computed them for every image,
    then stopped with a traceback ("OSError: Read-only file system") writing them. It says so before the work
    and serves the run ranked by score (the database's own message follows where it cannot be written either)."""
    import errno
    import tempfile

    from typer.testing import CliRunner

    import normalcy.review.server
    import normalcy.runs.format as run_format
    from normalcy.cli import app

    run = make_run(tmp_path, n=3, embeddings=False)
    served: list[Path] = []
    monkeypatch.setattr(normalcy.review.server, "serve", lambda run_dir, **_: served.append(run_dir))

    def read_only(*_args: object, **_kw: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    monkeypatch.setattr(run_format, "save_file", read_only)
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        r = CliRunner().invoke(app, ["serve", str(run)])
    assert r.exit_code == 0 and served == [run], r.output
    assert "cannot write embeddings.safetensors there (Read-only file system)" in caplog.text
    assert "ranked by anomaly score only" in caplog.text and not (run / "embeddings.safetensors").exists()


def test_serve_of_a_path_not_there_or_a_dangling_link_says_not_found(tmp_path: Path) -> None:
    """`normalcy serve latest` with the link left dangling (its run deleted), or a mistyped path: "neither a run
    folder (no scores.csv) nor a model directory (no model.json)", as if something were there; so was a folder of
    runs (predict of several tables), which now names them."""
    from typer.testing import CliRunner

    from normalcy.cli import app

    latest = tmp_path / "latest"
    latest.symlink_to(tmp_path / "runs" / "gone")
    (tmp_path / "tables").mkdir()
    for name in ("a.csv", "b.csv"):  # predict of two tables: a run for each, in a folder of its own
        os.rename(make_run(tmp_path / name, n=2), tmp_path / "tables" / name)
    for target, said in ((tmp_path / "typo", "typo: not found"),
                         (tmp_path / "tables", "tables holds run folders, not a run: serve one of them (a.csv, b.csv)"),
                         (latest, f"latest: not found (a symbolic link to {tmp_path / 'runs' / 'gone'}, which is not "
                                  "there)")):
        r = CliRunner().invoke(app, ["serve", str(target)])
        assert r.exit_code == 1 and said in " ".join(r.output.split()), r.output


def test_serve_warns_beyond_loopback_and_prints_the_url(run: Path, monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    started: list[str] = []

    def fake_run(self: ReviewServer) -> None:  # what run() does once uvicorn is up, without serving
        started.append(self.url)
        assert self.announce is not None
        self.announce(self.url)
        self.sock.close()
        self.app.state.review.store.close()

    monkeypatch.setattr(ReviewServer, "run", fake_run)
    for host, warned in (("127.0.0.1", False), ("0.0.0.0", True)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="normalcy"):
            serve(run, host=host, port=0, token=TOKEN)
        assert ("anyone on the network" in caplog.text) is warned, host
        err = capsys.readouterr().err
        assert started[-1].startswith("http://127.0.0.1:") and started[-1] in err and "Ctrl-C" in err
        assert f"(labels in sqlite:///{run.resolve() / 'review.sqlite'};" in err  # where the labels are
    latest = run.parent / "latest"  # a link is followed: where it leads now is said
    latest.symlink_to(run)
    serve(latest, port=0, token=TOKEN)
    err = capsys.readouterr().err
    assert f"review {latest} (now {run.resolve()}, followed when re-pointed) at http" in err


def test_taken_port_is_one_clear_error(run: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(InputError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve(run, port=port, token=TOKEN)


def test_a_non_utf8_file_name_is_reviewed(tmp_path: Path) -> None:
    """Linux file names are bytes: one that is not UTF-8 still gets its row, its image and its label."""
    from normalcy.runs.format import RunWriter

    images = tmp_path / "images"
    images.mkdir()
    odd = images / os.fsdecode(b"part\xff.png")
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(odd)
    plain = images / "plain.png"
    Image.fromarray(np.full((16, 16, 3), 30, np.uint8)).save(plain)
    writer = RunWriter(tmp_path / "run", 0.5, (0.0, 1.0), heatmaps=False, report=False, inputs=[images])
    for path, score in ((odd, 0.9), (plain, 0.1)):
        writer.add(path, np.asarray(Image.open(path).convert("RGB")), score, np.zeros((16, 16), np.float32))
    writer.close([], "t")
    with open_client(tmp_path / "run") as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        listed = items(c)["items"]
        top = max(listed, key=lambda it: it["score"])
        assert "\ufffd" in top["name"]
        r = c.get(top["image_url"])
        assert r.status_code == 200 and r.content == odd.read_bytes()
        assert c.post(f"/api/items/{top['id']}/label", json={"label": "anomalous"}).status_code == 200
        assert "\ufffd" in c.get("/api/labels.csv").text


def test_a_run_folder_whose_path_is_not_utf8_is_written_and_reviewed(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A run written under a folder named in Latin-1 (``caf\xe9``) failed at its very end, every image scored, with
    pyarrow's UnicodeEncodeError writing scores.parquet; serving it failed on the database URL's text."""
    import pyarrow.parquet as pq

    root = tmp_path / os.fsdecode(b"caf\xe9")
    run = make_run(root, n=3)
    with open(run / "scores.parquet", "rb") as fh:
        assert pq.read_table(fh).num_rows == 3
    with open_client(run) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        top = items(c)["items"][0]
        assert c.get(top["image_url"]).status_code == 200
        assert c.post(f"/api/items/{top['id']}/label", json={"label": "anomalous"}).status_code == 200
        assert "caf\ufffd" in c.app.state.review.store.shown  # type: ignore[attr-defined]
    with caplog.at_level(logging.WARNING, logger="normalcy"), \
            open_client(run, database=f"sqlite:///{tmp_path / 'team.sqlite'}"):
        pass
    assert "1 label(s) of this run are in its own database" in caplog.text


def label_failing(client: TestClient, monkeypatch: pytest.MonkeyPatch, statement: str, error: str) -> Any:
    """The answer to a label whose write the database refuses with ``error``."""
    from sqlalchemy.exc import OperationalError

    def refuse(*_a: object, **_k: object) -> None:
        raise OperationalError(statement, {}, Exception(error))

    monkeypatch.setattr(client.app.state.review.store, "set_label", refuse)  # type: ignore[attr-defined]
    item_id = items(client)["items"][0]["id"]
    return client.post(f"/api/items/{item_id}/label", json={"label": "normal"})


def test_a_database_that_cannot_be_written_is_a_503_with_the_headers(client: TestClient,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A locked database (past its 30 s wait) or a full disk reached the page as a bare 500 without the
    security headers; a 422 quoted a megabyte of invalid label back."""
    r = label_failing(client, monkeypatch, "UPDATE labels", "database is locked")
    assert r.status_code == 503 and "database is locked" in r.json()["detail"]
    assert "content-security-policy" in r.headers and r.headers["x-content-type-options"] == "nosniff"
    item_id = items(client)["items"][0]["id"]
    r = client.post(f"/api/items/{item_id}/label", json={"label": "a" * 100_000})
    assert r.status_code == 422 and len(r.text) < 2_000


def test_a_read_only_database_is_not_answered_try_again(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """review.sqlite on a read-only mount (or made read-only) opens, then every label failed with "try again",
    which only fails again: the answer says the file cannot be written and what to do."""
    r = label_failing(client, monkeypatch, "INSERT INTO label_events", "attempt to write a readonly database")
    detail = r.json()["detail"]
    assert r.status_code == 503 and "cannot be written" in detail and "--database" in detail
    assert "try again" not in detail and "readonly database" in detail


def test_a_connection_opened_while_the_database_file_was_away_is_not_kept(client: TestClient, run: Path) -> None:
    """Another predict into the run folder moves review.sqlite into its new run an instant before putting that
    run in place: a connection the server opened in that instant made a new, empty review.sqlite where the file
    had been and stayed in the pool, so labels that drew it later failed ("no such table: items", 503 "try
    again"), for as long as the server ran. A new connection that did not open the server's own file is refused
    (503, the file disappeared) and not kept."""
    from normalcy.review.store import DatabaseGone

    top = items(client)["items"][0]
    store = client.app.state.review.store
    store.engine.dispose()  # the pool's next connection is a new one
    away = run.parent / "away"
    away.mkdir()
    for p in run.glob("review.sqlite*"):
        p.rename(away / p.name)
    with pytest.raises(DatabaseGone):
        with store.engine.connect():
            pass
    for p in away.iterdir():  # the predict's run in place: the file where it was
        os.replace(p, run / p.name)
    for label in ("normal", "anomalous", "normal"):
        assert client.post(f"/api/items/{top['id']}/label", json={"label": label}).status_code == 200


def test_a_connection_opened_between_the_database_and_its_wal_moving_loses_no_label(tmp_path: Path) -> None:
    """finish_run moves review.sqlite into the new run, then its -wal: a connection the server opened between the
    two made a new, empty database at the path, took the WAL beside it (the labels not yet checkpointed into the
    file) as its own, and deleted it when it was refused and closed: any other connection to the file then failed
    ("disk I/O error"), and the labels since the last checkpoint lived only in the server's open files (lost if
    it was killed). A connection is refused before SQLite opens anything, and opens only a file that is there."""
    from normalcy.review.store import DatabaseGone, Store

    db = tmp_path / "review.sqlite"
    store = Store(f"sqlite:///{db}", run=".")
    try:
        ids = store.sync_items([{"path": f"p{i}", "name": f"p{i}", "score": 1.0 - i / 10, "decision": False}
                                for i in range(5)])
        for item_id in ids:
            store.set_label(item_id, "normal", None)
        with store.engine.connect():  # held, as the pool holds connections: the WAL is not checkpointed
            away = tmp_path / "staging"
            away.mkdir()
            db.rename(away / db.name)  # finish_run's first move; the -wal is still here
            refused = False
            try:
                with store.engine.connect():  # a new connection in that instant
                    pass
            except DatabaseGone:
                refused = True
            gc.collect()  # the refused connection closed, as it is in the server once its answer is sent
            assert refused and not db.exists()
            for p in tmp_path.glob("review.sqlite-*"):  # the rest of the moves, and the run in place
                p.rename(away / p.name)
            for p in away.iterdir():
                p.rename(tmp_path / p.name)
            fresh = sqlite3.connect(db)  # another process (a restart once this one is killed) reads the file
            try:
                assert fresh.execute("SELECT count(*) FROM labels").fetchone()[0] == 5  # was "disk I/O error"
            finally:
                fresh.close()
        assert [it.label for it in store.labelled()] == ["normal"] * 5
    finally:
        store.close()


def test_a_database_file_gone_while_serving_refuses_labels(client: TestClient, run: Path) -> None:
    """review.sqlite deleted or moved while the server ran: labels went on into the unlinked file and were lost
    when it stopped. Now each label is refused with a 503 that says so; the file moved back, labels go on."""
    top, second = items(client)["items"][:2]
    assert client.post(f"/api/items/{top['id']}/label", json={"label": "normal"}).status_code == 200
    db = run / "review.sqlite"
    db.rename(run.parent / "moved.sqlite")
    r = client.post(f"/api/items/{second['id']}/label", json={"label": "anomalous"})
    assert r.status_code == 503 and str(db) in r.json()["detail"]
    assert f"was moved while the server ran, to {run.parent / 'moved.sqlite'}" in r.json()["detail"]
    assert "content-security-policy" in r.headers
    (run.parent / "moved.sqlite").rename(db)
    assert client.post(f"/api/items/{second['id']}/label", json={"label": "anomalous"}).status_code == 200
    store = Store(f"sqlite:///{db}", run=".")
    try:
        assert {it.label for it in store.labelled()} == {"normal", "anomalous"}
    finally:
        store.close()
    db.unlink()
    r = client.post(f"/api/items/{top['id']}/label", json={"label": "anomalous"})
    assert r.status_code == 503 and "disappeared" in r.json()["detail"]
