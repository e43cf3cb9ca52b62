"""The Python API given what it does not take: an fpr outside (0, 1), complex numbers, a list of arrays for
several series, and arguments of the wrong type; each a clear error naming the argument, never one from deep
inside."""

from __future__ import annotations

import re

import numpy as np
import pytest

from normalcy.errors import InputError

FPR_RANGE = r"fpr must be a number between 0 and 1, both excluded \(got nan\)"


@pytest.mark.parametrize("name", ["pca", "knn", "auto"])
def test_a_series_detectors_fpr_of_nan_says_the_range(name: str) -> None:
    """``create("pca", fpr=nan)`` said "fpr: input should be less than 1 (got NaN)" (NaN fails every comparison)."""
    from normalcy.series.registry import create

    with pytest.raises(InputError, match=f"^detector {name}: {FPR_RANGE}$"):
        create(name, fpr=float("nan"))


def test_an_image_detectors_fpr_out_of_range_says_the_range() -> None:
    from normalcy.detectors.registry import create

    with pytest.raises(InputError, match=f"^detector gaussian: {FPR_RANGE}$"):
        create("gaussian", fpr=float("nan"))
    with pytest.raises(InputError, match=r"detector patchcore: fpr must be .* excluded \(got inf\)"):
        create("patchcore", fpr=float("inf"))


def test_python_calls_name_the_argument_not_the_command_line_option(tmp_path) -> None:
    """``normalcy.fit(..., fpr=2)`` said "--fpr must be ...", naming an option Python has not; the CLI keeps it."""
    import normalcy
    from normalcy.cli import app
    from typer.testing import CliRunner

    table = tmp_path / "rows.csv"
    table.write_text("a,b\n1,2\n3,4\n5,6\n")
    with pytest.raises(InputError, match=r"^fpr must be a number between 0 and 1, both excluded \(got 2\)$"):
        normalcy.fit(tmp_path / "none", fpr=2)
    with pytest.raises(InputError, match=r"^window applies to series only"):
        normalcy.fit(table, window=8)
    with pytest.raises(InputError, match=r"^event_gap applies to series only"):
        normalcy.fit(table, event_gap=3)
    with pytest.raises(InputError, match=r"^time_column, series_column and stream apply to series models"):
        normalcy.predict(table, [table], tmp_path / "run", stream=True)
    with pytest.raises(InputError, match=r"^tune applies to images only"):
        normalcy.fit(table, tune=True)
    r = CliRunner().invoke(app, ["fit", str(table), "-o", str(tmp_path / "m"), "--window", "8"])
    assert r.exit_code == 1 and "--window applies to series only" in r.output, r.output


def test_an_fpr_past_a_floats_range_says_the_range() -> None:
    """``fpr=10**400`` raised OverflowError while its own message was being built."""
    import normalcy

    with pytest.raises(InputError, match=r"^fpr must be a number between 0 and 1, both excluded \(got 1e\+400\)$"):
        normalcy.fit("none", fpr=10**400)
    with pytest.raises(InputError, match=r"\(got -1e\+400\)$"):
        normalcy.fit("none", fpr=-(10**400))


@pytest.mark.parametrize("name", ["gaussian", "knn", "iforest", "ecod", "ensemble"])
def test_a_vector_detectors_fpr_of_nan_says_the_range(name: str) -> None:
    """As the command line says it; a value that is no number is still named by its type."""
    from normalcy.vectors.registry import VECTOR_DETECTORS, create

    with pytest.raises(InputError, match=f"^detector {name}: {VECTOR_DETECTORS[name].__name__}.{FPR_RANGE}$"):
        create(name, float("nan"), 0)
    with pytest.raises(ValueError, match=r"\.fpr must be a number between 0 and 1, both excluded \(got 2\)"):
        VECTOR_DETECTORS[name](fpr=2).fit(np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"expected a finite number in \(0\.0, 1\.0\), got None"):
        VECTOR_DETECTORS[name](fpr=None).fit(np.zeros((5, 2)))


COMPLEX = "complex numbers, and a detector takes real ones"


@pytest.mark.parametrize("name", ["gaussian", "knn", "iforest", "ecod", "ensemble"])
def test_complex_rows_are_refused_by_a_vector_detector(name: str) -> None:
    """scikit-learn said "Complex data not supported" followed by the whole array, for fit and score alike."""
    from normalcy.vectors.registry import VECTOR_DETECTORS

    X = np.random.default_rng(0).normal(size=(30, 2))
    with pytest.raises(InputError, match=f"{VECTOR_DETECTORS[name].__name__}: the values are complex128.*{COMPLEX}"):
        VECTOR_DETECTORS[name]().fit(X + 1j)
    with pytest.raises(InputError, match=COMPLEX):
        VECTOR_DETECTORS[name]().fit(X).anomaly_score(X[:3] + 1j)


def test_a_complex_series_is_refused_not_cut_to_its_real_part(recwarn: pytest.WarningsRecorder) -> None:
    """numpy dropped the imaginary part with only a ComplexWarning: the series was fitted and scored on its real
    part. An array, a list, a DataFrame's column and a streamed row are refused, each named."""
    import pandas as pd

    from normalcy.series.registry import create

    x = np.sin(np.arange(300) / 5)
    with pytest.raises(InputError, match=f"^array: the values are complex128.*{COMPLEX}"):
        create("knn", window=10).fit(x + 1j, progress=False)
    with pytest.raises(InputError, match=f"^DataFrame column\\(s\\) 'b' hold {COMPLEX}"):
        create("knn", window=10).fit(pd.DataFrame({"a": x, "b": x + 1j}), progress=False)
    det = create("knn", window=10).fit(x, progress=False)
    with pytest.raises(InputError, match=f"^array: .*{COMPLEX}"):
        det.score(list(x + 1j))
    with pytest.raises(InputError, match=f"^row: .*{COMPLEX}"):
        det.partial_fit(np.array([1 + 1j]))
    assert not [w for w in recwarn if "complex" in str(w.message).lower()]


def test_image_arrays_of_the_wrong_dtype_are_named_at_fit() -> None:
    """A complex (or float) image array was "none of the 6 training files could be read as an image", its
    reason lost inside the fit."""
    from normalcy.detectors.registry import create

    images = np.zeros((6, 32, 32, 3), complex)
    with pytest.raises(InputError, match=r"^image 0: expected an H x W x 3 uint8 array, got complex128"):
        create("gaussian").fit(images, progress=False)


def test_a_list_of_arrays_for_several_series_says_what_fit_takes() -> None:
    """The docs promise a list of Series or DataFrames, not of arrays: numpy read two series of 300 values as two
    rows ("array: 2 row(s); a series needs at least 16"). A list of rows as arrays is read as before."""
    import pandas as pd

    from normalcy.series.registry import create

    x = np.sin(np.arange(300) / 5)
    for data in ([x, x], [x, x[:200]], [x[:, None], x[:, None]]):
        with pytest.raises(InputError, match=r"^a list of 2 arrays is not read as 2 series: .*pandas\.DataFrame\(a\)"):
            create("knn", window=10).fit(data, progress=False)
    assert create("knn", window=10).fit([pd.DataFrame(x), pd.DataFrame(x[:200])], progress=False).n_train_ == 500
    rows = [np.array([v, 2 * v]) for v in x]  # 300 rows of 2 columns
    assert create("knn", window=10).fit(rows, progress=False).columns_ == ("x0", "x1")
    numbers = list(x)  # numpy float64s, shape (): one series' values, refused as "a list of 300 arrays"
    assert create("knn", window=10).fit(numbers, progress=False).n_train_ == 300


def test_api_arguments_of_the_wrong_type_are_named(tmp_path) -> None:
    """None, a number, an array or a DataFrame where a path belongs was pathlib's "expected str, bytes or
    os.PathLike object, not int", "'NoneType' object is not iterable" or an AttributeError from deep inside
    (a column name given as a number): each is now an error naming the argument, before any file is read."""
    import io

    import pandas as pd

    from normalcy import api
    from normalcy.series.registry import create

    series_model = create("knn", window=10).fit(np.sin(np.arange(300) / 5), progress=False)
    arr, df, csv = np.zeros(3), pd.DataFrame({"a": [1.0]}), tmp_path / "t.csv"
    csv.write_text("a,b\n1,2\n3,4\n")
    cases = [
        (lambda: api.fit(None), InputError, r"^fit takes a path or a list of paths .*got NoneType"),
        (lambda: api.fit(5), InputError, r"^fit takes a path or a list of paths .*got int"),
        (lambda: api.fit(csv, 5), TypeError, r"^output must be a model folder's path .*got int"),
        (lambda: api.fit(csv, label_column=5), TypeError, r"^label_column must be a column name .*got int"),
        (lambda: api.fit(csv, time_column=5), TypeError, r"^time_column must be a column name"),
        (lambda: api.predict(tmp_path / "m", csv, None), TypeError, r"^output must be a run folder's path .*None"),
        (lambda: api.predict(tmp_path / "m", None), InputError, r"^predict takes a path .*got NoneType"),
        (lambda: api.predict(tmp_path / "m", csv, tmp_path / "r", top="5"), TypeError, r"^top must be a whole"),
        (lambda: api.predict(tmp_path / "m", csv, tmp_path / "r", id_column=1), TypeError, r"^id_column must be"),
        (lambda: api.evaluate(df), TypeError, r"^dataset must be the path of a data set.*got DataFrame; data in"),
        (lambda: api.evaluate(None), TypeError, r"^dataset must be .*got NoneType"),
        (lambda: api.evaluate(csv, label_column=5), TypeError, r"^label_column must be a column name"),
        (lambda: api.evaluate(csv, label_column="b", test=5), TypeError, r"^test must be a labelled table's path"),
        (lambda: api.evaluate(tmp_path, report=arr), TypeError, r"^report must be an HTML file's path .*ndarray"),
        (lambda: api.load(arr), TypeError, r"^path must be a model folder's or a \.onnx file's path .*ndarray"),
        (lambda: api.load(None), TypeError, r"^path must be .*got NoneType"),
        (lambda: api.export(5, tmp_path / "x.onnx"), TypeError, r"^model_dir must be a model folder's path .*int"),
        (lambda: api.export(tmp_path / "m", None), TypeError, r"^output must be an ONNX file's path .*NoneType"),
        (lambda: api.export(tmp_path / "m", tmp_path / "x.onnx", "int8", 5), TypeError, r"^calibration must be"),
        (lambda: api.watch(arr, io.StringIO("")), TypeError, r"^model must be a series model's folder .*ndarray"),
        (lambda: api.watch(series_model, df), TypeError, r"^source must be a CSV file's path .*DataFrame"),
        (lambda: api.watch(tmp_path / "m", csv, out=tmp_path / "o.csv"), TypeError, r"^out must be an open text"),
        (lambda: api.watch(tmp_path / "m", csv, time_column=5), TypeError, r"^time_column must be a column name"),
        (lambda: api.score_batch(tmp_path, None), TypeError, r"^output must be a run folder's path .*NoneType"),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind, match=message):
            call()


def test_a_model_folder_given_as_data_is_named(tmp_path) -> None:
    """A model folder given to fit as its training folder was read as images ("gaussian needs at least 5 normal
    training images, got 2"), and to evaluate as a data set was "training folder not found"."""
    from normalcy import api

    (tmp_path / "m").mkdir()  # what the check reads of a model folder (fit writes more)
    (tmp_path / "m" / "model.json").write_text('{"format_version": 1, "normalcy_version": "0.1.0"}')
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(InputError, match=r"m: is a model folder \(written by fit\), not data: fit reads normal images"):
        api.fit(tmp_path / "m", progress=False)
    with pytest.raises(InputError, match=r"m: is a model folder .*: eval reads a labelled data set"):
        api.evaluate(tmp_path / "m", progress=False)


def test_python_calls_name_the_argument_in_the_remaining_messages(tmp_path) -> None:
    """``export(..., precision="int8")`` said "--precision int8 needs --calibration DIR", ``watch(idle=30)``
    "--idle applies with --follow", ``predict(..., embeddings=False)`` "--no-embeddings does not apply": options
    Python has not. Each now names the argument as a Python call writes it; the command line keeps its options."""
    from normalcy import api
    from normalcy.cli import app
    from normalcy.errors import cli_wording
    from normalcy.evaluation.validation import tune_candidates
    from normalcy.scale.distributed import _probe
    from typer.testing import CliRunner

    table, model, out = tmp_path / "rows.csv", tmp_path / "table_model", tmp_path / "out"
    table.write_text("a,b\n" + "".join(f"{i % 7},{i % 5}\n" for i in range(40)))
    api.fit(table, model, progress=False)
    series = tmp_path / "series"
    series.mkdir()
    for name in ("train.csv", "test.csv"):
        (series / name).write_text("timestamp,x\n" + "".join(f"{i},{i % 9}\n" for i in range(200)))
    cases = [  # (the Python call, its message, the command line, its message)
        (lambda: api.export(tmp_path / "m", tmp_path / "m.onnx", precision="int8"),
         "precision='int8' needs calibration: normal images",
         ["export", tmp_path / "m", "-o", tmp_path / "m.onnx", "--precision", "int8"],
         "--precision int8 needs --calibration DIR: normal images"),
        (lambda: api.export(tmp_path / "m", tmp_path / "m.onnx", calibration=tmp_path),
         "calibration applies to precision='int8': an fp32 graph",
         ["export", tmp_path / "m", "-o", tmp_path / "m.onnx", "--calibration", tmp_path],
         "--calibration applies to --precision int8: an fp32 graph"),
        (lambda: api.export(tmp_path / "m", tmp_path / "m.onnx", precision="int8", calibration=tmp_path / "no"),
         "calibration: folder not found",
         ["export", tmp_path / "m", "-o", tmp_path / "m.onnx", "--precision", "int8", "--calibration", tmp_path / "no"],
         "--calibration: folder not found"),
        (lambda: api.watch(model, table, idle=30), "idle applies with follow=True; without it",
         ["watch", model, table, "--idle", "30"], "--idle applies with --follow; without it"),
        (lambda: api.predict(model, table, out, embeddings=False), "embeddings=False does not apply to a table's",
         ["predict", model, table, "-o", out, "--no-embeddings"], "--no-embeddings does not apply to a table's"),
        (lambda: api.fit(table, ray="local"), "ray on fit: for many series (series_column, or a folder",
         ["fit", table, "-o", out, "--ray", "local"], "--ray on fit: for many series (--series-column, or a folder"),
        (lambda: api.fit(table, series=False, time_column="a"), "series=False with time_column or series_column",
         ["fit", table, "-o", out, "--table", "--time-column", "a"], "--table with --time-column or --series-column"),
        (lambda: api.score_batch([table], out, input_norm="auto"), "input_norm='auto' and tune choose on",
         ["score-batch", table, "-o", out, "--input-norm", "auto"], "--input-norm auto and --tune choose on"),
        (lambda: api.evaluate(series), "(1 inside a labelled anomaly; label_column names another)",
         ["eval", series], "(1 inside a labelled anomaly; --label-column names another)"),
    ]
    for call, message, args, cli_message in cases:
        with pytest.raises(InputError) as err:
            call()
        assert message in str(err.value) and "--" not in str(err.value).replace(str(tmp_path), ""), str(err.value)
        r = CliRunner().invoke(app, [str(a) for a in args])
        assert r.exit_code == 1 and cli_message in r.output, r.output
    assert not out.exists()
    for call, message, cli_message in [  # no command line reaches these cheaply (or at all): the CLI's wording
        (lambda: api.fit([table], series=True), "series=True needs one .csv or .parquet file or a series folder, not "
         "a list of 1 path(s)", "--series needs one"),
        (lambda: _probe("nowhere"), "ray='nowhere': expected local", "--ray nowhere: expected local"),
        (lambda: tune_candidates("colour", None, "gaussian", []), "tune: 'colour' is not one of",
         "--tune: 'colour' is not one of"),
    ]:
        with pytest.raises(InputError, match=f"^{re.escape(message)}"):
            call()
        with cli_wording(), pytest.raises(InputError, match=f"^{re.escape(cli_message)}"):
            call()


def test_python_calls_name_the_argument_in_the_last_messages(tmp_path) -> None:
    """``evaluate(table, stream=True)`` said "--stream replays series", ``watch(..., learn=False, save=...)``
    "with --no-learn", ``fit(table, output=a_file)`` "choose another --output", and likewise for eval's
    ``time_column``, ``label_column`` and ``report``, fit's ``series_column`` and watch of a Parquet file: options
    Python has not. Each now names the argument as a Python call writes it; the command line keeps its options."""
    from normalcy import api
    from normalcy.cli import app
    from normalcy.errors import cli_wording
    from normalcy.series.runs import time_hint
    from typer.testing import CliRunner

    table, out, report = tmp_path / "rows.csv", tmp_path / "out", tmp_path / "r.html"
    table.write_text("a,b\n" + "".join(f"{i % 7},{i % 5}\n" for i in range(40)))
    series, model, saved = tmp_path / "series", tmp_path / "series_model", tmp_path / "saved"
    series.mkdir()
    for name in ("train.csv", "test.csv"):
        (series / name).write_text("timestamp,x\n" + "".join(f"{i},{i % 9}\n" for i in range(200)))
    api.fit(series / "train.csv", model, detector="knn", window=8, progress=False)
    (tmp_path / "x.parquet").write_bytes(b"")
    cases = [  # (the Python call, its message, the command line, its message)
        (lambda: api.evaluate(table, stream=True), "stream=True replays series; this is not a series folder",
         ["eval", table, "--stream"], "--stream replays series; this is not a series folder"),
        (lambda: api.evaluate(table, time_column="a"), "time_column: eval takes series as series folders",
         ["eval", table, "--time-column", "a"], "--time-column: eval takes series as series folders"),
        (lambda: api.evaluate(table), "eval on a table needs label_column (0 normal, 1 anomaly)",
         ["eval", table], "eval on a table needs --label-column (0 normal, 1 anomaly)"),
        (lambda: api.evaluate(table, report=report), "report is the report of an image evaluation; this one would "
         "not be written (a table's evaluation has no HTML report: its metrics are what evaluate returns)",
         ["eval", table, "--report", report], "--report is the report of an image evaluation; this one would not "
         "be written (a table's evaluation has no HTML report: its metrics are printed, all of them with --json)"),
        (lambda: api.fit(table, table), "not a folder (a model is a folder of files): choose another output",
         ["fit", table, "-o", table], "not a folder (a model is a folder of files): choose another --output"),
        (lambda: api.fit(table, window=8), "window applies to series only (a file with a time column, or "
         "series=True)", ["fit", table, "-o", out, "--window", "8"], "--window applies to series only (a file "
         "with a time column, or --series)"),
        (lambda: api.fit(series, out, series_column="host"), "series_column names the column of a file holding "
         "many series", ["fit", series, "-o", out, "--series-column", "host"], "--series-column names the column "
         "of a file holding many series"),
        (lambda: api.watch(model, table, learn=False, save=saved), "with learn=False the model learns nothing",
         ["watch", model, table, "--no-learn", "--save", saved], "with --no-learn the model learns nothing"),
        (lambda: api.watch(model, tmp_path / "x.parquet"), "`normalcy predict` (stream=True to replay it",
         ["watch", model, tmp_path / "x.parquet"], "`normalcy predict` (--stream to replay it"),
        (lambda: api.export(tmp_path / "m", tmp_path / "folder_as_output"), "a folder; output names the ONNX file",
         ["export", tmp_path / "m", "-o", tmp_path / "folder_as_output"], "a folder; --output names the ONNX file"),
    ]
    (tmp_path / "folder_as_output").mkdir()
    for call, message, args, cli_message in cases:
        with pytest.raises(InputError) as err:
            call()
        said = " ".join(str(err.value).split())
        assert message in said and "--" not in said.replace(str(tmp_path), ""), said
        r = CliRunner().invoke(app, [str(a) for a in args])
        assert r.exit_code == 1 and cli_message in " ".join(r.output.split()), r.output
    assert not out.exists() and not saved.exists()
    assert time_hint(None) == " (if one is the time, give time_column)"  # the series reader's notes
    with cli_wording():
        assert time_hint(None) == " (if one is the time, give --time-column)"
