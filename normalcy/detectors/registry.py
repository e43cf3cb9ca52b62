"""The detectors by name: create a new one, or load a saved one (model.json names its detector).

MuSc is not among them: it is a zero-shot batch scorer with nothing to fit or save
(``MuSc(...).score(paths)``, or ``normalcy score-batch``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from normalcy.detectors.base import Detector, features_of
from normalcy.detectors.draem import DRAEM
from normalcy.detectors.efficientad import EfficientAD
from normalcy.detectors.gaussian import GaussianAD
from normalcy.detectors.modelfile import MODEL_TENSORS, read_model
from normalcy.detectors.musc import MuSc
from normalcy.detectors.patchcore import PatchCore
from normalcy.detectors.simplenet import SimpleNet
from normalcy.detectors.training import Trained
from normalcy.errors import InputError
from normalcy.files import MODEL_JSON, one_line, short_repr
from normalcy.images.backbones import custom_backbone
from normalcy.images.features import FeatureExtractor

DETECTORS: dict[str, type[Detector]] = {
    cls.name: cls for cls in (GaussianAD, PatchCore, SimpleNet, DRAEM, EfficientAD)
}
ZERO_SHOT_MESSAGE = ("musc is zero-shot: it scores a batch of unlabeled images against each other and has no "
                     "model to fit or save; use `normalcy score-batch FOLDER` (Python: MuSc().score(paths))")


def default_backbone(name: str) -> str:
    """The backbone a detector runs on unless told otherwise (Detector.default_backbone); EfficientNet-Lite0 for
    any other name (auto, musc)."""
    return DETECTORS[name].default_backbone if name in DETECTORS else "efficientnet_lite0"


def create(name: str, extractor: FeatureExtractor | None = None, **kwargs: Any) -> Detector:
    """A new, unfitted detector by name."""
    if name == MuSc.name:
        raise InputError(ZERO_SHOT_MESSAGE)
    try:
        cls = DETECTORS[name]
    except KeyError:
        raise InputError(f"unknown detector {name!r}; choose one of {sorted(DETECTORS)}") from None
    return cls(extractor=extractor, **kwargs)


def load(directory: str | Path, trust_code: bool = False) -> Detector:
    """Load a model directory written by ``Detector.save``; every problem is one InputError line.

    A model is data: one whose backbone is custom Python code is refused unless
    ``trust_code`` (see ``normalcy.detectors.modelfile``), so loading a stranger's model runs nothing.
    """
    d = Path(directory)
    meta, tensors = read_model(d, trust_code=trust_code)
    meta_path, state_path = d / MODEL_JSON, d / MODEL_TENSORS
    cls = DETECTORS.get(meta.detector)
    if cls is None:
        raise InputError(f"{meta_path}: unknown detector {short_repr(meta.detector)}; this normalcy has {sorted(DETECTORS)}")
    ex = meta.extractor
    try:
        backbone: Any = ex.backbone
        if ex.backbone_extras is not None:  # a custom backbone: rebuilt from its (trusted, hashed) code
            backbone = custom_backbone(**ex.backbone_extras.model_dump())
        extractor = FeatureExtractor(backbone=backbone, **ex.model_dump(exclude={"backbone", "backbone_extras"}))
        det = cls(extractor=extractor, fpr=meta.fpr, batch_size=meta.batch_size, seed=meta.seed, **meta.params)
    except InputError as err:
        raise InputError(f"{meta_path}: {err}") from None
    except (TypeError, ValueError, KeyError, RuntimeError, AssertionError) as err:
        raise InputError(f"{meta_path}: does not describe a {meta.detector} model: {one_line(err)}") from None
    try:
        det.load_state_dict(tensors)
    except InputError as err:
        raise InputError(f"{state_path}: {err}") from None
    except KeyError as err:
        raise InputError(f"{state_path}: does not fit a {meta.detector} model: missing tensor {err}") from None
    except (ValueError, RuntimeError, AssertionError, TypeError, IndexError) as err:
        raise InputError(f"{state_path}: does not fit a {meta.detector} model: {one_line(err)}") from None
    det.threshold_ = meta.threshold
    det._threshold_fpr = det.fpr  # model.json's, which its threshold was set at
    det.threshold_fp32_ = meta.threshold_fp32
    det.map_range_ = (meta.map_range[0], meta.map_range[1])
    det.n_train_ = meta.n_train
    det.train_colour_ = meta.train_colour
    det.skipped_fit_ = []  # not recorded in model.json
    det.features_ = features_of(extractor)
    if isinstance(det, Trained):
        det.training_ = meta.training  # how training went, written back by a save (it has no TrainLog)
    det.choice = meta.choice  # what auto / --tune chose: reports show it, a re-saved model keeps it
    return det
