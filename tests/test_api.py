"""The Python API (normalcy.fit, predict, score_batch, load): what the command line calls, used directly."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import normalcy
from normalcy.errors import InputError


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_fit_predict_load_on_images(synthetic_root: Path, tmp_path: Path) -> None:
    det = normalcy.fit(synthetic_root / "train" / "good", tmp_path / "model", "gaussian", image_size="64",
                       progress=False)
    run = normalcy.predict(tmp_path / "model", [synthetic_root / "test"], tmp_path / "run", report=False,
                           progress=False)
    rows = _rows(tmp_path / "run" / "scores.csv")
    assert (run.kind, run.n_scored, run.skipped) == ("images", 8, []) and len(rows) == 8
    assert list(rows[0]) == ["path", "score", "decision", "threshold", "overlay"]
    # One rule, written as 1/0: a score at or above the threshold is anomalous.
    assert all(r["decision"] == str(int(float(r["score"]) >= det.threshold_)) for r in rows)
    assert run.n_anomalous == sum(r["decision"] == "1" for r in rows)
    assert pq.read_table(tmp_path / "run" / "scores.parquet").num_rows == 8
    assert json.loads((tmp_path / "run" / "run.json").read_text())["kind"] == "images"
    loaded = normalcy.load(tmp_path / "model")
    again = normalcy.predict(loaded, [synthetic_root / "test"], tmp_path / "again", heatmaps=False, report=False,
                             progress=False)
    assert [r["score"] for r in _rows(tmp_path / "again" / "scores.csv")] == [r["score"] for r in rows]
    assert again.n_anomalous == run.n_anomalous


def test_fit_predict_load_on_a_table(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    X[:3] += 8  # three planted outliers
    X[5, 1] = np.nan  # not scored: listed in skipped.csv
    ids = [f"obj{i}" for i in range(len(X))]
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"name": ids, "a": X[:, 0], "b": X[:, 1], "c": X[:, 2]}), path)
    model = normalcy.fit(path, tmp_path / "m", "knn", id_column="name", fpr=0.05)
    assert model.columns == ["a", "b", "c"] and [i for i, _ in model.skipped_fit_] == ["obj5"]
    run = normalcy.predict(tmp_path / "m", [path], tmp_path / "run", id_column="name")
    rows = _rows(tmp_path / "run" / "scores.csv")
    assert (run.kind, run.n_scored, len(rows)) == ("vectors", 199, 199)
    assert list(rows[0]) == ["name", "score", "decision", "threshold"]
    assert {r["name"] for r in rows if r["decision"] == "1"} >= {"obj0", "obj1", "obj2"}
    assert [r["name"] for r in _rows(tmp_path / "run" / "skipped.csv")] == ["obj5"]
    loaded = normalcy.load(tmp_path / "m")
    assert loaded.threshold_ == pytest.approx(model.threshold_) and loaded.columns == model.columns


def test_evaluate_takes_every_kind_of_labelled_data(synthetic_root: Path, tmp_path: Path) -> None:
    """The metrics ``normalcy eval --json`` prints, from Python: images, a table, a series folder."""
    m = normalcy.evaluate(synthetic_root, "gaussian", image_size="64", progress=False,
                          report=tmp_path / "report.html")
    assert m["detector"] == "gaussian" and 0.5 < m["image_auroc"] <= 1 and (tmp_path / "report.html").is_file()
    with pytest.raises(InputError, match=r": test names the labelled table to score"):  # Python's argument
        normalcy.evaluate(synthetic_root, "gaussian", test=tmp_path / "t.csv")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    y = np.zeros(300, int)
    X[:20] += 6
    y[:20] = 1
    table = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "y": y}), table)
    assert normalcy.evaluate(table, "knn", label_column="y")["auroc"] > 0.9
    with pytest.raises(InputError, match=r"eval on a table needs label_column \(0 normal"):
        normalcy.evaluate(table, "knn")
    folder = tmp_path / "series"
    folder.mkdir()
    t = np.arange(600)
    v = np.sin(2 * np.pi * t / 24) + 0.05 * rng.normal(size=600)
    label = np.zeros(600, int)
    v[450:460] += 4
    label[450:460] = 1
    with open(folder / "train.csv", "w") as fh:  # a row index as pandas writes it: no name, read as the time
        fh.write(",value\n" + "".join(f"{i},{x}\n" for i, x in zip(t[:300], v[:300])))
    with open(folder / "test.csv", "w") as fh:
        fh.write(",value,label\n" + "".join(f"{i},{x},{k}\n" for i, x, k in zip(t[300:], v[300:], label[300:])))
    m = normalcy.evaluate(folder, "knn", window=8)
    assert m["event_f1"] > 0 and m["skipped"] == []
    assert "series/train.csv: column '' read as the time column (numbers rising strictly from row to row); give " \
        "time_column to name another" in m["notes"]  # Python's argument


def test_the_decision_boundary_is_at_or_above_the_threshold(tmp_path: Path) -> None:
    """A score exactly at the threshold is anomalous, in every kind of run."""
    from normalcy.runs.format import write_scores

    decisions = write_scores(tmp_path, "id", ["below", "at", "above"], np.array([0.5 - 1e-12, 0.5, 0.75]), 0.5)
    assert decisions.tolist() == [False, True, True]
    assert [r["decision"] for r in _rows(tmp_path / "scores.csv")] == ["0", "1", "1"]
    assert pq.read_table(tmp_path / "scores.parquet").column("decision").to_pylist() == [0, 1, 1]


@pytest.mark.parametrize("odd", ["", 'a,"b"', "two\nlines", "-1.5", "=cmd", "caf\udce9"])
def test_scores_csv_is_what_csv_writer_writes_row_by_row(tmp_path: Path, odd: str) -> None:
    """scores.csv is written a column at a time and, where no cell needs quotes, joined without csv.writer (a
    1,000,000-row series took 6 s a row at a time): the bytes are those of the former row-by-row writer, with
    quotes, a formula guard or an undecodable byte in an id, one series name per row and overlays."""
    from normalcy.runs.format import CSV_ENCODING, _number, csv_cell, write_scores

    ids = [f"2024-03-01 00:{i:02d}:00" for i in range(6)] + ([odd] if odd else [])
    scores = np.array([0.0, 1.0, 0.25, 1e-7, 3.5e16, 2.0 / 3.0, 7.0][:len(ids)])
    names = ["web-1"] * 3 + ["+db"] * (len(ids) - 3)
    thresholds = np.where(np.arange(len(ids)) < 3, 0.5, 1.25)
    overlays = [f"overlays/{i}.png" for i in range(len(ids))]
    decisions = write_scores(tmp_path, "time", ids, scores, thresholds, overlays, series=names)
    with open(tmp_path / "ref.csv", "w", newline="", **CSV_ENCODING) as fh:
        writer = csv.writer(fh)
        writer.writerow(["time", "series", "score", "decision", "threshold", "overlay"])
        for i, x, d, t, n, o in zip(ids, scores, decisions, thresholds, names, overlays):
            writer.writerow([csv_cell(i), csv_cell(n), _number(x), int(d), _number(t), o])
    assert (tmp_path / "scores.csv").read_bytes() == (tmp_path / "ref.csv").read_bytes()
    table = pq.read_table(tmp_path / "scores.parquet").to_pydict()
    assert table["time"] == [i.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for i in ids]
    assert table["series"] == names and table["score"] == scores.tolist()


def test_unknown_settings_and_unreadable_inputs_are_refused(synthetic_root: Path, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="bakcbone"):
        normalcy.fit(synthetic_root / "train" / "good", bakcbone="x")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_bytes(b"not an image")
    det = normalcy.fit(synthetic_root / "train" / "good", image_size="64", progress=False)
    with pytest.raises(InputError, match="no image could be read"):
        normalcy.predict(det, [tmp_path / "junk"], tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("top", [10**12, -1])
def test_top_out_of_range_is_refused_before_any_work(tmp_path: Path, top: int) -> None:
    """``top`` from Python had no check at all: a huge one held every image's gallery picture in memory until the
    report was written, a negative one emptied the gallery. Refused as the CLI refuses it, before any scoring."""
    with pytest.raises(InputError, match=r"^top must be between 0 and 1000"):
        normalcy.predict(tmp_path / "no-model", [tmp_path / "no-images"], tmp_path / "run", top=top)
    with pytest.raises(InputError, match=r"^top must be between 0 and 1000"):
        normalcy.score_batch([tmp_path / "no-images"], tmp_path / "run", top=top)
    assert not (tmp_path / "run").exists()


def test_fitting_a_data_set_root_is_refused(synthetic_root: Path) -> None:
    """fit on a data set's root (as eval takes it) fitted its defective test images and its ground-truth masks
    as normal images, without a word."""
    with pytest.raises(InputError, match=r"is a data set in MVTec AD layout: fit on its normal images, .*train"):
        normalcy.fit(synthetic_root, image_size="64", progress=False)


def test_an_unwritable_eval_report_is_refused_before_the_evaluation(synthetic_root: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """--report naming a folder ended eval with a traceback (IsADirectoryError) after the fit and the scoring,
    its metrics unprinted."""
    import normalcy.evaluation.evaluate as evaluation

    monkeypatch.setattr(evaluation, "run_eval", lambda *a, **k: pytest.fail("evaluated before refusing"))
    (tmp_path / "file.txt").write_text("")
    for report, why in ((tmp_path, "a folder; report names the HTML file to write"),  # Python's argument
                        (tmp_path / "file.txt" / "r.html", "file.txt is a file")):
        with pytest.raises(InputError, match=why):
            normalcy.evaluate(synthetic_root, report=report, image_size="64", progress=False)


def test_fit_takes_folders_among_a_list_of_paths(synthetic_root: Path, tmp_path: Path) -> None:
    """fit([folder, ...]) took each folder for one unreadable image ("needs at least 5 normal training images,
    got 1"), where predict reads a folder's images; a model folder inside a listed folder was not refused."""
    good = sorted((synthetic_root / "train" / "good").iterdir())
    half = tmp_path / "half"
    half.mkdir()
    for p in good[:6]:
        (half / p.name).write_bytes(p.read_bytes())
    with pytest.raises(InputError, match="inside the training folder"):
        normalcy.fit([half, *good[6:]], half / "model", image_size="64", progress=False)
    det = normalcy.fit([half, *good[6:]], image_size="64", progress=False)
    assert (det.n_train_, det.skipped_fit_) == (12, [])


def _table(tmp_path: Path) -> Path:
    path = tmp_path / "t.csv"
    X = np.random.default_rng(0).normal(size=(60, 3))
    path.write_text("a,b,c\n" + "".join(f"{x},{y},{z}\n" for x, y, z in X))
    return path


def test_one_path_is_one_input(tmp_path: Path) -> None:
    """predict(model, "t.csv") read each character as a file ("t: a vector model scores tables ...")."""
    table = _table(tmp_path)
    model = normalcy.fit(table, detector="knn", progress=False)
    run = normalcy.predict(model, str(table), tmp_path / "run", progress=False)
    assert (run.n_scored, run.source) == (60, table)


def test_data_in_memory_is_named_not_read_as_files(tmp_path: Path) -> None:
    """fit(DataFrame) read its column names as image files ("gaussian needs at least 5 normal training images,
    got 4"); fit(array) was a TypeError from deep inside. Each now says what fits data in memory."""
    pd = pytest.importorskip("pandas")
    X = np.random.default_rng(0).normal(size=(60, 4))
    for data in (pd.DataFrame(X, columns=list("abcd")), X, X.tolist()):
        with pytest.raises(InputError, match=r"fit takes a path or a list of paths .*EnsembleDetector\(\)\.fit"):
            normalcy.fit(data, progress=False)
    model = normalcy.fit(_table(tmp_path), detector="knn", progress=False)
    with pytest.raises(InputError, match="predict takes a path or a list of paths"):
        normalcy.predict(model, pd.DataFrame(X[:, :3], columns=list("abc")), tmp_path / "run", progress=False)


@pytest.mark.parametrize("setting", [{"steps": 5}, {"time_budget": 5.0}])
def test_training_options_on_a_table_are_refused(setting: dict, tmp_path: Path) -> None:
    """No table detector trains: --steps and --time-budget were ignored without a word."""
    with pytest.raises(InputError, match="applies to detectors that train; a table's detectors"):
        normalcy.fit(_table(tmp_path), detector="knn", progress=False, **setting)


def test_predict_with_an_unfitted_or_bare_detector_says_so(tmp_path: Path) -> None:
    """An unfitted image detector failed inside predict with "float() argument must be ... not 'NoneType'", an
    unfitted series detector with an AttributeError ('window_'), a bare vector detector (fitted or not) with
    "'KNNDetector' object has no attribute 'threshold'", and nothing was written."""
    from sklearn.exceptions import NotFittedError

    from normalcy.detectors import create
    from normalcy.series.registry import create as create_series
    from normalcy.vectors import KNNDetector

    table = _table(tmp_path)
    for det in (create("gaussian"), create_series("knn")):
        with pytest.raises(NotFittedError, match="is not fitted: call fit"):
            normalcy.predict(det, table, tmp_path / "run", progress=False)
    X = np.random.default_rng(0).normal(size=(20, 3))
    for det in (KNNDetector(), KNNDetector().fit(X)):
        with pytest.raises(InputError, match=r"a bare KNNDetector scores arrays itself .*normalcy.fit\('table.csv'\)"):
            normalcy.predict(det, table, tmp_path / "run", progress=False)
    with pytest.raises(InputError, match="not a dict"):
        normalcy.predict({}, table, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
