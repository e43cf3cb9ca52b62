"""The review store: labels and scores in SQLite (and PostgreSQL when one is given)."""

from __future__ import annotations

import csv
import io
import threading
from pathlib import Path
from typing import Iterator

import pytest
from review_fixtures import db_url  # noqa: F401  (a fixture)
from sqlalchemy import func, select, text

from normalcy.errors import InputError
from normalcy.review.store import ContentsChange, Store, items_table, run_id


def rows(n: int = 5, offset: float = 0.0) -> list[dict]:
    return [{"path": f"/data/img_{i}.png", "name": f"img_{i}.png", "score": i + offset, "decision": i >= 3,
             "overlay": f"/run/overlays/img_{i}.png" if i else None} for i in range(n)]


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:  # noqa: F811
    s = Store(db_url)
    yield s
    s.close()



def run_threads(work, n: int) -> None:
    """work(k) on n threads at once, waited for."""
    threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

def test_sync_and_read(store: Store) -> None:
    store.sync_items(rows())
    items = store.items()
    assert [it.path for it in items] == [f"/data/img_{i}.png" for i in range(5)]
    assert [it.id for it in items] == sorted(it.id for it in items)
    first = items[0]
    assert (first.name, first.score, first.decision, first.overlay) == ("img_0.png", 0.0, False, None)
    assert items[4].decision is True and items[4].overlay == "/run/overlays/img_4.png"
    assert all(it.label is None and it.interest is None and not it.labelled for it in items)
    assert store.get(first.id) == first
    assert store.get(10_000) is None
    assert store.labelled() == []


def test_set_label_and_events(store: Store) -> None:
    store.sync_items(rows())
    a, b = store.items()[:2]
    it = store.set_label(a.id, "anomalous", 4, client="alice")
    assert (it.label, it.interest) == ("anomalous", 4) and it.updated_at is not None
    store.set_label(b.id, "normal", None, client="bob")
    store.set_label(a.id, "normal", None, client="bob")
    assert {(x.id, x.label, x.interest) for x in store.labelled()} == {(a.id, "normal", None), (b.id, "normal", None)}
    assert len(store.events()) == 3
    assert [(e["item_id"], e["label"], e["interest"], e["client"]) for e in store.events()] == [
        (a.id, "anomalous", 4, "alice"), (b.id, "normal", None, "bob"), (a.id, "normal", None, "bob")]
    # Interest alone is a label (how interesting, without a verdict); both None clears it.
    assert store.set_label(b.id, None, 2).labelled
    cleared = store.set_label(b.id, None, None)
    assert not cleared.labelled and [x.id for x in store.labelled()] == [a.id]
    assert len(store.events()) == 5


def test_a_kept_field_keeps_its_stored_value(store: Store) -> None:
    """``keep`` names the fields a request left out: a label alone left the interest cleared and an interest alone
    the label, so two pages labelling one item at once erased each other's. The log holds the label as it stands."""
    store.sync_items(rows())
    a, b = store.items()[:2]
    assert (store.set_label(a.id, None, 3, keep={"label"}).label, store.get(a.id).interest) == (None, 3)  # type: ignore[union-attr]
    it = store.set_label(a.id, "normal", None, keep={"interest"})
    assert (it.label, it.interest) == ("normal", 3)
    it = store.set_label(a.id, "anomalous", 0, keep={"label"})  # the value of a kept field is not used
    assert (it.label, it.interest) == ("normal", 0)
    assert not store.set_label(a.id, None, None, keep=()).labelled  # an explicit null still clears
    it = store.set_label(b.id, "anomalous", None, keep={"interest"})  # nothing stored: nothing to keep
    assert (it.label, it.interest) == ("anomalous", None)
    assert not store.set_label(b.id, None, None, keep={"interest"}).labelled  # the label cleared, no interest kept
    assert [(e["label"], e["interest"]) for e in store.events()] == [
        (None, 3), ("normal", 3), ("normal", 0), (None, None), ("anomalous", None), (None, None)]
    assert store.labelled() == []
    with pytest.raises(ValueError, match="unknown fields"):
        store.set_label(a.id, "normal", None, keep={"labels"})


def test_labels_and_interests_given_at_once_keep_each_other(store: Store) -> None:
    """Threads each giving one item a label alone or an interest alone: each event keeps the other field as the
    event before it left it (read under the write, never before it), and the last event is the stored label."""
    store.sync_items(rows(2))
    item_id = store.items()[0].id
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for j in range(4):
                if k % 2:
                    store.set_label(item_id, ("normal", "anomalous")[j % 2], None, client="label", keep={"interest"})
                else:
                    store.set_label(item_id, None, (k + j) % 6, client="interest", keep={"label"})
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    run_threads(work, 8)
    assert errors == []
    events = store.events()
    assert len(events) == 32
    before = {"label": None, "interest": None}
    for e in events:
        kept = "interest" if e["client"] == "label" else "label"
        assert e[kept] == before[kept], (e, before)
        before = e
    item = store.get(item_id)
    assert item is not None and (item.label, item.interest) == (events[-1]["label"], events[-1]["interest"])
    assert item.label is not None and item.interest is not None


def test_validation(store: Store) -> None:
    store.sync_items(rows())
    item_id = store.items()[0].id
    for label, interest in [("bad", None), ("Normal", None), (None, 6), (None, -1), ("normal", 2.5),
                            ("normal", True), ("normal", "3")]:
        with pytest.raises(ValueError):
            store.set_label(item_id, label, interest)  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        store.set_label(99_999, "normal", None)
    assert len(store.events()) == 0


def test_sync_upsert_keeps_labels(store: Store) -> None:
    store.sync_items(rows())
    ids = {it.path: it.id for it in store.items()}
    store.set_label(ids["/data/img_2.png"], "anomalous", 5)
    store.sync_items(rows(7, offset=0.5))  # a re-run: new scores, two more images
    items = {it.path: it for it in store.items()}
    assert len(items) == 7
    assert all(items[p].id == i for p, i in ids.items())  # ids are stable
    assert items["/data/img_2.png"].score == 2.5
    assert (items["/data/img_2.png"].label, items["/data/img_2.png"].interest) == ("anomalous", 5)


def test_export_csv(store: Store) -> None:
    store.sync_items(rows())
    items = store.items()
    store.set_label(items[1].id, "normal", None)
    store.set_label(items[4].id, "anomalous", 3)
    got = list(csv.DictReader(io.StringIO(store.export_csv())))
    assert [list(r) for r in got[:1]] == [["path", "label", "interest", "score", "decision", "updated_at"]]
    assert [(r["path"], r["label"], r["interest"], float(r["score"]), r["decision"]) for r in got] == [
        ("/data/img_1.png", "normal", "", 1.0, "normal"), ("/data/img_4.png", "anomalous", "3", 4.0, "anomalous")]
    assert all(r["updated_at"].endswith("+00:00") for r in got)


def test_an_id_column_named_as_a_formula_is_guarded_in_labels_csv(store: Store) -> None:
    """A table's id column named ``=HYPERLINK(...)`` headed labels.csv as it is, a formula to a spreadsheet;
    scores.csv guards its header, and so does labels.csv now."""
    store.set_label(store.sync_items(rows())[0], "normal", None)
    assert store.export_csv("=HYPERLINK(1)").splitlines()[0].startswith("'=HYPERLINK(1),label,")


def test_ids_that_look_encoded_are_kept_as_they_are(store: Store) -> None:
    """A table id may be any text: one that begins with the marker of base64-stored names is not decoded
    on the way out, so it neither turns into another name nor collides with the id it would decode to."""
    ids = ["fsb64:L2V0Yy9wYXNzd2Q=", "/etc/passwd", "fsb64:", "fsb64:not base64!", "plain"]
    got = store.sync_items([{"path": k, "name": k, "score": float(i), "decision": False} for i, k in enumerate(ids)])
    assert len(set(got)) == len(ids)
    assert [it.path for it in store.items()] == ids
    for item_id in got:
        store.set_label(item_id, "normal", None)
    rows_out = list(csv.DictReader(io.StringIO(store.export_csv("id"))))
    assert [r["id"] for r in rows_out] == ids
    assert store.sync_items([{"path": k, "name": k, "score": 0.0, "decision": False} for k in ids]) == got


def test_persists_after_reopen(db_url: str) -> None:  # noqa: F811
    s = Store(db_url)
    s.sync_items(rows())
    item_id = s.items()[3].id
    s.set_label(item_id, "anomalous", 1, client="x")
    s.close()
    s = Store(db_url)
    try:
        it = s.get(item_id)
        assert it is not None and (it.label, it.interest) == ("anomalous", 1)
        assert len(s.events()) == 1
    finally:
        s.close()


def test_concurrent_labels(store: Store) -> None:
    """Writers from many threads queue up; none is lost."""
    store.sync_items(rows(8))
    ids = [it.id for it in store.items()]
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for j in range(5):
                store.set_label(ids[(k + j) % len(ids)], ("normal", "anomalous")[j % 2], (k + j) % 6, client=str(k))
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    run_threads(work, 16)
    assert errors == []
    assert len(store.events()) == 80
    last = {e["item_id"]: (e["label"], e["interest"]) for e in store.events()}
    assert {it.id: (it.label, it.interest) for it in store.labelled()} == last


def test_runs_sharing_a_database_keep_their_own_items(db_url: str, tmp_path: Path) -> None:  # noqa: F811
    """Two runs of the same images in one database: neither overwrites nor sees the other's labels."""
    a, b = Store(db_url, run="run-a"), Store(db_url, run="run-b")
    try:
        a.sync_items(rows())
        b.sync_items(rows(offset=10.0))
        assert [it.score for it in a.items()] == [0.0, 1.0, 2.0, 3.0, 4.0]
        assert [it.score for it in b.items()] == [10.0, 11.0, 12.0, 13.0, 14.0]
        a_id, b_id = a.items()[0].id, b.items()[0].id
        assert a_id != b_id
        a.set_label(a_id, "anomalous", 5)
        assert [x.id for x in a.labelled()] == [a_id] and b.labelled() == []
        assert b.get(a_id) is None and a.get(b_id) is None
        with pytest.raises(KeyError):
            b.set_label(a_id, "normal", None)
        assert (len(a.events()), len(b.events())) == (1, 0)
        assert b.export_csv().count("\n") == 1  # the header only
    finally:
        a.close()
        b.close()
    assert run_id(tmp_path / "x" / ".." / "y") == run_id(tmp_path / "y") != run_id(tmp_path / "x")


def test_old_schema_is_refused_clearly(tmp_path: Path) -> None:
    """A database from before run ids gets a clear message, not a failed query later."""
    from sqlalchemy import create_engine

    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE items (id INTEGER PRIMARY KEY, path VARCHAR UNIQUE NOT NULL, "
                          "name VARCHAR, score FLOAT, decision BOOLEAN, overlay VARCHAR)"))
    engine.dispose()
    with pytest.raises(InputError, match="older normalcy, without run ids"):
        Store(url)


def test_sqlite_wal_mode(tmp_path: Path) -> None:
    s = Store.for_run(tmp_path)
    try:
        assert (tmp_path / "review.sqlite").is_file()
        with s.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
    finally:
        s.close()


def test_bad_urls(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unsupported database 'mysql'"):
        Store("mysql://u:p@localhost/db")
    with pytest.raises(InputError, match="not a database URL"):
        Store("review.sqlite")
    with pytest.raises(InputError, match="folder not found"):
        Store(f"sqlite:///{tmp_path / 'missing' / 'review.sqlite'}")
    with pytest.raises(InputError, match="cannot open database") as err:
        Store("postgresql://nobody:secret@127.0.0.1:1/nothing?connect_timeout=2")
    assert "secret" not in str(err.value) and "\n" not in str(err.value)


def test_a_read_only_folder_with_labels_says_how_to_keep_them(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A run folder made read-only (archived, a read-only mount) after its review: SQLite cannot open its
    review.sqlite, and the advice was only "give --database elsewhere", a new review without those labels.
    (Root writes anywhere, so the read-only folder is imitated: os.access says no, and the open fails.)"""
    from sqlalchemy.exc import OperationalError

    import normalcy.review.store as store_module

    run = tmp_path / "run"
    run.mkdir()
    Store.for_run(run).close()

    def cannot_open(*_a: object, **_k: object) -> None:
        raise OperationalError("PRAGMA main.table_info", {}, Exception("unable to open database file"))

    monkeypatch.setattr(store_module.metadata, "create_all", cannot_open)
    monkeypatch.setattr(store_module.os, "access", lambda *_a, **_k: False)
    with pytest.raises(InputError, match="to go on with the labels in review.sqlite, copy the folder to a writable "
                                         "place and use the copy") as err:
        Store.for_run(run)
    assert "--database" in str(err.value)
    (run / "review.sqlite").unlink()
    with pytest.raises(InputError, match="cannot be written: give --database") as err:
        Store.for_run(run)
    assert "go on with the labels" not in str(err.value)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_database_is_said_to_lose_its_labels(url: str, caplog: pytest.LogCaptureFixture) -> None:
    """serve --database sqlite:// took labels with a 200 each and lost every one when it stopped, unsaid."""
    with caplog.at_level("WARNING", logger="normalcy"):
        s = Store(url)
    s.close()
    assert "in memory: every label is lost when the server stops" in caplog.text


def test_a_moved_run_keeps_its_labels(tmp_path: Path) -> None:
    """The run's own review.sqlite keys its run by no path: moved, renamed or copied elsewhere, the run keeps
    its labels (keyed by the folder's real path they were left behind, and the review started from none)."""
    run = tmp_path / "run"
    run.mkdir()
    s = Store.for_run(run)
    ids = s.sync_items(rows(3))
    s.set_label(ids[1], "anomalous", None)
    s.close()
    run.rename(tmp_path / "moved")
    t = Store.for_run(tmp_path / "moved")
    try:
        assert [i.id for i in t.labelled()] == [ids[1]]
        assert t.sync_items(rows(3)) == ids  # the same items: scores refreshed, labels kept
    finally:
        t.close()


@pytest.mark.parametrize("names", [("q?x=1", "q?x=2"), ("50%", "run%20b"), ("a#1", "ünï")])
def test_a_run_folders_own_file_is_in_it_whatever_its_name(tmp_path: Path, names: tuple[str, str]) -> None:
    """The path was formatted into "sqlite:///{path}": a "?" cut it (folders "q?x=1" and "q?x=2" both wrote a
    file "q" beside them, one database, one run key: each saw the other's labels), a "%" was unquoted (the
    server would not start: "folder not found")."""
    stores = []
    for name in names:
        (tmp_path / name).mkdir()
        stores.append(Store.for_run(tmp_path / name))
    try:
        ids = stores[0].sync_items(rows(3))
        stores[0].set_label(ids[1], "anomalous", None)
        stores[1].sync_items(rows(3))
        assert stores[1].labelled() == []
        for name, s in zip(names, stores):
            assert s.file == tmp_path / name / "review.sqlite" and s.file.is_file()
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # nothing beside the folders
    finally:
        for s in stores:
            s.close()


def test_labels_kept_under_an_earlier_path_are_taken_over(tmp_path: Path) -> None:
    """A run's own file written when runs were keyed by their real path (or served from two places): the
    path with the most labels becomes this run's, the others stay as they were."""
    run = tmp_path / "run"
    run.mkdir()
    url = f"sqlite:///{run / 'review.sqlite'}"
    for where, labelled in (("/old/place", 2), ("/other/place", 1)):
        old = Store(url, run=where)
        ids = old.sync_items(rows(4))
        for i in ids[:labelled]:
            old.set_label(i, "normal", None)
        old.close()
    s = Store.for_run(run)
    try:
        assert len(s.items()) == 4 and len(s.labelled()) == 2
    finally:
        s.close()


def test_labels_of_other_contents_are_set_aside_not_deleted(store: Store, db_url: str) -> None:  # noqa: F811
    """Items keyed by position (a table's row numbers): when the run's contents change, its labels (and their
    log) move to a run key of their own instead of staying on the same keys."""
    assert store.set_aside_if_changed("table-a") == ContentsChange()  # the first fingerprint is taken as it is
    store.sync_items(rows())
    a, b, c = store.items()[:3]
    store.set_label(a.id, "anomalous", 4)
    store.set_label(b.id, "normal", None)
    store.set_label(c.id, "normal", None)
    store.set_label(c.id, None, None)  # cleared: only in the log
    assert store.set_aside_if_changed("table-a") == ContentsChange()
    n, aside, _, _ = store.set_aside_if_changed("table-b")
    assert n == 2 and aside.startswith(" set aside ")  # this store's run is ""
    store.sync_items(rows(offset=0.5))
    assert store.labelled() == [] and store.events() == [] and len(store.items()) == 5
    old = Store(db_url, run=aside)
    try:
        assert {(it.path, it.label) for it in old.labelled()} == {(a.path, "anomalous"), (b.path, "normal")}
        assert len(old.events()) == 4 and len(old.items()) == 3
    finally:
        old.close()
    assert store.set_aside_if_changed("table-b") == ContentsChange()
    assert store.set_aside_if_changed("table-c") == ContentsChange()  # nothing labelled: no key kept for nothing


def test_labels_set_aside_come_back_with_their_contents(store: Store, db_url: str) -> None:  # noqa: F811
    """A -> B -> A -> B: each table's labels are set aside when the other is scored in, and restored (with their
    log) when it comes back; the run's unlabelled items of the same keys give way, so each key stays one item."""
    store.set_aside_if_changed("table-a")
    a = store.sync_items(rows())
    store.set_label(a[0], "anomalous", 4)
    store.set_label(a[1], "normal", None)
    store.set_label(a[2], "normal", None)
    store.set_label(a[2], None, None)  # cleared: only in the log
    to_b = store.set_aside_if_changed("table-b")
    assert (to_b.set_aside, to_b.restored, to_b.restored_from) == (2, 0, "")
    b = store.sync_items(rows(offset=0.5))
    store.set_label(b[3], "anomalous", 2)

    back_to_a = store.set_aside_if_changed("table-a")
    assert (back_to_a.set_aside, back_to_a.restored, back_to_a.restored_from) == (1, 2, to_b.aside)
    assert store.sync_items(rows())[:3] == a[:3]  # the labelled items themselves, back under this run
    assert {(it.path, it.label, it.interest) for it in store.labelled()} == {
        ("/data/img_0.png", "anomalous", 4), ("/data/img_1.png", "normal", None)}
    assert len(store.items()) == 5 and len(store.events()) == 4

    back_to_b = store.set_aside_if_changed("table-b")
    assert (back_to_b.set_aside, back_to_b.restored, back_to_b.restored_from) == (2, 1, back_to_a.aside)
    store.sync_items(rows(offset=0.5))
    assert [(it.path, it.label, it.interest) for it in store.labelled()] == [("/data/img_3.png", "anomalous", 2)]
    assert len(store.items()) == 5 and len(store.events()) == 1
    with store.engine.connect() as conn:  # A's three items set aside once more, B's restored: nothing twice
        assert conn.execute(select(func.count()).select_from(items_table)).scalar() == 8
    old = Store(db_url, run=back_to_b.aside)
    try:
        assert len(old.labelled()) == 2 and len(old.events()) == 4
    finally:
        old.close()
    assert store.set_aside_if_changed("table-b") == ContentsChange()


def test_labels_set_aside_are_not_taken_back_as_an_earlier_path(tmp_path: Path) -> None:
    """Every item of a run's own file labelled, then set aside (before the new items are written): the next start
    must not take the set-aside items for the run's items under an earlier path."""
    store = Store.for_run(tmp_path)
    store.set_aside_if_changed("table-a")
    store.sync_items(rows())
    for it in store.items():
        store.set_label(it.id, "normal", None)
    assert store.set_aside_if_changed("table-b")[0] == 5
    store.close()
    again = Store.for_run(tmp_path)
    try:
        assert again.items() == [] and again.labelled() == []
    finally:
        again.close()


def test_stores_opened_at_once_on_a_new_database_all_start(tmp_path: Path) -> None:
    """Two servers starting at once on a new database (one run served twice, a team's file) both found the
    tables missing and both created them: all but one stopped with "cannot open database ...: table items
    already exists". Each now starts and sees the same items."""
    from conftest import run_together
    from sqlalchemy import URL

    url = URL.create("sqlite", database=str(tmp_path / "review.sqlite"))
    stores: list[Store] = []
    for _ in range(3):  # a race: a few rounds, each on a new file
        url = url.set(database=str(tmp_path / f"review{_}.sqlite"))
        made: list[Store] = []
        assert run_together(lambda k: made.append(Store(url, run="r")), list(range(4))) == []
        stores += made
    for s in made:
        s.sync_items(rows())
    assert [i.path for i in made[0].items()] == [r["path"] for r in rows()]
    for s in stores:
        s.close()
