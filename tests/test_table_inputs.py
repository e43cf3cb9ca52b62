"""Tables the command line must refuse in one line or read after all (issue 23), and table runs' CSV cells
guarded against spreadsheet formulas while their ids round-trip exactly."""

from __future__ import annotations

import csv
import gzip
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


def test_a_wide_csv_is_read_in_blocks_of_many_rows(tmp_path: Path) -> None:
    """1 MB blocks of a 10,000-column table (300 rows, 60 MB) made 57 chunks of every column: 870 MB at the peak
    of reading and 8 s, against 640 MB and 3-4 s in blocks of 1 kB a column. The values are the same."""
    path = tmp_path / "wide.csv"
    path.write_text(",".join(f"c{j}" for j in range(2000)) + "\n" + (",".join(["1"] * 2000) + "\n") * 300)
    assert path.stat().st_size > tables.CSV_BLOCK
    assert tables._read_csv(path).column(0).num_chunks == 1
    np.testing.assert_array_equal(read_table(path).X, np.ones((300, 2000)))


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


def test_an_npz_of_images_or_clashing_names_is_one_line_naming_the_arrays(tmp_path: Path) -> None:
    """An (n, h, w) array was left out without a word and the file then had "no rows"; X's column x0 and an
    array named x0 (or arrays X and x) gave one column name, and one array's values silently replaced the other's."""
    stack, clash, twice = tmp_path / "stack.npz", tmp_path / "clash.npz", tmp_path / "twice.npz"
    np.savez(stack, X=np.zeros((20, 4, 4)), y=np.zeros(20))
    np.savez(clash, X=np.zeros((20, 3)), x0=np.ones(20))
    np.savez(twice, X=np.zeros((20, 3)), x=np.ones((20, 2)))
    _one_line_error(normalcy("fit", str(stack), "-o", str(tmp_path / "m")), "stack.npz", "'X' has shape (20, 4, 4)")
    _one_line_error(normalcy("fit", str(clash), "-o", str(tmp_path / "m")), "clash.npz", "'x0'", "'X'")
    with pytest.raises(InputError, match="column 'x0' would come from both array 'X' and array 'x'"):
        read_table(twice)


def test_an_npz_whose_labels_are_a_column_vector_keeps_them_out_of_the_features(tmp_path: Path) -> None:
    """y of shape (n, 1) (y.reshape(-1, 1)) became a column 'y0': fitted on as a feature (the labels told the
    anomalies apart), and `--label-column y` said "no column 'y'". It is the labels, 'y', as a 1-d y is."""
    path = tmp_path / "t.npz"
    y = (np.arange(40) % 10 == 0).astype(np.int64)
    np.savez(path, X=np.arange(120.0).reshape(40, 3), y=y[:, None])
    assert read_table(path).columns == ["x0", "x1", "x2"]
    t = read_table(path, label_column="y")
    assert t.columns == ["x0", "x1", "x2"] and t.labels.tolist() == y.tolist()


def test_an_npz_wider_than_the_model_is_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A model fitted on an X of 4 columns scored an X of 6 (another embedding) on its first 4, without a word:
    an .npz's columns are named by position, so extra ones are no id or label column. It is said, naming them."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "fit.npz", X=rng.normal(size=(30, 4)))
    np.savez(tmp_path / "wide.npz", X=rng.normal(size=(30, 6)), y=np.zeros(30))
    columns = read_table(tmp_path / "fit.npz").columns
    with caplog.at_level("WARNING", logger="normalcy"):
        read_table(tmp_path / "fit.npz", columns=columns)
        assert not caplog.text
        t = read_table(tmp_path / "wide.npz", columns=columns)
    assert t.X.shape == (30, 4)
    assert "wide.npz: array 'X' has 6 columns, the model takes 4 of them (by position: x0, x1, ...); x4, x5 not " \
           "scored" in caplog.text and "'y'" not in caplog.text


def test_a_csv_not_in_utf8_is_one_line_saying_so(tmp_path: Path) -> None:
    """UTF-16 (a spreadsheet's "Unicode text") warned of a line "with another number of fields" and then failed
    on "byte 0xff in position 0" (a series: refused for that line); a Latin-1 header gave Python's codec error."""
    (tmp_path / "u16.csv").write_text("a,b\n1,2\n3,4\n", encoding="utf-16")
    (tmp_path / "latin.csv").write_bytes("café,b\n1,2\n3,4\n".encode("latin-1"))
    _one_line_error(normalcy("fit", str(tmp_path / "u16.csv"), "-o", str(tmp_path / "m")),
                    "u16.csv: UTF-16 text", "save it as CSV UTF-8")
    with pytest.raises(InputError, match=r"latin.csv: its first line is not UTF-8 text \(0xe9 at byte 4; Latin-1"):
        read_table(tmp_path / "latin.csv")


def test_a_binary_or_gzipped_file_named_csv_is_refused_as_such(tmp_path: Path) -> None:
    """A binary file whose first line passed as a header was read on: each line pyarrow could not decode printed
    "Exception ignored in: <function _read_csv.<locals>.note>" and a traceback, then "CSV parse error: Row #21";
    a gzipped CSV was "not UTF-8 text (...; Latin-1 or Windows-1252?)"."""
    (tmp_path / "bin.csv").write_bytes(b"timestamp,cpu\n" + bytes(range(256)) * 40)
    with pytest.raises(InputError, match=r"bin.csv: not a text file \(a NUL byte on line 2, byte 15\)"):
        read_table(tmp_path / "bin.csv")
    (tmp_path / "packed.csv").write_bytes(gzip.compress(b"a,b\n1,2\n"))
    with pytest.raises(InputError, match="packed.csv: gzip-compressed, not CSV text: decompress it first"):
        read_table(tmp_path / "packed.csv")


def test_a_table_in_another_format_is_named_as_such(tmp_path: Path) -> None:
    """A .tsv given to fit was "not a folder: t.tsv", to eval "--label-column does not apply to an image data
    set", to predict "not images"; an .npy of rows or a .feather file alike. Each says what to save it as."""
    from normalcy.api import evaluate, fit, predict

    tsv, npy, feather = tmp_path / "t.tsv", tmp_path / "rows.npy", tmp_path / "t.feather"
    tsv.write_text("a\tb\n1\t2\n3\t4\n5\t7\n")
    np.save(npy, np.zeros((5, 2)))
    feather.write_bytes(b"ARROW1")
    model = tmp_path / "m"
    fit(_csv(tmp_path / "t.csv", "a\tb", ["1\t2", "3\t4", "5\t7"]), model)
    with pytest.raises(InputError, match=r"t.tsv: fit reads .*; if t.tsv is a text table, give it a .csv name"):
        fit(tsv, tmp_path / "m2")
    with pytest.raises(InputError, match=r"t.tsv: eval reads .*; if t.tsv is a text table, give it a .csv name"):
        evaluate(tsv, label_column="b")
    with pytest.raises(InputError, match=r"t.tsv: a vector model scores tables .*, not images; if t.tsv is a text"):
        predict(model, tsv, tmp_path / "run")
    with pytest.raises(InputError, match=r"rows.npy: .*save it as .npz \(numpy.savez\('rows.npz', X=rows\)\)"):
        fit(npy, tmp_path / "m2")
    with pytest.raises(InputError, match=r"t.feather: .*a table in .feather is not read: save it as .parquet or"):
        fit(feather, tmp_path / "m2")


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


def _csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_a_semicolon_csv_with_decimal_commas_is_read_as_numbers(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A spreadsheet's export in a decimal-comma locale (1,5 in a ;-separated file): every such column was left
    out as text, so the table had "no numeric feature columns". It is read as the series reader reads it."""
    rows = [f"obj{i};{i % 7},5;{(3 * i) % 5};w{i}" for i in range(40)]
    path = _csv(tmp_path / "t.csv", "name;a;b;who", rows)
    with caplog.at_level("WARNING", logger="normalcy"):
        t = read_table(path, id_column="name")
    assert t.columns == ["a", "b"] and t.ignored == ["who"] and t.X[3, 0] == 3.5 and t.X[3, 1] == 4
    assert f"{path}: column 'a': 40 value(s) with a decimal comma read as numbers (1,5 as 1.5)" in caplog.text
    comma = _csv(tmp_path / "comma.csv", "a,b", ["1,2", "3,4"])  # a comma-separated file is not touched
    assert read_table(comma).X.tolist() == [[1, 2], [3, 4]]


def test_numbers_with_thousands_separators_are_read_as_numbers(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """A spreadsheet's formatted export ("1,234.5"; 1.234,5 in a ;-separated file) had the column left out as
    text, where the series reader reads them as numbers. They are numbers now, said once; text stays text."""
    rows = [f'"{1000 * i + 234:,}.5",{i % 3},w{i}' for i in range(1, 41)]
    path = _csv(tmp_path / "t.csv", "a,b,who", rows)
    with caplog.at_level("WARNING", logger="normalcy"):
        t = read_table(path)
    assert t.columns == ["a", "b"] and t.ignored == ["who"] and t.X[0, 0] == 1234.5 and t.X[39, 0] == 40234.5
    assert f"{path}: column 'a': 40 value(s) with thousands separators read as numbers (the first '1,234.5' as " \
           "1234.5)" in caplog.text
    semi = _csv(tmp_path / "semi.csv", "a;b", [f"{i}.234,5;1.5" for i in range(1, 11)])
    assert read_table(semi).X[:2].tolist() == [[1234.5, 1.5], [2234.5, 1.5]]  # 1.5 stays 1.5


def test_thousands_separators_in_a_tab_file_and_by_spaces_are_read_as_numbers(tmp_path: Path) -> None:
    """A tab-separated file reads 1,5 as 1.5, so its 1,234.5 (written with decimal points) and 1 234,5 (spaces,
    no-break spaces: a French spreadsheet's export) were left out as text, where a comma file reads 1,234.5.
    Read as numbers now, in every separator's file; a cell that read as a number before is unchanged."""
    tab = _csv(tmp_path / "tab.csv", "a\tb\tc\td", [f"{i},234.5\t{i} 234,5\t{i},5\t{i},234,567" for i in range(1, 6)])
    t = read_table(tab)
    assert t.columns == ["a", "b", "c", "d"]
    assert t.X[:2].tolist() == [[1234.5, 1234.5, 1.5, 1234567], [2234.5, 2234.5, 2.5, 2234567]]
    semi = _csv(tmp_path / "semi.csv", "a;b", [f"{i}\u00a0234,5;{i}\u202f234\u202f567" for i in range(1, 6)])
    assert read_table(semi).X[:2].tolist() == [[1234.5, 1234567], [2234.5, 2234567]]
    comma = _csv(tmp_path / "comma.csv", "a,b", [f"{i} 234.5,{i}'234.5" for i in range(1, 6)])
    assert read_table(comma).X[:2].tolist() == [[1234.5, 1234.5], [2234.5, 2234.5]]
    keep = read_table(_csv(tmp_path / "keep.csv", "a\tb", ["1,234\t1.234", "2,5\t2.5", "3\t12 34"])).X
    assert keep[:2].tolist() == [[1.234, 1.234], [2.5, 2.5]] and np.isnan(keep[2, 1])  # 12 34 is no grouping


def test_a_numpy_savetxt_header_names_the_columns(tmp_path: Path) -> None:
    """numpy.savetxt writes its header as a comment: "# a,b,c" named the first column "# a", and "# a b c" with
    its default separator (a space) was one column "# a b c" of text ("no numeric feature columns"). The last
    '#' line names the columns, the lines before it and a '#' footer are comments; a model fitted on "# a"
    still scores such a file; a '#' line that does not name the rows' fields is refused, saying so."""
    X = np.arange(12.0).reshape(4, 3) / 7
    for name, kwargs in [("space.csv", {"header": "a b c"}), ("comma.csv", {"delimiter": ",", "header": "a,b,c"}),
                         ("tab.csv", {"delimiter": "\t", "header": "made by me\na\tb\tc", "footer": "end"})]:
        np.savetxt(tmp_path / name, X, **kwargs)
        t = read_table(tmp_path / name)
        assert t.columns == ["a", "b", "c"] and t.ids == ["0", "1", "2", "3"], name
        np.testing.assert_array_equal(t.X, X)
    old = read_table(tmp_path / "comma.csv", columns=["# a", "b", "c"])  # a model fitted before: its names
    np.testing.assert_array_equal(old.X, X)
    (tmp_path / "ragged.csv").write_text("# note\n# a;b\n1,5;2\n# a comment\n3\n4;5\n")
    t = read_table(tmp_path / "ragged.csv")
    assert t.X[[0, 2]].tolist() == [[1.5, 2], [4, 5]] and np.isnan(t.X[1]).all()
    assert t.read_as_missing == {1: "line 5 has 1 fields where the header has 2: not read"}
    (tmp_path / "hash.csv").write_text("#,x\n1,2\n2,3\n")  # a column named '#' is no comment
    assert read_table(tmp_path / "hash.csv").columns == ["#", "x"]
    np.savetxt(tmp_path / "label.csv", np.c_[[0, 1, 0, 0], X], delimiter=",", header="label,a,b,c")
    assert read_table(tmp_path / "label.csv", label_column="# label").labels.tolist() == [0, 1, 0, 0]
    (tmp_path / "notes.csv").write_text("# exported by X\n# on Monday\na;b\n1,5;2\n3\n4;5\n")  # a header after notes
    t = read_table(tmp_path / "notes.csv")
    assert t.columns == ["a", "b"] and t.X[[0, 2]].tolist() == [[1.5, 2], [4, 5]] and list(t.read_as_missing) == [1]
    np.savetxt(tmp_path / "padded.csv", X, fmt="%10.4f", header="a b c")
    with pytest.raises(InputError, match=r"padded.csv: its rows' values are aligned by runs of spaces"):
        read_table(tmp_path / "padded.csv")
    np.savetxt(tmp_path / "bad.csv", X, delimiter=",", header="a b c")
    with pytest.raises(InputError, match=r"bad.csv: its header line '# a b c' \(a comment, as numpy.savetxt writes "
                                         r"one\) names 1 column\(s\), its rows have 3 fields separated by ','"):
        read_table(tmp_path / "bad.csv")


def test_percentages_are_read_as_numbers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A column of "12%" (a spreadsheet's percent cells) was left out of the features as text: read as 0.12 now,
    said once; "n/a%" or "12%%" stay text (missing values)."""
    path = _csv(tmp_path / "t.csv", "a;b", ["12%;1", "13,5 %;2", "-4%;3", "1.234,5%;4", "12%%;5"])
    with caplog.at_level("WARNING", logger="normalcy"):
        t = read_table(path)
    assert t.columns == ["a", "b"] and t.X[:4, 0].tolist() == [0.12, 0.135, -0.04, 12.345] and np.isnan(t.X[4, 0])
    assert f"{path}: column 'a': 4 value(s) with percent signs read as numbers (the first '12%' as 0.12)" \
        in caplog.text


def test_a_column_named_in_other_case_is_pointed_at(tmp_path: Path) -> None:
    """--label-column label of a file with 'Label' said "no column 'label'; it has 'a', 'Label'"; a model's
    column 'Temp' of a file with 'temp', likewise: the message now asks whether the other one is meant."""
    path = _csv(tmp_path / "t.csv", "a,Label", ["1,0", "2,1", "3,0"])
    with pytest.raises(InputError, match=r"no column 'label' \(names are matched exactly: did you mean 'Label'\?\)"):
        read_table(path, label_column="label")
    with pytest.raises(InputError, match=r"feature columns \['A'\] are missing \(names are matched exactly: did "
                                         r"you mean 'a'\?\)"):
        read_table(path, columns=["A"])


def test_an_npz_label_array_named_Y_is_pointed_at(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An .npz's 'Y' (ADBench's y, upper case) is fitted on as a feature, as before (names are matched exactly),
    but the warning said only "like labels": it now says that only 'y' is taken for the labels (did you mean
    'y'?), once, and how to give it. An .npz with 'y' is read as before."""
    X = np.random.default_rng(0).normal(size=(20, 2))
    labels = np.arange(20) % 2
    np.savez(tmp_path / "Y.npz", X=X, Y=labels)
    with caplog.at_level("WARNING", logger="normalcy"):
        t = read_table(tmp_path / "Y.npz")
    assert t.columns == ["x0", "x1", "Y"]
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "array 'Y' is fitted on as a feature" in said[0], said
    assert "(names are matched exactly: did you mean 'y'?)" in said[0] and "label_column='Y'" in said[0]
    np.savez(tmp_path / "y.npz", X=X, y=labels)
    caplog.clear()
    with caplog.at_level("WARNING", logger="normalcy"):
        assert read_table(tmp_path / "y.npz").columns == ["x0", "x1"]
    assert "did you mean" not in caplog.text


def test_an_npz_array_of_complex_numbers_is_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An .npz of complex numbers (an FFT) said "no numeric feature columns; it has 'x0', 'x1'" without why; beside
    real arrays it was "not numeric". The array is named, and that complex numbers are not features."""
    X = np.random.default_rng(0).normal(size=(20, 2))
    np.savez(tmp_path / "c.npz", X=X + 1j * X)
    with pytest.raises(InputError, match=r"c\.npz: no numeric feature columns \(array 'X' holds complex numbers, "
                                         r"which are not features"):
        read_table(tmp_path / "c.npz")
    np.savez(tmp_path / "cr.npz", X=X, Z=X + 1j * X)
    caplog.clear()
    with caplog.at_level("WARNING", logger="normalcy"):
        assert read_table(tmp_path / "cr.npz").columns == ["x0", "x1"]
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "array 'Z' holds complex numbers, which are not features, left out" in said[0], said


def test_a_text_cell_in_a_numeric_column_is_a_missing_value_said_once(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """One "abc" among numbers left the whole column out at fit and refused the file at predict: it is now a
    missing value (the row skipped and named, as for an empty cell), with one warning naming the file, the
    column, the count and the rows. A column mostly of text (names) is still no feature."""
    rows = [f"obj{i},{i % 7},{(3 * i) % 5},w{i}" for i in range(40)]
    rows[4], rows[9] = "obj4,abc,1,w4", "obj9,-,2,w9"
    path = _csv(tmp_path / "t.csv", "name,a,b,who", rows)
    with caplog.at_level("WARNING", logger="normalcy"):
        t = read_table(path, id_column="name")
    assert t.columns == ["a", "b"] and t.ignored == ["who"]
    said = [r.getMessage() for r in caplog.records if "not numbers" in r.getMessage()]
    assert said == [f"{path}: column 'a': 2 cell(s) that are not numbers read as missing (those rows are skipped, "
                    "not scored): row(s) 4 'abc', 9 '-' (counting from 0)"]
    assert np.isnan(t.X[[4, 9], 0]).all() and t.X[5, 0] == 5 and t.X[4, 1] == 1
    det, skipped = fit_table(t, "gaussian")
    assert skipped == [("obj4", "missing value, NaN or inf in a (a: 'abc' is not a number)"),
                       ("obj9", "missing value, NaN or inf in a (a: '-' is not a number)")]
    assert normalcy("fit", str(path), "-o", str(tmp_path / "m"), "--id-column", "name").returncode == 0
    r = normalcy("predict", str(tmp_path / "m"), str(path), "-o", str(tmp_path / "run"), "--id-column", "name")
    assert r.returncode == 0, r.stderr
    assert "t.csv: column 'a': 2 cell(s) that are not numbers" in " ".join(r.stderr.split())
    skipped_csv = (tmp_path / "run" / "skipped.csv").read_text().splitlines()
    assert skipped_csv[1:] == ["obj4,\"missing value, NaN or inf in a (a: 'abc' is not a number)\"",
                               "obj9,\"missing value, NaN or inf in a (a: '-' is not a number)\""]
    # a model's column that is mostly text at predict: the wrong file, refused in one line
    bad = _csv(tmp_path / "names.csv", "name,a,b", [f"x{i},n{i},{i}" for i in range(5)])
    with pytest.raises(InputError, match=r"names.csv: feature column 'a' is not numeric \(most of its cells"):
        read_table(bad, columns=["a", "b"])


def test_a_csv_without_a_header_line_is_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """numpy.savetxt writes no header: the first row became the column names without a word, and predict of
    another such file said its "feature columns ['1.25e-01', ...] are missing". Both say what it looks like;
    names that are numbers in order (a spectrum's wavelengths) are a header."""
    rng = np.random.default_rng(0)
    np.savetxt(tmp_path / "a.csv", rng.normal(size=(20, 4)), delimiter=",")
    np.savetxt(tmp_path / "b.csv", rng.normal(size=(20, 4)), delimiter=",")
    np.savetxt(tmp_path / "w.csv", rng.normal(size=(20, 4)), delimiter=",", header="400,410,420,430", comments="")
    with caplog.at_level("WARNING", logger="normalcy"):
        t = read_table(tmp_path / "a.csv")
        assert "a.csv: the column names are numbers (" in caplog.text and "add a header line" in caplog.text
        caplog.clear()
        assert read_table(tmp_path / "w.csv").columns == ["400", "410", "420", "430"] and not caplog.text
    with pytest.raises(InputError, match=r"b.csv: the model's feature columns .* are missing; .*; a file without a "
                                         r"header line\? its first row is read as the column names"):
        read_table(tmp_path / "b.csv", columns=t.columns)


@pytest.mark.parametrize("text", [b"", b"\n", b"\xef\xbb\xbf\r\n\r\n"])
def test_an_empty_csv_is_said_to_be_empty(tmp_path: Path, text: bytes) -> None:
    """An empty CSV (or one of blank lines) was pyarrow's "cannot read as a csv table (Empty CSV file)", or
    "(CSV parse error: Empty CSV file or block: cannot infer number of columns)"."""
    (tmp_path / "e.csv").write_bytes(text)
    with pytest.raises(InputError, match=r"e.csv: empty file \(no header line, no rows\)$"):
        read_table(tmp_path / "e.csv")


def test_a_column_the_model_lacks_is_said_at_predict(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A table to score with a column the model was not fitted on had it left out without a word (a series'
    file says so); the label and id columns are no such column."""
    t = _csv(tmp_path / "t.csv", "id,a,b,extra,label", [f"r{i},{i % 3},{i % 5},{i},0" for i in range(6)])
    with caplog.at_level("INFO", logger="normalcy"):
        read_table(t, label_column="label", id_column="id", columns=["a", "b"])
    assert "t.csv: column(s) 'extra' left out, not scored: not in the model" in caplog.text
    assert "'label'" not in caplog.text and "'id'" not in caplog.text


def test_a_model_column_of_times_at_predict_names_its_type(tmp_path: Path) -> None:
    """A Parquet column of timestamps where the model has numbers was "not numeric (most of its cells are not
    numbers)", though it has no cells of text: it names the column's type."""
    from datetime import datetime

    pq.write_table(pa.table({"a": pa.array([datetime(2020, 1, 1)] * 5, pa.timestamp("us", tz="UTC")), "b": [1.0] * 5}),
                   tmp_path / "t.parquet")
    with pytest.raises(InputError, match=r"t.parquet: feature column 'a' is not numeric \(its values are datetime64"):
        read_table(tmp_path / "t.parquet", columns=["a", "b"])


def test_a_separator_line_before_the_header_is_one_line(tmp_path: Path) -> None:
    """"sep=;" (a spreadsheet's note of the separator) before the header: the columns were named 'sep=' and '',
    the real header became a row of text read as missing, without an error. It is refused, saying what to do."""
    (tmp_path / "t.csv").write_bytes("\ufeffsep=;\r\na;b\r\n1;2\r\n3;4\r\n".encode())
    with pytest.raises(InputError, match=r"t.csv: its first line, 'sep=;', is a spreadsheet's note of the separator, "
                                         r"not the header: delete that line"):
        read_table(tmp_path / "t.csv")


def test_a_units_row_under_a_wide_header_is_said_in_a_few_lines(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """A row of units ("kg") under the header of a 10,000-column table was 10,000 warnings, one a column, and its
    skipped row's reason named each cell (290 kB). Five warnings, then a count; the reason names at most 20."""
    n = 40
    rows = [",".join(["kg"] * n)] + [",".join(str((i * j) % 7) for j in range(n)) for i in range(10)]
    path = _csv(tmp_path / "t.csv", ",".join(f"c{j}" for j in range(n)), rows)
    with caplog.at_level("WARNING", logger="normalcy"):
        t = read_table(path)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 6 and said[0].startswith(f"{path}: column 'c0': 1 cell(s) that are not numbers")
    assert said[-1] == f"{path}: and 35 more such warning(s) for other columns (the rows they make missing are " \
                       "skipped and named, as in skipped.csv)"
    (_, why), = t.finite()[1]
    assert why.startswith("missing value, NaN or inf in all 40 columns (c0: 'kg' is not a number; c1: 'kg'")
    assert why.endswith("c19: 'kg' is not a number; ...)") and "c20" not in why


def test_a_ragged_csv_line_is_a_row_of_missing_values_in_its_place(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A line with fewer or more fields than the header refused the whole file. It is now a row of missing
    values where it stands, named by its line: the rows after it keep their row numbers (a table's ids when it
    has no id column), and predict names it in skipped.csv rather than dropping it."""
    rows = [f"{i % 7},{(3 * i) % 5},{i % 3}" for i in range(40)]
    rows[6], rows[20] = "6,1", "1,2,3,4"
    lines = ["a,b,c", *rows[:10], "", *rows[10:]]  # a blank line (pyarrow skips it) before the second
    path = tmp_path / "r.csv"
    path.write_text("\n".join(lines) + "\n")
    with caplog.at_level("WARNING", logger="normalcy"):
        t = read_table(path)
    assert caplog.records[0].getMessage() == (
        f"{path}: 2 line(s) with another number of fields than the header's 3, read as rows of missing values "
        "(skipped, not scored): line(s) 8, 23; the first: '6,1'")
    assert t.X.shape == (40, 3) and t.ids == [str(i) for i in range(40)]
    assert np.isnan(t.X[[6, 20]]).all() and np.isfinite(np.delete(t.X, [6, 20], axis=0)).all()
    np.testing.assert_array_equal(t.X[7], [0, 1, 1])  # row 7 is still row 7
    _, skipped = fit_table(t, "knn")
    assert skipped == [("6", "missing value, NaN or inf in a, b, c (line 8 has 2 fields where the header has 3: "
                             "not read)"),
                       ("20", "missing value, NaN or inf in a, b, c (line 23 has 4 fields where the header has 3: "
                              "not read)")]
    assert normalcy("fit", str(path), "-o", str(tmp_path / "m"), "--detector", "knn").returncode == 0
    r = normalcy("predict", str(tmp_path / "m"), str(path), "-o", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    assert [row[0] for row in csv.reader(open(tmp_path / "run" / "skipped.csv"))] == ["row", "6", "20"]
    scored = [row[0] for row in csv.reader(open(tmp_path / "run" / "scores.csv"))][1:]
    assert scored == [str(i) for i in range(40) if i not in (6, 20)]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_table_whose_file_name_is_not_utf8_is_read(tmp_path: Path, suffix: str) -> None:
    """pyarrow took the path and failed to encode a name that is not UTF-8 (a Latin-1 'café'): the file was
    skipped as 'cannot read as a csv table (... surrogates not allowed)'. It gets an open file now."""
    raw = bytes(tmp_path) + b"/caf\xe9" + suffix.encode()
    path = Path(raw.decode("utf-8", "surrogateescape"))
    data = pa.table({"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]})
    with open(raw, "wb") as fh:
        (pq.write_table if suffix == ".parquet" else pcsv.write_csv)(data, fh)
    got = read_table(path)
    np.testing.assert_array_equal(got.X, [[1, 4], [2, 5], [3, 6]])


def test_a_crafted_very_long_model_column_is_not_echoed_whole(tmp_path: Path) -> None:
    """A model.json whose column name was crafted to 1 MB: predict's "feature columns [...] are missing" repeated
    it whole. Each name is cut to 100 characters, its start and end kept."""
    path = _csv(tmp_path / "t.csv", "a,b", ["1,2", "3,4"])
    with pytest.raises(InputError, match=r"feature columns \['x+…x+'\] are missing") as err:
        read_table(path, columns=["x" * 1_000_000])
    assert len(str(err.value)) < 1000


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_whole_numbers_beyond_2_53_in_a_table_are_said(tmp_path: Path, suffix: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """int64 (and uint64) ids past 2^53 became float64 without a word (2^60 + 3 and 2^60 read alike); the series
    reader said it, the table reader now says it too, with the same words."""
    path = tmp_path / f"t{suffix}"
    data = pa.table({"id": pa.array([2**60 + 3, 2**60, 5], pa.int64()), "b": [1.0, 2.0, 3.0],
                     "u": pa.array([2**63 + 1, 2, 3], pa.uint64())})
    if suffix == ".parquet":
        pq.write_table(data, path)
    else:  # a CSV reader reads past 2^63 as float64
        pcsv.write_csv(data.drop(["u"]), path)
    t = read_table(path)
    assert t.X[0, 0] == t.X[1, 0]  # the digits lost, as said
    said = caplog.text
    assert f"column 'id': whole numbers beyond 2^53 ({2**60 + 3}) read as 64-bit floats" in said, said
    assert (f"column 'u': whole numbers beyond 2^53 ({2**63 + 1})" in said) == (suffix == ".parquet")
    assert "column 'b'" not in said
