"""Reviewing a series run: its events are the items (a picture of each, its series, times and metrics), and
labels re-rank them with the same active learning as images, from each event's feature vector."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from normalcy import api
from normalcy.errors import InputError
from normalcy.review.app import create_app
from normalcy.runs.format import EMBEDDINGS, read_events

TOKEN = "series-token-" + "s" * 20
PERIOD = 24
SPACING = 120  # rows between planted anomalies: events never merge


def write(path: Path, n: int, planted: dict[int, str], seed: int) -> Path:
    """cpu, mem, disk: sines of one period plus noise; at each planted row a 6-row spike in cpu, or in mem."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    X = np.stack([np.sin(2 * np.pi * t / PERIOD + k) for k in range(3)], axis=1) + 0.05 * rng.normal(size=(n, 3))
    for row, metric in planted.items():
        X[row:row + 6, ["cpu", "mem"].index(metric)] += 4.0
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["time", "cpu", "mem", "disk"])
        w.writerows([[1_700_000_000 + 60 * i, *np.round(X[i], 4)] for i in range(n)])
    return path


PLANTED = {SPACING * (k + 1): ("cpu" if k % 2 == 0 else "mem") for k in range(16)}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # knn, one window: its ranking (the memory spikes first) is what the labels must overturn
    root = tmp_path_factory.mktemp("series-review")
    api.fit(write(root / "train.csv", 1500, {}, 0), root / "model", "knn", window=PERIOD, event_gap=0, progress=False)
    api.predict(root / "model", [write(root / "test.csv", SPACING * 18, PLANTED, 1)], root / "run")
    return root / "run"


@pytest.fixture
def client(run: Path) -> Iterator[TestClient]:
    for name in ("review.sqlite", "review.sqlite-wal", "review.sqlite-shm"):
        (run / name).unlink(missing_ok=True)  # each test labels from scratch
    with TestClient(create_app(run, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        yield c


def planted_metric(item: dict, times: list[str]) -> str | None:
    """The planted anomaly an event covers ("cpu" or "mem"), None for a false alarm."""
    start, end = times.index(item["event"]["start"]), times.index(item["event"]["end"])
    found = [m for row, m in PLANTED.items() if start <= row + 5 and row <= end]
    return found[0] if found else None


def test_events_are_the_items(client: TestClient, run: Path) -> None:
    data = client.get("/api/items", params={"limit": 100}).json()
    events = read_events(run)
    assert (data["kind"], data["id_column"], data["n_items"]) == ("series", "event", len(events))
    times = [r["time"] for r in csv.DictReader(open(run / "scores.csv"))]
    found = {planted_metric(it, times) for it in data["items"]} - {None}
    assert found == {"cpu", "mem"}
    top = data["items"][0]
    assert top["decision"] == "anomalous" and top["overlay_url"] is None
    assert top["event"]["metrics"][0] == planted_metric(top, times)  # the metric that drove it leads
    assert top["name"] == f"{top['event']['series']}: {top['event']['start']} – {top['event']['end']}"
    picture = client.get(top["image_url"])
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    assert client.get(f"/api/items/{top['id']}/overlay").status_code == 404
    rows = list(csv.DictReader(open(run / "events.csv")))
    assert len(rows) == len(events) and all(r["plot"].startswith("events/") for r in rows)


def test_labels_rerank_events(client: TestClient, run: Path) -> None:
    times = [r["time"] for r in csv.DictReader(open(run / "scores.csv"))]
    items = client.get("/api/items", params={"limit": 100}).json()["items"]
    cpu = [it for it in items if planted_metric(it, times) == "cpu"]
    mem = [it for it in items if planted_metric(it, times) == "mem"]
    assert len(cpu) >= 6 and len(mem) >= 6
    # a person who cares about cpu (the detector ranks the memory spikes first): three cpu events
    # interesting, three memory events normal
    assert np.median([it["rank"] for it in cpu]) > np.median([it["rank"] for it in mem])
    assert client.put("/api/strategy", json={"strategy": "protege"}).status_code == 200
    for it in cpu[:3]:
        assert client.post(f"/api/items/{it['id']}/label", json={"label": "anomalous", "interest": 5}).status_code == 200
    for it in mem[:3]:
        assert client.post(f"/api/items/{it['id']}/label", json={"label": "normal"}).status_code == 200
    after = {it["id"]: it["rank"] for it in client.get("/api/items", params={"limit": 100}).json()["items"]}
    rest_cpu = [after[it["id"]] for it in cpu[3:]]
    rest_mem = [after[it["id"]] for it in mem[3:]]
    assert max(rest_cpu) < min(rest_mem), (rest_cpu, rest_mem)
    labels = list(csv.DictReader(client.get("/api/labels.csv").text.splitlines()))
    assert len(labels) == 6 and all(r["event"].count("|") == 2 for r in labels)


def test_a_run_without_events_is_refused_in_one_line(run: Path, tmp_path: Path) -> None:
    quiet = write(tmp_path / "quiet.csv", 200, {}, 5)
    api.predict(run.parent / "model", [quiet], tmp_path / "run")
    (tmp_path / "run" / "events.csv").write_text("series,start,end,peak_time,peak_score,metrics,rows,plot\n")
    (tmp_path / "run" / EMBEDDINGS).unlink(missing_ok=True)
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    (tmp_path / "run" / "run.json").write_text(json.dumps({**meta, "n_pruned": 0}))
    with pytest.raises(InputError, match=r"no events to review \(no row reached its threshold\)"):
        create_app(tmp_path / "run", TOKEN)
    (tmp_path / "run" / "run.json").write_text(json.dumps({**meta, "n_pruned": 3}))
    # it said "no row reached its threshold" of a run whose three crossings were pruned
    with pytest.raises(InputError, match=r"no events to review \(3 crossed the threshold and were pruned as "
                                         r"noise; fit with --prune 0 to keep them\)"):
        create_app(tmp_path / "run", TOKEN)


def test_an_event_with_a_non_finite_peak_is_left_out_not_fatal(run: Path, tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """A NaN peak_score stopped the server with an SQL NOT NULL error (inf: "anomaly contains NaN"); it is left
    out with one warning naming events.csv, as a table's non-finite score is, and a repeated event keeps its
    first row."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("review.sqlite*"))
    with open(copy / "events.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    header, events = rows[0], rows[1:]
    peak = header.index("peak_score")
    events[0][peak], events[1][peak] = "nan", "inf"
    with open(copy / "events.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([header, *events, events[2]])  # the third event twice
    with caplog.at_level("WARNING", logger="normalcy"), TestClient(create_app(copy, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        data = c.get("/api/items", params={"limit": 100}).json()
        assert data["n_items"] == len(events) - 2
        assert all(np.isfinite(it["score"]) for it in data["items"])
        assert c.post(f"/api/items/{data['items'][0]['id']}/label", json={"label": "normal"}).status_code == 200
    assert "2 event(s) with a non-finite peak_score left out" in caplog.text and "events.csv" in caplog.text
    assert "1 repeated event(s)" in caplog.text
    for row in events:
        row[peak] = "nan"
    with open(copy / "events.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([header, *events])
    with pytest.raises(InputError, match=r"events.csv: no events to review \(every peak_score is NaN or infinite\)"):
        create_app(copy, TOKEN)


def test_crafted_thresholds_neither_stop_serve_nor_fail_a_picture(run: Path, tmp_path: Path) -> None:
    """A run folder edited by hand (predict writes none of these): a peak over a threshold near 0 (1e308 over
    1e-308) ranked as inf, which the ranker refused, and serve did not start; events.csv's NaN or infinite
    threshold failed the picture's request with a ValueError (int() of NaN). The events rank by their peaks
    then, and an event that cannot be drawn gets the card saying it has no picture."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("review.sqlite*"))
    with open(copy / "events.csv", newline="") as fh:
        header, *events = list(csv.reader(fh))
    peak, threshold, plot = (header.index(k) for k in ("peak_score", "threshold", "plot"))
    events[0][peak], events[0][threshold] = "1e308", "1e-308"
    events[1][threshold], events[2][threshold] = "nan", "inf"
    for row in events[:3]:
        row[plot] = ""  # no picture of predict's: serve draws it from the scores
    with open(copy / "events.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([header, *events])

    def pictures() -> list[int]:
        with TestClient(create_app(copy, TOKEN)) as c:
            c.headers["Authorization"] = f"Bearer {TOKEN}"
            items = c.get("/api/items", params={"limit": 100}).json()["items"]
            assert len(items) == len(events) and items[0]["name"].startswith(f"{events[0][0]}: {events[0][1]}")
            return [c.get(it["image_url"]).status_code for it in items]

    assert pictures() == [200] * len(events)
    events[1][threshold] = events[2][threshold] = events[3][threshold]  # finite: the peak over 1e-308 ranks
    with open(copy / "events.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([header, *events])
    for name in ("review.sqlite", "review.sqlite-wal", "review.sqlite-shm"):
        (copy / name).unlink(missing_ok=True)
    assert pictures() == [200] * len(events)


def test_pictures_of_events_rewritten_since_the_start_are_refused(run: Path, tmp_path: Path) -> None:
    """Another predict into the run folder rewrites events.csv and events/000001.png with other events: the page
    showed their pictures under the names of the events it had read. It is a 409 saying to restart."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("review.sqlite*"))
    with TestClient(create_app(copy, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        top = c.get("/api/items", params={"limit": 1}).json()["items"][0]
        assert c.get(top["image_url"]).status_code == 200
        with open(copy / "events.csv", "a") as fh:  # predict wrote other events in
            fh.write("other,1,2,1,9.5,cpu,2,events/000000.png\n")
        r = c.get(top["image_url"])
        assert r.status_code == 409 and "rewritten since the review started" in r.json()["detail"]
        assert c.post(f"/api/items/{top['id']}/label", json={"label": "normal"}).status_code == 200


def test_a_series_run_replaced_while_served_is_read_again(run: Path, tmp_path: Path) -> None:
    """Another predict into the served folder (finish_run puts its run in place): the event pictures were 409
    "restart normalcy serve" for as long as the server ran. The new run is read at the next request; its pictures
    are served and the labels given are kept."""
    from normalcy.runs.format import finish_run

    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("review.sqlite*"))
    with TestClient(create_app(copy, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        top = c.get("/api/items", params={"limit": 1}).json()["items"][0]
        assert c.post(f"/api/items/{top['id']}/label", json={"label": "normal"}).status_code == 200
        staging = tmp_path / ".run.1.partial"
        shutil.copytree(run, staging, ignore=shutil.ignore_patterns("review.sqlite*"))
        finish_run(staging, copy)
        assert c.get(top["image_url"]).status_code == 200
        assert c.get(f"/api/items/{top['id']}").json()["label"] == "normal"


def test_serve_a_series_model_scores_first(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served = []
    monkeypatch.setattr("normalcy.review.server.serve", lambda run_dir, **kw: served.append((run_dir, kw)))
    from normalcy.cli import app

    result = CliRunner().invoke(app, ["serve", str(run.parent / "model"), str(run.parent / "test.csv"), "-o",
                                      str(tmp_path / "review")])
    assert result.exit_code == 0, result.stderr
    assert served and served[0][0] == tmp_path / "review" and (tmp_path / "review" / "events.csv").is_file()
    assert "has no image embeddings" not in result.stderr  # a series run brings its events' features


def test_a_metric_name_with_a_semicolon_stays_one_metric(tmp_path: Path) -> None:
    """events.csv joined an event's metrics with ";", so a metric named ``cpu;user`` came back to the review as
    two metrics, cpu and user. Such names are written escaped and read back whole; plain names read as before."""
    from normalcy.runs.format import join_metrics, split_metrics

    names = ["cpu;user", "mem\\x", "=sum;", "\\;", "plain"]
    assert split_metrics(join_metrics(names)) == ["cpu;user", "mem\\x", "'=sum;", "\\;", "plain"]  # ' : csv_cell
    assert split_metrics("cpu;mem;disk") == ["cpu", "mem", "disk"]  # a cell written before escaping
    rng = np.random.default_rng(0)
    for name, n, spike in (("train.csv", 300, False), ("test.csv", 300, True)):
        X = np.stack([np.sin(2 * np.pi * np.arange(n) / PERIOD + k) for k in range(2)], axis=1)
        X += 0.05 * rng.normal(size=X.shape)
        if spike:
            X[150:156, 0] += 4.0
        with open(tmp_path / name, "w", newline="") as fh:
            csv.writer(fh).writerows([["time", "cpu;user", "mem\\x"]] + [[60 * i, *X[i]] for i in range(n)])
    api.fit(tmp_path / "train.csv", tmp_path / "model", "knn", window=PERIOD, event_gap=0, progress=False)
    api.predict(tmp_path / "model", [tmp_path / "test.csv"], tmp_path / "run")
    events = read_events(tmp_path / "run")
    assert events and events[0].metrics[0] == "cpu;user"
    assert all(set(e.metrics) <= {"cpu;user", "mem\\x"} for e in events)


def test_events_rank_by_peak_over_their_series_threshold(tmp_path: Path) -> None:
    """A set's series have thresholds of their own: the review ranked events by raw peak score, so one series'
    event at 1.26x its threshold came before another's at 1.95x. events.csv now keeps each event's threshold
    and the review ranks by the ratio; a run written before (no threshold column) ranks by the raw peak."""
    from normalcy.runs.format import read_series_items

    head = "series,start,end,peak_time,peak_score,metrics,rows,plot"
    (tmp_path / "events.csv").write_text(f"{head},threshold\nomi-1,1,2,1,3.9,cpu,2,,2.0\nomi-2,1,2,1,5.04,cpu,2,,4.0\n")
    items = read_series_items(tmp_path)
    np.testing.assert_allclose(items.scores, [1.95, 1.26])
    (tmp_path / "events.csv").write_text(f"{head}\nomi-1,1,2,1,3.9,cpu,2,\nomi-2,1,2,1,5.04,cpu,2,\n")
    np.testing.assert_allclose(read_series_items(tmp_path).scores, [3.9, 5.04])
    (tmp_path / "events.csv").write_text(f"{head},threshold\nomi-1,1,2,1,3.9,cpu,2,,x\n")
    with pytest.raises(InputError, match=r"events\.csv:2: peak_score, rows and threshold must be numbers"):
        read_series_items(tmp_path)


def test_an_event_past_the_pictures_predict_draws_is_drawn_from_the_runs_scores(run: Path, tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """predict draws the MAX_EVENT_PLOTS events with the highest peaks only: the others were an empty card, then a
    picture saying they have none. serve now draws each from the run's scores (its score around it, over the
    threshold, as predict draws that panel), kept once drawn; a run whose scores cannot draw it (no
    scores.parquet) keeps the picture saying why. The drawn ones keep predict's."""
    from normalcy.review import state
    from normalcy.runs import format as run_format

    monkeypatch.setattr(run_format, "MAX_EVENT_PLOTS", 3)
    out = tmp_path / "run"
    api.predict(run.parent / "model", [run.parent / "test.csv"], out)
    events = read_events(out)
    assert sum(e.plot is not None for e in events) == 3 and len(events) > 3
    drawn = {Path(e.plot).read_bytes() for e in events if e.plot}
    calls = []
    read = state.series_scores
    monkeypatch.setattr(state, "series_scores", lambda run_dir: (calls.append(run_dir), read(run_dir))[-1])
    with TestClient(create_app(out, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        items = c.get("/api/items", params={"limit": 100}).json()["items"]
        assert len(items) == len(events) and all(i["image_url"] for i in items)
        bodies = [c.get(i["image_url"]) for i in items]
        assert [c.get(i["image_url"]).content for i in items] == [r.content for r in bodies]  # kept, the same
    assert all(r.status_code == 200 and r.headers["content-type"] == "image/png" for r in bodies)
    assert sum(r.content in drawn for r in bodies) == 3 and len(calls) == 1  # the scores read once
    assert len({r.content for r in bodies if r.content not in drawn}) == len(events) - 3  # one picture each
    (out / "scores.parquet").unlink()  # the app answers None with the picture saying why
    assert run_format.series_scores(out) is None and run_format.score_picture(None, events[-1], PERIOD) is None


def test_serve_reads_events_csv_once(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """serve's start read events.csv twice (the items, then the events kept for the page): 154 s and 2.2 GB at
    1,000,000 events. It is read once, and the page shows the same events."""
    from normalcy.review import state
    from normalcy.runs import format as run_format

    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("review.sqlite*"))
    calls: list[Path] = []
    read = run_format.read_events

    def counted(run_dir: Path) -> list:
        calls.append(run_dir)
        return read(run_dir)

    monkeypatch.setattr(run_format, "read_events", counted)
    monkeypatch.setattr(state, "read_events", counted)
    with TestClient(create_app(copy, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        items = c.get("/api/items", params={"limit": 100}).json()["items"]
    assert len(calls) == 1
    events = read(copy)
    assert len(items) == len(events) > 1
    shown = {(it["event"]["series"], it["event"]["start"], it["event"]["metrics"][0]) for it in items}
    assert shown == {(e.series, e.start, e.metrics[0]) for e in events}


def test_events_csv_cells_read_as_written(tmp_path: Path) -> None:
    """read_events reads rows, not dicts, and converts only the cells that need it: guarded cells lose one quote,
    a non-UTF-8 byte shows as U+FFFD, blank lines are skipped, a long row's extra cells are ignored, a file
    without plot or threshold reads as before; a row cut short is one line naming the file and its line (it was
    a TypeError traceback)."""
    head = b"series,start,end,peak_time,peak_score,metrics,rows,plot,threshold\n"
    body = (b"'=host,'-1,''=2,3,4.5,cpu;'=m\\;x,2,events/000001.png,2.0\n"
            b"\n"
            b"h\xffst,5,6,5,1e3,mem,2,,,extra\n")
    (tmp_path / "events.csv").write_bytes(head + body)
    first, second = read_events(tmp_path)
    assert (first.series, first.start, first.end, first.peak_time) == ("=host", "-1", "'=2", "3")
    assert first.metrics == ["cpu", "=m;x"] and (first.peak_score, first.rows, first.threshold) == (4.5, 2, 2.0)
    assert first.plot == str(tmp_path / "events" / "000001.png")
    assert (second.series, second.metrics, second.peak_score, second.plot, second.threshold) == (
        "h\ufffdst", ["mem"], 1000.0, None, None)
    (tmp_path / "events.csv").write_bytes(b"series,start,end,peak_time,peak_score,metrics\nh,1,2,1,3.5,cpu\n")
    (only,) = read_events(tmp_path)
    assert (only.peak_score, only.rows, only.plot, only.threshold) == (3.5, 0, None, None)
    (tmp_path / "events.csv").write_bytes(head + b"h,1,2,1,3.5,cpu,2,,2.0\nh,3,4\n")
    with pytest.raises(InputError, match=r"events\.csv:3: peak_score, rows and threshold must be numbers"):
        read_events(tmp_path)
