"""Reading series files (CSV, Parquet) and series folders, with every repair said out loud.

A series is a table with a time column and numeric value columns (metrics). Real monitoring exports are
untidy: rows out of order, repeated timestamps, empty cells, a metric that never moves, hours with no
data. Each is handled by one rule below and noted in ``Series.notes`` (one line naming the file), so
nothing is scored silently on repaired data; what cannot be repaired is one InputError naming the file.

A series folder is the time-series counterpart of the MVTec layout: ``DIR/train.csv`` (normal operation)
and ``DIR/test.csv`` (the same columns plus ``label``, 1 inside a labelled anomaly). A folder of series
folders (``asd/omi-1``, ``asd/omi-2``, ...) is read as one series per folder.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from datetime import time as dtime
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from normalcy.errors import InputError, option, reasons, setting, shortened
from normalcy.vectors.tables import (
    _names,
    _numeric,
    _read_arrays,
    cell_number,
    decimal_comma,
    first_other_case,
    fitted_names,
    grouped_cells,
    other_case,
    past_2_53,
    text_cells,
)

log = logging.getLogger("normalcy")

SERIES_SUFFIXES = (".csv", ".parquet", ".pq")
COMPRESSED = {".gz": "gunzip", ".bz2": "bunzip2", ".xz": "unxz", ".zst": "unzstd", ".zip": "unzip"}  # the tool
TIME_NAMES = ("timestamp", "time", "date", "datetime")  # a time column found by name (any case)
MIN_ROWS = 16  # twice the shortest window: fewer rows cannot hold a window and what follows it
GAP_FACTOR = 3.0  # an interval over 3x the median interval is a gap
MAX_TEXT_SHARE = 0.05  # of a value column's cells that may be text ("error", "n/a", "-"), read as missing
INTERPOLATED = "interpolated linearly along time"  # how the reader fills a missing value (its note says so)


@dataclass
class Series:
    """One series, sorted by time, unique timestamps, finite values."""

    name: str  # the file stem, the --series-column id, or the series folder's name
    time: np.ndarray  # float64: epoch seconds (ISO dates parsed), or the row number when there is no time column
    values: np.ndarray  # float64 (n, d)
    columns: tuple[str, ...]  # the d value column names
    labels: np.ndarray | None  # int8 (n,) 0/1 when the file has a label column
    notes: list[str] = field(default_factory=list)  # what was repaired, one line each, naming the file
    source: Path = Path()
    # Where the file's rows went, so a run can write one row per input row in input order:
    file_rows: np.ndarray | None = None  # int64 (m,): the file's data rows (0-based) of this series, in file order
    row_of: np.ndarray | None = None  # int64 (m,): the row of this series holding each (a repeated timestamp's: the kept one)
    time_column: str | None = None  # the file's time column (given, found by name or by its values), None: row numbers
    # every column of the file as named there, those left out too: eval's "no label column 'label'" can then say
    # that the file has 'Label' (a test series keeps only its training columns)
    file_columns: tuple[str, ...] = ()
    # whether its times are dates with a zone (+02:00, Z, a Parquet timestamp's tz); None: numbers, not dates. Dates
    # without one are read as UTC: predict, eval and watch say where a model's training times and these disagree
    zoned: bool | None = None
    # (n, d) bool: the values that were missing and are interpolated (None: none were). Interpolation reads the next
    # value, a row of the future: a stream's replay (runs.replay_series) holds these at the last value instead
    missing: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.time)

    def only(self, columns: Sequence[str], of: str, hint: str = "", known: Sequence[str] = ()) -> "Series":
        """This series with ``columns`` in that order (``of``: whose columns they are, for messages). A column
        missing is an error; one more is left out with a note, not scored: a monitoring source that gained a
        metric, or a test file that carries an extra annotation (SKAB's ``changepoint``), still scores the
        columns the model knows. ``hint`` follows the note (e.g. that an unnamed time column needs
        --time-column). Columns in ``known`` are left out without a note (a model's flags, named when it was
        fitted)."""
        if tuple(self.columns) == tuple(columns):
            return self
        missing = [c for c in columns if c not in self.columns]
        if missing:  # a file's column in other case ('CPU'), left out as not the model's, is pointed at
            like = first_other_case(missing, self.file_columns)
            shown = [shortened(c) for c in missing[:10]]  # a crafted model.json's 1 MB name is not echoed whole
            raise InputError(f"{self.source}: columns {shown} of {of} are missing (it has "
                             f"{[shortened(c) for c in list(self.columns)[:10]]}){like}")
        extra = [c for c in self.columns if c not in columns and c not in known]
        notes = list(self.notes)
        if extra:
            notes.append(left_out(self.source.name, extra, of) + hint)
        order = [self.columns.index(c) for c in columns]
        missing = None if self.missing is None else self.missing[:, order]
        return replace(self, values=self.values[:, order], columns=tuple(columns), notes=notes, missing=missing)


def left_out(where: str, columns: list[str], of: str) -> str:
    return f"{where}: column(s) {columns[:10]} left out, not scored: not in {of}"


def unpack_hint(path: Path) -> str:
    """What to do with a compressed file (an empty string for any other): files are read as they are."""
    if path.suffix.lower() not in COMPRESSED:
        return ""
    return f"; it is compressed: decompress it first (e.g. {COMPRESSED[path.suffix.lower()]} {path.name})"


def is_series_file(path: Path) -> bool:
    """A file whose suffix names a format a series is read from."""
    return path.suffix.lower() in SERIES_SUFFIXES and not path.is_dir()


def read_series(path: str | Path, time_column: str | None = None, series_column: str | None = None,
                label_column: str | None = "label", failed: list[tuple[str, str]] | None = None,
                keep: tuple[Sequence[str], str] | None = None, drawn_labels: bool = False) -> list[Series]:
    """The series of a CSV or Parquet file: one, or one per value of ``series_column``, each checked and
    repaired by the rules of this module. Every problem is one InputError naming the file; with ``failed``
    given, one series of several that cannot be used (too short, a column without values) is appended there
    as (file [column=id], reason) and the others are returned (none usable: still an InputError). ``keep``:
    (the columns a model knows, whose they are): any other value column is left out before it is read, with a
    note, so that a column that will not be scored can neither fail the file nor be repaired. ``drawn_labels``:
    the labels are only drawn (predict's report), so a label column that is not 0/1 is left out with a note
    rather than refusing the file (eval, which measures on them, refuses it)."""
    path = Path(path)
    if path.suffix.lower() not in SERIES_SUFFIXES:
        raise InputError(f"{path}: a series is read from .csv or .parquet, not {path.suffix or 'a file without suffix'}"
                         f"{unpack_hint(path)}")
    typed: dict[str, bool] = {}  # the timestamp columns' (Arrow's type): whether they carry a zone
    arrays = _read_arrays(path, text=(series_column,) if series_column else (), zoned=typed)
    file_columns = tuple(arrays)
    if keep is not None:
        arrays = fitted_names(arrays, keep[0])
    position = {c: i + 1 for i, c in enumerate(arrays)}  # in the file, for a column without a name
    n = len(next(iter(arrays.values()))) if arrays else 0
    if n == 0:
        raise InputError(f"{path}: no rows")
    for what, name in (("time", time_column), ("series", series_column)):
        if name is not None and name not in arrays:
            raise InputError(f"{path}: no {what} column {name!r}{other_case(name, arrays)}; it has {_names(arrays)}")
    label = label_column if label_column in arrays else None
    notes = [f"{path.name}: column {c!r} is not the label column {label_column!r}{hint}"
             for c in arrays if label is None and label_column and c != time_column
             and (hint := other_case(c, [label_column]))]
    if time_column is None and named_time(list(arrays)) is None:
        time_column = _index_time(path, arrays)
        if time_column is not None:
            notes.append(f"{path.name}: column {time_column!r} read as the time column (dates pandas wrote as the "
                         f"DataFrame's index); give {option('time_column')} to name another")
    index = [c for c in arrays if c.startswith("__index_level_") and c != time_column]
    if index:  # pandas wrote its row index into a Parquet file: not a measurement
        arrays = {c: a for c, a in arrays.items() if c not in index}
        notes.append(f"{path.name}: pandas' index column(s) {index} left out (written by to_parquet without "
                     "index=False)")
    if time_column is None:
        time_column = named_time(list(arrays))
        if time_column is None:
            time_column, why = _unnamed_time(arrays, (series_column, label), keep[0] if keep else (),
                                             decimal_comma(path))
            if time_column is not None:
                notes.append(f"{path.name}: column {time_column!r} read as the time column ({why}); give "
                             f"{option('time_column')} to name another")
    if time_column is not None and time_column == series_column:  # each time was a series of one row, all refused
        raise InputError(f"{path}: column {series_column!r} is both the time column and the series column; the "
                         "series column names the series of each row: give another, or "
                         f"{option('time_column')} for the time")
    if time_column is not None:
        index = _row_index(arrays, time_column, keep[0] if keep else ())
        if index is not None:
            arrays = {c: a for c, a in arrays.items() if c != index}
            notes.append(f"{path.name}: column {index!r} left out, not scored: a row index (whole numbers 0, 1, "
                         "2, ... in a first column without a name, as pandas' to_csv writes them)")
    columns = [c for c in arrays if c not in (time_column, series_column, label)]
    blank = [c for c in columns if not c.strip() and _all_missing(arrays[c])]
    if blank:  # a trailing separator on every line (a spreadsheet's export): no name, no value
        columns = [c for c in columns if c not in blank]
        notes.append(f"{path.name}: {len(blank)} column(s) without a name or a value dropped")
    if not columns:
        raise InputError(f"{path}: no value columns; it has {_names(arrays)}")
    unnamed = {c: f"column {position[c]}" for c in columns  # a model fitted on it so still gets its name
               if not c.strip() and f"column {position[c]}" not in arrays and not (keep and c in keep[0])}
    if unnamed:  # a header cell left empty over values: events.csv named that metric "" (";m5;m2")
        arrays = {unnamed.get(c, c): a for c, a in arrays.items()}
        columns = [unnamed.get(c, c) for c in columns]
        notes.append(f"{path.name}: column(s) without a name in the header read as {list(unnamed.values())}; "
                     "name them there")
    renamed = matched(columns, keep[0]) if keep is not None else {}
    if renamed:  # a header written "time, cpu" (or not) at fit and not (or so) now
        arrays = {renamed.get(c, c): a for c, a in arrays.items()}
        columns = [renamed.get(c, c) for c in columns]
        notes.append(f"{path.name}: column(s) {list(renamed)[:10]} read as {list(renamed.values())[:10]}: the same "
                     "names but for the spaces around them")
    if keep is not None and any(c in keep[0] for c in columns):  # none kept: Series.only names what is missing
        extra = [c for c in columns if c not in keep[0]]
        if extra:
            columns = [c for c in columns if c in keep[0]]
            notes.append(left_out(path.name, extra, keep[1]))
    comma = decimal_comma(path)  # a ;- or tab-separated file: 1,5 is 1.5
    ids = _ids(path, arrays[series_column], series_column) if series_column is not None else None
    groups = _grouped(ids) if ids is not None else []
    refused: dict[str, str] = {}  # a series whose own values cannot be read: named, the others kept
    parsed = []
    for c in columns:
        try:
            parsed.append(_values(path, c, arrays[c], comma, notes))
        except InputError as err:
            if failed is None or len(groups) < 2:
                raise
            parsed.append(_values_by_series(path, c, arrays[c], comma, notes, groups, series_column, refused, err))
    # ``is not None``: a time column may have no name (pandas' date index, read as the time above)
    try:
        time = (_times(path, arrays[time_column], notes, comma, time_column) if time_column is not None
                else np.arange(n, dtype=np.float64))
    except InputError:
        if failed is None or len(groups) < 2:
            raise
        time = _times_by_series(path, arrays[time_column], notes, comma, time_column, groups, refused)
    zone = None if time_column is None else typed.get(time_column, _zoned(arrays[time_column]))
    values = np.column_stack(parsed)
    labels = None
    if label:
        try:
            labels = _labels(path, arrays[label])
        except InputError as err:
            if not drawn_labels:
                raise
            notes.append(f"{path.name}: column {label!r} left out, not scored or drawn as labels: "
                         f"{str(err).removeprefix(f'{path}: ')}")
    if series_column is None:
        try:
            one = _tidy(path, path.stem, path.name, np.arange(n), time, values, tuple(columns), labels, time_column,
                        notes)
        except InputError as err:  # named by the file's path, as the reader's other errors: "test.csv: 1 rows"
            raise InputError(f"{path}: {str(err).removeprefix(f'{path.name}: ')}") from None  # left the folder out
        return [replace(one, file_columns=file_columns, zoned=zone)]
    assert ids is not None
    out, bad = [], []  # bad: (file [column=id], the reason alone)
    if (ids == "").any():  # rows that belong to no series: named, the other series kept
        rows = np.flatnonzero(ids == "")
        why = f"{len(rows)} row(s) without a {series_column!r} value, in no series (the first: row {rows[0] + 1})"
        if failed is None:
            raise InputError(f"{path}: {why}")
        bad.append((f"{path} [{series_column}=]", why))
    hint = _ids_too_short(series_column, groups)
    for sid, rows in groups:
        where = f"{path.name} [{series_column}={shortened(sid)}]"  # for messages; ``bad`` names the id whole
        if sid in refused:
            bad.append((f"{path} [{series_column}={sid}]", refused[sid]))
            continue
        try:
            out.append(replace(_tidy(path, sid, where, rows, time[rows], values[rows], tuple(columns),
                                     None if labels is None else labels[rows], time_column, notes),
                               file_columns=file_columns, zoned=zone))
        except InputError as err:
            if failed is None:
                raise InputError(f"{err}{hint}") from None
            bad.append((f"{path} [{series_column}={sid}]", str(err).removeprefix(f"{where}: ")))
    if not out:
        shown = reasons([(where.removeprefix(f"{path} "), why) for where, why in bad], named=True)
        raise InputError(f"{path}: no usable series{shown}{hint}")
    if failed is not None:
        failed.extend(bad)
    return out


def _ids(path: Path, a: np.ndarray, series_column: str) -> np.ndarray:
    """The series id of each row, as text ("" for none)."""
    # objects, not numpy's fixed-width text: one id of 5,000 characters made every row's 20 kB (100,000 rows: 6 GB)
    ids = np.empty(len(a), dtype=object)
    ids[:] = ["" if v is None else str(v).strip() for v in a]
    if _float_column(path, series_column):  # NaN, as pyarrow writes it from numpy, is no id: it was series 'nan'
        ids[ids == "nan"] = ""
    return ids


def _values_by_series(path: Path, column: str, a: np.ndarray, comma: bool, notes: list[str],
                      groups: list[tuple[str, np.ndarray]], series_column: str, refused: dict[str, str],
                      whole: InputError) -> np.ndarray:
    """A value column that ``_values`` refuses for the whole file (``whole``), read series by series: one series
    whose cells are text ("err" in every row of one host) failed the file, every other series with it. A series
    refused is put in ``refused`` (id: why); the others' notes name their series. Where every series refuses
    it, the column is no measurement at all: ``whole`` is raised, its hint for the file kept."""
    out = np.full(len(a), np.nan)
    kept = 0
    for sid, rows in groups:
        own: list[str] = []
        try:
            out[rows] = _values(path, column, a[rows], comma, own, rows)
        except InputError as err:
            refused.setdefault(sid, str(err).removeprefix(f"{path}: "))
            continue
        kept += 1
        notes += [f"{path.name} [{series_column}={shortened(sid)}]{n.removeprefix(path.name)}" for n in own]
    if not kept:
        raise whole
    return out


def _times_by_series(path: Path, a: np.ndarray, notes: list[str], comma: bool, column: str,
                     groups: list[tuple[str, np.ndarray]], refused: dict[str, str]) -> np.ndarray:
    """A time column that ``_times`` refuses for the whole file, read series by series, as ``_values_by_series``
    reads a value column: one series with an empty or unreadable time failed every other series with it. A note
    of the column's own (read as epoch milliseconds) is noted once, not once a series."""
    out = np.zeros(len(a))
    for sid, rows in groups:
        own: list[str] = []
        try:
            out[rows] = _times(path, a[rows], own, comma, column, rows)
        except InputError as err:
            refused.setdefault(sid, str(err).removeprefix(f"{path}: "))
        notes += [n for n in own if n not in notes]
    return out


def _ids_too_short(column: str, groups: list[tuple[str, np.ndarray]]) -> str:
    """What follows the error when every series of ``column`` is too short to score (empty otherwise): the column
    may name no series (a row id, a timestamp, a measurement). A column of one row per value was refused as
    "[host=h0]: 1 rows; a series needs at least 16" five times "and 195 more", the column itself never
    questioned."""
    if len(groups) < 2 or any(len(rows) >= MIN_ROWS for _, rows in groups):
        return ""
    most = max(len(rows) for _, rows in groups)
    return (f"; each of the {len(groups)} values of {column!r} has fewer than {MIN_ROWS} rows (at most {most}): "
            f"is {column!r} the column naming the series (many rows to each value)? Give the one that is, or no "
            f"{option('series_column')} to read the file as one series")


def _float_column(path: Path, column: str) -> bool:
    """Whether a Parquet file's column holds floats (read as text for ids, a NaN is "nan"); False for a CSV,
    whose ids are read as written."""
    if path.suffix.lower() not in (".parquet", ".pq"):
        return False
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(path, "rb") as fh:  # read whole a moment ago
        schema = pq.read_schema(fh)
    return column in schema.names and pa.types.is_floating(schema.field(column).type)


def _grouped(ids: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(id, its rows in file order) for each id but "", in order of first appearance (str, not np.str_). One
    sort: comparing every id with the whole column took 6 s of a 9 s read for 5,000 ids of 40 rows, and grew
    with ids x rows (10,000 ids in a million rows: minutes)."""
    uniq, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    order = np.argsort(inverse.ravel(), kind="stable")  # the rows of each id together, in file order
    ends = np.cumsum(np.bincount(inverse.ravel(), minlength=len(uniq)))
    starts = ends - np.bincount(inverse.ravel(), minlength=len(uniq))
    return [(str(uniq[u]), order[starts[u]:ends[u]]) for u in np.argsort(first, kind="stable").tolist()
            if uniq[u] != ""]


def _tidy(path: Path, name: str, where: str, file_rows: np.ndarray, time: np.ndarray, values: np.ndarray,
          columns: tuple[str, ...], labels: np.ndarray | None, time_col: str | None, read_notes: list[str]) -> Series:
    """Sort, drop repeated timestamps (the last row kept), interpolate missing values, note constant columns
    and gaps; refuse a column with no value and a series too short. ``read_notes``: what reading the file
    repaired (text cells, decimal commas), shown with this series' own notes; ``time_col``: the time column
    (None: the rows are numbered)."""
    timed = time_col is not None
    notes = list(read_notes)
    if len(time) < MIN_ROWS:
        raise InputError(f"{where}: {len(time)} rows; a series needs at least {MIN_ROWS}")
    order = np.arange(len(time))
    back = int((np.diff(time) < 0).sum())
    if back:
        hint = _clock_change(time, file_rows) if timed else ""
        order = np.argsort(time, kind="stable")  # stable: repeated timestamps keep their file order
        time, values = time[order], values[order]
        labels = None if labels is None else labels[order]
        notes.append(f"{where}: {back} unsorted row(s) sorted by time{hint}")
    row_of = np.empty(len(time), np.int64)
    row_of[order] = np.cumsum(np.append(True, time[1:] != time[:-1])) - 1  # each timestamp's kept row
    last = np.append(time[1:] != time[:-1], True)  # the last row of each timestamp
    if not last.all():
        notes.append(f"{where}: {int((~last).sum())} row(s) with a repeated timestamp dropped (the last row of "
                     f"each timestamp kept){_id_hint(time, values, columns)}")
        time, values = time[last], values[last]
        labels = None if labels is None else labels[last]
    if len(time) < MIN_ROWS:  # the rows are enough: say that their times are not, and which column they are
        raise InputError(f"{where}: {len(file_rows)} rows but {len(time)} distinct timestamps in time column "
                         f"{time_col!r} (the rows of a timestamp are one row); a series needs at least {MIN_ROWS}: "
                         f"give {option('time_column')} if another column is the time")
    values = np.array(values, dtype=np.float64)
    missing = ~np.isfinite(values)
    if missing.any():
        counts = []
        for j in np.flatnonzero(missing.any(axis=0)):
            bad = missing[:, j]
            if bad.all():
                raise InputError(f"{where}: column {columns[j]!r} has no value in any row")
            values[bad, j] = np.interp(time[bad], time[~bad], values[~bad, j])
            counts.append(f"{columns[j]} {int(bad.sum())}")
        notes.append(f"{where}: {int(missing.sum())} missing or non-finite value(s) {INTERPOLATED} "
                     f"({', '.join(counts[:10])}{' ...' if len(counts) > 10 else ''})")
    constant = [c for c, hi, lo in zip(columns, values.max(axis=0), values.min(axis=0)) if hi == lo]
    if constant:
        notes.append(f"{where}: constant column(s) {constant[:10]} kept (a change in them still counts)")
    if timed:
        steps = np.diff(time)
        median = float(np.median(steps))
        gaps = steps > GAP_FACTOR * median
        if gaps.any():
            notes.append(f"{where}: {int(gaps.sum())} gap(s) in time (over {GAP_FACTOR:g}x the median interval "
                         f"of {median:g} s), the largest {float(steps.max()):g} s; rows either side are "
                         "scored as consecutive")
    return Series(name, time, values, columns, labels, notes, path, np.asarray(file_rows, np.int64), row_of,
                  time_col, missing=missing if missing.any() else None)


def _id_hint(time: np.ndarray, values: np.ndarray, columns: tuple[str, ...]) -> str:
    """What follows the note of repeated timestamps where half the rows or more repeat a time and a value column
    of whole numbers tells every repeated row apart (a row a time for each of its values, and no more values
    than rows at one time, which a count metric has): the ids of several series in one file, scored as a
    metric (constant within each series) while all but one row a time were dropped; where none does (the ids
    are text, or a column the model does not score), --series-column alone. Empty where fewer rows repeat."""
    times, per_time = np.unique(time, return_counts=True)
    if 2 * len(times) > len(time):
        return ""
    v = np.asarray(values, np.float64)
    for j, column in enumerate(columns[:100]):
        col = v[:, j]
        if not np.isfinite(col).all() or (col != np.round(col)).any():
            continue
        if not 2 <= len(np.unique(col)) <= per_time.max():  # ids: no more of them than rows at one time
            continue
        order = np.lexsort((col, time))
        same = (np.diff(time[order]) == 0) & (np.diff(col[order]) == 0)
        if not same.any():
            return (f"; column {column!r} tells those rows apart (whole numbers, a row a time each): if it names "
                    "the series the file holds, give "
                    + setting("series_column", column, cli=f"--series-column {column!r}"))
    return ("; half the rows or more: if the file holds several series, give the column that names them as "
            f"{option('series_column')}")


DST_HINT = ("local times without a zone repeat an hour where daylight saving time ends; if these are such, give "
            "each time its zone offset (+02:00, then +01:00) to keep that hour's rows apart")


def _clock_change(time: np.ndarray, file_rows: np.ndarray) -> str:
    """What follows the note of unsorted rows when the times (in file order) go back once, by an hour at most,
    as local times without a zone do where daylight saving time ends (the rows of the hour repeated are then
    sorted together and merged as repeated timestamps, a puzzle unexplained); else nothing."""
    steps = np.diff(time)
    back = np.flatnonzero(steps < 0)
    if len(back) != 1 or -steps[back[0]] > 3600 or time.min() < 1e8:  # 1e8: calendar times, not row numbers
        return ""
    return f" (row {int(file_rows[back[0] + 1]) + 1} goes back {-steps[back[0]]:g} s: {DST_HINT})"


def matched(names: Sequence[str], wanted: Sequence[str]) -> dict[str, str]:
    """{name: wanted name} for each wanted name missing from ``names`` where one name differs from it only in
    the spaces around it (' cpu' for 'cpu': a header written "time, cpu")."""
    out = {}
    for w in wanted:
        same = [n for n in names if n.strip() == w.strip() and n not in wanted]
        if w not in names and len(same) == 1:
            out[same[0]] = w
    return out


def _all_missing(a: np.ndarray) -> bool:
    return a.dtype == object and all(v is None or v == "" for v in a)


def _values(path: Path, column: str, a: np.ndarray, comma: bool, notes: list[str],
            rows: np.ndarray | None = None) -> np.ndarray:
    """A value column as float64. A text column is read cell by cell: with ``comma``, 1,5 is 1.5 (the decimal
    comma of a semicolon-separated file); up to MAX_TEXT_SHARE of its cells may be text that is not a number
    (a logger's "error" or "-"), read as missing (then interpolated) with a note; more is refused. ``rows``: the
    file's row of each cell (one series' cells), for messages."""
    num = _numeric(a)
    far = past_2_53(a)
    if far:
        notes.append(f"{path.name}: column {column!r}: {far}")
    nested = None if num is not None else next((v for v in a if v is not None), None)  # a column is of one type
    if isinstance(nested, (dict, list, np.ndarray)):  # Parquet list, struct: was a ValueError
        kind = "structs (named fields)" if isinstance(nested, dict) else "lists"
        raise InputError(f"{path}: value column {column!r} holds {kind}, not numbers; give each element a column "
                         "of its own, or remove it")
    if num is not None or _all_missing(a):
        return num if num is not None else np.full(len(a), np.nan)
    out, bad, decimal = text_cells(a, comma)
    grouped, bad, grouped_said = grouped_cells(a, out, bad, comma)
    cells = int(np.isfinite(out).sum()) + len(bad)
    if bad:
        first = f"the first {str(a[bad[0]])[:40]!r} in row {(bad[0] if rows is None else int(rows[bad[0]])) + 1}"
        if len(bad) > MAX_TEXT_SHARE * cells and _time_of_day(a[bad[0]]):  # a logger's Date, Time columns
            raise InputError(f"{path}: column {column!r} holds times of day ({first}) without their dates; "
                             f"{join_date()}")
        if len(bad) > MAX_TEXT_SHARE * cells:  # one series' cells (``rows``): the column is the others' numbers
            fix = ("correct this series' values or remove its rows" if rows is not None else
                   f"give it as {option('time_column')} or {option('series_column')}, or remove it")
            raise InputError(f"{path}: value column {column!r} is not numeric ({len(bad)} of {cells} values are not "
                             f"numbers, {first}); {fix}")
        notes.append(f"{path.name}: column {column!r}: {len(bad)} value(s) that are not numbers read as missing "
                     f"({first})")
    if decimal:
        notes.append(f"{path.name}: column {column!r}: {decimal} value(s) with a decimal comma read as numbers")
    if grouped:
        notes.append(f"{path.name}: column {column!r}: {grouped_said}")
    return out


def named_time(columns: Sequence[str]) -> str | None:
    """The first column named timestamp, time, date or datetime (any case), or None."""
    return next((c for c in columns if c.strip().lower() in TIME_NAMES), None)


def _unnamed_time(arrays: dict[str, np.ndarray], exclude: tuple[str | None, ...],
                  metrics: Sequence[str] = (), comma: bool = False) -> tuple[str | None, str]:
    """The first column as the time when no column is named as one, where its values say it is: dates (a date
    type, or ISO 8601 text), or numbers rising strictly from row to row (a row index that pandas wrote, epoch
    seconds under another name). Scored as a metric, such a column takes a value in every test row that it
    never took in training, and every row would look anomalous. Only where another column is left to score
    and the column is not one of a model's ``metrics`` (a file scored by a model fitted on it as a metric);
    (None, "") otherwise. ``comma``: numbers may have a decimal comma (``0,5``), as ``_times`` reads them."""
    names = [c for c in arrays if c not in exclude]
    if len(names) < 2 or names[0] in metrics:
        return None, ""
    first = names[0]
    a = arrays[first]
    if a.dtype.kind == "M":
        return first, "dates"
    num = _numeric(a)
    if num is None and comma:
        num, text, _ = text_cells(a, comma)
        num = None if text else num
    if num is not None:
        rising = len(num) >= 2 and bool(np.isfinite(num).all()) and bool((np.diff(num) > 0).all())
        return (first, "numbers rising strictly from row to row") if rising else (None, "")
    try:
        for v in a[:3]:
            if not isinstance(v, datetime):
                datetime.fromisoformat(_iso(str(v)))
    except ValueError:
        return None, ""
    return first, "ISO 8601 dates"


def _index_time(path: Path, arrays: dict[str, np.ndarray]) -> str | None:
    """The one column of dates that pandas wrote as a DataFrame's index into a Parquet file, or None: without a
    name it is ``__index_level_0__``, which was left out as a row index (the rows were then numbered and their
    dates lost); with one (``ts``) it comes after the other columns, where ``_unnamed_time`` does not look, and
    was refused as a value column that is not numeric."""
    names = [c for c in arrays if c.startswith("__index_level_")]
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            with open(path, "rb") as fh:  # an open file: pyarrow cannot take a path that is not UTF-8
                meta = pq.read_schema(fh).pandas_metadata or {}
        except Exception:  # noqa: BLE001  (read whole a moment ago: no metadata to go by)
            meta = {}
        names += [c for c in meta.get("index_columns", []) if isinstance(c, str)]  # a RangeIndex is a dict
    dates = [c for c in dict.fromkeys(names) if c in arrays and arrays[c].dtype.kind == "M"]
    return dates[0] if len(dates) == 1 else None


def _row_index(arrays: dict[str, np.ndarray], time_column: str, metrics: Sequence[str] = ()) -> str | None:
    """The first column when it is a row index beside the time column: no name, whole numbers from 0 that
    rise from row to row (or start again at 0: frames concatenated). Scored as a metric, it takes a value in
    every test row that it never took in training. None otherwise, and for a model's own ``metrics``."""
    first = next(iter(arrays))
    if first == time_column or first.strip() not in ("", "Unnamed: 0") or first in metrics:
        return None
    num = _numeric(arrays[first])
    if num is None or len(num) < 2 or not bool(np.isfinite(num).all()) or num[0] != 0:
        return None
    steps_ok = (np.diff(num) > 0) | (num[1:] == 0)
    return first if bool((num == np.round(num)).all() and (num >= 0).all() and steps_ok.all()) else None


# numbers from here on are epoch milliseconds, microseconds or nanoseconds, not seconds: as seconds they would
# be after the year 5000 (1e11 s), which no clock writes and no plot can draw (a fraction too: 1772323200000.25)
_EPOCH_UNITS = ((1e17, 1e9, "nanoseconds"), (1e14, 1e6, "microseconds"), (1e11, 1e3, "milliseconds"))


# a time column's name that says its unit (``time_ms``, ``timestampMs``, ``t [us]``): numbers that read as seconds
# by their size alone (epoch milliseconds before 1973-03-03 are under 1e11) are read in that unit
_NAMED_UNITS = {**dict.fromkeys(("ms", "msec", "msecs", "millis", "millisecond", "milliseconds"), (1e3, "milliseconds")),
                **dict.fromkeys(("us", "\u00b5s", "usec", "usecs", "micros", "microsecond", "microseconds"),
                                (1e6, "microseconds")),
                **dict.fromkeys(("ns", "nsec", "nsecs", "nanos", "nanosecond", "nanoseconds"), (1e9, "nanoseconds"))}
_SECOND_NAMES = ("s", "sec", "secs", "second", "seconds")
_FAR = 4102444800.0  # 2100-01-01 in epoch seconds: numbers this far from 0 are dates beyond 2100 (or before 1840)


def _name_unit(column: str | None) -> tuple[float, str] | None:
    """(divisor, unit) where a time column's name ends in a word that says it counts milli-, micro- or
    nanoseconds (``time_ms``, ``timestampMs``, ``t [us]``), (1, "seconds") where it says seconds, else None."""
    words = [w for w in re.split(r"[^a-z0-9\u00b5]+", re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", column or "").lower()) if w]
    if len(words) == 1 and words[0] not in _NAMED_UNITS and words[0] not in _SECOND_NAMES:  # "time": no unit
        return None
    last = words[-1] if words else ""
    return _NAMED_UNITS.get(last) or ((1.0, "seconds") if last in _SECOND_NAMES else None)


def _years(lo: float, hi: float) -> str:
    """The calendar years of epoch seconds ``lo`` to ``hi``, as a note says them."""
    def year(seconds: float) -> str:
        try:
            return str(datetime.fromtimestamp(seconds, timezone.utc).year)
        except (OverflowError, OSError, ValueError):
            return "beyond 9999" if seconds > 0 else "before 1"

    first, last = year(lo), year(hi)
    return f"the year {first}" if first == last else f"the years {first} to {last}"


def _seconds(path: Path, num: np.ndarray, notes: list[str], column: str | None = None) -> np.ndarray:
    """Numbers of a time column in seconds: epoch milliseconds (Java's and JavaScript's clocks), micro- or
    nanoseconds divided down, with a note; anything else as it is. Numbers under 1e11 are seconds by their size,
    unless the column's name says its unit (``time_ms``: epoch milliseconds before 1973 are under 1e11);
    without one, numbers that as seconds are dates after 2100 (or before 1840) are said to be read as seconds,
    naming what they would be as milliseconds, since both readings are possible."""
    typical = float(np.median(np.abs(num))) if len(num) else 0.0
    if typical < 1e11:
        named = _name_unit(column)
        if named is not None and named[0] != 1.0:
            notes.append(f"{path.name}: time column read in {named[1]}, as its name {column!r} says")
            return num / named[0]
        if named is None and typical >= _FAR:
            lo, hi = float(num.min()), float(num.max())
            notes.append(f"{path.name}: time column read as epoch seconds ({_years(lo, hi)}); if its numbers are "
                         f"epoch milliseconds ({_years(lo / 1e3, hi / 1e3)}), "
                         f"name the column with its unit (time_ms) and give it as {option('time_column')}, or write "
                         "the times as ISO 8601 dates")
        return num
    _, div, unit = next(u for u in _EPOCH_UNITS if typical >= u[0])
    notes.append(f"{path.name}: time column read as epoch {unit} (as seconds its numbers would lie after the year "
                 "5000)")
    return num / div


_NS_FIRST, _NS_LAST = np.datetime64("1677-09-22", "s"), np.datetime64("2262-04-11", "s")  # within int64 ns


def _times(path: Path, a: np.ndarray, notes: list[str], comma: bool = False, column: str | None = None,
           rows: np.ndarray | None = None) -> np.ndarray:
    """A time column as float64: numbers as they are (epoch seconds, row numbers; epoch milliseconds and finer
    divided down to seconds, ``_seconds``), dates and times (parsed by the reader, or ISO 8601 strings) as epoch
    seconds (UTC when no zone is given), durations (Parquet's) as seconds. With ``comma`` (a semicolon-separated file), seconds written with a
    decimal comma (``0,5``: a lab recorder's time since its start) are numbers, as in the value columns. ``rows``:
    the file's row of each cell (one series' cells), for messages."""
    if a.dtype.kind == "M":
        if np.isnat(a).any():
            raise InputError(f"{path}: time column: empty at row {_row(np.flatnonzero(np.isnat(a))[0], rows)}")
        if a.dtype == np.dtype("datetime64[ns]") or (a.min() >= _NS_FIRST and a.max() <= _NS_LAST):
            return a.astype("datetime64[ns]").astype(np.int64) / 1e9
        # past 2262 (or before 1677) nanoseconds overflow 64 bits: they wrapped, silently, to the other end, and
        # the rows after 2262-04-11 were "sorted" before the others; microseconds reach 290,000 years either way
        return a.astype("datetime64[us]").astype(np.int64) / 1e6
    if a.dtype.kind == "m":  # a duration (time since the start: pandas' Timedelta): it was "neither a number nor ..."
        if np.isnat(a).any():
            raise InputError(f"{path}: time column: empty at row {_row(np.flatnonzero(np.isnat(a))[0], rows)}")
        return a.astype("timedelta64[us]").astype(np.int64) / 1e6
    num = _numeric(a)
    if num is None and comma:
        num, text, decimal = text_cells(a, comma)
        if text or not decimal:  # dates (or text): read below as dates, or named as neither
            num = None
        else:
            notes.append(f"{path.name}: time column: {decimal} value(s) with a decimal comma read as numbers")
    if num is not None:
        bad = ~np.isfinite(num)
        if bad.any():
            raise InputError(f"{path}: time column: no number at row {_row(np.flatnonzero(bad)[0], rows)}")
        seconds = _seconds(path, num, notes, column)
        if a.dtype.kind in "iu" and seconds is not num:  # epoch nanoseconds 100 ns apart are one float64 second
            merged = len(np.unique(a)) - len(np.unique(seconds))  # value: they were dropped as "repeated"
            if merged:
                notes.append(f"{path.name}: time column: {merged} row(s) whose times differ from another's by less "
                             f"than a 64-bit float resolves in seconds (about {np.spacing(np.abs(seconds).max()):.1e}"
                             " s here) read as repeated times; give times counted from the first one (nanoseconds "
                             "since the start) to keep them apart")
        return seconds
    out = np.empty(len(a))
    naive = []  # rows whose time has no zone (read as UTC)
    for i, v in enumerate(a):
        try:
            t = v if isinstance(v, datetime) else datetime.fromisoformat(_iso(str(v)))
        except ValueError:
            raise InputError(_bad_time(path, a, i, rows)) from None
        out[i] = _utc_seconds(t)
        if t.tzinfo is None:
            naive.append(i)
    if naive and len(naive) < len(a):  # local times beside zoned ones would be shifted by the zone's offset
        notes.append(f"{path.name}: time column: {len(naive)} time(s) without a zone (the first "
                     f"{str(a[naive[0]]).strip()[:40]!r} in row {_row(naive[0], rows)}) read as UTC, beside "
                     f"{len(a) - len(naive)} with one; give every time its zone if they are local times")
    return out


def _zoned(a: np.ndarray) -> bool | None:
    """Whether a time column of dates (ISO 8601 text, datetime objects) carries a zone, by its first cell that is a
    time; None for numbers (and numpy dates, whose zone is not known). Cells that are neither are passed by: with
    --series-column, a refused series' unreadable first time left the others' zone unknown, never warned of."""
    if a.dtype != object:
        return None
    for cell in a:
        if isinstance(cell, datetime):
            return cell.tzinfo is not None
        kind = time_of("" if cell is None else str(cell))[0]
        if kind:
            return zoned(str(cell)) if kind == "date" else None
    return None


ZONE_HINT = "give every time its zone (+02:00, Z), or none, in both"


def zone_note(where: str, zoned: bool, other: str, other_zoned: bool) -> str | None:
    """A line when dates with a zone meet dates without one (``where``'s against ``other``'s: the model's training
    rows, or its training file), None otherwise. Dates without a zone are read as UTC: local times then lie their
    zone's offset away from the other file's, which no reader could tell."""
    if zoned == other_zoned:
        return None
    if not zoned:
        return (f"{where}: times without a zone read as UTC, while {other} had times with one: if these are local "
                f"times, they are read off by their zone's offset; {ZONE_HINT}")
    return (f"{where}: times with a zone, while {other} had times without one (read as UTC): if those were local "
            f"times, the two are read their zone's offset apart; {ZONE_HINT}")


def _iso(text: str) -> str:
    """An ISO 8601 cell as ``datetime.fromisoformat`` reads it: a trailing Z (UTC) written as +00:00, and RFC
    3339's lower-case z (and t between date and time) too, which Python refused as "neither a number nor ..."."""
    text = text.strip()
    if text.endswith("z") and len(text) > 10 and text[10] in "Tt ":
        text = text[:10] + "T" + text[11:-1] + "Z"
    return text[:-1] + "+00:00" if text.endswith("Z") else text


def _utc_seconds(t: datetime) -> float:
    """Epoch seconds of a date and time, UTC unless it says otherwise."""
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()


def time_of(text: str, comma: bool = False) -> tuple[str, float]:
    """("number", the number), ("date", epoch seconds, UTC unless it says otherwise) or ("", NaN): one time
    cell as a person wrote it (``watch`` reads each row's this way; ``comma``: 0,5 is 0.5, as in a
    semicolon-separated file)."""
    num = cell_number(text.strip(), comma)
    if not math.isnan(num):
        return "number", num
    try:
        return "date", _utc_seconds(datetime.fromisoformat(_iso(text)))
    except ValueError:
        return "", math.nan


def zoned(text: str) -> bool:
    """Whether an ISO 8601 time as written says its zone (``Z``, ``+01:00``)."""
    return offset_of(text) is not None


def offset_of(text: str) -> float | None:
    """The seconds east of UTC an ISO 8601 time as written says (``+01`` 3600, ``Z`` 0); None without a zone
    or for a cell that is no ISO 8601 time."""
    try:
        offset = datetime.fromisoformat(_iso(text)).utcoffset()
    except ValueError:
        return None
    return None if offset is None else offset.total_seconds()


def join_date() -> str:
    """The fix for a time of day without its date, naming the time column as the caller gives it (a function, not
    a constant: ``time_column`` from Python, ``--time-column`` on the command line)."""
    return ("join the date and the time of day into one ISO 8601 column (2024-01-01T00:15:00) and give it as "
            f"{option('time_column')}")


def _time_of_day(v: Any) -> bool:
    """Whether a cell is a time of day (``00:15:00``, as pyarrow reads a logger's separate Time column)."""
    if isinstance(v, dtime):
        return True
    try:
        dtime.fromisoformat(str(v).strip())
        return True
    except ValueError:
        return False


def _row(i: Any, rows: np.ndarray | None) -> int:
    """The file's row number (1-based) of cell ``i`` of a column, or of one series' cells (``rows``)."""
    return (int(i) if rows is None else int(rows[i])) + 1


def _bad_time(path: Path, a: np.ndarray, first: int, rows: np.ndarray | None = None) -> str:
    """What is wrong with a time column whose cell ``first`` is no ISO 8601 date: the first cell that is neither
    a number nor a date, or, when each cell is one or the other, that it mixes the two."""
    kinds = []
    for i, v in enumerate(a):
        kind, _ = time_of(str(v))
        if not kind and _time_of_day(v):
            return (f"{path}: time column: {str(v).strip()[:40]!r} at row {_row(i, rows)} is a time of day without its "
                    f"date; {join_date()}")
        if not kind:
            return f"{path}: time column: {str(v).strip()[:40]!r} at row {_row(i, rows)} is neither a number nor an ISO 8601 date"
        kinds.append(kind)
    return (f"{path}: time column mixes numbers (row {_row(kinds.index('number'), rows)}) and ISO 8601 dates (row "
            f"{_row(kinds.index('date'), rows)}); give one kind of time")


def _labels(path: Path, a: np.ndarray) -> np.ndarray:
    num = _numeric(a)
    ok = np.array([_is_label(v) for v in a]) if num is None else np.isfinite(num) & np.isin(num, (0, 1))
    if not ok.all():
        row = int(np.flatnonzero(~ok)[0])
        others = list(dict.fromkeys(_label_cell(v) for v in a[~ok]))  # 'no', 'yes': which to map to 0 and 1
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise InputError(f"{path}: label column must hold 0 (normal) or 1 (anomaly) in every row; row {row + 1} "
                         f"has {_label_cell(a[row])} ({int((~ok).sum())} row(s) hold other values: {shown})")
    return num.astype(np.int8)


def _label_cell(cell: Any) -> str:
    """A label cell as an error names it: quoted, or "an empty cell or NaN" (it said 'nan'; a cell of NaN read as
    one, and was said to be empty)."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return "an empty cell or NaN"
    return repr(str(cell)[:40])


def _is_label(v: Any) -> bool:
    try:
        return float(v) in (0.0, 1.0)
    except (TypeError, ValueError):
        return False


# ------------------------------------------------------------------------------------------- series folders


def _split_file(directory: Path, split: str) -> Path | None:
    return next((directory / f"{split}{s}" for s in SERIES_SUFFIXES if (directory / f"{split}{s}").is_file()), None)


def is_series_folder(directory: str | Path) -> bool:
    """A folder holding train.csv (or train.parquet): normal operation, perhaps test.csv beside it."""
    d = Path(directory)
    return d.is_dir() and _split_file(d, "train") is not None


def series_folders(directory: str | Path) -> list[Path]:
    """The series folders of DIR: DIR itself, or its sub-folders that are series folders (sorted by name,
    omi-2 before omi-10). InputError when there are none."""
    d = Path(directory)
    if is_series_folder(d):
        return [d]
    subs = sorted((p for p in d.iterdir() if is_series_folder(p)), key=_natural) if d.is_dir() else []
    if not subs:
        raise InputError(f"{d}: not a series folder (no train.csv or train.parquet in it or in its sub-folders)")
    return subs


def untrained_folders(directory: str | Path) -> list[tuple[Path, str]]:
    """Sub-folders of DIR with no train file but a test file or a file named like one (``Train.csv``,
    ``train.csv.gz``), each with why it is not fitted: not series folders, but surely meant as ones, so a run over
    DIR names them rather than passing them by (empty when DIR is itself a series folder). A folder whose files
    were ``Train.csv`` and ``Test.csv`` was left out of an eval's pooled figures without a word."""
    d = Path(directory)
    if not d.is_dir() or is_series_folder(d):
        return []
    found = ((p, untrained_why(p)) for p in sorted((p for p in d.iterdir() if p.is_dir()), key=_natural))
    return [(p, why) for p, why in found if why]


def untrained_why(folder: Path) -> str | None:
    """Why ``folder``, meant as a series folder (a test file in it, or a file named like a train or test file,
    not an image: a folder of images with a train.png was told to name its train.csv), is not one; None when it
    is one or is not meant as one."""
    from normalcy.images.io import IMAGE_SUFFIXES  # here: reading series needs no image library

    if is_series_folder(folder):
        return None
    try:
        near = sorted(f.name for f in folder.iterdir() if re.match(r"(train|test)\.", f.name, re.IGNORECASE)
                      and f.suffix.lower() not in IMAGE_SUFFIXES and f.is_file()
                      and f.name not in {f"{split}{x}" for split in ("train", "test") for x in SERIES_SUFFIXES})
    except OSError:
        near = []
    if not (_split_file(folder, "test") or near):
        return None
    has = f" (it has {', '.join(near[:5])}: the name must be train.csv or train.parquet, lower case, uncompressed)"
    return f"{folder}: no train.csv or train.parquet to fit on{has if near else ''}"


def _natural(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


SAMPLING_RATIO = 2.0  # test rows this many times further apart (or closer) than training's: said


def unit_hint(step: float, other: float) -> str:
    """What follows a note of rows sampled at another interval when the two intervals are 1,000 (10^6, 10^9)
    times apart, to 1%: one file's times likely count milli- (micro-, nano-) seconds, read as seconds where
    their numbers are small (epoch milliseconds before 1973, time since a start); empty otherwise. Such a file
    was said to be sampled "every 60000 s", with "resample one to the other's interval" for its only advice."""
    ratio = max(step, other) / min(step, other)
    for factor, unit, suffix in ((1e3, "milliseconds", "ms"), (1e6, "microseconds", "us"), (1e9, "nanoseconds", "ns")):
        if abs(ratio / factor - 1) <= 0.01:
            return (f"; {factor:,.0f} times apart: if one file's times count {unit}, name its time column with "
                    f"the unit, as time_{suffix}, and give it as {option('time_column')}")
    return ""


def _against_training(train: Series, test: Series) -> list[str]:
    """What a test series' times say against its training series' (both timed), one note each, said nowhere
    before: test rows within the training's time range, of dates (a test on rows trained on scores them as
    normal; many data sets number each file's rows from 0 in a column named timestamp), and rows sampled at
    another interval (windows count rows: the model sees the test's patterns faster or slower than it learned
    them)."""
    if train.time_column is None or test.time_column is None or len(train) < 2 or len(test) < 2:
        return []
    where, other = test.source.name, train.source.name
    notes = []
    inside = int(((test.time >= train.time[0]) & (test.time <= train.time[-1])).sum())
    if inside and min(train.time[0], test.time[0]) > 1e8:  # dates: a row index restarting at 0 in each file is none
        notes.append(f"{where}: {inside} of its {len(test)} rows lie within the time range of {other}: rows "
                     "trained on score as normal; test on rows after training")
    step_train, step_test = float(np.median(np.diff(train.time))), float(np.median(np.diff(test.time)))
    if max(step_train, step_test) >= SAMPLING_RATIO * min(step_train, step_test):
        notes.append(f"{where}: a row every {step_test:g} s, {other} a row every {step_train:g} s: windows count "
                     "rows, so its patterns are seen at another speed than they were learned; resample one to the "
                     f"other's interval{unit_hint(step_test, step_train)}")
    return notes


def read_series_folder(directory: str | Path, time_column: str | None = None,
                       label_column: str | None = "label") -> tuple[list[Series], list[Series]]:
    """(train, test): one series per series folder (named after the folder), in the same order; a folder
    without test.csv gives no test series. A test series has the training columns, in their order (a test
    column that training lacks is left out with a note; one missing is an error)."""
    train: list[Series] = []
    test: list[Series] = []
    for d in series_folders(directory):
        (tr,) = read_series(_split_file(d, "train"), time_column, None, label_column)  # type: ignore[arg-type]
        tr.name = d.name
        train.append(tr)
        test_file = _split_file(d, "test")
        if test_file is None:
            continue
        (te,) = read_series(test_file, time_column, None, label_column, keep=(tr.columns, tr.source.name))
        te = te.only(tr.columns, tr.source.name)
        te.name = d.name
        te.notes = te.notes + _against_training(tr, te)
        zone = None if tr.zoned is None or te.zoned is None else zone_note(te.source.name, te.zoned, tr.source.name,
                                                                          tr.zoned)
        if zone:  # a warning, not a repair: the two files' times may lie an hour or more apart
            log.warning("%s/%s", d.name, zone)
        test.append(te)
    return train, test
