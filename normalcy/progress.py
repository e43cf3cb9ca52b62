"""Progress bars on stderr, so stdout stays clean for --json; and untrusted text made safe to print there."""

from __future__ import annotations

import contextlib
import logging
import unicodedata
from typing import Iterator

from rich.console import Console, ConsoleRenderable
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from normalcy.images.io import printable

LONG_SERIES = 100_000  # rows: one series this long takes minutes to score (1e6 rows, `auto`: 5 to 9), so predict
# and eval give it a bar too, whose clock says that it is still going

# emoji=False: a file named "a:fire:.png" is shown as it is, not with a picture in place of ":fire:".
console = Console(stderr=True, emoji=False)

# Control characters (an escape sequence restyles or rewrites the terminal), invisible format characters
# (a bidi override reorders what is shown) and line or paragraph separators (a fake second line).
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp"})


def plain(value: object) -> str:
    """Untrusted text (a file name, a table id or column, an error) for a terminal, as it is but visible:
    characters that would act on the terminal instead of being shown become Python escapes (``\\x1b``,
    ``\\n``, ``\\u202e``), and a byte of a name that is not UTF-8 becomes U+FFFD (:func:`printable`)."""
    text = printable(str(value))
    if text.isprintable():
        return text
    return "".join(c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in _HIDDEN else c
                   for c in text)


def shown(value: object) -> str:
    """:func:`plain`, with Rich markup escaped too: for untrusted text inside a ``console.print`` markup
    string, so that a name like ``[/x].png`` is printed instead of failing as a closing tag, and
    ``[bold red]x`` is printed instead of styling what follows."""
    return escape(plain(value))


class PlainRichHandler(RichHandler):
    """Rich's log handler (markup off, as it is by default), with control characters in a message escaped:
    log lines carry paths and ids too."""

    def render_message(self, record: logging.LogRecord, message: str) -> ConsoleRenderable:
        return super().render_message(record, plain(message))

    def emit(self, record: logging.LogRecord) -> None:
        """On a terminal, Rich's columns; in a log file or a pipe, one line a record (as normalcy's other
        messages): Rich wrapped a warning at 80 columns and padded each part with spaces, so that grep found
        half of it."""
        if self.console.is_terminal:
            return super().emit(record)
        try:
            self.console.print(f"{record.levelname:<8} {plain(self.format(record))}", markup=False,
                               highlight=False, soft_wrap=True)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Progress]:
    """A rich progress bar on stderr; disabled bars still accept tasks and updates."""
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )
    with bar:
        yield bar
