"""bench/review_simulation.py: the scripted labeller's scores and the review loop."""

from __future__ import annotations

import numpy as np
from conftest import bench_module

from normalcy.review.ranking import make_ranker

sim = bench_module("review_simulation")


def test_scenario_scores() -> None:
    classes = ["good", "crack", "uneven", "good"]
    assert sim.scenario_scores(classes, None).tolist() == [0, 5, 5, 0]
    assert sim.scenario_scores(classes, "crack").tolist() == [0, 5, 0, 0]


class _Recorder:
    """Priorities = anomaly; records the labels it was given."""

    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], list[float]]] = []

    def rank(self, features, anomaly, labelled, user):
        self.calls.append((list(labelled), list(user)))
        return np.asarray(anomaly, dtype=np.float64)


def test_simulate_reviews_top_unlabelled_and_passes_all_labels() -> None:
    anomaly = np.array([0.1, 0.9, 0.5, 0.9, 0.3])
    truth = np.array([0.0, 5.0, 0.0, 0.0, 5.0])
    ranker = _Recorder()
    order, seconds = sim.simulate(ranker, np.zeros((5, 2), np.float32), anomaly, truth, budget=4)
    assert order == [1, 3, 2, 4]                  # score order, ties to the lower row, no repeats
    assert len(seconds) == 3                      # a re-rank after each label but the last
    assert ranker.calls[-1] == ([1, 3, 2], [5.0, 0.0, 0.0])
    order_none, _ = sim.simulate(make_ranker("none"), np.zeros((5, 2), np.float32), anomaly, truth, budget=10)
    assert order_none == [1, 3, 2, 4, 0]          # budget capped at N
