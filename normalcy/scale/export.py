"""Export a fitted detector's whole scoring graph to ONNX, and score images with onnxruntime.

The graph (``normalcy export MODEL -o model.onnx``) goes from pixels to scores:

* input ``pixels``: uint8, N x H x W x 3, RGB, each image already resized to the model's input size
  (H, W: ``image_size`` in the metadata) with ``normalcy.images.features.resize_image`` (OpenCV area
  averaging): the array ``normalcy.images.io.read_image`` gives, resized. Decoding and resizing stay outside
  the graph, as with every ONNX image model; scaling to 0..1 and the backbone's normalisation
  (``normalisation`` in the metadata, for the record) are inside. N is free.
* outputs ``image_scores``: float64 [N], the detector's image scores (anomalous: score >= ``threshold``);
  ``maps``: float32 [N, h, w], anomaly maps on the patch grid, as ``Detector._score`` returns them
  (``normalcy.images.features.upsample_map`` draws them at an image's own size, as the detector does).

Everything a runner needs is in the model's ``metadata_props`` under the key ``normalcy`` (JSON):
threshold, input size, resize, normalisation, the colour range of maps. ``OnnxScorer`` is such a runner.

The graph is the resize's companion steps (scaling, the backbone's normalisation), the backbone, then the
detector's own scoring module, ``det.scoring(exported=True)``: the torch module (features or images -> image
scores, patch maps) that the detector's ``_score`` runs itself, so nothing here restates a detector's
arithmetic. tests/test_export.py checks every exportable detector's scores and decisions against PyTorch's;
bench/export_parity.py measures them on real data, with speed.

* The backbone runs in fp32 in the graph; parity is against the fp32 PyTorch path, ``as_exported(det)``. There
  is no bf16 export: ONNX's Conv does not take bfloat16 and onnxruntime's CPU provider has no bfloat16 MatMul.
  A model fitted with ``precision="bf16"`` scores a little apart from its graph (a shift, not noise: fp32
  features sit a little off the bf16 ones it learned), so its fit also sets a threshold for its scores with
  fp32 features (``threshold_fp32_``, ``Detector._fp32_threshold``), which the graph's metadata carries. A bf16
  model saved before that (no ``threshold_fp32`` in model.json) exports with its bf16 threshold, a warning and
  a ``threshold_note``.
* PatchCore searches its memory bank exactly in the graph (``patchcore.ExactSearch``: a matmul and a min,
  in chunks of the bank) where the detector asks its faiss index; what follows the search (eq. 7, the
  maps) is the same ``patchcore.image_scores``. A model with a bank large enough for an IVF index (over
  ``exact_search_max`` patches) therefore scores as ``as_exported(det)`` does, which its IVF search
  approximates (bench: the difference, measured).
* The ``gaussian`` module runs in float32 in the graph (the detector computes its image terms in float64;
  see ``GaussianAD.scoring``), within the parity bar.
* ``precision="int8"``: onnxruntime's static quantisation (QDQ, per-channel weights) of the backbone's
  nodes, activation ranges from normal calibration images (detectors without a backbone: their networks'
  convolutions). The arithmetic after the backbone (Mahalanobis and nearest-neighbour distances) stays
  in floating point: int8 would swamp the small differences it measures. Scores move a little, and the
  threshold is the fp32 model's: bench/export_parity.py reports the AUROC and decisions.

Exportable (``EXPORTABLE``): gaussian, patchcore, simplenet, draem, efficientad. Not exportable
(``export_onnx`` raises InputError saying why, see ``NOT_EXPORTABLE``):

* ``musc``: zero-shot, it scores a batch of images against each other, and there is no fitted model to export;
* a ``patchcore`` model whose bank is kept as IVF-PQ codes (a bank over ``max_memory_mb``): the graph searches
  float bank rows exactly, and such a model keeps none.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import os
import queue
import re
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Literal, Sequence

import numpy as np
import psutil
import torch
from pydantic import (
    Field,
    FiniteFloat,
    ValidationError,
    field_validator,
    model_validator,
)
from torch import nn

from normalcy.detectors import DETECTORS, ZERO_SHOT_MESSAGE, MuSc, PatchCore
from normalcy.detectors.base import Detector, Result, Scored, Skipped, batch_for, collect
from normalcy.files import Strict, describe, file_in_the_way, hold, read_model_file, release, remove_if_stale
from normalcy.errors import InputError, option
from normalcy.images.features import MAX_SIZE, MIN_SIZE, resize_image
from normalcy.images.io import iter_images, list_files
from normalcy.numerics.stats import check_fpr_unchanged
from normalcy.version import __version__

META_KEY = "normalcy"
INPUT_NAME = "pixels"
OUTPUT_NAMES = ["image_scores", "maps"]
PRECISIONS = ("fp32", "int8")
# A detector exports when it writes its scoring as a torch module, ``det.scoring()``, which its own ``_score``
# runs: the graph traces that module after the backbone (gaussian, patchcore, simplenet, draem, efficientad).
EXPORTABLE: dict[str, type[Detector]] = {name: cls for name, cls in DETECTORS.items()
                                          if cls.scoring is not Detector.scoring}
# Those that cannot be exported, and why (README, "Export to ONNX", says the same).
NOT_EXPORTABLE = {
    MuSc.name: ZERO_SHOT_MESSAGE + "; there is no fitted model to export",
}
PQ_BANK = ("its memory bank is kept as IVF-PQ codes (over max_memory_mb), and the graph searches float rows "
           "exactly; refit with a larger max_memory_mb")
INSTALL_HINT = "pip install -c constraints.txt 'normalcy[export]'"
STAGING = ".partial.onnx"  # an export is written to .NAME.<pid>-<n>.partial.onnx beside NAME.onnx, then renamed
_STAGED = itertools.count()  # n: two exports of one process (two threads) to one name stage apart
MAX_ONNX_BYTES = 2**31  # protobuf's limit on one message: a single-file .onnx (what export writes) is never larger
# What a runner expects of the graph: onnxruntime's type names and each tensor's rank.
GRAPH_INPUT = (INPUT_NAME, "tensor(uint8)", 4)
GRAPH_OUTPUTS = {"image_scores": ("tensor(double)", 1), "maps": ("tensor(float)", 3)}


def _need_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise InputError(f"export needs onnx and onnxruntime ({err}): {INSTALL_HINT}") from None


class ScoringGraph(nn.Module):
    """uint8 N x H x W x 3 resized RGB images -> (image scores [N] float64, patch maps [N, h, w] float32)."""

    def __init__(self, det: Detector) -> None:
        super().__init__()
        self.extractor = det.extractor.in_fp32()  # the exported backbone is fp32; parity is against this path
        if det.uses_features:  # registered here so its weights become the graph's
            self.backbone = self.extractor.backbone
        self.pooled, self.features = det.uses_pooled, det.uses_features
        self.scoring = det.scoring(exported=True)  # type: ignore[attr-defined]

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = pixels.permute(0, 3, 1, 2).float() / 255.0  # as features._to_tensor
        f = self.extractor(x, pooled=self.pooled) if self.features else None
        scores, maps = self.scoring(x, f)
        return scores.double(), maps.float()


def check_exportable(det: Any) -> None:
    """InputError naming why, for a detector the export cannot write."""
    name = getattr(det, "name", type(det).__name__)
    if name in NOT_EXPORTABLE:
        raise InputError(f"cannot export {name}: {NOT_EXPORTABLE[name]}")
    if not isinstance(det, Detector) or name not in EXPORTABLE:
        why = "its scoring is not a torch module (scoring())" if name in DETECTORS else "not a detector"
        raise InputError(f"cannot export {name}: {why}; exportable: {', '.join(sorted(EXPORTABLE))}")
    det._check_fitted()
    check_fpr_unchanged(name, det.fpr, getattr(det, "_threshold_fpr", None))  # the metadata names both
    if isinstance(det, PatchCore) and len(det.codes_):
        raise InputError(f"cannot export this {name} model: {PQ_BANK}")


def as_exported(det: Detector) -> Detector:
    """det as its graph scores, sharing its learned state: the backbone in fp32, the graph's threshold
    (``graph_threshold``), and a PatchCore's bank searched exactly (an IVF model's own scores differ from the
    graph's where its search misses). What the graph's parity is checked against."""
    exported = copy.copy(det)
    exported.extractor = det.extractor.in_fp32()
    exported.threshold_ = graph_threshold(det)
    if isinstance(det, PatchCore) and len(det.cells_):
        exported.cells_ = det.cells_[:0]
        exported._index = None
    return exported


def graph_threshold(det: Detector) -> float:
    """The threshold of the graph's scores: a bf16 model's ``threshold_fp32_`` (the graph's backbone runs in
    fp32), the model's own threshold where the backbone runs in fp32 or its model file has none."""
    return float(det.threshold_ if det.threshold_fp32_ is None else det.threshold_fp32_)  # type: ignore[arg-type]


def metadata(det: Detector, precision: str) -> dict[str, Any]:
    """What a runner needs besides the graph, stored as JSON in the model's metadata_props."""
    h, w = det.extractor.size
    spec = det.extractor.spec
    return {
        "detector": det.name,
        "precision": precision,
        "threshold": graph_threshold(det),
        "fpr": det.fpr,
        "map_range": list(det.map_range_ or (0.0, 1.0)),
        "image_size": [h, w],
        "input": f"{INPUT_NAME}: uint8 [N, {h}, {w}, 3] RGB, each image resized to {h}x{w} with "
                 "cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA) (normalcy.images.features.resize_image)",
        "resize": "cv2.INTER_AREA",
        "normalisation": {"scale": 1 / 255, "mean": list(spec.mean), "std": list(spec.std),
                          **({"contrast": spec.contrast} if spec.contrast is not None else {}),
                          "note": "inside the graph: (pixels / 255 - mean) / std" + (
                              ", each image first brought to mean 0.5 and spread `contrast` (clipped to [0, 1])"
                              if spec.contrast is not None else "")},
        "outputs": {"image_scores": "float64 [N]: anomalous when >= threshold",
                    "maps": "float32 [N, h, w]: anomaly map on the patch grid (upsample to the image's size)"},
        "backbone": spec.name,
        "normalcy_version": __version__,
        **({"exact_search": True} if isinstance(det, PatchCore) else {}),
        **({"threshold_note": note} if (note := _threshold_note(det, precision)) else {}),
    }


def _unmatched_bf16(det: Detector) -> bool:
    """A bf16 model saved before its fit recorded a threshold for fp32 features: its graph (fp32) has only the
    bf16 scores' threshold. A detector without a backbone scores alike in both."""
    return det.extractor.precision == "bf16" and det.uses_features and det.threshold_fp32_ is None


def _threshold_note(det: Detector, precision: str) -> str | None:
    """What to know of the threshold in the graph where it was not set on the graph's own scores: int8 moves
    scores, and so does fp32 for a bf16 model from before ``threshold_fp32_``: systematically, not as noise, so
    a score near the threshold may be decided otherwise than by the model."""
    if _unmatched_bf16(det):
        return ("set on the bf16 model's scores (its model file is older than the threshold for fp32 scores that a "
                "fit now records); this fp32 graph scores a little differently (a shift, not noise), so images near "
                "the threshold may be decided otherwise: fit the model again to export a threshold for the graph's "
                "scores")
    if precision == "int8":
        return "set on fp32 scores; int8 moves scores a little"
    return None


def export_onnx(det: Detector, path: str | Path, precision: str = "fp32",
                calibration_paths: Sequence[Path] | None = None, calibration_images: int = 64) -> Path:
    """Write det's scoring graph to an ONNX file; int8 quantises the backbone on normal calibration images."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}"
                         + ("" if precision != "bf16" else ": ONNX's Conv does not take bfloat16 and "
                            "onnxruntime's CPU provider has no bfloat16 MatMul"))
    if precision == "int8" and not calibration_paths:
        raise InputError("int8 export needs calibration images: normal images such as the training folder")
    check_exportable(det)
    _need_onnx()
    path = Path(path)
    staging = _stage(path)  # before the export's work: a place that cannot be written is said at once
    try:
        return _export(det, path, staging, precision, calibration_paths, calibration_images)
    finally:
        staging.unlink(missing_ok=True)
        release(staging)


def check_output_file(path: Path) -> None:
    """Refuse an output the export cannot be: a folder, or a name not ending in .onnx (predict and
    ``normalcy.load`` know an exported model by it, and onnx writes a .json or .txt name as text: ``-o
    model/model.json`` replaced the model's own file with a graph nothing loads)."""
    if path.is_dir():
        raise InputError(f"{path}: a folder; {option('output')} names the ONNX file to write (e.g. "
                         f"{path / 'model.onnx'})")
    if path.suffix.lower() != ".onnx":
        raise InputError(f"{path}: the exported file's name must end in .onnx (predict and normalcy.load know an "
                         "exported model by it)")
    blocked = file_in_the_way(path)
    if blocked is not None:  # making its folders said "cannot write there (File exists)"
        raise InputError(f"{path}: cannot write there ({blocked} is a file, not a folder)")


def _stage(path: Path) -> Path:
    """An empty file beside ``path`` that the export is written to and then renamed over it (the same file
    system), so that an existing file is replaced whole or not at all."""
    check_output_file(path)
    staging = path.with_name(f".{path.stem}.{os.getpid()}-{next(_STAGED)}{STAGING}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        stale = re.compile(re.escape(f".{path.stem}.") + r"\d+(-\d+)?" + re.escape(STAGING))
        for e in os.scandir(path.parent):  # what an export killed outright (SIGKILL, the OOM killer) left
            if stale.fullmatch(e.name) and e.is_file(follow_symlinks=False):
                remove_if_stale(path.parent / e.name)  # a live export's is held
        os.close(os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666))
    except OSError as err:
        raise InputError(f"{path}: cannot write there ({err.strerror or err})") from None
    hold(staging)  # onnx writes the file in place (the same inode), and the rename keeps it
    return staging


def _save(model: Any, staging: Path, path: Path) -> None:
    """Write the model to ``staging``, then rename it to ``path``: the one file a runner loads (at most
    MAX_ONNX_BYTES, as OnnxScorer reads it)."""
    import onnx

    size = model.ByteSize()
    if size > MAX_ONNX_BYTES:
        raise InputError(f"{path}: not written: the graph is {size / 2**30:.1f} GiB, over the "
                         f"{MAX_ONNX_BYTES // 2**30} GiB of one ONNX file (a smaller model: fewer bank patches or a "
                         "smaller image size)")
    try:
        onnx.save(model, str(staging), format="protobuf")
        os.replace(staging, path)
    except OSError as err:
        raise InputError(f"{path}: cannot write it ({err.strerror or err})") from None


def _export(det: Detector, path: Path, staging: Path, precision: str, calibration_paths: Sequence[Path] | None,
            calibration_images: int) -> Path:
    """export_onnx's work, once its output is known to be writable."""
    import onnx

    graph = ScoringGraph(det).eval()
    h, w = det.extractor.size
    meta = metadata(det, precision)
    ExportMeta.model_validate(meta)  # what is written must load: the reader's schema is the one truth
    if _unmatched_bf16(det):
        logging.getLogger("normalcy").warning("%s: the model's threshold was %s", path, meta["threshold_note"])
    with tempfile.TemporaryDirectory() as tmp:  # torch writes the weights beside the graph: one file in the end
        fp32 = Path(tmp) / "fp32.onnx"
        _torch_export(graph, torch.zeros((2, h, w, 3), dtype=torch.uint8), fp32)
        model = onnx.load(str(fp32))
        if precision == "int8":
            paths = list(calibration_paths or [])
            picked = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, min(calibration_images, len(paths)))]
            pixels = [resize_image(im, (h, w)) for _, im in iter_images(picked, [], listed=False)]
            if not pixels:
                raise InputError(f"none of the {len(picked)} calibration files could be read as an image")
            _quantize(fp32, Path(tmp) / "int8.onnx", np.stack(pixels))
            order = [n.name for n in model.graph.node]
            model = onnx.load(str(Path(tmp) / "int8.onnx"))
            _restore_order(model.graph, order)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {META_KEY: json.dumps(meta)})
    model.doc_string = f"normalcy {det.name}: uint8 NHWC RGB pixels at {h}x{w} -> image_scores, maps"
    _save(model, staging, path)
    return path


def _torch_export(graph: nn.Module, example: torch.Tensor, path: Path) -> None:
    """torch.onnx's dynamo exporter, batch size free; its chatter (warnings, progress) silenced."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            # Strict (TorchDynamo) capture: the non-strict tracer loses track of modules when the backbone
            # stops its forward pass early by raising from a hook.
            program = torch.export.export(graph, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},),
                                          strict=True)
            torch.onnx.export(program, f=str(path), input_names=[INPUT_NAME], output_names=OUTPUT_NAMES,
                              dynamo=True, verbose=False)
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _quantize(src: Path, dst: Path, pixels: np.ndarray, batch: int = 1) -> None:
    """Static int8 quantisation of the backbone (QDQ, per-channel weights), activation ranges (MinMax) from
    normal images, one at a time (the calibration session runs in onnxruntime's default order, see
    OnnxScorer)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(range(0, len(pixels), batch))

        def get_next(self) -> dict[str, np.ndarray] | None:
            i = next(self.batches, None)
            return None if i is None else {INPUT_NAME: pixels[i:i + batch]}

    import onnx

    # The backbone's nodes, all of them (convolutions, activations, residual sums: fewer conversions between
    # int8 and float); a detector without a backbone: its networks' convolutions.
    backbone = backbone_nodes(onnx.load(str(src), load_external_data=False).graph)
    scope = {"nodes_to_quantize": backbone} if backbone else {"op_types_to_quantize": ["Conv"]}
    logging.disable(logging.WARNING)  # its advice to pre-process: that step fails on these graphs' shapes
    try:
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, **scope)
    finally:
        logging.disable(logging.NOTSET)


def backbone_nodes(graph: Any) -> list[str]:
    """Names of the backbone's nodes: its convolutions (weights named ``backbone.*``), every node on a path
    between two of them (activations, residual sums) and the activation right after one.

    Found from the weights and the graph's edges: the exporter's module scopes (node metadata) are lost inside
    the backbone's forward pass, which stops early by raising from a hook."""
    nodes = list(graph.node)
    convs = {k for k, n in enumerate(nodes) if n.op_type == "Conv" and len(n.input) > 1
             and n.input[1].startswith("backbone.")}
    producer = {out: k for k, n in enumerate(nodes) for out in n.output}
    consumers: dict[int, list[int]] = {}
    for k, n in enumerate(nodes):
        for name in n.input:
            if name in producer:
                consumers.setdefault(producer[name], []).append(k)

    def closure(start: set[int], step: Callable[[int], Sequence[int]]) -> set[int]:
        seen, todo = set(start), list(start)
        while todo:
            for j in step(todo.pop()):
                if j not in seen:
                    seen.add(j)
                    todo.append(j)
        return seen

    below = closure(convs, lambda k: consumers.get(k, []))
    above = closure(convs, lambda k: [producer[i] for i in nodes[k].input if i in producer])
    after = {j for k in convs for j in consumers.get(k, []) if nodes[j].op_type in ("Clip", "Relu")}
    return [nodes[k].name for k in sorted((below & above) | after)]


def _restore_order(graph: Any, order: list[str]) -> None:
    """Sort the quantised graph's nodes as the fp32 graph had them (a quantisation node: as the node it feeds).

    The quantiser sorts them breadth first, which puts every PatchCore bank chunk's distances before the
    first minimum; onnxruntime, which runs ties in the file's order, then holds all of them at once."""
    import heapq

    rank = {name: i for i, name in enumerate(order)}
    nodes = list(graph.node)
    consumers: dict[str, list[int]] = {}
    for k, n in enumerate(nodes):
        for name in n.input:
            consumers.setdefault(name, []).append(k)
    keys: dict[int, float] = {}

    def key(k: int) -> float:
        if k not in keys:
            keys[k] = float(len(order))  # provisional, so a cycle of lookups ends
            below = [key(c) for out in nodes[k].output for c in consumers.get(out, [])]
            keys[k] = float(rank[nodes[k].name]) if nodes[k].name in rank else min(below, default=len(order)) - 0.5
        return keys[k]

    produced = {out: k for k, n in enumerate(nodes) for out in n.output}
    waiting = {k: {produced[i] for i in n.input if i in produced} for k, n in enumerate(nodes)}
    ready = [(key(k), k) for k, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    queued = {k for _, k in ready}
    done: list[int] = []
    while ready:
        _, k = heapq.heappop(ready)
        done.append(k)
        for out in nodes[k].output:
            for c in consumers.get(out, []):
                waiting[c].discard(k)
                if not waiting[c] and c not in queued:
                    queued.add(c)
                    heapq.heappush(ready, (key(c), c))
    if len(done) == len(nodes):  # else leave the quantiser's order, which is valid
        del graph.node[:]
        graph.node.extend(nodes[k] for k in done)


class ExportMeta(Strict):
    """The ``normalcy`` metadata of an exported model, as ``metadata`` writes it: checked on loading, as
    model.json is, because an .onnx file is untrusted input too (a NaN threshold would pass every image)."""

    detector: str
    precision: Literal["fp32", "int8"]
    threshold: FiniteFloat
    fpr: FiniteFloat = Field(gt=0.0, lt=1.0)
    map_range: list[FiniteFloat] = Field(min_length=2, max_length=2)
    image_size: list[Annotated[int, Field(ge=MIN_SIZE, le=MAX_SIZE)]] = Field(min_length=2, max_length=2)
    input: str
    resize: Literal["cv2.INTER_AREA"]
    normalisation: dict[str, Any]
    outputs: dict[str, str]
    backbone: str
    normalcy_version: str
    exact_search: bool | None = None
    threshold_note: str | None = None

    @field_validator("detector")
    @classmethod
    def _exportable(cls, v: str) -> str:
        if v not in EXPORTABLE:
            raise ValueError(f"not an exportable detector: {v!r}; exportable: {', '.join(sorted(EXPORTABLE))}")
        return v

    @model_validator(mode="after")
    def _range(self) -> "ExportMeta":
        if not self.map_range[0] < self.map_range[1]:
            raise ValueError(f"map_range: low must be below high (got {self.map_range})")
        return self


def _tensors(nodes: Any, graph: Any = None) -> Iterator[Any]:
    """Every tensor of a graph (or a local function's nodes): initializers, sparse ones, and the nodes'
    attributes (dense, sparse, in subgraphs)."""
    if graph is not None:
        yield from graph.initializer
        yield from (t for s in graph.sparse_initializer for t in (s.values, s.indices))
    for node in nodes:
        for a in node.attribute:
            yield from (a.t, *a.tensors)
            yield from (t for s in (a.sparse_tensor, *a.sparse_tensors) for t in (s.values, s.indices))
            for g in (a.g, *a.graphs):
                yield from _tensors(g.node, g)


def _external_tensors(proto: Any) -> Iterator[Any]:
    """Every tensor of a model whose data lives in another file: its graph's and its local functions' (a
    function's Constant read a file named relative to the working folder, whatever the file, into the scores)."""
    import onnx

    for nodes, graph in [(proto.graph.node, proto.graph), *((f.node, None) for f in proto.functions)]:
        yield from (t for t in _tensors(nodes, graph) if t.data_location == onnx.TensorProto.EXTERNAL)


MAX_MADE_VALUES = 2**31  # 8 GiB of float32: far above any tensor an exported detector makes from a shape
# What one run of a graph may allocate (onnxruntime's arena), and how long it may take: a shape computed from the
# input at run time (Shape -> Mul -> ConstantOfShape: not a constant, so not seen on loading) asked for what it
# liked, filled whole where the machine could almost hold it, and nothing stopped a run. An exported detector
# scores a batch (at most BATCH_PIXELS of input) in a few GB and seconds.
MAX_RUN_BYTES = 2**34
RUN_SECONDS = 600.0


def _giant_constant_shape(graph: Any) -> tuple[str, int] | None:
    """A ConstantOfShape or Expand node whose shape is a constant of more than ``MAX_MADE_VALUES`` values, with
    its op and that count, or None: a crafted file's shape of [200000, 200000] asks for 160 GB, which
    onnxruntime fills (a size the machine can almost hold is taken whole before anything fails)."""
    from onnx import numpy_helper

    consts = {t.name: t for t in graph.initializer}
    consts.update({n.output[0]: a.t for n in graph.node if n.op_type == "Constant" and n.output
                   for a in n.attribute if a.name == "value"})
    for node in graph.node:
        at = {"ConstantOfShape": 0, "Expand": 1}.get(node.op_type)
        if at is None or len(node.input) <= at or node.input[at] not in consts:
            continue
        shape = numpy_helper.to_array(consts[node.input[at]]).ravel()
        if shape.dtype.kind in "iu" and len(shape) <= 64:
            count = math.prod(max(int(d), 0) for d in shape.tolist())
            if count > MAX_MADE_VALUES:
                return node.op_type, count
    return None


# onnxruntime computes on loading (constant folding) every node whose inputs are all constants: outside a run's
# arena and time limit (a crafted Tile of a constant took 1 GiB past a 64 MiB limit, 30 constant MatMuls 7 s past
# 0.05 s). What an exported detector has of that kind only copies its weights (a PatchCore bank's chunks sliced
# and transposed); for anything else the session folds nothing, and the work is the run's, under its limits.
COPIES = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice", "Cast", "DequantizeLinear"}
# Arithmetic on a few values (shapes): what it makes is at most SMALL values.
SMALL_MATH = {"Gather", "Concat", "Mul", "Add", "Sub", "Div", "Equal", "Where", "Max", "Min", "Neg",
              "Abs", "Floor", "Ceil", "ReduceProd"}
SMALL = 64


def _constant_values(node: Any) -> int:
    """How many values a Constant node holds."""
    for a in node.attribute:
        if a.name == "value":
            return math.prod(a.t.dims)
        if a.name in ("value_floats", "value_ints", "value_strings"):
            return len(a.floats or a.ints or a.strings)
    return 1


def _fixed_shapes(proto: Any) -> set[str]:
    """The tensors of a graph whose shape ONNX's shape inference finds fixed (every side a number): onnxruntime
    folds a Shape of such a tensor on loading, and what is computed from it (a tensor of 1 GiB from a reduction's
    [1, 1, 1, 1] times constants). Inferred on the graph without its weights' values (their types and shapes
    stand for them), so that a graph of 40 MB is not copied for it."""
    import onnx

    graph = proto.graph
    small = [t for t in graph.initializer if math.prod(t.dims) <= SMALL]  # a Reshape's target, read by inference
    stand_ins = [onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                 for t in graph.initializer if math.prod(t.dims) > SMALL]
    bare = onnx.helper.make_graph(list(graph.node), "shapes", [*graph.input, *stand_ins], list(graph.output), small)
    model = onnx.helper.make_model(bare, opset_imports=list(proto.opset_import), ir_version=proto.ir_version)
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # noqa: BLE001 - a graph onnx cannot infer: onnxruntime refuses it on loading
        return set()
    return {v.name for v in [*inferred.value_info, *inferred.input] if v.type.tensor_type.HasField("shape")
            and all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim)}


def _work_on_loading(proto: Any, max_bytes: int) -> str | None:
    """Why onnxruntime's constant folding would do more on loading than copy some of the file's tensors (at most
    ``max_bytes`` in all, counting 8 bytes a value), or None: a node computed from constants alone whose op is
    not a copy nor arithmetic on a few values, or a model with local functions (inlined, then folded)."""
    if proto.functions:
        return "local functions"
    graph = proto.graph
    values = {t.name: math.prod(t.dims) for t in graph.initializer}  # of each constant
    nodes = list(graph.node)
    missing: list[int] = []  # per node, its inputs not yet known constant
    users: dict[str, list[int]] = {}
    ready: list[int] = []
    fixed = _fixed_shapes(proto) if any(n.op_type in ("Shape", "Size") for n in nodes) else set()
    for k, node in enumerate(nodes):
        if node.op_type == "Constant" or (node.op_type in ("Shape", "Size") and node.input and node.input[0] in fixed):
            wanted = set()
        else:
            wanted = {i for i in node.input if i and i not in values}
        missing.append(len(wanted))
        for name in wanted:
            users.setdefault(name, []).append(k)
        if not wanted:
            ready.append(k)
    total = 0
    while ready:
        node = nodes[ready.pop()]
        sizes = [values.get(i, 0) for i in node.input if i]
        if node.op_type == "Constant":
            count = _constant_values(node)
        elif node.op_type in COPIES:
            count = sizes[0] if sizes else 0
        elif node.op_type in ("Shape", "Size"):
            count = SMALL  # a rank's values at most
        elif node.op_type in SMALL_MATH and max(sizes, default=0) <= SMALL:
            count = sum(sizes) if node.op_type == "Concat" else math.prod(sizes)
            if count > SMALL:
                return f"{node.op_type} of {count} values"
        else:
            return f"{node.op_type} of constants"
        total += 8 * count
        if total > max_bytes:
            return f"copies of {total / 2**30:.3g} GiB"
        for out in node.output:
            if out and out not in values:
                values[out] = count
                for k in users.get(out, []):
                    missing[k] -= 1
                    if not missing[k]:
                        ready.append(k)
    return None


def _sparse(proto: Any) -> bool:
    """Whether a model holds a sparse tensor: onnxruntime makes it dense on loading, whatever its size (a file of
    900 bytes declared 16384 x 16384 and took 1 GiB twice). An exported detector has none."""
    import onnx

    kinds = (onnx.AttributeProto.SPARSE_TENSOR, onnx.AttributeProto.SPARSE_TENSORS)
    nodes = [*proto.graph.node, *(n for f in proto.functions for n in f.node)]
    return bool(proto.graph.sparse_initializer) or any(
        a.type in kinds or a.HasField("sparse_tensor") or len(a.sparse_tensors) for n in nodes for a in n.attribute)


def _control_flow(proto: Any) -> str | None:
    """The first node of a model (its graph and its local functions) that runs a subgraph (Loop, Scan, If: a
    loop's trip count is data, 2**62 in a crafted file, which hung the loading probe for ever), or None. An
    exported detector is one straight graph."""
    import onnx

    nested = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    for node in [*proto.graph.node, *(n for f in proto.functions for n in f.node)]:
        if node.op_type in ("Loop", "Scan", "If") or any(a.type in nested for a in node.attribute):
            return node.op_type
    return None


GRACE_SECONDS = 1.0  # how long a run may take to stop at its next node once its time is up


class _Job:
    """One graph run handed to a worker: the call, and its result or error once ``done`` (a lock taken until
    then: the cheapest handoff between threads) is released."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.call, self.done = call, threading.Lock()
        self.done.acquire()
        self.finished = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.abandoned = False


class _Workers:
    """Daemon threads that run the graph while the caller waits at most the run's time. onnxruntime looks at
    ``RunOptions.terminate`` only between nodes, so one slow node (a product of two 8192 x 8192 tensors computed
    from the input: 43 s past a 0.5 s limit) held its caller to the end; the caller now waits, sets the flag,
    waits ``GRACE_SECONDS`` more for the run to stop at its next node, and past that leaves the node to finish
    on its own thread (a core and its arena memory stay busy until it does; ``abandoned`` counts such runs).
    An idle worker is reused: a thread started for each run cost about 65 us of a batch-1 call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[tuple[threading.Thread, queue.SimpleQueue[_Job]]] = []
        self.abandoned = 0  # runs given up on that are still going

    def run(self, call: Callable[[], Any], options: Any, seconds: float) -> Any:
        """call()'s result (its error is raised here), or None for a run that did not stop within the grace after
        its time (it goes on in the background)."""
        job = _Job(call)
        self._hand(job)
        try:  # a lock waits at most TIMEOUT_MAX (292 years): run_seconds=1e10 raised OverflowError, said as a run over
            if not job.done.acquire(timeout=min(seconds, threading.TIMEOUT_MAX)):
                options.terminate = True
                job.done.acquire(timeout=GRACE_SECONDS)
        except BaseException:  # Ctrl-C: the run stops at its next node
            options.terminate = True
            self._give_up(job)
            raise
        if self._give_up(job):
            return None
        if job.error is not None:
            raise job.error
        return job.result

    def _give_up(self, job: _Job) -> bool:
        """Whether the job is still running; if so, it is counted in ``abandoned`` until it ends."""
        with self._lock:
            if not job.finished:
                job.abandoned = True
                self.abandoned += 1
            return job.abandoned

    def _hand(self, job: _Job) -> None:
        with self._lock:
            while self._idle:
                thread, inbox = self._idle.pop()
                if thread.is_alive():  # not in a forked child, where only the forking thread runs
                    inbox.put(job)
                    return
        inbox: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        inbox.put(job)
        threading.Thread(target=self._work, args=(inbox,), name="normalcy-onnx-run", daemon=True).start()

    def _work(self, inbox: queue.SimpleQueue[_Job]) -> None:
        me = threading.current_thread()
        while True:
            job = inbox.get()
            try:
                job.result = job.call()
            except BaseException as err:  # noqa: BLE001 - handed to the caller, raised there
                job.error = err
            with self._lock:
                job.finished = True
                self.abandoned -= job.abandoned
                self._idle.append((me, inbox))
            job.done.release()
            del job


_WORKERS = _Workers()


def abandoned_runs() -> int:
    """Graph runs given up on that still go on (``_Workers``): a process with one must not exit normally."""
    return _WORKERS.abandoned


def _ort_reason(err: Exception) -> str:
    """onnxruntime's message, one line, without its status prefixes and the C++ source places and function
    signatures it names, which filled the characters shown before the reason ("Opset 99 is under development",
    "Unsupported model IR version: 99" came after 200 of them)."""
    text = " ".join(str(err)[:2000].split())  # cut first: the patterns below are not linear on any text
    text = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    text = re.sub(r"\S+\.(?:cc|h|cpp):\d+ (?:[\w:<>,&*~ ]*?::~?\w+\([^()]*\)(?: const)? )?", "", text)
    return text.strip()


def _check_limits(threads: int | None, max_bytes: int | None, run_seconds: float) -> None:
    """OnnxScorer's settings, before any work (as the CLI checks ``--threads``): ``threads=10**6`` started a
    million threads (it hung), a negative ``max_bytes`` was pybind's RuntimeError, and a ``run_seconds`` of -1
    or NaN was no limit at all."""
    most = 4 * (os.cpu_count() or 1)  # more only oversubscribes the cores
    if threads is not None and not (isinstance(threads, int) and 1 <= threads <= most):
        raise InputError(f"threads must be 1 to {most} (4 per core), not {threads!r}")
    if max_bytes is not None and not (isinstance(max_bytes, int) and max_bytes >= 1):
        raise InputError(f"max_bytes must be a positive number of bytes, not {max_bytes!r}")
    if not (isinstance(run_seconds, (int, float)) and 0 < run_seconds < math.inf):
        raise InputError(f"run_seconds must be a positive number of seconds, not {run_seconds!r}")


class OnnxScorer:
    """Scores image files with an exported model and onnxruntime: normalcy's own reading and resizing.

    The file is untrusted input, checked before anything is scored: a regular file of at most
    ``MAX_ONNX_BYTES`` with its weights inside (no external data files), the ``normalcy`` metadata
    against ``ExportMeta``, the graph's input and outputs (names, element types, ranks, input size), and
    every run's outputs (shapes of the batch, finite values). Each problem is one InputError line. A run may
    allocate at most ``max_bytes`` (default ``MAX_RUN_BYTES``, or the machine's memory where that is less) and
    take at most ``run_seconds`` (``RUN_SECONDS``); its input must be the batch the metadata describes."""

    def __init__(self, path: str | Path, threads: int | None = None, max_bytes: int | None = None,
                 run_seconds: float = RUN_SECONDS) -> None:
        _need_onnx()
        import onnx
        import onnxruntime as ort

        _check_limits(threads, max_bytes, run_seconds)
        self.path = path = Path(path)
        if not path.exists() and not path.is_symlink():
            raise InputError(f"{path}: no such file (an exported model is one .onnx file, from `normalcy export`)")
        data = read_model_file(path, MAX_ONNX_BYTES)
        if not data:  # protobuf reads it as an empty model, which was "not a normalcy export (no metadata)"
            raise InputError(f"{path}: an empty file, not an ONNX model (a copy or download cut short?)")
        try:
            proto = onnx.load_model_from_string(data)  # bytes: external data is never loaded
        except Exception as err:  # noqa: BLE001 - protobuf's DecodeError and others, for every bad file
            raise InputError(f"{path}: cannot load it as an ONNX model ({str(err).strip()[:200]})") from None
        if next(_external_tensors(proto), None) is not None:
            raise InputError(f"{path}: weights in external data files, refused (`normalcy export` writes one file)")
        flow = _control_flow(proto)
        if flow is not None:
            raise InputError(f"{path}: a graph with control flow ({flow}), which `normalcy export` never writes: "
                             "refused (a crafted loop runs for ever)")
        big = _giant_constant_shape(proto.graph)
        if big is not None:
            raise InputError(f"{path}: its {big[0]} node makes a tensor of {big[1]:.3g} values, over the "
                             f"{MAX_MADE_VALUES:.3g} an exported model ever makes: refused (it would fill the memory)")
        if _sparse(proto):
            raise InputError(f"{path}: a sparse tensor, which `normalcy export` never writes: refused (onnxruntime "
                             "makes it dense on loading, whatever size it declares)")
        self.max_bytes = int(max_bytes or min(MAX_RUN_BYTES, psutil.virtual_memory().total))
        heavy = _work_on_loading(proto, self.max_bytes)
        props = {p.key: p.value for p in proto.metadata_props}
        del proto
        self.meta: dict[str, Any] = self._read_meta(props)
        self.size: tuple[int, int] = (self.meta["image_size"][0], self.meta["image_size"][1])
        self.threshold = float(self.meta["threshold"])

        opts = ort.SessionOptions()
        # The default order computes every bank chunk's distances before reducing any (patchcore, magnetic_tile,
        # batch of 8: 1.2 GB more); in priority order each chunk is reduced and freed first (0.3 GB).
        opts.execution_order = ort.ExecutionOrder.PRIORITY_BASED
        opts.log_severity_level = 4  # a failing node is said once, in run's InputError, not also in its log
        # torch's count unless told otherwise: `--threads N` sets torch's, and onnxruntime's own default (every
        # core) ignored it for an exported model
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        self.run_seconds = float(run_seconds)
        # The bound on memory is an arena with a limit, shared by the sessions made after it is registered (each
        # scorer registers its own); a request past it fails in the run instead of being allocated.
        arena = ort.OrtArenaCfg({"max_mem": self.max_bytes, "arena_extend_strategy": 0})
        ort.create_and_register_allocator(
            ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT), arena)
        opts.add_session_config_entry("session.use_env_allocators", "1")
        try:
            self.session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"],
                                                disabled_optimizers=["ConstantFolding"] if heavy else [])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own classes for every bad file
            raise InputError(f"{path}: cannot load it as an ONNX model ({_ort_reason(err)[:300]})") from None
        self._check_graph()
        # a graph whose outputs are wrong, or that takes one image at a time, fails here, not mid-run
        self.run(np.zeros((batch_for(self.size, 2), *self.size, 3), np.uint8))

    def _read_meta(self, props: dict[str, str]) -> dict[str, Any]:
        if META_KEY not in props:
            raise InputError(f"{self.path}: not a normalcy export (no '{META_KEY}' metadata)")
        try:
            raw = json.loads(props[META_KEY])
        except (ValueError, RecursionError) as err:  # ValueError: JSONDecodeError, and an integer of 4300+ digits
            raise InputError(f"{self.path}: metadata '{META_KEY}': invalid JSON ({str(err)[:200]})") from None
        if not isinstance(raw, dict):
            raise InputError(f"{self.path}: metadata '{META_KEY}': expected a JSON object, got {type(raw).__name__}")
        try:
            return ExportMeta.model_validate(raw).model_dump(exclude_none=True)
        except ValidationError as err:
            raise InputError(f"{self.path}: {describe(err)}") from None

    def _check_graph(self) -> None:
        """The session's one input and two outputs: names, element types and ranks as export writes them,
        and the input's height and width those of the metadata."""
        inputs = self.session.get_inputs()
        name, dtype, rank = GRAPH_INPUT
        if [i.name for i in inputs] != [name]:
            raise InputError(f"{self.path}: the graph's inputs are {[i.name for i in inputs]}, expected [{name!r}]")
        expected: dict[str, tuple[str, int]] = {name: (dtype, rank), **GRAPH_OUTPUTS}
        outputs = self.session.get_outputs()
        if sorted(o.name for o in outputs) != sorted(GRAPH_OUTPUTS):
            raise InputError(f"{self.path}: the graph's outputs are {[o.name for o in outputs]}, "
                             f"expected {list(GRAPH_OUTPUTS)}")
        for arg in [*inputs, *outputs]:
            kind = "input" if arg.name == name else "output"
            want_type, want_rank = expected[arg.name]
            if arg.type != want_type:
                raise InputError(f"{self.path}: {kind} {arg.name}: type {arg.type}, expected {want_type}")
            if not isinstance(arg.shape, list) or len(arg.shape) != want_rank:
                raise InputError(f"{self.path}: {kind} {arg.name}: shape {arg.shape}, expected rank {want_rank}")
        shape = inputs[0].shape  # fixed sides must be the metadata's (a named one is free)
        if any(isinstance(d, int) and d != want for d, want in zip(shape[1:], (*self.size, 3))):
            raise InputError(f"{self.path}: input {name}: shape {shape}, expected "
                             f"[N, {self.size[0]}, {self.size[1]}, 3] (image_size in the metadata)")

    def run(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The graph alone: uint8 N x H x W x 3 resized images -> (image scores, patch maps), checked:
        scores [N], maps [N, h, w], all finite (else InputError: the file is not a sound model)."""
        h, w = self.size
        if not (isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8 and pixels.ndim == 4
                and pixels.shape[1:] == (h, w, 3) and len(pixels)):
            got = f"{pixels.dtype} {list(pixels.shape)}" if isinstance(pixels, np.ndarray) else type(pixels).__name__
            raise InputError(f"{self.path}: the graph takes uint8 [N, {h}, {w}, 3] (N at least 1), not {got}")
        import onnxruntime as ort

        n = len(pixels)
        options = ort.RunOptions()
        try:
            outputs = _WORKERS.run(lambda: self.session.run(OUTPUT_NAMES, {INPUT_NAME: pixels}, options),
                                   options, self.run_seconds)
        except Exception as err:  # noqa: BLE001 - onnxruntime's own classes: a graph that fails on this batch
            text = _ort_reason(err)
            if options.terminate:
                raise InputError(f"{self.path}: the graph ran over {self.run_seconds:g} s on a batch of {n} "
                                 "image(s): stopped (an exported model scores a batch in seconds)") from None
            asked = re.search(r"Available memory of \d+ is smaller than requested bytes of (\d+)", text)
            if asked:
                raise InputError(f"{self.path}: the graph asked for {int(asked.group(1)) / 2**30:.3g} GiB on a batch "
                                 f"of {n} image(s), over the {self.max_bytes / 2**30:.3g} GiB a run may use: refused "
                                 "(an exported model needs a few GB)") from None
            raise InputError(f"{self.path}: the graph failed on a batch of {n} image(s) ({text[:300]})") from None
        if outputs is None:
            raise InputError(f"{self.path}: the graph ran over {self.run_seconds:g} s on a batch of {n} image(s) and "
                             f"one of its nodes did not stop within {GRACE_SECONDS:g} s more: abandoned (it ends on "
                             "its own; an exported model scores a batch in seconds)")
        scores, maps = outputs
        if scores.shape != (n,):
            raise InputError(f"{self.path}: output image_scores: shape {scores.shape} for {n} image(s), expected ({n},)")
        if maps.ndim != 3 or maps.shape[0] != n or not maps.shape[1] or not maps.shape[2]:
            raise InputError(f"{self.path}: output maps: shape {maps.shape} for {n} image(s), expected ({n}, h, w)")
        for out, values in (("image_scores", scores), ("maps", maps)):
            if not np.isfinite(values).all():
                raise InputError(f"{self.path}: output {out}: {int((~np.isfinite(values)).sum())} NaN or "
                                 "infinite value(s)")
        return scores, maps

    def iter_score(self, paths: Sequence[Path], batch_size: int = 8) -> Iterator[Scored | Skipped]:
        """A record per file, batch by batch as ``Detector.iter_score`` streams them (no embeddings: the graph
        has none): Scored with the image at its own size, or Skipped with the reason. A large input size goes
        fewer to a batch, as in PyTorch (``batch_for``): a whole batch runs through the graph at once."""
        paths, batch_size = list(paths), batch_for(self.size, batch_size)
        for i in range(0, len(paths), batch_size):
            skipped: list[tuple[Path, str]] = []
            read = list(iter_images(paths[i: i + batch_size], skipped))
            yield from (Skipped(p, why) for p, why in skipped)
            if read:
                s, m = self.run(np.stack([resize_image(im, self.size) for _, im in read]))
                for k, (p, im) in enumerate(read):
                    yield Scored(p, im, float(s[k]), m[k], float(s[k]) >= self.threshold)
                del im, s, m
            del read  # before the next batch is read: two batches' images were held at once

    def score(self, paths: Sequence[Path] | str | Path, batch_size: int = 8) -> Result:
        """Scores, decisions and maps (at each image's own size, drawn when read) of the readable images."""
        if isinstance(paths, (str, Path)):
            paths = list_files(paths)
        return collect(self.iter_score(paths, batch_size), self.threshold)
