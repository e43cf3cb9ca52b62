"""The review state of one run: its items, the current ranking, and which files may be served.

A run's items are images (``predict`` on images, ``score-batch``), table rows (``predict`` on a
table: run.json says ``"kind": "vectors"``) or a series run's events (``"kind": "series"``); a table
row has no picture, so the page shows its id, score and the feature values furthest from the run's
median instead; an event shows the picture predict drew of it (events/*.png; past the ones it draws, its score
drawn here from scores.parquet, else a picture saying why it has none), its series, times and metrics, and is ranked by its feature vector (normalcy.series.runs.event_features) as images are by
their embeddings. Items are kept as numpy columns
and the ranking as index arrays, so that a page of a 1,000,000-item run is a few array operations,
never a Python loop over every item.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from normalcy.errors import InputError
from normalcy.images.io import printable
from normalcy.review.ranking import LABELS, make_ranker, user_score
from normalcy.review.space import project
from normalcy.review.store import Item, Store
from normalcy.runs.format import (
    EMBEDDINGS,
    EVENTS_CSV,
    RUN_JSON,
    SCORES_CSV,
    SERIES,
    RunItems,
    SeriesEvent,
    TableFeatures,
    check_complete,
    check_not_cut,
    file_state,
    read_events,
    read_features,
    read_run_json,
    read_scores,
    read_series_items,
    read_table_items,
    score_picture,
    series_scores,
    small_png,
)
from normalcy.vectors.tables import VECTOR_KIND

__all__ = ["Conflict", "Current", "Forbidden", "NotFound", "Review", "ReviewError", "RunRewritten", "Unavailable"]

logger = logging.getLogger("normalcy")

MAX_DRAWN = 256  # pictures of events predict drew none of, drawn by serve and kept (about 15 kB each)


class ReviewError(Exception):
    """A request the review cannot carry out; the app answers each kind with its HTTP status."""


class NotFound(ReviewError):
    """No such item or file (404)."""


class Forbidden(ReviewError):
    """A file outside the run's folders (403)."""


class Conflict(ReviewError):
    """Not possible for this run, e.g. a re-ranking strategy without embeddings (409)."""


class RunRewritten(InputError):
    """Another predict put its run in place while this one was read (read it again: see create_app, Current)."""


class Unavailable(ReviewError):
    """The run folder holds no run that can be reviewed now: gone, or replaced by one that cannot be read (503)."""


def real_paths(paths: Sequence[str]) -> set[str]:
    """The real path of each absolute path, as ``Path.resolve()`` gives it, each folder resolved once: a
    resolve() of each of 100,000 images (an lstat per folder of each path) took 17 s of a review's start; and
    it raised RuntimeError for a symbolic link that leads to itself, which stopped the review of every other
    image (such a path stays as it is here, and is not found when asked for)."""
    folders: dict[str, str] = {}
    out = set()
    for path in paths:
        folder, name = os.path.split(os.path.abspath(path))
        real = folders.get(folder)
        if real is None:
            real = folders[folder] = os.path.realpath(folder)
        full = os.path.join(real, name)
        out.add(os.path.realpath(full) if os.path.islink(full) else full)
    return out


class Review:
    """The run's items, the current ranking, and the rules for which files may be served."""

    def __init__(self, run_dir: Path, store: Store, strategy: str, extra_roots: Sequence[Path] = ()) -> None:
        self.run_dir = run_dir
        self.store = store
        self.extra_roots = tuple(extra_roots)
        started = file_state(run_dir / RUN_JSON)  # compared once the run is read (see below), and per request
        self.run_state = started
        meta = read_run_json(run_dir)
        self.is_table = meta.get("kind") == VECTOR_KIND
        self.is_series = meta.get("kind") == SERIES
        self.id_column = str(meta.get("id_column") or "row") if self.is_table else "event" if self.is_series else "path"
        inputs = [] if self.is_table or self.is_series else [
            Path(os.path.abspath(p)) for p in meta.get("inputs", []) if isinstance(p, str)]
        check_not_cut(run_dir, meta)  # a run folder copied in part was served as whole
        self.events: list[SeriesEvent] = []
        self._drawn: OrderedDict[int, bytes | None] = OrderedDict()  # pictures of events drawn here (drawn_event)
        self._scores: Any = None  # scores.parquet, read at the first event drawn (series_scores)
        self._scores_read = False
        self._draw_lock = threading.Lock()
        window = meta.get("window")
        self._window = window if isinstance(window, int) and window > 0 else 0
        self._events_state: tuple[int, int, int, int] | None = None  # events.csv as read (series runs)
        self._scores_state: tuple[int, int, int, int] | None = None  # scores.csv as read (image runs)
        if self.is_table:
            run = read_table_items(run_dir, meta.get("id_column"))
        elif self.is_series:
            self._events_state = file_state(run_dir / EVENTS_CSV)  # before reading: a rewrite after it is seen
            every = read_events(run_dir)
            run = read_series_items(run_dir, every)
            self.events = [every[k] for k in run.rows.tolist()]
        else:
            self._scores_state = file_state(run_dir / SCORES_CSV)  # before reading: a rewrite after it is seen
            run = RunItems.of_images(*read_scores(run_dir, [p for p in inputs if p.is_dir()]))
        check_complete(run_dir, meta, run.n_rows)  # a run folder copied in part was served as whole
        self.keys, self.names, self.overlays = run.keys, run.names, run.overlays  # names: printable already
        self.anomaly, self.decision = run.scores, run.decisions
        features = read_features(run_dir, run.n_rows)
        if features is not None and not np.array_equal(run.rows, np.arange(run.n_rows)):
            features = features[run.rows]
        if self.is_table and self.id_column == "row":
            self._set_aside_other_rows(run.keys, features)
        self.ids = np.array(store.sync_items([
            {"path": k, "name": n, "score": s, "decision": d, "overlay": o}
            for k, n, s, d, o in zip(run.keys, self.names, run.scores.tolist(), run.decisions.tolist(), run.overlays)
        ]), dtype=np.int64)
        self._by_id = np.argsort(self.ids, kind="stable")

        # Projected once (what the rankers compute from them anyway), so the raw array can go:
        # 2 GB at 1,000,000 x 512 becomes 256 MB, and a re-rank reads 64 numbers per item.
        self.features = None if features is None else project(features)
        del features
        self.table_features: TableFeatures | None = None
        self._table_rows = run.rows
        if self.is_table and (run_dir / EMBEDDINGS).is_file():
            try:
                self.table_features = TableFeatures(run_dir / EMBEDDINGS)
            except Exception as err:  # noqa: BLE001  (the review goes on without the values)
                logger.warning("%s: cannot show feature values (%s)", run_dir / EMBEDDINGS, err)
        if self.table_features is not None and self.table_features.n_rows != run.n_rows:
            logger.warning("%s: does not match scores.csv; feature values not shown", run_dir / EMBEDDINGS)
            self.table_features = None
        if file_state(run_dir / RUN_JSON) != started:  # every run writes its own run.json
            # another predict put its run in place while this one was read: scores of one run beside the
            # embeddings (the re-ranking's features) of the other, which may be other images
            raise RunRewritten(f"{printable(str(run_dir))}: the run folder was rewritten while it was read (another "
                             "predict into it?): start normalcy serve again")

        # Folders whose files may be served: the run folder and the folders given to predict
        # (resolved, so a symlinked folder works); not the folder of every listed image, which
        # would open its neighbours too. Single files given to predict or listed in scores.csv
        # are served as they are (so a symlinked image, e.g. git-annex, works). A table run serves none; a
        # series run only the pictures in its own folder.
        roots = [run_dir, *inputs, *extra_roots]
        self.roots = sorted({Path(r).resolve() for r in roots if Path(r).is_dir()})
        files = [] if self.is_table or self.is_series else [str(p) for p in inputs if not p.is_dir()] + run.keys
        self.files = real_paths(files)

        self.lock = threading.Lock()  # held through a re-rank
        self._swap_lock = threading.Lock()  # the ranker and its strategy's name, changed together (set_strategy)
        self._ticket = itertools.count()  # orders "label committed" against "re-rank started"
        self._ranked_at = -1
        self._events_seen = 0  # the newest label event (any server's) the current ranking has read
        # Ties in priority fall back to the anomaly score, then the id: sorted once here, so each
        # re-rank is one stable argsort of the priorities (see _order).
        self._base_order = np.lexsort((self.ids, -self.anomaly))
        if self.features is None and strategy != "none":
            strategy = "none"
        self.strategy = strategy
        self.ranker = make_ranker(strategy)
        self.rerank_ms: float | None = None
        self.ranking: tuple[np.ndarray, np.ndarray, np.ndarray] = (np.arange(0), np.zeros(0), np.zeros(0, int))
        self.rerank()

    def _set_aside_other_rows(self, keys: Sequence[str], features: np.ndarray | None) -> None:
        """A table scored without an id column is keyed by row number, which says nothing of what a row is: its
        features (z-scored values, as the run stores them) do. Labels given to other rows (another table scored
        into this folder) are set aside by the store, kept but not applied, and said here once; those set aside
        when the rows were last these (the old table scored back in) are restored, and said once too."""
        if features is None or not all(k.isdigit() for k in keys):
            return  # ids of a column of their own (or no features to tell rows by): the key is the row
        digest = hashlib.blake2b("\n".join(keys).encode(), digest_size=16)
        digest.update(np.ascontiguousarray(features))
        change = self.store.set_aside_if_changed(digest.hexdigest())
        where = printable(str(self.run_dir))
        if change.aside:
            logger.warning("review of %s: its rows are not those labelled before (another table scored into the "
                           "folder without --id-column?): %d label(s) set aside, not applied; they stay in %s "
                           "under run %r", where, change.set_aside, self.store.shown, printable(change.aside))
        if change.restored_from:
            logger.warning("review of %s: its rows are those of an earlier table scored into the folder: %d label(s) "
                           "given to these rows before were restored from run %r in %s", where, change.restored,
                           printable(change.restored_from), self.store.shown)

    def replaced(self) -> bool:
        """Whether the run folder holds another run than the one read (another predict into it, the folder
        renamed and made again, or gone): every run writes its own run.json, so one stat tells."""
        return file_state(self.run_dir / RUN_JSON) != self.run_state

    @property
    def version(self) -> str:
        """A short text naming the run read: the page sends it with each label, so that a label given on the
        items of a run replaced since is refused, not put on another run's item of the same key."""
        # the folder too: two runs without run.json (scores.csv written by hand) behind one link are two runs
        return hashlib.blake2b(repr((str(self.run_dir), self.run_state)).encode(), digest_size=6).hexdigest()

    @property
    def folder(self) -> str:
        """A short text naming the run folder read (its real path), whose database the item ids are of: a picture's
        URL carries it, so that a page listing another folder's run (a link re-pointed since) is refused."""
        return hashlib.blake2b(os.fsencode(str(self.run_dir)), digest_size=6).hexdigest()

    # items

    def positions(self, item_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Each id's position in the run's items, -1 for an id that is not one of them."""
        ids = np.asarray(item_ids, dtype=np.int64).reshape(-1)
        if not len(self.ids) or not ids.size:
            return np.full(ids.shape, -1, np.int64)
        at = np.minimum(np.searchsorted(self.ids, ids, sorter=self._by_id), len(self.ids) - 1)
        pos = self._by_id[at]
        return np.where(self.ids[pos] == ids, pos, -1)

    def position(self, item_id: int) -> int | None:
        """An id's position, None for one that is not in this run: also for ids beyond the database's
        64-bit integers (a URL can name any number; numpy and SQLite would overflow on them)."""
        if not 0 <= item_id < 2**63:
            return None
        k = int(self.positions([item_id])[0])
        return None if k < 0 else k

    # ranking

    def labels(self) -> dict[int, tuple[str | None, int | None]]:
        """Current labels of this run's items (other runs may share the database)."""
        mine = self._labelled()
        return {it.id: (it.label, it.interest) for it in mine}

    def _labelled(self) -> list[Item]:
        found = self.store.labelled()
        pos = self.positions([it.id for it in found])
        return [it for it, k in zip(found, pos) if k >= 0]

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
            self._events_seen = self.store.changes_since(self._events_seen)[0]  # read before the labels
            ids, user = [], []
            # Oldest label first: rankers that keep only the most recent labels rely on the order.
            for it in sorted(self._labelled(), key=lambda it: (it.updated_at or 0.0, it.id)):
                u = user_score(it.label, it.interest)
                if u is not None:
                    ids.append(it.id)
                    user.append(u)
            with self._swap_lock:  # after ``started``: a strategy set before its ticket is the one used
                ranker, strategy = self.ranker, self.strategy
            n = len(self.keys)
            feats = self.features if self.features is not None else np.zeros((n, 1), dtype=np.float32)
            pri = np.asarray(ranker.rank(feats, self.anomaly, self.positions(ids),
                                         np.array(user, dtype=np.float32)), dtype=np.float64).reshape(-1)
            if pri.shape != (n,):
                raise RuntimeError(f"ranker {strategy!r} returned {pri.shape[0]} priorities for {n} items")
            order = self._order(pri)
            rank = np.empty(n, dtype=np.int64)
            rank[order] = np.arange(1, n + 1)
            self.ranking = (order, pri, rank)  # swapped in one step: readers never see a half-made ranking
            self.rerank_ms = (time.perf_counter() - t0) * 1000.0
            self._ranked_at = started
            return self.rerank_ms

    def refresh(self) -> None:
        """Re-rank if another server on the database (two `serve` of one run) wrote a label of this run since
        the last re-rank: this server's own labels re-rank as they are saved, theirs only when looked for.
        One indexed query, so every page may ask."""
        latest, mine = self.store.changes_since(self._events_seen)
        if mine:
            self.rerank()
        else:
            self._events_seen = max(self._events_seen, latest)  # other runs' labels: not looked at again

    def _order(self, pri: np.ndarray) -> np.ndarray:
        """Positions by priority, ties (and NaN: rows a re-rank past MAX_RANK_ROWS did not score) in the
        detector's order; only the scored rows are sorted (100,000, not 1,000,000)."""
        base = self._base_order
        scored = ~np.isnan(pri)
        if scored.all():
            return base[np.argsort(-pri[base], kind="stable")]
        head = base[scored[base]]
        return np.concatenate([head[np.argsort(-pri[head], kind="stable")], base[~scored[base]]])

    def set_strategy(self, name: str) -> None:
        if name != "none" and self.features is None:
            raise Conflict(f"strategy {name!r} needs {self.run_dir / EMBEDDINGS}, "
                           "which this run does not have; only 'none' is available")
        # Not under self.lock, held through a whole re-rank: 20 changes at once each waited for the re-rank before
        # it, then re-ranked alone (its ticket taken once the others had started), 20 full re-ranks in a queue.
        # Swapped at once, the changes made while a re-rank runs share the next one, which uses the latest.
        with self._swap_lock:
            self.ranker, self.strategy = make_ranker(name), name
        self.rerank()

    def page(self, label: str, decision: str, offset: int, limit: int
             ) -> tuple[int, list[int], dict[int, tuple[str | None, int | None]]]:
        """One page of the current order under the filters: (items matching, their positions from
        ``offset``, the run's labels). Array operations only, so it stays fast at 1,000,000 items."""
        self.refresh()
        order = self.ranking[0]
        labels = self.labels()
        keep: np.ndarray | None = None
        if label != "all":
            pos = self.positions(list(labels))
            keep = np.zeros(len(self.keys), bool)
            if label in LABELS:
                pos = pos[np.array([cur == label for cur, _ in labels.values()], bool)]
            keep[pos] = True
            if label == "unlabelled":
                keep = ~keep
        if decision != "all":
            wanted = self.decision == (decision == "anomalous")
            keep = wanted if keep is None else keep & wanted
        chosen = order if keep is None else order[keep[order]]
        return len(chosen), chosen[offset:offset + limit].tolist(), labels

    # output

    def item_json(self, k: int, label: str | None, interest: int | None,
                  features: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """One item for the page; a table row's has ``image_url`` None and its ``features`` instead."""
        _, pri, rank = self.ranking
        item_id = int(self.ids[k])
        p = float(pri[k])
        out = {
            "id": item_id,
            "name": self.names[k],
            "path": printable(self.keys[k]),  # for people; the file itself is found by id
            "score": float(self.anomaly[k]),
            "decision": "anomalous" if self.decision[k] else "normal",
            "rank": int(rank[k]),
            "priority": p if math.isfinite(p) else None,
            "label": label,
            "interest": interest,
            # the run folder named: ids are its database's, and a link re-pointed serves another folder's, whose item
            # of the same id is another picture (a page's <img> of an unchanged URL kept the old one, too)
            "image_url": None if self.is_table else f"/api/items/{item_id}/image?run={self.folder}",
            "overlay_url": f"/api/items/{item_id}/overlay?run={self.folder}" if self.overlays[k] and not self.is_series
            else None,
        }
        if self.is_series:
            e = self.events[k]
            out["event"] = {"series": e.series, "start": e.start, "end": e.end, "peak_time": e.peak_time,
                            "peak_score": e.peak_score, "metrics": e.metrics, "rows": e.rows}
        if self.is_table:
            out["features"] = features if features is not None else self.features_of([k])[0]
        return out

    def features_of(self, positions: Sequence[int]) -> list[list[dict[str, Any]]]:
        """The feature values to show for table rows (empty lists when the run has none)."""
        if self.table_features is None:
            return [[] for _ in positions]
        try:
            return self.table_features.describe([int(self._table_rows[k]) for k in positions])
        except Exception as err:  # noqa: BLE001  (a file changed under the server: no values, no crash)
            logger.warning("%s: cannot read feature values (%s)", self.table_features.path, err)
            return [[] for _ in positions]

    def status(self) -> dict[str, Any]:
        return {"n_items": len(self.keys), "n_labelled": len(self._labelled()), "strategy": self.strategy,
                "rerank_ms": self.rerank_ms, "database": self.store.dialect}

    @property
    def kind(self) -> str:
        """"table", "series" or "images": the page shows feature values, events or pictures."""
        return "table" if self.is_table else "series" if self.is_series else "images"

    def event_picture(self, raw: str) -> Path:
        """An event's picture, if the run's events are still those read at start: another predict into the folder
        rewrites events/000001.png with another event, which would be shown under this one's name (Conflict)."""
        self._check_events()
        return self.allowed_file(raw, self.run_dir)

    def _check_events(self) -> None:
        if file_state(self.run_dir / EVENTS_CSV) != self._events_state:
            raise Conflict(f"{printable(str(self.run_dir / EVENTS_CSV))} was rewritten since the review started "
                           "(another predict into the run folder?): its pictures may be of other events; restart "
                           "normalcy serve to review the new results")

    def drawn_event(self, k: int) -> bytes | None:
        """The picture (PNG) of event ``k``, one predict drew none of (past MAX_EVENT_PLOTS): its score around it,
        from the run's scores.parquet (read once, at the first such event asked for); the last MAX_DRAWN drawn are
        kept. None where the run's files cannot draw it (score_picture)."""
        self._check_events()
        with self._draw_lock:
            if k not in self._drawn:
                if not self._scores_read:
                    self._scores, self._scores_read = series_scores(self.run_dir), True
                rgb = score_picture(self._scores, self.events[k], self._window)
                self._drawn[k] = None if rgb is None else small_png(rgb)
                while len(self._drawn) > MAX_DRAWN:
                    self._drawn.popitem(last=False)
            self._drawn.move_to_end(k)
            return self._drawn[k]

    def overlay(self, raw: str) -> Path:
        """An image's overlay, if the run's scores are still those read at start: another predict into the folder
        writes overlays/NAME.png of its own images, which was shown over this run's image of that name, and
        labelled on (Conflict)."""
        if file_state(self.run_dir / SCORES_CSV) != self._scores_state:
            raise Conflict(f"{printable(str(self.run_dir / SCORES_CSV))} was rewritten since the review started "
                           "(another predict into the run folder?): its overlays may be of other images; restart "
                           "normalcy serve to review the new results")
        return self.allowed_file(raw, self.run_dir)

    def allowed_file(self, raw: str, base: Path | None = None) -> Path:
        """The real path of a file from the database, if it may be served (Forbidden outside the roots, NotFound if gone).
        A relative one is taken from ``base``, by default the working folder, asked only then: serve started in a
        run folder that another predict replaced has none, and every image was a 500 (FileNotFoundError)."""
        p = Path(raw)
        if not p.is_absolute():
            try:
                p = (Path.cwd() if base is None else base) / p
            except OSError:
                raise NotFound(f"file not found: {raw} (a relative path, and the working folder is gone)") from None
        try:
            real = p.resolve()
        except (OSError, RuntimeError):  # a symlink loop (RuntimeError) was a 500
            raise NotFound(f"file not found: {raw} (a symbolic link that leads to itself?)") from None
        if not (str(real) in self.files or any(real.is_relative_to(root) for root in self.roots)):
            logger.warning("refused to serve %s (resolves to %s, outside the run's folders)", raw, real)
            raise Forbidden("file outside the folders of this run")
        if not real.is_file():
            raise NotFound(f"file not found: {raw}")
        return real


class Current:
    """The Review of the run its folder holds now. Another ``predict -o RUN`` while the run is served puts a new
    run in its place (its review.sqlite moved into it): the page went on showing the old items, scores and
    ranking beside the new run's overlays and pictures, for as long as the server ran. The first request after
    the change reads the new run (labels are kept: they are the store's, by key); a folder gone, or replaced by
    one that cannot be reviewed, is a 503 saying so until the folder changes again.

    The folder is the one ``served`` leads to now: a symbolic link (``latest -> runs/2026-12-07T10``, re-pointed
    by ``ln -sfn runs/NEW latest``) is followed at each request, as a replaced folder is read again; each run
    keeps its labels in its own store (``open_store``), so a label never crosses from one run to the other."""

    def __init__(self, review: Review, served: Path | None = None,
                 open_store: Callable[[Path], Store] | None = None) -> None:
        self.review = review
        self.served = review.run_dir if served is None else served
        self._open_store = open_store
        self._lock = threading.Lock()
        self._failed: tuple[tuple[Path, tuple[int, int, int, int] | None], Unavailable] | None = None
        self._missing = False  # the folder stayed missing through a wait: not waited for again while it is
        self.moved = False  # the link led to another run folder since the start: item ids may be another run's

    def target(self) -> Path:
        """The run folder ``served`` leads to now (links followed): some lstat calls, so every request may ask."""
        return Path(os.path.realpath(self.served))

    def get(self) -> Review:
        review = self.review
        if not review.replaced() and self.target() == review.run_dir:
            return review
        with self._lock:  # one reload for the requests that find the change together
            for attempt in range(3):
                review = self.review
                run_dir = self.target()
                state = file_state(run_dir / RUN_JSON)
                if state is None and not self._missing and not run_dir.is_dir():
                    run_dir, state = self._state_now()  # waited for once, not on each request while gone
                self._missing = not run_dir.is_dir()
                if run_dir == review.run_dir and state == review.run_state:
                    return review
                if self._failed is not None and self._failed[0] == (run_dir, state):
                    raise self._failed[1]
                where = printable(str(self.served))
                if run_dir != self.served:
                    where += f" (leading to {printable(str(run_dir))})"
                try:
                    if run_dir == review.run_dir:
                        review.store.check_file()  # the labels' file went with the old folder: said, not made anew
                        store = review.store
                    else:
                        store = self._store_of(run_dir)
                    new = Review(run_dir, store, review.strategy, review.extra_roots)
                except (InputError, OSError) as err:
                    if attempt < 2 and state is not None and file_state(run_dir / RUN_JSON) != state:
                        continue  # replaced again while it was read: read the newest
                    why = (f"{where}: the run folder is gone since the review started (moved or deleted): put it "
                           "back, or restart normalcy serve on the folder where it is now") if self._missing else (
                           f"{where} holds another run since the review started, which cannot be reviewed: {err} "
                           "(read again when it changes, or restart normalcy serve)")
                    self._failed = ((run_dir, state), Unavailable(why))
                    logger.warning("review: %s", why)
                    raise self._failed[1] from None
                self._failed = None
                self.moved = self.moved or new.run_dir != review.run_dir
                self.review = new
                logger.warning("review: %s holds another run since it was read (another predict into it, or the link "
                               "re-pointed?): the review now shows its %d item(s); labels are kept, each in its run's "
                               "database", where, len(new.keys))
                if new.features is None and review.features is not None:  # serve computes them at start only
                    logger.warning("review: %s has no %s: ranked by anomaly score only; restart normalcy serve to "
                                   "compute them and re-rank by labels", where, EMBEDDINGS)
            return self.review

    def _store_of(self, run_dir: Path) -> Store:
        """The store of another run folder (a link re-pointed): refused for a folder that holds no run, before a
        database is made in it."""
        if self._open_store is None:
            raise InputError("this review serves one run folder only")
        if not (run_dir / SCORES_CSV).is_file():
            raise InputError(f"{printable(str(run_dir))} is not a run folder (no {SCORES_CSV}): point the link at a "
                             "run folder that predict wrote")
        return self._open_store(run_dir)

    def _state_now(self) -> tuple[Path, tuple[int, int, int, int] | None]:
        """The run folder and its run.json's state; missing, looked at again for up to a second: a predict puts its
        run in place by two renames (the earlier run out, the new one in), and ``ln -sfn`` a link by two steps,
        between which the folder is not there."""
        run_dir, state = self.target(), None
        for _ in range(10):
            time.sleep(0.1)
            run_dir = self.target()
            state = file_state(run_dir / RUN_JSON)
            if state is not None or run_dir.is_dir():
                break
        return run_dir, state
