"""Reading series files and folders: every rule of normalcy.series.io, each with the file it is about."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from normalcy.errors import InputError, cli_wording
from normalcy.series.io import (
    MIN_ROWS,
    is_series_folder,
    read_series,
    read_series_folder,
    series_folders,
    time_of,
)
from normalcy.vectors.tables import MAX_COLUMNS


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def numbered(n: int = 40, start: int = 1_600_000_000, step: int = 60) -> list[int]:
    return [start + step * i for i in range(n)]


def test_epoch_seconds_and_row_numbers(tmp_path: Path) -> None:
    ts = numbered()
    f = write_csv(tmp_path / "cpu.csv", "timestamp,cpu,mem", [f"{t},{i % 7},{i % 5}" for i, t in enumerate(ts)])
    (s,) = read_series(f)
    assert s.name == "cpu" and s.columns == ("cpu", "mem") and s.labels is None and s.notes == []
    np.testing.assert_array_equal(s.time, ts)
    assert s.values.shape == (40, 2) and s.values.dtype == np.float64
    # no time column: the row number is the time, every column a value
    g = write_csv(tmp_path / "plain.csv", "a,b", [f"{i % 3},{i}" for i in range(20)])
    (p,) = read_series(g)
    np.testing.assert_array_equal(p.time, np.arange(20))
    assert p.columns == ("a", "b")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_dates_past_2262_keep_their_order(tmp_path: Path, suffix: str) -> None:
    """Dates were converted through 64-bit nanoseconds, which end on 2262-04-11: later ones wrapped to 1677
    without a word, and were "sorted" before the earlier rows (a simulation's calendar, a 9999-12-31 sentinel)."""
    months = [f"{2260 + i // 12}-{i % 12 + 1:02d}-01T00:00:00" for i in range(40)]
    f = write_csv(tmp_path / "sim.csv", "timestamp,v", [f"{m},{i}" for i, m in enumerate(months)])
    if suffix == ".parquet":
        pq.write_table(pa.table({"timestamp": pa.array([datetime.fromisoformat(m) for m in months],
                                                        pa.timestamp("us")), "v": np.arange(40.0)}),
                       f := tmp_path / "sim.parquet")
    (s,) = read_series(f)
    assert s.notes == []
    np.testing.assert_array_equal(s.values[:, 0], np.arange(40))
    expected = [datetime.fromisoformat(m).replace(tzinfo=timezone.utc).timestamp() for m in months]
    np.testing.assert_array_equal(s.time, expected)


def test_epoch_nanoseconds_closer_than_a_float_resolves_are_said(tmp_path: Path) -> None:
    """Epoch nanoseconds 100 ns apart are one float64 second: 121 of 200 rows were dropped as having "a repeated
    timestamp", which no row had. Now the note says why, and how to keep them apart."""
    f = write_csv(tmp_path / "fast.csv", "timestamp,v", [f"{1_700_000_000_000_000_000 + 100 * i},{i}"
                                                         for i in range(200)])
    (s,) = read_series(f)
    assert any("time column: 121 row(s) whose times differ from another's by less than a 64-bit float resolves"
               in n and "nanoseconds since the start" in n for n in s.notes), s.notes
    g = write_csv(tmp_path / "slow.csv", "timestamp,v", [f"{1_700_000_000_000_000_000 + 1000 * i},{i}"
                                                         for i in range(200)])
    assert len(read_series(g)[0]) == 200  # a microsecond apart: distinct, no note
    assert not any("resolves" in n for n in read_series(g)[0].notes)


@pytest.mark.parametrize("sep", [";", "\t"])
def test_semicolon_and_tab_separated_files(tmp_path: Path, sep: str) -> None:
    """Spreadsheets in many locales, and SKAB's pump test-bed files, separate fields by semicolons."""
    rows = [f"2020-03-09 10:00:{i:02d}{sep}{i % 7}.5{sep}{i % 5}" for i in range(40)]
    (s,) = read_series(write_csv(tmp_path / "pump.csv", sep.join(["datetime", "Current", "Pressure"]), rows))
    (c,) = read_series(write_csv(tmp_path / "comma.csv", "datetime,Current,Pressure", [r.replace(sep, ",")
                                                                                       for r in rows]))
    assert s.columns == c.columns == ("Current", "Pressure")
    np.testing.assert_array_equal(s.values, c.values)
    np.testing.assert_array_equal(s.time, c.time)


def test_time_column_by_name_and_missing(tmp_path: Path) -> None:
    f = write_csv(tmp_path / "x.csv", "when,v", [f"{t},{i}" for i, t in enumerate(numbered(20))])
    (s,) = read_series(f, time_column="when")
    assert s.columns == ("v",) and s.time[0] == 1_600_000_000
    with pytest.raises(InputError, match=r"x\.csv: no time column 'stamp'"):
        read_series(f, time_column="stamp")


def test_iso_dates(tmp_path: Path) -> None:
    rows = [f"2015-02-26 21:{m:02d}:00,{m}" for m in range(20)]
    (s,) = read_series(write_csv(tmp_path / "iso.csv", "timestamp,value", rows))
    assert s.time[0] == datetime(2015, 2, 26, 21, 0, tzinfo=timezone.utc).timestamp()
    np.testing.assert_array_equal(np.diff(s.time), 60.0)
    # offsets and Z (read as UTC), mixed in one column
    mixed = [f"2015-02-26T21:{m:02d}:00Z,{m}" if m % 2 else f"2015-02-26T22:{m:02d}:00+01:00,{m}" for m in range(20)]
    (z,) = read_series(write_csv(tmp_path / "zones.csv", "time,value", mixed))
    np.testing.assert_array_equal(z.time, s.time)
    bad = rows[:5] + ["yesterday,3"] + rows[6:]
    with pytest.raises(InputError, match=r"bad\.csv: time column: 'yesterday' at row 6"):
        read_series(write_csv(tmp_path / "bad.csv", "timestamp,value", bad))


def test_unsorted_rows_sorted_with_a_note(tmp_path: Path) -> None:
    ts = numbered(20)
    order = [0, 1, 2, 4, 3, 5, 6, 7, 9, 8] + list(range(10, 20))
    f = write_csv(tmp_path / "u.csv", "timestamp,v", [f"{ts[i]},{i}" for i in order])
    (s,) = read_series(f)
    np.testing.assert_array_equal(s.time, ts)
    np.testing.assert_array_equal(s.values[:, 0], np.arange(20))
    assert s.notes == ["u.csv: 2 unsorted row(s) sorted by time"]
    np.testing.assert_array_equal(s.row_of, order)  # file row i holds series row order[i]


def test_duplicates_keep_the_last_row(tmp_path: Path) -> None:
    ts = numbered(20)
    rows = [f"{t},{i}" for i, t in enumerate(ts)]
    rows[4:4] = [f"{ts[4]},-2", f"{ts[4]},-1"]  # file rows 4, 5 and 6 share a timestamp: row 6 (value 4) wins
    (s,) = read_series(write_csv(tmp_path / "d.csv", "timestamp,v", rows))
    assert len(s) == 20 and s.values[4, 0] == 4
    assert s.notes == ["d.csv: 2 row(s) with a repeated timestamp dropped (the last row of each timestamp kept)"]
    np.testing.assert_array_equal(s.row_of[4:8], [4, 4, 4, 5])


def test_nan_interpolated_and_all_nan_column_refused(tmp_path: Path) -> None:
    rows = [f"{i},{'' if i in (3, 4) else 10 * i},{i}" for i in range(20)]
    rows[7] = "7,70,NaN"
    (s,) = read_series(write_csv(tmp_path / "n.csv", "timestamp,a,b", rows))
    assert s.values[3, 0] == 30 and s.values[4, 0] == 40 and s.values[7, 1] == 7
    assert s.notes == ["n.csv: 3 missing or non-finite value(s) interpolated linearly along time (a 2, b 1)"]
    empty = [f"{i},{i}," for i in range(20)]
    with pytest.raises(InputError, match=r"e\.csv: column 'b' has no value in any row"):
        read_series(write_csv(tmp_path / "e.csv", "timestamp,a,b", empty))


def test_constant_column_kept_with_a_note(tmp_path: Path) -> None:
    (s,) = read_series(write_csv(tmp_path / "c.csv", "timestamp,a,flat", [f"{i},{i % 4},5" for i in range(20)]))
    assert s.columns == ("a", "flat") and (s.values[:, 1] == 5).all()
    assert s.notes == ["c.csv: constant column(s) ['flat'] kept (a change in them still counts)"]


def test_gaps_noted(tmp_path: Path) -> None:
    ts = numbered(30)
    ts = ts[:10] + [t + 600 for t in ts[10:20]] + [t + 3000 for t in ts[20:]]
    (s,) = read_series(write_csv(tmp_path / "g.csv", "timestamp,v", [f"{t},{i % 3}" for i, t in enumerate(ts)]))
    assert s.notes == ["g.csv: 2 gap(s) in time (over 3x the median interval of 60 s), the largest 2460 s; "
                       "rows either side are scored as consecutive"]


def test_text_value_column_refused(tmp_path: Path) -> None:
    f = write_csv(tmp_path / "t.csv", "timestamp,v,host", [f"{i},{i},web{i % 2}" for i in range(20)])
    with pytest.raises(InputError, match=r"t\.csv: value column 'host' is not numeric \(20 of 20 values are not "
                                         r"numbers, the first 'web0' in row 1\)"):
        read_series(f)
    # a few text cells among numbers (a logger's "error"): read as missing, interpolated, said; more: refused
    rows = [f"{i},{'error' if i == 7 else i}" for i in range(40)]
    (s,) = read_series(write_csv(tmp_path / "e.csv", "timestamp,v", rows))
    assert s.values[7, 0] == 7.0 and s.notes[0] == ("e.csv: column 'v': 1 value(s) that are not numbers read as "
                                                    "missing (the first 'error' in row 8)")
    rows = [f"{i},{'-' if i % 10 == 3 else i}" for i in range(40)]
    with pytest.raises(InputError, match=r"m\.csv: value column 'v' is not numeric \(4 of 40 values are not "
                                         r"numbers, the first '-' in row 4\)"):
        read_series(write_csv(tmp_path / "m.csv", "timestamp,v", rows))


def test_decimal_commas_in_a_semicolon_separated_file(tmp_path: Path) -> None:
    """Spreadsheets in European locales write 1,5 for 1.5 and separate fields by semicolons."""
    rows = [f"{i};{i % 7},5;{i % 5}" for i in range(40)]
    (s,) = read_series(write_csv(tmp_path / "eu.csv", "timestamp;Current;Pressure", rows))
    np.testing.assert_array_equal(s.values[:, 0], np.arange(40) % 7 + 0.5)
    assert s.notes == ["eu.csv: column 'Current': 40 value(s) with a decimal comma read as numbers"]
    # in a comma-separated file a quoted "1,5" is not taken for a decimal (it may be a thousands separator)
    rows = [f'{i},"{i % 7},5"' for i in range(40)]
    with pytest.raises(InputError, match=r"value column 'v' is not numeric"):
        read_series(write_csv(tmp_path / "us.csv", "timestamp,v", rows))


def test_times_with_a_decimal_comma_in_a_semicolon_separated_file(tmp_path: Path) -> None:
    """A lab recorder's export in a European locale writes its seconds since the start as 0,5: the file was
    refused ("'0,000' ... is neither a number nor an ISO 8601 date"), and under a name that is no time name
    (``Zeit [s]``) the column was a metric, though its values rise as a time's do. Both are read as the values
    are, with a note; ``watch`` reads such times the same (none said to go back)."""
    rows = [f"{i * 0.5:.3f};{i % 7};{i % 5}".replace(".", ",") for i in range(40)]
    (s,) = read_series(write_csv(tmp_path / "named.csv", "time;Current;Pressure", rows))
    np.testing.assert_array_equal(s.time, np.arange(40) * 0.5)
    assert "named.csv: time column: 40 value(s) with a decimal comma read as numbers" in s.notes
    (u,) = read_series(write_csv(tmp_path / "lab.csv", "Zeit [s];Current;Pressure", rows))
    assert u.time_column == "Zeit [s]" and u.columns == ("Current", "Pressure")
    np.testing.assert_array_equal(u.time, s.time)
    assert time_of("0,5", comma=True) == ("number", 0.5) and time_of("0,5")[0] == ""


def test_thousands_separators_are_read_with_a_note(tmp_path: Path) -> None:
    """A spreadsheet's formatted export writes 1,234.5 (in a European one, 1.234,5): numbers, not text that
    refused the file; a cell that reads as a number already is read as before (1.234 stays 1.234 there)."""
    rows = [f'{i},"{1 + i % 3},{i:03d}.5",{i % 5}' for i in range(40)]
    (s,) = read_series(write_csv(tmp_path / "us.csv", "timestamp,bytes,v", rows))
    np.testing.assert_array_equal(s.values[:, 0], [(1 + i % 3) * 1000 + i + 0.5 for i in range(40)])
    assert s.notes == ["us.csv: column 'bytes': 40 value(s) with thousands separators read as numbers (the first "
                       "'1,000.5' as 1000.5)"]
    rows = [f"{i};{1 + i % 3}.{i:03d},5;1.234" for i in range(40)]
    (e,) = read_series(write_csv(tmp_path / "eu.csv", "timestamp;bytes;v", rows))
    np.testing.assert_array_equal(e.values[:, 0], s.values[:, 0])
    assert (e.values[:, 1] == 1.234).all()


def test_too_few_rows(tmp_path: Path) -> None:
    f = write_csv(tmp_path / "s.csv", "timestamp,v", [f"{i},{i}" for i in range(MIN_ROWS - 1)])
    with pytest.raises(InputError, match=rf"s\.csv: {MIN_ROWS - 1} rows; a series needs at least {MIN_ROWS}"):
        read_series(f)
    repeated = [f"{i // 2},{i}" for i in range(2 * MIN_ROWS - 2)]  # enough rows, too few timestamps
    with pytest.raises(InputError, match=rf"r\.csv: {2 * MIN_ROWS - 2} rows but {MIN_ROWS - 1} distinct timestamps in "
                                         "time column 'timestamp' .*give time_column if another column is the time"):
        read_series(write_csv(tmp_path / "r.csv", "timestamp,v", repeated))  # (the one given or found is named)


def test_a_series_file_too_short_is_named_by_its_path(tmp_path: Path) -> None:
    """A file's own series problems named it without its folder ("test.csv: 1 rows; ..."): eval of a series
    folder said which test.csv only by that, and predict named it twice ("DIR/test.csv: test.csv: 1 rows")."""
    (tmp_path / "one").mkdir()
    f = write_csv(tmp_path / "one" / "test.csv", "timestamp,v", ["0,1"])
    with pytest.raises(InputError) as err:
        read_series(f)
    assert str(err.value) == f"{f}: 1 rows; a series needs at least {MIN_ROWS}"


def test_label_column(tmp_path: Path) -> None:
    rows = [f"{i},{i % 5},{int(10 <= i < 13)}" for i in range(20)]
    (s,) = read_series(write_csv(tmp_path / "l.csv", "timestamp,v,label", rows))
    assert s.columns == ("v",) and s.labels.dtype == np.int8 and s.labels.sum() == 3
    rows[2] = "2,1,2"
    with pytest.raises(InputError, match=r"bl\.csv: label column must hold 0 \(normal\) or 1 \(anomaly\) in every "
                                         r"row; row 3 has '2'"):
        read_series(write_csv(tmp_path / "bl.csv", "timestamp,v,label", rows))
    rows[2] = "2,1,yes"
    with pytest.raises(InputError, match=r"row 3 has 'yes'"):
        read_series(write_csv(tmp_path / "yes.csv", "timestamp,v,label", rows))
    words = [f"{i},{i % 5},{'yes' if 10 <= i < 13 else 'no'}" for i in range(20)]  # said once: every value unlike 0/1
    with pytest.raises(InputError, match=r"row 1 has 'no' \(20 row\(s\) hold other values: 'no', 'yes'\)"):
        read_series(write_csv(tmp_path / "words.csv", "timestamp,v,label", words))
    with pytest.raises(InputError, match=r"row 3 has 'yes'"):
        read_series(write_csv(tmp_path / "yes.csv", "timestamp,v,label", rows))
    rows[2] = "2,1,"
    with pytest.raises(InputError, match=r"row 3 has an empty cell"):  # it said 'nan'
        read_series(write_csv(tmp_path / "empty.csv", "timestamp,v,label", rows))
    rows[2] = "2,1,NaN"  # read as NaN: it was "row 3 has an empty cell", of a cell that is not empty
    with pytest.raises(InputError, match=r"row 3 has an empty cell or NaN \(1 row\(s\) hold other values: an empty "
                                         r"cell or NaN\)"):
        read_series(write_csv(tmp_path / "nan.csv", "timestamp,v,label", rows))


def test_a_name_given_twice_is_refused_and_trailing_separators_dropped(tmp_path: Path) -> None:
    """Two columns of one name: which is the model's column would be a guess, refused in one line (a Parquet
    file said "Multiple matches for FieldRef.Name"). Two or more trailing separators (nameless, empty columns)
    refused the file too: they are dropped like one."""
    rows = [f"{i},{i % 5},{i % 3}" for i in range(20)]
    with pytest.raises(InputError, match=r"d\.csv: column name 'v' is given twice \(columns 2 and 3\); name each "):
        read_series(write_csv(tmp_path / "d.csv", "timestamp,v,v", rows))
    pq.write_table(pa.table([list(range(20)), [1.0] * 20, [2.0] * 20], names=["timestamp", "v", "v"]),
                   tmp_path / "d.parquet")
    with pytest.raises(InputError, match=r"d\.parquet: column name 'v' is given twice"):
        read_series(tmp_path / "d.parquet")
    (s,) = read_series(write_csv(tmp_path / "t.csv", "timestamp,v,,,", [f"{i},{i % 5},,," for i in range(20)]))
    assert s.columns == ("v",) and s.notes == ["t.csv: 1 column(s) without a name or a value dropped"]


def test_a_column_without_a_name_but_with_values_is_named_by_its_place(tmp_path: Path) -> None:
    """A header cell left empty over values was a metric named "": events.csv listed it as ";m4;m1", the
    report as ", m4, m1", and the review card dropped it. It is read as "column N" (its place in the file),
    at fit and at predict alike, with a note."""
    rows = [f"{i},{i % 5},{i % 3},{i % 7}" for i in range(20)]
    (s,) = read_series(write_csv(tmp_path / "e.csv", "timestamp,m1,,m4", rows))
    assert s.columns == ("m1", "column 3", "m4")
    assert s.notes == ["e.csv: column(s) without a name in the header read as ['column 3']; name them there"]
    assert s.values[:, 1].tolist() == [i % 3 for i in range(20)]


def test_a_trailing_separator_and_a_ragged_line(tmp_path: Path) -> None:
    """A spreadsheet's export may end every line with a separator: that nameless, empty column is dropped and
    said. A line with another number of fields is named by its line number (the file is refused)."""
    rows = [f"{i},{i % 5}," for i in range(20)]
    (s,) = read_series(write_csv(tmp_path / "x.csv", "timestamp,v,", rows))
    assert s.columns == ("v",) and s.notes == ["x.csv: 1 column(s) without a name or a value dropped"]
    rows = [f"{i},{i % 5},{i}" for i in range(20)]
    rows[6] = "6,1"
    with pytest.raises(InputError, match=r"r\.csv: 1 line\(s\) with another number of fields than the header's 3; "
                                         r"line 8 has 2: '6,1'"):
        read_series(write_csv(tmp_path / "r.csv", "timestamp,v,w", rows))


def test_series_column_splits_one_file(tmp_path: Path) -> None:
    rows = []
    for i in range(20):
        rows += [f"{1000 + i},a,{i}", f"{1000 + 19 - i},b,{100 + i}"]  # b's rows run backwards in time
    f = write_csv(tmp_path / "many.csv", "timestamp,host,load", rows)
    a, b = read_series(f, series_column="host")
    assert (a.name, b.name) == ("a", "b") and a.columns == ("load",)
    np.testing.assert_array_equal(a.values[:, 0], np.arange(20))
    np.testing.assert_array_equal(b.values[:, 0], 100 + np.arange(20)[::-1])
    np.testing.assert_array_equal(b.file_rows, np.arange(1, 40, 2))
    assert b.notes == ["many.csv [host=b]: 19 unsorted row(s) sorted by time"]
    with pytest.raises(InputError, match="no series column 'id'"):
        read_series(f, series_column="id")


def test_a_column_named_in_other_case_is_pointed_at(tmp_path: Path) -> None:
    """--time-column Time (or --series-column ID) for a file's 'time' ('id') said "no time column 'Time'; it has
    'time', ..." and left the difference to be spotted, as tables now point it out; and a test.csv whose labels
    are 'Label' is no longer narrowed to its training columns without a trace: eval names it."""
    rows = [f"{t},{i % 2},{i}" for i, t in enumerate(numbered(20))]
    f = write_csv(tmp_path / "x.csv", "time,id,v", rows)
    with pytest.raises(InputError, match=r"no time column 'Time' \(names are matched exactly: did you mean 'time'\?\)"):
        read_series(f, time_column="Time")
    with pytest.raises(InputError, match=r"no series column 'ID' \(names are matched exactly: did you mean 'id'\?\)"):
        read_series(f, series_column="ID")
    d = tmp_path / "s1"
    d.mkdir()
    write_csv(d / "train.csv", "time,v", [f"{t},{i % 3}" for i, t in enumerate(numbered(20))])
    write_csv(d / "test.csv", "time,v,Label", [f"{t},{i % 3},0" for i, t in enumerate(numbered(20, 1_700_000_000))])
    _, (te,) = read_series_folder(d)
    assert te.labels is None and te.columns == ("v",) and te.file_columns == ("time", "v", "Label")
    from normalcy.evaluation.evaluate import eval_series

    with pytest.raises(InputError, match=r"no label column 'label' \(names are matched exactly: did you mean "
                                         r"'Label'\?\)"):
        eval_series(d, "knn", {})


def test_a_label_column_named_in_other_case_is_said_where_it_is_read(tmp_path: Path) -> None:
    """A file whose labels are 'Label', not 'label': predict left it out as a column the model lacks, fit scored it
    as a metric, neither saying it was not read as labels (eval pointed at it); now a note says so, as eval does."""
    f = write_csv(tmp_path / "x.csv", "time,v,Label", [f"{t},{i % 3},0" for i, t in enumerate(numbered(20))])
    said = "x.csv: column 'Label' is not the label column 'label' (names are matched exactly: did you mean 'label'?)"
    (scored,) = read_series(f, keep=(("v",), "the model"), drawn_labels=True)  # as predict reads it
    assert scored.labels is None and scored.columns == ("v",) and said in scored.notes
    (fitted,) = read_series(f)  # as fit reads it: a metric
    assert fitted.columns == ("v", "Label") and said in fitted.notes
    (labelled,) = read_series(write_csv(tmp_path / "y.csv", "time,v,label", [f"{t},{i % 3},0" for i, t in
                                                                           enumerate(numbered(20))]))
    assert labelled.labels is not None and not any("label column" in n for n in labelled.notes)


def test_parquet(tmp_path: Path) -> None:
    ts = np.array(numbered(20), dtype="datetime64[s]")
    table = pa.table({"timestamp": ts, "x": np.arange(20.0), "y": np.arange(20) % 3})
    pq.write_table(table, tmp_path / "p.parquet")
    (s,) = read_series(tmp_path / "p.parquet")
    np.testing.assert_array_equal(s.time, numbered(20))
    assert s.columns == ("x", "y")
    with pytest.raises(InputError, match=r"x\.json: a series is read from \.csv or \.parquet"):
        read_series(tmp_path / "x.json")


def test_too_many_columns_refused_before_parsing(tmp_path: Path) -> None:
    f = tmp_path / "wide.csv"
    f.write_text(",".join(f"c{j}" for j in range(MAX_COLUMNS + 1)) + "\n")
    with pytest.raises(InputError, match=rf"wide\.csv: {MAX_COLUMNS + 1} columns"):
        read_series(f)


def make_folder(d: Path, extra_test_column: bool = False) -> Path:
    d.mkdir(parents=True)
    write_csv(d / "train.csv", "timestamp,m0,m1", [f"{i},{i % 5},{i % 3}" for i in range(30)])
    header = "timestamp,m0,m1,label" + (",m2" if extra_test_column else "")
    extra = ",1" if extra_test_column else ""
    write_csv(d / "test.csv", header, [f"{i},{i % 5},{i % 3},{int(i > 25)}{extra}" for i in range(30)])
    return d


def test_series_folder(tmp_path: Path) -> None:
    d = make_folder(tmp_path / "server")
    assert is_series_folder(d) and series_folders(d) == [d]
    (train,), (test,) = read_series_folder(d)
    assert train.name == test.name == "server" and train.labels is None and test.labels.sum() == 4
    assert test.columns == train.columns == ("m0", "m1")
    # a test column that training lacks (SKAB's "changepoint") is left out with a note; one missing is an error
    (_,), (test,) = read_series_folder(make_folder(tmp_path / "more", extra_test_column=True))
    assert test.columns == ("m0", "m1") and test.values.shape == (30, 2)
    assert test.notes == ["test.csv: column(s) ['m2'] left out, not scored: not in train.csv"]  # nor repaired
    bad = make_folder(tmp_path / "bad")
    write_csv(bad / "test.csv", "timestamp,m1,label", [f"{i},{i % 3},0" for i in range(30)])
    with pytest.raises(InputError, match=r"test\.csv: columns \['m0'\] of train\.csv are missing \(it has \['m1'\]\)"):
        read_series_folder(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: not a series folder"):
        series_folders(tmp_path / "empty")


def test_names_that_differ_only_in_spaces_around_them_are_one_column(tmp_path: Path) -> None:
    """A header written "timestamp, m0, m1" at fit and "timestamp,m0,m1" now (or the other way): the model's
    columns, read with a note, not "missing"."""
    folder = make_folder(tmp_path / "f")
    train = (folder / "train.csv").read_text().splitlines()
    (folder / "train.csv").write_text("\n".join([train[0].replace(",", ", ")] + train[1:]) + "\n")
    (tr,), (te,) = read_series_folder(folder)
    assert tr.columns == te.columns == (" m0", " m1")
    assert te.notes == ["test.csv: column(s) ['m0', 'm1'] read as [' m0', ' m1']: the same names but for the spaces "
                        "around them"]


def test_folder_of_series_folders(tmp_path: Path) -> None:
    for name in ("s10", "s2", "s1"):
        make_folder(tmp_path / "set" / name)
    (tmp_path / "set" / "notes").mkdir()
    train, test = read_series_folder(tmp_path / "set")
    assert [s.name for s in train] == [s.name for s in test] == ["s1", "s2", "s10"]


def test_asd_folders(shared_data: Path) -> None:
    """The real ASD layout: 12 servers, 19 metrics, row-number timestamps, labelled test."""
    folders = series_folders(shared_data / "asd")
    assert [f.name for f in folders] == [f"omi-{i}" for i in range(1, 13)]
    (train,), (test,) = read_series_folder(folders[0])
    assert train.columns == tuple(f"m{j}" for j in range(19)) == test.columns
    assert train.values.shape == (8640, 19) and len(test) == 4320 and 0 < test.labels.mean() < 0.2


def test_epoch_milliseconds_are_read_as_seconds_with_a_note(tmp_path: Path) -> None:
    """Java's and JavaScript's clocks write milliseconds: as seconds they would lie in the year 52000, which
    no plot can draw (a run's report failed on them, and with it the whole run)."""
    ts = numbered()
    rows = [f"{t * 1000},{i % 7}" for i, t in enumerate(ts)]
    (s,) = read_series(write_csv(tmp_path / "ms.csv", "timestamp,cpu", rows))
    np.testing.assert_array_equal(s.time, ts)
    assert any("epoch milliseconds" in n for n in s.notes)
    (n,) = read_series(write_csv(tmp_path / "ns.csv", "timestamp,cpu", [f"{t * 10**9},{i % 7}" for i, t in
                                                                         enumerate(ts)]))
    np.testing.assert_allclose(n.time, ts)
    assert any("epoch nanoseconds" in x for x in n.notes)
    (plain,) = read_series(write_csv(tmp_path / "s.csv", "timestamp,cpu", [f"{t},{i % 7}" for i, t in enumerate(ts)]))
    assert plain.notes == []  # seconds stay seconds
    (frac,) = read_series(write_csv(tmp_path / "f.csv", "timestamp,cpu", [f"{t * 1000}.25,{i % 7}" for i, t in
                                                                           enumerate(ts)]))
    np.testing.assert_allclose(frac.time, np.array(ts) + 0.00025)  # a fraction of a millisecond: still ms
    assert any("epoch milliseconds" in x for x in frac.notes)


def test_epoch_milliseconds_before_1973_by_the_columns_name_or_said(tmp_path: Path) -> None:
    """Epoch milliseconds before 1973-03-03 are under 1e11, read as seconds of the years 2100-5138 without a
    word. A time column whose name says its unit (time_ms, timestampMs, t [us]) is read in it; without one,
    numbers that as seconds lie past 2100 are still seconds, said with what they would be as milliseconds."""
    ts = numbered(start=40_000_000, step=60)  # 1971-04-09, a minute apart
    rows = [f"{t * 1000},{i % 7}" for i, t in enumerate(ts)]
    for name in ("time_ms", "timestampMs", "t [ms]", "epoch_millis"):
        (s,) = read_series(write_csv(tmp_path / "named.csv", f"{name},cpu", rows), time_column=name)
        np.testing.assert_array_equal(s.time, ts)
        assert s.notes == [f"named.csv: time column read in milliseconds, as its name {name!r} says"]
    (us,) = read_series(write_csv(tmp_path / "us.csv", "t_us,cpu", [f"{10 * i},{i % 7}" for i in range(40)]),
                        time_column="t_us")
    np.testing.assert_allclose(us.time, np.arange(40) * 1e-5)  # microseconds since the start
    (plain,) = read_series(write_csv(tmp_path / "plain.csv", "timestamp,cpu", rows))
    np.testing.assert_array_equal(plain.time, np.array(ts) * 1000.0)  # as before: seconds
    assert plain.notes == ["plain.csv: time column read as epoch seconds (the year 3237); if its numbers are epoch "
                           "milliseconds (the year 1971), name the column with its unit (time_ms) and give it as "
                           "time_column, or write the times as ISO 8601 dates"]
    for header, values in (("timestamp", numbered()), ("time_s", [t * 1000 for t in ts]), ("time", range(40))):
        (s,) = read_series(write_csv(tmp_path / "s.csv", f"{header},cpu", [f"{t},{i % 7}" for i, t in
                                                                             enumerate(values)]), time_column=header)
        assert s.notes == [] and s.time[0] == list(values)[0]  # epoch seconds, seconds by name, row numbers


def test_a_file_of_many_ids_is_grouped_in_one_pass(tmp_path: Path) -> None:
    """Each id's rows were found by comparing it with the whole id column: ids x rows comparisons (5,000 ids of
    40 rows: 6 s of a 9 s read; 50,000 ids of one row each: half a minute). Grouped by one sort now, each id's
    rows in file order, ids in order of first appearance, one-row ids named and the others read."""
    import time

    ids = [f"t{k}" for k in range(50_000)]
    rows = [f"{k},{sid},1" for k, sid in enumerate(ids)]
    rows += [f"{100_000 + 60 * i},{'b' if i % 2 else 'a'},{i % 5}" for i in range(2 * MIN_ROWS)]
    path = write_csv(tmp_path / "many.csv", "time,host,cpu", rows)
    failed: list[tuple[str, str]] = []
    started = time.perf_counter()
    a, b = read_series(path, series_column="host", failed=failed)
    assert time.perf_counter() - started < 10  # about 1 s; 30 s and more before
    assert (a.name, b.name) == ("a", "b") and len(failed) == 50_000 and failed[1][0] == f"{path} [host=t1]"
    np.testing.assert_array_equal(a.file_rows, 50_000 + 2 * np.arange(MIN_ROWS))
    np.testing.assert_array_equal(b.values[:, 0], [i % 5 for i in range(1, 2 * MIN_ROWS, 2)])


def test_a_nan_id_in_a_parquet_float_column_is_no_series(tmp_path: Path) -> None:
    """A Parquet id column of floats written from numpy holds NaN (not null) where a row has no id: read as
    text it was the id "nan", fitted and scored as a series of its own without a word. Such rows are in no
    series and named, as an empty cell's are; a text id "nan" (a CSV's, a string column's) is still an id."""
    n = 2 * MIN_ROWS
    t = np.repeat(1_700_000_000 + 60 * np.arange(n), 3)
    host = np.tile([1.0, 2.0, np.nan], n)
    pq.write_table(pa.table({"time": t, "host": host, "cpu": np.sin(np.arange(3 * n) / 4)}), tmp_path / "f.parquet")
    failed: list[tuple[str, str]] = []
    assert [s.name for s in read_series(tmp_path / "f.parquet", series_column="host", failed=failed)] == ["1", "2"]
    assert failed == [(f"{tmp_path / 'f.parquet'} [host=]", f"{n} row(s) without a 'host' value, in no series "
                       "(the first: row 3)")]
    text = pa.table({"time": t, "host": np.where(np.isnan(host), "nan", host.astype(str)), "cpu": t % 7})
    pq.write_table(text, tmp_path / "s.parquet")
    assert [s.name for s in read_series(tmp_path / "s.parquet", series_column="host")] == ["1.0", "2.0", "nan"]


def test_numeric_ids_read_as_a_metric_are_named_with_series_column(tmp_path: Path) -> None:
    """A long file of several series whose id column holds numbers (host 1, 2, 3), read without
    --series-column: the ids were a metric, two rows in three dropped as "a repeated timestamp", and nothing
    said which column told them apart. The note names it and --series-column."""
    ts = numbered()
    rows = [f"{t},{h},{(i + h) % 7}" for i, t in enumerate(ts) for h in (1, 2, 3)]
    (s,) = read_series(write_csv(tmp_path / "long.csv", "time,host,cpu", rows))
    assert len(s) == len(ts) and (f"long.csv: {2 * len(ts)} row(s) with a repeated timestamp dropped (the last row "
                                  "of each timestamp kept); column 'host' tells those rows apart (whole numbers, a "
                                  "row a time each): if it names the series the file holds, give "
                                  "series_column='host'") in s.notes
    with cli_wording():  # the command line's option, as typed
        (c,) = read_series(tmp_path / "long.csv")
    assert any(n.endswith("give --series-column 'host'") for n in c.notes)
    (k,) = read_series(tmp_path / "long.csv", keep=(("cpu",), "the model"))  # a model of cpu alone
    assert any(n.endswith("dropped (the last row of each timestamp kept); half the rows or more: if the file holds "
                          "several series, give the column that names them as series_column") for n in k.notes)
    repeated = [f"{t},{i % 3},{i % 7}" for i, t in enumerate(ts)] + [f"{ts[0]},5,1"]  # one time twice: no ids
    (r,) = read_series(write_csv(tmp_path / "r.csv", "time,host,cpu", repeated))
    assert any(n.endswith("dropped (the last row of each timestamp kept)") for n in r.notes)


def test_the_time_column_as_the_series_column_is_one_line(tmp_path: Path) -> None:
    """--series-column naming the time column (given, or found by its name) made each time a series of one
    row, each refused: "no usable series ([host=1]: 100 rows but 1 distinct timestamps ...; ...)"."""
    rows = [f"{t},{h},{h % 7}" for t in numbered() for h in (1, 2)]
    path = write_csv(tmp_path / "long.csv", "time,host,cpu", rows)
    for time_column, series_column in (("host", "host"), (None, "time")):
        with pytest.raises(InputError, match=rf"long.csv: column '{series_column}' is both the time column and the "
                                             "series column"):
            read_series(path, time_column, series_column, failed=[])
    assert len(read_series(path, None, "host")) == 2


def test_one_long_id_does_not_widen_every_rows_id(tmp_path: Path) -> None:
    """Ids were numpy's fixed-width text, as wide as the longest: one id of 5,000 characters (a text column given
    as --series-column by mistake) made every row's 20 kB, 6.3 GB and a minute for 100,000 rows. Each id is its
    own string now."""
    import tracemalloc

    rows = [f"{1_700_000_000 + 60 * (i // 2)},{'a' if i % 2 else ('x' * 2000 if i == 0 else 'b')},{i % 7}"
            for i in range(10_000)]
    path = write_csv(tmp_path / "long.csv", "time,host,cpu", rows)
    failed: list[tuple[str, str]] = []
    tracemalloc.start()
    try:
        series = read_series(path, series_column="host", failed=failed)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [s.name for s in series] == ["a", "b"] and len(failed) == 1  # the long id: one row
    assert peak < 30e6, peak  # 80 MB of ids alone before


def test_a_bad_time_cell_is_named_and_mixed_kinds_are_said(tmp_path: Path) -> None:
    ts = numbered()
    rows = [f"{'bad' if i == 5 else t},{i % 7}" for i, t in enumerate(ts)]
    with pytest.raises(InputError, match=r"'bad' at row 6 is neither a number nor an ISO 8601 date"):
        read_series(write_csv(tmp_path / "bad.csv", "timestamp,cpu", rows))
    iso = [datetime.fromtimestamp(t, timezone.utc).isoformat() for t in ts]
    rows = [f"{t if i % 2 else d},{i % 7}" for i, (t, d) in enumerate(zip(ts, iso))]
    with pytest.raises(InputError, match=r"mixes numbers \(row 2\) and ISO 8601 dates \(row 1\)"):
        read_series(write_csv(tmp_path / "mixed.csv", "timestamp,cpu", rows))


def test_times_without_a_zone_beside_zoned_ones_are_said(tmp_path: Path) -> None:
    """Local times (no zone) beside times with an offset are read as UTC, an hour or more off the others:
    said, naming the first; a file of zoned times with several offsets (a DST change) is read without a word."""
    ts = numbered(40, step=3600)
    zoned = [datetime.fromtimestamp(t, timezone.utc).astimezone(ZoneInfo("Europe/Berlin")) for t in ts]
    rows = [f"{d.isoformat() if i < 30 else d.replace(tzinfo=None).isoformat()},{i % 7}" for i, d in enumerate(zoned)]
    (s,) = read_series(write_csv(tmp_path / "local.csv", "timestamp,cpu", rows))
    assert s.notes == [f"local.csv: time column: 10 time(s) without a zone (the first "
                       f"{zoned[30].replace(tzinfo=None).isoformat()!r} in row 31) read as UTC, beside 30 with one; "
                       "give every time its zone if they are local times"]
    dst = [datetime.fromtimestamp(1774659600 + 3600 * i, timezone.utc).astimezone(ZoneInfo("Europe/Berlin"))
           for i in range(40)]  # across the spring change of 2026-03-29: +01:00, then +02:00
    (d,) = read_series(write_csv(tmp_path / "dst.csv", "timestamp,cpu", [f"{t.isoformat()},{i % 7}"
                                                                        for i, t in enumerate(dst)]))
    assert d.notes == [] and (np.diff(d.time) == 3600).all()


def test_series_ids_are_read_as_written_and_rows_without_one_left_out(tmp_path: Path) -> None:
    """Ids are text: 01 stays 01, and one empty cell does not make the others 1.0 and 2.0 (pyarrow reads a
    number column with a gap as floats); the rows without an id are named, the series kept."""
    rows = [f"{'' if i == 3 else ('01' if i % 2 else '2')},{60 * i},{i % 5}" for i in range(80)]
    f = write_csv(tmp_path / "long.csv", "host,timestamp,cpu", rows)
    failed: list[tuple[str, str]] = []
    got = read_series(f, series_column="host", failed=failed)
    assert [s.name for s in got] == ["2", "01"]
    assert failed == [(f"{f} [host=]", "1 row(s) without a 'host' value, in no series (the first: row 4)")]
    with pytest.raises(InputError, match="1 row"):
        read_series(f, series_column="host")  # no list to name it in: an error naming the file
    # a Parquet file's typed ids the same; with every series too short, each reason is given
    pq.write_table(pa.table({"host": pa.array([1, None] + [1, 2] * 9, pa.int64()), "timestamp": list(range(20)),
                             "cpu": [float(i % 3) for i in range(20)]}), tmp_path / "ids.parquet")
    with pytest.raises(InputError, match=r"no usable series \(\[host=\]: 1 row.*; \[host=1\]: 10 rows.*"
                                         r"\[host=2\]: 9 rows"):
        read_series(tmp_path / "ids.parquet", series_column="host", failed=[])


def test_pandas_index_column_is_left_out_of_a_parquet_series(tmp_path: Path) -> None:
    n = 40
    pq.write_table(pa.table({"timestamp": numbered(n), "cpu": [float(i % 3) for i in range(n)],
                             "__index_level_0__": [i % 20 for i in range(n)]}), tmp_path / "x.parquet")
    (s,) = read_series(tmp_path / "x.parquet")
    assert s.columns == ("cpu",) and any("index column" in n for n in s.notes)


def test_a_date_index_pandas_wrote_to_parquet_is_the_time(tmp_path: Path) -> None:
    """pandas' to_parquet writes a DataFrame's date index as ``__index_level_0__`` (no name), which was left out
    as a row index (the rows numbered, their dates lost), or after the other columns (a name that is not a time
    name), which was refused as a value column that is not numeric: either is the time, with a note."""
    n = 40
    ts = numbered(n, step=3600)
    stamps = pa.array(np.array(ts[::-1], "datetime64[s]"), pa.timestamp("ms", tz="UTC"))  # written newest first
    for name in ("__index_level_0__", "ts"):
        meta = {b"pandas": json.dumps({"index_columns": [name], "columns": []}).encode()}
        table = pa.table({"cpu": [float(i) for i in range(n)], name: stamps}).replace_schema_metadata(meta)
        pq.write_table(table, tmp_path / f"{name}.parquet")
        (s,) = read_series(tmp_path / f"{name}.parquet")
        assert s.time_column == name and s.columns == ("cpu",)
        assert any(f"column {name!r} read as the time column (dates pandas wrote" in m for m in s.notes)
        np.testing.assert_array_equal(s.time, ts)  # sorted by the dates
        np.testing.assert_array_equal(s.values[:, 0], np.arange(n)[::-1])
    # a row index of numbers is still left out, the rows numbered
    pq.write_table(pa.table({"cpu": [float(i % 3) for i in range(n)], "__index_level_0__": list(range(n))}),
                   tmp_path / "numbers.parquet")
    (s,) = read_series(tmp_path / "numbers.parquet")
    assert s.time_column is None and s.columns == ("cpu",)


def test_an_unnamed_date_column_read_as_the_time_gives_the_times(tmp_path: Path) -> None:
    """pandas writes a date index as a first column without a name: read as the time, its dates must be the
    times (sorted by them), not the row numbers, even though its name is empty."""
    ts = numbered(40, step=3600)
    order = list(range(20, 40)) + list(range(20))  # written out of order: sorting must follow the dates
    rows = [f"{datetime.fromtimestamp(ts[i], timezone.utc).isoformat()},{i}" for i in order]
    (s,) = read_series(write_csv(tmp_path / "index.csv", ",cpu", rows))
    assert s.time_column == "" and any("column '' read as the time column" in n for n in s.notes)
    np.testing.assert_array_equal(s.time, ts)
    np.testing.assert_array_equal(s.values[:, 0], np.arange(40))


def test_a_row_index_beside_the_time_column_is_not_a_metric(tmp_path: Path) -> None:
    """pandas' to_csv writes its row index as a first column without a name: beside a named time column it
    is left out with a note (scored, every test row would hold an index training never saw); a model fitted
    on it as a metric still gets it, and a column of other numbers without a name is still a metric."""
    ts = numbered(40)
    rows = [f"{i % 20},{t},{i % 7}" for i, t in enumerate(ts)]  # two frames concatenated: 0..19, 0..19
    f = write_csv(tmp_path / "x.csv", ",timestamp,cpu", rows)
    (s,) = read_series(f)
    assert s.columns == ("cpu",) and any("column '' left out, not scored: a row index" in n for n in s.notes)
    (kept,) = read_series(f, keep=(("", "cpu"), "the model"))
    assert kept.columns == ("", "cpu")
    other = write_csv(tmp_path / "y.csv", ",timestamp,cpu", [f"{i * 7 % 5},{t},{i % 7}" for i, t in enumerate(ts)])
    assert read_series(other)[0].columns == ("column 1", "cpu")


def test_parquet_is_read_without_pyarrow_s_dataset_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``pq.read_table`` (a dataset scan) left threads that aborted the interpreter's exit once torch was imported
    ("terminate called without an active exception", exit code 134 in 8 of 10 runs, an error exit or not): a
    Parquet series, and its times as written, are read through ``ParquetFile``."""
    from normalcy.series.runs import read_series_file

    def scan(*args: object, **kwargs: object) -> None:
        raise AssertionError("pq.read_table used")

    ts = np.array(numbered(40), "datetime64[s]")
    pq.write_table(pa.table({"time": pa.array(ts, pa.timestamp("ms", tz="UTC")), "cpu": np.arange(40.0)}),
                   tmp_path / "x.parquet")
    monkeypatch.setattr(pq, "read_table", scan)
    f = read_series_file(tmp_path / "x.parquet", None, None)
    np.testing.assert_array_equal(f.series[0].time, numbered(40))
    assert f.times[0] == "2020-09-13T12:26:40+00:00"


def test_a_parquet_duration_time_column_is_seconds(tmp_path: Path) -> None:
    """Time since the start as pandas' Timedelta is a Parquet duration: it was refused ("'0 nanoseconds' ... is
    neither a number nor an ISO 8601 date"); it is seconds, and an empty one is named."""
    elapsed = pa.array(np.arange(40) * 500_000_000, pa.duration("ns"))  # every half second
    pq.write_table(pa.table({"time": elapsed, "cpu": np.arange(40.0)}), tmp_path / "x.parquet")
    (s,) = read_series(tmp_path / "x.parquet")
    np.testing.assert_array_equal(s.time, np.arange(40) * 0.5)
    pq.write_table(pa.table({"time": pa.array([None, *range(1, 40)], pa.duration("s")), "cpu": np.arange(40.0)}),
                   tmp_path / "gap.parquet")
    with pytest.raises(InputError, match=r"gap.parquet: time column: empty at row 1"):
        read_series(tmp_path / "gap.parquet")


def test_local_times_repeating_the_hour_daylight_saving_ends_are_explained(tmp_path: Path) -> None:
    """Local times without a zone repeat 02:00-02:59 where daylight saving time ends: the rows were "sorted" and
    "dropped as repeated", unexplained. The note names the row that goes back and what to give instead; rows
    swapped out of order (more than one step back, or more than an hour) are noted as before."""
    berlin = ZoneInfo("Europe/Berlin")
    utc = [datetime(2024, 10, 26, 23, tzinfo=timezone.utc).timestamp() + 900 * i for i in range(24)]
    local = [datetime.fromtimestamp(t, berlin).replace(tzinfo=None).isoformat() for t in utc]
    (s,) = read_series(write_csv(tmp_path / "local.csv", "time,cpu", [f"{t},{i}" for i, t in enumerate(local)]))
    assert s.notes[0].startswith("local.csv: 1 unsorted row(s) sorted by time (row 9 goes back 2700 s: local times "
                                 "without a zone repeat an hour where daylight saving time ends")
    zoned = [datetime.fromtimestamp(t, berlin).isoformat() for t in utc]  # with their offsets: nothing to say
    (z,) = read_series(write_csv(tmp_path / "zoned.csv", "time,cpu", [f"{t},{i}" for i, t in enumerate(zoned)]))
    assert z.notes == [] and len(z) == 24


def test_a_test_file_overlapping_training_or_sampled_otherwise_is_said(tmp_path: Path) -> None:
    """eval scored a test.csv whose rows lie within train.csv's time range (rows trained on score as normal), or
    whose rows are five times further apart (windows count rows), without a word; each is a note now, and a
    test that continues training at its interval (ASD's) has none."""
    d = tmp_path / "s"
    d.mkdir()
    write_csv(d / "train.csv", "timestamp,cpu", [f"{t},{i % 7}" for i, t in enumerate(numbered(40))])
    write_csv(d / "test.csv", "timestamp,cpu", [f"{t},{i % 7}" for i, t in enumerate(numbered(40, start=1_600_002_400))])
    (_,), (te,) = read_series_folder(d)
    assert te.notes == []
    write_csv(d / "test.csv", "timestamp,cpu",
              [f"{t},{i % 7}" for i, t in enumerate(numbered(40, start=1_600_001_800, step=300))])
    (_,), (te,) = read_series_folder(d)
    assert te.notes == ["test.csv: 2 of its 40 rows lie within the time range of train.csv: rows trained on score as "
                        "normal; test on rows after training",
                        "test.csv: a row every 300 s, train.csv a row every 60 s: windows count rows, so its patterns "
                        "are seen at another speed than they were learned; resample one to the other's interval"]


def test_a_separate_time_of_day_column_is_named_as_one(tmp_path: Path) -> None:
    """A logger writes Date and Time in two columns: Time was "not numeric ...; give it as --time-column", and
    given so, "'00:00:00' is neither a number nor an ISO 8601 date". Both say it is a time of day to be joined
    with its date."""
    rows = [f"2024-01-{1 + i // 96:02d},{i % 96 // 4:02d}:{i % 4 * 15:02d}:00,{i % 7}" for i in range(200)]
    f = write_csv(tmp_path / "logger.csv", "Date,Time,cpu", rows)
    with pytest.raises(InputError, match=r"column 'Time' holds times of day \(the first '00:00:00' in row 1\) without "
                                         r"their dates; join the date and the time of day into one ISO 8601 column"):
        read_series(f)
    with pytest.raises(InputError, match=r"column 'Time' holds times of day"):
        read_series(f, time_column="Date")  # Date given as the time, Time a value: said the same
    times = write_csv(tmp_path / "times.csv", "Time,cpu", [r.split(",", 1)[1] for r in rows])
    with pytest.raises(InputError, match=r"time column: '00:00:00' at row 1 is a time of day without its date; join"
                                         r".* and give it as time_column$"):
        read_series(times, time_column="Time")
    with pytest.raises(InputError, match=r"without their dates; join .* and give it as --time-column$"), cli_wording():
        read_series(f)


def test_rfc3339_lower_case_z_is_utc(tmp_path: Path) -> None:
    """RFC 3339 allows ``2024-01-01t00:00:00z``: it was "neither a number nor an ISO 8601 date"."""
    rows = [f"{datetime.fromtimestamp(t, timezone.utc).isoformat()[:19]}z,{i}" for i, t in enumerate(numbered(40))]
    (s,) = read_series(write_csv(tmp_path / "z.csv", "time,cpu", rows))
    np.testing.assert_array_equal(s.time, numbered(40))
    (t,) = read_series(write_csv(tmp_path / "t.csv", "time,cpu", [r.replace("T", "t") for r in rows]))
    np.testing.assert_array_equal(t.time, numbered(40))
    assert time_of("2024-01-01t00:00:00z") == time_of("2024-01-01T00:00:00Z")


def test_a_numpy_savetxt_header_names_a_series_columns(tmp_path: Path) -> None:
    """numpy.savetxt's header "# a,b" named the first column "# a": it is "a" now, and a model fitted on "# a"
    (``keep``: the columns it knows) still finds it."""
    X = np.random.default_rng(0).normal(size=(40, 2))
    np.savetxt(tmp_path / "s.csv", X, delimiter=",", header="a,b")
    assert read_series(tmp_path / "s.csv")[0].columns == ("a", "b")
    s = read_series(tmp_path / "s.csv", keep=(["# a", "b"], "the model"))[0]
    assert s.columns == ("# a", "b")
    np.testing.assert_array_equal(s.values, X)


def test_a_numpy_savetxt_file_with_a_time_column_is_a_series_scored_with_its_times(tmp_path: Path) -> None:
    """With "# time,m0" read as the names time, m0, predict re-read the time column "time" by pyarrow from the
    raw header ("# time"): "cannot read the time column 'time'", and no series was scored. Every reader of a CSV
    takes its layout from one place (``csv_layout``): the file is a series (its time column found by name) and
    its times are the rows', a '#' footer left out."""
    from normalcy.series.runs import is_series_input, read_series_file

    path = tmp_path / "test.csv"
    np.savetxt(path, np.c_[np.arange(40), np.random.default_rng(0).normal(size=40)], delimiter=",",
               header="time,m0", footer="end")
    assert is_series_input(path)
    f = read_series_file(path, None, None)
    assert f.time_column == "time" and f.times[:2] == ["0.000000000000000000e+00", "1.000000000000000000e+00"]
    assert len(f.times) == 40


def test_a_series_column_of_one_row_per_value_is_questioned(tmp_path: Path) -> None:
    """--series-column naming a column with a value per row (a row id) refused each value as "1 rows; a series
    needs at least 16", five of them and "and 35 more", never asking whether the column names series at all."""
    rows = [f"{t},r{i},{i % 7}" for i, t in enumerate(numbered())]
    path = write_csv(tmp_path / "long.csv", "time,host,cpu", rows)
    hint = r"each of the 40 values of 'host' has fewer than 16 rows \(at most 1\): is 'host' the column naming"
    with pytest.raises(InputError, match=r"no usable series \(\[host=r0\]: 1 rows.*" + hint):
        read_series(path, series_column="host", failed=[])
    with pytest.raises(InputError, match=r"long.csv \[host=r0\]: 1 rows; a series needs at least 16; " + hint):
        read_series(path, series_column="host")
    long = [f"{t},{'a' if i < 20 else f'r{i}'},{i % 7}" for i, t in enumerate(numbered())]  # one series is usable
    failed: list[tuple[str, str]] = []
    assert len(read_series(write_csv(tmp_path / "ok.csv", "time,host,cpu", long), series_column="host",
                           failed=failed)) == 1
    assert "naming" not in failed[0][1]


def test_intervals_a_thousand_times_apart_suggest_milliseconds(tmp_path: Path) -> None:
    """A test file whose times count milliseconds (since its start, or epoch milliseconds before 1973: numbers
    that read as seconds) beside training in seconds was said to be sampled "every 60000 s", with "resample"
    for its only advice. Both the folder's note and predict's warning now name the unit."""
    from types import SimpleNamespace

    from normalcy.series.runs import sampling_note

    d = tmp_path / "s"
    d.mkdir()
    write_csv(d / "train.csv", "timestamp,cpu", [f"{t},{i % 7}" for i, t in enumerate(numbered(40))])
    write_csv(d / "test.csv", "timestamp,cpu", [f"{60_000 * i},{i % 7}" for i in range(40)])
    hint = ("; 1,000 times apart: if one file's times count milliseconds, name its time column with the unit, as "
            "time_ms, and give it as time_column")  # Python's argument
    (_,), (te,) = read_series_folder(d)
    assert te.notes[-1].startswith("test.csv: a row every 60000 s, train.csv a row every 60 s") and te.notes[-1].endswith(hint)
    assert sampling_note(SimpleNamespace(interval_s=60.0), te, "test.csv").endswith(hint)  # type: ignore[arg-type]
    assert "times apart" not in str(sampling_note(SimpleNamespace(interval_s=300.0), te, "test.csv"))  # 200x: none


def test_a_model_column_in_other_case_is_pointed_at(tmp_path: Path) -> None:
    """A test file writing 'CPU' for training's 'cpu' was refused as "columns ['cpu'] of train.csv are missing (it
    has ['mem'])": 'CPU' was left out (not training's) before, so the file seemed to lack it. It is named now."""
    d = tmp_path / "s"
    d.mkdir()
    write_csv(d / "train.csv", "timestamp,cpu,mem", [f"{t},{i % 7},{i % 5}" for i, t in enumerate(numbered())])
    write_csv(d / "test.csv", "timestamp,CPU,mem", [f"{t},{i % 7},{i % 5}" for i, t in enumerate(numbered(start=1_700_000_000))])
    with pytest.raises(InputError, match=r"columns \['cpu'\] of train\.csv are missing \(it has \['mem'\]\) \(names are "
                                         r"matched exactly: did you mean 'CPU'\?\)$"):
        read_series_folder(d)

def test_a_crafted_very_long_model_column_is_not_echoed_whole(tmp_path: Path) -> None:
    """A series model.json whose column name was crafted to 1 MB: "columns [...] of the model are missing"
    repeated it whole. Each name is cut to 100 characters, its start and end kept."""
    (train,), (test,) = read_series_folder(make_folder(tmp_path / "server"))
    with pytest.raises(InputError, match=r"test\.csv: columns \['x+…x+'\] of the model are missing") as err:
        test.only(["x" * 1_000_000], "the model")
    assert len(str(err.value)) < 1000
