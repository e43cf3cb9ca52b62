"""README command 1: the demo on solar cells from the elpv-dataset package."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli

pytest.importorskip("elpv_dataset")


def test_demo_runs_and_writes_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    r = run_cli("demo", "-o", out, "--n-train", "40", "--n-test", "20")
    assert r.returncode == 0, r.stderr
    assert "image_auroc" in r.stdout
    html = (out / "report.html").read_text()
    assert html.count("<img") >= 20 and "<svg" in html
    assert sorted(p.name for p in (out / "model").iterdir()) == ["model.json", "model.safetensors"]


def test_elpv_layout_is_split_without_overlap(tmp_path: Path) -> None:
    from normalcy.demo import build_elpv_dataset

    root = build_elpv_dataset(tmp_path / "elpv", "poly", n_train=30, n_test=10)
    train = {p.name for p in (root / "train" / "good").iterdir()}
    test_good = {p.name for p in (root / "test" / "good").iterdir()}
    assert len(train) == 30 and len(test_good) == 10 and not train & test_good
    assert len(list((root / "test" / "defective").iterdir())) == 10


def test_an_unknown_detector_is_refused_before_the_cells_are_laid_out(tmp_path: Path) -> None:
    """`demo -d bogus` laid out the cells and made the output folder first, then failed after the setup."""
    r = run_cli("demo", "-o", tmp_path / "demo", "-d", "bogus")
    assert r.returncode == 1 and r.stderr.startswith("error: unknown detector 'bogus'") and r.stderr.count("\n") == 1
    assert not (tmp_path / "demo").exists()
