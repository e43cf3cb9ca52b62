"""normalcy: learn what normal looks like in pretrained features, and find what is not.

The Python API (normalcy.api): ``fit``, ``predict``, ``evaluate``, ``score_batch``, ``load``.
"""

from normalcy.api import evaluate, fit, load, predict, score_batch
from normalcy.version import __version__

__all__ = ["__version__", "evaluate", "fit", "load", "predict", "score_batch"]
