"""Detectors: one file each, all following the protocol in base.py."""

from __future__ import annotations

from typing import Any

from ..data import InputError
from ..features import FeatureExtractor
from .base import Detector, NotFittedError, Result, load
from .draem import DRAEM
from .efficientad import EfficientAD
from .gaussian import GaussianAD
from .musc import MuSc
from .patchcore import PatchCore
from .simplenet import SimpleNet

DETECTORS: dict[str, type[Detector]] = {
    cls.name: cls
    for cls in (
        GaussianAD,
        PatchCore,
        SimpleNet,
        DRAEM,
        EfficientAD,
        MuSc,
    )
}


def create(name: str, extractor: FeatureExtractor | None = None, **kwargs: Any) -> Detector:
    """A new, unfitted detector by name."""
    try:
        cls = DETECTORS[name]
    except KeyError:
        raise InputError(f"unknown detector {name!r}; choose one of {sorted(DETECTORS)}") from None
    return cls(extractor=extractor, **kwargs)


__all__ = ["DETECTORS", "DRAEM", "Detector", "GaussianAD", "NotFittedError", "PatchCore", "Result", "SimpleNet", "create", "load"]
