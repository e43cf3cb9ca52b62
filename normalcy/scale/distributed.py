"""Scoring past one process: ``normalcy predict ... --ray local|ADDRESS`` on Ray Data.

The driver lists the work (image paths, or the rows of each table), Ray Data cuts it into blocks, and actors
on the workers each load the model once and score their blocks with the same code as the one-process path
(``Detector.score``, ``normalcy.vectors.tables.score_table``). The workers write their results as Parquet part
files; the driver turns them into the run format every run has (``normalcy.runs.format``): scores.csv and
scores.parquet (the scored items, in input order), skipped.csv (the others, with the reason) and run.json,
so ``normalcy serve`` opens a run made on Ray as any other. Series are fitted and scored one series a task
(``fit_series_ray``, ``score_series_ray``; the driver reads the files and writes the run folder as without
Ray).

Before Ray starts, the driver loads the model once (a bad one is one line, as without Ray), checks that
every input exists and that a cluster's address answers (within seconds, not Ray's minutes of retries).
The run is written into a fresh folder beside OUTPUT that replaces it when complete
(``normalcy.runs.format.staged``): never appended to an earlier run.

The model folder's files travel to the workers through Ray's object store (each actor loads them from a
temporary folder it deletes at once), so the model needs no shared disk; the images and tables do (a shared file system, or the same paths on every node). A model whose
custom backbone runs Python code needs that code on every worker too. A multi-node cluster::

    ray start --head --port 6379                    # on the head node
    ray start --address HEAD_IP:6379                 # on each worker node
    normalcy predict model/ /shared/images -o /shared/results --ray HEAD_IP:6379
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from normalcy.files import MODEL_JSON
from normalcy.errors import InputError, reasons
from normalcy.images.io import input_paths
from normalcy.runs.format import (
    IMAGE_KEY,
    IMAGES,
    RUN_JSON,
    SCORES_PARQUET,
    VECTORS,
    outside_run,
    staged,
    table_targets,
    write_scores,
    write_skipped,
)

RESULTS = SCORES_PARQUET
PARTS = ".parts"  # the workers' Parquet part files, in the run being written; gone once the run is complete
PROBE_SECONDS = 5.0  # an address that does not answer within this is refused (ray.init would retry for minutes)
T = TypeVar("T")


def _model_files(model_dir: Path) -> dict[str, bytes]:
    """The model's own files only (model.json and its tensors or estimator), read as any model file is:
    regular files inside the folder, size-capped; nothing else in the folder travels to the workers."""
    from normalcy.detectors.modelfile import MODEL_TENSORS
    from normalcy.files import MAX_JSON_BYTES, MAX_STATE_BYTES, read_model_file, reading
    from normalcy.vectors.tables import MODEL_FILE

    d = Path(model_dir)
    with reading(d):  # another process's save over it: never its model.json with the earlier tensors
        files = {MODEL_JSON: read_model_file(d / MODEL_JSON, MAX_JSON_BYTES)}
        for name in (MODEL_TENSORS, MODEL_FILE):
            if (d / name).exists():
                files[name] = read_model_file(d / name, MAX_STATE_BYTES)
    return files


def _loaded(files: dict[str, bytes], load: Callable[[Path], T]) -> T:
    """The model, loaded in a worker from its files in a private temporary folder that is deleted as soon as
    it is loaded (models are read whole into memory), so no copy is left behind per actor."""
    with tempfile.TemporaryDirectory(prefix="normalcy-model-") as d:
        for name, data in files.items():
            (Path(d) / name).write_bytes(data)
        return load(Path(d))


class _ImageScorer:
    """A Ray actor: loads the image model once, scores a block of paths per call (one torch thread a CPU)."""

    def __init__(self, files: dict[str, bytes], trust_code: bool, threads: int) -> None:
        import torch

        from normalcy.detectors import load

        torch.set_num_threads(threads)
        self.det = _loaded(files, lambda d: load(d, trust_code=trust_code))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [Path(p) for p in batch[IMAGE_KEY]]
        res = self.det.score(paths, progress=False)
        score_of = dict(zip(res.paths, res.scores))
        reason_of = dict(res.skipped)
        scores = np.array([score_of.get(p, np.nan) for p in paths], dtype=np.float64)
        return {IMAGE_KEY: batch[IMAGE_KEY], "score": scores, "threshold": np.full(len(paths), res.threshold),
                "skipped": np.array([reason_of.get(p, "") for p in paths], dtype=object)}


# A table's block as it travels to the workers: its ids, what reading made missing in a row (the one-process
# reason's detail), and the model's feature columns by position. Fixed names, not the table's: an id column named
# like a feature (`row`, the ids of a table without one, beside a feature `row`) replaced the ids by its values.
TABLE_ID, TABLE_NOTE = "id", "note"


def table_feature(j: int) -> str:
    """The name of the model's j-th feature column in a block (``TABLE_ID``)."""
    return f"x{j}"


class _TableScorer:
    """A Ray actor: loads the vector model once, scores a block of rows per call."""

    def __init__(self, files: dict[str, bytes], id_column: str) -> None:
        from normalcy.vectors.tables import load_vector_model

        self.det, self.meta = _loaded(files, load_vector_model)
        self.id_column = id_column

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from normalcy.vectors.tables import Table, score_table

        X = np.column_stack([batch[table_feature(j)].astype(np.float64) for j in range(len(self.meta.columns))])
        ids = [str(v) for v in batch[TABLE_ID]]
        notes = {i: str(v) for i, v in enumerate(batch[TABLE_NOTE]) if v}
        table = Table(Path("."), X, list(self.meta.columns), ids, self.id_column, read_as_missing=notes)
        scores, mask, skipped = score_table(self.det, table)
        # each skipped row's reason by its place, not by its id: ids repeat (a sensor's name on many rows), and
        # one skipped row made every row of its id "not scored", their scores dropped
        reasons = np.full(len(ids), "", dtype=object)
        reasons[~mask] = [r for _, r in skipped]
        return {TABLE_ID: np.array(ids, dtype=object), "score": scores,
                "threshold": np.full(len(ids), self.meta.threshold), "skipped": reasons}


def _probe(address: str) -> None:
    """Refuse a cluster address that does not answer, in seconds: ray.init retries one for minutes. ``local``
    (start Ray here) and ``auto`` (find the one on this machine) are left to Ray."""
    if address in ("local", "auto"):
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not sep or not host or not port.isdigit():
        raise InputError(f"--ray {address}: expected local, or a cluster's HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_SECONDS).close()
    except OSError as err:
        raise InputError(f"--ray {address}: no Ray there ({err.strerror or err}); is `ray start --head` "
                         "running on that machine, and the port open?") from None


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
            _probe(address)
            ray.init(address=address, **kwargs)
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def predict_ray(model_dir: Path, inputs: list[Path], output: Path, address: str, trust_code: bool = False,
                id_column: str | None = None, batch_size: int = 32) -> list[dict[str, Any]]:
    """Score image folders or tables with a fitted model on Ray into run folders (OUTPUT, or OUTPUT/<table stem>
    for each of several tables, as the one-process path does), in the one run format.

    Every input row (image or table row) is scored, in input order, or listed in skipped.csv with the reason.
    Tables are read on the driver by the one-process reader (the same columns, ids and errors), then scored
    in blocks of 4,096 rows on the workers.
    """
    try:
        import ray.data
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'normalcy[ray]' (with -c constraints.txt)") from None

    from normalcy.detectors import load
    from normalcy.vectors.tables import is_vector_model, load_vector_model, table_inputs

    # Everything that can be refused is refused here, before Ray starts (one line, no worker tracebacks).
    vectors = is_vector_model(model_dir)
    paths: list[Path] = []  # images; a table's rows are read later, one table at a time
    if vectors:
        load_vector_model(model_dir)
        inputs = table_inputs(inputs)
    else:
        load(model_dir, trust_code=trust_code)
        missing = [p for p in inputs if not p.exists()]
        if missing:
            raise InputError(f"{missing[0]}: not found")
        paths = outside_run(input_paths(inputs), output)
        if not paths:
            raise InputError("no images to score")
    files = _model_files(model_dir)
    with staged(output, inputs) as folder:
        cpus = _init(address)
        return _score(ray, files, folder, output, model_dir, inputs, paths, address, cpus, trust_code, id_column,
                      batch_size)


def _score(ray: Any, files: dict[str, bytes], folder: Path, output: Path, model_dir: Path, inputs: list[Path],
           paths: list[Path], address: str, cpus: int, trust_code: bool, id_column: str | None,
           batch_size: int) -> list[dict[str, Any]]:
    """The Ray Data pipelines of predict_ray, written into ``folder`` (which becomes ``output``)."""
    import pyarrow as pa

    from normalcy.vectors.tables import read_table

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its execution plans; its progress bars stay
    runs = []
    if not paths:  # tables
        columns = json.loads(files[MODEL_JSON])["columns"]
        failed: list[tuple[str, str]] = []  # tables that cannot be read: skipped, named, as in one process
        for path, sub in table_targets(inputs):
            try:
                t = read_table(path, id_column=id_column, columns=columns)
            except InputError as err:
                if len(inputs) == 1:
                    raise
                failed.append((str(path), str(err)))
                continue
            notes = [t.read_as_missing.get(i, "") for i in range(len(t.ids))]
            data = pa.table({TABLE_ID: t.ids, TABLE_NOTE: notes,
                             **{table_feature(j): t.X[:, j] for j in range(len(columns))}})
            key = t.id_column
            del t  # the Arrow copy is what travels: a big table is not held twice
            ds = ray.data.from_arrow(data).map_batches(
                _TableScorer, fn_constructor_args=(files, key), batch_size=4096, batch_format="numpy",
                compute=_pool(cpus), num_cpus=1)
            del data  # in Ray's object store now
            runs.append(_write(ds, folder / sub, output / sub, model_dir, address, cpus, [path], VECTORS, key))
        if not runs:
            raise InputError(f"no table could be read{reasons(failed)}")
        runs[0]["failed"] = failed
    else:
        ds = ray.data.from_items([{IMAGE_KEY: os.fspath(p)} for p in paths]).map_batches(
            _ImageScorer, fn_constructor_args=(files, trust_code, 1), batch_size=batch_size, batch_format="numpy",
            compute=_pool(cpus), num_cpus=1)
        runs.append(_write(ds, folder, output, model_dir, address, cpus, inputs, IMAGES, IMAGE_KEY))
        if not runs[-1]["n_scored"]:
            raise InputError("no image could be read")
    return runs


def _pool(cpus: int) -> Any:
    """One actor (one model copy) per CPU at most; fewer when there are fewer blocks."""
    import ray.data

    return ray.data.ActorPoolStrategy(min_size=1, max_size=cpus)


def _write(ds: Any, folder: Path, output: Path, model_dir: Path, address: str, cpus: int, inputs: list[Path],
           kind: str, key: str) -> dict[str, Any]:
    """Run ``ds`` (key, score, threshold, skipped: one row per input row) into ``folder`` in the one run
    format, and write run.json (naming ``output``, where it ends up)."""
    import shutil

    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    ds.write_parquet(str(folder / PARTS))
    got = pq.read_table(folder / PARTS).to_pydict()
    shutil.rmtree(folder / PARTS)
    reasons = got["skipped"]
    ids = got[TABLE_ID if kind == VECTORS else key]  # written under the id column's own name, ``key``
    scored = [k for k, r in enumerate(reasons) if not r]
    threshold = float(got["threshold"][0]) if got["threshold"] else float("nan")
    decisions = write_scores(folder, key, [str(ids[k]) for k in scored],
                             np.array([got["score"][k] for k in scored], np.float64), threshold,
                             [""] * len(scored) if kind == IMAGES else None)
    skipped = [(str(ids[k]), r) for k, r in enumerate(reasons) if r]
    write_skipped(folder, key, skipped)
    run = {"model": str(Path(model_dir).resolve()), "ray": address, "cpus": cpus, "kind": kind,
           "inputs": [str(p) for p in inputs], "output": str(output), "threshold": threshold,
           "n_scored": len(scored), "n_skipped": len(reasons) - len(scored), "n_anomalous": int(decisions.sum())}
    if kind == VECTORS:
        run["id_column"] = key
    (folder / RUN_JSON).write_text(json.dumps(run, indent=2) + "\n")
    return run | {"skipped": skipped}


# ------------------------------------------------------------------------------------------------ series
# Many series score (and fit) independently: one task per series. The driver reads the files (the same
# reader, repairs and errors as without Ray) and writes the run (normalcy.runs.format.write_series_run);
# the workers fit or score one series each with normalcy.series.runs, the code of the one-process path.


def _fit_one(detector: str, params: dict[str, Any], series: Any) -> Any:
    """A Ray task: one series' model, or the reason it cannot be fitted."""
    import torch

    from normalcy.series import registry

    torch.set_num_threads(1)
    try:
        return registry.create(detector, **params).fit(series, progress=False)
    except InputError as err:
        return str(err)


def fit_series_ray(series: list[Any], detector: str, params: dict[str, Any], address: str
                   ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """One model per series, fitted one series a task on Ray: (models by series name, (name, reason) for
    each series that could not be fitted)."""
    ray = _ray()
    _init(address)
    task = ray.remote(num_cpus=1)(_fit_one)
    refs = [task.remote(detector, params, s) for s in series]
    fitted, failed = {}, []
    for s, result in zip(series, ray.get(refs)):
        if isinstance(result, str):
            failed.append((s.name, result))
        else:
            fitted[s.name] = result
    return fitted, failed


class _SeriesScorer:
    """A Ray actor: scores one series a call with its model, loaded from the model's files (a single model
    once per actor; a set's models per series, from the files sent with it)."""

    def __init__(self, files: dict[str, bytes] | None) -> None:
        import torch

        from normalcy.series import registry

        torch.set_num_threads(1)
        self.model = None if files is None else _loaded(files, registry.load)

    def score(self, files: dict[str, bytes] | None, series: Any) -> Any:
        """A ScoredSeries of a series already put in its model's columns (``model_columns``, on the driver)."""
        from normalcy.series import registry
        from normalcy.series.runs import score_series

        try:
            return score_series(self.model if files is None else _loaded(files, registry.load), series)
        except InputError as err:
            return str(err)


def score_series_ray(model_dir: Path, model: Any, jobs: list[Any], address: str) -> tuple[list[Any], int]:
    """Score series (``jobs``, each in its model's columns) on Ray, one series a task, in order: a
    ScoredSeries or the reason for each, and the CPUs used. ``model``: the loaded model (a SeriesSet's
    series are looked up in it; only their own model's files travel with each series)."""
    from normalcy.series.runs import SeriesSet

    ray = _ray()
    shared = None if isinstance(model, SeriesSet) else _model_files(model_dir)
    cpus = _init(address)
    actors = [ray.remote(num_cpus=1)(_SeriesScorer).remote(shared) for _ in range(max(1, min(cpus, len(jobs))))]
    pool = ray.util.ActorPool(actors)

    def submit(actor: Any, s: Any) -> Any:
        files = None
        if isinstance(model, SeriesSet):
            folder = model.folders.get(model.key_of(s.name))
            if folder is None:
                return _echo.remote(model.missing(s.name))
            try:
                files = _model_files(Path(model_dir) / folder)
            except InputError as err:
                return _echo.remote(str(err))
        return actor.score.remote(files, s)

    _echo = ray.remote(num_cpus=0)(_identity)
    results = list(pool.map(submit, jobs))
    for actor in actors:
        ray.kill(actor)
    return results, cpus


def _identity(x: Any) -> Any:
    return x


def _ray() -> Any:
    try:
        import ray
        import ray.util
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'normalcy[ray]' (with -c constraints.txt)") from None
    return ray
