"""A tiny synthetic run directory and database URLs for the review server tests.

Kept out of conftest.py so that other test modules (the browser tests) can
``from review_fixtures import make_run`` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import csv
import os
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from normalcy.runs.format import RunWriter

POSTGRES_ENV = "NORMALCY_TEST_POSTGRES_URL"
POSTGRES_SKIP = f"set {POSTGRES_ENV} to a PostgreSQL database to run this (.ci/run does)"
THRESHOLD = 0.5


def make_run(root: Path, n: int = 12, embeddings: bool = True, overlay_column: bool = True) -> Path:
    """Write n noise images to root/images and a run directory root/run that scored them, with RunWriter.

    Scores fall with the index (image 0 ranks first); even images are "anomalous"
    above the threshold. Embeddings form two clusters (even / odd index) so that a
    label on one image says something about its cluster. The last image has no map, so
    no overlay. overlay_column=False drops the column, as in runs written before it existed.
    """
    rng = np.random.default_rng(0)
    images = root / "images"
    run = root / "run"
    images.mkdir(parents=True, exist_ok=True)
    centres = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]], dtype=np.float32)
    writer = RunWriter(run, THRESHOLD, (0.0, 1.0), heatmaps=False, report=False, inputs=[images],
                       info={"detector": "patchcore", "model": str(root / "model")})
    for i in range(n):
        path = images / f"img_{i:03d}.png"
        image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(image).save(path)
        amap = rng.random((8, 8)).astype(np.float32) if i < n - 1 else None
        score = 1.0 - i / n
        emb = centres[i % 2] + 0.05 * rng.standard_normal(4).astype(np.float32)
        writer.add(path, image, score, amap, embedding=emb if embeddings else None)
    writer.close([], "review fixture")
    if not overlay_column:
        with open(run / "scores.csv", newline="") as fh:
            rows = [row[:4] for row in csv.reader(fh)]
        with open(run / "scores.csv", "w", newline="") as fh:
            csv.writer(fh).writerows(rows)
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

    from normalcy.review.store import _normalise_url

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
