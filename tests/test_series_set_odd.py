"""A set of series in one long file (``--series-column``): odd ids and odd series, and what a predict holds."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from normalcy import api
from normalcy.series import registry
from normalcy.series.runs import RECENT_MODELS, load_series_set
from test_series_cli import cli, write_long  # tests/ is on sys.path


def fitted_set(tmp_path: Path, ids: list[str], n: int = 60) -> tuple[Path, Path]:
    """(the long file, the set fitted on it: knn, window 8)."""
    long = write_long(tmp_path / "long.csv", ids, n=n)
    r = cli("fit", long, "-o", tmp_path / "m", "--series-column", "host", "--detector", "knn", "--window", "8")
    assert r.exit_code == 0, r.stderr  # type: ignore[attr-defined]
    return long, tmp_path / "m"


def test_predict_of_a_set_reads_each_model_once_and_lets_it_go(tmp_path: Path, monkeypatch) -> None:
    """Predict held every series' model to the end of the run (5,000 series: 200 MB more at its peak)."""
    ids = [f"h{k}" for k in range(8)]
    long, m = fitted_set(tmp_path, ids)
    model = load_series_set(m)
    loads: list[str] = []
    load = registry.load
    monkeypatch.setattr(registry, "load", lambda d: loads.append(Path(d).name) or load(d))
    summary = api.predict(model, long, tmp_path / "run", report=False, progress=False)
    assert summary.n_series == len(ids)
    assert sorted(loads) == sorted(model.folders.values())  # each read once
    assert not model.models and len(model._recent) <= RECENT_MODELS
    rows = list(csv.DictReader(open(tmp_path / "run" / "scores.csv")))
    assert len(rows) == 60 * len(ids) and np.isfinite([float(x["score"]) for x in rows]).all()

