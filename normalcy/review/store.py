"""Review labels and scores in a database, so that a review survives restarts.

SQLite next to the run is the default (one person, no setup); a PostgreSQL URL
lets a team label one run from several machines. Only SQLAlchemy Core is used,
and every upsert is written per dialect, so both behave the same.

Four tables:

    items         one row per image of a run (run + path unique), its score and decision
    labels        the current label of an item (one row per labelled item)
    label_events  every label ever written, in order (who labelled what, when)
    run_contents  a fingerprint of what a run's items are, where their keys do not say it (a table's row
                  numbers): labels of other contents are set aside, not attached to other rows; each
                  aside key is kept here with its fingerprint, so that its labels come back with those contents

Several runs may share one database (a team's PostgreSQL): a Store reads and writes
only the items of its own run, and labels and events only through those items.
"""

from __future__ import annotations

import base64
import csv
import io
import logging
import os
import sqlite3
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Collection, NamedTuple, Sequence
from urllib.parse import quote

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    case,
    create_engine,
    event,
    func,
    inspect,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from normalcy.errors import InputError
from normalcy.images.io import printable
from normalcy.review.ranking import check_label
from normalcy.runs.format import csv_cell

__all__ = ["ContentsChange", "DatabaseGone", "Item", "Store", "db_reason", "run_id"]

log = logging.getLogger("normalcy")

metadata = MetaData()

items_table = Table(
    "items", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run", String, nullable=False, index=True),
    Column("path", String, nullable=False),
    Column("name", String, nullable=False),
    Column("score", Float, nullable=False),
    Column("decision", Boolean, nullable=False),
    Column("overlay", String, nullable=True),
    UniqueConstraint("run", "path", name="items_run_path"),
)

labels_table = Table(
    "labels", metadata,
    Column("item_id", Integer, ForeignKey("items.id"), primary_key=True),
    Column("label", String, nullable=True),
    Column("interest", Integer, nullable=True),
    Column("updated_at", Float, nullable=False),
    Column("client", String, nullable=False, default=""),
)

events_table = Table(
    "label_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("item_id", Integer, ForeignKey("items.id"), nullable=False, index=True),
    Column("label", String, nullable=True),
    Column("interest", Integer, nullable=True),
    Column("at", Float, nullable=False),
    Column("client", String, nullable=False, default=""),
)

contents_table = Table(
    "run_contents", metadata,
    Column("run", String, primary_key=True),
    Column("fingerprint", String, nullable=False),
)


@dataclass(frozen=True)
class Item:
    """One image with its current label (``label``/``interest`` None when unlabelled)."""

    id: int
    path: str
    name: str
    score: float
    decision: bool
    overlay: str | None
    label: str | None
    interest: int | None
    updated_at: float | None

    @property
    def labelled(self) -> bool:
        return self.label is not None or self.interest is not None


class ContentsChange(NamedTuple):
    """What ``Store.set_aside_if_changed`` moved: labels set aside and the run key they are kept under, labels
    restored and the key they were kept under ("" where none)."""

    set_aside: int = 0
    aside: str = ""
    restored: int = 0
    restored_from: str = ""


_RAW = "fsb64:"  # marks a key stored as base64 of its bytes


def to_db(path: str) -> str:
    """A path or table id as database text, read back unchanged by ``from_db``.

    A non-UTF-8 file name (surrogate-escaped bytes) cannot be stored as text, so it is kept as base64
    of its exact bytes. So is any key that itself begins with the marker (a table id can be any text):
    stored as it is, ``fsb64:L2V0Yy9wYXNzd2Q=`` would be read back as ``/etc/passwd``, and one id could
    pass for another. Every other key is stored as it is, so older stores read the same."""
    try:
        path.encode("utf-8")
        if not path.startswith(_RAW):
            return path
    except UnicodeEncodeError:
        pass
    return _RAW + base64.b64encode(os.fsencode(path)).decode("ascii")


def from_db(text: str) -> str:
    return os.fsdecode(base64.b64decode(text[len(_RAW):])) if text.startswith(_RAW) else text


def _normalise_url(url: str) -> str:
    """Send plain PostgreSQL URLs to psycopg 3 (SQLAlchemy would pick psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL lets the page read while a label is written; the busy timeout makes writers queue, not fail."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _create_tables(engine: Engine) -> None:
    """The review's tables, where they are missing. Two servers starting at once on a new database (one run
    served twice, a team's database) both found a table missing and both created it: the second stopped with
    "cannot open database ...: table items already exists". A table made meanwhile by another is looked for
    again, one more try for each table. SQLite's "database is locked" comes at once, without its busy timeout,
    where a connection that read the schema then writes it while another has written (its snapshot is stale):
    tried again after a pause, up to LOCKED_TRIES times (one start in four of four at once failed so)."""
    exists_left, locked_left = len(metadata.tables), LOCKED_TRIES
    while True:
        try:
            metadata.create_all(engine)
            return
        except (DBAPIError, SQLAlchemyError) as err:
            if "already exists" in str(err) and exists_left > 0:
                exists_left -= 1
            elif "database is locked" in str(err) and locked_left > 0:
                locked_left -= 1
                time.sleep(0.05 * (LOCKED_TRIES - locked_left))
            else:
                raise


LOCKED_TRIES = 20  # about 10 s of pauses in all


def _iso(t: float | None) -> str:
    return "" if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


class DatabaseGone(Exception):
    """The SQLite file was deleted, moved or replaced under the server: a label written now would go into the
    unlinked file that the open connections still hold, and be lost when the server stops (503)."""


def _file_identity(path: Path) -> tuple[int, int] | None:
    """Which file is at ``path`` (device, inode), None when none is."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _open_file_at(identity: tuple[int, int]) -> str | None:
    """Where a file this process holds open is now (Linux: /proc/self/fd), None when it is deleted or not known."""
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            where = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if where.startswith("/") and not where.endswith(" (deleted)") and _file_identity(Path(where)) == identity:
            return printable(where)
    return None


OWN_FILE = "review.sqlite"  # a run's own database, in its folder
OWN_RUN = "."  # the key of the one run in a run folder's own review.sqlite (see Store.for_run)
SET_ASIDE = " set aside "  # in the key of labels set aside (see Store.set_aside_if_changed): never this run's


def _names_file(url: str | URL, file: Path) -> bool:
    """Whether ``url`` is a SQLite URL of ``file`` (a URL that does not parse is Store's to refuse)."""
    try:
        parsed = url if isinstance(url, URL) else make_url(_normalise_url(url))
    except ArgumentError:
        return False
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return False
    return Path(os.path.abspath(parsed.database)).resolve() == file


def _own_labels(file: Path) -> int:
    """How many labels a run's own database holds (labels set aside not counted), read only; 0 without one.
    A review given another --database started with none of them, and did not say where they were."""
    if not file.is_file():
        return 0
    try:
        conn = sqlite3.connect(f"file:{quote(os.fsencode(file))}?mode=ro", uri=True)
    except sqlite3.Error:
        return 0
    try:
        return int(conn.execute("SELECT count(*) FROM labels JOIN items ON items.id = labels.item_id "
                                "WHERE instr(items.run, ?) = 0", (SET_ASIDE,)).fetchone()[0])
    except sqlite3.Error:  # not a review database, or unreadable: nothing to point at
        return 0
    finally:
        conn.close()


def db_reason(err: Exception) -> str:
    """A database error's first line, the driver's own where there is one (SQLAlchemy's wraps it in SQL)."""
    lines = str(getattr(err, "orig", None) or err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def run_id(run_dir: Path) -> str:
    """The id of a run in a shared database: its folder's real path.

    Stable across restarts and re-runs into the same folder (labels are kept), different for
    two run folders; image paths in scores.csv are absolute too, so machines that share a
    database see a run at one path. A path that is not UTF-8 is kept as its keys are (``to_db``): as it was,
    it failed the first write with a UnicodeEncodeError.
    """
    return to_db(str(Path(run_dir).resolve()))


class Store:
    """One run's items, current labels and label log in a database that other runs may share.

    Safe to share between request threads.
    """

    def __init__(self, url: str | URL, run: str = "") -> None:
        try:
            parsed = url if isinstance(url, URL) else make_url(_normalise_url(url))
        except ArgumentError:
            raise InputError(f"not a database URL: {url!r} (use sqlite:///path/review.sqlite "
                             "or postgresql://user:password@host/db)") from None
        backend = parsed.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise InputError(f"unsupported database {backend!r} in {parsed.render_as_string()}: "
                             "use sqlite:///path/review.sqlite or postgresql://user:password@host/db")
        self.url = parsed
        self.dialect = backend
        self.run = str(run)
        try:  # for messages: no password
            self.shown = shown = parsed.render_as_string(hide_password=True)
        except UnicodeEncodeError:  # a file whose path is not UTF-8 (a run folder's): SQLite opens it, but
            self.shown = shown = f"{backend}:///{printable(str(parsed.database))}"  # the URL is no text
        kw: dict[str, Any] = {}
        if backend == "sqlite":
            # Requests run in a thread pool: connections must be usable from any thread.
            kw["connect_args"] = {"check_same_thread": False}
            if parsed.database in (None, "", ":memory:"):
                kw["poolclass"] = StaticPool  # one shared connection, or each thread sees its own empty DB
                log.warning("review: the database %s is in memory: every label is lost when the server stops; "
                            "give a file to keep them (sqlite:///PATH/review.sqlite)", shown)
            elif not Path(parsed.database).parent.is_dir():
                raise InputError(f"cannot create database {parsed.database}: folder not found")
        else:
            kw["pool_pre_ping"] = True
        if "poolclass" not in kw:
            # Up to 40 request threads at once: let them all hold a connection rather than queue for one.
            kw["pool_size"] = 10
            kw["max_overflow"] = 40
        try:
            self.engine: Engine = create_engine(parsed, **kw)
        except (NoSuchModuleError, ImportError) as err:
            raise InputError(f"cannot use {shown}: {err} (for PostgreSQL: pip install 'psycopg[binary]')") from None
        if backend == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            _create_tables(self.engine)
            with self.engine.connect() as conn:
                columns = {c["name"] for c in inspect(conn).get_columns("items")}
        except (DBAPIError, SQLAlchemyError, OSError) as err:
            self.engine.dispose()
            hint = ""
            file = Path(parsed.database or "")
            if backend == "sqlite" and parsed.database and not os.access(file.parent, os.W_OK):
                hint = (f" (its folder {file.parent} cannot be written: give --database "
                        "sqlite:///A/WRITABLE/PLACE/review.sqlite)")
                if file.is_file():  # that alone would start a new review: the labels in the file were out of sight
                    hint = (f" (its folder {file.parent} cannot be written, which SQLite needs beside the file: to "
                            f"go on with the labels in {file.name}, copy the folder to a writable place and use the "
                            "copy; to start a new review, give --database sqlite:///A/WRITABLE/PLACE/review.sqlite)")
            raise InputError(f"cannot open database {shown}: {db_reason(err)}{hint}") from None
        # A SQLite file is watched: the connections hold it open, so one deleted under them takes labels silently.
        self.file = Path(os.path.abspath(parsed.database)) if backend == "sqlite" and parsed.database not in (
            None, "", ":memory:") else None
        self._file_id = None if self.file is None else _file_identity(self.file)
        if self.file is not None:
            # a connection opened while the file was away (another predict moving it into its new run, an instant
            # before that run is in place) made a new, empty database where it had been, and stayed in the pool:
            # every label it took later failed, "no such table". Refused, and not kept.
            event.listen(self.engine, "connect", lambda _conn, _record: self.check_file())
            # ... and checked before SQLite opens anything, opening only a file that is there: finish_run moves the
            # file, then its -wal; a connection opened between the two made an empty database at the path, took the
            # WAL beside it (the labels not yet checkpointed) for its own, and deleted it when it closed.
            event.listen(self.engine, "do_connect", self._open_existing)
        if "run" not in columns:
            self.engine.dispose()
            raise InputError(f"{shown} holds review tables from an older normalcy, without run ids: "
                             "give another --database (or move the old review.sqlite away)")

    @classmethod
    def for_run(cls, run_dir: Path, url: str | None = None) -> "Store":
        """The run's own SQLite file unless a URL is given; either way scoped to this run. The run's own file
        holds this run alone, keyed OWN_RUN rather than by its path: a run folder moved, renamed or copied
        to another machine keeps its labels (keyed by the path, they were left behind, unseen)."""
        own_file = Path(run_dir).resolve() / OWN_FILE
        if url is not None:
            if _names_file(url, own_file):  # the run's own file by its URL: its labels are those of OWN_RUN
                return cls.for_run(run_dir)
            store = cls(url, run=run_id(run_dir))
            elsewhere = _own_labels(own_file)
            if elsewhere:
                log.warning("review: %d label(s) of this run are in its own database %s, not in %s: serve it "
                            "without --database to go on with them", elsewhere, printable(str(own_file)), store.shown)
            return store
        # Built, not formatted: in "sqlite:///{path}" a "?" or "%" in the folder's name is URL syntax, and the
        # database went elsewhere (a folder "q?x" wrote its labels to a file "q" beside it, shared with "q?y").
        own = URL.create("sqlite", database=str(own_file))
        store = cls(own, run=OWN_RUN)
        store._adopt_earlier()
        return store

    def _adopt_earlier(self) -> None:
        """A run's own file written while runs were keyed by their real path: its items (and with them their
        labels) under that path become OWN_RUN's; of several such paths (a folder moved after it was served
        from two places), the one with the most labels. Labels set aside are not taken back."""
        counts = (select(items_table.c.run, func.count(labels_table.c.item_id), func.count(items_table.c.id))
                  .select_from(items_table.outerjoin(labels_table, labels_table.c.item_id == items_table.c.id))
                  .where(~items_table.c.run.contains(SET_ASIDE))
                  .group_by(items_table.c.run))
        with self.engine.begin() as conn:
            if conn.execute(select(items_table.c.id).where(items_table.c.run == OWN_RUN).limit(1)).first():
                return  # the usual start: one indexed look, not a count over a million items
            found = {r[0]: (r[1], r[2]) for r in conn.execute(counts)}
            if not found:
                return
            earlier = max(found, key=lambda r: found[r])
            conn.execute(items_table.update().where(items_table.c.run == earlier).values(run=OWN_RUN))
        log.info("review: %d label(s) of this run kept from where it was served before (%s)", found[earlier][0],
                 printable(earlier))

    def set_aside_if_changed(self, fingerprint: str) -> ContentsChange:
        """Record what this run's items are; if they are not what was labelled before, set the old labels aside,
        and take back the labels set aside when the items were last these.

        For items keyed by position (a table's row numbers) the key does not say which object a label is
        about: another table scored into the run folder reuses the keys. When ``fingerprint`` differs from
        the recorded one, the items that carry a label or a logged label move, with their labels and log,
        to a run key of their own: kept in the database, no longer this run's, never deleted. The aside key
        is recorded in run_contents with the fingerprint it was labelled under, so that when those contents
        come back (the old table scored into the folder again) its items move back to this run, replacing
        this run's unlabelled items of the same keys. A run without a recorded fingerprint (labelled before
        they were kept) takes this one as its own. Call it before ``sync_items``.
        """
        mine = contents_table.c.run == self.run
        with self.engine.begin() as conn:
            # Locked (PostgreSQL): a second server starting on the change waits, then finds it made.
            before = conn.execute(select(contents_table.c.fingerprint).where(mine).with_for_update()).scalar()
            if before == fingerprint:
                return ContentsChange()
            if before is None:
                conn.execute(contents_table.insert().values(run=self.run, fingerprint=fingerprint))
                return ContentsChange()
            conn.execute(contents_table.update().where(mine).values(fingerprint=fingerprint))
            aside = f"{self.run}{SET_ASIDE}{_iso(time.time())} {before[:12]} {uuid.uuid4().hex[:8]}"
            n_aside = self._move_labelled(conn, self.run, aside)
            if n_aside is None:
                aside = ""  # nothing labelled under the old contents: no key kept for them
            else:
                conn.execute(contents_table.insert().values(run=aside, fingerprint=before))
            # The newest aside of these contents (there is one unless two servers raced on a change).
            asides = conn.execute(select(contents_table.c.run).where(contents_table.c.fingerprint == fingerprint))
            earlier = max((r for (r,) in asides if r.startswith(self.run + SET_ASIDE)), default="")
            n_restored = None
            if earlier:
                n_restored = self._move_labelled(conn, earlier, self.run)
                conn.execute(contents_table.delete().where(contents_table.c.run == earlier))
        return ContentsChange(n_aside or 0, aside, n_restored or 0, "" if n_restored is None else earlier)

    @staticmethod
    def _move_labelled(conn: Connection, source: str, target: str) -> int | None:
        """Move the items of run ``source`` that carry a label or a logged label to run ``target`` (with them, their
        labels and log), first dropping ``target``'s items of the same keys that carry neither: the unique
        (run, path) keeps one item per key, and those hold nothing to lose. Returns how many labels moved,
        None when no item did."""
        item = items_table.c.id
        labelled = item.in_(select(labels_table.c.item_id)) | item.in_(select(events_table.c.item_id))
        moving = select(item).where(items_table.c.run == source).where(labelled).correlate(None)
        paths = select(items_table.c.path).where(item.in_(moving)).correlate(None)
        if conn.execute(moving.limit(1)).first() is None:
            return None
        at_target = items_table.c.run == target
        conn.execute(items_table.delete().where(at_target, items_table.c.path.in_(paths), ~labelled))
        n = conn.execute(select(func.count()).select_from(labels_table).where(labels_table.c.item_id.in_(moving)))
        count = int(n.scalar() or 0)
        conn.execute(items_table.update().where(item.in_(moving)).values(run=target))
        return count

    # ------------------------------------------------------------------ items

    def _insert(self) -> Any:
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)

    def sync_items(self, rows: Sequence[dict]) -> list[int]:
        """Add or refresh this run's items by path (a re-run updates scores); labels are left alone.

        Returns the items' ids in the order of ``rows``. Only new or changed rows are written, so
        reopening a large run costs one read, not a rewrite of every row; SQLite gets them through the
        driver's executemany, without SQLAlchemy's per-row binding (at 1,000,000 rows: 5 s against 13 s
        on the 2-core development machine; ``bench/rerank_speed.py --million`` times a first start and
        a restart).
        """
        keys = ("run", "path", "name", "score", "decision", "overlay")
        values = [(self.run, to_db(str(r["path"])), printable(str(r["name"])), float(r["score"]),
                   bool(r["decision"]), to_db(r["overlay"]) if r.get("overlay") else None) for r in rows]
        stmt = self._insert()(items_table)
        stmt = stmt.on_conflict_do_update(index_elements=[items_table.c.run, items_table.c.path],
                                          set_={c: stmt.excluded[c] for c in keys[2:]})
        stored = select(items_table.c.path, items_table.c.id, *(items_table.c[k] for k in keys[2:])).where(
            items_table.c.run == self.run)
        with self.engine.begin() as conn:
            known = {r[0]: r for r in self._raw(conn, stored)}
            todo = [v for v in values if known.get(v[1], ())[2:] != v[2:]]  # SQLite's 1/0 equal True/False
            if todo:
                if self.dialect == "sqlite":
                    compiled = stmt.compile(dialect=conn.dialect, column_keys=list(keys))
                    order = [keys.index(k) for k in compiled.positiontup or []]
                    conn.exec_driver_sql(compiled.string, [tuple(v[i] for i in order) for v in todo])
                else:
                    conn.execute(stmt, [dict(zip(keys, v)) for v in todo])
                ids = select(items_table.c.path, items_table.c.id).where(items_table.c.run == self.run)
                known = {r[0]: r for r in self._raw(conn, ids)}
        return [known[v[1]][1] for v in values]

    def _raw(self, conn: Connection, stmt: Any) -> list[tuple]:
        """A query's rows as plain tuples; from SQLite through the driver, which at 1,000,000 rows is
        seconds faster than SQLAlchemy's result processing (values come back as stored: 1/0, not bools)."""
        if self.dialect != "sqlite":
            return [tuple(r) for r in conn.execute(stmt).all()]
        compiled = stmt.compile(dialect=conn.dialect)
        params = compiled.construct_params()
        return conn.exec_driver_sql(compiled.string, tuple(params[k] for k in compiled.positiontup or [])).fetchall()

    def _select(self) -> Any:
        return (select(items_table, labels_table.c.label, labels_table.c.interest, labels_table.c.updated_at)
                .select_from(items_table.outerjoin(labels_table, labels_table.c.item_id == items_table.c.id))
                .where(items_table.c.run == self.run)
                .order_by(items_table.c.id))

    @staticmethod
    def _item(row: Any) -> Item:
        return Item(id=row.id, path=from_db(row.path), name=row.name, score=float(row.score),
                    decision=bool(row.decision), overlay=from_db(row.overlay) if row.overlay else row.overlay,
                    label=row.label, interest=row.interest, updated_at=row.updated_at)

    def items(self) -> list[Item]:
        """This run's items with their current labels, in id order."""
        with self.engine.connect() as conn:
            return [self._item(r) for r in conn.execute(self._select())]

    def get(self, item_id: int) -> Item | None:
        with self.engine.connect() as conn:
            return self._get(conn, item_id)

    def _get(self, conn: Connection, item_id: int) -> Item | None:
        row = conn.execute(self._select().where(items_table.c.id == item_id)).first()
        return None if row is None else self._item(row)

    def labelled(self) -> list[Item]:
        """This run's labelled items only: cheap enough to read after every label, even for a large run."""
        stmt = (select(items_table, labels_table.c.label, labels_table.c.interest, labels_table.c.updated_at)
                .select_from(items_table.join(labels_table, labels_table.c.item_id == items_table.c.id))
                .where(items_table.c.run == self.run)
                .order_by(items_table.c.id))
        with self.engine.connect() as conn:
            return [self._item(r) for r in conn.execute(stmt)]

    def changes_since(self, seen: int) -> tuple[int, bool]:
        """(the newest label event's id, whether an event after ``seen`` is this run's).

        How a server learns of labels that other servers on the database wrote: one look at the events
        after ``seen`` (a range of the primary key, each joined to its item by id), never a scan of a
        run's items or labels. (0, False) while no label was ever written."""
        stmt = (select(func.max(events_table.c.id),
                       func.max(case((items_table.c.run == self.run, events_table.c.id))))
                .select_from(events_table.join(items_table, items_table.c.id == events_table.c.item_id))
                .where(events_table.c.id > seen))
        with self.engine.connect() as conn:
            latest, mine = conn.execute(stmt).one()
        return max(seen, latest or 0), mine is not None

    # ------------------------------------------------------------------ labels

    def set_label(self, item_id: int, label: str | None, interest: int | None, client: str = "",
                  keep: Collection[str] = ()) -> Item:
        """Set (or with both None, clear) an item's label and log the change, in one transaction.

        ``keep`` names the fields ("label", "interest") a request left out: they keep their stored values, so
        that two pages giving one item a label and an interest at once do not clear each other's (the value
        passed for a kept field is ignored). The log's event holds the label as it stands after the change.

        Raises:
            ValueError: label not one of ranking.LABELS or None, interest not a whole number 0..5 or None, or
                ``keep`` naming another field.
            KeyError: no item with this id in this run.
        """
        fields = ("label", "interest")
        if set(keep) - set(fields):
            raise ValueError(f"keep names unknown fields {sorted(set(keep) - set(fields))}: use {list(fields)}")
        label = None if "label" in keep else label
        interest = None if "interest" in keep else interest
        check_label(label, interest)
        interest = None if interest is None else int(interest)  # 3.0 or numpy's 3 is stored as the integer 3
        self.check_file()
        client = str(client)[:200]
        with self.engine.begin() as conn:
            # Lock the item first (PostgreSQL), so that two labels for one item commit in the order
            # of their events: the log's last event is always the current label. SQLite ignores
            # FOR UPDATE and runs the SELECT outside the transaction; its transaction then starts
            # at the first write, with the database write lock (queued by busy_timeout), rather
            # than with a read snapshot that could fail to upgrade under load.
            found = conn.execute(select(items_table.c.id)
                                 .where(items_table.c.id == item_id, items_table.c.run == self.run)
                                 .with_for_update())
            if found.first() is None:
                raise KeyError(f"no item with id {item_id} in this run")
            now = time.time()
            # The upsert comes first: the write that takes SQLite's lock, so the kept fields read back below are
            # the stored ones, not those of a label another request wrote between a read and this write.
            stmt = self._insert()(labels_table).values(item_id=item_id, label=label, interest=interest,
                                                       updated_at=now, client=client)
            stmt = stmt.on_conflict_do_update(
                index_elements=[labels_table.c.item_id],
                set_={c: stmt.excluded[c] for c in (*(f for f in fields if f not in keep), "updated_at", "client")},
            )
            conn.execute(stmt)
            if keep:
                label, interest = conn.execute(select(labels_table.c.label, labels_table.c.interest)
                                               .where(labels_table.c.item_id == item_id)).one()
            conn.execute(events_table.insert().values(item_id=item_id, label=label, interest=interest,
                                                      at=now, client=client))
            if label is None and interest is None:
                conn.execute(labels_table.delete().where(labels_table.c.item_id == item_id))
            item = self._get(conn, item_id)
        self.check_file()  # gone while it was written: said, not taken as saved
        assert item is not None
        return item

    def _open_existing(self, _dialect: Any, _record: Any, cargs: list, cparams: dict) -> None:
        """A new SQLite connection (the "do_connect" event): refused while the file opened at start is not at its
        path, and opened read-write without create (a URI with mode=rw), so that a file gone in between is an
        error, never a new, empty database beside the old one's WAL."""
        self.check_file()
        if cparams.get("uri") or not cargs or not isinstance(cargs[0], str):
            return  # the URL's own URI options: left as given
        cargs[0] = "file:" + quote(os.fsencode(cargs[0])) + "?mode=rw"
        cparams["uri"] = True

    def check_file(self) -> None:
        """Raise DatabaseGone if the SQLite file opened at start is no longer at its path (a stat, no query).
        Moved back, it is used again; replaced by another file (a copy), it is not: that one lacks the labels
        written since, and the open connections would go on writing to the old one."""
        if self.file is not None and self._file_id is not None and _file_identity(self.file) != self._file_id:
            moved = _open_file_at(self._file_id)
            if moved is not None:  # the run folder renamed (another made at its name): a restart lost sight of them
                raise DatabaseGone(f"the review database {self.file} was moved while the server ran, to {moved} (the "
                                   "run folder renamed or replaced?): the label was not saved. The labels given so far "
                                   f"are in {moved} (with its -wal and -shm files): move the three back, or stop the "
                                   "server and serve the folder they are in")
            raise DatabaseGone(f"the review database {self.file} disappeared while the server ran (deleted, moved "
                               "or replaced): the label was not saved. Move the file back (with its -wal and -shm "
                               "files), or restart normalcy serve")

    def _run_events(self) -> Any:
        return (events_table.join(items_table, items_table.c.id == events_table.c.item_id),
                items_table.c.run == self.run)

    def events(self) -> list[dict]:
        """This run's label log in write order: id, item_id, label, interest, at, client."""
        joined, mine = self._run_events()
        with self.engine.connect() as conn:
            rows = conn.execute(select(events_table).select_from(joined).where(mine).order_by(events_table.c.id))
            return [dict(r._mapping) for r in rows]

    def export_csv(self, key: str = "path") -> str:
        """Labelled items as CSV (path,label,interest,score,decision,updated_at), for use outside the tool.
        ``key`` names the first column: a table run's id column, so the labels join back onto the table."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        # the id column's name is the table's (a header "=cmd" would run as scores.csv's header cannot)
        writer.writerow([csv_cell(printable(key)), "label", "interest", "score", "decision", "updated_at"])
        for it in self.labelled():
            writer.writerow([csv_cell(printable(it.path)), it.label or "", "" if it.interest is None else it.interest,
                             f"{it.score:.6g}", "anomalous" if it.decision else "normal", _iso(it.updated_at)])
        return out.getvalue()

    def close(self) -> None:
        self.engine.dispose()
