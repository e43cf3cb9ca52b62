"""``normalcy watch``: a fitted series model run online over rows as they arrive, one line out per row.

A monitoring loop in a pipe: rows come as CSV lines (a header first) on stdin or from a file that grows
(``follow``: as ``tail -f`` reads it), each is scored from its past by ``stream.Stream``, learned, and
written out at once as ``time,score,alarm,metrics`` (``series`` first for a model of many series: each
series id routed to its own model and stream). ``score`` is the stream's calibrated score in [0, 1]
(repeated alarms inside a quiet period reported near 0), ``alarm`` 1 on the row that raises one, and
``metrics`` the three metrics that drove it, on alarms. A line that cannot be read (too few or too many
fields, a series the model does not know) is named on the log and skipped; a value that is not a number
is held at its column's last value, as a stream holds a missing one. Nothing stops the loop but the end
of the input (or ``idle`` seconds without a new line when following) and Ctrl-C.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import math
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence, TextIO

import numpy as np

from normalcy.errors import InputError, option, shortened
from normalcy.files import save_model
from normalcy.runs.format import csv_cell, join_metrics
from normalcy.series.base import MIN_CALIBRATION, SeriesDetector
from normalcy.series.events import top_metrics
from normalcy.series.io import DST_HINT, left_out, time_of, zone_note, zoned
from normalcy.series.runs import SeriesSet, time_column_of
from normalcy.series.stream import Stream
from normalcy.vectors.tables import (
    cell_number,
    check_names,
    commented,
    commented_layout,
    csv_delimiter,
    first_other_case,
    grouped_number,
    is_text,
    other_case,
)

log = logging.getLogger("normalcy")

MAX_WARNINGS = 5  # lines named on the log for each kind of problem; the rest are counted
# series ids kept with why they have no stream (about 30 MB): a feed of ever new ids (a request id, or the time
# given as --series-column) kept every one with its reason for as long as the watch ran; past this, a new id's
# lines are refused by asking the set again (skipped and counted all the same)
MAX_REFUSED = 100_000
OUT_FIELDS = ("time", "score", "alarm", "metrics")
SERIES_NOT_SCORED = "series not scored"  # the kind of problem of a line whose series has no stream
MAX_LINE = 1 << 24  # characters a line is kept to: a feed without line ends (binary noise) is not held whole


class Overlong(str):
    """What ``lines`` gives for a line over MAX_LINE characters: its start; the rest was read past."""


@dataclass
class WatchSummary:
    """What a watch saw: rows scored, alarms raised, lines skipped, values held, series watched."""

    rows: int = 0
    alarms: int = 0
    skipped: int = 0
    held: int = 0  # values missing or not numbers, held at their column's last value
    series: int = 0  # series that had a stream
    problems: dict[str, int] = field(default_factory=dict)  # kind of problem -> lines
    closed: bool = False  # the output was closed by its reader (a pipe into `head`): the watch stopped there


def lines(source: TextIO, follow: bool = False, idle: float | None = None, poll: float = 0.2,
          clock: Callable[[], float] = time.monotonic) -> Iterator[str]:
    """The complete lines of ``source``. Following, its end is waited at (every ``poll`` seconds) for more,
    a partial last line for its end, until ``idle`` seconds pass without a new line (None: for ever). A
    followed file that is truncated (a log restarted in place) is read on from its start, and one that is
    replaced at its path (a log rotated) from the new file's start, as ``tail -F`` does; each is said."""
    opened: list[TextIO] = []
    try:
        yield from _read(source, follow, idle, poll, clock, opened)
    finally:
        for f in opened:  # the files a rotation opened (``source`` is its opener's to close)
            f.close()


def _line(part: str, over: bool) -> str:
    """A line as ``lines`` gives it: without its line end, or for one read past MAX_LINE its start."""
    return Overlong(part[:100]) if over else part.rstrip("\r\n")


def _read(source: TextIO, follow: bool, idle: float | None, poll: float, clock: Callable[[], float],
          opened: list[TextIO]) -> Iterator[str]:
    part, last, over = "", clock(), False
    while True:
        chunk = source.readline(MAX_LINE)
        if chunk:
            if not over:
                part += chunk
            if chunk.endswith("\n"):
                yield _line(part, over)
                part, last, over = "", clock(), False
            elif len(part) >= MAX_LINE:  # read on to its end, keeping nothing more
                over = True
            continue
        if not follow or (idle is not None and clock() - last >= idle):
            if part:
                yield _line(part, over)
            return
        moved = _moved(source)
        if moved is not None:
            if part:
                yield _line(part, over)
            over = False
            part, last = "", clock()
            if moved is not source:
                opened.append(moved)
            source = moved
            continue
        time.sleep(poll)


def _moved(source: TextIO) -> TextIO | None:
    """Where a followed file goes on, when it went: ``source`` itself back at its start when the file was
    truncated below what was read, the file now at its path when it was replaced (rotated); else None. A
    stream that is not a file at a path (stdin, a pipe) is never moved."""
    try:
        fd, path = source.fileno(), getattr(source, "name", None)
        if not isinstance(path, str) or not os.path.isfile(path):
            return None
        now, here = os.stat(path), os.fstat(fd)
        if (now.st_dev, now.st_ino) != (here.st_dev, here.st_ino):
            log.warning("%s: replaced (rotated): reading the new file from its start", path)
            return open(path, encoding=getattr(source, "encoding", "utf-8"), errors="replace", newline="")
        if here.st_size < source.tell():
            log.warning("%s: truncated: reading on from its start", path)
            source.seek(0)
            return source
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return None
    return None


class Watcher:
    """Rows of a CSV (``header`` first, then ``row``) scored online by a series model or a set of them."""

    def __init__(self, model: SeriesDetector | SeriesSet, *, time_column: str | None = None,
                 series_column: str | None = None, learn: bool = True, source: str = "stdin") -> None:
        self.model, self.learn, self.source = model, learn, source
        self.time_given = time_column or model.time_column
        self.series_column = (series_column or model.series_column) if isinstance(model, SeriesSet) else None
        if isinstance(model, SeriesSet) and self.series_column is None:
            raise InputError(f"{source}: the model holds one model per series folder; give "
                             f"{option('series_column')}, the column that names each row's series (its folder name)")
        self.streams: dict[str, Stream] = {}  # series id ("" for one model) -> its stream
        self.positions: dict[str, tuple[int, ...]] = {}  # series id -> where its model's columns are in a row
        self.refused: dict[str, str] = {}  # series id -> why it has no stream (no model, columns missing)
        self.last_time: dict[str, float] = {}  # series id -> the time of its last row (a number or epoch seconds)
        self.summary = WatchSummary()
        self.fields: list[str] = []
        self.comma = False
        self.warm_up_said = False  # that a plain detector's first rows score 0 (``_say_warm_up``)
        self.zone_checked: set[str] = set()  # series whose first date was checked against their model's zone
        self.zone_said: set[bool] = set()  # the rows' zone status (zoned or not) said against a model's other one

    @property
    def out_fields(self) -> tuple[str, ...]:
        return ("series", *OUT_FIELDS) if self.series_column else OUT_FIELDS

    def header(self, fields: Sequence[str], comma: bool = False) -> None:
        """Read the header: where the time, the series id and each model column are. ``comma``: values may
        have a decimal comma (a semicolon-separated feed, as fit reads one)."""
        self.fields = [f.strip() for f in fields]
        # a name given twice: which column is the metric would be a guess (fit and predict refuse such a file; watch
        # took the first); blank names may repeat (a spreadsheet's trailing separators), as the readers allow
        check_names(self.source, [f or f"\0{i}" for i, f in enumerate(self.fields)])
        self.comma = comma
        name = time_column_of(self.fields, self.time_given)
        self.time_at = self._at(name, "time") if name is not None else None  # None: rows are numbered
        self.series_at = self._at(self.series_column, "series") if self.series_column else None
        if isinstance(self.model, SeriesDetector):  # one model: its columns are checked once, here
            self._stream("")
            used, flags = {*self.positions[""], self.time_at}, {c.strip() for c in getattr(self.model, "flags_", ())}
            extra = [f for i, f in enumerate(self.fields) if i not in used and f and f not in flags]
            if extra:  # as predict notes it: a column the model lacks was left out without a word
                log.info("%s", left_out(self.source, extra, "the model"))

    def _at(self, name: str | None, what: str) -> int:
        if name not in self.fields:
            raise InputError(f"{self.source}: no {what} column {name!r}{other_case(name or '', self.fields)} in the "
                             f"header {self.fields[:10]}")
        return self.fields.index(name)

    def _positions(self, det: SeriesDetector) -> tuple[int, ...]:
        missing = [c for c in det.columns_ if c.strip() not in self.fields]  # the header's names are stripped
        if missing:
            like = first_other_case(missing, self.fields)
            raise InputError(f"{self.source}: the header lacks the model's column(s) {missing[:10]} (it has "
                             f"{self.fields[:10]}){like}")
        return tuple(self.fields.index(c.strip()) for c in det.columns_)

    def _problem(self, kind: str, message: str) -> None:
        n = self.summary.problems.get(kind, 0) + 1
        self.summary.problems[kind] = n
        if n <= MAX_WARNINGS:
            log.warning("%s%s", message, " (later such lines are counted, not named)" if n == MAX_WARNINGS else "")

    def _stream(self, key: str) -> Stream:
        """The stream of series ``key`` (made when it first comes); InputError where it cannot have one (no
        model for it, or its model's columns are not in the header): its later lines fail at once."""
        if key in self.refused:
            raise InputError(self.refused[key])
        stream = self.streams.get(key)
        if stream is None:
            try:
                det = self.model.get(key) if isinstance(self.model, SeriesSet) else self.model
                if isinstance(self.model, SeriesSet) and self.model.key_of(key) != key:
                    log.warning("%s: series %r watched by the model of series %r (%s)", self.source, shortened(key),
                                shortened(self.model.key_of(key)), self.model.alias(key))
                self.positions[key] = self._positions(det)
            except InputError as err:
                if len(self.refused) < MAX_REFUSED:
                    self.refused[key] = str(err)
                raise
            stream = self.streams[key] = Stream(det, learn=self.learn)
            self._say_warm_up(stream)
        return stream

    def _say_warm_up(self, stream: Stream) -> None:
        """Say once that a plain detector's stream scores its first rows 0 while it learns its calibration (a
        watch of 20 rows or fewer wrote scores of 0 alone, without a word; predict's replay says it)."""
        left = MIN_CALIBRATION - stream.tail.count
        if stream.auto or left <= 0 or self.warm_up_said:
            return
        self.warm_up_said = True
        log.info("%s: the first %d row(s)%s score 0: a stream of %s learns its score calibration from its own "
                 "rows (auto's is set at fit)", self.source, left, " of each series" if self.series_column else "",
                 stream.det.name)

    def _check_time(self, key: str, text: str, line: int) -> None:
        """Say (on the log, counted) a row whose time goes back or repeats its series' last, or is no time (it was
        scored silently): a stream scores rows in the order they come, which a file's reader would have sorted (and
        deduplicated) first, and refused a time that is no number or date."""
        kind, t = time_of(text, self.comma)
        last = self.last_time.get(key, math.nan)
        if not kind:  # a file's reader refuses it; a stream goes on, saying it
            self._problem("time unreadable", f"{self.source}, line {line}: time {text.strip()[:40]!r} is neither a "
                          "number nor an ISO 8601 date: scored in the order the rows came")
        elif t < last:
            hint = f" ({DST_HINT})" if kind == "date" and last - t <= 3600 and not zoned(text) else ""
            self._problem("time back", f"{self.source}, line {line}: time {text.strip()[:40]!r} is before the row "
                          f"before it: scored in the order the rows came{hint}")
        elif t == last:
            self._problem("time repeated", f"{self.source}, line {line}: time {text.strip()[:40]!r} repeats the "
                          "row before it: scored as a row of its own")
        if not math.isnan(t):
            self.last_time[key] = t

    def _check_zone(self, key: str, det: SeriesDetector, text: str, line: int) -> None:
        """Say a date with a zone where the model's training dates had none, or the other way round
        (``io.zone_note``): each is read as UTC without one, silently. Each series' first date is checked
        against its own model (a set's were all checked against the first series' model); each of the two
        mismatches is said once."""
        if key in self.zone_checked or getattr(det, "zoned", None) is None or time_of(text, self.comma)[0] != "date":
            return
        self.zone_checked.add(key)
        rows_zoned = zoned(text)
        note = zone_note(f"{self.source}, line {line}" + (f" (series {shortened(key)})" if self.series_column else ""),
                         rows_zoned, "the model's training rows", det.zoned)
        if note and rows_zoned not in self.zone_said:
            self.zone_said.add(rows_zoned)
            log.warning("%s", note)

    def _not_scored(self, key: str, line: int, err: InputError, new: bool) -> None:
        """A line of a series that has no stream: skipped, counted under one kind for every such series, its
        first line named for the first MAX_WARNINGS of them (each series was a kind of its own: a feed of many
        unknown ids logged five lines for each, and its summary listed them all)."""
        self.summary.skipped += 1
        self.summary.problems[SERIES_NOT_SCORED] = self.summary.problems.get(SERIES_NOT_SCORED, 0) + 1
        if new and len(self.refused) <= MAX_WARNINGS:
            last = len(self.refused) == MAX_WARNINGS
            log.warning("%s, line %d: %s: skipped, as its later lines will be%s", self.source, line, err,
                        " (later such series are counted, not named)" if last else "")

    def unreadable(self, line: int, why: object) -> None:
        """A line the csv module cannot read (a field over its limit of 131072 characters) or over MAX_LINE
        characters: named, counted and skipped, as a line of too many fields is (it ended the watch with a
        traceback, or was held whole in memory)."""
        self.summary.skipped += 1
        self._problem("unreadable", f"{self.source}, line {line}: not a CSV row ({why}): skipped")

    def row(self, fields: Sequence[str], line: int) -> dict[str, str] | None:
        """Score one row (its fields, in the header's order; ``line``: its line number, for messages): the
        output row, or None for a line that cannot be scored (named on the log, counted)."""
        if len(fields) != len(self.fields):
            self.summary.skipped += 1
            self._problem("fields", f"{self.source}, line {line}: {len(fields)} field(s), the header has "
                          f"{len(self.fields)}: skipped")
            return None
        key = fields[self.series_at].strip() if self.series_at is not None else ""
        new = key not in self.refused
        try:
            stream = self._stream(key)
        except InputError as err:
            self._not_scored(key, line, err, new)
            return None
        if self.time_at is not None:
            self._check_time(key, fields[self.time_at], line)
            self._check_zone(key, stream.det, fields[self.time_at], line)
        values = np.empty(len(self.positions[key]))
        for j, at in enumerate(self.positions[key]):
            values[j] = cell_number(fields[at], self.comma)
            if math.isnan(values[j]):
                values[j] = grouped_number(fields[at], self.comma)
            if is_text(fields[at], values[j]):
                self._problem("value", f"{self.source}, line {line}: {self.fields[at]} is {fields[at][:40]!r}, "
                              "not a number: held at its last value")
        reported = stream.update(values)
        _, _, alarm = stream.last
        self.summary.rows += 1
        self.summary.alarms += alarm
        shares = stream.last_contributions  # set on an alarm row
        metrics = join_metrics(top_metrics(shares, stream.det.columns_)) if shares is not None else ""  # as events.csv
        # time and series as events.csv writes them, guarded against spreadsheet formulas as metrics already were
        out = {"time": csv_cell(fields[self.time_at].strip()) if self.time_at is not None else str(self.summary.rows),
               "score": f"{reported:.6g}", "alarm": str(alarm), "metrics": metrics}
        return {"series": csv_cell(key), **out} if self.series_column else out


class _Stops:
    """Ctrl-C and SIGTERM while a row is scored, learned and written wait for the row's end: raised at any
    moment, they stopped a row halfway, and ``save`` kept the half (the calibration had followed a row the
    detector had not learned, a row learned was never written out, its alarm lost), so a watch stopped
    and resumed again and again drifted from one that never stopped."""

    def __init__(self) -> None:
        self.busy = False
        self.pending = False

    def stop(self, signum: int, frame: object) -> None:
        if self.busy:
            self.pending = True
        else:
            raise KeyboardInterrupt

    @contextmanager
    def row(self) -> Iterator[None]:
        self.busy = True
        try:
            yield
        finally:
            self.busy = False
        if self.pending:
            raise KeyboardInterrupt


@contextmanager
def _term_as_interrupt() -> Iterator[_Stops]:
    """SIGTERM (a service stopped, ``kill``) ends the watch as Ctrl-C does, so its summary and ``save`` are
    not lost, each at the end of the row in hand (``_Stops``); the handlers before are put back (a Ctrl-C that
    was ignored, as in a background job, still is). Only the main thread can take signals: elsewhere,
    nothing."""
    stops = _Stops()
    if threading.current_thread() is not threading.main_thread():
        yield stops
        return
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, stops.stop)
    if before[signal.SIGINT] is signal.default_int_handler:
        signal.signal(signal.SIGINT, stops.stop)
    try:
        yield stops
    finally:
        for sig, handler in before.items():
            if handler is not None:  # one set outside Python: nothing to put back
                signal.signal(sig, handler)


def _header(first: str, it: Iterator[str], source: str) -> tuple[str, str, list[str], list[str], int]:
    """(the header line, its separator, the column names, rows read past it, the line number of the first of
    them) of a feed whose first line is ``first``. numpy.savetxt's header is a comment ("# time,a,b", perhaps
    after '#' notes): read as the tables reader reads a file's (``commented_layout``); its names were
    '# time', 'a', 'b', the time column missed and each row numbered."""
    try:
        if not commented(first.encode()):
            sep = csv_delimiter(first.encode())  # a comma, or a spreadsheet's semicolon or tab, as fit reads them
            return first, sep, next(csv.reader([first], delimiter=sep)), [], 2
        comments = [first]
        line = next(it, "")
        while commented(line.encode()):
            if len(comments) >= 1000:
                raise InputError(f"{source}: more than 1000 lines starting with '#' before its rows: no header")
            comments.append(line)
            line = next(it, "")
        sep, skip, names = commented_layout(comments, "" if isinstance(line, Overlong) else line, source)
    except csv.Error as err:
        raise InputError(f"{source}: the header line is not a CSV row ({err})") from None
    if skip > len(comments):  # '#' notes above a header line of its own
        return line, sep, names, [], skip + 1
    return comments[-1], sep, names, [line] if line else [], skip + 1


def watch(model: SeriesDetector | SeriesSet, source: TextIO, out: TextIO, *, source_name: str = "stdin",
          time_column: str | None = None, series_column: str | None = None, learn: bool = True,
          alarms_only: bool = False, follow: bool = False, idle: float | None = None,
          poll: float = 0.2, save: Path | None = None) -> WatchSummary:
    """Score the CSV rows of ``source`` as they come (see the module docstring), writing one CSV line per
    row (``alarms_only``: per alarm) to ``out``, flushed at once. Ctrl-C ends it as the end of the input
    does: with the summary. ``save``: a folder the model is written to at the end, having learned every row
    it saw (a set: every series' model, learned or not), with where each stream stopped (its recent rows, a
    plain detector's calibration), so a watch started from it goes on as one that never stopped.
    SIGTERM ends it as Ctrl-C does; a closed output (its reader gone) ends it too (``closed`` in the
    summary), the model still saved."""
    watcher = Watcher(model, time_column=time_column, series_column=series_column, learn=learn,
                      source=source_name)
    it = lines(source, follow=follow, idle=idle, poll=poll)
    writer = csv.writer(out, lineterminator="\n")
    try:
        with _term_as_interrupt() as stops:
            first, blank = next(it, None), 0
            while first is not None and not first.lstrip("\ufeff").strip():  # blank lines before the header, as
                first, blank = next(it, None), blank + 1                    # fit reads a file (they were the header)
            if first is None:
                raise InputError(f"{source_name}: no header line (the first line names the columns)")
            if isinstance(first, Overlong):
                raise InputError(f"{source_name}: the header line is over {MAX_LINE} characters (no CSV header)")
            first = first.lstrip("\ufeff")  # a byte-order mark a spreadsheet wrote (a file is read past it)
            if any("\udc80" <= c <= "\udcff" for c in first):  # bytes that are not UTF-8, kept as surrogates
                raise InputError(f"{source_name}: the header line is not UTF-8 text (save the CSV as UTF-8)")
            hashed = commented(first.encode())  # numpy.savetxt's header: later '#' lines are comments too
            first, sep, names, rows, n = _header(first, it, source_name)
            watcher.header(names, comma=sep != ",")  # 1,5 is 1.5 in a tab feed too, as fit reads it (decimal_comma)
            writer.writerow(watcher.out_fields)
            out.flush()
            for n, text in enumerate(itertools.chain(rows, it), start=n + blank):
                if not text.strip() or text.lstrip("\ufeff") == first:  # the header again: a file restarted
                    continue
                if hashed and commented(text.encode()):  # its '#' lines again, or a footer: as fit reads them
                    continue
                if isinstance(text, Overlong):
                    watcher.unreadable(n, f"over {MAX_LINE} characters")
                    continue
                try:
                    cells = next(csv.reader([text], delimiter=sep))
                except csv.Error as err:
                    watcher.unreadable(n, err)
                    continue
                if (cells[0].strip().lstrip("\ufeff") == watcher.fields[0]  # a row's first cell seldom is: one check
                        and [c.strip().lstrip("\ufeff") for c in cells] == watcher.fields):  # the header quoted or
                    continue  # spaced (a file restarted by another writer): it was scored as a row of held values
                with stops.row():
                    row = watcher.row(cells, n)
                    if row is not None and (row["alarm"] == "1" or not alarms_only):
                        writer.writerow(row.values())
                        out.flush()
    except KeyboardInterrupt:
        log.info("watch: stopped (Ctrl-C or SIGTERM)")
    except BrokenPipeError:  # the reader of the output went (`| head -3`): the end of the watch, not an error
        watcher.summary.closed = True
        log.info("watch: stopped (the output was closed)")
    finally:
        it.close()
    if save is not None and learn:
        for stream in watcher.streams.values():
            stream.flush()
            stream.det.stream_state = stream.state()  # saved with it: a watch from it goes on from here
        save_model(model, save)  # a full disk after hours of watching: one line, not a traceback
    s = watcher.summary
    s.held = sum(st.filled for st in watcher.streams.values())
    s.series = len(watcher.streams)
    return s
