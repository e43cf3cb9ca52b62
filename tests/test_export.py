"""ONNX export: the exported graph, run by onnxruntime, scores as the PyTorch fp32 detector does, for every
exportable detector."""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("onnxruntime", reason="the export extra: pip install -c constraints.txt -e '.[export]'")

from test_cli import normalcy  # noqa: E402

from normalcy.cli import app  # noqa: E402
from normalcy.detectors import DETECTORS, MuSc, create, load
from normalcy.detectors.base import Detector, Result  # noqa: E402
from normalcy.errors import InputError, NotFittedError
from normalcy.images.features import FeatureExtractor  # noqa: E402
from normalcy.images.io import list_files
from normalcy.scale.export import (  # noqa: E402
    EXPORTABLE,
    META_KEY,
    NOT_EXPORTABLE,
    OnnxScorer,
    as_exported,
    export_onnx,
)

RTOL = 1e-4
# Trained detectors train one step on small networks: parity checks the graph against the PyTorch path of the
# same weights, trained or not (a DRAEM step costs seconds on 2 cores).
FAST = {"simplenet": dict(steps=1, time_budget=None, batch_patches=256, hidden=64),
        "draem": dict(steps=1, time_budget=None, input_size=64, base_width=4),
        "efficientad": dict(steps=1, teacher_steps=1, time_budget=None, input_size=64, pool_size=16)}


@pytest.fixture(scope="module")
def dataset(synthetic_root: Path) -> Path:
    """conftest's tiny data set: train/good, then test/defect (bright squares) and test/good."""
    return synthetic_root


@pytest.fixture(scope="module")
def gaussian(dataset: Path) -> Detector:
    """The fp32 gaussian model (96 px, pooled levels up to s16) that several tests export or save, fitted once
    (a fit costs seconds); the tests only read it."""
    ext = FeatureExtractor(image_size=96, precision="fp32", pooled_levels=("s8", "s16"))
    return create("gaussian", ext).fit(list_files(dataset / "train" / "good"), progress=False)


def defects(result: Result) -> np.ndarray:
    """Which scored images are the data set's defects (bright squares)."""
    return np.array([p.parent.name == "defect" for p in result.paths])


def assert_parity(got: Result, ref: Result) -> None:
    """Scores within RTOL relative (scores near zero, as gaussian's standardised ones can be, in absolute
    terms), the same decision on every image not within RTOL of the threshold, maps within RTOL of their largest
    value. ``ref``: ``as_exported(det)``'s, the PyTorch path the graph runs, at the graph's threshold."""
    assert [p.name for p in got.paths] == [p.name for p in ref.paths]
    diff = np.abs(got.scores - ref.scores) / np.maximum(np.abs(ref.scores), 1.0)
    assert diff.max() < RTOL, (got.scores, ref.scores)
    # the same decision on every image not tied with the threshold within that tolerance (a briefly trained
    # DRAEM scores every image at its threshold, and float rounding then decides either way)
    clear = np.abs(ref.scores - ref.threshold) / max(abs(ref.threshold), 1.0) >= RTOL
    assert np.array_equal(got.decisions[clear], ref.decisions[clear])
    assert got.threshold == ref.threshold
    for a, b in zip(got.maps.grids, ref.maps.grids):
        assert a.shape == b.shape
        assert np.abs(a - b).max() < RTOL * np.abs(b).max()
    assert got.maps[0].shape == ref.maps[0].shape  # drawn at the image's own size, as the detector draws it


def test_every_detector_is_exportable_or_says_why() -> None:
    assert set(EXPORTABLE) == {"gaussian", "patchcore", "simplenet", "draem", "efficientad"}
    assert set(EXPORTABLE) | set(NOT_EXPORTABLE) == {*DETECTORS, MuSc.name}
    assert not set(EXPORTABLE) & set(NOT_EXPORTABLE)


@pytest.mark.parametrize("name", sorted(EXPORTABLE))
def test_fp32_parity(name: str, dataset: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The graph runs the detector's own scoring module: its scores within RTOL of PyTorch's fp32 path, the same
    decisions, the same maps, whatever the batch size."""
    train, test = list_files(dataset / "train" / "good"), list_files(dataset / "test")
    if name == "gaussian":  # the module's, fitted as below
        det = request.getfixturevalue("gaussian")
    else:
        # Pooled levels up to s16 (the default adds s32): the backbone stops earlier and the export traces faster.
        ext = FeatureExtractor(image_size=96, precision="fp32", pooled_levels=("s8", "s16"))
        torch.manual_seed(0)
        det = create(name, ext, **FAST.get(name, {})).fit(train, progress=False)
    scorer = OnnxScorer(export_onnx(det, tmp_path / f"{name}.onnx"))
    assert scorer.meta["threshold"] == det.threshold_ and scorer.size == (96, 96)
    assert scorer.meta["detector"] == name and scorer.meta["resize"] == "cv2.INTER_AREA"
    assert "threshold_note" not in scorer.meta  # set on the graph's own (fp32) scores
    (tmp_path / "notes.txt").write_text("not an image")
    got = scorer.score([*test, tmp_path / "notes.txt"], batch_size=5)  # batches of 5 and 3: the batch size is free
    assert_parity(got, as_exported(det).score(test, progress=False))
    assert [p.name for p, _ in got.skipped] == ["notes.txt"]
    if name == "gaussian":
        assert got.decisions[defects(got)].all()


def test_fp32_parity_with_each_image_standardised(dataset: Path, tmp_path: Path) -> None:
    """input norm "standard" standardises each image inside the backbone, so the graph carries it."""
    train, test = list_files(dataset / "train" / "good"), list_files(dataset / "test")
    ext = FeatureExtractor(image_size=96, precision="fp32", pooled_levels=("s8", "s16"), input_norm="standard")
    det = create("gaussian", ext).fit(train, progress=False)
    scorer = OnnxScorer(export_onnx(det, tmp_path / "g.onnx"))
    assert scorer.meta["normalisation"]["contrast"] == 0.25
    assert_parity(scorer.score(test, batch_size=5), det.score(test, progress=False))


def test_cli_export_patchcore_ivf_model(dataset: Path, tmp_path: Path) -> None:
    """A model whose bank is searched by IVF: the graph searches exactly, as as_exported(det) does."""
    train, test = list_files(dataset / "train" / "good"), list_files(dataset / "test")
    # s8/s16 as the parity tests: IVF's search does not depend on the levels, and s32 cost a deeper backbone
    det = create("patchcore", FeatureExtractor(image_size=96, precision="fp32", pooled_levels=("s8", "s16")),
                 exact_search_max=50)
    det.fit(train, progress=False).save(tmp_path / "model")
    assert len(det.cells_)  # IVF
    r = normalcy("export", str(tmp_path / "model"), "-o", str(tmp_path / "pc.onnx"))
    assert r.returncode == 0, r.stderr
    scorer = OnnxScorer(tmp_path / "pc.onnx")
    assert scorer.meta["exact_search"] is True
    assert_parity(scorer.score(test), as_exported(det).score(test, progress=False))
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
                              ("junk.onnx", [], "cannot load it as an ONNX model")):
        r = CliRunner().invoke(app, ["predict", str(tmp_path / model), str(tmp_path / "new"), "-o",
                                     str(tmp_path / "x"), *args])
        assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output  # an error, not a crash
        assert says in r.output and model in r.output, r.output


def test_not_exportable_and_bad_options(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot export musc: musc is zero-shot"):
        export_onnx(MuSc(), tmp_path / "m.onnx")
    with pytest.raises(NotFittedError):
        export_onnx(create("gaussian"), tmp_path / "g.onnx")
    pq = create("patchcore", FeatureExtractor(image_size=96, precision="fp32"), coreset_ratio=0.2, max_memory_mb=0.01)
    assert len(pq.fit(list_files(dataset / "train" / "good"), progress=False).codes_)  # the bank: IVF-PQ codes
    with pytest.raises(InputError, match="cannot export this patchcore model: its memory bank is kept as IVF-PQ"):
        export_onnx(pq, tmp_path / "pq.onnx")
    with pytest.raises(InputError, match="bfloat16"):
        export_onnx(create("gaussian"), tmp_path / "g.onnx", precision="bf16")
    r = normalcy("export", str(dataset), "-o", str(tmp_path / "x.onnx"), "--precision", "int8")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1 and "--calibration" in r.stderr
    r = normalcy("export", str(dataset), "-o", str(tmp_path / "x.onnx"), "--calibration", str(dataset))
    assert r.returncode == 1 and r.stderr.strip() == (  # fp32 (the default) was exported, the images ignored
        "error: --calibration applies to --precision int8: an fp32 graph is not calibrated")


def test_export_refuses_series_models_and_a_folder_as_output(tmp_path: Path) -> None:
    """Before any model is loaded: a series model has no graph (it was said to be 'not a detector'), and an
    existing folder as --output raised IsADirectoryError after the whole export."""
    from normalcy.api import export

    series = tmp_path / "series_model"
    series.mkdir()
    (series / "model.json").write_text(json.dumps({"kind": "series"}))
    with pytest.raises(InputError, match="is a series model: only image models are exported"):
        export(series, tmp_path / "s.onnx")
    with pytest.raises(InputError, match="a folder; output names the ONNX file"):
        export(tmp_path / "no_model_needed_yet", tmp_path)


def test_export_says_what_is_wrong_with_its_paths(tmp_path: Path) -> None:
    """Before any model is loaded: --output below a file said "cannot write there (File exists)", an exported
    .onnx (or a path that does not exist) given as the model said "not a normalcy model (no model.json)", and
    --calibration's folder was named without the option ("folder not found: X")."""
    from normalcy.api import export

    (tmp_path / "model.onnx").write_bytes(b"an exported model")
    with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'model.onnx' / 'a' / 'x.onnx'}: cannot write there "
                                                   f"({tmp_path / 'model.onnx'} is a file, not a folder)")):
        export(tmp_path / "no_model_needed_yet", tmp_path / "model.onnx" / "a" / "x.onnx")
    with pytest.raises(InputError, match="model.onnx: an exported ONNX model, not a model folder: give the folder"):
        export(tmp_path / "model.onnx", tmp_path / "again.onnx")
    with pytest.raises(InputError, match="missing: not a normalcy model: no such file or folder"):
        export(tmp_path / "missing", tmp_path / "m.onnx")
    with pytest.raises(InputError, match="^" + re.escape(f"calibration: folder not found: {tmp_path / 'nowhere'}")):
        export(tmp_path / "missing", tmp_path / "m.onnx", precision="int8", calibration=tmp_path / "nowhere")


def test_int8_quantises_the_backbone(gaussian: Detector, dataset: Path, tmp_path: Path) -> None:
    """int8: every backbone convolution reads int8 weights and activations (the search for the backbone's nodes
    once found none, and the int8 model was silently the fp32 one); the arithmetic after it stays float."""
    import onnx

    det, train, test = gaussian, list_files(dataset / "train" / "good"), list_files(dataset / "test")
    graph = onnx.load(str(export_onnx(det, tmp_path / "g8.onnx", "int8", calibration_paths=train[:8]))).graph
    made_by = {out: n for n in graph.node for out in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert convs and all(made_by[n.input[0]].op_type == "DequantizeLinear" for n in convs)
    assert all(made_by[n.input[1]].op_type == "DequantizeLinear" for n in convs)
    assert not any(made_by.get(i) is not None and made_by[i].op_type == "DequantizeLinear"
                   for n in graph.node if n.op_type == "MatMul" for i in n.input)
    got, ref = OnnxScorer(tmp_path / "g8.onnx").score(test), det.score(test, progress=False)
    assert not np.allclose(got.scores, ref.scores)  # quantised: scores move
    assert got.decisions[defects(got)].all()


# -- an exported file is untrusted input: small hand-made graphs, checked on loading and on every run ------------

TINY_META = {"detector": "gaussian", "precision": "fp32", "threshold": 100.0, "fpr": 0.01, "map_range": [0.0, 1.0],
             "image_size": [32, 32], "input": "pixels", "resize": "cv2.INTER_AREA", "normalisation": {},
             "outputs": {}, "backbone": "efficientnet_lite0", "normalcy_version": "0"}


def tiny_onnx(path: Path, meta: object = TINY_META, scores: str = "ok", maps_rank: int = 3,
              names: tuple[str, str] = ("image_scores", "maps"), external: bool = False) -> Path:
    """A graph with export's interface, scoring an image by its brightest pixel; ``scores`` breaks its output:
    'empty', 'doubled' (2N values), 'nan', 'one image' (fails on a batch of more), 'loop' (runs for ever), 'giant' (a 2**40-value tensor), 'computed' (a
    tensor of 245 MB for two images, its shape computed from the input's), 'slow' (40 matrix products). ``meta``: a dict (as JSON) or the raw metadata string."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper

    nodes = [h.make_node("Cast", ["pixels"], ["xf"], to=T.FLOAT),
             h.make_node("ReduceMean", ["xf"], ["m3"], axes=[3], keepdims=0),  # N x 32 x 32
             h.make_node("ReduceMax", ["m3"], ["s32"], axes=[1, 2], keepdims=0),
             h.make_node("Cast", ["s32"], ["s64"], to=T.DOUBLE)]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([1], np.int64), "one"),
             numpy_helper.from_array(np.array([np.nan]), "nan"),
             numpy_helper.from_array(np.array(3, np.int64), "trip"), numpy_helper.from_array(np.array(True), "go"),
             numpy_helper.from_array(np.array([2**20, 2**20], np.int64), "giant")]
    body = h.make_graph([h.make_node("Identity", ["go_in"], ["go_out"]), h.make_node("Identity", ["v_in"], ["v_out"])],
                        "body", [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("go_in", T.BOOL, []),
                                 h.make_tensor_value_info("v_in", T.DOUBLE, None)],
                        [h.make_tensor_value_info("go_out", T.BOOL, []), h.make_tensor_value_info("v_out", T.DOUBLE, None)])
    last = {"ok": h.make_node("Identity", ["s64"], [names[0]]),
            "empty": h.make_node("Slice", ["s64", "zero", "zero"], [names[0]]),
            "doubled": h.make_node("Concat", ["s64", "s64"], [names[0]], axis=0),
            "nan": h.make_node("Mul", ["s64", "nan"], [names[0]]),
            "one image": h.make_node("Reshape", ["s64", "one"], [names[0]]),
            "loop": h.make_node("Loop", ["trip", "go", "s64"], [names[0]], body=body),
            "giant": h.make_node("Expand", ["s64", "giant"], [names[0]]),
            "computed": h.make_node("Add", ["s64", "zsum"], [names[0]]),
            "slow": h.make_node("Add", ["s64", "ysum"], [names[0]])}[scores]
    if scores == "computed":  # a shape computed from the input's at run time: N x 3200 x 3200 x 3 zeros
        inits.append(numpy_helper.from_array(np.array([1, 100, 100, 1], np.int64), "times"))
        nodes += [h.make_node("Shape", ["pixels"], ["shape"]), h.make_node("Mul", ["shape", "times"], ["big"]),
                  h.make_node("ConstantOfShape", ["big"], ["z"], value=numpy_helper.from_array(np.zeros(1, np.float32))),
                  h.make_node("ReduceSum", ["z"], ["z32"], keepdims=0), h.make_node("Cast", ["z32"], ["zsum"], to=T.DOUBLE)]
    if scores == "slow":  # 40 products of 400 x 400 matrices, one after the other
        inits.append(numpy_helper.from_array(np.eye(400), "eye"))
        nodes += [h.make_node("ReduceMax", ["s64"], ["top"], keepdims=0), h.make_node("Mul", ["eye", "top"], ["e0"])]
        nodes += [h.make_node("MatMul", ["e0" if k == 0 else f"y{k - 1}", "eye"], [f"y{k}"]) for k in range(40)]
        nodes.append(h.make_node("ReduceSum", ["y39"], ["ysum"], keepdims=0))
    maps = (h.make_node("Identity", ["m3"], [names[1]]) if maps_rank == 3
            else h.make_node("ReduceMax", ["m3"], [names[1]], axes=[2], keepdims=0))
    outs = [h.make_tensor_value_info(names[0], T.DOUBLE, ["N"]),
            h.make_tensor_value_info(names[1], T.FLOAT, ["N", 32, 32][:maps_rank])]
    graph = h.make_graph([*nodes, last, maps], "tiny", [h.make_tensor_value_info("pixels", T.UINT8, ["N", 32, 32, 3])],
                         outs, inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    h.set_model_props(model, {META_KEY: meta if isinstance(meta, str) else json.dumps(meta)})
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, location=path.name + ".data", size_threshold=0)
    else:
        onnx.save_model(model, str(path))
    return path


def test_a_sound_tiny_graph_scores(tmp_path: Path) -> None:
    scorer = OnnxScorer(tiny_onnx(tmp_path / "ok.onnx"))
    assert scorer.size == (32, 32) and scorer.threshold == 100.0
    s, m = scorer.run(np.full((2, 32, 32, 3), 200, np.uint8))
    assert s.tolist() == [200.0, 200.0] and m.shape == (2, 32, 32)


def test_an_exported_model_runs_on_the_threads_torch_was_given(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`predict model.onnx --threads 1` set torch's threads only: onnxruntime took every core."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    scorer = OnnxScorer(tiny_onnx(tmp_path / "ok.onnx"))
    assert scorer.session.get_session_options().intra_op_num_threads == 1
    assert OnnxScorer(tmp_path / "ok.onnx", threads=3).session.get_session_options().intra_op_num_threads == 3


@pytest.mark.parametrize("kwargs, words", [(dict(threads=10**6), "threads must be 1 to"),
                                            (dict(threads=-1), "threads must be 1 to"),
                                            (dict(max_bytes=-5), "max_bytes must be a positive number of bytes"),
                                            (dict(run_seconds=-1), "run_seconds must be a positive number of seconds"),
                                            (dict(run_seconds=float("nan")), "run_seconds must be a positive number")])
def test_scorer_settings_are_checked_first(kwargs: dict, words: str, tmp_path: Path) -> None:
    """threads=10**6 started a million threads (it hung), max_bytes=-5 was pybind's RuntimeError, run_seconds=-1
    or NaN no limit at all: each is one line before the file is read."""
    with pytest.raises(InputError, match=re.escape(words)):
        OnnxScorer(tmp_path / "missing.onnx", **kwargs)


def _without(key: str) -> dict:
    return {k: v for k, v in TINY_META.items() if k != key}


# (how the file is made, words its one-line error must contain)
BAD_ONNX = {
    "metadata not JSON": (dict(meta="{threshold: 1"), "metadata 'normalcy': invalid JSON"),
    "metadata a list": (dict(meta="[1, 2]"), "expected a JSON object, got list"),
    "metadata a 5000-digit number": (dict(meta='{"threshold": ' + "9" * 5000 + "}"),
                                     "metadata 'normalcy': invalid JSON (Exceeds the limit (4300 digits)"),
    "image_size missing": (dict(meta=_without("image_size")), "image_size: missing"),
    "image_size 0": (dict(meta={**TINY_META, "image_size": [0, 32]}), "image_size.0: input should be greater than"),
    "image_size -32": (dict(meta={**TINY_META, "image_size": [-32, -32]}), "image_size.0:"),
    "image_size one number": (dict(meta={**TINY_META, "image_size": 32}), "image_size:"),
    "image_size not the graph's": (dict(meta={**TINY_META, "image_size": [64, 64]}),
                                   "input pixels: shape ['N', 32, 32, 3], expected [N, 64, 64, 3]"),
    "threshold text nan": (dict(meta={**TINY_META, "threshold": "nan"}), "threshold: input should be a valid number"),
    "threshold NaN": (dict(meta=json.dumps({**TINY_META, "threshold": float("nan")})),
                      "threshold: input should be a finite number"),
    "threshold missing": (dict(meta=_without("threshold")), "threshold: missing"),
    "map_range reversed": (dict(meta={**TINY_META, "map_range": [1.0, 0.0]}), "map_range: low must be below high"),
    "unknown detector": (dict(meta={**TINY_META, "detector": "musc"}), "detector: not an exportable detector"),
    "typo key": (dict(meta={**TINY_META, "treshold": 1.0}), "treshold: unknown key"),
    "output names": (dict(names=("scores", "maps")), "the graph's outputs are ['scores', 'maps']"),
    "2-D maps": (dict(maps_rank=2), "output maps: shape ['N', 32], expected rank 3"),
    "empty scores": (dict(scores="empty"), "output image_scores: shape (0,) for 2 image(s), expected (2,)"),
    "scores of another length": (dict(scores="doubled"), "output image_scores: shape (4,) for 2 image(s)"),
    "NaN scores": (dict(scores="nan"), "output image_scores: 2 NaN or infinite value(s)"),
    # onnxruntime's own error was a traceback (and the probe's one image passed, so predict failed mid-run)
    "one image at a time": (dict(scores="one image"), "the graph failed on a batch of 2 image(s) ("),
    "external data": (dict(external=True), "weights in external data files, refused"),
    # a Loop (of 2**62 turns in a crafted file, 3 here: the test must not hang) ran the loading probe for ever
    "a loop": (dict(scores="loop"), "a graph with control flow (Loop), which `normalcy export` never writes: refused"),
    # a constant shape of 2**40 values: one a machine can almost hold is filled whole before anything fails
    "a giant shape": (dict(scores="giant"), "its Expand node makes a tensor of 1.1e+12 values, over the 2.15e+09"),
}


@pytest.mark.parametrize("case", sorted(BAD_ONNX))
def test_crafted_onnx_is_one_line(case: str, tmp_path: Path) -> None:
    kwargs, words = BAD_ONNX[case]
    path = tiny_onnx(tmp_path / "model.onnx", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(InputError) as info:
        OnnxScorer(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ") and words in msg, msg


def _external(tensor, location: str):
    """``tensor`` made to keep its data in the file ``location`` (4 bytes from its start)."""
    from onnx import TensorProto

    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "4")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


@pytest.mark.parametrize("where", ["a local function's Constant", "a sparse Constant"])
def test_external_data_is_refused_wherever_it_is(where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the graph's own tensors were checked: a local function's Constant (or a Constant's sparse value) kept
    in a file named relative to the working folder was read into the scores (a file of 4 bytes 1..4 added 10)."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper

    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.bin").write_bytes(bytes([1, 2, 3, 4]))
    model = onnx.load(str(tiny_onnx(tmp_path / "ok.onnx")))
    if where == "a sparse Constant":
        values = _external(numpy_helper.from_array(np.zeros(4, np.uint8), "v"), "secret.bin")
        leak = h.make_sparse_tensor(values, numpy_helper.from_array(np.arange(4, dtype=np.int64), "i"), [4])
        nodes = [h.make_node("Constant", [], ["k"], sparse_value=leak)]
    else:
        leak = _external(numpy_helper.from_array(np.zeros(4, np.uint8), "c"), "secret.bin")
        body = [h.make_node("Constant", [], ["k"], value=leak)]
        model.functions.append(h.make_function("local", "Leak", [], ["k"], body, [h.make_opsetid("", 13)]))
        model.opset_import.append(h.make_opsetid("local", 1))
        nodes = [h.make_node("Leak", [], ["k"], domain="local")]
    nodes += [h.make_node("Cast", ["k"], ["kd"], to=T.DOUBLE), h.make_node("ReduceSum", ["kd"], ["ks"], keepdims=1),
              h.make_node("Add", ["pre", "ks"], ["image_scores"])]
    next(n for n in model.graph.node if "image_scores" in n.output).output[0] = "pre"
    model.graph.node.extend(nodes)
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(InputError, match="model.onnx: weights in external data files, refused"):
        OnnxScorer(path)


def _scores_plus(path: Path, nodes: list, value: str, inits: list = (), sparse: list = ()) -> Path:
    """tiny_onnx's model with ``nodes`` added, their float tensor ``value`` summed into the scores."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    model = onnx.load(str(tiny_onnx(path)))
    next(n for n in model.graph.node if "image_scores" in n.output).output[0] = "pre"
    model.graph.node.extend([*nodes, h.make_node("ReduceSum", [value], ["vs"], keepdims=0),
                             h.make_node("Cast", ["vs"], ["vd"], to=T.DOUBLE),
                             h.make_node("Add", ["pre", "vd"], ["image_scores"])])
    model.graph.initializer.extend(inits)
    model.graph.sparse_initializer.extend(sparse)
    path.write_bytes(model.SerializeToString())
    return path


def test_work_done_on_loading_is_bounded(tmp_path: Path) -> None:
    """onnxruntime computes a node of constants alone when it loads the file (constant folding), outside a run's
    arena and time limit: a Tile of a constant took 64 MiB past a 16 MiB limit (a crafted file: any size), twenty
    constant matrix products ran past the time limit. Such work is now the run's, under its limits."""
    from onnx import helper as h
    from onnx import numpy_helper

    tile = _scores_plus(tmp_path / "tile.onnx", [h.make_node("Tile", ["unit", "reps"], ["big"])], "big",
                        [numpy_helper.from_array(np.ones((1, 1), np.float32), "unit"),
                         numpy_helper.from_array(np.array([2**12, 2**12], np.int64), "reps")])
    with pytest.raises(InputError, match=r"tile.onnx: the graph asked for 0.0625 GiB on a batch of 2 image\(s\), over "
                                         r"the 0.0156 GiB a run may use: refused"):
        OnnxScorer(tile, max_bytes=2**24)
    # a shape computed from the input's, but fixed: the shape of a reduction over every side, [1, 1, 1, 1]
    fixed = [h.make_node("ReduceMax", ["xf"], ["r"], keepdims=1), h.make_node("Shape", ["r"], ["rs"]),
             h.make_node("Mul", ["rs", "times"], ["big"]),
             h.make_node("ConstantOfShape", ["big"], ["z"], value=numpy_helper.from_array(np.ones(1, np.float32)))]
    times = numpy_helper.from_array(np.array([2**12, 2**12, 1, 1], np.int64), "times")
    with pytest.raises(InputError, match=r"fixed.onnx: the graph asked for 0.0625 GiB on a batch of 2 image\(s\)"):
        OnnxScorer(_scores_plus(tmp_path / "fixed.onnx", fixed, "z", [times]), max_bytes=2**24)
    eye = numpy_helper.from_array(np.eye(400, dtype=np.float32), "eye")
    products = [h.make_node("MatMul", ["eye" if k == 0 else f"y{k - 1}", "eye"], [f"y{k}"]) for k in range(20)]
    with pytest.raises(InputError, match=r"products.onnx: the graph ran over 0.001 s on a batch of 2 image\(s\)"):
        OnnxScorer(_scores_plus(tmp_path / "products.onnx", products, "y19", [eye]), run_seconds=0.001)


def test_a_sparse_tensor_is_refused(tmp_path: Path) -> None:
    """onnxruntime makes a sparse tensor dense on loading, whatever size it declares (a file of 900 bytes took
    1 GiB twice for 16384 x 16384); here 4096 x 4096."""
    from onnx import helper as h
    from onnx import numpy_helper

    sparse = h.make_sparse_tensor(numpy_helper.from_array(np.ones(1, np.float32), "sp"),
                                  numpy_helper.from_array(np.array([0], np.int64), "i"), [4096, 4096])
    for name, kwargs in (("init.onnx", dict(sparse=[sparse])),
                         ("constant.onnx", dict(nodes=[h.make_node("Constant", [], ["sp"], sparse_value=sparse)]))):
        path = _scores_plus(tmp_path / name, **{"nodes": [], **kwargs}, value="sp")  # type: ignore[arg-type]
        with pytest.raises(InputError, match=f"{name}: a sparse tensor, which `normalcy export` never writes: refused"):
            OnnxScorer(path)


@pytest.mark.parametrize("field, words", [("opset", "Opset 99 is under development"),
                                          ("ir_version", "Unsupported model IR version: 99")])
def test_onnxruntime_s_reason_is_shown(field: str, words: str, tmp_path: Path) -> None:
    """A file newer than the installed onnxruntime said "cannot load it as an ONNX model (... model_load_utils.h:46
    void onnxruntime::model_load_utils::ValidateOpsetForDomain(const std::unordered_map<std::__cxx11::basic_", cut
    at 200 characters of C++ source places and signatures before the reason."""
    import onnx

    model = onnx.load(str(tiny_onnx(tmp_path / "ok.onnx")))
    if field == "opset":
        model.opset_import[0].version = 99
    else:
        model.ir_version = 99
    (tmp_path / "model.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(InputError) as info:
        OnnxScorer(tmp_path / "model.onnx")
    assert words in str(info.value) and "onnxruntime_src" not in str(info.value), str(info.value)


def test_a_shape_computed_at_run_time_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shape computed from the input (not a constant, so not refused on loading) asked onnxruntime for what it
    liked: a run allocates at most MAX_RUN_BYTES (or the machine's memory), here lowered to 64 MiB."""
    import normalcy.scale.export as export

    path = tiny_onnx(tmp_path / "model.onnx", scores="computed")
    monkeypatch.setattr(export, "MAX_RUN_BYTES", 2**26)
    with pytest.raises(InputError, match=r"model.onnx: the graph asked for 0.229 GiB on a batch of 2 image\(s\), over "
                                         r"the 0.0625 GiB a run may use: refused"):
        OnnxScorer(path)
    assert OnnxScorer(path, max_bytes=2**30).run(np.zeros((1, 32, 32, 3), np.uint8))[0].shape == (1,)


def test_a_run_has_a_time_limit(tmp_path: Path) -> None:
    """Nothing stopped a graph's run (a straight graph of heavy nodes, here 40 matrix products)."""
    with pytest.raises(InputError, match=r"the graph ran over 0.01 s on a batch of 2 image\(s\): stopped"):
        OnnxScorer(tiny_onnx(tmp_path / "model.onnx", scores="slow"), run_seconds=0.01)


def test_runs_share_one_timer_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each run started a threading.Timer (a thread: about 65 us of a batch-1 call); one thread watches every run,
    and a short limit after a long one still stops its run in time."""
    import threading

    fast = OnnxScorer(tiny_onnx(tmp_path / "ok.onnx"))  # its probe ran with a deadline 600 s away
    started: list[str] = []
    start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda self: (started.append(self.name), start(self))[1])
    for _ in range(5):
        fast.run(np.zeros((1, 32, 32, 3), np.uint8))
    assert started == []
    with pytest.raises(InputError, match=r"the graph ran over 0.01 s"):
        OnnxScorer(tiny_onnx(tmp_path / "model.onnx", scores="slow"), run_seconds=0.01)


def _one_slow_node(path: Path, side: int) -> Path:
    """tiny_onnx's model plus one product of two side x side matrices of ones, their side computed from the
    input's at run time (so nothing is refused or folded on loading): one node that runs for seconds."""
    from onnx import helper as h
    from onnx import numpy_helper

    nodes = [h.make_node("Shape", ["pixels"], ["shape"]), h.make_node("Slice", ["shape", "one", "two"], ["h"]),
             h.make_node("Mul", ["h", "times"], ["k"]), h.make_node("Concat", ["k", "k"], ["kk"], axis=0),
             h.make_node("ConstantOfShape", ["kk"], ["z"], value=numpy_helper.from_array(np.ones(1, np.float32))),
             h.make_node("MatMul", ["z", "z"], ["zz"])]
    inits = [numpy_helper.from_array(np.array([2], np.int64), "two"),
             numpy_helper.from_array(np.array([side // 32], np.int64), "times")]
    return _scores_plus(path, nodes, "zz", inits)


def test_one_slow_node_does_not_hold_the_caller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime looks at a run's terminate flag only between nodes: one product of two 8192 x 8192 matrices
    held the caller 43 s past a 0.5 s limit. The caller now gets its error once the limit and a grace are past,
    while the node ends on its own thread (here a product of 4096 x 4096 matrices, two seconds or more on 2 cores;
    the limit leaves time for the nodes before it even on a loaded machine, which stop at once if it runs out
    there: at 0.1 s this test failed once at load 10)."""
    import time

    import normalcy.scale.export as export

    monkeypatch.setattr(export, "GRACE_SECONDS", 0.001)
    path = _one_slow_node(tmp_path / "model.onnx", 4096)
    with pytest.raises(InputError, match=r"model.onnx: the graph ran over 0.3 s on a batch of 2 image\(s\) and one "
                                         r"of its nodes did not stop within 0.001 s more: abandoned"):
        OnnxScorer(path, run_seconds=0.3)
    assert export._WORKERS.abandoned == 1  # the caller did not wait for the node
    waited = time.monotonic()
    while export._WORKERS.abandoned and time.monotonic() - waited < 120:  # the node ends, and is counted off
        time.sleep(0.01)
    assert export._WORKERS.abandoned == 0


def test_a_run_given_up_on_is_counted_until_it_ends(monkeypatch: pytest.MonkeyPatch, ctrl_c: None) -> None:
    """The workers' bookkeeping, with a call that blocks until told: a run past its time and grace, and one
    interrupted by Ctrl-C (which waited for the whole node before), set the terminate flag, return at once and
    count as abandoned until the call ends; the worker is then reused."""
    import os
    import signal
    import threading
    import time
    from types import SimpleNamespace

    import normalcy.scale.export as export

    monkeypatch.setattr(export, "GRACE_SECONDS", 0.01)
    workers, gate = export._Workers(), threading.Event()
    options = SimpleNamespace(terminate=False)
    assert workers.run(gate.wait, options, 0.01) is None and options.terminate and workers.abandoned == 1
    gate.set()
    waited = time.monotonic()
    while workers.abandoned and time.monotonic() - waited < 10:
        time.sleep(0.001)
    assert workers.abandoned == 0 and workers.run(lambda: 42, SimpleNamespace(terminate=False), 5) == 42
    gate.clear()
    options = SimpleNamespace(terminate=False)
    threading.Timer(0.05, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        workers.run(gate.wait, options, 60)
    assert options.terminate and workers.abandoned == 1
    gate.set()


def test_a_time_limit_past_what_a_lock_can_wait_scores(tmp_path: Path) -> None:
    """A limit of 1e10 s (meant as none: inf is refused) made each run's wait raise OverflowError ("timeout value is
    too large"), said as "the graph ran over 1e+10 s" at once and counted as abandoned: the wait is capped now."""
    import normalcy.scale.export as export

    scorer = OnnxScorer(tiny_onnx(tmp_path / "model.onnx"), run_seconds=1e10)
    assert scorer.run(np.full((1, 32, 32, 3), 7, np.uint8))[0].tolist() == [7.0]
    assert export._WORKERS.abandoned == 0


def test_the_cli_ends_at_once_while_a_node_runs_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A normal exit with a node still running waited for it (minutes) and then aborted ("terminate called
    without an active exception", exit code 134): the command says its error and ends the process itself."""
    import normalcy.cli as cli
    import normalcy.scale.export as export

    ended: list[int] = []

    def _exit(code: int) -> None:
        ended.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(export._WORKERS, "abandoned", 1)
    monkeypatch.setattr(cli.os, "_exit", _exit)
    with pytest.raises(SystemExit):
        cli._fail("the graph ran over 600 s: abandoned")
    assert ended == [1]


@pytest.mark.parametrize("pixels, got", [(np.zeros((2, 16, 16, 3), np.uint8), "uint8 [2, 16, 16, 3]"),
                                         (np.zeros((2, 32, 32, 3), np.float32), "float32 [2, 32, 32, 3]"),
                                         (np.zeros((0, 32, 32, 3), np.uint8), "uint8 [0, 32, 32, 3]"),
                                         ([[0]], "list")])
def test_a_run_checks_its_input_against_the_metadata(tmp_path: Path, pixels: object, got: str) -> None:
    """Pixels of another size or type went to onnxruntime, whose error came back cut to 300 characters."""
    scorer = OnnxScorer(tiny_onnx(tmp_path / "model.onnx"))
    with pytest.raises(InputError, match=re.escape(f"the graph takes uint8 [N, 32, 32, 3] (N at least 1), not {got}")):
        scorer.run(pixels)  # type: ignore[arg-type]


def test_outputs_are_checked_on_every_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A graph sound on the loading probe but not on a later batch is refused there, not written as scores."""
    scorer = OnnxScorer(tiny_onnx(tmp_path / "model.onnx"))
    monkeypatch.setattr(scorer.session, "run", lambda *a: [np.zeros(3), np.zeros((3, 4, 4), np.float32)])
    with pytest.raises(InputError, match=r"output image_scores: shape \(3,\) for 2 image\(s\)"):
        scorer.run(np.zeros((2, 32, 32, 3), np.uint8))
    monkeypatch.setattr(scorer.session, "run", lambda *a: [np.zeros(2), np.zeros((2, 4), np.float32)])
    with pytest.raises(InputError, match=r"output maps: shape \(2, 4\) for 2 image\(s\), expected \(2, h, w\)"):
        scorer.run(np.zeros((2, 32, 32, 3), np.uint8))
    monkeypatch.setattr(scorer.session, "run", lambda *a: [np.zeros(2), np.full((2, 4, 4), np.inf, np.float32)])
    with pytest.raises(InputError, match="output maps: 32 NaN or infinite"):
        scorer.run(np.zeros((2, 32, 32, 3), np.uint8))


def test_a_large_input_size_goes_fewer_to_a_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the PyTorch path does (BATCH_PIXELS): a graph for 4096 x 4096 inputs ran 8 at a time, all at once in
    the graph, where predict with the model folder takes one."""
    from PIL import Image

    monkeypatch.setattr("normalcy.detectors.base.BATCH_PIXELS", 3 * 32 * 32)  # the tiny graph's input: 32 x 32
    scorer = OnnxScorer(tiny_onnx(tmp_path / "ok.onnx"))
    sizes: list[int] = []
    run = scorer.run
    monkeypatch.setattr(scorer, "run", lambda pixels: (sizes.append(len(pixels)), run(pixels))[1])
    for k in range(7):
        Image.fromarray(np.full((40, 50, 3), 30 * k, np.uint8)).save(tmp_path / f"{k}.png")
    got = scorer.score(tmp_path, batch_size=8)
    assert sizes == [3, 3, 1] and got.scores.tolist() == [30.0 * k for k in range(7)]


def test_odd_files_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    (tmp_path / "garbage.onnx").write_bytes(b"\x08\x07garbage" * 100)
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "folder.onnx").mkdir()
    os.mkfifo(tmp_path / "fifo.onnx")  # reading it would block forever
    for name, words in [("garbage.onnx", ""), ("empty.onnx", "an empty file, not an ONNX model"),
                        ("folder.onnx", "not a regular file"),
                        ("fifo.onnx", "not a regular file"), ("missing.onnx", "no such file")]:
        with pytest.raises(InputError) as info:
            OnnxScorer(tmp_path / name)
        assert "\n" not in str(info.value) and words in str(info.value), str(info.value)
    monkeypatch.setattr("normalcy.scale.export.MAX_ONNX_BYTES", 100)
    with pytest.raises(InputError, match="too large"):
        OnnxScorer(tiny_onnx(tmp_path / "big.onnx"))


@pytest.mark.parametrize("case", ["threshold text nan", "2-D maps", "empty scores", "metadata not JSON",
                                  "one image at a time"])
def test_cli_predict_with_a_crafted_onnx(case: str, dataset: Path, tmp_path: Path) -> None:
    """One line on stderr, exit code 1, and no run folder with a header-only scores.csv."""
    kwargs, words = BAD_ONNX[case]
    path = tiny_onnx(tmp_path / "model.onnx", **kwargs)  # type: ignore[arg-type]
    r = CliRunner().invoke(app, ["predict", str(path), str(dataset / "test"), "-o", str(tmp_path / "run")])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and words in lines[0], r.output
    assert not (tmp_path / "run" / "scores.csv").exists()


def test_a_bf16_model_exports_the_threshold_of_its_fp32_scores(dataset: Path, tmp_path: Path, caplog,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The graph runs fp32. A bf16 fit also sets a threshold for its scores with fp32 features: the export
    carries it, without a warning, and the graph decides as the model's fp32 path does at it. A model file from
    before (no threshold_fp32) still loads and exports with its bf16 threshold, a warning and a note."""
    ext = FeatureExtractor(image_size=96, precision="bf16", pooled_levels=("s8", "s16"))
    if ext.precision != "bf16":
        pytest.skip("this CPU has no native bf16")
    train, test = list_files(dataset / "train" / "good"), list_files(dataset / "test")
    det = create("gaussian", ext).fit(train, progress=False)
    assert det.threshold_fp32_ is not None and det.threshold_fp32_ != det.threshold_
    caplog.clear()
    with caplog.at_level("WARNING", logger="normalcy"):
        scorer = OnnxScorer(export_onnx(det, tmp_path / "bf16.onnx"))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert scorer.meta["threshold"] == det.threshold_fp32_ and "threshold_note" not in scorer.meta
    assert_parity(scorer.score(test, batch_size=5), as_exported(det).score(test, progress=False))

    meta = json.loads((det.save(tmp_path / "old") / "model.json").read_text())
    assert meta.pop("threshold_fp32") == det.threshold_fp32_
    (tmp_path / "old" / "model.json").write_text(json.dumps(meta))
    old = load(tmp_path / "old")
    assert old.threshold_fp32_ is None
    from normalcy.api import export  # in this process: the CLI's export is checked by test_cli_export_* (a process
    from normalcy.scale import export as exporting  # here cost 5-10 s of the suite's slowest test)

    # the same weights: the graph traced above is the old model's too (export replaces its metadata), so the
    # export's own path (metadata, warning, note, the file written) runs without a second trace of seconds
    monkeypatch.setattr(exporting, "_torch_export",
                        lambda graph, example, path: shutil.copy(tmp_path / "bf16.onnx", path))
    caplog.clear()
    with caplog.at_level("WARNING", logger="normalcy"):
        export(tmp_path / "old", tmp_path / "old.onnx")
    assert "the model's threshold was set on the bf16 model's scores" in caplog.text, caplog.text
    old_meta = OnnxScorer(tmp_path / "old.onnx").meta
    assert old_meta["threshold"] == det.threshold_ and "fit the model again" in old_meta["threshold_note"]


def test_export_output_is_checked_first_and_replaced_whole(gaussian: Detector, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """-o model/model.json replaced the model's own file with a graph in ONNX's JSON form, which nothing loads; a
    folder that cannot be written was a traceback after the whole export; an export that failed midway left the
    file it replaced half-written. Now: checked before any work, written beside and renamed into place."""
    from normalcy.api import export
    from normalcy.scale import export as ex

    gaussian.save(tmp_path / "model")
    before = (tmp_path / "model" / "model.json").read_bytes()
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "old.onnx").write_bytes(b"an earlier export")

    def no_work(*args: object) -> None:
        raise AssertionError("the export ran before its output was checked")

    monkeypatch.setattr(ex, "_torch_export", no_work)
    for out, words in ((tmp_path / "model" / "model.json", "model.json: the exported file's name must end in .onnx"),
                       (tmp_path / "model.bin", "must end in .onnx"),
                       (tmp_path / "a_file" / "m.onnx", r"m.onnx: cannot write there \(")):
        with pytest.raises(InputError, match=words):
            export(tmp_path / "model", out)
    assert (tmp_path / "model" / "model.json").read_bytes() == before
    with pytest.raises(AssertionError):  # an export that fails midway
        export(tmp_path / "model", tmp_path / "old.onnx")
    assert (tmp_path / "old.onnx").read_bytes() == b"an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "model", "old.onnx"]  # no partial file left
    r = CliRunner().invoke(app, ["export", str(tmp_path / "model"), "-o", str(tmp_path / "a_file" / "m.onnx")])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit) and "cannot write there" in r.output, r.output


def test_an_export_over_onnx_limit_is_said_not_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A graph over 2 GiB (a large PatchCore bank) failed in protobuf with a traceback after the export."""
    import onnx

    from normalcy.scale import export as ex

    model = onnx.load(str(tiny_onnx(tmp_path / "tiny.onnx")))
    monkeypatch.setattr(ex, "MAX_ONNX_BYTES", 100)
    with pytest.raises(InputError, match="big.onnx: not written: the graph is .* GiB, over"):
        ex._save(model, tmp_path / "staging.onnx", tmp_path / "big.onnx")
    assert not (tmp_path / "big.onnx").exists()


def test_an_export_killed_outright_leaves_nothing_the_next_export_keeps(tmp_path: Path) -> None:
    """An export killed outright (SIGKILL, the OOM killer: no finally runs) left its hidden
    .NAME.<pid>.partial.onnx for ever. The next export to that name deletes it; a live export's, whose process
    holds a lock on it, is kept, as are other files."""
    import fcntl
    import os

    from normalcy.scale import export as ex

    stale = tmp_path / ".m.4000001.partial.onnx"  # a killed process's: its lock went with it
    stale.write_bytes(b"half a graph")
    live = tmp_path / ".m.4000002.partial.onnx"  # another export's, being written now
    live.write_bytes(b"a graph being written")
    (tmp_path / ".other.4000003.partial.onnx").write_bytes(b"another name's")
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        staging = ex._stage(tmp_path / "m.onnx")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, staging.name,
                                                                     ".other.4000003.partial.onnx"])
    finally:
        os.close(fd)
        ex.release(staging)


def test_two_exports_of_one_process_stage_apart(tmp_path: Path) -> None:
    """The hidden file was named by the process id alone: two threads exporting to one name wrote one file (the
    second could not lock it), and one's rename or clean-up took the other's graph from under it."""
    from normalcy.scale import export as ex

    first, second = ex._stage(tmp_path / "m.onnx"), ex._stage(tmp_path / "m.onnx")
    try:
        assert first != second and first.exists() and second.exists()
        assert not ex.remove_if_stale(first) and not ex.remove_if_stale(second)  # each held by its export
    finally:
        ex.release(first)
        ex.release(second)
