"""normalcy: learn what normal looks like in pretrained features, and find what is not."""

__version__ = "0.1.0"
