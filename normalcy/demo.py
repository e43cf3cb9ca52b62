"""The demo: real solar-cell electroluminescence images from the PyPI package elpv-dataset.

Each cell has a defect probability (0, 1/3, 2/3, 1) given by experts. We fit on
normal cells (probability 0) of one cell type, score held-out normal cells and
surely defective ones (probability 1), and write an HTML report. Nothing is
downloaded at run time: the images ship inside the package.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from normalcy.errors import InputError
from normalcy.evaluation.evaluate import run_eval, write_eval_report
from normalcy.evaluation.validation import check_detector
from normalcy.images.io import load_dataset
from normalcy.progress import console


def elpv_root() -> Path:
    """The folder of labels.csv and images/ inside the installed elpv-dataset package."""
    try:
        import elpv_dataset
    except ImportError:
        raise InputError(
            'the demo needs the elpv-dataset package: pip install -c constraints.txt -e ".[demo]"'
        ) from None
    return Path(elpv_dataset.__file__).parent / "data"


def build_elpv_dataset(target: Path, cell_type: str = "mono", n_train: int = 300, n_test: int = 200,
                       seed: int = 0, n_defective: int | None = None) -> Path:
    """Lay out elpv cells as an MVTec-style folder (symlinks, no copies) under ``target``:
    ``n_test`` normal and ``n_defective`` (default ``n_test``) defective test cells."""
    root = elpv_root()
    table = np.genfromtxt(root / "labels.csv", dtype=["U32", "f8", "U8"], names=["path", "probability", "type"])
    if cell_type not in ("mono", "poly"):
        raise InputError(f"cell type must be mono or poly, not {cell_type!r}")
    table = table[table["type"] == cell_type]
    rng = np.random.default_rng(seed)
    normal = rng.permutation(table["path"][table["probability"] == 0.0])
    defective = rng.permutation(table["path"][table["probability"] == 1.0])
    if n_train + 1 > len(normal):
        raise InputError(f"only {len(normal)} normal {cell_type} cells: ask for fewer than {n_train} training cells")
    parts = {
        ("train", "good"): normal[:n_train],
        ("test", "good"): normal[n_train : n_train + n_test],
        ("test", "defective"): defective[: n_test if n_defective is None else n_defective],
    }
    if target.exists():
        shutil.rmtree(target)
    for (split, kind), names in parts.items():
        folder = target / split / kind
        folder.mkdir(parents=True)
        for name in names:
            src = root / name
            (folder / src.name).symlink_to(src)
    return target


def run_demo(output: Path, detector: str = "gaussian", n_train: int = 300, n_test: int = 200,
             cell_type: str = "mono") -> tuple[dict[str, Any], Path]:
    """Fit, score and report on solar cells. Returns (metrics, path of report.html)."""
    check_detector(detector)  # an unknown name, or musc's zero-shot, before the cells are laid out
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = build_elpv_dataset(Path(tmp) / f"elpv_{cell_type}", cell_type, n_train, n_test)
        console.print(f"elpv-dataset: {n_train} normal {cell_type} cells to fit; "
                      f"held-out normal and defective cells to score", soft_wrap=True)
        ds = load_dataset(data)
        metrics, det, result = run_eval(ds, detector, latency_images=10)
        metrics["dataset"] = f"elpv ({cell_type} cells)"
        det.save(output / "model")
        report = output / "report.html"
        write_eval_report(report, metrics, det, result, ds)
    return metrics, report
