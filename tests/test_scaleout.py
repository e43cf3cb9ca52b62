"""Scoring on Ray (`predict --ray`): a local Ray of 2 CPUs gives exactly the one-process results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")

from normalcy.detectors import create  # noqa: E402
from normalcy.features import FeatureExtractor  # noqa: E402
from normalcy.scaleout import RESULTS, predict_ray  # noqa: E402
from normalcy.tables import fit_table, read_table, save_vector_model, score_table  # noqa: E402
from test_cli import make_dataset, normalcy  # noqa: E402
from test_tables import _rows, _write  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_tables_on_ray_equal_one_process(tmp_path: Path) -> None:
    X, y = _rows(n=5000)
    X[11, 3] = np.nan
    path = _write(tmp_path / "t.parquet", X, y)
    table = read_table(path, label_column="label", id_column="name")
    det, _ = fit_table(table, "ensemble")
    save_vector_model(det, "ensemble", table.columns, tmp_path / "m")
    scores, mask, skipped = score_table(det, read_table(path, id_column="name", columns=table.columns))

    (run,) = predict_ray(tmp_path / "m", [path], tmp_path / "out", "local", id_column="name")
    got = pq.read_table(tmp_path / "out" / RESULTS).to_pydict()
    assert got["name"] == table.ids  # every row, in input order
    np.testing.assert_array_equal(np.array(got["score"])[mask], scores[mask])  # exactly, not approximately
    assert got["decision"][11] == -1 and "f3" in got["skipped"][11] and skipped[0][0] == "obj11"
    assert run["n_scored"] == len(X) - 1 and run["n_skipped"] == 1


def test_images_on_ray_equal_one_process(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "data")
    (root / "test" / "good" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    det = create("gaussian", FeatureExtractor(image_size=64)).fit(sorted((root / "train" / "good").glob("*.png")))
    det.save(tmp_path / "m")
    paths = sorted((root / "test").rglob("*.png"))
    expected = det.score(paths, progress=False)

    predict_ray(tmp_path / "m", [root / "test"], tmp_path / "out", "local")
    got = pq.read_table(tmp_path / "out" / RESULTS).to_pydict()
    score_of = dict(zip(got["path"], got["score"]))
    assert len(got["path"]) == len(paths)
    assert [score_of[str(p)] for p in expected.paths] == expected.scores.tolist()
    broken = got["path"].index(str(root / "test" / "good" / "broken.png"))
    assert got["decision"][broken] == -1 and got["skipped"][broken]


def test_cli_predict_ray_local_on_a_table(tmp_path: Path) -> None:
    X, y = _rows()
    path = _write(tmp_path / "t.csv", X, y)
    assert normalcy("fit", str(path), "-o", str(tmp_path / "m"), "--label-column", "label").returncode == 0
    r = normalcy("predict", str(tmp_path / "m"), str(path), "-o", str(tmp_path / "out"), "--ray", "local")
    assert r.returncode == 0, r.stderr
    assert f"scored {len(X)} on Ray" in r.stderr
    assert pq.read_table(tmp_path / "out" / RESULTS).num_rows == len(X)
