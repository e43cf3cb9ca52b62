"""The bench/ scripts that docs/benchmarks.md names: each runs as written (its --help, its smallest run on tiny
synthetic data), and says what is missing instead of a traceback."""

from __future__ import annotations

import numpy as np
from conftest import bench_module


def test_hypad_uncertainty_scores_the_cross_fitted_twin() -> None:
    """bench/hypad_uncertainty.py scored the cross-fitted twin on raw rows, and the twin had no ``flags_``
    (``_twin`` copies the standardisation only): every run failed with AttributeError on its first series."""
    hypad = bench_module("hypad_uncertainty")
    rng = np.random.default_rng(0)
    t = np.arange(600)[:, None]
    values = np.sin(2 * np.pi * t / 40) + 0.05 * rng.standard_normal((600, 1))
    labels = np.zeros(200, dtype=np.int8)
    labels[100:110] = 1
    scored, _ = hypad.fit_and_score("s", values[:400], values[400:], labels, slice(None),
                                    {"steps": 10, "window": 20})
    assert set(scored.scores) == set(hypad.WAYS) and all(len(s) == 200 for s in scored.scores.values())
