"""The review server: token auth, no file outside the run's folders, labels that persist and re-rank."""

from __future__ import annotations

import csv
import http.client
import io
import os
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from review_fixtures import THRESHOLD, db_url, make_run  # noqa: F401  (db_url is a fixture)
from sqlalchemy import update

from normalcy import server as server_mod
from normalcy.data import InputError
from normalcy.server import create_app, new_token, page_url
from normalcy.store import items_table

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


def by_name(c: TestClient) -> dict[str, dict]:
    return {it["name"]: it for it in items(c)["items"]}


# --------------------------------------------------------------------------- auth


def test_everything_needs_the_token(run: Path) -> None:
    wrong = [({}, {}, {}), ({"token": "wrong"}, {}, {}), ({}, {"Authorization": "Bearer wrong"}, {}),
             ({}, {"Authorization": f"Basic {TOKEN}"}, {}), ({}, {}, {"normalcy_token": "nope"}),
             ({"token": TOKEN[:-1]}, {"Authorization": "Bearer"}, {"normalcy_token": ""})]
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
        assert "normalcy_token=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace(
            "SameSite=Strict", "SameSite=strict") and "Path=/" in cookie
        assert c.get("/api/items").status_code == 200  # the cookie now does it
        assert c.get("/").status_code == 200
    with open_client(run) as c:
        assert c.get("/api/items", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert c.get("/api/items", params={"token": TOKEN}).status_code == 200
        assert c.get("/api/items").status_code == 401


def test_security_headers(client: TestClient) -> None:
    r = client.get("/api/items")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["cache-control"] == "no-store"
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
    monkeypatch.setattr(server_mod, "STATIC_DIR", static)
    types = {"a.js": "text/javascript", "a.css": "text/css", "a.html": "text/html", "a.png": "image/png"}
    for name, media in types.items():
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(media), name
        assert r.headers["x-content-type-options"] == "nosniff"
    for name in ("link.js", "missing.js", "a%20b.js", "..."):
        assert client.get(f"/static/{name}").status_code == 404, name


def test_page_is_served(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")


def test_traversal_refused(client: TestClient) -> None:
    server_py = Path(server_mod.__file__).read_text()
    for path in ("/static/../server.py", "/static/%2e%2e%2fserver.py", "/static/..%2fserver.py",
                 "/static/%2e%2e/server.py", "/api/items/..%2f..%2fetc%2fpasswd/image",
                 "/api/items/1/..%2f..%2f..%2fetc%2fpasswd"):
        r = client.get(path)
        assert r.status_code in (403, 404, 422), path
        assert "def create_app" not in r.text and "root:" not in r.text


def test_raw_traversal_over_http(run: Path) -> None:
    """httpx tidies dot segments; a raw HTTP request sends them as they are."""
    with Live(run) as live:
        for path in ("/static/..", "/static/../server.py", "/static/%2e%2e%2fserver.py", "/static/..%2f..%2fstore.py",
                     "/api/items/1/../../../../etc/passwd", "/api/items/..%2f..%2fetc%2fpasswd/image"):
            conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
            conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace")
            conn.close()
            assert resp.status in (403, 404, 422), path
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
        with c.app.state.review.store.engine.begin() as conn:  # type: ignore[attr-defined]
            conn.execute(update(items_table).where(items_table.c.id == item_id)
                         .values(path=str(extra / "other.png")))
        r = c.get(f"/api/items/{item_id}/image")
        assert r.status_code == 200 and r.content == b"other"


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
    assert it["image_url"] == f"/api/items/{it['id']}/image"
    assert it["overlay_url"] == f"/api/items/{it['id']}/overlay"
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
    assert status == {"n_items": 12, "n_labelled": 1, "strategy": "neighbour", "rerank_ms": status["rerank_ms"],
                      "database": "sqlite"}
    assert status["rerank_ms"] >= 0
    # Clearing the label (both null) makes it unlabelled again.
    cleared = client.post(f"/api/items/{top['id']}/label", json={"label": None, "interest": None}).json()["item"]
    assert cleared["label"] is None and items(client)["n_labelled"] == 0


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


def test_strategy(client: TestClient) -> None:
    for name in ("none", "protege", "neighbour"):
        r = client.put("/api/strategy", json={"strategy": name})
        assert r.status_code == 200 and r.json()["strategy"] == name
        assert items(client)["strategy"] == name
    for body in ({"strategy": "magic"}, {}, {"strategy": None}):
        assert client.put("/api/strategy", json=body).status_code == 422


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


def test_bad_database_url(run: Path) -> None:
    with pytest.raises(InputError, match="unsupported database"):
        create_app(run, TOKEN, database="mongodb://localhost/x")


# --------------------------------------------------------------------------- a real server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Live:
    """The app under uvicorn in a background thread, as `normalcy serve` runs it."""

    def __init__(self, run: Path, database: str | None = None) -> None:
        self.app = create_app(run, TOKEN, database=database)
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "Live":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the review server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        assert not self.thread.is_alive()


def test_fifty_clients_lose_no_label(run: Path, db_url: str) -> None:  # noqa: F811
    """50 browsers labelling at once: every label lands, and the last write wins."""
    database = None if db_url.startswith("sqlite") else db_url
    n_clients, per_client = 50, 4
    with Live(run, database) as live:
        base = f"http://127.0.0.1:{live.port}"
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
        assert store.events_count() == n_clients * per_client
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
    lines[1] = lines[1].replace(",1,anomalous", ",nan,anomalous")
    lines[5] = lines[5].replace("img_004.png", "img_004.tif", 1)
    (run / "scores.csv").write_text("\n".join(lines) + "\n")
    emb = load_file(str(run / "embeddings.safetensors"))["embedding"]
    with caplog.at_level("WARNING", logger="normalcy"), open_client(run) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        review = c.app.state.review  # type: ignore[attr-defined]
        assert "not finite" in caplog.text
        assert [it.name for it in review.items] == ["img_001.png", "img_002.png", "img_003.png", "img_004.tif"]
        assert (review.features == emb[1:]).all() and review.strategy == "neighbour"
        r = c.get(by_name(c)["img_004.tif"]["image_url"])
        assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"
    save_file({"embedding": emb[:3]}, str(run / "embeddings.safetensors"))
    with caplog.at_level("WARNING", logger="normalcy"), open_client(run) as c:
        assert c.app.state.review.strategy == "none"  # type: ignore[attr-defined]
        assert "does not match" in caplog.text
