"""Detectors: one file each, all following the protocol in base.py; registry.py names them.

MuSc is not among them: it is a zero-shot batch scorer with nothing to fit or save
(``MuSc(...).score(paths)``, or ``normalcy score-batch``).
"""

from normalcy.detectors.base import Detector, Result, Scored, Skipped
from normalcy.detectors.draem import DRAEM
from normalcy.detectors.efficientad import EfficientAD
from normalcy.detectors.gaussian import GaussianAD
from normalcy.detectors.musc import MuSc
from normalcy.detectors.patchcore import PatchCore
from normalcy.detectors.registry import (
           DETECTORS,
           ZERO_SHOT_MESSAGE,
           create,
           default_backbone,
           load,
)
from normalcy.detectors.simplenet import SimpleNet
from normalcy.errors import NotFittedError

__all__ = ["DETECTORS", "DRAEM", "Detector", "EfficientAD", "GaussianAD", "MuSc", "NotFittedError", "PatchCore",
           "Result", "Scored", "SimpleNet", "Skipped", "ZERO_SHOT_MESSAGE", "create", "default_backbone", "load"]
