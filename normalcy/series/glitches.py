"""One-row glitches in multivariate training data: found, named, and mended before fitting.

Why: a detector's threshold is the (1 - fpr) quantile of its scores on held-out normal rows, and one bad row
reaches every window that holds it. On SKAB's valve2_0 (a water-pump test bed, 400 training rows) a single
logging glitch, one row with Current and Voltage swapped, about 690 typical steps from both neighbours, made
the held-out windows around it the highest normal scores; the threshold went up to them and the real anomaly
(Temperature 17 spreads down) was flagged on 8 of its 394 rows.

What counts as a glitch, so that real behaviour is never mended away:

* a value that departs from both neighbours in the same direction by more than GLITCH_STEPS times its
  column's typical step (the robust spread of the column's row-to-row differences), while the neighbours
  agree with each other: a one-row spike, not a level shift;
* in a column that varies from row to row (the interquartile range of its steps is above 0): a flag, a
  setting or a held value jumps by nature, and its one-row jumps (a command sent once) are events;
* rare in its column: at most RARE such rows; a column that spikes more often spikes by nature, and its
  spikes are normal operation;
* in fewer than half of the row's columns (so only in a series of three or more): a row where one sensor
  jumps while the others hold still is a sensor or logging fault. In one column alone (a univariate series)
  a glitch cannot be told from a normal spike, and NAB's files have spikes in their training rows that recur
  later as normal ones: nothing is mended there.

A mended value becomes the mean of its neighbours, for fitting only (test data is never changed); a warning
names the series, the row and the column, and model.json lists them (``training.mended_glitches``).
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from normalcy.errors import setting

log = logging.getLogger("normalcy")

GLITCH_STEPS = 100.0  # a glitch departs from both neighbours by more than this many typical steps
RARE = 2  # a column with more one-row departures than this spikes by nature: none of them is mended


def glitches(X: np.ndarray) -> list[tuple[int, int, float]]:
    """(row, column, departure in typical steps) of each one-row glitch in the (n, d) values X."""
    n, d = X.shape
    if d < 3 or n < 5:
        return []
    found: list[tuple[int, int, float]] = []
    for j in range(d):
        x = X[:, j]
        with np.errstate(over="ignore", invalid="ignore"):  # values near 1e308: fit refuses them after this
            step = np.diff(x)
            q1, q3 = np.quantile(step, [0.25, 0.75])
            typical = (q3 - q1) / 1.349
            if not np.isfinite(typical) or typical <= 0:  # a flag, a counter or a held value: jumps by nature
                continue
            up, down = x[1:-1] - x[:-2], x[1:-1] - x[2:]
            depart = np.minimum(np.abs(up), np.abs(down))
            far = ((np.sign(up) == np.sign(down)) & (depart > GLITCH_STEPS * typical)
                   & (np.abs(x[2:] - x[:-2]) < depart / 4))
        rows = np.flatnonzero(far)
        if 0 < len(rows) <= RARE:
            found += [(int(i) + 1, j, float(depart[i] / typical)) for i in rows]
    per_row = np.bincount([r for r, _, _ in found], minlength=n)
    return [g for g in found if per_row[g[0]] <= (d - 1) // 2]


def mended(X: np.ndarray, columns: Sequence[str], where: str) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """X with each glitch (``glitches``) replaced by the mean of its neighbours (a copy; X itself if none),
    with a warning naming where; and the glitches as model.json records them (row from 1, column, steps)."""
    found = glitches(X)
    if not found:
        return X, []
    X = np.array(X, dtype=np.float64)
    for i, j, _ in found:
        X[i, j] = 0.5 * (X[i - 1, j] + X[i + 1, j])
    row, col, steps = found[0]
    log.warning("%s: %d one-row glitch(es) in the training data mended for fitting (the first: row %d, column %r, "
                "%.0f typical steps from both neighbours, its neighbours' mean used instead); fit with "
                "%s to learn them as they are", where, len(found), row + 1,
                columns[col], steps, setting("mend_glitches", False, cli="--keep-glitches"))
    return X, [{"series": where, "row": i + 1, "column": columns[j], "steps": round(v, 1)} for i, j, v in found]
