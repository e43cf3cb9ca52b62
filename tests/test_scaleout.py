"""Scoring on Ray (`predict --ray`): a local Ray of 2 CPUs gives exactly the one-process results."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow.parquet as pq
import pytest
from rich.progress import Progress

ray = pytest.importorskip("ray")

from test_cli import make_dataset, normalcy, normalcy_process  # noqa: E402
from test_tables import _rows, _write  # noqa: E402

from normalcy.api import predict  # noqa: E402
from normalcy.detectors import create  # noqa: E402
from normalcy.detectors.base import Result  # noqa: E402
from normalcy.images.features import FeatureExtractor  # noqa: E402
from normalcy.scale.distributed import RESULTS, fit_series_ray, predict_ray, score_series_ray  # noqa: E402
from normalcy.series import registry  # noqa: E402
from normalcy.series.io import Series  # noqa: E402
from normalcy.series.runs import score_series  # noqa: E402
from normalcy.vectors.tables import (  # noqa: E402
    fit_table,
    read_table,
    save_vector_model,
    score_table,
    threshold_of,
)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """A local Ray of 2 CPUs, left running afterwards (as `--ray local` leaves its own) for later modules'
    `--ray local` to use: starting one costs seconds."""
    if ray.is_initialized():  # a CLI test's `--ray local` before this module leaves its Ray running
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)


@pytest.fixture(scope="module")
def image_run(local_ray, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Result, Path]:
    """One gaussian image model (64 px) run on Ray over a test folder holding a broken image: the data set, the
    model folder, its one-process scores and the run folder, for the tests that only read them (a fit and a Ray
    run cost seconds each)."""
    tmp = tmp_path_factory.mktemp("image_run")
    root = make_dataset(tmp / "data")
    (root / "test" / "good" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    det = create("gaussian", FeatureExtractor(image_size=64)).fit(sorted((root / "train" / "good").glob("*.png")))
    det.save(tmp / "m")
    expected = det.score(sorted((root / "test").rglob("*.png")), progress=False)
    predict_ray(tmp / "m", [root / "test"], tmp / "out", "local")
    return root, tmp / "m", expected, tmp / "out"


def test_tables_on_ray_equal_one_process(tmp_path: Path) -> None:
    X, y = _rows(n=5000)
    X[11, 3] = np.nan
    path = _write(tmp_path / "t.parquet", X, y)
    table = read_table(path, label_column="label", id_column="name")
    det, _ = fit_table(table, "ensemble")
    save_vector_model(det, "ensemble", table.columns, tmp_path / "m")
    scores, mask, skipped = score_table(det, read_table(path, id_column="name", columns=table.columns))

    (run,) = predict_ray(tmp_path / "m", [path], tmp_path / "out", "local", id_column="name")
    got = pq.read_table(tmp_path / "out" / RESULTS).to_pydict()
    assert got["name"] == [i for i, m in zip(table.ids, mask) if m]  # every scored row, in input order
    np.testing.assert_array_equal(np.array(got["score"]), scores[mask])  # exactly, not approximately
    assert got["decision"] == (scores[mask] >= threshold_of(det)).astype(int).tolist()  # the one rule
    with open(tmp_path / "out" / "skipped.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["name"] == "obj11" == skipped[0][0] and "f3" in row["reason"]
    assert run["n_scored"] == len(X) - 1 and run["n_skipped"] == 1


def test_images_on_ray_equal_one_process(image_run: tuple[Path, Path, Result, Path]) -> None:
    root, _, expected, out = image_run
    paths = sorted((root / "test").rglob("*.png"))
    got = pq.read_table(out / RESULTS).to_pydict()
    score_of = dict(zip(got["path"], got["score"]))
    assert len(got["path"]) == len(paths) - 1
    assert [score_of[str(p)] for p in expected.paths] == expected.scores.tolist()
    assert set(got["decision"]) <= {0, 1}
    with open(out / "skipped.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["path"] == str(root / "test" / "good" / "broken.png") and row["reason"]


def test_a_ray_run_is_served(image_run: tuple[Path, Path, Result, Path]) -> None:
    """A run made on Ray is a run like any other: the review lists its items with their scores and decisions."""
    from fastapi.testclient import TestClient

    from normalcy.review.server import create_app

    _, _, expected, out = image_run
    token = "ray-run-token-" + "r" * 20
    with TestClient(create_app(out, token, strategy="none")) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        data = c.get("/api/items", params={"limit": 100}).json()
    got = {it["name"]: (it["score"], it["decision"]) for it in data["items"]}
    want = {f"{p.parent.name}/{p.name}": (s, d) for p, s, d in
            zip(expected.paths, expected.scores.tolist(), expected.decisions.tolist())}
    assert data["total"] == len(want) and got.keys() == want.keys()
    for name, (score, decision) in want.items():
        assert got[name][0] == pytest.approx(score) and got[name][1] == ("anomalous" if decision else "normal")


def test_cli_predict_ray_local_on_a_table(tmp_path: Path) -> None:
    X, y = _rows()
    path = _write(tmp_path / "t.csv", X, y)
    assert normalcy("fit", str(path), "-o", str(tmp_path / "m"), "--label-column", "label").returncode == 0
    r = normalcy("predict", str(tmp_path / "m"), str(path), "-o", str(tmp_path / "out"), "--ray", "local")
    assert r.returncode == 0, r.stderr
    assert f"scored {len(X)} on Ray" in r.stderr
    assert pq.read_table(tmp_path / "out" / RESULTS).num_rows == len(X)


def _table_model(tmp_path: Path, n: int = 300) -> tuple[Path, Path, int]:
    X, y = _rows(n=n)
    path = _write(tmp_path / "t.parquet", X, y)
    table = read_table(path, label_column="label", id_column="name")
    det, _ = fit_table(table, "gaussian")
    save_vector_model(det, "gaussian", table.columns, tmp_path / "m")
    return tmp_path / "m", path, len(X)


def test_a_table_that_cannot_be_read_among_several_is_skipped_on_ray_as_in_one_process(tmp_path: Path) -> None:
    """--ray with several tables, one without the model's columns, failed the whole run (nothing written)
    where one process skips that table, names it and scores the others."""
    model, path, n = _table_model(tmp_path, n=60)
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    run = predict(model, [path, bad], tmp_path / "out", ray="local")
    here = predict(model, [path, bad], tmp_path / "here")
    assert run.n_scored == here.n_scored == n and [p for p, _ in run.skipped] == [p for p, _ in here.skipped]
    assert [p for p, _ in run.skipped] == [str(bad)] and "columns" in run.skipped[0][1]
    assert pq.read_table(tmp_path / "out" / "t" / RESULTS).num_rows == n and not (tmp_path / "out" / "bad").exists()


def test_a_second_ray_run_replaces_the_first_and_leaves_no_model_copies(tmp_path: Path) -> None:
    """Ray writes part files into a folder: a second run into the same -o must not add to the first (it
    doubled the rows and run.json's counts), and no actor leaves its copy of the model in the temp folder."""
    model, path, n = _table_model(tmp_path)
    copies = set(Path(tempfile.gettempdir()).glob("normalcy-model-*"))
    for _ in range(2):
        (run,) = predict_ray(model, [path], tmp_path / "out", "local", id_column="name")
    assert pq.read_table(tmp_path / "out" / RESULTS).num_rows == n
    assert json.loads((tmp_path / "out" / "run.json").read_text())["n_scored"] == n == run["n_scored"]
    assert run["output"] == str(tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "out", "t.parquet"]  # no staging folder left
    assert set(Path(tempfile.gettempdir()).glob("normalcy-model-*")) <= copies


def test_ray_refuses_bad_input_in_one_line_before_it_starts(image_run: tuple[Path, Path, Result, Path],
                                                           tmp_path: Path) -> None:
    """A missing input or model folder, a bad model and an address where no Ray answers are each one line
    and exit code 1, within seconds: nothing reaches Ray (no worker tracebacks, no 300 s wait)."""
    ds, model, _, _ = image_run
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.json").write_text("{")
    images = str(ds / "test")
    cases = [
        ((str(model), str(tmp_path / "missing"), "local"), "missing: not found"),
        ((str(tmp_path / "nomodel"), images, "local"), "nomodel"),
        ((str(tmp_path / "bad"), images, "local"), "model.json"),
        ((str(model), images, "127.0.0.1:1"), "--ray 127.0.0.1:1: no Ray there"),
    ]
    for (m, inp, address), expected in cases:
        start = time.monotonic()
        # an address where no Ray answers: in a fresh process, as a user runs it (this one may hold a Ray already)
        run = normalcy if address == "local" else normalcy_process
        r = run("predict", m, inp, "-o", str(tmp_path / "out"), "--ray", address)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and expected in r.stderr, r.stderr
        assert time.monotonic() - start < 60
    assert not (tmp_path / "out").exists()


def test_ray_scores_a_table_as_one_process_when_ids_repeat_or_name_a_feature(tmp_path: Path) -> None:
    """On Ray a skipped row's reason was looked up by id: one row with a missing value made every row of its id
    (a sensor's name on many rows) "not scored", their scores dropped. And the ids travelled under the id
    column's name, so a feature of that name (`row`, the ids' name in a table without an id column) replaced
    them by its values. A text cell's reason lost what reading said of it."""
    rng = np.random.default_rng(0)
    n = 60
    path = tmp_path / "t.csv"
    lines = ["row,b,name"] + [f"{a:.6f},{b:.6f},{'xy'[i % 2]}" for i, (a, b) in enumerate(rng.normal(size=(n, 2)))]
    lines[1 + 4] = f"abc,1.0,{'xy'[4 % 2]}"  # row 4: a text cell, read as missing
    path.write_text("\n".join(lines) + "\n")
    table = read_table(path, id_column="name")
    det, _ = fit_table(table, "gaussian")
    save_vector_model(det, "gaussian", table.columns, tmp_path / "m")
    for id_column in ("name", None):
        here = predict(tmp_path / "m", path, tmp_path / f"here{id_column}", id_column=id_column)
        run = predict(tmp_path / "m", path, tmp_path / f"ray{id_column}", ray="local", id_column=id_column)
        assert run.n_scored == here.n_scored == n - 1 and run.skipped == here.skipped
        assert "'abc' is not a number" in run.skipped[0][1]
        got = pq.read_table(tmp_path / f"ray{id_column}" / RESULTS).to_pydict()
        want = pq.read_table(tmp_path / f"here{id_column}" / RESULTS).to_pydict()
        assert got == want and got[id_column or "row"][:2] == (["x", "y"] if id_column else ["0", "1"])


DIED = "its Ray worker died on it (out of memory, killed or crashed)"


def _series(name: str, n: int = 200) -> Series:
    t = np.arange(n, dtype=np.float64)
    return Series(name, t, np.sin(t / 5)[:, None] + 0.01 * np.random.default_rng(0).normal(size=(n, 1)), ("v",), None)


def _all_cpus_free(seconds: float = 20.0) -> bool:
    """Whether every CPU of the Ray is free again within ``seconds`` (a killed actor lets its CPU go soon after)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if ray.available_resources().get("CPU", 0) == ray.cluster_resources().get("CPU"):
            return True
        time.sleep(0.2)
    return False


def _recorded_bars(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, Progress]]:
    """Each progress bar the series on Ray open, drawn nowhere, with whether it was on: what it counts is checked."""
    from normalcy.scale import distributed

    bars: list[tuple[bool, Progress]] = []
    real = distributed.progress_bar

    @contextlib.contextmanager
    def recording(enabled: bool = True) -> Iterator[Progress]:
        with real(False) as bar:
            bars.append((enabled, bar))
            yield bar

    monkeypatch.setattr(distributed, "progress_bar", recording)
    return bars


def test_a_series_that_raises_or_kills_its_worker_is_named_and_the_others_kept(monkeypatch: pytest.MonkeyPatch,
                                                                             tmp_path: Path) -> None:
    """One series whose fit or scoring raised (not an InputError), or killed its worker (out of memory, a crash),
    lost every other series' result: a RayTaskError traceback, or WorkerCrashedError after four tries. Each is now
    that series' one-line reason; the others are fitted and scored, and no actor is left holding a CPU."""
    from normalcy.scale import distributed

    monkeypatch.setattr(distributed, "RETRIES", 0, raising=False)  # a crash retried costs a worker start
    fit_one = distributed._fit_one

    def failing_fit(detector: str, params: dict, s: Series) -> object:
        if s.name == "crash":
            os._exit(3)
        if s.name == "raise":
            raise ValueError("boom")
        return fit_one(detector, params, s)

    class FailingScorer(distributed._SeriesScorer):
        def score(self, files: object, s: Series) -> object:
            if s.name == "crash":
                os._exit(3)
            if s.name == "raise":
                raise ValueError("boom")
            return super().score(files, s)

    monkeypatch.setattr(distributed, "_fit_one", failing_fit)
    monkeypatch.setattr(distributed, "_SeriesScorer", FailingScorer)
    # the crash last: with no retry, a series handed to the actor that is dying of it would die with it (Ray's
    # own retry, RETRIES = 1 outside this test, gives such a series its second go)
    series = [_series("a"), _series("raise"), _series("b"), _series("c"), _series("crash")]
    bars = _recorded_bars(monkeypatch)
    fitted, failed = fit_series_ray(series, "knn", {"window": 8}, "local", progress=True)
    assert sorted(fitted) == ["a", "b", "c"]
    assert failed == [("raise", "failed on its Ray worker: ValueError: boom"), ("crash", DIED)]
    model = fitted["a"]
    model.save(tmp_path / "m")
    got, _, _ = score_series_ray(tmp_path / "m", model, series, "local", progress=True)
    # each series counted once on its bar, those that failed too
    assert [(on, b.tasks[0].description, b.tasks[0].completed, b.tasks[0].total) for on, b in bars] == [
        (True, "fit", 5, 5), (True, "predict", 5, 5)]
    assert [g for g in got if isinstance(g, str)] == ["failed on its Ray worker: ValueError: boom", DIED]
    for s, g in zip(series, got):
        if s.name not in ("crash", "raise"):
            np.testing.assert_array_equal(g.score, score_series(model, s).score)
    assert _all_cpus_free()


def test_ctrl_c_in_a_series_run_on_ray_leaves_no_actor_holding_a_cpu(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    """Ctrl-C while series were scored left the actors alive with their CPUs while the traceback was kept (as a
    notebook keeps its last one): the next run on the same Ray waited for ever for a CPU."""
    from normalcy.scale import distributed

    model = registry.create("knn", window=8).fit(_series("train", 300), progress=False)
    model.save(tmp_path / "m")
    get = ray.get

    def interrupted(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(ray, "get", interrupted)
    with pytest.raises(KeyboardInterrupt) as info:
        distributed.score_series_ray(tmp_path / "m", model, [_series(f"s{k}") for k in range(4)], "local")
    monkeypatch.setattr(ray, "get", get)
    assert _all_cpus_free() and info.value is not None


def test_an_image_that_raises_or_kills_its_worker_is_named_and_the_others_scored(
        image_run: tuple[Path, Path, Result, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An exception in a block failed the whole run (a Ray Data traceback, nothing written), and a block that
    killed its worker was retried for ever: the run never ended. The image that raises is skipped with what it
    raised, a block whose worker died is skipped naming its images, and the others are scored as in one process.
    The process's Ray Data settings are put back afterwards (a user's own pipelines kept ours)."""
    import shutil

    from normalcy.detectors import load
    from normalcy.runs.format import IMAGE_KEY
    from normalcy.scale import distributed

    root, model, _, _ = image_run
    monkeypatch.setattr(distributed, "RETRIES", 0, raising=False)  # a crash retried costs a worker start

    class Failing(distributed._ImageScorer):
        def __init__(self, *args: object) -> None:
            super().__init__(*args)
            score = self.det.score

            def failing(paths: list[Path], **kwargs: object) -> Result:
                if any(p.name == "raise.png" for p in paths):
                    raise ValueError("boom")
                return score(paths, **kwargs)

            self.det.score = failing

        def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            if any(Path(p).name == "crash.png" for p in batch[IMAGE_KEY]):
                os._exit(3)
            return super().__call__(batch)

    monkeypatch.setattr(distributed, "_ImageScorer", Failing)
    ctx = ray.data.DataContext.get_current()
    monkeypatch.setattr(ctx.execution_options, "preserve_order", False)
    for bad, why in (("raise.png", "failed on its Ray worker: ValueError: boom"), ("crash.png", DIED)):
        images = tmp_path / bad.removesuffix(".png")
        images.mkdir()
        for k, p in enumerate(sorted((root / "test").rglob("*.png"))[:5]):
            shutil.copy(p, images / (bad if k == 2 else f"{k}.png"))
        (run,) = predict_ray(model, [images], tmp_path / f"out-{bad}", "local", batch_size=2)
        assert ctx.execution_options.preserve_order is False and ctx.max_errored_blocks == 0
        reasons = dict(run["skipped"])
        assert reasons.pop(str(images / bad)) == why
        assert set(reasons.values()) <= {DIED}  # a crashed block's other images, named with it
        assert not reasons or bad == "crash.png"
        got = pq.read_table(tmp_path / f"out-{bad}" / RESULTS).to_pydict()
        paths = [Path(p) for p in got["path"]]
        assert len(paths) >= (4 if bad == "raise.png" else 1) and len(paths) + len(run["skipped"]) == 5
        assert got["score"] == load(model).score(paths, progress=False).scores.tolist()


def test_each_advances_its_bar_as_each_task_ends_and_is_quiet_without_progress(monkeypatch: pytest.MonkeyPatch
                                                                               ) -> None:
    """Series on Ray (fit and predict, one series a task) showed no bar: 10,000 series took minutes in silence.
    ``_each`` now advances one as each task ends, off where the one-process path's is (progress=False)."""
    from normalcy.scale import distributed

    bars = _recorded_bars(monkeypatch)

    class FakeRay:  # each item is its own task; done in the order started
        def wait(self, refs: list, num_returns: int) -> tuple[list, list]:
            return refs[:num_returns], refs[num_returns:]

        def get(self, ref: int) -> int:
            seen.append(bars[-1][1].tasks[0].completed)
            return 10 * ref

        def cancel(self, ref: int) -> None:
            raise AssertionError("nothing to cancel")

    for progress in (True, False):
        seen: list[float] = []
        assert distributed._each(FakeRay(), [1, 2, 3, 4], lambda slot, x: x, 2, progress, "fit") == [10, 20, 30, 40]
        enabled, bar = bars[-1]
        (task,) = bar.tasks
        assert enabled is progress and seen == [0, 1, 2, 3]  # one step as each task ends, not all at the end
        assert (task.description, task.completed, task.total) == ("fit", 4, 4)


def test_ray_address_given_where_the_process_has_ray_already_is_warned_and_the_used_one_recorded(
        caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    """`--ray ADDRESS` in a process that has Ray initialised already (a Python API user's ray.init) ran on that
    Ray without a word, and run.json named ADDRESS. It is now said in one warning naming the Ray used, and
    run.json records that one; an address naming the process's own Ray (by another name too) says nothing."""
    import logging

    from normalcy.scale import distributed

    there = ray.get_runtime_context().gcs_address
    port = there.rpartition(":")[2]
    elsewhere = "192.0.2.77:6379"  # TEST-NET: no Ray there, nor is it asked
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        for given in ("local", there, f"ray://{there}", f"localhost:{port}"):
            assert distributed._init(given)[1] == given
        assert distributed._init("auto")[1] == there  # auto: the Ray it found, not "auto"
        assert not caplog.records
        assert distributed._init(elsewhere)[1] == there
    (record,) = caplog.records
    assert record.levelname == "WARNING" and f"ray={elsewhere!r}:" in record.getMessage()  # Python's argument
    assert f"at {there}" in record.getMessage() and "ray.shutdown()" in record.getMessage()

    model = registry.create("knn", window=8).fit(_series("train", 120), progress=False)
    model.save(tmp_path / "m")
    (tmp_path / "s.csv").write_text("t,v\n" + "".join(f"{k},{np.sin(k / 5):.4f}\n" for k in range(100)))
    predict(tmp_path / "m", tmp_path / "s.csv", tmp_path / "out", ray=elsewhere)
    assert json.loads((tmp_path / "out" / "run.json").read_text())["ray"] == there


def _closed_port() -> str:
    """A local HOST:PORT where nothing listens: connecting is refused at once (no probe timeout in the tests)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_an_address_where_no_ray_answers_is_refused_before_any_input_is_read(
        image_run: tuple[Path, Path, Result, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`--ray ADDRESS` with nothing listening there was said only after the series were read (all of them: minutes
    for many), and for images and tables after they were listed; it is now refused first, once, for fit and for
    predict of series, images and tables alike, as a missing Ray is. A reader that fails the test proves the order."""
    import normalcy
    from normalcy import api
    from normalcy.errors import InputError
    from normalcy.scale import distributed
    from normalcy.vectors import tables

    ds, image_model, _, _ = image_run
    table_model, table, _ = _table_model(tmp_path, n=60)
    series_model = tmp_path / "s"
    registry.create("knn", window=8).fit(_series("a", 100), progress=False).save(series_model)
    (tmp_path / "bad.csv").write_text("t,v\n1,2\n")

    def read(*args: object, **kwargs: object) -> None:
        raise AssertionError("an input was read")

    for module, name in ((api, "fit_series"), (api, "iter_series_files"), (distributed, "input_paths"),
                         (tables, "table_inputs"), (tables, "read_table")):
        monkeypatch.setattr(module, name, read)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a user's fresh process: the address is used
    address = _closed_port()
    runs = {"fit series": lambda: normalcy.fit(tmp_path / "bad.csv", tmp_path / "set", series=True,
                                               series_column="v", ray=address),
            "predict series": lambda: normalcy.predict(series_model, tmp_path / "bad.csv", tmp_path / "o1",
                                                       ray=address),
            "predict images": lambda: normalcy.predict(image_model, ds / "test", tmp_path / "o2", ray=address),
            "predict a table": lambda: normalcy.predict(table_model, table, tmp_path / "o3", ray=address)}
    for what, run in runs.items():
        with pytest.raises(InputError, match=rf"^ray='{address}': no Ray there \(") as err:  # Python's wording
            run()
        assert "\n" not in str(err.value), what
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "m", "s", "t.parquet"]  # no run, no model


def test_local_on_a_ray_of_another_machine_is_warned_and_the_used_one_recorded(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--ray local` in a process whose Ray is a cluster's on another machine (a user's ray.init(address=...), or
    RAY_ADDRESS when Ray starts) ran there without a word, and run.json said "local". It is warned, naming the Ray
    used, and that address is recorded; a Ray on this machine stays "local", silently."""
    import logging

    from normalcy.errors import cli_wording
    from normalcy.scale import distributed

    there = ray.get_runtime_context().gcs_address
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        assert distributed._init("local")[1] == "local"
        assert not caplog.records
        monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: "198.51.100.7")  # this driver elsewhere
        assert distributed._init("local")[1] == there
        monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as when RAY_ADDRESS sends ray.init there
        monkeypatch.setattr(ray, "init", lambda **kwargs: None)
        assert distributed._init("local")[1] == there
        with cli_wording():  # the command line names its option
            assert distributed._init("local")[1] == there
    first, second, cli = (r.getMessage() for r in caplog.records)
    assert first.startswith(f"ray='local': this process has Ray initialised already (at {there}), on another")
    assert "ray.shutdown()" in first
    assert second.startswith(f"ray='local': RAY_ADDRESS sends it to the Ray at {there}, on another machine")
    assert cli.startswith(f"--ray local: RAY_ADDRESS sends it to the Ray at {there}, on another machine")


def test_a_ray_address_variable_that_local_and_auto_go_to_is_checked_as_an_address(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """RAY_ADDRESS, where `local` and `auto` go when it is set: one that is no address was Ray's ValueError
    traceback, and one where no Ray answers took minutes of Ray's retries. Each is one line, before any input."""
    from normalcy.errors import InputError, cli_wording
    from normalcy.scale import distributed

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setenv("RAY_ADDRESS", "bogus")
    with pytest.raises(InputError, match=r"^--ray auto \(RAY_ADDRESS=bogus\): RAY_ADDRESS is not a cluster's "):
        with cli_wording():
            distributed.ray_ready("auto")
    closed = _closed_port()
    monkeypatch.setenv("RAY_ADDRESS", closed)
    with pytest.raises(InputError, match=rf"^--ray local \(RAY_ADDRESS={closed}\): no Ray there"):
        with cli_wording():
            distributed.ray_ready("local")


def test_what_ray_init_raises_is_one_line_naming_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """What Ray's own start raised (`auto` with no Ray to find: ConnectionError) was a traceback."""
    from normalcy.errors import InputError, cli_wording
    from normalcy.scale import distributed

    def init(**kwargs: object) -> None:
        raise ConnectionError("Could not find any running Ray instance.\nPlease specify the one to connect to")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(InputError) as err, cli_wording():
        distributed._init("auto")
    assert str(err.value) == ("--ray auto: Ray did not start: ConnectionError: Could not find any running Ray "
                              "instance. Please specify the one to connect to")


def test_a_ray_without_a_cpu_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ray with no CPU (a user's ray.init(num_cpus=0), a head started with --num-cpus 0 and no worker yet) was
    counted as 1 CPU, and the run waited for ever for its scorers to be placed. It is refused, naming it."""
    from normalcy.errors import InputError, cli_wording
    from normalcy.scale import distributed

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 0.0})
    with pytest.raises(InputError, match=r"^--ray local: the Ray used \(local\) has 0 CPUs; a run needs at least 1"):
        with cli_wording():
            distributed._init("local")
