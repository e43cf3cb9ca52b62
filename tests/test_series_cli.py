"""Series through the command line: the series-or-table rule, fit/predict/eval on a small synthetic series
(ISO dates), one model per series (--series-column, ids that are no safe folder names), a bad file among
good ones, repaired rows still one row each in input order, one ASD server, and the same run on Ray."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import run_together
from normalcy.cli import app
from normalcy.errors import InputError, cli_wording, shortened
from normalcy.evaluation.series_metrics import vus_pr
from normalcy.series.io import read_series
from normalcy.series.runs import (REASON_CHARS, SeriesSet, folder_name, is_series_input, load_series_model,
                                  short_reason)
from test_report import HOSTILE, assert_names_escaped  # tests/ is on sys.path

T0 = datetime(2024, 3, 1, tzinfo=timezone.utc)


def write_series(path: Path, n: int, start: int = 0, anomaly: tuple[int, int] | None = None, seed: int = 0,
                 label: bool = True) -> Path:
    """Two metrics (a sine and a cosine, period 30 rows) a minute apart, ISO 8601 times; cpu jumps by 3 in
    ``anomaly`` (rows, half-open), labelled 1 there."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "cpu", "mem"] + (["label"] if label else []))
        for i in range(start, start + n):
            bad = anomaly is not None and anomaly[0] <= i - start < anomaly[1]
            cpu = np.sin(i * 2 * np.pi / 30) + 0.05 * rng.normal() + (3.0 if bad else 0.0)
            mem = np.cos(i * 2 * np.pi / 30) + 0.05 * rng.normal()
            w.writerow([(T0 + timedelta(minutes=i)).isoformat(), f"{cpu:.4f}", f"{mem:.4f}"]
                       + ([int(bad)] if label else []))
    return path


def write_long(path: Path, ids: list[str], n: int = 300) -> Path:
    """A long file of several series: epoch seconds a minute apart, the series in column host, one metric cpu
    (a sine, each series its own period)."""
    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["time", "host", "cpu"])
        for i in range(n):
            for k, h in enumerate(ids):
                w.writerow([1_700_000_000 + 60 * i, h, f"{np.sin(i / (4 + k)) + 0.05 * rng.normal():.4f}"])
    return path


def cli(*args: str) -> object:
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def one_line_error(result: object) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]  # type: ignore[attr-defined]
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error:"), result.stderr  # type: ignore[attr-defined]
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("series")
    write_series(root / "a" / "train.csv", 600, seed=1)
    write_series(root / "a" / "test.csv", 300, start=600, anomaly=(150, 160), seed=2)
    write_series(root / "b" / "train.csv", 500, seed=3)
    write_series(root / "b" / "test.csv", 240, start=500, anomaly=(100, 106), seed=4)
    return root


@pytest.fixture(scope="module")
def model(data: Path) -> Path:
    r = cli("fit", data / "a" / "train.csv", "-o", data / "model")
    assert r.exit_code == 0, r.stderr
    assert "fitted auto on 600 rows x 2 column(s)" in r.stderr  # auto: the series default
    return data / "model"


def test_the_series_or_table_rule(data: Path, tmp_path: Path) -> None:
    train = data / "a" / "train.csv"
    plain = tmp_path / "plain.csv"
    plain.write_text("a,b\n1,2\n3,4\n")
    assert is_series_input(train)  # a column named timestamp
    assert not is_series_input(train, series=False)  # --table
    assert not is_series_input(plain) and is_series_input(plain, time_column="a") and is_series_input(plain, series=True)
    assert is_series_input(data / "a") and is_series_input(data)  # a series folder, a folder of them
    (tmp_path / "images").mkdir()
    assert not is_series_input(tmp_path / "images") and not is_series_input(tmp_path / "x.npz")
    with pytest.raises(InputError, match="series=False with time_column"):  # --table on the command line
        is_series_input(train, time_column="timestamp", series=False)
    r = cli("fit", train, "-o", tmp_path / "m", "--table")  # the same file as a table: the time is text
    assert r.exit_code == 0 and "fitted ensemble" in r.stderr and "left out of the features: timestamp" in r.stderr
    assert "applies to series only" in one_line_error(cli("fit", plain, "-o", tmp_path / "m2", "--window", "8"))
    assert "--event-gap applies to series only" in one_line_error(cli("fit", plain, "-o", tmp_path / "m2",
                                                                      "--event-gap", "8"))
    assert "does not train: --steps" in one_line_error(cli("fit", train, "-o", tmp_path / "m3", "--steps", "5"))
    # and the other way round: an option only images have is refused, not quietly ignored
    assert "--tune applies to images only, not to series" in one_line_error(cli("fit", train, "-o", tmp_path / "m4",
                                                                                 "--tune"))
    assert "--input-norm applies to images only, not to series" in one_line_error(
        cli("eval", data, "--input-norm", "standard"))
    assert "--image-size applies to images only, not to tables" in one_line_error(
        cli("fit", plain, "-o", tmp_path / "m5", "--image-size", "320"))
    assert not (tmp_path / "m4").exists() and not (tmp_path / "m5").exists()


def test_fit_predict_a_series_with_iso_dates(data: Path, model: Path) -> None:
    test = data / "a" / "test.csv"
    run = data / "run"
    r = cli("predict", model, test, "-o", run)
    assert r.exit_code == 0, r.stderr
    assert "scored 300 rows of 1 series" in r.stderr
    rows = list(csv.DictReader(open(run / "scores.csv")))
    written = [rec["timestamp"] for rec in csv.DictReader(open(test))]
    assert [rec["timestamp"] for rec in rows] == written  # one row per input row, the time as written
    assert list(rows[0]) == ["timestamp", "score", "decision", "threshold"]
    score, thr = np.array([float(x["score"]) for x in rows]), float(rows[0]["threshold"])
    decision = np.array([int(x["decision"]) for x in rows])
    assert decision[150] == 1 and (score[decision == 1] >= thr).all()  # crossings outside kept events are 0
    table = pq.read_table(run / "scores.parquet").to_pydict()
    assert table["timestamp"] == written and np.array_equal(table["score"], score)
    events = list(csv.DictReader(open(run / "events.csv")))
    assert list(events[0]) == ["series", "start", "end", "peak_time", "peak_score", "metrics", "rows", "plot",
                              "threshold"]
    planted = [e for e in events if e["start"] <= written[150] <= e["end"]]
    assert len(planted) == 1 and planted[0]["metrics"].split(";")[0] == "cpu"  # the metric that jumped leads
    assert (run / planted[0]["plot"]).read_bytes()[:4] == b"\x89PNG"
    meta = json.loads((run / "run.json").read_text())
    assert (meta["kind"], meta["n_rows"], meta["n_events"], meta["time_column"]) == ("series", 300, len(events),
                                                                                     "timestamp")
    html = (run / "report.html").read_text()
    assert "<svg" in html and "labelled anomaly" in html and "cpu" in html
    assert (run / "skipped.csv").read_text().splitlines() == ["series,reason"]


def test_a_semicolon_separated_series_predicts_as_the_comma_one(data: Path, model: Path, tmp_path: Path) -> None:
    test = data / "a" / "test.csv"
    semi = tmp_path / "test.csv"
    semi.write_text(test.read_text().replace(",", ";"))
    for source, run in ((test, tmp_path / "comma"), (semi, tmp_path / "semi")):
        r = cli("predict", model, source, "-o", run)
        assert r.exit_code == 0, r.stderr
    assert (tmp_path / "semi" / "scores.csv").read_text() == (tmp_path / "comma" / "scores.csv").read_text()


def test_scores_csv_decisions_follow_the_pruned_events(tmp_path: Path) -> None:
    """A long normal stretch crosses the threshold here and there; pruning drops those events, and scores.csv
    says 0 on their rows, as events.csv does (with --prune 0 every crossing stays an event)."""
    write_series(tmp_path / "train.csv", 600, seed=5)
    write_series(tmp_path / "test.csv", 4000, start=600, anomaly=(2000, 2040), seed=6)
    decided = {}
    for prune in ("0.13", "0"):
        model, run = tmp_path / f"m{prune}", tmp_path / f"run{prune}"
        assert cli("fit", tmp_path / "train.csv", "-o", model, "-d", "knn", "--prune", prune).exit_code == 0
        assert cli("predict", model, tmp_path / "test.csv", "-o", run).exit_code == 0
        rows = list(csv.DictReader(open(run / "scores.csv")))
        times = [r["timestamp"] for r in rows]
        inside = np.zeros(len(rows), bool)
        for e in csv.DictReader(open(run / "events.csv")):
            inside[times.index(e["start"]):times.index(e["end"]) + 1] = True
        decision = np.array([int(r["decision"]) for r in rows])
        assert not decision[~inside].any() and decision.sum() == json.loads((run / "run.json").read_text())["n_anomalous"]
        decided[prune] = decision
    assert decided["0.13"].sum() < decided["0"].sum() and decided["0.13"][2000:2040].any()


def test_repaired_rows_keep_one_row_each_in_input_order(data: Path, model: Path, tmp_path: Path) -> None:
    lines = (data / "a" / "test.csv").read_text().splitlines()
    header, body = lines[0], lines[1:]
    body[10], body[11] = body[11], body[10]  # unsorted
    body.insert(20, body[20])  # a repeated timestamp
    cells = body[30].split(",")
    body[30] = ",".join([cells[0], "", cells[2], cells[3]])  # a missing value
    messy = tmp_path / "messy.csv"
    messy.write_text("\n".join([header] + body) + "\n")
    r = cli("predict", model, messy, "-o", tmp_path / "run")
    assert r.exit_code == 0, r.stderr
    assert "repaired:" in r.stderr and "sorted" in r.stderr and "interpolated" in r.stderr
    ids = [rec["timestamp"] for rec in csv.DictReader(open(tmp_path / "run" / "scores.csv"))]
    assert ids == [b.split(",")[0] for b in body]  # 301 rows: every input row, in the file's order
    notes = json.loads((tmp_path / "run" / "run.json").read_text())["notes"]
    assert len(notes) == 3 and all(n.startswith("messy.csv") for n in notes)


def test_a_bad_file_among_good_ones(data: Path, model: Path, tmp_path: Path) -> None:
    text = tmp_path / "text.csv"
    text.write_text("timestamp,cpu,mem\n" + "".join(f"{i},x{i},1\n" for i in range(40)))
    r = cli("predict", model, data / "a" / "test.csv", tmp_path / "missing.csv", text, data / "b", "-o",
            tmp_path / "run")
    assert r.exit_code == 0, r.stderr
    assert "scored 540 rows of 2 series" in r.stderr
    skipped = list(csv.DictReader(open(tmp_path / "run" / "skipped.csv")))
    assert [s["series"] for s in skipped] == [str(tmp_path / "missing.csv"), str(text)]
    assert "file not found" in skipped[0]["reason"] and "'cpu' is not numeric" in skipped[1]["reason"]
    rows = list(csv.DictReader(open(tmp_path / "run" / "scores.csv")))
    assert list(rows[0])[:2] == ["timestamp", "series"] and {r["series"] for r in rows} == {"a", "b"}
    assert "no series could be scored" in one_line_error(cli("predict", model, text, "-o", tmp_path / "run2"))
    # the model's columns are checked: one missing is an error naming the file; one more is left out with a
    # note (and a hint where it may be an unnamed time column), the model's columns scored
    short = tmp_path / "short.csv"
    short.write_text("timestamp,cpu\n" + "".join(f"{i},1\n" for i in range(40)))
    assert "short.csv: columns ['mem'] of the model are missing" in one_line_error(
        cli("predict", model, short, "-o", tmp_path / "run3"))
    other = tmp_path / "other.csv"
    other.write_text("when,cpu,mem\n" + "".join(f"{i % 7},1,2\n" for i in range(40)))
    r = cli("predict", model, other, "-o", tmp_path / "run4")
    assert r.exit_code == 0 and "scored 40 rows of 1 series" in r.stderr, r.stderr
    notes = json.loads((tmp_path / "run4" / "run.json").read_text())["notes"]
    assert ("other.csv: column(s) ['when'] left out, not scored: not in the model (if one is the time, give "
            "--time-column)") in notes
    # a first column whose values rise strictly (a row index pandas wrote, epoch seconds by another name) or
    # that holds dates is the time, not a metric: every test row would be a value never seen in training
    for name, stamp in (("index", lambda i: str(1000 + i)), ("", lambda i: str(i)),
                        ("when", lambda i: f"2026-01-01T00:{i:02d}:00")):
        other.write_text(f"{name},cpu,mem\n" + "".join(f"{stamp(i)},1,2\n" for i in range(40)))
        r = cli("predict", model, other, "-o", tmp_path / f"run-{name}")
        assert r.exit_code == 0 and "scored 40 rows of 1 series" in r.stderr, r.stderr
        notes = json.loads((tmp_path / f"run-{name}" / "run.json").read_text())["notes"]
        assert any(f"column {name!r} read as the time column" in n for n in notes), notes
        rows = list(csv.DictReader(open(tmp_path / f"run-{name}" / "scores.csv")))
        assert rows[1][list(rows[1])[0]] == stamp(1)
    # a model's own metric is never taken for the time, even where it happens to rise in the file scored
    other.write_text("cpu,mem\n" + "".join(f"{i},2\n" for i in range(40)))
    r = cli("predict", model, other, "-o", tmp_path / "run-ramp")
    assert r.exit_code == 0 and "scored 40 rows of 1 series" in r.stderr, r.stderr
    assert not any("time column" in n for n in json.loads((tmp_path / "run-ramp" / "run.json").read_text())["notes"])


def test_a_compressed_file_is_named_with_what_to_do(tmp_path: Path) -> None:
    """A .csv.gz was fitted as an image folder ("not a folder: x.csv.gz"): each command says it is
    compressed and how to decompress it."""
    packed = tmp_path / "cpu.csv.gz"
    with gzip.open(packed, "wt") as fh:
        fh.write("timestamp,cpu\n" + "".join(f"{60 * i},{i % 7}\n" for i in range(40)))
    hint = "it is compressed: decompress it first (e.g. gunzip cpu.csv.gz)"
    assert hint in one_line_error(cli("fit", packed, "-o", tmp_path / "m"))
    assert hint in one_line_error(cli("fit", packed, "-o", tmp_path / "m", "--time-column", "timestamp"))


def test_one_model_per_series_column(tmp_path: Path) -> None:
    ids = ["web-1", "../evil", "a/b c"]
    long = write_long(tmp_path / "long.csv", ids)
    r = cli("fit", long, "-o", tmp_path / "m", "--series-column", "host", "--window", "12")
    assert r.exit_code == 0 and "on 3 series, one model each" in r.stderr, r.stderr
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    folders = [m["folder"] for m in meta["models"]]
    assert [m["series"] for m in meta["models"]] == ids and meta["time_column"] == "time"
    assert folders[0] == "web-1" and all("/" not in f and not f.startswith(".") for f in folders)
    assert sorted(p.name for p in (tmp_path / "m").iterdir() if p.is_dir()) == sorted(folders)
    loaded = load_series_model(tmp_path / "m")
    assert isinstance(loaded, SeriesSet) and loaded.get("a/b c").window_ == 12
    r = cli("predict", tmp_path / "m", long, "-o", tmp_path / "run")
    assert r.exit_code == 0, r.stderr
    rows = list(csv.DictReader(open(tmp_path / "run" / "scores.csv")))
    assert [x["series"] for x in rows[:6]] == ids * 2 and len(rows) == 900  # the file's own order
    assert len({x["threshold"] for x in rows}) == 3  # each series its own model
    # a crafted set: a folder that leaves the model folder is refused in one line
    meta["models"][1]["folder"] = "../elsewhere"
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    assert "models.1.folder" in one_line_error(cli("predict", tmp_path / "m", long, "-o", tmp_path / "run"))
    assert folder_name("web-1", set()) == "web-1" and folder_name("..", set()).startswith("series-")
    assert folder_name("A", {"a"}) != "A"  # unique case-insensitively


def test_a_sets_fits_say_each_warning_once_naming_the_series(caplog: pytest.LogCaptureFixture) -> None:
    """10,000 short series each logged "knn: the threshold rests on 8 held-out normal row(s)...": 20,000 lines
    that named no series. Each kind of line is now said once, naming its series, then counted."""
    import logging

    from normalcy.series.io import Series
    from normalcy.series.runs import fit_each

    rng = np.random.default_rng(0)
    series = [Series(f"s{k}" if k else "s0%d", np.arange(40.0), np.sin(np.arange(40.0) / 3)[:, None] + 0.1 * rng.normal(size=(40, 1)),
                     ("v",), None, [], Path("many.csv")) for k in range(12)]
    with caplog.at_level(logging.INFO, logger="normalcy"):
        fitted, failed = fit_each(series, "knn", {"window": 8})
    assert len(fitted) == 12 and not failed
    rests = [r.getMessage() for r in caplog.records if "rests on" in r.getMessage()]
    assert rests == ["series 's0%d': knn: the threshold rests on 8 held-out normal row(s); 20 or more make it reliable"]
    assert "... and 11 more series ('s1', 's2', 's3', 's4', 's5', ...): the same as series 's0%d'" in caplog.text
    assert not logging.getLogger("normalcy").filters  # and no filter is left on the logger


def test_names_in_the_report_are_text(tmp_path: Path) -> None:
    """Series named ``<img src=x onerror=alert(1)>.png`` and ``a&b"c`` are escaped in report.html (headings, the
    table of all series), never markup."""
    long = write_long(tmp_path / "long.csv", HOSTILE)
    assert cli("fit", long, "-o", tmp_path / "m", "--series-column", "host", "--window", "12").exit_code == 0
    assert cli("predict", tmp_path / "m", long, "-o", tmp_path / "run").exit_code == 0
    page = assert_names_escaped((tmp_path / "run" / "report.html").read_text(encoding="utf-8"), HOSTILE)
    assert page.text.count(HOSTILE[0]) >= 2  # a drawn series and the table of all series


def test_eval_pools_series_folders(data: Path) -> None:
    r = cli("eval", data, "--json")
    assert r.exit_code == 0, r.stderr
    metrics = json.loads(r.stdout)
    assert metrics["n_series"] == 2 and metrics["n_test_rows"] == 540 and metrics["detector"] == "auto"
    assert metrics["event_tp"] == 2 and metrics["event_recall"] == 1.0  # both planted jumps found
    for key in ("event_precision", "event_f1", "point_f1", "auc_pr", "fit_seconds", "score_seconds",
                "points_per_second"):
        assert isinstance(metrics[key], float), key
    assert metrics["vus_pr"] is None or 0 < metrics["vus_pr"] <= 1


def test_without_tsb_ad_the_note_names_the_install_that_gives_vus_pr(data: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """tsb-ad is not in the series-bench extra (its metadata pins numpy<2): the note said only
    `pip install 'normalcy[series-bench]'`, which leaves VUS-PR missing."""
    monkeypatch.setitem(sys.modules, "TSB_AD", None)  # import TSB_AD raises ImportError
    r = cli("eval", data, "--json", "--detector", "knn")
    assert r.exit_code == 0, r.stderr
    metrics = json.loads(r.stdout)
    assert metrics["vus_pr"] is None
    assert "pip install --no-deps tsb-ad==1.5" in metrics["vus_pr_note"]
    monkeypatch.setitem(sys.modules, "TSB_AD.evaluation.basic_metrics", None)
    with pytest.raises(ImportError, match="--no-deps tsb-ad==1.5"):
        vus_pr(np.array([0, 1, 0]), np.array([0.1, 0.9, 0.2]), window=1)


def test_a_bad_or_untrained_folder_among_series_folders_is_named_and_the_others_go_on(data: Path,
                                                                                   tmp_path: Path) -> None:
    """One unreadable train.csv ended the fit of every folder; a folder with test.csv alone was passed by
    without a word by fit and eval."""
    root = tmp_path / "servers"
    for name in ("a", "b"):
        for f in (data / name).iterdir():
            (root / name).mkdir(parents=True, exist_ok=True)
            (root / name / f.name).write_bytes(f.read_bytes())
    (root / "bad").mkdir()
    (root / "bad" / "train.csv").write_text("timestamp,cpu,mem\n1,2\n")
    (root / "untrained").mkdir()
    (root / "untrained" / "test.csv").write_bytes((data / "a" / "test.csv").read_bytes())
    r = cli("fit", root, "-o", tmp_path / "m")
    assert r.exit_code == 0, r.stderr
    assert "not fitted: bad:" in r.stderr and "not fitted: untrained:" in r.stderr and "no train.csv" in r.stderr
    fitted = load_series_model(tmp_path / "m")
    assert isinstance(fitted, SeriesSet) and sorted(fitted.keys) == ["a", "b"]
    assert sorted(key for key, _ in fitted.failed) == ["bad", "untrained"]  # kept in model.json, by folder
    why = fitted.missing("untrained")
    assert why.startswith("no model for series 'untrained' in this set: at fit it could not be fitted: ")
    assert "no train.csv" in why
    r = cli("eval", root, "--json")
    assert r.exit_code == 0, r.stderr
    metrics = json.loads(r.stdout)
    assert metrics["n_series"] == 2
    assert sorted(name for name, _ in metrics["skipped"]) == ["bad", "untrained"]


def test_eval_says_what_it_pooled_and_what_is_undefined(data: Path, tmp_path: Path) -> None:
    """With folders skipped, the pooled figures were those of the others, said by n_series alone; a test.csv
    labelled all 0 gave null AUC-PR and VUS-PR without a word."""
    root = tmp_path / "servers"
    for name in ("a", "b"):
        shutil.copytree(data / name, root / name)
    write_series(root / "quiet" / "train.csv", 400, seed=5)
    write_series(root / "quiet" / "test.csv", 200, start=400, seed=6)  # no anomaly: labels all 0
    shutil.copytree(data / "a", root / "binary")
    (root / "binary" / "test.csv").write_bytes(b"timestamp,cpu,mem,label\n" + bytes(range(256)) * 40)
    r = cli("eval", root, "--json", "-d", "knn")
    assert r.exit_code == 0, r.stderr
    metrics = json.loads(r.stdout)
    assert (metrics["n_series"], metrics["n_folders"]) == (3, 4)
    assert "pooled over 3 of 4 series folders: 1 skipped (named above)" in r.stderr
    assert "skipped: binary:" in r.stderr and "not a text file" in r.stderr and "Traceback" not in r.stderr
    quiet = {s["series"]: s for s in metrics["per_series"]}["quiet"]
    assert quiet["auc_pr"] is None and isinstance(metrics["auc_pr"], float)
    said = "quiet: no test row is labelled 1: its AUC-PR and VUS-PR are undefined (null, left out of the averages)"
    assert any(u.startswith(said) for u in metrics["undefined"]) and said in " ".join(r.stderr.split())
    r = cli("eval", root / "quiet", "--json", "-d", "knn")  # alone: the pooled figures too
    assert r.exit_code == 0, r.stderr
    metrics = json.loads(r.stdout)
    assert metrics["auc_pr"] is None and metrics["event_recall"] is None
    assert "event recall is undefined (null): no row is labelled 1" in metrics["undefined"]
    assert "pooled over" not in r.stderr


def test_eval_of_broken_folders_alone_names_each(data: Path, tmp_path: Path) -> None:
    """When no folder could be evaluated, the error named the first folder's reason only (the others were never
    said), and one folder's reason came wrapped in "no series folder could be evaluated (...)"."""
    root = tmp_path / "servers"
    for name in ("nolabel", "notest"):
        shutil.copytree(data / "a", root / name)
    write_series(root / "nolabel" / "test.csv", 200, start=600, label=False)
    (root / "notest" / "test.csv").unlink()
    r = cli("eval", root, "--json")
    assert r.exit_code == 1
    (error,) = [line for line in r.stderr.splitlines() if line.startswith("error:")]  # after the progress bar
    assert error.startswith(f"error: {root}: none of its 2 series folders could be evaluated: nolabel: ")
    assert "test file has no label column 'label'" in error and "; notest: " in error and "no test.csv" in error
    assert one_line_error(cli("eval", root / "notest", "--json")) == f"error: {root / 'notest'}: no test.csv to evaluate on"
    (root / "notest" / "test.csv").mkdir()  # there, but no file: it was "no test.csv" all the same
    assert one_line_error(cli("eval", root / "notest", "--json")) == (
        f"error: {root / 'notest'}: no test.csv to evaluate on (test.csv is not a regular file: a folder or a broken "
        "link)")


def test_a_folder_with_train_csv_misnamed_is_named_not_passed_by(data: Path, tmp_path: Path) -> None:
    """A sub-folder holding Train.csv and Test.csv (or train.csv.gz) was no series folder and no untrained one:
    fit and eval passed it by without a word, and the pooled figures were the others' alone."""
    root = tmp_path / "servers"
    shutil.copytree(data / "a", root / "a")
    (root / "Upper").mkdir()
    for split in ("train", "test"):
        shutil.copy(data / "a" / f"{split}.csv", root / "Upper" / f"{split.title()}.csv")
    (root / "packed").mkdir()
    (root / "packed" / "train.csv.gz").write_bytes(gzip.compress((data / "a" / "train.csv").read_bytes()))
    (root / "plots").mkdir()  # nothing named like a series file: not meant as one
    r = cli("eval", root, "--json", "-d", "knn")
    assert r.exit_code == 0, r.stderr
    metrics = json.loads(r.stdout)
    assert (metrics["n_series"], metrics["n_folders"]) == (1, 3)
    why = dict(metrics["skipped"])
    assert why["Upper"].endswith("no train.csv or train.parquet to fit on (it has Test.csv, Train.csv: the name "
                                 "must be train.csv or train.parquet, lower case, uncompressed)")
    assert "(it has train.csv.gz:" in why["packed"]
    r = cli("fit", root, "-o", tmp_path / "m", "-d", "knn")
    assert r.exit_code == 0 and "not fitted: Upper:" in r.stderr and "not fitted: packed:" in r.stderr


def test_eval_of_a_series_folder_with_train_csv_misnamed_says_so(data: Path, tmp_path: Path) -> None:
    """eval of a folder holding TRAIN.csv and test.csv (or of folders each holding one) took it for an image data
    set: "training folder not found: DIR/train/good (expected MVTec AD layout ...)"."""
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(data / "a" / "train.csv", one / "TRAIN.csv")
    shutil.copy(data / "a" / "test.csv", one / "test.csv")
    assert one_line_error(cli("eval", one, "--json")) == (
        f"error: {one}: no train.csv or train.parquet to fit on (it has TRAIN.csv: the name must be train.csv or "
        "train.parquet, lower case, uncompressed)")
    shutil.copytree(one, tmp_path / "servers" / "s1")
    assert one_line_error(cli("eval", tmp_path / "servers", "--json")).startswith(
        f"error: {tmp_path / 'servers'}: none of its 1 series folder(s) can be fitted: {tmp_path / 'servers' / 's1'}: "
        "no train.csv")


def test_notes_of_series_folders_name_their_folder(data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Every series folder's files are train.csv and test.csv: fit and predict of a folder of them said
    "test.csv: 3 missing ... interpolated" once a folder, naming none (eval names them omi-1/test.csv)."""
    root = tmp_path / "servers"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for split in ("train", "test"):
            lines = (data / name / f"{split}.csv").read_text().splitlines()
            lines[5] = lines[5].split(",")[0] + ",," + ",".join(lines[5].split(",")[2:])  # a missing cpu
            (root / name / f"{split}.csv").write_text("\n".join(lines) + "\n")
    with caplog.at_level("INFO", logger="normalcy"):
        assert cli("fit", root, "-o", tmp_path / "m", "-d", "knn").exit_code == 0
    fitted = [r.getMessage() for r in caplog.records if "interpolated" in r.getMessage()]
    assert sorted(m.split(":")[0] for m in fitted) == ["a/train.csv", "b/train.csv"], fitted
    r = cli("predict", tmp_path / "m", root, "-o", tmp_path / "run")
    assert r.exit_code == 0, r.stderr
    notes = json.loads((tmp_path / "run" / "run.json").read_text())["notes"]
    assert sorted(n.split(":")[0] for n in notes) == ["a/test.csv", "b/test.csv"], notes
    assert "repaired: a/test.csv: 1 missing" in r.stderr
    caplog.clear()
    with caplog.at_level("INFO", logger="normalcy"):  # the folder's train.csv given as a file
        assert cli("fit", root / "a" / "train.csv", "-o", tmp_path / "one", "-d", "knn").exit_code == 0
    assert any(r.getMessage().startswith("a/train.csv: 1 missing") for r in caplog.records)


def test_eval_stream_says_its_missing_values_were_held(data: Path, tmp_path: Path) -> None:
    """eval --stream replays test.csv holding a missing value at its last value (as watch does); its note said
    "interpolated", as the offline eval's does, since eval took the notes before the replay."""
    folder = tmp_path / "servers" / "a"
    folder.mkdir(parents=True)
    shutil.copy(data / "a" / "train.csv", folder / "train.csv")
    lines = (data / "a" / "test.csv").read_text().splitlines()
    lines[5] = lines[5].split(",")[0] + ",," + ",".join(lines[5].split(",")[2:])  # a missing cpu
    (folder / "test.csv").write_text("\n".join(lines) + "\n")
    for extra, said in (((), "interpolated linearly along time"), (("--stream",), "held at their column's last value")):
        r = cli("eval", folder.parent, "--json", "-d", "knn", *extra)
        assert r.exit_code == 0, r.stderr
        assert json.loads(r.stdout)["notes"] == [f"a/test.csv: 1 missing or non-finite value(s) {said} (cpu 1)"]


def test_predict_and_eval_replay_a_stream(data: Path, model: Path, tmp_path: Path) -> None:
    """--stream: each series replayed as a monitoring loop runs it (scores from the past only, every row
    learned, calibrated to [0, 1], anomalous from the alarm level 0.3); the model folder itself is not
    changed by the learning, so a second replay gives the same run; eval pools the replayed events."""
    test = data / "a" / "test.csv"
    runs = [tmp_path / "s1", tmp_path / "s2"]
    for run in runs:
        r = cli("predict", model, test, "-o", run, "--stream")
        assert r.exit_code == 0, r.stderr
    assert (runs[0] / "scores.csv").read_text() == (runs[1] / "scores.csv").read_text()
    rows = list(csv.DictReader(open(runs[0] / "scores.csv")))
    score = np.array([float(x["score"]) for x in rows])
    decision = np.array([int(x["decision"]) for x in rows])
    assert len(rows) == 300 and {x["threshold"] for x in rows} == {"0.3"}
    assert ((score >= 0) & (score <= 1)).all() and np.array_equal(decision, (score >= 0.3).astype(int))
    assert decision[150:160].any() and score[150:160].max() > 0.3 > np.median(score)  # the planted jump alarms
    planted = [e for e in csv.DictReader(open(runs[0] / "events.csv"))
               if e["start"] <= rows[150]["timestamp"] <= e["end"]]
    assert len(planted) == 1 and planted[0]["metrics"].split(";")[0] == "cpu"  # what drove it, as offline
    meta = json.loads((runs[0] / "run.json").read_text())
    assert meta["mode"] == "stream" and meta["n_rows"] == 300
    r = cli("eval", data, "--json", "--stream")
    assert r.exit_code == 0, r.stderr
    metrics = json.loads(r.stdout)
    assert metrics["mode"] == "stream" and metrics["n_series"] == 2 and metrics["event_tp"] == 2
    assert "this is not a series folder" in one_line_error(cli("eval", tmp_path, "--stream"))
    assert "does not run on Ray" in one_line_error(cli("predict", model, test, "-o", tmp_path / "r", "--stream",
                                                       "--ray", "local"))


def test_predict_with_a_missing_model_folder_says_so_before_its_options(tmp_path: Path) -> None:
    """``predict MISSING --stream`` said --stream applies to series models, not that the model is missing."""
    for extra in ((), ("--stream",), ("--time-column", "t")):
        assert one_line_error(cli("predict", tmp_path / "missing", tmp_path / "test.csv", "-o", tmp_path / "r",
                                  *extra)) == f"error: {tmp_path / 'missing'}: not a normalcy model: no such file or folder"


def test_a_run_says_what_it_pruned(tmp_path: Path) -> None:
    """Pure noise: a 1 % threshold is crossed now and then, and those crossings are pruned as noise; the run
    says how many, and a model fitted with --prune 0 keeps exactly those events."""
    rng = np.random.default_rng(0)
    for name, n in (("train", 1000), ("test", 3000)):
        (tmp_path / f"{name}.csv").write_text("timestamp,v\n" + "".join(f"{i},{x:.5f}\n" for i, x in
                                                                      enumerate(rng.normal(size=n))))
    counts = {}
    for prune in ("0.13", "0"):
        assert cli("fit", tmp_path / "train.csv", "-o", tmp_path / f"m{prune}", "--detector", "knn",
                   "--prune", prune).exit_code == 0
        r = cli("predict", tmp_path / f"m{prune}", tmp_path / "test.csv", "-o", tmp_path / f"run{prune}")
        assert r.exit_code == 0, r.stderr
        meta = json.loads((tmp_path / f"run{prune}" / "run.json").read_text())
        counts[prune] = (meta["n_events"], meta["n_pruned"])
        assert ("were pruned as noise" in r.stderr) == (meta["n_pruned"] > 0)
    (kept, pruned), (every, none) = counts["0.13"], counts["0"]
    assert pruned > 0 and none == 0 and kept + pruned == every


def test_eval_a_test_bed_layout(data: Path, tmp_path: Path) -> None:
    """A test bed's files as they come (SKAB: semicolons, the label named ``anomaly``, an extra ``changepoint``
    column): --label-column names the label, the extra column is left out, the result is the plain folder's."""
    skab = tmp_path / "skab" / "a"
    skab.mkdir(parents=True)
    for name in ("train", "test"):
        rows = list(csv.reader(open(data / "a" / f"{name}.csv")))
        at = rows[0].index("label")
        rows = [r[:at] + r[at + 1:] + ((["anomaly", "changepoint"] if i == 0 else [r[at], "0"]) if name == "test"
                                       else []) for i, r in enumerate(rows)]
        (skab / f"{name}.csv").write_text("".join(";".join(r) + "\n" for r in rows))
    assert "no label column 'label'" in one_line_error(cli("eval", tmp_path / "skab", "--json"))
    r = cli("eval", tmp_path / "skab", "--json", "--label-column", "anomaly")
    plain = cli("eval", data / "a", "--json")
    assert r.exit_code == 0 and plain.exit_code == 0, r.stderr
    got, want = json.loads(r.stdout), json.loads(plain.stdout)
    for key in ("event_tp", "event_fp", "event_fn", "point_f1", "auc_pr", "n_test_rows"):
        assert got[key] == want[key], key


def test_eval_one_asd_server(shared_data: Path) -> None:
    r = cli("eval", shared_data / "asd" / "omi-1", "--json", "--detector", "pca", "--window", "16")
    assert r.exit_code == 0, r.stderr
    metrics = json.loads(r.stdout)
    assert (metrics["n_series"], metrics["n_test_rows"], metrics["window"]) == (1, 4320, 16)
    assert metrics["event_tp"] + metrics["event_fn"] > 1 and metrics["auc_pr"] > 0.05


def test_the_same_run_on_ray(data: Path, model: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    inputs = [data / "a" / "test.csv", data / "b" / "test.csv"]
    here = cli("predict", model, *inputs, "-o", tmp_path / "here")
    there = cli("predict", model, *inputs, "-o", tmp_path / "ray", "--ray", "local")
    assert here.exit_code == 0 and there.exit_code == 0, there.stderr
    assert "on Ray" in there.stderr
    for name in ("scores.csv", "events.csv"):
        assert (tmp_path / "here" / name).read_text() == (tmp_path / "ray" / name).read_text()
    # one model per series folder, fitted one series a task, scores as fitted here
    sets = {}
    for where, extra in (("here", []), ("ray", ["--ray", "local"])):
        assert cli("fit", data, "-o", tmp_path / f"set-{where}", *extra).exit_code == 0
        assert cli("predict", tmp_path / f"set-{where}", data, "-o", tmp_path / f"set-run-{where}", *extra).exit_code == 0
        sets[where] = (tmp_path / f"set-run-{where}" / "scores.csv").read_text()
    assert sets["here"] == sets["ray"] and sets["here"].splitlines()[0] == "timestamp,series,score,decision,threshold"


def test_a_short_series_in_a_long_file_is_skipped_not_fatal(tmp_path: Path) -> None:
    long = tmp_path / "long.csv"
    with open(long, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["time", "host", "cpu"])
        for i in range(200):
            for h in ("web-1", "web-2") + (("tiny",) if i < 5 else ()):
                w.writerow([1_700_000_000 + 60 * i, h, f"{np.sin(i / 5):.4f}"])
    r = cli("fit", long, "-o", tmp_path / "m", "--series-column", "host", "--window", "8")
    assert r.exit_code == 0 and "on 2 series, one model each" in r.stderr, r.stderr
    assert sorted(load_series_model(tmp_path / "m").keys) == ["web-1", "web-2"]  # type: ignore[union-attr]
    r = cli("predict", tmp_path / "m", long, "-o", tmp_path / "run")
    assert r.exit_code == 0, r.stderr
    skipped = list(csv.DictReader(open(tmp_path / "run" / "skipped.csv")))
    assert [s["series"] for s in skipped] == [f"{long} [host=tiny]"] and "5 rows" in skipped[0]["reason"]
    rows = list(csv.DictReader(open(tmp_path / "run" / "scores.csv")))
    assert len(rows) == 400 and {x["series"] for x in rows} == {"web-1", "web-2"}


@pytest.fixture(scope="module")
def set_with_failed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A set fitted on a long file where 'tiny' (5 rows) cannot be read and 'mid' (20 rows, window 12) cannot
    be fitted; test.csv holds both at full length, and 'web-1', and 'new' (never fitted)."""
    root = tmp_path_factory.mktemp("failed-set")
    for name, lengths in (("train.csv", {"web-1": 200, "tiny": 5, "mid": 20}),
                          ("test.csv", {"web-1": 100, "tiny": 100, "mid": 100, "new": 100})):
        with open(root / name, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["time", "host", "cpu"])
            for i in range(max(lengths.values())):
                w.writerows([1_700_000_000 + 60 * i, h, f"{np.sin(i / 5):.4f}"] for h, n in lengths.items() if i < n)
    r = cli("fit", root / "train.csv", "-o", root / "m", "--series-column", "host", "--window", "12")
    assert r.exit_code == 0 and "on 1 series, one model each" in r.stderr, r.stderr
    return root


def test_predict_says_why_a_series_of_the_set_was_not_fitted(set_with_failed: Path, tmp_path: Path) -> None:
    """A series that failed at fit was named then, but predict said only "no model for series": the set's
    model.json keeps each failed series with its reason (by id), and predict says it."""
    root = set_with_failed
    meta = json.loads((root / "m" / "model.json").read_text())
    assert [f["series"] for f in meta["failed"]] == ["tiny", "mid"]
    assert meta["failed"][0]["reason"] == "5 rows; a series needs at least 16"
    r = cli("predict", root / "m", root / "test.csv", "-o", tmp_path / "run")
    assert r.exit_code == 0, r.stderr
    why = {x["series"].removeprefix(f"{root / 'test.csv'} "): x["reason"]
           for x in csv.DictReader(open(tmp_path / "run" / "skipped.csv"))}
    assert why["[host=tiny]"] == ("no model for series 'tiny' in this set: at fit it could not be fitted: "
                                  "5 rows; a series needs at least 16")
    assert why["[host=mid]"].startswith("no model for series 'mid' in this set: at fit it could not be fitted: ")
    assert "fewer than 2 x the window (12)" in why["[host=mid]"]
    assert why["[host=new]"] == "no model for series 'new' in this set (fitted on 1 series)"  # never fitted
    # a model.json written before the field: loads, and predict says what it said then
    del meta["failed"]
    shutil.copytree(root / "m", tmp_path / "old")
    (tmp_path / "old" / "model.json").write_text(json.dumps(meta))
    old = load_series_model(tmp_path / "old")
    assert isinstance(old, SeriesSet) and old.failed == [] and old.keys == ["web-1"]
    with pytest.raises(InputError, match=r"^no model for series 'tiny' in this set \(fitted on 1 series\)$"):
        old.get("tiny")
    # a reason is kept on one line, control characters escaped, and bounded
    kept = short_reason("bad\nvalue \x1b[31m" + "x" * 1000)
    assert kept.startswith("bad value \\x1b[31m") and kept.isprintable() and len(kept) == REASON_CHARS


def test_a_run_of_no_series_names_each_file_and_id(set_with_failed: Path, tmp_path: Path) -> None:
    """When no series could be scored the error gave only "no model for series 'new'": not which file."""
    test = set_with_failed / "test.csv"
    only_new = tmp_path / "new.csv"
    only_new.write_text("".join(line for line in test.read_text().splitlines(keepends=True)
                                if line.startswith("time") or ",new," in line))
    error = one_line_error(cli("predict", set_with_failed / "m", only_new, "-o", tmp_path / "run"))
    assert f"no series could be scored ({only_new} [host=new]: no model for series 'new'" in error, error


def test_ids_written_as_other_numbers_find_their_models(tmp_path: Path) -> None:
    """Ids that are numbers: 1 and 2 at fit, 1.0 and 02 in the file scored (a float column, a spreadsheet's
    text) are the same series, scored by their models with a note; an id that is no number stays its own."""
    long = write_long(tmp_path / "long.csv", ["1", "2", "07"], n=120)
    assert cli("fit", long, "-o", tmp_path / "m", "--series-column", "host", "--window", "8").exit_code == 0
    renamed = tmp_path / "renamed.csv"
    renamed.write_text(long.read_text().replace(",1,", ",1.0,").replace(",2,", ",02,").replace(",07,", ",x7,"))
    r = cli("predict", tmp_path / "m", renamed, "-o", tmp_path / "run")
    assert r.exit_code == 0 and "scored 240 rows of 2 series" in r.stderr, r.stderr
    notes = json.loads((tmp_path / "run" / "run.json").read_text())["notes"]
    assert "renamed.csv: series '1.0' scored by the model of series '1' (the same number, written another way " \
        "at fit)" in notes
    assert any("series '02' scored by the model of series '2'" in n for n in notes)
    skipped = list(csv.DictReader(open(tmp_path / "run" / "skipped.csv")))
    assert [s["series"] for s in skipped] == [f"{renamed} [host=x7]"]
    assert {x["series"] for x in csv.DictReader(open(tmp_path / "run" / "scores.csv"))} == {"1.0", "02"}
    assert load_series_model(tmp_path / "m").key_of("7") == "07"  # one id of the same number: its model


def test_ray_says_why_a_series_of_the_set_was_not_fitted(set_with_failed: Path) -> None:
    pytest.importorskip("ray")
    from normalcy.scale.distributed import score_series_ray

    model = load_series_model(set_with_failed / "m")
    series = {s.name: s for s in read_series(set_with_failed / "test.csv", None, "host")}
    (why,), _, _ = score_series_ray(set_with_failed / "m", model, [series["tiny"]], "local")
    assert why == ("no model for series 'tiny' in this set: at fit it could not be fitted: "
                   "5 rows; a series needs at least 16")


def test_a_time_column_given_at_fit_is_read_by_predict(tmp_path: Path) -> None:
    for name, n in (("train.csv", 300), ("test.csv", 100)):
        (tmp_path / name).write_text("when,cpu\n" + "".join(f"{1_700_000_000 + 60 * i},{np.sin(i / 5):.4f}\n"
                                                           for i in range(n)))
    r = cli("fit", tmp_path / "train.csv", "-o", tmp_path / "m", "--time-column", "when", "--window", "8")
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "m" / "model.json").read_text())["time_column"] == "when"
    r = cli("predict", tmp_path / "m", tmp_path / "test.csv", "-o", tmp_path / "run")
    assert r.exit_code == 0, r.stderr
    rows = list(csv.DictReader(open(tmp_path / "run" / "scores.csv")))
    assert len(rows) == 100 and rows[0]["when"] == "1700000000"


@pytest.mark.parametrize("detector", ["auto", "knn"])
def test_the_shortest_series_with_a_constant_metric_fits_predicts_and_draws(tmp_path: Path, detector: str) -> None:
    """16 rows (the floor) leave 13 to fit on: the window shrinks to fit them, not a refusal; a constant metric
    is drawn in the report as a flat line (it once crashed the report)."""
    path = tmp_path / "short.csv"
    path.write_text("timestamp,cpu,fan\n" + "".join(f"{i},{np.sin(i / 2):.4f},1\n" for i in range(16)))
    r = cli("fit", path, "-o", tmp_path / "m", "--detector", detector)
    assert r.exit_code == 0 and f"fitted {detector} on 16 rows x 2 column(s), window 6" in r.stderr, r.stderr
    r = cli("predict", tmp_path / "m", path, "-o", tmp_path / "run")
    assert r.exit_code == 0, r.stderr
    assert len(list(csv.DictReader(open(tmp_path / "run" / "scores.csv")))) == 16
    report = (tmp_path / "run" / "report.html").read_text()
    assert "fan" in report and "<svg" in report


def test_keep_glitches_from_the_command_line(tmp_path: Path) -> None:
    """A one-row glitch in a multivariate training file is mended (said on stderr, listed in model.json) unless
    --keep-glitches; the flag applies to series only."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 3))
    X[200, 1] = 400.0
    train = tmp_path / "train.csv"
    with open(train, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "a", "b", "c"])
        w.writerows([[i, *map(float, row)] for i, row in enumerate(X)])
    r = cli("fit", train, "-o", tmp_path / "m", "--detector", "knn")
    assert r.exit_code == 0 and "1 one-row glitch(es)" in r.stderr and "row 201, column 'b'" in " ".join(r.stderr.split())
    assert "fit with --keep-glitches to learn them" in " ".join(r.stderr.split())  # the CLI's flag
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["params"]["mend_glitches"] and meta["training"]["mended_glitches"][0]["column"] == "b"
    r = cli("fit", train, "-o", tmp_path / "k", "--detector", "knn", "--keep-glitches")
    assert r.exit_code == 0 and "mended" not in r.stderr
    meta = json.loads((tmp_path / "k" / "model.json").read_text())
    assert not meta["params"]["mend_glitches"] and not (meta["training"] or {}).get("mended_glitches")
    plain = tmp_path / "plain.csv"
    plain.write_text("a,b\n1,2\n3,4\n")
    assert "--keep-glitches applies to series only" in one_line_error(cli("fit", plain, "-o", tmp_path / "t",
                                                                          "--keep-glitches"))


def test_command_columns_from_the_command_line(tmp_path: Path) -> None:
    """A block of 0/1 columns beside a measured one is left out with a warning naming them, model.json lists
    them, predict scores a test file that has them without a note; --score-flags keeps them."""
    rng = np.random.default_rng(0)

    def write(path: Path, n: int) -> None:
        t = np.arange(n)
        x = np.sin(2 * np.pi * t / 40) + 0.05 * rng.standard_normal(n)
        cmds = (rng.random((n, 9)) < 0.02).astype(int)
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["timestamp", "value", *(f"c{j}" for j in range(1, 10))])
            w.writerows([[i, float(x[i]), *cmds[i]] for i in range(n)])

    write(tmp_path / "train.csv", 800)
    write(tmp_path / "test.csv", 400)
    r = cli("fit", tmp_path / "train.csv", "-o", tmp_path / "m", "--detector", "knn")
    err = " ".join(r.stderr.split())
    names = [f"c{j}" for j in range(1, 10)]
    assert r.exit_code == 0 and "9 column(s) hold only 0 and 1" in err and ", ".join(names) in err
    assert json.loads((tmp_path / "m" / "model.json").read_text())["flags"] == names
    r = cli("predict", tmp_path / "m", tmp_path / "test.csv", "-o", tmp_path / "run")
    assert r.exit_code == 0 and "left out" not in r.stderr
    r = cli("fit", tmp_path / "train.csv", "-o", tmp_path / "k", "--detector", "knn", "--score-flags")
    meta = json.loads((tmp_path / "k" / "model.json").read_text())
    assert r.exit_code == 0 and meta["flags"] == [] and meta["columns"] == ["value", *names]
    plain = tmp_path / "plain.csv"
    plain.write_text("a,b\n1,2\n3,4\n")
    assert "--score-flags applies to series only" in one_line_error(cli("fit", plain, "-o", tmp_path / "t",
                                                                        "--score-flags"))


def test_predict_takes_a_folder_with_test_csv_alone_and_skips_an_empty_one(data: Path, model: Path,
                                                                          tmp_path: Path) -> None:
    """Scoring needs no train.csv beside test.csv; a folder with nothing to score is named in skipped.csv and
    the other inputs are scored (it stopped the run before)."""
    only = tmp_path / "only"
    only.mkdir()
    (only / "test.csv").write_bytes((data / "a" / "test.csv").read_bytes())
    (tmp_path / "empty").mkdir()
    r = cli("predict", model, only, tmp_path / "empty", "-o", tmp_path / "run")
    assert r.exit_code == 0, r.stderr
    with open(tmp_path / "run" / "scores.csv", newline="") as fh:
        assert len(list(csv.reader(fh))) == 1 + 300
    skipped = (tmp_path / "run" / "skipped.csv").read_text()
    assert "empty" in skipped and "no test.csv or test.parquet to score" in skipped


def test_fit_refuses_an_output_that_cannot_be_a_model_folder_before_fitting(data: Path, tmp_path: Path) -> None:
    line = one_line_error(cli("fit", data / "a" / "train.csv", "-o", data / "a" / "test.csv", "-d", "knn"))
    assert "test.csv: not a folder (a model is a folder of files)" in line
    (tmp_path / "file").write_text("x")
    line = one_line_error(cli("fit", data / "a" / "train.csv", "-o", tmp_path / "file" / "m", "-d", "knn"))
    assert "cannot be created" in line


def test_epoch_milliseconds_fit_predict_and_draw(tmp_path: Path) -> None:
    """A run's report once failed on millisecond times (a date past the year 9999), and the run with it."""
    for name, n, start in (("train", 400, 0), ("test", 200, 400)):
        src = write_series(tmp_path / f"{name}_iso.csv", n, start=start, label=False)
        with open(src, newline="") as fh, open(tmp_path / f"{name}.csv", "w", newline="") as out:
            rows = list(csv.reader(fh))
            w = csv.writer(out)
            w.writerow(rows[0])
            for row in rows[1:]:
                w.writerow([int(datetime.fromisoformat(row[0]).timestamp() * 1000)] + row[1:])
    assert cli("fit", tmp_path / "train.csv", "-o", tmp_path / "m", "-d", "knn").exit_code == 0
    r = cli("predict", tmp_path / "m", tmp_path / "test.csv", "-o", tmp_path / "run")
    assert r.exit_code == 0, r.stderr
    assert "epoch milliseconds" in r.stderr and "<svg" in (tmp_path / "run" / "report.html").read_text()


def test_the_report_shades_one_row_events_and_merges_thousands() -> None:
    """An event was shaded from its first row's time to its last's: a one-row event had no width (not drawn),
    and 12,000 events in 300,000 rows were 24,000 shapes (a 5.6 MB plot). Each span is now at least a row and
    1/500 of the series wide, and spans that then overlap are one shape."""
    import re

    from normalcy.runs import plots

    t = np.arange(600, dtype=np.float64)
    svg = plots.series_svg(t, False, np.sin(t / 10)[:, None], ["a"], np.abs(np.sin(t / 10)), 0.5, [(300, 300)], [], "p")
    spans = re.findall(r'<path d="M ([\d.]+) [\d.]+\s+L ([\d.]+) [^"]*"[^>]*fill: #c62828', svg)
    assert len(spans) == 2 and all(float(b) > float(a) for a, b in spans)  # both panels, each with a width
    assert plots.shaded([(0, 0), (5, 9), (8, 12), (20, 20)], np.arange(30.0)).tolist() == [
        [0.0, 0.5], [4.5, 12.5], [19.5, 20.5]]
    times = 1.7e9 + 60 * np.arange(300_000.0)
    assert len(plots.shaded([(k, k + 3) for k in range(0, 300_000, 700)], times)) <= 500


def bars_shown(module: object, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each progress bar ``module`` opens from now on would be shown (the bar itself stays hidden)."""
    import contextlib

    shown: list[bool] = []
    real = module.progress_bar  # type: ignore[attr-defined]

    @contextlib.contextmanager
    def spy(enabled: bool = True):  # type: ignore[no-untyped-def]
        shown.append(enabled)
        with real(False) as bar:
            yield bar

    monkeypatch.setattr(module, "progress_bar", spy)
    return shown


def test_one_long_series_gets_a_progress_bar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bar was shown for two series or more only: one series of 1,000,000 rows scored for minutes without a
    word. A series of LONG_SERIES rows or more gets it too (its clock says the run is going)."""
    from normalcy import api

    path = tmp_path / "s.csv"
    path.write_text("timestamp,cpu\n" + "".join(f"{i},{np.sin(i / 3):.4f}\n" for i in range(300)))
    api.fit(path, tmp_path / "m", "knn", progress=False)
    shown = bars_shown(api, monkeypatch)
    api.predict(tmp_path / "m", [path], tmp_path / "short")
    monkeypatch.setattr(api, "LONG_SERIES", 300, raising=False)
    api.predict(tmp_path / "m", [path], tmp_path / "long")
    assert shown == [False, True]


def test_eval_of_one_long_series_gets_a_progress_bar(data: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """eval showed its bar for a folder of two series folders or more only: one series folder whose test series
    had 1,000,000 rows was scored for minutes without a word, while predict's bar showed for it. Its bar shows
    from LONG_SERIES test rows, as predict's; a short one still has none, and a folder that cannot be read is
    still named in skipped."""
    from normalcy import api, progress

    shown = bars_shown(progress, monkeypatch)
    api.evaluate(data / "a", "knn")  # 300 test rows
    monkeypatch.setattr(progress, "LONG_SERIES", 300)
    metrics = api.evaluate(data / "a", "knn")
    assert shown == [False, True] and metrics["n_test_rows"] == 300
    write_series(tmp_path / "c" / "train.csv", 600, seed=1)
    write_series(tmp_path / "c" / "test.csv", 300, start=600, label=False)
    with pytest.raises(InputError, match="test file has no label column 'label'"):
        api.evaluate(tmp_path / "c", "knn")
    assert shown == [False, True, False]


def test_predict_scores_a_file_whose_label_column_is_not_0_1(tmp_path: Path) -> None:
    """predict only draws a file's labels, yet a `label` column of -1/1 (scikit-learn's way) refused the whole
    file: no series could be scored. It is left out with a note naming the cell; eval, which measures on the
    labels, still refuses it."""
    rows = "".join(f"{i},{np.sin(i / 3):.4f},{1 if 100 <= i < 104 else -1}\n" for i in range(200))
    path = tmp_path / "t.csv"
    path.write_text("timestamp,cpu,label\n" + rows)
    train = tmp_path / "train.csv"
    train.write_text("timestamp,cpu\n" + "".join(f"{i},{np.sin(i / 3):.4f}\n" for i in range(200)))
    assert cli("fit", train, "-o", tmp_path / "m", "--detector", "knn").exit_code == 0
    r = cli("predict", tmp_path / "m", path, "-o", tmp_path / "run")
    assert r.exit_code == 0, r.stderr
    assert "column 'label' left out, not scored or drawn as labels" in r.stderr and "row 1 has '-1'" in r.stderr
    assert len(list(csv.DictReader(open(tmp_path / "run" / "scores.csv")))) == 200
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.csv").write_text(train.read_text())
    (tmp_path / "d" / "test.csv").write_text(path.read_text())
    r = cli("eval", tmp_path / "d", "--detector", "knn")
    assert r.exit_code == 1 and "label column must hold 0 (normal) or 1 (anomaly)" in r.stderr


def test_a_cjk_metric_name_is_drawn_without_a_glyph_warning() -> None:
    """Matplotlib's font has no CJK glyphs and warned once per character ("Glyph 33655 missing from font(s)
    DejaVu Sans") on every predict of a file with such names, though the report keeps text as text and the
    browser draws it. The name is in the SVG and nothing is warned."""
    import warnings

    from normalcy.runs.plots import series_svg

    t = np.arange(50, dtype=np.float64)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        svg = series_svg(t, False, np.sin(t)[:, None], ["負荷"], np.abs(np.sin(t)), 0.5, [], [], "c")
    assert "負荷" in svg and not [w for w in seen if "Glyph" in str(w.message)]


def test_metric_names_with_dollar_signs_are_drawn_as_written() -> None:
    """Matplotlib reads text between two `$` as TeX: a metric `cost $ USD $` was drawn without its dollars, and
    one holding `$\\x$` was not drawn at all (the report said "not drawn: ParseFatalException ...")."""
    from normalcy.runs.plots import series_svg

    t = np.arange(50, dtype=np.float64)
    names = ["cost $ USD $", "$\\x$ ms"]
    svg = series_svg(t, False, np.c_[np.sin(t), np.cos(t)], names, np.abs(np.sin(t)), 0.5, [(5, 6)], [], "d")
    assert all(f">{name}</text>" in svg for name in names)


def test_metrics_named_alike_keep_apart_in_the_plot() -> None:
    """Labels were a name's first 18 characters: `node_cpu_seconds_total_user` and `..._system` were both drawn as
    `node_cpu_seconds_t`. A long name is drawn on two lines, one over 32 characters with its start and its end
    (the review's event pictures: 16 characters, start and end); a line break in it is a space."""
    import re

    from normalcy.runs.plots import series_svg, short_name

    t = np.arange(50, dtype=np.float64)
    names = ["node_cpu_seconds_total_user", "node_cpu_seconds_total_system", "line\nbreak",
             "metric_16_with_a_rather_long_common_prefix"]
    svg = series_svg(t, False, np.c_[np.sin(t), np.cos(t), t, -t], names, np.abs(np.sin(t)), 0.5, [], [], "n")
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    assert {"node_cpu_seconds", "_total_user", "_total_system", "line break", "metric_16_with_…",
            "ng_common_prefix"} <= set(texts)
    assert short_name("node_cpu_seconds_total_user", 16) == "node_cp…tal_user" and short_name("cpu", 16) == "cpu"


def test_a_series_before_1973_is_drawn_with_dates(tmp_path: Path) -> None:
    """Times were drawn as dates only from 1973 (epoch seconds over 1e8): a series of daily values from 1949
    had an axis of epoch seconds (-6.6 ... 1e8). Times written as dates are drawn as dates; numbers as before."""
    import re

    start = datetime(1949, 1, 1)
    path = tmp_path / "old.csv"
    path.write_text("date,passengers\n" + "".join(f"{(start + timedelta(days=i)).date()},{np.sin(i / 5):.4f}\n"
                                                for i in range(120)))
    assert cli("fit", path, "-o", tmp_path / "m", "--detector", "knn", "--window", "8").exit_code == 0
    assert cli("predict", tmp_path / "m", path, "-o", tmp_path / "run").exit_code == 0
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", (tmp_path / "run" / "report.html").read_text())
    assert any(t.startswith("1949-") for t in texts) and "1e8" not in texts


def test_a_plot_of_zoned_times_says_it_draws_them_in_utc(tmp_path: Path) -> None:
    """Times written with a zone (+09:00) are drawn in UTC: the axis read 00:00 beside an event table that says
    09:00+09:00, without a word. The plot's legend now says so; naive and UTC times are drawn as before."""
    rows = "".join(f"{(T0 + timedelta(minutes=i)).astimezone(timezone(timedelta(hours=9))).isoformat()},"
                   f"{np.sin(i / 5):.4f}\n" for i in range(120))
    (tmp_path / "tokyo.csv").write_text("timestamp,cpu\n" + rows)
    (tmp_path / "utc.csv").write_text("timestamp,cpu\n" + rows.replace("+09:00", "+00:00"))
    assert cli("fit", tmp_path / "tokyo.csv", "-o", tmp_path / "m", "--detector", "knn", "--window", "8").exit_code == 0
    for name, said in (("tokyo", True), ("utc", False)):
        assert cli("predict", tmp_path / "m", tmp_path / f"{name}.csv", "-o", tmp_path / name).exit_code == 0
        assert (">times in UTC</text>" in (tmp_path / name / "report.html").read_text()) is said


def test_zoned_times_are_found_past_the_first_and_with_hours_alone() -> None:
    """The report's "times in UTC" asked the first time alone, by a pattern of +HH:MM: a London file starting at
    +00:00 in winter drew its summer rows (+01:00) an hour off the event table unsaid, and +01 was no zone."""
    from normalcy.runs.report import _zoned

    london = [f"2024-03-31T00:{m:02d}:00+00:00" for m in range(60)]  # then summer time
    london += [f"2024-03-31T02:{m:02d}:00+01:00" for m in range(60)]
    assert _zoned(london) and _zoned(["2024-01-01T00:00:00+01"])
    assert not any(_zoned(t) for t in (["2024-01-01T00:00:00Z"], ["2024-01-01"], ["1700000000"], []))


def test_a_set_whose_save_stopped_halfway_leaves_the_earlier_set(tmp_path: Path, monkeypatch) -> None:
    """A full disk at the second of three series' models left the earlier set's model.json naming one new
    model and two old ones: a set no fit made, which loaded and scored; then (a later mend) a folder with no
    model.json, no model at all. Now new models go into folders of their own: the earlier set loads as it
    was, and the stopped save's folders are gone; a save that ends writes the whole set and deletes the
    earlier one's folders."""
    import normalcy.series.base as series_base

    m = tmp_path / "m"
    r = cli("fit", write_long(tmp_path / "long.csv", ["a", "b", "c"]), "-o", m, "--series-column", "host",
            "--window", "12", "-d", "knn")
    assert r.exit_code == 0, r.stderr
    before = sorted(p.name for p in m.iterdir())
    old = [load_series_model(m).get(k).threshold_ for k in "abc"]
    refit = load_series_model(m)
    for key in refit.keys:
        refit.get(key).threshold_ += 1.0
    real, saved = series_base.SeriesDetector.save, []

    def save(self, directory):  # a full disk at the second series' model
        saved.append(directory)
        if len(saved) == 2:
            raise OSError(28, "No space left on device")
        return real(self, directory)

    monkeypatch.setattr(series_base.SeriesDetector, "save", save)
    with pytest.raises(OSError):
        refit.save(m)
    assert sorted(p.name for p in m.iterdir()) == before
    assert [load_series_model(m).get(k).threshold_ for k in "abc"] == old
    monkeypatch.undo()
    refit.save(m)
    assert [load_series_model(m).get(k).threshold_ for k in "abc"] == [t + 1.0 for t in old]
    assert len(list(m.iterdir())) == len(before)  # the earlier set's folders deleted
    refit.save(m)  # saved again over where it was read from: still whole
    assert [load_series_model(m).get(k).threshold_ for k in "abc"] == [t + 1.0 for t in old]


def test_a_full_disk_at_the_end_of_a_fit_is_one_line(tmp_path: Path, monkeypatch) -> None:
    """safetensors reports a full disk as its own error, not an OSError: the fit ended in a traceback."""
    import normalcy.series.base as series_base
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(series_base, "save_file", full)
    m = tmp_path / "m"
    r = CliRunner().invoke(app, ["fit", str(write_series(tmp_path / "s.csv", 200)), "-o", str(m), "-d", "knn"])
    assert one_line_error(r) == f"error: {m}: cannot write the model (No space left on device)"
    assert not (m / "model.json").exists()


def test_a_series_model_json_given_for_its_folder_names_the_folder(data: Path, model: Path, tmp_path: Path) -> None:
    """`watch model/model.json` and `predict model/model.json` said "... not a series model: no model.json in
    it" and "not a normalcy model (no model.json)" of the very model.json given."""
    want = f"error: {model / 'model.json'}: a model is the folder holding model.json and its files: give {model}"
    assert one_line_error(cli("watch", model / "model.json", data / "a" / "test.csv")) == want
    assert one_line_error(cli("predict", model / "model.json", data / "a" / "test.csv", "-o", tmp_path / "r")) == want


def test_two_saves_into_one_folder_at_once_keep_one_model_whole(tmp_path: Path, monkeypatch) -> None:
    """Two fits saving into one folder at the same moment could leave one's tensors with the other's
    model.json; the last to put its files in place is kept whole. Files keep the usual permissions."""
    import os
    import time

    r = cli("fit", write_series(tmp_path / "s.csv", 200), "-o", tmp_path / "a", "-d", "knn", "--window", "8")
    assert r.exit_code == 0, r.stderr
    models = [load_series_model(tmp_path / "a") for _ in range(2)]
    models[1].threshold_ += 1.0
    models[1].bank_ = models[1].bank_ + 1.0
    d = tmp_path / "m"
    real, rng = os.replace, np.random.default_rng(0)

    def slow(*args, **kwargs):  # renames as slow as on a network drive, unevenly: the two saves interleave
        time.sleep(float(rng.uniform(0, 0.03)))
        return real(*args, **kwargs)

    monkeypatch.setattr(os, "replace", slow)
    for _ in range(8):
        assert run_together(lambda m: m.save(d), models) == []
        got = load_series_model(d)
        which = [m.threshold_ for m in models].index(got.threshold_)
        assert np.array_equal(got.bank_, models[which].bank_)
        assert sorted(p.name for p in d.iterdir()) == ["model.json", "model.safetensors"]
    assert (d / "model.json").stat().st_mode & 0o044 == (tmp_path / "a" / "model.json").stat().st_mode & 0o044


def test_a_model_loaded_while_another_process_saves_over_it_is_one_model(tmp_path: Path, monkeypatch) -> None:
    """A load (predict, watch, serve) that read model.json just before another fit saved over the folder then
    read the new tensors: the earlier model's threshold beside the new bank, a model neither fit made (or, in
    the moment between the save removing model.json and putting the new one in place, "not a normalcy model").
    A load now reads the folder's files under a shared lock that a save waits for."""
    import threading

    import normalcy.series.registry as registry

    r = cli("fit", write_series(tmp_path / "s.csv", 200), "-o", tmp_path / "m", "-d", "knn", "--window", "8")
    assert r.exit_code == 0, r.stderr
    first, second = load_series_model(tmp_path / "m"), load_series_model(tmp_path / "m")
    second.threshold_ += 1.0
    second.bank_ = second.bank_ + 1.0
    real = registry.read_tensors
    saver: list[threading.Thread] = []

    def between(path):  # model.json read, the tensors not yet: another process saves now
        saver.append(threading.Thread(target=second.save, args=(tmp_path / "m",)))
        saver[0].start()
        saver[0].join(0.5)  # a save that waits for the reader is still waiting
        return real(path)

    monkeypatch.setattr(registry, "read_tensors", between)
    got = load_series_model(tmp_path / "m")
    saver[0].join()
    assert got.threshold_ == first.threshold_
    assert np.array_equal(got.bank_, first.bank_)
    monkeypatch.setattr(registry, "read_tensors", real)
    again = load_series_model(tmp_path / "m")
    assert again.threshold_ == second.threshold_ and np.array_equal(again.bank_, second.bank_)


def test_two_set_saves_into_one_folder_at_once_keep_one_set_whole(tmp_path: Path, monkeypatch) -> None:
    """Two fits of a series set (`--series-column`) saving into one folder at once both chose their folders
    from what the folder held when they began: the same names, so one's models went into the other's folders (its
    model.json then named the other fit's models), and the earlier set's folders were left behind for good. A
    set's save now holds the folder's lock from start to end: the last is kept whole, and nothing else stays."""
    import os
    import time

    data = write_long(tmp_path / "long.csv", ["a", "b"])
    r = cli("fit", data, "-o", tmp_path / "m", "--series-column", "host", "-d", "knn", "--window", "8")
    assert r.exit_code == 0, r.stderr
    sets = [load_series_model(tmp_path / "m") for _ in range(2)]
    for s in sets:
        for key in s.keys:
            s.get(key)
    for key in sets[1].keys:
        sets[1].models[key].threshold_ += 1.0
    real, rng = os.replace, np.random.default_rng(0)

    def slow(*args, **kwargs):  # renames as slow as on a network drive, unevenly: the two saves interleave
        time.sleep(float(rng.uniform(0, 0.02)))
        return real(*args, **kwargs)

    monkeypatch.setattr(os, "replace", slow)
    d = tmp_path / "m"
    for _ in range(3):
        assert run_together(lambda s: s.save(d), sets) == []
        got = load_series_model(d)
        thresholds = {key: got.get(key).threshold_ for key in got.keys}
        assert thresholds in [{key: s.models[key].threshold_ for key in s.keys} for s in sets]
        assert sorted(p.name for p in d.iterdir()) == sorted(["model.json", *got.folders.values()])


def test_a_set_saved_over_while_in_use_says_so(tmp_path: Path) -> None:
    """A set loads its models when first used (a watch, when a series first comes): another fit saved over the
    folder meanwhile deletes the earlier set's folders, and the series was "not a normalcy model (no model.json)"
    of a folder the user never made. It now says that the set was saved over by another process."""
    data = write_long(tmp_path / "long.csv", ["a", "b"])
    r = cli("fit", data, "-o", tmp_path / "m", "--series-column", "host", "-d", "knn", "--window", "8")
    assert r.exit_code == 0, r.stderr
    in_use = load_series_model(tmp_path / "m")
    in_use.get("b")
    r = cli("fit", data, "-o", tmp_path / "m", "--series-column", "host", "-d", "knn", "--window", "8")
    assert r.exit_code == 0, r.stderr
    assert in_use.get("b").threshold_ > 0  # loaded before: still scores
    with pytest.raises(InputError, match=r"the model set was saved over by another process .* series 'a'"):
        in_use.get("a")


def test_a_folder_on_a_file_system_without_locks_saves_and_loads(tmp_path: Path, monkeypatch) -> None:
    """A save locks its folder (flock): on a file system without locks (an NFS mount with nolock: ENOLCK) the
    fit failed at its end, "cannot write the model (No locks available)", its work lost, and so would every
    load (which locks too). Both go on without the lock there, as where the platform has no flock."""
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    r = cli("fit", write_series(tmp_path / "s.csv", 200), "-o", tmp_path / "m", "-d", "knn", "--window", "8")
    assert r.exit_code == 0, r.stderr
    assert load_series_model(tmp_path / "m").threshold_ > 0


def test_a_fit_starting_while_another_saves_into_its_folder_is_not_refused(tmp_path: Path) -> None:
    """A fit checks that `-o` holds no other tool's model before it starts: begun while another fit saved into
    the folder (model.json removed, the new one not yet in place, beside model.safetensors), it was refused,
    "holds a model.safetensors that is not a normalcy model's". The check waits for the save."""
    import os
    import threading

    from normalcy.files import writing

    data = write_series(tmp_path / "s.csv", 200)
    r = cli("fit", data, "-o", tmp_path / "m", "-d", "knn", "--window", "8")
    assert r.exit_code == 0, r.stderr
    saving, done = threading.Event(), threading.Event()

    def another_save() -> None:  # as write_model_files does it: model.json out, the files renamed, model.json in
        with writing(tmp_path / "m"):
            text = (tmp_path / "m" / "model.json").read_bytes()
            os.unlink(tmp_path / "m" / "model.json")
            saving.set()
            done.wait(0.5)
            (tmp_path / "m" / "model.json").write_bytes(text)

    other = threading.Thread(target=another_save)
    other.start()
    saving.wait()
    r = cli("fit", data, "-o", tmp_path / "m", "-d", "knn", "--window", "8")
    done.set()
    other.join()
    assert r.exit_code == 0, r.stderr


@pytest.mark.parametrize("when", ["models written", "model.json in place"])
def test_a_set_save_killed_outright_leaves_nothing_the_next_save_keeps(tmp_path: Path, monkeypatch,
                                                                       when: str) -> None:
    """A set's save killed outright (SIGKILL, the OOM killer, a service stop that timed out during a watch's
    save) left the new models it had written, or once its model.json was in place the earlier set's models,
    in the folder for good: every kill up to a whole set more. The next save deletes them, and nothing else (a
    person's folder in the set's folder stays)."""
    import time

    import normalcy.series.runs as runs
    from conftest import killed_outright

    data = write_long(tmp_path / "long.csv", ["a", "b", "c"])
    d = tmp_path / "m"
    r = cli("fit", data, "-o", d, "--series-column", "host", "-d", "knn", "--window", "8")
    assert r.exit_code == 0, r.stderr
    (d / "mine").mkdir()
    (d / "mine" / "notes.txt").write_text("a person's")
    fitted = load_series_model(d)
    for key in fitted.keys:
        fitted.get(key)
    earlier = set(fitted.folders.values())

    def save(say) -> None:
        if when == "models written":
            real = type(fitted.get("b")).save

            def stuck(model, folder):
                if Path(folder).name.startswith("b"):
                    say("saving")
                    time.sleep(60)  # killed here
                return real(model, folder)

            monkeypatch.setattr(type(fitted.get("b")), "save", stuck)
        else:
            def stuck(path, ignore_errors=False):
                say("saving")
                time.sleep(60)

            monkeypatch.setattr(runs.shutil, "rmtree", stuck)
        fitted.save(d)

    assert killed_outright(save) == ["saving"]
    folders = {p.name for p in d.iterdir() if p.is_dir()}
    assert len(folders) > len(earlier) + 1  # what the killed save left
    fitted.save(d)
    got = load_series_model(d)
    assert {p.name for p in d.iterdir()} == {"model.json", "mine", *got.folders.values()}
    assert [got.get(k).threshold_ for k in got.keys] == [fitted.get(k).threshold_ for k in got.keys]


def write_sampled(path: Path, n: int, minutes: int, seed: int = 0, host: str | None = None) -> str:
    """Rows of a sine ``minutes`` apart (epoch seconds), as CSV text (with ``host``: an id column too)."""
    rng = np.random.default_rng(seed)
    head = "time,host,cpu\n" if host else "time,cpu\n"
    return head + "".join(f"{1_700_000_000 + 60 * minutes * i},{host + ',' if host else ''}"
                          f"{np.sin(i / 4) + 0.05 * rng.normal():.4f}\n" for i in range(n))


def test_predict_warns_of_a_test_sampled_at_another_interval_than_training(tmp_path: Path) -> None:
    """A model of 1-minute rows scored 5-minute rows without a word (windows count rows: its patterns seen five
    times faster). The model keeps its training rows' median step; predict warns, naming the file and both
    intervals, and scores as before."""
    (tmp_path / "train.csv").write_text(write_sampled(tmp_path, 300, 1))
    (tmp_path / "same.csv").write_text(write_sampled(tmp_path, 100, 1, seed=1))
    (tmp_path / "slow.csv").write_text(write_sampled(tmp_path, 100, 5, seed=2))
    assert cli("fit", tmp_path / "train.csv", "-o", tmp_path / "m", "-d", "knn", "--window", "8").exit_code == 0
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["training"]["interval_s"] == 60.0
    r = cli("predict", tmp_path / "m", tmp_path / "same.csv", tmp_path / "slow.csv", "-o", tmp_path / "run")
    assert r.exit_code == 0, r.stderr
    line = "slow.csv: a row every 300 s, the model's training rows one every 60 s"
    assert line in r.stderr and "same.csv: a row every" not in r.stderr
    assert r.stderr.count(line) == 1  # said once, as a warning, not again among the repairs
    assert any(n.startswith(line) for n in json.loads((tmp_path / "run" / "run.json").read_text())["notes"])
    scores = (tmp_path / "run" / "scores.csv").read_text()
    # a model saved before it kept the interval loads and scores exactly as before, without the warning
    del meta["training"]
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    r = cli("predict", tmp_path / "m", tmp_path / "same.csv", tmp_path / "slow.csv", "-o", tmp_path / "old")
    assert r.exit_code == 0 and "a row every" not in r.stderr, r.stderr
    assert (tmp_path / "old" / "scores.csv").read_text() == scores
    meta["training"] = {"interval_s": "fast"}  # hand-edited: one line naming the file
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    assert "training.interval_s" in one_line_error(cli("predict", tmp_path / "m", tmp_path / "same.csv", "-o",
                                                       tmp_path / "bad"))


def test_a_set_warns_of_each_series_sampled_at_another_interval(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text(write_sampled(tmp_path, 120, 1, host="a")
                                        + write_sampled(tmp_path, 120, 10, host="b").split("\n", 1)[1])
    (tmp_path / "test.csv").write_text(write_sampled(tmp_path, 60, 1, host="a")
                                       + write_sampled(tmp_path, 60, 1, host="b").split("\n", 1)[1])
    r = cli("fit", tmp_path / "train.csv", "-o", tmp_path / "m", "--series-column", "host", "-d", "knn",
            "--window", "8")
    assert r.exit_code == 0, r.stderr
    r = cli("predict", tmp_path / "m", tmp_path / "test.csv", "-o", tmp_path / "run")
    assert r.exit_code == 0 and "scored 120 rows of 2 series" in r.stderr, r.stderr
    assert "test.csv [host=b]: a row every 60 s, the model's training rows one every 600 s" in r.stderr
    assert "[host=a]: a row every" not in r.stderr


def test_ids_named_as_a_sets_own_files_or_too_long_lose_no_other_series(tmp_path: Path) -> None:
    """An id "model.json" became a folder of that name, so the set's model.json could not be written ("Is a
    directory"), and an id over 1,000 characters failed the set's model.json check (pydantic's traceback):
    either way after every fit, and all were lost. The first gets a folder of another name (as Windows' device
    names do), the second is named as not fitted, and predict says why it has no model."""
    long_id = "x" * 1001
    ids = ["model.json", "CON", "aux.1", "web", long_id]
    path = write_long(tmp_path / "long.csv", ids, n=60)
    r = cli("fit", path, "-o", tmp_path / "m", "--series-column", "host", "--window", "8")
    assert r.exit_code == 0 and "on 4 series, one model each" in r.stderr, r.stderr
    assert "its id is 1001 characters long; a set keeps ids of at most 1000" in r.stderr
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    folders = {m["series"]: m["folder"] for m in meta["models"]}
    assert folders["web"] == "web" and (tmp_path / "m" / "model.json").is_file()
    for sid in ("model.json", "CON", "aux.1"):
        assert folders[sid].startswith(f"{sid}-") and (tmp_path / "m" / folders[sid] / "model.json").is_file()
    assert folder_name("Model.JSON", set()) != "Model.JSON" and folder_name("lpt9", set()) != "lpt9"
    assert folder_name("console", set()) == "console"  # only the device names themselves
    r = cli("predict", tmp_path / "m", path, "-o", tmp_path / "run")
    assert r.exit_code == 0 and "scored 240 rows of 4 series" in r.stderr, r.stderr
    (skipped,) = csv.DictReader(open(tmp_path / "run" / "skipped.csv"))
    assert skipped["reason"] == (f"no model for series {shortened(long_id)!r} in this set: its id is 1001 characters "
                                 "long; a set keeps ids of at most 1000")


def test_an_id_that_is_the_number_of_several_series_says_so() -> None:
    """A set of series '01' and '1' scoring id '1.0' said "no model for series '1.0' in this set", though each
    of two models is that number (one alone would score it): it says which, and to write the id as one."""
    models: dict = {"01": object(), "1": object(), "web": object()}
    ids = SeriesSet("knn", "host", "time", models=models)
    with pytest.raises(InputError, match=r"^no model for series '1.0' in this set: its series '01', '1' are all "
                                         r"that number; write the id as one of them$"):
        ids.get("1.0")
    assert ids.get("01") is models["01"] and ids.missing("2") == "no model for series '2' in this set (fitted on 3 series)"


def test_an_id_in_the_other_unicode_form_finds_its_model(tmp_path: Path) -> None:
    """'café' written with é as one character at fit and as e and an accent in the file scored (files of two
    systems: the two look the same) found no model: "no model for series 'café'". The one id of the same text
    in Unicode's other form scores it, with a note; ASCII ids are matched as written."""
    import unicodedata

    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    long = write_long(tmp_path / "long.csv", [nfc, "Web"], n=60)
    assert cli("fit", long, "-o", tmp_path / "m", "--series-column", "host", "--window", "8").exit_code == 0
    test = tmp_path / "test.csv"
    test.write_text(long.read_text(encoding="utf-8").replace(nfc, nfd).replace(",Web,", ",web,"), encoding="utf-8")
    r = cli("predict", tmp_path / "m", test, "-o", tmp_path / "run")
    assert r.exit_code == 0 and "scored 60 rows of 1 series" in r.stderr, r.stderr
    notes = json.loads((tmp_path / "run" / "run.json").read_text())["notes"]
    assert any(n.endswith(f"test.csv: series {nfd!r} scored by the model of series {nfc!r} (the same text, its "
                          "accents written in another Unicode form at fit)") for n in notes), notes
    (skipped,) = csv.DictReader(open(tmp_path / "run" / "skipped.csv"))
    assert skipped["reason"] == "no model for series 'web' in this set (fitted on 2 series)"  # case is kept apart


def test_series_column_with_a_series_folder_is_refused_at_fit(data: Path, tmp_path: Path) -> None:
    """`fit FOLDER --series-column host` ignored the column (one series a folder), yet the set said "by column
    'host'" and predict then looked for host in each test.csv: "no series could be scored" on the very folder
    fitted. It is refused before fitting, in one line."""
    for folder in (data, data / "a"):
        error = one_line_error(cli("fit", folder, "-o", tmp_path / "m", "--series-column", "host"))
        assert "--series-column names the column of a file holding many series" in error
        assert not (tmp_path / "m").exists()


def test_unknown_ids_against_a_large_set_are_looked_up_not_scanned(tmp_path: Path) -> None:
    """Each id a set has no model for was compared, as a number, with every id of the set (twice, with the
    reason): 10,000 new hosts against a set of 10,000 took minutes before the first was scored. An index built
    once answers them; the answers are the same."""
    import gc
    import time

    ids = SeriesSet("knn", "host", "time", folders={str(i): f"f{i}" for i in range(10_000)}, directory=tmp_path,
                    failed=[("tiny", "3 rows")])
    gc.collect()
    gc.disable()  # one CI run (7 December) took 1.5 s for this 0.01 s: likely a collection of the suite's heap
    try:
        started = time.perf_counter()
        why = [ids.missing(ids.key_of(str(i))) for i in range(10_000, 10_500)]
        took = time.perf_counter() - started
    finally:
        gc.enable()
    assert took < 1  # 0.01 s; 4 s and more before
    assert why[0] == "no model for series '10000' in this set (fitted on 10000 series)"
    assert ids.key_of("0042") == "42" and ids.key_of("7.0") == "7" and ids.missing("tiny").endswith(": 3 rows")


def test_a_long_files_own_notes_are_said_once_not_once_a_series(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                                ) -> None:
    """What reading a long file repaired (its time column, a decimal comma) went into each of its series'
    notes, and fit logged it, and predict printed it and kept it in run.json, once a series: the same line 3
    times here, 1,000 times for a file of 1,000 series. Said once now."""
    import logging

    path = write_long(tmp_path / "long.csv", ["a", "b", "c"], n=60)
    path.write_text(path.read_text().replace("\n17", "\n57"))  # epoch seconds after 2100: a note of the file
    with caplog.at_level(logging.INFO, logger="normalcy"):
        r = cli("fit", path, "-o", tmp_path / "m", "--series-column", "host", "--window", "8")
    assert r.exit_code == 0, r.stderr
    assert sum("time column read as epoch seconds" in m for m in caplog.messages) == 1
    r = cli("predict", tmp_path / "m", path, "-o", tmp_path / "run")
    assert r.exit_code == 0 and r.stderr.count("time column read as epoch seconds") == 1, r.stderr
    notes = json.loads((tmp_path / "run" / "run.json").read_text())["notes"]
    assert sum("time column read as epoch seconds" in n for n in notes) == 1
    assert (tmp_path / "run" / "report.html").read_text().count("time column read as epoch seconds") == 1


def test_ray_missing_is_said_before_any_series_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without Ray, `--ray` on series said so only after every series had been read (minutes for many);
    now at once, as for images and tables: a file that cannot be read gives the Ray message, not its own."""
    import normalcy
    from normalcy import api
    from normalcy.series import registry
    from normalcy.series.io import Series

    t = np.arange(100, dtype=np.float64)
    registry.create("knn", window=8).fit(Series("a", t, np.sin(t / 5)[:, None], ("v",), None),
                                          progress=False).save(tmp_path / "m")
    (tmp_path / "bad.csv").write_text("t,v\n1,2\n")

    def read(*args: object, **kwargs: object) -> None:
        raise AssertionError("a series file was read")

    monkeypatch.setattr(api, "fit_series", read)
    monkeypatch.setattr(api, "iter_series_files", read)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails, as where it is not installed
    with pytest.raises(InputError, match=r"^ray needs Ray: pip install"):  # Python's argument, not --ray
        normalcy.fit(tmp_path / "bad.csv", tmp_path / "set", series=True, series_column="v", ray="local")
    with pytest.raises(InputError, match=r"^ray needs Ray: pip install"):
        normalcy.predict(tmp_path / "m", tmp_path / "bad.csv", tmp_path / "out", ray="local")
    with pytest.raises(InputError, match=r"^--ray needs Ray: pip install"), cli_wording():  # as the CLI says it
        normalcy.predict(tmp_path / "m", tmp_path / "bad.csv", tmp_path / "out", ray="local")
