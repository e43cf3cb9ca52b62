"""The bench/ scripts that docs/benchmarks.md names: each runs as written (its --help, its smallest run on tiny
synthetic data), and says what is missing instead of a traceback."""

from __future__ import annotations

import runpy
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, bench_module


def test_hypad_uncertainty_scores_the_cross_fitted_twin() -> None:
    """bench/hypad_uncertainty.py scored the cross-fitted twin on raw rows, and the twin had no ``flags_``
    (``_twin`` copies the standardisation only): every run failed with AttributeError on its first series."""
    hypad = bench_module("hypad_uncertainty")
    rng = np.random.default_rng(0)
    t = np.arange(600)[:, None]
    values = np.sin(2 * np.pi * t / 40) + 0.05 * rng.standard_normal((600, 1))
    labels = np.zeros(200, dtype=np.int8)
    labels[100:110] = 1
    scored, _ = hypad.fit_and_score("s", values[:400], values[400:], labels, slice(None),
                                    {"steps": 10, "window": 20})
    assert set(scored.scores) == set(hypad.WAYS) and all(len(s) == 200 for s in scored.scores.values())


@pytest.mark.parametrize("name", ["ensemble_proxies", "musc_ablation", "musc_ceiling"])
def test_help_prints_usage(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                           capsys: pytest.CaptureFixture) -> None:
    """--help of these scripts raised KeyError('--help') (ensemble_proxies, which took it for a proxy) or ran the
    whole benchmark (the MuSc ones, 6 to 15 minutes; without the data, "not found")."""
    module = bench_module(name)
    if hasattr(module, "DATA"):
        monkeypatch.setattr(module, "DATA", tmp_path / "absent")  # were --help ignored: a quick failure, no run
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--help"])
    with pytest.raises(SystemExit) as exit:
        module.main()
    assert exit.value.code == 0 and "usage:" in capsys.readouterr().out


def test_ensemble_proxies_names_an_unknown_proxy(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(sys, "argv", ["ensemble_proxies.py", "elpv-logicl"])
    with pytest.raises(SystemExit) as exit:
        bench_module("ensemble_proxies").main()
    assert exit.value.code == 2 and "unknown proxy 'elpv-logicl': choose from" in capsys.readouterr().err


def test_review_screenshot_help_and_a_missing_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    """--help exited 1 with a one-line usage; a missing run folder ended in an InputError traceback."""
    script = str(ROOT / "bench" / "review_screenshot.py")
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    with pytest.raises(SystemExit) as exit:
        runpy.run_path(script, run_name="__main__")
    assert exit.value.code == 0 and "RUN_DIR" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", [script, str(tmp_path / "no-run"), str(tmp_path / "x.png")])
    with pytest.raises(SystemExit) as exit:
        runpy.run_path(script, run_name="__main__")
    assert exit.value.code == f"error: run folder not found: {tmp_path / 'no-run'}"


def _run_script(name: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> SystemExit:
    """bench/NAME.py run as `python bench/NAME.py ARGV` in this process; the SystemExit it ended with."""
    script = str(ROOT / "bench" / f"{name}.py")
    monkeypatch.setattr(sys, "argv", [script, *argv])
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # as python puts a script's folder first: bench/ imports by name
    with pytest.raises(SystemExit) as exit:
        runpy.run_path(script, run_name="__main__")
    return exit.value


@pytest.mark.parametrize(("name", "flag"), [("export_parity", "--data"), ("map_models", None),
                                            ("map_validation", None), ("patchcore_bank", "--data"),
                                            ("patchcore_pq", "--data"), ("predict_embeddings", "--data"),
                                            ("read_overlap", "--data"), ("settings_study", "--data"),
                                            ("throughput", "--data")])
def test_a_missing_data_set_is_one_line(name: str, flag: str | None, monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    """Without the data set (../shared/data by default) these scripts ended in an InputError traceback."""
    missing = tmp_path / "magnetic_tile"
    exit = _run_script(name, [flag, str(missing)] if flag else [str(missing)], monkeypatch)
    assert exit.code == f"error: dataset folder not found: {missing}"


def test_highres_names_a_missing_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    exit = _run_script("highres", ["--source", str(tmp_path / "none"), "--workdir", str(tmp_path / "w")], monkeypatch)
    assert exit.code == 2 and f"--source {tmp_path / 'none'}: no such folder" in capsys.readouterr().err


def test_proxies_without_their_data_set_say_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """bench/dev_proxies.py (and ensemble_proxies.py, which builds the same proxies) without
    ../shared/data/magnetic_tile: a FileNotFoundError traceback."""
    dev = bench_module("dev_proxies")
    monkeypatch.setattr(dev, "DATA", tmp_path)
    with pytest.raises(SystemExit, match="magnetic_tile/train/good not found: the magnetic_tile-logical proxy"):
        dev.PROXIES["magnetic_tile-logical"][0](tmp_path / "out")


def test_scripts_without_input_files_say_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """knn_pq (IndexError), png_decoders (IndexError) and png_encoders (ZeroDivisionError) on a folder without
    their files; run_eval printed an empty table and exited 0 when every data set was missing."""
    assert "no .npz files in" in str(_run_script("knn_pq", ["--data", str(tmp_path)], monkeypatch).code)
    assert "no test/*/*.png or .jpg under" in str(_run_script("png_decoders", ["--source", str(tmp_path)],
                                                              monkeypatch).code)
    png = bench_module("png_encoders")
    monkeypatch.setattr(png, "DATA", tmp_path)
    with pytest.raises(SystemExit, match="no test images under"):
        png.pictures("hazelnut_toy", None)
    exit = _run_script("run_eval", ["--data", str(tmp_path), "--out", str(tmp_path / "r.jsonl")], monkeypatch)
    assert str(exit.code).startswith("no data set to run: none of magnetic_tile, hazelnut_toy under")


def test_tune_budget_shows_evals_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed `normalcy eval` ended in a CalledProcessError traceback that hid eval's own error line."""
    import subprocess

    tune = bench_module("tune_budget")
    failed = subprocess.CompletedProcess([], 1, stdout="", stderr="error: dataset folder not found: /x\n")
    monkeypatch.setattr(tune.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(SystemExit, match=r"failed: .* eval /x --detector gaussian --json\nerror: dataset folder"):
        tune.run(Path("/x"), "gaussian", [])


def _tiny_asd(root: Path, n: int = 2) -> Path:
    """ASD's layout: server folders with train.csv and test.csv (timestamp, metrics, label in test)."""
    rng = np.random.default_rng(0)
    for i in range(1, n + 1):
        (root / "asd" / f"omi-{i}").mkdir(parents=True)
        for part, rows in (("train", 400), ("test", 200)):
            t = np.arange(rows)
            values = np.column_stack([np.sin(t / 7), np.cos(t / 5)]) + 0.05 * rng.standard_normal((rows, 2))
            label = ((t > 100) & (t < 110)).astype(int) if part == "test" else None
            if label is not None:
                values[label == 1] += 3
            lines = ["timestamp,m0,m1" + (",label" if part == "test" else "")]
            lines += [f"{k},{a:.4f},{b:.4f}" + (f",{label[k]}" if part == "test" else "") for k, (a, b) in
                      zip(t, values)]
            (root / "asd" / f"omi-{i}" / f"{part}.csv").write_text("\n".join(lines) + "\n")
    return root


def test_series_peers_refuses_what_would_fail_every_series(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    """Without tsb-ad, every series of every method failed on VUS-PR (or the first peer raised an ImportError
    traceback) and the tables showed zeros; a misspelt --peers name ran no peer without a word; a missing set's
    folder was a FileNotFoundError traceback, after the sets before it had run."""
    peers = bench_module("series_peers")
    with pytest.raises(SystemExit) as exit:
        peers.main(["--data", str(tmp_path), "--sets", "asd", "--peers", "pca"])
    assert exit.value.code == 2 and "unknown TSB-AD detector 'pca'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "TSB_AD", None)  # not installed
    with pytest.raises(SystemExit, match="need tsb-ad: pip install --no-deps tsb-ad==1.5"):
        peers.main(["--data", str(tmp_path), "--sets", "asd", "--ours", "knn", "--peers", "none"])
    with pytest.raises(SystemExit, match=r"nab not found \(--data DIR holds nab/ and asd/"):
        peers.main(["--data", str(_tiny_asd(tmp_path)), "--sets", "asd,nab", "--peers", "none", "--no-vus"])


def test_series_peers_title_counts_the_series_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """With --limit 1 the ASD table's title said "12 servers"."""
    peers = bench_module("series_peers")
    peers.main(["--data", str(_tiny_asd(tmp_path)), "--sets", "asd", "--ours", "knn", "--peers", "none",
                "--no-vus", "--limit", "1"])
    out = capsys.readouterr().out
    assert "## ASD (1 servers, fit on train.csv" in out and "| ours: knn |" in out


@pytest.mark.parametrize(("name", "said"), [("series_fpr", "not a series folder"),
                                            ("series_stream", "not a NAB folder"), ("nab", "not a NAB folder"),
                                            ("nab_categories", "not a NAB folder")])
def test_a_missing_series_folder_is_one_line(name: str, said: str, monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    """`python bench/nab.py ../shared/data/nab` (and the other series scripts) on a folder that is not there
    ended in an InputError traceback."""
    exit = _run_script(name, [str(tmp_path / "none")], monkeypatch)
    assert str(exit.code).startswith(f"error: {tmp_path / 'none'}: {said}")


def test_hypad_uncertainty_refuses_an_unknown_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    """--sets foo ran nothing and printed {"params": {}}, exit 0; a missing asd/ was an InputError traceback."""
    assert _run_script("hypad_uncertainty", [str(tmp_path), "--sets", "ASD"], monkeypatch).code == 2
    assert "--sets: unknown data set 'ASD' (asd, nab)" in capsys.readouterr().err
    exit = _run_script("hypad_uncertainty", [str(tmp_path), "--sets", "asd"], monkeypatch)
    assert str(exit.code).startswith(f"error: {tmp_path / 'asd'}: not a series folder")


def test_adbench_without_pyod_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """PyOD is an optional peer (the bench extra): without it the script ended in a ModuleNotFoundError."""
    adbench = bench_module("adbench")
    monkeypatch.setitem(sys.modules, "pyod", None)
    monkeypatch.setitem(sys.modules, "pyod.models.ecod", None)
    with pytest.raises(SystemExit, match=r'PyOD, not installed: pip install -c constraints.txt -e "\.\[bench\]"'):
        adbench.methods(1)


def test_adbench_only_matching_nothing_says_so(tmp_path: Path) -> None:
    (tmp_path / "Classical").mkdir()
    np.savez(tmp_path / "Classical" / "29_Pima.npz", X=np.zeros((4, 2)), y=np.zeros(4))
    with pytest.raises(SystemExit, match="whose name contains 'nonesuch'"):
        bench_module("adbench").run(tmp_path, [1], "nonesuch")


@pytest.mark.parametrize("name", ["series_scale", "scale_vectors"])
def test_ray_scripts_without_ray_say_so_first(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without Ray (an optional extra) these timed the one-process row, then ended in an InputError traceback."""
    monkeypatch.setitem(sys.modules, "ray", None)
    exit = _run_script(name, ["--workdir", str(tmp_path / "w"), "--rows", "10"], monkeypatch)
    assert exit.code == f"bench/{name}.py times a local Ray too: pip install 'normalcy[ray]' (with -c constraints.txt)"
    assert not (tmp_path / "w").exists()  # nothing written, nothing timed


def test_anomalib_peer_passes_absolute_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`--datasets some/folder` (a path relative to the caller's folder) went as it was to `normalcy eval`, run
    from the repo root, and to anomalib's worker, run in a temporary folder: neither found it."""
    peer = bench_module("anomalib_peer")
    (tmp_path / "mine" / "train" / "good").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    path, extra = peer.dataset_path("mine", tmp_path / "built")
    assert path == tmp_path / "mine" and path.is_absolute() and extra == []
    def refuse(venv: Path) -> None:
        raise SystemExit(str(venv))

    monkeypatch.setattr(peer, "check_venv", refuse)  # the venv as the workers would be given it
    monkeypatch.setattr(sys, "argv", ["anomalib_peer.py", "--venv", "venv"])
    with pytest.raises(SystemExit, match=f"^{tmp_path / 'venv'}$"):
        peer.main()


def test_failed_children_show_their_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """musc_scaling.py --sizes 5000 ended in a CalledProcessError traceback that hid the child's own line ("only
    1736 images available"); review_simulation's failed `normalcy` step ended in one after its error."""
    import subprocess

    musc = bench_module("musc_scaling")
    monkeypatch.setattr(musc, "DATA", tmp_path)
    failed = subprocess.CompletedProcess([], 1, stdout="", stderr="only 1736 images available, asked for 5000\n")
    monkeypatch.setattr(musc.subprocess, "run", lambda *a, **k: failed)
    monkeypatch.setattr(sys, "argv", ["musc_scaling.py", "--sizes", "5000"])
    with pytest.raises(SystemExit, match=r"failed \(1\): .* --one 5000 .*\nonly 1736 images available"):
        musc.main()
    sim = bench_module("review_simulation")
    monkeypatch.setattr(sim.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(SystemExit, match=r"^failed: .* -m normalcy.cli fit x$"):
        sim.cli("fit", "x")


def test_settings_study_names_an_unknown_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    """`--only Lite2` (a label's middle, not its start) matched no setting: after building the synthetic split and
    the elpv sets (minutes) it ended in max()'s ValueError; beside a label that matched, it was dropped unsaid."""
    exit = _run_script("settings_study", ["--detector", "gaussian", "--data", str(tmp_path / "none"),
                                          "--only", "default", "Lite2"], monkeypatch)
    err = capsys.readouterr().err
    assert exit.code == 2 and "--only 'Lite2' starts no gaussian setting's label: 'default (pool grid 4)';" in err


def test_an_unknown_series_detector_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """skab.py --detectors nope printed a row of zeros (each file's fit failed alike and counted as detecting
    nothing); series_watch.py and series_scale.py ended in an InputError traceback."""
    (tmp_path / "skab").mkdir()
    exit = _run_script("skab", [str(tmp_path / "skab"), "--detectors", "knn,nope"], monkeypatch)
    assert str(exit.code).startswith("--detectors: nope unknown; known: auto,")
    exit = _run_script("series_watch", ["--rows", "100", "--detectors", "nope"], monkeypatch)
    assert str(exit.code).startswith("error: unknown series detector 'nope'")
    monkeypatch.setitem(sys.modules, "ray", types.ModuleType("ray"))  # its check passed: the one-process row fails
    exit = _run_script("series_scale", ["--series", "2", "--rows", "20", "--detector", "nope", "--workdir",
                                        str(tmp_path / "w")], monkeypatch)
    assert str(exit.code).startswith("error: unknown series detector 'nope'")


def test_series_peers_refuses_an_unknown_detector_of_ours(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--ours nope ran every series, each failing alike: a row of zeros with its reason below the table."""
    with pytest.raises(SystemExit) as exit:
        bench_module("series_peers").main(["--data", str(_tiny_asd(tmp_path)), "--sets", "asd", "--ours", "knn,nope",
                                           "--peers", "none", "--no-vus"])
    assert exit.value.code == 2 and "--ours: unknown detector 'nope': choose from auto," in capsys.readouterr().err
