"""normalcy: learn what normal looks like in pretrained features, and find what is not.

The Python API (normalcy.api): ``fit``, ``predict``, ``evaluate``, ``score_batch``, ``load``. They are imported
when first used, not by ``import normalcy``: the command line starts from here, and a Ctrl-C during the seconds
torch takes to import was Python's traceback (``normalcy.__main__`` turns it into one line).
"""

from typing import Any

from normalcy.version import __version__

__all__ = ["__version__", "evaluate", "fit", "load", "predict", "score_batch"]
_API = ("evaluate", "fit", "load", "predict", "score_batch")


def __getattr__(name: str) -> Any:
    if name in _API:
        from normalcy import api

        return getattr(api, name)
    raise AttributeError(f"module 'normalcy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
