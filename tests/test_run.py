"""The run folder: what RunWriter writes is what read_scores reads back, whatever the file names."""

from __future__ import annotations

import csv
import os
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import run_together
from normalcy.errors import InputError
from normalcy.runs.format import (
    EMBEDDINGS,
    RunWriter,
    check_output,
    csv_cell,
    output_name,
    outside_run,
    read_scores,
)

SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)


def _write(run: Path, paths: list[Path], inputs: list[Path] = (), skipped=(), **kw) -> RunWriter:
    writer = RunWriter(run, 0.5, (0.0, 1.0), report=False, inputs=inputs, **kw)
    for k, path in enumerate(paths):
        amap = np.full((4, 4), k / max(1, len(paths) - 1), dtype=np.float32)
        writer.add(path, _image(k), 1.0 - k / 10, amap)
    writer.close(list(skipped), "test")
    return writer


def test_an_images_two_pngs_are_written_at_once_and_a_failed_one_raised(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """An image's overlay is written on a thread of its own while its heatmap is (OpenCV encodes without the GIL:
    the two PNGs took most of predict's time on one core); the files are the pictures drawn, and a failed write is
    raised once both have ended, the image not added to the run."""
    import threading

    import normalcy.images.heatmap as heatmap

    write, threads = heatmap.write_bgr, {}

    def spy(path: Path, bgr: np.ndarray) -> None:
        threads[path.parent.name] = threading.get_ident()
        if path.stem.endswith("bad") and path.parent.name == "overlays":
            raise OSError("refused")
        write(path, bgr)

    monkeypatch.setattr(heatmap, "write_bgr", spy)
    writer = RunWriter(tmp_path / "run", 0.5, (0.0, 1.0), report=False)
    image, amap = _image(1), np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    writer.add(tmp_path / "ok.png", image, 0.7, amap)
    assert set(threads) == {"overlays", "heatmaps"} and threads["overlays"] != threads["heatmaps"]
    drawn = heatmap.pictures_bgr(image, amap, 0.0, 1.0)
    (heat,), (over,) = ([str(p) for p in (writer.folder / d).iterdir()] for d in ("heatmaps", "overlays"))
    np.testing.assert_array_equal(cv2.imread(heat), drawn)
    np.testing.assert_array_equal(cv2.imread(over), drawn[:, 8:])
    with pytest.raises(OSError, match="refused"):
        writer.add(tmp_path / "bad.png", image, 0.2, amap)
    assert sorted(p.name for p in writer.folder.glob("*/*.png")) == [Path(over).name] * 2  # none of bad.png
    writer.close([], "test")
    rows, _ = read_scores(tmp_path / "run")
    assert [Path(r.path).name for r in rows] == ["ok.png"] and Path(rows[0].overlay).name == Path(over).name


def test_same_file_name_in_two_folders_gets_two_overlays(tmp_path: Path) -> None:
    lots = [tmp_path / "lot1", tmp_path / "lot2"]
    paths = [lot / "good" / "00.jpg" for lot in lots]
    _write(tmp_path / "run", paths, inputs=lots)
    rows, _ = read_scores(tmp_path / "run")
    overlays = [Path(r.overlay).name for r in rows]
    assert overlays == ["lot1__good__00.png", "lot2__good__00.png"]
    first, second = (np.asarray(Image.open(r.overlay)) for r in rows)
    assert not np.array_equal(first, second)  # each row shows its own map
    assert sorted(p.name for p in (tmp_path / "run" / "heatmaps").iterdir()) == overlays


def test_names_stay_unique_without_a_common_root(tmp_path: Path) -> None:
    paths = [tmp_path / "a" / "good" / "00.jpg", tmp_path / "b" / "good" / "00.jpg",
             tmp_path / "b" / "good" / "00.png", tmp_path / "b" / "good" / "00.png"]
    _write(tmp_path / "run", paths)  # no inputs: names from the last two parts
    names = [p.name for p in (tmp_path / "run" / "overlays").iterdir()]
    assert len(names) == 4 and len({n.casefold() for n in names}) == 4
    assert "good__00.png" in names


def test_output_names_are_safe_readable_and_short(tmp_path: Path) -> None:
    assert output_name(tmp_path / "in" / "crack" / "000.png", tmp_path / "in") == "crack__000"
    odd = [tmp_path / "in" / n for n in ("a b.png", "a_b.png", "a:b.png", "-rf.png", "x" * 300 + ".png",
                                          "x" * 300 + "y.png", "ünïcode.png")]
    names = [output_name(p, tmp_path / "in") for p in odd]
    assert len(set(names)) == len(names)
    assert names[1] == "a_b" and names[-1] == "ünïcode"
    for name in names:
        assert set(name) <= SAFE | set("ünï") and not name.startswith((".", "-"))
        assert len(name.encode()) <= 130


@pytest.mark.skipif(sys.platform != "linux", reason="file names as bytes are a Linux thing")
def test_a_file_name_that_is_not_utf8_round_trips(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/bad\xff.png"
    bad = Path(os.fsdecode(raw))
    Image.fromarray(_image(0)).save(raw.decode("utf-8", "surrogateescape"), format="PNG")
    good = folder / "good.png"
    run = tmp_path / "run"
    writer = RunWriter(run, 0.5, (0.0, 1.0), inputs=[folder], top=2)  # the HTML report too
    writer.add(bad, _image(0), 0.9, np.ones((4, 4)))
    writer.add(good, _image(1), 0.1, np.zeros((4, 4)))
    writer.close([(Path(os.fsdecode(os.fsencode(folder) + b"/also\xfe.txt")), "not an image")], "test")

    rows, n = read_scores(run, [folder])
    assert n == 2 and os.fsencode(rows[0].path) == raw and Path(rows[0].path).is_file()
    assert rows[0].name == "bad\ufffd.png"  # printable for the page
    assert Path(rows[0].overlay).is_file() and Path(rows[1].overlay).name == "good.png"
    with open(run / "skipped.csv", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        assert os.fsencode(list(csv.DictReader(fh))[0]["path"]).endswith(b"/also\xfe.txt")
    assert "bad\ufffd.png" in (run / "report.html").read_text(encoding="utf-8")


def test_a_trailing_space_in_a_file_name_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "in" / "part.png "
    _write(tmp_path / "run", [path], inputs=[tmp_path / "in"])
    assert read_scores(tmp_path / "run")[0][0].path == str(path)


def test_cells_that_spreadsheets_would_run_are_quoted(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _write(run, [tmp_path / "a.png"], skipped=[(Path("=HYPERLINK(1)"), "+1+1"), (Path("@x"), "-2"),
                                               (Path("ok.txt"), "\tcmd"), (Path("-1"), "-2+3")])
    with open(run / "skipped.csv", newline="") as fh:
        cells = [c for row in list(csv.reader(fh))[1:] for c in row]
    # a plain signed number (a negative epoch time) runs nothing and is written as it is
    assert cells == ["'=HYPERLINK(1)", "'+1+1", "'@x", "-2", "ok.txt", "'\tcmd", "-1", "'-2+3"]


def test_read_scores_undoes_the_quote_of_a_path_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with open(run / "scores.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "score", "decision"])
        writer.writerow([csv_cell("=cmd.png"), "1", "anomalous"])
        writer.writerow(["'quoted.png", "0", "normal"])  # a ' before anything else is part of the name
    monkeypatch.chdir(tmp_path)
    rows, _ = read_scores(run)
    assert [Path(r.path).name for r in rows] == ["=cmd.png", "'quoted.png"]


QUOTED = ["'=1+1", "=1+1", "'-5", "-5", "''@x", "'+cmd", "'plain", "'"]


def test_an_id_that_starts_with_a_quote_before_a_formula_reads_back_as_written(tmp_path: Path) -> None:
    """An id ``'=1+1`` was written as ``=1+1``'s guarded cell is, ``'=1+1``, so the two could not be told apart and
    reading scores.csv back (a table run's review without scores.parquet, events.csv's series, labels.csv joined
    back) gave ``=1+1``: such an id gets one quote more, and every id reads back as it was."""
    from normalcy.runs.format import _uncell, join_metrics, read_table_items, split_metrics, write_scores

    assert [csv_cell(t) for t in QUOTED] == ["''=1+1", "'=1+1", "''-5", "-5", "'" * 3 + "@x", "''+cmd", "'plain", "'"]
    assert [_uncell(csv_cell(t)) for t in QUOTED] == QUOTED
    assert [_uncell(m) for m in split_metrics(join_metrics(QUOTED))] == QUOTED  # as events.csv is read
    write_scores(tmp_path, "id", QUOTED, np.arange(len(QUOTED), dtype=float), 3.0)
    (tmp_path / "scores.parquet").unlink()  # the CSV alone, as a run copied without it
    assert read_table_items(tmp_path, "id").keys == QUOTED


def test_a_run_folder_name_too_long_for_its_staging_folder_says_how_long_it_may_be(tmp_path: Path) -> None:
    """A run folder named with 240 bytes (a name the file system takes) was "cannot write a run folder there (File
    name too long)": the staging folder beside it adds 18 bytes. The line says so and what length to give."""
    from normalcy.runs.format import abandon_run, start_run

    with pytest.raises(InputError, match=r"File name too long; the run is written beside it first, as "
                                         r"\.\{NAME\}\.XXXXXXXX\.partial: give a name of at most 237 bytes"):
        start_run(tmp_path / ("a" * 240))
    abandon_run(start_run(tmp_path / ("a" * 237)))


@pytest.mark.parametrize("field, value, said", [("kind", ["images"], 'kind is ["images"], not text'),
                                                ("kind", {"a": 1}, 'kind is {"a": 1}, not text'),
                                                ("inputs", 5, "inputs is 5, not a list"),
                                                ("backbone", [1], "backbone is [1], not text")])
def test_a_run_json_field_of_another_type_is_one_line(tmp_path: Path, field: str, value: object, said: str) -> None:
    """A run.json whose kind was a list (or inputs a number, backbone a list: hand-edited, damaged) stopped
    `normalcy serve` with a TypeError traceback ("unhashable type: 'list'", "'int' object is not iterable")."""
    import json

    from normalcy.runs.format import read_run_json

    run = tmp_path / "run"
    _write(run, [tmp_path / "a.png"])
    meta = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**meta, field: value}))
    with pytest.raises(InputError, match=re.escape(f"run.json: {said}; the run folder")):
        read_run_json(run)
    (run / "run.json").write_text(json.dumps({**meta, field: None}))  # null: as if absent
    assert read_run_json(run)[field] is None


def test_an_image_without_a_map_gets_no_pictures(tmp_path: Path) -> None:
    run = tmp_path / "run"
    writer = RunWriter(run, 0.5, (0.0, 1.0), report=False, save_maps=True)
    writer.add(tmp_path / "a.png", _image(0), 0.2, None)
    writer.close([], "test")
    assert read_scores(run)[0][0].overlay is None
    assert not any((run / d).exists() for d in ("overlays", "heatmaps", "maps"))


def test_embeddings_a_run_lacks_are_computed_row_aligned(tmp_path: Path) -> None:
    """predict skips embeddings for detectors without a backbone; serve fills them in, one row per scores.csv row."""
    from normalcy.images.features import FeatureExtractor
    from normalcy.runs.format import add_embeddings, read_embeddings

    folder = tmp_path / "images"
    folder.mkdir()
    paths = []
    for i in range(3):
        p = folder / f"{i}.png"
        Image.fromarray(_image(i)).save(p)
        paths.append(p)
    _write(tmp_path / "run", paths, [folder])
    assert read_embeddings(tmp_path / "run") is None
    paths[1].unlink()  # gone since scoring: a zero row, the others still embedded
    emb = add_embeddings(tmp_path / "run", FeatureExtractor(image_size=64, precision="fp32"), progress=False)
    assert emb.shape[0] == 3 and np.array_equal(read_embeddings(tmp_path / "run"), emb)
    assert not emb[1].any() and emb[0].any() and emb[2].any()


def _saved_images(folder: Path, n: int) -> tuple[Path, list[Path]]:
    """``folder`` made with n PNGs of ``_image`` in it: (the folder, their paths)."""
    folder.mkdir()
    paths = [folder / f"{i}.png" for i in range(n)]
    for i, p in enumerate(paths):
        Image.fromarray(_image(i)).save(p)
    return folder, paths

def test_images_moved_away_since_predict_are_said_once_and_do_not_stop_serve(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run whose images were moved away after predict: computing its embeddings for serve said two lines per
    image ("skipping X: file not found", then "X: file not found; it ranks by ..."), and with none left serve
    stopped, though the review needs only the scores. One line says them all, and serve goes on by score."""
    import normalcy.cli as cli
    from normalcy.images.features import FeatureExtractor
    from normalcy.runs.format import add_embeddings

    folder, paths = _saved_images(tmp_path / "images", 5)
    _write(tmp_path / "run", paths, [folder])
    for p in paths[1:]:
        p.unlink()
    extractor = FeatureExtractor(image_size=64, precision="fp32")
    with caplog.at_level("WARNING", logger="normalcy"):
        add_embeddings(tmp_path / "run", extractor, progress=False)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "and 3 more of the run's 5 image(s) that cannot be read" in said[0], said
    (tmp_path / "run" / EMBEDDINGS).unlink()
    paths[0].unlink()
    caplog.clear()
    monkeypatch.setattr(cli, "FeatureExtractor", lambda backbone: extractor)
    with caplog.at_level("WARNING", logger="normalcy"):
        cli._embed_run(tmp_path / "run")  # raised "none of the run's images could be read", stopping serve
    assert "reviewed by anomaly score only" in caplog.text and len(caplog.records) == 2


def test_embeddings_cut_short_by_a_stop_leave_no_file_that_later_serves_take_as_theirs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """serve stopped (Ctrl-C) while writing the embeddings it computed: the file cut short stayed, and every later
    serve found it there, did not compute them again and ranked by score only ("cannot read"). It is written
    beside its place and renamed: a stop leaves no file, and the next serve computes them."""
    import normalcy.runs.format as run_format
    from normalcy.images.features import FeatureExtractor
    from normalcy.runs.format import add_embeddings, read_embeddings

    folder, paths = _saved_images(tmp_path / "images", 2)
    _write(tmp_path / "run", paths, [folder])
    real = run_format.save_file

    def stopped(tensors: dict, filename: str) -> None:
        Path(filename).write_bytes(b"\x10\x00\x00")  # the first bytes, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(run_format, "save_file", stopped)
    extractor = FeatureExtractor(image_size=64, precision="fp32")
    with pytest.raises(KeyboardInterrupt):
        add_embeddings(tmp_path / "run", extractor, progress=False)
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if "embedding" in p.name) == []
    monkeypatch.setattr(run_format, "save_file", real)
    emb = add_embeddings(tmp_path / "run", extractor, progress=False)
    assert np.array_equal(read_embeddings(tmp_path / "run"), emb)


def test_heatmaps_are_full_size_and_the_report_keeps_its_top_images_small(tmp_path: Path) -> None:
    """A run of large images: PNGs at each image's own size, the overlay is the heatmap's right half,
    and the top images kept for the report are already at gallery size (memory stays bounded)."""
    rng = np.random.default_rng(0)
    writer = RunWriter(tmp_path / "run", 0.5, (0.0, 1.0), top=2, inputs=[tmp_path])
    for k, (h, w) in enumerate([(600, 1200), (300, 200), (700, 1400)]):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        amap = cv2.resize(rng.random((6, 12)).astype(np.float32), (w, h))
        writer.add(tmp_path / f"{k}.png", image, 0.1 * k, amap)
        heat = np.asarray(Image.open(writer.folder / "heatmaps" / f"{k}.png").convert("RGB"))  # until close()
        over = np.asarray(Image.open(writer.folder / "overlays" / f"{k}.png").convert("RGB"))
        assert heat.shape == (h, 2 * w, 3) and over.shape == (h, w, 3)
        assert np.array_equal(heat[:, :w], image) and np.array_equal(heat[:, w:], over)
    kept = sorted(writer._best, key=lambda b: b[0])
    assert [b[1] for b in kept] == [1, 2]  # the two highest scores
    assert all(max(b[2].image.shape[:2]) <= 512 and b[2].amap.shape == b[2].image.shape[:2] for b in kept)
    writer.close([], "test")
    assert (tmp_path / "run" / "report.html").is_file()


def test_a_nan_score_does_not_keep_the_highest_scores_out_of_the_report(tmp_path: Path) -> None:
    """A NaN score compares false with every score: once among the report's top images, no higher score got past
    it, and the gallery showed the NaN image and the first score after it instead of the two highest."""
    writer = RunWriter(tmp_path / "run", 1.0, (0.0, 1.0), heatmaps=False, top=2, inputs=[tmp_path])
    for k, score in enumerate([float("nan"), 5.0, 10.0, 7.0]):
        writer.add(tmp_path / f"{k}.png", np.zeros((8, 8, 3), np.uint8), score, None)
    assert sorted(b[2].name for b in writer._best) == [str(tmp_path / "2.png"), str(tmp_path / "3.png")]
    writer.abort()


def test_a_second_run_replaces_the_first_and_keeps_its_labels(tmp_path: Path) -> None:
    """Runs into one folder never add up: the new run takes the old one's place whole (no file of the old
    one is left behind), except the review's labels, which are about the images."""
    run = tmp_path / "run"
    _write(run, [tmp_path / f"{k}.png" for k in range(3)], inputs=[tmp_path])
    (run / "review.sqlite").write_bytes(b"labels")
    _write(run, [tmp_path / "new.png"], inputs=[tmp_path], heatmaps=False)
    rows, n_rows = read_scores(run)
    assert n_rows == 1 and [Path(r.path).name for r in rows] == ["new.png"]
    assert not (run / "heatmaps").exists() and (run / "review.sqlite").read_bytes() == b"labels"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging folder left


def test_a_failed_run_leaves_the_earlier_run_as_it_was(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _write(run, [tmp_path / "a.png"])
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(KeyboardInterrupt):
        with RunWriter(run, 0.5, (0.0, 1.0), report=False) as writer:
            writer.add(tmp_path / "b.png", _image(1), 0.9, np.zeros((4, 4), np.float32))
            raise KeyboardInterrupt
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_folder_that_is_not_a_run_is_never_replaced(tmp_path: Path) -> None:
    """Only an empty folder or an earlier run (run.json) is replaced; a folder of a person's files, or one
    holding the inputs, is refused with one line, untouched."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a run folder"):
        RunWriter(mine, 0.5, (0.0, 1.0))
    with pytest.raises(InputError, match="holds the input"):
        check_output(tmp_path, [mine])
    assert (mine / "notes.txt").read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    (tmp_path / "empty").mkdir()
    _write(tmp_path / "empty", [tmp_path / "a.png"])
    assert (tmp_path / "empty" / "run.json").is_file()


def test_files_under_the_run_folder_are_not_inputs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """-o inside the input folder: the run's own heatmaps, and a run being written beside it, are left out
    of the next run's inputs, and it says so."""
    images = [tmp_path / "a.png", tmp_path / "b.png"]
    ours = [tmp_path / "out" / "heatmaps" / "a.png", tmp_path / ".out.x1y2.partial" / "overlays" / "a.png"]
    assert outside_run(images + ours, tmp_path / "out") == images
    assert "2 file(s) under the run folder" in caplog.text


def test_outside_run_keeps_a_symlink_loop_for_the_reader_to_skip(tmp_path: Path) -> None:
    """Path.resolve raises on a symlink loop: it stopped predict, score-batch and serve before any image was
    scored; the reader names and skips such a file."""
    (tmp_path / "l1").symlink_to(tmp_path / "l2")
    (tmp_path / "l2").symlink_to(tmp_path / "l1")
    images = [tmp_path / "a.png", tmp_path / "l1"]
    assert outside_run(images, tmp_path / "out") == images


def test_outside_run_resolves_each_folder_once_and_follows_links(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Each input file was resolved on its own: 14 s for a folder of 50,000 images before the first was read.
    A folder is resolved once; a file that is a link, and a link to the run folder, still lead into it."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out" / "overlays").mkdir(parents=True)
    (tmp_path / "out" / "overlays" / "a.png").write_bytes(b"x")
    (tmp_path / "in" / "linked.png").symlink_to(tmp_path / "out" / "overlays" / "a.png")
    (tmp_path / "in" / "run").symlink_to(tmp_path / "out")
    images = [tmp_path / "in" / f"{i}.png" for i in range(50)]
    ours = [tmp_path / "in" / "linked.png", tmp_path / "in" / "run" / "overlays" / "a.png",
            tmp_path / ".out.x1y2.partial" / "a.png"]
    resolved = []
    resolve = Path.resolve
    monkeypatch.setattr(Path, "resolve", lambda self, strict=False: resolved.append(self) or resolve(self, strict))
    assert outside_run(images + ours, tmp_path / "out") == images
    assert len(resolved) <= 6


def _full(*args, **kwargs):
    raise OSError(28, "No space left on device")


def test_a_full_disk_while_a_run_is_written_is_one_line_and_keeps_the_earlier_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk while scores, embeddings (safetensors' own error) or the run of a table or series were
    written was a traceback; it is one line naming the run folder, and the earlier run stays whole."""
    import normalcy.runs.format as fmt
    from safetensors import SafetensorError

    run = tmp_path / "run"
    _write(run, [tmp_path / "a.png"])
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    monkeypatch.setattr(fmt, "write_skipped", _full)
    with pytest.raises(InputError, match=r"run: cannot write the run \(No space left on device\)"):
        with RunWriter(run, 0.5, (0.0, 1.0), report=False) as writer:
            writer.add(tmp_path / "b.png", _image(1), 0.9, np.zeros((4, 4), np.float32))
            writer.close([], "test")
    with pytest.raises(InputError, match=r"run: cannot write the run \(No space left on device\)"):
        with fmt.staged(run) as folder:
            fmt.write_skipped(folder, "row", [])

    def safetensors_full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    with pytest.raises(InputError, match=r"run: cannot write the run \(No space left on device\)"):
        with fmt.staged(run) as folder:
            safetensors_full()
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_full_disk_stops_an_image_run_rather_than_skipping_every_image(tmp_path: Path) -> None:
    """An image whose heatmap could not be written is skipped and the run goes on; a full disk is no one
    image's problem: it was "skipped" for that image and every later one (then "no image could be read")."""
    from normalcy.api import _add_safely

    class Writer:
        output = tmp_path / "run"

        def add(self, *args, **kwargs):
            raise self.error

    writer, skipped = Writer(), []
    writer.error = OSError(36, "File name too long")
    _add_safely(writer, skipped, tmp_path / "a.png", None, 1.0, None, None)
    assert [r for _, r in skipped] == ["could not write its results: [Errno 36] File name too long"]
    writer.error = OSError(28, "No space left on device")
    with pytest.raises(InputError, match=r"run: cannot write the run \(No space left on device\)"):
        _add_safely(writer, skipped, tmp_path / "b.png", None, 1.0, None, None)
    assert len(skipped) == 1


def test_runs_finishing_into_one_folder_at_once_both_end_well(tmp_path: Path) -> None:
    """Two predicts into one run folder finishing at the same moment: one rename failed ("Directory not
    empty") with a traceback and left its hidden folder behind. The run finishing last is kept, whole."""

    from normalcy.runs.format import RUN_JSON, finish_run, start_run

    for round_ in range(30):
        out = tmp_path / f"run{round_ % 3}"
        folders = [start_run(out) for _ in range(4)]
        for k, f in enumerate(folders):
            (f / RUN_JSON).write_text(str(k))
        errors = run_together(lambda f: finish_run(f, out), folders)
        assert errors == [] and (out / RUN_JSON).read_text() in "0123"
        assert sorted(p.name for p in out.iterdir()) == [RUN_JSON]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run0", "run1", "run2"]


def test_runs_finishing_into_one_folder_at_once_keep_the_review_labels(tmp_path: Path) -> None:
    """Several predicts into a reviewed run folder finishing at once: each moves the review's labels into its
    run before the swap, and one swapped out (as the earlier run, then deleted) a run another had just put in
    place, with the labels it had moved over: review.sqlite was gone, without an error (14 rounds of 30). The
    renames are now made one run at a time."""
    from normalcy.runs.format import RUN_JSON, finish_run, start_run

    for round_ in range(20):
        out = tmp_path / f"run{round_}"
        out.mkdir()
        (out / RUN_JSON).write_text("earlier")
        (out / "review.sqlite").write_text("labels")
        folders = [start_run(out) for _ in range(6)]
        for k, f in enumerate(folders):
            (f / RUN_JSON).write_text(str(k))
        assert run_together(lambda f: finish_run(f, out), folders) == []
        assert (out / "review.sqlite").read_text() == "labels", round_
        assert sorted(p.name for p in out.iterdir()) == ["review.sqlite", RUN_JSON]


def test_a_run_starting_beside_another_never_deletes_its_new_folder(tmp_path: Path, monkeypatch) -> None:
    """A run makes its hidden folder, then locks it; another run starting in between took it, not yet locked,
    for one a killed run left, and deleted it: the first run's heatmaps and scores then failed to be written.
    A run's folder is made and locked before another run looks for stale ones."""
    import threading

    import normalcy.runs.format as fmt

    out = tmp_path / "run"
    real, others = fmt.hold, []

    def late(folder: Path) -> None:  # another predict starts just before this one locks its folder
        if not others:
            others.append(threading.Thread(target=lambda: others.append(fmt.start_run(out))))
            others[0].start()
            others[0].join(0.5)
        real(folder)

    monkeypatch.setattr(fmt, "hold", late)
    mine = fmt.start_run(out)
    others[0].join()
    assert mine.is_dir() and others[1].is_dir() and mine != others[1]


def test_a_run_never_replaces_the_folder_holding_its_model(tmp_path: Path) -> None:
    """A model saved into a run folder (or as one) was deleted, silently, by the next run into that folder: a
    run replaces its folder whole. Refused in one line, the model and the earlier run kept."""
    from conftest import run_cli

    table = tmp_path / "t.csv"
    table.write_text("a,b\n" + "".join(f"{i % 7},{i % 5}\n" for i in range(60)))
    run = tmp_path / "run"
    assert run_cli("fit", table, "-o", tmp_path / "m", "-d", "gaussian").returncode == 0
    assert run_cli("predict", tmp_path / "m", table, "-o", run).returncode == 0
    for model in (run / "model", run):
        assert run_cli("fit", table, "-o", model, "-d", "gaussian").returncode == 0
        r = run_cli("predict", model, table, "-o", run)
        assert r.returncode == 1 and r.stderr.strip() == (f"error: {run}: holds the model {model}, and a run "
                                                          "replaces its run folder: choose another --output")
        assert (model / "model.json").is_file() and (run / "run.json").is_file()


def test_a_run_folder_that_cannot_be_written_is_refused_before_scoring(tmp_path: Path) -> None:
    """check_output, which series predict and score-batch call before scoring, let a folder whose parent cannot
    be written pass (a read-only mount; /proc here, as root writes anywhere else): the run failed after all
    the scoring (MuSc's minutes). A missing parent is still fine (it is made), and nothing is left behind."""
    with pytest.raises(InputError, match=r"^/proc/self/run: cannot write a run folder there \("):
        check_output(Path("/proc/self/run"))
    check_output(tmp_path / "new" / "deeper" / "run")
    assert list(tmp_path.iterdir()) == []


def test_a_run_into_a_symbolic_link_goes_where_it_points(tmp_path: Path) -> None:
    """-o a link to a folder (on a bigger disk, say): the link was replaced by a folder beside it, the run
    written there, and the swapped-out link left behind as .NAME.*.old. The run goes where the link points."""
    (tmp_path / "big").mkdir()
    link = tmp_path / "results"
    link.symlink_to(tmp_path / "big" / "results")
    for k in range(2):
        _write(link, [tmp_path / f"{k}.png"])
        assert link.is_symlink() and (tmp_path / "big" / "results" / "run.json").is_file()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["big", "results"]
        assert sorted(p.name for p in (tmp_path / "big").iterdir()) == ["results"]


def test_review_names_are_the_paths_inside_the_folders_given() -> None:
    """read_scores names each image by its path inside a folder given to predict, else parent/name; worked out
    on text rather than Paths (5 s of a review's start at 100,000 images), it says what pathlib says."""
    from normalcy.images.io import printable
    from normalcy.runs.format import _display_name

    def by_pathlib(path: str, inputs: list[Path]) -> str:
        p = Path(path)
        inside = next((f for f in inputs if p.is_relative_to(f) and p != f), None)
        return printable(p.relative_to(inside).as_posix() if inside else "/".join(p.parts[-2:]))

    paths = ["/a/b/c.png", "/c.png", "/a/c.png", "//a/b.png", "/a/b\\c.png", "/ab/c.png", "/a/b", "/a b/\udce9.png",
             "/", "/a/b/c/d/e.png"]
    folders = [[], [Path("/a")], [Path("/")], [Path("/a/b")], [Path("//a")], [Path("/ab"), Path("/a")]]
    for path in paths:
        for inputs in folders:
            assert _display_name(os.path.abspath(path), inputs) == by_pathlib(os.path.abspath(path), inputs)


def _killed_run(out: Path, how: str = "write") -> Path:
    """The hidden folder a run left when it was killed outright (no finally runs), and the process gone;
    ``how="swap"``: killed between its two renames, the earlier run swapped out as .NAME.*.old."""
    from conftest import killed_outright

    from normalcy.runs.format import start_run

    def run(say) -> None:
        folder = start_run(out)
        (folder / "scores.csv").write_text("path,score,decision\n")
        if how == "swap":
            os.replace(out, folder.with_suffix(".old"))
        say(str(folder))

    (folder,) = killed_outright(run)
    assert folder, "the run failed before it was killed"
    return Path(folder)


def test_a_run_killed_outright_leaves_nothing_the_next_run_keeps(tmp_path: Path) -> None:
    """A predict killed outright (SIGKILL, the OOM killer) left its hidden .NAME.*.partial folder, a whole
    run's heatmaps, for ever (and, between its two renames, the earlier run as .NAME.*.old); every kill added
    one. The next run into that folder deletes them; a live run's folder, another process's, is left alone
    (its process holds a lock on it), as is any other hidden folder."""
    from normalcy.runs.format import finish_run, start_run

    out = tmp_path / "run"
    _write(out, [tmp_path / "a.png"])
    stale = _killed_run(out)
    other = _killed_run(tmp_path / "other")  # a run into another folder: not this one's to delete
    (tmp_path / ".run.keep").mkdir()
    assert stale.is_dir()
    live = start_run(out)  # a run being written now
    assert not stale.exists() and live.is_dir()
    _write(out, [tmp_path / "b.png"])
    assert live.is_dir() and other.is_dir()
    finish_run(live, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".run.keep", other.name, "run"])
    stale = _killed_run(out, "swap")  # the earlier run, swapped out and never put back
    assert not out.exists() and stale.with_suffix(".old").is_dir()
    _write(out, [tmp_path / "c.png"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".run.keep", other.name, "run"])
    labelled = _killed_run(out)  # a review's labels moved in before the kill: never deleted
    (labelled / "review.sqlite").write_text("labels")
    _write(out, [tmp_path / "d.png"])
    assert (labelled / "review.sqlite").read_text() == "labels"


def test_a_symbolic_link_loop_as_model_or_output_is_one_line(tmp_path: Path) -> None:
    """fit -o, predict MODEL and predict -o (and a run written from Python) a symbolic link loop was pathlib's
    RuntimeError "Symlink loop from ...", a traceback; it is one line naming the path."""
    from conftest import run_cli

    from normalcy.runs.format import start_run

    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    table = tmp_path / "t.csv"
    table.write_text("x,y\n" + "".join(f"{k % 7},{k % 5}\n" for k in range(60)))
    want = f"error: {tmp_path / 'a'}: a symbolic link loop (it leads back to itself)"
    for args in (["fit", table, "-d", "gaussian", "-o", tmp_path / "a"], ["predict", tmp_path / "a", table, "-o",
                                                                         tmp_path / "run"]):
        r = run_cli(*args)
        assert r.returncode == 1 and r.stderr.strip() == want, r.stderr
    assert run_cli("fit", table, "-d", "gaussian", "-o", tmp_path / "m").returncode == 0
    r = run_cli("predict", tmp_path / "m", table, "-o", tmp_path / "a")
    assert r.returncode == 1 and r.stderr.strip() == want, r.stderr
    with pytest.raises(InputError, match="a symbolic link loop"):
        start_run(tmp_path / "a")


def _big_picture(h: int = 1024, w: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    amap = cv2.resize(rng.random((8, 8)).astype(np.float32) * 2, (w, h))
    amap[:3, :3] = np.nan
    return image, amap


def test_an_overlay_is_drawn_in_strips_with_the_same_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    """overlay() held about five float copies of a full-size map at once (550 MB for a 6000x6000 photo): it
    draws strips of rows now, pixel for pixel as on the whole image, and in BGR beside the image alike."""
    import tracemalloc

    import normalcy.images.heatmap as hm

    image, amap = _big_picture(2048, 2048)
    tracemalloc.start()
    try:
        drawn = hm.overlay(image, amap, 0.2, 1.5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * image.nbytes  # the result (one image) and a strip's temporaries; it was 5.4 images
    monkeypatch.setattr(hm, "_STRIP_PIXELS", image.shape[0] * image.shape[1])  # one strip: the whole image
    assert np.array_equal(drawn, hm.overlay(image, amap, 0.2, 1.5))
    beside = hm.pictures_bgr(image, amap, 0.2, 1.5)
    assert np.array_equal(beside[..., ::-1], hm.side_by_side(image, drawn))
    assert np.array_equal(hm.pictures_bgr(image, amap, 0.2, 1.5, beside=False)[..., ::-1], drawn)


def test_run_pictures_are_written_without_encoding_them_in_memory(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Each PNG was encoded in memory first, its whole file held at once (260 MB more for a 6000x6000 photo's
    heatmap): OpenCV writes it to the file. A run folder whose name is not UTF-8, which OpenCV cannot open,
    is still written (encoded in memory there)."""
    import normalcy.images.heatmap as hm

    image, amap = _big_picture(64, 96)
    encode = cv2.imencode

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded in memory")

    monkeypatch.setattr(hm.cv2, "imencode", no_encoding)
    writer = RunWriter(tmp_path / "run", 0.5, (0.2, 1.5), report=False, save_maps=True, inputs=[tmp_path])
    writer.add(tmp_path / "a.png", image, 0.9, amap)
    over = np.asarray(Image.open(writer.folder / "overlays" / "a.png"))
    heat = np.asarray(Image.open(writer.folder / "heatmaps" / "a.png"))
    assert np.array_equal(over, hm.overlay(image, amap, 0.2, 1.5)) and np.array_equal(heat, hm.side_by_side(image, over))
    writer.close([], "test")

    monkeypatch.setattr(hm.cv2, "imencode", encode)
    odd = Path(os.fsdecode(os.fsencode(tmp_path) + b"/run\xff"))
    writer = RunWriter(odd, 0.5, (0.2, 1.5), report=False, inputs=[tmp_path])
    writer.add(tmp_path / "a.png", image, 0.9, amap)
    writer.close([], "test")
    assert np.array_equal(np.asarray(Image.open(odd / "overlays" / "a.png")), over)
