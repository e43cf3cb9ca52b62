"""numerics"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def threads(get: Callable[[], int], set_: Callable[[int], None], n: int) -> Iterator[None]:
    """``set_(n)`` for the block, then the caller's count back: torch's and faiss's thread counts are process-wide
    settings, and a detector that needs one thread for a step must not leave the caller's work on it."""
    before = get()
    set_(n)
    try:
        yield
    finally:
        set_(before)
