"""Detectors: one file each, all following the protocol in base.py.

MuSc is not among them: it is a zero-shot batch scorer with nothing to fit or save
(``MuSc(...).score(paths)``, or ``normalcy score-batch``).
"""

from __future__ import annotations

from typing import Any

from ..data import InputError
from ..features import FeatureExtractor
from ..modelfile import load
from .base import Detector, NotFittedError, Result, Scored, Skipped
from .draem import DRAEM
from .efficientad import EfficientAD
from .gaussian import GaussianAD
from .musc import MuSc
from .patchcore import PatchCore
from .simplenet import SimpleNet

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


__all__ = ["DETECTORS", "DRAEM", "Detector", "EfficientAD", "GaussianAD", "MuSc", "NotFittedError", "PatchCore",
           "Result", "Scored", "SimpleNet", "Skipped", "ZERO_SHOT_MESSAGE", "create", "default_backbone", "load"]
