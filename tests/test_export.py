"""ONNX export: the exported graph, run by onnxruntime, scores as the PyTorch fp32 detector does."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("onnxruntime", reason="the export extra: pip install -c constraints.txt -e '.[export]'")

from test_cli import make_dataset, normalcy  # noqa: E402

from normalcy.cli import app  # noqa: E402
from normalcy.data import InputError, list_files  # noqa: E402
from normalcy.detectors import MuSc, NotFittedError, create  # noqa: E402
from normalcy.detectors.base import Result  # noqa: E402
from normalcy.export import META_KEY, OnnxScorer, exact_search, export_onnx  # noqa: E402
from normalcy.features import FeatureExtractor  # noqa: E402

RTOL = 1e-4


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("export") / "ds")


def assert_parity(got: Result, ref: Result) -> None:
    """Scores within RTOL relative (scores near zero, as gaussian's standardised ones can be, in absolute
    terms), the same decision on every image, maps within RTOL of their largest value."""
    assert [p.name for p in got.paths] == [p.name for p in ref.paths]
    diff = np.abs(got.scores - ref.scores) / np.maximum(np.abs(ref.scores), 1.0)
    assert diff.max() < RTOL, (got.scores, ref.scores)
    assert np.array_equal(got.decisions, ref.decisions)
    assert got.threshold == ref.threshold
    for a, b in zip(got.maps.grids, ref.maps.grids):
        assert a.shape == b.shape
        assert np.abs(a - b).max() < RTOL * np.abs(b).max()
    assert got.maps[0].shape == ref.maps[0].shape  # drawn at the image's own size, as the detector draws it


def test_gaussian_fp32_parity(dataset: Path, tmp_path: Path) -> None:
    train, test = list_files(dataset / "train" / "good"), list_files(dataset / "test")
    # Pooled levels up to s16 (the default adds s32): the backbone stops earlier and the export traces faster.
    ext = FeatureExtractor(image_size=96, precision="fp32", pooled_levels=("s8", "s16"))
    det = create("gaussian", ext).fit(train, progress=False)
    path = export_onnx(det, tmp_path / "gaussian.onnx")
    scorer = OnnxScorer(path)
    assert scorer.meta["threshold"] == det.threshold_ and scorer.size == (96, 96)
    assert scorer.meta["detector"] == "gaussian" and scorer.meta["resize"] == "cv2.INTER_AREA"
    (tmp_path / "notes.txt").write_text("not an image")
    got = scorer.score([*test, tmp_path / "notes.txt"], batch_size=4)  # batches of 4 and 2: the batch size is free
    assert_parity(got, det.score(test, progress=False))
    assert [p.name for p, _ in got.skipped] == ["notes.txt"]
    assert got.decisions[-3:].all()  # the bright squares


def test_cli_export_patchcore_ivf_model(dataset: Path, tmp_path: Path) -> None:
    """A model whose bank is searched by IVF: the graph searches exactly, as exact_search(det) does."""
    train, test = list_files(dataset / "train" / "good"), list_files(dataset / "test")
    det = create("patchcore", FeatureExtractor(image_size=96, precision="fp32"), exact_search_max=50)
    det.fit(train, progress=False).save(tmp_path / "model")
    assert len(det.cells_)  # IVF
    r = normalcy("export", str(tmp_path / "model"), "-o", str(tmp_path / "pc.onnx"))
    assert r.returncode == 0, r.stderr
    scorer = OnnxScorer(tmp_path / "pc.onnx")
    assert scorer.meta["exact_search"] is True
    assert_parity(scorer.score(test), exact_search(det).score(test, progress=False))
    raw = json.loads(scorer.session.get_modelmeta().custom_metadata_map[META_KEY])
    assert raw["image_size"] == [96, 96] and raw["normalisation"]["mean"] == [0.5, 0.5, 0.5]

    # predict with the exported file: the same run folder as with a model folder, bad files skipped and named
    (tmp_path / "new").mkdir()
    for p in test[:4]:
        (tmp_path / "new" / f"{p.parent.name}_{p.name}").write_bytes(p.read_bytes())
    (tmp_path / "new" / "broken.png").write_bytes(b"\x89PNG not really")
    r = normalcy("predict", str(tmp_path / "pc.onnx"), str(tmp_path / "new"), "-o", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(tmp_path / "run" / "scores.csv")))
    want = scorer.score(sorted((tmp_path / "new").glob("*_*")))
    assert [Path(row["path"]).name for row in rows] == [p.name for p in want.paths]
    assert np.allclose([float(row["score"]) for row in rows], want.scores, atol=1e-3)  # csv: 4 decimals
    assert "broken.png" in (tmp_path / "run" / "skipped.csv").read_text()
    assert len(list((tmp_path / "run" / "heatmaps").iterdir())) == 4
    assert json.loads((tmp_path / "run" / "run.json").read_text())["runtime"] == "onnxruntime"
    (tmp_path / "junk.onnx").write_text("not a model")
    for model, args, says in (("pc.onnx", ["--embeddings"], "no embeddings"), ("pc.onnx", ["--ray", "local"], "--ray"),
                              ("junk.onnx", [], "onnxruntime cannot load it")):
        r = CliRunner().invoke(app, ["predict", str(tmp_path / model), str(tmp_path / "new"), "-o",
                                     str(tmp_path / "x"), *args])
        assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output  # an error, not a crash
        assert says in r.output and model in r.output, r.output


def test_not_exportable_and_bad_options(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot export musc: musc is zero-shot"):
        export_onnx(MuSc(), tmp_path / "m.onnx")
    with pytest.raises(NotFittedError):
        export_onnx(create("gaussian"), tmp_path / "g.onnx")
    with pytest.raises(InputError, match="bfloat16"):
        export_onnx(create("gaussian"), tmp_path / "g.onnx", precision="bf16")
    r = normalcy("export", str(dataset), "-o", str(tmp_path / "x.onnx"), "--precision", "int8")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1 and "--calibration" in r.stderr


def test_int8_quantises_the_backbone(dataset: Path, tmp_path: Path) -> None:
    """int8: every backbone convolution reads int8 weights and activations (the search for the backbone's nodes
    once found none, and the int8 model was silently the fp32 one); the arithmetic after it stays float."""
    import onnx

    train, test = list_files(dataset / "train" / "good"), list_files(dataset / "test")
    ext = FeatureExtractor(image_size=96, precision="fp32", pooled_levels=("s8", "s16"))
    det = create("gaussian", ext).fit(train, progress=False)
    graph = onnx.load(str(export_onnx(det, tmp_path / "g8.onnx", "int8", calibration_paths=train[:8]))).graph
    made_by = {out: n for n in graph.node for out in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert convs and all(made_by[n.input[0]].op_type == "DequantizeLinear" for n in convs)
    assert all(made_by[n.input[1]].op_type == "DequantizeLinear" for n in convs)
    assert not any(made_by.get(i) is not None and made_by[i].op_type == "DequantizeLinear"
                   for n in graph.node if n.op_type == "MatMul" for i in n.input)
    got, ref = OnnxScorer(tmp_path / "g8.onnx").score(test), det.score(test, progress=False)
    assert not np.allclose(got.scores, ref.scores)  # quantised: scores move
    assert got.decisions[-3:].all()  # the bright squares
