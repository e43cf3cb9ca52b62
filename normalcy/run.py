"""A run directory: what scoring a folder leaves behind, for people and for `normalcy serve`.

    scores.csv             path (absolute), score, decision, threshold, overlay (one row per readable image)
    skipped.csv            path, reason (files that are not readable images)
    heatmaps/<name>.png    original | overlay side by side (to look at)
    overlays/<name>.png    the overlay alone (the review UI toggles it over the image)
    maps/<name>.npy        raw float32 anomaly maps at original size (--save-maps)
    embeddings.safetensors "embedding": N x E image embeddings, row-aligned with scores.csv,
                           that review re-ranking learns a person's interest from
    run.json               detector, model, inputs, threshold, counts
    report.html            the top anomalies

`predict` (a fitted model) and `score-batch` (zero-shot MuSc) both write one with
``RunWriter``, so everything downstream reads a single format.
"""

from __future__ import annotations

import csv
import heapq
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image
from safetensors.numpy import load_file, save_file

from .data import InputError
from .report import ReportImage, overlay, save_heatmap, write_report

SCORES_HEADER = ["path", "score", "decision", "threshold", "overlay"]
EMBEDDINGS = "embeddings.safetensors"

logger = logging.getLogger("normalcy")


def flat_name(path: Path) -> str:
    """A file name for per-image outputs that does not collide across sub-folders."""
    parts = Path(path).with_suffix("").parts[-2:]
    return "__".join(p for p in parts if p not in ("/", ""))


class RunWriter:
    """Streams scored images into a run directory; memory stays bounded except for the top-N report."""

    def __init__(self, output: Path, threshold: float, map_range: tuple[float, float], *,
                 heatmaps: bool = True, overlays: bool = True, report: bool = True, save_maps: bool = False,
                 top: int = 24, info: dict[str, Any] | None = None, inputs: Sequence[Path] = ()) -> None:
        self.output = Path(output)
        self.output.mkdir(parents=True, exist_ok=True)
        self.threshold = float(threshold)
        self.map_range = map_range
        self.heatmaps, self.overlays, self.report, self.save_maps = heatmaps, overlays, report, save_maps
        self.top = int(top)
        self.info = dict(info or {})
        self.inputs = [str(Path(p).resolve()) for p in inputs]
        self.rows: list[tuple[str, float, bool]] = []
        self.embeddings: list[np.ndarray] = []
        self._best: list[tuple[float, int, ReportImage]] = []
        self._fh = open(self.output / "scores.csv", "w", newline="")
        self._csv = csv.writer(self._fh)
        self._csv.writerow(SCORES_HEADER)
        self._started = time.time()

    def add(self, path: Path, image: np.ndarray, score: float, amap: np.ndarray, anomalous: bool,
            embedding: np.ndarray | None = None) -> None:
        """Record one scored image (and write its pictures)."""
        name = flat_name(path)
        lo, hi = self.map_range
        over = ""
        if self.overlays:
            over = f"overlays/{name}.png"
            (self.output / "overlays").mkdir(exist_ok=True)
            Image.fromarray(overlay(image, amap, lo, hi)).save(self.output / over, format="PNG")
        self._csv.writerow([str(Path(path).resolve()), f"{score:.6g}", "anomalous" if anomalous else "normal",
                            f"{self.threshold:.6g}", over])
        if self.heatmaps:
            save_heatmap(self.output / "heatmaps" / f"{name}.png", image, amap, lo, hi)
        if self.save_maps:
            (self.output / "maps").mkdir(exist_ok=True)
            np.save(self.output / "maps" / f"{name}.npy", amap.astype(np.float32))
        if embedding is not None:
            self.embeddings.append(np.asarray(embedding, dtype=np.float32))
        if self.report:
            item = ReportImage(name=str(path), score=score, anomalous=anomalous, image=image, amap=amap)
            push = heapq.heappush if len(self._best) < self.top else heapq.heappushpop
            push(self._best, (score, len(self.rows), item))
        self.rows.append((str(path), float(score), bool(anomalous)))

    def close(self, skipped: Sequence[tuple[Path, str]], title: str) -> None:
        """Write skipped.csv, embeddings, run.json and the report."""
        self._fh.close()
        with open(self.output / "skipped.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "reason"])
            writer.writerows([str(p), r] for p, r in skipped)
        if self.embeddings and len(self.embeddings) == len(self.rows):
            save_file({"embedding": np.stack(self.embeddings)}, str(self.output / EMBEDDINGS))
        meta = {**self.info, "inputs": self.inputs, "threshold": self.threshold, "n_images": len(self.rows),
                "n_skipped": len(skipped), "seconds": round(time.time() - self._started, 2),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (self.output / "run.json").write_text(json.dumps(meta, indent=2) + "\n")
        if self.report:
            write_report(
                self.output / "report.html",
                title=title,
                scores=np.array([r[1] for r in self.rows]),
                names=[r[0] for r in self.rows],
                top=[b[2] for b in sorted(self._best, key=lambda b: -b[0])],
                threshold=self.threshold,
                map_range=self.map_range,
                skipped=[(str(p), r) for p, r in skipped],
                info={k: v for k, v in self.info.items() if isinstance(v, (str, int, float))},
            )


def read_embeddings(run_dir: Path) -> np.ndarray | None:
    """The run's N x E embeddings, or None when it has none."""
    path = Path(run_dir) / EMBEDDINGS
    return load_file(str(path))["embedding"] if path.is_file() else None


@dataclass(frozen=True)
class RunRow:
    path: str  # absolute
    name: str
    score: float
    decision: bool
    overlay: str | None  # absolute, or None
    row: int  # data row in scores.csv (0-based), to pick the embedding


def _image_path(raw: str, run_dir: Path) -> Path:
    """An image path as predict wrote it: absolute, or relative to where predict was run."""
    p = Path(raw)
    if p.is_absolute():
        return Path(os.path.abspath(p))
    candidates = [Path.cwd() / p, run_dir.parent / p]
    found = next((c for c in candidates if c.exists()), candidates[0])
    return Path(os.path.abspath(found))


def _display_name(path: Path, inputs: Sequence[Path]) -> str:
    """The path inside the folder given to predict (e.g. crack/000.png), else parent/name."""
    for folder in inputs:
        if path.is_relative_to(folder) and path != folder:
            return path.relative_to(folder).as_posix()
    return "/".join(path.parts[-2:])


def read_run_json(run_dir: Path) -> dict:
    path = run_dir / "run.json"
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        logger.warning("%s: cannot read (%s); serving without it", path, err)
        return {}
    return meta if isinstance(meta, dict) else {}


def read_scores(run_dir: Path, inputs: Sequence[Path] = ()) -> tuple[list[RunRow], int]:
    """The scored images of a run, in scores.csv order, and the number of data rows in the file.

    A duplicate path keeps its first row; a row with a non-finite score is left out (with a warning).
    """
    path = run_dir / "scores.csv"
    if not path.is_file():
        raise InputError(f"{path}: not found (pass a run folder written by `normalcy predict`)")
    rows: list[RunRow] = []
    seen: set[str] = set()
    n_rows = 0
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {"path", "score", "decision"} - set(reader.fieldnames or [])
            if missing:
                raise InputError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
            for k, rec in enumerate(reader):
                n_rows = k + 1
                line = reader.line_num
                raw = (rec.get("path") or "").strip()
                if not raw:
                    raise InputError(f"{path}:{line}: empty path")
                try:
                    score = float(rec.get("score") or "")
                except ValueError:
                    raise InputError(f"{path}:{line}: score {rec.get('score')!r} is not a number") from None
                decision = (rec.get("decision") or "").strip().lower()
                if decision not in ("anomalous", "normal"):
                    raise InputError(f"{path}:{line}: decision must be anomalous or normal, not {rec.get('decision')!r}")
                if not math.isfinite(score):
                    logger.warning("%s:%d: score %s is not finite; %s left out of the review", path, line, score, raw)
                    continue
                image = _image_path(raw, run_dir)
                if str(image) in seen:
                    logger.warning("%s:%d: %s listed twice; keeping the first row", path, line, raw)
                    continue
                seen.add(str(image))
                over = (rec.get("overlay") or "").strip()
                overlay = str(Path(os.path.abspath(run_dir / over))) if over else None
                rows.append(RunRow(str(image), _display_name(image, inputs), score, decision == "anomalous",
                                   overlay, k))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"{path}: cannot read ({err})") from None
    if not rows:
        raise InputError(f"{path}: no scored images to review")
    return rows, n_rows


def read_features(run_dir: Path, n_rows: int) -> np.ndarray | None:
    """embeddings.safetensors, if present and row-aligned with scores.csv; else None (with a warning)."""
    path = run_dir / EMBEDDINGS
    try:
        emb = read_embeddings(run_dir)
    except Exception as err:  # noqa: BLE001  (a damaged file must not stop the review)
        logger.warning("%s: cannot read (%s); ranking by anomaly score only", path, err)
        return None
    if emb is None:
        logger.warning("%s: not found; ranking by anomaly score only (strategy 'none')", path)
        return None
    emb = np.asarray(emb, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != n_rows:
        logger.warning("%s: shape %s does not match the %d rows of scores.csv; ranking by anomaly score only",
                       path, tuple(emb.shape), n_rows)
        return None
    return emb
