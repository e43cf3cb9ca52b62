"""The single-method series detectors by name: what ``auto`` may combine, and the registry's first entries.

Kept apart from ``registry`` so that ``auto`` (an entry of the registry) can build its members without
importing the registry that imports it.
"""

from __future__ import annotations

from normalcy.series.autoencoder import Autoencoder
from normalcy.series.base import SeriesDetector
from normalcy.series.forecast import Forecast
from normalcy.series.hypad import HypAD
from normalcy.series.knn import SubsequenceKNN
from normalcy.series.pca import SubsequencePCA

# One line per detector.
MEMBERS: dict[str, type[SeriesDetector]] = {cls.name: cls for cls in (
    SubsequenceKNN,
    SubsequencePCA,
    Autoencoder,
    HypAD,
    Forecast,
)}
