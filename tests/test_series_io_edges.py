"""Series input edge cases: Parquet types, files under the wrong suffix, one bad series of many, time zones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from normalcy.errors import InputError
from normalcy.series.io import read_series
from normalcy.vectors.tables import read_table


def frame(n: int = 40) -> dict[str, np.ndarray]:
    return {"time": 1_600_000_000 + 60 * np.arange(n), "cpu": np.sin(np.arange(n) / 4)}


def test_a_file_under_the_other_format_s_suffix_says_so(tmp_path: Path) -> None:
    """A Parquet file named .csv was "not UTF-8 text (Latin-1 or Windows-1252?): save it as CSV UTF-8"; a CSV named
    .parquet "Parquet magic bytes not found in footer": each names the format it is now."""
    pq.write_table(pa.table(frame()), tmp_path / "p.csv")
    with pytest.raises(InputError, match=r"p\.csv: a Parquet file .*rename it to \.parquet"):
        read_series(tmp_path / "p.csv")
    (tmp_path / "c.parquet").write_text("time,cpu\n" + "".join(f"{i},{i % 3}\n" for i in range(40)))
    for read in (read_series, read_table):
        with pytest.raises(InputError, match=r"c\.parquet: text \(CSV\?\), not a Parquet file.*rename it to \.csv"):
            read(tmp_path / "c.parquet")


def test_a_csv_whose_first_column_is_named_par1_is_read(tmp_path: Path) -> None:
    """A CSV beginning with the text PAR1 (a column PAR1, a light sensor's reading) was refused as "a Parquet file
    (it begins with PAR1) ... rename it to .parquet": a Parquet file ends with PAR1 too."""
    (tmp_path / "s.csv").write_text("PAR1,time\n" + "".join(f"{i % 3},{i}\n" for i in range(40)))
    assert read_series(tmp_path / "s.csv", "time")[0].columns == ("PAR1",)
    (tmp_path / "t.csv").write_text("PAR1_umol,PAR2\n" + "".join(f"{i % 3},{i % 5}\n" for i in range(40)))
    assert read_table(tmp_path / "t.csv").X.shape == (40, 2)


@pytest.mark.parametrize(("cells", "kind"), [(pa.array([[1.0, 2.0]] * 40), "lists"),
                                             (pa.array([{"a": 1, "b": 2.0}] * 40), r"structs \(named fields\)")])
def test_a_nested_parquet_column_is_named(tmp_path: Path, cells: pa.Array, kind: str) -> None:
    """A list column was a ValueError traceback ("The truth value of an array ... is ambiguous"); a struct column
    was "not numeric" with a dict's repr for its first text."""
    pq.write_table(pa.table(frame() | {"tags": cells}), tmp_path / "n.parquet")
    with pytest.raises(InputError, match=rf"n\.parquet: value column 'tags' holds {kind}, not numbers"):
        read_series(tmp_path / "n.parquet")


def test_whole_numbers_beyond_2_53_are_said_to_lose_digits(tmp_path: Path) -> None:
    """uint64 (or int64) counters past 2^53 became float64 without a word: 2^60 + 3 and 2^60 read alike."""
    big = (2**60 + 3 * np.arange(40)).astype(np.uint64)
    pq.write_table(pa.table(frame() | {"bytes": big}), tmp_path / "u.parquet")
    (s,) = read_series(tmp_path / "u.parquet")
    assert any("column 'bytes': whole numbers beyond 2^53" in n for n in s.notes)


def test_one_series_of_text_is_named_and_the_others_read(tmp_path: Path) -> None:
    """--series-column with one host whose cpu is "err" in every row: the column was refused for the whole file
    ("value column 'cpu' is not numeric"), so fit and predict lost every series; now that one is named."""
    n = 40
    lines = [f"{1_600_000_000 + 60 * i},{h},{i % 7 if h != 'bad' else 'err'},{i % 3}" for h in ("a", "bad", "b")
             for i in range(n)]
    f = tmp_path / "many.csv"
    f.write_text("time,host,cpu,mem\n" + "\n".join(lines) + "\n")
    failed: list[tuple[str, str]] = []
    assert [s.name for s in read_series(f, series_column="host", failed=failed)] == ["a", "b"]
    assert failed == [(f"{f} [host=bad]", f"value column 'cpu' is not numeric ({n} of {n} values are not numbers, "
                                          f"the first 'err' in row {n + 1}); correct this series' values or "
                                          "remove its rows")]
    with pytest.raises(InputError, match=r"value column 'cpu' is not numeric"):  # without ``failed``: as before
        read_series(f, series_column="host")


def test_a_column_of_text_in_every_series_keeps_the_hint_for_the_file(tmp_path: Path) -> None:
    """The words for one series of text ("correct this series' values") said of every series would hide the
    likelier cause, a column of names: where every series refuses it, the file's own refusal is raised."""
    lines = [f"{1_600_000_000 + 60 * i},{h},x{i % 2},{i % 3}" for h in ("a", "b") for i in range(40)]
    f = tmp_path / "many.csv"
    f.write_text("time,host,kind,mem\n" + "\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"value column 'kind' is not numeric .*give it as time_column or "
                                         r"series_column, or remove it$"):
        read_series(f, series_column="host", failed=[])


def zone_csv(path: Path, zone: str, n: int = 60, start_hour: int = 0) -> Path:
    """A sine a minute apart, ISO times with ``zone`` ("" for none)."""
    rows = [f"2024-01-0{1 + start_hour // 24}T{(start_hour % 24) + i // 60:02d}:{i % 60:02d}:00{zone},"
            f"{np.sin(i / 4):.4f},0" for i in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("timestamp,cpu,label\n" + "\n".join(rows) + "\n")
    return path


def test_zoned_and_plain_times_are_told_apart_by_the_reader(tmp_path: Path) -> None:
    t = np.array(["2024-01-01T00:00:00"], dtype="datetime64[us]").repeat(40) + np.arange(40).astype("timedelta64[m]")
    for zone, expected in (("", False), ("+02:00", True), ("Z", True)):
        assert read_series(zone_csv(tmp_path / f"c{len(zone)}.csv", zone))[0].zoned is expected
    for tz, expected in ((None, False), ("Europe/Berlin", True)):
        pq.write_table(pa.table({"time": pa.array(t, pa.timestamp("us", tz=tz)), "cpu": np.arange(40.0)}),
                       tmp_path / "p.parquet")
        assert read_series(tmp_path / "p.parquet")[0].zoned is expected
    pq.write_table(pa.table(frame()), tmp_path / "n.parquet")
    assert read_series(tmp_path / "n.parquet")[0].zoned is None  # epoch seconds: no dates


@pytest.mark.parametrize("kind", [pa.date32(), pa.date64()])
def test_parquet_dates_are_plain_dates_against_zoned_ones(tmp_path: Path, kind: pa.DataType) -> None:
    """A Parquet date32 or date64 time column had no zone status (None), so a model fitted on it said nothing of
    test dates with a zone: such dates are plain (no zone), as ISO dates without one are."""
    from types import SimpleNamespace

    from normalcy.series.runs import zone_of_model_note

    days = np.datetime64("2024-01-01", "D") + np.arange(40).astype("timedelta64[D]")
    pq.write_table(pa.table({"time": pa.array(days).cast(kind), "cpu": np.arange(40.0)}), tmp_path / "d.parquet")
    (s,) = read_series(tmp_path / "d.parquet")
    assert s.zoned is False and s.time[1] - s.time[0] == 86400
    zoned = read_series(zone_csv(tmp_path / "z.csv", "+02:00"))[0]
    assert "times with a zone, while the model's training rows had times without one" in str(
        zone_of_model_note(SimpleNamespace(zoned=s.zoned), zoned, "z.csv"))  # type: ignore[arg-type]


@pytest.mark.parametrize(("train_zone", "test_zone", "said"), [
    ("+02:00", "", "times without a zone read as UTC, while the model's training rows had times with one"),
    ("", "+02:00", "times with a zone, while the model's training rows had times without one (read as UTC)")])
def test_predict_and_watch_say_zoned_training_times_against_plain_ones(tmp_path: Path, train_zone: str,
                                                                      test_zone: str, said: str) -> None:
    """A model fitted on times with +02:00 scored times without a zone (read as UTC, two hours off if they were
    local) without a word, and the other way round; predict and watch warn, naming the file. Scores as before."""
    from test_series_cli import cli

    zone_csv(tmp_path / "train.csv", train_zone)
    test = zone_csv(tmp_path / "test.csv", test_zone, start_hour=24)
    assert cli("fit", tmp_path / "train.csv", "-o", tmp_path / "m", "-d", "pca", "--window", "8").exit_code == 0
    r = cli("predict", tmp_path / "m", test, "-o", tmp_path / "run")
    assert r.exit_code == 0 and r.stderr.count(f"test.csv: {said}") == 1, r.stderr
    r = cli("watch", tmp_path / "m", test)
    assert r.exit_code == 0 and f"test.csv, line 2: {said}" in r.stderr, r.stderr
    same = zone_csv(tmp_path / "same.csv", train_zone, start_hour=24)
    r = cli("predict", tmp_path / "m", same, "-o", tmp_path / "run2")
    assert r.exit_code == 0 and "zone" not in r.stderr, r.stderr


def test_watch_checks_each_series_zone_against_its_own_model(tmp_path: Path) -> None:
    """A set's watch checked the feed's zone against the first series' model only: a plain feed for a model
    fitted on zoned times said nothing when another series (plain, as its model) came first."""
    from test_series_cli import cli

    zone_csv(tmp_path / "set" / "a" / "train.csv", "+02:00")
    zone_csv(tmp_path / "set" / "b" / "train.csv", "")
    assert cli("fit", tmp_path / "set", "-o", tmp_path / "m", "-d", "pca", "--window", "8").exit_code == 0
    rows = [line.split(",") for line in zone_csv(tmp_path / "t.csv", "", start_hour=24).read_text().splitlines()[1:]]
    feed = tmp_path / "feed.csv"
    feed.write_text("host,timestamp,cpu\n" + "".join(f"{h},{t},{v}\n" for h in "ba" for t, v, _ in rows[:5]))
    r = cli("watch", tmp_path / "m", feed, "--series-column", "host")
    said = "times without a zone read as UTC, while the model's training rows had times with one"
    assert r.exit_code == 0 and r.stderr.count(said) == 1 and "line 7 (series a)" in r.stderr, r.stderr


def test_predict_counts_zone_and_interval_lines_past_five_each_under_its_own_words(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Past five warnings, "... and N more series sampled at another interval" counted the zone lines too."""
    from types import SimpleNamespace

    from normalcy.api import INTERVAL_KIND, ZONE_KIND, _sampling, _say_sampled

    s = read_series(zone_csv(tmp_path / "test.csv", ""))[0]  # no zone, a row a minute
    kinds = _sampling(SimpleNamespace(zoned=True, interval_s=600.0), s, None)  # type: ignore[arg-type]
    assert kinds == [ZONE_KIND, INTERVAL_KIND] and "without a zone" in s.notes[-2] and "a row every" in s.notes[-1]
    sampled = list(zip(kinds, s.notes[-2:])) * 4  # 8 lines: 3 past five, a zone's and two intervals'
    with caplog.at_level("WARNING", logger="normalcy"):
        _say_sampled(sampled)
    lines = caplog.text.splitlines()
    assert sum("... and" in line for line in lines) == 2, caplog.text
    assert f"... and 1 more series {ZONE_KIND}" in caplog.text
    assert f"... and 2 more series {INTERVAL_KIND}" in caplog.text


def test_eval_says_a_test_file_without_zones_beside_a_zoned_train_file(tmp_path: Path) -> None:
    from test_series_cli import cli

    zone_csv(tmp_path / "s" / "train.csv", "+02:00")
    zone_csv(tmp_path / "s" / "test.csv", "", start_hour=24)
    r = cli("eval", tmp_path / "s", "-d", "pca", "--window", "8")
    assert r.exit_code == 0, r.stderr
    assert "s/test.csv: times without a zone read as UTC, while train.csv had times with one" in r.stderr


def test_sub_second_parquet_times_are_written_with_their_digits_alike(tmp_path: Path) -> None:
    """A Parquet time on the whole second lost its fraction in scores.csv and events.csv (predict, --stream):
    rows 0.1 s apart were 00:00:29.900000, 00:00:30, 00:00:30.100000."""
    from normalcy.series.runs import time_texts

    t = np.datetime64("2024-01-01T00:00:29.800", "ms") + np.arange(40).astype("timedelta64[ms]") * 100
    pq.write_table(pa.table({"time": pa.array(t), "cpu": np.arange(40.0)}), tmp_path / "p.parquet")
    assert time_texts(tmp_path / "p.parquet", "time", 40)[1:4] == [
        "2024-01-01T00:00:29.900", "2024-01-01T00:00:30.000", "2024-01-01T00:00:30.100"]
    whole = np.datetime64("2024-01-01T00:00:00", "s") + np.arange(40).astype("timedelta64[s]")
    pq.write_table(pa.table({"time": pa.array(whole), "cpu": np.arange(40.0)}), tmp_path / "w.parquet")
    assert time_texts(tmp_path / "w.parquet", "time", 40)[0] == "2024-01-01T00:00:00"  # as before


def test_one_series_with_an_unreadable_time_is_named_and_the_others_read(tmp_path: Path) -> None:
    """One host's times "soon" (or empty) refused the whole file, every other series with it."""
    n = 40
    lines = [f"2024-01-01T00:{i:02d}:00,{h},{i % 7}" if h != "bad" or i != 5 else f"soon,{h},{i % 7}"
             for h in ("a", "bad", "b") for i in range(n)]
    f = tmp_path / "many.csv"
    f.write_text("time,host,cpu\n" + "\n".join(lines) + "\n")
    failed: list[tuple[str, str]] = []
    assert [s.name for s in read_series(f, series_column="host", failed=failed)] == ["a", "b"]
    assert failed == [(f"{f} [host=bad]", f"time column: 'soon' at row {n + 6} is neither a number nor an ISO 8601 "
                                          "date")]


def test_a_refused_series_first_in_the_file_leaves_the_others_zone_known(tmp_path: Path) -> None:
    """The zone was told by the column's first cell: where that was a refused series' unreadable time ("soon"), the
    other series' dates (+02:00) had no zone status, and a model fitted on dates without one never warned of them."""
    lines = [f"{'soon' if h == 'bad' and i == 0 else f'2024-01-01T00:{i:02d}:00+02:00'},{h},{i % 7}"
             for h in ("bad", "a", "b") for i in range(40)]
    f = tmp_path / "many.csv"
    f.write_text("time,host,cpu\n" + "\n".join(lines) + "\n")
    failed: list[tuple[str, str]] = []
    read = read_series(f, series_column="host", failed=failed)
    assert [s.name for s in read] == ["a", "b"] and len(failed) == 1
    assert [s.zoned for s in read] == [True, True]


def test_images_named_train_or_test_are_not_taken_for_a_misnamed_series_file(tmp_path: Path) -> None:
    """eval of a folder of images holding a train.jpg or test.png (no MVTec AD layout) was told "no train.csv or
    train.parquet to fit on (it has test.png, train.jpg: the name must be train.csv ...)"; images are passed by
    (the image data set's own message follows), and a TRAIN.csv beside them is still named."""
    from normalcy.series.io import untrained_why

    for name in ("train.jpg", "test.PNG", "a.png"):
        (tmp_path / name).write_bytes(b"")
    assert untrained_why(tmp_path) is None
    (tmp_path / "TRAIN.csv").write_text("time,cpu\n")
    assert "(it has TRAIN.csv: the name must be train.csv" in str(untrained_why(tmp_path))


def test_a_note_of_the_time_column_is_said_once_when_one_series_time_is_refused(tmp_path: Path) -> None:
    """Read series by series once one host's time was refused, the column's note ("read as epoch milliseconds")
    was noted once for every series (each series' notes held it as many times)."""
    lines = [f"{'' if h == 'bad' and i == 3 else (1_700_000_000 + 60 * i) * 1000},{h},{i % 7}"
             for h in ("a", "bad", "b", "c") for i in range(40)]
    f = tmp_path / "many.csv"
    f.write_text("time,host,cpu\n" + "\n".join(lines) + "\n")
    read = read_series(f, series_column="host", failed=[])
    assert [s.name for s in read] == ["a", "b", "c"]
    said = [n for n in read[0].notes if "epoch milliseconds" in n]
    assert len(said) == 1, read[0].notes
