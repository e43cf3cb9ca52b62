"""A model folder is data: crafted files give one clear line, and loading never runs its code."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from normalcy.cli import app
from normalcy.detectors import create, load
from normalcy.detectors.modelfile import (
    ExtractorMeta,
    check_tensors,
    read_model,
)
from normalcy.errors import InputError
from normalcy.images.backbones import custom_backbone
from normalcy.images.features import FeatureExtractor

# A custom backbone file that leaves a marker when Python runs it: proof of whether loading ran code.
NET_PY = '''
from pathlib import Path
from torch import nn

Path({marker!r}).write_text("imported")


def build() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 24, 3, stride=2, padding=1))
'''
NET_LEVELS = {"s8": "4", "s16": "6"}
NET_STRIDES = {"s8": 8, "s16": 16}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(12):
        p = d / f"{i:02d}.png"
        Image.fromarray((rng.random((48, 48, 3)) * 255).astype(np.uint8)).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, images: list[Path]) -> Path:
    """A real, small gaussian model."""
    det = create("gaussian", FeatureExtractor(image_size=64)).fit(images, progress=False)
    return det.save(tmp_path_factory.mktemp("m") / "model")


def _copy(model: Path, tmp_path: Path, meta: Callable[[dict], Any] | None = None,
          tensors: Callable[[dict], Any] | None = None) -> Path:
    """A copy of ``model`` with model.json and/or its tensors edited in place by the callables."""
    d = tmp_path / "crafted"
    shutil.copytree(model, d)
    if meta is not None:
        m = json.loads((d / "model.json").read_text())
        meta(m)
        (d / "model.json").write_text(json.dumps(m))
    if tensors is not None:
        t = load_file(str(d / "model.safetensors"))
        tensors(t)
        save_file(t, str(d / "model.safetensors"))
    return d


def _raises(d: Path, trust_code: bool = False) -> str:
    with pytest.raises(InputError) as info:
        load(d, trust_code=trust_code)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def _cli_fails(d: Path, images: list[Path], tmp_path: Path, *extra: str) -> str:
    """`normalcy predict` on a bad model: exit code 1, one line, no traceback; returns the line."""
    r = CliRunner().invoke(app, ["predict", str(d), str(images[0].parent), "-o", str(tmp_path / "out"), *extra])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 1, r.output
    assert isinstance(r.exception, SystemExit), r.exception  # not an uncaught exception
    assert "Traceback" not in r.output and len(lines) == 1, r.output
    return lines[0]


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def edit(m: dict) -> None:
        *parents, last = path.split(".")
        for p in parents:
            m = m[p]
        m[last] = value
    return edit


def _drop(path: str) -> Callable[[dict], None]:
    def edit(m: dict) -> None:
        *parents, last = path.split(".")
        for p in parents:
            m = m[p]
        del m[last]
    return edit


# (mutation of model.json, words the one-line error must contain)
JSON_CASES = {
    "missing threshold": (_drop("threshold"), "threshold: missing"),
    "missing extractor": (_drop("extractor"), "extractor: missing"),
    "missing backbone": (_drop("extractor.backbone"), "extractor.backbone: missing"),
    "threshold is text": (_set("threshold", "high"), "threshold:"),
    "n_train is text": (_set("n_train", "12"), "n_train:"),
    "n_train is true": (_set("n_train", True), "n_train:"),
    "params is a list": (_set("params", [1, 2]), "params:"),
    "levels are a string": (_set("extractor.patch_levels", "s8"), "extractor.patch_levels:"),
    "no patch levels": (_set("extractor.patch_levels", []), "extractor.patch_levels:"),
    "image_size 0": (_set("extractor.image_size", 0), "extractor.image_size: must be at least 32 (got 0)"),
    "image_size 20000": (_set("extractor.image_size", 20000),
                         "extractor.image_size: must be at most 4096 (got 20000)"),
    "image_size 3 sides": (_set("extractor.image_size", [64, 64, 64]), "extractor.image_size:"),
    "aggregate 0": (_set("extractor.aggregate", 0), "extractor.aggregate:"),
    "precision fp8": (_set("extractor.precision", "fp8"), "extractor.precision:"),
    "fpr 1.5": (_set("fpr", 1.5), "fpr:"),
    "threshold inf": (_set("threshold", float("inf")), "threshold: input should be a finite number"),
    "threshold_fp32 inf": (_set("threshold_fp32", float("inf")), "threshold_fp32: input should be a finite number"),
    "threshold_fp32 of an fp32 model": (lambda m: m.update(threshold_fp32=1.0, extractor={**m["extractor"],
                                                                                        "precision": "fp32"}),
                                        "threshold_fp32: only a bf16 model has one"),
    "map_range reversed": (_set("map_range", [2.0, 1.0]), "map_range"),
    "map_range of three": (_set("map_range", [0.0, 1.0, 2.0]), "map_range:"),
    "typo key": (_set("extractor.imagesize", 64), "extractor.imagesize: unknown key"),
    "unknown detector": (_set("detector", "nope"), "unknown detector 'nope'"),
    "format version 99": (_set("format_version", 99), "format version 99 is not supported"),
    "musc": (_set("detector", "musc"), "musc is zero-shot and has no saved models: use normalcy score-batch"),
    "unknown backbone": (_set("extractor.backbone", "resnet9000"), "extractor: unknown backbone 'resnet9000'"),
    "unknown level": (_set("extractor.patch_levels", ["s64"]), "extractor: patch_levels: the backbone has no level 's64'"),
    "unknown param": (_set("params.nope", 1), "nope"),
    # every number is bounded: a tampered model.json cannot ask for absurd work or memory
    "aggregate 10**6": (_set("extractor.aggregate", 10**6), "extractor.aggregate: input should be less than or equal to 15"),
    "pool_grid 10**6": (_set("extractor.pool_grid", 10**6), "extractor.pool_grid: input should be less than or equal"),
    "pool_max_dim 10**9": (_set("extractor.pool_max_dim", 10**9), "extractor.pool_max_dim: input should be less"),
    "tile 10**6": (_set("extractor.tile", 10**6), "extractor.tile: input should be less than or equal to 4096"),
    "overlap 10**6": (_set("extractor.overlap", 10**6), "extractor.overlap: input should be less than or equal"),
    "batch_size 10**12": (_set("batch_size", 10**12), "batch_size: input should be less than or equal to 1024"),
    "seed -1": (_set("seed", -1), "seed: input should be greater than or equal to 0"),
    "seed 2**40": (_set("seed", 2**40), "seed: input should be less than or equal"),
    "n_train 10**12": (_set("n_train", 10**12), "n_train: input should be less than or equal"),
    "patch_samples 10**12": (_set("params.patch_samples", 10**12),
                             "patch_samples: input should be less than or equal to 10000000"),
}


@pytest.mark.parametrize("case", sorted(JSON_CASES))
def test_crafted_model_json(case, model, tmp_path):
    edit, words = JSON_CASES[case]
    msg = _raises(_copy(model, tmp_path, meta=edit))
    assert "model.json" in msg and words in msg, msg


def test_nan_threshold(model, tmp_path):
    d = _copy(model, tmp_path)
    text = (d / "model.json").read_text()
    meta = json.loads(text)
    (d / "model.json").write_text(text.replace(json.dumps(meta["threshold"]), "NaN"))
    assert json.loads((d / "model.json").read_text())["threshold"] != meta["threshold"]  # NaN really written
    msg = _raises(d)
    assert "model.json: threshold: input should be a finite number (got NaN)" in msg, msg


@pytest.mark.parametrize("content,words", [
    (b"{", "invalid JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (b"\xff\xfe\x00", "cannot read"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b" " * (16 * 2**20 + 1), "too large"),
])
def test_unreadable_model_json(content, words, model, tmp_path):
    d = _copy(model, tmp_path)
    (d / "model.json").write_bytes(content)
    msg = _raises(d)
    assert "model.json" in msg and words in msg, msg


def test_no_model_json(model, tmp_path):
    d = _copy(model, tmp_path)
    (d / "model.json").unlink()
    assert "not a normalcy model (no model.json)" in _raises(d)


@pytest.mark.parametrize("case", ["missing", "empty", "garbage", "truncated"])
def test_crafted_safetensors_file(case, model, tmp_path):
    d = _copy(model, tmp_path)
    f = d / "model.safetensors"
    if case == "missing":
        f.unlink()
    elif case == "empty":
        f.write_bytes(b"")
    elif case == "garbage":
        f.write_bytes(b"this is not a safetensors file at all" * 10)
    else:
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    msg = _raises(d)
    assert "model.safetensors" in msg, msg
    assert {"missing": "missing", "empty": "empty file"}.get(case, "not a valid safetensors file") in msg


def _nan(t: dict) -> None:
    t["patch_mean"][0] = float("nan")


def _wrong_shape(t: dict) -> None:
    t["patch_precision"] = torch.eye(10, dtype=t["patch_precision"].dtype)


TENSOR_CASES = {
    "missing tensor": (lambda t: t.pop("map_scale"), "missing tensor 'map_scale' (a model saved by an older normalcy"),
    "wrong shape": (_wrong_shape, "does not fit a gaussian model"),  # named by the trial score in load_state_dict
    "NaN tensor": (_nan, "tensor 'patch_mean' has 1 NaN or infinite value(s)"),
    "zero map spread": (lambda t: t["map_scale"].zero_(), "tensor 'map_scale' has shape (4,) or a spread <= 0"),
    "bool tensor": (lambda t: t.update(flag=torch.ones(3, dtype=torch.bool)), "tensor 'flag' has dtype bool"),
    "extra tensor": (lambda t: t.update(stowaway=torch.zeros(3)), "stowaway"),
}


@pytest.mark.parametrize("case", sorted(TENSOR_CASES))
def test_crafted_tensors(case, model, tmp_path):
    edit, words = TENSOR_CASES[case]
    msg = _raises(_copy(model, tmp_path, tensors=edit))
    assert "model.safetensors" in msg and words in msg, msg


@pytest.mark.parametrize("case", ["image_size 20000", "format version 99", "musc", "missing tensor",
                                  "garbage", "NaN threshold", "aggregate 10**6", "batch_size 10**12",
                                  "patch_samples 10**12"])
def test_cli_predict_one_line(case, model, images, tmp_path):
    if case in JSON_CASES:
        d = _copy(model, tmp_path, meta=JSON_CASES[case][0])
    elif case in TENSOR_CASES:
        d = _copy(model, tmp_path, tensors=TENSOR_CASES[case][0])
    elif case == "garbage":
        d = _copy(model, tmp_path)
        (d / "model.safetensors").write_bytes(b"garbage")
    else:
        d = _copy(model, tmp_path, meta=_set("threshold", float("nan")))
    line = _cli_fails(d, images, tmp_path)
    assert "model." in line, line
    assert not (tmp_path / "out").exists()


def test_good_model_reads_and_loads(model, images):
    meta, tensors = read_model(model)
    assert meta.detector == "gaussian" and meta.extractor.image_size == 64
    assert meta.extractor.backbone_extras is None and tensors
    det = load(model)
    again = load(model)
    np.testing.assert_array_equal(det.score(images[:2], progress=False).scores,
                                  again.score(images[:2], progress=False).scores)


def test_an_image_size_of_height_and_width_is_accepted():
    cfg = {**FeatureExtractor(image_size=64).config, "image_size": [64, 96]}
    assert ExtractorMeta.model_validate(cfg).image_size == [64, 96]


def test_check_tensors_against_a_spec():
    state = {"patch_mean": torch.zeros(10), "patch_precision": torch.eye(10), "knn": torch.zeros(4, 3, dtype=torch.int64)}
    spec = {"patch_mean": ((None,), "float"), "patch_precision": ((None, None), "float"), "knn": ((4, 3), "int")}
    check_tensors(state, spec)
    with pytest.raises(InputError, match=r"^model.safetensors: tensor 'patch_precision' has shape \(10, 10\), "
                                         r"expected \(152, 152\)$"):
        check_tensors(state, {**spec, "patch_precision": ((152, 152), "float")})
    with pytest.raises(InputError, match=r"tensor 'patch_mean' has shape \(10,\), expected \(\?, 3\)"):
        check_tensors(state, {**spec, "patch_mean": ((None, 3), "float")})
    with pytest.raises(InputError, match="tensor 'knn' has dtype int64, expected float32"):
        check_tensors(state, {**spec, "knn": ((4, 3), "float32")})
    with pytest.raises(InputError, match="missing tensor 'bank'"):
        check_tensors(state, {**spec, "bank": ((None,), "float")})
    with pytest.raises(InputError, match="^m/model.safetensors: unexpected tensor 'knn'$"):
        check_tensors(state, {k: v for k, v in spec.items() if k != "knn"}, source="m/model.safetensors")
    with pytest.raises(InputError, match="tensor 'patch_mean' has 1 NaN"):
        check_tensors({"patch_mean": torch.tensor([0.0, float("-inf")])}, None)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_check_tensors_finds_nan_and_inf_without_torchs_thread_pool(dtype: torch.dtype,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.isfinite on its thread pool took 70-100 ms for each 8,000 x 16 bank on a busy two-core machine (0.45 s
    for each `auto` series model loaded, a set's model per series); numpy checks the values in 0.1 ms. torch's
    check is now only used to count the bad values of a refused tensor."""
    calls: list[int] = []
    real = torch.isfinite
    monkeypatch.setattr(torch, "isfinite", lambda t: calls.append(1) or real(t))
    bank = torch.zeros(8000, 16, dtype=dtype)
    check_tensors({"bank": bank}, None)
    assert calls == []
    for bad in (float("nan"), float("inf"), float("-inf")):
        bank[4000, 3] = bad
        with pytest.raises(InputError, match="tensor 'bank' has 1 NaN or infinite value"):
            check_tensors({"bank": bank}, None)
        bank[4000, 3] = 0.0


# ------------------------------------------------------------------ models that run code


@pytest.fixture(scope="module")
def code_model(tmp_path_factory: pytest.TempPathFactory, images: list[Path]) -> dict[str, Any]:
    """A gaussian model on a custom backbone from a .py file that leaves a marker when imported."""
    d = tmp_path_factory.mktemp("code")
    marker = d / "imported.marker"
    net_py = d / "net.py"
    net_py.write_text(NET_PY.format(marker=str(marker)))
    torch.manual_seed(0)
    ns: dict[str, Any] = {}
    exec(compile(net_py.read_text(), str(net_py), "exec"), ns)
    weights = d / "net.safetensors"
    save_file({k: v.contiguous() for k, v in ns["build"]().state_dict().items()}, str(weights))
    spec = custom_backbone(f"{net_py}:build", weights, levels=NET_LEVELS, strides=NET_STRIDES)
    det = create("gaussian", FeatureExtractor(spec, image_size=64)).fit(images, progress=False)
    return {"dir": det.save(d / "model"), "marker": marker, "net_py": net_py,
            "scores": det.score(images[:3], progress=False).scores}


@pytest.fixture
def code_copy(code_model: dict[str, Any], tmp_path: Path) -> dict[str, Path]:
    """A private copy of the code model, its code file and marker, so a test may change them."""
    net_py, marker = tmp_path / "net.py", tmp_path / "imported.marker"
    net_py.write_text(NET_PY.format(marker=str(marker)))

    def point_here(m: dict) -> None:
        extras = m["extractor"]["backbone_extras"]
        extras["module"] = f"{net_py}:build"
        extras["code_sha256"] = hashlib.sha256(net_py.read_bytes()).hexdigest()
        m["extractor"]["backbone"] = f"custom:{extras['module']}"

    return {"dir": _copy(code_model["dir"], tmp_path, meta=point_here), "marker": marker, "net_py": net_py}


def test_code_model_records_the_code_hash(code_model):
    extras = json.loads((code_model["dir"] / "model.json").read_text())["extractor"]["backbone_extras"]
    assert extras["code_sha256"] == hashlib.sha256(code_model["net_py"].read_bytes()).hexdigest()
    assert extras["module"] == f"{code_model['net_py']}:build"


def test_code_model_refused_without_trust(code_copy, images, tmp_path):
    msg = _raises(code_copy["dir"])
    assert "model.json: this model runs Python code from" in msg and str(code_copy["net_py"]) in msg
    assert "--trust-model-code" in msg
    assert not code_copy["marker"].exists()
    line = _cli_fails(code_copy["dir"], images, tmp_path)
    assert "--trust-model-code" in line
    assert not code_copy["marker"].exists()


def test_code_model_loads_with_trust(code_model, code_copy, images):
    det = load(code_copy["dir"], trust_code=True)
    assert code_copy["marker"].exists()  # now, and only now, its code ran
    np.testing.assert_array_equal(det.score(images[:3], progress=False).scores, code_model["scores"])


def test_cli_trust_model_code(code_copy, images, tmp_path):
    if "--trust-model-code" not in CliRunner().invoke(app, ["predict", "--help"]).output:
        pytest.skip("predict has no --trust-model-code option yet")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["predict", str(code_copy["dir"]), str(images[0].parent), "-o", str(out),
                                 "--trust-model-code"])
    assert r.exit_code == 0, r.output
    assert code_copy["marker"].exists() and (out / "scores.csv").is_file()


def test_changed_code_refused_even_with_trust(code_copy):
    code_copy["net_py"].write_text(code_copy["net_py"].read_text() + "\nprint('something else')\n")
    msg = _raises(code_copy["dir"], trust_code=True)
    assert "has changed since the model was fitted (sha256" in msg and str(code_copy["net_py"]) in msg
    assert not code_copy["marker"].exists()


def test_code_model_without_recorded_hash_refused(code_copy):
    d = _copy(code_copy["dir"], code_copy["dir"].parent / "nohash", meta=_drop("extractor.backbone_extras.code_sha256"))
    assert "model.json: this model runs Python code" in _raises(d)
    assert "records no SHA-256" in _raises(d, trust_code=True)
    assert not code_copy["marker"].exists()


@pytest.mark.parametrize("module,words", [
    ("net.py:build", "the code file must be an absolute path (got 'net.py')"),
    ("../x/net.py:build", "the code file must be an absolute path"),
    ("not a module!:build", "not a Python module name"),
    ("/abs/net.py:", "expected 'file.py:function'"),
])
def test_crafted_code_paths_refused(module, words, code_copy):
    d = _copy(code_copy["dir"], code_copy["dir"].parent / "crafted_path",
              meta=_set("extractor.backbone_extras.module", module))
    for trust in (False, True):
        msg = _raises(d, trust_code=trust)
        assert "model.json: extractor.backbone_extras.module:" in msg and words in msg, msg
    assert not code_copy["marker"].exists()


def test_installed_module_refused_without_importing_it(code_copy):
    # "this:x" would print the Zen of Python on import; an untrusted load must not even look it up.
    had = "this" in sys.modules
    d = _copy(code_copy["dir"], code_copy["dir"].parent / "this", meta=_set("extractor.backbone_extras.module", "this:x"))
    msg = _raises(d)
    assert "runs Python code from module 'this'" in msg, msg
    if not had:
        assert "this" not in sys.modules


def test_zero_stride_refused(code_copy):
    d = _copy(code_copy["dir"], code_copy["dir"].parent / "stride",
              meta=_set("extractor.backbone_extras.strides", {"s8": 0, "s16": 16}))
    assert "extractor.backbone_extras.strides.s8: input should be greater than or equal to 1 (got 0)" in _raises(d)


def test_relative_weight_path_refused(code_copy):
    d = _copy(code_copy["dir"], code_copy["dir"].parent / "relw",
              meta=_set("extractor.backbone_extras.weights", "net.safetensors"))
    assert "extractor.backbone_extras.weights: the weight file must be an absolute path" in _raises(d)


def test_a_model_json_saved_with_a_byte_order_mark_loads(model, tmp_path):
    """Notepad saves UTF-8 with a byte order mark: the edited model loads (it was "invalid JSON (Unexpected
    UTF-8 BOM (decode using utf-8-sig) ...)"); a trailing comma is named as one (it was "Expecting property
    name enclosed in double quotes")."""
    d = _copy(model, tmp_path)
    text = (d / "model.json").read_text()
    (d / "model.json").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert load(d).threshold_ == load(model).threshold_
    (d / "model.json").write_text(text.rstrip().removesuffix("}") + ",\n}")
    assert "model.json: invalid JSON (" in (msg := _raises(d)) and msg.endswith(
        "; a trailing comma before it, which JSON does not allow)"), msg


def _failing_save(real: Callable, error: BaseException) -> Callable:
    """safetensors' save_file that writes part of the file (all of it for a Ctrl-C), then raises ``error``."""
    def save(state: dict, path: str, *args: Any, **kwargs: Any) -> None:
        real(state, path, *args, **kwargs)
        if isinstance(error, OSError):
            with open(path, "r+b") as fh:
                fh.truncate(fh.seek(0, 2) // 2)
        raise error
    return save


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_save_that_stops_halfway_leaves_the_earlier_model(error, model, tmp_path, monkeypatch):
    """A full disk or a Ctrl-C while a new model was saved over an earlier one left the earlier model.json
    beside the new tensors (a model neither fit made, which loaded and scored) or beside half a file (the
    earlier model lost); now the earlier model is as it was, and no temporary file is left."""
    import normalcy.detectors.base as base

    d = _copy(model, tmp_path)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    other = load(model)  # another fit's model: other tensors, another threshold
    other.scale_, other.threshold_ = other.scale_ * 2, other.threshold_ + 1.0
    monkeypatch.setattr(base, "save_file", _failing_save(base.save_file, error))
    with pytest.raises(type(error)):
        other.save(d)
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    monkeypatch.undo()
    assert other.save(d) == d and json.loads((d / "model.json").read_text())["threshold"] == other.threshold_
    assert sorted(p.name for p in d.iterdir()) == ["model.json", "model.safetensors"]


def test_a_model_json_given_for_its_folder_names_the_folder(model, images, tmp_path):
    """`predict model/model.json ...` said "model/model.json: not a normalcy model (no model.json)"."""
    msg = _cli_fails(model / "model.json", images, tmp_path)
    assert msg == f"error: {model / 'model.json'}: a model is the folder holding model.json and its files: give {model}"


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), "safetensors"])
def test_a_full_disk_over_an_earlier_model_says_it_is_kept(error, model, tmp_path, monkeypatch):
    """A save over an earlier model writes the new files beside it first, so it needs room for both: a full
    disk said only "No space left on device" of a disk with room for the model. The line now says the
    earlier model is kept and why the room ran out; a first save says nothing of an earlier model."""
    import normalcy.detectors.base as base
    from safetensors import SafetensorError

    from normalcy.files import save_model

    if error == "safetensors":  # what safetensors raises on a real full disk
        error = SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    d = _copy(model, tmp_path)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    monkeypatch.setattr(base, "save_file", _failing_save(base.save_file, error))
    with pytest.raises(InputError) as info:
        save_model(load(model), d)
    assert str(info.value) == (f"{d}: cannot write the model (No space left on device); the earlier model there "
                               "is kept as it was: a save writes the new model beside it before replacing it, so "
                               "it needs room for both")
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    with pytest.raises(InputError) as info:
        save_model(load(model), tmp_path / "new")
    assert str(info.value) == f"{tmp_path / 'new'}: cannot write the model (No space left on device)"


def test_a_save_killed_outright_leaves_nothing_the_next_save_keeps(tmp_path):
    """A process killed while it saved (SIGKILL: no finally runs) left its hidden .model.safetensors.*.partial
    file, a whole model's tensors, for ever; every later kill added one. The next save into the folder deletes
    them (under the folder's lock, which a live save holds, so never another's file being written)."""
    import time

    from conftest import killed_outright

    from normalcy.files import write_model_files

    d = tmp_path / "m"

    def save(say) -> None:
        def stuck(p: Path) -> None:
            p.write_bytes(b"half a model")
            say("writing")
            time.sleep(60)  # killed here, as by SIGKILL or a power cut

        write_model_files(d, {"model.safetensors": stuck, "model.json": lambda p: p.write_text("{}")})

    assert killed_outright(save) == ["writing"]
    (d / "notes.txt").write_text("mine")  # a person's file, and a hidden file of theirs, are never touched
    (d / ".model.safetensors.partial").write_text("theirs")
    left = [p.name for p in d.iterdir() if p.name.endswith(".partial.safetensors")]
    assert len(left) == 1
    write_model_files(d, {"model.safetensors": lambda p: p.write_bytes(b"tensors"),
                          "model.json": lambda p: p.write_text("{}")})
    assert sorted(p.name for p in d.iterdir()) == [".model.safetensors.partial", "model.json", "model.safetensors",
                                                   "notes.txt"]


def test_saves_at_once_never_delete_each_others_files_being_written(tmp_path):
    """Stale files are deleted under the folder's lock, and a save holds it while it writes: two saves at once
    each finish whole, the last one kept."""
    import time

    from conftest import run_together

    from normalcy.files import write_model_files

    d = tmp_path / "m"

    def save(k: int) -> None:
        def slow(p: Path) -> None:
            p.write_bytes(b"tensors %d" % k)
            time.sleep(0.2)
        write_model_files(d, {"model.safetensors": slow, "model.json": lambda p: p.write_text(json.dumps(k))})

    assert run_together(save, [0, 1, 2]) == []
    k = json.loads((d / "model.json").read_text())
    assert (d / "model.safetensors").read_bytes() == b"tensors %d" % k
    assert sorted(p.name for p in d.iterdir()) == ["model.json", "model.safetensors"]


def test_a_model_json_with_a_number_of_thousands_of_digits_is_one_line(tmp_path):
    """An integer of over 4300 digits in model.json is over Python's limit on reading one: its ValueError came
    out as a traceback, where every other bad model.json is one line."""
    from normalcy.files import read_json

    (tmp_path / "model.json").write_text('{"threshold": ' + "9" * 5000 + "}")
    with pytest.raises(InputError, match=r"model\.json: invalid JSON \(Exceeds the limit \(4300 digits\)"):
        read_json(tmp_path / "model.json")


def test_a_model_in_a_folder_whose_name_is_not_utf8_loads(tmp_path: Path) -> None:
    """safetensors takes only UTF-8 paths: a model saved under a Latin-1 folder name ('caf\\xe9') was 'not a valid
    safetensors file (Path ... is not valid UTF-8)' at loading. Such a file is read as bytes."""
    from normalcy.detectors.modelfile import read_tensors

    folder = Path((bytes(tmp_path) + b"/caf\xe9").decode("utf-8", "surrogateescape"))
    os.makedirs(folder)
    state = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    with open(os.fsencode(folder / "model.safetensors"), "wb") as fh:
        from safetensors.torch import save
        fh.write(save(state))
    assert torch.equal(read_tensors(folder / "model.safetensors")["w"], state["w"])


def test_one_helper_cuts_values_and_names_short() -> None:
    """files.short_repr (60 characters, its end cut off) and errors.shortened (100, start and end kept) cut text
    two ways; short_repr is now shortened at 60 characters of the repr, so a long string's closing quote shows."""
    from normalcy.errors import REPR_CHARS, shortened
    from normalcy.files import short_repr

    cut = short_repr("x" * 100_000 + "END")
    assert len(cut) == REPR_CHARS == 60 and cut.startswith("'xxx") and cut.endswith("xEND'") and "…" in cut
    assert cut == shortened(repr("x" * 100_000 + "END"), 60)
    assert short_repr(float("nan")) == "NaN" and short_repr("a" * 58) == repr("a" * 58)  # 60: kept whole


LONG = "x" * 100_000
# Each model.json field whose crafted value a message echoed whole: a 100 kB (or 1 MB) line on the terminal.
LONG_CASES = {
    "format_version": _set("format_version", LONG),
    "detector": _set("detector", LONG),
    "backbone": _set("extractor.backbone", LONG),
    "image_size": _set("extractor.image_size", LONG),
    "patch level": _set("extractor.patch_levels", [LONG]),
    "a parameter": _set("params.patch_samples", LONG),
}


@pytest.mark.parametrize("case", sorted(LONG_CASES))
def test_a_very_long_string_in_model_json_is_not_echoed_whole(case, model, tmp_path):
    msg = _raises(_copy(model, tmp_path, meta=LONG_CASES[case]))
    assert "model.json" in msg and "xxx" in msg and len(msg) < 1000, msg[:300]
