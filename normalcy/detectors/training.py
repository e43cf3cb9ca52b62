"""The training loop shared by trained detectors (SimpleNet, EfficientAD, DRAEM).

It owns what every trained detector needs and none should write twice: a step
or time budget, a rich progress bar with the running loss, and Ctrl-C that
stops early and keeps the model trained so far (the caller then saves it).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from normalcy.errors import option
from normalcy.progress import progress_bar

log = logging.getLogger("normalcy")


@dataclass
class TrainLog:
    """What happened during training; saved with the model."""

    steps: int
    seconds: float
    losses: list[float]  # running (smoothed) loss, one value per step
    interrupted: bool
    stopped_by: str  # "steps", "time" or "interrupt"

    def summary(self) -> dict[str, Any]:
        """How training went, as model.json records it (``training``)."""
        return {"steps": self.steps, "seconds": round(self.seconds, 2),
                "final_loss": self.losses[-1] if self.losses else None, "stopped_by": self.stopped_by}


class Trained:
    """Mixin of the trained detectors (before ``Detector`` in the bases): model.json records how training went,
    from the ``train_log_`` (a TrainLog) that their ``_fit`` sets. Not a class annotation: it is not a tensor.
    A loaded model has none: it keeps its model.json's ``training`` as read (``training_``, set by load), which
    saving it again writes back (that failed with an AttributeError, 'train_log_')."""

    def metadata(self) -> dict[str, Any]:
        log = getattr(self, "train_log_", None)
        return {"training": log.summary() if log is not None else getattr(self, "training_", None)}

    def _why_scores_do_not_vary(self) -> str:
        """A network stopped after a few steps (a short --time-budget, Ctrl-C) gives every image the same score
        (DRAEM: one step, or three): that was blamed on "identical or blank images?", which they are not."""
        log = getattr(self, "train_log_", None)
        if log is None:
            return super()._why_scores_do_not_vary()  # type: ignore[misc]
        why = {"time": "its time budget ran out", "interrupt": "it was interrupted"}.get(log.stopped_by,
                                                                                     "its steps were done")
        return (f"after {log.steps} training step(s) ({why}) the {getattr(self, 'name', 'model')} networks do not "
                f"tell them apart yet: train longer ({option('steps')}, {option('time_budget')}), unless the images "
                "themselves do not vary")


def step_decay(optimizer: torch.optim.Optimizer, lr: float,
               milestones: Sequence[tuple[float, float]]) -> Callable[[float], None]:
    """A learning-rate schedule for ``train``: at each (fraction of the run, factor) the rate is multiplied.

    The papers decay at fixed fractions of their steps; under a time budget the run's
    progress is the larger of the fraction of steps and the fraction of the time spent.
    """
    def schedule(done: float) -> None:
        rate = lr
        for at, factor in milestones:
            if done >= at:
                rate *= factor
        for group in optimizer.param_groups:
            group["lr"] = rate

    return schedule


def train(
    step: Callable[[int], float],
    steps: int,
    time_budget: float | None = None,
    progress: bool = True,
    description: str = "train",
    smoothing: float = 0.9,
    schedule: Callable[[float], None] | None = None,
) -> TrainLog:
    """Run ``step(i) -> loss`` until ``steps`` are done or ``time_budget`` seconds have passed.

    ``schedule(fraction done)`` runs before each step (see ``step_decay``).
    Ctrl-C stops after the current step; training so far is kept, and the caller goes on
    to calibrate and save as usual, so an interrupted run still yields a usable model.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    start = time.perf_counter()
    losses: list[float] = []
    running: float | None = None
    stopped_by = "steps"
    done = 0
    with progress_bar(progress) as bar:
        task = bar.add_task(description, total=steps, loss="")
        try:
            for i in range(steps):
                if schedule is not None:
                    spent = (time.perf_counter() - start) / time_budget if time_budget else 0.0
                    schedule(max(i / steps, spent))
                loss = float(step(i))
                running = loss if running is None else smoothing * running + (1 - smoothing) * loss
                losses.append(running)
                done = i + 1
                bar.update(task, completed=done, description=f"{description}  loss {running:.4f}")
                if time_budget is not None and time.perf_counter() - start >= time_budget:
                    stopped_by = "time"
                    break
        except KeyboardInterrupt:
            stopped_by = "interrupt"
            log.warning("interrupted after %d of %d steps: keeping the model trained so far", done, steps)
    if done == 0:
        raise KeyboardInterrupt("interrupted before the first training step finished")
    if stopped_by == "time":
        log.info("time budget of %.0f s reached after %d of %d steps", time_budget, done, steps)
    return TrainLog(steps=done, seconds=time.perf_counter() - start, losses=losses,
                    interrupted=stopped_by == "interrupt", stopped_by=stopped_by)
