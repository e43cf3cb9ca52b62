"""Series detectors by name, and loading a saved series model (checked, never unpickled)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from normalcy.detectors.modelfile import MODEL_TENSORS, read_tensors
from normalcy.errors import InputError
from normalcy.files import (MODEL_JSON, Strict, describe, model_kind, no_model_json, read_json, reading,
                            short_repr)
from normalcy.series.auto import AutoDetector
from normalcy.series.base import FORMAT_VERSION, SERIES_KIND, SeriesDetector, SeriesModelMeta
from normalcy.series.members import MEMBERS

# The single-method detectors (series/members.py) and auto, which combines them.
DETECTORS: dict[str, type[SeriesDetector]] = {**MEMBERS, AutoDetector.name: AutoDetector}
DEFAULT_DETECTOR = "auto"
M = TypeVar("M", bound=Strict)


def create(name: str, **params: Any) -> SeriesDetector:
    """A new detector by name; unknown names and bad parameters are one InputError."""
    if name not in DETECTORS:
        raise InputError(f"unknown series detector {name!r}; choose from {', '.join(sorted(DETECTORS))}")
    return DETECTORS[name](**params)


def is_series_model(directory: str | Path) -> bool:
    """Whether the folder's model.json says it is a series model (one that cannot be read safely is not)."""
    return model_kind(directory) == SERIES_KIND


def checked_meta(path: Path, raw: dict[str, Any], schema: type[M], version: int, what: str) -> M:
    """A model.json's content checked: its format version first (a newer file says so, rather than listing
    fields it does not know), then against ``schema``; one InputError line naming ``path``."""
    if raw.get("format_version") != version or isinstance(raw.get("format_version"), bool):
        raise InputError(f"{path}: {what} format version {short_repr(raw.get('format_version'))} is not supported "
                         f"(this normalcy reads version {version})")
    try:
        return schema.model_validate(raw)
    except ValidationError as err:
        raise InputError(f"{path}: {describe(err)}") from None


def load(directory: str | Path) -> SeriesDetector:
    """A saved series model: model.json checked field by field and against the columns, model.safetensors
    read by safetensors alone, the state checked by the detector and by a trial score. One InputError line
    naming the file for every problem."""
    d = Path(directory)
    with reading(d):  # another process's save over it: never its model.json with the earlier tensors
        return _load(d)


def _load(d: Path) -> SeriesDetector:
    meta_path = d / MODEL_JSON
    if not os.path.lexists(meta_path):
        raise no_model_json(d)
    raw = read_json(meta_path)
    if raw.get("kind") != SERIES_KIND:
        raise InputError(f"{meta_path}: not a series model (kind {short_repr(raw.get('kind'))})")
    meta = checked_meta(meta_path, raw, SeriesModelMeta, FORMAT_VERSION, "series model")
    if meta.detector not in DETECTORS:
        raise InputError(f"{meta_path}: unknown series detector {short_repr(meta.detector)}; this normalcy has "
                         f"{', '.join(sorted(DETECTORS))}")
    return DETECTORS[meta.detector].from_saved(meta, read_tensors(d / MODEL_TENSORS), d)
