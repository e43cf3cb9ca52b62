"""A tiny synthetic run directory and database URLs for the review server tests.

Kept out of conftest.py so that other test modules (the browser tests) can
``from review_fixtures import make_run`` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import csv
import json
import os
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file

POSTGRES_ENV = "NORMALCY_TEST_POSTGRES_URL"
POSTGRES_SKIP = f"set {POSTGRES_ENV} to a PostgreSQL database to run this (.ci/run does)"
THRESHOLD = 0.5


def make_run(root: Path, n: int = 12, embeddings: bool = True, overlay_column: bool = True) -> Path:
    """Write n noise images to root/images and a run directory root/run that scored them.

    Scores fall with the index (image 0 ranks first); even images are "anomalous"
    above the threshold. Embeddings form two clusters (even / odd index) so that a
    label on one image says something about its cluster. The last image has no overlay.
    """
    rng = np.random.default_rng(0)
    images = root / "images"
    run = root / "run"
    (run / "overlays").mkdir(parents=True, exist_ok=True)
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        path = images / f"img_{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        overlay = ""
        if i < n - 1:
            overlay = f"overlays/img_{i:03d}.png"
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(run / overlay)
        score = 1.0 - i / n
        rows.append([str(path), f"{score:.6g}", "anomalous" if score >= THRESHOLD else "normal",
                     f"{THRESHOLD:.6g}", overlay])
    with open(run / "scores.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        if overlay_column:
            writer.writerow(["path", "score", "decision", "threshold", "overlay"])
            writer.writerows(rows)
        else:
            writer.writerow(["path", "score", "decision", "threshold"])
            writer.writerows(r[:4] for r in rows)
    if embeddings:
        centres = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]], dtype=np.float32)
        emb = centres[np.arange(n) % 2] + 0.05 * rng.standard_normal((n, 4)).astype(np.float32)
        save_file({"embedding": emb.astype(np.float32)}, str(run / "embeddings.safetensors"))
    (run / "run.json").write_text(json.dumps({"detector": "patchcore", "model": str(root / "model"),
                                              "inputs": [str(images)], "threshold": THRESHOLD}))
    return run


def postgres_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a new schema in the PostgreSQL test database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'review.sqlite'}"
        return
    base = postgres_url()
    if base is None:
        pytest.skip(POSTGRES_SKIP)
    from sqlalchemy import create_engine, make_url, text

    from normalcy.store import _normalise_url

    schema = f"normalcy_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(_normalise_url(base))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(_normalise_url(base)).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
