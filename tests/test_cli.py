"""The command line as a user runs it: real processes, real stdout and stderr, exit codes."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CliResult, make_synthetic_dataset, run_cli, texture
from PIL import Image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EVAL_KEYS = {
    "detector", "dataset", "n_train", "n_test", "image_auroc", "image_ap", "pixel_auroc", "aupro",
    "fit_seconds", "images_per_second", "peak_rss_mb", "latency_ms_batch1", "threshold",
}


def normalcy(*args: str) -> CliResult:
    return run_cli(*args)


def normalcy_process(*args: str) -> subprocess.CompletedProcess:
    """The CLI in a process of its own, for what only a process shows (the interpreter's own start)."""
    return subprocess.run([sys.executable, "-m", "normalcy.cli", *args], capture_output=True, text=True,
                          timeout=300)


def make_dataset(root: Path, n_train: int = 10) -> Path:
    """conftest's tiny MVTec-layout data set, with 3 good and 3 defect test images."""
    return make_synthetic_dataset(root, n_train=n_train, n_good=3, n_defect=3)


def add_bad_files(folder: Path) -> list[str]:
    (folder / "zero.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    good = next(p for p in sorted(folder.iterdir()) if p.suffix == ".png" and p.stat().st_size)
    (folder / "cut.png").write_bytes(good.read_bytes()[:200])
    return ["zero.png", "notes.txt", "cut.png"]


def test_fit_missing_and_empty_folder_is_one_line_error(tmp_path: Path) -> None:
    for folder in (tmp_path / "missing", tmp_path / "empty"):
        if folder.name == "empty":
            folder.mkdir()
        r = normalcy("fit", str(folder), "-o", str(tmp_path / "model"))
        assert r.returncode == 1
        assert "Traceback" not in r.stderr
        assert str(folder) in r.stderr
        assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1


def test_fit_refuses_a_model_folder_inside_its_training_images(tmp_path: Path) -> None:
    """Written there, the model's files would be read as training images by the next fit: refused before
    the fit, as a file in the folder's place is."""
    root = make_synthetic_dataset(tmp_path / "ds", n_train=6)
    good = root / "train" / "good"
    for out in (good, good / "model"):
        r = run_cli("fit", good, "-o", out)
        assert r.returncode == 1 and "inside the training folder" in r.stderr and "Traceback" not in r.stderr
    assert not (good / "model").exists()


def test_fit_predict_with_bad_files(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds")
    train = ds / "train" / "good"
    bad_train = add_bad_files(train)
    model = tmp_path / "model"
    r = normalcy("fit", str(train), "-o", str(model), "--detector", "patchcore", "--image-size", "96")
    assert r.returncode == 0, r.stderr
    for name in bad_train:
        assert name in r.stderr
    assert sorted(p.name for p in model.iterdir()) == ["model.json", "model.safetensors"]

    new = tmp_path / "new"
    new.mkdir()
    for sub in ("good", "defect"):
        for p in (ds / "test" / sub).iterdir():
            (new / f"{sub}_{p.name}").write_bytes(p.read_bytes())
    bad_new = add_bad_files(new)
    out = tmp_path / "results"
    r = normalcy("predict", str(model), str(new), "-o", str(out), "--save-maps")
    assert r.returncode == 0, r.stderr
    maps = sorted((out / "maps").glob("*.npy"))
    assert len(maps) == 6 and np.load(maps[0]).shape == (96, 96)
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert len(rows) == 6
    skipped = {Path(row["path"]).name for row in csv.DictReader(open(out / "skipped.csv"))}
    assert skipped == set(bad_new)
    assert len(list((out / "heatmaps").glob("*.png"))) == 6
    assert (out / "report.html").stat().st_size > 1000
    scores = {Path(row["path"]).name: float(row["score"]) for row in rows}
    squares = [s for n, s in scores.items() if n.startswith("defect")]
    goods = [s for n, s in scores.items() if n.startswith("good")]
    assert min(squares) > max(goods)
    assert all(row["decision"] == "1" for row in rows if row["path"].split("/")[-1].startswith("defect"))
    check_run_dir(out, n=6)


def check_run_dir(out: Path, n: int) -> None:
    """The run format `normalcy serve` reads: overlays and embeddings row-aligned with scores.csv."""
    from safetensors.numpy import load_file

    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert len(rows) == n
    for row in rows:
        assert (out / row["overlay"]).is_file()
    emb = load_file(str(out / "embeddings.safetensors"))["embedding"]
    assert emb.shape[0] == n and emb.dtype == np.float32 and 100 < emb.shape[1] < 2000
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3)
    assert len({tuple(np.round(e, 4)) for e in emb}) == n  # a real embedding per image, not a placeholder
    meta = json.loads((out / "run.json").read_text())
    assert meta["n_images"] == n and meta["inputs"] and all(Path(p).is_absolute() for p in meta["inputs"])


def test_score_batch_zero_shot_writes_a_run(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds")
    folder = tmp_path / "batch"
    folder.mkdir()
    for p in sorted((ds / "train" / "good").iterdir())[:8] + sorted((ds / "test" / "defect").iterdir())[:1]:
        (folder / f"{p.parent.name}_{p.name}").write_bytes(p.read_bytes())
    bad = add_bad_files(folder)
    out = tmp_path / "run"
    r = normalcy("score-batch", str(folder), "-o", str(out), "--image-size", "96")
    assert r.returncode == 0, r.stderr
    for name in bad:
        assert name in r.stderr
    rows = list(csv.DictReader(open(out / "scores.csv")))
    top = max(rows, key=lambda row: float(row["score"]))
    assert Path(top["path"]).name.startswith("defect") and top["decision"] == "1"
    check_run_dir(out, n=9)
    assert (out / "report.html").stat().st_size > 1000
    assert json.loads((out / "run.json").read_text())["detector"] == "musc"


def test_score_batch_options_reach_musc(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds")
    folder = ds / "train" / "good"
    r = normalcy("score-batch", str(folder), "-o", str(tmp_path / "run"), "--image-score", "mean")
    assert r.returncode == 1 and "image_score" in r.stderr and "Traceback" not in r.stderr
    r = normalcy("score-batch", str(folder), str(ds / "test" / "defect"), "-o", str(tmp_path / "run"),
                 "--image-size", "96", "--image-score", "max", "--rscin-k", "1")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(tmp_path / "run" / "scores.csv")))
    assert Path(max(rows, key=lambda row: float(row["score"]))["path"]).parent.name == "defect"


@pytest.fixture(scope="module")
def gaussian_64(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A gaussian model (64 px) fitted once by `normalcy fit` on make_dataset(n_train=6), and that data set: the
    tests only read them (one that writes into either copies it first); a fit per test cost seconds."""
    tmp = tmp_path_factory.mktemp("gaussian_64")
    ds = make_dataset(tmp / "ds", n_train=6)
    r = normalcy("fit", str(ds / "train" / "good"), "-o", str(tmp / "model"), "--image-size", "64")
    assert r.returncode == 0, r.stderr
    return tmp / "model", ds


def test_predict_refuses_unknown_format_version(gaussian_64: tuple[Path, Path], tmp_path: Path) -> None:
    model, ds = shutil.copytree(gaussian_64[0], tmp_path / "model"), gaussian_64[1]
    meta = json.loads((model / "model.json").read_text())
    meta["format_version"] = 999
    (model / "model.json").write_text(json.dumps(meta))
    r = normalcy("predict", str(model), str(ds / "test" / "good"), "-o", str(tmp_path / "out"))
    assert r.returncode == 1
    assert "format version" in r.stderr and "Traceback" not in r.stderr


def test_eval_json_is_exactly_one_object(gaussian_64: tuple[Path, Path], tmp_path: Path) -> None:
    """gaussian_64's data set (eval only reads it) at its 64 px: 96 px and a data set of its own cost seconds."""
    ds = gaussian_64[1]
    r = normalcy("eval", str(ds), "--detector", "gaussian", "--json", "--image-size", "64",
                 "--report", str(tmp_path / "eval.html"))
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert EVAL_KEYS <= set(result)
    assert result["n_train"] == 6 and result["n_test"] == 6
    assert result["image_auroc"] >= 0.9
    assert 0.5 < result["pixel_auroc"] <= 1.0
    assert (tmp_path / "eval.html").is_file()


def test_eval_report_that_cannot_be_written_is_refused_before_the_eval(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`eval --report` naming a folder, or a place under a file, was a traceback once the minutes of the eval
    were spent; for a table or a series folder it was ignored without a word (no report is made of them). Each
    is one line before any work."""
    from normalcy.evaluation import evaluate

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("evaluated before the report was checked")

    monkeypatch.setattr(evaluate, "run_eval", never)
    ds = make_synthetic_dataset(tmp_path / "ds", n_train=2, n_good=1, n_defect=1)
    (tmp_path / "file").write_text("x")
    table = tmp_path / "t.csv"
    table.write_text("a,label\n" + "".join(f"{i},{int(i > 8)}\n" for i in range(10)))
    series = tmp_path / "series"
    series.mkdir()
    (series / "train.csv").write_text("t,cpu\n" + "".join(f"{i},{i % 7}\n" for i in range(40)))
    (series / "test.csv").write_text("t,cpu,label\n" + "".join(f"{i},{i % 7},0\n" for i in range(40)))
    for data, report, message in ((ds, tmp_path, "a folder; --report names the HTML file to write"),
                                  (ds, tmp_path / "file" / "r.html", "cannot write the report there"),
                                  (table, tmp_path / "r.html", "evaluation; this one would not be written (a "
                                   "table's evaluation has no HTML report: its metrics are printed, all of them "
                                   "with --json)"),  # it said "(for series, ...)" of a table too
                                  (series, tmp_path / "r.html", "evaluation; this one would not be written (for "
                                   "series, `normalcy predict` writes report.html)")):
        r = run_cli("eval", data, "--report", report, *(("--label-column", "label") if data == table else ()))
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith("error: ") and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()


def test_eval_hazelnut_patchcore() -> None:
    if not (DATA / "hazelnut_toy").is_dir():
        pytest.skip("../shared/data/hazelnut_toy is absent")
    r = normalcy("eval", str(DATA / "hazelnut_toy"), "--detector", "patchcore", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["n_train"] == 28 and result["n_test"] == 23
    assert result["image_auroc"] >= 0.97  # 1.0 when measured; a margin, not an exact figure
    assert result["pixel_auroc"] > 0.95


def test_serve_prints_a_token_url_that_the_server_requires(tmp_path: Path) -> None:
    import re

    import httpx
    from review_fixtures import make_run

    run = make_run(tmp_path / "run")
    # Port 0: the server binds a free port itself and prints it once it accepts connections.
    proc = subprocess.Popen([sys.executable, "-m", "normalcy.cli", "serve", str(run), "--port", "0"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        line = proc.stderr.readline()  # type: ignore[union-attr]
        url = re.search(r"http://127\.0\.0\.1:(\d+)/\S+", line)
        assert url, line
        assert httpx.get(url.group(0)).status_code == 200  # no retry: it is listening already
        base = f"http://127.0.0.1:{url.group(1)}"
        assert httpx.get(base + "/api/items").status_code == 401
        token = url.group(0).split("token=")[1]
        items = httpx.get(base + "/api/items", headers={"Authorization": f"Bearer {token}"}).json()
        assert items["n_items"] == 12 and items["strategy"] == "neighbour"
    finally:
        proc.terminate()
        proc.wait(10)


def test_serve_refuses_what_is_neither_run_nor_model(gaussian_64: tuple[Path, Path], tmp_path: Path) -> None:
    r = normalcy("serve", str(tmp_path))
    assert r.returncode == 1 and "neither a run folder" in r.stderr and "Traceback" not in r.stderr
    r = normalcy("serve", str(gaussian_64[0]))
    assert r.returncode == 1 and "give the images" in r.stderr


def test_serve_a_table_or_series_model_alone_asks_for_what_it_scores(tmp_path: Path) -> None:
    """`serve MODEL` without inputs asked a table's or a series' model for "the images to score too"."""
    table, series = tmp_path / "t.csv", tmp_path / "s.csv"
    table.write_text("a,b\n" + "".join(f"{i % 7},{i % 5}\n" for i in range(60)))
    series.write_text("timestamp,x\n" + "".join(f"{i},{np.sin(i / 5):.4f}\n" for i in range(300)))
    for data, says in ((table, "is a vector model: give the table to score too (normalcy serve MODEL TABLE)"),
                       (series, "is a series model: give the series to score too")):
        assert normalcy("fit", str(data), "-o", str(tmp_path / data.stem)).returncode == 0
        r = normalcy("serve", str(tmp_path / data.stem))
        assert r.returncode == 1 and r.stderr.startswith(f"error: {tmp_path / data.stem} {says}"), r.stderr


def test_bad_detector_parameters_are_one_line_errors(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds", n_train=6)
    train = str(ds / "train" / "good")
    for args, says in ((["-d", "simplenet", "--steps", "0"], "steps"),
                       (["-d", "draem", "--time-budget", "-5"], "time_budget"),
                       (["-d", "gaussian", "--steps", "10"], "does not train"),
                       (["-d", "musc"], "score-batch"),
                       (["--fpr", "2"], "fpr")):
        r = normalcy("fit", train, "-o", str(tmp_path / "m"), *args)
        assert r.returncode == 1, (args, r.stderr)
        assert "Traceback" not in r.stderr and says in r.stderr, (args, r.stderr)
        assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1, (args, r.stderr)


def test_warnings_reach_the_user(tmp_path: Path) -> None:
    """Python warnings are shown on stderr, not swallowed: here a ground-truth mask of the wrong size."""
    # the fewest images an eval takes (gaussian fits 5, a good and a defect to score), small: the process is the point
    ds = make_synthetic_dataset(tmp_path / "ds", n_train=5, n_good=1, n_defect=1)
    mask = ds / "ground_truth" / "defect" / "000_mask.png"
    Image.open(mask).resize((48, 48)).save(mask)
    r = normalcy_process("eval", str(ds), "--image-size", "32", "--json")  # pytest records warnings in-process
    assert r.returncode == 0, r.stderr
    assert "resized" in r.stderr and "000_mask.png" in r.stderr
    assert "MaskSizeWarning" not in r.stderr and "return " not in r.stderr  # not Python's file:line and source line


def test_predict_keeps_a_file_whose_name_is_not_utf8(gaussian_64: tuple[Path, Path], tmp_path: Path) -> None:
    """A Linux file name is bytes; one that is not UTF-8 is scored and listed like any other."""
    import os

    model = gaussian_64[0]
    folder = tmp_path / "new"
    folder.mkdir()
    Image.fromarray(texture(np.random.default_rng(5))).save(folder / "plain.png")
    odd = os.path.join(os.fsencode(folder), b"part\xff.png")
    with open(odd, "wb") as fh:
        fh.write((folder / "plain.png").read_bytes())
    r = normalcy("predict", str(model), str(folder), "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "out" / "scores.csv", "rb") as fh:
        body = fh.read()
    assert b"part\xff.png" in body and b"plain.png" in body
    assert len(list((tmp_path / "out" / "heatmaps").iterdir())) == 2


def test_untrusted_names_are_printed_as_they_are(gaussian_64: tuple[Path, Path], tmp_path: Path) -> None:
    """File names and table ids are text, never Rich markup or terminal control: `[/x].png` (a closing tag)
    is printed, not a crash; `[bold red]` is not a style; an escape sequence is shown escaped."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    from test_tables import _rows, _write

    from normalcy.vectors.tables import fit_table, read_table, save_vector_model

    model, ds = gaussian_64
    images = tmp_path / "in"
    (images / "[").mkdir(parents=True)
    good = (ds / "test" / "good" / "000.png").read_bytes()
    (images / "[" / "ok.png").write_bytes(good)
    (images / "[" / "x].png").write_bytes(good[:100])  # corrupt: skipped, and named
    (images / "[bold red]y.png").write_bytes(b"not an image")
    (images / "e\x1b[31m.png").write_bytes(b"")
    r = normalcy("predict", str(model), str(images), "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "\x1b" not in r.stderr
    for shown in ("[/x].png", "[bold red]y.png", "e\\x1b[31m.png"):
        assert shown in r.stderr
    assert "scored 1 images" in r.stderr

    X, y = _rows(n=60)
    table = read_table(_write(tmp_path / "t.csv", X, y), label_column="label", id_column="name")
    det, _ = fit_table(table, "gaussian")
    save_vector_model(det, "gaussian", table.columns, tmp_path / "vm")
    X[1, 0] = X[2, 0] = np.nan  # rows that are not scored are named on stderr by their ids
    ids = ["[bold red]x", "\x1b[31mred"]
    pcsv.write_csv(pa.table({**{f"f{j}": X[:3, j] for j in range(X.shape[1])}, "name": ["fine", *ids]}),
                   tmp_path / "new.csv")
    r = normalcy("predict", str(tmp_path / "vm"), str(tmp_path / "new.csv"), "-o", str(tmp_path / "tout"),
                 "--id-column", "name")
    assert r.returncode == 0, r.stderr
    assert "[bold red]x" in r.stderr and "\\x1b[31mred" in r.stderr and "\x1b" not in r.stderr


def test_runs_into_one_folder_replace_it_and_never_score_themselves(gaussian_64: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    """-o inside the input folder, twice: the second run scores the same images (not the first run's
    heatmaps) and replaces the first run; a folder of other files is refused, untouched."""
    model, ds = gaussian_64[0], shutil.copytree(gaussian_64[1], tmp_path / "ds")  # its runs go into the data set
    images, out = ds / "test", ds / "test" / "results"
    for _ in range(2):
        r = normalcy("predict", str(model), str(images), "-o", str(out))
        assert r.returncode == 0, r.stderr
        assert "scored 6 images" in r.stderr
    assert "a normalcy run (run.json, scores.csv), whose heatmaps are not inputs" in " ".join(r.stderr.split())
    assert len(list(csv.DictReader(open(out / "scores.csv")))) == 6 and len(list((out / "heatmaps").iterdir())) == 6
    assert [p.name for p in images.iterdir() if p.name.startswith(".")] == []  # no staging folder left
    r = normalcy("predict", str(model), str(images), "-o", str(ds / "train"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "not a run folder" in r.stderr
    assert len(list((ds / "train" / "good").iterdir())) == 6


def test_every_command_has_a_one_line_summary_in_the_command_list() -> None:
    """`normalcy --help` lists the commands; a long docstring's own line breaks showed there mid-sentence."""
    import typer.main

    from normalcy.cli import app

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        summary = command.short_help or (command.help or "").split("\n\n")[0]
        assert "\n" not in summary.strip() and len(summary) <= 100, (name, summary)
    listed = run_cli("--help").stdout  # click cuts a summary it takes from a docstring short with "..."
    assert "..." not in listed.split("Commands:")[1], listed


@pytest.mark.parametrize("args, message", [
    # -2 was torch's RuntimeError, a traceback; 0 quietly all cores
    (("--threads", "-2"), f"--threads must be between 1 and {4 * (os.cpu_count() or 1)} (got -2)"),
    (("--threads", "0"), f"--threads must be between 1 and {4 * (os.cpu_count() or 1)} (got 0)"),
    (("--pool-grid", "0"), "pool grid must be between 1 and 32 (got 0)"),  # was a ValidationError after the fit
    # was click's own range check: a usage error, exit 2, unlike every other number out of range
    (("--tune", "--tune-budget", "-1"), "--tune-budget must be a number of plain fits, at least 0 (0: no limit), "
                                        "got -1"),
])
def test_fit_option_out_of_range_is_one_line_before_the_fit(tmp_path: Path, args: tuple[str, ...],
                                                            message: str) -> None:
    root = make_synthetic_dataset(tmp_path / "ds", n_train=4)
    r = run_cli("fit", root / "train" / "good", "-o", tmp_path / "model", "--image-size", "64", *args)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"error: {message}"
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("args, message", [
    (("predict", "model", "images", "--top", "-1"), "--top must be between 0 and 1000 (got -1)"),  # a report without images
    (("score-batch", "images", "--top", "-3"), "--top must be between 0 and 1000 (got -3)"),
    # held every image's gallery picture in memory until the report (100,000 images: some 180 GB)
    (("predict", "model", "images", "--top", str(10**12)), "--top must be between 0 and 1000 (got 1e+12)"),
    (("score-batch", "images", "--top", "1001"), "--top must be between 0 and 1000 (got 1001)"),
    (("serve", "run", "--port", "99999"), "--port must be between 0 and 65535 (got 99999)"),  # served on another port
    (("demo", "--n-train", "-5"), "--n-train must be at least 1 (got -5)"),  # ran on a slice of the cells
    (("demo", "--n-test", "0"), "--n-test must be at least 1 (got 0)"),
    (("watch", "model", "--idle", "-1"), "--idle must be at least 0 (got -1)"),
])
def test_numbers_out_of_range_are_one_line_and_exit_1(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    """Checked before anything is read or written: the same error and exit code as --fpr 1.5."""
    r = run_cli(*args)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"error: {message}"


def test_an_fpr_of_nan_says_the_range(tmp_path: Path) -> None:
    """--fpr nan was "detector pca: fpr: input should be less than 1 (got NaN)"; it says the range, before any
    data is read, as for inf and 2. Fit and eval alike."""
    from test_series_cli import cli

    for args in (("fit", tmp_path / "none.csv", "-o", tmp_path / "m", "-d", "pca"), ("eval", tmp_path / "none.csv")):
        for value in ("nan", "inf", "2"):
            r = cli(*args, "--fpr", value)
            assert r.exit_code == 1 and r.stderr.strip() == (
                f"error: --fpr must be a number between 0 and 1, both excluded (got {value})"), r.stderr


@pytest.mark.parametrize("command", ["fit", "predict", "serve"])
def test_a_name_over_the_file_systems_limit_is_one_line(tmp_path: Path, command: str) -> None:
    """A path with a name over 255 bytes (`-o` or an input) made pathlib's exists() raise "File name too long":
    a traceback, from fit, predict and serve alike. It is one line naming the path, exit code 1."""
    long = tmp_path / ("a" * 300)
    args = {"fit": ("fit", long, "-o", tmp_path / "m"), "predict": ("predict", long, tmp_path, "-o", tmp_path / "r"),
            "serve": ("serve", long)}[command]
    r = run_cli(*args)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith(f"error: {long}") and "File name too long" in r.stderr and r.stderr.count("\n") == 1


def test_threads_past_four_per_core_are_refused_before_any_work() -> None:
    """`--threads 20000` was taken: torch and onnxruntime started thousands of threads once work began, and the
    run ended in libgomp's "Thread creation failed" (exit 1, no line of normalcy's)."""
    from normalcy.cli import MAX_THREADS

    r = run_cli("predict", "model", "images", "--threads", "20000")
    assert r.returncode == 1 and r.stderr == f"error: --threads must be between 1 and {MAX_THREADS} (got 20000)\n"
    assert MAX_THREADS == 4 * (os.cpu_count() or 1)


def test_ctrl_c_is_one_line_and_exit_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in a command exits 130 as a Ctrl-C while typer parses does (it was 1, an ordinary error's code),
    so that a script can tell an interrupted run from a failed one."""
    from normalcy import cli

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "api_predict", interrupted)
    r = run_cli("predict", tmp_path / "model", tmp_path / "images", "-o", tmp_path / "run")
    assert r.returncode == 130 and r.stderr.strip() == "error: interrupted"


def test_score_batch_help_speaks_of_images_only() -> None:
    """score-batch scores images: its --top said "or series (default 12)", as predict's does."""
    r = run_cli("score-batch", "--help")
    assert r.returncode == 0 and "series" not in r.stdout.split("--top", 1)[1].split("--", 1)[0]


def _option_help(command: str, option: str) -> str:
    """The help of one option of a command, on one line (up to the next option)."""
    from typer.testing import CliRunner

    from normalcy.cli import app

    r = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    lines = r.stdout.split("\n")
    at = next(i for i, line in enumerate(lines) if line.lstrip().removeprefix("-d, ").startswith(option))
    end = next((i for i in range(at + 1, len(lines)) if lines[i].startswith("  -")), len(lines))  # not "   --x" wrapped
    return " ".join(" ".join(lines[at:end]).split())


def test_each_commands_help_lists_only_the_choices_it_takes() -> None:
    """demo's --help listed the table and series detectors under -d (shared with fit and eval), which demo refuses
    (`demo -d knn`), and auto's --input-norm trials, an option demo has not; score-batch's listed --input-norm
    auto, which it refuses, and other detectors' backbones; fit's and eval's named musc's, which they refuse."""
    from normalcy.detectors import DETECTORS

    demo = _option_help("demo", "--detector")
    assert "Tables" not in demo and "Series" not in demo and "knn" not in demo and "--input-norm" not in demo
    assert all(name in demo for name in [*DETECTORS, "auto"]) and "musc" not in demo
    norm = _option_help("score-batch", "--input-norm")
    assert "imagenet" in norm and "auto" not in norm and "--detector" not in norm
    backbone = _option_help("score-batch", "--backbone ")
    assert "efficientnet_lite0." in backbone and "patchcore" not in backbone
    for command in ("fit", "eval"):
        assert "knn" in _option_help(command, "--detector")  # tables and series still listed
        assert "auto" in _option_help(command, "--input-norm")
        assert "musc" not in _option_help(command, "--backbone ")


def test_fit_into_a_folder_that_cannot_be_written_is_refused_before_the_fit(tmp_path: Path) -> None:
    """An existing folder that cannot be written (a read-only mount; /proc here, as root writes anywhere
    else) failed at saving, after the whole fit; it is refused first, naming it."""
    table = tmp_path / "t.csv"
    table.write_text("a,b\n" + "".join(f"{i % 7},{i % 5}\n" for i in range(60)))
    r = run_cli("fit", table, "-o", "/proc/self", "-d", "gaussian")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: /proc/self: cannot write a model there (") and "fitted" not in r.stderr


def test_fit_never_replaces_model_files_that_are_not_a_normalcy_models(tmp_path: Path) -> None:
    """fit -o a Hugging Face model's folder (config.json, model.safetensors) replaced its model.safetensors; a
    folder with another tool's model.json lost it. Refused before the fit, the files untouched; a folder of
    other files, or an earlier normalcy model, is written as before."""
    table = tmp_path / "t.csv"
    table.write_text("a,b\n" + "".join(f"{i % 7},{i % 5}\n" for i in range(60)))
    for name, content in (("model.safetensors", b"weights"), ("model.json", b'{"architectures": ["Bert"]}')):
        theirs = tmp_path / name.replace(".", "_")
        theirs.mkdir()
        (theirs / name).write_bytes(content)
        r = run_cli("fit", table, "-o", theirs, "-d", "gaussian")
        assert r.returncode == 1 and r.stderr.strip() == (
            f"error: {theirs}: holds a {name} that is not a normalcy model's, which saving would replace: "
            "choose another --output")
        assert [p.name for p in theirs.iterdir()] == [name] and (theirs / name).read_bytes() == content
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "notes.txt").write_text("mine")
    for _ in range(2):  # a folder of other files, then the earlier model in it
        assert run_cli("fit", table, "-o", docs, "-d", "gaussian").returncode == 0
    assert sorted(p.name for p in docs.iterdir()) == ["model.json", "model.skops", "notes.txt"]


@pytest.mark.parametrize("args, message", [
    (("fit", "data", "-o", "model", "--bogus"), "No such option: --bogus"),
    (("fit", "-o", "model"), "Missing argument 'train_dir'."),
    (("fit", "data", "-o"), "Option '-o' requires an argument."),  # click gives this one no context
    (("predict", "model", "images", "--top", "many"), "Invalid value for '--top': "),
    (("fitt", "data"), "No such command 'fitt'."),
])
def test_usage_errors_are_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    """A command line click cannot parse was drawn in a box 80 columns wide, garbled on a narrow terminal and
    in a log: now `error: MESSAGE` and the help to read, as normalcy's own errors, exit code 2 (click's)."""
    from typer.testing import CliRunner

    from normalcy.cli import app

    r = CliRunner().invoke(app, list(args), env={"COLUMNS": "40"})
    assert r.exit_code == 2 and r.stdout == ""
    error, hint = r.stderr.splitlines()
    assert error.startswith(f"error: {message}")
    command = args[0] if args[0] != "fitt" else ""
    assert hint.startswith("Try '") and hint.endswith(f"{' ' + command if command else ''} --help' for help.")


def test_every_commands_help_shows_each_option_whole_at_40_columns() -> None:
    """Rich's help boxes cut option names short below about 100 columns (`--ou…`, `--la…` at 40): each
    option of each command is shown whole, and no box is drawn."""
    import typer.main
    from typer.testing import CliRunner

    from normalcy.cli import app

    for name, command in typer.main.get_command(app).commands.items():
        r = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "40"})
        assert r.exit_code == 0 and "…" not in r.stdout and "╭" not in r.stdout, name
        for param in command.params:
            for opt in param.opts + param.secondary_opts:
                assert opt in r.stdout, (name, opt)


@pytest.mark.parametrize("args, option", [
    (("predict", "MODEL", "", "-o", "OUT"), "'inputs'"),  # scored the current folder
    (("fit", "TABLE", "-o", ""), "'--output' / '-o'"),  # wrote the model into the current folder
    (("fit", "TABLE", "-o", "OUT", "-d", ""), "'--detector' / '-d'"),  # fitted the default detector
    (("score-batch", "OUT", "--extra="), "'--extra'"),
])
def test_an_empty_value_is_refused_not_read_as_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   args: tuple[str, ...], option: str) -> None:
    """`-o "$UNSET"` or an empty input was the path `.` (and `-d ""` no detector, the default): refused
    before any work, naming the option, as a value click cannot read is."""
    table = tmp_path / "t.csv"
    table.write_text("a,b\n" + "".join(f"{i % 7},{i % 5}\n" for i in range(60)))
    assert run_cli("fit", table, "-o", tmp_path / "model").returncode == 0
    monkeypatch.chdir(tmp_path)
    names = {"MODEL": tmp_path / "model", "TABLE": table, "OUT": tmp_path / "out"}
    r = run_cli(*[names.get(a, a) for a in args])
    assert r.returncode == 2 and r.stderr.splitlines()[0] == f"error: Invalid value for {option}: empty"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "t.csv"]
    assert run_cli("fit", "", "--help").returncode == 0  # --help still answers


def test_a_log_line_is_one_line_in_a_log_file() -> None:
    """Rich wrapped a warning at the console's width and padded each part with spaces, in a log file too: grep
    found half of it. Off a terminal each record is one line, control characters still escaped."""
    import io
    import logging

    from rich.console import Console

    from normalcy.progress import PlainRichHandler

    file = io.StringIO()
    handler = PlainRichHandler(console=Console(file=file, width=40), show_time=False, show_path=False)
    message = "gaussian: the threshold rests on 6 held-out normal image(s); 20 or more make it reliable \x1b[2J"
    handler.handle(logging.makeLogRecord({"levelno": logging.WARNING, "levelname": "WARNING", "msg": message}))
    assert file.getvalue() == f"WARNING  {message[:-5]} \\x1b[2J\n"


@pytest.mark.parametrize("args, message", [
    # the anomalous images meant to be left out were fitted on as normal, after the whole fit
    (("fit", "IMAGES", "-o", "OUT", "--label-column", "label"), "--label-column does not apply to images"),
    (("fit", "SERIES", "-o", "OUT", "--label-column", "label"), "--label-column does not apply to a series"),
    (("predict", "TABLE_MODEL", "TABLE", "-o", "OUT", "--save-maps"), "--save-maps does not apply to a table's"),
    (("predict", "TABLE_MODEL", "TABLE", "-o", "OUT", "--top", "5"), "--top does not apply to a table's model"),
    # image-only options on a table's or a series' model were ignored without a word
    (("predict", "TABLE_MODEL", "TABLE", "-o", "OUT", "--report"), "--report does not apply to a table's model"),
    (("predict", "TABLE_MODEL", "TABLE", "-o", "OUT", "--heatmaps"), "--heatmaps does not apply to a table's"),
    (("predict", "TABLE_MODEL", "TABLE", "-o", "OUT", "--no-embeddings"), "--no-embeddings does not apply to a "
                                                                            "table's model"),
    (("predict", "SERIES_MODEL", "SERIES", "-o", "OUT", "--heatmaps"), "--heatmaps does not apply to a series"),
    (("predict", "TABLE_MODEL", "TABLE", "-o", "OUT", "--ray", "local", "--report"), "--report does not apply to a "
                                                                                   "run on Ray"),
    (("predict", "SERIES_MODEL", "SERIES", "-o", "OUT", "--no-embeddings"), "--no-embeddings does not apply to a "
                                                                              "series model"),
    (("predict", "SERIES_MODEL", "SERIES", "-o", "OUT", "--id-column", "x"), "--id-column does not apply to a "
                                                                               "series model"),
    (("predict", "SERIES_MODEL", "SERIES", "-o", "OUT", "--no-report", "--top", "5"), "--top counts what the "
                                                                                     "report shows"),
    (("eval", "SERIES_DIR", "--test", "TABLE"), "--test does not apply to series folders"),
    (("eval", "DATASET", "--label-column", "label"), "--label-column does not apply to an image data set"),
])
def test_an_option_that_does_not_apply_is_refused_not_ignored(tmp_path: Path, args: tuple[str, ...],
                                                              message: str) -> None:
    """Each was ignored without a word; now one line naming it, before any work, exit 1."""
    table, series = tmp_path / "t.csv", tmp_path / "sd" / "train.csv"
    table.write_text("a,b\n" + "".join(f"{i % 7},{i % 5}\n" for i in range(60)))
    series.parent.mkdir()
    series.write_text("timestamp,x\n" + "".join(f"{i},{np.sin(i / 5):.4f}\n" for i in range(300)))
    (series.parent / "test.csv").write_text(series.read_text().replace("x\n", "x,label\n", 1).replace("\n", ",0\n")
                                            .replace("x,label,0\n", "x,label\n", 1))
    assert run_cli("fit", table, "-o", tmp_path / "tm").returncode == 0
    assert run_cli("fit", series, "-o", tmp_path / "sm").returncode == 0
    ds = make_synthetic_dataset(tmp_path / "ds", n_train=2, n_good=1, n_defect=1)
    names = {"IMAGES": ds / "train" / "good", "DATASET": ds, "TABLE": table, "TABLE_MODEL": tmp_path / "tm",
             "SERIES": series, "SERIES_MODEL": tmp_path / "sm", "SERIES_DIR": series.parent, "OUT": tmp_path / "out"}
    r = run_cli(*[names.get(a, a) for a in args])
    assert r.returncode == 1 and r.stderr.startswith(f"error: {message}") and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "out").exists()


def test_watch_idle_without_follow_is_refused() -> None:
    """`watch MODEL - --idle 30` waited for the end of stdin whatever the idle time: --idle works only with
    --follow, and says so before the model is read."""
    r = run_cli("watch", "model", "-", "--idle", "30")
    assert r.returncode == 1 and r.stderr.strip() == (
        "error: --idle applies with --follow; without it, watch reads its input to the end")


def test_version_option_prints_the_version() -> None:
    """`normalcy --version`, as most tools take it, was `No such option: --version`."""
    from normalcy.version import __version__

    for args in (("--version",), ("version",)):
        r = run_cli(*args)
        assert r.returncode == 0 and r.stdout == f"{__version__}\n" and r.stderr == ""


def test_ctrl_c_while_the_modules_import_ends_the_command(tmp_path: Path) -> None:
    """A Ctrl-C landing inside a library's import (numpy's or torch's extension modules as they initialise) came
    out as an ImportError, a RecursionError or a C++ abort, or was lost by code that catches everything, the
    command going on. While the modules import, a Ctrl-C ends the process at once: one line, exit code 130.
    Here the import of normalcy.cli is such a library: it sends the Ctrl-C and catches whatever it raises."""
    import os
    import signal

    fake = ("import os, signal\nos.kill(os.getpid(), signal.SIGINT)\ntry:\n    for _ in range(10**6): pass\n"
            "except BaseException:\n    pass\ndef app():\n    print('the command went on', flush=True)\n")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a fresh normalcy.cli that is the library above, then main()
        try:
            import importlib.abc
            import importlib.util

            class Fake(importlib.abc.MetaPathFinder, importlib.abc.Loader):
                def find_spec(self, name, path, target=None):
                    return importlib.util.spec_from_loader(name, self) if name == "normalcy.cli" else None

                def create_module(self, spec):
                    return None

                def exec_module(self, module):
                    exec(fake, module.__dict__)

            os.dup2(w, 1)
            os.dup2(w, 2)
            sys.modules.pop("normalcy.cli", None)
            sys.meta_path.insert(0, Fake())
            signal.signal(signal.SIGINT, signal.default_int_handler)
            from normalcy.__main__ import main

            main()
            sys.stdout.flush()
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as fh:
        said = fh.read()
    _, status = os.waitpid(pid, 0)
    assert (os.waitstatus_to_exitcode(status), said) == (130, "error: interrupted\n")


def test_ctrl_c_while_the_command_starts_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """A Ctrl-C in the seconds the command spends importing torch (``import normalcy`` imported the whole API)
    was Python's traceback; it is `error: interrupted` and exit code 130, as a Ctrl-C later is. ``import
    normalcy`` alone no longer imports torch: the API comes when first used."""
    import builtins
    import subprocess

    from normalcy.__main__ import main

    real = builtins.__import__

    def interrupted(name, *args, **kwargs):
        if name == "normalcy.cli":
            raise KeyboardInterrupt
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", interrupted)
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 130 and capsys.readouterr().err == "error: interrupted\n"
    code = "import sys, normalcy; print('torch' in sys.modules, normalcy.fit.__module__, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "False normalcy.api True\n"
