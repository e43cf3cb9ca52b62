"""The vector detectors by name, as ``normalcy fit`` takes them, and making one."""

from __future__ import annotations

from normalcy.errors import InputError
from normalcy.vectors.base import VectorDetector
from normalcy.vectors.ecod import ECODDetector
from normalcy.vectors.ensemble import EnsembleDetector
from normalcy.vectors.gaussian import GaussianDetector
from normalcy.vectors.iforest import IForestDetector
from normalcy.vectors.knn import KNNDetector

__all__ = ["DEFAULT_DETECTOR", "VECTOR_DETECTORS", "create"]

VECTOR_DETECTORS: dict[str, type[VectorDetector]] = {
    "gaussian": GaussianDetector, "knn": KNNDetector, "iforest": IForestDetector, "ecod": ECODDetector,
    "ensemble": EnsembleDetector,
}
DEFAULT_DETECTOR = "ensemble"


def create(name: str, fpr: float, seed: int) -> VectorDetector:
    """An unfitted detector by name, seeded where it draws random numbers; InputError for an unknown name."""
    if name not in VECTOR_DETECTORS:
        raise InputError(f"unknown detector {name!r} for tables; one of: {', '.join(VECTOR_DETECTORS)}")
    det = VECTOR_DETECTORS[name](fpr=fpr)
    if "random_state" in det.get_params():
        det.set_params(random_state=seed)
    try:
        det._check_params()  # an --fpr out of range is the user's to fix: an InputError, as for images and series
    except ValueError as err:
        raise InputError(f"detector {name}: {err}") from None
    return det
