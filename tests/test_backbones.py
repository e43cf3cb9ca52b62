"""Backbones: built-in levels and strides, conv-BN fusion, custom backbones end to end."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import texture
from torch import nn

from normalcy.detectors import GaussianAD, load
from normalcy.errors import InputError
from normalcy.images.backbones import (
    BACKBONES,
    Backbone,
    BackboneSpec,
    custom_backbone,
    fuse_conv_bn,
    get_backbone_spec,
    normalised,
    standardised,
)
from normalcy.images.features import FeatureExtractor

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "custom_backbone.py"
LEVELS = {"s8": "stage2", "s16": "stage3"}
STRIDES = {"s8": 8, "s16": 16}


def _build_or_skip(name: str) -> nn.Module:
    """spec.build(), skipping when the backbone's weight package is not installed."""
    try:
        return BACKBONES[name].build().eval()
    except ImportError as err:
        pytest.skip(f"{name}: {err}")
    except InputError as err:
        if "pip install" in str(err):
            pytest.skip(str(err))
        raise


def _reference_levels(net: nn.Module, spec: BackboneSpec, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Level outputs of an unfused network, read with plain hooks and a full forward pass."""
    out: dict[str, torch.Tensor] = {}
    modules = dict(net.named_modules())
    handles = [modules[m].register_forward_hook(lambda _m, _i, o, lv=lv: out.__setitem__(lv, o))
               for lv, m in spec.levels.items()]
    x = (x - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    return out


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_builtin_levels_strides_and_fusion(name):
    reference = _build_or_skip(name)
    spec = BACKBONES[name]
    assert list(spec.levels) == list(spec.strides)
    assert set(spec.patch_levels) <= set(spec.levels) and set(spec.pooled_levels) <= set(spec.levels)
    bb = Backbone(spec)
    assert bb.levels == tuple(spec.levels)
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    out = bb(x)
    assert list(out) == list(spec.levels)
    for lv, f in out.items():
        s = spec.strides[lv]
        assert f.shape[0] == 2 and f.shape[1] > 0
        assert tuple(f.shape[-2:]) == (128 // s, 128 // s), (lv, tuple(f.shape))
        assert torch.isfinite(f).all()

    # The fused, channels-last Backbone gives the unfused network's level outputs.
    assert not any(isinstance(m, nn.BatchNorm2d) for m in bb.net.modules())  # every BN was folded
    ref = _reference_levels(reference, spec, x)
    for lv in spec.levels:
        torch.testing.assert_close(out[lv].contiguous(), ref[lv].contiguous(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_fuse_conv_bn_keeps_network_output(name):
    net = _build_or_skip(name)
    fused = copy.deepcopy(net)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert fuse_conv_bn(fused) == n_bn > 0
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = net(x), fused(x)
    a, b = (t[0] if isinstance(t, (tuple, list)) else t for t in (a, b))
    torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


def _random_bn(bn: nn.BatchNorm2d, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(bn.num_features, generator=g))


@pytest.mark.parametrize(
    "layers,expected",
    [
        (lambda: [nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()], 1),
        (lambda: [nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                  nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8)], 2),
        # In-place ReLU hands the BN the conv's own tensor object, with other values: no folding.
        (lambda: [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(8)], 0),
        (lambda: [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(8)], 0),
        (lambda: [nn.Conv2d(3, 8, 3, padding=1), nn.MaxPool2d(2), nn.BatchNorm2d(8)], 0),
    ],
)
def test_fuse_conv_bn_small_networks(layers, expected):
    net = nn.Sequential(*layers()).eval()
    for i, m in enumerate(net.modules()):
        if isinstance(m, nn.BatchNorm2d):
            _random_bn(m, i)
    fused = copy.deepcopy(net)
    assert fuse_conv_bn(fused) == expected
    assert sum(isinstance(m, nn.BatchNorm2d) for m in fused.modules()) == \
        sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) - expected
    x = torch.rand(2, 3, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), net(x), atol=1e-5, rtol=1e-5)


def test_a_deep_copy_of_a_backbone_runs_on_its_own():
    """``copy.deepcopy`` (of a detector, or scikit-learn's ``clone``, which copies its extractor) failed with
    "cannot pickle '_thread.lock' object"; past the lock, the copied hooks still held the original backbone,
    and the copy's forward pass failed with a KeyError. The copy gives the original's features and leaves the
    original as it was."""
    bb = Backbone(get_backbone_spec("efficientnet_lite0"))
    bb.jit = False  # the eager pass, where the hooks record (a trace runs it too)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    want = bb(x)
    twin = copy.deepcopy(bb)
    for out in (twin(x), bb(x)):
        for lv in want:
            torch.testing.assert_close(out[lv], want[lv])


def test_backbone_level_errors():
    spec = _tiny_spec_without_weights()
    with pytest.raises(InputError, match="no level"):
        Backbone(spec, ("s64",))
    bad = BackboneSpec(**{**spec.__dict__, "levels": {"s8": "stage2", "s16": "nope"}})
    with pytest.raises(InputError, match="no submodule"):
        Backbone(bad)


def test_unknown_backbone_raises():
    with pytest.raises(InputError, match="unknown backbone"):
        get_backbone_spec("resnet9000")
    with pytest.raises(InputError, match="unknown backbone"):
        FeatureExtractor("resnet9000")


# ------------------------------------------------------------------ custom backbones


def _example_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("custom_backbone_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tiny_spec_without_weights() -> BackboneSpec:
    mod = _example_module()
    return BackboneSpec(name="tiny", build=mod.tiny_cnn, levels=dict(LEVELS), strides=dict(STRIDES),
                        mean=(0.5,) * 3, std=(0.5,) * 3, patch_levels=("s8", "s16"),
                        pooled_levels=("s8", "s16"))


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    return _example_module().save_random_weights(tmp_path_factory.mktemp("w") / "tiny.safetensors")


@pytest.fixture(scope="module")
def train_images(tmp_path_factory) -> list[Path]:
    from PIL import Image

    d = tmp_path_factory.mktemp("tiny_train")
    rng = np.random.default_rng(5)
    paths = []
    for i in range(10):
        p = d / f"{i}.png"
        Image.fromarray(texture(rng, 80, 90)).save(p)
        paths.append(p)
    return paths


def test_example_declares_what_it_documents():
    mod = _example_module()
    names = dict(mod.tiny_cnn().named_modules())
    assert set(mod.LEVELS.values()) <= set(names)
    assert mod.LEVELS == LEVELS and mod.STRIDES == STRIDES


def test_custom_backbone_features_and_strides(tiny_weights):
    spec = custom_backbone(f"{EXAMPLE}:tiny_cnn", tiny_weights, levels=LEVELS, strides=STRIDES)
    assert spec.patch_levels == ("s8", "s16") and spec.pooled_levels == ("s8", "s16")
    ex = FeatureExtractor(spec, image_size=64)
    assert ex.patch_stride == 8
    f = ex(torch.rand(3, 3, 64, 64))
    assert tuple(f.patches.shape) == (3, 32 + 48, 8, 8)
    assert set(f.pooled) == {"s8", "s16"}
    # build() loads the weight file (not the random init of a fresh tiny_cnn()).
    from safetensors.torch import load_file

    state = load_file(str(tiny_weights))
    torch.manual_seed(123)
    built = spec.build().state_dict()
    assert built.keys() == state.keys()
    for k, v in state.items():
        torch.testing.assert_close(built[k], v, atol=0, rtol=0)


def test_custom_backbone_pt_weights(tmp_path):
    mod = _example_module()
    torch.manual_seed(3)
    pt = tmp_path / "tiny.pt"
    torch.save(mod.tiny_cnn().state_dict(), pt)
    spec = custom_backbone(f"{EXAMPLE}:tiny_cnn", pt, levels=LEVELS, strides=STRIDES)
    out = Backbone(spec)(torch.rand(1, 3, 64, 64))
    assert tuple(out["s16"].shape) == (1, 48, 4, 4)


def test_custom_backbone_gaussian_fit_save_load(tiny_weights, train_images, tmp_path, monkeypatch):
    # A relative "file.py:function" works and is stored so a model loads from anywhere.
    monkeypatch.chdir(ROOT)
    spec = custom_backbone("examples/custom_backbone.py:tiny_cnn", tiny_weights, levels=LEVELS,
                           strides=STRIDES, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    det = GaussianAD(FeatureExtractor(spec, image_size=64), folds=3).fit(train_images[:8], progress=False)
    assert det.n_train_ == 8 and np.isfinite(det.threshold_)
    model = det.save(tmp_path / "model")
    meta = json.loads((model / "model.json").read_text())
    extras = meta["extractor"]["backbone_extras"]
    assert extras["levels"] == LEVELS and extras["strides"] == STRIDES
    assert Path(extras["weights"]) == tiny_weights.resolve()

    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="runs Python code"):
        load(model)  # a model that runs code loads only when trusted
    again = load(model, trust_code=True)
    assert again.extractor.spec.extras == det.extractor.spec.extras
    assert again.extractor.config == det.extractor.config
    assert list(again.extractor.spec.levels) == ["s8", "s16"]
    test = train_images[8:]
    a, b = det.score(test, progress=False), again.score(test, progress=False)
    np.testing.assert_array_equal(a.scores, b.scores)
    for m1, m2 in zip(a.maps, b.maps):
        assert m1.shape == (80, 90)
        np.testing.assert_array_equal(m1, m2)


def test_custom_backbone_missing_weight_file(tmp_path):
    spec = custom_backbone(f"{EXAMPLE}:tiny_cnn", tmp_path / "nope.safetensors", levels=LEVELS, strides=STRIDES)
    with pytest.raises(InputError, match="does not exist"):
        FeatureExtractor(spec, image_size=64)


@pytest.mark.parametrize(
    "module",
    [
        "no_colon_at_all",
        "examples/custom_backbone.py",
        ":tiny_cnn",
        "examples/custom_backbone.py:",
    ],
)
def test_custom_backbone_bad_module_string(module, tiny_weights):
    with pytest.raises(InputError, match="expected"):
        custom_backbone(module, tiny_weights, levels=LEVELS, strides=STRIDES)


@pytest.mark.parametrize(
    "module",
    [
        "no_such_module_for_normalcy_tests:tiny_cnn",
        f"{EXAMPLE}:no_such_function",
        "normalcy.images.backbones:no_such_function",
        "does/not/exist.py:tiny_cnn",
    ],
)
def test_custom_backbone_unbuildable_module(module, tiny_weights):
    with pytest.raises(InputError):  # a missing file or module already fails here, where its hash is taken
        spec = custom_backbone(module, tiny_weights, levels=LEVELS, strides=STRIDES)
        FeatureExtractor(spec, image_size=64)


def test_custom_backbone_records_code_hash_of_file_and_module(tiny_weights, tmp_path, monkeypatch):
    code = EXAMPLE.read_bytes()
    spec = custom_backbone(f"{EXAMPLE}:tiny_cnn", tiny_weights, levels=LEVELS, strides=STRIDES)
    assert spec.extras["code_sha256"] == hashlib.sha256(code).hexdigest()
    (tmp_path / "tiny_net_for_normalcy_tests.py").write_bytes(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = custom_backbone("tiny_net_for_normalcy_tests:tiny_cnn", tiny_weights, levels=LEVELS, strides=STRIDES)
    assert spec.extras["code_sha256"] == hashlib.sha256(code).hexdigest()
    assert tuple(Backbone(spec)(torch.rand(1, 3, 64, 64))["s16"].shape) == (1, 48, 4, 4)


def test_custom_backbone_refuses_changed_code(tiny_weights, tmp_path):
    net = tmp_path / "net.py"
    net.write_bytes(EXAMPLE.read_bytes())
    spec = custom_backbone(f"{net}:tiny_cnn", tiny_weights, levels=LEVELS, strides=STRIDES)
    net.write_text(net.read_text() + "\nraise SystemExit('this must never run')\n")
    with pytest.raises(InputError, match="has changed since its SHA-256 was recorded"):
        FeatureExtractor(spec, image_size=64)
    with pytest.raises(InputError, match="has changed"):  # nor with a hash given, as load() gives it
        FeatureExtractor(custom_backbone(f"{net}:tiny_cnn", tiny_weights, levels=LEVELS, strides=STRIDES,
                                         code_sha256=hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_traced_backbone_equals_the_eager_pass(precision, monkeypatch):
    """The frozen TorchScript trace (one per levels, dtype and input size) gives the eager pass's maps exactly,
    for any batch size; bf16 runs a bf16 copy of the weights, which autocast's per-call casts equal."""
    ex = FeatureExtractor(image_size=96, precision=precision)
    if precision == "bf16" and ex.precision != "bf16":
        pytest.skip("this CPU has no native bfloat16")
    x = torch.rand(5, 3, 96, 96)
    for _ in range(Backbone.trace_after - 1):  # the first calls run eagerly: a one-off call is not worth a trace
        ex.level_maps(x, ex.backbone.levels)
    assert not ex.backbone._traces
    traced = ex.level_maps(x, ex.backbone.levels)
    assert len(ex.backbone._traces) == 1 and None not in ex.backbone._traces.values()
    for n in (5, 1):
        monkeypatch.setattr(Backbone, "jit", False)
        eager = ex.level_maps(x[:n], ex.backbone.levels)
        monkeypatch.setattr(Backbone, "jit", True)
        again = ex.level_maps(x[:n], ex.backbone.levels)
        for lv in eager:
            assert again[lv].dtype == torch.float32
            torch.testing.assert_close(again[lv], eager[lv], rtol=0, atol=0)
            if n == len(x):  # (oneDNN's kernels differ in the last bits between batch sizes, traced or not)
                torch.testing.assert_close(traced[lv], eager[lv], rtol=0, atol=0)
    assert len(ex.backbone._traces) == 1  # the batch size does not make another trace


def test_input_norms_share_one_network_and_its_trace():
    """--input-norm auto and --tune try each normalisation on one network: it is applied before the trace (not
    traced into it, which built and traced the network again for each), so the trace made for one serves the
    others and gives each the maps of a network of its own, to the bit."""
    x = torch.rand(3, 3, 64, 64)
    own = FeatureExtractor(image_size=64, precision="fp32")
    for _ in range(Backbone.trace_after):
        own.level_maps(x, own.backbone.levels)
    shared = own.with_input_norm("imagenet")
    alone = FeatureExtractor(image_size=64, precision="fp32", input_norm="imagenet")
    for _ in range(Backbone.trace_after):
        want = alone.level_maps(x, alone.backbone.levels)
    got = shared.level_maps(x, shared.backbone.levels)
    assert shared.backbone is own.backbone and len(own.backbone._traces) == 1
    assert None not in own.backbone._traces.values() and None not in alone.backbone._traces.values()
    for lv in want:
        torch.testing.assert_close(got[lv], want[lv], rtol=0, atol=0)


def test_backbone_runs_eagerly_where_tracing_fails(monkeypatch, caplog):
    def refuse(*args, **kwargs):
        raise RuntimeError("cannot trace this network")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    ex = FeatureExtractor(image_size=64, precision="fp32")
    with caplog.at_level("WARNING", logger="normalcy"):
        for _ in range(Backbone.trace_after):
            maps = ex.level_maps(torch.rand(2, 3, 64, 64), ex.backbone.levels)
    assert "without TorchScript (cannot trace this network)" in caplog.text
    assert maps["s8"].shape == (2, 40, 8, 8)


def test_input_normalised_along_rows_to_the_same_values(tiny_weights, monkeypatch):
    """Backbone.forward normalises by ``normalised``: a channels-last batch (as files are read) with mean and std
    spread along its rows, which runs vectorised (14 against 5 ms a batch of 32 at 224 px), to the values and
    layout of the plain broadcast, to the bit, for any width and either layout given."""
    import normalcy.images.backbones as backbones

    ex = FeatureExtractor(custom_backbone(f"{EXAMPLE}:tiny_cnn", tiny_weights, levels=LEVELS, strides=STRIDES),
                          image_size=64, precision="fp32")
    imagenet = (torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
                torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
    rng = np.random.default_rng(0)
    for shape in [(4, 32, 48, 3), (1, 7, 5, 3), (2, 1, 1, 3)]:
        x = torch.from_numpy(rng.integers(0, 256, shape, dtype=np.uint8)).permute(0, 3, 1, 2).float().div_(255.0)
        for mean, std in (ex.norm, imagenet):
            want = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
            for given in (x, x.contiguous()):
                got = normalised(given, mean, std)
                assert torch.equal(got, want) and got.is_contiguous(memory_format=torch.channels_last)
    seen = []
    monkeypatch.setattr(backbones, "normalised", lambda x, m, s: seen.append(tuple(x.shape)) or normalised(x, m, s))
    ex.level_maps(torch.rand(2, 3, 64, 64), ("s8",))
    assert seen == [(2, 3, 64, 64)]


def test_standard_input_norm_sees_past_brightness_and_contrast():
    """input norm "standard": each image to mean 0.5 and spread CONTRAST before the weights' own normalisation,
    so an image made brighter and of higher contrast (no pixel clipped) gives the same maps; a flat image stays
    finite; the other normalisations are untouched."""
    from normalcy.images.backbones import CONTRAST

    g = torch.Generator().manual_seed(0)
    x = 0.3 + 0.05 * torch.rand(2, 3, 64, 64, generator=g)
    out = standardised(x, CONTRAST)
    assert torch.allclose(out.mean(dim=(1, 2, 3)), torch.full((2,), 0.5), atol=1e-5)
    assert torch.allclose(out.std(dim=(1, 2, 3)), torch.full((2,), CONTRAST), atol=1e-4)
    flat = standardised(torch.full((1, 3, 8, 8), 0.7), CONTRAST)
    assert torch.isfinite(flat).all() and torch.allclose(flat, torch.full_like(flat, 0.5), atol=1e-4)
    std = FeatureExtractor(image_size=64, precision="fp32", input_norm="standard")
    own = FeatureExtractor(image_size=64, precision="fp32")
    assert std.spec.contrast == CONTRAST and own.spec.contrast is None and std.spec.mean == own.spec.mean
    brighter = 0.1 + 2.0 * x  # 0.7-0.8: no pixel clipped
    a, b = std.level_maps(x, ("s8",))["s8"], std.level_maps(brighter, ("s8",))["s8"]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    a, b = own.level_maps(x, ("s8",))["s8"], own.level_maps(brighter, ("s8",))["s8"]
    assert (a - b).abs().max() > 0.1


def test_standard_input_norm_uses_the_whole_image_when_tiled():
    """A tiled extractor standardises the whole image once, not each tile by its own statistics."""
    from normalcy.images.backbones import CONTRAST

    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 128, 128, generator=g) * 0.2
    x[..., 64:] += 0.6  # the right half much brighter: per-tile statistics would differ
    tiled = FeatureExtractor(image_size=128, tile=64, overlap=0, precision="fp32", input_norm="standard")
    plain = FeatureExtractor(image_size=128, tile=64, overlap=0, precision="fp32")
    torch.testing.assert_close(tiled.level_maps(x, ("s8",))["s8"],
                               plain.level_maps(standardised(x, CONTRAST), ("s8",))["s8"])
