"""Shared test helpers: the real evaluation data (skipped when absent), the one tiny synthetic data set
builder, the one live review server, and loading a bench/ script as a module."""

from __future__ import annotations

import importlib
import signal
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Iterator

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

# The suite's budget is measured on 2 cores; more threads only oversubscribe.
torch.set_num_threads(2)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Where make_synthetic_dataset plants the bright square (rows, cols) in defect images.
DEFECT_BOX = (slice(36, 60), slice(30, 54))
SYN_SIZE = 96


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_together(fn, args: list) -> list[Exception]:
    """``fn(a)`` for each of ``args`` in its own thread, all released at once by a barrier (two runs or saves
    racing for one folder); the exceptions they raised."""
    gate, errors = threading.Barrier(len(args)), []

    def one(a) -> None:
        gate.wait()
        try:
            fn(a)
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=one, args=(a,)) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def killed_outright(work, lines: int = 1) -> list[str]:
    """Run ``work(say)`` in a forked child and kill it with SIGKILL (no ``finally`` runs, as the OOM killer or a
    power cut leave things) once it has said ``lines`` lines (``say(text)``), or has failed; those lines. A fork
    starts at once where a fresh interpreter spends seconds importing torch."""
    import os
    import signal
    import time

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never back into pytest
        try:
            os.close(r)
            work(lambda text: os.write(w, f"{text}\n".encode("utf-8", "surrogateescape")))
            time.sleep(60)  # killed here
        finally:
            os._exit(1)
    os.close(w)
    try:
        with os.fdopen(r, encoding="utf-8", errors="surrogateescape") as fh:
            return [fh.readline().rstrip("\n") for _ in range(lines)]
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)

def run_cli(*args: object) -> CliResult:
    """``normalcy ARGS`` run in this process (a fresh process spends about 4 s importing torch and
    scikit-learn before it starts): its exit code, stdout and stderr. An exception the CLI did not turn into
    a one-line error shows in stderr as the traceback a process would print, so a test that says "no
    traceback" can still fail."""
    from typer.testing import CliRunner

    from normalcy.cli import app

    r = CliRunner().invoke(app, [str(a) for a in args])
    stderr = r.stderr
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        stderr += "Traceback (most recent call last):\n" + "".join(traceback.format_exception(r.exception))
    return CliResult(r.exit_code, r.stdout, stderr)


@pytest.fixture
def ctrl_c() -> Iterator[None]:
    """Ctrl-C raising KeyboardInterrupt, as in a terminal, for a test that sends SIGINT: a shell runs a background
    job (`pytest &`) with SIGINT ignored, and Python then never installs its handler, so such a test failed there."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data next to the project (real, published data sets)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found: {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def hazelnut(shared_data: Path) -> Path:
    """The MVTec-style hazelnut_toy set (train/good 28, test/good 6, test/colour 17)."""
    root = shared_data / "hazelnut_toy"
    if not root.is_dir():
        pytest.skip(f"hazelnut_toy not found: {root}")
    return root


def texture(rng: np.random.Generator, h: int = SYN_SIZE, w: int = SYN_SIZE) -> np.ndarray:
    """A smooth random RGB texture, HxWx3 uint8 in 40..200 (so a 255 square stands out)."""
    im = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 2.5)
    im = (im - im.min()) / (im.max() - im.min() + 1e-6)
    return (40 + im * 160).astype(np.uint8)


def make_synthetic_dataset(root: Path, n_train: int = 12, n_good: int = 4, n_defect: int = 4,
                           seed: int = 0) -> Path:
    """A tiny MVTec-layout data set: train/good, test/good, test/defect with ground_truth masks."""
    rng = np.random.default_rng(seed)
    for sub in ("train/good", "test/good", "test/defect", "ground_truth/defect"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_train):
        Image.fromarray(texture(rng)).save(root / "train" / "good" / f"{i:03d}.png")
    for i in range(n_good):
        Image.fromarray(texture(rng)).save(root / "test" / "good" / f"{i:03d}.png")
    for i in range(n_defect):
        im = texture(rng)
        im[DEFECT_BOX] = 255
        mask = np.zeros(im.shape[:2], np.uint8)
        mask[DEFECT_BOX] = 255
        Image.fromarray(im).save(root / "test" / "defect" / f"{i:03d}.png")
        Image.fromarray(mask).save(root / "ground_truth" / "defect" / f"{i:03d}_mask.png")
    return root


@pytest.fixture
def synthetic_dataset(tmp_path: Path) -> Path:
    """Root of a fresh tiny MVTec-layout data set (12 train, 4 good and 4 defect test images, 96x96)."""
    return make_synthetic_dataset(tmp_path / "synthetic")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same data set, built once per session for tests that only read it."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"))


class LiveServer:
    """A run's review app under uvicorn in a background thread, as `normalcy serve` runs it, on a socket bound
    to port 0 (a free port): for what only a real socket shows (cookies per port, bodies, concurrency, a browser)."""

    def __init__(self, run: Path, token: str, database: str | None = None) -> None:
        from normalcy.review.server import ReviewServer, create_app, listen

        self.token = token
        self.app = create_app(run, token, database=database)
        self.ready = threading.Event()
        self.served = ReviewServer(self.app, token, listen("127.0.0.1", 0), announce=lambda _url: self.ready.set())
        self.port = self.served.port
        self.base = f"http://127.0.0.1:{self.port}"
        self.page_url = f"{self.base}/?token={token}"
        self.thread = threading.Thread(target=self.served.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        if not self.ready.wait(15):
            self.served.stop()
            raise RuntimeError("the review server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.served.stop()
        self.thread.join(10)
        assert not self.thread.is_alive()


def bench_module(name: str) -> ModuleType:
    """bench/NAME.py as a module: bench/ holds scripts that import each other by name, not a package."""
    if str(ROOT / "bench") not in sys.path:
        sys.path.append(str(ROOT / "bench"))
    return importlib.import_module(name)


@pytest.fixture
def map_draws(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The sizes ``upsample_map`` is asked to draw maps at, from here on (features and detectors.base)."""
    from normalcy.detectors import base
    from normalcy.images import features

    calls: list[tuple[int, int]] = []
    draw = features.upsample_map

    def counted(grid: np.ndarray, size: tuple[int, int], sigma: float = 0.5) -> np.ndarray:
        calls.append(tuple(size))
        return draw(grid, size, sigma)

    monkeypatch.setattr(features, "upsample_map", counted)
    monkeypatch.setattr(base, "upsample_map", counted)
    return calls
