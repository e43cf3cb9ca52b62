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
                                          f"the first 'err' in row {n + 1}); give it as --time-column or "
                                          "--series-column, or remove it")]
    with pytest.raises(InputError, match=r"value column 'cpu' is not numeric"):  # without ``failed``: as before
        read_series(f, series_column="host")
