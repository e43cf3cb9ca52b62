"""The ``normalcy`` command (and ``python -m normalcy``): the command line of ``normalcy.cli``, started so that
a Ctrl-C while it imports torch and scikit-learn (seconds) is one line and exit code 130, as a Ctrl-C later is,
not Python's traceback."""

import sys


def main() -> None:
    try:
        from normalcy.cli import app
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    app()


if __name__ == "__main__":
    main()
