"""bench/skab.py's peer, SKAB's Conv-AE rewritten in torch: its control limit and 59-window persistence rule
flag a long shift of the sensors and leave normal rows alone; its output keeps the layers' shapes."""

from __future__ import annotations

import numpy as np
import torch

from conftest import bench_module

skab = bench_module("skab")


def test_conv_ae_shapes_and_rule() -> None:
    net = skab._conv_ae_net(8)
    assert net(torch.zeros(3, 8, skab.CONV_AE_STEPS)).shape == (3, 1, skab.CONV_AE_STEPS)  # one channel, as SKAB's
    rng = np.random.default_rng(0)
    t = np.arange(1000)
    normal = np.sin(2 * np.pi * t[:, None] / 50 + np.arange(4)) + 0.05 * rng.standard_normal((1000, 4))
    test = normal.copy()
    test[500:700] += 3.0  # every sensor shifted for 200 rows
    decision = skab.conv_ae_decisions(normal[:400], test)
    assert decision.shape == (1000,) and set(np.unique(decision)) <= {0, 1}
    assert decision[560:700].mean() > 0.9  # the shift, once 59 windows hold it
    assert decision[:440].sum() == 0 and decision[800:].sum() <= 20  # the training rows and the rest: quiet
