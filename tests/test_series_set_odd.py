"""A set of series in one long file (``--series-column``): odd ids and odd series, and what a predict holds."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from normalcy import api
from normalcy.series import registry
from normalcy.series.runs import RECENT_MODELS, load_series_set
from test_series_cli import cli, one_line_error, write_long  # tests/ is on sys.path


def fitted_set(tmp_path: Path, ids: list[str], n: int = 60) -> tuple[Path, Path]:
    """(the long file, the set fitted on it: knn, window 8)."""
    long = write_long(tmp_path / "long.csv", ids, n=n)
    r = cli("fit", long, "-o", tmp_path / "m", "--series-column", "host", "--detector", "knn", "--window", "8")
    assert r.exit_code == 0, r.stderr  # type: ignore[attr-defined]
    return long, tmp_path / "m"


def test_predict_of_a_set_reads_each_model_once_and_lets_it_go(tmp_path: Path, monkeypatch) -> None:
    """Predict held every series' model to the end of the run (5,000 series: 200 MB more at its peak)."""
    ids = [f"h{k}" for k in range(8)]
    long, m = fitted_set(tmp_path, ids)
    model = load_series_set(m)
    loads: list[str] = []
    load = registry.load
    monkeypatch.setattr(registry, "load", lambda d: loads.append(Path(d).name) or load(d))
    summary = api.predict(model, long, tmp_path / "run", report=False, progress=False)
    assert summary.n_series == len(ids)
    assert sorted(loads) == sorted(model.folders.values())  # each read once
    assert not model.models and len(model._recent) <= RECENT_MODELS
    model.save(tmp_path / "copy")  # saved elsewhere: its models read one at a time too
    assert not model.models and sorted(load_series_set(tmp_path / "copy").keys) == sorted(ids)
    rows = list(csv.DictReader(open(tmp_path / "run" / "scores.csv")))
    assert len(rows) == 60 * len(ids) and np.isfinite([float(x["score"]) for x in rows]).all()


def write_rows(path: Path, lengths: dict[str, int], values: dict[str, str] | None = None) -> Path:
    """A long file: column host names each series (``lengths``: its rows), a minute apart, one metric cpu (a
    sine, or the text in ``values`` for that series)."""
    values = values or {}
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["time", "host", "cpu"])
        for i in range(max(lengths.values())):
            w.writerows([1_700_000_000 + 60 * i, h, values.get(h, f"{np.sin(i / (4 + k)):.4f}")]
                        for k, (h, n) in enumerate(lengths.items()) if i < n)
    return path


def test_long_ids_are_shortened_in_messages_and_kept_whole_in_files(tmp_path: Path, caplog) -> None:
    """A 10,000-character id (and ids of 900) were printed whole in each line that named them."""
    ok, short, huge, new = "h" * 900 + "-ok", "h" * 900 + "-short", "x" * 10_000, "n" * 900 + "-new"
    mid = "m" * 900 + "-mid"  # read, but too short for its window: the detector's error names it
    train = write_rows(tmp_path / "train.csv", {ok: 60, short: 5, huge: 60, "g": 60, mid: 17})
    test = write_rows(tmp_path / "test.csv", {ok: 60, short: 60, huge: 60, new: 60, "g": 60})
    r = cli("fit", train, "-o", tmp_path / "m", "--series-column", "host", "--detector", "knn", "--window", "8")
    assert r.exit_code == 0, r.stderr  # type: ignore[attr-defined]
    r2 = cli("predict", tmp_path / "m", test, "-o", tmp_path / "run")
    assert r2.exit_code == 0, r2.stderr  # type: ignore[attr-defined]
    said = r.stderr.splitlines() + r2.stderr.splitlines() + caplog.messages  # type: ignore[attr-defined]
    assert said and max(map(len, said)) < 600, max(said, key=len)[:300]
    assert any("…" in line and line.count("h-short") for line in said)  # its end kept: told apart from ok
    notes = json.loads((tmp_path / "run" / "run.json").read_text())["notes"]
    assert all(len(n) < 600 for n in notes)
    assert {x["series"] for x in csv.DictReader(open(tmp_path / "run" / "scores.csv"))} == {ok, "g"}  # whole
    skipped = {x["series"] for x in csv.DictReader(open(tmp_path / "run" / "skipped.csv"))}
    assert skipped == {f"{test} [host={k}]" for k in (short, huge, new)}


def test_ids_of_bytes_that_are_not_utf8_name_the_file_and_column(tmp_path: Path) -> None:
    """A Parquet id column of bytes that are not UTF-8 said only "cannot read as a parquet table (Invalid UTF8
    payload)"; bytes that are UTF-8 are read as their text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for name, bad in (("bad.parquet", b"\xff\xfeA"), ("good.parquet", b"A")):
        pq.write_table(pa.table({"time": np.tile(np.arange(40) + 1_700_000_000, 2),
                                 "host": pa.array([bad] * 40 + [b"ok"] * 40, pa.binary()),
                                 "cpu": np.sin(np.arange(80) / 5)}), tmp_path / name)
    error = one_line_error(cli("fit", tmp_path / "bad.parquet", "-o", tmp_path / "m", "--series-column", "host"))
    assert f"{tmp_path / 'bad.parquet'}: column 'host' holds bytes that are not UTF-8 text (row 1: " in error, error
    pq.write_table(pa.table({"time": np.arange(40), "host": pa.array([[1, 2]] * 40), "cpu": np.zeros(40)}),
                   tmp_path / "list.parquet")
    error = one_line_error(cli("fit", tmp_path / "list.parquet", "-o", tmp_path / "m", "--series-column", "host"))
    assert f"{tmp_path / 'list.parquet'}: column 'host' holds list<element: int64> values, which are not ids" in error
    r = cli("fit", tmp_path / "good.parquet", "-o", tmp_path / "m", "--series-column", "host", "--detector", "knn",
            "--window", "8")
    assert r.exit_code == 0 and sorted(load_series_set(tmp_path / "m").keys) == ["A", "ok"], r.stderr  # type: ignore[attr-defined]


def test_what_scoring_a_long_files_series_logs_names_the_series_once_a_kind(tmp_path: Path, caplog) -> None:
    """A value far out of the training range in 3 series of one file: 3 warnings that named the file alone."""
    ids = ["a", "b", "c", "d"]
    _, m = fitted_set(tmp_path, ids)
    test = write_rows(tmp_path / "test.csv", {h: 40 for h in ids}, values={h: "1e300" for h in ids[1:]})
    caplog.set_level("WARNING", "normalcy")
    r = cli("predict", m, test, "-o", tmp_path / "run")
    assert r.exit_code == 0 and "scored 160 rows of 4 series" in r.stderr, r.stderr  # type: ignore[attr-defined]
    far = [msg for msg in caplog.messages if "spreads from the training median" in msg]
    assert len(far) == 1 and far[0].startswith("series 'b': ") and "test.csv: 40 value(s) more than" in far[0], far
    assert "... and 2 more series ('c', 'd'): the same as series 'b'" in caplog.messages


def test_a_series_folder_linked_out_of_the_set_is_refused_and_the_others_scored(tmp_path: Path) -> None:
    """A set's model.json names its folders safely (no "../"), but a series folder that is a symbolic link to
    another model elsewhere was loaded and scored with it without a word (and a watch --save wrote there), where
    a model's file linked out of its folder is refused. It is refused too, naming the folder; the other series
    are scored. A link within the set still loads."""
    long, m = fitted_set(tmp_path, ["a", "b"])
    other = tmp_path / "elsewhere"
    (m / "a").rename(other)
    (m / "a").symlink_to(other)
    summary = api.predict(load_series_set(m), long, tmp_path / "run", report=False, progress=False)
    assert summary.n_series == 1
    why = f"{m / 'a'}: a symbolic link to a folder outside the model set, refused"
    assert [reason for _, reason in summary.skipped] == [why]
    (m / "a").unlink()
    other.rename(m / "a2")
    (m / "a").symlink_to(m / "a2")
    assert load_series_set(m).get("a").columns_ == ("cpu",)


def test_a_series_folder_of_another_detector_is_refused_and_the_others_scored(tmp_path: Path) -> None:
    """A knn set whose series folder holds a pca model (a folder copied from another set) was scored with pca
    without a word, while run.json and the report said knn. That series is refused naming its folder and both
    detectors; the other is scored as before. An auto set's series are auto models (their members inside)."""
    long, m = fitted_set(tmp_path, ["a", "b"])
    assert api.predict(load_series_set(m), long, tmp_path / "before", report=False, progress=False).n_series == 2
    r = cli("fit", long, "-o", tmp_path / "p", "--series-column", "host", "--detector", "pca", "--window", "8")
    assert r.exit_code == 0, r.stderr  # type: ignore[attr-defined]
    folder = m / load_series_set(m).folders["a"]
    for name in ("model.json", "model.safetensors"):
        (folder / name).write_bytes((tmp_path / "p" / load_series_set(tmp_path / "p").folders["a"] / name).read_bytes())
    summary = api.predict(load_series_set(m), long, tmp_path / "run", report=False, progress=False)
    assert summary.n_series == 1
    assert [reason for _, reason in summary.skipped] == [
        f"{folder}: holds a pca model, where the set's model.json says knn (a folder of another set?), refused"]
    with open(tmp_path / "run" / "scores.csv") as now, open(tmp_path / "before" / "scores.csv") as earlier:
        scores = {x["time"]: x["score"] for x in csv.DictReader(now)}
        kept = {x["time"]: x["score"] for x in csv.DictReader(earlier) if x["series"] == "b"}
    assert scores == kept and len(kept) == 60  # series b scored as before
    assert json.loads((tmp_path / "run" / "run.json").read_text())["detector"] == "knn"
