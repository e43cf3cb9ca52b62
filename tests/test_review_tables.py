"""Reviewing a table run (``normalcy predict`` on a table) in the browser, and a review of many items."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import load_file, save_file

from normalcy.review.ranking import make_ranker
from normalcy.review.server import create_app
from normalcy.runs.format import EMBEDDINGS, write_table_run
from normalcy.vectors.tables import (
    fit_table,
    read_table,
    score_table,
    threshold_of,
)

TOKEN = "table-token-" + "t" * 20


def make_table_run(root: Path, n: int = 200) -> Path:
    """A catalogue of n objects in two groups (group A: f0 high; group B: f1 high), one column in
    thousands, and five planted outliers; scored by a gaussian fitted on the table, into root/run."""
    rng = np.random.default_rng(0)
    group = np.arange(n) % 2
    X = rng.normal(size=(n, 4))
    X[:, 0] += 3 * (group == 0)
    X[:, 1] += 3 * (group == 1)
    X[:, 3] = 5000 + 1000 * X[:, 3]  # a column in other units: z-scored in the embeddings
    X[:5] += rng.normal(0, 8, size=(5, 4)) * [1, 1, 1, 1000]
    cols = {"flux": X[:, 0], "size": X[:, 1], "colour": X[:, 2], "distance": X[:, 3],
            "name": [f"<b>obj{i}</b>" for i in range(n)]}  # markup in ids: shown as text, never as HTML
    path = root / "catalogue.parquet"
    pq.write_table(pa.table(cols), path)
    table = read_table(path, id_column="name")
    det, _ = fit_table(table, "gaussian")
    scores, mask, skipped = score_table(det, table)
    return write_table_run(root / "run", table, scores, mask, threshold_of(det), skipped, {"detector": "gaussian"})


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_table_run(tmp_path)


@pytest.fixture
def client(run: Path) -> Iterator[TestClient]:
    with TestClient(create_app(run, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        yield c


def test_table_run_stores_its_features_as_embeddings(run: Path) -> None:
    emb = load_file(str(run / EMBEDDINGS))
    z = emb["embedding"]
    assert z.shape == (200, 4) and z.dtype == np.float32
    assert np.allclose(z.mean(axis=0), 0, atol=1e-5) and np.allclose(z.std(axis=0), 1, atol=1e-4)
    assert 4000 < emb["mean"][3] < 6000 and emb["std"][3] > 500  # the raw scale, to show values
    assert json.loads((run / "run.json").read_text())["id_column"] == "name"


def test_items_are_rows_with_their_features(client: TestClient) -> None:
    data = client.get("/api/items", params={"limit": 50}).json()
    assert (data["total"], data["n_items"], data["kind"], data["id_column"]) == (200, 200, "table", "name")
    top = data["items"][0]
    assert top["image_url"] is None and top["overlay_url"] is None
    assert top["name"] in {f"<b>obj{i}</b>" for i in range(5)}  # a planted outlier leads
    feats = top["features"]
    assert {f["column"] for f in feats} == {"flux", "size", "colour", "distance"}  # few columns: all shown
    devs = [abs(f["deviation"]) for f in feats]
    assert devs == sorted(devs, reverse=True) and devs[0] > 3
    one = client.get(f"/api/items/{top['id']}").json()
    assert one["features"] == feats and one["rank"] == 1
    raw = pq.read_table(Path(client.app.state.review.run_dir).parent / "catalogue.parquet").to_pydict()
    row = raw["name"].index(top["name"])
    for f in feats:  # the values are the table's own, back from the z-scores
        assert f["value"] == pytest.approx(raw[f["column"]][row], rel=1e-5, abs=1e-4)


def _number(item: dict) -> int:
    return int(item["name"][len("<b>obj"):-len("</b>")])


def test_label_reranks_and_exports_ids(client: TestClient) -> None:
    first = client.get("/api/items", params={"limit": 200}).json()["items"]
    top = first[0]
    r = client.post(f"/api/items/{top['id']}/label", json={"label": "normal"})
    assert r.status_code == 200 and r.json()["rerank_ms"] >= 0
    assert r.json()["item"]["rank"] > 1  # neighbour (the default): a normal top row is shown later
    # Protege learns which group the person likes: 4 rows of group B interesting, 4 of group A normal.
    assert client.put("/api/strategy", json={"strategy": "protege"}).status_code == 200
    before = {it["id"]: it["rank"] for it in client.get("/api/items", params={"limit": 200}).json()["items"]}
    group_b = [it for it in first if _number(it) % 2 == 1 and _number(it) >= 5]
    group_a = [it for it in first if _number(it) % 2 == 0 and _number(it) >= 5 and it["id"] != top["id"]]
    for it in group_b[:4]:
        assert client.post(f"/api/items/{it['id']}/label", json={"label": "anomalous", "interest": 5}).status_code == 200
    for it in group_a[:4]:
        assert client.post(f"/api/items/{it['id']}/label", json={"label": "normal"}).status_code == 200
    after = {it["id"]: it["rank"] for it in client.get("/api/items", params={"limit": 200}).json()["items"]}
    rest_b, rest_a = [after[it["id"]] for it in group_b[4:]], [after[it["id"]] for it in group_a[4:]]
    assert np.median(rest_b) < np.median(rest_a) - 40
    assert np.mean([after[it["id"]] - before[it["id"]] for it in group_b[4:]]) < -20
    labelled = client.get("/api/items", params={"label": "labelled"}).json()
    assert labelled["total"] == 9 and labelled["n_labelled"] == 9
    assert client.get("/api/items", params={"label": "anomalous"}).json()["total"] == 4
    assert client.get("/api/items", params={"label": "unlabelled"}).json()["total"] == 191
    rows = list(csv.DictReader(io.StringIO(client.get("/api/labels.csv").text)))
    assert {r["name"] for r in rows} == {it["name"] for it in [top] + group_b[:4] + group_a[:4]}
    assert {r["label"] for r in rows} == {"normal", "anomalous"}


def test_image_endpoints_are_404_for_rows(client: TestClient) -> None:
    top = client.get("/api/items", params={"limit": 1}).json()["items"][0]
    for what in ("image", "overlay"):
        r = client.get(f"/api/items/{top['id']}/{what}")
        assert r.status_code == 404 and "table row" in r.json()["detail"]
    assert client.get("/api/items/999999/image").status_code == 404


def test_feature_values_of_a_table_scored_in_since_are_not_shown(client: TestClient, run: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Another predict into the run folder while serving rewrote embeddings.safetensors: each row was shown with
    the other table's values beside its own id and score. The values are left out, with a warning saying why."""
    from safetensors import safe_open

    top = client.get("/api/items", params={"limit": 1}).json()["items"][0]
    assert top["features"]
    with safe_open(str(run / EMBEDDINGS), framework="numpy") as f:
        meta = f.metadata()
    tensors = load_file(run / EMBEDDINGS)
    tensors["embedding"] = np.ascontiguousarray(tensors["embedding"][::-1])  # another table's rows
    save_file(tensors, run / EMBEDDINGS, metadata=meta)
    with caplog.at_level("WARNING", logger="normalcy"):
        again = client.get(f"/api/items/{top['id']}").json()
        listed = client.get("/api/items", params={"limit": 5}).json()["items"]
    assert again["features"] == [] and all(it["features"] == [] for it in listed)
    assert "rewritten since the review started" in caplog.text
    assert client.post(f"/api/items/{top['id']}/label", json={"label": "normal"}).status_code == 200


def test_labels_survive_a_restart(run: Path) -> None:
    with TestClient(create_app(run, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        top = c.get("/api/items", params={"limit": 1}).json()["items"][0]
        c.post(f"/api/items/{top['id']}/label", json={"label": "normal"})
    with TestClient(create_app(run, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        again = c.get(f"/api/items/{top['id']}").json()
        assert again["name"] == top["name"] and again["label"] == "normal"


@pytest.mark.parametrize("name", ["neighbour", "protege"])
def test_past_max_rows_a_rerank_scores_candidates(name: str) -> None:
    """Every labelled row, the detector's top half of max_rows and a fixed sample get priorities; the
    rest NaN (the review puts them after, in the detector's order). Below max_rows nothing changes."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 8)).astype(np.float32)
    a = rng.random(2000)
    idx = np.argsort(a)[:5]  # labelled rows the detector ranks last
    u = np.array([5.0, 0, 5, 0, 5])
    p = make_ranker(name, max_rows=400).rank(x, a, idx, u)
    scored = np.isfinite(p)
    assert 400 <= scored.sum() <= 405 and scored[idx].all() and scored[np.argsort(-a)[:200]].all()
    fewer = np.isfinite(make_ranker(name, max_rows=400).rank(x, a, idx[:3], u[:3]))
    assert np.array_equal(fewer, scored & ~np.isin(np.arange(2000), idx[3:]))  # a fixed set, plus the labelled
    assert np.isfinite(make_ranker(name, max_rows=2000).rank(x, a, idx, u)).all()


def test_a_run_past_the_rerank_rows_pages_labels_and_filters(tmp_path: Path) -> None:
    """200,000 items, past MAX_RANK_ROWS (a re-rank scores a working set, the rest keep the detector's
    order): a deep page, a label with its re-rank, a filter. Their times: bench/rerank_speed.py --million."""
    n, d = 200_000, 16
    rng = np.random.default_rng(0)
    run = tmp_path / "run"
    run.mkdir()
    ids = np.array([f"r{i}" for i in range(n)])
    score = rng.random(n)
    pq.write_table(pa.table({"row": ids, "score": score, "decision": (score > 0.99).astype(np.int8),
                             "threshold": np.full(n, 0.99)}), run / "scores.parquet")
    (run / "scores.csv").write_text("row,score,decision,threshold\n")  # serve's marker; parquet is read
    save_file({"embedding": rng.standard_normal((n, d), dtype=np.float32), "mean": np.zeros(d), "std": np.ones(d),
               "median": np.zeros(d)}, str(run / EMBEDDINGS), metadata={"columns": json.dumps([f"c{j}" for j in range(d)])})
    (run / "run.json").write_text(json.dumps({"kind": "vectors", "id_column": "row"}))
    with TestClient(create_app(run, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        page = c.get("/api/items", params={"offset": 100_000, "limit": 200}).json()
        assert page["total"] == n and len(page["items"]) == 200 and page["items"][0]["rank"] == 100_001
        top = c.get("/api/items", params={"limit": 1}).json()["items"][0]
        r = c.post(f"/api/items/{top['id']}/label", json={"label": "normal"})
        assert r.status_code == 200 and r.json()["item"]["rank"] > 1
        assert c.get("/api/items", params={"label": "unlabelled", "limit": 200}).json()["total"] == n - 1


def _score_rows_into(run: Path, table: Path, seed: int, n: int = 40) -> None:
    """A table of n rows without an id column (its items are row numbers), scored into ``run``."""
    X = np.random.default_rng(seed).normal(size=(n, 3))
    pq.write_table(pa.table({f"c{j}": X[:, j] for j in range(3)}), table)
    t = read_table(table)
    det, _ = fit_table(t, "gaussian")
    scores, mask, skipped = score_table(det, t)
    write_table_run(run, t, scores, mask, threshold_of(det), skipped, {"detector": "gaussian"})


def test_another_table_in_the_run_folder_sets_the_row_labels_aside(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Rows without an id column are keyed by their number: a different table re-scored into the run folder
    had the old labels on its rows. They are now set aside (kept in the database, not applied), said at start;
    the same table scored again keeps them."""
    run = tmp_path / "run"
    _score_rows_into(run, tmp_path / "a.parquet", seed=1)
    with TestClient(create_app(run, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        for row, label in (("3", "normal"), ("5", "anomalous")):
            item = next(it for it in c.get("/api/items", params={"limit": 40}).json()["items"] if it["name"] == row)
            assert c.post(f"/api/items/{item['id']}/label", json={"label": label}).status_code == 200
    _score_rows_into(run, tmp_path / "a.parquet", seed=1)  # the same table again (another detector would do)
    with caplog.at_level("WARNING", logger="normalcy"), TestClient(create_app(run, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        assert c.get("/api/status").json()["n_labelled"] == 2
    assert "set aside" not in caplog.text
    _score_rows_into(run, tmp_path / "b.parquet", seed=2)  # another table: row 3 is another object
    with caplog.at_level("WARNING", logger="normalcy"), TestClient(create_app(run, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        assert c.get("/api/status").json()["n_labelled"] == 0
        assert c.get("/api/items", params={"label": "labelled"}).json()["total"] == 0
        assert c.get("/api/labels.csv").text.splitlines()[1:] == []
    assert "2 label(s) set aside" in caplog.text and str(run) in caplog.text
    with sqlite3.connect(run / "review.sqlite") as db:  # kept, not deleted
        assert sorted(r[0] for r in db.execute("SELECT label FROM labels")) == ["anomalous", "normal"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="normalcy"), TestClient(create_app(run, TOKEN)) as c:
        assert c.app.state.review.status()["n_labelled"] == 0  # type: ignore[attr-defined]
    assert "set aside" not in caplog.text  # said once, when it happened


def _label_rows(c: TestClient, labels: dict[str, str]) -> None:
    items = c.get("/api/items", params={"limit": 40}).json()["items"]
    for row, label in labels.items():
        item = next(it for it in items if it["name"] == row)
        assert c.post(f"/api/items/{item['id']}/label", json={"label": label}).status_code == 200


def _labelled_rows(c: TestClient) -> list[list[str]]:
    return [line.split(",")[:2] for line in c.get("/api/labels.csv").text.splitlines()[1:]]


def test_the_old_table_scored_back_gets_its_labels_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A -> B -> A -> B without an id column: the labels set aside when the other table came in are restored when
    their table is scored back into the folder (said once), and the other table's labels are set aside in turn."""
    run = tmp_path / "run"
    _score_rows_into(run, tmp_path / "a.parquet", seed=1)
    with TestClient(create_app(run, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        _label_rows(c, {"3": "normal", "5": "anomalous"})
    _score_rows_into(run, tmp_path / "b.parquet", seed=2)
    with TestClient(create_app(run, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        assert _labelled_rows(c) == []
        _label_rows(c, {"5": "normal"})
    _score_rows_into(run, tmp_path / "a.parquet", seed=1)
    caplog.clear()
    with caplog.at_level("WARNING", logger="normalcy"), TestClient(create_app(run, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        assert _labelled_rows(c) == [["3", "normal"], ["5", "anomalous"]]
    assert "1 label(s) set aside" in caplog.text
    assert "2 label(s) given to these rows before were restored" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="normalcy"), TestClient(create_app(run, TOKEN)) as c:
        assert c.app.state.review.status()["n_labelled"] == 2  # type: ignore[attr-defined]
    assert "restored" not in caplog.text and "set aside" not in caplog.text  # said once, when it happened
    _score_rows_into(run, tmp_path / "b.parquet", seed=2)
    with caplog.at_level("WARNING", logger="normalcy"), TestClient(create_app(run, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        assert _labelled_rows(c) == [["5", "normal"]]
    assert "2 label(s) set aside" in caplog.text
    assert "1 label(s) given to these rows before were restored" in caplog.text
    with sqlite3.connect(run / "review.sqlite") as db:  # every label once: B's row 5 here, A's two set aside
        assert sorted(r[0] for r in db.execute("SELECT label FROM labels")) == ["anomalous", "normal", "normal"]
        assert db.execute("SELECT count(*) FROM items").fetchone()[0] == 42


def test_another_table_scored_in_while_served_is_read_with_its_own_labels(tmp_path: Path) -> None:
    """Another table scored into the served run folder: the page went on listing the old rows, and a label given on
    that list went onto the new table's row of that number, another object. The new table is read at the next
    request (the old labels set aside, as at a start), a label on the old list is refused, and the old table
    scored back in gets its labels back, all while the server runs."""
    run = tmp_path / "run"
    _score_rows_into(run, tmp_path / "a.parquet", seed=1)
    with TestClient(create_app(run, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        _label_rows(c, {"3": "normal"})
        version = c.get("/api/items").json()["run_version"]
        row5 = next(it for it in c.get("/api/items", params={"limit": 40}).json()["items"] if it["name"] == "5")
        _score_rows_into(run, tmp_path / "b.parquet", seed=2)
        assert _labelled_rows(c) == []
        r = c.post(f"/api/items/{row5['id']}/label", json={"label": "anomalous"}, headers={"X-Run-Version": version})
        assert r.status_code == 409 and _labelled_rows(c) == []
        _score_rows_into(run, tmp_path / "a.parquet", seed=1)
        assert _labelled_rows(c) == [["3", "normal"]]


def test_a_table_run_in_a_folder_whose_path_is_not_utf8_is_reviewed(tmp_path: Path) -> None:
    """pyarrow takes no path that is not UTF-8: a table run in such a folder could not be read for the review
    (nor written: see test_server's run folder that is not UTF-8)."""
    import os

    run = tmp_path / os.fsdecode(b"caf\xe9")
    os.rename(make_table_run(tmp_path, n=20), run)
    with TestClient(create_app(run, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        assert c.get("/api/items").json()["n_items"] == 20
