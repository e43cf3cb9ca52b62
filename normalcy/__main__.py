"""The ``normalcy`` command (and ``python -m normalcy``): the command line of ``normalcy.cli``, started so that
a Ctrl-C while it imports torch and scikit-learn (seconds) is one line and exit code 130, as a Ctrl-C later is,
not Python's traceback."""

import contextlib
import os
import signal
import sys
from typing import Any, Iterator


def main() -> None:
    with _interrupt_exits():
        from normalcy.cli import app
    app()


@contextlib.contextmanager
def _interrupt_exits() -> Iterator[None]:
    """While the command's modules import, a Ctrl-C ends the process at once: `error: interrupted`, exit code 130.
    Why not a KeyboardInterrupt: raised inside numpy's or torch's extension modules as they initialise, it came
    out as an ImportError, a RecursionError or a C++ abort ("terminate called after throwing an instance of
    'pybind11::error_already_set'", a core dump), and code that catches everything could lose it, the command
    going on. Nothing is written while importing, so there is nothing to clean up. A Ctrl-C that the shell has
    this process ignore (a background job) stays ignored."""
    try:
        ours = signal.getsignal(signal.SIGINT) is signal.default_int_handler
        before = signal.signal(signal.SIGINT, _exit_interrupted) if ours else None
    except ValueError:  # not the main thread (main() called from another program's thread): as Python does it
        before = None
    try:
        yield
    except KeyboardInterrupt:  # a Ctrl-C just before the handler was in place, or outside the main thread
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        if before is not None:
            signal.signal(signal.SIGINT, before)


def _exit_interrupted(signum: int, frame: Any) -> None:
    with contextlib.suppress(OSError):
        os.write(2, b"error: interrupted\n")
    os._exit(130)


if __name__ == "__main__":
    main()
