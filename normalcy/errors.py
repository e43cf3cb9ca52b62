"""The errors a user sees: each the CLI prints as one line, exit code 1 (ImageError: one file skipped)."""

from __future__ import annotations

import numbers
from contextlib import contextmanager
from contextvars import ContextVar
from decimal import Decimal
from pathlib import Path
from typing import Iterator, Sequence

from sklearn.exceptions import NotFittedError as SklearnNotFitted


class InputError(ValueError):
    """A user-facing problem with input (missing/empty folder, ...).

    The CLI prints ``str(err)`` as one line and exits 1, so messages must be a
    single line that names the offending path.
    """


class ImageError(Exception):
    """One file could not be read as an image.

    Kept separate from :class:`InputError` because one bad file is not fatal:
    callers skip it and report it. ``str()`` is ``"{path}: {reason}"``.
    """

    def __init__(self, path: Path | str, reason: str) -> None:
        # Pass both to Exception so the error pickles across processes.
        super().__init__(path, reason)
        self.path = Path(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class NotFittedError(RuntimeError, SklearnNotFitted):
    """A detector was used before fit() or load().

    Also scikit-learn's NotFittedError, which the vector detectors raise (they are scikit-learn estimators): one
    ``except sklearn.exceptions.NotFittedError`` catches an unfitted detector of any kind."""


SHOWN_CHARS = 100  # of a name (a series id, a file) in a message: a 10,000-character id filled screens
WHERE_CHARS = 2 * SHOWN_CHARS  # of a file and the series id in it, "FILE [host=ID]", in a message
REPR_CHARS = 60  # of a value read from a file (``files.short_repr``), in a message


def shortened(text: str, width: int = SHOWN_CHARS) -> str:
    """A name (or a value's repr: ``files.short_repr``) for a message, at most ``width`` characters: its start
    and its end kept around "…" (names told apart at either end, ``host-1…-eu-west`` and ``host-1…-us-east``,
    stay apart); files keep it whole."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def reasons(failed: Sequence[tuple[object, str]], shown: int = 5, named: bool = False) -> str:
    """Why each of several inputs failed, for the one error saying none could be used: the first ``shown``
    reasons (``named``: each after its input's name, when the reason does not name it) and how many more."""
    if not failed:
        return ""
    parts = [f"{shortened(str(where), WHERE_CHARS)}: {why}" if named and not why.startswith(f"{where}: ") else why
             for where, why in failed[:shown]]
    more = f"; and {len(failed) - shown} more" if len(failed) > shown else ""
    return f" ({'; '.join(parts)}{more})"


def fpr_out_of_range(value: object, name: str = "fpr") -> str | None:
    """The one message for a false-positive rate that is a number outside (0, 1), None for anything else. Why:
    NaN fails every comparison, so pydantic said "fpr: input should be less than 1 (got NaN)"; the range is said
    alike for nan, inf and 2, by the command line (``--fpr``) and every detector. A value that is no number is
    left to the caller's own check (which names its type)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or 0 < value < 1:
        return None
    return f"{name} must be a number between 0 and 1, both excluded (got {number_shown(value)})"


def number_shown(value: numbers.Real) -> str:
    """A number for a message as ``:g`` writes it; an int past a float's range (``10**400``) raised
    OverflowError while its own message was being built, so it is written from its exact digits."""
    try:
        return f"{float(value):g}"
    except OverflowError:
        if isinstance(value, numbers.Integral):
            exact = Decimal(int(value))
            return f"{float(exact.scaleb(-exact.adjusted())):g}e{exact.adjusted():+d}"
        return shortened(str(value), REPR_CHARS)


_cli_wording: ContextVar[bool] = ContextVar("normalcy_cli_wording", default=False)


@contextmanager
def cli_wording() -> Iterator[None]:
    """Within it (a command of the CLI) messages name a setting by its option, ``--time-budget``; outside it
    (the Python API) by its argument, ``time_budget``: ``normalcy.fit(fpr=2)`` said "--fpr must be ..."."""
    token = _cli_wording.set(True)
    try:
        yield
    finally:
        _cli_wording.reset(token)


def on_command_line() -> bool:
    """Whether messages are worded for the command line (within ``cli_wording``): for the few that say something
    other than an option's name there, as where the metrics go (printed, or returned to Python)."""
    return _cli_wording.get()


def option(name: str, metavar: str = "") -> str:
    """A setting's name in a message: ``--event-gap`` on the command line, ``event_gap`` in Python; ``metavar``
    (``DIR``) follows the option on the command line only, where it is typed."""
    if not on_command_line():
        return name
    return "--" + name.replace("_", "-") + (f" {metavar}" if metavar else "")


def setting(name: str, value: object, cli: str = "") -> str:
    """A setting given a value, in a message: ``--precision int8``, ``--follow``, ``--no-embeddings`` on the
    command line (``cli``, where its option is spelt otherwise: ``--table``); ``precision='int8'``,
    ``follow=True``, ``embeddings=False`` in Python, as each is written."""
    if not on_command_line():
        return f"{name}={value!r}"
    if cli:
        return cli
    if isinstance(value, bool):
        return option(name) if value else "--no-" + name.replace("_", "-")
    return f"{option(name)} {value}"
