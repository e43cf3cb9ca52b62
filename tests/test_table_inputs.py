"""Tables the command line must refuse in one line or read after all (issue 23), and table runs' CSV cells
guarded against spreadsheet formulas while their ids round-trip exactly."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from test_cli import normalcy

import normalcy.vectors.base as vectors
import normalcy.vectors.tables as tables
from normalcy.errors import InputError
from normalcy.runs.format import read_table_items
from normalcy.vectors.tables import fit_table, read_table

FORMULAS = ["=HYPERLINK(\"http://x\",\"y\")", "+cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3", "-2", "007", "plain"]


def _one_line_error(r, *says: str) -> None:
    """Exit code 1 and exactly one line on stderr, `error: <file>: <problem>`, with no traceback."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert all(s in lines[0] for s in says), lines[0]


def test_a_csv_header_over_one_megabyte_is_read(tmp_path: Path) -> None:
    """pyarrow's 1 MB blocks misread a longer header as "Empty CSV file": the block now fits the header."""
    names = [f"a_rather_long_feature_column_name_{j}" for j in range(30_000)]
    path = tmp_path / "wide.csv"
    X = np.arange(4 * len(names), dtype=np.float64).reshape(4, -1) % 7
    pcsv.write_csv(pa.table({n: X[:, j] for j, n in enumerate(names)}), path)
    assert len(path.read_text().splitlines()[0]) > 2**20
    t = read_table(path)
    assert t.columns == names
    np.testing.assert_array_equal(t.X, X)


def test_a_csv_header_past_the_line_limit_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b,c\n1,2,3\n")
    monkeypatch.setattr(tables, "MAX_CSV_LINE", 4)
    with pytest.raises(InputError, match=r"t.csv: first line longer than"):
        read_table(path)


def test_a_table_wider_than_the_limit_is_refused_before_fitting(tmp_path: Path) -> None:
    """5 rows x 1,000,000 columns sat in Ledoit-Wolf for hours: refused at once, for every detector."""
    path = tmp_path / "wide.npz"
    np.savez(path, X=np.zeros((5, 1_000_000), np.float32))
    _one_line_error(normalcy("fit", str(path), "-o", str(tmp_path / "m"), "--detector", "knn"),
                    "wide.npz: 1000000 columns, more than the 100000")
    (tmp_path / "wide.csv").write_text(",".join(f"c{j}" for j in range(100_001)) + "\n")
    with pytest.raises(InputError, match="wide.csv: 100001 columns"):
        read_table(tmp_path / "wide.csv")


def test_gaussian_refuses_more_features_than_its_covariance_allows(tmp_path: Path) -> None:
    """50 x 20,000 was a MemoryError traceback (a 20,000 x 20,000 covariance): a one-line refusal that says
    what to do, for gaussian and the default ensemble, in fit and eval; knn fits the same table."""
    rng = np.random.default_rng(0)
    path = tmp_path / "wide.npz"
    np.savez(path, X=rng.normal(size=(50, 20_000)), y=np.r_[np.zeros(45), np.ones(5)])
    _one_line_error(normalcy("fit", str(path), "-o", str(tmp_path / "m"), "--label-column", "y"),
                    "wide.npz", "member GaussianDetector",
                    "20000 x 20000 covariance", "at most 4096", "PCA", "knn")
    _one_line_error(normalcy("eval", str(path), "--label-column", "y", "--json", "--detector", "gaussian"),
                    "wide.npz", "at most 4096")
    det, _ = fit_table(read_table(path, label_column="y"), "knn")
    assert det.n_features_in_ == 20_000


def test_a_fit_past_free_memory_is_refused_before_it_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.npz"
    np.savez(path, X=np.random.default_rng(0).normal(size=(100, 8)))

    class Tiny:
        available = 1000

    monkeypatch.setattr(vectors.psutil, "virtual_memory", lambda: Tiny())
    for name in tables.VECTOR_DETECTORS:
        with pytest.raises(InputError, match=r"t.npz: fitting \w+ on 100 rows x 8 features needs about"):
            fit_table(read_table(path), name)


def test_a_ragged_npz_names_both_lengths(tmp_path: Path) -> None:
    path = tmp_path / "ragged.npz"
    np.savez(path, X=np.zeros((60, 3)), y=np.zeros(10))
    says = ("ragged.npz: arrays of different lengths", "'X' has 60", "'y' has 10")
    _one_line_error(normalcy("fit", str(path), "-o", str(tmp_path / "m")), *says)
    _one_line_error(normalcy("eval", str(path), "--label-column", "y", "--json"), *says)


def test_table_run_csv_cells_are_guarded_and_ids_round_trip(tmp_path: Path) -> None:
    """Ids a spreadsheet would run as formulas get a leading ' in scores.csv and skipped.csv (as image runs'
    paths do); scores.parquet keeps them as they are, and reading the run back, from either file, gives the
    original ids."""
    rng = np.random.default_rng(0)
    train = tmp_path / "train.npz"
    np.savez(train, X=rng.normal(size=(40, 3)))
    n = 2 * len(FORMULAS)
    ids = FORMULAS + [f"{f}#skipped" for f in FORMULAS]
    X = rng.normal(size=(n, 3))
    X[len(FORMULAS):, 1] = np.nan  # the second half is skipped
    scored = tmp_path / "score.parquet"
    pq.write_table(pa.table({"x0": X[:, 0], "x1": X[:, 1], "x2": X[:, 2], "=name": ids}), scored)
    assert normalcy("fit", str(train), "-o", str(tmp_path / "m"), "--detector", "knn").returncode == 0
    run = tmp_path / "run"
    r = normalcy("predict", str(tmp_path / "m"), str(scored), "-o", str(run), "--id-column", "=name")
    assert r.returncode == 0, r.stderr

    def cells(name: str) -> list[list[str]]:
        with open(run / name, newline="", encoding="utf-8") as f:
            return list(csv.reader(f))

    guarded = ["'" + i if i[0] in "=+-@" and i != "-2" else i for i in FORMULAS]  # a signed number runs nothing
    scores = cells("scores.csv")
    assert scores[0][0] == "'=name" and [row[0] for row in scores[1:]] == guarded
    skipped = cells("skipped.csv")
    assert skipped[0] == ["'=name", "reason"] and [row[0] for row in skipped[1:]] == [
        "'" + i + "#skipped" if i[0] in "=+-@" else i + "#skipped" for i in FORMULAS]  # -2#skipped: no number
    assert pq.read_table(run / "scores.parquet").column("=name").to_pylist() == FORMULAS
    assert read_table_items(run, "=name").keys == FORMULAS
    (run / "scores.parquet").unlink()  # the CSV alone reads back the same
    assert read_table_items(run, "=name").keys == FORMULAS


def test_a_csv_row_far_longer_than_its_header_is_read(tmp_path: Path) -> None:
    """Blocks sized from a short header grow while a long row straddles two of them."""
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n3," + "9" * 3_000_000 + "\n")
    assert read_table(path).X.shape == (2, 2)
