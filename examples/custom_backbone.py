"""Plug your own network into normalcy as a feature backbone.

normalcy reads features from named submodules of any ``torch.nn.Module``. To use
your own network you need three things:

1. a Python file with a *factory function* that builds the (untrained) network,
   e.g. ``tiny_cnn()`` below;
2. a local weight file holding its state dict: ``.safetensors`` (preferred; it
   can hold no code) or a ``.pt`` / ``.pth`` file, which is read with
   ``torch.load(..., weights_only=True)``, so a pickled *whole model* will not
   load, only a plain state dict;
3. which submodules to read (``levels``) and their strides w.r.t. the input.
   List the names with ``[n for n, _ in tiny_cnn().named_modules()]``.

Run it from the project root::

    python examples/custom_backbone.py            # random weights, synthetic images
    python examples/custom_backbone.py DATA_ROOT  # an MVTec-layout folder (train/good, test/...)

The weights saved here are random, which is fine for a demo; for real work use
a network pretrained on a large image data set. For example, for your own
torchvision ResNet-18 checkpoint (file ``resnet18.py`` with
``def resnet18(): return torchvision.models.resnet18()``)::

    import torch
    from safetensors.torch import save_file
    state = torch.load("resnet18-f37072fd.pth", map_location="cpu", weights_only=True)
    save_file({k: v.contiguous() for k, v in state.items()}, "resnet18.safetensors")

    spec = custom_backbone(
        "resnet18.py:resnet18", "resnet18.safetensors",   # or the .pth itself
        levels={"s8": "layer2", "s16": "layer3", "s32": "layer4"},
        strides={"s8": 8, "s16": 16, "s32": 32},
    )   # mean/std default to ImageNet's; pass yours if the network was trained otherwise

A saved model records the (absolute) path of the factory file and of the
weight file, and the SHA-256 of the factory file; ``normalcy.detectors.load``
rebuilds the backbone from them, so keep both files where they are. Since that
rebuilds by running the factory file's Python code, ``load`` refuses such a
model unless you pass ``trust_code=True`` (``--trust-model-code`` on the command
line), and refuses it anyway if the file has changed since the model was fitted.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from torch import nn


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 convs; the first halves the resolution."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class TinyCNN(nn.Module):
    """A small four-stage CNN; every stage halves the resolution (strides 2, 4, 8, 16)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _stage(3, 16)  # stride 2
        self.stage1 = _stage(16, 24)  # stride 4
        self.stage2 = _stage(24, 32)  # stride 8
        self.stage3 = _stage(32, 48)  # stride 16
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(48, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalcy stops the forward pass after the deepest level it reads, so
        # the head is never run when extracting features.
        return self.head(self.stage3(self.stage2(self.stage1(self.stem(x)))))


def tiny_cnn() -> nn.Module:
    """The factory named in ``custom_backbone("examples/custom_backbone.py:tiny_cnn", ...)``."""
    return TinyCNN()


LEVELS = {"s8": "stage2", "s16": "stage3"}
STRIDES = {"s8": 8, "s16": 16}


def save_random_weights(path: Path, seed: int = 0) -> Path:
    """Write a random-init state dict of ``tiny_cnn()`` as safetensors (stand-in for real weights)."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    net = tiny_cnn()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def _synthetic_images(folder: Path, n: int, defect: bool = False, seed: int = 0) -> list[Path]:
    """Smooth random textures (optionally with a bright square) so the example runs without data."""
    import cv2
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        im = cv2.GaussianBlur(rng.random((96, 96, 3)).astype(np.float32), (0, 0), 3)
        im = (im - im.min()) / (im.max() - im.min() + 1e-6) * 200
        if defect:
            im[30:50, 40:60] = 255
        p = folder / f"{i:03d}.png"
        Image.fromarray(im.astype(np.uint8)).save(p)
        paths.append(p)
    return paths


def main(argv: list[str]) -> None:
    from normalcy.detectors import create, load
    from normalcy.images.backbones import custom_backbone
    from normalcy.images.features import FeatureExtractor
    from normalcy.images.io import list_files, load_dataset

    work = Path(tempfile.mkdtemp(prefix="normalcy_custom_"))
    weights = save_random_weights(work / "tiny_cnn.safetensors")
    spec = custom_backbone(
        f"{Path(__file__).resolve()}:tiny_cnn",  # "examples/custom_backbone.py:tiny_cnn" from the root
        weights,
        levels=LEVELS,
        strides=STRIDES,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    )
    extractor = FeatureExtractor(spec, image_size=128)

    if argv:
        ds = load_dataset(argv[0])
        train, test = ds.train, [s.path for s in ds.test]
    else:
        train = _synthetic_images(work / "train", 16)
        test = _synthetic_images(work / "test_good", 3, seed=1) + _synthetic_images(
            work / "test_defect", 3, defect=True, seed=2
        )
    det = create("gaussian", extractor).fit(train, progress=False)
    det.save(work / "model")
    again = load(work / "model", trust_code=True)  # runs this file's code again: we trust it, we wrote it
    result = again.score(test, progress=False)
    print(f"model in {work / 'model'} ({sorted(p.name for p in list_files(work / 'model'))})")
    print(f"threshold {result.threshold:.3f}")
    for path, score, flag in zip(result.paths, result.scores, result.decisions):
        print(f"{score:9.3f} {'ANOMALY' if flag else 'ok':7s} {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
