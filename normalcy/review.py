"""The review state of one run: its items, the current ranking, and which files may be served."""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from fastapi import HTTPException

from .data import printable
from .ranking import make_ranker, user_score
from .run import read_features, read_run_json, read_scores
from .store import Item, Store

__all__ = ["STRATEGIES", "Review"]

logger = logging.getLogger("normalcy")

STRATEGIES = ("none", "neighbour", "protege")


class Review:
    """The run's items, the current ranking, and the rules for which files may be served."""

    def __init__(self, run_dir: Path, store: Store, strategy: str, extra_roots: Sequence[Path] = ()) -> None:
        self.run_dir = run_dir
        self.store = store
        meta = read_run_json(run_dir)
        inputs = [Path(os.path.abspath(p)) for p in meta.get("inputs", []) if isinstance(p, str)]
        rows, n_rows = read_scores(run_dir, [p for p in inputs if p.is_dir()])
        store.sync_items([{"path": r.path, "name": r.name, "score": r.score, "decision": r.decision,
                           "overlay": r.overlay} for r in rows])
        by_path = {it.path: it for it in store.items()}
        self.items: list[Item] = [by_path[r.path] for r in rows]
        self.ids = np.array([it.id for it in self.items], dtype=np.int64)
        self.index = {it.id: k for k, it in enumerate(self.items)}
        self.anomaly = np.array([r.score for r in rows], dtype=np.float64)

        features = read_features(run_dir, n_rows)
        self.features = None if features is None else features[[r.row for r in rows]]

        # Folders whose files may be served: the run folder and the folders given to predict
        # (resolved, so a symlinked folder works); not the folder of every listed image, which
        # would open its neighbours too. Single files given to predict or listed in scores.csv
        # are served as they are (so a symlinked image, e.g. git-annex, works).
        roots = [run_dir, *inputs, *extra_roots]
        self.roots = sorted({Path(r).resolve() for r in roots if Path(r).is_dir()})
        files = [p for p in inputs if not p.is_dir()] + [Path(r.path) for r in rows]
        self.files = {p.resolve() for p in files}

        self.lock = threading.Lock()
        self._ticket = itertools.count()  # orders "label committed" against "re-rank started"
        self._ranked_at = -1
        if self.features is None and strategy != "none":
            strategy = "none"
        self.strategy = strategy
        self.ranker = make_ranker(strategy)
        self.rerank_ms: float | None = None
        self.ranking: tuple[np.ndarray, np.ndarray, np.ndarray] = (np.arange(0), np.zeros(0), np.zeros(0, int))
        self.rerank()

    # ranking

    def labels(self) -> dict[int, tuple[str | None, int | None]]:
        """Current labels of this run's items (other runs may share the database)."""
        return {it.id: (it.label, it.interest) for it in self.store.labelled() if it.id in self.index}

    def rerank(self) -> float:
        """Recompute priorities from all labels; returns the milliseconds it took.

        Labels that arrive together share re-ranks: a caller whose label is already covered by
        a re-rank that started after it (while this one waited for the lock) returns at once.
        """
        asked = next(self._ticket)  # taken after the caller's label was committed
        with self.lock:
            if self._ranked_at > asked and self.rerank_ms is not None:
                return self.rerank_ms
            started = next(self._ticket)  # labels committed before this are read below
            t0 = time.perf_counter()
            idx, user = [], []
            # Oldest label first: rankers that keep only the most recent labels rely on the order.
            mine = [it for it in self.store.labelled() if it.id in self.index]
            for it in sorted(mine, key=lambda it: (it.updated_at or 0.0, it.id)):
                u = user_score(it.label, it.interest)
                if u is not None:
                    idx.append(self.index[it.id])
                    user.append(u)
            n = len(self.items)
            feats = self.features if self.features is not None else np.zeros((n, 1), dtype=np.float32)
            pri = np.asarray(self.ranker.rank(feats, self.anomaly, np.array(idx, dtype=np.int64),
                                              np.array(user, dtype=np.float32)), dtype=np.float64).reshape(-1)
            if pri.shape != (n,):
                raise RuntimeError(f"ranker {self.strategy!r} returned {pri.shape[0]} priorities for {n} items")
            key = np.where(np.isnan(pri), -np.inf, pri)
            order = np.lexsort((self.ids, -self.anomaly, -key))  # last key sorts first
            rank = np.empty(n, dtype=np.int64)
            rank[order] = np.arange(1, n + 1)
            self.ranking = (order, pri, rank)  # swapped in one step: readers never see a half-made ranking
            self.rerank_ms = (time.perf_counter() - t0) * 1000.0
            self._ranked_at = started
            return self.rerank_ms

    def set_strategy(self, name: str) -> None:
        if name != "none" and self.features is None:
            raise HTTPException(409, f"strategy {name!r} needs {self.run_dir / 'embeddings.safetensors'}, "
                                     "which this run does not have; only 'none' is available")
        with self.lock:
            self.ranker = make_ranker(name)
            self.strategy = name
        self.rerank()

    # output

    def item_json(self, item: Item, label: str | None, interest: int | None) -> dict[str, Any]:
        _, pri, rank = self.ranking
        k = self.index[item.id]
        p = float(pri[k])
        return {
            "id": item.id,
            "name": item.name,
            "path": printable(item.path),  # for people; the file itself is found by id
            "score": item.score,
            "decision": "anomalous" if item.decision else "normal",
            "rank": int(rank[k]),
            "priority": p if math.isfinite(p) else None,
            "label": label,
            "interest": interest,
            "image_url": f"/api/items/{item.id}/image",
            "overlay_url": f"/api/items/{item.id}/overlay" if item.overlay else None,
        }

    def status(self) -> dict[str, Any]:
        return {"n_items": len(self.items), "n_labelled": len(self.labels()), "strategy": self.strategy,
                "rerank_ms": self.rerank_ms, "database": self.store.dialect}

    def allowed_file(self, raw: str, base: Path) -> Path:
        """The real path of a file from the database, if it may be served (403 outside the roots, 404 if gone)."""
        p = Path(raw)
        if not p.is_absolute():
            p = base / p
        real = p.resolve()
        if not (real in self.files or any(real.is_relative_to(root) for root in self.roots)):
            logger.warning("refused to serve %s (resolves to %s, outside the run's folders)", raw, real)
            raise HTTPException(403, "file outside the folders of this run")
        if not real.is_file():
            raise HTTPException(404, f"file not found: {raw}")
        return real
