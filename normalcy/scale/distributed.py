"""Scoring past one process: ``normalcy predict ... --ray local|ADDRESS`` on Ray Data.

The driver lists the work (image paths, or the rows of each table), Ray Data cuts it into blocks, and actors
on the workers each load the model once and score their blocks with the same code as the one-process path
(``Detector.score``, ``normalcy.vectors.tables.score_table``). The workers write their results as Parquet part
files; the driver turns them into the run format every run has (``normalcy.runs.format``): scores.csv and
scores.parquet (the scored items, in input order), skipped.csv (the others, with the reason) and run.json,
so ``normalcy serve`` opens a run made on Ray as any other. Series are fitted and scored one series a task
(``fit_series_ray``, ``score_series_ray``; the driver reads the files and writes the run folder as without
Ray).

Before any input is read, ``normalcy.api`` checks that Ray is installed and that a cluster's address answers
(``ray_ready``: within seconds, not Ray's minutes of retries); before Ray starts, the driver loads the model once
(a bad one is one line, as without Ray) and checks that every input exists.
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

import contextlib
import json
import logging
import os
import socket
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import numpy as np

from normalcy.files import MODEL_JSON, one_line
from normalcy.errors import InputError, option, reasons, setting
from normalcy.images.io import input_paths
from normalcy.progress import progress_bar
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
RETRIES = 1  # a task whose worker died (a node lost) runs once more; one that kills its worker again is named
DIED = "its Ray worker died on it (out of memory, killed or crashed)"
ROW = "n"  # each row's place in the input, beside it on its way through the workers: a lost block's rows are named
T = TypeVar("T")
def needs_ray() -> str:
    """The one line for a run on Ray without Ray installed, naming ``ray`` as the caller gives it (``--ray`` on the
    command line): a function, since a constant is worded before any caller is known."""
    return f"{option('ray')} needs Ray: pip install 'normalcy[ray]' (with -c constraints.txt)"
log = logging.getLogger("normalcy")


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
        try:
            res = self.det.score(paths, progress=False)
        except Exception as err:  # noqa: BLE001 - named with its image, not the end of the run
            return _alone(self, batch, err)
        score_of = dict(zip(res.paths, res.scores))
        reason_of = dict(res.skipped)
        scores = np.array([score_of.get(p, np.nan) for p in paths], dtype=np.float64)
        return {ROW: batch[ROW], "score": scores,
                "skipped": np.array([reason_of.get(p, "") for p in paths], dtype=object)}


def _alone(score: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], batch: dict[str, np.ndarray],
           err: Exception) -> dict[str, np.ndarray]:
    """A block whose scoring raised, each row scored alone: only a row that raises is skipped (with what it
    raised), not its block; one exception failed the whole run (a Ray Data traceback, no result written)."""
    n = len(batch[ROW])
    if n == 1:
        return {ROW: batch[ROW], "score": np.full(1, np.nan), "skipped": np.array([_raised(err)], dtype=object)}
    parts = [score({k: v[i:i + 1] for k, v in batch.items()}) for i in range(n)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _raised(err: BaseException) -> str:
    """One line for an exception that scoring or fitting raised on a worker (not an InputError: those are the
    row's or series' own reason, as in one process)."""
    return f"failed on its Ray worker: {type(err).__name__}: {one_line(err)}"


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
        try:
            scores, mask, skipped = score_table(self.det, table)
        except Exception as err:  # noqa: BLE001 - named with its row, not the end of the run
            return _alone(self, batch, err)
        # each skipped row's reason by its place, not by its id: ids repeat (a sensor's name on many rows), and
        # one skipped row made every row of its id "not scored", their scores dropped
        reasons = np.full(len(ids), "", dtype=object)
        reasons[~mask] = [r for _, r in skipped]
        return {ROW: batch[ROW], "score": scores, "skipped": reasons}


def ray_ready(address: str, data: bool = False) -> Any:
    """The ray module, with ``address`` checked before any input is read (each refusal one line, at once): Ray
    installed (``import_ray``) and, unless this process has Ray initialised already (the run goes to that one,
    ``_init``), a cluster's address answering (``_probe``). Called once, up front, by ``normalcy.api``'s fit and
    predict: an address where nothing answered was said only after every series (image list, table) was read."""
    ray = import_ray(data)
    if not ray.is_initialized():
        _probe(address)
    return ray


def _env_address(address: str) -> str:
    """The RAY_ADDRESS that ``ray.init`` goes to for ``local`` and ``auto`` (it overrides no address, and
    ``auto``), or "" where none is set."""
    env = os.environ.get("RAY_ADDRESS", "").strip()
    return env if address in ("local", "auto") and env not in ("local", "auto") else ""


def _named(address: str) -> str:
    """``--ray ADDRESS`` as messages name it, with the RAY_ADDRESS that Ray goes to instead where one is set."""
    env = _env_address(address)
    return setting("ray", address) + (f" (RAY_ADDRESS={env})" if env else "")


def _probe(address: str) -> None:
    """Refuse a cluster address that does not answer, in seconds: ray.init retries one for minutes. ``local``
    (start Ray here) and ``auto`` (find the one on this machine) are left to Ray, unless RAY_ADDRESS sends them
    to a cluster: that address is checked so."""
    target = _env_address(address) or address
    if target in ("local", "auto"):
        return
    hostport = target.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not sep or not host or not port.isdigit():
        if target != address:
            raise InputError(f"{_named(address)}: RAY_ADDRESS is not a cluster's HOST:PORT (e.g. 10.0.0.5:6379): "
                             "correct or unset it")
        raise InputError(f"{setting('ray', address)}: expected local, or a cluster's HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_SECONDS).close()
    except OSError as err:
        raise InputError(f"{_named(address)}: no Ray there ({err.strerror or err}); is `ray start --head` "
                         "running on that machine, and the port open?") from None


def _init(address: str) -> tuple[int, str]:
    """Connect to (or start) Ray: the CPUs it offers, and the address of the Ray used (for run.json). A process
    that has Ray initialised already (a Python API user's own ``ray.init``) runs on that one (``_used``). The
    address was checked before any input was read (``ray_ready``); what Ray's own start still raises, and a Ray
    with no CPU (where the run waited for ever), are one line each."""
    import ray

    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # Ray's C++ start-up notices, not for our users
    warnings.filterwarnings("ignore", module=r"ray\..*")
    initialised = ray.is_initialized()
    if not initialised:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
        try:  # local: no address, so that Ray's rules apply (RAY_ADDRESS, a `ray start` Ray here, else a new one)
            ray.init(address=None if address == "local" else address, **kwargs)
        except Exception as err:  # noqa: BLE001 - Ray raises ValueError, ConnectionError, RuntimeError...
            raise InputError(f"{_named(address)}: Ray did not start: {type(err).__name__}: {one_line(err)}"
                             ) from None
    used = _used(ray, address, initialised)
    cpus = float(ray.cluster_resources().get("CPU", 0))
    if cpus < 1:  # each scorer takes one CPU: none was ever placed, and the run waited for ever
        raise InputError(f"{_named(address)}: the Ray used ({used}) has {cpus:g} CPUs; a run needs at least 1 "
                         "(a head started with --num-cpus 0 needs a worker node: `ray start --address HEAD:PORT`)")
    return int(cpus), used


def _gcs_address(ray: Any) -> str:
    """The HOST:PORT of the Ray this process is connected to, or "" where Ray does not say (a Ray client)."""
    try:
        return str(ray.get_runtime_context().gcs_address or "")
    except Exception:  # noqa: BLE001 - a Ray client connection may not say; the caller names it otherwise
        return ""


def _used(ray: Any, address: str, initialised: bool) -> str:
    """The Ray used, as run.json records it: ``local`` for a Ray on this machine, a cluster's address otherwise
    (``auto``: the one Ray found). Where ``--ray`` did not choose it, a warning says so, naming the one used: a
    process that had Ray initialised already (``_initialised``), or RAY_ADDRESS sending ``local`` to another
    machine."""
    there = _gcs_address(ray)
    if address == "auto":  # find an existing Ray: whichever it found is what auto means, said nowhere else
        return there or address
    if address != "local":
        return _initialised(address, there) if initialised else address
    if not there or _this_machine(ray, there):
        return address
    why = (f"this process has Ray initialised already (at {there}), on another machine; running on that one "
           "(call ray.shutdown() first to start one here)" if initialised else
           f"RAY_ADDRESS sends it to the Ray at {there}, on another machine; running there (unset RAY_ADDRESS "
           "to start one here)")
    log.warning("%s: %s", setting("ray", "local"), why)
    return there


def _this_machine(ray: Any, there: str) -> bool:
    """Whether the Ray at HOST:PORT ``there`` runs on this machine (this node's own IP, or a loopback name)."""
    try:
        here = str(ray.util.get_node_ip_address())
    except Exception:  # noqa: BLE001 - not said: taken for this machine, as before
        return True
    return _same_address(f"{there.rpartition(':')[0]}:0", f"{here}:0")  # a loopback host is this machine


def _initialised(address: str, there: str) -> str:
    """The address of the Ray this process has initialised already, said in a warning where ``--ray ADDRESS``
    names another: the run went to the process's Ray without a word, and run.json named ADDRESS."""
    if there and _same_address(address, there):
        return address
    log.warning("%s: this process has Ray initialised already (%s); running on that one, not on %s "
                "(call ray.shutdown() first to use %s)", setting("ray", address),
                f"at {there}" if there else "its address unknown", address, address)
    return there or "the Ray initialised in this process"


def _same_address(given: str, there: str) -> bool:
    """Whether HOST:PORT ``given`` names the Ray at ``there`` (its HOST:PORT): the same port, and a host that
    resolves to the same machine (a loopback name is this machine, whose Ray's address is its own IP)."""
    def split(address: str) -> tuple[str, str]:
        host, _, port = address.removeprefix("ray://").rpartition(":")
        return host.strip("[]"), port

    (host, port), (their_host, their_port) = split(given), split(there)
    if port != their_port:
        return False
    try:
        ours = {info[4][0] for info in socket.getaddrinfo(host, None)}
        theirs = {info[4][0] for info in socket.getaddrinfo(their_host, None)}
    except OSError:
        return host == their_host
    return bool(ours & theirs) or all(a.startswith("127.") or a == "::1" for a in ours)


def predict_ray(model_dir: Path, inputs: list[Path], output: Path, address: str, trust_code: bool = False,
                id_column: str | None = None, batch_size: int = 32) -> list[dict[str, Any]]:
    """Score image folders or tables with a fitted model on Ray into run folders (OUTPUT, or OUTPUT/<table stem>
    for each of several tables, as the one-process path does), in the one run format.

    Every input row (image or table row) is scored, in input order, or listed in skipped.csv with the reason.
    Tables are read on the driver by the one-process reader (the same columns, ids and errors), then scored
    in blocks of 4,096 rows on the workers. ``address`` is checked by the caller first (``ray_ready``), as
    ``normalcy.api.predict`` does.
    """
    ray = import_ray(data=True)

    from normalcy.detectors import load
    from normalcy.vectors.tables import is_vector_model, load_vector_model, table_inputs

    # Everything that can be refused is refused here, before Ray starts (one line, no worker tracebacks).
    vectors = is_vector_model(model_dir)
    paths: list[Path] = []  # images; a table's rows are read later, one table at a time
    if vectors:
        threshold = float(load_vector_model(model_dir)[1].threshold)
        inputs = table_inputs(inputs)
    else:
        threshold = float(load(model_dir, trust_code=trust_code).threshold_)
        missing = [p for p in inputs if not p.exists()]
        if missing:
            raise InputError(f"{missing[0]}: not found")
        paths = outside_run(input_paths(inputs), output)
        if not paths:
            raise InputError("no images to score")
    files = _model_files(model_dir)
    with staged(output, inputs) as folder:
        cpus, address = _init(address)
        with _data_context(ray):
            return _score(ray, files, folder, output, model_dir, inputs, paths, address, cpus, trust_code,
                          id_column, batch_size, threshold)


@contextlib.contextmanager
def _data_context(ray: Any) -> Iterator[None]:
    """Ray Data's settings for a run, put back after it: the DataContext and its logger are the process's, and
    a user's own pipelines on their Ray kept ours (results in order, errored blocks ignored, no error logs).
    Blocks keep their order; a block whose worker died is let go (its rows are named, ``_write``) where Ray Data
    retried it for ever; its own error log and its execution plans are not for our users (progress bars stay)."""
    ctx = ray.data.DataContext.get_current()
    log = logging.getLogger("ray.data")
    before = ctx.execution_options.preserve_order, ctx.max_errored_blocks, log.level
    ctx.execution_options.preserve_order, ctx.max_errored_blocks = True, -1
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        ctx.execution_options.preserve_order, ctx.max_errored_blocks, level = before
        log.setLevel(level)


def _score(ray: Any, files: dict[str, bytes], folder: Path, output: Path, model_dir: Path, inputs: list[Path],
           paths: list[Path], address: str, cpus: int, trust_code: bool, id_column: str | None,
           batch_size: int, threshold: float) -> list[dict[str, Any]]:
    """The Ray Data pipelines of predict_ray, written into ``folder`` (which becomes ``output``)."""
    import pyarrow as pa

    from normalcy.vectors.tables import read_table

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
            data = pa.table({ROW: np.arange(len(t.ids)), TABLE_ID: t.ids, TABLE_NOTE: notes,
                             **{table_feature(j): t.X[:, j] for j in range(len(columns))}})
            key, ids = t.id_column, t.ids
            del t  # the Arrow copy is what travels: a big table is not held twice
            ds = _map(ray.data.from_arrow(data), _TableScorer, (files, key), 4096, cpus)
            del data  # in Ray's object store now
            runs.append(_write(ds, folder / sub, output / sub, model_dir, address, cpus, [path], VECTORS, key, ids,
                               threshold))
        if not runs:
            raise InputError(f"no table could be read{reasons(failed)}")
        runs[0]["failed"] = failed
    else:
        items = ray.data.from_items([{ROW: k, IMAGE_KEY: os.fspath(p)} for k, p in enumerate(paths)])
        ds = _map(items, _ImageScorer, (files, trust_code, 1), batch_size, cpus)
        runs.append(_write(ds, folder, output, model_dir, address, cpus, inputs, IMAGES, IMAGE_KEY,
                           [str(p) for p in paths], threshold))
        if not runs[-1]["n_scored"]:
            raise InputError("no image could be read")
    return runs


def _map(ds: Any, scorer: type, args: tuple[Any, ...], batch_size: int, cpus: int) -> Any:
    """``ds`` scored by actors of ``scorer``: one actor (one model copy) per CPU at most, fewer when there are
    fewer blocks. A block whose worker died is retried RETRIES times, then let go (``_data_context``): Ray Data
    retried it for ever, and a run with an image that kills its worker never ended."""
    import ray.data

    with warnings.catch_warnings():  # max_task_retries has no named parameter: Ray calls it deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        return ds.map_batches(scorer, fn_constructor_args=args, batch_size=batch_size, batch_format="numpy",
                              compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cpus), num_cpus=1,
                              max_task_retries=RETRIES)


def _write(ds: Any, folder: Path, output: Path, model_dir: Path, address: str, cpus: int, inputs: list[Path],
           kind: str, key: str, ids: list[str], threshold: float) -> dict[str, Any]:
    """Run ``ds`` (row, score, skipped: one row per input row, ``ids``) into ``folder`` in the one run format,
    and write run.json (naming ``output``, where it ends up). A row missing from the results (its block's worker
    died, ``_data_context``) is skipped, named."""
    import shutil

    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    ds.write_parquet(str(folder / PARTS))
    parts = list((folder / PARTS).glob("*.parquet"))  # none where every block was lost
    got = pq.read_table(folder / PARTS).to_pydict() if parts else {ROW: [], "score": [], "skipped": []}
    shutil.rmtree(folder / PARTS, ignore_errors=True)
    at = np.asarray(got[ROW], np.int64)
    score = np.full(len(ids), np.nan)
    score[at] = got["score"]
    reasons = np.full(len(ids), DIED, dtype=object)
    reasons[at] = got["skipped"]
    scored = np.flatnonzero(reasons == "")
    decisions = write_scores(folder, key, [str(ids[k]) for k in scored], score[scored], threshold,
                             [""] * len(scored) if kind == IMAGES else None)
    skipped = [(str(ids[k]), str(r)) for k, r in enumerate(reasons) if r]
    write_skipped(folder, key, skipped)
    run = {"model": str(Path(model_dir).resolve()), "ray": address, "cpus": cpus, "kind": kind,
           "inputs": [str(p) for p in inputs], "output": str(output), "threshold": threshold,
           "n_scored": len(scored), "n_skipped": len(skipped), "n_anomalous": int(decisions.sum())}
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


def _each(ray: Any, items: list[Any], submit: Callable[[int, Any], Any], slots: int, progress: bool = False,
          description: str = "") -> list[Any]:
    """Each item's result, in order: ``submit(slot, item)`` starts its task, at most ``slots`` at a time (so the
    driver holds the items once, not also a serialised copy of each waiting in Ray; ``slot``: which of them). A
    task that raised, or whose worker died, is its item's reason (one line) and the others go on: one of them
    lost every result, or waited for ever on a dead actor. Anything else here (Ctrl-C) cancels what is running.
    ``progress``: a bar on stderr advanced as each task ends, as the one-process path's (10,000 series on Ray
    took minutes in silence)."""
    from ray.exceptions import RayError, RayTaskError

    results: list[Any] = [None] * len(items)
    running: dict[Any, tuple[int, int]] = {}  # task -> (item, slot)
    free = list(range(slots))
    todo = iter(enumerate(items))
    try:
        with progress_bar(progress and len(items) > 1) as bar:
            done = bar.add_task(description, total=len(items))
            while True:
                while free and (job := next(todo, None)) is not None:
                    slot = free.pop()
                    running[submit(slot, job[1])] = (job[0], slot)
                if not running:
                    return results
                (ref,), _ = ray.wait(list(running), num_returns=1)
                k, slot = running.pop(ref)
                free.append(slot)
                try:
                    results[k] = ray.get(ref)
                except RayTaskError as err:
                    results[k] = _raised(err.cause if isinstance(err.cause, BaseException) else err)
                except RayError:
                    results[k] = DIED
                bar.advance(done)
    except BaseException:
        for ref in running:
            ray.cancel(ref)
        raise


def fit_series_ray(series: list[Any], detector: str, params: dict[str, Any], address: str, progress: bool = False
                   ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """One model per series, fitted one series a task on Ray: (models by series name, (name, reason) for
    each series that could not be fitted). ``progress``: a bar on stderr, as ``fit_each``'s."""
    ray = import_ray()
    cpus, _ = _init(address)
    task = ray.remote(num_cpus=1, max_retries=RETRIES)(_fit_one)
    results = _each(ray, series, lambda _, s: task.remote(detector, params, s), 2 * cpus, progress, "fit")
    fitted, failed = {}, []
    for s, result in zip(series, results):
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


def score_series_ray(model_dir: Path, model: Any, jobs: list[Any], address: str, progress: bool = False
                     ) -> tuple[list[Any], int, str]:
    """Score series (``jobs``, each in its model's columns) on Ray, one series a task, in order: a
    ScoredSeries or the reason for each, the CPUs used and the address of the Ray used (``_init``). ``model``:
    the loaded model (a SeriesSet's series are looked up in it; only their own model's files travel with each
    series). ``progress``: a bar on stderr, as predict's in one process."""
    from normalcy.series.runs import SeriesSet

    ray = import_ray()
    shared = None if isinstance(model, SeriesSet) else _model_files(model_dir)
    cpus, used = _init(address)
    # restarted when a series kills its worker (the others go on; that series is retried, then named)
    actor = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=RETRIES)(_SeriesScorer)
    actors = [actor.remote(shared) for _ in range(max(1, min(cpus, len(jobs))))]
    echo = ray.remote(num_cpus=0)(_identity)

    def submit(slot: int, s: Any) -> Any:
        files = None
        if isinstance(model, SeriesSet):
            folder = model.folders.get(model.key_of(s.name))
            if folder is None:
                return echo.remote(model.missing(s.name))
            try:
                files = _model_files(Path(model_dir) / folder)
            except InputError as err:
                return echo.remote(str(err))
        return actors[slot].score.remote(files, s)

    try:  # one series an actor at a time: one waiting on an actor its series killed was lost with it
        return _each(ray, jobs, submit, len(actors), progress, "predict"), cpus, used
    finally:  # Ctrl-C too: an actor left holding its CPU made the next run on this Ray wait for ever
        for a in actors:
            ray.kill(a)


def _identity(x: Any) -> Any:
    return x


def import_ray(data: bool = False) -> Any:
    """The ray module (``data``: with Ray Data, which images and tables run on), or the one-line InputError saying
    how to install it: called before any series is read (``normalcy.api``), so that a run without Ray says so at
    once, not after every file was read."""
    try:
        import ray

        if data:
            import ray.data  # noqa: F401 - ray.data is used as an attribute of ray
    except ImportError:
        raise InputError(needs_ray()) from None
    return ray
