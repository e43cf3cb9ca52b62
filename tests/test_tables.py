"""Tables of feature vectors on the command line: CSV, Parquet and .npz in; fit, predict, eval; bad rows named."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from test_cli import normalcy

from normalcy.errors import InputError, cli_wording
from normalcy.vectors import (
    ECODDetector,
    EnsembleDetector,
    GaussianDetector,
    IForestDetector,
    KNNDetector,
)
from normalcy.vectors.tables import (
    eval_table,
    fit_table,
    load_vector_model,
    read_table,
    save_vector_model,
    score_table,
    threshold_of,
)


def _rows(n: int = 400, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Correlated normal rows, and 5 % planted outliers far off the normals' plane (label 1)."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d))
    X = rng.normal(size=(n, d)) @ mix
    y = np.zeros(n, dtype=np.int64)
    bad = rng.choice(n, n // 20, replace=False)
    X[bad] += rng.normal(0, 6, size=(len(bad), d))
    y[bad] = 1
    return X, y


def _write(path: Path, X: np.ndarray, y: np.ndarray) -> Path:
    cols = {f"f{j}": X[:, j] for j in range(X.shape[1])}
    cols.update(label=y, name=[f"obj{i}" for i in range(len(y))])
    table = pa.table(cols)
    if path.suffix == ".csv":
        pcsv.write_csv(table, path)
    elif path.suffix == ".parquet":
        pq.write_table(table, path)
    else:
        np.savez(path, X=X, y=y)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".npz"])
def test_every_format_reads_the_same_rows(tmp_path: Path, suffix: str) -> None:
    X, y = _rows()
    label = "y" if suffix == ".npz" else "label"
    t = read_table(_write(tmp_path / f"t{suffix}", X, y), label_column=label)
    np.testing.assert_allclose(t.X, X)
    np.testing.assert_array_equal(t.labels, y)
    assert t.ignored == ([] if suffix == ".npz" else ["name"])  # text is not a feature, and the user is told


def test_bad_tables_are_one_line_naming_the_file(tmp_path: Path) -> None:
    X, y = _rows()
    path = _write(tmp_path / "t.csv", X, y)
    with pytest.raises(InputError, match="no column 'lable'.*'label'"):
        read_table(path, label_column="lable")
    with pytest.raises(InputError, match="columns \\['f9'\\] are missing"):
        read_table(path, columns=["f0", "f9"])
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match="junk.parquet: cannot read as a parquet table"):
        read_table(tmp_path / "junk.parquet")
    with pytest.raises(InputError, match="missing.csv: file not found"):
        read_table(tmp_path / "missing.csv")


def test_nan_rows_are_skipped_and_named_never_scored(tmp_path: Path) -> None:
    X, y = _rows()
    X[7, 2] = np.nan
    X[9, 0] = np.inf
    t = read_table(_write(tmp_path / "t.parquet", X, y), label_column="label", id_column="name")
    det, skipped = fit_table(t, "gaussian")
    assert [s[0] for s in skipped] == ["obj7", "obj9"] and "f2" in skipped[0][1]
    scores, mask, skipped = score_table(det, t)
    assert not mask[[7, 9]].any() and np.isnan(scores[[7, 9]]).all() and np.isfinite(scores[mask]).all()


def test_rows_without_a_label_are_skipped_and_named_not_the_whole_table(tmp_path: Path) -> None:
    """One empty, NaN or "?" cell in the label column refused the whole table at fit and at eval, naming no row.
    Such a row is now skipped as a row with a missing value is: named, neither fitted on nor scored."""
    X, y = _rows()
    labels = [str(v) for v in y]
    labels[3], labels[5], labels[8] = "", "nan", "?"
    cols = {f"f{j}": X[:, j] for j in range(X.shape[1])}
    cols.update(label=labels, name=[f"obj{i}" for i in range(len(y))])
    pcsv.write_csv(pa.table(cols), tmp_path / "t.csv")
    t = read_table(tmp_path / "t.csv", label_column="label", id_column="name")
    det, skipped = fit_table(t, "knn")
    assert [s[0] for s in skipped] == ["obj3", "obj5", "obj8"] and "no label in 'label'" in skipped[0][1]
    assert "'?' is not a number" in skipped[2][1]
    assert det.n_samples_fit_ == int((y == 0).sum()) - int((y[[3, 5, 8]] == 0).sum())
    result = eval_table(t, "knn")
    assert result["n_test"] == 120 and [s[0] for s in result["skipped"]] == ["obj3", "obj5", "obj8"]  # 30 % of 397
    r = normalcy("fit", str(tmp_path / "t.csv"), "-o", str(tmp_path / "m"), "--label-column", "label",
                 "--id-column", "name")
    assert r.returncode == 0 and "obj3: no label in 'label'" in r.stderr and "obj8: label: '?'" in r.stderr, r.stderr
    pcsv.write_csv(pa.table({"f0": [1.0, 2.0, 3.0], "label": ["normal", "anomaly", "normal"]}), tmp_path / "text.csv")
    with pytest.raises(InputError, match="label column 'label' must hold numbers"):
        read_table(tmp_path / "text.csv", label_column="label")


@pytest.mark.parametrize("name", ["gaussian", "knn", "iforest", "ecod", "ensemble"])
def test_saved_model_scores_exactly_as_fitted(tmp_path: Path, name: str) -> None:
    X, y = _rows()
    t = read_table(_write(tmp_path / "t.npz", X, y), label_column="y")
    det, _ = fit_table(t, name, seed=3)
    save_vector_model(det, name, t.columns, tmp_path / "m")
    again, meta = load_vector_model(tmp_path / "m")
    np.testing.assert_array_equal(again.anomaly_score(X), det.anomaly_score(X))
    assert meta.threshold == threshold_of(det) and meta.columns == t.columns


@pytest.mark.parametrize("det", [
    GaussianDetector(fpr=np.float64(0.05), folds=np.int64(3), random_state=np.int64(2)),
    KNNDetector(fpr=np.float32(0.05), n_neighbors=np.int64(3), nprobe=np.int32(4)),
    IForestDetector(n_estimators=np.int64(20), max_samples=np.int64(50), max_features=np.float32(0.5),
                    random_state=np.int64(0)),
    EnsembleDetector([KNNDetector(n_neighbors=np.int64(2)), ECODDetector(fpr=np.float16(0.1))],
                     random_state=np.int64(3)),
], ids=["gaussian", "knn", "iforest", "ensemble"])
def test_numpy_numbers_as_parameters_fit_save_and_load(tmp_path: Path, det: Any) -> None:
    """Parameters from numpy (a grid's np.arange, np.float32(0.05)): kNN's search crashed in faiss on an np.int64
    k, and every other detector saved a model whose numpy scalars loading refuses (not on the allow-list). The
    check of an fpr changed after fit took np.float32(0.05) for one (its threshold set again at float64's 0.05
    lay a hair from float32's) and refused the save."""
    X, _ = _rows()
    scores = det.fit(X).anomaly_score(X)
    save_vector_model(det, "ensemble" if isinstance(det, EnsembleDetector) else det.__module__.rsplit(".")[-1],
                      [f"x{j}" for j in range(X.shape[1])], tmp_path / "m")
    again, _ = load_vector_model(tmp_path / "m")
    np.testing.assert_array_equal(again.anomaly_score(X), scores)


def test_a_model_file_with_foreign_types_is_refused(tmp_path: Path) -> None:
    """skops loads only the allow-listed types: a model.skops holding anything else runs nothing."""
    import skops.io as sio
    from sklearn.pipeline import Pipeline

    X, y = _rows()
    t = read_table(_write(tmp_path / "t.npz", X, y), label_column="y")
    det, _ = fit_table(t, "knn")
    save_vector_model(det, "knn", t.columns, tmp_path / "m")
    sio.dump(Pipeline([("d", det)]).fit(X), tmp_path / "m" / "model.skops")  # a type no vector model holds
    with pytest.raises(InputError, match="refused|does not match"):
        load_vector_model(tmp_path / "m")


def test_eval_finds_the_planted_outliers(tmp_path: Path) -> None:
    X, y = _rows(n=600)
    m = eval_table(read_table(_write(tmp_path / "t.csv", X, y), label_column="label"), "ensemble")
    assert m["auroc"] > 0.9 and m["n_test"] == 180 and m["n_test_anomalous"] == 9
    assert m["n_train"] == 420 - 21  # the training part's 21 anomalies were left out


def test_cli_fit_predict_eval_on_tables(tmp_path: Path) -> None:
    X, y = _rows()
    X[5, 1] = np.nan
    train = _write(tmp_path / "train.parquet", X, y)
    score = _write(tmp_path / "score.csv", X, y)
    r = normalcy("fit", str(train), "-o", str(tmp_path / "m"), "--label-column", "label", "--detector", "knn")
    assert r.returncode == 0, r.stderr
    assert "left out of the features: name" in r.stderr and "5: missing value" in r.stderr
    r = normalcy("predict", str(tmp_path / "m"), str(score), str(tmp_path / "absent.csv"), "-o",
                 str(tmp_path / "run"), "--id-column", "name")
    assert r.returncode == 0, r.stderr  # the missing table is named, the other one scored
    assert "absent.csv: file not found" in r.stderr
    with open(tmp_path / "run" / "score" / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(X) - 1 and "obj5" not in {r["name"] for r in rows}
    flagged = {r["name"] for r in rows if r["decision"] == "1"}
    assert len(flagged & {f"obj{i}" for i in np.flatnonzero(y)}) >= 0.8 * y.sum()
    assert pq.read_table(tmp_path / "run" / "score" / "scores.parquet").num_rows == len(rows)
    assert "obj5" in (tmp_path / "run" / "score" / "skipped.csv").read_text()
    r = normalcy("eval", str(train), "--label-column", "label", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["auroc"] > 0.9
    r = normalcy("eval", str(train))
    assert r.returncode == 1 and "needs --label-column" in r.stderr
    (tmp_path / "images").mkdir()  # a folder is its tables (since 6 December); an image is no table
    (tmp_path / "images" / "part.png").write_bytes(b"")
    r = normalcy("predict", str(tmp_path / "m"), str(tmp_path / "images"))
    assert r.returncode == 1 and "a folder without tables" in r.stderr
    r = normalcy("predict", str(tmp_path / "m"), str(tmp_path / "images" / "part.png"))
    assert r.returncode == 1 and "scores tables" in r.stderr


def test_columns_that_are_no_measurement_are_left_out_with_a_note(tmp_path: Path) -> None:
    """An .npz's y (ADBench's labels) was fitted as a feature, and the row index pandas writes by default too:
    the first told the anomalies apart by their label, the second put every new row beyond the fitted ones."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ad.npz", X=rng.normal(size=(30, 3)), y=(np.arange(30) < 3).astype(int))
    t = read_table(tmp_path / "ad.npz")
    assert t.columns == ["x0", "x1", "x2"] and "y" not in t.ignored  # left out with its own note, not as text
    assert read_table(tmp_path / "ad.npz", label_column="y").columns == ["x0", "x1", "x2"]
    (tmp_path / "ix.csv").write_text(",a,b\n" + "".join(f"{i},{i % 3},{i % 5}\n" for i in range(20)))
    assert read_table(tmp_path / "ix.csv").columns == ["a", "b"]
    (tmp_path / "ids.csv").write_text("name,a\n007,1\n010,2\n,3\n")
    assert read_table(tmp_path / "ids.csv", id_column="name").ids == ["007", "010", ""]  # as written


def test_the_row_index_of_a_filtered_frame_is_left_out(tmp_path: Path) -> None:
    """df[df.a > 0].to_parquet() keeps the index as '__index_level_0__', and to_csv() writes it unnamed with gaps
    (0, 2, 5, ...): each was fitted on as a feature (a new row's index lies beyond the fitted ones)."""
    import pandas as pd

    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
    df[df.a > 0].to_parquet(tmp_path / "f.parquet")
    df[df.a > 0].to_csv(tmp_path / "f.csv")
    df.sample(frac=0.5, random_state=0).to_csv(tmp_path / "s.csv")
    for name in ("f.parquet", "f.csv", "s.csv"):
        assert read_table(tmp_path / name).columns == ["a", "b", "c"], name
    r = normalcy("fit", str(tmp_path / "f.parquet"), "-o", str(tmp_path / "m"))
    assert r.returncode == 0 and "'__index_level_0__' (the row index pandas writes into Parquet) left out" in \
        " ".join(r.stderr.split()), r.stderr
    (tmp_path / "x.csv").write_text(",a\n" + "".join(f"{i * 0.5},{i % 3}\n" for i in range(20)))  # not whole
    assert read_table(tmp_path / "x.csv").columns == ["", "a"]


def test_fit_names_at_most_20_text_columns_left_out(tmp_path: Path) -> None:
    """fit printed every text column it left out on one line: 5,000 of them, a 50 kB line."""
    from typer.testing import CliRunner

    from normalcy.cli import app

    header = ",".join(["a", "b"] + [f"t{j}" for j in range(30)])
    rows = [",".join([str(i % 3), str(i % 5)] + [f"w{i}"] * 30) for i in range(10)]
    (tmp_path / "t.csv").write_text("\n".join([header, *rows]) + "\n")
    r = CliRunner().invoke(app, ["fit", str(tmp_path / "t.csv"), "-o", str(tmp_path / "m"), "-d", "knn"])
    assert r.exit_code == 0, r.output
    said = " ".join(r.output.split())
    assert "left out of the features: " + ", ".join(f"t{j}" for j in range(20)) + " and 10 more" in said, said


def test_a_label_column_fitted_as_a_feature_is_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """fit without --label-column fitted a column `label` of 0 and 1 as a feature, without a word: the model
    told anomalies apart by their label, and predict then refused every table without it. It is said."""
    rows = "".join(f"{i % 3},{i % 5},{int(i % 10 == 0)}\n" for i in range(30))
    (tmp_path / "t.csv").write_text("a,b,Label\n" + rows)
    with caplog.at_level("WARNING", logger="normalcy"):
        assert read_table(tmp_path / "t.csv").columns == ["a", "b", "Label"]  # still a feature: results unchanged
        assert "t.csv: column 'Label' holds only 0 and 1, like labels, and is fitted on as a feature; if it is " \
               "the labels, give label_column='Label'" in caplog.text  # Python's argument
        caplog.clear()
        read_table(tmp_path / "t.csv", label_column="Label")
        (tmp_path / "n.csv").write_text("a,class\n" + "".join(f"{i},{i % 3}\n" for i in range(10)))  # 0, 1, 2
        read_table(tmp_path / "n.csv")
    assert not caplog.text


def test_one_column_as_both_label_and_id_is_refused(tmp_path: Path) -> None:
    """--label-column y --id-column y fitted, every row named by its label ("0: missing value ...")."""
    (tmp_path / "t.csv").write_text("a,y\n" + "".join(f"{i % 3},{int(i == 0)}\n" for i in range(10)))
    with pytest.raises(InputError, match=r"t.csv: label_column and id_column both name 'y'"):  # Python's arguments
        read_table(tmp_path / "t.csv", label_column="y", id_column="y")
    with pytest.raises(InputError, match=r"t.csv: --label-column and --id-column both name 'y'"), cli_wording():
        read_table(tmp_path / "t.csv", label_column="y", id_column="y")  # as the command line says it


def test_a_column_without_any_value_is_left_out_not_every_row(tmp_path: Path) -> None:
    """A trailing separator on every line (an unnamed empty column) or an empty column made every row one with a
    missing value: no such table could be fitted ("fewer than 2 normal rows"). The column is left out, said once."""
    (tmp_path / "trail.csv").write_text("a,b,\n" + "".join(f"{i % 3},{i % 5},\n" for i in range(20)))
    (tmp_path / "gap.csv").write_text("a,c,b\n" + "".join(f"{i % 3},,{i % 5}\n" for i in range(20)))
    for name in ("trail.csv", "gap.csv"):
        r = normalcy("fit", str(tmp_path / name), "-o", str(tmp_path / name.replace(".", "_")))
        assert r.returncode == 0 and "without any value left out of the features" in r.stderr, r.stderr
        assert read_table(tmp_path / name).columns == ["a", "b"]
    (tmp_path / "none.csv").write_text("a,b\n,\n,\n")
    with pytest.raises(InputError, match="no numeric feature columns"):
        read_table(tmp_path / "none.csv")


def test_a_column_left_out_as_no_measurement_is_not_called_not_numeric(tmp_path: Path) -> None:
    """fit said "not numeric, left out of the features: y" for an .npz's (numeric) labels, and for the row
    index pandas writes "not numeric, left out of the features: " with no name, after the warning that had
    already said why each was left out."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ad.npz", X=rng.normal(size=(30, 3)), y=(np.arange(30) < 3).astype(int))
    (tmp_path / "ix.csv").write_text(",a,b,name\n" + "".join(f"{i},{i % 3},{i % 5},n{i}\n" for i in range(30)))
    for table, told in (("ad.npz", "'y' left out of the features"), ("ix.csv", "the row index pandas writes")):
        r = normalcy("fit", str(tmp_path / table), "-o", str(tmp_path / f"m-{table}"))
        assert r.returncode == 0, r.stderr
        err = " ".join(r.stderr.split())
        assert told in err, err
        said = [ln.strip() for ln in r.stderr.splitlines() if "not numeric" in ln]
        assert said == ([] if table == "ad.npz" else ["not numeric, left out of the features: name"]), said
    assert read_table(tmp_path / "ix.csv").ignored == ["name"]
    assert read_table(tmp_path / "ad.npz").ignored == []


def test_eval_test_table_columns_by_name_and_small_splits_said(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 3))
    y = (np.arange(60) >= 54).astype(int)
    X[y == 1] += 4
    cols = {"f0": X[:, 0], "f1": X[:, 1], "f2": X[:, 2], "label": y}
    pcsv.write_csv(pa.table(cols), tmp_path / "train.csv")
    pcsv.write_csv(pa.table({k: cols[k] for k in ("label", "f2", "f0", "f1")}), tmp_path / "test.csv")
    r = normalcy("eval", str(tmp_path / "train.csv"), "--label-column", "label", "--test", str(tmp_path / "test.csv"),
                 "--json", "-d", "knn")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["auroc"] == 1.0  # by position the reordered columns scored at chance
    one = {k: v[:50] for k, v in cols.items()}
    one["label"] = (np.arange(50) == 0).astype(int)
    pcsv.write_csv(pa.table(one), tmp_path / "one.csv")
    r = normalcy("eval", str(tmp_path / "one.csv"), "--label-column", "label", "--json")
    assert r.returncode == 1 and "at least 2 rows of each label" in r.stderr and "Traceback" not in r.stderr


def test_eval_of_a_test_table_of_one_label_keeps_its_other_metrics(caplog) -> None:
    """A --test table of normal rows alone (or anomalous alone) ended eval with "the scored rows need both labels":
    its false-positive rate (or recall) was lost with AUROC. AUROC and AP are null now, said, and the rest kept."""
    rng = np.random.default_rng(0)
    train = read_table_of(rng.normal(size=(40, 3)), np.array([0] * 36 + [1] * 4))
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        m = eval_table(train, "knn", test=read_table_of(rng.normal(size=(20, 3)), np.zeros(20, int)))
    assert m["auroc"] is None and m["ap"] is None and m["recall_anomalous"] is None
    assert 0 <= m["fpr_normal"] <= 1 and m["n_test"] == 20
    json.dumps(m, allow_nan=False)
    assert "every scored row is labelled 0 (normal): AUROC and AP need both labels (0 and 1) and are null" in caplog.text
    m = eval_table(train, "knn", test=read_table_of(rng.normal(size=(5, 3)) + 9, np.ones(5, int)))
    assert m["auroc"] is None and m["fpr_normal"] is None and m["recall_anomalous"] == 1.0


def test_eval_with_fewer_than_2_normal_training_rows_is_one_line() -> None:
    """2 normal rows of 10 (the split's training part keeps 1), or a --test split whose training table has 1 or
    none: scikit-learn's "Found array with 1 sample(s) ... required by EnsembleDetector", a traceback."""
    rng = np.random.default_rng(0)

    def table(y: list[int]) -> Any:
        return read_table_of(rng.normal(size=(len(y), 3)), np.array(y))

    with pytest.raises(InputError, match=r"t.npz: fewer than 2 normal rows .* \(the 70/30 split's training part "
                                         r"holds 1\): give more normal rows"):
        eval_table(table([0, 0] + [1] * 8))
    test = table([0] * 20 + [1] * 10)
    with pytest.raises(InputError, match=r"fewer than 2 normal rows .* \(it has 1\): give more normal rows"):
        eval_table(table([0] + [1] * 29), test=test)


def test_labels_without_a_0_say_the_convention() -> None:
    """scikit-learn's 1 inlier / -1 outlier made every row an anomaly; fit said "fewer than 2 normal rows" and
    eval "give a labelled test table with --test", neither why. Both say that 0 is normal."""
    rng = np.random.default_rng(0)
    t = read_table_of(rng.normal(size=(40, 3)), np.where(np.arange(40) % 10 == 0, -1, 1))
    for call in (lambda: fit_table(t), lambda: eval_table(t)):
        with pytest.raises(InputError, match=r"no row is labelled 0: a label is 0 for normal, any other number for "
                                             r"an anomaly \(scikit-learn's 1 inlier, -1 outlier: map 1 to 0"):
            call()


def test_a_skipped_row_of_a_wide_table_names_at_most_20_columns() -> None:
    """A row without values in a 3,000-column table was named with every column: a 20 kB line on the terminal
    and in skipped.csv per such row (70 kB at 10,000 columns; a million such rows, gigabytes)."""
    from normalcy.vectors.tables import Table

    X = np.ones((3, 3000))
    X[0] = np.nan
    X[1, 100:130] = np.inf
    X[2, 7] = np.nan
    t = Table(Path("w.csv"), X, [f"c{j}" for j in range(3000)], ["a", "b", "c"], "row")
    _, bad = t.finite()
    assert bad == [("a", "missing value, NaN or inf in all 3000 columns"),
                   ("b", "missing value, NaN or inf in " + ", ".join(f"c{j}" for j in range(100, 120))
                    + " and 10 more columns"),
                   ("c", "missing value, NaN or inf in c7")]


def test_a_table_of_finite_rows_is_scored_without_a_copy() -> None:
    """score_table copied every row (X[mask]) even when all were finite: 160 MB more at 1,000,000 x 20."""
    from normalcy.vectors.tables import Table

    X = np.random.default_rng(0).normal(size=(50, 3))
    det = GaussianDetector().fit(X)
    given = []
    det.anomaly_score = lambda rows: given.append(rows) or np.zeros(len(rows))  # type: ignore[method-assign]
    score_table(det, Table(Path("t.csv"), X, ["a", "b", "c"], [str(i) for i in range(50)], "row"))
    assert given[0] is X


def read_table_of(X: np.ndarray, y: np.ndarray) -> Any:
    """A labelled table of X and y, as read from t.npz (no file)."""
    from normalcy.vectors.tables import Table

    return Table(Path("t.npz"), X, [f"x{j}" for j in range(X.shape[1])], [str(i) for i in range(len(X))], "row",
                 (y != 0).astype(np.int64))


def test_two_tables_with_one_file_stem_keep_both_results(tmp_path: Path) -> None:
    """a/x.csv and b/x.parquet were written to one folder, x/, the second over the first."""
    rng = np.random.default_rng(2)
    pcsv.write_csv(pa.table({"f0": rng.normal(size=40), "f1": rng.normal(size=40)}), tmp_path / "train.csv")
    assert normalcy("fit", str(tmp_path / "train.csv"), "-o", str(tmp_path / "m"), "-d", "knn").returncode == 0
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    pcsv.write_csv(pa.table({"f0": rng.normal(size=7), "f1": rng.normal(size=7)}), tmp_path / "a" / "x.csv")
    pq.write_table(pa.table({"f0": rng.normal(size=5), "f1": rng.normal(size=5)}), tmp_path / "b" / "x.parquet")
    r = normalcy("predict", str(tmp_path / "m"), str(tmp_path / "a" / "x.csv"), str(tmp_path / "b" / "x.parquet"),
                 "-o", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    counts = [len((tmp_path / "run" / d / "scores.csv").read_text().splitlines()) - 1 for d in ("x", "x-2")]
    assert counts == [7, 5]
    # a folder of tables is its tables (it was refused as "not images"); an image in it is no table
    (tmp_path / "a" / "y.parquet").write_bytes((tmp_path / "b" / "x.parquet").read_bytes())
    (tmp_path / "a" / "photo.png").write_bytes(b"")
    r = normalcy("predict", str(tmp_path / "m"), str(tmp_path / "a"), "-o", str(tmp_path / "run2"))
    assert r.returncode == 0, r.stderr
    counts = [len((tmp_path / "run2" / d / "scores.csv").read_text().splitlines()) - 1 for d in ("x", "y")]
    assert counts == [7, 5]
    (tmp_path / "none").mkdir()
    r = normalcy("predict", str(tmp_path / "m"), str(tmp_path / "none"), "-o", str(tmp_path / "run3"))
    assert r.returncode == 1 and "a folder without tables" in r.stderr
