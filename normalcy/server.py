"""`normalcy serve`: review a run in the browser, label images, and see the ranking learn from the labels.

The server is meant for one machine (127.0.0.1) or a trusted team network, but it
still treats every request as hostile: each one needs the random access token,
and a file is only served when its real path (symlinks followed) lies inside the
folders the run was made from. Image paths come from the database, never from a URL.

Labels live in a Store (SQLite next to the run unless --database says otherwise);
after each label the whole run is re-ranked synchronously, which takes
milliseconds for thousands of images, so the page can simply reload the order.
"""

from __future__ import annotations

import io
import itertools
import logging
import math
import os
import re
import secrets
import socket
import threading
import time
import webbrowser
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Literal, Optional, Sequence

import numpy as np
import uvicorn
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from .data import ImageError, InputError, read_image
from .ranking import make_ranker, user_score
from .run import read_features, read_run_json, read_scores
from .store import Item, Store

__all__ = ["create_app", "new_token", "page_url", "serve"]

logger = logging.getLogger("normalcy")

STATIC_DIR = Path(__file__).resolve().parent / "static"
COOKIE = "normalcy_token"
STRATEGIES = ("none", "neighbour", "protege")
STATIC_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
# Formats a browser shows as they are; anything else (TIFF, ...) is converted to PNG on the way out.
BROWSER_IMAGES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
                  ".bmp": "image/bmp", ".gif": "image/gif"}
PLACEHOLDER_PAGE = "<!doctype html><meta charset='utf-8'><title>normalcy review</title><p>normalcy review: the page is missing from this installation; the API is under /api/.</p>"
UNAUTHORIZED_PAGE = ("<!doctype html><meta charset='utf-8'><title>normalcy: access token needed</title>"
                     "<p>This page needs the access token: open the URL printed by <code>normalcy serve</code> "
                     "(it ends in <code>?token=...</code>).</p>")


def new_token() -> str:
    """A fresh random access token (the only thing between the page and anyone on the network)."""
    return secrets.token_urlsafe(24)


def page_url(host: str, port: int, token: str) -> str:
    """The URL to open in a browser; a wildcard listen address is reached through 127.0.0.1."""
    shown = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/?token={token}"


# --------------------------------------------------------------------------- review state


class Review:
    """The run's items, the current ranking, and the rules for which files may be served."""

    def __init__(self, run_dir: Path, store: Store, strategy: str, extra_roots: Sequence[Path] = ()) -> None:
        self.run_dir = run_dir
        self.store = store
        meta = read_run_json(run_dir)
        inputs = [Path(os.path.abspath(p)) for p in meta.get("inputs", []) if isinstance(p, str)]
        rows, n_rows = read_scores(run_dir, [p for p in inputs if p.is_dir()])
        store.sync_items([{"path": r.path, "name": r.name, "score": r.score, "decision": r.decision,
                           "overlay": r.overlay} for r in rows])
        by_path = {it.path: it for it in store.items()}
        self.items: list[Item] = [by_path[r.path] for r in rows]
        self.ids = np.array([it.id for it in self.items], dtype=np.int64)
        self.index = {it.id: k for k, it in enumerate(self.items)}
        self.anomaly = np.array([r.score for r in rows], dtype=np.float64)

        features = read_features(run_dir, n_rows)
        self.features = None if features is None else features[[r.row for r in rows]]

        # Folders whose files may be served (resolved, so a symlinked folder works), plus single
        # files given to predict or listed in scores.csv (so a symlinked image works).
        roots = [run_dir, *inputs, *(Path(r.path).parent for r in rows), *extra_roots]
        self.roots = sorted({Path(r).resolve() for r in roots if Path(r).is_dir()})
        files = [p for p in inputs if not p.is_dir()] + [Path(r.path) for r in rows]
        self.files = {p.resolve() for p in files}

        self.lock = threading.Lock()
        self._ticket = itertools.count()  # orders "label committed" against "re-rank started"
        self._ranked_at = -1
        if self.features is None and strategy != "none":
            strategy = "none"
        self.strategy = strategy
        self.ranker = make_ranker(strategy)
        self.rerank_ms: float | None = None
        self.ranking: tuple[np.ndarray, np.ndarray, np.ndarray] = (np.arange(0), np.zeros(0), np.zeros(0, int))
        self.rerank()

    # ranking

    def labels(self) -> dict[int, tuple[str | None, int | None]]:
        """Current labels of this run's items (other runs may share the database)."""
        return {it.id: (it.label, it.interest) for it in self.store.labelled() if it.id in self.index}

    def rerank(self) -> float:
        """Recompute priorities from all labels; returns the milliseconds it took.

        Labels that arrive together share re-ranks: a caller whose label is already covered by
        a re-rank that started after it (while this one waited for the lock) returns at once.
        """
        asked = next(self._ticket)  # taken after the caller's label was committed
        with self.lock:
            if self._ranked_at > asked and self.rerank_ms is not None:
                return self.rerank_ms
            started = next(self._ticket)  # labels committed before this are read below
            t0 = time.perf_counter()
            idx, user = [], []
            # Oldest label first: rankers that keep only the most recent labels rely on the order.
            mine = [it for it in self.store.labelled() if it.id in self.index]
            for it in sorted(mine, key=lambda it: (it.updated_at or 0.0, it.id)):
                u = user_score(it.label, it.interest)
                if u is not None:
                    idx.append(self.index[it.id])
                    user.append(u)
            n = len(self.items)
            feats = self.features if self.features is not None else np.zeros((n, 1), dtype=np.float32)
            pri = np.asarray(self.ranker.rank(feats, self.anomaly, np.array(idx, dtype=np.int64),
                                              np.array(user, dtype=np.float32)), dtype=np.float64).reshape(-1)
            if pri.shape != (n,):
                raise RuntimeError(f"ranker {self.strategy!r} returned {pri.shape[0]} priorities for {n} items")
            key = np.where(np.isnan(pri), -np.inf, pri)
            order = np.lexsort((self.ids, -self.anomaly, -key))  # last key sorts first
            rank = np.empty(n, dtype=np.int64)
            rank[order] = np.arange(1, n + 1)
            self.ranking = (order, pri, rank)  # swapped in one step: readers never see a half-made ranking
            self.rerank_ms = (time.perf_counter() - t0) * 1000.0
            self._ranked_at = started
            return self.rerank_ms

    def set_strategy(self, name: str) -> None:
        if name != "none" and self.features is None:
            raise HTTPException(409, f"strategy {name!r} needs {self.run_dir / 'embeddings.safetensors'}, "
                                     "which this run does not have; only 'none' is available")
        with self.lock:
            self.ranker = make_ranker(name)
            self.strategy = name
        self.rerank()

    # output

    def item_json(self, item: Item, label: str | None, interest: int | None) -> dict[str, Any]:
        _, pri, rank = self.ranking
        k = self.index[item.id]
        p = float(pri[k])
        return {
            "id": item.id,
            "name": item.name,
            "path": item.path,
            "score": item.score,
            "decision": "anomalous" if item.decision else "normal",
            "rank": int(rank[k]),
            "priority": p if math.isfinite(p) else None,
            "label": label,
            "interest": interest,
            "image_url": f"/api/items/{item.id}/image",
            "overlay_url": f"/api/items/{item.id}/overlay" if item.overlay else None,
        }

    def status(self) -> dict[str, Any]:
        return {"n_items": len(self.items), "n_labelled": len(self.labels()), "strategy": self.strategy,
                "rerank_ms": self.rerank_ms, "database": self.store.dialect}

    def allowed_file(self, raw: str, base: Path) -> Path:
        """The real path of a file from the database, if it may be served (403 outside the roots, 404 if gone)."""
        p = Path(raw)
        if not p.is_absolute():
            p = base / p
        real = p.resolve()
        if not (real in self.files or any(real.is_relative_to(root) for root in self.roots)):
            logger.warning("refused to serve %s (resolves to %s, outside the run's folders)", raw, real)
            raise HTTPException(403, "file outside the folders of this run")
        if not real.is_file():
            raise HTTPException(404, f"file not found: {raw}")
        return real


# --------------------------------------------------------------------------- the app


class LabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: Optional[Literal["normal", "anomalous"]] = None
    interest: Optional[StrictInt] = Field(default=None, ge=0, le=5)


class StrategyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    strategy: Literal["none", "neighbour", "protege"]


def _image_response(path: Path) -> Response:
    media = BROWSER_IMAGES.get(path.suffix.lower())
    headers = {"Cache-Control": "private, no-cache"}
    if media is not None:
        return FileResponse(path, media_type=media, headers=headers)
    try:
        arr = read_image(path)
    except ImageError as err:
        raise HTTPException(415, str(err)) from None
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return Response(buf.getvalue(), media_type="image/png", headers=headers)


def create_app(run_dir: Path, token: str, database: str | None = None, strategy: str = "neighbour",
               extra_roots: Sequence[Path] = ()) -> FastAPI:
    """The review app for one run directory; raises InputError for an unusable run or database."""
    run_dir = Path(run_dir).resolve()
    if not run_dir.is_dir():
        raise InputError(f"run folder not found: {run_dir}")
    if not token:
        raise ValueError("an access token is required")
    if strategy not in STRATEGIES:
        raise InputError(f"unknown ranking strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    store = Store.for_run(run_dir, database)
    try:
        review = Review(run_dir, store, strategy, extra_roots)
    except BaseException:
        store.close()
        raise
    expected = token.encode()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()

    app = FastAPI(title="normalcy review", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.review = review

    def valid(candidate: str | None) -> bool:
        return candidate is not None and secrets.compare_digest(candidate.encode(), expected)

    def authorised(request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        return (valid(request.cookies.get(COOKIE)) or valid(bearer)
                or valid(request.query_params.get("token")))

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        if authorised(request):
            response = await call_next(request)
        elif request.url.path.startswith("/api/"):
            response = JSONResponse({"detail": "missing or wrong access token"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
        else:
            response = HTMLResponse(UNAUTHORIZED_PAGE, status_code=401)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"  # the page URL holds the token
        response.headers["X-Frame-Options"] = "DENY"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.get("/", include_in_schema=False)
    def page(request: Request) -> HTMLResponse:
        html_path = STATIC_DIR / "review.html"
        html = html_path.read_text(encoding="utf-8") if html_path.is_file() else PLACEHOLDER_PAGE
        response = HTMLResponse(html)
        if valid(request.query_params.get("token")):
            # Later requests (fetch, <img>) carry the cookie, so the token need not stay in URLs.
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
        return response

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        path = (STATIC_DIR / name).resolve()
        if not STATIC_NAME.match(name) or not path.is_relative_to(STATIC_DIR) or not path.is_file():
            raise HTTPException(404, "not found")
        media = STATIC_TYPES.get(path.suffix.lower(), "application/octet-stream")
        return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})

    @app.get("/api/items")
    def list_items(label: Literal["all", "unlabelled", "labelled", "normal", "anomalous"] = "all",
                   decision: Literal["all", "anomalous", "normal"] = "all",
                   offset: int = Query(0, ge=0), limit: int = Query(200, ge=1, le=10_000)) -> dict[str, Any]:
        labels = review.labels()
        order, _, _ = review.ranking
        chosen: list[Item] = []
        for k in order:
            item = review.items[k]
            cur, interest = labels.get(item.id, (None, None))
            is_labelled = item.id in labels
            if (label == "unlabelled" and is_labelled) or (label == "labelled" and not is_labelled):
                continue
            if label in ("normal", "anomalous") and cur != label:
                continue
            if decision != "all" and item.decision != (decision == "anomalous"):
                continue
            chosen.append(item)
        page_items = [review.item_json(it, *labels.get(it.id, (None, None))) for it in chosen[offset:offset + limit]]
        return {"total": len(chosen), "n_items": len(review.items), "n_labelled": len(labels),
                "strategy": review.strategy, "rerank_ms": review.rerank_ms, "items": page_items}

    def current(item_id: int) -> Item:
        item = store.get(item_id) if item_id in review.index else None
        if item is None:
            raise HTTPException(404, f"no item {item_id} in this run")
        return item

    @app.get("/api/items/{item_id}")
    def get_item(item_id: int) -> dict[str, Any]:
        item = current(item_id)
        return review.item_json(review.items[review.index[item_id]], item.label, item.interest)

    @app.get("/api/items/{item_id}/image")
    def item_image(item_id: int) -> Response:
        item = current(item_id)  # the path comes from the database, never from the request
        return _image_response(review.allowed_file(item.path, Path.cwd()))

    @app.get("/api/items/{item_id}/overlay")
    def item_overlay(item_id: int) -> Response:
        item = current(item_id)
        if not item.overlay:
            raise HTTPException(404, f"item {item_id} has no overlay")
        return _image_response(review.allowed_file(item.overlay, review.run_dir))

    @app.post("/api/items/{item_id}/label")
    def label_item(item_id: int, body: LabelIn, request: Request) -> dict[str, Any]:
        if item_id not in review.index:
            raise HTTPException(404, f"no item {item_id} in this run")
        client = request.headers.get("x-client") or (request.client.host if request.client else "")
        try:
            item = store.set_label(item_id, body.label, body.interest, client=client)
        except KeyError:
            raise HTTPException(404, f"no item {item_id}") from None
        except ValueError as err:
            raise HTTPException(422, str(err)) from None
        ms = review.rerank()
        return {"item": review.item_json(review.items[review.index[item_id]], item.label, item.interest),
                "rerank_ms": ms}

    @app.get("/api/labels.csv")
    def labels_csv() -> Response:
        return Response(store.export_csv(), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="labels.csv"'})

    @app.get("/api/status")
    def status() -> dict[str, Any]:
        return review.status()

    @app.put("/api/strategy")
    def put_strategy(body: StrategyIn) -> dict[str, Any]:
        review.set_strategy(body.strategy)
        return review.status()

    return app


# --------------------------------------------------------------------------- running it


def _check_port(host: str, port: int) -> None:
    """Fail with one clear line when the port is taken, instead of uvicorn's log and exit."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as err:
        raise InputError(f"cannot listen on {host}:{port}: {err.strerror or err} (try another --port)") from None


def serve(run_dir: Path, host: str = "127.0.0.1", port: int = 8765, database: str | None = None,
          strategy: str = "neighbour", token: str | None = None, open_browser: bool = False) -> None:
    """Serve the review page until interrupted (Ctrl-C); the caller prints page_url(host, port, token)."""
    token = token or new_token()
    app = create_app(Path(run_dir), token, database=database, strategy=strategy)
    try:
        _check_port(host, port)
    except InputError:
        app.state.review.store.close()
        raise
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    if open_browser:
        def _open() -> None:
            while not server.started and not server.should_exit:
                time.sleep(0.05)
            if server.started:
                webbrowser.open(page_url(host, port, token))
        threading.Thread(target=_open, daemon=True).start()
    server.run()
