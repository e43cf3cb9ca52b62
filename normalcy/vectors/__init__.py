"""Anomaly detectors on feature vectors (embeddings, catalogue columns), one file each, and tables of them.

The classes are re-exported here because vector model files saved before the detectors had files of
their own name them ``normalcy.vectors.GaussianDetector`` (skops records a class's module path), and
those files still load; a model saved now names the detector's own module (``normalcy.vectors.gaussian``).
"""

from normalcy.vectors.ecod import ECODDetector
from normalcy.vectors.ensemble import EnsembleDetector
from normalcy.vectors.gaussian import GaussianDetector
from normalcy.vectors.iforest import IForestDetector
from normalcy.vectors.knn import KNNDetector

__all__ = ["ECODDetector", "EnsembleDetector", "GaussianDetector", "IForestDetector", "KNNDetector"]
