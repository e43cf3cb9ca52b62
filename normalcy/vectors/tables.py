"""Tables of feature vectors (CSV, Parquet, .npz) for the command line: read, fit, save, load, score.

A scientist's catalogue or a folder of embeddings is a table: one row per object, numeric feature
columns, perhaps an id column and a label column. ``normalcy fit/predict/eval`` take such a file
wherever they take images, with the detectors of :mod:`normalcy.vectors` (one module each).

A vector model is a folder like an image model: ``model.json`` (what a person reads: detector, the
feature columns in order, threshold) and ``model.skops``, the fitted estimator in skops' format
(scikit-learn's secure persistence: no pickle). A stranger's model folder runs no code and cannot crash
or hang scoring: its files are read as image models' are (``files.read_model_file``), the zip's
sizes are capped before anything is unpacked, every type schema.json names must be on ``ALLOWED_NODES``
(skops' own defaults would admit every scikit-learn estimator), and the loaded detector's state is
checked (``check_state``: shapes, ranges, every tree's nodes) before it scores a row.

Rows with a missing value, NaN or inf are never scored: they are named and skipped (``skipped.csv``). A cell
that is text in a numeric column, and a CSV line with another number of fields than the header, are such
missing values, said once when the file is read (``read_table``): one bad cell or line never refuses a file.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split

from normalcy.errors import InputError, option, setting, shortened
from normalcy.files import (
    MAX_STATE_BYTES,
    MODEL_JSON,
    describe,
    model_kind,
    one_line,
    read_json,
    read_model_file,
    reading,
    short_repr,
    write_model_files,
)
from normalcy.numerics.stats import check_fpr_unchanged, decide
from normalcy.vectors.base import TooLarge, finite_rows, plain_params
from normalcy.vectors.registry import DEFAULT_DETECTOR, VECTOR_DETECTORS, create
from normalcy.version import __version__

log = logging.getLogger("normalcy")

TABLE_SUFFIXES = (".csv", ".parquet", ".pq", ".npz")
MAX_COLUMNS = 100_000  # columns a table may have: each costs Python-level work to read, check and name
MAX_NAMED = 20  # columns named in a skipped row's reason (then "and N more columns")
MAX_SAID = 5  # warnings of a file's columns repaired in reading (decimal commas, text cells), then a count
CSV_BLOCK = 1 << 20  # pyarrow's default CSV block size
# bytes of a CSV block a column: 1 MB blocks of a 10,000-column table (60 MB) made 57 chunks of each column,
# 475 MB of memory more than 4 chunks do (2.5 times the time); the values are the same
CSV_COLUMN_BYTES = 1 << 10
MAX_CSV_LINE = 64 << 20  # longest CSV header line and largest block read (100,000 column names of 670 bytes)
VECTOR_KIND = "vectors"
MODEL_FILE = "model.skops"
# Every node a vector model's schema.json may name, as (module, class, skops loader): exactly what our
# detectors hold (found by saving each). Anything else is refused, even what skops trusts by default.
# A detector is named by its own module (normalcy.vectors.gaussian), or by normalcy.vectors in files
# saved before each detector had a module of its own (the package re-exports the classes for skops).
ALLOWED_NODES = frozenset({
    *((module, cls.__name__, "ObjectNode") for cls in VECTOR_DETECTORS.values()
      for module in (cls.__module__, "normalcy.vectors")),
    ("sklearn.ensemble._iforest", "IsolationForest", "ObjectNode"),
    ("sklearn.tree._classes", "ExtraTreeRegressor", "ObjectNode"),
    ("sklearn.tree._tree", "Tree", "TreeNode"),  # its nodes are checked before use: iforest.check_tree
    ("numpy", "ndarray", "NdArrayNode"),
    ("builtins", "dict", "DictNode"), ("builtins", "list", "ListNode"), ("builtins", "tuple", "TupleNode"),
    ("builtins", "str", "JsonNode"),  # numbers, strings, None (skops names every JSON value str)
    ("builtins", "str", "TypeNode"),  # dict keys' type
})
TRUSTED_TYPES = sorted({f"{module}.{cls}" for module, cls, _ in ALLOWED_NODES})  # what skops is told to load
MAX_SCHEMA_BYTES = 128 * 2**20  # schema.json: about 18 kB a tree (7,000 trees), a few kB otherwise
MAX_ZIP_MEMBERS = 1_000_000  # six a tree
MAX_EXPANSION = 100  # unpacked/packed: skops stores its members uncompressed (1x); a zip bomb is 1000x


def is_table(path: Path) -> bool:
    """A file whose suffix names a table format (images are everything else)."""
    return path.suffix.lower() in TABLE_SUFFIXES and not path.is_dir()


TEXT_TABLE_SUFFIXES = (".tsv", ".tab", ".txt", ".dat", ".psv")
OTHER_TABLE_SUFFIXES = (".xlsx", ".xls", ".ods", ".feather", ".arrow", ".ipc", ".json", ".jsonl", ".h5", ".hdf5",
                        ".pkl", ".pickle")


def rename_hint(path: Path) -> str:
    """What to do with a table in a format normalcy does not read, by its suffix, else "". Such a file was
    taken for an image folder ("not a folder: t.tsv") or for images."""
    suffix = path.suffix.lower()
    if suffix in TEXT_TABLE_SUFFIXES:
        return f"; if {path.name} is a text table, give it a .csv name (tab- and semicolon-separated ones are read too)"
    if suffix == ".npy":
        return "; an .npy array of rows: save it as .npz (numpy.savez('rows.npz', X=rows))"
    if suffix in OTHER_TABLE_SUFFIXES:
        return f"; a table in {suffix} is not read: save it as .parquet or .csv"
    return ""


@dataclass
class Table:
    """Feature rows of one file: ``X`` (float64; non-finite rows kept, see ``finite``), their ids, labels."""

    path: Path
    X: np.ndarray
    columns: list[str]
    ids: list[str]
    id_column: str
    labels: np.ndarray | None = None  # 0 normal, 1 anomaly, -1 no label (skipped, as a row with a missing value)
    ignored: list[str] = field(default_factory=list)  # non-numeric columns left out of the features
    # what reading the file made missing in a row (0-based): text in a number's cell, a ragged CSV line
    read_as_missing: dict[int, str] = field(default_factory=dict)

    def finite(self) -> tuple[np.ndarray, list[tuple[str, str]]]:
        """A mask of the rows that can be scored, and (id, reason) for each that cannot; the reason says why
        reading made a value missing (``read_as_missing``), so skipped.csv shows the cell or line to mend."""
        mask, _ = finite_rows(self.X)
        if self.labels is not None:
            mask &= self.labels >= 0  # -1: no label (``_labels``)
        bad = []
        for i in np.flatnonzero(~mask):
            where = np.flatnonzero(~np.isfinite(self.X[i]))
            why = self.read_as_missing.get(i, "")
            if len(where):
                why = "missing value, NaN or inf in " + self._named(where) + (f" ({why})" if why else "")
            bad.append((self.ids[i], why))
        return mask, bad

    def _named(self, where: np.ndarray) -> str:
        """The columns at ``where``, at most MAX_NAMED of them: a row of a 10,000-column table without values
        was named with every column, a 70 kB line on the terminal and in skipped.csv for each such row."""
        if len(where) == len(self.columns) > MAX_NAMED:
            return f"all {len(where)} columns"
        shown = ", ".join(self.columns[j] for j in where[:MAX_NAMED])
        return shown + (f" and {len(where) - MAX_NAMED} more columns" if len(where) > MAX_NAMED else "")


def _read_arrays(path: Path, text: Sequence[str] = (), ragged: dict[int, str] | None = None,
                 source: dict[str, str] | None = None, zoned: dict[str, bool] | None = None) -> dict[str, np.ndarray]:
    """The file's columns as 1-d arrays (an npz's 2-d ``X`` becomes x0, x1, ...), all of one length; the
    columns named in ``text`` as text exactly as written (ids: 01 stays 01, and a missing cell does not turn
    the others into 1.0, 2.0), a missing cell None or "". A table wider than MAX_COLUMNS is refused before
    its values are parsed (or, for .npz, split). A CSV line with another number of fields than the header
    refuses the file, or with ``ragged`` given becomes a row of missing values in its place (see
    ``_read_csv``), and ragged[row] says which line it was. ``source`` gets each .npz column's array, ``zoned`` whether each
    timestamp column (Parquet's, or ISO dates a CSV reader parsed) carried a zone, False for a date column (date32,
    date64: plain dates): numpy's dates are UTC either way."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
            for key, a in arrays.items():  # an image stack (n, h, w) was left out, then "no rows" was said
                if a.ndim > 2:
                    raise InputError(f"{path}: array {key!r} has shape {a.shape}; a table's arrays are columns "
                                     "(1-d) or rows x columns (2-d): flatten or reduce it first")
            _check_width(path, sum(a.shape[1] for a in arrays.values() if a.ndim == 2)
                         + sum(a.ndim == 1 for a in arrays.values()))
            _check_lengths(path, {k: len(a) for k, a in arrays.items() if a.ndim in (1, 2)})
            out: dict[str, np.ndarray] = {}
            source = {} if source is None else source  # column -> the array it came from
            for key, a in arrays.items():
                if a.ndim not in (1, 2):
                    continue
                if key == "y" and a.shape[1:] == (1,):  # labels as a column vector (y.reshape(-1, 1)): still 'y', the
                    a = a[:, 0]                         # labels; as 'y0' they were fitted on as a feature
                named = {f"{key.lower()}{j}": a[:, j] for j in range(a.shape[1])} if a.ndim == 2 else {key: a}
                for name in named:  # X's column x0 and an array x0 (or X and x): one silently replaced the other
                    if name in source:
                        raise InputError(f"{path}: column {name!r} would come from both array {source[name]!r} "
                                         f"and array {key!r}; rename one of them")
                    source[name] = key
                out.update(named)
            return out
        import pyarrow as pa
        import pyarrow.parquet as pq

        if suffix in (".parquet", ".pq"):
            _check_parquet(path)
            with open(path, "rb") as fh:  # an open file: pyarrow cannot take a path that is not UTF-8
                names = pq.read_schema(fh).names
                _check_width(path, len(names))
                check_names(path, names)
                fh.seek(0)
                # ParquetFile, not read_table: read_table's dataset scan left threads that aborted the exit
                # ("terminate called without an active exception", SIGABRT) in 8 of 10 runs once torch was imported
                table = pq.ParquetFile(fh, pre_buffer=False).read(use_threads=False)
        else:
            table = _read_csv(path, text, ragged)

        def column(i: int, name: str) -> np.ndarray:
            col = table.column(i)
            if name in text and not pa.types.is_string(col.type):  # a Parquet file's typed ids, as text
                try:
                    col = col.cast(pa.string())
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # it was "cannot read as a parquet table
                    # (Invalid UTF8 payload)", or "(Unsupported cast from list<...>)", naming no column
                    why = (f"holds bytes that are not UTF-8 text{_not_utf8(col)}; write it as UTF-8 text"
                           if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type) else
                           f"holds {str(col.type)[:60]} values, which are not ids; give a column of text or numbers")
                    raise InputError(f"{path}: column {name!r} {why}") from None
            return col.to_numpy(zero_copy_only=False)

        names = table.column_names
        out = {}
        for i, name in enumerate(names):
            kind = table.schema.field(i).type
            if zoned is not None and pa.types.is_timestamp(kind):
                zoned[name] = kind.tz is not None
            elif zoned is not None and pa.types.is_date(kind):  # date32, date64: calendar dates, no zone
                zoned[name] = False
            a = column(i, name)
            if name in out and not (_blank(name, a) and _blank(name, out[name])):
                check_names(path, names)
            out[name] = a  # blank names repeated: a spreadsheet's trailing separators, all one empty column
        return out
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a table") from None
    except Exception as err:  # pyarrow's and numpy's many parse errors: one line naming the file
        text = " ".join(str(err).split())[:300] or type(err).__name__
        raise InputError(f"{path}: cannot read as a {suffix[1:]} table ({text})") from None


PARQUET_MAGIC = b"PAR1"  # the first (and last) 4 bytes of every Parquet file


def _check_parquet(path: Path) -> None:
    """Refuse a .parquet file that is text (a CSV saved under the wrong name), saying so: it was "cannot read as a
    parquet table (Parquet magic bytes not found in footer. Either the file is corrupted or ...)"."""
    with open(path, "rb") as fh:
        head = fh.read(TEXT_CHECK_BYTES)
    first = head.split(b"\n", 1)[0]
    if head.startswith(PARQUET_MAGIC) or b"\n" not in head or b"\x00" in head or not any(c in first for c in b",;\t"):
        return  # not a CSV's lines: pyarrow's own reason
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # a character cut at the end of the bytes read is still text
            return
    raise InputError(f"{path}: text (CSV?), not a Parquet file (which begins with PAR1): rename it to .csv")


def _not_utf8(col: Any) -> str:
    """Where a binary column first holds bytes that are not UTF-8 (" (row 3: b'\\xff...')"), or nothing."""
    for row, v in enumerate(col.to_pylist()):
        if isinstance(v, bytes):
            try:
                v.decode("utf-8")
            except UnicodeDecodeError:
                return f" (row {row + 1}: {v[:20]!r})"
    return ""


def _line_of(path: Path, text: str) -> str:
    """The 1-based number of the first line of ``path`` that reads ``text`` (pyarrow gives rows, not lines)."""
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        return next((str(i) for i, line in enumerate(fh, 1) if line.rstrip("\r\n") == text), "?")


def _lines_of(path: Path, records: Sequence[int]) -> dict[int, int]:
    """The 1-based line of each of pyarrow's 1-based record numbers (the header is 1; blank lines, which it
    skips, are not counted), so that a message names the line a text editor shows."""
    want, out, record = set(records), {}, 0
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        for number, line in enumerate(fh, 1):
            if line.rstrip("\r\n"):
                record += 1
                if record in want:
                    out[record] = number
                    if len(out) == len(want):
                        break
    return out


def _check_width(path: Path, columns: int) -> None:
    """Refuse a table too wide to read and fit in bounded time (each column costs Python-level work)."""
    if columns > MAX_COLUMNS:
        raise InputError(f"{path}: {columns} columns, more than the {MAX_COLUMNS} a table may have; "
                         "reduce the dimensions first (e.g. PCA)")


def check_names(path: Path, names: Sequence[str]) -> None:
    """Refuse a column name given twice: which of the two a column named so is would be a guess."""
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise InputError(f"{path}: column name {name!r} is given twice (columns {seen[name] + 1} and {i + 1}); "
                             "name each column once")
        seen[name] = i


def _blank(name: str, a: np.ndarray) -> bool:
    """A column with no name and no value (a trailing separator on every line)."""
    return not name.strip() and all(v is None or v == "" or (isinstance(v, float) and math.isnan(v)) for v in a)


def _check_lengths(path: Path, lengths: dict[str, int]) -> None:
    """Refuse arrays of different lengths (an npz's X and y), naming each length."""
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k!r} has {n}" for k, n in lengths.items())
        raise InputError(f"{path}: arrays of different lengths ({shown} rows)")


def csv_delimiter(header: bytes) -> str:
    """The field separator a CSV's header line shows: a comma, else a semicolon (spreadsheets in many locales
    write them; so do SKAB's pump test-bed files) or a tab; a comma when it names one column."""
    text = header.decode("utf-8", "replace")
    return next((d for d in (",", ";", "\t") if d in text), ",")


def decimal_comma(path: Path) -> bool:
    """Whether 1,5 in the file is 1.5: a CSV whose header is separated by semicolons or tabs (a spreadsheet's
    export in a locale that writes decimal commas), where a comma cannot be the field separator."""
    if path.suffix.lower() != ".csv":
        return False
    with open(path, "rb") as fh:
        header = fh.readline(MAX_CSV_LINE)
    if commented(header):  # numpy.savetxt's header: its last '#' line
        return _commented_header(path)[0] in (";", "\t")
    return csv_delimiter(header) != ","


def _read_csv(path: Path, text: Sequence[str] = (), ragged: dict[int, str] | None = None) -> Any:
    """pyarrow parses a CSV in blocks that must hold its header line whole (a longer one is misread as
    an empty file) and each row: blocks sized from the header, after refusing a header past MAX_CSV_LINE
    or naming more than MAX_COLUMNS columns, and made larger (up to MAX_CSV_LINE) while a row straddles two.

    A line with more or fewer fields than the header (a stray separator, a cut-off export) cannot be read
    field by field: which field is which is a guess. Without ``ragged`` the file is refused, naming the
    line. With it (tables), the line becomes a row of missing values where it stands, rather than being
    dropped: every later row keeps its row number (a table's ids when it has no id column), and the row is
    skipped and named like any row with a missing value (predict's skipped.csv); ragged[row] (0-based data
    row) names the line, and one warning names the file, the count and the first lines."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    with open(path, "rb") as fh:
        header = fh.readline(MAX_CSV_LINE + 1)
    if len(header) > MAX_CSV_LINE:
        raise InputError(f"{path}: first line longer than {MAX_CSV_LINE >> 20} MB: not a CSV header normalcy reads")
    _check_utf8(path, header)
    _check_empty(path, header)
    _check_text(path)
    if re.fullmatch(rb"(\xef\xbb\xbf)?\s*sep=.\s*", header, flags=re.IGNORECASE):  # read: columns 'sep=' and ''
        raise InputError(f"{path}: its first line, {header.decode('utf-8-sig').strip()!r}, is a spreadsheet's note "
                         "of the separator, not the header: delete that line")
    delimiter, skip, names = csv_layout(path, header)
    width = len(names) if names is not None else \
        len(next(csv.reader([header.decode("utf-8", "replace")], delimiter=delimiter), []))
    _check_width(path, width)
    block = min(max(CSV_BLOCK, 4 * len(header), CSV_COLUMN_BYTES * width), MAX_CSV_LINE)
    while True:
        bad: list[Any] = []  # rows with another number of fields than the header: refused or kept as missing

        def note(row: Any) -> str:
            bad.append(row)
            return "skip"

        try:
            # no thread pool: its threads at interpreter exit aborted an error exit now and then (SIGABRT,
            # "terminate called without an active exception"; apache/arrow#34314)
            with open(path, "rb") as fh:  # an open file: pyarrow cannot take a path that is not UTF-8
                table = pcsv.read_csv(fh, read_options=pcsv.ReadOptions(block_size=block, use_threads=False,
                                                                        skip_rows=skip, column_names=names),
                                      parse_options=pcsv.ParseOptions(delimiter=delimiter, invalid_row_handler=note),
                                      convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in text}))
        except pa.ArrowInvalid as err:
            if "straddl" not in str(err) or block >= MAX_CSV_LINE:
                raise
            block = min(4 * block, MAX_CSV_LINE)
            continue
        comments = [r.number for r in bad if names is not None and r.text.startswith("#")]
        if comments:  # numpy.savetxt's footer ("# end"): a comment, no row
            bad = [r for r in bad if r.number not in comments]
        if not bad:
            return table
        lines = _lines_of(path, [r.number for r in bad if r.number])
        first = bad[0]
        where = f"line {lines.get(first.number) or _line_of(path, first.text)}"
        if ragged is None or any(not r.number for r in bad):  # no record number: no place to keep the row in
            raise InputError(f"{path}: {len(bad)} line(s) with another number of fields than the header's "
                             f"{first.expected_columns}; {where} has {first.actual_columns}: "
                             f"{first.text[:80]!r}")
        # a record's data row: the header (or the '#' lines, the last of them the names) and comments before it
        rows = [r.number - 1 - max(skip, 1) - sum(c < r.number for c in comments) for r in bad]
        return _keep_rows(path, table, bad, rows, lines, ragged)


def _check_empty(path: Path, header: bytes) -> None:
    """Refuse a CSV of nothing but blank lines (or nothing at all), saying so: pyarrow's "Empty CSV file" or
    "Empty CSV file or block: cannot infer number of columns" was passed on as "cannot read as a csv table"."""
    if header.lstrip(b"\xef\xbb\xbf").strip():
        return
    with open(path, "rb") as fh:
        start = fh.read(TEXT_CHECK_BYTES)
    if len(start) < TEXT_CHECK_BYTES and not start.lstrip(b"\xef\xbb\xbf").strip():
        raise InputError(f"{path}: empty file (no header line, no rows)")


def csv_layout(path: Path, header: bytes) -> tuple[str, int, list[str] | None]:
    """(separator, lines before the rows to skip, column names or None for "the first line's") of a CSV whose
    first line is ``header``: what every reader of a CSV gives pyarrow, so that a numpy.savetxt header ("# a,b")
    names the same columns wherever the file is read."""
    if commented(header):
        return _commented_header(path)
    return csv_delimiter(header), 0, None


def commented(header: bytes) -> bool:
    """Whether a CSV's first line is a comment, as numpy.savetxt writes its header ("# a,b,c"); a column named
    '#' ("#,x,y": a row number's column) is no comment."""
    return re.match(rb"(\xef\xbb\xbf)?#+[^,;\t\r\n]", header) is not None


def _commented_header(path: Path) -> tuple[str, int, list[str]]:
    """(separator, lines to skip, column names) of a CSV whose first lines start with '#', as numpy.savetxt
    writes its header ("# a,b,c"; "# a b c" with its default separator, a space): the names are the last such
    line's, the lines before it comments. Such a header was read as a column "# a" (or one column "# a b c"
    and every row as text). A file whose '#' line does not name its rows' fields is refused, saying so."""
    comments: list[str] = []
    with open(path, "rb") as fh:
        while True:
            raw = fh.readline(MAX_CSV_LINE + 1)
            line = raw.decode("utf-8", "replace").lstrip("\ufeff").rstrip("\r\n")
            if not commented(raw):
                break
            comments.append(line)
            if len(comments) > 1000 or len(raw) > MAX_CSV_LINE:
                raise InputError(f"{path}: more than 1000 lines starting with '#' (or one longer than "
                                 f"{MAX_CSV_LINE >> 20} MB) before its rows: not a table normalcy reads")
    return commented_layout(comments, line, str(path))


def commented_layout(comments: list[str], line: str, path: str) -> tuple[str, int, list[str]]:
    """``_commented_header``'s answer from the '#' lines (without their line ends) and the line after them
    (``line``: "" at the end of the input), for a reader of lines that has no file to read again (watch's
    stdin); ``path`` names the input in messages."""
    named = comments[-1].lstrip("#").strip()
    shown = next((text for text in (named, line) if any(d in text for d in ",;\t")), None)
    delimiter = csv_delimiter(shown.encode()) if shown is not None else " " if " " in line.strip() else ","
    names = named.split() if delimiter == " " else next(csv.reader([named], delimiter=delimiter), [])
    width = len(line.split(" ")) if delimiter == " " else len(next(csv.reader([line], delimiter=delimiter), []))
    if delimiter == " " and (line.startswith(" ") or "  " in line.rstrip()):  # savetxt(fmt="%10.4f"): padded
        raise InputError(f"{path}: its rows' values are aligned by runs of spaces ({line.strip()[:60]!r}), which "
                         "are not read as one separator: write them separated by commas (numpy.savetxt(..., "
                         "delimiter=',', header='a,b,c', comments=''))")
    if line.strip() and len(names) != width and not _holds_number(line):
        return _header_after_comments(line, len(comments))
    if line.strip() and len(names) != width:
        shown = "a space" if delimiter == " " else repr(delimiter)
        raise InputError(f"{path}: its header line {comments[-1][:80]!r} (a comment, as numpy.savetxt writes one) "
                         f"names {len(names)} column(s), its rows have {width} fields separated by {shown}: write "
                         "the names on one line, separated as the values are (savetxt(..., delimiter=',', "
                         "header='a,b,c', comments=''))")
    return delimiter, len(comments), names


def _holds_number(line: str) -> bool:
    """Whether a line holds a number in some field (a row), rather than names only (a header)."""
    fields = next(csv.reader([line], delimiter=csv_delimiter(line.encode())), [])
    return any(not math.isnan(cell_number(f)) for f in fields)


def _header_after_comments(line: str, comments: int) -> tuple[str, int, list[str]]:
    """The layout of a CSV whose '#' lines are notes ("# exported by X") above a header line of its own: the
    header was refused as a '#' line naming 1 column over rows of 3."""
    delimiter = csv_delimiter(line.encode())
    return delimiter, comments + 1, next(csv.reader([line], delimiter=delimiter), [])


def _check_utf8(path: Path, header: bytes) -> None:
    """Refuse a CSV that is not UTF-8 text, saying so. UTF-16 (a spreadsheet's "Unicode text") was read as
    lines of another number of fields, warned of as such, then refused for "byte 0xff in position 0"; a
    Latin-1 header gave Python's "'utf-8' codec can't decode byte 0xe9 in position 3"."""
    if _parquet_file(path, header):  # was "not UTF-8 text (0xc0 at byte 8; Latin-1 or Windows-1252?)"
        raise InputError(f"{path}: a Parquet file (it begins with PAR1), not CSV text: rename it to .parquet")
    if header.startswith(b"\x1f\x8b"):  # was "not UTF-8 text (...; Latin-1 or Windows-1252?)"
        raise InputError(f"{path}: gzip-compressed, not CSV text: decompress it first (e.g. gunzip -c)")
    if header.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError(f"{path}: UTF-16 text (a spreadsheet's \"Unicode text\"), not UTF-8: save it as CSV UTF-8")
    try:
        header.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: its first line is not UTF-8 text ({header[err.start]:#04x} at byte "
                         f"{err.start + 1}; Latin-1 or Windows-1252?): save it as CSV UTF-8") from None


def _parquet_file(path: Path, header: bytes) -> bool:
    """Whether a file whose first line is ``header`` is Parquet: PAR1 at its start and at its end. The start alone
    refused a CSV whose first column is named PAR1 (a light sensor's photosynthetically active radiation)."""
    if not header.startswith(PARQUET_MAGIC):
        return False
    try:
        with open(path, "rb") as fh:
            fh.seek(-len(PARQUET_MAGIC), os.SEEK_END)
            return fh.read() == PARQUET_MAGIC
    except OSError:  # shorter than the magic, or not seekable: no Parquet file
        return False


TEXT_CHECK_BYTES = 1 << 16


def _check_text(path: Path) -> None:
    """Refuse a file with a NUL byte in its first 64 kB, which no CSV holds: a binary file (an image or an archive
    saved as test.csv) whose first line passed as a header was read on, and each of its lines pyarrow could not
    decode printed "Exception ignored in: <function _read_csv.<locals>.note>" and a traceback on stderr before the
    refusal. (A Latin-1 cell past the header is still read, as a column of bytes.)"""
    with open(path, "rb") as fh:
        head = fh.read(TEXT_CHECK_BYTES)
    bad = head.find(b"\x00")
    if bad >= 0:
        line = head.count(b"\n", 0, bad) + 1
        raise InputError(f"{path}: not a text file (a NUL byte on line {line}, byte {bad + 1}): not a CSV table")


def _keep_rows(path: Path, table: Any, bad: list[Any], at: list[int], lines: dict[int, int],
               ragged: dict[int, str]) -> Any:
    """``table`` (the lines pyarrow could read) with a row of nulls in place of each ragged line ``bad``, at its
    data row ``at``, noted in ``ragged`` and said in one warning (``_read_csv``)."""
    import pyarrow as pa

    rows = np.array(at)
    index = np.full(table.num_rows + len(rows), -1, dtype=np.int64)
    kept = np.ones(len(index), dtype=bool)
    kept[rows] = False
    index[kept] = np.arange(table.num_rows)
    for row, r in zip(rows, bad):
        ragged[int(row)] = (f"line {lines[r.number]} has {r.actual_columns} fields where the header has "
                            f"{r.expected_columns}: not read")
    shown = ", ".join(str(lines[r.number]) for r in bad[:5]) + (" ..." if len(bad) > 5 else "")
    log.warning("%s: %d line(s) with another number of fields than the header's %d, read as rows of missing "
                "values (skipped, not scored): line(s) %s; the first: %r", path, len(bad), bad[0].expected_columns,
                shown, bad[0].text[:80])
    return table.take(pa.array(index, mask=index < 0))


def _numeric(a: np.ndarray) -> np.ndarray | None:
    """The column as float64 (missing values as NaN), or None when it is not numeric."""
    if a.dtype.kind in "biuf":
        return a.astype(np.float64)
    if a.dtype == object:  # pyarrow gives object columns for ints with nulls or mixed values
        try:
            return np.array([np.nan if v is None else float(v) for v in a], dtype=np.float64)
        except (TypeError, ValueError):
            return None
    return None


def past_2_53(a: np.ndarray) -> str:
    """What to say of a column of whole numbers (int64, uint64) with some beyond 2^53: float64, as every value is
    read, keeps 16 digits, so ids or counters differing only after them read alike. "" for any other column.
    The series and the table readers both say it."""
    far = max(int(a.max()), -int(a.min())) if a.dtype.kind in "iu" and len(a) else 0  # int: -2^63 has no abs
    return (f"whole numbers beyond 2^53 ({far}) read as 64-bit floats, to 16 digits: numbers differing in the "
            "digits after those read alike") if far > 2**53 else ""


def cell_number(text: str, comma: bool = False) -> float:
    """One cell of a value column as a number, as reading a file makes it: with ``comma`` (a semicolon-separated
    file) 1,5 is 1.5; true and false are 1 and 0 (a column of them reads so); NaN for an empty cell or text."""
    text = text.strip()
    if comma and "," in text and "." not in text:
        text = text.replace(",", ".", 1)
    low = text.lower()
    if low in ("true", "false"):
        return float(low == "true")
    try:
        return float(text)
    except ValueError:
        return math.nan


# a number with its thousands grouped: 1,234,567.5 (in a file of decimal commas, 1.234.567,5); by spaces
# (1 234 567,5 or 1 234 567.5: a no-break or narrow no-break space in a spreadsheet's French or ISO format)
# or apostrophes (Swiss: 1'234'567.5), where the mark after the groups can only be the decimal one
_GROUPED = {False: re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?"), True: re.compile(r"[+-]?\d{1,3}(\.\d{3})+(,\d*)?")}
_SPACES = " \u00a0\u202f'\u2019"  # thousands separators that cannot be a decimal mark
_SPACE_GROUPED = re.compile(f"[+-]?\\d{{1,3}}([{_SPACES}]\\d{{3}})+([.,]\\d*)?")


def grouped_number(text: str, comma: bool = False) -> float:
    """A cell written with thousands separators as a number (a spreadsheet's formatted export), else NaN.
    Asked only of a cell that reads as no number otherwise, so no cell that reads as one changes (with
    ``comma``, 1.234 stays 1.234 and 1,234 is 1.234; 1.234,5 is 1234.5). With ``comma`` (a semicolon- or
    tab-separated file), 1,234.5 and 1,234,567 are read too: no decimal comma is written so, and tab files
    are as often written with decimal points (1,234.5 there was left out as text where a comma file reads it).
    A percentage is its value: 12% (or 1,234.5 %) is 0.12 (12.345), a spreadsheet's formatted percent cell."""
    text = text.strip()
    if text.endswith("%"):  # 12% is 0.12, as a spreadsheet holds it
        inner = text[:-1].rstrip()
        if not re.match(r"[+-]?\.?\d", inner) or inner.endswith("%"):  # no "inf%", "true%", "12%%"
            return math.nan
        number = cell_number(inner, comma)
        return (number if not math.isnan(number) else grouped_number(inner, comma)) / 100
    if _SPACE_GROUPED.fullmatch(text):
        return float(re.sub(f"[{_SPACES}]", "", text).replace(",", "."))
    for decimal_comma in ((True, False) if comma else (False,)):  # the file's own convention first
        if _GROUPED[decimal_comma].fullmatch(text):
            sep, point = (".", ",") if decimal_comma else (",", ".")
            return float(text.replace(sep, "").replace(point, "."))
    return math.nan


def grouped_cells(a: np.ndarray, values: np.ndarray, bad: list[int], comma: bool = False
                  ) -> tuple[list[int], list[int], str]:
    """Of a column's cells ``bad`` (text to ``text_cells``), those written with thousands separators, read into
    ``values`` (``grouped_number``): (those rows, the rows still text, what to say of them: "" for none). The
    series and the table readers both read them so."""
    for i in bad:
        values[i] = grouped_number(str(a[i]), comma)
    grouped = [i for i in bad if not math.isnan(values[i])]
    percent = sum(str(a[i]).strip().endswith("%") for i in grouped)
    kind = ("percent signs" if percent == len(grouped) else "thousands separators or percent signs" if percent
            else "thousands separators")
    said = (f"{len(grouped)} value(s) with {kind} read as numbers (the first "
            f"{str(a[grouped[0]]).strip()[:40]!r} as {values[grouped[0]]:g})") if grouped else ""
    return grouped, [i for i in bad if math.isnan(values[i])], said


def is_text(text: str, value: float) -> bool:
    """Whether a cell read as ``value`` by ``cell_number`` held text rather than a number (an empty cell or
    NaN is a missing value, not text)."""
    return math.isnan(value) and text.strip().lower() not in ("", "nan")


def text_cells(a: np.ndarray, comma: bool = False) -> tuple[np.ndarray, list[int], int]:
    """A column of text read cell by cell (``cell_number``), for the columns ``_numeric`` cannot read whole:
    the values (NaN where a cell is empty or text), the rows whose cell is text ("n/a", "error", "-"), and how
    many cells were read with a decimal comma. The series and the table readers each decide from these how
    much text a column of numbers may hold."""
    out = np.full(len(a), np.nan)
    bad, decimal = [], 0
    for i, v in enumerate(a):
        text = "" if v is None else str(v).strip()
        if not text:
            continue
        out[i] = cell_number(text, comma)
        if is_text(text, out[i]):
            bad.append(i)
        elif comma and "," in text:
            decimal += 1
    return out, bad, decimal


def _feature(path: Path, name: str, a: np.ndarray, notes: dict[int, str], comma: bool = False,
             said: list[str] | None = None) -> np.ndarray | None:
    """A feature column as float64, or None when it is not a column of numbers; with ``comma`` (``decimal_comma``)
    1,5 is 1.5, as the series reader reads it (such a column was left out as text), said in one warning; so is
    1,234.5 (1.234,5 with ``comma``), a number with its thousands grouped.

    The rule: a column is numeric when more than half of its non-empty cells are numbers. Its other cells
    ("n/a", "abc", "-": a logger's or a spreadsheet's marks) are read as missing values, as an empty cell is
    (the row is then skipped and named at fit and at predict), noted per row in ``notes`` and said in one
    warning naming the file, the column, the count and the first rows. A column mostly of text (names,
    categories) is no measurement: None, and ``read_table`` leaves it out (or, for a model's column, refuses)."""
    num = _numeric(a)
    if num is not None or a.dtype != object:
        far = past_2_53(a)
        if far:  # int64 ids past 2^53 became float64 without a word; the series reader says it too
            _say(path, [f"{path}: column {name!r}: {far}"]) if said is None else said.append(
                f"{path}: column {name!r}: {far}")
        return num
    values, bad, decimal = text_cells(a, comma)
    # formatted numbers (1,234.5) left the column out as text: read as the series reader reads them
    grouped, bad, grouped_said = grouped_cells(a, values, bad, comma)
    numbers = int((~np.isnan(values)).sum())  # text, empty and NaN cells read as NaN
    if bad and numbers <= len(bad):
        return None
    own = said is None  # else the caller says them (``_say``): one warning a column, 10,000 for a units row
    said = [] if said is None else said
    if decimal:
        said.append(f"{path}: column {name!r}: {decimal} value(s) with a decimal comma read as numbers (1,5 as 1.5)")
    if grouped:
        said.append(f"{path}: column {name!r}: {grouped_said}")
    if bad:
        for i in bad:
            why = f"{name}: {str(a[i])[:40]!r} is not a number"
            if i not in notes:
                notes[i] = why
            elif notes[i].count("; ") < MAX_NAMED - 1:  # a units row under 10,000 columns: a 290 kB reason
                notes[i] = f"{notes[i]}; {why}"
            elif not notes[i].endswith("; ..."):
                notes[i] += "; ..."
        shown = ", ".join(f"{i} {str(a[i])[:40]!r}" for i in bad[:5]) + (" ..." if len(bad) > 5 else "")
        said.append(f"{path}: column {name!r}: {len(bad)} cell(s) that are not numbers read as missing (those rows "
                    f"are skipped, not scored): row(s) {shown} (counting from 0)")
    if own:
        _say(path, said)
    return values


def _say(path: Path, said: list[str]) -> None:
    """Log what reading the columns repaired, one warning a column, at most MAX_SAID of them: a units row
    ("kg", "m/s") under the header of a 10,000-column table was 10,000 warnings. The rest are counted."""
    for message in said[:MAX_SAID]:
        log.warning("%s", message)
    if len(said) > MAX_SAID:
        log.warning("%s: and %d more such warning(s) for other columns (the rows they make missing are skipped and "
                    "named, as in skipped.csv)", path, len(said) - MAX_SAID)


def read_table(path: str | Path, label_column: str | None = None, id_column: str | None = None,
               columns: list[str] | None = None) -> Table:
    """Read a CSV, Parquet or .npz table: feature columns are ``columns`` when given (a fitted model's),
    else every numeric column but the label and id columns (``_feature`` says which are numeric). A cell of
    text in a numeric column and a CSV line with another number of fields than the header are read as missing
    values, in place (no row moves: ids stay row numbers), each said once in a warning; such a row is then
    skipped and named as any row with a missing value. Every problem is one InputError naming the file."""
    path = Path(path)
    if label_column is not None and label_column == id_column:  # every row was then named by its label, 0 or 1
        raise InputError(f"{path}: {option('label_column')} and {option('id_column')} both name {label_column!r}; "
                         "the labels and the rows' names are two columns")
    read_as_missing: dict[int, str] = {}  # row -> why reading made its values missing
    said: list[str] = []  # the columns' repairs, said once all are read (``_say``)
    source: dict[str, str] = {}  # an .npz's column -> its array
    arrays = _read_arrays(path, text=(id_column,) if id_column else (), ragged=read_as_missing, source=source)
    arrays = fitted_names(arrays, [c for c in (label_column, id_column, *(columns or ())) if c is not None])
    comma = decimal_comma(path)
    n = len(next(iter(arrays.values()))) if arrays else 0
    if n == 0:
        raise InputError(f"{path}: no rows")
    for name in (label_column, id_column):
        if name is not None and name not in arrays:
            raise InputError(f"{path}: no column {name!r}{other_case(name, arrays)}; it has {_names(arrays)}")
    labels = None if label_column is None else _labels(path, label_column, arrays[label_column], read_as_missing)
    ids = ["" if v is None else str(v) for v in arrays[id_column]] if id_column else [str(i) for i in range(n)]
    features: dict[str, np.ndarray | None] = {}
    if columns is None:
        left_out = dict(_not_features(path, arrays, label_column, id_column, source))
        for why in dict.fromkeys(left_out.values()):  # an array's columns (x0, x1, ...): one warning
            log.warning("%s", why)
        if _headerless(path, list(arrays)):
            log.warning("%s: the column names are numbers (%s): a file without a header line (numpy.savetxt writes "
                        "none)? Its first row was read as the column names, not as a row; add a header line",
                        path, ", ".join(list(arrays)[:3]) + (", ..." if len(arrays) > 3 else ""))
        candidates = [c for c in arrays if c not in (label_column, id_column) and c not in left_out]
        features = {c: _feature(path, c, arrays[c], read_as_missing, comma, said) for c in candidates}
        # A column without a single value (a trailing separator on every line: an unnamed empty column) made every
        # row one with a missing value, so no table with one could be fitted ("fewer than 2 normal rows").
        empty = [c for c in candidates if features[c] is not None and np.isnan(features[c]).all()]
        if empty:
            log.warning("%s: column(s) without any value left out of the features: %s", path,
                        ", ".join(map(repr, empty[:20])) + (f" and {len(empty) - 20} more" if len(empty) > 20 else ""))
        columns = [c for c in candidates if features[c] is not None and c not in empty]
        if label_column is None:
            said_y = _warn_npz_y(path, source, columns)
            _warn_label_like(path, {c: features[c] for c in columns if c not in said_y})
        ignored = [c for c in candidates if features[c] is None]  # left_out ones were told why above
    else:
        missing = [c for c in columns if c not in arrays]
        if missing:
            hint = ("; a file without a header line? its first row is read as the column names"
                    if _headerless(path, list(arrays)) else "")
            shown = [shortened(c) for c in missing[:10]]  # a crafted model.json's 1 MB name is not echoed whole
            raise InputError(f"{path}: the model's feature columns {shown} are missing"
                             f"{other_case(missing[0], arrays)}; it has {_names(arrays)}{hint}")
        _check_npz_width(path, columns, source)  # columns named by position: extra ones are no id or label
        extra = [c for c in arrays if c not in columns and c not in (label_column, id_column)]
        if extra and not source:  # as a series' file says it: a column the model lacks was left out in silence
            log.info("%s: column(s) %s left out, not scored: not in the model", path,
                     ", ".join(map(repr, extra[:20])) + (f" and {len(extra) - 20} more" if len(extra) > 20 else ""))
        ignored = []
    if not columns:
        complex_ = _complex_arrays(arrays, source, (label_column, id_column))
        raise InputError(f"{path}: no numeric feature columns" + (f" ({_complex_why(complex_)})" if complex_ else "")
                         + f"; it has {_names(arrays)}")
    X = np.empty((n, len(columns)), dtype=np.float64)
    for j, c in enumerate(columns):
        col = features[c] if c in features else _feature(path, c, arrays[c], read_as_missing, comma, said)
        if col is None:  # a typed column (a Parquet timestamp) has no cells of text: its type is the reason
            kind = arrays[c].dtype
            why = "most of its cells are not numbers" if kind == object else f"its values are {kind}"
            raise InputError(f"{path}: feature column {c!r} is not numeric ({why})")
        X[:, j] = col
    _say(path, said)
    return Table(path, X, list(columns), ids, id_column or "row", labels, ignored, read_as_missing)


def fitted_names(arrays: dict[str, np.ndarray], columns: Sequence[str]) -> dict[str, np.ndarray]:
    """``arrays`` with the first column named as ``columns`` name it when one is its name before numpy.savetxt's
    header ("# a,b,c") was read as a comment ("# a", now "a"): a model fitted on it still scores such a file,
    and --label-column "# label" still finds it."""
    first = next(iter(arrays), None)
    old = next((c for c in columns if c.startswith("#") and c not in arrays and c.lstrip("#").strip() == first), None)
    return arrays if old is None else {old if k == first else k: v for k, v in arrays.items()}


LABEL_NAMES = ("label", "labels", "y", "target", "class", "anomaly", "is_anomaly", "outlier", "is_outlier",
               "ground_truth")  # a column of 0 and 1 so named, fitted on as a feature, is said (_warn_label_like)


def _warn_label_like(path: Path, features: dict[str, np.ndarray]) -> None:
    """Warn of a feature column that looks like labels (named ``label``, ``y``, ``target``, ...; only 0 and 1)
    when no --label-column was given: fitted on as a feature, it tells the anomalies apart by their label, and
    predict then refused every table without it ("feature columns ['label'] are missing")."""
    for name, values in features.items():
        v = values[np.isfinite(values)]
        if name.strip().lower() in LABEL_NAMES and len(v) and np.isin(v, (0.0, 1.0)).all():
            log.warning("%s: column %r holds only 0 and 1, like labels, and is fitted on as a feature; if it is the "
                        "labels, give %s (rows labelled 0 are fitted on)", path, name, setting("label_column", name))


def _warn_npz_y(path: Path, source: dict[str, str], fitted: list[str]) -> list[str]:
    """Warn of an .npz array named like ``y`` but not ``y`` (``Y``, ``" y"``) when no --label-column was given:
    only ``y`` is left out as ADBench's labels (``_not_features``), so ``Y`` is fitted on as a feature, which the
    warning said without saying why ``y`` would not have been. Names are matched exactly, as for every column:
    an array ``Y`` may be a feature. ``fitted``: the feature columns. Returns the columns warned of."""
    keys = list(dict.fromkeys(source.values()))
    if "y" in keys:
        return []
    for key in keys:
        columns = [c for c, k in source.items() if k == key]
        if other_case("y", [key]) and len(columns) == 1 and columns[0] in fitted:
            log.warning("%s: array %r is fitted on as a feature: only an array named 'y' is taken for an .npz's labels "
                        "and left out (names are matched exactly: did you mean 'y'?); if it holds the labels, name it "
                        "y or give %s", path, key, setting("label_column", columns[0]))
            return columns
    return []


def _headerless(path: Path, names: list[str]) -> bool:
    """Whether a CSV's header looks like a row of data: every name a number, and not in a rising or falling
    order (a spectrum's wavelengths, a grid's times are names that are numbers too). A file written without a
    header (``numpy.savetxt``) lost its first row to the names without a word, and at predict its names were
    "missing" columns that were values."""
    if path.suffix.lower() != ".csv" or not names:
        return False
    try:
        values = np.array([float(n) for n in names])
    except ValueError:
        return False
    steps = np.diff(values)
    return len(values) < 3 or not ((steps > 0).all() or (steps < 0).all())


def _check_npz_width(path: Path, columns: list[str], source: dict[str, str]) -> None:
    """Warn of an .npz array of rows x columns that the model takes some columns of, not all: X's columns are
    named by position (x0, x1, ...), so an X of 6 columns scored by a model of 5 had its last one dropped
    without a word (another embedding, or features in another order?). A warning, not a refusal: a column
    without any value at fit was left out of the model, and the same file must still score."""
    wanted = set(columns)
    for key in dict.fromkeys(source.values()):
        names = [c for c, k in source.items() if k == key]
        unused = [c for c in names if c not in wanted]
        if unused and len(unused) < len(names):
            shown = ", ".join(unused[:5]) + (f" and {len(unused) - 5} more" if len(unused) > 5 else "")
            log.warning("%s: array %r has %d columns, the model takes %d of them (by position: x0, x1, ...); %s "
                        "not scored: is this the data the model was fitted on?", path, key, len(names),
                        len(names) - len(unused), shown)


def _labels(path: Path, name: str, a: np.ndarray, notes: dict[int, str]) -> np.ndarray:
    """The label column as 1 (anomaly: any number but 0), 0 (normal) or -1 (no label: an empty cell, NaN or text,
    noted in ``notes`` and said in one warning). Why: one row without a label refused the whole table; now it is
    skipped and named like a row with a missing value (``Table.finite``), neither fitted on nor scored in eval.
    A column without any number (mostly text: "normal", "anomaly") is still refused."""
    values = _feature(path, name, a, notes)
    if values is None or not np.isfinite(values).any():
        raise InputError(f"{path}: label column {name!r} must hold numbers (0 normal, 1 anomaly)")
    missing = [int(i) for i in np.flatnonzero(~np.isfinite(values))]
    empty = [i for i in missing if i not in notes]  # text cells and ragged lines were said when read
    for i in missing:
        why = f"no label in {name!r}"
        notes[i] = f"{notes[i]}; {why}" if i in notes and name not in notes[i] else notes.get(i, why)
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (" ..." if len(empty) > 10 else "")
        log.warning("%s: %d row(s) without a label in %r (an empty cell or NaN) are skipped: row(s) %s "
                    "(counting from 0)", path, len(empty), name, shown)
    return np.where(np.isfinite(values), values != 0, -1).astype(np.int64)


def _complex_arrays(arrays: dict[str, np.ndarray], source: dict[str, str], skip: Sequence[str | None] = ()
                    ) -> dict[str, list[str]]:
    """The .npz arrays of complex numbers (a spectrum's FFT), each with its columns, but those in ``skip``."""
    out: dict[str, list[str]] = {}
    for c, a in arrays.items():
        if a.dtype.kind == "c" and c not in skip:
            out.setdefault(source.get(c, c), []).append(c)
    return out


def _complex_why(keys: Iterable[str]) -> str:
    """Why complex arrays are left out: said only "no numeric feature columns" (or "not numeric: x0, x1")."""
    keys = list(keys)
    one = len(keys) == 1
    return (f"array{'' if one else 's'} {', '.join(map(repr, keys))} {'holds' if one else 'hold'} complex numbers, "
            f"which are not features, left out: give {'its' if one else 'their'} real and imaginary parts (or the "
            "magnitude) as real arrays of their own")


def _not_features(path: Path, arrays: dict[str, np.ndarray], label_column: str | None,
                  id_column: str | None, source: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """Columns that are no measurement, each with a note: an .npz's ``y`` (ADBench's labels: as a feature it
    tells anomalies apart by their label) unless named as the label, an .npz's array of complex numbers (each of
    its columns; ``source``: the array of each column), and a row index that pandas wrote
    (an unnamed first column holding 0, 1, 2, ...: as a feature every new row lies beyond the fitted ones).
    A frame's rows filtered or sampled first leave an index of distinct whole numbers with gaps (CSV), or one
    that Parquet keeps as ``__index_level_0__``: each was fitted on as a feature; they are left out too."""
    out = []
    if path.suffix.lower() == ".npz" and "y" in arrays and label_column is None and id_column != "y":
        out.append(("y", f"{path}: 'y' left out of the features (an .npz's labels; "
                         f"{setting('label_column', 'y')} fits on its rows labelled 0 only)"))
    for key, columns in _complex_arrays(arrays, source or {}, (label_column, id_column)).items():
        out += [(c, f"{path}: {_complex_why([key])}") for c in columns]
    first = next(iter(arrays), None)
    if first is not None and first.strip() in ("", "Unnamed: 0") and first not in (label_column, id_column):
        num = _numeric(arrays[first])
        if num is not None and np.array_equal(num, np.arange(len(num))):
            out.append((first, f"{path}: the unnamed first column, 0, 1, 2, ... (the row index pandas writes), "
                               "left out of the features"))
        elif (num is not None and np.isfinite(num).all() and (num >= 0).all() and (num == np.round(num)).all()
              and len(np.unique(num)) == len(num)):
            out.append((first, f"{path}: the unnamed first column of distinct whole numbers (the row index pandas "
                               "writes, of rows filtered or sampled), left out of the features"))
    for name in arrays:
        if re.fullmatch(r"__index_level_\d+__", name) and name not in (label_column, id_column):
            out.append((name, f"{path}: {name!r} (the row index pandas writes into Parquet) left out of the features"))
    return out


def other_case(name: str, names: Iterable[str]) -> str:
    """" (names are matched exactly: did you mean 'Label'?)" when one of ``names`` (a file's columns) is ``name``
    in other case or with spaces around it, else "": "no column 'label'; it has 'a', 'Label'" left the difference
    to be spotted. Tables, series and watch's header say it alike."""
    like = [c for c in names if c.strip().lower() == name.strip().lower()]
    return f" (names are matched exactly: did you mean {like[0]!r}?)" if like else ""


def first_other_case(missing: Iterable[str], names: Iterable[str]) -> str:
    """:func:`other_case` of the first of ``missing`` that ``names`` holds in other case, else "": a model's
    columns missing from a series file or a watch's header, one hint for them all."""
    names = list(names)
    return next((hint for c in missing if (hint := other_case(c, names))), "")


def _names(arrays: dict) -> str:
    names = list(arrays)
    return ", ".join(repr(c) for c in names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")


# ------------------------------------------------------------------------------------------------ models


class VectorModelMeta(BaseModel):
    """``model.json`` of a vector model."""

    model_config = ConfigDict(extra="forbid", strict=True)
    kind: Literal["vectors"]
    normalcy_version: str
    detector: str
    columns: list[str] = Field(min_length=1)
    fpr: FiniteFloat = Field(gt=0.0, lt=1.0)
    threshold: FiniteFloat
    n_train: int = Field(ge=2)  # rows fitted (files from before n_calibration: the calibration scores)
    n_calibration: int | None = Field(None, ge=2)  # the out-of-sample scores the threshold is a quantile of
    created: str


def fit_table(table: Table, detector: str = DEFAULT_DETECTOR, fpr: float = 0.01, seed: int = 0
              ) -> tuple[Any, list[tuple[str, str]]]:
    """Fit on the table's normal rows (label 0 when it has labels); rows that cannot be scored are skipped."""
    mask, skipped = table.finite()
    if table.labels is not None:
        mask &= table.labels == 0
    if mask.sum() < 2:
        raise InputError(f"{table.path}: fewer than 2 normal rows with finite values to fit on{_no_normal(table)}")
    det = _fitted(table.path, detector, fpr, seed, table.X if mask.all() else table.X[mask])  # no copy of a big table
    return det, skipped


def _fitted(path: Path, detector: str, fpr: float, seed: int, X: np.ndarray) -> Any:
    """The detector fitted on X; a fit it refuses for its size (checked before any work) or that runs out of
    memory all the same is one InputError naming the table."""
    try:
        return create(detector, fpr, seed).fit(X)
    except TooLarge as err:
        raise InputError(f"{path}: {err}") from None
    except MemoryError:
        raise InputError(f"{path}: out of memory fitting {detector} on {X.shape[0]} rows x {X.shape[1]} "
                         "features; use fewer rows or features (e.g. PCA)") from None


def threshold_of(det: Any) -> float:
    """The anomaly-score threshold (normalcy's one rule: a score at or above it is anomalous)."""
    return -float(det.offset_)


def rows_fitted(det: Any) -> int:
    """The rows a detector was fitted on; kNN's calibration scores are of a sample of them (at most 20,000),
    so their count is not it. A detector saved before the count was kept: its calibration scores'."""
    return int(getattr(det, "n_samples_fit_", len(det.calibration_scores_)))


def save_vector_model(det: Any, name: str, columns: list[str], directory: str | Path) -> None:
    import skops.io as sio

    plain_params(det)  # np.float32(0.05) saved as a numpy node that loading refuses
    # set_params(fpr=...) after fit: the threshold is still the one set at the fitted fpr. Compared as numbers,
    # not by setting the threshold again: np.float32(0.05) sets it at float32's 1 - fpr, a hair from float64's.
    check_fpr_unchanged(name, det.fpr, getattr(det, "_threshold_fpr", None))
    meta = VectorModelMeta(kind=VECTOR_KIND, normalcy_version=__version__, detector=name, columns=columns,
                           fpr=float(det.fpr), threshold=threshold_of(det), n_train=rows_fitted(det),
                           n_calibration=len(det.calibration_scores_), created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    text = meta.model_dump_json(indent=2) + "\n"
    write_model_files(directory, {MODEL_FILE: lambda p: sio.dump(det, p), MODEL_JSON: lambda p: p.write_text(text)})


def table_inputs(inputs: list[Path]) -> list[Path]:
    """The tables a vector model scores: the files given, and the tables directly inside a folder given (by
    name; a folder of exports is how tables often arrive). The first input that is neither is named."""
    out: list[Path] = []
    for p in inputs:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if is_table(f) and not f.name.startswith("."))
            if not found:
                raise InputError(f"{p}: a folder without tables (.csv, .parquet, .npz) directly in it")
            out += found
        elif is_table(p):
            out.append(p)
        else:
            raise InputError(f"{p}: a vector model scores tables (.csv, .parquet, .npz, or folders of them), "
                             f"not images{rename_hint(p)}")
    return out


def is_vector_model(directory: Path) -> bool:
    """Whether the folder's model.json says it is a vector model. One that cannot be read safely (a FIFO,
    a link out of the folder, too large, bad JSON) is not, and the image model loader then names why."""
    return model_kind(directory) == VECTOR_KIND


def load_vector_model(directory: str | Path) -> tuple[Any, VectorModelMeta]:
    """A vector model folder, checked: model.json against its schema, model.skops loaded with the allow-list
    only (any other type in it is refused, naming it). Every problem is one InputError."""
    import skops.io as sio

    d = Path(directory)
    meta_path, model_path = d / MODEL_JSON, d / MODEL_FILE
    with reading(d):  # another process's save over it: never its model.json with the earlier model.skops
        try:
            meta = VectorModelMeta.model_validate(read_json(meta_path))
        except ValidationError as err:
            raise InputError(f"{meta_path}: {describe(err)}") from None
        if meta.detector not in VECTOR_DETECTORS:
            raise InputError(f"{meta_path}: unknown detector {short_repr(meta.detector)} for tables")
        twice = next((c for i, c in enumerate(meta.columns) if c in meta.columns[:i]), None)
        if twice is not None:  # fit never writes one: the table's column would be scored in both places, unsaid
            raise InputError(f"{meta_path}: column {short_repr(twice)} is named twice in columns, which fit never writes "
                             "(edited by hand?); fit the model again")
        data = read_model_file(model_path, MAX_STATE_BYTES)
    _check_skops(model_path, data)
    try:
        det = sio.loads(data, trusted=TRUSTED_TYPES)
    except Exception as err:  # noqa: BLE001 - skops', numpy's and the classes' own errors, for every bad file
        raise InputError(f"{model_path}: cannot load ({one_line(err)[:200]})") from None
    calibration = len(getattr(det, "calibration_scores_", ()))
    rows = getattr(det, "n_samples_fit_", calibration)  # unchecked yet (check_state below): compared, not used
    if meta.n_calibration is None:  # saved before n_calibration: n_train counted the calibration scores
        counts, said = (calibration,) == (meta.n_train,), f"{meta.n_train} calibration rows"
    else:
        counts = (rows, calibration) == (meta.n_train, meta.n_calibration)
        said = f"{meta.n_train} rows fitted, {meta.n_calibration} calibration rows"
    if (type(det) is not VECTOR_DETECTORS[meta.detector] or getattr(det, "n_features_in_", None) != len(meta.columns)
            or not counts):
        raise InputError(f"{model_path}: does not match {meta_path} (detector {meta.detector}, "
                         f"{len(meta.columns)} columns, {said})")
    try:
        det.check_state()  # before anything scores: scikit-learn and faiss index with this state unchecked
    except (ValueError, TypeError, AttributeError, RecursionError) as err:
        raise InputError(f"{model_path}: not a state a fitted {meta.detector} has: {one_line(err)}") from None
    # Scoring decides by the estimator's threshold: a different one in model.json (edited by hand, 1e308) was
    # silently not applied. Refused, as any other disagreement of the two files is (image models keep theirs
    # in model.json alone, so there it is the one applied).
    if not math.isclose(meta.threshold, threshold_of(det), rel_tol=1e-9):
        raise InputError(f"{meta_path}: threshold {meta.threshold!r} does not match the threshold "
                         f"{threshold_of(det)!r} in {model_path} (edited by hand?); a vector model's threshold "
                         f"is set when it is fitted: fit again with another {option('fpr')} to change it")
    return det, meta


def _check_skops(path: Path, data: bytes) -> None:
    """Refuse a skops file before skops unpacks anything: a zip bomb (a member that expands over
    MAX_EXPANSION times, or members that add up past it or MAX_STATE_BYTES) and any node of schema.json
    not on ALLOWED_NODES. skops' own check admits its defaults: every scikit-learn estimator and numpy ufunc."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = z.infolist()
            if len(members) > MAX_ZIP_MEMBERS:
                raise InputError(f"{path}: {len(members)} files in the zip, more than a vector model has")
            for m in members:
                if m.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise InputError(f"{path}: {m.filename} is packed with a method skops never uses, refused")
                if m.file_size > 2**20 and m.file_size > MAX_EXPANSION * max(m.compress_size, 1):
                    raise InputError(f"{path}: {m.filename} would expand from {m.compress_size} to {m.file_size} "
                                     f"bytes (over {MAX_EXPANSION}x), refused")
            total = sum(m.file_size for m in members)
            if total > min(MAX_STATE_BYTES, MAX_EXPANSION * len(data) + 2**20):
                raise InputError(f"{path}: would expand to {total} bytes from {len(data)}, refused")
            info = z.getinfo("schema.json")
            if info.file_size > MAX_SCHEMA_BYTES:
                raise InputError(f"{path}: schema.json of {info.file_size} bytes is too large, refused")
            schema = json.loads(z.read(info))
    except InputError:
        raise
    except RecursionError:
        raise InputError(f"{path}: schema.json is nested too deeply, refused") from None
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError, OSError, zipfile.LargeZipFile) as err:
        raise InputError(f"{path}: not a skops model file ({one_line(err)[:200]})") from None
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if {"__module__", "__class__", "__loader__"} & node.keys():
                kind = (node.get("__module__"), node.get("__class__"), node.get("__loader__"))
                if kind not in ALLOWED_NODES:
                    name = ".".join(str(k)[:100] for k in kind[:2])
                    raise InputError(f"{path}: holds a {name} ({str(kind[2])[:100]}), which a normalcy vector model "
                                     "never does, refused")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def score_table(det: Any, table: Table) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """Anomaly scores of the scorable rows (mask), and (id, reason) for the rest; NaN in the skipped rows."""
    mask, skipped = table.finite()
    scores = np.full(len(table.X), np.nan)
    if mask.any():  # every row finite: no copy of a big table (1,000,000 x 20: 160 MB)
        scores[mask] = det.anomaly_score(table.X if mask.all() else table.X[mask])
    return scores, mask, skipped


# ------------------------------------------------------------------------------------------------- eval


def _no_normal(table: Table) -> str:
    """What to say of a label column without a single 0: labels of another convention (scikit-learn's 1 inlier,
    -1 outlier; 1 and 2) made every row an anomaly, and the message said only "fewer than 2 normal rows"
    (eval: "give a labelled test table with --test")."""
    if table.labels is None or (table.labels == 0).any():
        return ""
    return ("; no row is labelled 0: a label is 0 for normal, any other number for an anomaly (scikit-learn's "
            "1 inlier, -1 outlier: map 1 to 0 and -1 to 1)")


def semi_supervised_split(X: np.ndarray, y: np.ndarray, seed: int, test_size: float = 0.3
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ADBench's semi-supervised protocol: a stratified split, the training part's anomalies dropped.
    Returns (normal training rows, test rows, test labels)."""
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=test_size, shuffle=True, stratify=y,
                                                        random_state=seed)
    return X_train[y_train == 0], X_test, y_test


def eval_table(table: Table, detector: str = DEFAULT_DETECTOR, fpr: float = 0.01, seed: int = 0,
               test: Table | None = None) -> dict[str, Any]:
    """Fit on normal rows and score labelled ones: the test table's rows, or else a stratified 30 % of this
    table's (ADBench's semi-supervised split). AUROC and AP, fit and scoring time, rows skipped."""
    if table.labels is None or (test is not None and test.labels is None):
        raise InputError(f"eval on a table needs {option('label_column')} (0 normal, 1 anomaly)")
    mask, skipped = table.finite()
    if test is None:
        y = table.labels[mask]
        if min(int((y == 0).sum()), int((y == 1).sum())) < 2 or len(y) < 10:
            raise InputError(f"{table.path}: a stratified 70/30 split needs at least 2 rows of each label and 10 "
                             f"rows with finite values ({int((y == 0).sum())} normal, {int((y == 1).sum())} "
                             f"anomalous){_no_normal(table) or ': give a labelled test table with ' + option('test')}")
        X_train, X_test, y_test = semi_supervised_split(table.X[mask], y, seed)
        protocol = "stratified 70/30 split, fitted on the training part's normal rows (ADBench semi-supervised)"
    else:
        X_train = table.X[mask & (table.labels == 0)]
        tmask, tskipped = test.finite()
        X_test, y_test = test.X[tmask], test.labels[tmask]
        skipped = skipped + [(f"test:{i}", r) for i, r in tskipped]
        protocol = f"fitted on the normal rows of {table.path.name}, scored on {test.path.name}"
    if len(X_train) < 2:  # was scikit-learn's "Found array with 1 sample(s)", a traceback
        part = "the 70/30 split's training part holds" if test is None else "it has"
        raise InputError(f"{table.path}: fewer than 2 normal rows with finite values to fit on ({part} "
                         f"{len(X_train)}){_no_normal(table) or ': give more normal rows'}")
    scored = (test or table).path
    if not len(y_test):
        raise InputError(f"{scored}: no row with finite values and a label to score")
    one_class = len(np.unique(y_test)) < 2  # a test table of normal rows alone still has its false-positive rate
    if one_class:
        log.warning("%s: every scored row is labelled %s: AUROC and AP need both labels (0 and 1) and are null",
                    scored, "1 (anomaly)" if y_test.all() else "0 (normal)")
    t0 = time.perf_counter()
    det = _fitted(table.path, detector, fpr, seed, X_train)
    t1 = time.perf_counter()
    scores = det.anomaly_score(X_test)
    t2 = time.perf_counter()
    flagged = decide(scores, threshold_of(det))
    return {"detector": detector, "dataset": str(table.path), "protocol": protocol,
            "auroc": None if one_class else float(roc_auc_score(y_test, scores)),
            "ap": None if one_class else float(average_precision_score(y_test, scores)),
            "fpr_normal": float(flagged[y_test == 0].mean()) if (y_test == 0).any() else None,
            "recall_anomalous": float(flagged[y_test == 1].mean()) if (y_test == 1).any() else None,
            "n_train": int(len(X_train)), "n_test": int(len(X_test)), "n_test_anomalous": int(y_test.sum()),
            "fit_seconds": round(t1 - t0, 3), "rows_per_second": round(len(X_test) / max(t2 - t1, 1e-9), 1),
            "skipped": [[i, r] for i, r in skipped]}
