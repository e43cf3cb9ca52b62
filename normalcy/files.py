"""Reading a model folder's files as untrusted data: one checked way for image and vector models alike.

A model folder can come from anywhere (a colleague, a download, a shared drive), so every file of it is
opened by ``model_file``: a regular file only (a FIFO would block forever, ``/dev/zero`` never ends), inside
the folder (a symbolic link out of it is refused before anything of its target is read), and under a size
cap. Every problem is one ``InputError`` line that names the file, never a traceback. Image models
(``detectors/modelfile.py``), vector models (``vectors/tables.py``), ONNX exports and Ray all read through it.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from normalcy.errors import InputError

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
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise InputError(f"{path}: not a regular file")
            data = f.read(max_bytes + 1)
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    if len(data) > max_bytes:
        raise InputError(f"{path}: too large for a model file (over {max_bytes} bytes)")
    return data


def read_json(path: Path) -> dict[str, Any]:
    """A model folder's JSON file as a dict (see ``model_file``); every problem is one InputError line."""
    data = read_model_file(path, MAX_JSON_BYTES)
    try:
        raw = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: cannot read ({err})") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: invalid JSON ({err})") from None
    except RecursionError:
        raise InputError(f"{path}: invalid JSON (nested too deeply)") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    return raw


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
                msg += f" (got {_short(e.get('input'))})"
        parts.append(f"{loc}: {msg}" if loc else msg)
    more = err.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _short(value: Any) -> str:
    text = "NaN" if isinstance(value, float) and math.isnan(value) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def one_line(err: BaseException) -> str:
    """An exception's message squeezed onto one line (torch's load_state_dict errors span many)."""
    text = " ".join(str(err).split())
    return text if len(text) <= 300 else text[:297] + "..."
