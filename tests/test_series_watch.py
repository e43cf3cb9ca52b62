"""``normalcy watch``: a series model run online over CSV rows as they arrive (a file, stdin, a growing
file), one line out per row, the same numbers as ``Stream.run``; bad lines named and skipped, the run
going on; a set of per-series models routed by the series column."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_series_cli import cli, one_line_error, write_long, write_series

from normalcy.api import watch
from normalcy.errors import InputError
from normalcy.series.io import cell_number
from normalcy.series.runs import load_series_model
from normalcy.series.stream import Stream
from normalcy.series.watch import lines


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("watch")
    write_series(root / "train.csv", 600, seed=1, label=False)
    write_series(root / "live.csv", 300, start=600, anomaly=(150, 160), seed=2, label=False)
    r = cli("fit", root / "train.csv", "-o", root / "model")
    assert r.exit_code == 0, r.stderr
    return root


def test_watch_a_file_scores_every_row_as_the_stream_does(fitted: Path) -> None:
    r = cli("watch", fitted / "model", fitted / "live.csv")
    assert r.exit_code == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 300 and list(rows[0]) == ["time", "score", "alarm", "metrics"]
    live = list(csv.DictReader(open(fitted / "live.csv")))
    assert [x["time"] for x in rows] == [x["timestamp"] for x in live]  # the input's own times, in order
    values = np.array([[float(x["cpu"]), float(x["mem"])] for x in live])
    want = Stream(load_series_model(fitted / "model")).run(values)
    np.testing.assert_allclose([float(x["score"]) for x in rows], want.reported, rtol=1e-5, atol=1e-9)
    alarms = [i for i, x in enumerate(rows) if x["alarm"] == "1"]
    assert alarms == list(np.flatnonzero(want.alarm)) and any(150 <= i < 160 for i in alarms)
    first = rows[next(i for i in alarms if 150 <= i < 160)]
    assert first["metrics"].split(";")[0] == "cpu"  # the metric that jumped drove the alarm
    assert "watched 300 rows of 1 series" in r.stderr
    only = cli("watch", fitted / "model", fitted / "live.csv", "--alarms-only")
    assert [x["time"] for x in csv.DictReader(io.StringIO(only.stdout))] == [rows[i]["time"] for i in alarms]



def _with_gaps(fitted: Path, tmp_path: Path) -> Path:
    """live.csv with missing cells: the first row's cpu, four rows of cpu in a row (empty and NaN), a logger's
    'error' in mem; 6 values in all."""
    text = open(fitted / "live.csv").read().splitlines()
    for line, column, cell in ((1, 1, ""), (41, 1, ""), (42, 1, "NaN"), (43, 1, ""), (44, 1, ""), (90, 2, "error")):
        fields = text[line].split(",")
        fields[column] = cell
        text[line] = ",".join(fields)
    (tmp_path / "gaps.csv").write_text("\n".join(text) + "\n")
    return tmp_path / "gaps.csv"


def test_predict_stream_holds_a_missing_value_as_watch_and_the_stream_do(fitted: Path, tmp_path: Path) -> None:
    """predict --stream read the file through the offline reader, which interpolates a missing value from the
    next one (a row still to come) and fills the first rows from the first value; a live stream holds it at
    its column's last value (the training median before any). The replay now holds it too: predict --stream,
    watch and Stream.run score the same file alike row by row, and say the held values alike."""
    gaps = _with_gaps(fitted, tmp_path)
    rows = list(csv.DictReader(open(gaps)))
    values = np.array([[cell_number(x["cpu"]), cell_number(x["mem"])] for x in rows])
    want = Stream(load_series_model(fitted / "model")).run(values)
    r = cli("predict", fitted / "model", gaps, "-o", tmp_path / "run", "--stream")
    assert r.exit_code == 0, r.stderr
    got = np.array([float(x["score"]) for x in csv.DictReader(open(tmp_path / "run" / "scores.csv"))])
    np.testing.assert_allclose(got, want.score, rtol=1e-5, atol=1e-9)  # interpolated: 290 rows of 300 differed, by up to 0.87
    assert "gaps.csv: 6 missing or non-finite value(s) held at their column's last value (cpu 5, mem 1)" in r.stderr
    w = cli("watch", fitted / "model", gaps)
    assert w.exit_code == 0, w.stderr
    np.testing.assert_allclose([float(x["score"]) for x in csv.DictReader(io.StringIO(w.stdout))], want.reported,
                               rtol=1e-5, atol=1e-9)
    assert "6 value(s) held at their column's last value" in w.stderr
    offline = cli("predict", fitted / "model", gaps, "-o", tmp_path / "offline")  # without --stream: as documented
    assert "6 missing or non-finite value(s) interpolated linearly along time (cpu 5, mem 1)" in offline.stderr


def test_a_stream_holds_its_first_missing_values_at_the_training_median(fitted: Path) -> None:
    det = load_series_model(fitted / "model")
    stream = Stream(det)
    first = np.array([[np.nan, np.nan], [np.nan, 0.5], [np.inf, np.nan]])
    np.testing.assert_array_equal(stream.held(first), [det.mean_, [det.mean_[0], 0.5], [det.mean_[0], 0.5]])
    assert stream.filled == 5


def test_predict_stream_draws_the_values_it_held(fitted: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """predict --stream scored held values but its report (and event pictures) drew the reader's interpolated
    ones, which the stream never saw. The run's series now carries the values it scored; without --stream the
    interpolated ones, which that run scores."""
    import normalcy.api as api

    gaps = _with_gaps(fitted, tmp_path)
    rows = list(csv.DictReader(open(gaps)))
    values = np.array([[cell_number(x["cpu"]), cell_number(x["mem"])] for x in rows])
    det = load_series_model(fitted / "model")
    held = Stream(det).held(values)
    drawn: list[np.ndarray] = []
    write = api.write_series_run

    def kept(folder: Path, files: object, parts: list, *args: object, **kwargs: object) -> object:
        drawn.extend(p.series.values for p in parts)
        return write(folder, files, parts, *args, **kwargs)

    monkeypatch.setattr(api, "write_series_run", kept)
    api.predict(fitted / "model", gaps, tmp_path / "run", stream=True, report=False, progress=False)
    api.predict(fitted / "model", gaps, tmp_path / "offline", report=False, progress=False)
    streamed, offline = drawn
    np.testing.assert_array_equal(streamed, held)  # row 0's cpu the training median, rows 40-43 row 39's
    assert not np.isclose(offline[41, 0], held[41, 0])  # interpolated towards row 44's cpu, as that run scored
    assert np.isfinite(offline).all()


def test_a_stream_numbers_the_row_of_its_first_held_value_from_1(fitted: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """The stream's warning said "row 40" of the 41st data row, which the reader's notes (and a spreadsheet)
    call row 41: both number data rows from 1 now."""
    stream = Stream(load_series_model(fitted / "model"))
    stream.run(np.zeros((40, 2)))
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        stream.held(np.array([[0.0, 0.0], [0.0, np.nan]]))
    assert "(row 42, column 'mem') is held" in caplog.text


def test_a_replay_refuses_rows_the_reader_sorted_or_merged(fitted: Path, tmp_path: Path) -> None:
    """A file's reader sorts rows by time and keeps the last row of a repeated time: rows still to come, which a
    stream cannot see (watch scores them in the order they come, saying each). predict --stream replayed the
    sorted rows; it now refuses such a file in one line naming the first such row, the other files going on."""
    from normalcy.series.runs import in_file_order, read_series_file
    text = open(fitted / "live.csv").read().splitlines()
    text[7], text[8] = text[8], text[7]  # data row 8 goes back
    text[21] = text[20].split(",")[0] + "," + text[21].split(",", 1)[1]  # data row 21 repeats row 20's time
    (tmp_path / "unsorted.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(InputError, match=r"unsorted.csv: 1 row\(s\) whose time goes back and 1 row\(s\) repeating a "
                                         r"time \(the first: row 8\); a stream scores rows in the order they come"):
        in_file_order(read_series_file(tmp_path / "unsorted.csv", None, None).series[0])
    in_file_order(read_series_file(fitted / "live.csv", None, None).series[0])  # in order: nothing to say
    r = cli("predict", fitted / "model", tmp_path / "unsorted.csv", fitted / "live.csv", "-o", tmp_path / "run",
            "--stream")
    assert r.exit_code == 0, r.stderr
    skipped = (tmp_path / "run" / "skipped.csv").read_text()
    assert "unsorted.csv" in skipped and "whose time goes back" in skipped and "scored 300 rows" in r.stderr


def test_a_metric_name_with_a_semicolon_stays_one_name_in_the_metrics_field(fitted: Path, tmp_path: Path) -> None:
    """The metrics field joined names with ";" unescaped, so "cpu;user" read as two metrics; it is escaped
    as events.csv escapes it, and runs.format.split_metrics reads it back whole."""
    from normalcy.runs.format import split_metrics
    for name in ("train.csv", "live.csv"):
        text = (fitted / name).read_text().splitlines()
        (tmp_path / name).write_text("\n".join([text[0].replace("cpu", '"cpu;user"')] + text[1:]) + "\n")
    assert cli("fit", tmp_path / "train.csv", "-o", tmp_path / "m", "-d", "knn").exit_code == 0
    r = cli("watch", tmp_path / "m", tmp_path / "live.csv", "--alarms-only")
    assert r.exit_code == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert rows and split_metrics(rows[0]["metrics"])[0] == "cpu;user"

def test_bad_lines_are_named_and_skipped_and_the_run_goes_on(fitted: Path, caplog) -> None:
    text = open(fitted / "live.csv").read().splitlines()
    text[5] = text[5] + ",extra"  # line 6: a field too many
    head, cpu, mem = text[9].split(",")
    text[9] = f"{head},oops,{mem}"  # line 10: not a number
    text[12] = ""  # a blank line: nothing
    out = io.StringIO()
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        s = watch(load_series_model(fitted / "model"), io.StringIO("\n".join(text) + "\n"), out=out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(rows) == 298 and s.rows == 298 and s.skipped == 1 and s.held == 1  # 300, a blank, a skip
    assert "input, line 6: 4 field(s), the header has 3: skipped" in caplog.text
    assert "input, line 10: cpu is 'oops', not a number: held at its last value" in caplog.text


def test_the_header_repeated_quoted_or_spaced_is_no_row(fitted: Path, caplog) -> None:
    """A feed restarted by another writer repeats its header quoted ("timestamp","cpu","mem") or spaced: only
    the header as first written was passed over; the others were scored as a row of held values (a row out
    named "timestamp", one more row in every window after it), with three warnings each."""
    text = open(fitted / "live.csv").read().splitlines()[:41]
    text[20:20] = ['"timestamp","cpu","mem"', "timestamp, cpu ,mem"]
    out = io.StringIO()
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        s = watch(load_series_model(fitted / "model"), io.StringIO("\n".join(text) + "\n"), out=out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(rows) == s.rows == 40 and s.held == 0 and "timestamp" not in [r["time"] for r in rows]
    assert caplog.text == ""


def test_a_header_without_the_model_columns_is_one_line(fitted: Path, tmp_path: Path) -> None:
    (tmp_path / "other.csv").write_text("timestamp,cpu,disk\n1,2,3\n")
    line = one_line_error(cli("watch", fitted / "model", tmp_path / "other.csv"))
    assert "other.csv: the header lacks the model's column(s) ['mem']" in line
    (tmp_path / "upper.csv").write_text("timestamp,cpu,MEM\n1,2,3\n")  # pointed at, as predict does
    assert line.replace("other.csv", "upper.csv").replace("'disk'", "'MEM'") + (
        " (names are matched exactly: did you mean 'MEM'?)") == one_line_error(cli("watch", fitted / "model",
                                                                                  tmp_path / "upper.csv"))
    line = one_line_error(cli("watch", fitted / "train.csv", tmp_path / "other.csv"))
    assert "not a series model" in line
    (tmp_path / "rows.parquet").write_bytes(b"PAR1")
    assert "watch reads CSV lines" in one_line_error(cli("watch", fitted / "model", tmp_path / "rows.parquet"))
    assert "no such file" in one_line_error(cli("watch", fitted / "model", tmp_path / "nothing.csv"))


def test_blank_lines_before_the_header_and_names_given_twice(fitted: Path) -> None:
    """A blank first line was the header ("the header lacks the model's column(s) ['cpu', 'mem'] (it has [])"),
    though fit reads past it; a name given twice ("timestamp,cpu,cpu,mem") was taken at its first column,
    where fit and predict refuse the file naming it."""
    text = open(fitted / "live.csv").read()
    out, want = io.StringIO(), io.StringIO()
    watch(fitted / "model", io.StringIO(text), out=want)
    assert watch(fitted / "model", io.StringIO("\n\r\n" + text), out=out).rows == 300
    assert out.getvalue() == want.getvalue()
    with pytest.raises(InputError, match=r"input: no header line"):
        watch(fitted / "model", io.StringIO("\n\n"), out=io.StringIO())
    with pytest.raises(InputError, match=r"column name 'cpu' is given twice \(columns 2 and 3\); name each"):
        watch(fitted / "model", io.StringIO("timestamp,cpu,cpu,mem\n1,2,3,4\n"), out=io.StringIO())
    assert watch(fitted / "model", io.StringIO(text.replace("\n", ",,\n")), out=io.StringIO()).rows == 300


def test_a_column_the_model_lacks_is_said(fitted: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A feed's column the model was not fitted on was left out without a word; predict notes it, and so does
    watch now, once, at the header (the time column is no such column)."""
    head, *rows = open(fitted / "live.csv").read().splitlines()
    feed = "\n".join([head + ",disk"] + [r + ",1" for r in rows]) + "\n"
    with caplog.at_level(logging.INFO, logger="normalcy"):
        s = watch(fitted / "model", io.StringIO(feed), out=io.StringIO())
    assert s.rows == 300 and s.skipped == 0
    assert caplog.text.count("left out") == 1 and "input: column(s) ['disk'] left out, not scored: not in the " \
        "model" in caplog.text


def test_a_time_column_named_in_other_case_is_pointed_at(fitted: Path) -> None:
    """--time-column Timestamp for a header's 'timestamp' said only "no time column 'Timestamp' in the header
    [...]"; it says which name was meant, as fit and tables do."""
    line = one_line_error(cli("watch", fitted / "model", fitted / "live.csv", "--time-column", "Timestamp"))
    assert "no time column 'Timestamp' (names are matched exactly: did you mean 'timestamp'?)" in line


def test_a_set_of_series_routed_by_their_id(tmp_path: Path, caplog) -> None:
    rng = np.random.default_rng(0)
    with open(tmp_path / "train.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["time", "host", "cpu"])
        for i in range(400):
            for k, h in enumerate(("web-1", "web-2")):
                w.writerow([60 * i, h, f"{np.sin(i / (4 + k)) + 0.05 * rng.normal():.4f}"])
    assert cli("fit", tmp_path / "train.csv", "-o", tmp_path / "m", "--series-column", "host").exit_code == 0
    feed = "time,host,cpu\n" + "".join(f"{60 * i},{h},{np.sin(i / (4 + k)) + (4 if (h, i) == ('web-2', 450) else 0):.4f}\n"
                                       for i in range(400, 500) for k, h in enumerate(("web-1", "web-2")))
    feed += "30000,db-9,1.0\n"
    out = io.StringIO()
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        s = watch(tmp_path / "m", io.StringIO(feed), out=out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == ["series", "time", "score", "alarm", "metrics"] and len(rows) == 200
    assert s.series == 2 and s.skipped == 1 and "no model for series 'db-9'" in caplog.text
    alarmed = {(x["series"], x["time"]) for x in rows if x["alarm"] == "1"}
    assert ("web-2", str(60 * 450)) in alarmed and not any(h == "web-1" for h, _ in alarmed)


def test_watch_guards_series_and_time_cells_as_events_csv_does(tmp_path: Path) -> None:
    """watch's output guarded its metrics field against spreadsheet formulas (as events.csv) but wrote a series
    id or a time as it came: ``=HYPERLINK(...)`` ran in a spreadsheet opening the saved output."""
    rng = np.random.default_rng(0)
    with open(tmp_path / "train.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["time", "host", "cpu"])
        for i in range(200):
            w.writerow([60 * i, "=HYPERLINK(1)", f"{np.sin(i / 4) + 0.05 * rng.normal():.4f}"])
    assert cli("fit", tmp_path / "train.csv", "-o", tmp_path / "m", "--series-column", "host").exit_code == 0
    out = io.StringIO()
    watch(tmp_path / "m", io.StringIO('time,host,cpu\n12000,"=HYPERLINK(1)",0.5\n'), out=out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [(x["series"], x["time"]) for x in rows] == [("'=HYPERLINK(1)", "12000")]


def test_follow_a_growing_file_until_idle(fitted: Path, tmp_path: Path) -> None:
    text = open(fitted / "live.csv").read()
    head, rest = text[:2000], text[2000:]
    path = tmp_path / "growing.csv"
    path.write_text(head)  # ends inside a line: that line waits for its end

    def grow() -> None:
        time.sleep(0.5)
        with open(path, "a") as fh:
            fh.write(rest)

    threading.Thread(target=grow).start()
    out = io.StringIO()
    s = watch(fitted / "model", path, out=out, follow=True, idle=1.5)
    assert s.rows == 300 and s.skipped == 0
    assert len(list(csv.DictReader(io.StringIO(out.getvalue())))) == 300


def test_save_goes_on_from_what_was_learned(fitted: Path, tmp_path: Path) -> None:
    """Watching the first half with --save, then the second half from the saved model: the saved model has
    learned every row of the first half, and goes on scoring as a watch that never stopped does."""
    text = open(fitted / "live.csv").read().splitlines()
    first, second = "\n".join(text[:151]) + "\n", "\n".join(text[:1] + text[151:]) + "\n"
    whole, a, b, fresh = io.StringIO(), io.StringIO(), io.StringIO(), io.StringIO()
    watch(fitted / "model", io.StringIO("\n".join(text) + "\n"), out=whole)
    watch(fitted / "model", io.StringIO(first), out=a, save=tmp_path / "learned")
    watch(tmp_path / "learned", io.StringIO(second), out=b)
    watch(fitted / "model", io.StringIO(second), out=fresh)
    before, after = load_series_model(fitted / "model"), load_series_model(tmp_path / "learned")
    assert after.tail.count == before.tail.count + 150  # the calibration followed all 150 rows
    assert sum(len(m.inner.bank_ if hasattr(m, "inner") else m.bank_) for m in after.members) > sum(
        len(m.inner.bank_ if hasattr(m, "inner") else m.bank_) for m in before.members)  # the members learned
    scores = {k: np.array([float(x["score"]) for x in csv.DictReader(io.StringIO(v.getvalue()))])
              for k, v in (("whole", whole), ("a", a), ("b", b), ("fresh", fresh))}
    np.testing.assert_array_equal(scores["a"], scores["whole"][:150])
    late = slice(40, None)  # after the second half's first windows (no past given) and quiet period
    gap_saved = np.abs(scores["b"][late] - scores["whole"][150:][late]).mean()
    gap_fresh = np.abs(scores["fresh"][late] - scores["whole"][150:][late]).mean()
    assert gap_saved < gap_fresh
    line = one_line_error(cli("watch", fitted / "model", fitted / "live.csv", "--save", fitted / "model"))
    assert "is the model being watched" in line
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep")
    assert "not a series model folder" in one_line_error(
        cli("watch", fitted / "model", fitted / "live.csv", "--save", tmp_path / "notes"))


def _watched(model: Path, lines: list[str], save: Path | None = None) -> np.ndarray:
    out = io.StringIO()
    watch(model, io.StringIO("\n".join(lines) + "\n"), out=out, save=save)
    return np.array([float(x["score"]) for x in csv.DictReader(io.StringIO(out.getvalue()))])


@pytest.mark.parametrize(("detector", "split"), [("knn", 128), ("knn", 150), ("auto", 128), ("auto", 150)])
def test_a_watch_resumed_from_its_save_scores_as_one_that_never_stopped(fitted: Path, tmp_path: Path,
                                                                         detector: str, split: int) -> None:
    """The save kept the model but not the stream: the recent rows (the next rows' context) and a plain
    detector's calibration were lost, so a resumed knn scored its first 20 rows 0 and missed the anomaly at
    row 150, right after the restart. They are saved with the model now: saved at a learning point (every 128
    rows), the resumed scores are the uninterrupted ones. Between two, the save has the detector learn the rows
    since the last one early (the saved model has learned every row), which moves the scores a little until the
    next learning point (here: knn not at all, auto by under 1e-3)."""
    model = fitted / "model"
    if detector == "knn":
        model = tmp_path / "knn"
        assert cli("fit", fitted / "train.csv", "-o", model, "-d", "knn").exit_code == 0
    text = open(fitted / "live.csv").read().splitlines()
    whole = _watched(model, text)
    first = _watched(model, text[:split + 1], save=tmp_path / "learned")
    second = _watched(tmp_path / "learned", text[:1] + text[split + 1:])
    atol = 2e-3 if split % 128 else 1e-8
    np.testing.assert_allclose(np.concatenate([first, second]), whole, rtol=1e-5, atol=atol)
    assert second[150 - split:160 - split].max() >= 0.3  # the anomaly right after the restart is found
    meta = json.loads((tmp_path / "learned" / "model.json").read_text())
    assert meta["stream"]["t"] == split and (meta["stream"]["calib_count"] is None) == (detector == "auto")


def test_a_model_saved_before_streams_were_saved_loads(fitted: Path, tmp_path: Path) -> None:
    """A model.json without ``stream`` (saved by an older normalcy) loads, and its stream starts afresh."""
    shutil.copytree(fitted / "model", tmp_path / "old")
    assert "stream" not in json.loads((tmp_path / "old" / "model.json").read_text())  # as fit wrote it before
    det = load_series_model(tmp_path / "old")
    assert det.stream_state is None and Stream(det).t == 0


@pytest.mark.parametrize(("tensor", "value", "says"), [
    ("stream.rows", np.zeros((3, 5)), "tensor 'stream.rows' has shape (3, 5), expected (?, 2)"),
    ("stream.last_raw", np.array([np.nan, 1.0]), "tensor 'stream.last_raw' has 1 NaN or infinite value(s)"),
    ("stream.rows", np.zeros((100000, 2)), "tensor 'stream.rows' has 100000 rows, expected fewer than the context"),
    ("stream.extra", np.zeros(2), "unexpected tensor 'stream.extra'"),
    ("", None, "tensor 'stream.last_raw' of a stream, but"),  # model.json's stream taken out
])
def test_a_crafted_stream_state_is_one_line(fitted: Path, tmp_path: Path, tensor: str,
                                            value: np.ndarray | None, says: str) -> None:
    """A saved stream state is read as every tensor of a model is: checked, one line naming the file."""
    from safetensors.torch import load_file, save_file
    _watched(fitted / "model", open(fitted / "live.csv").read().splitlines()[:101], save=tmp_path / "m")
    if value is None:
        meta = json.loads((tmp_path / "m" / "model.json").read_text())
        (tmp_path / "m" / "model.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "stream"}))
    else:
        state = load_file(str(tmp_path / "m" / "model.safetensors"))
        state[tensor] = torch.from_numpy(value)
        save_file(state, str(tmp_path / "m" / "model.safetensors"))
    line = one_line_error(cli("watch", tmp_path / "m", fitted / "live.csv"))
    assert str(tmp_path / "m" / "model.safetensors") in line and says in line, line


def test_a_spreadsheet_semicolon_feed_with_a_byte_order_mark(fitted: Path) -> None:
    text = open(fitted / "live.csv").read()
    out = io.StringIO()
    s = watch(fitted / "model", io.StringIO("\ufeff" + text.replace(",", ";")), out=out)
    want = io.StringIO()
    watch(fitted / "model", io.StringIO(text), out=want)
    assert s.rows == 300 and s.skipped == 0 and out.getvalue() == want.getvalue()
    # seconds written with a decimal comma are times, as fit reads them: none said to be unreadable
    rows = [line.split(";", 1)[1] for line in text.replace(",", ";").splitlines()[1:]]
    feed = "timestamp;cpu;mem\n" + "".join(f"{i * 0.5:.1f};{r}\n".replace(".", ",", 1) for i, r in enumerate(rows))
    s = watch(fitted / "model", io.StringIO(feed), out=io.StringIO())
    assert s.rows == 300 and s.problems == {}


def test_a_numpy_savetxt_header_is_read_as_fit_reads_it(fitted: Path, caplog: pytest.LogCaptureFixture) -> None:
    """numpy.savetxt writes its header as a comment ("# timestamp,cpu,mem", a space its own separator), which
    fit reads the names from: watch read a column '# timestamp', missed the time column and numbered the rows."""
    text = open(fitted / "live.csv").read()
    want = io.StringIO()
    watch(fitted / "model", io.StringIO(text), out=want)
    for feed in ("# " + text, "# a note\n# " + text + "# end\n", "# a note\n" + text, "# " + text.replace(",", " ")):
        out = io.StringIO()
        s = watch(fitted / "model", io.StringIO(feed), out=out)
        assert s.rows == 300 and s.skipped == 0 and out.getvalue() == want.getvalue(), feed[:40]
    caplog.set_level(logging.WARNING, logger="normalcy")
    head, first, *_ = text.splitlines()
    s = watch(fitted / "model", io.StringIO(f"# a note\n# {head}\n{first}\n1,2\n"), out=io.StringIO())
    assert s.rows == 1 and s.skipped == 1 and "input, line 4: 2 field(s), the header has 3" in caplog.text


def test_cells_read_as_fit_reads_them(fitted: Path) -> None:
    """A decimal comma in a semicolon feed, and true/false, are numbers to watch as to fit."""
    text = open(fitted / "live.csv").read().splitlines()
    head, rows = text[0].replace(",", ";"), [r.split(",") for r in text[1:]]
    feed = "\n".join([head] + [f"{t};{c.replace('.', ',')};{m}" for t, c, m in rows]) + "\n"
    out, want = io.StringIO(), io.StringIO()
    s = watch(fitted / "model", io.StringIO(feed), out=out)
    watch(fitted / "model", io.StringIO("\n".join(text) + "\n"), out=want)
    assert s.held == 0 and out.getvalue() == want.getvalue()
    out = io.StringIO()  # a tab feed likewise (fit reads 1,5 in a tab file as 1.5; watch held it as text)
    s = watch(fitted / "model", io.StringIO(feed.replace(";", "\t")), out=out)
    assert s.held == 0 and out.getvalue() == want.getvalue()
    assert [cell_number(t) for t in ("True", "false", " 2.5 ", "", "n/a")][:3] == [1.0, 0.0, 2.5]
    assert np.isnan(cell_number("")) and np.isnan(cell_number("n/a")) and cell_number("1,5", comma=True) == 1.5
    grouped = "\n".join([text[0]] + [f'{t},"1,{round(float(c) * 100) % 1000:03d}",{m}' for t, c, m in rows]) + "\n"
    plain = "\n".join([text[0]] + [f"{t},1{round(float(c) * 100) % 1000:03d},{m}" for t, c, m in rows]) + "\n"
    out, want = io.StringIO(), io.StringIO()
    s = watch(fitted / "model", io.StringIO(grouped), out=out)  # thousands separators: numbers, as fit reads them
    watch(fitted / "model", io.StringIO(plain), out=want)
    assert s.held == 0 and out.getvalue() == want.getvalue()


def test_a_model_fitted_on_a_header_with_spaces_watches_its_own_file(fitted: Path, tmp_path: Path) -> None:
    """A header "timestamp, cpu, mem" fits a model of ' cpu' and ' mem'; watch strips the header's names,
    so it refused the very file the model was fitted on ("the header lacks the model's column(s)")."""
    for name in ("train.csv", "live.csv"):
        text = (fitted / name).read_text().split("\n", 1)
        (tmp_path / name).write_text(text[0].replace(",", ", ") + "\n" + text[1])
    assert cli("fit", tmp_path / "train.csv", "-o", tmp_path / "model").exit_code == 0
    out = io.StringIO()
    s = watch(tmp_path / "model", tmp_path / "live.csv", out=out)
    assert s.rows == 300 and s.skipped == 0


def test_lines_keep_a_partial_line_until_its_end() -> None:
    assert list(lines(io.StringIO("a,b\r\n1,2\n3,"))) == ["a,b", "1,2", "3,"]


def test_no_learn_still_calibrates_a_plain_detector(tmp_path: Path) -> None:
    """--no-learn keeps the model as fitted; a plain detector's calibration, which only the stream's own
    scores can set, still follows them (it stayed in its warm-up, every score 0, for ever)."""
    write_series(tmp_path / "train.csv", 600, seed=1, label=False)
    assert cli("fit", tmp_path / "train.csv", "-o", tmp_path / "m", "-d", "knn").exit_code == 0
    det = load_series_model(tmp_path / "m")
    rng = np.random.default_rng(0)
    t = np.arange(600, 900)
    rows = np.column_stack([np.sin(t * 2 * np.pi / 30), np.cos(t * 2 * np.pi / 30)]) + 0.05 * rng.normal(size=(300, 2))
    rows[200, 0] += 5.0
    stream = Stream(det, learn=False)
    scores = np.array([stream.update(r) for r in rows])
    assert scores[200] >= 0.3 and scores[:190].max() < 0.3


def test_a_header_that_is_not_utf8_is_one_line(fitted: Path) -> None:
    out = io.StringIO()
    with pytest.raises(InputError, match="input: the header line is not UTF-8"):  # a stream without a name
        watch(fitted / "model", io.StringIO("timestamp,temp\udce9,mem\n1,2,3\n"), out=out)


def test_rows_whose_time_goes_back_or_repeats_are_said(fitted: Path, caplog) -> None:
    """A file's reader sorts rows and drops repeated times, with a note; a stream scores rows as they come,
    and now says so where their times go back or repeat (it said nothing)."""
    text = open(fitted / "live.csv").read().splitlines()
    text[7], text[8] = text[8], text[7]  # lines 8 and 9 swapped: line 9's time goes back
    text[20] = text[19].split(",")[0] + "," + text[20].split(",", 1)[1]  # line 21 repeats line 20's time
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        s = watch(load_series_model(fitted / "model"), io.StringIO("\n".join(text) + "\n"), out=io.StringIO())
    assert s.rows == 300 and s.problems == {"time back": 1, "time repeated": 1}
    assert "input, line 9: time" in caplog.text and "is before the row before it" in caplog.text
    assert "input, line 21: time" in caplog.text and "repeats the row before it" in caplog.text
    text[30] = "garbage," + text[30].split(",", 1)[1]  # line 31: no time (scored silently), said
    text[31] = "," + text[31].split(",", 1)[1]  # line 32: an empty time
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        s = watch(load_series_model(fitted / "model"), io.StringIO("\n".join(text) + "\n"), out=io.StringIO())
    assert s.rows == 300 and s.problems == {"time back": 1, "time repeated": 1, "time unreadable": 2}
    assert "input, line 31: time 'garbage' is neither a number nor an ISO 8601 date" in caplog.text
    assert "daylight saving" not in caplog.text  # a minute back in UTC: no clock change
    # local times without a zone going back (under) an hour: the end of daylight saving time, said so
    local = ["timestamp,cpu,mem", "2024-10-27T02:45:00,0,1", "2024-10-27T02:00:00,0,1"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        watch(load_series_model(fitted / "model"), io.StringIO("\n".join(local) + "\n"), out=io.StringIO())
    assert "line 3: time '2024-10-27T02:00:00' is before the row before it" in caplog.text
    assert "local times without a zone repeat an hour where daylight saving time ends" in caplog.text


class _ClosedAfter(io.StringIO):
    """An output whose reader goes after ``n`` lines (a pipe into `head -n`)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def write(self, text: str) -> int:
        if self.getvalue().count("\n") >= self.n:
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)


def test_an_output_closed_by_its_reader_ends_the_watch_and_the_model_is_saved(fitted: Path, tmp_path: Path) -> None:
    """`normalcy watch ... --save learned/ | head -3` stopped with exit code 1, nothing said and nothing saved."""
    s = watch(fitted / "model", fitted / "live.csv", out=_ClosedAfter(3), save=tmp_path / "learned")
    assert s.closed and s.rows <= 3
    assert load_series_model(tmp_path / "learned").tail.count > load_series_model(fitted / "model").tail.count


def test_sigterm_ends_the_watch_as_ctrl_c_does(fitted: Path, tmp_path: Path) -> None:
    """A watch stopped by SIGTERM (a service stopped) died at once, its --save never written."""
    path = tmp_path / "live.csv"
    path.write_text("\n".join(open(fitted / "live.csv").read().splitlines()[:50]) + "\n")
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
    before = signal.getsignal(signal.SIGTERM)
    s = watch(fitted / "model", path, out=io.StringIO(), follow=True, idle=20, save=tmp_path / "learned")
    assert s.rows == 49 and (tmp_path / "learned" / "model.json").is_file()
    assert signal.getsignal(signal.SIGTERM) is before  # the handler before is put back


@pytest.mark.parametrize("how", ["truncated", "rotated"])
def test_a_followed_file_truncated_or_rotated_is_read_on(fitted: Path, tmp_path: Path, how: str) -> None:
    """Following a log that was truncated in place or replaced at its path, the watch read nothing more (for
    ever, without --idle): it now reads the new content from its start, its repeated header skipped."""
    text = open(fitted / "live.csv").read().splitlines(keepends=True)
    path = tmp_path / "live.csv"
    path.write_text("".join(text[:101]))

    def restart() -> None:
        time.sleep(0.6)
        if how == "rotated":
            path.rename(tmp_path / "live.csv.1")
        path.write_text("".join(text[:1] + text[101:111]))

    threading.Thread(target=restart).start()
    out = io.StringIO()
    s = watch(fitted / "model", path, out=out, follow=True, idle=1.5)
    assert s.rows == 110 and s.skipped == 0 and not s.problems
    assert [x["time"] for x in csv.DictReader(io.StringIO(out.getvalue()))][-10:] == [
        line.split(",")[0] for line in text[101:111]]


def test_a_line_over_the_csv_field_limit_is_skipped(fitted: Path, caplog) -> None:
    """A field of more than 131072 characters (a garbled feed) ended the watch with the csv module's traceback
    and nothing saved; the line is now named and skipped, and a header like it is one line of error."""
    text = open(fitted / "live.csv").read().splitlines()
    text[5] = text[5].split(",")[0] + "," + "1" * 200_000 + ",0.5"
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        s = watch(fitted / "model", io.StringIO("\n".join(text) + "\n"), out=io.StringIO())
    assert s.rows == 299 and s.skipped == 1 and s.problems == {"unreadable": 1}
    assert "input, line 6: not a CSV row (field larger than field limit" in caplog.text
    with pytest.raises(InputError, match="input: the header line is not a CSV row"):
        watch(fitted / "model", io.StringIO('timestamp,"' + "x" * 200_000 + '",cpu,mem\n1,2,3\n'), out=io.StringIO())


def test_a_line_over_max_line_is_read_past_not_kept(fitted: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A feed without line ends (binary noise into the pipe) was held whole in memory, however long; a line
    over MAX_LINE characters is read past, keeping its start only, and skipped; the lines after it scored."""
    from normalcy.series import watch as watch_module

    monkeypatch.setattr(watch_module, "MAX_LINE", 64)
    got = list(lines(io.StringIO("a,b\n" + "x" * 1000 + "\n1,2\n" + "y" * 100)))
    assert got[0] == "a,b" and isinstance(got[1], watch_module.Overlong) and len(got[1]) <= 100
    assert got[2] == "1,2" and isinstance(got[3], watch_module.Overlong)
    text = open(fitted / "live.csv").read().splitlines()
    text[5] = text[5] + "9" * 200
    s = watch(fitted / "model", io.StringIO("\n".join(text) + "\n"), out=io.StringIO())
    assert s.rows == 299 and s.problems == {"unreadable": 1}
    with pytest.raises(InputError, match="input: the header line is over 64 characters"):
        watch(fitted / "model", io.StringIO("t" * 100 + "\n1,2,3\n"), out=io.StringIO())


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_a_named_pipe_is_watched(fitted: Path, tmp_path: Path) -> None:
    """`normalcy watch model/ /run/metrics.fifo` (or `<(tail -f log)`, a /dev/fd pipe) said "no such file"."""
    fifo = tmp_path / "feed"
    os.mkfifo(fifo)
    text = open(fitted / "live.csv").read()

    def feed() -> None:
        with open(fifo, "w") as fh:
            fh.write(text)

    threading.Thread(target=feed).start()
    out = io.StringIO()
    assert watch(fitted / "model", fifo, out=out).rows == 300
    want = io.StringIO()
    watch(fitted / "model", io.StringIO(text), out=want)
    assert out.getvalue() == want.getvalue()
    assert "is a folder" in one_line_error(cli("watch", fitted / "model", tmp_path))


def test_lines_of_unknown_series_are_one_kind_of_problem(tmp_path: Path, caplog) -> None:
    """Each unknown series id was a kind of problem of its own: a feed of many logged five lines for each and
    listed every one in the summary. They are counted together, the first line of each of the first five named."""
    long = write_long(tmp_path / "long.csv", ["web-1", "web-2"], n=200)
    assert cli("fit", long, "-o", tmp_path / "m", "--series-column", "host", "-d", "knn", "--window", "8").exit_code == 0
    feed = "time,host,cpu\n" + "".join(f"{60 * i},h{i % 40},0.5\n" for i in range(200)) + "12000,web-1,0.5\n"
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        s = watch(tmp_path / "m", io.StringIO(feed), out=io.StringIO())
    assert s.rows == 1 and s.skipped == 200 and s.problems == {"series not scored": 200}
    assert caplog.text.count("skipped, as its later lines will be") == 5
    assert "no model for series 'h0'" in caplog.text and "later such series are counted, not named" in caplog.text


def test_ever_new_unknown_series_are_not_all_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A feed of ever new ids (a request id, or the time given as --series-column) kept every id with why it has
    no model, for as long as the watch ran: memory grew by a few hundred bytes a line. At most MAX_REFUSED are
    kept; later ones are refused by asking the set again, still skipped and counted, and known series scored."""
    from normalcy.series import watch as watching

    long = write_long(tmp_path / "long.csv", ["web-1", "web-2"], n=200)
    assert cli("fit", long, "-o", tmp_path / "m", "--series-column", "host", "-d", "knn", "--window", "8").exit_code == 0
    monkeypatch.setattr(watching, "MAX_REFUSED", 8)
    w = watching.Watcher(load_series_model(tmp_path / "m"), series_column="host")
    w.header(["time", "host", "cpu"])
    out = [w.row([str(60 * i), f"req-{i}", "0.5"], i + 2) for i in range(50)]
    assert out == [None] * 50 and len(w.refused) == 8
    assert w.summary.skipped == 50 and w.summary.problems == {"series not scored": 50}
    assert w.row(["3000", "web-1", "0.5"], 52) is not None


def test_save_into_a_folder_that_cannot_be_written_is_refused_before_the_watch(fitted: Path, tmp_path: Path,
                                                                              monkeypatch) -> None:
    """--save into a folder that cannot be written (a read-only mount; /proc here, as root writes anywhere
    else) passed, and the save failed when the watch ended (hours of learning lost, a traceback).
    Refused before the watch; a full disk at the end is one line naming the folder."""
    import normalcy.series.base as series_base
    from safetensors import SafetensorError

    with pytest.raises(InputError, match=r"^/proc/self/learned: cannot be created \("):
        watch(fitted / "model", io.StringIO(open(fitted / "live.csv").read()), out=io.StringIO(),
              save="/proc/self/learned")

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(series_base, "save_file", full)
    with pytest.raises(InputError, match=r"learned: cannot write the model \(No space left on device\)$"):
        watch(fitted / "model", io.StringIO(open(fitted / "live.csv").read()), out=io.StringIO(),
              save=tmp_path / "learned")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_in_the_middle_of_a_row_waits_for_the_row_to_end(fitted: Path, tmp_path: Path, monkeypatch,
                                                                  sig: int, ctrl_c: None) -> None:
    """SIGTERM or Ctrl-C stopped a watch wherever it was, most often halfway through a row on a fast feed, and
    --save kept the half: the calibration had followed a row the stream had not counted, or a row learned was
    never written out (its alarm lost), so a watch stopped and resumed again and again drifted from one that
    never stopped. The stop now comes at the end of the row in hand."""
    r = cli("fit", fitted / "train.csv", "-o", tmp_path / "m", "-d", "knn", "--window", "8")
    assert r.exit_code == 0, r.stderr
    real, calls = Stream._calibrated, [0]

    def stopped_here(self, raw):  # the stop comes just after the calibration has followed the 40th row
        got = real(self, raw)
        calls[0] += 1
        if calls[0] == 40:
            os.kill(os.getpid(), sig)
        return got

    monkeypatch.setattr(Stream, "_calibrated", stopped_here)
    out = io.StringIO()
    s = watch(tmp_path / "m", fitted / "live.csv", out=out, save=tmp_path / "learned")
    state = load_series_model(tmp_path / "learned").stream_state
    printed = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert s.rows == len(printed) == state.t == state.calib[2] == 40


def test_a_time_column_found_by_its_values_at_fit_is_the_watch_s_time(tmp_path: Path, caplog) -> None:
    """A single model fitted on a file whose time column was found by its values (epoch seconds named ``ts``,
    no time name) saved no time column: ``watch``, which has only the header to go by, wrote row numbers 1, 2,
    3 for the times and checked no order. The column is saved, as a set's is, and watched as the time."""
    text = write_series(tmp_path / "rows.csv", 300, seed=3, label=False).read_text().splitlines()
    rows = ["ts,cpu,mem"] + [f"{1_700_000_000 + 60 * i},{line.split(',', 1)[1]}" for i, line in enumerate(text[1:])]
    (tmp_path / "train.csv").write_text("\n".join(rows[:201]) + "\n")
    r = cli("fit", tmp_path / "train.csv", "--series", "-d", "knn", "-o", tmp_path / "model")
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "model" / "model.json").read_text())["time_column"] == "ts"
    live = [rows[0], *rows[201:], rows[201]]  # the last line goes back to the first live time
    out = io.StringIO()
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        s = watch(load_series_model(tmp_path / "model"), io.StringIO("\n".join(live) + "\n"), out=out)
    got = [x["time"] for x in csv.DictReader(io.StringIO(out.getvalue()))]
    assert got == [line.split(",")[0] for line in live[1:]] and s.problems == {"time back": 1}



def test_a_plain_detectors_warm_up_is_said_once(fitted: Path, caplog) -> None:
    """A plain detector's stream scores its first rows 0 while it learns its calibration: a watch wrote those
    zeros without a word (predict's replay says it). Said once; auto, calibrated at fit, says nothing."""
    pd = pytest.importorskip("pandas")
    from normalcy.series.registry import create

    t = np.arange(300)
    det = create("knn", window=10).fit(pd.DataFrame({"cpu": np.sin(t / 5), "mem": np.cos(t / 5)}), progress=False)
    feed = "cpu,mem\n" + "".join(f"{np.sin(i / 5):.4f},{np.cos(i / 5):.4f}\n" for i in range(30))
    with caplog.at_level(logging.INFO, logger="normalcy"):
        watch(det, io.StringIO(feed), out=io.StringIO())
        assert caplog.text.count("the first 20 row(s) score 0: a stream of knn learns its score calibration") == 1
        caplog.clear()
        watch(load_series_model(fitted / "model"), io.StringIO(open(fitted / "live.csv").read()[:2000]),
              out=io.StringIO())
    assert "score 0" not in caplog.text
