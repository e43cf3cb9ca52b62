"""Timing alternatives in turns, round after round, in one process: machine noise then hits them alike."""

from __future__ import annotations

import time
from typing import Any, Callable


def in_turns(ways: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[tuple[float, Any]]]:
    """Each way called once per round, in order; (seconds, what it returned) for every call."""
    out: dict[str, list[tuple[float, Any]]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, way in ways.items():
            t = time.perf_counter()
            value = way()
            out[name].append((time.perf_counter() - t, value))
    return out


def markdown(headers: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
