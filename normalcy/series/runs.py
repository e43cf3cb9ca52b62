"""Series for the application layer: which inputs are series, one model or one per series, scoring files.

``normalcy fit/predict/eval/serve`` take a series wherever they take a table. What makes a file a series
(:func:`is_series_input`, the one rule, documented in the README):

1. ``--series``, ``--time-column`` or ``--series-column`` given: a series (``--table``: a table);
2. a folder holding ``train.csv`` (or ``train.parquet``), or whose sub-folders do: series folders;
3. a .csv or .parquet file with a column named timestamp, time, date or datetime (any case): a series;
4. any other .csv, .parquet or .npz file is a table; anything else, images.

Many series get one model each (:class:`SeriesSet`): the ids of ``--series-column`` in one long file, or
the sub-folders of a folder of series folders. Its folder holds a model.json listing the series and one
ordinary series model folder per series, named by :func:`folder_name` (an id that is not a safe folder
name is encoded, as run folders encode image names). Models load lazily: scoring five series of a set of
10,000 reads five models, and one damaged model loses its series only.

:func:`score_series` turns one series and its detector into what a run holds (:class:`ScoredSeries`:
scores, decisions, events and a feature vector per event for the review's re-ranking); it needs no file,
so Ray workers run it too (normalcy.scale.distributed).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import logging
import math
import os
import re
import shutil
import time
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np
from pydantic import Field, ValidationError, model_validator

from normalcy.errors import WHERE_CHARS, InputError, option, reasons, setting, shortened
from normalcy.files import (MODEL_JSON, Strict, describe, model_kind, read_json, reading, short_repr,
                             write_model_files, writing)
from normalcy.progress import plain, progress_bar
from normalcy.series import registry
from normalcy.series.base import MIN_CALIBRATION, SeriesDetector
from normalcy.series.events import Event, events, pruned
from normalcy.series.io import (
    INTERPOLATED,
    SAMPLING_RATIO,
    SERIES_SUFFIXES,
    Series,
    _natural,
    _split_file,
    is_series_folder,
    named_time,
    read_series,
    series_folders,
    unit_hint,
    untrained_folders,
    zone_note,
)
from normalcy.series.stream import HELD, Stream
from normalcy.vectors.tables import csv_layout
from normalcy.version import __version__

log = logging.getLogger("normalcy")

SET_KIND = "series_set"  # model.json "kind" of a folder of per-series models
SET_FORMAT_VERSION = 1
MAX_SERIES = 1_000_000  # series a set may hold
MAX_ID = 1000  # characters of a series id
REASON_CHARS = 300  # of why a series could not be fitted, as a set's model.json keeps it
NAME_CHARS = 80  # of a series id kept readable in its folder name
RECENT_MODELS = 4  # a set's models held after use when not kept (``SeriesSet.get``)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
SAFE_FOLDER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
EVENT_STATS = ("log_rows", "log_peak", "log_mean", "edge")  # the event features every run has


# ------------------------------------------------------------------------------------------ what is a series


def header_columns(path: Path) -> list[str] | None:
    """The column names of a CSV (its first line) or Parquet file (its schema); None when unreadable (the
    table or series reader then says why)."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        if suffix == ".csv":
            with open(path, "rb") as fh:
                line = fh.readline(1 << 20)
            delimiter, _, names = csv_layout(path, line)  # numpy.savetxt's "# time,value": time, value
            return names or next(csv.reader([line.decode("utf-8-sig", "replace")], delimiter=delimiter), [])
    except Exception:  # noqa: BLE001  (any unreadable file: not this function's to explain)
        return None
    return None


def time_column_of(columns: list[str], given: str | None) -> str | None:
    """The time column: the one given, else the first named timestamp/time/date/datetime (io.py's rule)."""
    return given if given is not None else named_time(columns)


def is_series_input(path: Path, time_column: str | None = None, series_column: str | None = None,
                    series: bool | None = None) -> bool:
    """Whether ``path`` is read as a series (the rule of this module's docstring). ``series``: the
    --series (True) / --table (False) flag, None when neither was given."""
    path = Path(path)
    if series is False:
        if time_column is not None or series_column is not None:
            raise InputError(f"{path}: {setting('series', False, cli='--table')} with {option('time_column')} or "
                             f"{option('series_column')}: a table has neither")
        return False
    if series or time_column is not None or series_column is not None:
        return True
    if path.is_dir():
        return is_series_folder(path) or _has_series_folders(path)
    if path.suffix.lower() not in SERIES_SUFFIXES:
        return False
    return time_column_of(header_columns(path) or [], None) is not None


def _has_series_folders(path: Path) -> bool:
    try:
        return any(is_series_folder(p) for p in path.iterdir() if p.is_dir())
    except OSError:
        return False


# ------------------------------------------------------------------------------------------- detector options


def detector_params(name: str, fpr: float = 0.01, seed: int = 0, window: int | None = None,
                    steps: int | None = None, time_budget: float | None = None,
                    event_gap: int | None = None, prune: float | None = None,
                    keep_glitches: bool = False, score_flags: bool = False) -> dict[str, Any]:
    """A series detector's parameters from the command line's options; one that does not apply to the
    detector (--steps for knn) is one InputError naming it."""
    if name not in registry.DETECTORS:
        raise InputError(f"unknown series detector {name!r}; choose from {', '.join(sorted(registry.DETECTORS))}")
    fields = registry.DETECTORS[name].Params.model_fields
    params: dict[str, Any] = {"fpr": fpr, "seed": seed}
    if window is not None:
        params["window"] = window
    if event_gap is not None:
        params["event_gap"] = event_gap
    if prune is not None:
        params["prune"] = prune
    if keep_glitches:
        params["mend_glitches"] = False
    if score_flags:
        params["score_flags"] = True
    if steps is not None:
        if "steps" not in fields:
            raise InputError(f"series detector {name!r} does not train: {option('steps')} does not apply")
        params["steps"] = steps
    if time_budget is not None:
        key = next((k for k in ("budget_s", "time_budget") if k in fields), None)
        if key is None:
            raise InputError(f"series detector {name!r} does not train: {option('time_budget')} does not apply")
        params[key] = time_budget
    return params


# ---------------------------------------------------------------------------------------------- series sets


def folder_name(series_id: str, taken: set[str]) -> str:
    """A safe, unique (case-insensitively) folder name for a series id: the id itself when it is one,
    else its safe characters and a hash of the id, so no id can name a path outside the model folder."""
    safe = _UNSAFE.sub("_", series_id).lstrip(".-")[:NAME_CHARS] or "series"
    name = safe
    if name != series_id or not SAFE_FOLDER.fullmatch(name) or name.casefold() in taken or _reserved(name):
        name = f"{safe}-{hashlib.sha1(series_id.encode('utf-8', 'surrogateescape')).hexdigest()[:10]}"
    k = 2
    while name.casefold() in taken:
        name, k = f"{name}-{k}", k + 1
    taken.add(name.casefold())
    return name


# names a series' folder never takes: the set's own files (an id "model.json" became a folder of that name, and
# the set's model.json could not be written: the whole fit lost), and Windows' device names (a folder "CON" or
# "aux.1" cannot be made or copied there)
_SET_FILES = {MODEL_JSON.casefold(), registry.MODEL_TENSORS.casefold()}
_DEVICES = {"con", "prn", "aux", "nul", *(f"{p}{k}" for p in ("com", "lpt") for k in range(1, 10))}


def _reserved(name: str) -> bool:
    """Whether a folder name is one a series' folder must not take (``_SET_FILES``, ``_DEVICES``)."""
    return name.casefold() in _SET_FILES or name.split(".")[0].casefold() in _DEVICES


class SetEntry(Strict):
    series: str = Field(min_length=1, max_length=MAX_ID)
    folder: str = Field(pattern=f"^{SAFE_FOLDER.pattern}$")  # pydantic searches: anchored here


class FailedEntry(Strict):
    """A series of the set that could not be fitted, and why: so predict can say why it has no model."""

    series: str = Field(min_length=1, max_length=MAX_ID)
    reason: str = Field(max_length=REASON_CHARS)


class SeriesSetMeta(Strict):
    """model.json of a set of per-series models: every field bounded, folders safe and unique."""

    kind: Literal["series_set"]
    format_version: Literal[1]
    normalcy_version: str = Field(max_length=100)
    detector: str = Field(max_length=100)
    series_column: str | None = Field(None, max_length=1000)  # None: one model per series folder
    time_column: str | None = Field(None, max_length=1000)
    models: list[SetEntry] = Field(min_length=1, max_length=MAX_SERIES)
    failed: list[FailedEntry] = Field(default_factory=list, max_length=MAX_SERIES)  # absent in older files
    created: str = Field(max_length=100)

    @model_validator(mode="after")
    def _unique(self) -> "SeriesSetMeta":
        if len({m.series for m in self.models}) != len(self.models):
            raise ValueError("models: a series is listed twice")
        if len({m.folder.casefold() for m in self.models}) != len(self.models):
            raise ValueError("models: a folder is listed twice")
        return self


@dataclass
class SeriesSet:
    """One fitted series model per series id (or series folder), loaded when first asked for."""

    name: str  # the detector
    series_column: str | None
    time_column: str | None
    folders: dict[str, str] = field(default_factory=dict)  # id -> folder name (in ``directory``)
    directory: Path | None = None  # where the models are read from (None: all in memory)
    models: dict[str, SeriesDetector] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)  # series that could not be fitted: (id, reason)
    notes: list[str] = field(default_factory=list)  # repairs of the training series, one line each
    # (what it was built from, {number or NFC text: the set's ids that are it}, {id: why it was not fitted})
    _index: tuple[tuple[Any, ...], dict[Any, list[str]], dict[str, str]] | None = field(
        default=None, init=False, repr=False, compare=False)
    # the last few models loaded with ``get(keep=False)``, for a caller that asks again soon after
    _recent: OrderedDict[str, SeriesDetector] = field(default_factory=OrderedDict, init=False, repr=False,
                                                      compare=False)

    threshold_ = None  # each series has its own

    @property
    def keys(self) -> list[str]:
        return list(self.folders) if self.directory is not None else list(self.models)

    @property
    def n_train_(self) -> int:
        return sum(m.n_train_ for m in self.models.values())

    def __contains__(self, key: str) -> bool:
        return key in self.models or key in self.folders

    def key_of(self, key: str) -> str:
        """The set's id for a series id: the id itself, else the one id of the set that is the same number (1
        and 1.0, 7 and 07: ids written as integers in one file, as floats or text in another), or the same
        text in Unicode's other form (é as one character or as e and an accent: files of two systems), else
        the id."""
        if key in self:
            return key
        same = self._alike(key)
        return same[0] if len(same) == 1 else key

    def _alike(self, key: str) -> list[str]:
        """The set's ids that are the same number as ``key``, or (not ASCII) the same NFC text. Looked up in an
        index built once: each unknown id scanned every id of the set (10,000 new hosts against a set of
        10,000: minutes)."""
        number = _id_number(key)
        if number is None and key.isascii():
            return []
        return self._indexed()[1].get(number if number is not None else _nfc(key), [])

    def _indexed(self) -> tuple[tuple[Any, ...], dict[Any, list[str]], dict[str, str]]:
        ids = self.folders if self.directory is not None else self.models
        built = (id(ids), len(ids), id(self.failed), len(self.failed))  # what the index was built from
        if self._index is None or self._index[0] != built:
            alike: dict[Any, list[str]] = {}
            for k in ids:
                number = _id_number(k)
                if number is not None or not k.isascii():
                    alike.setdefault(number if number is not None else _nfc(k), []).append(k)
            self._index = (built, alike, dict(self.failed))
        return self._index

    def alias(self, key: str) -> str:
        """Why a series id is scored by another id's model (``key_of``), as a note says it."""
        return ("the same number, written another way at fit" if _id_number(key) is not None else
                "the same text, its accents written in another Unicode form at fit")

    def missing(self, key: str) -> str:
        """Why the set has no model for a series (one line, for here and Ray): the reason it could not be
        fitted when it was one of the training series, so a predict long after the fit still says why."""
        if len(key) > MAX_ID:
            return f"no model for series {shortened(key)!r} in this set: {_too_long(key)}"
        why = self._indexed()[2].get(key)
        same = self._alike(key)[:5] if why is None and _id_number(key) is not None else []
        key = shortened(key)  # the id as a message shows it (skipped.csv's series column has it whole)
        if len(same) > 1:  # 1.0 for a set of 1 and 01: which was meant cannot be told
            return (f"no model for series {key!r} in this set: its series "
                    f"{', '.join(repr(shortened(k)) for k in same)} are all that "
                    "number; write the id as one of them")
        if why is None:
            return f"no model for series {key!r} in this set (fitted on {len(self)} series)"
        return f"no model for series {key!r} in this set: at fit it could not be fitted: {why}"

    def get(self, key: str, keep: bool = True) -> SeriesDetector:
        """The model of one series (by ``key_of``); InputError when the set has none or it cannot be loaded.
        ``keep``: hold a model read from the set's folder for later (a watch learns in it, then saves it);
        False keeps only the last RECENT_MODELS read so: a predict of 5,000 series held all 5,000 models to
        the end (670 MB against 450 MB)."""
        key = self.key_of(key)
        if key in self.models:
            return self.models[key]
        if key in self._recent:
            self._recent.move_to_end(key)
            return self._recent[key]
        if key not in self.folders or self.directory is None:
            raise InputError(self.missing(key))
        folder = self.directory / self.folders[key]
        if folder.is_symlink() and self.directory.resolve() not in folder.resolve().parents:
            # its model was read from wherever the link leads, and a watch --save wrote its model there
            raise InputError(f"{folder}: a symbolic link to a folder outside the model set, refused")
        try:
            model = registry.load(folder)
        except InputError:
            if self.folders[key] in _set_folders(self.directory):
                raise
            # a set loads its models when first used: a fit (or watch --save) saved another set over it since
            # this one was read, and its folders went with it ("not a normalcy model (no model.json)")
            raise InputError(f"{self.directory}: the model set was saved over by another process (a fit, a "
                             f"watch --save) while this one ran, and series {shortened(key)!r}'s model went with the "
                             "earlier set: run again to use the new set") from None
        if model.name != self.name:  # every series of a set is fitted by its detector (auto's members are inside)
            # a folder put there by hand or from another set: scored by a detector the run and its report never name
            raise InputError(f"{folder}: holds a {model.name} model, where the set's model.json says {self.name} "
                             "(a folder of another set?), refused")
        if keep:
            self.models[key] = model
        else:
            self._recent[key] = model
            while len(self._recent) > RECENT_MODELS:
                self._recent.popitem(last=False)
        return model

    def __len__(self) -> int:
        return len(self.folders) if self.directory is not None else len(self.models)  # not a list of every id

    def save(self, directory: str | Path) -> Path:
        """Write each series' model into a folder of its own, then model.json, then delete the earlier set's
        folders. A new model never goes into a folder an earlier one is in (names that the folder holds are
        taken), so a save that stops halfway (a full disk) leaves the earlier set as it was, loading as before,
        and deletes the folders it wrote; it needs room for both sets. (It used to remove the earlier
        model.json first: a full disk then left a folder that loaded as no model at all.) Two saves into one
        folder go one after the other: both chose the same new folders from what the folder held."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        with writing(d) as locked:
            if locked:  # under the lock, so not a live save's
                _remove_unfinished(d)
            return self._save(d, d / SET_SAVING if locked else None)

    def _save(self, d: Path, saving: Path | None) -> Path:
        before = _set_folders(d)  # the earlier set's folders: deleted once the new model.json is in place
        taken = {p.name.casefold() for p in d.iterdir()}
        entries: list[dict[str, str]] = []
        if saving is not None:  # what a save killed outright leaves is found by the next one (_remove_unfinished)
            saving.write_text("".join(f"{name}\n" for name in sorted(before)), encoding="utf-8")
        try:
            for key in self.keys:
                model = self.get(key, keep=False)  # one at a time: a set of 10,000 was loaded whole to save it
                folder = folder_name(key, taken)
                entries.append({"series": key, "folder": folder})
                if saving is not None:
                    with open(saving, "a", encoding="utf-8") as fh:
                        fh.write(f"{folder}\n")
                model.save(d / folder)
            failed = [FailedEntry(series=key, reason=short_reason(why)) for key, why in self.failed[:MAX_SERIES]
                      if 0 < len(key) <= MAX_ID and key not in self]  # a where of rows in no series is no id
            meta = SeriesSetMeta(kind=SET_KIND, format_version=SET_FORMAT_VERSION, normalcy_version=__version__,
                                 detector=self.name, series_column=self.series_column,
                                 time_column=self.time_column, models=[SetEntry(**e) for e in entries],
                                 failed=failed, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            text = meta.model_dump_json(indent=1) + "\n"
            write_model_files(d, {MODEL_JSON: lambda p: p.write_text(text)})
        except BaseException:
            for e in entries:  # this save's folders; the earlier set's are untouched
                shutil.rmtree(d / e["folder"], ignore_errors=True)
            if saving is not None:
                saving.unlink(missing_ok=True)
            raise
        if self.directory is not None and Path(self.directory).resolve() == d.resolve():  # saved over where it was read from
            self.folders = {e["series"]: e["folder"] for e in entries}
        for folder in before - {e["folder"] for e in entries}:
            shutil.rmtree(d / folder, ignore_errors=True)
        if saving is not None:
            saving.unlink(missing_ok=True)
        return d


SET_SAVING = ".series-set.saving"  # while a set is saved: the earlier set's folders and the new ones, one a line


def _remove_unfinished(d: Path) -> None:
    """Delete the series folders that a set's save killed outright (SIGKILL, the OOM killer, a stop that timed
    out during a watch's save) left: the new models it had written, or the earlier set's, once its model.json
    was in place. Never read, but each kill left up to a whole set of models, for ever. Only folders the save
    listed in SET_SAVING and the set's model.json does not name go; where model.json is no readable set's, the
    folder is left as it is."""
    saving = d / SET_SAVING
    if not saving.is_file():
        return
    try:
        names = saving.read_text(encoding="utf-8").split("\n")
        meta = SeriesSetMeta.model_validate(read_json(d / MODEL_JSON))
    except (InputError, ValidationError, OSError, UnicodeDecodeError):
        return
    kept = {e.folder for e in meta.models}
    for name in names:
        path = d / name
        if (SAFE_FOLDER.fullmatch(name) and name not in kept and path.is_dir() and not path.is_symlink()
                and _model_files_only(path)):
            shutil.rmtree(path, ignore_errors=True)
    saving.unlink(missing_ok=True)


def _model_files_only(folder: Path) -> bool:
    """Whether a folder holds a series model's files and nothing else (a save's hidden files included): a
    folder a person put there is never deleted, whatever SET_SAVING says."""
    try:
        names = [e.name for e in os.scandir(folder)]
    except OSError:
        return False
    return all(n in (MODEL_JSON, registry.MODEL_TENSORS) or _SAVE_TEMP.fullmatch(n) for n in names)


_SAVE_TEMP = re.compile(r"\.(model\.json|model\.safetensors)\.[0-9a-f]{8}\.partial(\.json|\.safetensors)")


def _set_folders(d: Path) -> set[str]:
    """The series folders of the set saved in ``d`` (none where it holds no readable set's model.json)."""
    try:
        meta = SeriesSetMeta.model_validate(read_json(d / MODEL_JSON)) if (d / MODEL_JSON).is_file() else None
    except (InputError, ValidationError, OSError):
        return set()
    return set() if meta is None else {e.folder for e in meta.models}


_ID_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)")


def _nfc(key: str) -> str:
    return unicodedata.normalize("NFC", key)


def _id_number(key: str) -> float | None:
    """A series id's number when it is written as one (digits, one point), else None."""
    return float(key) if _ID_NUMBER.fullmatch(key) else None


def _too_long(key: str) -> str:
    """Why a series whose id is longer than a set keeps has no model."""
    return f"its id is {len(key)} characters long; a set keeps ids of at most {MAX_ID}"


def short_reason(why: str) -> str:
    """A reason as a model.json keeps it: one line, control characters escaped (``plain``), at most
    REASON_CHARS characters (an error may quote a long path or value)."""
    text = plain(" ".join(why.split()))
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 3] + "..."


def is_series_model(directory: str | Path) -> bool:
    """A series model folder: one model (registry's) or a set of per-series models."""
    return model_kind(directory) in (SET_KIND, registry.SERIES_KIND)


def load_series_set(directory: str | Path) -> SeriesSet:
    """A set's model.json, checked (its models are loaded when first used, each checked by registry.load)."""
    d = Path(directory)
    path = d / MODEL_JSON
    with reading(d):  # not in the moment a save has removed model.json and not put the new one in place
        raw = read_json(path)
    if raw.get("format_version") != SET_FORMAT_VERSION or isinstance(raw.get("format_version"), bool):
        raise InputError(f"{path}: series set format version {short_repr(raw.get('format_version'))} is not supported "
                         f"(this normalcy reads version {SET_FORMAT_VERSION})")
    try:
        meta = SeriesSetMeta.model_validate(raw)
    except ValidationError as err:
        raise InputError(f"{path}: {describe(err)}") from None
    if meta.detector not in registry.DETECTORS:
        raise InputError(f"{path}: unknown series detector {meta.detector[:40]!r}")
    return SeriesSet(meta.detector, meta.series_column, meta.time_column,
                     {m.series: m.folder for m in meta.models}, d,
                     failed=[(f.series, f.reason) for f in meta.failed])


def load_series_model(directory: str | Path) -> SeriesDetector | SeriesSet:
    """A series model folder: one model, or a set."""
    d = Path(directory)
    return load_series_set(d) if model_kind(d) == SET_KIND else registry.load(d)


# ------------------------------------------------------------------------------------------------- fitting


def training_series(train: Path, time_column: str | None = None, series_column: str | None = None,
                    failed: list[tuple[str, str]] | None = None) -> tuple[list[Series], bool]:
    """The training series of a file, a series folder or a folder of them, and whether they are one per
    model (``--series-column`` or a folder of series folders) rather than one model for all. A series of
    several that cannot be used is appended to ``failed`` as (id, reason), the id a predict looks its model
    up by (rows in no series: as io.read_series names them)."""
    train = Path(train)
    if train.is_dir():
        folders, many = series_folders(train), not is_series_folder(train)
        out = []
        if many and failed is not None:  # a folder with test.csv alone was meant as one: named, not passed by
            failed += [(f.name, why) for f, why in untrained_folders(train)]
        for d in folders:
            try:
                (s,) = read_series(_split_file(d, "train"), time_column, None)  # type: ignore[arg-type]
            except InputError as err:  # one bad folder of many: named, the others fitted
                if not many or failed is None:
                    raise
                failed.append((d.name, str(err)))
                continue
            s.name = d.name
            in_folder(s, d.name)
            out.append(s)
        return out, many
    if not train.exists():
        raise InputError(f"{train}: not found")
    bad: list[tuple[str, str]] = []
    series = read_series(train, time_column, series_column, failed=None if failed is None else bad)
    for s in series:  # DIR/train.csv given as a file: named as predict names DIR/test.csv
        in_folder(s)
    if failed is not None:  # read_series names each "file [column=id]": the id alone, as fit_many names them
        where = f"{train} [{series_column}="
        failed += [(name.removeprefix(where).removesuffix("]") or name, why) for name, why in bad]
    return series, series_column is not None


FitMany = Callable[[list[Series], str, dict[str, Any]], tuple[dict[str, SeriesDetector], list[tuple[str, str]]]]


class _Repeats(logging.Filter):
    """The lines a set's fits log: each kind (its message before its numbers) once, for the first series
    that logs it and naming that series, then counted. Why: 10,000 short series each said "knn: the threshold
    rests on 8 held-out normal row(s)...", 20,000 lines that named no series."""

    def __init__(self) -> None:
        super().__init__()
        self.series = ""
        self.seen: dict[Any, list[str]] = {}  # message template -> the series that logged it

    def filter(self, record: logging.LogRecord) -> bool:
        names = self.seen.setdefault((record.levelno, str(record.msg)), [])
        names.append(self.series)
        if len(names) > 1:
            return False
        record.msg = f"series {shortened(self.series)!r}: ".replace("%", "%%") + str(record.msg)  # an id 'cpu%' is no format
        return True

    def summary(self) -> None:
        """One line for each kind logged by more than one series: how many more, the first few named."""
        for (level, _), names in self.seen.items():
            if len(names) > 1:
                more = names[1:]
                shown = ", ".join(repr(shortened(n)) for n in more[:5]) + (", ..." if len(more) > 5 else "")
                log.log(level, "... and %d more series (%s): the same as series %r", len(more), shown,
                        shortened(names[0]))


def fit_each(series: list[Series], detector: str, params: dict[str, Any], progress: bool = False
             ) -> tuple[dict[str, SeriesDetector], list[tuple[str, str]]]:
    """One model per series, in this process: (models by series name, (name, reason) for each that failed).
    ``progress``: a bar on stderr (10,000 series take minutes). What the fits log is said once a kind, naming
    the series, then counted (``_Repeats``)."""
    fitted, failed = {}, []
    with said_once() as repeats, progress_bar(progress and len(series) > 1) as bar:
        for s in bar.track(series, description="fit"):
            repeats.series = s.name
            try:
                fitted[s.name] = registry.create(detector, **params).fit(s, progress=False)
            except InputError as err:
                failed.append((s.name, str(err)))
    return fitted, failed


@contextlib.contextmanager
def said_once() -> Iterator[_Repeats]:
    """What is logged inside said once a kind, naming the series (set ``.series`` as each begins), then
    counted (``_Repeats``): fits of a set, and predict's scoring of the series of a long file."""
    repeats = _Repeats()
    log.addFilter(repeats)
    try:
        yield repeats
    finally:
        log.removeFilter(repeats)
    repeats.summary()


def _found_by_values(column: str | None) -> bool:
    """Whether a file's time column was found by its values (dates or rising numbers in a first column, epoch
    seconds named ``ts``), which ``watch`` cannot do from a header: a single model's saves it, as a set's does.
    Not a time name (found by it anyway, in a file with another time name too) nor pandas' Parquet index
    ``__index_level_0__`` (a CSV feed of the same frame has no column of that name)."""
    return column is not None and named_time([column]) is None and not column.startswith("__index_level_")


def fit_series(train: Path, detector: str, params: dict[str, Any], time_column: str | None = None,
               series_column: str | None = None, fit_many: FitMany = fit_each,
               progress: bool = True) -> SeriesDetector | SeriesSet:
    """Fit one model on a series (or on the training series of a series folder), or one model per series
    (``series_column``, a folder of series folders) with ``fit_many`` (on Ray:
    normalcy.scale.distributed.fit_series_ray). In a set, a series that cannot be fitted is named in
    ``failed`` and the others go on; none fitted is an InputError."""
    if series_column is not None and Path(train).is_dir():  # it was ignored, yet the set said "by column", and
        # predict then looked for that column in each test.csv: "no series could be scored" on the folder fitted
        raise InputError(f"{train}: {option('series_column')} names the column of a file holding many series; a series "
                         "folder is one series (a folder of them, one a folder): give a file, or leave it out")
    unusable: list[tuple[str, str]] = []
    series, per_series = training_series(train, time_column, series_column, unusable)
    notes = list(dict.fromkeys(n for s in series for n in s.notes))  # a long file's own notes: once, not a series each
    for note in notes[:20]:
        log.info(note)
    if not per_series:
        model = registry.create(detector, **params).fit(series, progress=progress)
        if time_column is not None and not train.is_dir():  # given at fit: predict reads the same column
            model.time_column = time_column
        elif not train.is_dir() and _found_by_values(series[0].time_column):
            model.time_column = series[0].time_column  # watch has no values to find it by: it numbered the rows
        return model
    long = [s for s in series if len(s.name) > MAX_ID]  # a set's model.json refused it after every fit: all lost
    if long:
        series = [s for s in series if len(s.name) <= MAX_ID]
        unusable += [(s.name, _too_long(s.name)) for s in long]
    fitted, failed = fit_many(series, detector, params) if series else ({}, [])
    failed = unusable + failed
    if not fitted:
        raise InputError(f"{train}: no series could be fitted{reasons(failed, named=True)}")
    if time_column is None and not train.is_dir():  # the one found (by name or values), so predict reads it alike
        time_column = series[0].time_column
    return SeriesSet(detector, series_column, time_column, models=fitted, failed=failed, notes=notes)


# ------------------------------------------------------------------------------------------------- scoring


@dataclass
class ScoredSeries:
    """What a run keeps of one scored series (no values: those stay with the Series)."""

    score: np.ndarray  # (n,) float64, per series row
    decision: np.ndarray  # (n,) int8
    threshold: float
    events: list[Event]
    features: np.ndarray  # (n_events, F) float32: each event's feature vector (see event_features)
    top: list[str]  # the metrics to draw: the top columns of the events, else of the whole series
    columns: tuple[str, ...]  # the model's column order
    detector: str
    window: int
    pruned: int = 0  # events that crossed the threshold and were pruned as noise (``prune``)
    blind: int = 0  # rows at its start that score 0 unjudged: for want of a past (the detector's ``blind``),
    blind_why: str = ""  # or a stream's calibration warm-up; and why, one line
    # a replay's values (the model's columns) with the missing ones held as it scored them, for its report to draw
    # instead of the series' interpolated ones (None: the series' own values were scored)
    held: np.ndarray | None = None


def score_series(det: SeriesDetector, s: Series, past: np.ndarray | None = None) -> ScoredSeries:
    """Score a series, merge its decisions into events (gap: the detector's ``gap_``), prune them (``prune``:
    Hundman et al.'s rule, events.prune) and describe each event by a feature vector for the review.
    ``past``: rows that came just before the series (raw values in the model's column order, e.g. the end of the training series a test series continues), the past its
    first rows are scored on instead of edge padding."""
    z = det.standardise(s)  # checks the columns and values
    k = 0  # rows of past scored before the series
    if past is None or not len(past) or det.context <= 1:
        det.check_scorable(len(z), str(s.source))
        res = det.score_standardised(z)
    else:
        before = det.standardise(np.asarray(past, np.float64)[-(det.context - 1):])
        det.check_scorable(len(before) + len(z), str(s.source))
        whole = det.score_standardised(np.vstack([before, z]))
        k = len(before)
        res = type(whole)(whole.score[k:], whole.contributions[k:], whole.decision[k:], whole.threshold)
    evs = events(s.time, res.score, res.decision, res.contributions, det.columns_, gap=det.gap_)
    found = [(e.first, e.last) for e in evs]
    kept, decision = pruned(res.score, res.decision, found, det.event_pruning)
    if len(kept) < len(evs):  # the pruned events' rows are decided normal: decisions and events agree
        keep = set(kept)
        evs = [e for e, span in zip(evs, found) if span in keep]
        res = type(res)(res.score, res.contributions, decision, res.threshold)
    return _scored(det, res.score, res.decision, res.threshold, evs, res.contributions, z, len(found) - len(evs), k)


def replay_series(det: SeriesDetector, s: Series, past: np.ndarray | None = None) -> ScoredSeries:
    """A series replayed as a monitoring loop runs it (``stream.Stream``, on a copy of the detector): each row
    scored from its past only, then learned, its score calibrated to [0, 1]; a row is anomalous where it
    reaches the stream's alarm level (0.3: as improbable as one normal row in a thousand). Events are those
    rows merged across the detector's gap, not pruned: a stream cannot see the rest of the series that the
    pruning compares a peak with. For series that drift after the training rows (NAB's); a long anomaly is
    learned as it goes on (docs/benchmarks.md, SKAB). A missing value is held at its column's last value, as
    ``normalcy watch`` holds it (not interpolated from the next value, a row still to come; its note says so);
    rows the reader sorted or merged (times going back, repeated) are refused: a stream scores rows as they come."""
    in_file_order(s)
    stream = Stream(copy.deepcopy(det), past=past, resume=False)  # it learns: the model itself stays as fitted
    held = _held(stream, s)
    z = det.standardise(held)  # checks the columns and values
    k = 0 if past is None else min(len(past), det.context - 1)  # rows of past the stream starts with
    det.check_scorable(len(z) + k, str(s.source))
    if not stream.auto and len(z) <= MIN_CALIBRATION:  # its warm-up would be the whole series, every score 0
        raise InputError(f"{s.source}: {len(z)} row(s), but a stream of {det.name} ({setting('stream', True)}) "
                         f"learns its calibration on its first {MIN_CALIBRATION} rows, which score 0: no row could be "
                         f"scored; give more rows, or score it without {setting('stream', True)}")
    warm = 0 if stream.auto else MIN_CALIBRATION  # a plain detector's fresh stream scores these 0 (warm-up)
    out = stream.run_standardised(z)  # z: the rows stream.run would standardise (finite: a series is tidied)
    decision = (out.score >= stream.alarm_level).astype(np.int8)
    evs = events(s.time, out.score, decision, out.contributions, det.columns_, gap=det.gap_)
    scored = _scored(det, out.score, decision, stream.alarm_level, evs, out.contributions, z, 0, k)
    if warm > scored.blind:
        scored.blind = min(len(z), warm)
        scored.blind_why = f"a stream of {det.name} learns its score calibration on its first {warm} rows"
    if held is not s:
        scored.held = held.values
    return scored


def in_file_order(s: Series) -> None:
    """InputError where the reader sorted a series' rows by time or merged the rows of a repeated time (a file's
    ``row_of``): a stream scores rows in the order they come, each a row of its own (``normalcy watch`` says
    such rows and scores them so), and cannot put a row before one it has already scored."""
    rows = s.row_of
    if rows is None or (len(rows) == len(s) and (np.diff(rows) == 1).all()):
        return
    steps = np.diff(rows)
    back, repeated = int((steps < 0).sum()), len(rows) - len(s)
    said = [f"{n} row(s) {what}" for n, what in ((back, "whose time goes back"), (repeated, "repeating a time"))
            if n]
    first = int(np.asarray(s.file_rows)[np.flatnonzero(steps < 1)[0] + 1]) + 1  # as the reader's note numbers rows
    raise InputError(f"{s.source}: {' and '.join(said)} (the first: row {first}); a stream scores rows in the order "
                     "they come, each its own, and cannot sort them by rows still to come: sort the file with one "
                     f"row a time, or score it without {option('stream')}")


def _held(stream: Stream, s: Series) -> Series:
    """The series (in the model's columns) with the values the reader interpolated held instead, as ``stream``
    holds a missing value (``Stream.held``): interpolation reads the next value, a row a stream has not seen.
    Its note of them says so (the reader's said "interpolated", at read time)."""
    if s.missing is None:
        return s
    s.notes[:] = [n.replace(INTERPOLATED, HELD) for n in s.notes]
    gappy = stream.det.model_values(replace(s, values=np.where(s.missing, np.nan, s.values)))
    return replace(s, values=stream.held(gappy), columns=tuple(stream.det.columns_), missing=None)


def _scored(det: SeriesDetector, score: np.ndarray, decision: np.ndarray, threshold: float, evs: list[Event],
            contrib: np.ndarray, z: np.ndarray, pruned: int, past: int) -> ScoredSeries:
    """What a run keeps of a scored series: with each event's features and the metrics to draw (``past``:
    the rows of its past it was scored after, which shorten its unjudged start)."""
    feats = event_features(evs, score, contrib, z, threshold, len(score), decision)
    # as each event's metrics (events.events): the anomalous rows' contributions, not those of the rows between
    total = contrib[np.asarray(decision) != 0].sum(axis=0) if evs else contrib.sum(axis=0)
    top = [det.columns_[j] for j in np.argsort(-total, kind="stable")[:3]]
    why = (f"{det.name} scores a row only after {det.blind} row(s) of its past (window {det.window_}; a smaller "
           f"{option('window')} shortens it)")
    return ScoredSeries(score, decision, threshold, evs, feats, top, tuple(det.columns_), det.name, det.window_,
                        pruned, min(len(score), max(0, det.blind - past)), why)


def say_blind(scored: Sequence[tuple[str, ScoredSeries]], shown: int = 5) -> int:
    """One line each (INFO; at most ``shown``, then a count) for the series whose first rows scored 0 unjudged:
    autoencoder, hypad and forecast judge a row only from a whole window of its past, and a plain detector's
    stream (``--stream``) calibrates on its first rows; those rows passed as normal without a word. Returns the
    unjudged rows in all."""
    blind = [(where, r) for where, r in scored if r.blind]
    for where, r in blind[:shown]:
        log.info("%s: the first %d row(s) score 0, not judged: %s", shortened(where, WHERE_CHARS), r.blind,
                 r.blind_why)
    if len(blind) > shown:
        log.info("... and %d more series whose first rows score 0, not judged (%d rows in all)", len(blind) - shown,
                 sum(r.blind for _, r in blind))
    return sum(r.blind for _, r in blind)


def event_features(evs: list[Event], score: np.ndarray, contrib: np.ndarray, z: np.ndarray, threshold: float,
                   n: int, decision: np.ndarray | None = None) -> np.ndarray:
    """One vector per event, for the review's re-ranking (a person's labels teach it which events are
    interesting): each metric's share of the contributions of the event's anomalous rows (``decision``; as
    its metrics are named: the rows between them add only noise), each metric's largest deviation in
    the event (log of 1 + |z|, standardised by the model), and EVENT_STATS: log rows, log peak/threshold,
    log mean/threshold, and whether the event touches the series' first or last row."""
    d = contrib.shape[1]
    out = np.zeros((len(evs), 2 * d + len(EVENT_STATS)), np.float32)
    thr = max(threshold, 1e-12)
    for k, e in enumerate(evs):
        part = contrib[e.first:e.last + 1]
        if decision is not None:
            part = part[np.asarray(decision[e.first:e.last + 1]) != 0]
        part = part.sum(axis=0)
        out[k, :d] = part / max(float(part.sum()), 1e-12)
        out[k, d:2 * d] = np.log1p(np.minimum(np.abs(z[e.first:e.last + 1]).max(axis=0), 1e6))
        out[k, 2 * d:] = (math.log1p(e.last - e.first + 1), math.log(max(e.peak_score, 1e-12) / thr),
                          math.log(max(float(score[e.first:e.last + 1].mean()), 1e-12) / thr),
                          float(e.first == 0 or e.last == n - 1))
    return out


# ------------------------------------------------------------------------------------------- predict inputs


@dataclass
class SeriesFile:
    """One input file of a series run: its series (repaired and noted by io.py) and its time texts."""

    path: Path
    key: str  # the model key of its series when it has one (folder or stem), see series_key
    series: list[Series]
    times: list[str]  # the time column's text of each data row, as written (row numbers without one)
    time_column: str | None
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file [column=id], reason): series left out


def series_key(path: Path) -> str:
    """The key a file's series is known by when no series column names it: its series folder's name for
    DIR/train.csv and DIR/test.csv (as read_series_folder names them), else the file's stem."""
    return path.parent.name if path.stem in ("train", "test") and path.parent.name else path.stem


def predict_files(inputs: list[Path]) -> list[Path | tuple[str, str]]:
    """The files a series run scores: files as given, a folder's own test file (a series folder's; scoring
    needs no train.csv), each test file of a folder of series folders (sorted). A folder without any is
    (folder, reason) in its place: one such input never stops the others."""
    out: list[Path | tuple[str, str]] = []
    for p in inputs:
        if not p.is_dir():
            out.append(p)
            continue
        own = _split_file(p, "test")
        subs = sorted((d for d in p.iterdir() if d.is_dir()), key=_natural) if own is None else []
        found = [own] if own is not None else [f for f in (_split_file(d, "test") for d in subs) if f is not None]
        if found:
            out.extend(found)
        else:
            out.append((str(p), f"{p}: no test.csv or test.parquet to score in it or in its sub-folders"))
    return out


def read_series_file(path: Path, time_column: str | None, series_column: str | None,
                     keep: tuple[Sequence[str], str] | None = None) -> SeriesFile:
    """A file to score: its series and the time text of each row (``keep``: see ``read_series``). One
    InputError naming the file when it cannot be read."""
    failed: list[tuple[str, str]] = []
    series = read_series(path, time_column, series_column, failed=failed, keep=keep, drawn_labels=True)
    tcol = series[0].time_column  # the one given, or found by read_series
    key = series_key(path)
    if series_column is None:
        series[0].name = key
    n = max(int(s.file_rows.max()) + 1 for s in series if s.file_rows is not None and len(s.file_rows))
    return SeriesFile(path, key, series, time_texts(path, tcol, n), tcol, failed)


def in_folder(s: Series, folder: str | None = None) -> None:
    """The notes of a series folder's file (DIR/test.csv) named by its folder, ``omi-1/test.csv: ...`` as eval
    names them: fit and predict of twelve series folders said "test.csv: constant column(s) ['m2'] kept"
    twelve times, naming none. ``folder``: the folder's name (None: the one ``series_key`` finds, if any)."""
    path = Path(s.source)
    folder = folder if folder is not None else series_key(path)
    if folder == path.stem:  # a file of its own: its name says which
        return
    s.notes = [f"{folder}/{n}" if n.startswith((f"{path.name}:", f"{path.name} [")) else n for n in s.notes]


def time_texts(path: Path, column: str | None, n: int) -> list[str]:
    """The time column of a file as its text (a CSV's exactly as written; a Parquet date in ISO 8601), or
    the row numbers 0..n-1 when there is no time column."""
    if column is None:
        return [str(i) for i in range(n)]
    import pyarrow as pa

    try:
        if path.suffix.lower() == ".csv":
            import pyarrow.csv as pcsv

            with open(path, "rb") as fh:
                header = fh.readline(64 << 20)
            delimiter, skip, names = csv_layout(path, header)  # as the series reader read it
            table = pcsv.read_csv(path, read_options=pcsv.ReadOptions(block_size=max(1 << 20, 4 * len(header)),
                                                                      skip_rows=skip, column_names=names),
                                  parse_options=pcsv.ParseOptions(delimiter=delimiter, invalid_row_handler=(
                                      (lambda row: "skip" if row.text.startswith("#") else "error") if skip
                                      else None)),  # numpy.savetxt's footer, a comment
                                  convert_options=pcsv.ConvertOptions(include_columns=[column],
                                                                      column_types={column: pa.string()}))
            values = table.column(column).to_pylist()
        else:
            import pyarrow.parquet as pq

            with open(path, "rb") as fh:  # ParquetFile: see vectors.tables._read_arrays (an aborted exit)
                col = pq.ParquetFile(fh, pre_buffer=False).read(columns=[column], use_threads=False).column(0)
            values = iso_texts(col.to_pylist())
    except Exception as err:  # noqa: BLE001  (read once already by io.py: a change since, one line)
        raise InputError(f"{path}: cannot read the time column {column!r} ({' '.join(str(err).split())[:200]})") from None
    return ["" if v is None else str(v) for v in values]


def iso_texts(values: list[Any]) -> list[Any]:
    """Parquet dates as ISO 8601 text, sub-second digits alike in every row: ``isoformat`` leaves them out of a
    time on the whole second, so 0.1 s rows were written 00:00:29.900000, 00:00:30, 00:00:30.100000."""
    micro = {v.microsecond for v in values if hasattr(v, "microsecond")}
    spec = "auto" if micro <= {0} else "milliseconds" if all(m % 1000 == 0 for m in micro) else "microseconds"
    if any(getattr(v, "nanosecond", 0) for v in values):  # pandas' nanoseconds: written as isoformat writes them
        spec = "auto"
    return [v.isoformat(timespec=spec) if hasattr(v, "isoformat") and hasattr(v, "microsecond")
            else v.isoformat() if hasattr(v, "isoformat") else v for v in values]


def iter_series_files(inputs: list[Path], time_column: str | None, series_column: str | None,
                      keep: tuple[Sequence[str], str] | None = None) -> Iterator[SeriesFile | tuple[str, str]]:
    """Each input file read (a SeriesFile), or (file, reason) for one that cannot be: one bad file never
    stops the others."""
    for path in predict_files(inputs):
        if isinstance(path, tuple):
            yield path
            continue
        try:
            yield read_series_file(path, time_column, series_column, keep)
        except InputError as err:
            yield str(path), str(err)


def model_columns(det: SeriesDetector, s: Series, time_column: str | None) -> Series:
    """The series with the model's columns, in its order (``Series.only``): a column missing is an error
    naming the file; one the model lacks is left out with a note, with a hint when it may be an unnamed
    time column."""
    return s.only(det.columns_, "the model", time_hint(time_column), known=det.flags_)


def sampling_note(det: SeriesDetector, s: Series, where: str) -> str | None:
    """A line when a series to score is sampled at another interval than the model's training rows (median
    steps SAMPLING_RATIO apart or more), None otherwise or where either has no time column (a model saved
    before it kept its interval). Windows count rows: a model of 1-minute rows scoring 5-minute rows sees each
    pattern five times faster than it learned it, and its scores mean something else. ``where``: the series
    as the line names it (its file, and its id)."""
    fitted = getattr(det, "interval_s", None)
    if fitted is None or s.time_column is None or len(s) < 2:
        return None
    step = float(np.median(np.diff(s.time)))
    if not math.isfinite(step) or step <= 0 or max(step, fitted) < SAMPLING_RATIO * min(step, fitted):
        return None
    return (f"{where}: a row every {step:g} s, the model's training rows one every {fitted:g} s: windows count "
            "rows, so its patterns are seen at another speed than they were learned; resample it to the training "
            f"interval (scored as it is){unit_hint(step, fitted)}")


def zone_of_model_note(det: SeriesDetector, s: Series, where: str) -> str | None:
    """A line when a series to score has dates with a zone and the model's training rows dates without one, or
    the other way round (``io.zone_note``); None otherwise, or where either has no dates (a model saved before it
    kept this)."""
    fitted = getattr(det, "zoned", None)
    if fitted is None or s.zoned is None:
        return None
    return zone_note(where, s.zoned, "the model's training rows", fitted)


def time_hint(time_column: str | None) -> str:
    """What follows a note of columns left out when no time column was named: one may be an unnamed time."""
    return f" (if one is the time, give {option('time_column')})" if time_column is None else ""
