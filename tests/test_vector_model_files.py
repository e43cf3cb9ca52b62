"""A vector model folder is untrusted data: crafted files are refused in one line, before anything scores.

Every case goes through ``normalcy predict MODEL table.csv -o out``: exit code 1, one line naming the file.
Cases that crashed or hung scoring before (a tree's child index out of range or pointing back, a FIFO)
run in a subprocess with a timeout, so that a regression fails the test instead of the test run.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from test_cli import normalcy
from typer.testing import CliRunner

from normalcy.cli import app
from normalcy.errors import InputError
from normalcy.vectors.iforest import check_tree
from normalcy.vectors.tables import (
    TRUSTED_TYPES,
    fit_table,
    load_vector_model,
    read_table,
    save_vector_model,
    threshold_of,
)


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("table") / "t.npz"
    np.savez(path, X=rng.normal(size=(200, 4)), y=np.zeros(200, dtype=np.int64))
    return path


@pytest.fixture(scope="module")
def models(table: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A saved model of each detector, fitted on the table."""
    t = read_table(table, label_column="y")
    out = {}
    for name in ("gaussian", "knn", "iforest", "ecod", "ensemble"):
        det, _ = fit_table(t, name)
        out[name] = tmp_path_factory.mktemp(name) / "m"
        save_vector_model(det, name, t.columns, out[name])
    return out


def _copy(model: Path, tmp_path: Path, edit: Callable[[Any], None] | None = None, **dump: Any) -> Path:
    """A copy of the model folder, its estimator edited in Python (skops saves whatever it is given)."""
    d = tmp_path / "crafted"
    shutil.copytree(model, d)
    if edit is not None:
        det = sio.load(d / "model.skops", trusted=TRUSTED_TYPES)
        edit(det)
        sio.dump(det, d / "model.skops", **dump)
    return d


def _fails(d: Path, table: Path, tmp_path: Path, words: str) -> str:
    """`normalcy predict` in this process: exit code 1, one line naming a file of the model, no traceback."""
    r = CliRunner().invoke(app, ["predict", str(d), str(table), "-o", str(tmp_path / "out")])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert len(lines) == 1 and lines[0].startswith(f"error: {d}/model."), r.output
    assert words in lines[0], lines[0]
    return lines[0]


def _refused(d: Path, words: str) -> str:
    """Loading alone refuses the folder, in one line naming a file of it (nothing is scored, so nothing hangs)."""
    with pytest.raises(InputError) as info:
        load_vector_model(d)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{d}/model.") and words in msg, msg
    return msg


def _fails_in_subprocess(d: Path, table: Path, tmp_path: Path, words: str) -> None:
    r = normalcy("predict", str(d), str(table), "-o", str(tmp_path / "out"))  # a crash is rc -11, a hang a timeout
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and len(lines) == 1, (r.returncode, r.stderr)
    assert lines[0].startswith(f"error: {d}/model.skops") and words in lines[0], r.stderr


def _first_tree(det: Any) -> Any:
    return det.forest_.estimators_[0].tree_


def _child(value: int) -> Callable[[Any], None]:
    def edit(det: Any) -> None:
        _first_tree(det).children_left[0] = value  # a view of the tree's node array: the tree itself changes
        assert _first_tree(det).children_left[0] == value
    return edit


@pytest.mark.parametrize("value,words", [(2**40, "node 0 has children 1099511627776"),  # read past: segfault
                                         (-5, "node 0 has children -5"),  # points back: an endless loop
                                         (0, "node 0 has children 0")])  # itself: an endless loop
def test_tree_child_out_of_range_or_back_is_refused_before_scoring(value, words, models, table, tmp_path):
    _fails_in_subprocess(_copy(models["iforest"], tmp_path, _child(value)), table, tmp_path, words)


def test_pima_iforest_with_a_crafted_tree(shared_data: Path, tmp_path: Path) -> None:
    """The issue's case: iforest fitted on ADBench's Pima, its first tree's left_child[0] set to 2**40."""
    pima = shared_data / "adbench" / "Classical" / "29_Pima.npz"
    if not pima.is_file():
        pytest.skip(f"{pima} not found")
    r = normalcy("fit", str(pima), "-o", str(tmp_path / "m"), "-d", "iforest", "--label-column", "y")
    assert r.returncode == 0, r.stderr
    d = _copy(tmp_path / "m", tmp_path, _child(2**40))
    _fails_in_subprocess(d, pima, tmp_path, "node 0 has children 1099511627776")


def _set_node(field: str, value: float) -> Callable[[Any], None]:
    def edit(det: Any) -> None:
        tree = _first_tree(det)
        getattr(tree, field)[0] = value
    return edit


@pytest.mark.parametrize("edit,words", [
    (_set_node("feature", 4), "node 0 splits feature 4"),
    (_set_node("feature", -1), "node 0 splits feature -1"),
    (_set_node("threshold", np.nan), "at nan"),
    (_set_node("children_right", -1), "node 0 has children 1 and -1"),
    (lambda det: setattr(det.forest_, "_max_features", 9), "_max_features: expected an integer from 1 to 4"),
    (lambda det: setattr(det.forest_, "_decision_path_lengths", (np.zeros(3),) + det.forest_._decision_path_lengths[1:]),
     "_decision_path_lengths[0]: shape (3,)"),
    (lambda det: det.forest_.estimators_features_.__setitem__(0, np.array([0, 1, 2, 7])), "outside the 4 columns"),
])
def test_other_crafted_forests_are_refused(edit, words, models, tmp_path):
    _refused(_copy(models["iforest"], tmp_path, edit), words)


def test_check_tree_accepts_every_fitted_tree(models):
    det, _ = load_vector_model(models["iforest"])
    for est in det.forest_.estimators_:
        assert check_tree(est.tree_, 4, "tree") == est.tree_.node_count


@pytest.mark.parametrize("name,edit,words", [
    ("knn", lambda det: setattr(det, "scale_", det.scale_[:-1]), "KNNDetector.scale_: shape (3,), expected (4)"),
    ("knn", lambda det: setattr(det, "n_neighbors_", -3), "n_neighbors_: expected an integer from 1 to 200, got -3"),
    ("knn", lambda det: setattr(det, "n_neighbors_", 10**9), "got 1000000000"),
    ("knn", lambda det: setattr(det, "n_neighbors_", 1e9), "got 1000000000.0"),
    ("knn", lambda det: setattr(det, "scale_", np.zeros(4)), "scale_: must be positive"),
    ("knn", lambda det: setattr(det, "train_", det.train_.astype(np.float16)), "train_: dtype float16"),
    ("knn", lambda det: setattr(det, "codes_", det.codes_.astype(np.uint64)), "codes_: dtype uint64"),
    ("knn", lambda det: setattr(det, "nprobe", -1), "nprobe"),
    ("gaussian", lambda det: det.precision_.__setitem__((0, 0), np.inf), "precision_: holds NaN"),
    ("gaussian", lambda det: setattr(det, "location_", det.location_[None]), "location_: shape (1, 4)"),
    ("ecod", lambda det: setattr(det, "sorted_", det.sorted_[:, ::-1].copy()), "must be sorted"),
    ("ecod", lambda det: setattr(det, "skewness_", "x"), "expected an array, got str"),
    ("ensemble", lambda det: setattr(det, "spread_", -det.spread_), "spread_: must be positive"),
    ("ensemble", lambda det: setattr(det.members_[1], "mean_", np.zeros(5)), "mean_: shape (5,)"),
    ("ensemble", lambda det: det.members_.append(copy.deepcopy(det)), "EnsembleDetector is not a member detector"),
    ("gaussian", lambda det: setattr(det, "anomaly_score", 1), "unexpected attribute 'anomaly_score'"),
    ("gaussian", lambda det: setattr(det, "offset_", "0.5"), "offset_: expected a finite number"),
])
def test_inconsistent_state_is_refused(name, edit, words, models, tmp_path):
    _refused(_copy(models[name], tmp_path, edit), words)


@pytest.mark.parametrize("edit,words", [
    (lambda det: setattr(det, "scale_", det.scale_[:-1]), "KNNDetector.scale_: shape (3,), expected (4)"),
    (lambda det: setattr(det, "n_neighbors_", -3), "n_neighbors_: expected an integer from 1 to 200, got -3"),
    (lambda det: setattr(det, "n_neighbors_", 1e9), "got 1000000000.0"),
])
def test_inconsistent_state_is_one_line_on_the_command_line(edit, words, models, table, tmp_path):
    _fails(_copy(models["knn"], tmp_path, edit), table, tmp_path, words)


@pytest.mark.parametrize("edit,words", [
    (lambda det: setattr(det, "n_neighbors", LogisticRegression()),  # skops trusts every sklearn estimator
     "holds a sklearn.linear_model._logistic.LogisticRegression"),
    (lambda det: setattr(det, "nprobe", np.add), "holds a numpy.add (FunctionNode)"),  # and numpy's ufuncs
])
def test_types_beyond_our_detectors_are_refused(edit, words, models, table, tmp_path):
    _fails(_copy(models["knn"], tmp_path, edit), table, tmp_path, words)


def _rewrite_schema(d: Path, edit: Callable[[str], str]) -> None:
    path = d / "model.skops"
    with zipfile.ZipFile(path) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    members["schema.json"] = edit(members["schema.json"].decode()).encode()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def test_a_schema_naming_another_class_is_refused(models, table, tmp_path):
    d = _copy(models["gaussian"], tmp_path)
    _rewrite_schema(d, lambda s: json.dumps({**json.loads(s), "__class__": "LogisticRegression",
                                             "__module__": "sklearn.linear_model"}))
    _fails(d, table, tmp_path, "holds a sklearn.linear_model.LogisticRegression (ObjectNode)")


def test_a_deeply_nested_schema_is_refused(models, table, tmp_path):
    d = _copy(models["gaussian"], tmp_path)
    _rewrite_schema(d, lambda s: s[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    _fails(d, table, tmp_path, "nested too deeply")


def test_a_zip_bomb_member_is_refused(models, table, tmp_path):
    """20 MB of zeros deflate to 20 kB: the member is refused from its sizes, before it is unpacked."""
    def edit(det: Any) -> None:
        det.train_ = np.zeros((1_000_000, 4), np.float32)
    d = _copy(models["knn"], tmp_path, edit, compression=zipfile.ZIP_DEFLATED, compresslevel=9)
    assert (d / "model.skops").stat().st_size < 200_000
    _fails(d, table, tmp_path, "bytes (over 100x), refused")


def test_not_a_zip_is_one_line(models, table, tmp_path):
    d = _copy(models["gaussian"], tmp_path)
    (d / "model.skops").write_bytes(b"PK\x03\x04 not really")
    _fails(d, table, tmp_path, "not a skops model file")


def test_model_json_fifo_does_not_hang(models, table, tmp_path):
    d = _copy(models["gaussian"], tmp_path)
    (d / "model.json").unlink()
    os.mkfifo(d / "model.json")
    r = normalcy("predict", str(d), str(table), "-o", str(tmp_path / "out"))
    assert r.returncode == 1 and r.stderr.strip() == f"error: {d}/model.json: not a regular file", r.stderr


def test_model_skops_fifo_is_refused(models, tmp_path):
    d = _copy(models["gaussian"], tmp_path)
    (d / "model.skops").unlink()
    os.mkfifo(d / "model.skops")
    _refused(d, "model.skops: not a regular file")


@pytest.mark.parametrize("name", ["model.json", "model.skops"])
def test_symlink_to_dev_zero_is_refused(name, models, table, tmp_path):
    d = _copy(models["gaussian"], tmp_path)
    (d / name).unlink()
    (d / name).symlink_to("/dev/zero")
    _fails(d, table, tmp_path, f"{name}: a symbolic link to a file outside the model folder, refused")


def test_deeply_nested_model_json_is_one_line(models, table, tmp_path):
    d = _copy(models["gaussian"], tmp_path)
    (d / "model.json").write_text("[" * 100_000 + "]" * 100_000)
    _fails(d, table, tmp_path, "model.json: invalid JSON (nested too deeply)")


@pytest.mark.parametrize("name", ["model.json", "model.skops"])
def test_symlink_out_of_a_vector_model_folder_is_refused(name, models, table, tmp_path):
    """Even to a valid file: the target is not read, so none of it can show up in the error."""
    d = _copy(models["gaussian"], tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (d / name).rename(outside / name)
    (d / name).symlink_to(outside / name)
    line = _fails(d, table, tmp_path, f"{name}: a symbolic link to a file outside the model folder, refused")
    assert "elsewhere" not in line


def test_symlink_out_of_an_image_model_folder_is_refused_without_echoing_the_target(table, tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"format_version": "the-secret-in-a-file-elsewhere"}))
    d = tmp_path / "image_model"
    d.mkdir()
    (d / "model.json").symlink_to(secret)
    line = _fails(d, table, tmp_path, "model.json: a symbolic link to a file outside the model folder, refused")
    assert "secret" not in line


def test_symlinks_within_the_folder_are_followed(models, table, tmp_path):
    d = _copy(models["iforest"], tmp_path)
    (d / "store").mkdir()
    for name in ("model.json", "model.skops"):
        (d / name).rename(d / "store" / name)
        (d / name).symlink_to(Path("store") / name)
    det, meta = load_vector_model(d)
    assert meta.detector == "iforest" and det.n_features_in_ == 4


def test_model_json_kind_must_be_vectors(models, tmp_path):
    d = _copy(models["gaussian"], tmp_path)
    meta = json.loads((d / "model.json").read_text())
    (d / "model.json").write_text(json.dumps({**meta, "kind": "images"}))
    with pytest.raises(InputError, match=r"model.json: kind: input should be 'vectors'"):
        load_vector_model(d)


@pytest.mark.parametrize("name", ["gaussian", "knn", "iforest", "ecod", "ensemble"])
def test_every_fitted_detector_passes_its_own_check(name, models, table):
    det, _ = load_vector_model(models[name])
    det.check_state()
    assert np.isfinite(det.anomaly_score(read_table(table, label_column="y").X)).all()


def _schema_modules(d: Path) -> set[str]:
    with zipfile.ZipFile(d / "model.skops") as z:
        return set(re.findall(r'"__module__": "(normalcy[.\w]*)"', z.read("schema.json").decode()))


@pytest.mark.parametrize("name", ["gaussian", "knn", "iforest", "ecod", "ensemble"])
def test_a_model_saved_before_the_detectors_had_modules_loads(name, models, table, tmp_path):
    """Files saved before the split name each detector normalcy.vectors.X (skops records the class's module):
    they load and score as the same model saved now, which names the detector's own module."""
    assert _schema_modules(models[name]) == {f"normalcy.vectors.{m}" for m in {name, "gaussian", "knn"}
                                             if m == name or name == "ensemble"}
    d = _copy(models[name], tmp_path)
    _rewrite_schema(d, lambda s: re.sub(r'"__module__": "normalcy\.vectors\.\w+"', '"__module__": "normalcy.vectors"', s))
    assert _schema_modules(d) == {"normalcy.vectors"}
    old, _ = load_vector_model(d)
    new, _ = load_vector_model(models[name])
    X = read_table(table, label_column="y").X
    assert type(old) is type(new)
    np.testing.assert_array_equal(old.anomaly_score(X), new.anomaly_score(X))


def test_model_json_counts_the_rows_fitted_and_the_calibration_rows(tmp_path: Path, monkeypatch) -> None:
    """kNN's threshold rests on the leave-one-out scores of a sample of the rows (at most 20,000): fit said,
    and model.json's n_train recorded, that sample's size as the rows fitted. Both now count the rows fitted,
    and the calibration rows are said beside them."""
    import normalcy.vectors.tables as tables
    from normalcy.api import VectorModel
    from normalcy.vectors.knn import KNNDetector

    rng = np.random.default_rng(0)
    path = tmp_path / "t.npz"
    np.savez(path, X=rng.normal(size=(200, 3)))
    t = read_table(path)
    monkeypatch.setattr(tables, "create", lambda name, fpr, seed: KNNDetector(fpr=fpr, max_calibration=50))
    det, _ = fit_table(t, "knn")
    assert VectorModel(det, "knn", t.columns).n_train_ == 200
    save_vector_model(det, "knn", t.columns, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert (meta["n_train"], meta["n_calibration"]) == (200, 50)
    again, loaded = load_vector_model(tmp_path / "m")
    assert again.n_samples_fit_ == 200 and loaded.n_train == 200
    r = CliRunner().invoke(app, ["fit", str(path), "-o", str(tmp_path / "m2"), "--detector", "knn"])
    assert r.exit_code == 0, r.output
    assert ("fitted knn on 200 rows x 3 columns; threshold" in r.output
            and "set on the out-of-sample scores of 50 of the rows" in r.output), r.output
    # a count that does not match the estimator's is refused, naming both counts
    meta["n_train"] = 199
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    _refused(tmp_path / "m", "does not match")


def test_a_model_saved_before_n_calibration_loads(models: dict[str, Path], tmp_path: Path) -> None:
    """Files from before: model.json's n_train counted the calibration scores, the estimator had no
    n_samples_fit_; they load as before."""
    d = _copy(models["knn"], tmp_path, lambda det: delattr(det, "n_samples_fit_"))
    meta = json.loads((d / "model.json").read_text())
    del meta["n_calibration"]
    (d / "model.json").write_text(json.dumps(meta))
    det, loaded = load_vector_model(d)
    assert loaded.n_calibration is None and loaded.n_train == len(det.calibration_scores_) == 200


@pytest.mark.parametrize("value", [1e308, -1.0])
def test_a_threshold_edited_in_model_json_is_refused_naming_both(value: float, models: dict[str, Path],
                                                                  table: Path, tmp_path: Path) -> None:
    """model.json's threshold was never compared with model.skops' (which scoring applies): a hand-edited
    1e308 loaded silently, and no row was flagged by it. The two must agree; the error names both values."""
    d = _copy(models["gaussian"], tmp_path)
    meta = json.loads((d / "model.json").read_text())
    fitted = meta["threshold"]
    meta["threshold"] = value
    (d / "model.json").write_text(json.dumps(meta))
    line = _fails(d, table, tmp_path, f"model.json: threshold {value!r} does not match the threshold {fitted!r} in")
    assert f"{d}/model.skops" in line and "--fpr" in line


def test_fpr_changed_after_fit_is_not_saved_beside_the_old_threshold(table: Path, tmp_path: Path) -> None:
    """``model.estimator.set_params(fpr=0.2)`` after fit, then ``save``: model.json said fpr 0.2 beside the
    threshold set at 0.01 (both files agreed on the threshold, so it loaded and decided at 0.01). Refused; an fpr
    set back saves as fitted."""
    import normalcy

    model = normalcy.fit(table, detector="gaussian", label_column="y", progress=False)
    model.estimator.set_params(fpr=0.2)
    with pytest.raises(InputError, match=r"detector gaussian: fpr is 0.2, but its threshold was set at fpr 0.01 when"):
        model.save(tmp_path / "m")
    assert not (tmp_path / "m").exists()
    model.estimator.set_params(fpr=0.01)
    model.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "model.json").read_text())["fpr"] == 0.01


def test_an_fpr_out_of_range_is_an_input_error(table):
    """As for images and series: a setting the user gave wrong is one line, not a ValueError traceback."""
    with pytest.raises(InputError, match=r"detector knn: KNNDetector\.fpr must be .* \(got 1\.5\)"):
        fit_table(read_table(table, label_column="y"), "knn", fpr=1.5)


def test_a_save_a_full_disk_stopped_leaves_the_earlier_model(models: dict[str, Path], table: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk while model.skops was written over an earlier model left half a file beside the earlier
    model.json (the earlier model lost); now the earlier model is as it was and no temporary file is left."""
    d = tmp_path / "m"
    shutil.copytree(models["gaussian"], d)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    det, _ = fit_table(read_table(table, label_column="y"), "knn")
    real = sio.dump

    def dump(obj: Any, file: Any, **kwargs: Any) -> None:
        real(obj, file, **kwargs)
        with open(file, "r+b") as fh:
            fh.truncate(100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sio, "dump", dump)
    with pytest.raises(OSError):
        save_vector_model(det, "knn", ["x0", "x1", "x2", "x3"], d)
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    assert load_vector_model(d)[1].detector == "gaussian"


def test_a_vector_model_loaded_while_another_process_saves_over_it_is_one_model(table: Path, tmp_path: Path,
                                                                                  monkeypatch) -> None:
    """A load that read model.json just before another fit saved over the folder then read the new
    model.skops: "threshold ... does not match" of a model no one had edited (or, another detector's, a model
    neither fit made). The load reads both under a shared lock that the save waits for."""
    import threading

    import normalcy.vectors.tables as tables

    t = read_table(table, label_column="y")
    first, _ = fit_table(t, "gaussian", fpr=0.01)
    second, _ = fit_table(t, "gaussian", fpr=0.2)
    d = tmp_path / "m"
    save_vector_model(first, "gaussian", t.columns, d)
    real, saver = tables.read_model_file, []

    def between(path, max_bytes):  # model.json read, model.skops not yet: another process saves now
        saver.append(threading.Thread(target=save_vector_model, args=(second, "gaussian", t.columns, d)))
        saver[0].start()
        saver[0].join(0.5)  # a save that waits for the reader is still waiting
        return real(path, max_bytes)

    monkeypatch.setattr(tables, "read_model_file", between)
    det, meta = load_vector_model(d)
    saver[0].join()
    assert meta.threshold == threshold_of(det) == threshold_of(first)
    monkeypatch.setattr(tables, "read_model_file", real)
    assert load_vector_model(d)[1].threshold == threshold_of(second)


def test_a_column_named_twice_in_model_json_is_refused(models: dict[str, Path], table: Path, tmp_path: Path) -> None:
    """columns ["x0", "x0", "x1", "x2"] in an edited model.json loaded (the count matched the estimator's), and
    predict then scored the table's x0 in two places and x3 nowhere, without a word. Fit never writes one."""
    d = _copy(models["knn"], tmp_path)
    meta = json.loads((d / "model.json").read_text())
    (d / "model.json").write_text(json.dumps({**meta, "columns": ["x0", "x0", "x1", "x2"]}))
    _fails(d, table, tmp_path, "model.json: column 'x0' is named twice in columns")


def test_a_model_file_is_read_without_asking_for_its_size_limit_in_memory(tmp_path: Path) -> None:
    """read_model_file read with f.read(max_bytes + 1), which allocates that much first: 16 GiB for each 1 kB
    model.skops, a MemoryError (a traceback) under ulimit -v or on a machine that does not overcommit. It asks for
    the file's size; the limit still holds."""
    from normalcy.errors import InputError
    from normalcy.files import read_model_file

    (tmp_path / "model.skops").write_bytes(b"x" * 1000)
    assert read_model_file(tmp_path / "model.skops", 2**42) == b"x" * 1000  # a limit far beyond any memory
    assert read_model_file(tmp_path / "model.skops", 1000) == b"x" * 1000
    with pytest.raises(InputError, match=r"model\.skops: 1000 bytes is too large for a model file \(at most 999\)"):
        read_model_file(tmp_path / "model.skops", 999)


@pytest.mark.parametrize("field", ["detector", "columns"])
def test_a_very_long_string_in_model_json_is_not_echoed_whole(field: str, models: dict[str, Path],
                                                              tmp_path: Path) -> None:
    """A model.json's detector (or a column named twice) crafted to 100 kB was repeated whole in the error."""
    d = _copy(models["knn"], tmp_path)
    meta = json.loads((d / "model.json").read_text())
    meta[field] = "x" * 100_000 if field == "detector" else ["x" * 100_000] * 2
    (d / "model.json").write_text(json.dumps(meta))
    assert len(_refused(d, "'xxx")) < 1000
