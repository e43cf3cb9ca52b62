"""A run directory: what scoring a folder leaves behind, for people and for `normalcy serve`.

    scores.csv             one row per scored item, the same columns for every kind of run: its id (column
                           ``path``: the image's absolute path; a table's id column, ``row`` by default),
                           score, decision (1 anomalous, 0 normal: ``score >= threshold``, the one rule),
                           threshold, and for images overlay (the overlay image, or empty)
    scores.parquet         the same table, exact (ids not guarded for spreadsheets; scores as float64)
    skipped.csv            id, reason (what could not be scored: files that are not readable images,
                           table rows with missing values; the same for runs on Ray)
    heatmaps/<name>.png    original | overlay side by side (to look at)
    overlays/<name>.png    the overlay alone (the review UI toggles it over the image)
    maps/<name>.npy        raw float32 anomaly maps at original size (--save-maps)
    embeddings.safetensors "embedding": N x E image embeddings, row-aligned with scores.csv,
                           that review re-ranking learns a person's interest from
                           (a table run's: its z-scored feature columns, see write_table_embeddings)
    run.json               detector, model, inputs, threshold, counts
    report.html            the top anomalies

A series run (:func:`write_series_run`) has the same scores (ids: the time column as written; a
``series`` column when it holds several series; a threshold per series), skipped.csv (files and series
that could not be scored), and:

    events.csv             series, start, end, peak_time, peak_score, metrics, rows, plot, threshold: one row
                           per event (threshold: its series')
    events/<index>.png     the window around an event (for the review's cards)
    embeddings.safetensors each event's feature vector, z-scored, row-aligned with events.csv

Image runs (``RunWriter``), table runs (:func:`write_table_run`), series runs and runs on Ray
(``normalcy.scale.distributed``) all write their scores with :func:`write_scores` and their skipped
items with :func:`write_skipped`; run.json's ``kind`` (images, vectors or series) says how to read the ids.
Everything downstream reads them here (:func:`read_run`). A run written before this format (decision
``anomalous``/``normal``) is still read.

A run is written into a fresh hidden folder beside the run folder and replaces it only once complete
(:func:`staged`): a run never adds to an earlier one, and a failed or interrupted run leaves the earlier
run as it was. An existing folder is replaced only when it is an earlier run (it has run.json); any other
non-empty folder is refused rather than deleted. Files under the run folder are left out of the inputs
(:func:`outside_run`), so a run written inside its input folder never scores its own heatmaps.

<name> is the image's path below the input folder, joined with "__" and made file-system-safe
(:func:`output_name`), unique within the run. Paths in the CSV files are exact (file names that are
not UTF-8 included) and guarded against spreadsheet formulas (:func:`csv_cell`).
"""

from __future__ import annotations

import csv
import errno
import hashlib
import heapq
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from normalcy.errors import InputError, option
from normalcy.files import check_writable, hold, one_line, release, remove_if_stale, resolved, write_error
from normalcy.files import writing as folder_locked
from normalcy.images.heatmap import pictures_bgr, write_bgrs
from normalcy.images.io import printable, read_notes, skips_listed
from normalcy.numerics.stats import decide
from normalcy.runs.report import ReportImage, gallery_image, write_report

SCORES_CSV, SCORES_PARQUET, SKIPPED_CSV = "scores.csv", "scores.parquet", "skipped.csv"
IMAGES, VECTORS = "images", "vectors"  # run.json "kind": what the ids name
IMAGE_KEY = "path"  # an image run's id column
EMBEDDINGS = "embeddings.safetensors"
# CSV files hold paths exactly: a Linux file name that is not UTF-8 round-trips through
# surrogateescape (os.fsdecode) instead of aborting the run.
CSV_ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}
# A cell starting with one of these is run as a formula by spreadsheets (OWASP CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
NAME_BYTES = 120  # longest output name before the hash; file systems allow 255 bytes
NAME_MAX = 255  # bytes of a file or folder name on most file systems
_UNSAFE = re.compile(r"[^\w.-]+")  # \w is Unicode letters and digits; a surrogate-escaped byte is not one
RUN_JSON = "run.json"
STAGING = ".partial"  # suffix of the hidden folder a run is written into, beside the run folder
# The review's labels (``normalcy serve``, SQLite) are about the images, not one run's scores: they move
# into the new run, as they stayed when runs were written over the old files.
KEPT = ("review.sqlite", "review.sqlite-wal", "review.sqlite-shm")

if TYPE_CHECKING:  # not imported here: it would bring torch into every reader of runs
    from normalcy.images.features import LazyMap

logger = logging.getLogger("normalcy")


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")  # a signed number runs nothing: written as it is


def csv_cell(text: str) -> str:
    """A cell a spreadsheet shows as text, never runs: a leading formula character gets a ' before it (not the
    sign of a plain number, such as a negative epoch time, which stays as written). A text that already starts
    with ' before one (an id ``'=x``, ``'-5``) gets one more, so that :func:`_uncell` gives it back as it was: it
    was written as ``=x`` is, and read back as ``=x`` (the review and labels.csv then named another row)."""
    guard = text.startswith(FORMULA_START) and not _NUMBER.fullmatch(text)
    return "'" + text if guard or _quoted(text) else text


def _quoted(text: str) -> bool:
    """Whether ``text`` is quotes before a formula character, as :func:`csv_cell` writes a guarded cell."""
    return text.startswith("'") and text.lstrip("'").startswith(FORMULA_START)


def _uncell(text: str) -> str:
    """Undo :func:`csv_cell` (a run written before it doubled quotes reads as before)."""
    return text[1:] if _quoted(text) else text


def _number(x: float) -> str:
    """A score as text: the shortest that reads back exactly, without a trailing .0."""
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


def write_scores(folder: Path, key: str, ids: Sequence[str], scores: np.ndarray, threshold: float | np.ndarray,
                 overlays: Sequence[str] | None = None, series: Sequence[str] | None = None,
                 decisions: np.ndarray | None = None) -> np.ndarray:
    """scores.csv and scores.parquet of every kind of run: ``key`` (the ids), then ``series`` when given (a
    series run of several series: each row's series), score, decision 1/0, threshold (one for the run, or
    one per row: each series has its own), and overlay when given. Returns the decisions: ``decisions`` when
    given (a series run's, where pruned events' rows are normal), else score >= threshold. The CSV is exact
    for any file name (surrogateescape) and guarded against formulas; the Parquet file holds the ids as
    UTF-8 (an undecodable byte as U+FFFD)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    s = np.asarray(scores, np.float64)
    thresholds = np.broadcast_to(np.asarray(threshold, np.float64), s.shape)
    decisions = decide(s, thresholds) if decisions is None else np.asarray(decisions, bool)
    header = ([key] + (["series"] if series is not None else []) + ["score", "decision", "threshold"]
              + (["overlay"] if overlays is not None else []))
    # column by column: a row at a time (a list per row through csv.writer), 1,000,000 rows took 6 s
    texts = {t: _number(t) for t in np.unique(thresholds).tolist()}
    cells = [list(map(csv_cell, ids))] + ([list(map(csv_cell, series))] if series is not None else [])
    cells += [list(map(_number, s.tolist())), np.array(["0", "1"])[decisions.view(np.int8)].tolist(),
              list(map(texts.__getitem__, thresholds.tolist()))] + ([list(overlays)] if overlays is not None else [])
    with open(folder / SCORES_CSV, "w", newline="", **CSV_ENCODING) as fh:
        writer = csv.writer(fh)
        writer.writerow([csv_cell(h) for h in header])
        if any(_needs_quotes(c) for c in cells):
            writer.writerows(zip(*cells))
        else:  # csv.writer's very lines (none needs quotes), joined in a third of its time
            fh.write("".join(",".join(row) + "\r\n" for row in zip(*cells)))
    columns: dict[str, Any] = {key: pa.array(_printable_all(ids), pa.string())}
    if series is not None:
        columns["series"] = pa.array(_printable_all(series), pa.string())
    columns |= {"score": s, "decision": decisions.astype(np.int8), "threshold": np.array(thresholds)}
    if overlays is not None:
        columns["overlay"] = pa.array(list(overlays), pa.string())
    with open(folder / SCORES_PARQUET, "wb") as fh:  # pyarrow takes no path that is not UTF-8: a file it takes
        pq.write_table(pa.table(columns), fh)
    return decisions


def _needs_quotes(cells: list[str]) -> bool:
    """Whether csv.writer would quote any of these cells (a comma, a quote or a line break in it)."""
    text = "".join(cells)
    return any(c in text for c in ',"\r\n')


def _printable_all(texts: Sequence[str]) -> list[str]:
    """``printable`` of each text: the texts themselves where none holds an undecodable byte (a series' million
    time stamps, checked in one encode), else one at a time."""
    try:
        "".join(texts).encode("utf-8")
    except UnicodeEncodeError:  # a surrogate-escaped byte somewhere
        return [printable(t) for t in texts]
    return list(texts)


def write_skipped(folder: Path, key: str, skipped: Sequence[tuple[Any, str]]) -> None:
    """skipped.csv of every kind of run: the id of each item that was not scored, and why."""
    with open(folder / SKIPPED_CSV, "w", newline="", **CSV_ENCODING) as fh:
        writer = csv.writer(fh)
        writer.writerow([csv_cell(key), "reason"])
        writer.writerows([csv_cell(str(i)), csv_cell(str(r))] for i, r in skipped)


def _short_hash(path: Path) -> str:
    return hashlib.sha1(os.fsencode(str(path))).hexdigest()[:8]


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or name-2, name-3, ... where an earlier one took it (tables a/x.csv and b/x.parquet scored in
    one run wrote one folder, the second over the first); case-insensitively, as some file systems compare."""
    out, k = name, 2
    while out.casefold() in taken:
        out, k = f"{name}-{k}", k + 1
    taken.add(out.casefold())
    return out


def table_targets(tables: Sequence[Path]) -> list[tuple[Path, Path]]:
    """Each table with the folder of the run its results go to: the run folder itself for one table, x, x-2,
    ... by file stem for several (``unique_name``), in one process and on Ray alike."""
    taken: set[str] = set()
    return [(t, Path() if len(tables) == 1 else Path(unique_name(t.stem, taken))) for t in tables]


def output_name(path: Path, root: Path | None = None) -> str:
    """A readable, file-system-safe stem for an image's heatmap, overlay and map files.

    The image's path below `root` (the folder given to predict) joined with "__", else its last two
    parts. Where odd characters or length made the name lossy, a hash of the full path keeps it apart
    from others; RunWriter also adds one on any remaining clash.
    """
    path = Path(os.path.abspath(path))
    inside = root is not None and path != root and path.is_relative_to(root)
    parts = path.relative_to(root).with_suffix("").parts if inside else path.with_suffix("").parts[-2:]
    readable = "__".join(p for p in parts if p not in ("/", ""))
    name = _UNSAFE.sub("_", readable).lstrip(".-") or "image"
    if len(name.encode("utf-8")) > NAME_BYTES:
        name = name.encode("utf-8")[:NAME_BYTES].decode("utf-8", "ignore")
    return name if name == readable else f"{name}-{_short_hash(path)}"


def _common_root(inputs: Sequence[Path]) -> Path | None:
    """The deepest folder holding everything given to predict, so output names start below it."""
    folders = [p if p.is_dir() else p.parent for p in (Path(os.path.abspath(i)) for i in inputs)]
    try:
        return Path(os.path.commonpath(folders)) if folders else None
    except ValueError:  # different drives
        return None


def _is_run_folder(folder: Path) -> bool:
    """A folder normalcy wrote: run.json in it, or in each of its subfolders (one run per table)."""
    if (folder / RUN_JSON).is_file():
        return True
    entries = list(folder.iterdir())
    return bool(entries) and all((e / RUN_JSON).is_file() for e in entries)


def check_output(output: Path, inputs: Sequence[Path] = ()) -> None:
    """Refuse a run folder whose replacement would delete files a person made: one that holds an input,
    or is neither empty nor an earlier run."""
    out = resolved(output)
    if out.exists() and not out.is_dir():
        raise InputError(f"{output}: not a folder (a run folder is written there)")
    for given in inputs:
        p = Path(given).resolve()
        if p == out or out in p.parents:
            raise InputError(f"{output}: holds the input {given}, and a run replaces its run folder: "
                             f"choose another {option('output')}")
    try:
        if out.is_dir() and any(out.iterdir()) and not _is_run_folder(out):
            raise InputError(f"{output}: not empty and not a run folder (no run.json), so not replaced: "
                             "choose a new or empty folder, or an earlier run's")
    except OSError as err:
        raise InputError(f"{output}: cannot read ({err.strerror or err})") from None
    where = out.parent  # the run is written beside its folder (start_run): a read-only one failed after scoring
    while not where.exists() and where != where.parent:
        where = where.parent
    check_writable(where, output, "a run folder")


def start_run(output: Path, inputs: Sequence[Path] = ()) -> Path:
    """A fresh hidden folder beside ``output`` to write a run into (the same file system, so that
    :func:`finish_run` can rename it into place), after :func:`check_output`."""
    check_output(output, inputs)
    out = Path(output).resolve()  # a link to a folder: the run goes where it points, and the link stays
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with folder_locked(out.parent):  # another run's cleanup took a folder made but not yet held for a stale one
            _remove_stale_runs(out)
            folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=STAGING, dir=out.parent))
            hold(folder)
    except OSError as err:
        # a name the file system takes, but not with the staging folder's 18 more bytes: say so, not only "too long"
        why = (f"; the run is written beside it first, as .{{NAME}}.XXXXXXXX{STAGING}: give a name of at most "
               f"{NAME_MAX - 18} bytes") if err.errno == errno.ENAMETOOLONG else ""
        raise InputError(f"{output}: cannot write a run folder there ({err.strerror or err}{why})") from None
    return folder


def _remove_stale_runs(out: Path) -> None:
    """Delete the hidden folders beside ``out`` that runs killed outright (SIGKILL, the OOM killer, a power
    cut) left: the ``.NAME.*.partial`` folder a run was written into, with its scores and heatmaps, and an
    earlier run swapped out as ``.NAME.*.old``. They were never read, but each held a whole run and every kill
    added one. A live run's folder is locked by its process (``hold``) and left alone; an ``.old`` goes only
    when its run's ``.partial`` is gone (a live run puts it back should its last rename fail). One holding a
    review's labels (``KEPT``, moved into the new run just before its renames) is never deleted."""
    pattern = re.compile(re.escape(f".{out.name}.") + r"[A-Za-z0-9_]{8}(" + re.escape(STAGING) + r"|\.old)")
    try:
        found = sorted((e.name for e in os.scandir(out.parent) if pattern.fullmatch(e.name)
                        and e.is_dir(follow_symlinks=False)), key=lambda n: n.endswith(".old"))  # .partial first
    except OSError:
        return
    for name in found:
        path = out.parent / name
        if any(os.path.lexists(path / k) for k in KEPT):  # a review's labels, moved in just before the kill: kept
            continue
        if path.suffix == STAGING:
            remove_if_stale(path)
        elif not os.path.lexists(path.with_suffix(STAGING)):
            shutil.rmtree(path, ignore_errors=True)


# What a full or read-only disk raises while a run is written: the run stops (no image is "skipped" for it).
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


def is_disk_full(err: BaseException) -> bool:
    """Whether an error writing a run is the disk's (full, read-only), not the one item's being written
    (safetensors wraps the OSError in its own error)."""
    return isinstance(err, SafetensorError) or (isinstance(err, OSError) and err.errno in DISK_FULL)


@contextmanager
def writing(output: Path) -> Iterator[None]:
    """A full disk while a run is written as one line naming the run folder (it was a traceback)."""
    try:
        yield
    except (OSError, SafetensorError) as err:
        if not is_disk_full(err):
            raise
        raise disk_full(output, err) from None


def disk_full(output: Path, err: BaseException) -> InputError:
    """The one line for a run a full disk stopped."""
    return InputError(f"{output}: cannot write the run ({write_error(err)}); an earlier run there is kept as it was")


def finish_run(folder: Path, output: Path) -> None:
    """Put the complete run ``folder`` in place of ``output`` by renames: the earlier run (its labels
    moved over, see KEPT) is swapped out and then deleted. Another run finishing into the same folder at
    the same moment (two predicts) made one rename fail with a traceback: it is tried again, and the run
    that finishes last is the one kept. The renames are made under a lock on the folder holding ``output``
    (a few renames: milliseconds): without it a run swapped out, as the earlier one, a run another predict
    had just put in place with the labels it had moved over, and deleted it with them."""
    out = Path(output).resolve()
    with folder_locked(out.parent):
        _finish_run(folder, out)


def _finish_run(folder: Path, out: Path) -> None:
    taken = (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT)  # what a run finishing beside this one causes
    for attempt in range(5):
        try:
            if out.is_dir():
                for name in KEPT:
                    if (out / name).exists():
                        os.replace(out / name, folder / name)
                old = folder.with_suffix(".old")
                os.replace(out, old)
                try:
                    os.replace(folder, out)
                except BaseException:
                    if not os.path.lexists(out):
                        os.replace(old, out)  # the earlier run back, rather than no run at all
                    raise
                finally:
                    shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(folder, out)
            release(folder)
            return
        except OSError as err:
            if attempt == 4 or err.errno not in taken or not folder.is_dir():
                raise


def abandon_run(folder: Path) -> None:
    """Delete a run that failed or was interrupted; the earlier run stays as it was."""
    shutil.rmtree(folder, ignore_errors=True)
    release(folder)


@contextmanager
def staged(output: Path, inputs: Sequence[Path] = ()) -> Iterator[Path]:
    """The folder to write a run into; it replaces ``output`` when the block ends without an exception."""
    folder = start_run(output, inputs)
    try:
        with writing(output):
            yield folder
            finish_run(folder, output)
    except BaseException:
        abandon_run(folder)
        raise


def outside_run(paths: Sequence[Path], output: Path) -> list[Path]:
    """The input files, less those under the run folder or a run being written beside it: a run written
    inside its input folder must not score its own heatmaps the next time (it is said on stderr)."""
    out = Path(output).resolve()
    hidden = f".{out.name}."
    folders: dict[str, bool] = {}  # by the folder as given: each resolved once (50,000 files resolved took 14 s)

    def under(r: Path, itself: bool = False) -> bool:
        """Whether ``r`` (resolved) is the run folder or in it, or in a run being written beside it; ``itself``:
        ``r`` is a folder, itself one such."""
        return r == out or out in r.parents or any(
            q.parent == out.parent and q.name.startswith(hidden) for q in ((r, *r.parents) if itself else r.parents))

    def ours(p: Path) -> bool:
        try:
            if not os.path.islink(p):  # its folder resolved says where it is
                folder = os.path.dirname(p)
                if folder not in folders:
                    folders[folder] = under(Path(folder or ".").resolve(), itself=True)
                return folders[folder]
            return under(Path(p).resolve())
        except (OSError, RuntimeError):  # a symlink loop: not ours; the reader names and skips it
            return False

    kept = [p for p in paths if not ours(p)]
    if len(kept) < len(paths):
        logger.warning("%d file(s) under the run folder %s left out of the inputs", len(paths) - len(kept), output)
    return kept


class RunWriter:
    """Streams scored images into a run directory; memory stays bounded except for the top-N report.

    Written into a staging folder (:func:`start_run`) that :meth:`close` puts in place of ``output``;
    used as a context manager, an exception before then deletes it (:meth:`abort`).
    """

    def __init__(self, output: Path, threshold: float, map_range: tuple[float, float], *,
                 heatmaps: bool = True, overlays: bool = True, report: bool = True, save_maps: bool = False,
                 top: int = 24, info: dict[str, Any] | None = None, inputs: Sequence[Path] = ()) -> None:
        self.output = Path(output)  # where the run ends up
        self.folder = start_run(self.output, inputs)  # where it is written until close()
        self.threshold = float(threshold)
        self.map_range = map_range
        self.heatmaps, self.overlays, self.report, self.save_maps = heatmaps, overlays, report, save_maps
        self.top = int(top)
        self.info = dict(info or {})
        self.inputs = [str(Path(p).resolve()) for p in inputs]
        self.root = _common_root(inputs)
        self.rows: list[tuple[str, float, bool]] = []
        self._ids: list[str] = []  # absolute paths, for scores.csv
        self._overlays: list[str] = []
        self.embeddings: list[np.ndarray] = []
        self._names: set[str] = set()  # case-folded: two names differing in case clash on macOS and Windows
        self._best: list[tuple[float, int, ReportImage]] = []
        self._started = time.time()

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        if kind is not None:
            self.abort()

    def abort(self) -> None:
        """Delete the unfinished run (nothing if close() put it in place already)."""
        abandon_run(self.folder)

    def _name(self, path: Path) -> str:
        """output_name, made unique within the run."""
        name = output_name(path, self.root)
        if name.casefold() in self._names:
            name = f"{name}-{_short_hash(Path(os.path.abspath(path)))}"
        base, k = name, 2
        while name.casefold() in self._names:  # the same file added twice
            name, k = f"{base}-{k}", k + 1
        self._names.add(name.casefold())
        return name

    def add(self, path: Path, image: np.ndarray, score: float, amap: np.ndarray | "LazyMap" | None,
            embedding: np.ndarray | None = None) -> None:
        """Record one scored image and write its pictures (none when the detector gave no map). Its decision
        is ``score >= threshold`` (:func:`decide`). A LazyMap is drawn at full size only where a picture, a map
        file or a report card needs it: scores alone (``--no-heatmaps --no-report``) never draw it."""
        anomalous = bool(decide(np.array([score]), self.threshold)[0])
        name = self._name(path)
        lo, hi = self.map_range
        over = ""

        def full() -> np.ndarray:
            return getattr(amap, "full", amap)  # a LazyMap drawn, an array as it is

        drawn = pictures_bgr(image, full(), lo, hi, beside=self.heatmaps) \
            if amap is not None and (self.overlays or self.heatmaps) else None  # overlay on the right
        pictures = []  # written at once, on two threads
        if self.overlays and drawn is not None:
            over = f"overlays/{name}.png"
            (self.folder / "overlays").mkdir(exist_ok=True)
            pictures.append((self.folder / over, drawn[:, drawn.shape[1] - image.shape[1]:]))
        if self.heatmaps and drawn is not None:
            (self.folder / "heatmaps").mkdir(exist_ok=True)
            pictures.append((self.folder / "heatmaps" / f"{name}.png", drawn))
        try:
            write_bgrs(pictures)
        except BaseException:  # the image is not added: none of its pictures is left (the other one was written)
            for path, _ in pictures:
                path.unlink(missing_ok=True)
            raise
        self._overlays.append(over)
        del drawn, pictures  # before the map is saved (a 6000x6000 photo: 216 MB)
        if self.save_maps and amap is not None:
            (self.folder / "maps").mkdir(exist_ok=True)
            np.save(self.folder / "maps" / f"{name}.npy", np.asarray(full(), np.float32))  # no copy of a float32 map
        if embedding is not None:
            self.embeddings.append(np.asarray(embedding, dtype=np.float32))
        # ties: the later image wins, as heapq.heappushpop keeps it; a NaN score ranks last, as in the report's
        # table (as itself it compares false with every score: once in the heap, no higher score got past it)
        key = (-math.inf if math.isnan(score) else score, len(self.rows))
        if self.report and self.top > 0 and (len(self._best) < self.top or key > self._best[0][:2]):
            # Kept at gallery size: the top-N of 1600x800 images would otherwise hold 9 MB each.
            item = gallery_image(str(path), score, anomalous, image, amap)  # a LazyMap drawn at the card's size
            push = heapq.heappush if len(self._best) < self.top else heapq.heappushpop
            push(self._best, (*key, item))
        self._ids.append(str(Path(path).resolve()))
        self.rows.append((str(path), float(score), anomalous))

    def close(self, skipped: Sequence[tuple[Path, str]], title: str) -> None:
        """Write scores, skipped.csv, embeddings, run.json and the report; then put the run in place of ``output``."""
        with writing(self.output):
            self._close(skipped, title)

    def _close(self, skipped: Sequence[tuple[Path, str]], title: str) -> None:
        write_scores(self.folder, IMAGE_KEY, self._ids, np.array([r[1] for r in self.rows]),
                     self.threshold, self._overlays)
        write_skipped(self.folder, IMAGE_KEY, skipped)
        if self.embeddings and len(self.embeddings) == len(self.rows):
            save_file({"embedding": np.stack(self.embeddings)}, str(self.folder / EMBEDDINGS))
        meta = {**self.info, "kind": IMAGES, "inputs": self.inputs, "threshold": self.threshold, "n_images": len(self.rows),
                "n_skipped": len(skipped), "seconds": round(time.time() - self._started, 2),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (self.folder / RUN_JSON).write_text(json.dumps(meta, indent=2) + "\n")
        if self.report:
            write_report(
                self.folder / "report.html",
                title=title,
                scores=np.array([r[1] for r in self.rows]),
                names=[r[0] for r in self.rows],
                top=[b[2] for b in sorted(self._best, key=lambda b: -b[0])],
                threshold=self.threshold,
                map_range=self.map_range,
                skipped=[(str(p), r) for p, r in skipped],
                info={k: v for k, v in self.info.items() if isinstance(v, (str, int, float))},
                scores_file=SCORES_CSV,
                skipped_file=SKIPPED_CSV,
            )
        finish_run(self.folder, self.output)


def write_table_run(output: str | Path, table: Any, scores: np.ndarray, mask: np.ndarray, threshold: float,
                    skipped: Sequence[tuple[str, str]], info: dict[str, Any]) -> Path:
    """A table run (``table``: a :class:`normalcy.vectors.tables.Table`): scores (:func:`write_scores`, one row
    per scored row in table order, ids in the table's id column), skipped.csv, run.json, and the scored rows'
    features as the run's embeddings (:func:`write_table_embeddings`), so that ``normalcy serve`` re-ranks
    table rows as it does images."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    ids = [table.ids[i] for i in np.flatnonzero(mask)]
    decisions = write_scores(out, table.id_column, ids, scores[mask], threshold)
    write_skipped(out, table.id_column, skipped)
    write_table_embeddings(out / EMBEDDINGS, table.X, mask, table.columns)
    run = {**info, "table": str(table.path.resolve()), "id_column": table.id_column, "n_scored": int(mask.sum()),
           "n_skipped": len(skipped), "n_anomalous": int(decisions.sum()), "threshold": threshold,
           "kind": VECTORS}
    (out / RUN_JSON).write_text(json.dumps(run, indent=2) + "\n")
    return out


def write_table_embeddings(path: Path, X: np.ndarray, mask: np.ndarray, columns: list[str],
                           block: int = 65_536) -> None:
    """The scored rows' features, z-scored per column over those rows, as float32 "embedding" (the
    format of an image run's embeddings), with each column's "mean", "std" and "median" (float64; the
    median of a seeded sample of 100,000 rows when there are more) and the column names (metadata).

    Z-scored rather than raw: the re-rankers measure Euclidean distances (and project wide features on
    principal components), so a column in thousands would otherwise outweigh all the columns in units;
    the model's own scaling is the detector's business and differs between detectors. The review page
    turns them back into values with the mean and std (7 significant digits, float32).
    """
    rows = np.flatnonzero(mask)
    n, d = len(rows), X.shape[1]
    z = np.empty((n, d), np.float32)
    # Columns near float64's limits overflow: their NaN become 0 and their z-scores are clipped to +-1e6,
    # which no real z-score reaches (|z| <= sqrt(n)), so float32 holds them and the rankers accept them.
    with np.errstate(over="ignore", invalid="ignore"):
        mean = np.zeros(d)
        for a in range(0, n, block):
            mean += X[rows[a:a + block]].sum(axis=0)
        mean /= max(n, 1)
        var = np.zeros(d)
        for a in range(0, n, block):
            var += ((X[rows[a:a + block]] - mean) ** 2).sum(axis=0)
        std = np.sqrt(var / max(n, 1))
        std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        for a in range(0, n, block):
            z[a:a + block] = np.clip(np.nan_to_num((X[rows[a:a + block]] - mean) / std, nan=0.0), -1e6, 1e6)
    sample = rows if n <= 100_000 else np.sort(np.random.default_rng(0).choice(rows, 100_000, replace=False))
    median = np.median(X[sample], axis=0) if n else np.zeros(d)
    save_file({"embedding": z, "mean": mean, "std": std, "median": median}, str(path),
              metadata={"columns": json.dumps(columns), "embedding": "z-scored feature columns"})


def read_embeddings(run_dir: Path) -> np.ndarray | None:
    """The run's N x E embeddings, or None when it has none."""
    path = Path(run_dir) / EMBEDDINGS
    return load_file(str(path))["embedding"] if path.is_file() else None


@dataclass(frozen=True)
class RunRow:
    path: str  # absolute
    name: str
    score: float
    decision: bool
    overlay: str | None  # absolute, or None
    row: int  # data row in scores.csv (0-based), to pick the embedding


def _image_path(raw: str, run_dir: Path) -> str:
    """An image path as predict wrote it: absolute, or relative to where predict was run. Text, not a Path:
    at 100,000 rows the Paths of this and :func:`_display_name` took 5 s of a review's start."""
    if os.path.isabs(raw):
        return os.path.abspath(raw)
    p = Path(raw)
    candidates = [Path.cwd() / p, run_dir.parent / p]
    found = next((c for c in candidates if c.exists()), candidates[0])
    return os.path.abspath(found)


def _display_name(path: str, inputs: Sequence[Path]) -> str:
    """The path (absolute, normalised) inside the folder given to predict (e.g. crack/000.png), else
    parent/name."""
    plain = os.sep == "/" and not path.startswith("//")  # what Path says, in a fraction of its time
    for folder in inputs:
        if plain:
            inside = str(folder).rstrip("/") + "/"
            if path.startswith(inside) and len(path) > len(inside):
                return printable(path[len(inside):])
        elif Path(path).is_relative_to(folder) and Path(path) != folder:
            return printable(Path(path).relative_to(folder).as_posix())
    head, name = os.path.split(path)
    parent = os.path.basename(head) if plain else ""
    return printable(f"{parent}/{name}" if parent else "/".join(Path(path).parts[-2:]))


PART_COPIED = "the run folder is damaged or was copied in part: copy it again, or run predict again"


def read_run_json(run_dir: Path) -> dict:
    """run.json, or {} for a run without one (scores.csv written by hand). One that cannot be read is an error:
    it was served "without it", so a table or series run copied in part (run.json cut short) was read as an
    image run, and failed on a column it never had."""
    path = run_dir / "run.json"
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:  # ValueError: bad UTF-8 or JSON, a 4300-digit integer
        raise InputError(f"{path}: cannot read ({one_line(err)[:200]}); {PART_COPIED}") from None
    if not isinstance(meta, dict):
        return {}
    for key, kind in RUN_JSON_TYPES.items():  # what is read of it: a list for "kind" was a TypeError traceback
        value = meta.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise InputError(f"{path}: {key} is {json.dumps(value)[:60]}, not {'text' if kind is str else 'a list'}; "
                             f"{PART_COPIED}")
    return meta


# The fields of run.json that are read back (serve), and what each must be (null: as if absent).
RUN_JSON_TYPES: dict[str, type] = {"kind": str, "inputs": list, "id_column": str, "backbone": str}


# run.json's count of a run's items, and the file holding them, by run.json's kind (an image run's run.json
# before "kind" has n_images too)
COUNTS = {IMAGES: ("n_images", SCORES_CSV), VECTORS: ("n_scored", None), "series": ("n_events", "events.csv")}


def _items_file(run_dir: Path, meta: dict) -> tuple[str | None, str]:
    """run.json's count key of a run's items and the file holding them."""
    key, name = COUNTS.get(meta.get("kind", IMAGES), (None, SCORES_CSV))
    if name is None:  # a table run: scores.parquet is read when present, else scores.csv
        name = SCORES_PARQUET if (run_dir / SCORES_PARQUET).is_file() else SCORES_CSV
    return key, name


def check_not_cut(run_dir: Path, meta: dict) -> None:
    """Refuse, before it is read, a run's items file cut short in its last row (a copy stopped midway): a score
    cut to fewer digits was read as a score, a cut decision said "decision must be 1 or 0" of a file normalcy
    wrote. Runs without run.json (scores.csv by hand) are not checked."""
    _, name = _items_file(run_dir, meta)
    if not meta or not name.endswith(".csv"):
        return
    try:
        with open(run_dir / name, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(size - 1, 0))
            last = fh.read(1)
    except OSError:
        return  # said by whoever reads it
    if last not in (b"", b"\n", b"\r"):
        raise InputError(f"{run_dir / name}: its last row is cut short (no line end); {PART_COPIED}")


def check_complete(run_dir: Path, meta: dict, n_rows: int) -> None:
    """Refuse a run folder copied in part, which was served as whole: its items file holding fewer rows than
    run.json counts (more is a file edited by hand, not a copy cut short). Runs without run.json (scores.csv
    by hand) are not checked."""
    key, name = _items_file(run_dir, meta)
    expected = meta.get(key) if key else None
    if isinstance(expected, int) and not isinstance(expected, bool) and n_rows < expected:
        raise InputError(f"{run_dir / name}: only {n_rows} row(s), where run.json counts {expected} ({key}); "
                         + PART_COPIED)


DECISIONS = {"1": True, "0": False, "anomalous": True, "normal": False}  # the words: runs before one format


def read_scores(run_dir: Path, inputs: Sequence[Path] = ()) -> tuple[list[RunRow], int]:
    """The scored images of a run, in scores.csv order, and the number of data rows in the file.

    A duplicate path keeps its first row; a row with a non-finite score is left out (with a warning).
    """
    path = run_dir / "scores.csv"
    if not path.is_file():
        raise InputError(f"{path}: not found (pass a run folder written by `normalcy predict`)")
    rows: list[RunRow] = []
    seen: set[str] = set()
    n_rows = unscored = 0
    try:
        with open(path, newline="", **CSV_ENCODING) as fh:
            reader = csv.DictReader(fh)
            missing = {"path", "score", "decision"} - set(reader.fieldnames or [])
            if missing:  # a table or series run without its run.json was read as an image run
                alone = "" if (run_dir / RUN_JSON).exists() else (
                    f"; and no {RUN_JSON} beside it, which says what kind of run it is ({PART_COPIED})")
                raise InputError(f"{path}: missing column(s) {', '.join(sorted(missing))}{alone}")
            for k, rec in enumerate(reader):
                n_rows = k + 1
                line = reader.line_num
                raw = rec.get("path") or ""
                if not os.path.isabs(raw):  # hand-written; a path RunWriter wrote is exact
                    raw = raw.strip()
                raw = _uncell(raw)
                if not raw:
                    raise InputError(f"{path}:{line}: empty path")
                cell = (rec.get("score") or "").strip()
                try:  # an empty cell (a score not given, by hand) is none: left out as a NaN is, not fatal
                    score = float(cell or "nan")
                except ValueError:
                    raise InputError(f"{path}:{line}: score {rec.get('score')!r} is not a number") from None
                decision = DECISIONS.get((rec.get("decision") or "").strip().lower())
                if decision is None:
                    raise InputError(f"{path}:{line}: decision must be 1 or 0, not {rec.get('decision')!r}")
                if not math.isfinite(score):
                    logger.warning("%s:%d: %s; %s left out of the review", path, line,
                                   f"score {score} is not finite" if cell else "score is empty", raw)
                    unscored += 1
                    continue
                image = _image_path(raw, run_dir)
                if image in seen:
                    logger.warning("%s:%d: %s listed twice; keeping the first row", path, line, raw)
                    continue
                seen.add(image)
                over = (rec.get("overlay") or "").strip()
                overlay = str(Path(os.path.abspath(run_dir / over))) if over else None
                rows.append(RunRow(image, _display_name(image, inputs), score, decision,
                                   overlay, k))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"{path}: cannot read ({err})") from None
    if not rows:  # "no scored images" was said of a file whose every score is NaN, which looked empty
        why = f" (every score of its {n_rows} row(s) is NaN, infinite or empty)" if unscored == n_rows > 0 else ""
        raise InputError(f"{path}: no scored images to review{why}")
    return rows, n_rows


@dataclass
class RunItems:
    """A run's items as columns, one entry per item in scores.csv order: cheap for 1,000,000 of them."""

    keys: list[str]            # what the review database knows an item by: image path, or table row id
    names: list[str]           # for people
    scores: np.ndarray         # float64, finite
    decisions: np.ndarray      # bool: anomalous
    overlays: list[str | None]  # absolute path of the overlay image, None for none (table rows never)
    rows: np.ndarray           # int64: data row in scores.csv, to pick the embedding
    n_rows: int                # data rows in scores.csv

    @classmethod
    def of_images(cls, rows: Sequence[RunRow], n_rows: int) -> "RunItems":
        return cls([r.path for r in rows], [r.name for r in rows], np.array([r.score for r in rows], np.float64),
                   np.array([r.decision for r in rows], bool), [r.overlay for r in rows],
                   np.array([r.row for r in rows], np.int64), n_rows)


def read_table_items(run_dir: Path, id_column: str | None = None) -> RunItems:
    """The scored rows of a table run (``normalcy predict`` on a table): id, score, decision 1/0.

    scores.parquet when present (read in a fraction of the CSV's time at 1,000,000 rows), else
    scores.csv. A row with a non-finite score is left out, and a repeated id keeps its first row,
    each with one warning.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    path = run_dir / "scores.parquet"
    if not path.is_file():
        path = run_dir / "scores.csv"
    try:
        # A CSV's ids are text (an id like 007 or -2 stays as written) and guarded: csv_cell undone below.
        with open(path, "rb") as fh:  # a file, not a path: pyarrow takes no path that is not UTF-8
            table = pq.read_table(fh) if path.suffix == ".parquet" else pcsv.read_csv(
                fh, convert_options=pcsv.ConvertOptions(column_types={csv_cell(id_column or ""): pa.string()}))
    except FileNotFoundError:
        raise InputError(f"{run_dir / 'scores.csv'}: not found (pass a run folder written by `normalcy predict`)") from None
    except Exception as err:  # pyarrow's many parse errors: one line naming the file
        raise InputError(f"{path}: cannot read ({' '.join(str(err).split())[:200]})") from None
    names = table.column_names
    key = id_column if id_column in names else (names[0] if names else "")
    missing = [c for c in ("score", "decision") if c not in names]
    if missing or key in ("score", "decision"):
        raise InputError(f"{path}: needs an id column and the columns score, decision; it has {', '.join(names)}")
    try:
        scores = pc.cast(table.column("score"), "float64").to_numpy(zero_copy_only=False)
        decisions = pc.cast(table.column("decision"), "float64").to_numpy(zero_copy_only=False) != 0
    except Exception as err:  # pyarrow.ArrowInvalid and kin: a column of text
        raise InputError(f"{path}: score and decision must be numbers ({' '.join(str(err).split())[:200]})") from None
    text = _uncell if path.suffix == ".csv" else str
    ids = [printable("" if v is None else text(str(v))) for v in table.column(key).to_pylist()]
    keep = np.isfinite(scores)
    if not keep.all():
        logger.warning("%s: %d row(s) with a non-finite score left out of the review", path, int((~keep).sum()))
    rows = np.flatnonzero(keep)
    if len(set(ids)) < len(ids):
        first = {ids[i]: i for i in rows[::-1].tolist()}  # the earliest row of an id wins
        rows = np.sort(np.fromiter(first.values(), np.int64, len(first)))
    if len(rows) < int(keep.sum()):
        logger.warning("%s: %d repeated id(s) in column %r; each keeps its first row", path,
                       int(keep.sum()) - len(rows), key)
    if not len(rows):
        why = f" (every score of its {len(ids)} row(s) is NaN, infinite or empty)" if not keep.any() and ids else ""
        raise InputError(f"{path}: no scored rows to review{why}")
    kept = [ids[i] for i in rows]
    return RunItems(kept, kept, scores[rows], decisions[rows], [None] * len(rows), rows, len(ids))


def file_state(path: Path) -> tuple[int, int, int, int] | None:
    """Which file is at ``path``, with its size and modification time (None when none is): tells the file a
    server read at start from one another ``predict`` wrote into the run folder since."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class TableFeatures:
    """A table run's feature values for people: the columns of a row that lie furthest from the run's
    median, read from embeddings.safetensors (z-scores, mean, std, median, column names; written by
    normalcy.vectors.tables) a page of rows at a time, so the server holds no N x D array of them."""

    def __init__(self, path: Path) -> None:
        from safetensors import safe_open

        self.path = path
        self.state = file_state(path)
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            if "columns" not in meta or not {"mean", "std", "median"} <= set(f.keys()):
                raise ValueError("no column names and statistics (written by an older normalcy?)")
            self.columns = [printable(str(c)) for c in json.loads(meta["columns"])]
            self.mean, self.std, self.median = (f.get_tensor(k).astype(np.float64) for k in ("mean", "std", "median"))
            shape = f.get_slice("embedding").get_shape()
        if len(shape) != 2 or not shape[1] == len(self.columns) == len(self.mean) == len(self.std) == len(self.median):
            raise ValueError(f"embedding shape {shape} does not match {len(self.columns)} columns")
        self.n_rows = int(shape[0])

    def describe(self, rows: Sequence[int], top: int = 12) -> list[list[dict[str, Any]]]:
        """For each data row: up to ``top`` columns, furthest from the median first, each with its value
        and its distance from the median in standard deviations (all columns when there are few)."""
        from safetensors import safe_open

        if file_state(self.path) != self.state:  # another table's values beside this one's scores and ids
            raise ValueError("rewritten since the review started (another predict into the run folder?): "
                             "restart normalcy serve to review the new results")
        with safe_open(str(self.path), framework="numpy") as f:
            emb = f.get_slice("embedding")
            z = np.array([emb[k:k + 1][0] for k in rows], np.float64).reshape(len(rows), len(self.columns))
        values = z * self.std + self.mean
        deviation = (values - self.median) / self.std
        out = []
        for v, dev in zip(values, deviation):
            pick = np.argsort(-np.abs(dev), kind="stable")[:top]
            out.append([{"column": self.columns[j], "value": _finite(v[j]), "deviation": _finite(dev[j])} for j in pick])
        return out


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def read_features(run_dir: Path, n_rows: int) -> np.ndarray | None:
    """embeddings.safetensors, if present and row-aligned with scores.csv; else None (with a warning)."""
    path = run_dir / EMBEDDINGS
    try:
        emb = read_embeddings(run_dir)
    except Exception as err:  # noqa: BLE001  (a damaged file must not stop the review)
        logger.warning("%s: cannot read (%s); ranking by anomaly score only", path, err)
        return None
    if emb is None:
        logger.warning("%s: not found; ranking by anomaly score only (strategy 'none')", path)
        return None
    emb = np.asarray(emb, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != n_rows:
        logger.warning("%s: shape %s does not match the %d rows of scores.csv; ranking by anomaly score only",
                       path, tuple(emb.shape), n_rows)
        return None
    return emb


def add_embeddings(run_dir: Path, extractor: Any, progress: bool = True) -> np.ndarray:
    """Compute and store the embeddings of a run that has none, row-aligned with scores.csv.

    ``predict`` skips them for detectors that never run the backbone (EfficientAD, DRAEM), so
    scoring stays fast; review re-ranking needs them, so ``serve`` calls this first. An image
    that can no longer be read gets a zero row (it then ranks by its anomaly score alone).
    """
    from normalcy.progress import progress_bar

    rows, n_rows = read_scores(run_dir)
    row_of = {Path(r.path): r.row for r in rows}
    out: np.ndarray | None = None
    skipped: list[tuple[Path, str]] = []
    # said once for them all, below: images moved away since predict were two lines each (100,000 at 100,000)
    with skips_listed(), read_notes(), progress_bar(progress) as bar:
        task = bar.add_task("embeddings for review", total=len(rows))
        for batch in extractor.iter_batches(list(row_of), keep_images=False):
            skipped.extend(batch.skipped)
            if batch.paths:
                emb = batch.features.embedding.numpy()
                out = np.zeros((n_rows, emb.shape[1]), np.float32) if out is None else out
                out[[row_of[p] for p in batch.paths]] = emb
            bar.advance(task, len(batch.paths) + len(batch.skipped))
    if skipped:
        (first, reason), more = skipped[0], len(skipped) - 1
        logger.warning("%s: %s; %s by their anomaly score alone", printable(str(first)), reason,
                       f"it and {more} more of the run's {len(rows)} image(s) that cannot be read rank" if more
                       else "it ranks")
    if out is None:
        raise InputError(f"{run_dir}: none of the run's images could be read to compute embeddings")
    # written beside it, then renamed: a serve stopped while writing (or a second serve of the run writing its own
    # at once) left a file cut short, read as "cannot read" by every later serve, which never computed it again
    part = Path(run_dir) / f".{EMBEDDINGS}.{os.getpid()}.partial"
    try:
        save_file({"embedding": out}, str(part))
        os.replace(part, Path(run_dir) / EMBEDDINGS)
    finally:
        part.unlink(missing_ok=True)
    return out


# ------------------------------------------------------------------------------------------------ series runs

SERIES = "series"  # run.json "kind" of a series run
EVENTS_CSV = "events.csv"
EVENT_PLOTS = "events"  # folder of the events' pictures, events/<index>.png
MAX_EVENT_PLOTS = 2000  # pictures drawn (the events with the highest peaks, relative to their threshold),
# about 15 kB each
EVENT_CONTEXT = 0.5  # an event's picture shows this fraction of its length (at least a window) either side
EVENT_COLUMNS = ("series", "start", "end", "peak_time", "peak_score", "metrics", "rows", "plot", "threshold")


@dataclass
class SeriesRunPart:
    """One scored series of a series run (duck-typed here: runs/ does not import normalcy.series)."""

    name: str  # the series as the run names it
    file: int  # its file's index in the run's files
    series: Any  # normalcy.series.io.Series
    scored: Any  # normalcy.series.runs.ScoredSeries


def _series_rows(part: SeriesRunPart) -> np.ndarray:
    """For each row of the series, a file row holding it (its last, for a repeated timestamp)."""
    s = part.series
    rep = np.empty(len(s), np.int64)
    rep[s.row_of] = s.file_rows
    return rep


def write_series_run(folder: Path, files: Sequence[Any], parts: Sequence[SeriesRunPart],
                     failed: Sequence[tuple[str, str]], info: dict[str, Any], *, report: bool = True,
                     top: int = 24, title: str = "normalcy predict: series") -> dict[str, Any]:
    """A series run (``files``: normalcy.series.runs.SeriesFile, the inputs read): scores (one row per input
    row of every scored series, files in input order and each file's rows in its order; ids the time column
    as written, ``series`` when the run holds several), events.csv (one row per event, times as written),
    a picture per event (events/), the events' feature vectors as the run's embeddings (the review ranks
    events), skipped.csv (the files and series that could not be scored, with the reason), run.json and
    report.html. Returns run.json's contents."""
    started = time.time()
    tcols = {f.time_column for f in files}
    key = (tcols.pop() or "row") if len(tcols) == 1 else "time"
    if key in ("series", "score", "decision", "threshold"):
        key = f"time:{key}"
    ids: list[str] = []
    names: list[str] = []
    scores, thresholds, decided = [], [], []
    for fi, f in enumerate(files):
        n = len(f.times)
        owner = np.full(n, -1, np.int64)
        score = np.full(n, np.nan)
        thr = np.full(n, np.nan)
        dec = np.zeros(n, bool)
        for pi, p in enumerate(parts):
            if p.file != fi:
                continue
            rows, at = p.series.file_rows, p.series.row_of
            owner[rows], score[rows], thr[rows] = pi, p.scored.score[at], p.scored.threshold
            dec[rows] = p.scored.decision[at] != 0
        keep = np.flatnonzero(owner >= 0)
        ids.extend(f.times[i] for i in keep.tolist())
        names.extend(parts[i].name for i in owner[keep].tolist())
        scores.append(score[keep])
        thresholds.append(thr[keep])
        decided.append(dec[keep])
    score_all = np.concatenate(scores) if scores else np.zeros(0)
    decisions = write_scores(folder, key, ids, score_all, np.concatenate(thresholds) if thresholds else np.zeros(0),
                             series=names if len(parts) > 1 else None,
                             decisions=np.concatenate(decided) if decided else np.zeros(0, bool))
    write_skipped(folder, "series", failed)
    n_events = _write_events(folder, files, parts)
    meta = {**info, "kind": SERIES, "inputs": [str(Path(f.path).resolve()) for f in files], "time_column": key,
            "n_series": len(parts), "n_rows": len(ids), "n_anomalous": int(decisions.sum()), "n_events": n_events,
            "n_pruned": sum(p.scored.pruned for p in parts), "n_skipped": len(failed),
            "notes": list(dict.fromkeys(n for p in parts for n in p.series.notes))[:1000],  # a file's: once
            "seconds": round(time.time() - started, 2), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    thr = {float(p.scored.threshold) for p in parts}
    if len(thr) == 1:
        meta["threshold"] = thr.pop()
    (folder / RUN_JSON).write_text(json.dumps(meta, indent=2) + "\n")
    if report:
        from normalcy.runs.report import write_series_report

        write_series_report(folder / "report.html", title=title, files=files, parts=parts, top=top,
                            skipped=list(failed), info={k: v for k, v in info.items() if isinstance(v, (str, int, float))},
                            summary=meta)
    return meta


def _write_events(folder: Path, files: Sequence[Any], parts: Sequence[SeriesRunPart]) -> int:
    """events.csv, the events' pictures and their feature vectors (embeddings.safetensors)."""
    rows: list[tuple[SeriesRunPart, Any, np.ndarray]] = []
    for p in parts:
        rep = _series_rows(p)
        rows.extend((p, e, rep) for e in p.scored.events)
    # pictures for the events that matter most first: peak over threshold
    order = sorted(range(len(rows)), key=lambda k: -rows[k][1].peak_score / max(rows[k][0].scored.threshold, 1e-12))
    drawn = set(order[:MAX_EVENT_PLOTS])
    if drawn:
        (folder / EVENT_PLOTS).mkdir(exist_ok=True)
    with open(folder / EVENTS_CSV, "w", newline="", **CSV_ENCODING) as fh:
        writer = csv.writer(fh)
        writer.writerow(EVENT_COLUMNS)
        for k, (p, e, rep) in enumerate(rows):
            times = files[p.file].times
            plot = ""
            if k in drawn:
                plot = f"{EVENT_PLOTS}/{k:06d}.png"
                _write_small_png(folder / plot, _event_picture(p, e))
            writer.writerow([csv_cell(p.name), csv_cell(times[rep[e.first]]), csv_cell(times[rep[e.last]]),
                             csv_cell(times[rep[int(np.searchsorted(p.series.time, e.peak_time))]]),
                             _number(e.peak_score), join_metrics(e.metrics), e.last - e.first + 1,
                             plot, _number(p.scored.threshold)])
    if rows:
        save_file({"embedding": _event_embeddings(parts)}, str(folder / EMBEDDINGS),
                  metadata={"embedding": "z-scored event features (see normalcy.series.runs.event_features)"})
    return len(rows)


def join_metrics(names: Sequence[str]) -> str:
    """An event's metrics as one cell of events.csv, separated by ";": a ";" or "\\" in a name is written
    escaped (``\\;``, ``\\\\``), since a metric named ``cpu;user`` was read back as two metrics, cpu and user."""
    return ";".join(csv_cell(m).replace("\\", "\\\\").replace(";", "\\;") for m in names)


def split_metrics(text: str) -> list[str]:
    """The metrics of :func:`join_metrics`'s cell (one written before names were escaped reads the same, but
    for a name holding ``\\;`` or ``\\\\``)."""
    if "\\" not in text:
        return text.split(";")
    out, cur, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and text[i + 1:i + 2] in ("\\", ";"):
            cur.append(text[i + 1])
            i += 2
            continue
        if c == ";":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return out


def small_png(rgb: np.ndarray) -> bytes:
    """A line drawing as PNG bytes, compressed (level 6: a third of write_png's fast setting, 5 ms)."""
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise ValueError("could not encode the PNG")
    return buf.tobytes()


def _write_small_png(path: Path, rgb: np.ndarray) -> None:
    path.write_bytes(small_png(rgb))


def series_scores(run_dir: Path) -> Any:
    """A series run's scores.parquet as a pyarrow table of ``id`` (the times as written), ``series`` (absent for a
    run of one series) and ``score``, rows in the run's order (strings kept in Arrow's buffers: a few bytes a row);
    None where it cannot be read (a run written without one). For events predict drew no picture of."""
    import pyarrow.parquet as pq

    try:
        key = read_run_json(Path(run_dir)).get("time_column")
        with open(Path(run_dir) / SCORES_PARQUET, "rb") as fh:  # a file: pyarrow takes no path that is not UTF-8
            table = pq.read_table(fh)
        columns = [c for c in ("series", "score") if c in table.column_names]
        return table.select([key, *columns]).rename_columns(["id", *columns])
    except Exception as err:  # noqa: BLE001  (no picture then: the caller's placeholder says so)
        logger.warning("%s: cannot read the scores to draw events (%s)", Path(run_dir) / SCORES_PARQUET, err)
        return None


def score_picture(scores: Any, event: SeriesEvent, window: int) -> np.ndarray | None:
    """The picture of an event predict drew none of (past MAX_EVENT_PLOTS), from the run's scores
    (:func:`series_scores`): its score around it over the threshold, the event shaded, as predict draws it; the
    metrics' values are not in the run. None where the scores cannot tell the event's rows (none read, its series
    not found, its start and end not ``rows`` apart: a file not in time order, or repeated times; a threshold that
    is no finite number, which predict never writes: the drawing's int() of NaN failed the request)."""
    import pyarrow.compute as pc

    from normalcy.runs.plots import event_png

    if scores is None or event.threshold is None or not math.isfinite(event.threshold):
        return None
    if "series" in scores.column_names:
        scores = scores.filter(pc.equal(scores["series"], event.series))
    ids = scores["id"]
    starts = pc.indices_nonzero(pc.equal(ids, event.start)).to_numpy()
    ends = pc.indices_nonzero(pc.equal(ids, event.end)).to_numpy()
    if len(starts) != 1 or len(ends) != 1 or ends[0] - starts[0] + 1 != event.rows:
        return None
    first, last = int(starts[0]), int(ends[0])
    pad = max(window, int(EVENT_CONTEXT * event.rows), 10)
    a, b = max(0, first - pad), min(len(ids) - 1, last + pad)
    score = scores["score"].slice(a, b - a + 1).to_numpy().astype(np.float64)
    return event_png(np.zeros((b - a + 1, 0)), [], score, event.threshold, (first - a, last - a),
                     note=["Drawn by serve from the run's scores:", "the metrics' values are not in the run."])


def _event_picture(p: SeriesRunPart, e: Any) -> np.ndarray:
    from normalcy.runs.plots import event_png

    s, sc = p.series, p.scored
    pad = max(sc.window, int(EVENT_CONTEXT * (e.last - e.first + 1)), 10)
    a, b = max(0, e.first - pad), min(len(s) - 1, e.last + pad)
    cols = [c for c in (e.metrics or sc.top)][:3]
    idx = [s.columns.index(c) for c in cols if c in s.columns]
    return event_png(s.values[a:b + 1, idx], [s.columns[j] for j in idx], sc.score[a:b + 1], sc.threshold,
                     (e.first - a, e.last - a))


def _event_embeddings(parts: Sequence[SeriesRunPart]) -> np.ndarray:
    """The events' feature vectors, one row per event in events.csv order, z-scored per column over the run.
    Series of different columns: only what does not depend on the columns (the sorted top shares and
    deviations, and the event statistics), so every row has one width."""
    feats = [p.scored.features for p in parts if len(p.scored.events)]
    if len({f.shape[1] for f in feats}) > 1 or len({p.scored.columns for p in parts}) > 1:
        def free(f: np.ndarray) -> np.ndarray:
            d = (f.shape[1] - 4) // 2
            share = -np.sort(-f[:, :d], axis=1)[:, :3]
            dev = -np.sort(-f[:, d:2 * d], axis=1)[:, :3]
            pad = lambda a: np.pad(a, ((0, 0), (0, 3 - a.shape[1])))  # noqa: E731
            return np.hstack([pad(share), pad(dev), f[:, 2 * d:]])
        feats = [free(f) for f in feats]
    X = np.vstack(feats).astype(np.float64)
    top = np.abs(X).max(axis=0)
    X /= np.where(top > 0, top, 1.0)  # the same standardised result, without overflow for values near 1e308
    std = X.std(axis=0)
    return ((X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)).astype(np.float32)


@dataclass(slots=True)
class SeriesEvent:
    """One row of a series run's events.csv (slots: serve keeps one of each event)."""

    series: str
    start: str
    end: str
    peak_time: str
    peak_score: float
    metrics: list[str]
    rows: int
    plot: str | None  # absolute path of the picture, or None
    threshold: float | None = None  # its series' threshold (None: a run written before events.csv kept it)


def read_events(run_dir: Path) -> list[SeriesEvent]:
    """A series run's events, in events.csv order; one InputError naming the file for anything unreadable.

    Read by rows, not as dicts, each cell made text for people (:func:`_shown`) only where it needs it, and each
    series' name and metrics cell worked out once: a DictReader and two conversions of every cell took 4 s of
    serve's start at 100,000 events."""
    path = Path(run_dir) / EVENTS_CSV
    if not path.is_file():
        raise InputError(f"{path}: not found (a series run written by `normalcy predict` has one)")
    out = []
    base = Path(run_dir)
    names: dict[str, str] = {}
    metrics: dict[str, list[str]] = {}  # shared by the events of one cell: nothing changes an event's list
    try:
        with open(path, newline="", **CSV_ENCODING) as fh:
            reader = csv.reader(fh)
            header = next(reader, None) or []
            missing = set(EVENT_COLUMNS[:6]) - set(header)
            if missing:
                raise InputError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
            at = {name: k for k, name in enumerate(header)}  # a repeated column: its last, as a DictReader's
            series, start, end, peak_time, peak_score, cell = (at[c] for c in EVENT_COLUMNS[:6])
            n_rows, n_plot, n_thr = (at.get(c, len(header)) for c in ("rows", "plot", "threshold"))
            width = len(header)
            for rec in reader:
                if not rec:  # a blank line, which a DictReader skipped
                    continue
                if len(rec) != width:  # a short row's missing cells empty, a long row's extra ones dropped
                    rec = (rec + [""] * width)[:width]
                rec.append("")  # the cell of a column the file lacks (rows, plot, threshold)
                try:
                    peak = float(rec[peak_score])
                    rows = int(rec[n_rows] or 0)
                    thr = float(rec[n_thr]) if rec[n_thr].strip() else None
                except ValueError:
                    raise InputError(f"{path}:{reader.line_num}: peak_score, rows and threshold must be "
                                     "numbers") from None
                plot = rec[n_plot].strip()
                name = names.get(rec[series])
                if name is None:
                    name = names[rec[series]] = _shown(rec[series])
                shown = metrics.get(rec[cell])
                if shown is None:
                    shown = metrics[rec[cell]] = [_shown(m) for m in split_metrics(rec[cell]) if m]
                drawn = str(Path(os.path.abspath(base / plot))) if plot else None
                out.append(SeriesEvent(name, _shown(rec[start]), _shown(rec[end]), _shown(rec[peak_time]), peak,
                                       list(shown), rows, drawn, thr))  # a list of its own: events are edited
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"{path}: cannot read ({err})") from None
    return out


def _shown(cell: str) -> str:
    """A cell of events.csv as people read it: :func:`_uncell`, then :func:`printable`; a plain ASCII cell, nearly
    every one, is that already."""
    return cell if cell.isascii() and not cell.startswith("'") else printable(_uncell(cell))


def read_series_items(run_dir: Path, events: list[SeriesEvent] | None = None) -> RunItems:
    """A series run's events as review items: key series|start|end, name "series: start – end", score the
    peak score over its series' threshold, all anomalous, the picture as the item's image (``overlays`` holds it).
    ``events``: :func:`read_events`' of the run, where the caller keeps them too (serve read events.csv twice).

    An event with a non-finite peak score is left out, and a repeated event keeps its first row, each with
    one warning, as a table run's rows are (read_table_items): one bad row must not stop the review."""
    path = Path(run_dir) / EVENTS_CSV
    evs = read_events(run_dir) if events is None else events
    if not evs:  # "no row reached its threshold" was said of runs whose crossings were all pruned too
        pruned = read_run_json(Path(run_dir)).get("n_pruned")
        why = (f"{pruned} crossed the threshold and were pruned as noise; fit with --prune 0 to keep them"
               if isinstance(pruned, int) and pruned > 0 else "no row reached its threshold")
        raise InputError(f"{path}: no events to review ({why})")
    finite = [math.isfinite(e.peak_score) for e in evs]
    if not all(finite):
        logger.warning("%s: %d event(s) with a non-finite peak_score left out of the review", path,
                       finite.count(False))
    if not any(finite):
        raise InputError(f"{path}: no events to review (every peak_score is NaN or infinite)")
    keys, seen, rows = [], set(), []
    for k, e in enumerate(evs):
        key = f"{e.series}|{e.start}|{e.end}"
        if key in seen or not finite[k]:
            continue
        seen.add(key)
        keys.append(key)
        rows.append(k)
    if len(rows) < sum(finite):
        logger.warning("%s: %d repeated event(s) (same series, start and end); each keeps its first row", path,
                       sum(finite) - len(rows))
    kept = [evs[k] for k in rows]
    # Ranked by peak over its series' threshold, as the report and the pictures are: a set's series have
    # thresholds of their own, and one series' 1.26x its threshold outranked another's 1.95x by raw score.
    # A run written before events.csv kept thresholds (or one that is not positive) ranks by the raw peak.
    thresholds = [e.threshold for e in kept]
    # (as does one whose peak over its threshold is too large for a float: 1e308 / 1e-308 was inf, which the
    # ranker refused, and serve did not start)
    ratio = all(t is not None and math.isfinite(t) and t > 0 and math.isfinite(e.peak_score / t)
                for e, t in zip(kept, thresholds))
    scores = [e.peak_score / t if ratio else e.peak_score for e, t in zip(kept, thresholds)]  # type: ignore[operator]
    return RunItems(keys, [f"{e.series}: {e.start} – {e.end}" for e in kept],
                    np.array(scores, np.float64), np.ones(len(kept), bool),
                    [e.plot for e in kept], np.array(rows, np.int64), len(evs))
