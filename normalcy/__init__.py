"""normalcy: learn what normal looks like in pretrained features, and find what is not.

The Python API (normalcy.api): ``fit``, ``predict``, ``score_batch``, ``load``.
"""

from normalcy.api import fit, load, predict, score_batch
from normalcy.version import __version__

__all__ = ["__version__", "fit", "load", "predict", "score_batch"]
