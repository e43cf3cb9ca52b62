"""The bench/ scripts that docs/benchmarks.md names: each runs as written (its --help, its smallest run on tiny
synthetic data), and says what is missing instead of a traceback."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, bench_module


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


@pytest.mark.parametrize("name", ["ensemble_proxies", "musc_ablation", "musc_ceiling"])
def test_help_prints_usage(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                           capsys: pytest.CaptureFixture) -> None:
    """--help of these scripts raised KeyError('--help') (ensemble_proxies, which took it for a proxy) or ran the
    whole benchmark (the MuSc ones, 6 to 15 minutes; without the data, "not found")."""
    module = bench_module(name)
    if hasattr(module, "DATA"):
        monkeypatch.setattr(module, "DATA", tmp_path / "absent")  # were --help ignored: a quick failure, no run
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--help"])
    with pytest.raises(SystemExit) as exit:
        module.main()
    assert exit.value.code == 0 and "usage:" in capsys.readouterr().out


def test_ensemble_proxies_names_an_unknown_proxy(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(sys, "argv", ["ensemble_proxies.py", "elpv-logicl"])
    with pytest.raises(SystemExit) as exit:
        bench_module("ensemble_proxies").main()
    assert exit.value.code == 2 and "unknown proxy 'elpv-logicl': choose from" in capsys.readouterr().err


def test_review_screenshot_help_and_a_missing_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    """--help exited 1 with a one-line usage; a missing run folder ended in an InputError traceback."""
    script = str(ROOT / "bench" / "review_screenshot.py")
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    with pytest.raises(SystemExit) as exit:
        runpy.run_path(script, run_name="__main__")
    assert exit.value.code == 0 and "RUN_DIR" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", [script, str(tmp_path / "no-run"), str(tmp_path / "x.png")])
    with pytest.raises(SystemExit) as exit:
        runpy.run_path(script, run_name="__main__")
    assert exit.value.code == f"error: run folder not found: {tmp_path / 'no-run'}"
