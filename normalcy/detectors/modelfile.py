"""Reading a model directory as data: checked, never executed.

A model folder can come from anywhere (a colleague, a download, a shared drive),
so ``read_model`` treats it as untrusted input: ``model.json`` is validated
against the schema below (unknown keys are refused, so typos are caught), and
``model.safetensors`` is parsed by safetensors alone, with every tensor checked
to be a plain finite number array. Every problem is one ``InputError`` line that
names the file, never a traceback.

Every file of it is opened as ``normalcy.files`` opens any model file (regular, inside
the folder, capped).

A model with a custom backbone names Python code that rebuilding it would run.
Such a model is refused unless the caller trusts it (``trust_code=True``,
``--trust-model-code``), and even then only while the code file still has the
SHA-256 recorded when the model was fitted.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import (
    Field,
    FiniteFloat,
    ValidationError,
    field_validator,
    model_validator,
)
from safetensors import SafetensorError
from safetensors.torch import load, load_file

from normalcy.errors import InputError
from normalcy.files import (
    MAX_STATE_BYTES,
    MODEL_JSON,
    Strict,
    describe,
    model_file,
    no_model_json,
    one_line,
    read_json,
    reading,
    short_repr,
)
from normalcy.images.backbones import BACKBONES, code_file, sha256_file
from normalcy.images.features import MAX_SIZE, parse_size
from normalcy.version import __version__

FORMAT_VERSION = 1
MODEL_TENSORS = "model.safetensors"

# Bounds that model.json and the detectors' own checks share: far beyond any real setting, yet a tampered
# model.json cannot ask for a batch of 10**12 images.
BatchSize = Annotated[int, Field(ge=1, le=1024)]
Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]  # faiss's k-means takes its seed as a C int
Count = Annotated[int, Field(ge=1, le=10**9)]  # training images

_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class CustomBackboneMeta(Strict):
    """``custom_backbone()``'s arguments as saved: where the code and the weights are."""

    module: str
    weights: str
    levels: dict[str, str] = Field(min_length=1)
    strides: dict[str, Annotated[int, Field(ge=1)]] = Field(min_length=1)
    mean: list[FiniteFloat] = Field(min_length=3, max_length=3)
    std: list[FiniteFloat] = Field(min_length=3, max_length=3)
    patch_levels: list[str] = Field(min_length=1)
    code_sha256: str | None = None  # None only in models fitted before code was hashed

    @field_validator("module")
    @classmethod
    def _module(cls, v: str) -> str:
        target, _, func = v.rpartition(":")
        if not target or not func.isidentifier():
            raise ValueError(f"expected 'file.py:function' or 'module:function' (got {short_repr(v)})")
        if target.endswith(".py"):
            if not Path(target).is_absolute():  # relative to whatever directory one loads from: refused
                raise ValueError(f"the code file must be an absolute path (got {short_repr(target)})")
        elif not _DOTTED.fullmatch(target):
            raise ValueError(f"not a Python module name (got {short_repr(target)})")
        return v

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: str) -> str:
        if not Path(v).is_absolute():
            raise ValueError(f"the weight file must be an absolute path (got {short_repr(v)})")
        return v

    @field_validator("code_sha256")
    @classmethod
    def _sha(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9a-f]{64}", v):
            raise ValueError("must be 64 lowercase hex digits")
        return v

    @property
    def code_target(self) -> str:
        """The file or module part of ``module``."""
        return self.module.rpartition(":")[0]


class ExtractorMeta(Strict):
    """``FeatureExtractor.config``: everything needed to rebuild the feature extraction."""

    backbone: str
    backbone_extras: CustomBackboneMeta | None
    image_size: Any  # an int, or [H, W]; checked below
    patch_levels: list[str] = Field(min_length=1)
    pooled_levels: list[str] = Field(min_length=1)
    aggregate: int = Field(ge=1, le=15)  # neighbourhood averaged around each patch; 3 by default
    pool_grid: int = Field(ge=1, le=32)
    pool_max_dim: int = Field(ge=1, le=65536)
    precision: Literal["auto", "fp32", "bf16"] = "fp32"  # models from before bf16 ran in fp32
    tile: int | None = Field(None, ge=32, le=MAX_SIZE)  # models from before tiling ran untiled
    overlap: int = Field(64, ge=0, le=MAX_SIZE)
    input_norm: Literal["own", "imagenet", "standard"] = "own"  # models from before the choice fed the backbone its own

    @field_validator("backbone_extras", mode="before")
    @classmethod
    def _no_extras(cls, v: Any) -> Any:
        return None if v == {} else v  # built-in backbones save {}

    @field_validator("image_size")
    @classmethod
    def _image_size(cls, v: Any) -> int | list[int]:
        sides = v if isinstance(v, list) and len(v) == 2 else [v]
        if any(isinstance(s, bool) or not isinstance(s, int) for s in sides):
            raise ValueError(f"must be an integer or [height, width] (got {short_repr(v)})")
        try:
            parse_size(sides)  # the rule FeatureExtractor applies
        except InputError as err:
            raise ValueError(str(err).removeprefix("image size ")) from None
        return v

    @model_validator(mode="after")
    def _levels(self) -> ExtractorMeta:
        if self.backbone_extras is not None:
            levels = list(self.backbone_extras.levels)
        elif self.backbone in BACKBONES:
            levels = list(BACKBONES[self.backbone].levels)
        else:
            raise ValueError(f"unknown backbone {short_repr(self.backbone)}; this normalcy has {sorted(BACKBONES)}")
        for key in ("patch_levels", "pooled_levels"):
            unknown = [lv for lv in getattr(self, key) if lv not in levels]
            if unknown:
                raise ValueError(f"{key}: the backbone has no level {short_repr(unknown[0])}; it has {levels}")
        return self


class ModelMeta(Strict):
    """``model.json``."""

    format_version: int
    normalcy_version: str
    detector: str
    params: dict[str, Any]
    extractor: ExtractorMeta
    fpr: FiniteFloat = Field(gt=0.0, lt=1.0)
    threshold: FiniteFloat
    # a bf16 model's threshold for its scores with the backbone in fp32 (its ONNX export's); older files have none
    threshold_fp32: FiniteFloat | None = None
    map_range: list[FiniteFloat] = Field(min_length=2, max_length=2)
    n_train: Count
    # the training images' kind, for scoring's warning on images of the other: "unknown" in files from before it
    train_colour: Literal["grey", "colour", "mixed", "unknown"] = "unknown"
    seed: Seed
    batch_size: BatchSize
    created: str
    training: dict[str, Any] | None = None
    choice: dict[str, Any] | None = None  # --detector auto: what was chosen, on what validation numbers

    @model_validator(mode="after")
    def _range(self) -> ModelMeta:
        lo, hi = self.map_range
        if not lo < hi:
            raise ValueError(f"map_range: low must be below high (got {self.map_range})")
        if self.threshold_fp32 is not None and self.extractor.precision != "bf16":
            raise ValueError(f"threshold_fp32: only a bf16 model has one (this one's backbone runs in "
                             f"{self.extractor.precision})")
        return self


def read_model(directory: str | Path, trust_code: bool = False) -> tuple[ModelMeta, dict[str, torch.Tensor]]:
    """model.json and model.safetensors of a model directory, checked; runs no code from it.

    Raises ``InputError`` with one line naming the file and the problem.
    """
    d = Path(directory)
    with reading(d):  # another process's save over it: never its model.json with the earlier tensors
        return _read_model(d, trust_code)


def _read_model(d: Path, trust_code: bool) -> tuple[ModelMeta, dict[str, torch.Tensor]]:
    meta_path = d / MODEL_JSON
    if not os.path.lexists(meta_path):
        raise no_model_json(d)
    raw = read_json(meta_path)
    version = raw.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise InputError(
            f"{meta_path}: model format version {short_repr(version)} is not supported "
            f"(this normalcy {__version__} reads version {FORMAT_VERSION})"
        )
    if raw.get("detector") == "musc":
        raise InputError(f"{meta_path}: musc is zero-shot and has no saved models: use normalcy score-batch")
    try:
        meta = ModelMeta.model_validate(raw)
    except ValidationError as err:
        raise InputError(f"{meta_path}: {describe(err)}") from None
    extras = meta.extractor.backbone_extras
    if extras is not None:
        check_code(meta_path, extras, trust_code)
    return meta, read_tensors(d / MODEL_TENSORS)


def check_code(meta_path: Path, extras: CustomBackboneMeta, trust_code: bool) -> None:
    """Refuse a custom backbone's code unless trusted, and trusted code that has changed since fitting."""
    target = extras.code_target
    where = target if target.endswith(".py") else f"module {target!r}"
    if not trust_code:
        # Nothing is looked up here: even finding a module's file imports its parent packages.
        raise InputError(
            f"{meta_path}: this model runs Python code from {where} (custom backbone); "
            "load it only if you trust it: pass --trust-model-code (in Python: trust_code=True)"
        )
    if extras.code_sha256 is None:
        raise InputError(f"{meta_path}: this model records no SHA-256 of its code ({where}): fit it again")
    path = code_file(target)
    actual = sha256_file(path)
    if actual != extras.code_sha256:
        raise InputError(
            f"{meta_path}: the custom backbone code {path} has changed since the model was fitted "
            f"(sha256 {actual}, recorded {extras.code_sha256})"
        )


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, parsed by safetensors alone, with every tensor a finite number array."""
    real = model_file(path, MAX_STATE_BYTES)
    if real.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    try:
        try:
            str(real).encode("utf-8")
        except UnicodeEncodeError:  # safetensors takes only a UTF-8 path (a Latin-1 folder name): the bytes
            state = load(real.read_bytes())
        else:
            state = load_file(str(real))  # memory-mapped: no second copy of a large bank
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as err:
        raise InputError(f"{path}: not a valid safetensors file ({one_line(err)})") from None
    check_tensors(state, None, source=str(path))
    return state


def check_tensors(
    state: dict[str, torch.Tensor],
    expected: dict[str, tuple[tuple[int | None, ...], str]] | None = None,
    source: str = MODEL_TENSORS,
) -> None:
    """Raise ``InputError`` unless every tensor is a finite float or an integer array.

    With ``expected`` ({name: (shape, dtype)}), the names must be exactly those, and each
    shape must match (None: any size along that axis). dtype is "float", "int" or a torch
    dtype name such as "float32". Detectors call this to say what their state looks like.
    """
    if expected is not None:
        missing = [k for k in expected if k not in state]
        if missing:
            raise InputError(f"{source}: missing tensor {short_repr(missing[0])}" + _more(missing))
        extra = [k for k in state if k not in expected]
        if extra:
            raise InputError(f"{source}: unexpected tensor {short_repr(extra[0])}" + _more(extra))
    for name, t in state.items():
        if t.dtype == torch.bool or t.dtype.is_complex:
            raise InputError(f"{source}: tensor {name!r} has dtype {_dtype(t.dtype)}, expected numbers")
        if t.dtype.is_floating_point and not _finite(t):
            bad = int((~torch.isfinite(t)).sum())
            raise InputError(f"{source}: tensor {name!r} has {bad} NaN or infinite value(s)")
        if expected is None:
            continue
        shape, dtype = expected[name]
        got = tuple(t.shape)
        if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
            want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
            raise InputError(f"{source}: tensor {name!r} has shape {got}, expected {want}")
        if not _dtype_ok(t.dtype, dtype):
            raise InputError(f"{source}: tensor {name!r} has dtype {_dtype(t.dtype)}, expected {dtype}")


def _finite(t: torch.Tensor) -> bool:
    """Whether every value of a float tensor is finite, checked by numpy: torch's own check runs on its thread
    pool, which on a busy two-core machine took 70-100 ms for each 8,000 x 16 bank (numpy: 0.1 ms), 0.45 s for
    each ``auto`` series model loaded, a series set's model per series."""
    a = t.detach().cpu()
    if a.dtype not in (torch.float16, torch.float32, torch.float64):  # bfloat16, float8: no numpy dtype
        a = a.float()  # exact: a finite value stays finite, inf and NaN stay what they are
    return bool(np.isfinite(a.numpy()).all())


def _dtype(dt: torch.dtype) -> str:
    return str(dt).removeprefix("torch.")


def _dtype_ok(dt: torch.dtype, want: str) -> bool:
    if want == "float":
        return dt.is_floating_point
    if want == "int":
        return not dt.is_floating_point and not dt.is_complex and dt != torch.bool
    return _dtype(dt) == want


def _more(names: list[str]) -> str:
    return f" (and {len(names) - 1} more)" if len(names) > 1 else ""
