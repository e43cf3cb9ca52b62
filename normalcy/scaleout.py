"""Scoring past one process: ``normalcy predict ... --ray local|ADDRESS`` on Ray Data.

The driver lists the work (image paths, or the rows of each table), Ray Data cuts it into blocks, and actors
on the workers each load the model once and score their blocks with the same code as the one-process path
(``Detector.score``, ``normalcy.tables.score_table``). Results are written by the workers as Parquet
(``OUTPUT/scores.parquet/``, a folder of part files, in input order), beside ``run.json``.

The model folder's files travel to the workers through Ray's object store, so the model needs no shared
disk; the images and tables do (a shared file system, or the same paths on every node). A model whose
custom backbone runs Python code needs that code on every worker too. A multi-node cluster::

    ray start --head --port 6379                    # on the head node
    ray start --address HEAD_IP:6379                 # on each worker node
    normalcy predict model/ /shared/images -o /shared/results --ray HEAD_IP:6379
"""

from __future__ import annotations

import json
import logging
import os
import warnings
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .data import InputError, input_paths
from .modelfile import MODEL_JSON

RESULTS = "scores.parquet"


def _model_files(model_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in Path(model_dir).iterdir() if p.is_file()}


def _unpack(files: dict[str, bytes]) -> Path:
    """The model folder, written once per worker process into a private temporary folder."""
    d = Path(tempfile.mkdtemp(prefix="normalcy-model-"))
    for name, data in files.items():
        (d / name).write_bytes(data)
    return d


class _ImageScorer:
    """A Ray actor: loads the image model once, scores a block of paths per call (one torch thread a CPU)."""

    def __init__(self, files: dict[str, bytes], trust_code: bool, threads: int) -> None:
        import torch

        from .detectors import load

        torch.set_num_threads(threads)
        self.det = load(_unpack(files), trust_code=trust_code)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [Path(p) for p in batch["path"]]
        res = self.det.score(paths, progress=False)
        score_of = dict(zip(res.paths, res.scores))
        reason_of = dict(res.skipped)
        scores = np.array([score_of.get(p, np.nan) for p in paths], dtype=np.float64)
        return {"path": batch["path"], "score": scores,
                "decision": np.where(np.isnan(scores), -1, scores >= res.threshold).astype(np.int8),
                "threshold": np.full(len(paths), res.threshold),
                "skipped": np.array([reason_of.get(p, "") for p in paths], dtype=object)}


class _TableScorer:
    """A Ray actor: loads the vector model once, scores a block of rows per call."""

    def __init__(self, files: dict[str, bytes], id_column: str) -> None:
        from .tables import load_vector_model

        self.det, self.meta = load_vector_model(_unpack(files))
        self.id_column = id_column

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from .tables import Table, score_table

        X = np.column_stack([batch[c].astype(np.float64) for c in self.meta.columns])
        ids = [str(v) for v in batch[self.id_column]]
        table = Table(Path("."), X, list(self.meta.columns), ids, self.id_column)
        scores, mask, skipped = score_table(self.det, table)
        reason_of = dict(skipped)
        return {self.id_column: np.array(ids, dtype=object), "score": scores,
                "decision": np.where(mask, scores > self.meta.threshold, -1).astype(np.int8),
                "threshold": np.full(len(ids), self.meta.threshold),
                "skipped": np.array([reason_of.get(i, "") for i in ids], dtype=object)}


def _init(address: str) -> int:
    """Connect to (or start) Ray; returns the CPUs it offers."""
    import ray

    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # Ray's C++ start-up notices, not for our users
    warnings.filterwarnings("ignore", module=r"ray\..*")
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
        if address == "local":
            ray.init(**kwargs)
        else:
            ray.init(address=address, **kwargs)
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def predict_ray(model_dir: Path, inputs: list[Path], output: Path, address: str, trust_code: bool = False,
                id_column: str | None = None, batch_size: int = 32) -> list[dict[str, Any]]:
    """Score image folders or tables with a fitted model on Ray; write scores.parquet/ and run.json per run
    folder (OUTPUT, or OUTPUT/<table stem> for each of several tables, as the one-process path does).

    Every input row (image or table row) gets one result row, in input order: its score, decision (1
    anomalous, 0 normal, -1 not scored) and, for one that could not be scored, the reason in ``skipped``.
    Tables are read on the driver by the one-process reader (the same columns, ids and errors), then scored
    in blocks of 4,096 rows on the workers.
    """
    import pyarrow as pa

    try:
        import ray.data
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'normalcy[ray]' (with -c constraints.txt)") from None

    from .tables import check_tables, is_vector_model, read_table

    files = _model_files(model_dir)
    vectors = is_vector_model(model_dir)
    if vectors:
        check_tables(inputs)
    cpus = _init(address)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its execution plans; its progress bars stay
    runs = []
    if vectors:
        columns = json.loads(files[MODEL_JSON])["columns"]
        for path in inputs:
            t = read_table(path, id_column=id_column, columns=columns)
            data = pa.table({t.id_column: t.ids, **{c: t.X[:, j] for j, c in enumerate(columns)}})
            key = t.id_column
            del t  # the Arrow copy is what travels: a big table is not held twice
            ds = ray.data.from_arrow(data).map_batches(
                _TableScorer, fn_constructor_args=(files, key), batch_size=4096, batch_format="numpy",
                compute=_pool(cpus), num_cpus=1)
            del data  # in Ray's object store now
            runs.append(_write(ds, output if len(inputs) == 1 else output / path.stem, model_dir, address, cpus,
                               [path], "vectors"))
    else:
        paths = input_paths(inputs)
        if not paths:
            raise InputError("no images to score")
        ds = ray.data.from_items([{"path": os.fspath(p)} for p in paths]).map_batches(
            _ImageScorer, fn_constructor_args=(files, trust_code, 1), batch_size=batch_size, batch_format="numpy",
            compute=_pool(cpus), num_cpus=1)
        runs.append(_write(ds, output, model_dir, address, cpus, inputs, "images"))
    return runs


def _pool(cpus: int) -> Any:
    """One actor (one model copy) per CPU at most; fewer when there are fewer blocks."""
    import ray.data

    return ray.data.ActorPoolStrategy(min_size=1, max_size=cpus)


def _write(ds: Any, output: Path, model_dir: Path, address: str, cpus: int, inputs: list[Path],
           kind: str) -> dict[str, Any]:
    import pyarrow.parquet as pq

    output.mkdir(parents=True, exist_ok=True)
    ds.write_parquet(str(output / RESULTS))
    decision = pq.read_table(output / RESULTS, columns=["decision"]).column("decision").to_numpy()
    run = {"model": str(Path(model_dir).resolve()), "ray": address, "cpus": cpus, "kind": kind,
           "inputs": [str(p) for p in inputs], "output": str(output), "n_scored": int((decision >= 0).sum()),
           "n_skipped": int((decision < 0).sum()), "n_anomalous": int((decision == 1).sum())}
    (output / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    return run
