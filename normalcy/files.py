"""Reading a model folder's files as untrusted data: one checked way for image and vector models alike.

A model folder can come from anywhere (a colleague, a download, a shared drive), so every file of it is
opened by ``model_file``: a regular file only (a FIFO would block forever, ``/dev/zero`` never ends), inside
the folder (a symbolic link out of it is refused before anything of its target is read), and under a size
cap. Every problem is one ``InputError`` line that names the file, never a traceback. Image models
(``detectors/modelfile.py``), vector models (``vectors/tables.py``), ONNX exports and Ray all read through it.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
import shutil
import stat
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from pydantic import BaseModel, ConfigDict, ValidationError

from normalcy.errors import REPR_CHARS, InputError, shortened

MODEL_JSON = "model.json"
MAX_JSON_BYTES = 16 * 2**20  # a real model.json is a few kB; a huge one is not a model
MAX_STATE_BYTES = 16 * 2**30  # tensors or a fitted estimator: far above any model normalcy fits, below a bomb


class Strict(BaseModel):
    """A model file's schema. strict: "64" is not an image size and true is not a count; forbid: a typo is an
    error."""

    model_config = ConfigDict(extra="forbid", strict=True)


def model_file(path: Path, max_bytes: int) -> Path:
    """The real path of a model folder's file, checked before anything reads it.

    Refused, each with one line naming ``path``: a missing file, a symbolic link that leads out of the
    model folder (its target is not named: it may be a file the model's author wants a glimpse of), a
    FIFO, device or folder, and a file over ``max_bytes``.
    """
    folder = path.parent.resolve()
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        raise InputError(f"{path}: missing" + (" (a broken symbolic link)" if path.is_symlink() else "")) from None
    except (OSError, RuntimeError) as err:  # a symlink loop, a permission problem
        raise InputError(f"{path}: cannot read ({one_line(err)})") from None
    if folder not in real.parents:
        raise InputError(f"{path}: a symbolic link to a file outside the model folder, refused")
    try:
        info = os.stat(real)
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{path}: not a regular file")
    if info.st_size > max_bytes:
        raise InputError(f"{path}: {info.st_size} bytes is too large for a model file (at most {max_bytes})")
    return real


def read_model_file(path: Path, max_bytes: int) -> bytes:
    """A model folder's file (see ``model_file``), read whole, never more than ``max_bytes``."""
    real = model_file(path, max_bytes)
    try:  # O_NONBLOCK and O_NOFOLLOW: a file swapped for a FIFO or a link since the check blocks nothing
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise InputError(f"{path}: not a regular file")
            # read(n) allocates n bytes before reading: n = max_bytes + 1 asked for 16 GiB for every 1 kB
            # model.skops, a MemoryError wherever memory is capped (ulimit -v, a small machine without overcommit)
            data = f.read(min(info.st_size, max_bytes) + 1)
            while len(data) <= max_bytes:  # a file that grew since, or a file system that gives no size: read on
                more = f.read(min(2**24, max_bytes + 1 - len(data)))
                if not more:
                    break
                data += more
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    if len(data) > max_bytes:
        raise InputError(f"{path}: too large for a model file (over {max_bytes} bytes)")
    return data


def resolved(path: str | Path) -> Path:
    """``Path(path).resolve()``, a symbolic link loop as one InputError line naming ``path``: pathlib raises
    RuntimeError for one, which came out of fit -o, predict MODEL and predict -o as a traceback."""
    try:
        return Path(path).resolve()
    except RuntimeError:
        raise InputError(f"{path}: a symbolic link loop (it leads back to itself)") from None


def no_model_json(d: Path) -> InputError:
    """The error for a model path without model.json in it: given model/model.json (or its tensors), it said
    "model/model.json: not a normalcy model (no model.json)"; it now names the folder to give. So it said of a
    path that does not exist, and of an exported model.onnx given to `export` (it takes the model folder)."""
    if d.is_file() and os.path.lexists(d.parent / MODEL_JSON):
        return InputError(f"{d}: a model is the folder holding {MODEL_JSON} and its files: give {d.parent}")
    if not os.path.lexists(d):
        return InputError(f"{d}: not a normalcy model: no such file or folder")
    if d.is_file() and d.suffix.lower() == ".onnx":
        return InputError(f"{d}: an exported ONNX model, not a model folder: give the folder `normalcy fit` wrote "
                          "(predict and normalcy.load take the .onnx)")
    return InputError(f"{d}: not a normalcy model (no {MODEL_JSON})")


def file_in_the_way(path: Path) -> Path | None:
    """The nearest of ``path``'s folders that exists, where it is a file (``-o model.onnx/x.onnx``), else None:
    making the folders below it said only "File exists" or "Not a directory"."""
    existing = next((p for p in Path(os.path.abspath(path)).parents if p.exists()), None)
    return existing if existing is not None and not existing.is_dir() else None


def read_json(path: Path) -> dict[str, Any]:
    """A model folder's JSON file as a dict (see ``model_file``); every problem is one InputError line."""
    data = read_model_file(path, MAX_JSON_BYTES)
    try:  # utf-8-sig: a model.json edited in Notepad starts with a byte order mark, which JSON refuses
        raw = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: cannot read ({err})") from None
    except json.JSONDecodeError as err:
        # a model.json edited by hand: Python's message for a trailing comma does not name it
        comma = err.doc[:err.pos].rstrip().endswith(",") and err.doc[err.pos:err.pos + 1] in ("}", "]")
        hint = "; a trailing comma before it, which JSON does not allow" if comma else ""
        raise InputError(f"{path}: invalid JSON ({err}{hint})") from None
    except RecursionError:
        raise InputError(f"{path}: invalid JSON (nested too deeply)") from None
    except ValueError as err:  # an integer of over 4300 digits: Python's own limit, a ValueError and a traceback
        raise InputError(f"{path}: invalid JSON ({one_line(err)[:200]})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    return raw


def write_model_files(directory: str | Path, writers: dict[str, Callable[[Path], Any]]) -> Path:
    """Write a model folder's files (``writers``: file name -> a function writing it to the path given) so
    that a failure never leaves a model that loads as another: a full disk or a Ctrl-C while one was written
    left the earlier model.json beside new tensors (or a half set of series models), which loaded as a model
    neither fit made. Each file is written under a hidden name in the folder first, the earlier model.json
    is then removed, the files renamed into place and model.json last. A failure while writing leaves the
    earlier model as it was; one among the renames leaves no model.json, which loading names. Two saves into
    one folder at once go one after the other (a lock on the folder, held for the whole save): the last is
    kept whole, never one's tensors with the other's model.json. Hidden files a killed save left are deleted
    first (see ``_remove_stale_temps``)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    names = sorted(writers, key=lambda n: n == MODEL_JSON)  # model.json last
    temps: dict[str, Path] = {}
    with _locked(d) as locked:  # the whole save: a hidden file found under the lock is no live save's
        if locked:
            _remove_stale_temps(d, names)
        try:
            for name in names:  # a name of its own (not mkstemp's: its files are private), the suffix skops wants
                temps[name] = d / f".{name}.{secrets.token_hex(4)}{STAGING}{Path(name).suffix}"
                writers[name](temps[name])
            if os.path.lexists(d / MODEL_JSON):
                os.unlink(d / MODEL_JSON)
            for name in names:
                os.replace(temps[name], d / name)
        finally:
            for t in temps.values():
                if os.path.lexists(t):
                    os.unlink(t)
    return d


STAGING = ".partial"  # a file being saved is named .NAME.<8 hex>.partial<NAME's suffix> until it is complete
MODEL_FILES = (MODEL_JSON, "model.safetensors", "model.skops")  # every kind's: a folder re-fitted as another


def _remove_stale_temps(d: Path, names: list[str]) -> None:
    """Delete the hidden files of saves into ``d`` that a killed process (SIGKILL, a power cut) left behind:
    they were never read, but each held a whole model's tensors, and every later kill added one. Called under
    the folder's lock, which every save holds while it writes, so none is a live save's."""
    pattern = re.compile(r"\.(.+)\.[0-9a-f]{8}" + re.escape(STAGING) + r"(\.[^.]*)?")
    try:
        entries = list(os.scandir(d))
    except OSError:
        return
    for e in entries:
        found = pattern.fullmatch(e.name)
        if found and found.group(1) in {*MODEL_FILES, *names} and e.is_file(follow_symlinks=False):
            try:
                os.unlink(e.path)
            except OSError:  # another's file, a read-only folder: the save says what matters
                pass


_MINE = threading.local()  # the folders this thread holds locked: a save within a save (a series set's) is one


@contextmanager
def _locked(folder: Path, shared: bool = False) -> Iterator[bool]:
    """A lock on a folder (flock on the folder itself: no lock file), where the platform has one: exclusive for
    a save, ``shared`` for a load, so a load waits for a save and a save for the loads; yields whether it is
    held. A folder this thread already holds is not locked again (a second flock of its own would wait for
    ever)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield False
        return
    held = _MINE.__dict__.setdefault("folders", set())
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_DIRECTORY", 0))  # a folder only
        key = (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
    except OSError:  # a missing folder or one that cannot be read: what reads or writes it names the problem
        fd, key = -1, None
    if fd < 0 or key in held:
        if fd >= 0:
            os.close(fd)
        yield fd >= 0
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            got = True
        except OSError:  # a file system without locks (an NFS mount with nolock: ENOLCK): as where there is no flock
            got = False
        if got:
            held.add(key)
        try:
            yield got
        finally:
            held.discard(key)
    finally:
        os.close(fd)  # releases the lock


def reading(folder: str | Path) -> Any:
    """A model folder held while its files are read (model.json, then its tensors): another process's save puts
    new files in place one by one, and a load between two of them read the earlier model.json with the new
    tensors (a model neither fit made) or no model.json at all. The save waits for the load, the load for a
    save. A context manager."""
    return _locked(Path(folder), shared=True)


def model_kind(directory: str | Path) -> str | None:
    """The ``kind`` a folder's model.json names; None for no model.json, or one that cannot be read safely (a
    FIFO, a link out of the folder, too large, bad JSON: the loaders then name why). Read under ``reading``:
    not in the moment a save has removed model.json and not yet put the new one in place."""
    path = Path(directory) / MODEL_JSON
    with reading(directory):
        if not os.path.lexists(path):
            return None
        try:
            kind = read_json(path).get("kind")
        except InputError:
            return None
    return kind if isinstance(kind, str) else None


def writing(folder: str | Path) -> Any:
    """A folder held for a change made of several steps: a series set's save (its models' folders, then
    model.json, then the earlier set's folders deleted), so two at once do not choose the same new folders; the
    renames that put a run in place (in the folder holding it). A context manager; ``write_model_files`` within
    it takes it as its own."""
    return _locked(Path(folder))


_HELD: dict[Path, int] = {}  # hidden files and folders this process is writing -> the open one holding its lock


def hold(path: Path) -> None:
    """Lock a hidden file or folder this process writes a result into (flock on it: released when the process
    ends, however it ends) until ``release``: a later run then tells a live one from one a killed run left."""
    try:
        import fcntl
    except ImportError:  # Windows: nothing is held, and nothing is ever taken for stale (remove_if_stale)
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fresh and ours: nobody else has a reason to hold it
    except OSError:  # a file system without locks (ENOLCK): remove_if_stale cannot lock it either, and keeps it
        os.close(fd)
        return
    _HELD[path] = fd


def release(path: Path) -> None:
    """Unlock what ``hold`` locked (nothing if it did not)."""
    fd = _HELD.pop(path, None)
    if fd is not None:
        os.close(fd)


def remove_if_stale(path: Path) -> bool:
    """Delete a hidden file or folder that a killed process was writing into (SIGKILL, the OOM killer, a power
    cut: no ``finally`` ran): one whose lock (``hold``) nobody holds. A live one's is held, and it is kept, as
    is everything where the platform has no flock. Returns whether it was deleted."""
    try:
        import fcntl
    except ImportError:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held: a live one's
        os.close(fd)
        return False
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def check_writable(folder: Path, named: str | Path, what: str) -> None:
    """Refuse, before the work, a ``folder`` that ``what`` (named ``named``) could not be written into: a file is
    made there and removed, tried rather than asked (os.access says yes to root on a read-only mount or /proc);
    the error had come as a traceback after the fit or the scoring."""
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        raise InputError(f"{named}: cannot write {what} there ({err.strerror or err})") from None


def save_model(model: Any, directory: str | Path) -> None:
    """``model.save(directory)``, a failure to write (a full disk, a folder made read-only meanwhile) as one
    InputError line rather than a traceback after the work (fit, hours of watch)."""
    from safetensors import SafetensorError

    earlier = os.path.lexists(Path(directory) / MODEL_JSON)
    try:
        model.save(directory)
    except (OSError, SafetensorError) as err:
        # a save writes the new files beside the earlier model's before it replaces them: a full disk said only
        # "No space left on device" of a disk with room for the model (a series set too: its new models go into
        # folders of their own, model.json last)
        kept = earlier and no_space(err) and os.path.lexists(Path(directory) / MODEL_JSON)
        why = ("; the earlier model there is kept as it was: a save writes the new model beside it before "
               "replacing it, so it needs room for both") if kept else ""
        raise InputError(f"{directory}: cannot write the model ({write_error(err)}){why}") from None


def no_space(err: BaseException) -> bool:
    """Whether a write failed for want of room (a full disk, a quota), safetensors' wrapped error included."""
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    found = re.search(r"\(os error (\d+)\)", str(err))
    return found is not None and int(found.group(1)) in (errno.ENOSPC, errno.EDQUOT)


def write_error(err: BaseException) -> str:
    """Why a file could not be written, in a few words: an OSError's strerror (No space left on device), else
    the message on one line (safetensors wraps the OSError in its own error)."""
    found = re.search(r"I/O error: (.+?) \(os error \d+\)", str(err))  # safetensors: "... I/O error: No space ..."
    return getattr(err, "strerror", None) or (found.group(1) if found else one_line(err))


def describe(err: ValidationError) -> str:
    """Pydantic's errors as one line: 'field.path: problem', the first few of them."""
    parts = []
    for e in err.errors()[:3]:
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "missing":
            msg = "missing"
        elif e["type"] == "extra_forbidden":
            msg = "unknown key (a typo, or a model from a newer normalcy?)"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            msg = msg[0].lower() + msg[1:] if msg else msg
            if "(got " not in msg:
                msg += f" (got {short_repr(e.get('input'))})"
        parts.append(f"{loc}: {msg}" if loc else msg)
    more = err.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def short_repr(value: Any) -> str:
    """A value read from a file, for a message: at most ``REPR_CHARS`` characters (a crafted 1 MB string is not
    echoed), cut as ``shortened`` cuts a name, so a long string's closing quote shows where it ends."""
    return shortened("NaN" if isinstance(value, float) and math.isnan(value) else repr(value), REPR_CHARS)


def one_line(err: BaseException) -> str:
    """An exception's message squeezed onto one line (torch's load_state_dict errors span many)."""
    text = " ".join(str(err).split())
    return text if len(text) <= 300 else text[:297] + "..."
