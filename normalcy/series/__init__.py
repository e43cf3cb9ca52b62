"""Time series: reading series files, subsequence and learned detectors, events, streaming.

``normalcy.series.io`` reads and repairs series files, ``base.SeriesDetector`` is the protocol every
detector follows, ``registry`` names them and loads saved models, ``events`` merges decisions into events.
"""
