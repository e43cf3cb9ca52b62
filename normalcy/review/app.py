"""The review app: the page, its static files and the JSON API over one run's Review.

Every request first passes the Guard (guard.py): Host header, token, body size.
Image paths come from the database, never from a URL, and Review.allowed_file checks them; a table
run's rows have no image (404) and carry their feature values in the item JSON instead; a series run's
events have their picture (drawn by predict in the run folder) as their image, and no overlay; an event past
the pictures predict draws (MAX_EVENT_PLOTS) gets one drawn here from the run's scores (Review.drawn_event), or,
where they cannot draw it, a picture saying why it has none.
"""

from __future__ import annotations

import io
import logging
import os
import re
import secrets
from collections import OrderedDict
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, AsyncIterator, Literal, Optional, Sequence

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, StrictInt, model_validator
from sqlalchemy.exc import SQLAlchemyError

from normalcy.errors import ImageError, InputError
from normalcy.images.io import is_animated, notes_once, read_image
from normalcy.review.guard import (
    Guard,
    cookie_name,
    host_names,
    server_port,
    validation_error,
)
from normalcy.review.ranking import DEFAULT_STRATEGY, LABELS, STRATEGIES, check_label
from normalcy.review.state import (
    Conflict,
    Current,
    Forbidden,
    NotFound,
    Review,
    ReviewError,
    RunRewritten,
    Unavailable,
)
from normalcy.review.store import DatabaseGone, Item, Store, db_reason
from normalcy.runs.format import MAX_EVENT_PLOTS

log = logging.getLogger("normalcy")

__all__ = ["STATIC_DIR", "create_app"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # fullmatch: "$" would let a trailing newline through
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
# The review state's errors as HTTP answers (and the store's file gone from under it).
STATUS: dict[type[Exception], int] = {NotFound: 404, Forbidden: 403, Conflict: 409, Unavailable: 503,
                                      DatabaseGone: 503}
# How SQLite ("attempt to write a readonly database") and PostgreSQL ("... in a read-only transaction") say so.
READ_ONLY = ("readonly", "read-only")
MAX_STORES = 4  # run folders' stores kept open (see create_app's open_store)
# A run folder as an image URL names it (Review.folder) and a run as X-Run-Version does (Review.version): 12 hex
# digits. Anything else, ``run=../../etc/passwd`` say, is a 422, not a 409 saying the run or its link changed.
RUN_NAME = "[0-9a-f]{12}"
RUN_QUERY = Query(None, pattern=f"^{RUN_NAME}$")
PLACEHOLDER_PAGE = "<!doctype html><meta charset='utf-8'><title>normalcy review</title><p>normalcy review: the page is missing from this installation; the API is under /api/.</p>"
# fullmatch, ASCII only: int() would also take "+1", " 1", "1\n", "1_0", "１", and "01", "001" (item 1 again)
DIGITS = re.compile(r"0|[1-9][0-9]*")


def _plain_digits(value: Any) -> Any:
    """An id as a URL path gives it, if it is plain decimal digits: read as an int, "+1", "%201" (a space), "1%0a"
    (a newline), "1.0" and "01" were all item 1, so one item had many URLs, and a URL mangled on the way still
    labelled it."""
    if not (isinstance(value, str) and DIGITS.fullmatch(value)):
        raise ValueError("item_id must be plain decimal digits 0-9 (no sign, space, point, leading zero or other "
                         "character)")
    return value


ItemId = Annotated[int, BeforeValidator(_plain_digits)]  # every route's {item_id}: a 422 naming it otherwise


class LabelIn(BaseModel):
    """A label as JSON gives it, checked by the one rule for labels (ranking.check_label): a 422 otherwise. A field
    left out keeps its stored value (null clears it): {"interest": 3} alone cleared the label, so two pages giving
    one item a label and an interest at once each erased the other's."""

    model_config = ConfigDict(extra="forbid")
    label: Optional[str] = None
    interest: Optional[StrictInt] = None

    @model_validator(mode="after")
    def _known(self) -> "LabelIn":
        if not self.model_fields_set:  # {} cleared the label: an empty body must not erase what a person gave
            raise ValueError('give "label" and/or "interest" (both null clears the label)')
        check_label(self.label, self.interest)
        return self


class StrategyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    strategy: Literal[tuple(STRATEGIES)]  # type: ignore[valid-type]  # one of the ranking registry's names


def _review_error(_request: Request, exc: Exception) -> JSONResponse:
    """The review state's error as its HTTP status, with the same body as an HTTPException's."""
    if isinstance(exc, DatabaseGone):
        log.error("review: %s", exc)  # for whoever runs the server, not only the page
    return JSONResponse({"detail": str(exc)}, status_code=STATUS[type(exc)])


def _database_error(_request: Request, exc: Exception) -> JSONResponse:
    """503, said as such: the database is locked past its 30 s wait, the disk is full or the file is gone. (As a
    500 it reached the page as "Internal Server Error", without the security headers.)"""
    reason = db_reason(exc)
    log.warning("review: database error: %s", reason)
    if any(word in reason.lower() for word in READ_ONLY):  # lasting: "try again" would only fail again
        return JSONResponse({"detail": f"the review database cannot be written ({reason[:200]}); the label was not "
                                       "saved: make the file and its folder writable, or restart normalcy serve "
                                       "with a --database it can write"}, status_code=503)
    return JSONResponse({"detail": f"the review database cannot be used now ({reason[:200]}); the label was not "
                                   "saved: try again"}, status_code=503)


def _header_text(value: str | None) -> str | None:
    """A header's text as its client wrote it: HTTP hands headers over as Latin-1, so a UTF-8 ``X-Client``
    ("José") was stored as "JosÃ©"; bytes that are not UTF-8 stay as Latin-1 read them."""
    if not value:
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _run_version(request: Request) -> str | None:
    """The X-Run-Version header (the run_version of /api/items), None without one; a 422 for one no server writes."""
    seen = request.headers.get("x-run-version")
    if seen and not re.fullmatch(RUN_NAME, seen):
        raise HTTPException(422, "X-Run-Version must be the run_version of /api/items (12 hex digits)")
    return seen


def _image_response(path: Path, said: set[tuple[str, str]]) -> Response:
    """The file as it is where a browser shows it as read_image reads it; else read_image's pixels as PNG: an
    animated GIF (PNG, WebP) was sent as it is and played, though its map was computed on its first frame alone.
    ``said``: what reading a file noted (frames left out), said once per server, not at each request (notes_once)."""
    media = BROWSER_IMAGES.get(path.suffix.lower())
    headers = {"Cache-Control": "private, no-cache"}
    if media is not None and not is_animated(path):
        return FileResponse(path, media_type=media, headers=headers)
    try:
        with notes_once(said):
            arr = read_image(path)
    except ImageError as err:
        raise HTTPException(415, str(err)) from None
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return Response(buf.getvalue(), media_type="image/png", headers=headers)


@lru_cache(maxsize=1)
def _no_picture_png() -> bytes:
    """The picture of an event predict drew none of and the run's scores cannot draw (Review.drawn_event):
    predict draws the MAX_EVENT_PLOTS events with the highest peaks (over their threshold) only, and the review
    showed the others as an empty card, their detail view with the picture of the event seen before."""
    import cv2

    from normalcy.runs.plots import note_png

    rgb = note_png(["No picture of this event:", f"predict draws the {MAX_EVENT_PLOTS:,} events",
                    "with the highest peaks over their", "threshold; this one ranks below."])
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode the placeholder picture")
    return buf.tobytes()


def create_app(run_dir: Path, token: str, database: str | None = None, strategy: str = DEFAULT_STRATEGY,
               extra_roots: Sequence[Path] = (), host: str = "127.0.0.1") -> FastAPI:
    """The review app for one run directory; raises InputError for an unusable run or database.

    ``host`` is the address the server listens on: it decides which Host headers are accepted.
    """
    served = Path(os.path.abspath(run_dir))  # as given: a symbolic link to a run is followed at each request
    run_dir = served.resolve()
    if not run_dir.is_dir():
        raise InputError(f"run folder not found: {run_dir}")
    if not token:
        raise ValueError("an access token is required")
    if strategy not in STRATEGIES:
        raise InputError(f"unknown ranking strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    store = Store.for_run(run_dir, database)
    try:
        for attempt in range(3):  # a predict that finished while the run was read: its run is read again
            try:
                review = Review(run_dir, store, strategy, extra_roots)
                break
            except RunRewritten:
                if attempt == 2:
                    raise
    except BaseException:
        store.close()
        raise

    # each run folder's store, by real path, the most recently used last: a link re-pointed back finds its own
    stores: OrderedDict[Path, Store] = OrderedDict({run_dir: store})

    def open_store(target: Path) -> Store:
        """The store of the run folder the link leads to now; the least recently used ones past MAX_STORES are
        closed (a link re-pointed at each night's run kept every night's database open, without bound); one
        needed again is opened again."""
        if target not in stores:
            stores[target] = Store.for_run(target, database)
        stores.move_to_end(target)
        for old in list(stores)[:-MAX_STORES]:
            if stores[old] is not current_review.review.store:  # the run served until this switch
                stores.pop(old).close()
        return stores[target]

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        for each in stores.values():
            each.close()

    app = FastAPI(title="normalcy review", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.review = review  # the run as read at start (for whoever starts the server)
    app.state.stores = stores
    said: set[tuple[str, str]] = set()  # what reading images noted of a file, said once (_image_response)
    current_review = Current(review, served, open_store)
    app.state.current = current_review
    app.add_middleware(Guard, token=token, names=host_names(host))
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(ReviewError, _review_error)
    app.add_exception_handler(DatabaseGone, _review_error)
    app.add_exception_handler(SQLAlchemyError, _database_error)

    @app.get("/", include_in_schema=False)
    def page(request: Request) -> HTMLResponse:
        html_path = STATIC_DIR / "review.html"
        html = html_path.read_text(encoding="utf-8") if html_path.is_file() else PLACEHOLDER_PAGE
        response = HTMLResponse(html)
        if secrets.compare_digest(request.query_params.get("token", "").encode(), token.encode()):
            # Later requests (fetch, <img>) carry the cookie, so the token need not stay in URLs.
            response.set_cookie(cookie_name(server_port(request.scope)), token, httponly=True,
                                samesite="strict", path="/")
        return response

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        if not STATIC_NAME.fullmatch(name):  # checked first: a NUL byte would make resolve() raise
            raise HTTPException(404, "not found")
        path = (STATIC_DIR / name).resolve()
        if not path.is_relative_to(STATIC_DIR) or not path.is_file():
            raise HTTPException(404, "not found")
        media = STATIC_TYPES.get(path.suffix.lower(), "application/octet-stream")
        return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})

    @app.get("/api/items")
    def list_items(label: Literal[("all", "unlabelled", "labelled", *LABELS)] = "all",  # type: ignore[valid-type]
                   decision: Literal["all", "anomalous", "normal"] = "all",
                   offset: int = Query(0, ge=0), limit: int = Query(200, ge=1, le=10_000)) -> dict[str, Any]:
        review = current_review.get()
        total, chosen, labels = review.page(label, decision, offset, limit)
        features = review.features_of(chosen) if review.is_table else [None] * len(chosen)
        page_items = [review.item_json(k, *labels.get(int(review.ids[k]), (None, None)), features=f)
                      for k, f in zip(chosen, features)]
        return {"total": total, "n_items": len(review.keys), "n_labelled": len(labels), "kind": review.kind,
                "id_column": review.id_column, "strategy": review.strategy, "strategies": list(STRATEGIES), "labels": list(LABELS),
                "rerank_ms": review.rerank_ms, "run_version": review.version, "items": page_items}

    def current(review: Review, item_id: int) -> tuple[int, Item]:
        k = review.position(item_id)
        item = review.store.get(item_id) if k is not None else None
        if k is None or item is None:
            raise HTTPException(404, f"no item {item_id} in this run")
        return k, item

    def picture(review: Review, item_id: int) -> Item:
        k, item = current(review, item_id)
        if review.is_table:
            raise HTTPException(404, f"item {item_id} is a table row ({review.keys[k]}): it has no image")
        return item

    def named(review: Review, request: Request, run: str | None) -> None:
        """An item asked for by id with the X-Run-Version of another run, or once the served link has led to another
        run folder, without saying of which run (X-Run-Version, or the ``run`` of its URL): the ids are each folder's
        database's, and a client that listed the run before got (and labelled) the new run's item of that id."""
        seen = _run_version(request)
        if seen and seen != review.version:
            raise HTTPException(409, "the run folder holds another run since this client listed its items (another "
                                     "predict into it, or its link re-pointed?): list the items again")
        if current_review.moved and run is None and not seen:
            raise HTTPException(409, "the served link has led to another run folder since the server started, so an "
                                     "item id may name another run's item: send the X-Run-Version header (the "
                                     "run_version of /api/items) or the run of the item's image_url; nothing was done")

    @app.get("/api/items/{item_id}")
    def get_item(item_id: ItemId, request: Request) -> dict[str, Any]:
        review = current_review.get()
        named(review, request, None)
        k, item = current(review, item_id)
        return review.item_json(k, item.label, item.interest)

    def listed_on(review: Review, run: str | None) -> None:
        """A picture asked for by the URL of a page that listed another run folder's items (the served link was
        re-pointed since): its item of the id, not this run's, which is another picture."""
        if run is not None and run != review.folder:
            raise HTTPException(409, "the served link leads to another run folder since this page listed its items: "
                                     "reload the page")

    @app.get("/api/items/{item_id}/image")
    def item_image(item_id: ItemId, request: Request, run: Optional[str] = RUN_QUERY) -> Response:
        review = current_review.get()
        listed_on(review, run)
        named(review, request, run)
        item = picture(review, item_id)  # the path comes from the database, never from the request
        if review.is_series:  # an event's picture, in the run folder
            if not item.overlay:  # past the pictures predict draws: drawn from the run's scores, else a card saying so
                drawn = review.drawn_event(review.position(item_id))  # type: ignore[arg-type]  (picture() found it)
                return Response(drawn or _no_picture_png(), media_type="image/png",
                                headers={"Cache-Control": "private, no-cache"})
            return _image_response(review.event_picture(item.overlay), said)
        return _image_response(review.allowed_file(item.path), said)

    @app.get("/api/items/{item_id}/overlay")
    def item_overlay(item_id: ItemId, request: Request, run: Optional[str] = RUN_QUERY) -> Response:
        review = current_review.get()
        listed_on(review, run)
        named(review, request, run)
        item = picture(review, item_id)
        if not item.overlay or review.is_series:
            raise HTTPException(404, f"item {item_id} has no overlay")
        return _image_response(review.overlay(item.overlay), said)

    @app.post("/api/items/{item_id}/label")
    def label_item(item_id: ItemId, body: LabelIn, request: Request) -> dict[str, Any]:
        review = current_review.get()
        seen = _run_version(request)
        if seen and seen != review.version:  # the page showed the items of the run the folder held before
            raise HTTPException(409, "the run folder holds another run since this page listed its items (another "
                                     "predict into it, or its link re-pointed?): the label was not saved; label "
                                     "again on the new run's list")
        named(review, request, None)
        k = review.position(item_id)
        if k is None:
            raise HTTPException(404, f"no item {item_id} in this run")
        client = _header_text(request.headers.get("x-client")) or (request.client.host if request.client else "")
        try:
            item = review.store.set_label(item_id, body.label, body.interest, client=client,
                                          keep=set(LabelIn.model_fields) - body.model_fields_set)
        except KeyError:
            raise HTTPException(404, f"no item {item_id}") from None
        except ValueError as err:
            raise HTTPException(422, str(err)) from None
        ms = review.rerank()
        return {"item": review.item_json(k, item.label, item.interest), "rerank_ms": ms}

    @app.get("/api/labels.csv")
    def labels_csv() -> Response:
        review = current_review.get()
        return Response(review.store.export_csv(review.id_column), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="labels.csv"'})

    @app.get("/api/status")
    def status() -> dict[str, Any]:
        return current_review.get().status()

    @app.put("/api/strategy")
    def put_strategy(body: StrategyIn) -> dict[str, Any]:
        review = current_review.get()
        review.set_strategy(body.strategy)
        return review.status()

    return app
