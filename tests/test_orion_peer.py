"""bench/nab_categories.py's Orion peer: a worker's detected intervals (epoch seconds) become row spans, results
are cached as JSON lines and read back, and a failed run counts as no detection, said on stderr. A stand-in
"venv" whose python prints what bench/orion_worker.py prints: Orion itself needs its own virtualenv."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import bench_module
from normalcy.evaluation import nab

categories = bench_module("nab_categories")


def _file(n: int = 100) -> nab.NabFile:
    time = np.datetime64("2020-01-01T00:00:00") + np.arange(n) * np.timedelta64(300, "s")
    return nab.NabFile("realTraffic/x.csv", time, np.zeros(n), np.zeros((0, 2), np.int64), 15)


def _venv(tmp_path: Path, stdout: str, code: int = 0) -> Path:
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'calls'}\nprintf '%s\\n' '{stdout}'\nexit {code}\n")
    os.chmod(python, 0o755)
    return tmp_path / "venv"


def test_intervals_become_rows_and_are_cached(tmp_path: Path) -> None:
    f = _file()
    epoch0 = int(f.time[0].astype("datetime64[s]").astype(np.int64))
    line = json.dumps({"events": [[epoch0 + 300 * 10, epoch0 + 300 * 12], [epoch0 - 900, epoch0 - 300]],
                       "fit_s": 1.5, "detect_s": 0.5, "settings": None})
    venv, cache_file, cache = _venv(tmp_path, line), tmp_path / "cache.jsonl", {}
    got = categories.orion_events(venv, "aer", f.name, f, tmp_path, "probation", cache, cache_file, 60)
    assert got == {"events": [(10, 12)], "fit_s": 1.5, "detect_s": 0.5}  # an interval before the file: no rows
    call = (tmp_path / "calls").read_text().split()
    assert call[1:3] == ["aer", str(tmp_path / "data" / f.name)] and call[-2:] == ["--fit-rows", "15"]
    # cached: read back, the worker not run again
    again = categories.read_orion_cache(cache_file)
    assert categories.orion_events(venv, "aer", f.name, f, tmp_path, "probation", again, None, 60) == got
    assert len((tmp_path / "calls").read_text().splitlines()) == 1


def test_a_failed_run_is_no_detection_and_said(tmp_path: Path, capsys) -> None:
    f = _file()
    venv = _venv(tmp_path, "Traceback: ValueError", code=1)
    cache: dict = {}
    got = categories.orion_events(venv, "aer", f.name, f, tmp_path, "whole", cache, None, 60)
    assert got is not None and got["events"] == [] and "error" in got  # ran, found nothing: counted, not dropped
    assert "failed on realTraffic/x.csv" in capsys.readouterr().err
    assert "error" in cache[("aer", "whole", f.name)]
    assert (tmp_path / "calls").read_text().split()[-2:] == ["--fit-rows", "0"]  # whole signal


def test_cache_only_runs_nothing(tmp_path: Path) -> None:
    f = _file()
    venv = _venv(tmp_path, json.dumps({"events": [], "fit_s": 1, "detect_s": 1}))
    assert categories.orion_events(venv, "aer", f.name, f, tmp_path, "whole", {}, None, 60, run=False) is None
    assert not (tmp_path / "calls").exists()


def test_a_venv_without_orion_is_refused_before_any_file(tmp_path: Path) -> None:
    """A missing --orion-venv ended, after our detector's first file, in a FileNotFoundError traceback; a venv
    without orion-ml failed every file alike, each counted (and cached) as Orion finding nothing."""
    with pytest.raises(SystemExit, match=r"--orion-venv .*absent: no .*absent/bin/python; create it with"):
        categories.main([str(tmp_path / "nab"), "--orion-venv", str(tmp_path / "absent")])
    venv = _venv(tmp_path, "", code=1)
    with pytest.raises(SystemExit, match="its python cannot import orion"):
        categories.main([str(tmp_path / "nab"), "--orion-venv", str(venv), "--orion-cache", str(tmp_path / "c")])
    assert not (tmp_path / "c").exists()


def test_the_worker_without_orion_says_so(monkeypatch) -> None:
    """bench/orion_worker.py run with a python that lacks orion-ml: one line naming what it needs."""
    import builtins

    real_import = builtins.__import__

    def no_orion(name, *args, **kwargs):
        if name == "orion":
            raise ModuleNotFoundError("No module named 'orion'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_orion)
    monkeypatch.setattr("sys.argv", ["orion_worker.py", "aer", "x.csv"])
    try:
        with pytest.raises(SystemExit, match="needs orion-ml: run it with the python of the virtualenv"):
            bench_module("orion_worker").main()
    finally:  # the worker silences logging for its process (Orion's own warnings): not for the tests after this
        logging.disable(logging.NOTSET)
